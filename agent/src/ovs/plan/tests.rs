use std::sync::Arc;

use overlay::diff::{
    diff, existing_vlans_from, ObservedBridge, ObservedInterface, ObservedPort, ObservedState, PortDeletion, PortUpdate,
};
use overlay::external_ids as ids;
use ovsdb_client::{DatabaseSchema, Operation, RowUpdate, TableUpdates};

use super::*;
use crate::ovs::{client_options, DATABASE};

const OWNER: &str = "me";

/// Every port copied into an `ObservedState`: the plain reading, the oracle for the rows
/// read in place.
fn observe_copying(replica: &Replica, bridges: &[&str], owner: &str) -> ObservedState {
    let string_map = |row: &Row, column: &str| -> BTreeMap<String, String> { row.get_as(column).unwrap_or_default() };
    let mut obs = ObservedState::default();
    for name in bridges {
        let Some((buuid, brow)) = replica.table("Bridge").find_one("name", &Atom::from(*name)) else { continue };
        let ids = string_map(brow, "external_ids");
        let mut ob = ObservedBridge {
            uuid: buuid.to_string(),
            datapath_type: brow.get_as("datapath_type").unwrap_or_default(),
            fail_mode: brow.get("fail_mode").and_then(Value::as_str).unwrap_or_default().to_owned(),
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

fn schema() -> Arc<DatabaseSchema> {
    let path = "/usr/share/openvswitch/vswitch.ovsschema";
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path} (install openvswitch): {e}"));
    Arc::new(DatabaseSchema::from_json(&serde_json::from_str(&text).unwrap()).unwrap())
}

fn u(n: u32) -> Uuid {
    Uuid::parse(&format!("{n:08x}-0000-4000-8000-000000000000")).unwrap()
}

fn map(pairs: &[(&str, &str)]) -> Value {
    Value::map(pairs.iter().map(|&(k, v)| (k, v)))
}

fn tunnel_ids(tenant: &str, vlan: &str) -> Vec<(&'static str, String)> {
    vec![
        (ids::OWNER, OWNER.into()),
        (ids::KIND, ids::KIND_TUNNEL.into()),
        (ids::TENANT, tenant.into()),
        (ids::VNI, "100".into()),
        (ids::PEER, "peer".into()),
        (ids::LOCAL_VLAN, vlan.into()),
    ]
}

struct Rows(TableUpdates);

impl Rows {
    fn add(&mut self, table: &str, uuid: Uuid, row: Row) {
        self.0.tables.entry(table.into()).or_default().push((uuid, RowUpdate::Initial(row)));
    }

    /// A port (and, with `iface`, its interface row) named `name`.
    fn port(&mut self, n: u32, name: &str, ext: &[(&str, String)], iface: Option<(&str, &[(&str, &str)])>) -> Atom {
        let ext = Value::map(ext.iter().map(|(k, v)| (*k, v.as_str())));
        let mut port = Row::new()
            .with("name", name)
            .with("interfaces", Value::set([u(n + 1)]))
            .with("tag", Value::from(Some(7i64)))
            .with("protected", true)
            .with("external_ids", ext.clone());
        if let Some((kind, options)) = iface {
            let iface = Row::new()
                .with("name", name)
                .with("type", kind)
                .with("options", map(options))
                .with("external_ids", ext)
                .with("ofport", Value::empty_set())
                .with("error", Value::empty_set());
            self.add("Interface", u(n + 1), iface);
        } else if n % 2 == 0 {
            port.set("interfaces", Value::empty_set());
        }
        self.add("Port", u(n), port);
        Atom::from(u(n))
    }
}

/// Two bridges with tunnels in and out of step, foreign and container ports, a name on
/// both bridges, a port without interface row and one with no interface at all.
fn replica() -> Replica {
    let options = client_options("unix:/nonexistent".parse().unwrap());
    let mut replica = Replica::new(schema(), &options.indexes);
    replica.set_monitored(&options.monitor);
    let mut rows = Rows(TableUpdates::default());
    let opts: &[(&str, &str)] = &[("key", "100"), ("local_ip", "10.0.0.1"), ("remote_ip", "10.0.0.2")];
    let tun = vec![
        rows.port(10, "vx-000000000001", &tunnel_ids("blue", "7"), Some(("vxlan", opts))),
        rows.port(20, "vx-000000000002", &tunnel_ids("blue", "7"), Some(("vxlan", &[("key", "101")]))),
        rows.port(30, "vx-000000000003", &tunnel_ids("red", "9"), Some(("gre", opts))),
        rows.port(40, "eth9", &[], Some(("", &[]))),
        rows.port(50, "both", &tunnel_ids("blue", "7"), Some(("vxlan", opts))),
        rows.port(60, "no-iface-row", &tunnel_ids("blue", "7"), None),
        rows.port(70, "no-iface", &tunnel_ids("blue", "x"), None),
        rows.port(
            80,
            "patch-int",
            &[(ids::OWNER, OWNER.into()), (ids::KIND, ids::KIND_PATCH.into())],
            Some(("patch", &[("peer", "patch-tun")])),
        ),
    ];
    let container = [
        (ids::OWNER, OWNER.to_owned()),
        (ids::KIND, ids::KIND_CONTAINER.into()),
        (ids::TENANT, "green".into()),
        (ids::LOCAL_VLAN, "3".into()),
    ];
    let int = vec![
        rows.port(90, "both", &tunnel_ids("blue", "7"), Some(("vxlan", opts))),
        rows.port(100, "tap000000000001", &container, Some(("", &[]))),
        rows.port(110, "vx-000000000004", &tunnel_ids("blue", "7"), Some(("vxlan", opts))),
    ];
    let bridge = |name: &str, ports: Vec<Atom>| {
        Row::new()
            .with("name", name)
            .with("datapath_type", "netdev")
            .with("ports", Value::set(ports))
            .with("external_ids", map(&[(ids::OWNER, OWNER)]))
    };
    rows.add("Bridge", u(1), bridge("br-tun", tun));
    rows.add("Bridge", u(2), bridge("br-int", int));
    rows.add("Open_vSwitch", u(3), Row::new().with("bridges", Value::set([u(1), u(2)])));
    replica.apply_owned(rows.0).unwrap();
    replica
}

#[test]
fn rows_read_in_place_are_what_the_copy_held() {
    let replica = replica();
    let bridges = ["br-int", "br-tun"];
    let rows = observe(&replica, &bridges, OWNER);
    let copied = observe_copying(&replica, &bridges, OWNER);
    let listed: Vec<&str> = rows.ports().map(|(n, _)| n).collect();
    assert_eq!(listed, copied.ports.keys().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(listed.len(), 10, "{listed:?}");
    for (name, want) in &copied.ports {
        let got = rows.port(name).unwrap_or_else(|| panic!("{name} not found by name"));
        let listed = rows.ports().find(|(n, _)| n == name).unwrap().1;
        for p in [got, listed] {
            assert_eq!(p.uuid(), want.uuid, "{name}");
            assert_eq!(p.bridge(), want.bridge, "{name}");
            assert_eq!(p.owned_by(), want.owned_by.as_deref(), "{name}");
            assert_eq!((p.tag(), p.protected()), (want.tag, want.protected), "{name}");
            assert_eq!(p.interface_uuid(), want.interface.uuid, "{name}");
            assert_eq!(p.interface_type(), want.interface.kind, "{name}");
            assert!(p.options().eq(want.interface.options.iter().map(|(k, v)| (k.as_str(), v.as_str()))), "{name}");
            assert!(p.external_ids().eq(want.external_ids.iter().map(|(k, v)| (k.as_str(), v.as_str()))), "{name}");
            for key in [ids::OWNER, ids::KIND, ids::TENANT, ids::LOCAL_VLAN, "absent"] {
                assert_eq!(p.external_id(key), want.external_ids.get(key).map(String::as_str), "{name} {key}");
            }
        }
    }
    assert!(rows.port("absent").is_none());
    // The name on both bridges reads as the later bridge's, as the copy kept it.
    assert_eq!(rows.port("both").unwrap().bridge(), "br-tun");
    for b in bridges {
        let want = &copied.bridges[b];
        assert_eq!(
            rows.bridge(b),
            Some(BridgeView { datapath_type: &want.datapath_type, fail_mode: &want.fail_mode, owned: want.owned })
        );
    }
    assert_eq!(existing_vlans_from(&rows), existing_vlans_from(&copied));
}

#[test]
fn plans_from_rows_in_place_match_the_copy() {
    let replica = replica();
    let bridges = ["br-int", "br-tun"];
    let rows = observe(&replica, &bridges, OWNER);
    let copied = observe_copying(&replica, &bridges, OWNER);
    let view = overlay::desired::ClusterView {
        local: overlay::model::HostRecord {
            hostname: OWNER.into(),
            underlay_ip: "10.0.0.1".parse().unwrap(),
            system_id: "s".into(),
            machine_id: "m".into(),
            tunnel_types: vec![],
            version: String::new(),
        },
        hosts: BTreeMap::new(),
        tenants: BTreeMap::new(),
        leases: vec![],
        datapath_type: "netdev".into(),
        int_bridge: "br-int".into(),
        tun_bridge: "br-tun".into(),
    };
    let desired = overlay::desired::desired_state(&view, &existing_vlans_from(&copied)).unwrap();
    let plan = diff(&desired, &rows, OWNER);
    assert_eq!(plan, diff(&desired, &copied, OWNER));
    // Every owned tunnel of the per-peer design goes, the moved patch port is re-created,
    // the foreign port stays.
    assert!(plan.delete_ports.iter().any(|d| d.name == "vx-000000000003"));
    assert!(!plan.delete_ports.iter().any(|d| d.name == "eth9"));
}

#[test]
fn many_creations_are_split_over_transactions_that_follow_the_first() {
    let spec = |n: usize| PortSpec {
        bridge: "br-tun".into(),
        name: format!("vx-{n:012}"),
        interface_type: "vxlan".into(),
        options: BTreeMap::new(),
        tag: Some(1),
        protected: true,
        external_ids: BTreeMap::new(),
    };
    let bridge = |name: &str| overlay::diff::BridgeCreation {
        name: name.into(),
        datapath_type: "netdev".into(),
        fail_mode: "secure".into(),
        external_ids: BTreeMap::new(),
    };
    let plan = Plan { create_bridges: vec![bridge("br-int"), bridge("br-tun")], ..Default::default() };
    let total = 2 * CREATES_PER_TRANSACTION + 5;
    let mut planned = PlannedTransactions::new(&plan, (0..total).map(spec), u(3));
    let mut sizes = Vec::new();
    while let Some(p) = planned.next(Transaction::new(DATABASE)) {
        let ops = p.tx.operations();
        let inserts = |table: &str| {
            ops.iter().filter(|op| matches!(op, Operation::Insert { table: t, .. } if t == table)).count()
        };
        // Only the first creates the bridges (each with its internal port); the others
        // add their ports to the bridges by name.
        let bridges = if sizes.is_empty() { 2 } else { 0 };
        assert_eq!(inserts("Bridge"), bridges);
        // What the commit check looks for: the ports created and the bridges (not their
        // internal ports).
        assert_eq!(p.inserted.0.len(), inserts("Port") - bridges + inserts("Bridge"));
        sizes.push(inserts("Port") - bridges);
    }
    assert_eq!(sizes, [CREATES_PER_TRANSACTION, CREATES_PER_TRANSACTION, 5]);
    // A plan without creations is one transaction.
    let mut planned = PlannedTransactions::new(&plan, std::iter::empty(), u(3));
    assert!(planned.next(Transaction::new(DATABASE)).is_some());
    assert!(planned.next(Transaction::new(DATABASE)).is_none());
}

#[test]
fn a_commit_is_visible_once_its_deletions_and_updates_are() {
    let replica = replica();
    let delete = |uuid: Uuid| PortDeletion { bridge: "br-tun".into(), name: "x".into(), port_uuid: uuid.to_string() };
    let shown = |plan: &Plan| {
        let mut planned = PlannedTransactions::new(plan, std::iter::empty(), u(3));
        let mut commit = Commit::new(plan);
        while let Some(tx) = planned.next(Transaction::new(DATABASE)) {
            commit.record(&tx.inserted, &TransactOutcome::default());
        }
        commit.visible_in(&replica)
    };
    assert!(!shown(&Plan { delete_ports: vec![delete(u(10))], ..Default::default() }));
    assert!(shown(&Plan { delete_ports: vec![delete(u(999))], ..Default::default() }));
    let update = |vlan: &str, foreign: bool| {
        let mut external_ids: BTreeMap<String, String> =
            tunnel_ids("blue", vlan).into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        if foreign {
            external_ids.insert("other-tool".into(), "x".into());
        }
        PortUpdate {
            name: "vx-000000000001".into(),
            bridge: "br-tun".into(),
            port_uuid: u(10).to_string(),
            iface_uuid: u(11).to_string(),
            interface_type: "vxlan".into(),
            options: [("key", "100"), ("local_ip", "10.0.0.1"), ("remote_ip", "10.0.0.2")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            tag: Some(7),
            protected: true,
            external_ids,
            changes: vec![],
        }
    };
    assert!(shown(&Plan { update_ports: vec![update("7", true)], ..Default::default() }));
    assert!(!shown(&Plan { update_ports: vec![update("8", false)], ..Default::default() }));
    let datapath = |dp: &str| Plan { set_bridge_datapath: vec![("br-tun".into(), dp.into())], ..Default::default() };
    assert!(shown(&datapath("netdev")));
    assert!(!shown(&datapath("system")));
}
