//! Monitors v1, v2 (with a condition) and v3 see what ovs-vsctl does.

use super::*;

fn changes<'a>(u: &'a TableUpdates, table: &str) -> &'a [(Uuid, RowUpdate)] {
    u.tables.get(table).map(Vec::as_slice).unwrap_or_default()
}

fn named<'a>(u: &'a TableUpdates, table: &str, name: &str) -> Option<(&'a Uuid, &'a RowUpdate)> {
    changes(u, table).iter().find_map(|(id, c)| match c {
        RowUpdate::Initial(r) | RowUpdate::Insert(r) | RowUpdate::Replace(r)
            if r.get("name").and_then(Value::as_str) == Some(name) =>
        {
            Some((id, c))
        }
        _ => None,
    })
}

fn change_of<'a>(u: &'a TableUpdates, table: &str, uuid: &Uuid) -> Option<&'a RowUpdate> {
    changes(u, table).iter().find(|(id, _)| id == uuid).map(|(_, c)| c)
}

async fn next_update(m: &mut Monitor, what: &str) -> MonitorEvent {
    within(what, m.next())
        .await
        .unwrap_or_else(|| panic!("monitor ended while waiting for {what}"))
        .unwrap_or_else(|e| panic!("bad update while waiting for {what}: {e}"))
}

/// Reads notifications until one satisfies `pred` (ovs-vsctl makes one transaction per call, so
/// that is one notification per step; earlier unrelated ones are skipped).
async fn update_where(m: &mut Monitor, what: &str, pred: impl Fn(&TableUpdates) -> bool) -> MonitorEvent {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let ev = tokio::time::timeout_at(deadline, next_update(m, what))
            .await
            .unwrap_or_else(|_| panic!("timed out after {T:?} waiting for {what}"));
        if pred(&ev.updates) {
            return ev;
        }
    }
}

/// Sets Port `p1`'s tag with ovs-vsctl and checks what the v1, v2 and v3 monitors report: v1
/// the whole new row, v2 and v3 only the tag, sent new (only columns with max > 1 are diffed;
/// an optional value, max 1, is not). Returns v3's update.
async fn set_tag(srv: &OvsdbServer, [m1, m2, m3]: [&mut Monitor; 3], p1: &Uuid, tag: i64) -> MonitorEvent {
    let what = format!("tag={tag}");
    vsctl(srv, &["set", "port", "p1", &what]);
    let is_p1_change = |u: &TableUpdates| change_of(u, "Port", p1).is_some();
    let e1 = update_where(m1, &what, is_p1_change).await;
    let e2 = update_where(m2, &what, is_p1_change).await;
    let e3 = update_where(m3, &what, is_p1_change).await;
    match change_of(&e1.updates, "Port", p1) {
        Some(RowUpdate::Replace(r)) => assert_eq!(r.get("tag").unwrap().as_set(), [Atom::Integer(tag)]),
        other => panic!("v1 {what}: {other:?}"),
    }
    for e in [&e2, &e3] {
        match change_of(&e.updates, "Port", p1) {
            Some(RowUpdate::Modify(d)) => {
                assert_eq!(d.get("tag").unwrap().as_set(), [Atom::Integer(tag)]);
                assert_eq!(d.len(), 1, "{d:?}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    e3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_v1_v2_v3_see_ovs_vsctl_changes() {
    let srv = server();
    let conn = connect(&srv.unix_remote()).await;
    let bridge_cols = ["name", "ports", "external_ids"];
    let port_cols = ["name", "interfaces", "tag", "trunks"];
    let requests = MonitorRequests::new().table("Bridge", bridge_cols).table("Port", port_cols);
    // v2 additionally watches only the Interface named p1.
    let requests_v2 = requests.clone().with(
        "Interface",
        TableMonitor {
            columns: Some(vec!["name".into(), "type".into()]),
            conditions: Some(vec![Condition::eq("name", "p1")]),
        },
    );

    let (init1, mut m1) = within("monitor", conn.monitor(DB, &requests)).await.expect("monitor");
    let (init2, mut m2) = within("monitor_cond", conn.monitor_cond(DB, &requests_v2)).await.expect("monitor_cond");
    let (found, txn, init3, mut m3) = within("monitor_cond_since", conn.monitor_cond_since(DB, &requests, None))
        .await
        .expect("monitor_cond_since (ovsdb-server >= 2.12)");
    assert!(init1.is_empty() && init2.is_empty() && init3.is_empty(), "no bridges yet");
    assert!(!found, "nothing to resume from");
    assert!(txn.is_some(), "monitor_cond_since returns the last transaction id");

    // add-br
    vsctl(&srv, &["add-br", "br0"]);
    let what = "Bridge br0 insert";
    let has_br0 = |u: &TableUpdates| named(u, "Bridge", "br0").is_some();
    let e1 = update_where(&mut m1, what, has_br0).await;
    let e2 = update_where(&mut m2, what, has_br0).await;
    let e3 = update_where(&mut m3, what, has_br0).await;
    for (v, e) in [("v1", &e1), ("v2", &e2), ("v3", &e3)] {
        let (_, c) = named(&e.updates, "Bridge", "br0").unwrap();
        assert!(matches!(c, RowUpdate::Insert(_)), "{v}: {c:?}");
        let (_, c) = named(&e.updates, "Port", "br0").unwrap_or_else(|| panic!("{v}: Port br0 in {:?}", e.updates));
        assert!(matches!(c, RowUpdate::Insert(_)), "{v}: {c:?}");
        if let RowUpdate::Insert(r) = c {
            assert_eq!(r.get("interfaces").map(Value::len), Some(1), "{v}: {r:?}");
            assert!(!r.iter().any(|(k, _)| !port_cols.contains(&k)), "{v}: only the monitored columns: {r:?}");
        }
    }
    assert!(changes(&e2.updates, "Interface").is_empty(), "v2 condition excludes Interface br0: {:?}", e2.updates);
    assert!(e1.last_txn_id.is_none() && e2.last_txn_id.is_none());
    assert!(e3.last_txn_id.is_some(), "update3 carries a transaction id");
    let br0 = named(&e2.updates, "Bridge", "br0").unwrap().0.clone();

    // add-port
    vsctl(&srv, &["add-port", "br0", "p1"]);
    let what = "Port p1 insert";
    let has_p1 = |u: &TableUpdates| named(u, "Port", "p1").is_some();
    let e1 = update_where(&mut m1, what, has_p1).await;
    let e2 = update_where(&mut m2, what, has_p1).await;
    let e3 = update_where(&mut m3, what, has_p1).await;
    let p1 = named(&e1.updates, "Port", "p1").unwrap().0.clone();
    match change_of(&e1.updates, "Bridge", &br0) {
        Some(RowUpdate::Replace(r)) => {
            let ports = r.get("ports").unwrap().as_set();
            assert!(ports.len() == 2 && ports.contains(&Atom::Uuid(p1.clone())), "v1 full new row: {r:?}")
        }
        other => panic!("v1: Bridge br0 replace, got {other:?}"),
    }
    for (v, e) in [("v2", &e2), ("v3", &e3)] {
        assert_eq!(named(&e.updates, "Port", "p1").unwrap().0, &p1);
        match change_of(&e.updates, "Bridge", &br0) {
            Some(RowUpdate::Modify(d)) => {
                assert_eq!(d.get("ports").unwrap().as_set(), [Atom::Uuid(p1.clone())], "{v}: the diff only: {d:?}");
                assert!(d.get("name").is_none(), "{v}: unchanged columns are not sent: {d:?}");
            }
            other => panic!("{v}: Bridge br0 modify, got {other:?}"),
        }
    }
    let (_, c) = named(&e2.updates, "Interface", "p1").expect("v2 sees Interface p1 (matches its condition)");
    assert!(matches!(c, RowUpdate::Insert(_)));

    // set port p1 tag=7, then tag=8
    let is_p1_change = |u: &TableUpdates| change_of(u, "Port", &p1).is_some();
    set_tag(&srv, [&mut m1, &mut m2, &mut m3], &p1, 7).await;
    let e3 = set_tag(&srv, [&mut m1, &mut m2, &mut m3], &p1, 8).await;
    // A set column (max > 1) is diffed: trunks {1,2} -> {2,3} is sent as {1, 3}.
    vsctl(&srv, &["set", "port", "p1", "trunks=1,2"]);
    update_where(&mut m2, "trunks=1,2", is_p1_change).await;
    vsctl(&srv, &["set", "port", "p1", "trunks=2,3", "tag=[]"]);
    let e2 = update_where(&mut m2, "trunks=2,3", is_p1_change).await;
    match change_of(&e2.updates, "Port", &p1) {
        Some(RowUpdate::Modify(d)) => {
            assert_eq!(d.get("trunks"), Some(&Value::set([1i64, 3])), "{d:?}");
            assert_eq!(d.get("tag"), Some(&Value::empty_set()), "tag cleared: {d:?}");
        }
        other => panic!("trunks: {other:?}"),
    }

    // del-br: the bridge and both ports are deleted.
    vsctl(&srv, &["del-br", "br0"]);
    let is_del = |u: &TableUpdates| matches!(change_of(u, "Bridge", &br0), Some(RowUpdate::Delete));
    for (v, m) in [("v1", &mut m1), ("v2", &mut m2), ("v3", &mut m3)] {
        let e = update_where(m, "del-br", is_del).await;
        assert_eq!(changes(&e.updates, "Port").len(), 2, "{v}: {:?}", e.updates);
        assert!(changes(&e.updates, "Port").iter().all(|(_, c)| *c == RowUpdate::Delete), "{v}");
        assert_eq!(change_of(&e.updates, "Port", &p1), Some(&RowUpdate::Delete), "{v}");
        if v == "v2" {
            let i = changes(&e.updates, "Interface");
            assert!(i.len() == 1 && i[0].1 == RowUpdate::Delete, "only the Interface matching the condition: {i:?}");
        }
    }

    // monitor_cancel ends the stream.
    within("monitor_cancel", conn.monitor_cancel(&m1)).await.expect("monitor_cancel");
    assert!(within("cancelled monitor ends", m1.next()).await.is_none());
    // A second monitor_cond_since from the last transaction id seen by m3 resumes (or, on a
    // standalone database without history, starts over): either way it gets no error.
    let (_, _, again, _m4) =
        within("monitor_cond_since again", conn.monitor_cond_since(DB, &requests, e3.last_txn_id.as_deref()))
            .await
            .expect("monitor_cond_since with a txn id");
    assert!(again.tables.values().all(|c| c.iter().all(|(_, c)| !matches!(c, RowUpdate::Delete))));
}
