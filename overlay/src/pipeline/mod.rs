//! The flow pipeline: every OpenFlow flow the agent wants on br-tun and br-int, computed from
//! what the cluster view and the local bridges say, as compact [`FlowSpec`]s.
//!
//! Each flow carries a cookie: a 16-bit prefix that marks the agent's flows ([`COOKIE_MASK`])
//! and a 48-bit hash of the flow's content. Reconciling is then a comparison of cookie sets
//! ([`changes`]): a flow whose content changes gets another cookie, so it is re-added and the
//! old one deleted by its exact cookie. Flows without the prefix belong to someone else and are
//! never touched. The tables, with an example packet through each, are in docs/pipeline.md.
//!
//! br-tun (fail_mode=secure):
//! - table 0 (classify): from patch-int to table 1; from a tenant's tunnel port, if the sending
//!   host holds a lease in the tenant, push the tenant's VLAN and out to br-int; drop the rest.
//! - table 1 (from br-int, by VLAN): ARP requests for containers on other hosts answered here
//!   (30); ARP requests for local containers dropped (25, br-int delivered them); unicast to a
//!   known MAC out to its host only (20); broadcast, multicast and unknown unicast to every
//!   host of the tenant (5); drop the rest.
//!
//! br-int (fail_mode=secure), table 0: a container port sends only from its own MAC and
//! address, and ARP only for its own address (100, IPv6 neighbour advertisements 110/105), the
//! rest from it is dropped (90); a gateway port sends only from the gateway MAC (100, the rest
//! 90); everything else is switched by NORMAL (0), with the local VLAN tags of the ports.
//!
//! The gateway is a local-only member of its tenant: frames from or to the gateway MAC, and
//! ARP requests for the gateway address, are dropped towards the tunnels (br-tun table 1, 40)
//! and from them (table 0, 110), so each host answers for the gateway itself.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use crate::model::MacAddr;

mod groups;
mod spec;
#[cfg(test)]
mod tests;

pub use groups::TunGroups;
pub use spec::{FlowSpec, MacField};

/// What changes in how specs render: bumped whenever rendering changes, so every cookie
/// changes and an upgraded agent replaces the flows of the one before.
const PIPELINE_VERSION: u32 = 1;

/// The agent's cookie prefix ("OV"), in the top 16 bits.
pub const COOKIE_PREFIX: u64 = 0x4f56 << 48;
/// The bits of [`COOKIE_PREFIX`]: a dump filtered by prefix/mask holds the agent's flows only.
pub const COOKIE_MASK: u64 = 0xffff << 48;

fn cookie_of(hash: u64) -> u64 {
    COOKIE_PREFIX | ((hash ^ u64::from(PIPELINE_VERSION).rotate_left(17)) & !COOKIE_MASK)
}

/// The table numbers.
pub mod tables {
    /// br-tun: where every frame starts.
    pub const TUN_CLASSIFY: u8 = 0;
    /// br-tun: frames from br-int, by tenant VLAN.
    pub const TUN_FROM_INT: u8 = 1;
    /// br-int: the only table.
    pub const INT_CLASSIFY: u8 = 0;
}

/// Which bridge a flow is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bridge {
    /// The tunnel bridge.
    Tun,
    /// The integration bridge.
    Int,
}

/// A container on another host, as its endpoint record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEndpoint {
    /// Its MAC.
    pub mac: MacAddr,
    /// Its address.
    pub ip: IpAddr,
    /// Its host's underlay address.
    pub host: IpAddr,
}

/// What the flows of one tenant this host takes part in need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantInput {
    /// The tenant's VLAN on this host.
    pub vlan: u16,
    /// Its tunnel port's ofport, once ovs-vswitchd has it.
    pub tunnel_port: Option<u32>,
    /// The underlay addresses of the other hosts holding a lease in it.
    pub members: Vec<IpAddr>,
    /// Its containers on those hosts.
    pub remote: Vec<RemoteEndpoint>,
    /// The addresses of its containers on this host.
    pub local: Vec<IpAddr>,
    /// Its gateway address (never answered for a container).
    pub gateway: IpAddr,
    /// The MAC of its gateway, when this host has one for it: frames from or to it, and ARP
    /// for its address, stay on this host.
    pub gateway_mac: Option<MacAddr>,
}

/// The br-int end of a tenant's router namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayPortInput {
    /// Its ofport.
    pub ofport: u32,
    /// The gateway MAC: the only source it sends from.
    pub mac: MacAddr,
}

/// A container port on br-int.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInput {
    /// Its ofport.
    pub ofport: u32,
    /// The container's MAC and address, once known (a plug in progress may not know its
    /// address yet: then everything from the port is dropped).
    pub endpoint: Option<(MacAddr, IpAddr)>,
}

/// Everything the pipeline is computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineInput {
    /// patch-int's ofport on br-tun, once ovs-vswitchd has it.
    pub tun_patch: Option<u32>,
    /// The tenants this host takes part in, by name (shared: an agent keeps the inputs of
    /// tenants that did not change from one pass to the next).
    pub tenants: BTreeMap<String, Arc<TenantInput>>,
    /// The container ports of this host.
    pub ports: Vec<PortInput>,
    /// The gateway ports of this host.
    pub gateway_ports: Vec<GatewayPortInput>,
}

/// A flow with its cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The cookie: prefix and content hash.
    pub cookie: u64,
    /// The flow.
    pub spec: FlowSpec,
}

/// The flows of both bridges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredFlows {
    /// br-tun's.
    pub tun: Vec<Entry>,
    /// br-int's.
    pub int: Vec<Entry>,
}

impl DesiredFlows {
    /// The flows of one bridge.
    pub fn of(&self, bridge: Bridge) -> &[Entry] {
        match bridge {
            Bridge::Tun => &self.tun,
            Bridge::Int => &self.int,
        }
    }

    /// How many flows concern each tenant VLAN and each peer, for status.
    pub fn counts(&self) -> (BTreeMap<u16, usize>, BTreeMap<IpAddr, usize>) {
        let (mut by_vlan, mut by_peer) = (BTreeMap::new(), BTreeMap::new());
        for e in &self.tun {
            if let Some(v) = e.spec.vlan() {
                *by_vlan.entry(v).or_default() += 1;
            }
            if let Some(p) = e.spec.peer() {
                *by_peer.entry(p).or_default() += 1;
            }
        }
        (by_vlan, by_peer)
    }
}

/// The flows the pipeline wants for `input`.
///
/// Where two flows would share a match in one table (two records claiming one address or MAC,
/// which etcd's address reservations prevent but a hand-written record can do), only the first
/// in a fixed order is kept: a flow replaced by its twin at every pass would flap.
pub fn desired_flows(input: &PipelineInput) -> DesiredFlows {
    DesiredFlows { tun: tun_flows(input), int: int_flows(&input.ports, &input.gateway_ports) }
}

/// br-tun's flows: O(the tenants' members and remote containers). `input.ports` and
/// `input.gateway_ports` are not read.
pub fn tun_flows(input: &PipelineInput) -> Vec<Entry> {
    let mut tun = Vec::new();
    tun.push(FlowSpec::Drop { table: tables::TUN_CLASSIFY });
    tun.push(FlowSpec::Drop { table: tables::TUN_FROM_INT });
    if let Some(patch) = input.tun_patch {
        tun.push(FlowSpec::FromIntegration { patch });
        for t in input.tenants.values() {
            let Some(tunnel_port) = t.tunnel_port else { continue };
            tenant_flows(&mut tun, t, tunnel_port, patch);
        }
    }
    with_cookies(tun)
}

/// br-int's flows: O(this host's container and gateway ports), whatever the size of the cluster.
pub fn int_flows(ports: &[PortInput], gateway_ports: &[GatewayPortInput]) -> Vec<Entry> {
    let mut int = vec![FlowSpec::Normal];
    for p in ports {
        port_flows_into(&mut int, p);
    }
    for g in gateway_ports {
        int.push(FlowSpec::GatewayPort { ofport: g.ofport, mac: g.mac });
        int.push(FlowSpec::PortDrop { ofport: g.ofport });
    }
    with_cookies(int)
}

fn tenant_flows(out: &mut Vec<FlowSpec>, t: &TenantInput, tunnel_port: u32, patch: u32) {
    let vlan = t.vlan;
    let mut members: Vec<IpAddr> = t.members.clone();
    members.sort_unstable();
    members.dedup();
    for &peer in &members {
        out.push(FlowSpec::FromTunnel { tunnel_port, peer, vlan, patch });
    }
    if !members.is_empty() {
        out.push(FlowSpec::Flood { vlan, tunnel_port, members: Arc::from(members.as_slice()) });
    }
    if let Some(mac) = t.gateway_mac {
        // The gateway is local-only: every host answers for it on its own, so nothing from
        // or to its MAC, and no ARP for its address, crosses a tunnel either way.
        for field in [MacField::Source, MacField::Destination] {
            out.push(FlowSpec::LocalGatewayMac { vlan, mac, field });
            out.push(FlowSpec::TunnelGatewayMac { tunnel_port, mac, field });
        }
        if let IpAddr::V4(ip) = t.gateway {
            out.push(FlowSpec::LocalGatewayArp { vlan, ip });
            out.push(FlowSpec::TunnelGatewayArp { tunnel_port, ip });
        }
    }
    let local: HashSet<IpAddr> = t.local.iter().copied().collect();
    for ip in &local {
        if let IpAddr::V4(v4) = ip {
            out.push(FlowSpec::ArpLocal { vlan, ip: *v4 });
        }
    }
    // Sorted, so that of two records with one address or MAC the same one wins every pass.
    let mut remote: Vec<&RemoteEndpoint> =
        t.remote.iter().filter(|r| members.binary_search(&r.host).is_ok() && r.ip != t.gateway).collect();
    remote.sort_by_key(|r| (r.ip, r.mac, r.host));
    let (mut answered, mut sent) = (HashSet::new(), HashSet::new());
    for r in remote {
        if let IpAddr::V4(v4) = r.ip {
            if !local.contains(&r.ip) && answered.insert(v4) {
                out.push(FlowSpec::ArpResponder { vlan, ip: v4, mac: r.mac });
            }
        }
        if sent.insert(r.mac) {
            out.push(FlowSpec::Unicast { vlan, mac: r.mac, host: r.host, tunnel_port });
        }
    }
}

fn port_flows_into(out: &mut Vec<FlowSpec>, p: &PortInput) {
    let ofport = p.ofport;
    out.push(FlowSpec::PortDrop { ofport });
    let Some((mac, ip)) = p.endpoint else { return };
    out.push(FlowSpec::PortIp { ofport, mac, ip });
    match ip {
        IpAddr::V4(v4) => out.push(FlowSpec::PortArp { ofport, mac, ip: v4 }),
        IpAddr::V6(v6) => {
            out.push(FlowSpec::PortIpv6LinkLocal { ofport, mac });
            out.push(FlowSpec::PortDad { ofport, mac });
            out.push(FlowSpec::PortNeighbourAdvert { ofport, mac, target: v6, prefix: 128 });
            let link_local = std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0);
            out.push(FlowSpec::PortNeighbourAdvert { ofport, mac, target: link_local, prefix: 10 });
            out.push(FlowSpec::PortDropNeighbourAdvert { ofport });
        }
    }
}

/// The flows of one container port, with their cookies: what a plug installs before a pass
/// would.
pub fn port_flows(p: &PortInput) -> Vec<Entry> {
    let mut specs = Vec::new();
    port_flows_into(&mut specs, p);
    with_cookies(specs)
}

/// The specs with their cookies, sorted by cookie; a cookie two specs hash to is salted for the
/// later one (in the specs' order) until it is unique.
fn with_cookies(specs: Vec<FlowSpec>) -> Vec<Entry> {
    // Sorting (cookie, index) pairs finds clashes without a set of 60,000 cookies; without one
    // (the rule: cookies are 48 bits of hash), no spec needs a salt.
    let mut keyed: Vec<(u64, u32)> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.cookie(0), u32::try_from(i).expect("fewer than 2^32 flows")))
        .collect();
    keyed.sort_unstable();
    if keyed.windows(2).any(|w| w[0].0 == w[1].0) {
        return with_salted_cookies(specs);
    }
    let mut slots: Vec<Option<FlowSpec>> = specs.into_iter().map(Some).collect();
    keyed
        .into_iter()
        .map(|(cookie, i)| Entry { cookie, spec: slots[i as usize].take().expect("each spec once") })
        .collect()
}

fn with_salted_cookies(specs: Vec<FlowSpec>) -> Vec<Entry> {
    let mut seen = HashSet::with_capacity(specs.len());
    let mut out: Vec<Entry> = specs
        .into_iter()
        .map(|spec| {
            let cookie = (0..).map(|salt| spec.cookie(salt)).find(|c| seen.insert(*c)).expect("a free cookie");
            Entry { cookie, spec }
        })
        .collect();
    out.sort_unstable_by_key(|e| e.cookie);
    out
}

/// A [`Hasher`] for maps keyed by cookie: a cookie is already a hash, so one multiplication
/// spreads it over a table's buckets and control bits (the default hasher costs more than the
/// lookup at 60,000 flows a pass).
#[derive(Debug, Default, Clone, Copy)]
pub struct CookieHasher(u64);

impl Hasher for CookieHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by cookie.
pub type CookieMap<V> = HashMap<u64, V, BuildHasherDefault<CookieHasher>>;

/// What to send so a bridge holding the flows of `installed` (by cookie) holds `desired`: the
/// entries to add, and the cookies to delete. `desired` is sorted by cookie, each once, as
/// [`desired_flows`], [`tun_flows`] and [`int_flows`] give it.
pub fn changes<'a, E: Borrow<Entry>, V, S: BuildHasher>(
    desired: &'a [E],
    installed: &HashMap<u64, V, S>,
) -> (Vec<&'a Entry>, Vec<u64>) {
    let cookie = |e: &E| e.borrow().cookie;
    debug_assert!(
        desired.windows(2).all(|w| cookie(&w[0]) < cookie(&w[1])),
        "desired flows sorted by cookie, each once"
    );
    let add: Vec<&Entry> = desired.iter().map(Borrow::borrow).filter(|e| !installed.contains_key(&e.cookie)).collect();
    // Every desired flow not added is installed: if that is all the switch holds, none goes.
    let mut delete: Vec<u64> = if desired.len() - add.len() == installed.len() {
        Vec::new()
    } else {
        installed.keys().copied().filter(|c| desired.binary_search_by_key(c, cookie).is_err()).collect()
    };
    delete.sort_unstable();
    (add, delete)
}
