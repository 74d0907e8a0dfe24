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
use crate::{fnv, naming};

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

/// An Ethernet MAC address, written `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The I/G bit: set for group (multicast and broadcast) addresses.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// The U/L bit: set for addresses not assigned by a vendor.
    pub fn is_locally_administered(&self) -> bool {
        self.0[0] & 0x02 != 0
    }

    /// A container MAC must be unicast and non-zero, or its frames are flooded or dropped.
    pub fn validate_unicast(&self) -> Result<(), ModelError> {
        if self.is_multicast() || self.0 == [0; 6] {
            Err(ModelError::NotUnicastMac { mac: self.to_string() })
        } else {
            Ok(())
        }
    }

    /// A deterministic locally administered unicast MAC derived from `seed` (e.g. the
    /// container id), so a re-plugged container keeps its MAC and neighbours' ARP caches stay
    /// right. Locally administered addresses cannot clash with vendor-assigned NICs.
    pub fn locally_administered_from(seed: &[u8]) -> MacAddr {
        let h = fnv::hash(seed).to_be_bytes();
        let mut b = [h[0], h[1], h[2], h[3], h[4], h[5]];
        b[0] = (b[0] & 0xfc) | 0x02;
        MacAddr(b)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

impl FromStr for MacAddr {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        let bad = || ModelError::InvalidMac { input: s.to_owned() };
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl TryFrom<String> for MacAddr {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, ModelError> {
        s.parse()
    }
}

impl From<MacAddr> for String {
    fn from(m: MacAddr) -> String {
        m.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn vni(v: u32) -> Vni {
        Vni::new(v).unwrap()
    }

    #[test]
    fn vni_range_edges() {
        assert!(Vni::new(0).is_err());
        assert_eq!(Vni::new(1).unwrap().get(), 1);
        assert_eq!(Vni::new(VNI_MAX).unwrap().get(), VNI_MAX);
        assert!(Vni::new(VNI_MAX + 1).is_err());
        assert!(Vni::new(u32::MAX).is_err());
        assert_eq!(Vni::new(0).unwrap_err().to_string(), "VNI 0 is out of range: use 1..=16777215");
    }

    #[test]
    fn vni_from_str_and_serde() {
        assert_eq!("42".parse::<Vni>().unwrap().get(), 42);
        assert_eq!(" 7 ".parse::<Vni>().unwrap().get(), 7);
        assert!(matches!("x".parse::<Vni>(), Err(ModelError::VniNotANumber { .. })));
        assert!(matches!("-1".parse::<Vni>(), Err(ModelError::VniNotANumber { .. })));
        assert_eq!("99999999999".parse::<Vni>(), Err(ModelError::VniOutOfRange { vni: 99_999_999_999 }));
        assert_eq!(serde_json::to_string(&vni(5)).unwrap(), "5");
        assert!(serde_json::from_str::<Vni>("0").is_err());
        assert!(serde_json::from_str::<Vni>("16777216").is_err());
        assert_eq!(serde_json::from_str::<Vni>("16777215").unwrap(), vni(VNI_MAX));
    }

    #[test]
    fn tunnel_type_text_forms() {
        for t in TunnelType::ALL {
            assert_eq!(t.to_string().parse::<TunnelType>().unwrap(), t);
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
            assert_eq!(serde_json::from_str::<TunnelType>(&json).unwrap(), t);
        }
        assert_eq!("VXLAN".parse::<TunnelType>().unwrap(), TunnelType::Vxlan);
        assert!("geneve".parse::<TunnelType>().is_err());
        assert!(serde_json::from_str::<TunnelType>("\"Gre\"").is_err());
    }

    #[test]
    fn tenant_name_rules() {
        for ok in ["a", "A1", "blue", "team-1.prod_x", &"a".repeat(63)] {
            assert!(validate_tenant_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "-a", "_a", "a/b", "a b", "é", &"a".repeat(64), "a\n"] {
            assert!(validate_tenant_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn container_id_rules() {
        assert!(validate_container_id(&"f".repeat(64)).is_ok());
        assert!(validate_container_id(&"f".repeat(128)).is_ok());
        assert!(validate_container_id(&"f".repeat(129)).is_err());
        assert!(validate_container_id("../etc").is_err());
        assert!(validate_container_id("a/b").is_err());
        assert!(validate_container_id("").is_err());
    }

    #[test]
    fn hostname_rules() {
        for ok in ["a", "host-1", "node1.example.com", "1", &"a".repeat(253)] {
            assert!(validate_hostname(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", ".a", "a.", "a..b", "a/b", "a_b", "héllo", "a b", &"a".repeat(254)] {
            assert!(validate_hostname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tenant_new_derives_gateway() {
        let t = Tenant::new("blue", vni(10), net("10.1.0.0/16"), TunnelType::Vxlan, 24).unwrap();
        assert_eq!(t.gateway(), "10.1.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(t.broadcast(), Some("10.1.255.255".parse().unwrap()));
        assert!(!t.is_ipv6());
        let t6 = Tenant::new("v6", vni(11), net("fd00:1::/48"), TunnelType::Gre, 64).unwrap();
        assert_eq!(t6.gateway(), "fd00:1::1".parse::<IpAddr>().unwrap());
        assert_eq!(t6.broadcast(), None);
    }

    #[test]
    fn tenant_new_rejects_host_bits_with_hint() {
        let err = Tenant::new("b", vni(1), net("10.1.2.3/16"), TunnelType::Gre, 24).unwrap_err();
        assert_eq!(err, ModelError::CidrHostBits { cidr: net("10.1.2.3/16"), network: net("10.1.0.0/16") });
        assert!(err.to_string().contains("use the network address 10.1.0.0/16"));
    }

    #[test]
    fn tenant_subnet_len_bounds() {
        let c = net("10.0.0.0/16");
        assert!(Tenant::new("t", vni(1), c, TunnelType::Gre, 16).is_ok());
        assert!(Tenant::new("t", vni(1), c, TunnelType::Gre, 30).is_ok());
        assert!(matches!(
            Tenant::new("t", vni(1), c, TunnelType::Gre, 31),
            Err(ModelError::SubnetLenTooLong { max: 30, .. })
        ));
        assert!(matches!(Tenant::new("t", vni(1), c, TunnelType::Gre, 15), Err(ModelError::SubnetLenTooShort { .. })));
        // A /31 or /32 tenant cannot hold a single lease of 4 addresses.
        assert!(Tenant::new("t", vni(1), net("10.0.0.0/31"), TunnelType::Gre, 31).is_err());
        let c6 = net("fd00::/64");
        assert!(Tenant::new("t", vni(1), c6, TunnelType::Gre, 126).is_ok());
        assert!(Tenant::new("t", vni(1), c6, TunnelType::Gre, 127).is_err());
        assert!(Tenant::new("t", vni(1), c6, TunnelType::Gre, 63).is_err());
    }

    #[test]
    fn default_subnet_len_is_always_accepted() {
        for s in ["10.0.0.0/8", "10.0.0.0/24", "10.0.0.0/28", "10.0.0.0/30", "fd00::/48", "fd00::/120"] {
            let c = net(s);
            let len = default_subnet_len(&c);
            assert!(Tenant::new("t", vni(1), c, TunnelType::Vxlan, len).is_ok(), "{s} /{len}");
        }
        assert_eq!(default_subnet_len(&net("10.0.0.0/8")), 24);
        assert_eq!(default_subnet_len(&net("10.0.0.0/28")), 28);
        assert_eq!(default_subnet_len(&net("fd00::/48")), 64);
    }

    #[test]
    fn tenant_json_round_trip_and_stable_shape() {
        let t = Tenant::new("blue", vni(10), net("10.1.0.0/16"), TunnelType::Vxlan, 24).unwrap();
        let json = String::from_utf8(t.to_json()).unwrap();
        assert_eq!(
            json,
            r#"{"name":"blue","vni":10,"cidr":"10.1.0.0/16","tunnel":"vxlan","subnet_len":24,"gateway":"10.1.0.1"}"#
        );
        assert_eq!(Tenant::from_json(json.as_bytes()).unwrap(), t);
    }

    #[test]
    fn tenant_gateway_settings_default_on_and_round_trip() {
        let old = br#"{"name":"b","vni":3,"cidr":"10.0.0.0/24","tunnel":"gre","subnet_len":26}"#;
        let t = Tenant::from_json(old).unwrap();
        assert!(t.egress() && t.control_plane_allow().is_empty(), "records before the gateway: egress on");
        let t = t.with_egress(false).with_control_plane_allow(vec![net("10.9.0.0/16"), net("10.8.0.0/16")]).unwrap();
        let json = String::from_utf8(t.to_json()).unwrap();
        assert!(
            json.contains(r#""egress":false"#)
                && json.contains(r#""control_plane_allow":["10.8.0.0/16","10.9.0.0/16"]"#),
            "{json}"
        );
        assert_eq!(Tenant::from_json(json.as_bytes()).unwrap(), t);
        let host_bits = Tenant::new("b", vni(3), net("10.0.0.0/24"), TunnelType::Gre, 26)
            .unwrap()
            .with_control_plane_allow(vec![net("10.9.0.1/16")]);
        assert!(host_bits.unwrap_err().to_string().contains("10.9.0.0/16"));
        let bad = br#"{"name":"b","vni":3,"cidr":"10.0.0.0/24","tunnel":"gre","subnet_len":26,"control_plane_allow":["10.9.0.1/16"]}"#;
        assert!(Tenant::from_json(bad).is_err());
    }

    #[test]
    fn tenant_from_json_revalidates() {
        let no_gw = br#"{"name":"b","vni":3,"cidr":"10.0.0.0/24","tunnel":"gre","subnet_len":26}"#;
        assert_eq!(Tenant::from_json(no_gw).unwrap().gateway(), "10.0.0.1".parse::<IpAddr>().unwrap());
        let cases: &[&[u8]] = &[
            br#"{"name":"b","vni":0,"cidr":"10.0.0.0/24","tunnel":"gre","subnet_len":26}"#,
            br#"{"name":"../x","vni":3,"cidr":"10.0.0.0/24","tunnel":"gre","subnet_len":26}"#,
            br#"{"name":"b","vni":3,"cidr":"10.0.0.9/24","tunnel":"gre","subnet_len":26}"#,
            br#"{"name":"b","vni":3,"cidr":"10.0.0.0/24","tunnel":"ipip","subnet_len":26}"#,
            br#"{"name":"b","vni":3,"cidr":"10.0.0.0/24","tunnel":"gre","subnet_len":31}"#,
            br#"{"name":"b","vni":3,"cidr":"10.0.0.0/24","tunnel":"gre","subnet_len":300}"#,
            br#"{"name":"b","vni":3,"cidr":"10.0.0.0/24","tunnel":"gre","subnet_len":26,"gateway":"10.0.0.2"}"#,
            br#"{"name":"b"}"#,
            b"",
            b"\xff\xfe",
            b"[]",
            b"null",
        ];
        for c in cases {
            let e = Tenant::from_json(c);
            assert!(e.is_err(), "{}", String::from_utf8_lossy(c));
        }
        let mismatch = Tenant::from_json(cases[6]).unwrap_err();
        assert!(mismatch.to_string().contains("10.0.0.2"), "{mismatch}");
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap fuzz: every prefix and every single-byte corruption of a valid record.
        let t = Tenant::new("blue", vni(10), net("10.1.0.0/16"), TunnelType::Vxlan, 24).unwrap();
        let json = t.to_json();
        for i in 0..json.len() {
            let _ = Tenant::from_json(&json[..i]);
            let _ = HostRecord::from_json(&json[..i]);
            for b in [b'0', b'"', b'}', 0xff, b'-', b'/'] {
                let mut j = json.clone();
                j[i] = b;
                if let Ok(t2) = Tenant::from_json(&j) {
                    // Whatever decodes is valid.
                    assert!(Tenant::new(t2.name(), t2.vni(), t2.cidr(), t2.tunnel(), t2.subnet_len()).is_ok());
                }
            }
        }
    }

    fn host() -> HostRecord {
        HostRecord {
            hostname: "node1".into(),
            underlay_ip: "192.168.0.1".parse().unwrap(),
            system_id: "3f8a-1".into(),
            machine_id: "m-3f8a".into(),
            tunnel_types: vec![TunnelType::Vxlan, TunnelType::Gre],
            version: "0.1.0".into(),
        }
    }

    #[test]
    fn host_record_json() {
        let h = host();
        let json = String::from_utf8(h.to_json()).unwrap();
        assert_eq!(
            json,
            r#"{"hostname":"node1","underlay_ip":"192.168.0.1","system_id":"3f8a-1","machine_id":"m-3f8a","tunnel_types":["vxlan","gre"],"version":"0.1.0"}"#
        );
        assert_eq!(HostRecord::from_json(json.as_bytes()).unwrap(), h);
        let minimal = br#"{"hostname":"n","underlay_ip":"10.0.0.1","system_id":"x"}"#;
        let minimal = HostRecord::from_json(minimal).unwrap();
        assert!(minimal.tunnel_types.is_empty());
        assert_eq!(minimal.machine_id, "", "records of agents before machine ids decode");
    }

    #[test]
    fn host_record_validation() {
        let mut h = host();
        h.hostname = "a/b".into();
        assert!(matches!(h.validate(), Err(ModelError::InvalidHostname { .. })));
        let mut h = host();
        h.underlay_ip = "0.0.0.0".parse().unwrap();
        assert!(matches!(h.validate(), Err(ModelError::InvalidUnderlayIp { .. })));
        h.underlay_ip = "ff02::1".parse().unwrap();
        assert!(h.validate().is_err());
        let mut h = host();
        h.system_id = "  ".into();
        assert!(matches!(h.validate(), Err(ModelError::InvalidSystemId { .. })));
        let bad = br#"{"hostname":"..","underlay_ip":"10.0.0.1","system_id":"x"}"#;
        assert!(HostRecord::from_json(bad).is_err());
    }

    #[test]
    fn lease_validation_and_fit() {
        let t = Tenant::new("blue", vni(10), net("10.1.0.0/16"), TunnelType::Vxlan, 24).unwrap();
        let mut l = SubnetLease {
            tenant: "blue".into(),
            subnet: net("10.1.7.0/24"),
            host: "node1".into(),
            underlay_ip: "192.168.0.1".parse().unwrap(),
        };
        assert!(l.validate_for(&t).is_ok());
        assert_eq!(SubnetLease::from_json(&l.to_json()).unwrap(), l);
        l.subnet = net("10.2.7.0/24");
        assert!(matches!(l.validate_for(&t), Err(ModelError::LeaseOutsideTenant { .. })));
        l.subnet = net("10.1.7.0/25");
        assert!(l.validate_for(&t).is_err());
        l.subnet = net("10.1.7.1/24");
        assert!(matches!(l.validate(), Err(ModelError::CidrHostBits { .. })));
        l.subnet = net("fd00::/24");
        assert!(l.validate_for(&t).is_err());
        l.subnet = net("10.1.7.0/24");
        l.tenant = "red".into();
        assert!(l.validate_for(&t).is_err());
    }

    #[test]
    fn lease_key_segment_round_trip() {
        for s in ["10.1.2.0/24", "0.0.0.0/0", "fd00:1::/64", "10.0.0.4/30"] {
            let n = net(s);
            let seg = lease_key_segment(&n);
            assert!(!seg.contains('/'));
            assert_eq!(parse_lease_key_segment(&seg).unwrap(), n);
        }
        assert_eq!(lease_key_segment(&net("10.1.2.0/24")), "10.1.2.0-24");
        for bad in ["10.1.2.0", "10.1.2.0-33", "10.1.2.1-24", "x-24", "10.1.2.0-", "-24", "10.1.2.0--24"] {
            assert!(parse_lease_key_segment(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mac_parse_and_display() {
        let m: MacAddr = "AA:bb:0C:dd:ee:01".parse().unwrap();
        assert_eq!(m.0, [0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0x01]);
        assert_eq!(m.to_string(), "aa:bb:0c:dd:ee:01");
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"aa:bb:0c:dd:ee:01\"");
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa-bb-cc-dd-ee-ff",
            "aabb.ccdd.eeff",
            "a:bb:cc:dd:ee:ff",
            "aaa:bb:cc:dd:ee:f",
            "gg:bb:cc:dd:ee:ff",
            "+a:bb:cc:dd:ee:ff",
            "aa:bb:cc:dd:ee:ff:",
            " aa:bb:cc:dd:ee:ff",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<MacAddr>("\"zz\"").is_err());
    }

    #[test]
    fn mac_unicast_rules() {
        let ok: MacAddr = "02:42:ac:11:00:02".parse().unwrap();
        assert!(ok.validate_unicast().is_ok());
        for bad in ["01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "33:33:00:00:00:01", "00:00:00:00:00:00"] {
            let m: MacAddr = bad.parse().unwrap();
            assert!(m.validate_unicast().is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_macs_are_local_unicast_and_deterministic() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000 {
            let seed = format!("container-{i}");
            let m = MacAddr::locally_administered_from(seed.as_bytes());
            assert!(m.is_locally_administered() && !m.is_multicast(), "{m}");
            assert!(m.validate_unicast().is_ok());
            assert_eq!(m, MacAddr::locally_administered_from(seed.as_bytes()));
            assert!(seen.insert(m), "duplicate MAC for {seed}");
        }
        assert!(MacAddr::locally_administered_from(b"").validate_unicast().is_ok());
    }

    #[test]
    fn endpoint_json_and_validation() {
        let e = Endpoint {
            tenant: "blue".into(),
            container_id: "c1".into(),
            host: "node1".into(),
            ip: "10.1.0.5".parse().unwrap(),
            mac: MacAddr::locally_administered_from(b"c1"),
            iface_id: "c1".into(),
            port: naming::container_port_name("c1", DEFAULT_IFNAME),
            ifname: DEFAULT_IFNAME.into(),
            machine_id: "m-1".into(),
            owner: None,
            publish: vec![],
        };
        assert_eq!(Endpoint::from_json(&e.to_json()).unwrap(), e);
        // No owner, no key: records stay as older agents read them.
        assert!(!String::from_utf8(e.to_json()).unwrap().contains("owner"));
        let mut owned = e.clone();
        owned.owner = Some("docker:0123abcd".into());
        assert_eq!(Endpoint::from_json(&owned.to_json()).unwrap(), owned);
        owned.owner = Some("docker 1".into());
        assert!(matches!(owned.validate(), Err(ModelError::InvalidOwner { .. })));
        assert!(!String::from_utf8(e.to_json()).unwrap().contains("publish"), "left out when empty");
        let mut published = e.clone();
        published.publish = vec!["8080:80/tcp".parse().unwrap(), "53:53/udp".parse().unwrap()];
        assert_eq!(Endpoint::from_json(&published.to_json()).unwrap(), published);
        published.publish.push("8080:81/tcp".parse().unwrap());
        assert!(Endpoint::from_json(&published.to_json()).is_err(), "one host port twice");
        // Records of agents before interfaces and machine ids existed still decode.
        let old = br#"{"tenant":"blue","container_id":"c1","host":"node1","ip":"10.1.0.5",
                      "mac":"02:00:00:00:00:01","iface_id":"c1","port":"tap0123456789ab"}"#;
        let old = Endpoint::from_json(old).unwrap();
        assert_eq!((old.ifname.as_str(), old.machine_id.as_str()), ("eth0", ""));
        let mut bad = e.clone();
        bad.ifname = "eth0/x".into();
        assert!(matches!(bad.validate(), Err(ModelError::InvalidInterfaceName { .. })));
        let mut bad = e.clone();
        bad.mac = "01:00:00:00:00:01".parse().unwrap();
        assert!(Endpoint::from_json(&bad.to_json()).is_err());
        let mut bad = e.clone();
        bad.port = "a-very-long-interface-name".into();
        assert!(matches!(bad.validate(), Err(ModelError::InvalidInterfaceName { .. })));
        let mut bad = e.clone();
        bad.iface_id = String::new();
        assert!(matches!(bad.validate(), Err(ModelError::InvalidIfaceId { .. })));
        let mut bad = e;
        bad.container_id = "x/y".into();
        assert!(bad.validate().is_err());
    }
}
