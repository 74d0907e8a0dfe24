//! The bridges and tunnel ports of the data plane in OVSDB: how replica rows become the domain's
//! [`overlay::diff::Observed`], and how a [`Plan`] becomes OVSDB transactions (one, unless it
//! creates more than [`CREATES_PER_TRANSACTION`] ports) that [`apply`] sends.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use overlay::diff::{BridgeView, Observed, Plan, PortSpec, PortView};
use ovsdb_client::{
    Atom, Condition, Mutation, NamedUuid, Replica, Row, TransactError, TransactOutcome, Transaction, Uuid, Value,
};

use super::Ovsdb;

/// Writes `plan` to OVSDB (`root_uuid` is the `Open_vSwitch` row new bridges join): its
/// transactions one after the other, then a wait (5 s at most) until the replica shows them,
/// so what is computed from the replica next (the flows, the next plan) sees the commit.
/// Returns how many transactions it sent.
pub async fn apply(ovs: &Ovsdb, mut plan: Plan, root_uuid: Uuid) -> Result<usize, TransactError> {
    let started = Instant::now();
    let creates = std::mem::take(&mut plan.create_ports);
    let created = creates.len();
    let mut planned = PlannedTransactions::new(&plan, creates.into_iter(), root_uuid);
    let mut commit = Commit::new(&plan);
    let mut transactions = 0;
    while let Some((tx, inserted)) = planned.next(ovs.transaction()).map(PlannedTransaction::into_parts) {
        let outcome = ovs.transact_owned(tx).await?;
        commit.record(&inserted, &outcome);
        transactions += 1;
    }
    tracing::info!(
        bridges = plan.create_bridges.len(),
        created,
        updated = plan.update_ports.len(),
        deleted = plan.delete_ports.len(),
        took_ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
        "OVSDB updated"
    );
    for u in &plan.update_ports {
        tracing::info!(port = %u.name, changes = ?u.changes, "port updated");
    }
    // The new ports' ofports come with ovs-vswitchd's next update; a timeout is no error (the
    // next pass finds whatever is missing).
    let _ = ovs.wait_until(Duration::from_secs(5), |r| commit.visible_in(r)).await;
    Ok(transactions)
}

/// One port of the replica as the diff reads it: references into the Port and Interface rows,
/// nothing copied. The columns are found once, when the port is read: a pass reads some of
/// them several times for each of 20,000 ports.
#[derive(Clone, Copy)]
pub struct PortRow<'r> {
    uuid: &'r Uuid,
    bridge: &'r str,
    tag: Option<u16>,
    protected: bool,
    external_ids: &'r [(Atom, Atom)],
    /// `external_ids:overlay-owner` and `overlay-kind`, read for every port.
    owner: Option<&'r str>,
    kind: Option<&'r str>,
    interface: Option<&'r Uuid>,
    interface_type: &'r str,
    options: &'r [(Atom, Atom)],
}

/// A map column's entries; one that is not there, or not a map, reads as empty.
fn map_of(v: Option<&Value>) -> &[(Atom, Atom)] {
    v.map_or(&[], Value::as_map)
}

fn string_pairs(pairs: &[(Atom, Atom)]) -> impl Iterator<Item = (&str, &str)> {
    pairs.iter().filter_map(|(k, v)| Some((k.as_str()?, v.as_str()?)))
}

impl<'r> PortRow<'r> {
    /// The port `uuid` (row `row`, named `name`) on `bridge`.
    fn new(replica: &'r Replica, bridge: &'r str, uuid: &'r Uuid, row: &'r Row) -> (&'r str, Self) {
        let mut port = PortRow {
            uuid,
            bridge,
            tag: None,
            protected: false,
            external_ids: &[],
            owner: None,
            kind: None,
            interface: None,
            interface_type: "",
            options: &[],
        };
        let mut name = "";
        // One walk over the row's few columns rather than a lookup for each.
        for (column, value) in row.iter() {
            match column {
                "name" => name = value.as_str().unwrap_or(""),
                "tag" => port.tag = value.as_integer().and_then(|t| u16::try_from(t).ok()),
                "protected" => port.protected = value.as_bool().unwrap_or(false),
                "external_ids" => port.external_ids = value.as_map(),
                "interfaces" => port.interface = value.as_set().first().and_then(Atom::as_uuid),
                _ => {}
            }
        }
        for (k, v) in string_pairs(port.external_ids) {
            match k {
                overlay::external_ids::OWNER => port.owner = Some(v),
                overlay::external_ids::KIND => port.kind = Some(v),
                _ => {}
            }
        }
        match port.interface.and_then(|iu| replica.get("Interface", iu)) {
            Some(irow) => {
                port.interface_type = irow.get("type").and_then(Value::as_str).unwrap_or("");
                port.options = map_of(irow.get("options"));
            }
            // As if the port had none.
            None => port.interface = None,
        }
        (name, port)
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
        self.owner
    }
    fn tag(&self) -> Option<u16> {
        self.tag
    }
    fn protected(&self) -> bool {
        self.protected
    }
    fn interface_uuid(&self) -> Cow<'_, str> {
        self.interface.map_or(Cow::Borrowed(""), |u| Cow::Owned(u.to_string()))
    }
    fn interface_type(&self) -> &str {
        self.interface_type
    }
    fn options(&self) -> impl Iterator<Item = (&str, &str)> {
        string_pairs(self.options)
    }
    fn external_ids(&self) -> impl Iterator<Item = (&str, &str)> {
        string_pairs(self.external_ids)
    }
    fn external_id(&self, key: &str) -> Option<&str> {
        match key {
            overlay::external_ids::OWNER => self.owner,
            overlay::external_ids::KIND => self.kind,
            _ => string_pairs(self.external_ids).find(|&(k, _)| k == key).map(|(_, v)| v),
        }
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
                ports.push(PortRow::new(self.replica, b.name, pu, prow));
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
                        found = Some((i, pu, PortRow::new(self.replica, b.name, pu, prow).1));
                    }
                }
            }
        }
        found.map(|(_, _, p)| p)
    }
}

/// Reads the two bridges the agent manages from the replica. Nothing is copied: a copy of every
/// port (some 25 strings each) on every pass would cost more than the diff itself at 20,000
/// tunnel ports.
pub fn observe<'r>(replica: &'r Replica, bridges: &[&'r str], owner: &str) -> ObservedRows<'r> {
    let bridges = bridges
        .iter()
        .filter_map(|&name| {
            let (_, brow) = replica.table("Bridge").find_one("name", &Atom::from(name))?;
            Some(ObservedBridge {
                name,
                view: BridgeView {
                    datapath_type: brow.get("datapath_type").and_then(Value::as_str).unwrap_or(""),
                    fail_mode: brow.get("fail_mode").and_then(Value::as_str).unwrap_or(""),
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

/// Most ports one transaction creates. A cold start at 20,000 tunnel ports created them all in
/// one transaction, and the agent held the plan and the transaction, then the update of
/// 40,000 new rows (the message and its decoded rows), each at once: VmHWM 85 MiB, against
/// 55 MiB once settled. An event stays one transaction: a peer brings one port per tenant, a
/// tenant join one per peer.
const CREATES_PER_TRANSACTION: usize = 2_000;

/// One transaction of a plan, with the rows it inserts (to find them after the commit).
struct PlannedTransaction {
    /// The transaction to send.
    tx: Transaction,
    /// The Port and Bridge rows it inserts.
    inserted: Inserted,
}

/// The Port and Bridge rows a [`PlannedTransaction`] inserts: table and name in the transaction.
struct Inserted(Vec<(&'static str, NamedUuid)>);

impl PlannedTransaction {
    /// The transaction, to send with [`Ovsdb::transact_owned`], and what [`Commit::record`]
    /// needs of it afterwards.
    fn into_parts(self) -> (Transaction, Inserted) {
        (self.tx, self.inserted)
    }
}

/// A plan as transactions, made one at a time: the first holds every change of the plan and
/// its first [`CREATES_PER_TRANSACTION`] port creations, each next one as many more. Send each
/// only once the one before committed: ports in later ones go onto bridges the first creates.
/// A port's row is made when its transaction is, and its spec dropped then.
struct PlannedTransactions<'p, I: Iterator<Item = PortSpec>> {
    plan: &'p Plan,
    /// The plan's port creations (taken out of it) not yet in a transaction.
    creates: std::iter::Peekable<I>,
    root_uuid: Uuid,
    first: bool,
}

impl<'p, I: Iterator<Item = PortSpec>> PlannedTransactions<'p, I> {
    /// The transactions for `plan`, whose `create_ports` were taken out
    /// of it and are `creates`.
    fn new(plan: &'p Plan, creates: I, root_uuid: Uuid) -> Self {
        PlannedTransactions { plan, creates: creates.peekable(), root_uuid, first: true }
    }

    /// The next transaction, built on `tx`; `None` once everything is in one.
    fn next(&mut self, tx: Transaction) -> Option<PlannedTransaction> {
        if !self.first && self.creates.peek().is_none() {
            return None;
        }
        let (first, plan) = (std::mem::replace(&mut self.first, false), self.plan);
        let creates = self.creates.by_ref().take(CREATES_PER_TRANSACTION);
        Some(if first {
            plan_to_transaction(tx, plan, creates, &self.root_uuid)
        } else {
            creates_to_transaction(tx, creates)
        })
    }
}

/// Creates ports on existing bridges.
fn creates_to_transaction(mut tx: Transaction, creates: impl Iterator<Item = PortSpec>) -> PlannedTransaction {
    let mut inserted = Vec::new();
    let mut new_ports: BTreeMap<String, Vec<Atom>> = BTreeMap::new();
    for p in creates {
        let named = port_rows(&mut tx, &p);
        inserted.push(("Port", named.clone()));
        new_ports.entry(p.bridge).or_default().push(Atom::from(named));
    }
    for (bridge, ports) in new_ports {
        tx.mutate("Bridge", vec![Condition::eq("name", bridge)], vec![Mutation::insert("ports", Value::set(ports))]);
    }
    PlannedTransaction { tx, inserted: Inserted(inserted) }
}

/// The plan's first transaction, creating the ports of `creates`. Deletions go first so a
/// port that moves bridge (same name) is removed before it is created again.
fn plan_to_transaction(
    mut tx: Transaction,
    plan: &Plan,
    creates: impl Iterator<Item = PortSpec>,
    root_uuid: &Uuid,
) -> PlannedTransaction {
    let mut inserted = Vec::new();
    for d in &plan.delete_ports {
        tx.mutate(
            "Bridge",
            vec![Condition::eq("name", d.bridge.as_str())],
            vec![Mutation::delete("ports", Value::set(uuid(&d.port_uuid)))],
        );
    }
    for u in &plan.update_ports {
        let port = vec![Condition::eq("_uuid", Value::set(uuid(&u.port_uuid)))];
        let iface = vec![Condition::eq("_uuid", Value::set(uuid(&u.iface_uuid)))];
        tx.update(
            "Port",
            port.clone(),
            Row::new().with("tag", Value::from(u.tag.map(i64::from))).with("protected", u.protected),
        );
        tx.update(
            "Interface",
            iface.clone(),
            Row::new().with("type", u.interface_type.as_str()).with("options", Value::map(u.options.clone())),
        );
        // Only the agent's own keys change, by mutation: keys other tools keep on either row
        // stay, even if they wrote them after the replica this plan was made from.
        let ours: BTreeMap<&str, &str> = u
            .external_ids
            .iter()
            .filter(|(k, _)| overlay::external_ids::is_overlay_key(k))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        for (table, cond) in [("Port", port), ("Interface", iface)] {
            tx.mutate(
                table,
                cond,
                vec![
                    Mutation::delete("external_ids", Value::set(overlay::external_ids::ALL)),
                    Mutation::insert("external_ids", Value::map(ours.clone())),
                ],
            );
        }
    }
    for (bridge, dp) in &plan.set_bridge_datapath {
        tx.update(
            "Bridge",
            vec![Condition::eq("name", bridge.as_str())],
            Row::new().with("datapath_type", dp.as_str()),
        );
    }
    for (bridge, mode) in &plan.set_bridge_fail_mode {
        tx.update(
            "Bridge",
            vec![Condition::eq("name", bridge.as_str())],
            Row::new().with("fail_mode", Value::set([mode.as_str()])),
        );
    }
    // Ports of bridges created in this transaction go straight into the new Bridge row.
    let mut new_ports: BTreeMap<String, Vec<Atom>> = BTreeMap::new();
    for p in creates {
        let named = port_rows(&mut tx, &p);
        inserted.push(("Port", named.clone()));
        new_ports.entry(p.bridge).or_default().push(Atom::from(named));
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
        let mut ports = new_ports.remove(&b.name).unwrap_or_default();
        ports.push(Atom::from(port_rows(&mut tx, &local)));
        let bridge = tx.insert(
            "Bridge",
            Row::new()
                .with("name", b.name.as_str())
                .with("datapath_type", b.datapath_type.as_str())
                .with("fail_mode", Value::set([b.fail_mode.as_str()]))
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
    PlannedTransaction { tx, inserted: Inserted(inserted) }
}

/// Whether `row`'s map `column` holds every written pair.
fn carries<'a>(row: &Row, column: &str, written: impl IntoIterator<Item = (&'a String, &'a String)>) -> bool {
    written.into_iter().all(|(k, v)| row.map_str(column, k) == Some(v.as_str()))
}

/// What the replica shows once a plan's transactions are committed, to wait for it without
/// diffing every port again on every replica change (at 20,000 ports that would cost several
/// full diffs per event).
struct Commit<'p> {
    plan: &'p Plan,
    /// Table and real UUID of every row inserted.
    inserted: Vec<(&'static str, Uuid)>,
}

impl<'p> Commit<'p> {
    /// The commit of `plan`'s transactions, once [`Commit::record`] has seen each.
    fn new(plan: &'p Plan) -> Self {
        Commit { plan, inserted: Vec::new() }
    }

    /// Notes the rows `planned` (one of the plan's transactions) inserted, as `outcome` reports.
    fn record(&mut self, planned: &Inserted, outcome: &TransactOutcome) {
        self.inserted.extend(planned.0.iter().filter_map(|(t, n)| Some((*t, outcome.uuid(n)?.clone()))));
    }

    /// Whether the replica shows every effect of the commit: rows inserted are there, ports
    /// deleted are gone, and updated rows and bridges carry what was written. A row that
    /// someone else removed since counts as shown: there is nothing left to wait for, and the
    /// next pass sees it. Keys other tools may have added to an updated row are not looked
    /// at, so such a change arriving with ours cannot hold the wait up.
    fn visible_in(&self, replica: &Replica) -> bool {
        let inserted = self.inserted.iter().all(|(table, u)| replica.get(table, u).is_some());
        let deleted =
            self.plan.delete_ports.iter().filter_map(|d| uuid(&d.port_uuid)).all(|u| replica.get("Port", &u).is_none());
        let updated = self.plan.update_ports.iter().all(|u| {
            let port = uuid(&u.port_uuid).and_then(|p| replica.get("Port", &p));
            let iface = uuid(&u.iface_uuid).and_then(|i| replica.get("Interface", &i));
            let ours = u.external_ids.iter().filter(|(k, _)| overlay::external_ids::is_overlay_key(k));
            port.is_none_or(|r| carries(r, "external_ids", ours))
                && iface.is_none_or(|r| carries(r, "options", &u.options))
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

#[cfg(test)]
mod tests;
