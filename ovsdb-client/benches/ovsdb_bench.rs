//! ovsdb-client against a private ovsdb-server (testbed), and the same work through ovs-vsctl.
//!
//! `cargo bench -p ovsdb-client --bench ovsdb_bench` prints a markdown table:
//! - one transaction adding 1000 ports (Interface + Port rows and the Bridge `ports` mutation);
//! - 1000 sequential one-port transactions: total and per-transaction mean / p50 / p99;
//! - the same two through `ovs-vsctl --no-wait` (one invocation with 1000 `-- add-port`, and
//!   separate invocations);
//! - the memory a `Client`'s replica takes for 10,000 Interface rows (VmRSS before and after);
//! - the framer on a 50 MB message.
//!
//! Every scenario gets a fresh ovsdb-server, so each starts from an empty database.
//! Environment: `BENCH_VSCTL_SEPARATE` = number of separate ovs-vsctl invocations (default 1000).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ovsdb_client::framing::Framer;
use ovsdb_client::{
    Client, ClientOptions, Condition, Connection, DatabaseSchema, MonitorRequests, Mutation, Remote, Row, Transaction,
    Value,
};
use serde_json::{json, Value as Json};
use testbed::OvsdbServer;

const DB: &str = "Open_vSwitch";

struct Figure {
    what: String,
    value: String,
}

fn fig(out: &mut Vec<Figure>, what: impl Into<String>, value: impl Into<String>) {
    let f = Figure { what: what.into(), value: value.into() };
    eprintln!("  {}: {}", f.what, f.value);
    out.push(f);
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// VmRSS of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    let kb: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmRSS value");
    kb * 1024
}

/// Adds Interface + Port rows named `names` to `bridge` in one transaction.
fn add_ports_tx(schema: &Arc<DatabaseSchema>, bridge: &str, names: impl IntoIterator<Item = String>) -> Transaction {
    let mut tx = Transaction::with_schema(schema.clone());
    let mut ports = Vec::new();
    for name in names {
        let iface = tx.insert("Interface", Row::new().with("name", name.as_str()));
        ports.push(tx.insert("Port", Row::new().with("name", name.as_str()).with("interfaces", Value::set([iface]))));
    }
    tx.mutate("Bridge", vec![Condition::eq("name", bridge)], vec![Mutation::insert("ports", Value::set(ports))]);
    tx
}

async fn connect(server: &OvsdbServer) -> (Connection, Arc<DatabaseSchema>) {
    let remote: Remote = server.unix_remote().parse().unwrap();
    let conn = Connection::connect(&remote).await.expect("connect");
    let schema = Arc::new(conn.get_schema(DB).await.expect("get_schema"));
    (conn, schema)
}

/// Ports in the database, not counting the bridge's own internal port.
fn port_count(server: &OvsdbServer) -> usize {
    server.vsctl(&["--columns=name", "--bare", "list", "Port"]).split_whitespace().count() - 1
}

async fn client_one_transaction(out: &mut Vec<Figure>) {
    let server = OvsdbServer::start();
    server.vsctl(&["add-br", "br-a"]);
    let (conn, schema) = connect(&server).await;
    let started = Instant::now();
    let tx = add_ports_tx(&schema, "br-a", (0..1000).map(|i| format!("pa{i}")));
    let built = started.elapsed();
    let outcome = conn.transact(&tx).await.expect("1000-port transaction");
    let took = started.elapsed();
    assert_eq!(outcome.results.len(), 2001);
    assert_eq!(port_count(&server), 1000);
    fig(out, "ovsdb-client: 1000 ports in ONE transaction (2001 ops)", ms(took));
    fig(out, "  of which building + validating the transaction", ms(built));
}

async fn client_sequential(out: &mut Vec<Figure>) {
    let server = OvsdbServer::start();
    server.vsctl(&["add-br", "br-b"]);
    let (conn, schema) = connect(&server).await;
    let mut times = Vec::with_capacity(1000);
    let started = Instant::now();
    for i in 0..1000 {
        let t = Instant::now();
        let tx = add_ports_tx(&schema, "br-b", [format!("pb{i}")]);
        conn.transact(&tx).await.expect("one-port transaction");
        times.push(t.elapsed());
    }
    let total = started.elapsed();
    assert_eq!(port_count(&server), 1000);
    times.sort();
    let mean = total / 1000;
    fig(out, "ovsdb-client: 1000 sequential one-port transactions, total", ms(total));
    fig(out, "  per transaction mean / p50 / p99", format!("{} / {} / {}", us(mean), us(times[500]), us(times[990])));
}

fn vsctl_one_invocation(out: &mut Vec<Figure>) {
    let server = OvsdbServer::start();
    server.vsctl(&["add-br", "br-c"]);
    let names: Vec<String> = (0..1000).map(|i| format!("pc{i}")).collect();
    let mut args: Vec<&str> = Vec::new();
    for n in &names {
        args.extend(["--", "add-port", "br-c", n.as_str()]);
    }
    let started = Instant::now();
    server.vsctl(&args);
    let took = started.elapsed();
    assert_eq!(port_count(&server), 1000);
    fig(out, "ovs-vsctl --no-wait: ONE invocation with 1000 `-- add-port`", ms(took));
}

fn vsctl_separate(out: &mut Vec<Figure>) {
    let n: usize = std::env::var("BENCH_VSCTL_SEPARATE").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let server = OvsdbServer::start();
    server.vsctl(&["add-br", "br-d"]);
    let mut times = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        // Same command line as OvsdbServer::vsctl, spelled out so nothing but the process runs.
        let o = Command::new("ovs-vsctl")
            .args(["--no-wait", "--timeout=10", &format!("--db={}", server.unix_remote())])
            .args(["add-port", "br-d", &format!("pd{i}")])
            .output()
            .expect("ovs-vsctl");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        times.push(t.elapsed());
    }
    let total = started.elapsed();
    assert_eq!(port_count(&server), n);
    let first: Duration = times[..n / 10].iter().sum::<Duration>() / (n / 10) as u32;
    let last: Duration = times[n - n / 10..].iter().sum::<Duration>() / (n / 10) as u32;
    times.sort();
    let what = if n == 1000 {
        "ovs-vsctl --no-wait: 1000 separate invocations, total".to_owned()
    } else {
        format!("ovs-vsctl --no-wait: {n} separate invocations, total (NOT 1000)")
    };
    fig(out, what, ms(total));
    fig(
        out,
        "  per invocation mean / p50 / p99",
        format!("{} / {} / {}", ms(total / n as u32), ms(times[n / 2]), ms(times[n * 99 / 100])),
    );
    fig(
        out,
        "  mean of the first 10% / the last 10% (grows with the database)",
        format!("{} / {}", ms(first), ms(last)),
    );
}

async fn replica_memory(out: &mut Vec<Figure>) {
    const ROWS: usize = 10_000;
    let server = OvsdbServer::start();
    server.vsctl(&["add-br", "br-m"]);
    {
        // Interface is not a root table: each needs a Port (on a bridge) to survive.
        let (conn, schema) = connect(&server).await;
        for batch in 0..ROWS / 1000 {
            let tx = add_ports_tx(&schema, "br-m", (0..1000).map(|i| format!("m{batch}-{i}")));
            conn.transact(&tx).await.expect("batch insert");
        }
    }
    let remote: Remote = server.unix_remote().parse().unwrap();
    let options =
        || ClientOptions::new(remote.clone(), DB).monitor(MonitorRequests::new().table::<&str>("Interface", []));
    // Interface rows the replica will hold: ours plus the bridge's internal interface.
    let want = ROWS + 1;
    let before = rss();
    let started = Instant::now();
    let first = Client::connect(options()).await.expect("client");
    let connect_time = started.elapsed();
    assert_eq!(first.replica().table("Interface").len(), want);
    let after_first = rss();
    let second = Client::connect(options()).await.expect("second client");
    assert_eq!(second.replica().table("Interface").len(), want);
    let after_second = rss();
    let columns = first.replica().table("Interface").rows().next().map(|(_, r)| r.len()).unwrap_or(0);
    let per_row = |a: u64, b: u64| format!("{:.0} B/row", a.saturating_sub(b) as f64 / want as f64);
    fig(out, format!("Client::connect replicating {want} Interface rows (all {columns} columns)"), ms(connect_time));
    fig(
        out,
        "  VmRSS growth, first client (incl. transient parse buffers kept by malloc)",
        format!("{:.1} MiB = {}", (after_first - before) as f64 / 1048576.0, per_row(after_first, before)),
    );
    fig(
        out,
        "  VmRSS growth, second client (steady-state replica)",
        format!("{:.1} MiB = {}", (after_second - after_first) as f64 / 1048576.0, per_row(after_second, after_first)),
    );
    drop((first, second));
}

fn framer_throughput(out: &mut Vec<Figure>) {
    // (1) one 50 MB string; (2) a 50 MB monitor-like reply of many small rows.
    let string_msg = json!({"id": 1, "error": null, "result": "x".repeat(50 << 20)}).to_string().into_bytes();
    let mut rows = serde_json::Map::new();
    let mut i = 0u64;
    let mut size = 0;
    while size < 50 << 20 {
        let row = json!({"insert": {"name": format!("tap{i}"), "type": "internal", "ofport": i,
            "external_ids": ["map", [["iface-id", format!("vm-{i}")], ["attached-mac", "52:54:00:12:34:56"]]],
            "options": ["map", [["key", "flow"], ["remote_ip", "198.18.0.2"]]]}});
        size += row.to_string().len() + 40;
        rows.insert(format!("{:08x}-0000-4000-8000-{:012x}", i, i), row);
        i += 1;
    }
    let rows_msg =
        json!({"method": "update2", "id": null, "params": ["m1", {"Interface": rows}]}).to_string().into_bytes();
    let rows_label = format!("{:.0} MB update2 of {i} Interface rows", rows_msg.len() as f64 / 1e6);
    let string_label = format!("{:.0} MB reply of one string", string_msg.len() as f64 / 1e6);
    for (label, msg) in [(string_label, &string_msg), (rows_label, &rows_msg)] {
        let mb = msg.len() as f64 / 1e6;
        // Warm-up, so no timed run pays for first-touch page faults; parsed values are dropped
        // outside the timed sections (freeing 200k rows is itself ~100 ms).
        drop(std::hint::black_box(serde_json::from_slice::<Json>(msg).unwrap()));
        let started = Instant::now();
        let mut f = Framer::default();
        let mut got = Vec::new();
        for chunk in msg.chunks(64 * 1024) {
            f.push(chunk);
            while let Some(m) = f.next_message().expect("frame") {
                got.push(m);
            }
        }
        let framed = started.elapsed();
        assert_eq!(got.len(), 1);
        drop(got);
        // The split alone: withhold the last byte, so the message never completes.
        let started = Instant::now();
        let mut f = Framer::default();
        for chunk in msg[..msg.len() - 1].chunks(64 * 1024) {
            f.push(chunk);
            assert!(f.next_message().expect("frame").is_none());
        }
        let scan_only = started.elapsed();
        let started = Instant::now();
        let parsed: Json = serde_json::from_slice(msg).unwrap();
        let parse_only = started.elapsed();
        drop(std::hint::black_box(parsed));
        let rate = |d: Duration| format!("{} = {:.0} MB/s", ms(d), mb / d.as_secs_f64());
        fig(out, format!("Framer, {label}, 64 KiB reads: split + parse"), rate(framed));
        fig(out, "  split only (last byte withheld, so nothing is parsed)", rate(scan_only));
        fig(out, "  serde_json::from_slice alone, for comparison", rate(parse_only));
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and a 45 s benchmark has no place in the test run: there it only proves it builds.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("ovsdb_bench: benchmark not run (use `cargo bench -p ovsdb-client --bench ovsdb_bench`)");
        return;
    }
    let started = Instant::now();
    let mut out = Vec::new();
    eprintln!("ovsdb-client benchmark (each scenario on a fresh private ovsdb-server)");
    client_one_transaction(&mut out).await;
    client_sequential(&mut out).await;
    vsctl_one_invocation(&mut out);
    vsctl_separate(&mut out);
    replica_memory(&mut out).await;
    framer_throughput(&mut out);
    println!();
    println!("| measurement | result |");
    println!("|---|---|");
    for f in &out {
        println!("| {} | {} |", f.what.replace('|', "\\|"), f.value);
    }
    println!();
    println!("(total benchmark time {:.1} s)", started.elapsed().as_secs_f64());
}
