//! Basic RPCs (list_dbs, get_schema, echo) over unix and tcp, and locks between two sessions.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_dbs_get_schema_echo_over_unix_and_tcp() {
    let srv = server();
    for r in [srv.unix_remote(), srv.tcp_remote()] {
        let conn = connect(&r).await;
        let dbs = within("list_dbs", conn.list_dbs()).await.expect("list_dbs");
        assert!(dbs.iter().any(|d| d == DB), "{r}: list_dbs = {dbs:?}");

        let schema = within("get_schema", conn.get_schema(DB)).await.expect("get_schema");
        assert_eq!(schema.name, DB);
        for t in ["Open_vSwitch", "Bridge", "Port", "Interface"] {
            assert!(schema.tables.contains_key(t), "{r}: schema lacks {t}");
        }
        assert!(schema.table(DB).unwrap().is_root);
        assert!(!schema.table("Bridge").unwrap().is_root);
        assert_eq!(schema.table("Bridge").unwrap().indexes, vec![vec!["name".to_owned()]]);
        let ports = schema.column("Bridge", "ports").unwrap();
        assert_eq!(ports.kind.key.ref_table.as_deref(), Some("Port"));
        assert_eq!(schema.column("Port", "tag").unwrap().kind.key.max_integer, Some(4095));

        let payload = json!(["hello", 42, {"nested": [1, 2.5, null, true]}]);
        let back = within("echo", conn.echo(payload.clone())).await.expect("echo");
        assert_eq!(back, payload, "{r}: echo");

        // An unknown database is a JSON-RPC error, for get_schema and for transact.
        match within("get_schema Nope", conn.get_schema("Nope")).await {
            Err(RpcError::Server { method, error }) => {
                assert_eq!(method, "get_schema");
                assert!(error.to_string().contains("unknown database"), "{error}");
            }
            other => panic!("{r}: get_schema of an unknown database: {other:?}"),
        }
        let mut tx = Transaction::new("Nope");
        tx.comment("x");
        match within("transact Nope", conn.transact(&tx)).await {
            Err(TransactError::Rpc(RpcError::Server { method, error })) => {
                assert_eq!(method, "transact");
                assert!(error.to_string().contains("unknown database"), "{error}");
            }
            other => panic!("{r}: transact on an unknown database: {other:?}"),
        }
        conn.close();
        assert!(conn.is_closed());
        assert!(matches!(conn.echo(json!([])).await, Err(RpcError::Disconnected { .. })));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_assert_and_steal_over_two_connections() {
    let srv = server();
    let a = connect(&srv.unix_remote()).await;
    let b = connect(&srv.tcp_remote()).await;
    let mut a_events = a.lock_events();
    let mut b_events = b.lock_events();
    let assert_tx = || {
        let mut tx = Transaction::new(DB);
        tx.assert_lock("L");
        tx.update(DB, vec![], Row::new().with("external_ids", Value::map([("by", "holder")])));
        tx
    };

    assert!(within("a lock", a.lock("L")).await.unwrap(), "a gets the free lock");
    within("a asserts", a.transact(&assert_tx())).await.expect("a holds L");
    assert!(!within("b lock", b.lock("L")).await.unwrap(), "b is queued");
    let e = within("b asserts", b.transact(&assert_tx())).await.unwrap_err();
    assert_op_error(&e, "assert", OvsdbErrorKind::NotOwner);

    // a unlocks: b, queued, is told it has the lock.
    within("a unlock", a.unlock("L")).await.unwrap();
    let ev = within("locked notification", b_events.recv()).await.unwrap();
    assert_eq!(ev, LockEvent::Locked("L".into()));
    within("b asserts", b.transact(&assert_tx())).await.expect("b holds L");

    // a steals it back: b is told.
    assert!(within("a steal", a.steal("L")).await.unwrap());
    let ev = within("stolen notification", b_events.recv()).await.unwrap();
    assert_eq!(ev, LockEvent::Stolen("L".into()));
    within("a asserts", a.transact(&assert_tx())).await.expect("a holds L again");
    let e = within("b asserts", b.transact(&assert_tx())).await.unwrap_err();
    assert_op_error(&e, "assert", OvsdbErrorKind::NotOwner);

    // b's request outlives the theft: it must unlock before asking again.
    match within("b steal without unlock", b.steal("L")).await {
        Err(RpcError::Server { method, error }) => {
            assert_eq!(method, "steal");
            assert!(error.to_string().contains("unlock"), "{error}");
        }
        other => panic!("steal while still registered: {other:?}"),
    }
    within("b unlock", b.unlock("L")).await.unwrap();
    // and b steals from a: now a receives Stolen.
    assert!(within("b steal", b.steal("L")).await.unwrap());
    // (ovsdb-server 3.1 also sends the owner a redundant "locked" when the robbed session
    // unlocks; the client passes on whatever the server says.)
    within("stolen notification to a", async {
        loop {
            match a_events.recv().await.unwrap() {
                LockEvent::Stolen(l) => break assert_eq!(l, "L"),
                LockEvent::Locked(l) => assert_eq!(l, "L"),
            }
        }
    })
    .await;
    let e = within("a asserts", a.transact(&assert_tx())).await.unwrap_err();
    assert_op_error(&e, "assert", OvsdbErrorKind::NotOwner);
    within("b asserts", b.transact(&assert_tx())).await.expect("b holds L");
    within("b unlock", b.unlock("L")).await.unwrap();
    let e = within("b asserts after unlock", b.transact(&assert_tx())).await.unwrap_err();
    assert_op_error(&e, "assert", OvsdbErrorKind::NotOwner);
}
