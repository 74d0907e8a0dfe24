//! The diff: what to change in OVSDB so the bridges match the desired state.
//!
//! Observed and planned rows are plain values here (UUIDs are strings); the agent reads them
//! from its OVSDB replica and turns a [`Plan`] into one transaction. Ownership is the safety
//! rule: only ports carrying `overlay-owner=<owner>` and a kind this diff manages (tunnel,
//! patch) are ever updated or deleted; anything else in the way is reported as a conflict.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::desired::{BridgeSpec, DesiredState, PatchPortSpec, TunnelPortSpec};
use crate::external_ids as ids;
use crate::text;
use crate::vlan::{VLAN_MAX, VLAN_MIN};

/// An Interface row as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedInterface {
    /// Row UUID.
    pub uuid: String,
    /// `Interface.type`: "" (system), "patch", "vxlan", "gre", "internal", ...
    pub kind: String,
    /// `Interface.options`.
    pub options: BTreeMap<String, String>,
}

/// A Port row (with its single Interface) as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedPort {
    /// Row UUID.
    pub uuid: String,
    /// Name of the bridge whose `ports` hold it.
    pub bridge: String,
    /// `external_ids:overlay-owner`, if any.
    pub owned_by: Option<String>,
    /// `Port.tag`.
    pub tag: Option<u16>,
    /// `Port.protected`.
    pub protected: bool,
    /// The port's interface.
    pub interface: ObservedInterface,
    /// `Port.external_ids`.
    pub external_ids: BTreeMap<String, String>,
}

/// A Bridge row as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedBridge {
    /// Row UUID.
    pub uuid: String,
    /// `Bridge.datapath_type` ("" means the default, "system").
    pub datapath_type: String,
    /// `Bridge.fail_mode` ("" means the default, "standalone").
    pub fail_mode: String,
    /// Whether it carries our `overlay-owner`.
    pub owned: bool,
    /// Names of its ports.
    pub ports: BTreeSet<String>,
}

/// The part of OVSDB the diff looks at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedState {
    /// Bridges by name.
    pub bridges: BTreeMap<String, ObservedBridge>,
    /// Ports by name, on all bridges.
    pub ports: BTreeMap<String, ObservedPort>,
}

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

/// Read access to one observed port (with its interface). [`ObservedPort`] implements it, and
/// so can a caller's own rows: the agent diffs against its OVSDB replica in place rather than
/// copying every row into an [`ObservedState`] on every pass.
pub trait PortView {
    /// Port row UUID (read only for ports the plan changes).
    fn uuid(&self) -> Cow<'_, str>;
    /// Name of the bridge whose `ports` hold it.
    fn bridge(&self) -> &str;
    /// `external_ids:overlay-owner`, if any.
    fn owned_by(&self) -> Option<&str>;
    /// `Port.tag`.
    fn tag(&self) -> Option<u16>;
    /// `Port.protected`.
    fn protected(&self) -> bool;
    /// Interface row UUID (read only for ports the plan changes).
    fn interface_uuid(&self) -> Cow<'_, str>;
    /// `Interface.type`.
    fn interface_type(&self) -> &str;
    /// `Interface.options`, in key order.
    fn options(&self) -> impl Iterator<Item = (&str, &str)>;
    /// `Port.external_ids`, in key order.
    fn external_ids(&self) -> impl Iterator<Item = (&str, &str)>;
    /// One key of `Port.external_ids`.
    fn external_id(&self, key: &str) -> Option<&str>;
}

/// What the diff needs to know of an observed bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeView<'a> {
    /// `Bridge.datapath_type` ("" means the default, "system").
    pub datapath_type: &'a str,
    /// `Bridge.fail_mode` ("" means the default, "standalone").
    pub fail_mode: &'a str,
    /// Whether it carries our `overlay-owner`.
    pub owned: bool,
}

/// Read access to the part of OVSDB the diff looks at; see [`PortView`].
pub trait Observed {
    /// A port as read.
    type Port<'a>: PortView
    where
        Self: 'a;
    /// A bridge by name.
    fn bridge(&self, name: &str) -> Option<BridgeView<'_>>;
    /// Every port on the observed bridges, sorted by name, each name once.
    fn ports(&self) -> impl Iterator<Item = (&str, Self::Port<'_>)>;
    /// The port of this name on the observed bridges, as [`Observed::ports`] lists it.
    fn port(&self, name: &str) -> Option<Self::Port<'_>>;
}

impl<T: PortView + ?Sized> PortView for &T {
    fn uuid(&self) -> Cow<'_, str> {
        (**self).uuid()
    }
    fn bridge(&self) -> &str {
        (**self).bridge()
    }
    fn owned_by(&self) -> Option<&str> {
        (**self).owned_by()
    }
    fn tag(&self) -> Option<u16> {
        (**self).tag()
    }
    fn protected(&self) -> bool {
        (**self).protected()
    }
    fn interface_uuid(&self) -> Cow<'_, str> {
        (**self).interface_uuid()
    }
    fn interface_type(&self) -> &str {
        (**self).interface_type()
    }
    fn options(&self) -> impl Iterator<Item = (&str, &str)> {
        (**self).options()
    }
    fn external_ids(&self) -> impl Iterator<Item = (&str, &str)> {
        (**self).external_ids()
    }
    fn external_id(&self, key: &str) -> Option<&str> {
        (**self).external_id(key)
    }
}

impl PortView for ObservedPort {
    fn uuid(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.uuid)
    }
    fn bridge(&self) -> &str {
        &self.bridge
    }
    fn owned_by(&self) -> Option<&str> {
        self.owned_by.as_deref()
    }
    fn tag(&self) -> Option<u16> {
        self.tag
    }
    fn protected(&self) -> bool {
        self.protected
    }
    fn interface_uuid(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.interface.uuid)
    }
    fn interface_type(&self) -> &str {
        &self.interface.kind
    }
    fn options(&self) -> impl Iterator<Item = (&str, &str)> {
        self.interface.options.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    fn external_ids(&self) -> impl Iterator<Item = (&str, &str)> {
        self.external_ids.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    fn external_id(&self, key: &str) -> Option<&str> {
        self.external_ids.get(key).map(String::as_str)
    }
}

impl Observed for ObservedState {
    type Port<'a> = &'a ObservedPort;
    fn bridge(&self, name: &str) -> Option<BridgeView<'_>> {
        self.bridges.get(name).map(|b| BridgeView {
            datapath_type: &b.datapath_type,
            fail_mode: &b.fail_mode,
            owned: b.owned,
        })
    }
    fn ports(&self) -> impl Iterator<Item = (&str, &ObservedPort)> {
        self.ports.iter().map(|(k, v)| (k.as_str(), v))
    }
    fn port(&self, name: &str) -> Option<&ObservedPort> {
        self.ports.get(name)
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

/// What OVSDB would hold after applying `plan` to `observed`: a fake for tests of the diff and of code that drives it. New rows get UUIDs
/// like `uuid-port-<name>`.
pub fn simulate_apply(observed: &ObservedState, plan: &Plan) -> ObservedState {
    let mut s = observed.clone();
    for b in &plan.create_bridges {
        s.bridges.insert(
            b.name.clone(),
            ObservedBridge {
                uuid: format!("uuid-bridge-{}", b.name),
                datapath_type: b.datapath_type.clone(),
                fail_mode: b.fail_mode.clone(),
                owned: true,
                ports: BTreeSet::new(),
            },
        );
    }
    for (name, dp) in &plan.set_bridge_datapath {
        if let Some(b) = s.bridges.get_mut(name) {
            b.datapath_type = dp.clone();
        }
    }
    for (name, mode) in &plan.set_bridge_fail_mode {
        if let Some(b) = s.bridges.get_mut(name) {
            b.fail_mode = mode.clone();
        }
    }
    for d in &plan.delete_ports {
        if s.ports.get(&d.name).is_some_and(|p| p.uuid == d.port_uuid) {
            s.ports.remove(&d.name);
        }
        if let Some(b) = s.bridges.get_mut(&d.bridge) {
            b.ports.remove(&d.name);
        }
    }
    for c in &plan.create_ports {
        s.ports.insert(
            c.name.clone(),
            ObservedPort {
                uuid: format!("uuid-port-{}", c.name),
                bridge: c.bridge.clone(),
                owned_by: c.external_ids.get(ids::OWNER).cloned(),
                tag: c.tag,
                protected: c.protected,
                interface: ObservedInterface {
                    uuid: format!("uuid-iface-{}", c.name),
                    kind: c.interface_type.clone(),
                    options: c.options.clone(),
                },
                external_ids: c.external_ids.clone(),
            },
        );
        if let Some(b) = s.bridges.get_mut(&c.bridge) {
            b.ports.insert(c.name.clone());
        }
    }
    for u in &plan.update_ports {
        if let Some(p) = s.ports.get_mut(&u.name).filter(|p| p.uuid == u.port_uuid) {
            p.interface.kind = u.interface_type.clone();
            p.interface.options = u.options.clone();
            p.tag = u.tag;
            p.protected = u.protected;
            p.owned_by = u.external_ids.get(ids::OWNER).cloned();
            p.external_ids = u.external_ids.clone();
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::desired::{desired_state, ClusterView};
    use crate::fixtures::*;
    use crate::model::TunnelType;
    use crate::naming::{PATCH_INT_TO_TUN, PATCH_TUN_TO_INT};

    const OWNER: &str = "a";

    fn desired(v: &ClusterView, observed: &ObservedState) -> DesiredState {
        desired_state(v, &existing_vlans_from(observed)).unwrap()
    }

    /// One reconcile round: desired from the view and observed VLANs, diff, apply.
    fn reconcile(v: &ClusterView, observed: &ObservedState) -> (Plan, ObservedState) {
        let d = desired(v, observed);
        let plan = diff(&d, observed, &v.local.hostname);
        let after = simulate_apply(observed, &plan);
        (plan, after)
    }

    fn foreign_port(bridge: &str, kind: &str) -> ObservedPort {
        ObservedPort {
            uuid: format!("uuid-foreign-{bridge}"),
            bridge: bridge.into(),
            interface: ObservedInterface { uuid: "i".into(), kind: kind.into(), options: BTreeMap::new() },
            ..Default::default()
        }
    }

    #[test]
    fn empty_cluster_on_empty_ovsdb_creates_secure_bridges_and_patches() {
        let v = view(OWNER, &[host(OWNER, "10.0.0.1")], &[], &[]);
        let (plan, after) = reconcile(&v, &ObservedState::default());
        let bridges: Vec<(&str, &str, &str)> = plan
            .create_bridges
            .iter()
            .map(|b| (b.name.as_str(), b.datapath_type.as_str(), b.fail_mode.as_str()))
            .collect();
        assert_eq!(bridges, [("br-int", "netdev", "secure"), ("br-tun", "netdev", "secure")]);
        assert!(plan.create_bridges.iter().all(|b| b.external_ids[ids::OWNER] == OWNER));
        let names: Vec<&str> = plan.create_ports.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, [PATCH_TUN_TO_INT, PATCH_INT_TO_TUN], "sorted by name");
        assert!(plan.create_ports.iter().all(|p| p.tag.is_none() && p.interface_type == "patch"));
        assert!(diff(&desired(&v, &after), &after, OWNER).is_empty());
    }

    #[test]
    fn tenant_ports_carry_key_flow_remote_and_local_ip_and_converge_in_one_round() {
        let v = three_hosts(OWNER);
        let (plan, after) = reconcile(&v, &ObservedState::default());
        let red = plan.create_ports.iter().find(|p| p.name == "tun-gr-200").unwrap();
        assert_eq!(red.bridge, "br-tun");
        assert_eq!(red.interface_type, "gre");
        assert_eq!(
            red.options,
            BTreeMap::from([
                ("key".to_owned(), "200".to_owned()),
                ("local_ip".to_owned(), "10.0.0.1".to_owned()),
                ("remote_ip".to_owned(), "flow".to_owned()),
            ])
        );
        assert_eq!((red.tag, red.protected), (None, false));
        assert_eq!(red.external_ids[ids::LOCAL_VLAN], "2");
        assert_eq!(red.external_ids[ids::TENANT], "red");
        assert!(diff(&desired(&v, &after), &after, OWNER).is_empty(), "a second round changes nothing");
    }

    #[test]
    fn peers_coming_and_going_change_no_port_but_a_tenant_leaving_removes_its_port() {
        let v = three_hosts(OWNER);
        let (_, observed) = reconcile(&v, &ObservedState::default());
        let mut fewer_peers = v.clone();
        fewer_peers.leases.retain(|l| l.host != "c");
        fewer_peers.hosts.remove("c");
        assert!(diff(&desired(&fewer_peers, &observed), &observed, OWNER).is_empty());
        let mut no_red = v.clone();
        no_red.leases.retain(|l| !(l.tenant == "red" && l.host == OWNER));
        let (plan, after) = reconcile(&no_red, &observed);
        assert_eq!(plan.delete_ports.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["tun-gr-200"]);
        assert!(after.ports.contains_key("tun-vx-100"));
    }

    #[test]
    fn per_peer_tunnel_ports_of_earlier_agents_are_removed() {
        let v = three_hosts(OWNER);
        let mut observed = ObservedState::default();
        // A port the per-(peer, tenant) design made: ours, a tunnel, protected, tagged.
        let mut old = foreign_port("br-tun", "vxlan");
        old.owned_by = Some(OWNER.into());
        old.protected = true;
        old.tag = Some(1);
        old.external_ids = BTreeMap::from([
            (ids::OWNER.to_owned(), OWNER.to_owned()),
            (ids::KIND.to_owned(), ids::KIND_TUNNEL.to_owned()),
            (ids::TENANT.to_owned(), "blue".to_owned()),
            (ids::PEER.to_owned(), "b".to_owned()),
            (ids::LOCAL_VLAN.to_owned(), "1".to_owned()),
        ]);
        old.interface.options = BTreeMap::from([("remote_ip".to_owned(), "10.0.0.2".to_owned())]);
        observed.ports.insert("vx-1a2b3c4d5e6f".into(), old);
        let (plan, after) = reconcile(&v, &observed);
        assert_eq!(plan.delete_ports.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["vx-1a2b3c4d5e6f"]);
        assert!(after.ports.contains_key("tun-vx-100"));
        assert_eq!(existing_vlans_from(&after)["blue"], 1, "the tenant keeps its VLAN across the change");
    }

    #[test]
    fn foreign_and_container_ports_are_never_touched() {
        let v = three_hosts(OWNER);
        let (_, mut observed) = reconcile(&v, &ObservedState::default());
        observed.ports.insert("eth1".into(), foreign_port("br-int", ""));
        let mut other_owner = foreign_port("br-tun", "vxlan");
        other_owner.owned_by = Some("old-name".into());
        other_owner.external_ids = map([(ids::OWNER, "old-name".into()), (ids::KIND, "tunnel".into())]);
        observed.ports.insert("vx-000000000000".into(), other_owner);
        let mut container = foreign_port("br-int", "");
        container.owned_by = Some(OWNER.into());
        container.tag = Some(1);
        container.external_ids = ids::container_port(OWNER, "blue", 100, 1, "c", "eth0");
        observed.ports.insert("tap0123456789ab".into(), container);
        // Even with no tenants left at all, only our tunnel ports go.
        let mut empty = v.clone();
        empty.leases.clear();
        let (plan, after) = reconcile(&empty, &observed);
        assert_eq!(plan.delete_ports.len(), 2);
        assert!(plan.delete_ports.iter().all(|d| d.bridge == "br-tun" && d.name.starts_with("tun-")));
        for kept in ["eth1", "vx-000000000000", "tap0123456789ab", PATCH_INT_TO_TUN, PATCH_TUN_TO_INT] {
            assert!(after.ports.contains_key(kept), "{kept} was removed");
        }
        assert!(plan.update_ports.is_empty() && plan.conflicts.is_empty());
    }

    #[test]
    fn name_taken_by_a_foreign_port_is_a_conflict() {
        let v = three_hosts(OWNER);
        let mut observed = ObservedState::default();
        observed.ports.insert("tun-vx-100".into(), foreign_port("br-tun", "vxlan"));
        observed.ports.insert(PATCH_INT_TO_TUN.into(), {
            let mut p = foreign_port("br-int", "patch");
            p.owned_by = Some("someone-else".into());
            p
        });
        let plan = diff(&desired(&v, &observed), &observed, OWNER);
        let objs: Vec<&str> = plan.conflicts.iter().map(|c| c.object.as_str()).collect();
        assert_eq!(objs, [PATCH_INT_TO_TUN, "tun-vx-100"]);
        assert!(plan.conflicts.iter().any(|c| c.reason.contains("not owned by the overlay agent")));
        assert!(plan.conflicts.iter().any(|c| c.reason.contains("\"someone-else\"")));
        let touched = plan.create_ports.iter().map(|p| &p.name).chain(plan.delete_ports.iter().map(|d| &d.name));
        for n in touched {
            assert!(n != "tun-vx-100" && n != PATCH_INT_TO_TUN, "{n} touched");
        }
        assert!(plan.conflicts[0].to_string().starts_with(&format!("{}: ", plan.conflicts[0].object)));
    }

    #[test]
    fn drifted_columns_are_repaired_and_foreign_keys_kept() {
        let v = three_hosts(OWNER);
        let (_, mut observed) = reconcile(&v, &ObservedState::default());
        let p = observed.ports.get_mut("tun-vx-100").unwrap();
        p.protected = true;
        p.tag = Some(9);
        p.interface.options.insert("csum".into(), "true".into());
        p.external_ids.insert("other-tool".into(), "x".into());
        p.external_ids.insert("overlay-stale".into(), "y".into());
        let (plan, after) = reconcile(&v, &observed);
        assert_eq!(plan.update_ports.len(), 1);
        let u = &plan.update_ports[0];
        assert_eq!(u.changes.len(), 4, "{:?}", u.changes);
        assert!(u.changes.contains(&"options:csum true -> (none)".to_owned()));
        assert_eq!(u.external_ids.get("other-tool").map(String::as_str), Some("x"));
        assert!(!u.external_ids.contains_key("overlay-stale"));
        let fixed = &after.ports["tun-vx-100"];
        assert!(!fixed.protected && fixed.tag.is_none() && !fixed.interface.options.contains_key("csum"));
    }

    #[test]
    fn port_on_the_wrong_bridge_is_moved() {
        let v = view(OWNER, &[host(OWNER, "10.0.0.1")], &[], &[]);
        let (_, mut observed) = reconcile(&v, &ObservedState::default());
        observed.ports.get_mut(PATCH_TUN_TO_INT).unwrap().bridge = "br-int".into();
        observed.bridges.get_mut("br-tun").unwrap().ports.remove(PATCH_TUN_TO_INT);
        observed.bridges.get_mut("br-int").unwrap().ports.insert(PATCH_TUN_TO_INT.into());
        let (plan, after) = reconcile(&v, &observed);
        assert_eq!(
            plan.delete_ports,
            vec![PortDeletion {
                bridge: "br-int".into(),
                name: PATCH_TUN_TO_INT.into(),
                port_uuid: observed.ports[PATCH_TUN_TO_INT].uuid.clone(),
            }]
        );
        assert_eq!(plan.create_ports.len(), 1);
        assert_eq!(after.ports[PATCH_TUN_TO_INT].bridge, "br-tun");
    }

    #[test]
    fn bridge_datapath_and_fail_mode_rules() {
        let v = view(OWNER, &[host(OWNER, "10.0.0.1")], &[], &[]);
        let (_, mut observed) = reconcile(&v, &ObservedState::default());
        // Ours and wrong: fix it (a bridge of the per-peer design is standalone).
        let int = observed.bridges.get_mut("br-int").unwrap();
        int.datapath_type = "system".into();
        int.fail_mode = String::new();
        // Not ours and wrong: report it.
        let tun = observed.bridges.get_mut("br-tun").unwrap();
        tun.owned = false;
        tun.fail_mode = "standalone".into();
        let plan = diff(&desired(&v, &observed), &observed, OWNER);
        assert_eq!(plan.set_bridge_datapath, [("br-int".to_owned(), "netdev".to_owned())]);
        assert_eq!(plan.set_bridge_fail_mode, [("br-int".to_owned(), "secure".to_owned())]);
        assert_eq!(plan.conflicts.len(), 1);
        assert_eq!(plan.conflicts[0].object, "br-tun");
        assert!(plan.conflicts[0].reason.contains("fail_mode=secure"), "{}", plan.conflicts[0]);
        let after = simulate_apply(&observed, &plan);
        assert_eq!(after.bridges["br-int"].fail_mode, "secure");

        // "" and "system" are the same datapath.
        let mut v2 = v.clone();
        v2.datapath_type = "system".into();
        observed.bridges.get_mut("br-tun").unwrap().fail_mode = "secure".into();
        observed.bridges.get_mut("br-int").unwrap().fail_mode = "secure".into();
        observed.bridges.get_mut("br-tun").unwrap().datapath_type = String::new();
        let plan = diff(&desired(&v2, &observed), &observed, OWNER);
        assert!(plan.set_bridge_datapath.is_empty() && plan.conflicts.is_empty(), "{plan:?}");
    }

    #[test]
    fn pre_existing_foreign_bridges_are_used() {
        let v = view(OWNER, &[host(OWNER, "10.0.0.1")], &[], &[]);
        let mut observed = ObservedState::default();
        for b in ["br-int", "br-tun"] {
            observed.bridges.insert(
                b.into(),
                ObservedBridge {
                    uuid: format!("u-{b}"),
                    datapath_type: "netdev".into(),
                    fail_mode: "secure".into(),
                    owned: false,
                    ports: BTreeSet::new(),
                },
            );
        }
        let plan = diff(&desired(&v, &observed), &observed, OWNER);
        assert!(plan.create_bridges.is_empty() && plan.conflicts.is_empty());
        assert_eq!(plan.create_ports.len(), 2);
    }

    #[test]
    fn vlans_survive_a_restart() {
        let v = three_hosts(OWNER);
        let (_, observed) = reconcile(&v, &ObservedState::default());
        let before = existing_vlans_from(&observed);
        assert_eq!(before, desired(&v, &ObservedState::default()).tenant_vlans);
        // After a restart a tenant named to sort first appears: a fresh allocation would shift
        // blue and red; the recovered one must not.
        let mut v2 = v.clone();
        v2.tenants.insert("aaa".into(), tenant("aaa", 300, "10.9.0.0/16", TunnelType::Vxlan));
        v2.leases.push(lease("aaa", "10.9.1.0/24", "a"));
        let fresh = desired_state(&v2, &BTreeMap::new()).unwrap();
        assert_ne!(fresh.tenant_vlans["blue"], before["blue"], "test would not catch a reshuffle");
        let (plan, after) = reconcile(&v2, &observed);
        assert!(plan.update_ports.is_empty() && plan.delete_ports.is_empty(), "{plan:?}");
        assert_eq!(plan.create_ports.len(), 1);
        let vlans = existing_vlans_from(&after);
        assert_eq!((vlans["blue"], vlans["red"], vlans["aaa"]), (before["blue"], before["red"], 3));
    }

    #[test]
    fn existing_vlans_from_reads_owned_tunnel_and_container_ports() {
        let mut observed = ObservedState::default();
        let mut add = |name: &str, owner: Option<&str>, ext: BTreeMap<String, String>, tag: Option<u16>| {
            observed.ports.insert(
                name.into(),
                ObservedPort {
                    uuid: name.into(),
                    bridge: "br-int".into(),
                    owned_by: owner.map(str::to_owned),
                    tag,
                    external_ids: ext,
                    ..Default::default()
                },
            );
        };
        add("c1", Some("a"), ids::container_port("a", "blue", 1, 5, "c", "eth0"), Some(5));
        add("c2", Some("a"), ids::container_port("a", "blue", 1, 5, "c", "eth0"), Some(5));
        add("c3", Some("a"), ids::container_port("a", "blue", 1, 9, "c", "eth0"), Some(9));
        // Ties go to the lowest tag.
        add("r1", Some("a"), ids::container_port("a", "red", 2, 8, "c", "eth0"), None);
        add("r2", Some("a"), ids::container_port("a", "red", 2, 7, "c", "eth0"), None);
        // The tag stands in for a missing or garbled overlay-local-vlan.
        let mut green = ids::container_port("a", "green", 3, 0, "c", "eth0");
        green.insert(ids::LOCAL_VLAN.into(), "junk".into());
        add("g1", Some("a"), green, Some(12));
        // Ignored: unowned, patch kind, no tenant, out of range.
        add("x1", None, ids::container_port("a", "x1", 4, 3, "c", "eth0"), Some(3));
        let mut patch = ids::container_port("a", "x2", 4, 3, "c", "eth0");
        patch.insert(ids::KIND.into(), ids::KIND_PATCH.into());
        add("x2", Some("a"), patch, Some(3));
        let mut no_tenant = ids::container_port("a", "x3", 4, 3, "c", "eth0");
        no_tenant.remove(ids::TENANT);
        add("x3", Some("a"), no_tenant, Some(3));
        add("x4", Some("a"), ids::container_port("a", "x4", 4, 4095, "c", "eth0"), None);
        let want: BTreeMap<String, u16> =
            [("blue".into(), 5), ("red".into(), 7), ("green".into(), 12)].into_iter().collect();
        assert_eq!(existing_vlans_from(&observed), want);
    }

    #[test]
    fn simulate_apply_ignores_stale_uuids() {
        let v = view(OWNER, &[host(OWNER, "10.0.0.1")], &[], &[]);
        let (_, observed) = reconcile(&v, &ObservedState::default());
        let plan = Plan {
            delete_ports: vec![PortDeletion {
                bridge: "br-int".into(),
                name: PATCH_INT_TO_TUN.into(),
                port_uuid: "not-the-uuid".into(),
            }],
            ..Default::default()
        };
        assert!(simulate_apply(&observed, &plan).ports.contains_key(PATCH_INT_TO_TUN));
    }
}
