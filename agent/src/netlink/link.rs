//! Links: look up, list, delete, bring up, set MTU, move between namespaces.

use futures::TryStreamExt;
use nix::libc;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::LinkUnspec;
use std::os::fd::AsRawFd;

use super::{check_name, errno, to_io, NetlinkError, Netns};

impl Netns {
    pub(super) async fn get_link(&self, name: &str) -> Result<Option<LinkMessage>, NetlinkError> {
        check_name(name)?;
        let mut links = self.handle.link().get().match_name(name.to_string()).execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(self.request_error("get link", name, e)),
        }
    }

    pub(super) async fn require_link(&self, name: &str) -> Result<LinkMessage, NetlinkError> {
        self.get_link(name).await?.ok_or_else(|| self.not_found(name))
    }

    pub(super) async fn set_link(&self, op: &'static str, name: &str, msg: LinkMessage) -> Result<(), NetlinkError> {
        match self.handle.link().set(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Err(self.not_found(name)),
            Err(e) => Err(self.request_error(op, name, e)),
        }
    }

    /// The ifindex of link `name`, None if there is none.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>, NetlinkError> {
        Ok(self.get_link(name).await?.map(|l| l.header.index))
    }

    /// The names of every veth in this namespace.
    pub async fn veth_names(&self) -> Result<Vec<String>, NetlinkError> {
        let mut links = self.handle.link().get().execute();
        let mut names = Vec::new();
        loop {
            let link = match links.try_next().await {
                Ok(Some(link)) => link,
                Ok(None) => break,
                Err(e) => return Err(self.request_error("list links", "*", e)),
            };
            let is_veth = link.attributes.iter().any(|a| {
                matches!(a, LinkAttribute::LinkInfo(info)
                    if info.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))))
            });
            let name = link.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            });
            if let (true, Some(name)) = (is_veth, name) {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Whether link `name` exists.
    pub async fn link_exists(&self, name: &str) -> Result<bool, NetlinkError> {
        Ok(self.get_link(name).await?.is_some())
    }

    /// The MAC address of link `name`, None if there is no such link (or it has no 6-byte address).
    pub async fn link_mac(&self, name: &str) -> Result<Option<[u8; 6]>, NetlinkError> {
        Ok(self.get_link(name).await?.as_ref().and_then(mac_of))
    }

    /// Brings link `name` up.
    pub async fn set_up(&self, name: &str) -> Result<(), NetlinkError> {
        let link = self.require_link(name).await?;
        self.set_link("set up", name, LinkUnspec::new_with_index(link.header.index).up().build()).await
    }

    /// Sets the MTU of link `name`.
    pub async fn set_mtu(&self, name: &str, mtu: u32) -> Result<(), NetlinkError> {
        let link = self.require_link(name).await?;
        self.set_link("set MTU", name, LinkUnspec::new_with_index(link.header.index).mtu(mtu).build()).await
    }

    /// Deletes link `name`; Ok(false) if there was none. Deleting either end of a veth pair
    /// deletes both, wherever the other end is.
    pub async fn delete_link(&self, name: &str) -> Result<bool, NetlinkError> {
        let Some(link) = self.get_link(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(link.header.index).execute().await {
            Ok(()) => Ok(true),
            // Gone in between (e.g. its peer was deleted concurrently).
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(self.request_error("delete link", name, e)),
        }
    }

    /// Moves link `name` from this namespace into `target`, renaming it `new_name`, in one
    /// RTM_SETLINK. The link arrives down and without addresses: configure it afterwards.
    /// [`NetlinkError::AlreadyExists`] if `target` already has a `new_name`; the link then stays
    /// where it was.
    ///
    /// Kernel quirk: the move and the rename are not atomic. The kernel moves the link under its
    /// current name (using the new name only if the current one is taken in the target), then
    /// renames it there; if `new_name` is taken in the target, the request fails with EEXIST
    /// *after* the move. Hence the check beforehand, and the move back should the name be taken
    /// in between.
    pub async fn move_link(&self, name: &str, target: &Netns, new_name: &str) -> Result<(), NetlinkError> {
        check_name(new_name)?;
        let link = self.require_link(name).await?;
        let taken = || NetlinkError::AlreadyExists { name: new_name.to_string(), netns: target.label() };
        if target.link_exists(new_name).await? {
            return Err(taken());
        }
        let msg = LinkUnspec::new_with_index(link.header.index)
            .setns_by_fd(target.file().as_raw_fd())
            .name(new_name.to_string())
            .build();
        match self.handle.link().set(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => {
                // Lost a race for the name: the link may sit in `target` under its old name.
                if name != new_name && target.link_exists(name).await.unwrap_or(false) {
                    let back = LinkUnspec::new_with_name(name).setns_by_fd(self.file().as_raw_fd()).build();
                    let _ = target.handle.link().set(back).execute().await;
                }
                Err(taken())
            }
            Err(e) if errno(&e) == Some(libc::ENODEV) => Err(self.not_found(name)),
            Err(e) => Err(NetlinkError::Request {
                op: "move link",
                link: format!("{name} (to netns {} as {new_name})", target.label()),
                netns: self.label(),
                source: to_io(e),
            }),
        }
    }
}

pub(super) fn mac_of(link: &LinkMessage) -> Option<[u8; 6]> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
        _ => None,
    })
}

pub(super) fn mtu_of(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(mtu) => Some(*mtu),
        _ => None,
    })
}
