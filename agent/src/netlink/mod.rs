//! Netlink plumbing for plugging containers the nova-docker way (DESIGN.md, "Container plug"):
//! veth pairs whose container end is created inside the container's network namespace under its
//! final name, MAC, MTU, address, default route, link state, and turning TX checksum offload
//! off. Everything goes through rtnetlink (and one ethtool ioctl); nothing shells out to `ip` or
//! `ethtool`.
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
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::libc;
use nix::sched::CloneFlags;
use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::sys::{AsyncSocket, TokioSocket};
use rtnetlink::Handle;

mod ethtool;
pub mod events;
mod iface;
mod link;
mod veth;

pub use iface::{format_mac, InterfaceConfig, InterfaceState};
pub use veth::VethSetup;

/// Where [`Netns::current`] gets the agent's own namespace from. `thread-self`, not `self`: the
/// namespace of the thread that also creates the socket.
const CURRENT_NETNS: &str = "/proc/thread-self/ns/net";

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

impl Netns {
    /// The namespace file, kept open: what a veth peer is created in, by fd.
    fn file(&self) -> &File {
        &self.ns.file
    }
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

    /// Runs `f` on a short-lived thread inside this namespace (sockets it opens stay bound to
    /// it; files under /proc/sys/net it opens are this namespace's), and returns its result.
    pub async fn run_inside<T, F>(&self, f: F) -> Result<T, NetlinkError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        in_netns(&self.ns, f).await
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

/// Rejects names the kernel would refuse (or silently truncate), with a readable reason.
fn check_name(name: &str) -> Result<(), NetlinkError> {
    match overlay::naming::kernel_ifname_error(name) {
        None => Ok(()),
        Some(reason) => Err(NetlinkError::InvalidName { name: name.to_string(), reason }),
    }
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
