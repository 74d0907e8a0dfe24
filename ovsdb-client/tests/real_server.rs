//! ovsdb-client against a REAL ovsdb-server (Debian's openvswitch-switch 3.1), one private
//! server per test (`testbed::OvsdbServer`). Nothing is skipped: without ovsdb-server the
//! fixture panics with what to install. Every wait is bounded, so a bug fails instead of hanging.

use std::future::Future;
use std::time::Duration;

use ovsdb_client::{
    Atom, Client, ClientEvent, ClientOptions, Condition, Connection, LockEvent, Monitor, MonitorEvent, MonitorRequests,
    Mutation, Mutator, NamedUuid, OpResult, OvsdbErrorKind, Remote, Row, RowUpdate, RpcError, TableMonitor,
    TableUpdates, TransactError, Transaction, Until, Uuid, ValidationError, Value,
};
use serde_json::json;
use testbed::OvsdbServer;

const DB: &str = "Open_vSwitch";
/// Bound of every single wait.
const T: Duration = Duration::from_secs(10);

/// Starts a private ovsdb-server; panics with what to install when OVS is missing.
fn server() -> OvsdbServer {
    // `OvsdbServer::start` blocks (ovsdb-tool, waiting for the sockets); fine on a test thread.
    tokio::task::block_in_place(OvsdbServer::start)
}

/// `ovs-vsctl --no-wait` against the server, without stalling the runtime's other worker.
fn vsctl(srv: &OvsdbServer, args: &[&str]) -> String {
    tokio::task::block_in_place(|| srv.vsctl(args))
}

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(T, f).await.unwrap_or_else(|_| panic!("timed out after {T:?}: {what}"))
}

fn remote(s: &str) -> Remote {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

async fn connect(r: &str) -> Connection {
    within("connect", Connection::connect(&remote(r))).await.unwrap_or_else(|e| panic!("connect {r}: {e}"))
}

/// Monitors every column of Open_vSwitch, Bridge, Port and Interface.
fn all_tables() -> MonitorRequests {
    let none: [&str; 0] = [];
    MonitorRequests::new().table(DB, none).table("Bridge", none).table("Port", none).table("Interface", none)
}

async fn client_for(srv: &OvsdbServer) -> Client {
    let mut opts = ClientOptions::new(remote(&srv.unix_remote()), DB).monitor(all_tables()).index("Port", "name");
    opts.backoff_min = Duration::from_millis(50);
    opts.backoff_max = Duration::from_millis(400);
    within("Client::connect", Client::connect(opts)).await.expect("Client::connect")
}

/// Adds to `tx` a bridge with its internal port and interface, all named `name`, referenced
/// from the root row so that they survive garbage collection.
fn add_bridge(tx: &mut Transaction, name: &str) -> NamedUuid {
    let iface = tx.insert("Interface", Row::new().with("name", name).with("type", "internal"));
    let port = tx.insert("Port", Row::new().with("name", name).with("interfaces", Value::set([iface])));
    let br = tx.insert("Bridge", Row::new().with("name", name).with("ports", Value::set([port])));
    tx.mutate(DB, vec![], vec![Mutation::insert("bridges", Value::set([br.clone()]))]);
    br
}

/// Selects rows of `table` matching `conds` (all columns).
async fn select(conn: &Connection, table: &str, conds: Vec<Condition>) -> Vec<Row> {
    let mut tx = Transaction::new(DB);
    let i = tx.select(table, conds, None);
    within("select", conn.transact(&tx)).await.expect("select").rows(i).to_vec()
}

async fn bridge(conn: &Connection, name: &str) -> Option<Row> {
    let mut rows = select(conn, "Bridge", vec![Condition::eq("name", name)]).await;
    assert!(rows.len() <= 1);
    rows.pop()
}

fn uuid_of(row: &Row) -> Uuid {
    row.get_as::<Uuid>("_uuid").expect("_uuid")
}

fn ovsdb_kind(e: &TransactError) -> OvsdbErrorKind {
    e.ovsdb_error().unwrap_or_else(|| panic!("expected an OVSDB error, got {e:?}")).kind.clone()
}

#[track_caller]
fn assert_op_error(e: &TransactError, want_op: &str, want: OvsdbErrorKind) {
    match e {
        TransactError::Operation { op, error, .. } if *op == want_op && error.kind == want => {}
        other => panic!("expected operation '{want_op}' to fail with {want:?}, got {other:?}"),
    }
}

/// Compares every monitored table of the client's replica with a fresh `select` of all rows,
/// both normalised with the schema.
async fn assert_replica_matches_db(client: &Client, conn: &Connection) {
    let tables = [DB, "Bridge", "Port", "Interface"];
    let mut tx = Transaction::new(DB);
    let idx: Vec<usize> = tables.iter().map(|t| tx.select(*t, vec![], None)).collect();
    let out = within("select all", conn.transact(&tx)).await.expect("select all");
    let schema = client.schema();
    let replica = client.replica();
    for (table, i) in tables.iter().zip(idx) {
        let ts = schema.table(table).unwrap();
        let rows = out.rows(i);
        let mine = replica.table(table);
        assert_eq!(mine.len(), rows.len(), "{table}: rows in replica vs in the database");
        for row in rows {
            let mut row = row.clone();
            schema.normalize_row(table, &mut row);
            let uuid = uuid_of(&row);
            let have = mine.get(&uuid).unwrap_or_else(|| panic!("{table} {uuid} is missing from the replica"));
            for col in ts.columns.keys().filter(|c| !c.starts_with('_')) {
                assert_eq!(have.get(col), row.get(col), "{table} {uuid} column {col}: replica vs database");
            }
        }
    }
    // The index on Port.name agrees with the rows.
    for (uuid, row) in replica.table("Port").rows() {
        let name = row.get("name").and_then(Value::as_atom).expect("Port.name").clone();
        assert_eq!(replica.table("Port").find_one("name", &name).map(|(u, _)| u), Some(uuid), "index of {name}");
    }
}

// ---------------------------------------------------------------------------------------------
// Basic RPCs
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Every operation through the Transaction builder
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Typed errors
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_errors_from_server_and_from_validation() {
    let srv = server();
    let client = client_for(&srv).await;
    let conn = client.connection().unwrap();
    let mut tx = client.transaction();
    add_bridge(&mut tx, "br0");
    within("add br0", client.transact(&tx)).await.expect("add br0");

    // Referential integrity: a Port referencing an Interface that does not exist.
    let ghost = Uuid::parse("01234567-89ab-cdef-0123-456789abcdef").unwrap();
    let mut tx = Transaction::new(DB);
    let p = tx.insert("Port", Row::new().with("name", "p-ghost").with("interfaces", Value::set([ghost])));
    tx.mutate("Bridge", vec![Condition::eq("name", "br0")], vec![Mutation::insert("ports", Value::set([p]))]);
    let e = within("dangling reference", conn.transact(&tx)).await.unwrap_err();
    assert!(matches!(e, TransactError::Commit(_) | TransactError::Operation { .. }), "{e:?}");
    assert_eq!(ovsdb_kind(&e), OvsdbErrorKind::ReferentialIntegrityViolation, "{e}");

    // ... and deleting an Interface that a Port still references.
    let mut tx = client.transaction();
    tx.delete("Interface", vec![Condition::eq("name", "br0")]);
    let e = within("delete referenced", client.transact(&tx)).await.unwrap_err();
    assert_eq!(ovsdb_kind(&e), OvsdbErrorKind::ReferentialIntegrityViolation, "{e}");
    assert_eq!(select(&conn, "Interface", vec![Condition::eq("name", "br0")]).await.len(), 1, "rolled back");

    // Constraint violation: a second Bridge named br0 breaks the index on name.
    let mut tx = client.transaction();
    let iface = tx.insert("Interface", Row::new().with("name", "dup-i"));
    let port = tx.insert("Port", Row::new().with("name", "dup-p").with("interfaces", Value::set([iface])));
    let br = tx.insert("Bridge", Row::new().with("name", "br0").with("ports", Value::set([port])));
    tx.mutate(DB, vec![], vec![Mutation::insert("bridges", Value::set([br]))]);
    let e = within("duplicate name", client.transact(&tx)).await.unwrap_err();
    assert_eq!(ovsdb_kind(&e), OvsdbErrorKind::ConstraintViolation, "{e}");
    let details = e.ovsdb_error().unwrap().details.clone().unwrap_or_default();
    assert!(details.contains("br0"), "details name the duplicate: {details}");

    // Constraint violation from the server: tag 5000 sent without schema validation.
    let mut tx = Transaction::new(DB);
    tx.update("Port", vec![Condition::eq("name", "br0")], Row::new().with("tag", Value::set([5000i64])));
    let e = within("tag 5000", conn.transact(&tx)).await.unwrap_err();
    assert_op_error(&e, "update", OvsdbErrorKind::ConstraintViolation);
    // The same with the schema is refused before sending, naming table and column.
    let mut tx = client.transaction();
    tx.update("Port", vec![Condition::eq("name", "br0")], Row::new().with("tag", Value::set([5000i64])));
    match client.transact(&tx).await {
        Err(TransactError::Invalid(ValidationError::BadValue { table, column, reason })) => {
            assert_eq!((table.as_str(), column.as_str()), ("Port", "tag"));
            assert!(reason.contains("5000"), "{reason}");
        }
        other => panic!("tag 5000 with schema: {other:?}"),
    }

    // Unknown column, bad enum, unknown table, read-only column: all before sending.
    let mut tx = client.transaction();
    tx.update("Bridge", vec![], Row::new().with("nmae", "x"));
    match client.transact(&tx).await {
        Err(TransactError::Invalid(ValidationError::UnknownColumn { table, column })) => {
            assert_eq!((table.as_str(), column.as_str()), ("Bridge", "nmae"))
        }
        other => panic!("unknown column: {other:?}"),
    }
    let mut tx = client.transaction();
    tx.update("Port", vec![], Row::new().with("vlan_mode", Value::set(["bogus"])));
    let e = client.transact(&tx).await.unwrap_err();
    match &e {
        TransactError::Invalid(ValidationError::BadValue { table, column, reason }) => {
            assert_eq!((table.as_str(), column.as_str()), ("Port", "vlan_mode"));
            assert!(reason.contains("bogus") && reason.contains("access"), "{reason}");
        }
        other => panic!("bad enum: {other:?}"),
    }
    assert!(e.to_string().contains("Port") && e.to_string().contains("vlan_mode"), "{e}");
    let mut tx = client.transaction();
    tx.select("Brige", vec![], None);
    assert!(matches!(
        client.transact(&tx).await,
        Err(TransactError::Invalid(ValidationError::UnknownTable { table, .. })) if table == "Brige"
    ));
    let mut tx = client.transaction();
    tx.mutate("Bridge", vec![Condition::eq("nmae", "br0")], vec![]);
    assert!(matches!(
        client.transact(&tx).await,
        Err(TransactError::Invalid(ValidationError::UnknownColumn { column, .. })) if column == "nmae"
    ));
    // The server would have said the same (no schema: it reaches the server).
    let mut tx = Transaction::new(DB);
    tx.update("Port", vec![], Row::new().with("vlan_mode", Value::set(["bogus"])));
    let e = within("bad enum unvalidated", conn.transact(&tx)).await.unwrap_err();
    assert_op_error(&e, "update", OvsdbErrorKind::ConstraintViolation);
    let mut tx = Transaction::new(DB);
    tx.update("Bridge", vec![], Row::new().with("nmae", "x"));
    let e = within("unknown column unvalidated", conn.transact(&tx)).await.unwrap_err();
    assert!(matches!(e, TransactError::Operation { index: 0, op: "update", .. }), "{e:?}");

    // Nothing of the failed transactions is visible.
    let names: Vec<String> =
        select(&conn, "Port", vec![]).await.iter().map(|r| r.get_as::<String>("name").unwrap()).collect();
    assert_eq!(names, vec!["br0".to_owned()]);
}

// ---------------------------------------------------------------------------------------------
// Monitors: v1, v2 (with a condition) and v3 see what ovs-vsctl does
// ---------------------------------------------------------------------------------------------

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
    vsctl(&srv, &["set", "port", "p1", "tag=7"]);
    let is_p1_change = |u: &TableUpdates| change_of(u, "Port", &p1).is_some();
    let e1 = update_where(&mut m1, "tag=7", is_p1_change).await;
    let e2 = update_where(&mut m2, "tag=7", is_p1_change).await;
    let e3 = update_where(&mut m3, "tag=7", is_p1_change).await;
    match change_of(&e1.updates, "Port", &p1) {
        Some(RowUpdate::Replace(r)) => assert_eq!(r.get("tag").unwrap().as_set(), [Atom::Integer(7)]),
        other => panic!("v1 tag=7: {other:?}"),
    }
    for e in [&e2, &e3] {
        match change_of(&e.updates, "Port", &p1) {
            Some(RowUpdate::Modify(d)) => {
                assert_eq!(d.get("tag").unwrap().as_set(), [Atom::Integer(7)]);
                assert_eq!(d.len(), 1, "{d:?}");
            }
            other => panic!("tag=7: {other:?}"),
        }
    }
    vsctl(&srv, &["set", "port", "p1", "tag=8"]);
    let e1 = update_where(&mut m1, "tag=8", is_p1_change).await;
    let e2 = update_where(&mut m2, "tag=8", is_p1_change).await;
    let e3 = update_where(&mut m3, "tag=8", is_p1_change).await;
    match change_of(&e1.updates, "Port", &p1) {
        Some(RowUpdate::Replace(r)) => assert_eq!(r.get("tag").unwrap().as_set(), [Atom::Integer(8)]),
        other => panic!("v1 tag=8: {other:?}"),
    }
    for e in [&e2, &e3] {
        match change_of(&e.updates, "Port", &p1) {
            // Only columns with max > 1 are diffed; an optional value (max 1) is sent new.
            Some(RowUpdate::Modify(d)) => assert_eq!(d.get("tag").unwrap().as_set(), [Atom::Integer(8)]),
            other => panic!("tag=8: {other:?}"),
        }
    }
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

// ---------------------------------------------------------------------------------------------
// Replica
// ---------------------------------------------------------------------------------------------

/// A tiny deterministic PRNG (no dependency): xorshift64*.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `changes` changes by one writer on ports `<prefix>-N` of bridge `br-burst`, in transactions of
/// up to 10 operations: inserts, tag updates, external_ids map inserts/deletes, deletes.
async fn burst(conn: Connection, prefix: String, seed: u64, changes: usize) {
    let mut rng = Rng(seed);
    let mut live: Vec<(String, Uuid)> = Vec::new();
    let mut made = 0;
    let mut serial = 0;
    while made < changes {
        let mut tx = Transaction::new(DB);
        let mut inserted = Vec::new();
        let mut deleted = Vec::new();
        let batch = 1 + rng.below(10) as usize;
        for _ in 0..batch.min(changes - made) {
            let pick = rng.below(100);
            let target = (!live.is_empty()).then(|| live[rng.below(live.len() as u64) as usize].clone());
            match (pick, target) {
                (0..=29, _) | (_, None) => {
                    serial += 1;
                    let name = format!("{prefix}-{serial}");
                    let iface = tx.insert("Interface", Row::new().with("name", name.as_str()));
                    let port = tx.insert(
                        "Port",
                        Row::new()
                            .with("name", name.as_str())
                            .with("interfaces", Value::set([iface]))
                            .with("external_ids", Value::map([("k0", name.as_str())])),
                    );
                    tx.mutate(
                        "Bridge",
                        vec![Condition::eq("name", "br-burst")],
                        vec![Mutation::insert("ports", Value::set([port.clone()]))],
                    );
                    inserted.push((name, port));
                }
                (30..=54, Some((name, _))) => {
                    let tag = if rng.below(5) == 0 { Value::empty_set() } else { Value::set([rng.below(4096) as i64]) };
                    tx.update("Port", vec![Condition::eq("name", name.as_str())], Row::new().with("tag", tag));
                }
                (55..=74, Some((name, _))) => {
                    let key = format!("k{}", rng.below(5));
                    let val = format!("v{}", rng.next());
                    // insert keeps an existing key: delete it first so the new value lands.
                    tx.mutate(
                        "Port",
                        vec![Condition::eq("name", name.as_str())],
                        vec![
                            Mutation::delete("external_ids", Value::set([key.as_str()])),
                            Mutation::insert("external_ids", Value::map([(key.as_str(), val.as_str())])),
                        ],
                    );
                }
                (75..=86, Some((name, _))) => {
                    let key = format!("k{}", rng.below(5));
                    tx.mutate(
                        "Port",
                        vec![Condition::eq("name", name.as_str())],
                        vec![Mutation::delete("external_ids", Value::set([key.as_str()]))],
                    );
                }
                (_, Some((name, uuid))) => {
                    if deleted.contains(&name) {
                        continue;
                    }
                    tx.mutate(
                        "Bridge",
                        vec![Condition::eq("name", "br-burst")],
                        vec![Mutation::delete("ports", Value::set([uuid.clone()]))],
                    );
                    deleted.push(name);
                }
            }
            made += 1;
        }
        if tx.is_empty() {
            continue;
        }
        let out = within("burst transaction", conn.transact(&tx)).await.unwrap_or_else(|e| panic!("burst: {e}"));
        live.retain(|(n, _)| !deleted.contains(n));
        for (name, nu) in inserted {
            live.push((name, out.uuid(&nu).expect("inserted").clone()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_matches_database_after_1000_changes() {
    let srv = server();
    let client = client_for(&srv).await;
    let writer = connect(&srv.unix_remote()).await;
    let mut tx = Transaction::new(DB);
    add_bridge(&mut tx, "br-burst");
    within("br-burst", writer.transact(&tx)).await.expect("br-burst");
    let seq0 = client.replica().seqno();

    // 1000 changes: four writers of 250 on their own ports, concurrently, on one session.
    let tasks: Vec<_> = (0..4u64)
        .map(|w| tokio::spawn(burst(writer.clone(), format!("w{w}"), 0x9e37_79b9_7f4a_7c15 ^ (w + 1), 250)))
        .collect();
    for t in tasks {
        within("burst writer", t).await.expect("burst writer panicked");
    }
    // A marker written last: once the replica shows it, every earlier change was applied.
    let mut tx = Transaction::new(DB);
    tx.update(DB, vec![], Row::new().with("external_ids", Value::map([("burst", "done")])));
    within("marker", writer.transact(&tx)).await.expect("marker");
    within(
        "replica settles",
        client
            .wait_until(T, |r| r.table(DB).rows().any(|(_, row)| row.map_str("external_ids", "burst") == Some("done"))),
    )
    .await
    .expect("replica shows the marker");
    assert!(client.replica().seqno() > seq0 + 10, "the replica applied many updates");
    assert!(client.replica().table("Port").len() > 20, "the burst left ports behind");
    assert_replica_matches_db(&client, &writer).await;
    assert_replica_matches_db(&client, &client.connection().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_transaction_gives_the_same_outcome() {
    let srv = server();
    let client = client_for(&srv).await;
    let mut tx = client.transaction();
    let br = add_bridge(&mut tx, "br-o");
    let sel = tx.select("Bridge", vec![Condition::eq("name", "br-o")], Some(vec!["name".into()]));
    let out = within("owned insert", client.transact_owned(tx)).await.expect("insert br-o");
    let uuid = out.uuid(&br).expect("the named row's UUID").clone();
    assert_eq!(out.rows(sel).len(), 1);
    assert_eq!(out.count(3), Some(1), "the mutate of the root row");
    assert!(matches!(out.results[2], OpResult::Inserted(ref u) if *u == uuid));
    // Errors name the operation and table as with a borrowed transaction.
    let conn = client.connection().unwrap();
    let mut tx = Transaction::new(DB);
    tx.comment("first");
    tx.update("Port", vec![Condition::eq("name", "br-o")], Row::new().with("tag", Value::set([5000i64])));
    match within("tag 5000", conn.transact_owned(tx)).await {
        Err(TransactError::Operation { index: 1, op: "update", table, error }) => {
            assert_eq!((table.as_str(), error.kind), ("Port", OvsdbErrorKind::ConstraintViolation))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_until_sees_own_insert() {
    let srv = server();
    let client = client_for(&srv).await;
    let mut tx = client.transaction();
    let br = add_bridge(&mut tx, "br-w");
    let out = within("insert br-w", client.transact(&tx)).await.expect("insert br-w");
    let uuid = out.uuid(&br).unwrap().clone();
    within(
        "wait_until",
        client
            .wait_until(T, |r| r.table("Bridge").find_one("name", &Atom::from("br-w")).map(|(u, _)| u) == Some(&uuid)),
    )
    .await
    .expect("the replica shows br-w");
    {
        let r = client.replica();
        let row = r.get("Bridge", &uuid).unwrap();
        assert_eq!(row.get_as::<String>("name").unwrap(), "br-w");
        let port = r.table("Port").find_one("name", &Atom::from("br-w")).expect("index on Port.name");
        assert_eq!(row.get_as::<Vec<Uuid>>("ports").unwrap(), vec![port.0.clone()]);
    }
    // A condition that never comes true is a timeout, not a hang.
    let e = within("wait_until times out", client.wait_until(Duration::from_millis(200), |_| false)).await;
    assert!(e.is_err());
}

// ---------------------------------------------------------------------------------------------
// Reconnect
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_server_restart_and_rebuilds_replica() {
    let srv = server();
    let client = client_for(&srv).await;
    let mut events = client.events();
    let mut tx = client.transaction();
    add_bridge(&mut tx, "br-old");
    add_bridge(&mut tx, "br-keep");
    within("add bridges", client.transact(&tx)).await.expect("add bridges");
    within("replica has br-old", client.wait_until(T, |r| r.table("Bridge").len() == 2)).await.unwrap();

    // A request in flight when the server dies: a wait that blocks on the server.
    let conn = client.connection().unwrap();
    let mut blocked = Transaction::new(DB);
    blocked.wait("Bridge", vec![Condition::eq("name", "never")], vec!["name".into()], Until::NotEqual, vec![], None);
    let in_flight = tokio::spawn(async move { conn.transact(&blocked).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!in_flight.is_finished(), "the blocking wait is held by the server");

    tokio::task::block_in_place(|| srv.kill());
    match within("in-flight request fails", in_flight).await.unwrap() {
        Err(TransactError::Rpc(RpcError::Disconnected { reason })) => assert!(!reason.is_empty()),
        other => panic!("in-flight request after the server died: {other:?}"),
    }
    match within("Disconnected event", events.recv()).await.unwrap() {
        ClientEvent::Disconnected { reason } => assert!(!reason.is_empty()),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    assert!(!client.is_connected());
    let mut tx = client.transaction();
    tx.comment("while down");
    match within("request while down", client.transact(&tx)).await {
        Err(TransactError::Rpc(RpcError::NotConnected { remote })) => assert!(remote.starts_with("unix:")),
        other => panic!("request while the server is down: {other:?}"),
    }
    assert!(matches!(client.connection(), Err(RpcError::NotConnected { .. })));
    // The replica keeps its last state while disconnected.
    assert_eq!(client.replica().table("Bridge").len(), 2);

    // Change the database while the server is down: br-old goes, br-offline comes.
    let offline = json!([DB,
        {"op": "insert", "table": "Interface", "row": {"name": "br-offline", "type": "internal"}, "uuid-name": "i"},
        {"op": "insert", "table": "Port", "row": {"name": "br-offline", "interfaces": ["named-uuid", "i"]}, "uuid-name": "p"},
        {"op": "insert", "table": "Bridge", "row": {"name": "br-offline", "ports": ["named-uuid", "p"]}, "uuid-name": "b"},
        {"op": "mutate", "table": DB, "where": [], "mutations": [["bridges", "insert", ["named-uuid", "b"]]]}]);
    let old = client.replica().table("Bridge").find_one("name", &Atom::from("br-old")).map(|(u, _)| u.clone());
    let old = old.expect("br-old in replica");
    let detach = json!([DB, {"op": "mutate", "table": DB, "where": [],
        "mutations": [["bridges", "delete", ["set", [["uuid", old.to_string()]]]]]}]);
    for t in [offline, detach] {
        let out = tokio::task::block_in_place(|| {
            std::process::Command::new("ovsdb-tool")
                .arg("transact")
                .arg(srv.db_path())
                .arg(t.to_string())
                .output()
                .expect("run ovsdb-tool")
        });
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && !stdout.contains("\"error\""), "ovsdb-tool transact: {stdout} {out:?}");
    }

    tokio::task::block_in_place(|| srv.restart());
    let ev = within("ReplicaReset event", events.recv()).await.unwrap();
    assert_eq!(ev, ClientEvent::ReplicaReset);
    assert!(client.is_connected());
    let names = |client: &Client| -> Vec<String> {
        let mut v: Vec<String> =
            client.replica().table("Bridge").rows().map(|(_, r)| r.get_as::<String>("name").unwrap()).collect();
        v.sort();
        v
    };
    assert_eq!(names(&client), vec!["br-keep".to_owned(), "br-offline".to_owned()], "replica rebuilt");

    // ovs-vsctl on the restarted server, and the client's own transactions, work again.
    vsctl(&srv, &["add-br", "br-vsctl"]);
    let mut tx = client.transaction();
    add_bridge(&mut tx, "br-after");
    within("transaction after reconnect", client.transact(&tx)).await.expect("transact after reconnect");
    within("replica sees both", client.wait_until(T, |r| r.table("Bridge").len() == 4)).await.unwrap();
    assert_eq!(names(&client), ["br-after", "br-keep", "br-offline", "br-vsctl"]);
    assert_replica_matches_db(&client, &client.connection().unwrap()).await;
    let listed = vsctl(&srv, &["list-br"]);
    assert_eq!(listed.lines().collect::<Vec<_>>(), ["br-after", "br-keep", "br-offline", "br-vsctl"]);
}

// ---------------------------------------------------------------------------------------------
// ovs-vsctl interop
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_created_by_client_is_visible_to_ovs_vsctl() {
    let srv = server();
    let client = client_for(&srv).await;
    let mut tx = client.transaction();
    let br = add_bridge(&mut tx, "br-client");
    let i = tx.len();
    tx.update(
        "Bridge",
        vec![Condition::eq("name", "br-client")],
        Row::new().with("external_ids", Value::map([("owner", "test")])),
    );
    let out = within("create br-client", client.transact(&tx)).await.expect("create br-client");
    assert_eq!(out.count(i), Some(1), "later operations see the rows inserted earlier in the transaction");
    assert!(out.uuid(&br).is_some());
    let listed = vsctl(&srv, &["list-br"]);
    assert!(listed.lines().any(|l| l == "br-client"), "ovs-vsctl list-br: {listed}");
    assert_eq!(vsctl(&srv, &["list-ports", "br-client"]), "", "the bridge's own port is not listed");
    assert_eq!(vsctl(&srv, &["get", "Port", "br-client", "name"]), "br-client");
    vsctl(&srv, &["br-exists", "br-client"]);
    assert_eq!(vsctl(&srv, &["get", "Interface", "br-client", "type"]), "internal");
    assert_eq!(vsctl(&srv, &["br-get-external-id", "br-client", "owner"]), "test");

    // And the other way: what ovs-vsctl writes lands in the replica.
    vsctl(&srv, &["add-port", "br-client", "vp1", "--", "set", "Interface", "vp1", "type=internal"]);
    vsctl(&srv, &["br-set-external-id", "br-client", "k", "v"]);
    within(
        "replica sees vp1 and k=v",
        client.wait_until(T, |r| {
            r.table("Port").find_one("name", &Atom::from("vp1")).is_some()
                && r.table("Bridge").rows().any(|(_, b)| b.map_str("external_ids", "k") == Some("v"))
        }),
    )
    .await
    .expect("replica sees ovs-vsctl's changes");
    assert_replica_matches_db(&client, &client.connection().unwrap()).await;
}
