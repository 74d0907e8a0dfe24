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
    let bridges: Vec<(&str, &str, &str)> =
        plan.create_bridges.iter().map(|b| (b.name.as_str(), b.datapath_type.as_str(), b.fail_mode.as_str())).collect();
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
