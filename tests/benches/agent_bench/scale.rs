//! Section "scale", the data plane's control at scale: one real host (ovsdb-server and ovs-vswitchd
//! on the netdev datapath, in a network namespace) whose agent sees 1,000 peers x 20 tenants,
//! each peer with one container per tenant, written straight into etcd. The peers exist only
//! as records: their underlay addresses are outside the host's subnet, so nothing is ever sent
//! to them.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use overlay::model::{HostRecord, MacAddr, Tenant, TunnelType, Vni};
use overlay_api::Status;
use overlay_tests::AgentProc;
use testbed::{Container, Etcd, TestHost};

use crate::procfs::{clk_tck, counters, cpu_ticks, mem, rss_kib};
use crate::records::{endpoint_kvs, lease_kv};
use crate::report::{env_num, f1, ms, stats, Report};

/// How long the agent may take to answer its API after a start against a full etcd.
const AGENT_READY: Duration = Duration::from_secs(120);

/// The agent's status over its API, in this process (a CLI process per poll would blur
/// millisecond figures).
struct StatusReader {
    rt: tokio::runtime::Runtime,
    client: overlay_api::Client,
}

impl StatusReader {
    fn new(agent: &AgentProc) -> Self {
        StatusReader {
            rt: tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio"),
            client: overlay_api::Client::new(agent.api_socket()),
        }
    }

    fn status(&self) -> Option<Status> {
        self.rt.block_on(self.client.status()).ok()
    }

    /// Polls every 2 ms until `done` holds; panics with `what` after `within`.
    fn wait(&self, within: Duration, what: &str, done: impl Fn(&Status) -> bool) -> Status {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.status().filter(|s| done(s)) {
                return s;
            }
            assert!(Instant::now() < deadline, "{what}: not within {within:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn peer_flows(s: &Status, host: &str) -> usize {
    s.peers.iter().find(|p| p.host == host).map_or(0, |p| p.flows)
}

/// Every peer listed with flows, nothing pending: the whole pipeline is in.
fn all_in(s: &Status, peers: usize) -> bool {
    !s.flows.pending && s.peers.len() == peers && s.peers.iter().all(|p| p.flows > 0)
}

/// The third octet of peer addresses: 198.18.X.Y outside the host's own /24.
fn peer_octet_base(host: &TestHost) -> u8 {
    let own = host.underlay_ip().octets()[2];
    if (200..=215).contains(&own) {
        150
    } else {
        200
    }
}

fn peer(i: usize, base: u8) -> HostRecord {
    HostRecord {
        hostname: format!("peer-{i:05}"),
        underlay_ip: IpAddr::V4(Ipv4Addr::new(198, 18, base + (i / 250) as u8, 1 + (i % 250) as u8)),
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
        "10.0.0.0/8".parse().expect("cidr"),
        tunnel,
        24,
    )
    .expect("tenant")
}

/// Every key a peer with one container per tenant writes: host record, underlay claim, a
/// lease (10.a.b.0/24 for index a*256+b, never the gateway's 10.0.0.0/24), an endpoint and its
/// address claim in every tenant.
fn peer_kvs(prefix: &str, h: &HostRecord, tenants: &[Tenant], index: usize) -> Vec<(String, Vec<u8>)> {
    let mut kv = vec![
        (format!("{prefix}/hosts/{}", h.hostname), h.to_json()),
        (
            format!("{prefix}/underlays/{}", h.underlay_ip),
            serde_json::json!({"host": h.hostname, "system_id": h.system_id}).to_string().into_bytes(),
        ),
    ];
    let (a, b) = ((index >> 8) as u8, (index & 0xff) as u8);
    for t in tenants {
        kv.push(lease_kv(prefix, t.name(), &format!("10.{a}.{b}.0/24"), h));
        let container_id = format!("{}-{}", h.hostname, t.name());
        let ip = IpAddr::V4(Ipv4Addr::new(10, a, b, 2));
        let mac: MacAddr = format!("02:5c:{a:02x}:{b:02x}:{:02x}:02", t.vni().get() & 0xff).parse().expect("mac");
        kv.extend(endpoint_kvs(prefix, t.name(), h, &container_id, ip, mac));
    }
    kv
}

async fn etcd_put_all(c: &mut etcd_client::Client, kvs: &[(String, Vec<u8>)]) {
    // etcd's default limit is 128 operations per transaction.
    for chunk in kvs.chunks(100) {
        let ops: Vec<etcd_client::TxnOp> =
            chunk.iter().map(|(k, v)| etcd_client::TxnOp::put(k.as_str(), v.clone(), None)).collect();
        c.txn(etcd_client::Txn::new().and_then(ops)).await.expect("etcd txn");
    }
}

async fn etcd_delete_all(c: &mut etcd_client::Client, keys: &[String]) {
    for chunk in keys.chunks(100) {
        let ops: Vec<etcd_client::TxnOp> = chunk.iter().map(|k| etcd_client::TxnOp::delete(k.as_str(), None)).collect();
        c.txn(etcd_client::Txn::new().and_then(ops)).await.expect("etcd txn");
    }
}

/// OpenFlow bundles the agent sent so far.
fn bundles(s: &Status) -> u64 {
    s.counters.openflow_bundles
}

/// ovs-vswitchd's count of flows on `bridge` (`ovs-ofctl dump-aggregate`): a reader
/// independent of the agent.
fn switch_flows(host: &TestHost, bridge: &str) -> u64 {
    let out = host.vswitchd().ofctl(&["-O", "OpenFlow13", "dump-aggregate", &format!("{{mgmt:{bridge}}}")]);
    out.split("flow_count=").nth(1).and_then(|s| s.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

fn lat(v: &[f64]) -> String {
    let s = stats(v);
    format!("{} / {} / {}-{} ms ({} trials)", f1(s.p50), f1(s.p99), f1(s.min), f1(s.max), s.n)
}

/// One plug of a fresh container into `tenant`, timed end to end (the CLI command), then its
/// unplug, untimed, and a wait until the unplug's pass has taken its flows away: each plug is
/// timed on a host at rest, not against the pass the one before left behind.
fn plug_once(agent: &AgentProc, reader: &StatusReader, tenant: &str, id: &str) -> f64 {
    let at_rest = |s: &Status| (s.flows.tun, s.flows.int);
    let before = at_rest(&reader.wait(Duration::from_secs(30), "the agent at rest", |s| !s.flows.pending));
    let c = Container::new("scl");
    let start = Instant::now();
    agent.cli_ok(&["plug", id, "--tenant", tenant, "--netns", &c.path().display().to_string()]);
    let t = ms(start.elapsed());
    agent.cli_ok(&["unplug", id]);
    reader.wait(
        Duration::from_secs(30),
        &format!("{id}: an unplugged container's flows gone (before: {before:?})"),
        |s| {
            if std::env::var("DBG").is_ok() {
                eprintln!("{:?} {:?}", s.flows, before);
            }
            !s.flows.pending && at_rest(s) == before
        },
    );
    t
}

pub(crate) fn bench_scale(r: &mut Report) {
    let peers = env_num("BENCH_SCALE_PEERS", 1000);
    let n_tenants = env_num("BENCH_SCALE_TENANTS", 20);
    let trials = env_num("BENCH_SCALE_TRIALS", 20);
    let idle_secs = env_num("BENCH_IDLE_SECS", 10) as u64;
    r.line(format!(
        "### `scale`: the flow data plane at scale ({peers} peers x {n_tenants} tenants, one container per peer and tenant, real ovs-vswitchd)"
    ));
    r.line("");
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let etcd = Etcd::start();
    let fabric = testbed::Fabric::new();
    let host = fabric.add_host(1);
    let empty_host = fabric.add_host(2);
    let base = peer_octet_base(&host);
    let prefix = format!("/{}", testbed::unique_name("scale"));
    let tenants: Vec<Tenant> = (0..n_tenants).map(scale_tenant).collect();
    let mut etcd_c = rt.block_on(etcd_client::Client::connect([etcd.endpoint()], None)).expect("etcd");
    let t = Instant::now();
    let mut kvs = Vec::new();
    for t in &tenants {
        kvs.push((format!("{prefix}/tenants/{}", t.name()), t.to_json()));
        kvs.push((format!("{prefix}/vnis/{}", t.vni()), t.name().as_bytes().to_vec()));
    }
    for i in 1..=peers {
        kvs.extend(peer_kvs(&prefix, &peer(i, base), &tenants, i));
    }
    rt.block_on(etcd_put_all(&mut etcd_c, &kvs));
    let populate = t.elapsed();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row = |what: &str, value: String| rows.push(vec![what.to_owned(), value]);
    row("etcd written beforehand", format!("{} keys in {:.1} s", kvs.len() + 2 * n_tenants, populate.as_secs_f64()));

    // (a) The tenants joined one by one: each brings every peer's flows for that tenant.
    // BENCH_SCALE_LOG=debug (and BENCH_TRACE_DIR to keep it) shows where a pass's time goes.
    let level = std::env::var("BENCH_SCALE_LOG").unwrap_or_else(|_| "info".into());
    let mut agent = AgentProc::spawn_with(&host, &etcd.endpoint(), &prefix, &[("--log-level", &level)], &[]);
    agent.wait_ready();
    let reader = StatusReader::new(&agent);
    let mut joins = Vec::new();
    for (k, t) in tenants.iter().enumerate() {
        let start = Instant::now();
        agent.cli_ok(&["tenant", "join", t.name()]);
        reader.wait(Duration::from_secs(120), "a tenant's flows", |s| {
            !s.flows.pending && s.tenants.iter().filter(|x| x.flows > 0).count() == k + 1 && s.peers.len() == peers
        });
        joins.push(ms(start.elapsed()));
    }
    let s = reader.wait(Duration::from_secs(120), "every peer's flows", |s| all_in(s, peers));
    let (tun, int) = (s.flows.tun, s.flows.int);
    assert_eq!(switch_flows(&host, "br-tun"), tun as u64, "ovs-vswitchd holds what status says");
    row(&format!("`tenant join` -> that tenant's flows for all {peers} peers (p50 / p99 / min-max)"), lat(&joins));
    row("flows on br-tun / br-int, this host", format!("{tun} / {int}"));
    row("tunnel ports on br-tun", format!("{}", s.tunnels.len()));

    // (b) Cold start: the agent stopped, both bridges deleted, the agent started: everything
    // built from etcd in its first passes.
    agent.stop();
    host.vsctl(&["del-br", "br-int", "--", "del-br", "br-tun"]);
    let vswitchd_pid = host.vswitchd().pid().expect("ovs-vswitchd pid");
    let (switch_ticks, start) = (cpu_ticks(vswitchd_pid), Instant::now());
    agent.launch(AGENT_READY);
    let ready = start.elapsed();
    let reader = StatusReader::new(&agent);
    let s = reader
        .wait(Duration::from_secs(600), "every flow after a cold start", |s| all_in(s, peers) && s.flows.tun == tun);
    let cold = start.elapsed();
    let pid = agent.pid().expect("agent running");
    let secs = |ticks: u64| ticks as f64 / clk_tck();
    row(
        &format!("cold start: agent spawned -> all {} flows in (bridges deleted, everything in etcd)", tun + int),
        format!("{:.2} s (API up after {:.0} ms)", cold.as_secs_f64(), ms(ready)),
    );
    row(
        "cold start: CPU of the agent / ovs-vswitchd",
        format!("{:.2} / {:.2} s", secs(cpu_ticks(pid)), secs(cpu_ticks(vswitchd_pid) - switch_ticks)),
    );
    row("cold start: OpenFlow bundles sent", format!("{}", bundles(&s)));
    agent.wait_pass_after_now();
    let (rss, hwm) = rss_kib(pid);
    row("agent VmRSS after the cold start (VmHWM: peak)", format!("{} (peak {})", mem(rss), mem(hwm)));
    row("ovs-vswitchd VmRSS", mem(rss_kib(vswitchd_pid).0));

    // Idle: CPU over an interval with nothing to do (the interval is what is measured).
    let (a0, v0) = (cpu_ticks(pid), cpu_ticks(vswitchd_pid));
    std::thread::sleep(Duration::from_secs(idle_secs));
    let pct = |ticks: u64| ticks as f64 / clk_tck() / idle_secs as f64 * 100.0;
    row(
        &format!("idle CPU over {idle_secs} s: agent / ovs-vswitchd"),
        format!("{:.2} % / {:.2} % of one core", pct(cpu_ticks(pid) - a0), pct(cpu_ticks(vswitchd_pid) - v0)),
    );

    // (c) One peer joining (host record, underlay claim, a lease, a container and its address
    // in every tenant, in one etcd transaction batch), then leaving.
    let (mut join_ms, mut leave_ms, mut join_b, mut leave_b, mut join_tx) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for k in 0..trials {
        let i = peers + 1 + k;
        let h = peer(i, base);
        let kvs = peer_kvs(&prefix, &h, &tenants, i);
        let keys: Vec<String> = kvs.iter().map(|(k, _)| k.clone()).collect();
        let before = reader.status().expect("status");
        let tun_before = before.flows.tun;
        let start = Instant::now();
        rt.block_on(etcd_put_all(&mut etcd_c, &kvs));
        let s = reader.wait(Duration::from_secs(30), "a joining peer's flows", |s| {
            !s.flows.pending && peer_flows(s, &h.hostname) >= 2 * n_tenants
        });
        join_ms.push(ms(start.elapsed()));
        join_b.push((bundles(&s) - bundles(&before)) as f64);
        join_tx.push((s.counters.ovsdb_transactions - before.counters.ovsdb_transactions) as f64);
        let before = s;
        let start = Instant::now();
        rt.block_on(etcd_delete_all(&mut etcd_c, &keys));
        // The peer leaves the status list at once (it lists the cache); the flow count is that
        // of the last pass, so back to what it was before the join once its flows are gone.
        let s = reader.wait(Duration::from_secs(30), "a leaving peer's flows gone", |s| {
            !s.flows.pending && s.flows.tun == tun_before
        });
        leave_ms.push(ms(start.elapsed()));
        leave_b.push((bundles(&s) - bundles(&before)) as f64);
    }
    let med = |v: &[f64]| stats(v).p50;
    row("one peer joins: etcd written -> its flows in (p50 / p99 / min-max)", lat(&join_ms));
    row("  per join: OpenFlow bundles / OVSDB transactions (median)", format!("{} / {}", med(&join_b), med(&join_tx)));
    row("one peer leaves: etcd deleted -> its flows gone (p50 / p99 / min-max)", lat(&leave_ms));
    row("  per leave: OpenFlow bundles (median)", format!("{}", med(&leave_b)));

    // (d) A plug on this host against a plug on a host with no peers (same run), one after
    // the other, so that both see the same machine.
    let plugs = env_num("BENCH_SCALE_PLUGS", 20);
    let mut lone = AgentProc::spawn_with(&empty_host, &etcd.endpoint(), &format!("{prefix}-lone"), &[], &[]);
    lone.wait_ready();
    lone.cli_ok(&["tenant", "create", "lone", "--vni", "42", "--cidr", "10.0.0.0/8"]);
    let lone_reader = StatusReader::new(&lone);
    // The first plug joins the host to the tenant (a lease, a tunnel port); untimed, like
    // the big host's joins before.
    lone.cli_ok(&["tenant", "join", "lone"]);
    lone_reader
        .wait(Duration::from_secs(30), "the lone host in its tenant", |s| !s.flows.pending && s.tunnels.len() == 1);
    let (mut at_scale, mut alone) = (Vec::new(), Vec::new());
    for i in 0..plugs {
        at_scale.push(plug_once(&agent, &reader, tenants[0].name(), &format!("big-{i}")));
        alone.push(plug_once(&lone, &lone_reader, "lone", &format!("lone-{i}")));
    }
    row(&format!("plug on this host ({peers} peers) (p50 / p99 / min-max)"), lat(&at_scale));
    row("plug on a host with no peers, same run, taking turns", lat(&alone));
    drop(lone);

    // (e) A restart against the full state: nothing to send (once the last unplug's pass has
    // taken its port's flows away: an unplug answers before that pass).
    agent.wait_pass_after_now();
    agent.stop();
    let start = Instant::now();
    agent.launch(AGENT_READY);
    let reader = StatusReader::new(&agent);
    reader.wait(Duration::from_secs(300), "a pass after the restart", |s| {
        s.last_reconcile_ms_ago.is_some() && all_in(s, peers)
    });
    let back = start.elapsed();
    let s = agent.wait_pass_after_now();
    let (tx, _) = counters(&s);
    row(
        "restart against the full state: spawned -> first pass over",
        format!(
            "{:.2} s; OVSDB transactions {tx}, OpenFlow bundles {}",
            back.as_secs_f64(),
            s["counters"]["openflow_bundles"]
        ),
    );
    if let Some(dir) = std::env::var_os("BENCH_TRACE_DIR") {
        std::fs::write(std::path::Path::new(&dir).join("scale-agent.log"), agent.logs()).expect("agent log copy");
    }
    r.table(&["what", "value"], &rows);
    r.line("");
}
