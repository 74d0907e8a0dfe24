//! overlay-agent as a library: the pieces the `overlay-agent` binary is made of, public so the
//! integration tests can drive them directly (the netlink plumbing, the registry).
//!
//! Imports run one way, each layer using only the layers above it in this list (no cycles):
//! 1. `backoff`, `identity`, `memory`, `netlink`: nothing of this crate.
//! 2. `registry` (etcd) and `ovs` (OVSDB): `backoff`. `nft` (nftables): `netlink`.
//! 3. `gateway` (the per-tenant routers): `netlink`, `nft`, `ovs`.
//! 4. `host` (this host's standing): `registry`. `dataplane`: `gateway`, `netlink`, `ovs`,
//!    `registry`.
//! 5. `plug`: `dataplane`, `gateway`, `host`, `netlink`, `ovs`, `registry`.
//! 6. `agent`: holds all of those together.
//! 7. What works on an `Agent`: `status`; `metrics` (through `status`); `reconcile`;
//!    `registration` (with `host`, `identity`, `registry`); `api_server` (with `plug`,
//!    `registry`, `status`).
//! 8. `daemon`: wires them up.

pub mod backoff;
pub mod identity;
pub mod memory;
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
pub mod metrics;
pub mod reconcile;
pub mod registration;
pub mod status;

pub mod daemon;
