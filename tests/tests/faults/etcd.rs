//! etcd going away for 30 s and coming back; etcd compacting past an agent's watch.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use overlay_tests::{ip_of, ports_on, tunnels, tunnels_to, Cluster, Pinger};
use serde_json::Value;
use testbed::{hold_for, signal, wait_ping, wait_until, Container, TestHost};

use super::{expect_pairs, plug, WAIT};

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
    pinger.wait_replies(10);
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
    // For the rest of the 30 s outage, every agent's status answers from what it last saw and
    // every host keeps the tunnels it had (hosts 1 and 2 one each, host 3 none).
    hold_for(
        Duration::from_secs(30).saturating_sub(down.elapsed()),
        Duration::from_secs(1),
        "status and tunnels during the etcd outage",
        || {
            for (i, (agent, host)) in a.iter().zip(&c.hosts).enumerate() {
                let want = usize::from(i < 2);
                let s = agent.status();
                let (shown, built) = (s["tunnels"].as_array().map_or(0, Vec::len), tunnels(host).len());
                if (shown, built) != (want, want) {
                    return Err(format!(
                        "{}: status shows {shown} tunnels, OVSDB has {built}; want {want}",
                        host.name()
                    ));
                }
            }
            Ok(())
        },
    );
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

    // Lease renewals resumed on the SAME leases. Once etcd is up, a lease's remaining TTL only
    // falls, unless it is renewed: a reading above an earlier one is a renewal.
    for (h, &lease) in c.hosts.iter().zip(&leases) {
        assert_eq!(host_lease(&c, h), lease, "{} registered under a new lease", h.name());
        let mut lowest = i64::MAX;
        wait_until(Duration::from_secs(8), &format!("a renewal of {}'s host lease", h.name()), || {
            let (granted, left) = lease_ttl(&c, lease);
            assert_eq!(granted, 10, "{}'s host lease", h.name());
            assert!(left > 0, "{}'s host lease expired", h.name());
            let renewed = left > lowest;
            lowest = lowest.min(left);
            renewed
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
                    child.stdin.take().unwrap().write_all(value.as_bytes()).unwrap();
                    assert!(child.wait().unwrap().success(), "etcdctl put {key} failed");
                }
            });
        }
    });
    etcd_revision(c)
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
