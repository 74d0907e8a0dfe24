//! A plugged container interface and the claim on its address.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::ids::is_token;
use super::{decode, encode, validate_container_id, validate_hostname, validate_owner, validate_tenant_name, MacAddr};
use crate::error::ModelError;
use crate::naming;

/// `/overlay/endpoints/<tenant>/<container>/<ifname>`: a plugged container interface.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// The tenant.
    pub tenant: String,
    /// The container id.
    pub container_id: String,
    /// The interface inside the container: a container has one endpoint per interface.
    #[serde(default = "default_ifname")]
    pub ifname: String,
    /// The machine identity of the agent that plugged it: only that machine may remove the
    /// record on its own (recovery, a dead container). Empty in records of older agents.
    #[serde(default)]
    pub machine_id: String,
    /// The host the container runs on.
    pub host: String,
    /// The container's address (prefix length is the tenant's).
    pub ip: IpAddr,
    /// The container interface's MAC.
    pub mac: MacAddr,
    /// OVS `external_ids:iface-id` ([`iface_id`]).
    pub iface_id: String,
    /// The host end of the veth, on br-int.
    pub port: String,
    /// Who plugged it: a runtime plugin's label (`docker:<network id>`, `cni:<network>`);
    /// none for a plug from the CLI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Ports of the host's underlay address that reach this interface. Left out when empty,
    /// so records without any keep the shape older agents wrote.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<crate::publish::Publish>,
}

impl Endpoint {
    /// Checks names, the MAC and the port name.
    pub fn validate(&self) -> Result<(), ModelError> {
        validate_tenant_name(&self.tenant)?;
        validate_container_id(&self.container_id)?;
        validate_hostname(&self.host)?;
        if !naming::is_valid_ifname(&self.ifname) {
            return Err(ModelError::InvalidInterfaceName { name: self.ifname.clone() });
        }
        self.mac.validate_unicast()?;
        // A container id (128 at most) and, for interfaces other than the first, `.` + ifname.
        if !is_token(&self.iface_id, 144) {
            return Err(ModelError::InvalidIfaceId { id: self.iface_id.clone() });
        }
        if !naming::is_valid_ifname(&self.port) {
            return Err(ModelError::InvalidInterfaceName { name: self.port.clone() });
        }
        if let Some(owner) = &self.owner {
            validate_owner(owner)?;
        }
        crate::publish::validate_list(&self.publish)
            .map_err(|e| ModelError::Json { what: "endpoint", message: e.to_string() })?;
        Ok(())
    }

    /// Decodes and validates an endpoint record from etcd.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ModelError> {
        let e: Self = decode("endpoint", bytes)?;
        e.validate()?;
        Ok(e)
    }

    /// The JSON written to etcd.
    pub fn to_json(&self) -> Vec<u8> {
        encode(self)
    }
}

/// The `iface-id` of a container interface: the container id for its first interface (as
/// nova-docker names it), `<container>.<ifname>` for others, so each port has its own.
pub fn iface_id(container_id: &str, ifname: &str) -> String {
    if ifname == DEFAULT_IFNAME {
        container_id.to_owned()
    } else {
        format!("{container_id}.{ifname}")
    }
}

/// The interface name a container gets when none is asked for.
pub const DEFAULT_IFNAME: &str = "eth0";

fn default_ifname() -> String {
    DEFAULT_IFNAME.to_owned()
}

/// `/overlay/ips/<tenant>/<ip>`: who holds an address. The key is what makes addresses unique
/// (compare-and-create); the value says whose it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IpClaim {
    /// The container the address is for.
    pub container: String,
    /// The host that plugged it.
    pub host: String,
    /// The container's interface.
    #[serde(default = "default_ifname")]
    pub ifname: String,
    /// The machine identity of the agent that claimed it (empty from older agents).
    #[serde(default)]
    pub machine_id: String,
}

impl IpClaim {
    /// Decodes a claim; a claim is only ever compared and shown, so names are not re-validated.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ModelError> {
        decode("address claim", bytes)
    }

    /// The JSON written to etcd.
    pub fn to_json(&self) -> Vec<u8> {
        encode(self)
    }

    /// A reservation made before its plug (`container` is a unique token, no interface): what a
    /// plug of the same address on the same host and machine may take over.
    pub fn reservation(host: &str, machine_id: &str, token: &str) -> Self {
        IpClaim {
            container: format!("reserved-{token}"),
            host: host.to_owned(),
            ifname: String::new(),
            machine_id: machine_id.to_owned(),
        }
    }

    /// Whether this is a [`IpClaim::reservation`].
    pub fn is_reservation(&self) -> bool {
        self.ifname.is_empty()
    }

    /// Whether this claim is the one `other` made: same container interface on the same host
    /// by the same machine. A claim of an older agent (no machine id, no interface) matches
    /// on container and host, as those agents compared it.
    pub fn same_holder(&self, other: &IpClaim) -> bool {
        self.container == other.container
            && self.host == other.host
            && self.ifname == other.ifname
            && (self.machine_id == other.machine_id || self.machine_id.is_empty() || other.machine_id.is_empty())
    }
}
