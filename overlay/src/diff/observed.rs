//! The observed side of the diff: OVSDB's rows as plain values ([`ObservedState`]), the read
//! access the diff needs ([`Observed`], [`PortView`]) so a caller can diff its own rows in
//! place, and [`simulate_apply`], what a plan would leave.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use super::Plan;
use crate::external_ids as ids;

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
