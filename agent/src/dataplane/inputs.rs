//! What the flow pipeline is computed from, gathered from the desired state, the watched
//! cache (endpoints), the OVSDB replica (ofports) and the plugs in progress.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use overlay::desired::DesiredState;
use overlay::naming::PATCH_TUN_TO_INT;
use overlay::pipeline::{GatewayPortInput, PipelineInput, PortInput, RemoteEndpoint, TenantInput};
use ovsdb_client::{Atom, Replica};

use super::flows::Pending;
use crate::ovs::container_port;
use crate::registry::ClusterCache;

/// The ofport ovs-vswitchd gave interface `name`, if it has one.
fn ofport(replica: &Replica, name: &str) -> Option<u32> {
    let (_, row) = replica.table("Interface").find_one("name", &Atom::from(name))?;
    row.get_as::<Option<i64>>("ofport").ok().flatten().and_then(|p| u32::try_from(p).ok()).filter(|p| *p > 0)
}

/// br-tun's tenant inputs as the last pass built them, each with what it was built from: a
/// pass builds again only the tenants whose endpoint records or tunnel port changed, or all of
/// them when the desired state did (members, VLANs, gateways).
#[derive(Default)]
pub(super) struct TunInputs {
    desired: Option<Arc<DesiredState>>,
    tenants: HashMap<String, Built>,
}

struct Built {
    endpoints: u64,
    tunnel_port: Option<u32>,
    input: Arc<TenantInput>,
}

/// br-tun's part of the pipeline's input for this host (`owner`): the tenants (no ports).
pub(super) fn tun_input(
    memo: &mut TunInputs,
    desired: &Arc<DesiredState>,
    cache: &ClusterCache,
    replica: &Replica,
    owner: &str,
) -> PipelineInput {
    if !memo.desired.as_ref().is_some_and(|d| Arc::ptr_eq(d, desired)) {
        memo.tenants.clear();
        memo.desired = Some(desired.clone());
    }
    let mut tenants = BTreeMap::new();
    let mut stale: HashMap<&str, Built> = HashMap::new();
    for t in &desired.tunnels {
        let Some(tenant) = cache.tenants.get(&t.tenant) else { continue };
        let endpoints = cache.endpoints.tenant_stamp(&t.tenant);
        let tunnel_port = ofport(replica, &t.name);
        match memo.tenants.get(&t.tenant) {
            Some(b) if b.endpoints == endpoints && b.tunnel_port == tunnel_port => {
                tenants.insert(t.tenant.clone(), b.input.clone());
            }
            _ => {
                let members = desired.members.get(&t.tenant).map(Vec::as_slice).unwrap_or_default();
                let input = TenantInput {
                    vlan: t.local_vlan,
                    tunnel_port,
                    members: members.iter().map(|m| m.underlay_ip).collect(),
                    remote: Vec::new(),
                    local: Vec::new(),
                    gateway: tenant.gateway(),
                    gateway_mac: has_gateway(tenant, desired).then(|| overlay::gateway::gateway_mac(tenant.vni())),
                };
                stale.insert(&t.tenant, Built { endpoints, tunnel_port, input: Arc::new(input) });
            }
        }
    }
    for (name, mut built) in stale {
        // Each host's underlay address, as its host record has it, for the members only.
        let member_ips: HashMap<&str, IpAddr> =
            desired.members.get(name).into_iter().flatten().map(|m| (m.host.as_str(), m.underlay_ip)).collect();
        let t = Arc::get_mut(&mut built.input).expect("not shared yet");
        for (_, e) in cache.endpoints.of_tenant(name) {
            if e.host == owner {
                t.local.push(e.ip);
            } else if let Some(&host) = member_ips.get(e.host.as_str()) {
                t.remote.push(RemoteEndpoint { mac: e.mac, ip: e.ip, host });
            }
        }
        tenants.insert(name.to_owned(), built.input.clone());
        memo.tenants.insert(name.to_owned(), built);
    }
    memo.tenants.retain(|name, _| tenants.contains_key(name));
    PipelineInput {
        tun_patch: ofport(replica, PATCH_TUN_TO_INT),
        tenants,
        ports: Vec::new(),
        gateway_ports: Vec::new(),
    }
}

/// br-int's part: this host's container ports, from their records or, for plugs in progress,
/// from what the plug has told.
pub(super) fn port_inputs(
    cache: &ClusterCache,
    replica: &Replica,
    owner: &str,
    pending: &BTreeMap<String, Pending>,
) -> Vec<PortInput> {
    let recorded: HashMap<&str, (overlay::model::MacAddr, IpAddr)> =
        cache.endpoints.of_host(owner).map(|(_, e)| (e.port.as_str(), (e.mac, e.ip))).collect();
    let mut ports: Vec<PortInput> = Vec::new();
    let found = container_port::all(replica, owner);
    for p in &found {
        let pending = pending.get(&p.name);
        let endpoint = recorded.get(p.name.as_str()).copied().or_else(|| pending.and_then(|q| q.endpoint));
        let ofport = p.ofport.and_then(|o| u32::try_from(o).ok()).or_else(|| pending.map(|q| q.ofport));
        if let Some(ofport) = ofport {
            ports.push(PortInput { ofport, endpoint });
        }
    }
    // Plugs whose row is not in the replica yet: their requested ofport is already guarded.
    for (name, q) in pending {
        if !found.iter().any(|p| &p.name == name) {
            ports.push(PortInput { ofport: q.ofport, endpoint: q.endpoint });
        }
    }
    ports
}

/// The br-int ends of this host's routers, once ovs-vswitchd has them.
pub(super) fn gateway_port_inputs(
    desired: &DesiredState,
    cache: &ClusterCache,
    replica: &Replica,
) -> Vec<GatewayPortInput> {
    desired
        .tunnels
        .iter()
        .filter_map(|t| {
            let tenant = cache.tenants.get(&t.tenant).filter(|tenant| has_gateway(tenant, desired))?;
            let ofport = ofport(replica, &overlay::gateway::gateway_port_name(tenant.vni()))?;
            Some(GatewayPortInput { ofport, mac: overlay::gateway::gateway_mac(tenant.vni()) })
        })
        .collect()
}

/// Whether this host has a router for `tenant` (an IPv4 tenant over an IPv4 underlay): the
/// gateway plan gives every such tenant one.
fn has_gateway(tenant: &overlay::model::Tenant, desired: &DesiredState) -> bool {
    !tenant.is_ipv6() && desired.tunnels.first().is_none_or(|t| t.local_ip.is_ipv4())
}
