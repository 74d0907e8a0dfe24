//! overlay-agent as a library: the pieces the `overlay-agent` binary is made of, public so the
//! integration tests can drive them directly (the netlink plumbing, the registry).
//!
//! Imports run one way, from the bottom of this list up: `backoff`, `identity`, `netlink`,
//! `registry` and `ovs` know nothing of the others; `nft` builds on `netlink`; `gateway` on
//! `netlink`, `nft` and `ovs`; `dataplane` builds on `ovs` and `registry`; `host` and `plug`
//! on those; `agent` holds it all together; `status`,
//! `reconcile`, `registration`, `api_server` and `metrics` work on an `Agent`; `daemon` wires
//! them up.

pub mod backoff;
pub mod identity;
pub mod netlink;
pub mod nft;
pub mod ovs;
pub mod registry;

pub mod dataplane;
pub mod gateway;
pub mod host;
pub mod plug;

pub mod agent;
pub mod api_server;
pub mod memory;
pub mod metrics;
pub mod reconcile;
pub mod registration;
pub mod status;

pub mod daemon;
