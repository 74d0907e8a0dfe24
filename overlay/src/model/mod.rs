//! The data model: what is stored in etcd (as JSON) and what the rest of the crate computes on.
//!
//! Every record read from etcd is re-validated on decoding: etcd is writable by anyone with
//! access, so garbage there must give an error, never a panic or a half-valid value.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ModelError;

mod endpoint;
mod host;
mod ids;
mod lease;
mod mac;
mod tenant;

pub use endpoint::{iface_id, Endpoint, IpClaim, DEFAULT_IFNAME};
pub use host::{HostRecord, Liveness};
pub use ids::{
    validate_container_id, validate_hostname, validate_owner, validate_tenant_name, TunnelType, Vni, VNI_MAX,
};
pub use lease::{lease_key_segment, parse_lease_key_segment, SubnetLease};
pub use mac::MacAddr;
pub use tenant::{default_subnet_len, max_subnet_len, Tenant};

/// Decodes a JSON record; a decoder error becomes a [`ModelError::Json`] naming the record kind.
fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, ModelError> {
    serde_json::from_slice(bytes).map_err(|e| ModelError::Json { what, message: e.to_string() })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs (strings, numbers, addresses) cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests;
