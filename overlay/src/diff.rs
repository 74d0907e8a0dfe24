//! The diff: what to change in OVSDB so the bridges match the desired state.
//!
//! Observed and planned rows are plain values here (UUIDs are strings); the agent reads them
//! from its OVSDB replica and turns a [`Plan`] into one transaction. Ownership is the safety
//! rule: only ports carrying `overlay-owner=<owner>` and a kind this diff manages (tunnel,
//! patch) are ever updated or deleted; anything else in the way is reported as a conflict.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::desired::{DesiredState, PatchPortSpec, TunnelPortSpec};
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
    /// Ports to create, other than tunnels.
    pub create_ports: Vec<PortSpec>,
    /// Tunnel ports to create, as the desired state has them; [`tunnel_spec`] makes the row
    /// when it is written. As full rows, the 20,000 tunnels of a cold start took 30 MB at
    /// once (two maps of owned strings each); these take a seventh of that.
    pub create_tunnels: Vec<TunnelPortSpec>,
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
            && self.create_ports.is_empty()
            && self.create_tunnels.is_empty()
            && self.update_ports.is_empty()
            && self.delete_ports.is_empty()
    }

    /// The plan with its tunnels as full rows among `create_ports` (sorted by name), for the
    /// tunnel bridge `tun_bridge` and `owner`: for tests, and code that wants every row.
    pub fn into_rows(mut self, tun_bridge: &str, owner: &str) -> Plan {
        let tunnels = std::mem::take(&mut self.create_tunnels);
        self.create_ports.extend(tunnels.iter().map(|t| tunnel_spec(t, tun_bridge, owner)));
        self.create_ports.sort_by(|a, b| a.name.cmp(&b.name));
        self
    }
}

/// Read access to one observed port (with its interface). [`ObservedPort`] implements it, and
/// so can a caller's own rows: the agent diffs against its OVSDB replica in place rather than
/// copying every row into an [`ObservedState`] on every pass (20,000 ports at the scale it is
/// built for).
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
        self.bridges.get(name).map(|b| BridgeView { datapath_type: &b.datapath_type, owned: b.owned })
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

/// The row of tunnel `t` on `bridge`, with the external_ids this `owner` writes.
pub fn tunnel_spec(t: &TunnelPortSpec, bridge: &str, owner: &str) -> PortSpec {
    PortSpec {
        bridge: bridge.to_owned(),
        name: t.name.clone(),
        interface_type: t.tunnel.as_str().to_owned(),
        options: map([
            ("key", text::decimal(t.vni.get()).as_str().to_owned()),
            ("local_ip", text::ip(t.local_ip).as_str().to_owned()),
            ("remote_ip", text::ip(t.remote_ip).as_str().to_owned()),
        ]),
        tag: Some(t.local_vlan),
        // Split horizon: frames from one tunnel never leave by another, so a full mesh with
        // MAC-learning forwarding has no broadcast loops.
        protected: true,
        external_ids: map([
            (ids::OWNER, owner.to_owned()),
            (ids::KIND, ids::KIND_TUNNEL.to_owned()),
            (ids::TENANT, t.tenant.clone()),
            (ids::VNI, text::decimal(t.vni.get()).as_str().to_owned()),
            (ids::PEER, t.peer.clone()),
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

/// OVS treats an empty datapath_type as "system".
fn same_datapath(a: &str, b: &str) -> bool {
    fn norm(s: &str) -> &str {
        if s.is_empty() {
            "system"
        } else {
            s
        }
    }
    norm(a) == norm(b)
}

/// Whether this diff may change or delete the port.
fn is_managed(port: &impl PortView, owner: &str) -> bool {
    port.owned_by() == Some(owner) && matches!(port.external_id(ids::KIND), Some(ids::KIND_TUNNEL | ids::KIND_PATCH))
}

/// Whether `actual` holds exactly the `expected` pairs, both in key order.
fn same_pairs<'a>(mut actual: impl Iterator<Item = (&'a str, &'a str)>, expected: &[(&str, &[u8])]) -> bool {
    expected.iter().all(|&(ek, ev)| actual.next().is_some_and(|(k, v)| k == ek && v.as_bytes() == ev))
        && actual.next().is_none()
}

/// Whether an observed port already is `t` as [`tunnel_spec`] would write it: the same
/// verdict as an empty [`port_changes`], without building the spec. Almost every port of a
/// pass takes this path, so it compares text made on the stack and allocates nothing.
fn tunnel_in_sync(t: &TunnelPortSpec, obs: &impl PortView, owner: &str) -> bool {
    if obs.interface_type() != t.tunnel.as_str() || obs.tag() != Some(t.local_vlan) || !obs.protected() {
        return false;
    }
    let vni = text::decimal(t.vni.get());
    let (local_ip, remote_ip) = (text::ip(t.local_ip), text::ip(t.remote_ip));
    let options = [("key", vni.as_bytes()), ("local_ip", local_ip.as_bytes()), ("remote_ip", remote_ip.as_bytes())];
    if !same_pairs(obs.options(), &options) {
        return false;
    }
    let vlan = text::decimal(u32::from(t.local_vlan));
    // In key order, as the maps hold them (a test checks the order).
    let external_ids = [
        (ids::KIND, ids::KIND_TUNNEL.as_bytes()),
        (ids::LOCAL_VLAN, vlan.as_bytes()),
        (ids::OWNER, owner.as_bytes()),
        (ids::PEER, t.peer.as_bytes()),
        (ids::TENANT, t.tenant.as_bytes()),
        (ids::VNI, vni.as_bytes()),
    ];
    same_pairs(obs.external_ids().filter(|(k, _)| ids::is_overlay_key(k)), &external_ids)
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
    let create = |plan: &mut Plan| match want {
        Wanted::Patch(p) => plan.create_ports.push(patch_spec(p, owner)),
        Wanted::Tunnel(t) => plan.create_tunnels.push((*t).clone()),
    };
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
    if let Wanted::Tunnel(t) = want {
        if tunnel_in_sync(t, &obs, owner) {
            return;
        }
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
    plan.create_tunnels.sort_by(|a, b| a.name.cmp(&b.name));
    plan.update_ports.sort_by(|a, b| a.name.cmp(&b.name));
    plan.delete_ports.sort_by(|a, b| a.name.cmp(&b.name));
    plan.conflicts.sort_by(|a, b| a.object.cmp(&b.object));
}

/// Compares desired and observed state and lists the changes, all sorted by name.
///
/// Both sides are walked once in name order (the desired tunnels are sorted, and
/// [`Observed::ports`] is), so a pass costs a comparison per port and allocates only for the
/// ports it changes.
pub fn diff<O: Observed>(desired: &DesiredState, observed: &O, owner: &str) -> Plan {
    let mut plan = Plan::default();

    for b in [&desired.int_bridge, &desired.tun_bridge] {
        match observed.bridge(&b.name) {
            None => plan.create_bridges.push(BridgeCreation {
                name: b.name.clone(),
                datapath_type: b.datapath_type.clone(),
                external_ids: map([(ids::OWNER, owner.to_owned()), (ids::KIND, ids::KIND_BRIDGE.to_owned())]),
            }),
            Some(ob) if !same_datapath(ob.datapath_type, &b.datapath_type) => {
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

/// [`diff`] for `desired` against an OVSDB that has not changed since it was found in step
/// with `verified`: the desired state then, whose diff against the same OVSDB had nothing to
/// write and reported `conflicts`. Only the tunnels that differ between `verified` and
/// `desired` are looked up, so a peer joining or leaving costs a walk over the two desired
/// states rather than a comparison of every port. The result is the plan [`diff`] would give.
///
/// `None` when the bridges or patch ports differ, or a state's tunnels are not sorted by name
/// without repeats: then run [`diff`].
pub fn diff_since<O: Observed>(
    verified: &DesiredState,
    conflicts: &[Conflict],
    desired: &DesiredState,
    observed: &O,
    owner: &str,
) -> Option<Plan> {
    let sorted = |d: &DesiredState| d.tunnels.windows(2).all(|w| w[0].name < w[1].name);
    if verified.int_bridge != desired.int_bridge
        || verified.tun_bridge != desired.tun_bridge
        || verified.patch_ports != desired.patch_ports
        || !sorted(verified)
        || !sorted(desired)
    {
        return None;
    }
    if std::ptr::eq(verified, desired) {
        // The very state found in step: nothing to walk.
        let mut plan = Plan { conflicts: conflicts.to_vec(), ..Plan::default() };
        sort_plan(&mut plan);
        return Some(plan);
    }
    let tun_bridge = desired.tun_bridge.name.as_str();
    let mut plan = Plan::default();
    // Names whose verdict may have changed: the rest keep theirs (in step, or a conflict).
    let mut touched: BTreeSet<&str> = BTreeSet::new();
    let (mut before, mut after) = (verified.tunnels.iter().peekable(), desired.tunnels.iter().peekable());
    loop {
        let (gone, new) = match (before.peek(), after.peek()) {
            (None, None) => break,
            (Some(b), Some(a)) if b.name == a.name => {
                let (b, a) = (before.next()?, after.next()?);
                if a == b {
                    continue;
                }
                (None, Some(a))
            }
            (Some(b), Some(a)) if b.name < a.name => (before.next(), None),
            (Some(_), None) => (before.next(), None),
            _ => (None, after.next()),
        };
        if let Some(b) = gone {
            touched.insert(&b.name);
            if let Some(obs) = observed.port(&b.name).filter(|obs| is_managed(obs, owner)) {
                plan.delete_ports.push(deletion(&b.name, &obs));
            }
        }
        if let Some(a) = new {
            touched.insert(&a.name);
            plan_port(&mut plan, &a.name, &Wanted::Tunnel(a), observed.port(&a.name), tun_bridge, owner);
        }
    }
    plan.conflicts.extend(conflicts.iter().filter(|c| !touched.contains(c.object.as_str())).cloned());
    sort_plan(&mut plan);
    Some(plan)
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

/// What OVSDB would hold after applying `plan` (its tunnels as rows: [`Plan::into_rows`]) to
/// `observed`: a fake for tests of the diff and of code that drives it. New rows get UUIDs
/// like `uuid-port-<name>`.
pub fn simulate_apply(observed: &ObservedState, plan: &Plan) -> ObservedState {
    let mut s = observed.clone();
    for b in &plan.create_bridges {
        s.bridges.insert(
            b.name.clone(),
            ObservedBridge {
                uuid: format!("uuid-bridge-{}", b.name),
                datapath_type: b.datapath_type.clone(),
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

    /// [`super::diff`] with its tunnels as rows, the form these tests and the reference check.
    fn diff<O: Observed>(desired: &DesiredState, observed: &O, owner: &str) -> Plan {
        super::diff(desired, observed, owner).into_rows(&desired.tun_bridge.name, owner)
    }

    /// [`super::diff_since`] with its tunnels as rows.
    fn diff_since<O: Observed>(
        verified: &DesiredState,
        conflicts: &[Conflict],
        desired: &DesiredState,
        observed: &O,
        owner: &str,
    ) -> Option<Plan> {
        let plan = super::diff_since(verified, conflicts, desired, observed, owner)?;
        Some(plan.into_rows(&desired.tun_bridge.name, owner))
    }

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
    fn empty_cluster_on_empty_ovsdb_creates_bridges_and_patches() {
        let v = view(OWNER, &[host(OWNER, "10.0.0.1")], &[], &[]);
        let plan = diff(&desired(&v, &ObservedState::default()), &ObservedState::default(), OWNER);
        assert_eq!(plan.create_bridges.len(), 2);
        assert!(plan.create_bridges.iter().all(|b| b.datapath_type == "netdev"
            && b.external_ids[ids::OWNER] == OWNER
            && b.external_ids[ids::KIND] == ids::KIND_BRIDGE));
        let names: Vec<&str> = plan.create_ports.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec![PATCH_TUN_TO_INT, PATCH_INT_TO_TUN]);
        let on_int = plan.create_ports.iter().find(|p| p.name == PATCH_INT_TO_TUN).unwrap();
        assert_eq!(on_int.bridge, "br-int");
        assert_eq!(on_int.interface_type, "patch");
        assert_eq!(on_int.options["peer"], PATCH_TUN_TO_INT);
        assert_eq!((on_int.tag, on_int.protected), (None, false));
        assert!(plan.update_ports.is_empty() && plan.delete_ports.is_empty() && plan.conflicts.is_empty());
    }

    #[test]
    fn tunnels_to_create_are_listed_as_desired_not_as_rows() {
        let v = three_hosts(OWNER);
        let d = desired(&v, &ObservedState::default());
        let plan = super::diff(&d, &ObservedState::default(), OWNER);
        assert_eq!(plan.create_tunnels, d.tunnels);
        assert!(plan.create_ports.iter().all(|p| p.interface_type == "patch"));
    }

    #[test]
    fn tunnel_port_rows_carry_everything() {
        let v = three_hosts(OWNER);
        let plan = diff(&desired(&v, &ObservedState::default()), &ObservedState::default(), OWNER);
        let tunnels: Vec<&PortSpec> =
            plan.create_ports.iter().filter(|p| p.bridge == "br-tun" && p.interface_type != "patch").collect();
        assert_eq!(tunnels.len(), 3);
        let red = tunnels.iter().find(|p| p.interface_type == "gre").unwrap();
        assert_eq!(
            red.options,
            map([("key", "200".into()), ("local_ip", "10.0.0.1".into()), ("remote_ip", "10.0.0.3".into()),])
        );
        assert_eq!((red.tag, red.protected), (Some(2), true));
        assert_eq!(
            red.external_ids,
            map([
                (ids::OWNER, "a".into()),
                (ids::KIND, "tunnel".into()),
                (ids::TENANT, "red".into()),
                (ids::VNI, "200".into()),
                (ids::PEER, "c".into()),
                (ids::LOCAL_VLAN, "2".into()),
            ])
        );
        assert_eq!(tunnels.iter().filter(|p| p.interface_type == "vxlan").count(), 2);
    }

    #[test]
    fn applying_a_plan_converges_in_one_round() {
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        let mut observed = ObservedState::default();
        for round in 0..300 {
            // The local host is always h0, so one OVSDB can be evolved across rounds.
            let v = random_view(&mut rng);
            let (plan, after) = reconcile(&v, &observed);
            assert!(plan.conflicts.is_empty(), "round {round}: {:?}", plan.conflicts);
            let (again, same) = reconcile(&v, &after);
            assert!(again.is_empty(), "round {round}: second plan not empty: {again:?}");
            assert_eq!(same, after);
            // The bridges hold exactly the desired ports.
            let d = desired(&v, &after);
            let mut want: BTreeSet<String> = d.tunnels.iter().map(|t| t.name.clone()).collect();
            want.insert(PATCH_TUN_TO_INT.into());
            assert_eq!(after.bridges["br-tun"].ports, want);
            // Every port listed on a bridge exists and says so.
            for (b, br) in &after.bridges {
                assert!(br.ports.iter().all(|p| after.ports[p].bridge == *b));
            }
            // Half the time start the next round from scratch, else evolve the same OVSDB.
            observed = if rng.below(2) == 0 { ObservedState::default() } else { after };
        }
    }

    /// Random damage to an OVSDB: the kinds of drift, foreign rows and half-done changes the
    /// diff must see through.
    fn damage(observed: &mut ObservedState, owner: &str, rng: &mut Rng) {
        let names: Vec<String> = observed.ports.keys().cloned().collect();
        for _ in 0..rng.below(6) {
            let Some(name) = names.get(rng.below(names.len().max(1) as u64) as usize) else { break };
            let Some(p) = observed.ports.get_mut(name) else { continue };
            match rng.below(14) {
                0 => p.tag = [None, Some(1), Some(7), Some(4094)][rng.below(4) as usize],
                1 => p.protected = !p.protected,
                2 => {
                    // Keys sorting before and after the ones the agent writes.
                    let key = ["csum", "ttl"][rng.below(2) as usize];
                    p.interface.options.insert(key.into(), "true".into());
                }
                3 => {
                    p.interface.options.remove("remote_ip");
                }
                4 => {
                    p.interface.options.insert("key".into(), "999".into());
                }
                5 => {
                    p.external_ids.insert("other-tool".into(), "x".into());
                }
                6 => {
                    let key = ["overlay-stale", "overlay-zone"][rng.below(2) as usize];
                    p.external_ids.insert(key.into(), "y".into());
                }
                7 => {
                    p.external_ids.insert(ids::TENANT.into(), "t9".into());
                }
                8 => {
                    let kind = ["container", "patch", "tunnel", "gateway"][rng.below(4) as usize];
                    p.external_ids.insert(ids::KIND.into(), kind.into());
                }
                9 => {
                    p.owned_by =
                        [None, Some("someone-else".to_owned()), Some(owner.to_owned())][rng.below(3) as usize].clone()
                }
                10 => p.interface.kind = ["vxlan", "gre", "", "patch"][rng.below(4) as usize].into(),
                11 => p.bridge = if p.bridge == "br-int" { "br-tun".into() } else { "br-int".into() },
                12 => {
                    observed.ports.remove(name);
                }
                _ => {
                    p.external_ids.remove(ids::LOCAL_VLAN);
                }
            }
        }
        if rng.below(3) == 0 {
            let name = if rng.below(2) == 0 { names.first().cloned().unwrap_or_default() } else { "eth9".into() };
            observed.ports.insert(name, foreign_port("br-tun", "vxlan"));
        }
        if let Some(b) = observed.bridges.get_mut(["br-int", "br-tun"][rng.below(2) as usize]) {
            match rng.below(8) {
                0 => b.datapath_type = String::new(),
                1 => b.datapath_type = "system".into(),
                2 => b.owned = !b.owned,
                _ => {}
            }
        }
    }

    #[test]
    fn same_plan_as_the_reference_implementation() {
        let mut rng = Rng(0x0dd5_eed5_00f0_d1ff);
        let mut observed = ObservedState::default();
        for round in 0..600 {
            let v = random_view(&mut rng);
            let owner = v.local.hostname.clone();
            // What the previous round left (another view's ports), then the same in step with
            // this view and damaged.
            let d = desired(&v, &observed);
            assert_eq!(diff(&d, &observed, &owner), crate::reference::diff(&d, &observed, &owner), "round {round}");
            let (_, mut damaged) = reconcile(&v, &observed);
            damage(&mut damaged, &owner, &mut rng);
            let d = desired(&v, &damaged);
            let plan = diff(&d, &damaged, &owner);
            assert_eq!(plan, crate::reference::diff(&d, &damaged, &owner), "round {round}");
            observed = if rng.below(4) == 0 { ObservedState::default() } else { simulate_apply(&damaged, &plan) };
        }
    }

    /// `v` changed as events change it: peers join and leave, leases come and go, an address
    /// moves, a tenant changes tunnel type or goes away.
    fn evolve(v: &ClusterView, rng: &mut Rng) -> ClusterView {
        let mut v = v.clone();
        let local = v.local.hostname.clone();
        let peers = |v: &ClusterView| -> Vec<String> { v.hosts.keys().filter(|h| **h != local).cloned().collect() };
        let pick = |rng: &mut Rng, from: Vec<String>| from.get(rng.below(from.len().max(1) as u64) as usize).cloned();
        for _ in 0..1 + rng.below(3) {
            match rng.below(7) {
                0 => {
                    let name = format!("n{}", rng.below(100));
                    v.hosts
                        .insert(name.clone(), host(&name, &format!("10.1.{}.{}", rng.below(200), 1 + rng.below(200))));
                    for t in v.tenants.keys().cloned().collect::<Vec<_>>() {
                        if rng.below(3) != 0 {
                            v.leases.push(lease(&t, "10.128.99.0/24", &name));
                        }
                    }
                }
                1 => {
                    if let Some(h) = pick(rng, peers(&v)) {
                        v.hosts.remove(&h);
                        v.leases.retain(|l| l.host != h);
                    }
                }
                2 if !v.leases.is_empty() => {
                    v.leases.remove(rng.below(v.leases.len() as u64) as usize);
                }
                3 => {
                    if let Some(h) = pick(rng, peers(&v)) {
                        v.hosts.get_mut(&h).unwrap().underlay_ip =
                            format!("10.2.0.{}", 1 + rng.below(250)).parse().unwrap();
                    }
                }
                4 => {
                    if let Some(name) = pick(rng, v.tenants.keys().cloned().collect()) {
                        let t = &v.tenants[&name];
                        let other = if t.tunnel() == TunnelType::Vxlan { TunnelType::Gre } else { TunnelType::Vxlan };
                        let flipped = tenant(&name, t.vni().get(), &t.cidr().to_string(), other);
                        v.tenants.insert(name, flipped);
                    }
                }
                5 => {
                    if let Some(name) = pick(rng, v.tenants.keys().cloned().collect()) {
                        v.tenants.remove(&name);
                    }
                }
                _ => {}
            }
        }
        v
    }

    #[test]
    fn diff_since_gives_the_full_plan() {
        let mut rng = Rng(0x1dc0_ffee_0000_5eed);
        let (mut compared, mut writes, mut conflicts) = (0, 0, 0);
        for round in 0..800 {
            let v0 = random_view(&mut rng);
            let owner = v0.local.hostname.clone();
            // An OVSDB brought in step with v0 from a damaged start; conflicts may remain.
            let mut start = if rng.below(2) == 0 {
                reconcile(&random_view(&mut rng), &ObservedState::default()).1
            } else {
                ObservedState::default()
            };
            damage(&mut start, &owner, &mut rng);
            let observed = reconcile(&v0, &start).1;
            let verified_state = desired(&v0, &observed);
            let verified = diff(&verified_state, &observed, &owner);
            if !verified.is_empty() {
                continue;
            }
            let v1 = evolve(&v0, &mut rng);
            let d1 = desired(&v1, &observed);
            let full = diff(&d1, &observed, &owner);
            let since = diff_since(&verified_state, &verified.conflicts, &d1, &observed, &owner);
            assert_eq!(since.as_ref(), Some(&full), "round {round}");
            compared += 1;
            writes += usize::from(!full.is_empty());
            conflicts += usize::from(!full.conflicts.is_empty());
        }
        assert!(
            compared > 600 && writes > 200 && conflicts > 20,
            "{compared} compared, {writes} with writes, {conflicts} with conflicts"
        );
    }

    #[test]
    fn diff_since_declines_other_bridges() {
        let v = three_hosts(OWNER);
        let (_, observed) = reconcile(&v, &ObservedState::default());
        let d = desired(&v, &observed);
        let mut other = v.clone();
        other.tun_bridge = "br-tun2".into();
        assert_eq!(diff_since(&d, &[], &desired(&other, &observed), &observed, OWNER), None);
        assert_eq!(diff_since(&d, &[], &d, &observed, OWNER), Some(Plan::default()));
        let conflict = Conflict { object: "x".into(), reason: "y".into() };
        let same = diff_since(&d, std::slice::from_ref(&conflict), &d, &observed, OWNER);
        assert_eq!(same, Some(Plan { conflicts: vec![conflict], ..Plan::default() }));
    }

    #[test]
    fn ports_in_step_take_the_fast_path() {
        let mut rng = Rng(0x7a57_0fa5_7a70_0001);
        for _ in 0..100 {
            let v = random_view(&mut rng);
            let (_, after) = reconcile(&v, &ObservedState::default());
            let d = desired(&v, &after);
            for t in &d.tunnels {
                assert!(tunnel_in_sync(t, &after.ports[&t.name], &v.local.hostname), "{t:?}");
            }
        }
    }

    #[test]
    fn peer_leaving_deletes_only_its_tunnels() {
        let v = three_hosts(OWNER);
        let (_, observed) = reconcile(&v, &ObservedState::default());
        let mut v2 = v.clone();
        v2.hosts.remove("c");
        v2.leases.retain(|l| l.host != "c");
        let (plan, after) = reconcile(&v2, &observed);
        let deleted: Vec<&str> = plan.delete_ports.iter().map(|d| d.name.as_str()).collect();
        let to_c: BTreeSet<&str> = observed
            .ports
            .iter()
            .filter(|(_, p)| p.external_ids.get(ids::PEER).map(String::as_str) == Some("c"))
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(to_c.len(), 2);
        assert_eq!(deleted.iter().copied().collect::<BTreeSet<_>>(), to_c);
        assert!(plan.create_ports.is_empty() && plan.update_ports.is_empty());
        // red is still a local tenant (a's own lease) but has no peers left.
        assert_eq!(after.bridges["br-tun"].ports.len(), 2);
        assert!(plan.delete_ports.iter().all(|d| d.bridge == "br-tun" && d.port_uuid == observed.ports[&d.name].uuid));
    }

    #[test]
    fn peer_changing_ip_updates_in_place() {
        let v = three_hosts(OWNER);
        let (_, observed) = reconcile(&v, &ObservedState::default());
        let mut v2 = v.clone();
        v2.hosts.get_mut("b").unwrap().underlay_ip = "10.0.0.22".parse().unwrap();
        let (plan, after) = reconcile(&v2, &observed);
        assert!(plan.delete_ports.is_empty() && plan.create_ports.is_empty());
        assert_eq!(plan.update_ports.len(), 1);
        let u = &plan.update_ports[0];
        assert_eq!(u.changes, vec!["options:remote_ip 10.0.0.2 -> 10.0.0.22".to_owned()]);
        assert_eq!(u.port_uuid, observed.ports[&u.name].uuid);
        assert_eq!(u.iface_uuid, observed.ports[&u.name].interface.uuid);
        assert_eq!(after.ports[&u.name].interface.options["remote_ip"], "10.0.0.22");
    }

    #[test]
    fn local_ip_change_updates_every_tunnel() {
        let v = three_hosts(OWNER);
        let (_, observed) = reconcile(&v, &ObservedState::default());
        let mut v2 = v.clone();
        v2.local.underlay_ip = "10.0.0.11".parse().unwrap();
        let plan = reconcile(&v2, &observed).0;
        assert_eq!(plan.update_ports.len(), 3);
        assert!(plan.update_ports.iter().all(|u| u.changes == ["options:local_ip 10.0.0.1 -> 10.0.0.11"]));
    }

    #[test]
    fn tunnel_type_change_replaces_ports() {
        let v = three_hosts(OWNER);
        let (_, observed) = reconcile(&v, &ObservedState::default());
        let mut v2 = v.clone();
        let red = tenant("red", 200, "172.16.0.0/16", TunnelType::Vxlan);
        v2.tenants.insert("red".into(), red);
        let (plan, after) = reconcile(&v2, &observed);
        assert_eq!(plan.delete_ports.len(), 1);
        assert!(plan.delete_ports[0].name.starts_with("gr-"));
        assert_eq!(plan.create_ports.len(), 1);
        assert!(plan.create_ports[0].name.starts_with("vx-"));
        assert!(after.ports.values().all(|p| p.interface.kind != "gre"));
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
        let mut unknown_kind = foreign_port("br-int", "internal");
        unknown_kind.owned_by = Some(OWNER.into());
        unknown_kind.external_ids = map([(ids::OWNER, OWNER.into()), (ids::KIND, "gateway".into())]);
        observed.ports.insert("gw-blue".into(), unknown_kind);

        // Even with no tenants left at all, only our tunnels go.
        let mut empty = v.clone();
        empty.leases.clear();
        let (plan, after) = reconcile(&empty, &observed);
        assert_eq!(plan.delete_ports.len(), 3);
        assert!(plan.delete_ports.iter().all(|d| d.bridge == "br-tun" && d.name != "vx-000000000000"));
        for kept in ["eth1", "vx-000000000000", "tap0123456789ab", "gw-blue", PATCH_INT_TO_TUN, PATCH_TUN_TO_INT] {
            assert!(after.ports.contains_key(kept), "{kept} was removed");
        }
        assert!(plan.update_ports.is_empty() && plan.conflicts.is_empty());
    }

    #[test]
    fn name_taken_by_a_foreign_port_is_a_conflict() {
        let v = three_hosts(OWNER);
        let d = desired(&v, &ObservedState::default());
        let name = d.tunnels[0].name.clone();
        let mut observed = ObservedState::default();
        observed.ports.insert(name.clone(), foreign_port("br-tun", "vxlan"));
        observed.ports.insert(PATCH_INT_TO_TUN.into(), {
            let mut p = foreign_port("br-int", "patch");
            p.owned_by = Some("someone-else".into());
            p
        });
        let plan = diff(&d, &observed, OWNER);
        let objs: Vec<&str> = plan.conflicts.iter().map(|c| c.object.as_str()).collect();
        assert_eq!(objs, {
            let mut v = vec![name.as_str(), PATCH_INT_TO_TUN];
            v.sort();
            v
        });
        assert!(plan.conflicts.iter().any(|c| c.reason.contains("not owned by the overlay agent")));
        assert!(plan.conflicts.iter().any(|c| c.reason.contains("\"someone-else\"")));
        let touched = plan
            .create_ports
            .iter()
            .map(|p| &p.name)
            .chain(plan.update_ports.iter().map(|u| &u.name))
            .chain(plan.delete_ports.iter().map(|d| &d.name));
        for n in touched {
            assert!(*n != name && n != PATCH_INT_TO_TUN, "{n} touched");
        }
        assert!(!plan.is_empty());
        assert!(plan.conflicts[0].to_string().starts_with(&format!("{}: ", plan.conflicts[0].object)));
    }

    #[test]
    fn conflicts_alone_leave_the_plan_empty() {
        let v = view(OWNER, &[host(OWNER, "10.0.0.1")], &[], &[]);
        let (_, mut observed) = reconcile(&v, &ObservedState::default());
        observed.ports.get_mut(PATCH_INT_TO_TUN).unwrap().owned_by = None;
        let plan = diff(&desired(&v, &observed), &observed, OWNER);
        assert_eq!(plan.conflicts.len(), 1);
        assert!(plan.is_empty());
    }

    #[test]
    fn drifted_columns_are_repaired_and_foreign_keys_kept() {
        let v = three_hosts(OWNER);
        let (_, mut observed) = reconcile(&v, &ObservedState::default());
        let name = desired(&v, &observed).tunnels[0].name.clone();
        let p = observed.ports.get_mut(&name).unwrap();
        p.protected = false;
        p.tag = None;
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
        let fixed = &after.ports[&name];
        assert!(fixed.protected && fixed.tag.is_some() && !fixed.interface.options.contains_key("csum"));
    }

    #[test]
    fn port_on_the_wrong_bridge_is_moved() {
        let v = view(OWNER, &[host(OWNER, "10.0.0.1")], &[], &[]);
        let (_, mut observed) = reconcile(&v, &ObservedState::default());
        let p = observed.ports.get_mut(PATCH_TUN_TO_INT).unwrap();
        p.bridge = "br-int".into();
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
        assert!(!after.bridges["br-int"].ports.contains(PATCH_TUN_TO_INT));
    }

    #[test]
    fn bridge_datapath_rules() {
        let v = view(OWNER, &[host(OWNER, "10.0.0.1")], &[], &[]);
        let (_, mut observed) = reconcile(&v, &ObservedState::default());
        // Ours and wrong: fix it.
        observed.bridges.get_mut("br-int").unwrap().datapath_type = "system".into();
        // Not ours and wrong: report it.
        let tun = observed.bridges.get_mut("br-tun").unwrap();
        tun.owned = false;
        tun.datapath_type = String::new();
        let plan = diff(&desired(&v, &observed), &observed, OWNER);
        assert_eq!(plan.set_bridge_datapath, vec![("br-int".to_owned(), "netdev".to_owned())]);
        assert_eq!(plan.conflicts.len(), 1);
        assert_eq!(plan.conflicts[0].object, "br-tun");
        assert!(plan.create_bridges.is_empty());

        // "" and "system" are the same datapath.
        let mut v2 = v.clone();
        v2.datapath_type = "system".into();
        let plan = diff(&desired(&v2, &observed), &observed, OWNER);
        assert_eq!(plan.set_bridge_datapath.len(), 0);
        assert!(plan.conflicts.is_empty());
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
        // After a restart a tenant named to sort first appears: a fresh allocation would
        // shift blue and red; the recovered one must not.
        let mut v2 = v.clone();
        v2.tenants.insert("aaa".into(), tenant("aaa", 300, "10.9.0.0/16", TunnelType::Vxlan));
        v2.leases.push(lease("aaa", "10.9.1.0/24", "a"));
        v2.leases.push(lease("aaa", "10.9.2.0/24", "b"));
        let fresh = desired_state(&v2, &BTreeMap::new()).unwrap();
        assert_ne!(fresh.tenant_vlans["blue"], before["blue"], "test would not catch a reshuffle");
        let (plan, after) = reconcile(&v2, &observed);
        assert!(plan.update_ports.is_empty(), "{:?}", plan.update_ports);
        assert!(plan.delete_ports.is_empty());
        assert_eq!(plan.create_ports.len(), 1);
        let vlans = existing_vlans_from(&after);
        assert_eq!(vlans["blue"], before["blue"]);
        assert_eq!(vlans["red"], before["red"]);
        assert_eq!(vlans["aaa"], 3);
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
        let got = existing_vlans_from(&observed);
        let want: BTreeMap<String, u16> =
            [("blue".into(), 5), ("red".into(), 7), ("green".into(), 12)].into_iter().collect();
        assert_eq!(got, want);
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
