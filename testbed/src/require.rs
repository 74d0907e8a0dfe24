//! Loud requirement checks: a missing requirement is a test failure that says what to install,
//! never a silent skip.

use std::path::{Path, PathBuf};

/// Directories searched for binaries besides `$PATH` (root's sbin dirs are often missing from a
/// non-login `$PATH`).
const EXTRA_DIRS: &[&str] = &["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// The OVSDB schema `ovsdb-tool create` uses.
pub const VSWITCH_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// Effective uid of this process, from `/proc/self/status`.
fn euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Panics unless the process runs as root (network namespaces, veths and OVS need it).
#[track_caller]
pub fn require_root() {
    match euid() {
        Some(0) => {}
        other => panic!(
            "testbed: these tests need root (network namespaces, veth pairs, OVS); effective uid is \
             {other:?}. Run them as root, e.g. `sudo -E cargo test`"
        ),
    }
}

/// Finds `name` in `$PATH` or the usual bin/sbin dirs, or panics with `install_hint`
/// (e.g. "apt-get install openvswitch-switch").
#[track_caller]
pub fn require_binary(name: &str, install_hint: &str) -> PathBuf {
    find_binary(name).unwrap_or_else(|| {
        panic!("testbed: required program `{name}` not found in $PATH or sbin dirs; install it: {install_hint}")
    })
}

/// Panics unless `path` exists, with `install_hint`.
#[track_caller]
pub fn require_file(path: &str, install_hint: &str) {
    if !Path::new(path).exists() {
        panic!("testbed: required file {path} is missing; install it: {install_hint}");
    }
}

pub(crate) fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(EXTRA_DIRS.iter().map(PathBuf::from)).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Resolves a binary that a `require_*` check already vouched for (falls back to the bare name).
pub(crate) fn bin(name: &str) -> PathBuf {
    find_binary(name).unwrap_or_else(|| PathBuf::from(name))
}

const OVS_HINT: &str = "apt-get install openvswitch-switch";

/// Root, iproute2 and ping: what [`crate::Netns`] and [`crate::Fabric`] need.
#[track_caller]
pub fn require_netns() {
    require_root();
    require_binary("ip", "apt-get install iproute2");
    require_binary("ping", "apt-get install iputils-ping");
}

/// Root plus ovsdb-tool, ovsdb-server, ovs-vswitchd, ovs-vsctl, ovs-appctl and the vswitch schema.
#[track_caller]
pub fn require_ovs() {
    require_netns();
    for b in ["ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-appctl"] {
        require_binary(b, OVS_HINT);
    }
    require_file(VSWITCH_SCHEMA, OVS_HINT);
}

/// etcd and etcdctl (Debian: etcd-server and etcd-client).
#[track_caller]
pub fn require_etcd() {
    require_binary("etcd", "apt-get install etcd-server");
    require_binary("etcdctl", "apt-get install etcd-client");
}
