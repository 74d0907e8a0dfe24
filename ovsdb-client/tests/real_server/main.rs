//! ovsdb-client against a REAL ovsdb-server (Debian's openvswitch-switch 3.1), one private
//! server per test (`testbed::OvsdbServer`). Nothing is skipped: without ovsdb-server the
//! fixture panics with what to install. Every wait is bounded, so a bug fails instead of hanging.
//!
//! One module per subject: RPCs and locks ([`rpc`]), every operation of a transaction
//! ([`operations`]), typed errors ([`errors`]), monitors ([`monitors`]), the client's replica
//! ([`replica`]), reconnecting ([`reconnect`]), and ovs-vsctl seeing what the client writes
//! ([`interop`]). The helpers every module uses are here.

mod errors;
mod interop;
mod monitors;
mod operations;
mod reconnect;
mod replica;
mod rpc;

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

/// A private server, a client of it, and a transaction of that client that adds bridge `name`
/// (see [`add_bridge`]; its named UUID is returned).
async fn client_adding_bridge(name: &str) -> (OvsdbServer, Client, Transaction, NamedUuid) {
    let srv = server();
    let client = client_for(&srv).await;
    let mut tx = client.transaction();
    let br = add_bridge(&mut tx, name);
    (srv, client, tx, br)
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
