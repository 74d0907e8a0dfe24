//! Helpers shared by the multi-host tests and the benchmarks: an [`AgentProc`] fixture that runs
//! the real `overlay-agent` binary against a [`testbed::TestHost`] and a [`testbed::Etcd`], a
//! [`Cluster`] of them, a wait for a reconcile pass that began after a given moment
//! ([`AgentProc::wait_pass_after_now`]), readers of the OVSDB rows the agent built (through
//! OVS's own tools), and traffic: a [`Pinger`] that accounts for every echo, an
//! [`IperfServer`].

mod agent;
mod cluster;
pub mod cni;
pub mod docker;
pub mod gateway;
pub mod leftovers;
mod ovs_rows;
mod pass;
mod pinger;
mod traffic;

pub use agent::{agent_binary, ip_of, plug, wait_child, workspace_binary, AgentProc};
pub use cluster::Cluster;
pub use ovs_rows::{flows_on, ofport_of, ports_on, tunnel_sources, tunnels, tunnels_to, PortRow};
pub use pinger::{PingReport, Pinger};
pub use traffic::{get_metrics, metrics_address, IperfServer};
