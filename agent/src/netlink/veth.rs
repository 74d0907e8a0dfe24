//! veth pairs for container plugs: created with one end already inside the container's
//! namespace and configured in the creating request, and the IPv6 settings of each end.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::libc;
use rtnetlink::packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute,
};
use rtnetlink::{LinkUnspec, LinkVeth};

use super::{check_name, errno, in_netns, NetlinkError, Netns};

/// What [`Netns::create_veth_into_with`] sets while creating the pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VethSetup {
    /// MTU of both ends.
    pub mtu: Option<u32>,
    /// MAC of the peer (the container's end).
    pub peer_mac: Option<[u8; 6]>,
    /// Bring this namespace's end up.
    pub up: bool,
    /// Bring the peer up too, right after: the kernel refuses it in the creating request (the
    /// peer is not linked yet: ENOTCONN). The sooner the carrier comes, the likelier its link
    /// event in this namespace is taken in the same ovs-vswitchd walk as the new link's, each
    /// walk visiting every port of the host (docs/benchmarks.md).
    pub peer_up: bool,
    /// Make this end promiscuous, as a bridge port is: ovs-vswitchd would otherwise set it,
    /// another link event.
    pub promisc: bool,
    /// Turn IPv6 off on this end ([`Netns::disable_ipv6`]) before it has a carrier: a bridge
    /// port needs no IP stack, and its link-local chatter is only noise.
    pub ipv6_off: bool,
    /// Give the peer no IPv6 link-local address (addr_gen_mode none) before it comes up, so it
    /// sends no DAD, MLD or router solicitation: in an IPv4 tenant these frames would be flooded
    /// to every port and tunnel of the tenant, each handled by ovs-vswitchd's main thread on
    /// the userspace datapath (docs/benchmarks.md). Docker and os-vif do the same.
    pub peer_ipv6_off: bool,
}

impl Netns {
    /// Creates a veth pair `name` <-> `peer`, both ends in this namespace, both down.
    /// [`NetlinkError::AlreadyExists`] if either name is taken.
    pub async fn create_veth(&self, name: &str, peer: &str) -> Result<(), NetlinkError> {
        check_name(name)?;
        check_name(peer)?;
        if name == peer {
            return Err(NetlinkError::InvalidName { name: peer.into(), reason: "a veth peer needs its own name" });
        }
        match self.handle.link().add(LinkVeth::new(name, peer).build()).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => {
                let taken = if self.link_exists(name).await? { name } else { peer };
                Err(NetlinkError::AlreadyExists { name: taken.to_string(), netns: self.label() })
            }
            Err(e) => Err(self.request_error("create veth pair", &format!("{name} (peer {peer})"), e)),
        }
    }

    /// Creates a veth pair: `name` in this namespace, `peer` created directly inside `target`
    /// (the kernel's `ip link add NAME type veth peer name PEER netns TARGET`), both down.
    /// [`NetlinkError::AlreadyExists`] if `name` is taken here or `peer` in `target`; the
    /// request is atomic, so then nothing was created.
    ///
    /// Cheaper than [`Netns::create_veth`] + [`Netns::move_link`]: moving a link between
    /// namespaces waits for RCU grace periods in the kernel (10-20 ms per move on the benchmark
    /// machine, most of a plug; see docs/benchmarks.md), creating it in place does not.
    pub async fn create_veth_into(&self, name: &str, peer: &str, target: &Netns) -> Result<(), NetlinkError> {
        self.create_veth_into_with(name, peer, target, &VethSetup::default()).await
    }

    /// [`Netns::create_veth_into`], with MTU, MAC and up state set in the same request, so the
    /// ends never exist half-configured and no further round trip (nor another link event for
    /// ovs-vswitchd to react to) is needed.
    pub async fn create_veth_into_with(
        &self,
        name: &str,
        peer: &str,
        target: &Netns,
        setup: &VethSetup,
    ) -> Result<(), NetlinkError> {
        check_name(name)?;
        check_name(peer)?;
        let mut peer_builder = LinkUnspec::new_with_name(peer).setns_by_fd(target.file().as_raw_fd());
        let mut builder =
            rtnetlink::LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth).name(name.to_string());
        if let Some(mtu) = setup.mtu {
            builder = builder.mtu(mtu);
            peer_builder = peer_builder.mtu(mtu);
        }
        if let Some(mac) = setup.peer_mac {
            peer_builder = peer_builder.address(mac.to_vec());
        }
        if setup.up {
            builder = builder.up();
        }
        if setup.promisc {
            builder = builder.promiscuous(true);
        }
        let msg = builder.set_info_data(InfoData::Veth(InfoVeth::Peer(peer_builder.build()))).build();
        match self.handle.link().add(msg).execute().await {
            // The peer is still down here, so this end has no carrier yet and neither end has
            // started IPv6 address configuration: turning it off now leaves nothing to undo.
            Ok(()) => {
                if setup.ipv6_off {
                    self.disable_ipv6(name).await?;
                }
                if setup.peer_ipv6_off {
                    target.no_ipv6_link_local(peer).await?;
                }
                if setup.peer_up {
                    target.set_link("set up", peer, LinkUnspec::new_with_name(peer).up().build()).await?;
                }
                Ok(())
            }
            Err(e) if errno(&e) == Some(libc::EEXIST) => {
                if self.link_exists(name).await? {
                    Err(NetlinkError::AlreadyExists { name: name.to_string(), netns: self.label() })
                } else {
                    Err(NetlinkError::AlreadyExists { name: peer.to_string(), netns: target.label() })
                }
            }
            Err(e) => Err(self.request_error(
                "create veth pair",
                &format!("{name} (peer {peer} in netns {})", target.label()),
                e,
            )),
        }
    }

    /// Turns IPv6 off on link `name` (its `disable_ipv6` sysctl, in this namespace): no
    /// link-local address, no DAD, MLD or router solicitation. For links that need no IP stack
    /// of their own, such as a bridge port. Unlike a netlink change of an up link, the sysctl
    /// sends no link event, so ovs-vswitchd does not reconfigure for it. Nothing to do on a
    /// kernel without IPv6.
    pub async fn disable_ipv6(&self, name: &str) -> Result<(), NetlinkError> {
        check_name(name)?;
        let path = PathBuf::from(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"));
        // /proc/sys/net shows the namespace of the thread that looks the file up.
        let write = move || match std::fs::write(&path, b"1") {
            Err(e) if e.kind() == io::ErrorKind::NotFound && !Path::new("/proc/sys/net/ipv6").exists() => Ok(()),
            other => other,
        };
        let written = match self.ns.path {
            None => write(),
            Some(_) => in_netns(&self.ns, write).await?,
        };
        written.map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => self.not_found(name),
            _ => NetlinkError::Request { op: "disable IPv6", link: name.to_string(), netns: self.label(), source },
        })
    }

    /// Sets addr_gen_mode none on link `name`: it gets no IPv6 link-local address when it comes
    /// up (it must be down: an up link already has one), while IPv6 stays usable for addresses
    /// given explicitly. A no-op on a kernel without IPv6.
    pub async fn no_ipv6_link_local(&self, name: &str) -> Result<(), NetlinkError> {
        check_name(name)?;
        let mode = LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(
            In6AddrGenMode::None,
        )])]);
        let msg = LinkUnspec::new_with_name(name).append_extra_attribute(mode).build();
        match self.set_link("set IPv6 addr_gen_mode none", name, msg).await {
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => Ok(()),
            other => other,
        }
    }
}
