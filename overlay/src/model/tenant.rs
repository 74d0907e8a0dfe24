//! `/overlay/tenants/<name>`: a tenant, valid by construction, and its lease lengths.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{decode, encode, validate_tenant_name, TunnelType, Vni};
use crate::error::ModelError;
use crate::ipam::{addr_from_u128, addr_to_u128};

/// The longest accepted lease length: 4 addresses per lease (network, two hosts, broadcast),
/// i.e. /30 for IPv4 and /126 for IPv6.
pub fn max_subnet_len(cidr: &IpNet) -> u8 {
    cidr.max_prefix_len() - 2
}

/// The lease length the CLI uses when none is given: /24 (IPv4) or /64 (IPv6), or the CIDR's
/// own length when it is already smaller than that, clamped to what [`Tenant::new`] accepts.
pub fn default_subnet_len(cidr: &IpNet) -> u8 {
    let base = if cidr.max_prefix_len() == 32 { 24 } else { 64 };
    base.max(cidr.prefix_len()).min(max_subnet_len(cidr))
}

/// An isolated L2 network. Fields are private so that every `Tenant` is valid; build one with
/// [`Tenant::new`] or decode one with [`Tenant::from_json`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "TenantRecord")]
pub struct Tenant {
    name: String,
    vni: Vni,
    cidr: IpNet,
    tunnel: TunnelType,
    subnet_len: u8,
    gateway: IpAddr,
    /// Whether containers reach beyond the tenant through their host's gateway. Written only
    /// when off, so records of tenants with the default keep the shape older agents wrote.
    #[serde(skip_serializing_if = "is_true")]
    egress: bool,
    /// Networks of the control plane (etcd, the hosts' own addresses) the tenant's containers
    /// may reach all the same through the gateway.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    control_plane_allow: Vec<IpNet>,
}

fn is_true(b: &bool) -> bool {
    *b
}

fn yes() -> bool {
    true
}

/// The JSON shape of a tenant before validation. The gateway is optional on input because it
/// is derived; when present it must match. Records of agents before the gateway have neither
/// `egress` nor `control_plane_allow`: egress on, nothing allowed.
#[derive(Deserialize)]
struct TenantRecord {
    name: String,
    vni: Vni,
    cidr: IpNet,
    tunnel: TunnelType,
    subnet_len: u8,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default = "yes")]
    egress: bool,
    #[serde(default)]
    control_plane_allow: Vec<IpNet>,
}

impl TryFrom<TenantRecord> for Tenant {
    type Error = ModelError;
    fn try_from(r: TenantRecord) -> Result<Self, ModelError> {
        let t = Tenant::new(&r.name, r.vni, r.cidr, r.tunnel, r.subnet_len)?
            .with_egress(r.egress)
            .with_control_plane_allow(r.control_plane_allow)
            .map_err(|e| ModelError::Json { what: "tenant", message: e.to_string() })?;
        match r.gateway {
            Some(stored) if stored != t.gateway => {
                Err(ModelError::GatewayMismatch { tenant: t.name, stored, expected: t.gateway })
            }
            _ => Ok(t),
        }
    }
}

impl Tenant {
    /// Validates and builds a tenant; the gateway is the first host address of `cidr`.
    pub fn new(name: &str, vni: Vni, cidr: IpNet, tunnel: TunnelType, subnet_len: u8) -> Result<Self, ModelError> {
        validate_tenant_name(name)?;
        if cidr.trunc() != cidr {
            return Err(ModelError::CidrHostBits { cidr, network: cidr.trunc() });
        }
        let max = max_subnet_len(&cidr);
        if subnet_len > max {
            return Err(ModelError::SubnetLenTooLong { subnet_len, max });
        }
        if subnet_len < cidr.prefix_len() {
            return Err(ModelError::SubnetLenTooShort { subnet_len, cidr, max });
        }
        // prefix_len <= subnet_len <= max - 2, so network + 1 is inside the CIDR and is
        // neither its network nor its broadcast address.
        let gateway = addr_from_u128(addr_to_u128(cidr.network()) + 1, cidr.network());
        Ok(Self {
            name: name.to_owned(),
            vni,
            cidr,
            tunnel,
            subnet_len,
            gateway,
            egress: true,
            control_plane_allow: Vec::new(),
        })
    }

    /// The tenant with egress on or off.
    pub fn with_egress(mut self, egress: bool) -> Self {
        self.egress = egress;
        self
    }

    /// The tenant with a control-plane allow-list: networks, sorted and without duplicates.
    pub fn with_control_plane_allow(mut self, mut allow: Vec<IpNet>) -> Result<Self, crate::error::GatewayError> {
        for cidr in &allow {
            if cidr.trunc() != *cidr {
                return Err(crate::error::GatewayError::AllowHostBits { cidr: *cidr, network: cidr.trunc() });
            }
        }
        allow.sort_unstable();
        allow.dedup();
        self.control_plane_allow = allow;
        Ok(self)
    }

    /// Whether containers reach beyond the tenant through their host's gateway.
    pub fn egress(&self) -> bool {
        self.egress
    }

    /// Control-plane networks the tenant's containers may reach all the same.
    pub fn control_plane_allow(&self) -> &[IpNet] {
        &self.control_plane_allow
    }

    /// Decodes and validates a tenant record from etcd.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ModelError> {
        decode("tenant", bytes)
    }

    /// The JSON written to etcd.
    pub fn to_json(&self) -> Vec<u8> {
        encode(self)
    }

    /// The tenant name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The VNI / GRE key.
    pub fn vni(&self) -> Vni {
        self.vni
    }

    /// The tenant's whole CIDR (containers get its prefix length).
    pub fn cidr(&self) -> IpNet {
        self.cidr
    }

    /// The tunnel type.
    pub fn tunnel(&self) -> TunnelType {
        self.tunnel
    }

    /// The prefix length of each host's subnet lease.
    pub fn subnet_len(&self) -> u8 {
        self.subnet_len
    }

    /// The gateway address (first host address of the CIDR), never handed to a container.
    pub fn gateway(&self) -> IpAddr {
        self.gateway
    }

    /// Whether the tenant is an IPv6 network.
    pub fn is_ipv6(&self) -> bool {
        self.cidr.max_prefix_len() == 128
    }

    /// The broadcast address; IPv6 has none.
    pub fn broadcast(&self) -> Option<IpAddr> {
        (!self.is_ipv6()).then(|| self.cidr.broadcast())
    }
}
