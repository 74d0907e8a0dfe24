//! The overlay domain: tenants, hosts, leases and endpoints (`model`), machine identity
//! (`identity`), interface names (`naming`), local VLANs (`vlan`), address management (`ipam`),
//! container MTU (`mtu`), and the level-triggered reconcile core: `desired` state of the
//! bridges from the cluster view, the `diff` against what OVSDB holds, and the flow `pipeline`.
//!
//! Everything here is pure: no I/O, no clock, no randomness. The agent reads etcd and OVSDB,
//! calls [`desired::desired_state`] and [`diff::diff`] and turns the resulting [`diff::Plan`]
//! into one OVSDB transaction, then computes [`pipeline::desired_flows`] and sends what
//! [`pipeline::changes`] lists as one OpenFlow bundle per bridge.

#![warn(missing_docs)]

pub mod desired;
pub mod diff;
pub mod error;
pub mod external_ids;
mod fnv;
pub mod gateway;
pub mod identity;
pub mod ipam;
pub mod model;
pub mod mtu;
pub mod naming;
pub mod pipeline;
pub mod publish;
mod text;
pub mod vlan;

#[cfg(test)]
mod fixtures;

pub use error::{DesiredError, GatewayError, IpamError, ModelError, MtuError, PublishError, VlanError};
pub use model::{Endpoint, HostRecord, IpClaim, Liveness, MacAddr, SubnetLease, Tenant, TunnelType, Vni};
