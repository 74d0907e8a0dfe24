//! The diff: what to change in OVSDB so the bridges match the desired state.
//!
//! Observed and planned rows are plain values here (UUIDs are strings); the agent reads them
//! from its OVSDB replica and turns a [`Plan`] into OVSDB transactions. Ownership is the safety
//! rule: only ports carrying `overlay-owner=<owner>` and a kind this diff manages (tunnel,
//! patch) are ever updated or deleted; anything else in the way is reported as a conflict.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::desired::{BridgeSpec, DesiredState, PatchPortSpec, TunnelPortSpec};
use crate::external_ids as ids;
use crate::text;
use crate::vlan::{VLAN_MAX, VLAN_MIN};

mod observed;
pub use observed::{
    simulate_apply, BridgeView, Observed, ObservedBridge, ObservedInterface, ObservedPort, ObservedState, PortView,
};

/// A bridge to create, with the external_ids to write on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeCreation {
    /// Bridge name.
    pub name: String,
    /// `Bridge.datapath_type`.
    pub datapath_type: String,
    /// `Bridge.fail_mode`.
    pub fail_mode: String,
    /// `Bridge.external_ids`.
    pub external_ids: BTreeMap<String, String>,
}

/// A port (and its one interface, of the same name) as it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// The bridge it lives on.
    pub bridge: String,
    /// Port and interface name.
    pub name: String,
    /// `Interface.type`.
    pub interface_type: String,
    /// `Interface.options`.
    pub options: BTreeMap<String, String>,
    /// `Port.tag` (access port) or `None` (trunk).
    pub tag: Option<u16>,
    /// `Port.protected` (split horizon between tunnels).
    pub protected: bool,
    /// Written to both the Port and the Interface row.
    pub external_ids: BTreeMap<String, String>,
}

/// An owned port whose columns drifted: overwrite them in place, keeping the row (and the
/// datapath port) rather than deleting and re-creating it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortUpdate {
    /// Port name.
    pub name: String,
    /// Its bridge.
    pub bridge: String,
    /// Port row UUID.
    pub port_uuid: String,
    /// Interface row UUID.
    pub iface_uuid: String,
    /// New `Interface.type`.
    pub interface_type: String,
    /// New `Interface.options` (whole column).
    pub options: BTreeMap<String, String>,
    /// New `Port.tag`.
    pub tag: Option<u16>,
    /// New `Port.protected`.
    pub protected: bool,
    /// New `external_ids` (whole column): ours, plus other tools' keys found on the row.
    pub external_ids: BTreeMap<String, String>,
    /// What changed, for the log, e.g. `options:remote_ip 10.0.0.2 -> 10.0.0.9`.
    pub changes: Vec<String>,
}

/// An owned port to remove from its bridge (its Interface row goes with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortDeletion {
    /// Its bridge.
    pub bridge: String,
    /// Port name.
    pub name: String,
    /// Port row UUID.
    pub port_uuid: String,
}

/// Something in the way that the agent must not touch; log it as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The bridge or port name.
    pub object: String,
    /// What is wrong and what to do.
    pub reason: String,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.reason)
    }
}

/// The changes that make OVSDB match the desired state; apply them deletions first (a moved
/// port is deleted and created under the same name).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Bridges to create.
    pub create_bridges: Vec<BridgeCreation>,
    /// Owned bridges whose datapath type must change: (bridge, datapath_type).
    pub set_bridge_datapath: Vec<(String, String)>,
    /// Owned bridges whose fail mode must change: (bridge, fail_mode).
    pub set_bridge_fail_mode: Vec<(String, String)>,
    /// Ports to create.
    pub create_ports: Vec<PortSpec>,
    /// Ports to update in place.
    pub update_ports: Vec<PortUpdate>,
    /// Ports to delete.
    pub delete_ports: Vec<PortDeletion>,
    /// Rows in the way that are not ours; not part of the transaction.
    pub conflicts: Vec<Conflict>,
}

impl Plan {
    /// Whether there is nothing to write. Conflicts do not count: they are not acted upon.
    pub fn is_empty(&self) -> bool {
        self.create_bridges.is_empty()
            && self.set_bridge_datapath.is_empty()
            && self.set_bridge_fail_mode.is_empty()
            && self.create_ports.is_empty()
            && self.update_ports.is_empty()
            && self.delete_ports.is_empty()
    }
}

fn map<const N: usize>(pairs: [(&str, String); N]) -> BTreeMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn patch_spec(p: &PatchPortSpec, owner: &str) -> PortSpec {
    PortSpec {
        bridge: p.bridge.clone(),
        name: p.name.clone(),
        interface_type: "patch".to_owned(),
        options: map([("peer", p.peer.clone())]),
        // A trunk: it carries every tenant's VLAN between the bridges.
        tag: None,
        protected: false,
        external_ids: map([(ids::OWNER, owner.to_owned()), (ids::KIND, ids::KIND_PATCH.to_owned())]),
    }
}

/// The row of the tenant tunnel port `t` on `bridge`, with the external_ids this `owner`
/// writes. `remote_ip=flow`: the flows pick each packet's peer (`tun_dst`). No tag and not
/// protected: nothing on the tunnel bridge forwards by MAC learning.
pub fn tunnel_spec(t: &TunnelPortSpec, bridge: &str, owner: &str) -> PortSpec {
    let vni = text::decimal(t.vni.get()).as_str().to_owned();
    PortSpec {
        bridge: bridge.to_owned(),
        name: t.name.clone(),
        interface_type: t.tunnel.as_str().to_owned(),
        options: map([
            ("key", vni.clone()),
            ("local_ip", text::ip(t.local_ip).as_str().to_owned()),
            ("remote_ip", "flow".to_owned()),
        ]),
        tag: None,
        protected: false,
        external_ids: map([
            (ids::OWNER, owner.to_owned()),
            (ids::KIND, ids::KIND_TUNNEL.to_owned()),
            (ids::TENANT, t.tenant.clone()),
            (ids::VNI, vni),
            (ids::LOCAL_VLAN, text::decimal(u32::from(t.local_vlan)).as_str().to_owned()),
        ]),
    }
}

/// The desired ports as full rows, with the external_ids this `owner` writes. Patch ports first.
pub fn desired_ports(desired: &DesiredState, owner: &str) -> Vec<PortSpec> {
    let patches = desired.patch_ports.iter().map(|p| patch_spec(p, owner));
    let tunnels = desired.tunnels.iter().map(|t| tunnel_spec(t, &desired.tun_bridge.name, owner));
    patches.chain(tunnels).collect()
}

/// Whether this diff may change or delete the port.
fn is_managed(port: &impl PortView, owner: &str) -> bool {
    port.owned_by() == Some(owner) && matches!(port.external_id(ids::KIND), Some(ids::KIND_TUNNEL | ids::KIND_PATCH))
}

fn show(v: Option<&str>) -> &str {
    v.unwrap_or("(none)")
}

/// The `(key, old, new)` of every key whose value differs between two maps.
fn map_changes<'a>(
    old: &BTreeMap<&'a str, &'a str>,
    new: &'a BTreeMap<String, String>,
) -> Vec<(&'a str, Option<&'a str>, Option<&'a str>)> {
    let keys: BTreeSet<&str> = old.keys().copied().chain(new.keys().map(String::as_str)).collect();
    keys.into_iter()
        .map(|k| (k, old.get(k).copied(), new.get(k).map(String::as_str)))
        .filter(|(_, o, n)| o != n)
        .collect()
}

/// What differs between an observed port and its spec, in words; empty when nothing does.
fn port_changes(spec: &PortSpec, obs: &impl PortView) -> Vec<String> {
    let mut changes = Vec::new();
    if obs.interface_type() != spec.interface_type {
        changes.push(format!("type {:?} -> {:?}", obs.interface_type(), spec.interface_type));
    }
    let options: BTreeMap<&str, &str> = obs.options().collect();
    for (k, old, new) in map_changes(&options, &spec.options) {
        changes.push(format!("options:{k} {} -> {}", show(old), show(new)));
    }
    if obs.tag() != spec.tag {
        changes.push(format!("tag {:?} -> {:?}", obs.tag(), spec.tag));
    }
    if obs.protected() != spec.protected {
        changes.push(format!("protected {} -> {}", obs.protected(), spec.protected));
    }
    let ours: BTreeMap<&str, &str> = obs.external_ids().filter(|(k, _)| ids::is_overlay_key(k)).collect();
    for (k, old, new) in map_changes(&ours, &spec.external_ids) {
        changes.push(format!("external_ids:{k} {} -> {}", show(old), show(new)));
    }
    changes
}

fn conflict_reason(port: &impl PortView, owner: &str) -> String {
    let what = match (port.owned_by(), port.external_id(ids::KIND)) {
        (None, _) => "is not owned by the overlay agent".to_owned(),
        (Some(o), _) if o != owner => format!("is owned by overlay host {o:?}, not {owner:?}"),
        (Some(_), Some(k)) => format!("is one of our {k:?} ports, which this reconcile does not manage"),
        (Some(_), None) => "is ours but carries no overlay-kind".to_owned(),
    };
    format!(
        "a port with this name on bridge {:?} {what}; it is left alone and the port the overlay \
         needs is not built: remove or rename it",
        port.bridge()
    )
}

/// A desired port, before it is made into a full row (which most ports never need).
enum Wanted<'a> {
    Patch(&'a PatchPortSpec),
    Tunnel(&'a TunnelPortSpec),
}

fn deletion(name: &str, obs: &impl PortView) -> PortDeletion {
    PortDeletion { bridge: obs.bridge().to_owned(), name: name.to_owned(), port_uuid: obs.uuid().into_owned() }
}

/// Adds what one desired port needs to `plan`, given the observed port of its name.
fn plan_port(plan: &mut Plan, name: &str, want: &Wanted, obs: Option<impl PortView>, tun_bridge: &str, owner: &str) {
    let spec = || match want {
        Wanted::Patch(p) => patch_spec(p, owner),
        Wanted::Tunnel(t) => tunnel_spec(t, tun_bridge, owner),
    };
    let create = |plan: &mut Plan| plan.create_ports.push(spec());
    let Some(obs) = obs else {
        create(plan);
        return;
    };
    if !is_managed(&obs, owner) {
        plan.conflicts.push(Conflict { object: name.to_owned(), reason: conflict_reason(&obs, owner) });
        return;
    }
    let bridge = match want {
        Wanted::Patch(p) => p.bridge.as_str(),
        Wanted::Tunnel(_) => tun_bridge,
    };
    if obs.bridge() != bridge {
        // Ports cannot move between bridges in place; re-create on the right one.
        plan.delete_ports.push(deletion(name, &obs));
        create(plan);
        return;
    }
    let spec = spec();
    let changes = port_changes(&spec, &obs);
    if !changes.is_empty() {
        let mut external_ids: BTreeMap<String, String> = obs
            .external_ids()
            .filter(|(k, _)| !ids::is_overlay_key(k))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        external_ids.extend(spec.external_ids);
        plan.update_ports.push(PortUpdate {
            name: spec.name,
            bridge: spec.bridge,
            port_uuid: obs.uuid().into_owned(),
            iface_uuid: obs.interface_uuid().into_owned(),
            interface_type: spec.interface_type,
            options: spec.options,
            tag: spec.tag,
            protected: spec.protected,
            external_ids,
            changes,
        });
    }
}

fn sort_plan(plan: &mut Plan) {
    plan.create_ports.sort_by(|a, b| a.name.cmp(&b.name));
    plan.update_ports.sort_by(|a, b| a.name.cmp(&b.name));
    plan.delete_ports.sort_by(|a, b| a.name.cmp(&b.name));
    plan.conflicts.sort_by(|a, b| a.object.cmp(&b.object));
}

/// OVS's default for an empty column.
fn or_default<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.is_empty() {
        default
    } else {
        value
    }
}

/// What one desired bridge needs: created, or its datapath type and fail mode set (only on a
/// bridge the agent created: on another, a difference is a conflict for the operator).
fn plan_bridge(plan: &mut Plan, b: &BridgeSpec, observed: Option<BridgeView>, owner: &str) {
    let Some(ob) = observed else {
        plan.create_bridges.push(BridgeCreation {
            name: b.name.clone(),
            datapath_type: b.datapath_type.clone(),
            fail_mode: b.fail_mode.clone(),
            external_ids: map([(ids::OWNER, owner.to_owned()), (ids::KIND, ids::KIND_BRIDGE.to_owned())]),
        });
        return;
    };
    let columns = [
        ("datapath_type", ob.datapath_type, b.datapath_type.as_str(), "system"),
        ("fail_mode", ob.fail_mode, b.fail_mode.as_str(), "standalone"),
    ];
    for (column, have, want, default) in columns {
        if or_default(have, default) == or_default(want, default) {
            continue;
        }
        if !ob.owned {
            plan.conflicts.push(Conflict {
                object: b.name.clone(),
                reason: format!(
                    "bridge has {column} {have:?}, the overlay needs {want:?}, and it was not created by the \
                     agent: change it (ovs-vsctl set bridge {} {column}={want}) or configure another bridge",
                    b.name
                ),
            });
        } else if column == "datapath_type" {
            plan.set_bridge_datapath.push((b.name.clone(), want.to_owned()));
        } else {
            plan.set_bridge_fail_mode.push((b.name.clone(), want.to_owned()));
        }
    }
}

/// Compares desired and observed state and lists the changes, all sorted by name.
///
/// Both sides are walked once in name order (the desired tunnels are sorted, and
/// [`Observed::ports`] is).
pub fn diff<O: Observed>(desired: &DesiredState, observed: &O, owner: &str) -> Plan {
    let mut plan = Plan::default();

    for b in [&desired.int_bridge, &desired.tun_bridge] {
        plan_bridge(&mut plan, b, observed.bridge(&b.name), owner);
    }

    let tun_bridge = desired.tun_bridge.name.as_str();
    let mut wanted: Vec<(&str, Wanted)> = Vec::with_capacity(desired.patch_ports.len() + desired.tunnels.len());
    wanted.extend(desired.patch_ports.iter().map(|p| (p.name.as_str(), Wanted::Patch(p))));
    wanted.extend(desired.tunnels.iter().map(|t| (t.name.as_str(), Wanted::Tunnel(t))));
    // Tunnels come sorted: this mostly slots in the two patch ports.
    wanted.sort_by(|a, b| a.0.cmp(b.0));

    let mut ports = observed.ports().peekable();
    // The previous desired name: the observed port of that name, if any, is still to be
    // passed over, and it is wanted.
    let mut previous: Option<&str> = None;
    for (name, want) in &wanted {
        // Observed ports that sort before this name are not wanted.
        while let Some((other, obs)) = ports.next_if(|(other, _)| other < name) {
            if previous != Some(other) && is_managed(&obs, owner) {
                plan.delete_ports.push(deletion(other, &obs));
            }
        }
        previous = Some(name);
        // Peeked, not taken: a name desired twice meets the same observed port twice.
        let obs = ports.peek().filter(|(other, _)| other == name).map(|(_, obs)| obs);
        plan_port(&mut plan, name, want, obs, tun_bridge, owner);
    }
    for (other, obs) in ports {
        if previous != Some(other) && is_managed(&obs, owner) {
            plan.delete_ports.push(deletion(other, &obs));
        }
    }
    sort_plan(&mut plan);
    plan
}

/// Local VLANs recorded on our tunnel and container ports, per tenant, so a restarted agent
/// keeps them (feed to [`crate::desired::desired_state`]). `overlay-local-vlan` is read, or the
/// port's tag when that is missing. If ports of one tenant disagree (an interrupted
/// re-tagging), the tag most of them carry wins, then the lowest.
pub fn existing_vlans_from<O: Observed>(observed: &O) -> BTreeMap<String, u16> {
    let mut votes: BTreeMap<String, BTreeMap<u16, usize>> = BTreeMap::new();
    for (_, port) in observed.ports() {
        let kind = port.external_id(ids::KIND);
        if port.owned_by().is_none() || !matches!(kind, Some(ids::KIND_TUNNEL | ids::KIND_CONTAINER)) {
            continue;
        }
        let Some(tenant) = port.external_id(ids::TENANT) else { continue };
        let tag = port
            .external_id(ids::LOCAL_VLAN)
            .and_then(|v| v.parse::<u16>().ok())
            .or(port.tag())
            .filter(|t| (VLAN_MIN..=VLAN_MAX).contains(t));
        if let Some(tag) = tag {
            // A lookup first: the tenant's name is copied once, not once per port.
            let tags = match votes.get_mut(tenant) {
                Some(tags) => tags,
                None => votes.entry(tenant.to_owned()).or_default(),
            };
            *tags.entry(tag).or_default() += 1;
        }
    }
    votes
        .into_iter()
        .filter_map(|(tenant, tags)| {
            // max_by_key returns the last maximum; iterate tags high to low so ties go low.
            let (&tag, _) = tags.iter().rev().max_by_key(|(_, &n)| n)?;
            Some((tenant, tag))
        })
        .collect()
}

#[cfg(test)]
mod tests;
