//! The data model: what is stored in etcd (as JSON) and what the rest of the crate computes on.
//!
//! Every record read from etcd is re-validated on decoding: etcd is writable by anyone with
//! access, so garbage there must give an error, never a panic or a half-valid value.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::ipam::{addr_from_u128, addr_to_u128};
use crate::naming;

mod mac;
pub use mac::MacAddr;

/// The largest VNI: VXLAN VNIs are 24 bits (RFC 7348); GRE keys are 32 but we keep one range.
pub const VNI_MAX: u32 = 16_777_215;

/// A tenant's virtual network identifier: the VXLAN VNI or GRE key on the wire.
///
/// 0 is excluded because OVS treats `options:key=0` as "no key".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Vni(u32);

impl Vni {
    /// Validates the range 1..=16_777_215.
    pub fn new(vni: u32) -> Result<Self, ModelError> {
        if (1..=VNI_MAX).contains(&vni) {
            Ok(Self(vni))
        } else {
            Err(ModelError::VniOutOfRange { vni: vni.into() })
        }
    }

    /// The numeric value.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Vni {
    type Error = ModelError;
    fn try_from(v: u32) -> Result<Self, ModelError> {
        Self::new(v)
    }
}

impl From<Vni> for u32 {
    fn from(v: Vni) -> u32 {
        v.0
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Vni {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        let v: u64 = s.trim().parse().map_err(|_| ModelError::VniNotANumber { input: s.to_owned() })?;
        u32::try_from(v).map_err(|_| ModelError::VniOutOfRange { vni: v }).and_then(Self::new)
    }
}

/// The encapsulation of a tenant's tunnels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelType {
    /// VXLAN over UDP 4789 (RFC 7348).
    Vxlan,
    /// GRE with a key (RFC 2890).
    Gre,
}

impl TunnelType {
    /// Both types, for iteration in tests and CLI help.
    pub const ALL: [TunnelType; 2] = [TunnelType::Vxlan, TunnelType::Gre];

    /// The lowercase name, which is also the OVS `Interface.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelType::Vxlan => "vxlan",
            TunnelType::Gre => "gre",
        }
    }
}

impl fmt::Display for TunnelType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TunnelType {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "vxlan" => Ok(TunnelType::Vxlan),
            "gre" => Ok(TunnelType::Gre),
            _ => Err(ModelError::UnknownTunnelType { input: s.to_owned() }),
        }
    }
}

/// `[A-Za-z0-9][A-Za-z0-9_.-]{0,max-1}`: safe as an etcd key segment (no `/`, cannot be `.`
/// or `..`).
fn is_token(s: &str, max_len: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max_len
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Checks a tenant name: `[A-Za-z0-9][A-Za-z0-9_.-]{0,62}`.
pub fn validate_tenant_name(name: &str) -> Result<(), ModelError> {
    if is_token(name, 63) {
        Ok(())
    } else {
        Err(ModelError::InvalidTenantName { name: name.to_owned() })
    }
}

/// Checks a container id: `[A-Za-z0-9][A-Za-z0-9_.-]{0,127}` (Docker ids are 64 hex digits).
pub fn validate_container_id(id: &str) -> Result<(), ModelError> {
    if is_token(id, 128) {
        Ok(())
    } else {
        Err(ModelError::InvalidContainerId { id: id.to_owned() })
    }
}

/// Checks an endpoint's owner label: 1 to 200 characters of `[A-Za-z0-9_.:/-]`.
pub fn validate_owner(owner: &str) -> Result<(), ModelError> {
    let ok = !owner.is_empty()
        && owner.len() <= 200
        && owner.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b':' | b'/' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ModelError::InvalidOwner { owner: owner.to_owned() })
    }
}

/// Checks a hostname, RFC 1123 style: letters, digits, `-` and `.`, at most 253 characters,
/// starting and ending with a letter or digit, no empty label (`..`).
pub fn validate_hostname(name: &str) -> Result<(), ModelError> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 253
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.'))
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(ModelError::InvalidHostname { name: name.to_owned() })
    }
}

/// Decodes a JSON record; a decoder error becomes a [`ModelError::Json`] naming the record kind.
fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, ModelError> {
    serde_json::from_slice(bytes).map_err(|e| ModelError::Json { what, message: e.to_string() })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs (strings, numbers, addresses) cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

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

fn validate_underlay_ip(host: &str, ip: IpAddr) -> Result<(), ModelError> {
    let bad = ip.is_unspecified() || ip.is_multicast() || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if bad {
        Err(ModelError::InvalidUnderlayIp { host: host.to_owned(), ip })
    } else {
        Ok(())
    }
}

/// `/overlay/subnets/<tenant>/<a.b.c.d-len>`: a slice of a tenant CIDR owned by one host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SubnetLease {
    /// The tenant.
    pub tenant: String,
    /// The leased subnet (a network address).
    pub subnet: IpNet,
    /// The owning host.
    pub host: String,
    /// The owner's underlay IP when it took the lease (the host record is authoritative).
    pub underlay_ip: IpAddr,
}

impl SubnetLease {
    /// Checks names and that the subnet is a network address.
    pub fn validate(&self) -> Result<(), ModelError> {
        validate_tenant_name(&self.tenant)?;
        validate_hostname(&self.host)?;
        validate_underlay_ip(&self.host, self.underlay_ip)?;
        if self.subnet.trunc() != self.subnet {
            return Err(ModelError::CidrHostBits { cidr: self.subnet, network: self.subnet.trunc() });
        }
        Ok(())
    }

    /// Checks that the lease is a `subnet_len` slice of the tenant's CIDR.
    pub fn validate_for(&self, tenant: &Tenant) -> Result<(), ModelError> {
        self.validate()?;
        let cidr = tenant.cidr();
        let fits = self.tenant == tenant.name()
            && self.subnet.prefix_len() == tenant.subnet_len()
            && self.subnet.max_prefix_len() == cidr.max_prefix_len()
            && cidr.contains(&self.subnet.network());
        if fits {
            Ok(())
        } else {
            Err(ModelError::LeaseOutsideTenant {
                subnet: self.subnet,
                tenant: tenant.name().to_owned(),
                cidr,
                subnet_len: tenant.subnet_len(),
            })
        }
    }

    /// Decodes and validates a lease record from etcd.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ModelError> {
        let l: Self = decode("subnet lease", bytes)?;
        l.validate()?;
        Ok(l)
    }

    /// The JSON written to etcd.
    pub fn to_json(&self) -> Vec<u8> {
        encode(self)
    }
}

/// The etcd key segment of a subnet: `10.1.2.0-24` (a `/` would split the key).
pub fn lease_key_segment(subnet: &IpNet) -> String {
    format!("{}-{}", subnet.network(), subnet.prefix_len())
}

/// Parses [`lease_key_segment`] output back; rejects host bits.
pub fn parse_lease_key_segment(segment: &str) -> Result<IpNet, ModelError> {
    let bad = || ModelError::InvalidLeaseKey { input: segment.to_owned() };
    let (addr, len) = segment.rsplit_once('-').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let net = IpNet::new(addr, len).map_err(|_| bad())?;
    if net.trunc() != net {
        return Err(bad());
    }
    Ok(net)
}

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

#[cfg(test)]
mod tests;
