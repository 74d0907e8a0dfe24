//! Link events of a namespace: which links went away. A container that dies without an unplug
//! takes its veth with it; the deletion of the host end is how the agent learns of it.

use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::sys::{AsyncSocket, TokioSocket};

use super::{in_netns, NetlinkError, Netns};

/// RTNLGRP_LINK of <linux/rtnetlink.h>: link changes.
const RTNLGRP_LINK: u32 = 1;

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
    /// RTNLGRP_LINK).
    pub async fn link_deletions(&self) -> Result<LinkDeletions, NetlinkError> {
        let label = self.label();
        let make = move || -> std::io::Result<TokioSocket> {
            let mut socket = TokioSocket::new(NETLINK_ROUTE)?;
            socket.socket_mut().add_membership(RTNLGRP_LINK)?;
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
