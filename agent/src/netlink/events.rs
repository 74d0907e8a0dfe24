//! Link events of a namespace: which links went away. A container that dies without an unplug
//! takes its veth with it; the deletion of the host end is how the agent learns of it.

use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::sys::{AsyncSocket, TokioSocket};

use super::{in_netns, NetlinkError, Netns};

/// RTMGRP_LINK of <linux/rtnetlink.h>: the group of link changes, as a bind mask.
const RTMGRP_LINK: u32 = 1;

/// The names of links deleted in one namespace, as the kernel announces them.
pub struct LinkDeletions {
    messages:
        futures::channel::mpsc::UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, rtnetlink::sys::SocketAddr)>,
    /// Keeps the socket's connection task running.
    _handle: rtnetlink::Handle,
}

impl LinkDeletions {
    /// The name of the next link deleted; `None` once the socket is gone (the caller subscribes
    /// again). A burst the socket could not hold is lost: the periodic resync covers it.
    pub async fn next(&mut self) -> Option<String> {
        use futures::StreamExt;
        while let Some((msg, _)) = self.messages.next().await {
            if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) = msg.payload {
                let name = link.attributes.into_iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n),
                    _ => None,
                });
                if let Some(name) = name {
                    return Some(name);
                }
            }
        }
        None
    }
}

impl Netns {
    /// Subscribes to link deletions in this namespace (a socket of its own, in the group
    /// RTMGRP_LINK).
    pub async fn link_deletions(&self) -> Result<LinkDeletions, NetlinkError> {
        let label = self.label();
        let make = move || -> std::io::Result<TokioSocket> {
            let mut socket = TokioSocket::new(NETLINK_ROUTE)?;
            // Bound, with the group, as `ip monitor link` does: an unbound socket has port id
            // 0, the kernel's own, and the kernel's broadcasts skip the sender's port id.
            socket.socket_mut().bind(&rtnetlink::sys::SocketAddr::new(0, RTMGRP_LINK))?;
            Ok(socket)
        };
        let socket = match self.ns.path {
            // Created on this runtime thread, which never changes namespace.
            None => make(),
            Some(_) => {
                let runtime = tokio::runtime::Handle::current();
                in_netns(&self.ns, move || {
                    let _guard = runtime.enter();
                    make()
                })
                .await?
            }
        }
        .map_err(|source| NetlinkError::Socket { kind: "netlink (link events)", netns: label, source })?;
        let (connection, handle, messages) = rtnetlink::from_socket(socket);
        tokio::spawn(connection);
        Ok(LinkDeletions { messages, _handle: handle })
    }
}
