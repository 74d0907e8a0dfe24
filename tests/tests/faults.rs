//! Fault tests (the reliability issue): etcd going away and coming back, etcd compaction,
//! ovsdb-server and ovs-vswitchd restarts, a peer vanishing and returning with a new underlay
//! IP, the agent killed mid-plug / mid-unplug / mid-reconcile, and many plugs at once. Each runs
//! several hosts with traffic flowing and checks what a user sees: ping, `status`, `ovs-vsctl`,
//! the keys in etcd.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use overlay_tests::{agent_binary, ofport_of, ports_on, tunnel_sources, tunnels, AgentProc, Cluster, Pinger};

fn plug(agent: &AgentProc, id: &str, tenant: &str, c: &Container) -> Value {
    overlay_tests::plug(agent, id, tenant, c, &[])
}
use serde_json::Value;
use testbed::{wait_ping, wait_until, Container, TestHost};

const WAIT: Duration = Duration::from_secs(20);

fn ip_of(plugged: &Value) -> String {
    plugged["ip"].as_str().expect("plug result has an ip").to_owned()
}

/// The lease id (decimal) the host key of `host` hangs on.
fn host_lease(c: &Cluster, host: &TestHost) -> i64 {
    let out = c.etcd.etcdctl(&["get", &format!("{}/hosts/{}", c.prefix, host.name()), "-w", "json"]);
    let j: Value = serde_json::from_str(&out).expect("etcdctl JSON");
    j["kvs"][0]["lease"].as_i64().unwrap_or_else(|| panic!("no lease on the host key of {}: {j}", host.name()))
}

/// (granted TTL, remaining TTL) of a lease; remaining is -1 once it expired.
fn lease_ttl(c: &Cluster, lease: i64) -> (i64, i64) {
    let out = c.etcd.etcdctl(&["lease", "timetolive", &format!("{lease:x}"), "-w", "json"]);
    let j: Value = serde_json::from_str(&out).expect("etcdctl JSON");
    (j["granted-ttl"].as_i64().unwrap_or(0), j["ttl"].as_i64().unwrap_or(-1))
}

/// Tunnel port names on `host` towards `peer` (by the overlay-peer external id).
/// The tenant tunnel ports of `host` whose flows accept frames from `peer`'s underlay address.
fn tunnels_to(host: &TestHost, peer: &TestHost) -> BTreeMap<String, overlay_tests::PortRow> {
    let from = peer.underlay_ip().to_string();
    tunnels(host)
        .into_iter()
        .filter(|(name, _)| ofport_of(host, name).is_some_and(|o| tunnel_sources(host, o).contains(&from)))
        .collect()
}

#[test]
fn etcd_outage_keeps_traffic_fails_plugs_fast_and_reconverges_at_once() {
    // A short host lease: if renewals did not resume after the outage, the host keys would
    // expire within the test.
    let c = Cluster::start(3, &["--host-ttl", "10"]);
    let a = &c.agents;
    a[0].cli_ok(&["tenant", "create", "red", "--vni", "3101", "--cidr", "198.19.0.0/16"]);
    let (c0, c1) = (Container::new("fe"), Container::new("fe"));
    plug(&a[0], "e-0", "red", &c0);
    let ip1 = ip_of(&plug(&a[1], "e-1", "red", &c1));
    wait_ping(&c0, &ip1, WAIT);
    let leases: Vec<i64> = c.hosts.iter().map(|h| host_lease(&c, h)).collect();

    let pinger = Pinger::start(&c0, &ip1);
    std::thread::sleep(Duration::from_millis(500));
    c.etcd.stop();
    let down = Instant::now();

    // A plug while etcd is down fails at once with an error that names etcd, and changes
    // nothing (it does not queue: the caller retries).
    let spare = Container::new("fe");
    let ns = spare.path().display().to_string();
    let started = Instant::now();
    let out = a[0].cli(&["plug", "e-spare", "--tenant", "red", "--netns", &ns]);
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "plug succeeded with etcd down: {}", String::from_utf8_lossy(&out.stdout));
    assert!(err.contains("etcd"), "the error should say etcd is the problem: {err}");
    assert!(took < Duration::from_secs(8), "plug took {took:?} to fail with etcd down");
    eprintln!("plug with etcd down failed after {took:?}: {}", err.trim());
    assert!(!spare.has_link("eth0"));
    assert!(!ports_on(&c.hosts[0], "br-int").values().any(|p| p
        .iface_external_ids
        .get("iface-id")
        .map(String::as_str)
        == Some("e-spare")));
    // status still answers from what the agent last saw.
    let s = a[0].status();
    assert_eq!(s["tunnels"].as_array().map(Vec::len), Some(1), "{s:#}");

    std::thread::sleep(Duration::from_secs(30).saturating_sub(down.elapsed()));
    c.etcd.start_again();
    let healthy = Instant::now();
    eprintln!("etcd was down for {:?}", down.elapsed());
    // Not one echo may be lost to the outage. What follows adds ports (the join's tunnels, the
    // spare's plug), and a port added on the userspace datapath can drop a single packet of
    // another port (see assert_no_outage), so a second ping watches that part.
    pinger.stop().assert_no_loss("ping across a 30 s etcd outage");
    let pinger = Pinger::start(&c0, &ip1);

    // Right after etcd returns, host 3 joins the tenant: both other hosts must build their
    // tunnel to it within 2 s of etcd being healthy.
    a[2].cli_ok(&["tenant", "join", "red"]);
    let joined = healthy.elapsed();
    wait_until(WAIT, "tunnels to the host that joined after the outage", || {
        [0, 1].iter().all(|&i| tunnels_to(&c.hosts[i], &c.hosts[2]).len() == 1)
            && [0, 1].iter().all(|&i| tunnels_to(&c.hosts[2], &c.hosts[i]).len() == 1)
    });
    let converged = healthy.elapsed();
    eprintln!("after etcd returned: join answered in {joined:?}, tunnels everywhere in {converged:?}");
    assert!(converged <= Duration::from_secs(2), "reconverged {converged:?} after etcd returned (want <= 2 s)");

    // Lease renewals resumed on the SAME leases: at restart etcd gives every lease its full TTL
    // (10 s) again; 3 s later only a renewal can bring it back to 9 s or more.
    std::thread::sleep(Duration::from_secs(3).saturating_sub(healthy.elapsed()));
    for (h, &lease) in c.hosts.iter().zip(&leases) {
        assert_eq!(host_lease(&c, h), lease, "{} registered under a new lease", h.name());
        wait_until(Duration::from_secs(8), &format!("a renewal of {}'s host lease", h.name()), || {
            let (granted, left) = lease_ttl(&c, lease);
            granted == 10 && left >= 9
        });
    }
    // Every agent is alive again for its peers.
    wait_until(WAIT, "all peers alive again", || {
        a.iter().all(|x| x.status()["peers"].as_array().unwrap().iter().all(|p| p["alive"] == true))
    });
    // The plug that failed works now.
    plug(&a[0], "e-spare", "red", &spare);
    wait_ping(&spare, &ip1, WAIT);

    pinger.stop().assert_no_outage("ping while the cluster reconverges after the outage");
}

/// Every key under `<prefix>/<sub>` with its value (values are one-line JSON).
fn etcd_kvs(c: &Cluster, sub: &str) -> BTreeMap<String, Value> {
    let out = c.etcd.etcdctl(&["get", "--prefix", &format!("{}/{sub}", c.prefix)]);
    let lines: Vec<&str> = out.lines().collect();
    lines
        .chunks(2)
        .filter(|kv| kv.len() == 2)
        .map(|kv| (kv[0].to_owned(), serde_json::from_str(kv[1]).unwrap_or(Value::Null)))
        .collect()
}

/// The current etcd revision.
fn etcd_revision(c: &Cluster) -> i64 {
    let out = c.etcd.etcdctl(&["endpoint", "status", "-w", "json"]);
    let j: Value = serde_json::from_str(&out).expect("etcdctl JSON");
    j[0]["Status"]["header"]["revision"].as_i64().unwrap_or_else(|| panic!("no revision in {j}"))
}

/// Writes `n` junk keys of `size` bytes under the cluster prefix (a kind no agent knows), from
/// a few threads, and returns the revision after the last one.
fn junk_writes(c: &Cluster, tag: &str, n: usize, size: usize) -> i64 {
    let value = "x".repeat(size);
    std::thread::scope(|s| {
        for t in 0..4 {
            let value = &value;
            s.spawn(move || {
                for i in (t..n).step_by(4) {
                    let key = format!("{}/junk/{tag}-{i}", c.prefix);
                    let mut child = Command::new("etcdctl")
                        .env("ETCDCTL_API", "3")
                        .args([&format!("--endpoints={}", c.etcd.endpoint()), "put", &key])
                        .stdin(Stdio::piped())
                        .stdout(Stdio::null())
                        .spawn()
                        .expect("etcdctl");
                    use std::io::Write;
                    child.stdin.take().unwrap().write_all(value.as_bytes()).unwrap();
                    assert!(child.wait().unwrap().success(), "etcdctl put {key} failed");
                }
            });
        }
    });
    etcd_revision(c)
}

/// The (peer, tenant) pairs `host` tunnels with: for each tenant port, the hosts its flows
/// accept frames from (by name; an address no host of `c` has, as is).
fn tunnel_pairs(c: &Cluster, host: &TestHost) -> BTreeSet<(String, String)> {
    let name_of = |ip: &str| {
        c.hosts.iter().find(|h| h.underlay_ip().to_string() == ip).map_or(ip.to_owned(), |h| h.name().to_owned())
    };
    tunnels(host)
        .into_iter()
        .flat_map(|(name, t)| {
            let tenant = t.external_ids["overlay-tenant"].clone();
            let sources = ofport_of(host, &name).map(|o| tunnel_sources(host, o)).unwrap_or_default();
            sources.into_iter().map(move |ip| (name_of(&ip), tenant.clone())).collect::<Vec<_>>()
        })
        .collect()
}

/// Waits until host `i` has exactly the tunnels `want` ((peer index, tenant) pairs); on timeout
/// panics with what it has and the end of its agent's log.
#[track_caller]
fn expect_pairs(c: &Cluster, i: usize, want: &[(usize, &str)]) {
    let host = &c.hosts[i];
    let want: BTreeSet<(String, String)> =
        want.iter().map(|(p, t)| (c.hosts[*p].name().to_owned(), (*t).to_owned())).collect();
    let got = try_wait(WAIT, || {
        let got = tunnel_pairs(c, host);
        if got == want {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    });
    if let Err(e) = got {
        panic!(
            "tunnels on {}: want {want:?}, have {e}\n--- agent log (end) ---\n{}",
            host.name(),
            log_tail(&c.agents[i])
        );
    }
}

fn log_tail(a: &AgentProc) -> String {
    let logs = a.logs();
    let lines: Vec<&str> = logs.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Polls `f` until it returns Ok; the last error on timeout.
fn try_wait(deadline: Duration, mut f: impl FnMut() -> Result<(), String>) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let r = f();
        if r.is_ok() || start.elapsed() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").args([sig, &pid.to_string()]).status().expect("kill").success();
    assert!(ok, "kill {sig} {pid} failed");
}

#[test]
fn etcd_compaction_past_the_watch_revision_relists_and_converges() {
    let mut c = Cluster::start(3, &[]);
    c.agents[0].cli_ok(&["tenant", "create", "red", "--vni", "3201", "--cidr", "198.19.0.0/16"]);
    c.agents[0].cli_ok(&["tenant", "create", "green", "--vni", "3202", "--cidr", "198.19.0.0/16", "--tunnel", "gre"]);
    for i in [0, 1] {
        c.agents[i].cli_ok(&["tenant", "join", "green"]);
    }
    let (c0, c1) = (Container::new("fc"), Container::new("fc"));
    plug(&c.agents[0], "m-0", "red", &c0);
    let ip1 = ip_of(&plug(&c.agents[1], "m-1", "red", &c1));
    wait_ping(&c0, &ip1, WAIT);
    expect_pairs(&c, 0, &[(1, "red"), (1, "green")]);
    let pinger = Pinger::start(&c0, &ip1);

    // 1. A running agent whose watch falls behind a compaction. Agent 1 is frozen (SIGSTOP):
    // its watch stream backs up in etcd (tens of MB of events), host 3 joins red meanwhile, and
    // etcd compacts to its latest revision, past what agent 1's watch has delivered. Once
    // thawed it must catch up (etcd ends such a watch with "compacted"; the agent relists).
    let pid = c.agents[0].pid().expect("agent 1 runs");
    signal(pid, "-STOP");
    c.agents[2].cli_ok(&["tenant", "join", "red"]);
    let rev = junk_writes(&c, "a", 240, 160 * 1024);
    c.etcd.etcdctl(&["compact", &rev.to_string()]);
    signal(pid, "-CONT");
    expect_pairs(&c, 0, &[(1, "red"), (1, "green"), (2, "red")]);
    expect_pairs(&c, 2, &[(0, "red"), (1, "red")]);
    let compacted = c.agents[0].logs().contains("was compacted");
    eprintln!("agent 1's watch was {}told it was compacted", if compacted { "" } else { "NOT " });

    // 2. A dead agent: the cluster changes (green deleted, blue created and joined by the
    // others, more writes), etcd compacts, the agent restarts: it lists afresh and converges.
    c.agents[0].kill();
    c.agents[1].cli_ok(&["tenant", "delete", "green"]);
    c.agents[1].cli_ok(&["tenant", "create", "blue", "--vni", "3203", "--cidr", "198.19.0.0/16"]);
    c.agents[1].cli_ok(&["tenant", "join", "blue"]);
    c.agents[2].cli_ok(&["tenant", "join", "blue"]);
    let rev = junk_writes(&c, "b", 40, 1024);
    c.etcd.etcdctl(&["compact", &rev.to_string()]);
    c.agents[0].restart();
    expect_pairs(&c, 0, &[(1, "red"), (2, "red")]);
    expect_pairs(&c, 1, &[(0, "red"), (2, "red"), (2, "blue")]);
    // And it keeps following changes after the relist.
    c.agents[0].cli_ok(&["tenant", "join", "blue"]);
    expect_pairs(&c, 0, &[(1, "red"), (2, "red"), (1, "blue"), (2, "blue")]);
    pinger.stop().assert_no_loss("ping across a compaction and an agent restart");
}

/// Bridge, Port and Interface names on `host` are unique (no row was created twice).
fn assert_no_duplicate_rows(host: &TestHost) {
    for table in ["Bridge", "Port", "Interface"] {
        let out = host.vsctl(&["--bare", "--columns=name", "list", table]);
        let names: Vec<&str> = out.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let unique: BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(names.len(), unique.len(), "duplicate {table} rows on {}: {names:?}", host.name());
    }
    let bridges = host.vsctl(&["list-br"]);
    let bridges: Vec<&str> = bridges.lines().collect();
    assert_eq!(bridges, ["br-int", "br-phy", "br-tun"], "bridges on {}", host.name());
}

/// (Port uuid, Interface uuid) of every port on br-int and br-tun. (`_version` cannot be
/// compared across an ovsdb-server restart: the server makes new ones when it loads the file.)
fn row_ids(host: &TestHost) -> BTreeMap<String, (String, String)> {
    ["br-int", "br-tun"].iter().flat_map(|b| ports_on(host, b)).map(|(n, p)| (n, (p.uuid, p.iface_uuid))).collect()
}

fn ovsdb_connected(a: &AgentProc) -> bool {
    a.status()["host"]["ovsdb_connected"] == true
}

#[test]
fn ovsdb_server_and_vswitchd_restarts_are_survived() {
    let c = Cluster::start(2, &[]);
    let (a, h) = (&c.agents, &c.hosts);
    a[0].cli_ok(&["tenant", "create", "red", "--vni", "3301", "--cidr", "198.19.0.0/16"]);
    let (c0, c1) = (Container::new("fo"), Container::new("fo"));
    let ip0 = ip_of(&plug(&a[0], "o-0", "red", &c0));
    let ip1 = ip_of(&plug(&a[1], "o-1", "red", &c1));
    c.wait_ping(&c0, &ip1);
    let before = row_ids(&h[0]);

    // 1. ovsdb-server crashes and comes back (same database): forwarding never stops, the
    // agent reconnects, finds everything in place and writes nothing.
    let pinger = Pinger::start(&c0, &ip1);
    std::thread::sleep(Duration::from_millis(300));
    let counters = a[0].status()["counters"].clone();
    h[0].ovsdb().kill();
    wait_until(WAIT, "status to show OVSDB disconnected", || !ovsdb_connected(&a[0]));
    h[0].ovsdb().restart();
    wait_until(WAIT, "status to show OVSDB connected again", || ovsdb_connected(&a[0]));
    wait_until(WAIT, "a reconcile after the reconnect", || {
        a[0].status()["counters"]["reconciles"].as_u64() > counters["reconciles"].as_u64()
    });
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(row_ids(&h[0]), before, "rows were replaced after the ovsdb-server restart");
    let now = a[0].status()["counters"].clone();
    assert_eq!(now["ovsdb_transactions"], counters["ovsdb_transactions"], "the agent wrote after the reconnect");
    assert_no_duplicate_rows(&h[0]);
    pinger.stop().assert_no_loss("ping across an ovsdb-server restart");

    // 2. While ovsdb-server is down, the tunnel port is removed from its database file: after
    // the restart the agent's fresh replica lacks it and the agent builds it again (once).
    let tunnel = tunnels(&h[0]).into_values().next().expect("a tunnel");
    h[0].ovsdb().kill();
    wait_until(WAIT, "status to show OVSDB disconnected", || !ovsdb_connected(&a[0]));
    let txn = serde_json::json!(["Open_vSwitch", {"op": "mutate", "table": "Bridge", "where": [["name", "==", "br-tun"]],
        "mutations": [["ports", "delete", ["uuid", tunnel.uuid]]]}]);
    let db = h[0].ovsdb().db_path().display().to_string();
    let out = Command::new("ovsdb-tool").args(["transact", &db, &txn.to_string()]).output().expect("ovsdb-tool");
    assert!(out.status.success(), "ovsdb-tool transact: {}", String::from_utf8_lossy(&out.stderr));
    h[0].ovsdb().restart();
    wait_until(WAIT, "the tunnel removed offline to be rebuilt", || {
        tunnels(&h[0]).get(&tunnel.name).is_some_and(|t| t.uuid != tunnel.uuid && t.options == tunnel.options)
    });
    assert_no_duplicate_rows(&h[0]);
    wait_ping(&c0, &ip1, WAIT);
    // The monitors are live again: a port an operator deletes now comes back too.
    h[0].vsctl(&["del-port", "br-tun", &tunnel.name]);
    wait_until(WAIT, "the deleted tunnel to come back", || tunnels(&h[0]).contains_key(&tunnel.name));
    wait_ping(&c0, &ip1, WAIT);

    // 3. ovs-vswitchd crashes and restarts: the database is untouched, so the agent has
    // nothing to do; containers on both sides talk again as soon as the datapath is back.
    let sent = a[0].status()["counters"]["ovsdb_transactions"].as_u64().unwrap();
    let rows = row_ids(&h[0]);
    h[0].vswitchd().kill();
    let down = Instant::now();
    h[0].vswitchd().restart();
    wait_ping(&c0, &ip1, WAIT);
    wait_ping(&c1, &ip0, WAIT);
    eprintln!("traffic back {:?} after ovs-vswitchd was killed", down.elapsed());
    let pinger = Pinger::start(&c0, &ip1);
    std::thread::sleep(Duration::from_secs(2));
    pinger.stop().assert_no_loss("ping after the ovs-vswitchd restart");
    assert!(ovsdb_connected(&a[0]));
    assert_eq!(a[0].status()["counters"]["ovsdb_transactions"].as_u64().unwrap(), sent, "the agent wrote to OVSDB");
    assert_eq!(row_ids(&h[0]).keys().collect::<Vec<_>>(), rows.keys().collect::<Vec<_>>());
    assert_no_duplicate_rows(&h[0]);
}

#[test]
fn peer_returning_with_a_new_underlay_ip_gets_its_tunnels_updated_in_place() {
    // Losing the tunnels of a peer whose lease expires is tested in agent_mesh.rs; here the
    // peer comes back (before its 10 s lease expires) from a new underlay address.
    let mut c = Cluster::start(3, &["--host-ttl", "10"]);
    c.agents[0].cli_ok(&["tenant", "create", "red", "--vni", "3401", "--cidr", "198.19.0.0/16"]);
    c.agents[1].cli_ok(&["tenant", "join", "red"]);
    let (c0, c2) = (Container::new("fu"), Container::new("fu"));
    let ip0 = ip_of(&plug(&c.agents[0], "u-0", "red", &c0));
    let ip2 = ip_of(&plug(&c.agents[2], "u-2", "red", &c2));
    c.wait_ping(&c0, &ip2);
    let old = c.hosts[2].underlay_ip();
    let o = old.octets();
    let new = std::net::Ipv4Addr::new(o[0], o[1], o[2], 200 + o[3]);
    let ids = |h: &TestHost| -> BTreeMap<String, (String, String)> {
        tunnels(h).into_iter().map(|(n, p)| (n, (p.uuid, p.iface_uuid))).collect()
    };
    let before: Vec<_> = (0..2).map(|i| ids(&c.hosts[i])).collect();
    let before_own: BTreeMap<_, _> =
        tunnels(&c.hosts[2]).into_iter().map(|(n, p)| (n, (p.uuid, p.iface_uuid))).collect();
    assert_eq!(before_own.len(), 1, "one port for the one tenant");

    // The machine crashes and comes back with another address.
    c.agents[2].kill();
    let h2 = &c.hosts[2];
    // (Old one first: deleting a primary address takes its secondaries with it.)
    h2.netns().ip(&["addr", "del", &format!("{old}/24"), "dev", "br-phy"]);
    h2.netns().ip(&["addr", "add", &format!("{new}/24"), "dev", "br-phy"]);
    c.agents[2].set_arg("--underlay-ip", &new.to_string());
    c.agents[2].restart();

    let h = &c.hosts;
    for i in 0..2 {
        wait_until(WAIT, &format!("{}'s flows to host 3 to follow its new address", h[i].name()), || {
            let port = ofport_of(&h[i], "tun-vx-3401").expect("the tenant port");
            let sources = tunnel_sources(&h[i], port);
            sources.contains(&new.to_string()) && !sources.contains(&old.to_string())
        });
        assert_eq!(ids(&h[i]), before[i], "tunnel rows on {} changed for a peer's new address", h[i].name());
    }
    wait_until(WAIT, "host 3's own tunnels to use its new address", || {
        tunnels(&h[2]).values().all(|t| t.options["local_ip"] == new.to_string())
    });
    let after_own: BTreeMap<_, _> = tunnels(&h[2]).into_iter().map(|(n, p)| (n, (p.uuid, p.iface_uuid))).collect();
    assert_eq!(after_own, before_own, "host 3's tunnel rows were replaced, not updated");
    let underlays = c.etcd_keys("underlays/");
    assert!(underlays.iter().any(|k| k.ends_with(&format!("/{new}"))), "{underlays:?}");
    assert!(!underlays.iter().any(|k| k.ends_with(&format!("/{old}"))), "the old underlay claim stayed: {underlays:?}");
    let peers = c.agents[0].status()["peers"].clone();
    assert!(
        peers.as_array().unwrap().iter().any(|p| p["host"] == h[2].name() && p["underlay_ip"] == new.to_string()),
        "{peers}"
    );
    // Traffic flows over the new address (the old one is gone from the host).
    wait_ping(&c0, &ip2, WAIT);
    wait_ping(&c2, &ip0, WAIT);
}

/// What plugging may leave on host `i`, checked against each other: every container port on
/// br-int has an endpoint record of this host and vice versa, every address reservation of this
/// host has its endpoint, every `tap*` veth has its port, no `tmp*` veth is left, and each
/// known container has an `eth0` exactly when it has an endpoint.
fn check_no_orphans(c: &Cluster, i: usize, known: &[(&str, &Container)]) -> Result<(), String> {
    let host = &c.hosts[i];
    let me = host.name();
    let ports: BTreeMap<String, String> = ports_on(host, "br-int")
        .into_values()
        .filter(|p| p.external_ids.get("overlay-kind").map(String::as_str) == Some("container"))
        .map(|p| (p.name, p.iface_external_ids.get("iface-id").cloned().unwrap_or_default()))
        .collect();
    let endpoints: BTreeMap<String, Value> = etcd_kvs(c, "endpoints/")
        .into_values()
        .filter(|e| e["host"] == me)
        .map(|e| (e["port"].as_str().unwrap_or_default().to_owned(), e))
        .collect();
    let port_names: BTreeSet<&String> = ports.keys().collect();
    let endpoint_ports: BTreeSet<&String> = endpoints.keys().collect();
    if port_names != endpoint_ports {
        return Err(format!("container ports {port_names:?} != endpoint records {endpoint_ports:?}"));
    }
    for (key, claim) in etcd_kvs(c, "ips/").into_iter().filter(|(_, v)| v["host"] == me) {
        let ip = key.rsplit('/').next().unwrap_or_default();
        if !endpoints.values().any(|e| e["container_id"] == claim["container"] && e["ip"] == ip) {
            return Err(format!("address reservation {key} ({claim}) has no endpoint"));
        }
    }
    let links = host.netns().ip_json(&["link", "show"]);
    for name in links.as_array().unwrap().iter().filter_map(|l| l["ifname"].as_str()) {
        if name.starts_with("tmp") || (name.starts_with("tap") && !ports.contains_key(name)) {
            return Err(format!("veth {name} left without a port"));
        }
    }
    for (id, ctr) in known {
        let plugged = endpoints.values().any(|e| e["container_id"] == *id);
        if ctr.has_link("eth0") != plugged {
            return Err(format!("container {id}: eth0 present = {}, endpoint = {plugged}", !plugged));
        }
    }
    Ok(())
}

#[track_caller]
fn wait_no_orphans(c: &Cluster, i: usize, known: &[(&str, &Container)], what: &str) {
    if let Err(e) = try_wait(WAIT, || check_no_orphans(c, i, known)) {
        panic!("{what}: {e}\n--- agent log (end) ---\n{}", log_tail(&c.agents[i]));
    }
}

/// Starts `overlay-agent ARGS` against `agent` without waiting for it.
fn spawn_cli(agent: &AgentProc, args: &[&str]) -> Child {
    Command::new(agent_binary())
        .arg("--api-socket")
        .arg(agent.api_socket())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("overlay-agent CLI")
}

fn wait_child(mut child: Child) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("try_wait").is_none() {
        assert!(Instant::now() < deadline, "the CLI did not exit after its agent died");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn agent_killed_mid_plug_unplug_or_reconcile_converges_without_orphans() {
    let mut c = Cluster::start(2, &[]);
    c.agents[0].cli_ok(&["tenant", "create", "red", "--vni", "3501", "--cidr", "198.19.0.0/16"]);
    let (a0, b0) = (Container::new("fk"), Container::new("fk"));
    plug(&c.agents[0], "k-a", "red", &a0);
    let ip_b = ip_of(&plug(&c.agents[1], "k-b", "red", &b0));
    wait_ping(&a0, &ip_b, WAIT);
    // How long a plug and an unplug take, to spread the kills over them.
    let probe = Container::new("fk");
    let t = Instant::now();
    plug(&c.agents[0], "k-probe", "red", &probe);
    let plug_time = t.elapsed();
    let t = Instant::now();
    c.agents[0].cli_ok(&["unplug", "k-probe"]);
    let unplug_time = t.elapsed();
    eprintln!("a plug takes {plug_time:?}, an unplug {unplug_time:?}");
    // Pinging from a container plugged before the kills, through all of them.
    let pinger = Pinger::start(&a0, &ip_b);

    const ROUNDS: u32 = 10;
    let victims: Vec<(String, Container)> = (0..ROUNDS).map(|i| (format!("k-v{i}"), Container::new("fk"))).collect();
    for (i, (id, ctr)) in victims.iter().enumerate() {
        let i = i as u32;
        let known: Vec<(&str, &Container)> = vec![("k-a", &a0), (id.as_str(), ctr)];
        let ns = ctr.path().display().to_string();
        // Mid-plug: the CLI is in flight when the agent dies, at a different point each round.
        let cli = spawn_cli(&c.agents[0], &["plug", id, "--tenant", "red", "--netns", &ns]);
        std::thread::sleep(Duration::from_millis(15) + plug_time * i / ROUNDS);
        c.agents[0].kill();
        wait_child(cli);
        c.agents[0].restart();
        wait_no_orphans(&c, 0, &known, &format!("after a kill {}/{ROUNDS} into a plug", i));
        // The same container plugs fine afterwards, and talks.
        plug(&c.agents[0], id, "red", ctr);
        c.wait_ping(ctr, &ip_b);

        // Mid-unplug.
        let cli = spawn_cli(&c.agents[0], &["unplug", id]);
        std::thread::sleep(Duration::from_millis(5) + unplug_time * i / ROUNDS);
        c.agents[0].kill();
        wait_child(cli);
        c.agents[0].restart();
        wait_no_orphans(&c, 0, &known, &format!("after a kill {}/{ROUNDS} into an unplug", i));
        c.agents[0].cli_ok(&["unplug", id]);
        wait_no_orphans(&c, 0, &known, "after unplugging again");
        assert!(!ctr.has_link("eth0"));
    }

    // While containers are plugged and unplugged beside it, a single echo may be lost now and
    // then (the userspace datapath, see assert_no_outage); never more.
    pinger.stop().assert_no_outage("ping beside interrupted plugs and unplugs");

    // Mid-reconcile: host 2 joins a tenant host 1 is in, and host 1's agent dies while it
    // builds the tunnel (at a different point each round). After the restart host 1 has
    // exactly the tunnels the registry calls for.
    let pinger = Pinger::start(&a0, &ip_b);
    let mut want = vec![(1, "red")];
    let tenants: Vec<String> = (0..4).map(|i| format!("t{i}")).collect();
    for (i, t) in tenants.iter().enumerate() {
        c.agents[1].cli_ok(&["tenant", "create", t, "--vni", &(3510 + i).to_string(), "--cidr", "198.19.0.0/16"]);
        c.agents[0].cli_ok(&["tenant", "join", t]);
        let cli = spawn_cli(&c.agents[1], &["tenant", "join", t]);
        std::thread::sleep(Duration::from_millis(10 * i as u64));
        c.agents[0].kill();
        wait_child(cli);
        c.agents[0].restart();
        c.agents[1].cli_ok(&["tenant", "join", t]);
        want.push((1, t.as_str()));
        expect_pairs(&c, 0, &want);
        assert_no_duplicate_rows(&c.hosts[0]);
    }
    wait_no_orphans(&c, 0, &[("k-a", &a0)], "at the end");
    let repaired = c.agents[0].logs().matches("removing a container interface at start").count();
    eprintln!("{repaired} interrupted plugs or unplugs were rolled back at a restart");
    pinger.stop().assert_no_loss("ping across agents killed mid-reconcile");
}

/// Plugs `ids[k]` into `ctrs[k]` on `agent`, every plug its own CLI process, all at once.
/// Returns each plug's JSON answer.
fn plug_all_at_once(agent: &AgentProc, tenant: &str, ids: &[String], ctrs: &[Container]) -> Vec<Value> {
    std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .iter()
            .zip(ctrs)
            .map(|(id, ctr)| {
                s.spawn(move || {
                    let ns = ctr.path().display().to_string();
                    let out = agent.cli(&["plug", id, "--tenant", tenant, "--netns", &ns]);
                    if !out.status.success() {
                        eprintln!("plug {id} failed: {}", String::from_utf8_lossy(&out.stderr));
                        return Value::Null;
                    }
                    serde_json::from_slice::<Value>(&out.stdout).expect("plug JSON")
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("plug thread")).collect()
    })
}

/// Pings every address of `targets` from `from` (one try and one retry each, 16 in flight at
/// a time); the addresses that never answered.
fn unreachable_from(from: &Container, targets: &[&str]) -> Vec<String> {
    let script = r#"printf '%s\n' "$@" | xargs -P 16 -I ADDR sh -c 'ping -n -c1 -W2 ADDR >/dev/null 2>&1 || ping -n -c1 -W3 ADDR >/dev/null 2>&1 || echo ADDR'"#;
    let mut cmd = vec!["sh", "-c", script, "sh"];
    cmd.extend_from_slice(targets);
    let out = from.exec(&cmd);
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

/// Checks that the plugs answered in `results` gave distinct addresses, each container has
/// the address it was told, etcd holds one endpoint and one reservation per container, and
/// every container reaches every other from `ctrs[0]` and three others each.
fn check_plugged(c: &Cluster, what: &str, ids: &[String], ctrs: &[Container], results: &[Value]) {
    let n = ids.len();
    let failed: Vec<&String> = ids.iter().zip(results).filter(|(_, r)| r.is_null()).map(|(i, _)| i).collect();
    assert!(failed.is_empty(), "{what}: {} plugs failed: {failed:?}", failed.len());
    let ips: Vec<String> = results.iter().map(ip_of).collect();
    let distinct: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), n, "{what}: addresses handed out twice");
    for (k, ctr) in ctrs.iter().enumerate().step_by(10) {
        assert_eq!(ctr.ipv4_addrs("eth0"), [ips[k].clone()], "{what}: container {}", ids[k]);
    }
    assert_eq!(c.etcd_keys("endpoints/").len(), n, "{what}: endpoint records");
    assert_eq!(c.etcd_keys("ips/").len(), n, "{what}: address reservations");

    let t = Instant::now();
    let others: Vec<&str> = ips[1..].iter().map(String::as_str).collect();
    let missed = unreachable_from(&ctrs[0], &others);
    assert!(missed.is_empty(), "{what}: {} of {} unreachable from {}: {missed:?}", missed.len(), n - 1, ids[0]);
    // Each container to three others spread over the hosts, one container at a time (this
    // 2-CPU machine runs three userspace datapaths; piling pings on them only measures that).
    // A pair that fails is tried again once, after the rest: under load an echo can take
    // longer than the 2 + 3 s allowed, but a pair that never talks is a failure.
    let pairs: Vec<(usize, usize)> = (0..n).flat_map(|k| [1, n / 3, 2 * n / 3 + 1].map(|d| (k, (k + d) % n))).collect();
    let mut first_misses = Vec::new();
    for (k, ctr) in ctrs.iter().enumerate() {
        let targets: Vec<&str> = pairs.iter().filter(|p| p.0 == k).map(|p| ips[p.1].as_str()).collect();
        first_misses.extend(unreachable_from(ctr, &targets).into_iter().map(|t| (k, t)));
    }
    let failures: Vec<String> = first_misses
        .iter()
        .filter(|(k, t)| !unreachable_from(&ctrs[*k], &[t.as_str()]).is_empty())
        .map(|(k, t)| format!("{} -> {t}", ids[*k]))
        .collect();
    assert!(
        failures.is_empty(),
        "{what}: {} of {} sampled pairs cannot talk: {failures:?}",
        failures.len(),
        pairs.len()
    );
    if !first_misses.is_empty() {
        eprintln!("{what}: {} sampled pairs needed a second try", first_misses.len());
    }
    eprintln!("{what}: {n} containers, distinct addresses, all reachable (checked in {:?})", t.elapsed());
}

#[test]
fn many_concurrent_plugs_get_distinct_addresses_and_all_talk() {
    // Two rounds, so that no userspace datapath carries more than 100 veth ports: with 150 on
    // one host of this 2-CPU machine, ovs-vswitchd itself falls behind (multi-second poll
    // loops in its log) and ports take over 10 s to get an ofport.
    let c = Cluster::start(3, &[]);
    c.agents[0].cli_ok(&["tenant", "create", "big", "--vni", "3601", "--cidr", "10.96.0.0/16", "--subnet-len", "24"]);

    // 1. 100 plugs on one host at once, then 100 unplugs at once.
    let ids: Vec<String> = (0..100).map(|i| format!("one-{i}")).collect();
    let ctrs: Vec<Container> = (0..100).map(|_| Container::new("fb")).collect();
    let t = Instant::now();
    let results = plug_all_at_once(&c.agents[0], "big", &ids, &ctrs);
    eprintln!("100 concurrent plugs on one host: {:?}", t.elapsed());
    check_plugged(&c, "100 on one host", &ids, &ctrs, &results);
    let t = Instant::now();
    std::thread::scope(|s| {
        for id in &ids {
            let agent = &c.agents[0];
            s.spawn(move || agent.cli_ok(&["unplug", id]));
        }
    });
    eprintln!("100 concurrent unplugs on one host: {:?}", t.elapsed());
    assert!(c.etcd_keys("endpoints/").is_empty() && c.etcd_keys("ips/").is_empty());
    assert!(!ports_on(&c.hosts[0], "br-int").keys().any(|p| p.starts_with("tap")));
    drop(ctrs);

    // 2. 50 on each of the three hosts, all at once.
    let per_host: Vec<(Vec<String>, Vec<Container>)> = (0..3)
        .map(|h| ((0..50).map(|i| format!("h{h}-{i}")).collect(), (0..50).map(|_| Container::new("fb")).collect()))
        .collect();
    let t = Instant::now();
    let answers: Vec<Vec<Value>> = std::thread::scope(|s| {
        let handles: Vec<_> = per_host
            .iter()
            .enumerate()
            .map(|(h, (i, k))| {
                let agent = &c.agents[h];
                s.spawn(move || plug_all_at_once(agent, "big", i, k))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("host thread")).collect()
    });
    eprintln!("3 x 50 concurrent plugs: {:?}", t.elapsed());
    let (mut ids, mut ctrs, mut results) = (Vec::new(), Vec::new(), Vec::new());
    for ((i, k), r) in per_host.into_iter().zip(answers) {
        ids.extend(i);
        ctrs.extend(k);
        results.extend(r);
    }
    for host in &c.hosts {
        let ports = ports_on(host, "br-int")
            .values()
            .filter(|p| p.external_ids.get("overlay-kind").map(String::as_str) == Some("container"))
            .count();
        assert_eq!(ports, 50, "container ports on {}", host.name());
    }
    check_plugged(&c, "50 on each of 3 hosts", &ids, &ctrs, &results);
}
