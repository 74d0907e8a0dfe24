//! The overlay-agent local API, shared by the agent, its CLI and the container-runtime plugins:
//! the request, result and status types ([`types`]) and a typed client of the agent's unix
//! socket ([`client`]). It links neither etcd nor OVSDB code, so a plugin that uses it stays small.

#![warn(missing_docs)]

pub mod client;
pub mod types;

pub use client::{Client, ClientError};
pub use types::*;
