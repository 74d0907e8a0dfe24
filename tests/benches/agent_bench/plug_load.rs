//! Section "plugload": what a plug costs as the cluster grows and as plugs pile up on a host.
//! (a) plug latency on a one-host cluster, then with 10,000 endpoints of 50 other hosts in etcd
//! (same run, same host): a plug reads this host's holdings only, so the two should match;
//! (b) 20 plugs started at once against 20 in a row (same run): plugs on a host overlap their
//! etcd, netlink and ovs-vswitchd waits.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use overlay::model::{HostRecord, MacAddr, TunnelType};
use overlay_tests::{AgentProc, Cluster};
use testbed::Container;

use crate::records::{endpoint_kvs, lease_kv};
use crate::report::{env_num, f1, ms, stats, Report};

const TENANT: &str = "load";
const FOREIGN_HOSTS: usize = 50;

/// Plugs `n` fresh containers one after another, timing each `plug` command; unplugs them
/// (untimed) so the next phase starts from the same host state.
fn timed_plugs(agent: &AgentProc, n: usize, tag: &str) -> Vec<f64> {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let c = Container::new("pld");
        let path = c.path().display().to_string();
        let id = format!("{tag}-{i}");
        let start = Instant::now();
        agent.cli_ok(&["plug", &id, "--tenant", TENANT, "--netns", &path]);
        times.push(ms(start.elapsed()));
        agent.cli_ok(&["unplug", &id]);
    }
    times
}

/// Every key 50 other hosts with `per_host` endpoints each would have written in the tenant:
/// host records, leases, endpoint records and address claims.
fn foreign_kvs(prefix: &str, per_host: usize) -> Vec<(String, Vec<u8>)> {
    let mut kvs = Vec::new();
    for h in 0..FOREIGN_HOSTS {
        let host = HostRecord {
            hostname: format!("far-{h:03}"),
            underlay_ip: IpAddr::V4(Ipv4Addr::new(198, 18, 250, 10 + h as u8)),
            system_id: format!("sys-far-{h:03}"),
            machine_id: format!("machine-far-{h:03}"),
            tunnel_types: TunnelType::ALL.to_vec(),
            version: "bench".into(),
        };
        // Leases from the top of the tenant's /16, far from the first ones the agent takes.
        kvs.push((format!("{prefix}/hosts/{}", host.hostname), host.to_json()));
        kvs.push(lease_kv(prefix, TENANT, &format!("198.19.{}.0/24", 200 + h), &host));
        for e in 0..per_host {
            let container_id = format!("far-{h:03}-{e:04}");
            let ip = IpAddr::V4(Ipv4Addr::new(198, 19, 200 + h as u8, 2 + e as u8));
            let mac: MacAddr = format!("02:fa:00:{h:02x}:{:02x}:{:02x}", e >> 8, e & 0xff).parse().expect("mac");
            kvs.extend(endpoint_kvs(prefix, TENANT, &host, &container_id, ip, mac));
        }
    }
    kvs
}

fn put_all(c: &Cluster, kvs: Vec<(String, Vec<u8>)>) {
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    rt.block_on(async {
        let mut client = etcd_client::Client::connect([c.etcd.endpoint()], None).await.expect("etcd");
        // etcd's default limit is 128 operations per transaction.
        for chunk in kvs.chunks(100) {
            let ops: Vec<etcd_client::TxnOp> =
                chunk.iter().map(|(k, v)| etcd_client::TxnOp::put(k.as_str(), v.clone(), None)).collect();
            client.txn(etcd_client::Txn::new().and_then(ops)).await.expect("etcd txn");
        }
    });
}

fn row(what: &str, v: &[f64]) -> Vec<String> {
    let s = stats(v);
    vec![what.to_owned(), format!("{} / {} / {}-{} ms ({} plugs)", f1(s.p50), f1(s.p90), f1(s.min), f1(s.max), s.n)]
}

pub(crate) fn bench_plug_load(r: &mut Report) {
    let n = env_num("BENCH_PLUGLOAD_N", 30);
    let per_host = env_num("BENCH_PLUGLOAD_FOREIGN", 10_000) / FOREIGN_HOSTS;
    let burst = env_num("BENCH_PLUGLOAD_BURST", 20);
    r.line("### `plugload`: plug cost against cluster size and concurrency");
    r.line("");
    let c = Cluster::start(1, &[]);
    let agent = &c.agents[0];
    agent.cli_ok(&["tenant", "create", TENANT, "--vni", "4501", "--cidr", "198.19.0.0/16"]);
    // The first plug joins the tenant (a lease); it is not what is measured.
    let warm = Container::new("pld");
    agent.cli_ok(&["plug", "warm", "--tenant", TENANT, "--netns", &warm.path().display().to_string()]);

    // (a) Empty cluster, then 10,000 foreign endpoints.
    let empty = timed_plugs(agent, n, "empty");
    let kvs = foreign_kvs(&c.prefix, per_host);
    let foreign = FOREIGN_HOSTS * per_host;
    let t = Instant::now();
    put_all(&c, kvs);
    let written = t.elapsed();
    // The agent has taken them in once every foreign host is a peer with its flows.
    testbed::wait_until(Duration::from_secs(300), "the foreign hosts as peers with flows", || {
        let s = agent.status();
        s["peers"].as_array().is_some_and(|p| {
            p.len() == FOREIGN_HOSTS && p.iter().all(|p| p["flows"].as_u64().is_some_and(|f| f as usize > per_host))
        })
    });
    let taken_in = t.elapsed();
    agent.wait_pass_after_now();
    let full = timed_plugs(agent, n, "full");
    let ratio = stats(&full).p50 / stats(&empty).p50;
    let mut rows = vec![
        row("plug, one-host cluster (p50 / p90 / min-max)", &empty),
        row(&format!("plug, {foreign} endpoints of {FOREIGN_HOSTS} other hosts in etcd"), &full),
        vec!["ratio of the p50s (target <= 1.2)".into(), format!("{ratio:.2}")],
        vec![
            format!("{foreign} endpoints written / taken in (all flows) by the agent"),
            format!("{:.1} s / {:.1} s", written.as_secs_f64(), taken_in.as_secs_f64()),
        ],
    ];

    // (b) A burst of plugs at once against the same number in a row.
    let containers: Vec<Container> = (0..burst).map(|_| Container::new("pld")).collect();
    let paths: Vec<String> = containers.iter().map(|c| c.path().display().to_string()).collect();
    let plug_args = |i: usize, tag: &str| -> Vec<String> {
        ["plug", &format!("{tag}-{i}"), "--tenant", TENANT, "--netns", &paths[i]]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let start = Instant::now();
    for i in 0..burst {
        let args = plug_args(i, "seq");
        agent.cli_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let in_a_row = start.elapsed();
    for i in 0..burst {
        agent.cli_ok(&["unplug", &format!("seq-{i}")]);
    }
    let start = Instant::now();
    let children: Vec<_> = (0..burst)
        .map(|i| {
            let args = plug_args(i, "par");
            agent.spawn_cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .collect();
    for mut child in children {
        assert!(child.wait().expect("plug CLI").success(), "a concurrent plug failed:\n{}", agent.log_tail(40));
    }
    let at_once = start.elapsed();
    let listed: serde_json::Value = serde_json::from_str(&agent.cli_ok(&["endpoints", "--json"])).expect("JSON");
    let plugged = listed
        .as_array()
        .expect("endpoints")
        .iter()
        .filter(|e| e["container_id"].as_str().is_some_and(|c| c.starts_with("par-")));
    assert_eq!(plugged.count(), burst, "every concurrent plug is listed:\n{listed:#}");
    rows.push(vec![
        format!("{burst} plugs in a row / all at once (wall time)"),
        format!(
            "{:.2} s / {:.2} s ({:.1}x faster at once)",
            in_a_row.as_secs_f64(),
            at_once.as_secs_f64(),
            in_a_row.as_secs_f64() / at_once.as_secs_f64()
        ),
    ]);
    r.table(&["what", "value"], &rows);
    r.line("");
}
