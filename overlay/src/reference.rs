//! The first, straightforward desired state and diff, kept as oracles: the fast versions
//! must give exactly the same results (property tests in `desired` and `diff`).

use std::collections::{BTreeMap, BTreeSet};

use crate::desired::{BridgeSpec, PatchPortSpec};
use crate::desired::{ClusterView, DesiredState, SkippedPeer, TunnelPortSpec};
use crate::diff::{BridgeCreation, Conflict, ObservedPort, ObservedState, Plan, PortDeletion, PortSpec, PortUpdate};
use crate::error::DesiredError;
use crate::external_ids as ids;
use crate::naming::{tunnel_port_name, PATCH_INT_TO_TUN, PATCH_TUN_TO_INT};
use crate::vlan::allocate_vlans;

pub(crate) fn desired_state(
    view: &ClusterView,
    existing_vlans: &BTreeMap<String, u16>,
) -> Result<DesiredState, DesiredError> {
    if view.int_bridge.is_empty() || view.tun_bridge.is_empty() || view.int_bridge == view.tun_bridge {
        return Err(DesiredError::BridgeNames { int: view.int_bridge.clone(), tun: view.tun_bridge.clone() });
    }
    let local = view.local.hostname.as_str();
    let local_ip = view.local.underlay_ip;

    let mut members: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for lease in &view.leases {
        if view.tenants.contains_key(&lease.tenant) {
            members.entry(lease.tenant.as_str()).or_default().insert(lease.host.as_str());
        }
    }
    let local_tenants: BTreeSet<String> =
        members.iter().filter(|(_, hosts)| hosts.contains(local)).map(|(t, _)| (*t).to_owned()).collect();
    let tenant_vlans = allocate_vlans(&local_tenants, existing_vlans)?;

    let mut tunnels: BTreeMap<String, TunnelPortSpec> = BTreeMap::new();
    let mut skipped = BTreeSet::new();
    let mut skip = |peer: &str, reason: String| {
        skipped.insert(SkippedPeer { peer: peer.to_owned(), reason });
    };
    for (tenant_name, &local_vlan) in &tenant_vlans {
        let (Some(tenant), Some(hosts)) = (view.tenants.get(tenant_name), members.get(tenant_name.as_str())) else {
            continue;
        };
        for &peer in hosts.iter().filter(|&&h| h != local) {
            let Some(record) = view.hosts.get(peer) else {
                skip(peer, "no host record (expired or deleted); its leases are stale".into());
                continue;
            };
            let remote_ip = record.underlay_ip;
            if remote_ip.is_ipv4() != local_ip.is_ipv4() {
                skip(peer, format!("underlay IP {remote_ip} is not of the same family as ours ({local_ip})"));
                continue;
            }
            if remote_ip == local_ip {
                skip(peer, format!("claims our own underlay IP {local_ip}"));
                continue;
            }
            let name = tunnel_port_name(tenant.tunnel(), peer, tenant.vni());
            if let Some(other) = tunnels.get(&name) {
                // 48-bit name hash collision: keep the first, say so.
                skip(
                    peer,
                    format!("tunnel port name {name} collides with the one to {} for {}", other.peer, other.tenant),
                );
                continue;
            }
            tunnels.insert(
                name.clone(),
                TunnelPortSpec {
                    name,
                    tenant: tenant_name.clone(),
                    vni: tenant.vni(),
                    peer: peer.to_owned(),
                    remote_ip,
                    local_ip,
                    tunnel: tenant.tunnel(),
                    local_vlan,
                },
            );
        }
    }

    Ok(DesiredState {
        int_bridge: BridgeSpec { name: view.int_bridge.clone(), datapath_type: view.datapath_type.clone() },
        tun_bridge: BridgeSpec { name: view.tun_bridge.clone(), datapath_type: view.datapath_type.clone() },
        patch_ports: vec![
            PatchPortSpec {
                name: PATCH_INT_TO_TUN.to_owned(),
                bridge: view.int_bridge.clone(),
                peer: PATCH_TUN_TO_INT.to_owned(),
            },
            PatchPortSpec {
                name: PATCH_TUN_TO_INT.to_owned(),
                bridge: view.tun_bridge.clone(),
                peer: PATCH_INT_TO_TUN.to_owned(),
            },
        ],
        tunnels: tunnels.into_values().collect(),
        tenant_vlans,
        skipped: skipped.into_iter().collect(),
    })
}

fn map<const N: usize>(pairs: [(&str, String); N]) -> BTreeMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn desired_ports(desired: &DesiredState, owner: &str) -> Vec<PortSpec> {
    let patches = desired.patch_ports.iter().map(|p| PortSpec {
        bridge: p.bridge.clone(),
        name: p.name.clone(),
        interface_type: "patch".to_owned(),
        options: map([("peer", p.peer.clone())]),
        // A trunk: it carries every tenant's VLAN between the bridges.
        tag: None,
        protected: false,
        external_ids: map([(ids::OWNER, owner.to_owned()), (ids::KIND, ids::KIND_PATCH.to_owned())]),
    });
    let tunnels = desired.tunnels.iter().map(|t| PortSpec {
        bridge: desired.tun_bridge.name.clone(),
        name: t.name.clone(),
        interface_type: t.tunnel.as_str().to_owned(),
        options: map([
            ("key", t.vni.to_string()),
            ("local_ip", t.local_ip.to_string()),
            ("remote_ip", t.remote_ip.to_string()),
        ]),
        tag: Some(t.local_vlan),
        // Split horizon: frames from one tunnel never leave by another, so a full mesh with
        // MAC-learning forwarding has no broadcast loops.
        protected: true,
        external_ids: map([
            (ids::OWNER, owner.to_owned()),
            (ids::KIND, ids::KIND_TUNNEL.to_owned()),
            (ids::TENANT, t.tenant.clone()),
            (ids::VNI, t.vni.to_string()),
            (ids::PEER, t.peer.clone()),
            (ids::LOCAL_VLAN, t.local_vlan.to_string()),
        ]),
    });
    patches.chain(tunnels).collect()
}

fn same_datapath(a: &str, b: &str) -> bool {
    let norm = |s: &str| if s.is_empty() { "system".to_owned() } else { s.to_owned() };
    norm(a) == norm(b)
}

fn is_managed(port: &ObservedPort, owner: &str) -> bool {
    port.owned_by.as_deref() == Some(owner)
        && matches!(port.external_ids.get(ids::KIND).map(String::as_str), Some(ids::KIND_TUNNEL | ids::KIND_PATCH))
}

fn show(v: Option<&String>) -> &str {
    v.map_or("(none)", String::as_str)
}

fn port_changes(spec: &PortSpec, obs: &ObservedPort) -> Vec<String> {
    let mut changes = Vec::new();
    if obs.interface.kind != spec.interface_type {
        changes.push(format!("type {:?} -> {:?}", obs.interface.kind, spec.interface_type));
    }
    let keys: BTreeSet<&String> = obs.interface.options.keys().chain(spec.options.keys()).collect();
    for k in keys {
        let (old, new) = (obs.interface.options.get(k), spec.options.get(k));
        if old != new {
            changes.push(format!("options:{k} {} -> {}", show(old), show(new)));
        }
    }
    if obs.tag != spec.tag {
        changes.push(format!("tag {:?} -> {:?}", obs.tag, spec.tag));
    }
    if obs.protected != spec.protected {
        changes.push(format!("protected {} -> {}", obs.protected, spec.protected));
    }
    let keys: BTreeSet<&String> =
        obs.external_ids.keys().filter(|k| ids::is_overlay_key(k)).chain(spec.external_ids.keys()).collect();
    for k in keys {
        let (old, new) = (obs.external_ids.get(k), spec.external_ids.get(k));
        if old != new {
            changes.push(format!("external_ids:{k} {} -> {}", show(old), show(new)));
        }
    }
    changes
}

fn conflict_reason(port: &ObservedPort, owner: &str) -> String {
    let what = match (&port.owned_by, port.external_ids.get(ids::KIND)) {
        (None, _) => "is not owned by the overlay agent".to_owned(),
        (Some(o), _) if o != owner => format!("is owned by overlay host {o:?}, not {owner:?}"),
        (Some(_), Some(k)) => format!("is one of our {k:?} ports, which this reconcile does not manage"),
        (Some(_), None) => "is ours but carries no overlay-kind".to_owned(),
    };
    format!(
        "a port with this name on bridge {:?} {what}; it is left alone and the port the overlay \
         needs is not built: remove or rename it",
        port.bridge
    )
}

pub(crate) fn diff(desired: &DesiredState, observed: &ObservedState, owner: &str) -> Plan {
    let mut plan = Plan::default();

    for b in [&desired.int_bridge, &desired.tun_bridge] {
        match observed.bridges.get(&b.name) {
            None => plan.create_bridges.push(BridgeCreation {
                name: b.name.clone(),
                datapath_type: b.datapath_type.clone(),
                external_ids: map([(ids::OWNER, owner.to_owned()), (ids::KIND, ids::KIND_BRIDGE.to_owned())]),
            }),
            Some(ob) if !same_datapath(&ob.datapath_type, &b.datapath_type) => {
                if ob.owned {
                    plan.set_bridge_datapath.push((b.name.clone(), b.datapath_type.clone()));
                } else {
                    plan.conflicts.push(Conflict {
                        object: b.name.clone(),
                        reason: format!(
                            "bridge has datapath_type {:?}, configured {:?}, and was not created by \
                             the agent: change one of them",
                            ob.datapath_type, b.datapath_type
                        ),
                    });
                }
            }
            Some(_) => {}
        }
    }

    let specs = desired_ports(desired, owner);
    let wanted: BTreeSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    for spec in &specs {
        let Some(obs) = observed.ports.get(&spec.name) else {
            plan.create_ports.push(spec.clone());
            continue;
        };
        if !is_managed(obs, owner) {
            plan.conflicts.push(Conflict { object: spec.name.clone(), reason: conflict_reason(obs, owner) });
            continue;
        }
        if obs.bridge != spec.bridge {
            // Ports cannot move between bridges in place; re-create on the right one.
            plan.delete_ports.push(PortDeletion {
                bridge: obs.bridge.clone(),
                name: spec.name.clone(),
                port_uuid: obs.uuid.clone(),
            });
            plan.create_ports.push(spec.clone());
            continue;
        }
        let changes = port_changes(spec, obs);
        if !changes.is_empty() {
            let mut external_ids: BTreeMap<String, String> = obs
                .external_ids
                .iter()
                .filter(|(k, _)| !ids::is_overlay_key(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            external_ids.extend(spec.external_ids.clone());
            plan.update_ports.push(PortUpdate {
                name: spec.name.clone(),
                bridge: spec.bridge.clone(),
                port_uuid: obs.uuid.clone(),
                iface_uuid: obs.interface.uuid.clone(),
                interface_type: spec.interface_type.clone(),
                options: spec.options.clone(),
                tag: spec.tag,
                protected: spec.protected,
                external_ids,
                changes,
            });
        }
    }

    for (name, obs) in &observed.ports {
        if is_managed(obs, owner) && !wanted.contains(name.as_str()) {
            plan.delete_ports.push(PortDeletion {
                bridge: obs.bridge.clone(),
                name: name.clone(),
                port_uuid: obs.uuid.clone(),
            });
        }
    }

    plan.create_ports.sort_by(|a, b| a.name.cmp(&b.name));
    plan.update_ports.sort_by(|a, b| a.name.cmp(&b.name));
    plan.delete_ports.sort_by(|a, b| a.name.cmp(&b.name));
    plan.conflicts.sort_by(|a, b| a.object.cmp(&b.object));
    plan
}
