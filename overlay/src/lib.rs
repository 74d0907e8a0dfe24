//! The overlay domain: tenants, hosts, leases and endpoints (`model`), interface names
//! (`naming`), local VLANs (`vlan`), address management (`ipam`), container MTU (`mtu`), and the
//! level-triggered reconcile core: `desired` state from the cluster view, and the `diff`
//! against what OVSDB holds.
//!
//! Everything here is pure: no I/O, no clock, no randomness. The agent reads etcd and OVSDB,
//! calls [`desired::desired_state`] and [`diff::diff`] (or [`diff::diff_since`] while OVSDB
//! has not changed since a pass found it in step), and turns the resulting [`diff::Plan`] into
//! one OVSDB transaction. See `DESIGN.md` for the data plane this builds.

#![warn(missing_docs)]

pub mod desired;
pub mod diff;
pub mod error;
pub mod external_ids;
mod fnv;
pub mod identity;
pub mod ipam;
pub mod model;
pub mod mtu;
pub mod naming;
mod text;
pub mod vlan;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod reference;

pub use error::{DesiredError, IpamError, ModelError, MtuError, VlanError};
pub use model::{Endpoint, HostRecord, IpClaim, Liveness, MacAddr, SubnetLease, Tenant, TunnelType, Vni};
