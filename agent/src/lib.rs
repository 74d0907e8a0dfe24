//! overlay-agent as a library: the pieces the `overlay-agent` binary is made of, public so the
//! integration tests can drive them directly (the netlink plumbing, the registry).

pub mod api;
pub mod daemon;
pub mod metrics;
pub mod netlink;
pub mod ovs;
pub mod plug;
pub mod registry;
