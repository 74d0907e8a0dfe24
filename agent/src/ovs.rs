//! The agent's view of Open vSwitch: what it monitors, how replica rows become the domain's
//! [`ObservedState`], and how a [`Plan`] becomes ONE OVSDB transaction.

use std::collections::BTreeMap;

use overlay::diff::{ObservedBridge, ObservedInterface, ObservedPort, ObservedState, Plan, PortSpec};
use ovsdb_client::{
    Atom, ClientOptions, Condition, MonitorRequests, Mutation, Remote, Replica, Row, Transaction, Uuid, Value,
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

fn string_map(row: &Row, column: &str) -> BTreeMap<String, String> {
    row.get_as(column).unwrap_or_default()
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

/// Builds the observed state of the two bridges the agent manages (every port on them, owned
/// or not, so the diff can see name conflicts).
pub fn observe(replica: &Replica, bridges: &[&str], owner: &str) -> ObservedState {
    let mut obs = ObservedState::default();
    for name in bridges {
        let Some((buuid, brow)) = replica.table("Bridge").find_one("name", &Atom::from(*name)) else { continue };
        let ids = string_map(brow, "external_ids");
        let mut ob = ObservedBridge {
            uuid: buuid.to_string(),
            datapath_type: brow.get_as("datapath_type").unwrap_or_default(),
            owned: ids.get(overlay::external_ids::OWNER).map(String::as_str) == Some(owner),
            ports: Default::default(),
        };
        let port_uuids: Vec<Uuid> = brow.get_as("ports").unwrap_or_default();
        for pu in port_uuids {
            let Some(prow) = replica.get("Port", &pu) else { continue };
            let pname: String = prow.get_as("name").unwrap_or_default();
            let ifaces: Vec<Uuid> = prow.get_as("interfaces").unwrap_or_default();
            let interface = ifaces
                .first()
                .and_then(|iu| replica.get("Interface", iu).map(|r| (iu, r)))
                .map(|(iu, irow)| ObservedInterface {
                    uuid: iu.to_string(),
                    kind: irow.get_as("type").unwrap_or_default(),
                    options: string_map(irow, "options"),
                })
                .unwrap_or_default();
            let external_ids = string_map(prow, "external_ids");
            let tag: Option<i64> = prow.get_as("tag").unwrap_or(None);
            ob.ports.insert(pname.clone());
            obs.ports.insert(
                pname,
                ObservedPort {
                    uuid: pu.to_string(),
                    bridge: name.to_string(),
                    owned_by: external_ids.get(overlay::external_ids::OWNER).cloned(),
                    tag: tag.and_then(|t| u16::try_from(t).ok()),
                    protected: prow.get_as::<Option<bool>>("protected").ok().flatten().unwrap_or(false),
                    interface,
                    external_ids,
                },
            );
        }
        obs.bridges.insert(name.to_string(), ob);
    }
    obs
}

/// A UUID the diff carried as text; the replica produced it, so it parses.
fn uuid(s: &str) -> Option<Uuid> {
    Uuid::parse(s).ok()
}

fn port_rows(tx: &mut Transaction, spec: &PortSpec) -> ovsdb_client::NamedUuid {
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

/// Turns a plan into one transaction. Deletions go first so a port that moves bridge (same
/// name) is removed before it is created again.
pub fn plan_to_transaction(mut tx: Transaction, plan: &Plan, root_uuid: &Uuid) -> Transaction {
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
    tx
}
