//! Section 3, the control plane at scale: one agent, OVSDB without ovs-vswitchd, 1,000 peers x
//! 20 tenants written straight into etcd.

use std::time::{Duration, Instant};

use overlay::model::{HostRecord, SubnetLease, Tenant, TunnelType, Vni};
use overlay_tests::AgentProc;
use serde_json::json;
use testbed::{Etcd, OvsdbServer};

use crate::procfs::{clk_tck, counters, cpu_ticks, mem, rss_kib};
use crate::report::{env_num, f1, ms, stats, Report};

/// How long the agent may take to answer its API after a start against a full etcd.
const AGENT_READY: Duration = Duration::from_secs(60);

/// (OVSDB transactions, reconcile passes) once the agent has acted on an event the caller has
/// seen it act on: the passes are those begun so far, counted before the two passes of
/// [`AgentProc::wait_pass_after`] that show the last of them has ended; the transactions are
/// all of them (those two passes write nothing).
fn settled(agent: &AgentProc) -> (u64, u64) {
    let (_, passes) = counters(&agent.status());
    let (transactions, _) = counters(&agent.wait_pass_after(passes));
    (transactions, passes)
}

/// "median / median (max max / max)" of OVSDB transactions and passes per event.
fn per_event(transactions: &[f64], passes: &[f64]) -> String {
    let (t, p) = (stats(transactions), stats(passes));
    format!("{} / {} (max {} / {})", t.p50, p.p50, t.max, p.max)
}

/// `BENCH_AGENT_ENV="K=V,K2=V2"`: extra environment for the scale benchmark's agent (to try
/// allocator or logging settings).
fn extra_env() -> Vec<(String, String)> {
    let spec = std::env::var("BENCH_AGENT_ENV").unwrap_or_default();
    spec.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

fn peer(i: usize) -> HostRecord {
    HostRecord {
        hostname: format!("peer-{i:05}"),
        underlay_ip: format!("10.{}.{}.{}", 64 + (i >> 16), (i >> 8) & 0xff, i & 0xff).parse().expect("ip"),
        system_id: format!("sys-peer-{i:05}"),
        machine_id: format!("machine-peer-{i:05}"),
        tunnel_types: TunnelType::ALL.to_vec(),
        version: "bench".into(),
    }
}

fn scale_tenant(t: usize) -> Tenant {
    let tunnel = if t % 2 == 0 { TunnelType::Vxlan } else { TunnelType::Gre };
    Tenant::new(
        &format!("scale-{t:02}"),
        Vni::new(9000 + t as u32).expect("vni"),
        "10.0.0.0/8".parse().unwrap(),
        tunnel,
        24,
    )
    .expect("tenant")
}

/// Lease `index` (1-based) of a tenant: 10.a.b.0/24, never the gateway's 10.0.0.0/24.
fn scale_lease(tenant: &Tenant, index: usize, h: &HostRecord) -> SubnetLease {
    SubnetLease {
        tenant: tenant.name().to_owned(),
        subnet: format!("10.{}.{}.0/24", index >> 8, index & 0xff).parse().expect("subnet"),
        host: h.hostname.clone(),
        underlay_ip: h.underlay_ip,
    }
}

/// Every etcd key/value a peer's registration writes: host record, underlay claim, leases.
fn peer_kvs(prefix: &str, h: &HostRecord, tenants: &[Tenant], lease_index: usize) -> Vec<(String, Vec<u8>)> {
    let mut kv = vec![
        (format!("{prefix}/hosts/{}", h.hostname), h.to_json()),
        (
            format!("{prefix}/underlays/{}", h.underlay_ip),
            json!({"host": h.hostname, "system_id": h.system_id}).to_string().into_bytes(),
        ),
    ];
    for t in tenants {
        let l = scale_lease(t, lease_index, h);
        kv.push((
            format!("{prefix}/subnets/{}/{}", t.name(), overlay::model::lease_key_segment(&l.subnet)),
            l.to_json(),
        ));
    }
    kv
}

async fn etcd_put_all(c: &mut etcd_client::Client, kvs: Vec<(String, Vec<u8>)>) {
    // etcd's default limit is 128 operations per transaction.
    for chunk in kvs.chunks(100) {
        let ops: Vec<etcd_client::TxnOp> =
            chunk.iter().map(|(k, v)| etcd_client::TxnOp::put(k.as_str(), v.clone(), None)).collect();
        c.txn(etcd_client::Txn::new().and_then(ops)).await.expect("etcd txn");
    }
}

fn tunnel_count(replica: &ovsdb_client::Replica) -> usize {
    replica
        .table("Interface")
        .rows()
        .filter(|(_, r)| r.get_as::<String>("name").is_ok_and(|n| n.starts_with("vx-") || n.starts_with("gr-")))
        .count()
}

async fn ovsdb_watcher(server: &OvsdbServer) -> ovsdb_client::Client {
    let remote: ovsdb_client::Remote = server.unix_remote().parse().expect("remote");
    let opts = ovsdb_client::ClientOptions::new(remote, "Open_vSwitch")
        .monitor(ovsdb_client::MonitorRequests::new().table("Interface", ["name"]))
        .index("Interface", "name");
    ovsdb_client::Client::connect(opts).await.expect("OVSDB watcher")
}

async fn wait_tunnels(w: &ovsdb_client::Client, want: usize, within: Duration) {
    if w.wait_until(within, |r| tunnel_count(r) == want).await.is_err() {
        panic!("OVSDB did not reach {want} tunnel ports within {within:?} (has {})", tunnel_count(&w.replica()));
    }
}

pub(crate) fn bench_scale(r: &mut Report) {
    let peers = env_num("BENCH_SCALE_PEERS", 1000);
    let n_tenants = env_num("BENCH_SCALE_TENANTS", 20);
    let idle_secs = env_num("BENCH_IDLE_SECS", 10) as u64;
    let total = peers * n_tenants;
    r.line(format!("### 3. Control plane at scale ({peers} peers x {n_tenants} tenants = {total} tunnel ports)"));
    r.line("");
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let etcd = Etcd::start();
    let prefix = "/scale";
    let tenants: Vec<Tenant> = (0..n_tenants).map(scale_tenant).collect();
    let t = Instant::now();
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([etcd.endpoint()], None).await.expect("etcd");
        let mut kvs = Vec::new();
        for t in &tenants {
            kvs.push((format!("{prefix}/tenants/{}", t.name()), t.to_json()));
            kvs.push((format!("{prefix}/vnis/{}", t.vni()), t.name().as_bytes().to_vec()));
        }
        for i in 1..=peers {
            kvs.extend(peer_kvs(prefix, &peer(i), &tenants, i));
        }
        etcd_put_all(&mut c, kvs).await;
    });
    let populate = t.elapsed();

    let ovsdb1 = OvsdbServer::start();
    ovsdb1.vsctl(&["set", "Open_vSwitch", ".", "external_ids:system-id=scale-local"]);
    let args: Vec<String> = [
        "run",
        "--hostname",
        "scale-local",
        "--underlay-ip",
        "198.51.100.1",
        "--underlay-mtu",
        "1500",
        "--etcd-endpoints",
        &etcd.endpoint(),
        "--etcd-prefix",
        prefix,
        "--datapath-type",
        "netdev",
        "--log-level",
        "info",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut agent = AgentProc::from_args("scale-local", args, extra_env());
    let mut rows: Vec<Vec<String>> = Vec::new();
    let row = |what: &str, value: String| vec![what.to_owned(), value];

    // (a) Joining the tenants one by one: each join adds `peers` tunnel ports.
    agent.set_arg("--ovsdb", &ovsdb1.unix_remote());
    agent.launch(AGENT_READY);
    let w1 = rt.block_on(ovsdb_watcher(&ovsdb1));
    let (tx0, _) = counters(&agent.status());
    let mut joins = Vec::new();
    for (k, t) in tenants.iter().enumerate() {
        let start = Instant::now();
        agent.cli_ok(&["tenant", "join", t.name()]);
        rt.block_on(wait_tunnels(&w1, peers * (k + 1), Duration::from_secs(120)));
        joins.push(ms(start.elapsed()));
    }
    let st = agent.wait_pass_after_now();
    let (tx1, _) = counters(&st);
    let machine = st["host"]["machine_id"].as_str().expect("a machine id").to_owned();
    let js = stats(&joins);
    rows.push(row(
        &format!("`tenant join` -> its {peers} tunnel ports in OVSDB (p50 / p99 / min-max over {n_tenants} joins)"),
        format!("{} / {} / {}-{} ms", f1(js.p50), f1(js.p99), f1(js.min), f1(js.max)),
    ));
    rows.push(row("OVSDB transactions for the joins", format!("{} for {n_tenants} joins", tx1 - tx0)));
    agent.stop();
    drop(w1);

    // (b) Cold start: same registration and leases, an empty OVSDB: every port in one pass.
    let ovsdb2 = OvsdbServer::start();
    ovsdb2.vsctl(&["set", "Open_vSwitch", ".", "external_ids:system-id=scale-local"]);
    let w2 = rt.block_on(ovsdb_watcher(&ovsdb2));
    let server_pid = ovsdb2.pid().expect("ovsdb-server pid");
    let (server_ticks, bench_ticks) = (cpu_ticks(server_pid), cpu_ticks(std::process::id()));
    // A machine's identity is bound to its OVS database: with a new one, the agent is another
    // machine, which takes the hostname over only when told to.
    let start = Instant::now();
    agent.set_arg("--ovsdb", &ovsdb2.unix_remote());
    agent.set_arg("--take-over", &machine);
    agent.launch(AGENT_READY);
    agent.remove_arg("--take-over");
    let ready = start.elapsed();
    rt.block_on(wait_tunnels(&w2, total, Duration::from_secs(600)));
    let cold = start.elapsed();
    // Whose CPU the cold start is: the agent (which runs nothing else), ovsdb-server, and
    // this process (whose watcher decodes the same updates as the agent, on the same 2 CPUs).
    let secs = |ticks: u64| ticks as f64 / clk_tck();
    let cpu = (
        secs(cpu_ticks(agent.pid().expect("agent running"))),
        secs(cpu_ticks(server_pid) - server_ticks),
        secs(cpu_ticks(std::process::id()) - bench_ticks),
    );
    // Read once the cold start's passes are over: the passes begun by the time the ports were
    // in, then the transactions and what the agent holds.
    let (_, rec) = counters(&agent.status());
    let st = agent.wait_pass_after(rec);
    let (tx, _) = counters(&st);
    let pid = agent.pid().expect("agent running");
    let (rss, hwm) = rss_kib(pid);
    let tunnels_in_status = st["tunnels"].as_array().map_or(0, Vec::len);
    rows.push(row(
        &format!("cold start: agent spawned -> all {total} tunnel ports in OVSDB (empty OVSDB, everything in etcd)"),
        format!("{:.2} s (API ready after {:.0} ms)", cold.as_secs_f64(), ms(ready)),
    ));
    rows.push(row(
        "cold start: OVSDB transactions / reconcile passes",
        format!("{tx} / {rec} (status lists {tunnels_in_status} tunnels)"),
    ));
    rows.push(row(
        "cold start: CPU time of the agent / ovsdb-server / the benchmark's OVSDB watcher",
        format!("{:.2} / {:.2} / {:.2} s", cpu.0, cpu.1, cpu.2),
    ));
    rows.push(row(
        "agent VmRSS after the cold start, once a later pass is over (VmHWM: peak)",
        format!("{} (peak {})", mem(rss), mem(hwm)),
    ));
    if let Some(p) = ovsdb2.pid() {
        rows.push(row("ovsdb-server VmRSS, for comparison", format!("{:.1} MiB", rss_kib(p).0 as f64 / 1024.0)));
    }

    // Idle CPU: the CPU time the agent uses over a set interval with nothing to do (the
    // interval is what is measured, not a wait).
    let tck = clk_tck();
    let c0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(idle_secs));
    let c1 = cpu_ticks(pid);
    let idle_pct = (c1 - c0) as f64 / tck / idle_secs as f64 * 100.0;
    rows.push(row(
        &format!("idle CPU over {idle_secs} s (utime+stime)"),
        format!("{:.2} % of one core ({} ticks at {tck:.0} Hz)", idle_pct, c1 - c0),
    ));

    // (c) One peer joining (host record, underlay claim and a lease in every tenant, in one
    // etcd transaction), then leaving (all its keys deleted, as when its host lease expires).
    let trials = 10;
    let (mut join_ms, mut leave_ms) = (Vec::new(), Vec::new());
    let (mut join_tx, mut join_rec, mut leave_tx, mut leave_rec) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut c = rt.block_on(etcd_client::Client::connect([etcd.endpoint()], None)).expect("etcd");
    for k in 0..trials {
        let h = peer(peers + 1 + k);
        let peer_flows = |status: &serde_json::Value| -> u64 {
            let peers = status["peers"].as_array().cloned().unwrap_or_default();
            peers.iter().find(|p| p["host"] == h.hostname.as_str()).and_then(|p| p["flows"].as_u64()).unwrap_or(0)
        };
        let kvs = peer_kvs(prefix, &h, &tenants, peers + 1 + k);
        let keys: Vec<String> = kvs.iter().map(|(k, _)| k.clone()).collect();
        let (tx_a, rec_a) = counters(&agent.status());
        let start = Instant::now();
        rt.block_on(async {
            let ops: Vec<etcd_client::TxnOp> =
                kvs.iter().map(|(k, v)| etcd_client::TxnOp::put(k.as_str(), v.clone(), None)).collect();
            c.txn(etcd_client::Txn::new().and_then(ops)).await.expect("etcd txn");
        });
        testbed::wait_until(Duration::from_secs(30), "the peer's flows", || peer_flows(&agent.status()) > 0);
        join_ms.push(ms(start.elapsed()));
        let (tx_b, rec_b) = settled(&agent);
        join_tx.push((tx_b - tx_a) as f64);
        join_rec.push((rec_b - rec_a) as f64);
        let (tx_b, rec_b) = counters(&agent.status());
        let start = Instant::now();
        rt.block_on(async {
            let ops: Vec<etcd_client::TxnOp> =
                keys.iter().map(|k| etcd_client::TxnOp::delete(k.as_str(), None)).collect();
            c.txn(etcd_client::Txn::new().and_then(ops)).await.expect("etcd txn");
        });
        testbed::wait_until(Duration::from_secs(30), "the peer's flows gone", || peer_flows(&agent.status()) == 0);
        leave_ms.push(ms(start.elapsed()));
        let (tx_c, rec_c) = settled(&agent);
        leave_tx.push((tx_c - tx_b) as f64);
        leave_rec.push((rec_c - rec_b) as f64);
    }
    let (jm, lm) = (stats(&join_ms), stats(&leave_ms));
    rows.push(row(
        &format!("one peer joins ({n_tenants} leases): etcd write -> its {n_tenants} ports in OVSDB (p50 / p99 / min-max, {trials} trials)"),
        format!("{} / {} / {}-{} ms", f1(jm.p50), f1(jm.p99), f1(jm.min), f1(jm.max)),
    ));
    rows.push(row("  OVSDB transactions / reconcile passes per join (median, max)", per_event(&join_tx, &join_rec)));
    rows.push(row(
        &format!("one peer leaves: etcd delete -> its {n_tenants} ports gone (p50 / p99 / min-max)"),
        format!("{} / {} / {}-{} ms", f1(lm.p50), f1(lm.p99), f1(lm.min), f1(lm.max)),
    ));
    rows.push(row("  OVSDB transactions / reconcile passes per leave (median, max)", per_event(&leave_tx, &leave_rec)));
    // Read like the others, once the last event's passes are over (they are, see `settled`):
    // the figure is what the agent holds, not where a pass happens to be (its peak is VmHWM).
    let (rss2, hwm2) = rss_kib(pid);
    rows.push(row(
        "agent VmRSS after the last peer event, once its passes are over (VmHWM)",
        format!("{} ({})", mem(rss2), mem(hwm2)),
    ));

    // (d) Restart against the full OVSDB: nothing to change.
    agent.stop();
    let start = Instant::now();
    agent.launch(AGENT_READY);
    let ready = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (tx, rec) = loop {
        let st = agent.status();
        let (tx, rec) = counters(&st);
        if st["last_reconcile_ms_ago"].is_u64() || Instant::now() > deadline {
            break (tx, rec);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let first_pass = start.elapsed();
    // Whatever the first pass leads to is over once a later pass is.
    let (tx2, _) = counters(&agent.wait_pass_after(rec));
    let (rss3, hwm3) = rss_kib(agent.pid().expect("agent running"));
    rows.push(row(
        "restart against the full OVSDB: spawn -> first reconcile done",
        format!("{:.2} s (API ready after {:.0} ms)", first_pass.as_secs_f64(), ms(ready)),
    ));
    rows.push(row(
        "  OVSDB transactions / reconcile passes at the first pass; OVSDB transactions once a later pass is over",
        format!("{tx} / {rec}; {tx2}"),
    ));
    rows.push(row(
        "  agent VmRSS after this restart, once a later pass is over (replica and caches, no big transaction; VmHWM)",
        format!("{} ({})", mem(rss3), mem(hwm3)),
    ));
    agent.stop();
    if std::env::var_os("BENCH_DEBUG").is_some() {
        eprintln!("--- agent log ---\n{}", agent.logs());
    }
    r.table(&["measurement", "result"], &rows);
    r.line(format!(
        "etcd was filled with {} keys in {:.1} s before the agent started (100 puts per etcd transaction).",
        2 * n_tenants + peers * (2 + n_tenants),
        populate.as_secs_f64()
    ));
    r.line("");
    drop(w2);
}
