//! Many plugs at once: 100 on one host, then 50 on each of three.

use std::collections::BTreeSet;
use std::time::Instant;

use overlay_tests::{ip_of, ports_on, AgentProc, Cluster};
use serde_json::Value;
use testbed::Container;

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
    c.agents[0].cli_ok(&["tenant", "create", "big", "--vni", "3601", "--cidr", "198.19.0.0/16", "--subnet-len", "24"]);

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
