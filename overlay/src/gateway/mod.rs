//! The distributed gateway, as pure values: what each host builds so its containers reach the
//! world (SNAT) and the world reaches their published ports (DNAT), computed from the tenants
//! this host takes part in, its endpoints and the addresses of the control plane.
//!
//! Per (host, tenant) a router namespace, as the Neutron L3 agent builds one per router: its
//! tenant side (`gw0`, on br-int in the tenant's VLAN) holds the tenant gateway address with a
//! MAC derived from the VNI, the same on every host; its uplink (`up0`) is one end of a veth
//! pair to the host namespace, with a /31 of the transit range picked by the tenant's local
//! VLAN on this host. Each tenant has its own namespace, routes and conntrack, so tenants may
//! share one CIDR. Leaving, a connection is translated twice: to the router's transit address
//! in the router, then to the host's underlay address in the host namespace. docs/gateway.md
//! has the reasons and the packet walks.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

use crate::error::GatewayError;
use crate::model::{Endpoint, MacAddr, Tenant, Vni};
use crate::publish::{Protocol, Publish};

mod rules;
pub mod ruleset;
#[cfg(test)]
mod tests;

pub use rules::{host_table, router_table};
pub use ruleset::Table;

/// The first three bytes of every gateway MAC: locally administered, unicast, "OV".
pub const GATEWAY_MAC_PREFIX: [u8; 3] = [0x02, 0x4f, 0x56];

/// The default transit range: link-local, clear of the cloud metadata address 169.254.169.254
/// and of the 169.254.0.0/18 most link-local users take.
pub const DEFAULT_TRANSIT_CIDR: &str = "169.254.64.0/19";

/// The tenant side of a router namespace.
pub const ROUTER_TENANT_IFNAME: &str = "gw0";
/// The uplink of a router namespace, towards the host namespace.
pub const ROUTER_UPLINK_IFNAME: &str = "up0";

/// The MAC of a tenant's gateway: the same on every host, so a container's neighbour entry for
/// the gateway stays right wherever it runs.
pub fn gateway_mac(vni: Vni) -> MacAddr {
    let v = vni.get().to_be_bytes();
    let p = GATEWAY_MAC_PREFIX;
    MacAddr([p[0], p[1], p[2], v[1], v[2], v[3]])
}

/// Whether `mac` is in the range gateway MACs are taken from (never a container's).
pub fn is_gateway_mac(mac: &MacAddr) -> bool {
    mac.0[..3] == GATEWAY_MAC_PREFIX
}

/// The veth end of a router on br-int: `ovg-<VNI>`.
pub fn gateway_port_name(vni: Vni) -> String {
    format!("ovg-{}", vni.get())
}

/// The host-namespace end of a router's uplink: `ovt-<VNI>`.
pub fn transit_link_name(vni: Vni) -> String {
    format!("ovt-{}", vni.get())
}

/// The VNI of a link named by [`gateway_port_name`] or [`transit_link_name`], for recovery.
pub fn vni_of_link(name: &str) -> Option<Vni> {
    let digits = name.strip_prefix("ovg-").or_else(|| name.strip_prefix("ovt-"))?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

/// The file a router namespace is pinned to, inside the agent's netns directory: `gw-<VNI>`.
pub fn router_netns_file(vni: Vni) -> String {
    format!("gw-{}", vni.get())
}

/// The VNI of a file named by [`router_netns_file`].
pub fn vni_of_netns_file(name: &str) -> Option<Vni> {
    let digits = name.strip_prefix("gw-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

/// The addresses of a router's uplink: the host end and the router end of a /31.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransitPair {
    /// The host namespace's end (the router's default gateway).
    pub host: Ipv4Addr,
    /// The router's end (what its connections leave with, and what published ports reach).
    pub router: Ipv4Addr,
}

/// The range transit pairs are taken from: one /31 per local VLAN, so a tenant keeps its pair
/// as long as it keeps its VLAN on the host (which a restart does: VLANs are read back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransitRange(Ipv4Net);

impl TransitRange {
    /// Checks that `cidr` is IPv4 and holds a pair for every VLAN (a /19 or larger).
    pub fn new(cidr: IpNet) -> Result<TransitRange, GatewayError> {
        match cidr {
            IpNet::V4(v4) if v4.prefix_len() <= 19 => Ok(TransitRange(v4.trunc())),
            _ => Err(GatewayError::TransitTooSmall { cidr }),
        }
    }

    /// The range.
    pub fn cidr(&self) -> Ipv4Net {
        self.0
    }

    /// The pair of the tenant with local VLAN `vlan` (1..=4094).
    pub fn pair(&self, vlan: u16) -> TransitPair {
        let host = u32::from(self.0.network()) + 2 * u32::from(vlan);
        TransitPair { host: Ipv4Addr::from(host), router: Ipv4Addr::from(host + 1) }
    }
}

impl Default for TransitRange {
    fn default() -> Self {
        TransitRange(DEFAULT_TRANSIT_CIDR.parse().expect("the default transit range parses"))
    }
}

/// A published port as a router forwards it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Forward {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The port of the host's underlay address (and of the router's transit address).
    pub host_port: u16,
    /// The container's address.
    pub container: Ipv4Addr,
    /// The container's port.
    pub port: u16,
}

/// One router namespace: everything it is made of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouterSpec {
    /// The tenant.
    pub tenant: String,
    /// Its VNI: names the namespace and the links.
    pub vni: Vni,
    /// The tenant's VLAN on this host (the gateway port's tag).
    pub vlan: u16,
    /// The gateway address.
    pub gateway: Ipv4Addr,
    /// The tenant's prefix length (the gateway holds the whole CIDR on its tenant side).
    pub prefix: u8,
    /// The gateway MAC.
    pub mac: MacAddr,
    /// The tenant side's MTU: the containers'.
    pub mtu: u32,
    /// The uplink's addresses.
    pub transit: TransitPair,
    /// Whether connections may leave.
    pub egress: bool,
    /// Protected networks the tenant may reach all the same.
    pub allow: Vec<Ipv4Net>,
    /// Its containers' published ports.
    pub forwards: Vec<Forward>,
}

/// A tenant this host takes part in, as the gateway needs it.
#[derive(Debug, Clone)]
pub struct LocalTenant<'a> {
    /// The tenant.
    pub tenant: &'a Tenant,
    /// Its VLAN on this host.
    pub vlan: u16,
    /// Its containers' MTU.
    pub mtu: u32,
}

/// What the gateway of one host is computed from.
#[derive(Debug, Clone)]
pub struct GatewayInput<'a> {
    /// This host's underlay address (what connections leave with).
    pub underlay_ip: IpAddr,
    /// The transit range.
    pub transit: TransitRange,
    /// The tenants this host takes part in.
    pub tenants: Vec<LocalTenant<'a>>,
    /// This host's endpoints.
    pub endpoints: Vec<&'a Endpoint>,
    /// What no container may reach through a gateway unless its tenant allows it: the etcd
    /// endpoints, every host's underlay address, this host's own addresses.
    pub protected: BTreeSet<IpAddr>,
}

/// The gateway of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayPlan {
    /// The routers, by VNI.
    pub routers: BTreeMap<Vni, RouterSpec>,
    /// The protected IPv4 addresses, sorted.
    pub protected: Vec<Ipv4Addr>,
    /// This host's underlay address, when it is IPv4 (no gateway otherwise).
    pub underlay: Option<Ipv4Addr>,
    /// The transit range.
    pub transit: Ipv4Net,
    /// Tenants and published ports left out, and why.
    pub skipped: Vec<String>,
}

impl GatewayPlan {
    /// The table of the host namespace: published ports in, connections from routers out with
    /// the underlay address, nothing from a router to the host or the control plane.
    pub fn host_table(&self) -> Option<Table> {
        self.underlay.map(|u| host_table(self, u))
    }

    /// The table of one router namespace.
    pub fn router_table(&self, router: &RouterSpec) -> Table {
        router_table(router, &self.protected, self.transit)
    }
}

/// The gateway plan of one host. IPv6 tenants get no router (the gateway is IPv4-only), nor
/// does any tenant when the underlay is IPv6; both are listed in `skipped`. Of two endpoints
/// publishing one host port (records written by hand: plugs refuse it), the first by
/// (tenant, container, interface) keeps it.
pub fn plan(input: &GatewayInput) -> GatewayPlan {
    let mut skipped = Vec::new();
    let underlay = match input.underlay_ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => {
            skipped.push(format!("every tenant: the underlay address {v6} is IPv6; the gateway needs IPv4"));
            None
        }
    };
    let protected: Vec<Ipv4Addr> = input
        .protected
        .iter()
        .filter_map(|a| match a {
            IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_unspecified() => Some(*v4),
            _ => None,
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut routers = BTreeMap::new();
    if underlay.is_some() {
        for t in &input.tenants {
            let (IpAddr::V4(gateway), IpNet::V4(cidr)) = (t.tenant.gateway(), t.tenant.cidr()) else {
                skipped.push(format!("tenant {}: IPv6 tenants have no gateway", t.tenant.name()));
                continue;
            };
            let allow = t
                .tenant
                .control_plane_allow()
                .iter()
                .filter_map(|n| match n {
                    IpNet::V4(v4) => Some(*v4),
                    IpNet::V6(_) => None,
                })
                .collect();
            routers.insert(
                t.tenant.vni(),
                RouterSpec {
                    tenant: t.tenant.name().to_owned(),
                    vni: t.tenant.vni(),
                    vlan: t.vlan,
                    gateway,
                    prefix: cidr.prefix_len(),
                    mac: gateway_mac(t.tenant.vni()),
                    mtu: t.mtu,
                    transit: input.transit.pair(t.vlan),
                    egress: t.tenant.egress(),
                    allow,
                    forwards: Vec::new(),
                },
            );
        }
    }
    let by_name: BTreeMap<String, Vni> = routers.values().map(|r| (r.tenant.clone(), r.vni)).collect();
    let mut endpoints: Vec<&&Endpoint> = input.endpoints.iter().filter(|e| !e.publish.is_empty()).collect();
    endpoints.sort_by(|a, b| (&a.tenant, &a.container_id, &a.ifname).cmp(&(&b.tenant, &b.container_id, &b.ifname)));
    let mut taken: BTreeMap<(u16, Protocol), String> = BTreeMap::new();
    for e in endpoints {
        let who = format!("{}/{}", e.container_id, e.ifname);
        let (Some(vni), IpAddr::V4(container)) = (by_name.get(&e.tenant), e.ip) else {
            skipped.push(format!("published ports of {who}: its tenant {} has no gateway here", e.tenant));
            continue;
        };
        let router = routers.get_mut(vni).expect("a router of every name");
        for p in &e.publish {
            let Publish { host_port, port, protocol } = *p;
            if let Some(holder) = taken.get(&p.host_key()) {
                skipped.push(format!("{who} publishes {p}: host port {host_port}/{protocol} is {holder}'s"));
                continue;
            }
            taken.insert(p.host_key(), who.clone());
            router.forwards.push(Forward { protocol, host_port, container, port });
        }
    }
    for r in routers.values_mut() {
        r.forwards.sort_unstable();
    }
    GatewayPlan { routers, protected, underlay, transit: input.transit.cidr(), skipped }
}
