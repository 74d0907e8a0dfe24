//! What etcd holds of a host: its registration and the liveness key of its running agent.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{decode, encode, validate_hostname, TunnelType};
use crate::error::ModelError;

/// `/overlay/hosts/<hostname>`: one agent's registration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HostRecord {
    /// The hostname (also the key segment).
    pub hostname: String,
    /// The tunnel endpoint address.
    pub underlay_ip: IpAddr,
    /// OVS's `system-id` of the host (what Neutron-style tools know it by); the machine's own
    /// id when OVS has none. Agents before `machine_id` existed recognised their own record by it.
    pub system_id: String,
    /// The agent's machine identity ([`crate::identity`]): which machine holds this name. Empty
    /// in records of agents that predate it.
    #[serde(default)]
    pub machine_id: String,
    /// Tunnel types this agent can build.
    #[serde(default)]
    pub tunnel_types: Vec<TunnelType>,
    /// Agent version, for status output.
    #[serde(default)]
    pub version: String,
}

impl HostRecord {
    /// Checks hostname, underlay address and system id.
    pub fn validate(&self) -> Result<(), ModelError> {
        validate_hostname(&self.hostname)?;
        validate_underlay_ip(&self.hostname, self.underlay_ip)?;
        if self.system_id.trim().is_empty()
            || self.system_id.len() > 256
            || self.system_id.chars().any(char::is_control)
        {
            return Err(ModelError::InvalidSystemId { host: self.hostname.clone() });
        }
        Ok(())
    }

    /// Decodes and validates a host record from etcd.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ModelError> {
        let h: Self = decode("host", bytes)?;
        h.validate()?;
        Ok(h)
    }

    /// The JSON written to etcd.
    pub fn to_json(&self) -> Vec<u8> {
        encode(self)
    }
}

pub(super) fn validate_underlay_ip(host: &str, ip: IpAddr) -> Result<(), ModelError> {
    let bad = ip.is_unspecified() || ip.is_multicast() || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if bad {
        Err(ModelError::InvalidUnderlayIp { host: host.to_owned(), ip })
    } else {
        Ok(())
    }
}

/// `/overlay/alive/<host>`: held by a running agent under a short lease. What it says lets a
/// restarting agent tell its own dead predecessor from another machine using the name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Liveness {
    /// The holder's machine identity.
    pub machine_id: String,
    /// The holder's kernel boot id (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
    /// The holder's process id on that boot.
    pub pid: u32,
    /// The holder's underlay address.
    pub underlay_ip: IpAddr,
}

impl Liveness {
    /// Decodes a liveness value; `None` for the empty value older agents write.
    pub fn from_json(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    /// The JSON written to etcd.
    pub fn to_json(&self) -> Vec<u8> {
        encode(self)
    }
}
