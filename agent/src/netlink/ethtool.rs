//! TX checksum offload, through the ethtool ioctl (no rust-netlink crate sets features).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::libc;

use super::{check_name, in_netns, inet_socket, NetlinkError, Netns};

impl Netns {
    /// Turns TX checksum offload off on `ifname` in this namespace (`ethtool -K IFNAME tx off`),
    /// as the userspace (netdev) datapath needs on the container end of a veth. Idempotent.
    ///
    /// The ethtool generic-netlink family could do it too (ETHTOOL_MSG_FEATURES_SET), but no
    /// rust-netlink crate implements setting features; this uses the ETHTOOL_STXCSUM ioctl on a
    /// socket created inside the namespace (the ioctl looks the device up in the socket's
    /// namespace).
    pub async fn disable_tx_checksum(&self, ifname: &str) -> Result<(), NetlinkError> {
        ethtool(self, ifname, TxCsum::Set(false)).await.map(drop)
    }

    /// Whether TX checksum offload is on for `ifname` in this namespace (ETHTOOL_GTXCSUM).
    pub async fn tx_checksum_enabled(&self, ifname: &str) -> Result<bool, NetlinkError> {
        ethtool(self, ifname, TxCsum::Get).await
    }
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
