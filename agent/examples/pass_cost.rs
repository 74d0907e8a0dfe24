//! The agent's side of a reconcile pass at scale, without OVSDB or etcd: an OVSDB replica of
//! `PEERS` x `TENANTS` tunnel ports built in memory, then what `reconcile_locked` does with it.
//! For wall time, or instruction counts under callgrind (each `phase_*` function's inclusive
//! Ir, as for `overlay/examples/reconcile_cost.rs`).
//!
//! ```sh
//! cargo build --release -p overlay-agent --example pass_cost
//! target/release/examples/pass_cost [PEERS] [TENANTS]
//! valgrind --tool=callgrind target/release/examples/pass_cost
//! ```
//!
//! Phases:
//! - `phase_replica`: the replica filled from one initial monitor reply (set-up, not a pass);
//! - `phase_idle_pass`: `ovs::observe` + `existing_vlans_from` + `desired_state` + `diff` on
//!   a replica that matches (an idle pass: the plan is empty);
//! - `phase_join_pass`: the same with one more peer in every tenant;
//! - `phase_join_since`: that join as a pass handles it when the replica has not changed since
//!   an idle pass: `desired_state` + `diff_since` (ports looked up by name);
//! - `phase_status_json`: the status JSON of every tunnel, as a pass builds it today.
//!
//! The schema is read from `/usr/share/openvswitch/vswitch.ovsschema` (`OVS_SCHEMA` to change).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use overlay::desired::{desired_state, ClusterView, DesiredState};
use overlay::diff::{diff, diff_since, existing_vlans_from, Plan};

use overlay_agent::ovs::plan as ovs;
use ovsdb_client::{Atom, DatabaseSchema, Replica, Row, RowUpdate, TableUpdates, Uuid, Value};

#[path = "../../overlay/examples/shared/scale_view.rs"]
mod scale_view;
use scale_view::{host, lease, scale_args, scale_view, timed, LOCAL};
const BRIDGES: [&str; 2] = ["br-int", "br-tun"];

fn uuid(n: usize) -> Uuid {
    Uuid::parse(&format!("{:08x}-0000-4000-8000-{:012x}", n >> 16, n)).expect("uuid")
}

/// The rows ovsdb-server would send after committing `plan` on an empty database.
fn initial_rows(plan: &Plan) -> TableUpdates {
    let mut next = 0;
    let mut fresh = || {
        next += 1;
        uuid(next)
    };
    let mut updates = TableUpdates::default();
    let mut bridge_ports: BTreeMap<&str, Vec<Atom>> = BTreeMap::new();
    for p in &plan.create_ports {
        let (pu, iu) = (fresh(), fresh());
        let iface = Row::new()
            .with("name", p.name.as_str())
            .with("type", p.interface_type.as_str())
            .with("options", Value::map(p.options.clone()))
            .with("external_ids", Value::map(p.external_ids.clone()))
            .with("ofport", Value::empty_set())
            .with("error", Value::empty_set());
        let port = Row::new()
            .with("name", p.name.as_str())
            .with("interfaces", Value::set([iu.clone()]))
            .with("tag", Value::from(p.tag.map(i64::from)))
            .with("protected", p.protected)
            .with("external_ids", Value::map(p.external_ids.clone()));
        updates.tables.entry("Interface".into()).or_default().push((iu, RowUpdate::Initial(iface)));
        updates.tables.entry("Port".into()).or_default().push((pu.clone(), RowUpdate::Initial(port)));
        bridge_ports.entry(p.bridge.as_str()).or_default().push(Atom::from(pu));
    }
    let mut bridges = Vec::new();
    for b in &plan.create_bridges {
        let bu = fresh();
        let row = Row::new()
            .with("name", b.name.as_str())
            .with("datapath_type", b.datapath_type.as_str())
            .with("ports", Value::set(bridge_ports.remove(b.name.as_str()).unwrap_or_default()))
            .with("external_ids", Value::map(b.external_ids.clone()));
        updates.tables.entry("Bridge".into()).or_default().push((bu.clone(), RowUpdate::Initial(row)));
        bridges.push(Atom::from(bu));
    }
    let root = Row::new().with("bridges", Value::set(bridges)).with("external_ids", Value::map([("system-id", LOCAL)]));
    updates.tables.entry("Open_vSwitch".into()).or_default().push((fresh(), RowUpdate::Initial(root)));
    updates
}

#[inline(never)]
fn phase_replica(schema: Arc<DatabaseSchema>, plan: &Plan) -> Replica {
    let options = overlay_agent::ovs::client_options("unix:/nonexistent".parse().expect("remote"));
    let mut replica = Replica::new(schema, &options.indexes);
    replica.set_monitored(&options.monitor);
    replica.apply_owned(initial_rows(plan)).expect("initial rows apply");
    replica
}

fn pass(replica: &Replica, view: &ClusterView) -> (DesiredState, Plan) {
    let observed = ovs::observe(replica, &BRIDGES, LOCAL);
    let desired = desired_state(view, &existing_vlans_from(&observed)).expect("desired state");
    let plan = diff(&desired, &observed, LOCAL);
    (desired, plan)
}

#[inline(never)]
fn phase_idle_pass(replica: &Replica, view: &ClusterView) -> (DesiredState, Plan) {
    pass(replica, view)
}

#[inline(never)]
fn phase_join_pass(replica: &Replica, view: &ClusterView) -> (DesiredState, Plan) {
    // Not a call to phase_idle_pass: each phase's inclusive count must be its own.
    black_box("phase_join_pass");
    pass(replica, view)
}

#[inline(never)]
fn phase_status_json(desired: &DesiredState) -> Vec<serde_json::Value> {
    desired
        .tunnels
        .iter()
        .map(|t| {
            serde_json::json!({"name": t.name, "peer": t.peer, "tenant": t.tenant, "vni": t.vni.get(),
                   "type": t.tunnel.as_str(), "remote_ip": t.remote_ip.to_string(), "local_vlan": t.local_vlan})
        })
        .collect()
}

#[inline(never)]
fn phase_join_since(
    replica: &Replica,
    view: &ClusterView,
    verified: &DesiredState,
    vlans: &BTreeMap<String, u16>,
) -> Plan {
    let observed = ovs::observe(replica, &BRIDGES, LOCAL);
    let desired = desired_state(view, vlans).expect("desired state");
    diff_since(verified, &[], &desired, &observed, LOCAL).expect("same bridges")
}

fn main() {
    let (peers, tenants) = scale_args();
    let path = std::env::var("OVS_SCHEMA").unwrap_or_else(|_| "/usr/share/openvswitch/vswitch.ovsschema".into());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let schema =
        Arc::new(DatabaseSchema::from_json(&serde_json::from_str(&text).expect("schema JSON")).expect("schema"));

    let v = scale_view(peers, tenants);
    let first = desired_state(&v, &BTreeMap::new()).expect("desired");
    let cold = diff(&first, &overlay::diff::ObservedState::default(), LOCAL).into_rows(&first.tun_bridge.name, LOCAL);
    let replica = timed("phase_replica", || phase_replica(schema.clone(), &cold));
    let (desired, idle) = timed("phase_idle_pass", || phase_idle_pass(&replica, &v));
    assert!(idle.is_empty(), "a matching replica must give an empty plan: {idle:?}");
    assert_eq!(desired.tunnels.len(), peers * tenants);

    let mut joined = v.clone();
    let newcomer = host(peers + 1);
    for (i, t) in joined.tenants.values().enumerate() {
        joined.leases.push(lease(t, peers + 1 + i, &newcomer));
    }
    joined.hosts.insert(newcomer.hostname.clone(), newcomer);
    let (_, join) = timed("phase_join_pass", || phase_join_pass(&replica, &joined));
    assert_eq!(join.create_tunnels.len(), tenants, "one port per tenant for the new peer");
    let vlans = existing_vlans_from(&ovs::observe(&replica, &BRIDGES, LOCAL));
    let since = timed("phase_join_since", || phase_join_since(&replica, &joined, &desired, &vlans));
    assert_eq!(since, join, "diff_since must give the full diff's plan");

    let status = timed("phase_status_json", || phase_status_json(&desired));
    println!("tunnel ports: {}; status entries {}", desired.tunnels.len(), status.len());
}
