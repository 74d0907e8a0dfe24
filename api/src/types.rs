//! What goes over the local API: request bodies, results and the status answer. The agent
//! serialises these (or the same shape), the CLI and the container-runtime plugins decode them.
//!
//! Fields added later carry `#[serde(default)]`, so a client and an agent of neighbouring
//! versions still understand each other.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The interface name a plug uses when none is given.
pub const DEFAULT_IFNAME: &str = "eth0";

/// The body of `POST /v1/tenants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTenant {
    /// Tenant name.
    pub name: String,
    /// VNI (1..=16777215): the GRE key or VXLAN VNI on the wire.
    pub vni: u32,
    /// The tenant's address range, e.g. `198.19.0.0/16`.
    pub cidr: String,
    /// `vxlan` (the default) or `gre`.
    #[serde(default)]
    pub tunnel: Option<String>,
    /// Length of the per-host subnet leases.
    #[serde(default)]
    pub subnet_len: Option<u8>,
    /// Whether containers reach beyond the tenant through their host's gateway (default on).
    #[serde(default)]
    pub egress: Option<bool>,
    /// Control-plane networks (CIDRs) the tenant's containers may reach all the same through
    /// the gateway: etcd, the hosts' underlay addresses (default: none).
    #[serde(default)]
    pub control_plane_allow: Vec<String>,
}

/// A tenant as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantInfo {
    /// Tenant name.
    pub name: String,
    /// VNI.
    pub vni: u32,
    /// Address range.
    pub cidr: String,
    /// `vxlan` or `gre`.
    pub tunnel: String,
    /// Per-host subnet length.
    pub subnet_len: u8,
    /// The gateway address containers get as their default route.
    pub gateway: String,
    /// Whether containers reach beyond the tenant through their host's gateway.
    #[serde(default = "yes")]
    pub egress: bool,
    /// Control-plane networks the tenant's containers may reach all the same.
    #[serde(default)]
    pub control_plane_allow: Vec<String>,
}

fn yes() -> bool {
    true
}

/// What `POST /v1/tenants/{name}/join` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResult {
    /// The tenant.
    pub tenant: String,
    /// This host's subnet in it.
    pub subnet: String,
    /// This host.
    pub host: String,
}

/// How to find a container's network namespace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NetnsRef {
    /// `/proc/PID/ns/net`.
    Pid(u32),
    /// A namespace file (`/var/run/netns/NAME`, `/proc/PID/ns/net`).
    Path(PathBuf),
    /// No namespace yet: the container end stays in the agent's host namespace, named
    /// [`handoff_name`], with its MAC and MTU set, for the container runtime to move into the
    /// container and configure itself (what Docker does with the interface a network driver's
    /// `Join` names: the container's namespace does not exist yet when the driver is asked).
    Handoff,
}

impl NetnsRef {
    /// The namespace file; `None` for [`NetnsRef::Handoff`].
    pub fn path(&self) -> Option<PathBuf> {
        match self {
            NetnsRef::Pid(p) => Some(PathBuf::from(format!("/proc/{p}/ns/net"))),
            NetnsRef::Path(p) => Some(p.clone()),
            NetnsRef::Handoff => None,
        }
    }
}

/// The name of the container end of a [`NetnsRef::Handoff`] plug in the host namespace, until
/// the runtime moves it: `hnd` + 12 hex digits of a hash of the container id and interface name
/// (15 bytes, a valid link name; the same for every caller, so a runtime plugin computes it
/// without asking the agent).
pub fn handoff_name(container_id: &str, ifname: &str) -> String {
    // FNV-1a, 64 bits; the NUL keeps ("a", "b/c") and ("a/b", "c") apart.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id.bytes().chain([0]).chain(ifname.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("hnd{:012x}", h >> 16)
}

/// The body of `POST /v1/endpoints`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlugRequest {
    /// Container id: `[A-Za-z0-9][A-Za-z0-9_.-]{0,127}`.
    pub container_id: String,
    /// Tenant name.
    pub tenant: String,
    /// The container's namespace.
    pub netns: NetnsRef,
    /// Interface name inside the container; one endpoint per (container, interface).
    #[serde(default = "default_ifname")]
    pub ifname: String,
    /// A fixed address (any free host address of the tenant CIDR).
    #[serde(default)]
    pub ip: Option<String>,
    /// A fixed MAC (unicast).
    #[serde(default)]
    pub mac: Option<String>,
    /// `ip` was reserved on this host with `POST /v1/tenants/{tenant}/addresses`: the plug
    /// takes that reservation over (an address nobody holds is reserved as usual).
    #[serde(default)]
    pub reserved: bool,
    /// Who asks, kept in the endpoint record and listed with it (`docker:<network id>`,
    /// `cni:<network name>`): a runtime plugin finds its own endpoints by it. At most 200
    /// characters of `[A-Za-z0-9_.:/-]`.
    #[serde(default)]
    pub owner: Option<String>,
    /// Ports of the host's underlay address that reach the container: `HOST:CONTAINER[/tcp|/udp]`.
    #[serde(default)]
    pub publish: Vec<String>,
}

impl PlugRequest {
    /// A request with only the required fields; the rest as their defaults.
    pub fn new(container_id: impl Into<String>, tenant: impl Into<String>, netns: NetnsRef) -> Self {
        PlugRequest {
            container_id: container_id.into(),
            tenant: tenant.into(),
            netns,
            ifname: DEFAULT_IFNAME.to_owned(),
            ip: None,
            mac: None,
            reserved: false,
            owner: None,
            publish: vec![],
        }
    }
}

fn default_ifname() -> String {
    DEFAULT_IFNAME.to_owned()
}

/// What a plug reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlugResult {
    /// The container's address.
    pub ip: IpAddr,
    /// Its prefix length (the tenant's: one L2 segment across hosts).
    pub prefix: u8,
    /// Its MAC.
    pub mac: String,
    /// Default gateway (the tenant's first address).
    pub gateway: IpAddr,
    /// Interface MTU.
    pub mtu: u32,
    /// The host-side port on the integration bridge.
    pub port: String,
    /// The tenant.
    pub tenant: String,
    /// The interface inside the container.
    #[serde(default = "default_ifname")]
    pub ifname: String,
    /// For a [`NetnsRef::Handoff`] plug: the container end's name in the host namespace
    /// ([`handoff_name`]), for the runtime to move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<String>,
    /// Its published ports (`HOST:CONTAINER/PROTO`), reached on the host's underlay address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
}

/// The body of `POST /v1/tenants/{name}/addresses`: an address reserved on this host before
/// its container is plugged (what a runtime's address manager asks for first, e.g. Docker's
/// IPAM driver). A plug with `reserved: true` takes it over; a reservation nobody takes over
/// expires by itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveAddress {
    /// This address (a free host address of the tenant CIDR), or the next free one of this
    /// host's subnet.
    #[serde(default)]
    pub ip: Option<String>,
}

/// What `POST /v1/tenants/{name}/addresses` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The tenant.
    pub tenant: String,
    /// The address reserved.
    pub ip: IpAddr,
    /// The tenant's prefix length.
    pub prefix: u8,
    /// The tenant's gateway.
    pub gateway: IpAddr,
    /// Seconds until the reservation goes unless a plug takes it over.
    pub expires_in_secs: u64,
}

/// What `DELETE /v1/tenants/{name}/addresses/{ip}` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseResult {
    /// Whether a reservation of this host was there and is gone. An address a plug holds is
    /// never released this way (unplug releases it).
    pub released: bool,
}

/// The body of `PUT /v1/endpoints/{container}/vm-uuid[?ifname=I]`: the port's
/// `external_ids:vm-uuid` (the container id by default; a runtime that learns the container's
/// id after the plug sets it then).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetVmUuid {
    /// The new value: `[A-Za-z0-9][A-Za-z0-9_.-]{0,127}`.
    pub vm_uuid: String,
}

/// What `DELETE /v1/endpoints/{container}[?ifname=I]` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnplugResult {
    /// The container.
    pub container_id: String,
    /// The interface unplugged, or none for all of the container's.
    #[serde(default)]
    pub ifname: Option<String>,
    /// Whether anything of it was there.
    pub was_plugged: bool,
}

/// A plugged container interface of this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInfo {
    /// The container.
    pub container_id: String,
    /// The interface inside it.
    #[serde(default = "default_ifname")]
    pub ifname: String,
    /// Its tenant.
    pub tenant: String,
    /// Its address.
    pub ip: IpAddr,
    /// Its MAC.
    pub mac: String,
    /// The host end of its veth, on the integration bridge.
    pub port: String,
    /// OVS `external_ids:iface-id`.
    pub iface_id: String,
    /// Who plugged it ([`PlugRequest::owner`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Its published ports (`HOST:CONTAINER/PROTO`), reached on the host's underlay address.
    #[serde(default)]
    pub publish: Vec<String>,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong and what to do.
    pub error: String,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// This host.
    pub host: HostStatus,
    /// Every other registered host.
    pub peers: Vec<PeerStatus>,
    /// Every tenant, with this host's part in it.
    pub tenants: Vec<TenantStatus>,
    /// The tunnel ports the data plane built: one per tenant this host takes part in.
    pub tunnels: Vec<TunnelStatus>,
    /// The flows the agent holds on its bridges.
    #[serde(default)]
    pub flows: FlowsStatus,
    /// This host's endpoints.
    pub endpoints: Vec<EndpointInfo>,
    /// The gateways (router namespaces) of this host: one per IPv4 tenant it takes part in.
    #[serde(default)]
    pub gateways: Vec<GatewayStatus>,
    /// Tenants and published ports the gateway leaves out, and why.
    #[serde(default)]
    pub gateway_skipped: Vec<String>,
    /// Peers the data plane leaves out, and why.
    #[serde(default)]
    pub skipped_peers: Vec<String>,
    /// Things the agent cannot build because something else is in the way.
    #[serde(default)]
    pub conflicts: Vec<String>,
    /// The last reconcile error, if the last pass failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// How long ago the last pass ended.
    #[serde(default)]
    pub last_reconcile_ms_ago: Option<u64>,
    /// Counters since the agent started.
    pub counters: Counters,
}

/// This host in [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    /// Hostname.
    pub name: String,
    /// Underlay address.
    pub underlay_ip: IpAddr,
    /// The machine identity this agent registers with (see the README: identity).
    #[serde(default)]
    pub machine_id: String,
    /// Agent version.
    pub version: String,
    /// Whether the OVSDB session is up.
    pub ovsdb_connected: bool,
    /// Whether this agent holds its hostname in etcd (and so may plug and write).
    #[serde(default)]
    pub registered: bool,
    /// Why this agent does not hold its hostname, while it does not.
    #[serde(default)]
    pub identity_conflict: Option<String>,
    /// What this agent waits for before it registers, while it waits (the liveness key of a
    /// holder that may be going away), and for how long at most.
    #[serde(default)]
    pub waiting_to_register: Option<String>,
}

/// A peer in [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Hostname.
    pub host: String,
    /// Underlay address.
    pub underlay_ip: IpAddr,
    /// Whether its agent is running (its liveness key is held).
    pub alive: bool,
    /// Flows on the tunnel bridge that concern it (from it, to its containers).
    #[serde(default)]
    pub flows: usize,
}

/// A tenant in [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantStatus {
    /// The tenant.
    #[serde(flatten)]
    pub tenant: TenantInfo,
    /// Its VLAN on this host's integration bridge, once this host takes part.
    #[serde(default)]
    pub local_vlan: Option<u16>,
    /// This host's subnet lease in it.
    #[serde(default)]
    pub subnet: Option<String>,
    /// Flows on the tunnel bridge for it.
    #[serde(default)]
    pub flows: usize,
}

/// A tunnel port in [`Status`]: one per tenant; the flows pick each packet's peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelStatus {
    /// Port name.
    pub name: String,
    /// The tenant it carries.
    pub tenant: String,
    /// The key on the wire.
    pub vni: u32,
    /// `vxlan` or `gre`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The tenant's local VLAN.
    pub local_vlan: u16,
    /// Its OpenFlow port number, once ovs-vswitchd has it.
    #[serde(default)]
    pub ofport: Option<u32>,
    /// The hosts it reaches (those holding a lease in the tenant).
    #[serde(default)]
    pub peers: usize,
}

/// A tenant's gateway on this host, in [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayStatus {
    /// The tenant.
    pub tenant: String,
    /// Its VNI.
    pub vni: u32,
    /// The gateway address.
    pub address: String,
    /// The gateway MAC (the same on every host).
    pub mac: String,
    /// The router's transit address (what its connections leave the router with).
    pub transit: String,
    /// Whether connections may leave.
    pub egress: bool,
    /// Published ports: `HOST_PORT/PROTO -> CONTAINER:PORT`.
    #[serde(default)]
    pub published: Vec<String>,
}

/// The flows of [`Status`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowsStatus {
    /// Flows on the tunnel bridge.
    pub tun: usize,
    /// Flows on the integration bridge.
    pub int: usize,
    /// Flow changes not sent yet (a bridge's OpenFlow connection is down, or a bundle failed).
    #[serde(default)]
    pub pending: bool,
}

/// Counters in [`Status`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Reconcile passes.
    pub reconciles: u64,
    /// OVSDB transactions sent.
    pub ovsdb_transactions: u64,
    /// OpenFlow bundles sent.
    #[serde(default)]
    pub openflow_bundles: u64,
    /// Failed passes.
    pub errors: u64,
    /// Containers unplugged by the agent because their interface went away.
    #[serde(default)]
    pub reaped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_refs_keep_their_json_shape() {
        assert_eq!(serde_json::to_string(&NetnsRef::Pid(7)).unwrap(), r#"{"pid":7}"#);
        assert_eq!(serde_json::to_string(&NetnsRef::Path("/x".into())).unwrap(), r#"{"path":"/x"}"#);
        assert_eq!(serde_json::to_string(&NetnsRef::Handoff).unwrap(), r#""handoff""#);
        assert_eq!(serde_json::from_str::<NetnsRef>(r#""handoff""#).unwrap(), NetnsRef::Handoff);
    }

    #[test]
    fn a_plug_request_of_an_older_client_still_decodes() {
        let r: PlugRequest = serde_json::from_str(r#"{"container_id":"c1","tenant":"red","netns":{"pid":1}}"#).unwrap();
        assert_eq!(r, PlugRequest::new("c1", "red", NetnsRef::Pid(1)));
    }

    #[test]
    fn handoff_names_are_link_names_and_pinned() {
        let n = handoff_name("0123456789abcdef", "eth0");
        assert_eq!(n.len(), 15);
        assert!(n.starts_with("hnd") && n[3..].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(handoff_name("a", "b/c"), handoff_name("a/b", "c"));
        assert_ne!(handoff_name("c", "eth0"), handoff_name("c", "eth1"));
        // Pinned: a plugin and an agent of different builds must agree on the name.
        assert_eq!(handoff_name("c1", "eth0"), "hndf53f02b3bfe9");
    }
}
