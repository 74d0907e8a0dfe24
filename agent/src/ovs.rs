//! The agent's view of Open vSwitch: what it monitors, how replica rows become the domain's
//! [`overlay::diff::Observed`], and how a [`Plan`] becomes ONE OVSDB transaction.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::BTreeMap;

use overlay::diff::{BridgeView, Observed, Plan, PortSpec, PortView};
use ovsdb_client::{
    Atom, ClientOptions, Condition, MonitorRequests, Mutation, NamedUuid, Remote, Replica, Row, TransactOutcome,
    Transaction, Uuid, Value,
};

/// The database the agent works on.
pub const DATABASE: &str = "Open_vSwitch";

/// Client options: the tables and columns the agent reads, indexed by name.
pub fn client_options(remote: Remote) -> ClientOptions {
    ClientOptions::new(remote, DATABASE)
        .monitor(
            MonitorRequests::new()
                .table("Open_vSwitch", ["bridges", "external_ids"])
                .table("Bridge", ["name", "ports", "datapath_type", "external_ids"])
                .table("Port", ["name", "interfaces", "tag", "protected", "external_ids"])
                .table("Interface", ["name", "type", "options", "external_ids", "ofport", "error"]),
        )
        .index("Bridge", "name")
        .index("Port", "name")
        .index("Interface", "name")
}

/// The root row's UUID and row.
pub fn root(replica: &Replica) -> Option<(Uuid, Row)> {
    replica.table("Open_vSwitch").rows().next().map(|(u, r)| (u.clone(), r.clone()))
}

/// The machine's stable id: OVS's `system-id` if the packaging set one, else the id the agent
/// keeps in `external_ids:overlay-system-id`.
pub fn system_id(replica: &Replica) -> Option<String> {
    let (_, row) = root(replica)?;
    row.map_str("external_ids", "system-id")
        .or_else(|| row.map_str("external_ids", "overlay-system-id"))
        .filter(|s| !s.trim().is_empty())
        .map(str::to_owned)
}

/// One port of the replica as the diff reads it: references into the Port and Interface rows,
/// nothing copied.
#[derive(Clone, Copy)]
pub struct PortRow<'r> {
    uuid: &'r Uuid,
    bridge: &'r str,
    tag: Option<u16>,
    protected: bool,
    external_ids: &'r Value,
    interface: Option<(&'r Uuid, &'r Row)>,
}

/// Maps that are not there, or not maps, read as empty.
static EMPTY_MAP: Value = Value::Map(Vec::new());

fn string_pairs(v: &Value) -> impl Iterator<Item = (&str, &str)> {
    v.as_map().iter().filter_map(|(k, v)| Some((k.as_str()?, v.as_str()?)))
}

impl<'r> PortRow<'r> {
    fn new(replica: &'r Replica, bridge: &'r str, uuid: &'r Uuid, row: &'r Row) -> Self {
        let interface = row
            .get("interfaces")
            .and_then(|v| v.as_set().first())
            .and_then(Atom::as_uuid)
            .and_then(|iu| replica.get("Interface", iu).map(|r| (iu, r)));
        PortRow {
            uuid,
            bridge,
            tag: row.get("tag").and_then(Value::as_integer).and_then(|t| u16::try_from(t).ok()),
            protected: row.get("protected").and_then(Value::as_bool).unwrap_or(false),
            external_ids: row.get("external_ids").unwrap_or(&EMPTY_MAP),
            interface,
        }
    }
}

impl PortView for PortRow<'_> {
    fn uuid(&self) -> Cow<'_, str> {
        Cow::Owned(self.uuid.to_string())
    }
    fn bridge(&self) -> &str {
        self.bridge
    }
    fn owned_by(&self) -> Option<&str> {
        self.external_id(overlay::external_ids::OWNER)
    }
    fn tag(&self) -> Option<u16> {
        self.tag
    }
    fn protected(&self) -> bool {
        self.protected
    }
    fn interface_uuid(&self) -> Cow<'_, str> {
        self.interface.map_or(Cow::Borrowed(""), |(u, _)| Cow::Owned(u.to_string()))
    }
    fn interface_type(&self) -> &str {
        self.interface.and_then(|(_, r)| r.get("type")).and_then(Value::as_str).unwrap_or("")
    }
    fn options(&self) -> impl Iterator<Item = (&str, &str)> {
        string_pairs(self.interface.and_then(|(_, r)| r.get("options")).unwrap_or(&EMPTY_MAP))
    }
    fn external_ids(&self) -> impl Iterator<Item = (&str, &str)> {
        string_pairs(self.external_ids)
    }
    fn external_id(&self, key: &str) -> Option<&str> {
        self.external_ids.map_get(key).and_then(Atom::as_str)
    }
}

struct ObservedBridge<'r> {
    name: &'r str,
    view: BridgeView<'r>,
    /// `Bridge.ports`: a set, so sorted.
    ports: &'r [Atom],
}

/// The two bridges the agent manages and every port on them (owned or not, so the diff can
/// see name conflicts), read in place from the replica.
pub struct ObservedRows<'r> {
    replica: &'r Replica,
    bridges: Vec<ObservedBridge<'r>>,
    /// Every port by name, each name once; listed on first use (a pass that looks ports up by
    /// name never needs it).
    sorted: OnceCell<Vec<(&'r str, PortRow<'r>)>>,
}

impl<'r> ObservedRows<'r> {
    fn list(&self) -> Vec<(&'r str, PortRow<'r>)> {
        let mut ports = Vec::with_capacity(self.bridges.iter().map(|b| b.ports.len()).sum());
        for b in &self.bridges {
            for pu in b.ports.iter().filter_map(Atom::as_uuid) {
                let Some(prow) = self.replica.get("Port", pu) else { continue };
                let name = prow.get("name").and_then(Value::as_str).unwrap_or("");
                ports.push((name, PortRow::new(self.replica, b.name, pu, prow)));
            }
        }
        // Stable, then the last of equal names kept: a name on both bridges reads as the one on
        // the later bridge, as when these rows were copied into a map by name.
        ports.sort_by(|a, b| a.0.cmp(b.0));
        ports.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                std::mem::swap(later, earlier);
            }
            same
        });
        ports
    }
}

impl<'r> Observed for ObservedRows<'r> {
    type Port<'a>
        = PortRow<'r>
    where
        Self: 'a;
    fn bridge(&self, name: &str) -> Option<BridgeView<'_>> {
        self.bridges.iter().find(|b| b.name == name).map(|b| b.view)
    }
    fn ports(&self) -> impl Iterator<Item = (&str, PortRow<'r>)> {
        self.sorted.get_or_init(|| self.list()).iter().map(|(n, p)| (*n, *p))
    }
    fn port(&self, name: &str) -> Option<PortRow<'r>> {
        // The one `ports` would list: on one of the bridges, the later bridge's, the last in
        // its set, when several Port rows have the name.
        let rows = self.replica.table("Port").find("name", &Atom::from(name));
        let mut found = None;
        for (i, b) in self.bridges.iter().enumerate() {
            for &(pu, prow) in &rows {
                if b.ports.binary_search(&Atom::Uuid(pu.clone())).is_ok() {
                    let better = found.as_ref().is_none_or(|(j, u, _): &(usize, &Uuid, _)| (i, pu) > (*j, *u));
                    if better {
                        found = Some((i, pu, PortRow::new(self.replica, b.name, pu, prow)));
                    }
                }
            }
        }
        found.map(|(_, _, p)| p)
    }
}

/// Reads the two bridges the agent manages from the replica. Nothing is copied: this used to
/// build an `ObservedState` of every port (some 25 strings each) on every pass, which at
/// 20,000 tunnel ports cost more than the diff itself.
pub fn observe<'r>(replica: &'r Replica, bridges: &[&'r str], owner: &str) -> ObservedRows<'r> {
    let bridges = bridges
        .iter()
        .filter_map(|&name| {
            let (_, brow) = replica.table("Bridge").find_one("name", &Atom::from(name))?;
            Some(ObservedBridge {
                name,
                view: BridgeView {
                    datapath_type: brow.get("datapath_type").and_then(Value::as_str).unwrap_or(""),
                    owned: brow.map_str("external_ids", overlay::external_ids::OWNER) == Some(owner),
                },
                ports: brow.get("ports").map_or(&[][..], Value::as_set),
            })
        })
        .collect();
    ObservedRows { replica, bridges, sorted: OnceCell::new() }
}

/// A UUID the diff carried as text; the replica produced it, so it parses.
fn uuid(s: &str) -> Option<Uuid> {
    Uuid::parse(s).ok()
}

fn port_rows(tx: &mut Transaction, spec: &PortSpec) -> NamedUuid {
    let iface = tx.insert(
        "Interface",
        Row::new()
            .with("name", spec.name.as_str())
            .with("type", spec.interface_type.as_str())
            .with("options", Value::map(spec.options.clone()))
            .with("external_ids", Value::map(spec.external_ids.clone())),
    );
    tx.insert(
        "Port",
        Row::new()
            .with("name", spec.name.as_str())
            .with("interfaces", Value::set([iface]))
            .with("tag", Value::from(spec.tag.map(i64::from)))
            .with("protected", spec.protected)
            .with("external_ids", Value::map(spec.external_ids.clone())),
    )
}

/// A plan as one transaction, with the rows it inserts (to find them after the commit).
pub struct PlannedTransaction {
    /// The transaction to send.
    pub tx: Transaction,
    /// The Port and Bridge rows it inserts: table and name in the transaction.
    inserted: Vec<(&'static str, NamedUuid)>,
}

/// Turns a plan into one transaction. Deletions go first so a port that moves bridge (same
/// name) is removed before it is created again.
pub fn plan_to_transaction(mut tx: Transaction, plan: &Plan, root_uuid: &Uuid) -> PlannedTransaction {
    let mut inserted = Vec::new();
    for d in &plan.delete_ports {
        tx.mutate(
            "Bridge",
            vec![Condition::eq("name", d.bridge.as_str())],
            vec![Mutation::delete("ports", Value::set(uuid(&d.port_uuid)))],
        );
    }
    for u in &plan.update_ports {
        tx.update(
            "Port",
            vec![Condition::eq("_uuid", Value::set(uuid(&u.port_uuid)))],
            Row::new()
                .with("tag", Value::from(u.tag.map(i64::from)))
                .with("protected", u.protected)
                .with("external_ids", Value::map(u.external_ids.clone())),
        );
        tx.update(
            "Interface",
            vec![Condition::eq("_uuid", Value::set(uuid(&u.iface_uuid)))],
            Row::new()
                .with("type", u.interface_type.as_str())
                .with("options", Value::map(u.options.clone()))
                .with("external_ids", Value::map(u.external_ids.clone())),
        );
    }
    for (bridge, dp) in &plan.set_bridge_datapath {
        tx.update(
            "Bridge",
            vec![Condition::eq("name", bridge.as_str())],
            Row::new().with("datapath_type", dp.as_str()),
        );
    }
    // Ports of bridges created in this transaction go straight into the new Bridge row.
    let mut new_ports: BTreeMap<&str, Vec<Atom>> = BTreeMap::new();
    for p in &plan.create_ports {
        let named = port_rows(&mut tx, p);
        inserted.push(("Port", named.clone()));
        new_ports.entry(p.bridge.as_str()).or_default().push(Atom::from(named));
    }
    let mut new_bridges = Vec::new();
    for b in &plan.create_bridges {
        // The bridge's own internal port, as ovs-vsctl add-br makes it, so the bridge looks
        // and behaves like any other to operators' tools.
        let local = PortSpec {
            bridge: b.name.clone(),
            name: b.name.clone(),
            interface_type: "internal".into(),
            options: BTreeMap::new(),
            tag: None,
            protected: false,
            external_ids: b.external_ids.clone(),
        };
        let mut ports = new_ports.remove(b.name.as_str()).unwrap_or_default();
        ports.push(Atom::from(port_rows(&mut tx, &local)));
        let bridge = tx.insert(
            "Bridge",
            Row::new()
                .with("name", b.name.as_str())
                .with("datapath_type", b.datapath_type.as_str())
                .with("ports", Value::set(ports))
                .with("external_ids", Value::map(b.external_ids.clone())),
        );
        inserted.push(("Bridge", bridge.clone()));
        new_bridges.push(Atom::from(bridge));
    }
    if !new_bridges.is_empty() {
        tx.mutate(
            "Open_vSwitch",
            vec![Condition::eq("_uuid", root_uuid.clone())],
            vec![Mutation::insert("bridges", Value::set(new_bridges))],
        );
    }
    for (bridge, ports) in new_ports {
        tx.mutate("Bridge", vec![Condition::eq("name", bridge)], vec![Mutation::insert("ports", Value::set(ports))]);
    }
    PlannedTransaction { tx, inserted }
}

/// What the replica shows once a plan's transaction is committed, to wait for it without
/// diffing every port again on every replica change (at 20,000 ports that wait used to cost
/// several full diffs per event).
pub struct Commit<'p> {
    plan: &'p Plan,
    /// Table and real UUID of every row inserted.
    inserted: Vec<(&'static str, Uuid)>,
}

impl<'p> Commit<'p> {
    /// The commit of `planned` (the transaction made from `plan`), as `outcome` reports it.
    pub fn new(plan: &'p Plan, planned: &PlannedTransaction, outcome: &TransactOutcome) -> Self {
        let inserted = planned.inserted.iter().filter_map(|(t, n)| Some((*t, outcome.uuid(n)?.clone()))).collect();
        Commit { plan, inserted }
    }

    /// Whether the replica shows every effect of the commit: rows inserted are there, ports
    /// deleted are gone, and updated rows and bridges carry what was written. A row that
    /// someone else removed since counts as shown: there is nothing left to wait for, and the
    /// next pass sees it.
    pub fn visible_in(&self, replica: &Replica) -> bool {
        let inserted = self.inserted.iter().all(|(table, u)| replica.get(table, u).is_some());
        let deleted =
            self.plan.delete_ports.iter().filter_map(|d| uuid(&d.port_uuid)).all(|u| replica.get("Port", &u).is_none());
        let updated = self.plan.update_ports.iter().all(|u| {
            let port = uuid(&u.port_uuid).and_then(|p| replica.get("Port", &p));
            let iface = uuid(&u.iface_uuid).and_then(|i| replica.get("Interface", &i));
            let same = |row: &Row, column: &str, want: &BTreeMap<String, String>| {
                row.get(column).map_or(&[][..], Value::as_map).len() == want.len()
                    && want.iter().all(|(k, v)| row.map_str(column, k) == Some(v.as_str()))
            };
            port.is_none_or(|r| same(r, "external_ids", &u.external_ids))
                && iface.is_none_or(|r| same(r, "options", &u.options))
        });
        let datapaths = self.plan.set_bridge_datapath.iter().all(|(bridge, dp)| {
            replica
                .table("Bridge")
                .find_one("name", &Atom::from(bridge.as_str()))
                .is_none_or(|(_, r)| r.get("datapath_type").and_then(Value::as_str) == Some(dp.as_str()))
        });
        inserted && deleted && updated && datapaths
    }
}
