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
}

impl NetnsRef {
    /// The namespace file.
    pub fn path(&self) -> PathBuf {
        match self {
            NetnsRef::Pid(p) => PathBuf::from(format!("/proc/{p}/ns/net")),
            NetnsRef::Path(p) => p.clone(),
        }
    }
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
    /// Ports of the host's underlay address that reach the container: `HOST:CONTAINER[/tcp|/udp]`.
    #[serde(default)]
    pub publish: Vec<String>,
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
    /// Its published ports (`HOST:CONTAINER/PROTO`), reached on the host's underlay address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
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
