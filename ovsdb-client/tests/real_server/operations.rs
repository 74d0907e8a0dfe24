//! Every operation through the Transaction builder, against the real server.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_type() {
    let srv = server();
    let conn = connect(&srv.unix_remote()).await;
    let schema = std::sync::Arc::new(within("get_schema", conn.get_schema(DB)).await.unwrap());
    let new_tx = || Transaction::with_schema(schema.clone());

    // insert with named-uuids, referenced from the root row.
    let mut tx = new_tx();
    let br = add_bridge(&mut tx, "br0");
    tx.comment("ovsdb-client test: add br0");
    let out = within("insert br0", conn.transact(&tx)).await.expect("insert br0");
    let br0 = out.uuid(&br).expect("uuid of br0").clone();
    assert!(matches!(out.results[0], OpResult::Inserted(_)));
    assert_eq!(out.count(3), Some(1), "mutate of the root row");
    assert_eq!(out.results[4], OpResult::Empty, "comment");
    assert_eq!(uuid_of(&bridge(&conn, "br0").await.expect("br0 exists")), br0);
    let port = select(&conn, "Port", vec![Condition::eq("name", "br0")]).await;
    assert_eq!(port.len(), 1);

    // An unreferenced Bridge (not a root table) is garbage-collected at commit.
    let mut tx = new_tx();
    let orphan = tx.insert("Bridge", Row::new().with("name", "orphan"));
    let out = within("insert orphan", conn.transact(&tx)).await.expect("insert orphan commits");
    assert!(out.uuid(&orphan).is_some());
    assert!(bridge(&conn, "orphan").await.is_none(), "unreferenced Bridge must be garbage-collected");

    // select with conditions and columns.
    let mut tx = new_tx();
    let i = tx.select(
        "Bridge",
        vec![Condition::eq("name", "br0"), Condition::ne("name", "nope")],
        Some(vec!["name".into(), "ports".into()]),
    );
    let j = tx.select("Bridge", vec![Condition::eq("name", "nope")], None);
    let out = within("select", conn.transact(&tx)).await.expect("select");
    let rows = out.rows(i);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].len(), 2, "only the asked columns: {rows:?}");
    assert_eq!(rows[0].get_as::<String>("name").unwrap(), "br0");
    assert_eq!(rows[0].get_as::<Vec<Uuid>>("ports").unwrap().len(), 1);
    assert!(out.rows(j).is_empty());

    // update.
    let mut tx = new_tx();
    let i = tx.update(
        "Bridge",
        vec![Condition::uuid(&br0)],
        Row::new().with("external_ids", Value::map([("a", "1")])).with("fail_mode", Value::set(["secure"])),
    );
    let out = within("update", conn.transact(&tx)).await.expect("update");
    assert_eq!(out.count(i), Some(1));
    let row = bridge(&conn, "br0").await.unwrap();
    assert_eq!(row.map_str("external_ids", "a"), Some("1"));
    assert_eq!(row.get_as::<Option<String>>("fail_mode").unwrap().as_deref(), Some("secure"));

    // mutate: set insert / delete, map insert / delete (by key and by pair), integer +=.
    let by_name = || vec![Condition::eq("name", "br0")];
    let mut tx = new_tx();
    tx.mutate("Bridge", by_name(), vec![Mutation::insert("flood_vlans", Value::set([10i64, 20, 30]))]);
    tx.mutate("Bridge", by_name(), vec![Mutation::delete("flood_vlans", Value::set([10i64]))]);
    tx.mutate(
        "Bridge",
        by_name(),
        vec![Mutation::insert("external_ids", Value::map([("a", "changed?"), ("b", "2"), ("c", "3")]))],
    );
    tx.mutate("Bridge", by_name(), vec![Mutation::delete("external_ids", Value::set(["b"]))]);
    tx.mutate("Bridge", by_name(), vec![Mutation::delete("external_ids", Value::map([("c", "3")]))]);
    let out = within("mutate", conn.transact(&tx)).await.expect("mutate");
    assert!((0..5).all(|i| out.count(i) == Some(1)), "{:?}", out.results);
    let row = bridge(&conn, "br0").await.unwrap();
    assert_eq!(row.get_as::<Vec<i64>>("flood_vlans").unwrap(), vec![20, 30]);
    assert_eq!(row.get("external_ids"), Some(&Value::map([("a", "1")])), "map insert keeps existing keys");

    let root = select(&conn, DB, vec![]).await;
    let next_cfg = root[0].get_as::<i64>("next_cfg").unwrap();
    let mut tx = new_tx();
    tx.update("Interface", vec![Condition::eq("name", "br0")], Row::new().with("ofport_request", Value::set([10i64])));
    tx.mutate(
        "Interface",
        vec![Condition::eq("name", "br0")],
        vec![Mutation::new("ofport_request", Mutator::Add, 3i64)],
    );
    tx.mutate(DB, vec![], vec![Mutation::new("next_cfg", Mutator::Add, 5i64)]);
    tx.mutate(DB, vec![], vec![Mutation::new("next_cfg", Mutator::Mul, 2i64)]);
    within("arithmetic mutate", conn.transact(&tx)).await.expect("arithmetic mutate");
    let iface = select(&conn, "Interface", vec![Condition::eq("name", "br0")]).await;
    assert_eq!(iface[0].get_as::<Option<i64>>("ofport_request").unwrap(), Some(13));
    let root = select(&conn, DB, vec![]).await;
    assert_eq!(root[0].get_as::<i64>("next_cfg").unwrap(), (next_cfg + 5) * 2);

    // An arithmetic result outside the column's range is the server's to refuse.
    let mut tx = new_tx();
    tx.mutate(
        "Interface",
        vec![Condition::eq("name", "br0")],
        vec![Mutation::new("ofport_request", Mutator::Add, 70000i64)],
    );
    let e = within("mutate out of range", conn.transact(&tx)).await.unwrap_err();
    assert_op_error(&e, "mutate", OvsdbErrorKind::ConstraintViolation);

    // wait: satisfied, and timing out (a failed verify).
    let mut tx = new_tx();
    tx.wait("Bridge", by_name(), vec!["name".into()], Until::Equal, vec![Row::new().with("name", "br0")], Some(0));
    tx.wait("Bridge", by_name(), vec!["name".into()], Until::NotEqual, vec![Row::new().with("name", "x")], Some(0));
    let as_read = bridge(&conn, "br0").await.unwrap();
    tx.verify("Bridge", &br0, &as_read, &["external_ids", "flood_vlans"]);
    within("satisfied wait", conn.transact(&tx)).await.expect("satisfied waits");

    let mut tx = new_tx();
    tx.verify("Bridge", &br0, &Row::new().with("external_ids", Value::map([("a", "stale")])), &["external_ids"]);
    tx.update("Bridge", vec![Condition::uuid(&br0)], Row::new().with("external_ids", Value::map([("a", "lost")])));
    let e = within("timed-out wait", conn.transact(&tx)).await.unwrap_err();
    assert_op_error(&e, "wait", OvsdbErrorKind::TimedOut);
    assert!(e.is_verify_failure(), "{e}");
    match &e {
        TransactError::Operation { index: 0, table, .. } => assert_eq!(table, "Bridge"),
        other => panic!("{other:?}"),
    }
    assert_eq!(bridge(&conn, "br0").await.unwrap().map_str("external_ids", "a"), Some("1"), "rolled back");

    // A wait with a real timeout that never becomes true times out too.
    let mut tx = new_tx();
    tx.wait("Bridge", by_name(), vec!["name".into()], Until::Equal, vec![Row::new().with("name", "x")], Some(100));
    let e = within("wait with timeout", conn.transact(&tx)).await.unwrap_err();
    assert!(e.is_verify_failure(), "{e}");

    // commit(durable).
    let mut tx = new_tx();
    tx.update("Bridge", by_name(), Row::new().with("external_ids", Value::map([("durable", "yes")])));
    let c = tx.commit(true);
    let out = within("durable commit", conn.transact(&tx)).await.expect("durable commit");
    assert_eq!(out.results[c], OpResult::Empty);
    assert_eq!(bridge(&conn, "br0").await.unwrap().map_str("external_ids", "durable"), Some("yes"));

    // abort: nothing applied.
    let mut tx = new_tx();
    add_bridge(&mut tx, "br-aborted");
    tx.abort();
    let e = within("abort", conn.transact(&tx)).await.unwrap_err();
    assert_op_error(&e, "abort", OvsdbErrorKind::Aborted);
    assert!(!e.is_verify_failure());
    assert!(bridge(&conn, "br-aborted").await.is_none());

    // assert without holding the lock.
    let mut tx = new_tx();
    tx.assert_lock("nobody_holds_this");
    tx.comment("never applied");
    let e = within("assert", conn.transact(&tx)).await.unwrap_err();
    assert_op_error(&e, "assert", OvsdbErrorKind::NotOwner);
    // A lock name that is not an OVSDB <id> is refused before sending.
    let mut tx = Transaction::new(DB);
    tx.assert_lock("not-an-id");
    assert!(matches!(
        conn.transact(&tx).await,
        Err(TransactError::Invalid(ValidationError::BadOperation { index: 0, .. }))
    ));

    // delete: detach from the root row and delete; Port and Interface are collected.
    let mut tx = new_tx();
    tx.mutate(DB, vec![], vec![Mutation::delete("bridges", Value::set([br0.clone()]))]);
    let d = tx.delete("Bridge", vec![Condition::uuid(&br0)]);
    let out = within("delete", conn.transact(&tx)).await.expect("delete");
    assert_eq!(out.count(d), Some(1));
    assert!(bridge(&conn, "br0").await.is_none());
    assert!(select(&conn, "Port", vec![]).await.is_empty(), "Port collected with its bridge");
    assert!(select(&conn, "Interface", vec![]).await.is_empty(), "Interface collected with its port");
    let mut tx = new_tx();
    let d = tx.delete("Bridge", vec![Condition::uuid(&br0)]);
    assert_eq!(within("delete again", conn.transact(&tx)).await.unwrap().count(d), Some(0));
}
