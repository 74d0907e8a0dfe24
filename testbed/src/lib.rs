//! Test fixtures for overlay-agent's integration tests: private `ovsdb-server` /
//! `ovs-vswitchd` instances, a single-node etcd, network namespaces, a multi-host underlay
//! ([`Fabric`] + [`TestHost`]) and polling helpers.
//!
//! The API is synchronous and std-only (blocking calls), usable from plain and tokio tests.
//! Fixtures shell out to `ip`, `ovsdb-tool`, `ovs-vsctl`, `ovs-appctl`, `etcdctl`, `ping`: only
//! the product must not.
//!
//! # Requirements, checked loudly
//! Root, iproute2, iputils-ping, Debian's `openvswitch-switch` (3.1) and `etcd-server` /
//! `etcd-client` (3.4). A missing requirement panics with what to install
//! ([`require_root`], [`require_binary`], [`require_ovs`], [`require_etcd`]); nothing is skipped.
//! The kernel needs neither the openvswitch nor a GRE module: bridges use the userspace datapath
//! (`datapath_type=netdev`). The container-runtime fixtures ([`Dockerd`], [`Podman`]) need
//! Debian's `docker.io`, `podman`, `containernetworking-plugins` and `busybox-static`.
//!
//! # Layout (as in `shared/lab/overlay-lab.sh`)
//! ```text
//!  root netns: etcd on 127.a.b.c:<port>, the agents under test, cargo test
//!  fab-tb<pid>-<n>   br0 (Linux bridge) ── vf<..> veth ends, one per host
//!  h1-tb<pid>-<n>    eth1 ── br-phy (OVS, netdev) 198.18.X.1/24;  ovsdb-server + ovs-vswitchd
//!  h2-tb<pid>-<n>    eth1 ── br-phy (OVS, netdev) 198.18.X.2/24;  ovsdb-server + ovs-vswitchd
//!  c-tb<pid>-<n>     a container: an empty netns the agent plugs
//! ```
//! X is claimed per [`Fabric`] so that fabrics alive at the same time never share a subnet.
//!
//! # Where the agent under test runs
//! In the ROOT network namespace, not inside the host namespace: etcd listens on a loopback
//! address of the root namespace, which no other namespace can reach. The agent reaches
//! everything else without living in the host namespace:
//! - OVSDB through the host's unix socket ([`TestHost::ovsdb_remote`]): a socket file in a temp
//!   dir works from every namespace;
//! - netlink inside the host namespace through a socket opened after `setns` into
//!   [`Netns::path`] on a short-lived thread (see DESIGN.md), and container namespaces by path.
//!
//! Its hostname is [`TestHost::name`] and its underlay IP [`TestHost::underlay_ip`].
//!
//! # Isolation and clean-up
//! Tests run in parallel threads and processes: every namespace (`<prefix>-tb<pid>-<n>`), link
//! ([`unique_name`]), temp dir (`tbfix-<pid>-...`) and port is unique. Every fixture kills its
//! processes and removes what it made on drop, also when the test panics; a [`Cleanup`] guard
//! runs arbitrary closures the same way. Processes are never daemonized (`--detach`): each is a
//! child the fixture owns. Leftovers of a test process killed outright (no drop ran) are removed
//! by the first fixture of a later process ([`sweep_stale`]).

mod busybox;
mod cleanup;
mod docker;
mod etcd;
mod fabric;
mod mounts;
mod names;
mod netns;
mod ovsdb_server;
mod pki;
mod podman;
mod process;
mod require;
mod sweep;
mod vswitchd;
mod wait;

pub use busybox::busybox_rootfs;
pub use cleanup::Cleanup;
pub use docker::{plugin_name, Dockerd, DOCKER_CLI, PLUGIN_SPEC_DIR};
pub use etcd::Etcd;
pub use fabric::{Fabric, TestHost, OUTSIDE_OCTET, UNDERLAY_PREFIX_LEN};
pub use names::{free_port_on, private_loopback_ip, unique_name};
pub use netns::{ping, wait_ping, Container, Netns};
pub use ovsdb_server::OvsdbServer;
pub use pki::{make_ca, make_cert};
pub use podman::Podman;
pub use process::{signal, ChildGuard, Process};
pub use require::{
    require_binary, require_etcd, require_file, require_netns, require_ovs, require_root, VSWITCH_SCHEMA,
};
pub use sweep::sweep_stale;
pub use vswitchd::Vswitchd;
pub use wait::{hold_for, try_wait_for, wait_for, wait_until};
