//! Netlink plumbing for plugging containers the nova-docker way (DESIGN.md, "Container plug"):
//! veth pairs, moving one end into a container's network namespace under a new name, MAC, MTU,
//! address, default route, link state, and turning TX checksum offload off. Everything goes
//! through rtnetlink (and one ethtool ioctl); nothing shells out to `ip` or `ethtool`.
//!
//! # Namespaces
//! A [`Netns`] is an rtnetlink handle whose socket was created inside one network namespace: the
//! kernel binds a netlink socket to the namespace of the thread that created it, for good. To get
//! a socket in another namespace, a short-lived `std::thread` enters it with `setns` and creates
//! the socket there ([`in_netns`]); the thread then exits, so no thread of the runtime ever
//! changes namespace (tokio workers and `spawn_blocking` threads are reused: a `setns` on one of
//! them would leak into unrelated tasks). rtnetlink's own `NetworkNamespace` helpers fork, which
//! is unsafe in a threaded process: they are not used.
//!
//! A [`Netns`] keeps the namespace file open, so the namespace lives as long as the handle even
//! if the container exits or `ip netns del` removes its name; clones share one socket.

use std::fmt;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use nix::libc;
use nix::sched::CloneFlags;
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope};
use rtnetlink::packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::sys::{AsyncSocket, TokioSocket};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};

/// Longest Linux interface name (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Where [`Netns::current`] gets the agent's own namespace from. `thread-self`, not `self`: the
/// namespace of the thread that also creates the socket.
const CURRENT_NETNS: &str = "/proc/thread-self/ns/net";

/// The main routing table (RT_TABLE_MAIN).
const RT_TABLE_MAIN: u32 = 254;

/// What went wrong, on which link, in which namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The namespace file is missing: the container exited, or the name is wrong.
    #[error("netns {} does not exist: is the container running?", path.display())]
    NetnsNotFound { path: PathBuf },
    /// The file exists but is no network namespace (a plain file, another kind of namespace, a
    /// `/var/run/netns` name whose mount is gone).
    #[error("{} is not a network namespace: {source}", path.display())]
    NotANetns { path: PathBuf, source: io::Error },
    /// The namespace file could not be opened (permissions, ...).
    #[error("cannot open netns {}: {source}", path.display())]
    NetnsOpen { path: PathBuf, source: io::Error },
    /// Entering the namespace failed (`setns`: not root?) or the helper thread could not run.
    #[error("cannot enter netns {netns}: {source}")]
    Setns { netns: String, source: io::Error },
    /// A socket could not be created inside the namespace.
    #[error("cannot open a {kind} socket in netns {netns}: {source}")]
    Socket { kind: &'static str, netns: String, source: io::Error },
    /// Not a valid Linux interface name.
    #[error("invalid link name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// A link with that name already exists.
    #[error("link {name} already exists in netns {netns}")]
    AlreadyExists { name: String, netns: String },
    /// No link with that name.
    #[error("link {name} not found in netns {netns}")]
    LinkNotFound { name: String, netns: String },
    /// The [`InterfaceConfig`] is inconsistent (prefix too long, gateway of another family, ...).
    #[error("invalid configuration for link {link} in netns {netns}: {reason}")]
    InvalidConfig { link: String, netns: String, reason: String },
    /// The kernel refused a netlink request.
    #[error("{op} on link {link} in netns {netns} failed: {source}")]
    Request { op: &'static str, link: String, netns: String, source: io::Error },
    /// The kernel refused an ethtool request.
    #[error("ethtool {op} on link {link} in netns {netns} failed: {source}")]
    Ethtool { op: &'static str, link: String, netns: String, source: io::Error },
}

impl NetlinkError {
    /// The errno behind the error, when the kernel gave one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Self::NotANetns { source, .. }
            | Self::NetnsOpen { source, .. }
            | Self::Setns { source, .. }
            | Self::Socket { source, .. }
            | Self::Request { source, .. }
            | Self::Ethtool { source, .. } => source.raw_os_error(),
            Self::NetnsNotFound { .. } => Some(libc::ENOENT),
            Self::AlreadyExists { .. } => Some(libc::EEXIST),
            Self::LinkNotFound { .. } => Some(libc::ENODEV),
            Self::InvalidName { .. } | Self::InvalidConfig { .. } => Some(libc::EINVAL),
        }
    }
}

/// What [`Netns::configure_interface`] sets on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// Unicast MAC address.
    pub mac: [u8; 6],
    pub mtu: u32,
    /// The interface address, IPv4 or IPv6.
    pub address: IpAddr,
    /// Prefix length of `address` (at most 32 for IPv4, 128 for IPv6).
    pub prefix_len: u8,
    /// Default route via this gateway (same family as `address`), if any.
    pub gateway: Option<IpAddr>,
}

/// What a link looks like now ([`Netns::interface_state`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceState {
    pub index: u32,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Carrier (IFF_LOWER_UP): for a veth, both ends are up.
    pub lower_up: bool,
    /// Every address on the link, with its prefix length (IPv6 link-local ones included).
    pub addresses: Vec<(IpAddr, u8)>,
    /// Gateways of the default routes through this link in the main table (IPv4 first).
    pub gateways: Vec<IpAddr>,
}

impl InterfaceState {
    /// Whether the link already has everything `cfg` asks for: MAC, MTU, up, the address and, if
    /// one is configured, the default route via the gateway.
    pub fn matches(&self, cfg: &InterfaceConfig) -> bool {
        self.mac == Some(cfg.mac)
            && self.mtu == cfg.mtu
            && self.up
            && self.addresses.contains(&(cfg.address, cfg.prefix_len))
            && cfg.gateway.is_none_or(|gw| self.gateways.contains(&gw))
    }
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

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

/// The namespace file a [`Netns`] came from, kept open.
struct NsFile {
    /// None for the agent's own namespace ([`Netns::current`]).
    path: Option<PathBuf>,
    file: File,
    /// An AF_INET datagram socket created inside the namespace, for ethtool ioctls; made with the
    /// netlink socket, so an ioctl needs no second trip through a `setns` thread.
    inet: Option<OwnedFd>,
}

impl NsFile {
    fn label(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => "(the agent's own)".to_string(),
        }
    }
}

/// An rtnetlink handle bound to one network namespace. Cheap to clone (clones share the socket);
/// usable from any task. The socket's background task ends when the last clone is dropped.
#[derive(Clone)]
pub struct Netns {
    handle: Handle,
    ns: Arc<NsFile>,
}

impl fmt::Debug for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netns").field("netns", &self.ns.label()).finish()
    }
}

/// Runs `f` on a fresh `std::thread` that first enters the namespace of `ns` (unless it is the
/// agent's own), and returns what `f` returned. Sockets created by `f` stay bound to that
/// namespace after the thread is gone. The thread exits right after `f`, so the `setns` never
/// touches a thread anything else runs on; the caller's task just awaits the result.
async fn in_netns<T, F>(ns: &NsFile, f: F) -> Result<T, NetlinkError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let setns_err = |source: io::Error| NetlinkError::Setns { netns: ns.label(), source };
    let fd: Option<OwnedFd> = match ns.path {
        Some(_) => Some(ns.file.as_fd().try_clone_to_owned().map_err(setns_err)?),
        None => None,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("netns-setns".into())
        .spawn(move || {
            let result = match fd {
                Some(fd) => nix::sched::setns(fd, CloneFlags::CLONE_NEWNET).map(|()| f()),
                None => Ok(f()),
            };
            let _ = tx.send(result);
        })
        .map_err(setns_err)?;
    let result = rx.await.map_err(|_| setns_err(io::Error::other("the netns helper thread panicked")))?;
    result.map_err(|errno| {
        let source = io::Error::from(errno);
        match (&ns.path, errno) {
            (Some(path), nix::errno::Errno::EINVAL) => NetlinkError::NotANetns { path: path.clone(), source },
            _ => setns_err(source),
        }
    })
}

impl Netns {
    /// The agent's own network namespace.
    pub async fn current() -> Result<Netns, NetlinkError> {
        let file = File::open(CURRENT_NETNS)
            .map_err(|source| NetlinkError::NetnsOpen { path: PathBuf::from(CURRENT_NETNS), source })?;
        let ns = NsFile { path: None, file, inet: inet_socket().ok() };
        // Created on this (runtime) thread, which never changes namespace: same namespace as `file`.
        let socket = TokioSocket::new(NETLINK_ROUTE).map_err(|source| NetlinkError::Socket {
            kind: "netlink",
            netns: ns.label(),
            source,
        })?;
        Ok(Self::with_socket(socket, ns))
    }

    /// A network namespace by file: `/proc/PID/ns/net` or `/var/run/netns/NAME`.
    ///
    /// Errors: [`NetlinkError::NetnsNotFound`] if the file is missing (container gone),
    /// [`NetlinkError::NotANetns`] if it is no network namespace.
    pub async fn open(path: &Path) -> Result<Netns, NetlinkError> {
        let file = File::open(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => NetlinkError::NetnsNotFound { path: path.to_path_buf() },
            _ => NetlinkError::NetnsOpen { path: path.to_path_buf(), source },
        })?;
        let mut ns = NsFile { path: Some(path.to_path_buf()), file, inet: None };
        // The socket's fd is registered with this runtime's reactor from the helper thread:
        // registration needs the runtime context, not a runtime thread.
        let runtime = tokio::runtime::Handle::current();
        let (socket, inet) = in_netns(&ns, move || {
            let _guard = runtime.enter();
            (TokioSocket::new(NETLINK_ROUTE), inet_socket().ok())
        })
        .await?;
        let socket = socket.map_err(|source| NetlinkError::Socket { kind: "netlink", netns: ns.label(), source })?;
        ns.inet = inet;
        Ok(Self::with_socket(socket, ns))
    }

    fn with_socket(socket: TokioSocket, ns: NsFile) -> Netns {
        let (connection, handle, _unsolicited) = rtnetlink::from_socket(socket);
        tokio::spawn(connection);
        Netns { handle, ns: Arc::new(ns) }
    }

    /// The namespace file this handle was opened from; None for [`Netns::current`].
    pub fn path(&self) -> Option<&Path> {
        self.ns.path.as_deref()
    }

    /// How error messages name this namespace: its path, or "(the agent's own)".
    pub fn label(&self) -> String {
        self.ns.label()
    }

    fn request_error(&self, op: &'static str, link: &str, e: rtnetlink::Error) -> NetlinkError {
        NetlinkError::Request { op, link: link.to_string(), netns: self.label(), source: to_io(e) }
    }

    fn not_found(&self, name: &str) -> NetlinkError {
        NetlinkError::LinkNotFound { name: name.to_string(), netns: self.label() }
    }

    async fn get_link(&self, name: &str) -> Result<Option<LinkMessage>, NetlinkError> {
        check_name(name)?;
        let mut links = self.handle.link().get().match_name(name.to_string()).execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(self.request_error("get link", name, e)),
        }
    }

    async fn require_link(&self, name: &str) -> Result<LinkMessage, NetlinkError> {
        self.get_link(name).await?.ok_or_else(|| self.not_found(name))
    }

    async fn set_link(&self, op: &'static str, name: &str, msg: LinkMessage) -> Result<(), NetlinkError> {
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
        let mut peer_builder = LinkUnspec::new_with_name(peer).setns_by_fd(target.ns.file.as_raw_fd());
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
            .setns_by_fd(target.ns.file.as_raw_fd())
            .name(new_name.to_string())
            .build();
        match self.handle.link().set(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => {
                // Lost a race for the name: the link may sit in `target` under its old name.
                if name != new_name && target.link_exists(name).await.unwrap_or(false) {
                    let back = LinkUnspec::new_with_name(name).setns_by_fd(self.ns.file.as_raw_fd()).build();
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

    /// Makes link `name` look like `cfg`: MAC and MTU (changed only if different), up, the
    /// address (other global addresses of the same family are removed, IPv6 ones are added
    /// without DAD), `lo` up, and the default route via `cfg.gateway` through this link
    /// (replacing an existing default route). Idempotent. With no gateway, existing routes are
    /// left alone.
    pub async fn configure_interface(&self, name: &str, cfg: &InterfaceConfig) -> Result<(), NetlinkError> {
        self.check_config(name, cfg)?;
        let link = self.require_link(name).await?;
        let index = link.header.index;

        let mut change = LinkUnspec::new_with_index(index);
        let mut changed = false;
        if mac_of(&link) != Some(cfg.mac) {
            change = change.address(cfg.mac.to_vec());
            changed = true;
        }
        if mtu_of(&link) != Some(cfg.mtu) {
            change = change.mtu(cfg.mtu);
            changed = true;
        }
        if changed {
            self.set_link("set MAC and MTU", name, change.build()).await?;
        }
        if !link.header.flags.contains(LinkFlags::Up) {
            self.set_link("set up", name, LinkUnspec::new_with_index(index).up().build()).await?;
        }

        let mut present = false;
        for addr in self.addresses(index, name).await? {
            let Some((ip, prefix)) = address_of(&addr) else { continue };
            if (ip, prefix) == (cfg.address, cfg.prefix_len) {
                present = true;
            } else if ip.is_ipv4() == cfg.address.is_ipv4() && addr.header.scope == AddressScope::Universe {
                match self.handle.address().del(addr).execute().await {
                    Ok(()) => {}
                    Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => {}
                    Err(e) => return Err(self.request_error("remove stale address", name, e)),
                }
            }
        }
        if !present {
            let mut add = self.handle.address().add(index, cfg.address, cfg.prefix_len);
            if cfg.address.is_ipv6() {
                add.message_mut().header.flags |= AddressHeaderFlags::Nodad;
            }
            match add.execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(self.request_error("add address", name, e)),
            }
        }

        let lo = self.require_link("lo").await?;
        if !lo.header.flags.contains(LinkFlags::Up) {
            self.set_link("set up", "lo", LinkUnspec::new_with_index(lo.header.index).up().build()).await?;
        }

        if let Some(gateway) = cfg.gateway {
            let route = match gateway {
                IpAddr::V4(gw) => RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw).output_interface(index).build(),
                IpAddr::V6(gw) => RouteMessageBuilder::<Ipv6Addr>::new().gateway(gw).output_interface(index).build(),
            };
            self.handle
                .route()
                .add(route)
                .replace()
                .execute()
                .await
                .map_err(|e| self.request_error("set default route", name, e))?;
        }
        Ok(())
    }

    fn check_config(&self, name: &str, cfg: &InterfaceConfig) -> Result<(), NetlinkError> {
        let invalid = |reason: String| NetlinkError::InvalidConfig { link: name.into(), netns: self.label(), reason };
        let max_prefix = if cfg.address.is_ipv4() { 32 } else { 128 };
        if cfg.prefix_len > max_prefix {
            return Err(invalid(format!("prefix length {} is too long for {}", cfg.prefix_len, cfg.address)));
        }
        if cfg.mac[0] & 1 != 0 || cfg.mac == [0; 6] {
            return Err(invalid(format!("{} is not a unicast MAC address", format_mac(&cfg.mac))));
        }
        if let Some(gw) = cfg.gateway {
            if gw.is_ipv4() != cfg.address.is_ipv4() {
                return Err(invalid(format!("gateway {gw} and address {} are of different families", cfg.address)));
            }
        }
        Ok(())
    }

    async fn addresses(&self, index: u32, name: &str) -> Result<Vec<AddressMessage>, NetlinkError> {
        self.handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.request_error("list addresses", name, e))
    }

    async fn default_gateways(&self, index: u32, name: &str) -> Result<Vec<IpAddr>, NetlinkError> {
        let mut gateways = Vec::new();
        for query in [RouteMessageBuilder::<Ipv4Addr>::new().build(), RouteMessageBuilder::<Ipv6Addr>::new().build()] {
            let routes: Vec<RouteMessage> = self
                .handle
                .route()
                .get(query)
                .execute()
                .try_collect()
                .await
                .map_err(|e| self.request_error("list routes", name, e))?;
            gateways.extend(routes.iter().filter_map(|r| default_gateway_via(r, index)));
        }
        Ok(gateways)
    }

    /// The MTU of the link that holds address `ip` (None when no link has it): the underlay
    /// MTU when `ip` is the tunnel endpoint.
    pub async fn mtu_of_address(&self, ip: IpAddr) -> Result<Option<u32>, NetlinkError> {
        let all: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.request_error("list addresses", "*", e))?;
        let Some(index) = all.iter().find(|m| address_of(m).is_some_and(|(a, _)| a == ip)).map(|m| m.header.index)
        else {
            return Ok(None);
        };
        let mut links = self.handle.link().get().match_index(index).execute();
        match links.try_next().await {
            Ok(link) => Ok(link.as_ref().and_then(mtu_of)),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(self.request_error("get link", &index.to_string(), e)),
        }
    }

    /// The state of link `name` (None if there is none): MAC, MTU, flags, addresses, default
    /// gateways through it.
    pub async fn interface_state(&self, name: &str) -> Result<Option<InterfaceState>, NetlinkError> {
        let Some(link) = self.get_link(name).await? else {
            return Ok(None);
        };
        let index = link.header.index;
        let addresses = self.addresses(index, name).await?.iter().filter_map(address_of).collect();
        let gateways = self.default_gateways(index, name).await?;
        Ok(Some(InterfaceState {
            index,
            mac: mac_of(&link),
            mtu: mtu_of(&link).unwrap_or(0),
            up: link.header.flags.contains(LinkFlags::Up),
            lower_up: link.header.flags.contains(LinkFlags::LowerUp),
            addresses,
            gateways,
        }))
    }

    /// Same as [`disable_tx_checksum`].
    pub async fn disable_tx_checksum(&self, ifname: &str) -> Result<(), NetlinkError> {
        disable_tx_checksum(self, ifname).await
    }

    /// Same as [`tx_checksum_enabled`].
    pub async fn tx_checksum_enabled(&self, ifname: &str) -> Result<bool, NetlinkError> {
        tx_checksum_enabled(self, ifname).await
    }
}

/// Turns TX checksum offload off on `ifname` inside `netns` (`ethtool -K IFNAME tx off`), as the
/// userspace (netdev) datapath needs on the container end of a veth. Idempotent.
///
/// The ethtool generic-netlink family could do it too (ETHTOOL_MSG_FEATURES_SET), but no
/// rust-netlink crate implements setting features; this uses the ETHTOOL_STXCSUM ioctl on a
/// socket created inside the namespace (the ioctl looks the device up in the socket's namespace).
pub async fn disable_tx_checksum(netns: &Netns, ifname: &str) -> Result<(), NetlinkError> {
    ethtool(netns, ifname, TxCsum::Set(false)).await.map(drop)
}

/// Whether TX checksum offload is on for `ifname` inside `netns` (ETHTOOL_GTXCSUM).
pub async fn tx_checksum_enabled(netns: &Netns, ifname: &str) -> Result<bool, NetlinkError> {
    ethtool(netns, ifname, TxCsum::Get).await
}

async fn ethtool(netns: &Netns, ifname: &str, op: TxCsum) -> Result<bool, NetlinkError> {
    check_name(ifname)?;
    let name = ifname.to_string();
    let result = match &netns.ns.inet {
        // The socket made with the handle: one ioctl, no thread.
        Some(socket) => ethtool_txcsum(socket, &name, op).map_err(|e| ("ioctl", e)),
        None => {
            in_netns(&netns.ns, move || -> Result<bool, (&'static str, io::Error)> {
                let socket = inet_socket().map_err(|e| ("socket", e))?;
                ethtool_txcsum(&socket, &name, op).map_err(|e| ("ioctl", e))
            })
            .await?
        }
    };
    result.map_err(|(stage, source)| match (stage, source.raw_os_error()) {
        ("socket", _) => NetlinkError::Socket { kind: "ethtool (AF_INET)", netns: netns.label(), source },
        (_, Some(libc::ENODEV)) => netns.not_found(ifname),
        _ => NetlinkError::Ethtool { op: op.name(), link: ifname.to_string(), netns: netns.label(), source },
    })
}

/// An AF_INET datagram socket in the calling thread's namespace (for ethtool ioctls).
fn inet_socket() -> io::Result<OwnedFd> {
    nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)
}

/// The two ethtool commands used here, both taking a `struct ethtool_value`.
#[derive(Debug, Clone, Copy)]
enum TxCsum {
    Get,
    Set(bool),
}

impl TxCsum {
    fn name(self) -> &'static str {
        match self {
            TxCsum::Get => "get tx-checksumming",
            TxCsum::Set(true) => "set tx-checksumming on",
            TxCsum::Set(false) => "set tx-checksumming off",
        }
    }
}

/// `struct ethtool_value` of <linux/ethtool.h>.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;

/// SIOCETHTOOL with ETHTOOL_GTXCSUM / ETHTOOL_STXCSUM on `ifname`, in the namespace `socket`
/// was created in. Returns whether TX checksumming is on (for Set: what was asked).
#[allow(unsafe_code)]
fn ethtool_txcsum(socket: &OwnedFd, ifname: &str, op: TxCsum) -> io::Result<bool> {
    let (cmd, data) = match op {
        TxCsum::Get => (ETHTOOL_GTXCSUM, 0),
        TxCsum::Set(on) => (ETHTOOL_STXCSUM, u32::from(on)),
    };
    let mut value = EthtoolValue { cmd, data };
    let mut name = [0 as libc::c_char; libc::IFNAMSIZ];
    if ifname.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    for (dst, src) in name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    let mut ifr =
        libc::ifreq { ifr_name: name, ifr_ifru: libc::__c_anonymous_ifr_ifru { ifru_data: (&raw mut value).cast() } };
    // SAFETY: `ifr` is a fully initialised `struct ifreq` whose name is NUL-terminated (checked
    // length, zero-filled) and whose `ifr_data` points to `value`, a live `struct ethtool_value`
    // that outlives the call. For ETHTOOL_GTXCSUM / ETHTOOL_STXCSUM (the only commands built
    // above) the kernel reads and writes exactly one `struct ethtool_value` there, and nothing
    // else of ours. `socket` is an open socket fd.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL as _, &raw mut ifr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(match op {
        TxCsum::Get => value.data != 0,
        TxCsum::Set(on) => on,
    })
}

/// Rejects names the kernel would refuse (or silently truncate), with a readable reason.
fn check_name(name: &str) -> Result<(), NetlinkError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_IFNAME_LEN {
        "longer than 15 bytes"
    } else if name == "." || name == ".." {
        "reserved"
    } else if name.bytes().any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace()) {
        "contains '/', ':', NUL or whitespace"
    } else {
        return Ok(());
    };
    Err(NetlinkError::InvalidName { name: name.to_string(), reason })
}

/// The errno of a kernel refusal (positive), None for other rtnetlink errors.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| c.get().abs()),
        _ => None,
    }
}

fn to_io(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

fn mac_of(link: &LinkMessage) -> Option<[u8; 6]> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
        _ => None,
    })
}

fn mtu_of(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(mtu) => Some(*mtu),
        _ => None,
    })
}

/// (address, prefix) of an address message: IFA_LOCAL if present (IFA_ADDRESS is the peer on
/// point-to-point links), else IFA_ADDRESS.
fn address_of(msg: &AddressMessage) -> Option<(IpAddr, u8)> {
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    local.or(address).map(|ip| (ip, msg.header.prefix_len))
}

/// The gateway of `route` if it is a unicast default route in the main table out of `index`.
fn default_gateway_via(route: &RouteMessage, index: u32) -> Option<IpAddr> {
    if route.header.destination_prefix_length != 0 || route.header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(route.header.table);
    let mut oif = None;
    let mut gateway = None;
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(IpAddr::V4(*ip)),
            RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => gateway = Some(IpAddr::V6(*ip)),
            RouteAttribute::Via(RouteVia::Inet(ip)) => gateway = Some(IpAddr::V4(*ip)),
            RouteAttribute::Via(RouteVia::Inet6(ip)) => gateway = Some(IpAddr::V6(*ip)),
            _ => {}
        }
    }
    let family_ok = matches!(route.header.address_family, AddressFamily::Inet | AddressFamily::Inet6);
    (family_ok && table == RT_TABLE_MAIN && oif == Some(index)).then_some(gateway).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("eth0").is_ok());
        assert!(check_name("123456789012345").is_ok());
        assert!(check_name("1234567890123456").is_err());
        assert!(check_name("").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name("a b").is_err());
    }

    #[test]
    fn mac_format() {
        assert_eq!(format_mac(&[0x02, 0, 0xab, 1, 2, 0xff]), "02:00:ab:01:02:ff");
    }

    #[test]
    fn state_matches() {
        let cfg = InterfaceConfig {
            mac: [2, 0, 0, 0, 0, 1],
            mtu: 1450,
            address: "10.0.0.2".parse().unwrap(),
            prefix_len: 24,
            gateway: Some("10.0.0.1".parse().unwrap()),
        };
        let mut st = InterfaceState {
            index: 3,
            mac: Some(cfg.mac),
            mtu: 1450,
            up: true,
            lower_up: false,
            addresses: vec![(cfg.address, 24)],
            gateways: vec![cfg.gateway.unwrap()],
        };
        assert!(st.matches(&cfg));
        st.gateways.clear();
        assert!(!st.matches(&cfg));
    }
}
