//! What the flow pipeline is computed from, gathered from the desired state, the watched
//! cache (endpoints), the OVSDB replica (ofports) and the plugs in progress.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

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

/// br-tun's part of the pipeline's input for this host (`owner`): the tenants (no ports).
pub(super) fn tun_input(desired: &DesiredState, cache: &ClusterCache, replica: &Replica, owner: &str) -> PipelineInput {
    let mut tenants = BTreeMap::new();
    for t in &desired.tunnels {
        let Some(tenant) = cache.tenants.get(&t.tenant) else { continue };
        let members = desired.members.get(&t.tenant).map(Vec::as_slice).unwrap_or_default();
        tenants.insert(
            t.tenant.clone(),
            TenantInput {
                vlan: t.local_vlan,
                tunnel_port: ofport(replica, &t.name),
                members: members.iter().map(|m| m.underlay_ip).collect(),
                remote: Vec::new(),
                local: Vec::new(),
                gateway: tenant.gateway(),
                gateway_mac: has_gateway(tenant, desired).then(|| overlay::gateway::gateway_mac(tenant.vni())),
            },
        );
    }
    // Each host's underlay address, as its host record has it, for the members only.
    let member_ips: HashMap<(&str, &str), IpAddr> = desired
        .members
        .iter()
        .flat_map(|(t, ms)| ms.iter().map(move |m| ((t.as_str(), m.host.as_str()), m.underlay_ip)))
        .collect();
    for (_, e) in cache.endpoints.iter() {
        let Some(t) = tenants.get_mut(&e.tenant) else { continue };
        if e.host == owner {
            t.local.push(e.ip);
        } else if let Some(&host) = member_ips.get(&(e.tenant.as_str(), e.host.as_str())) {
            t.remote.push(RemoteEndpoint { mac: e.mac, ip: e.ip, host });
        }
    }
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
