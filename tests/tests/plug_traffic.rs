//! Containers plugged by the agents on three hosts, two tenants with the SAME CIDR (one VXLAN,
//! one GRE): addresses, MTU, routes and external_ids as specified, traffic within a tenant,
//! none across, clean unplug, bad input refused with nothing left behind, and an agent restart
//! under a running ping.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use overlay_tests::{plug, ports_on, AgentProc, Cluster, IperfServer};
use serde_json::Value;
use testbed::{ping, wait_ping, wait_until, Container, TestHost};

const WAIT: Duration = Duration::from_secs(20);

fn plug_err(agent: &AgentProc, args: &[&str]) -> String {
    let out = agent.cli(args);
    assert!(!out.status.success(), "plug {args:?} should fail: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What a host has that plugging could leave behind.
#[derive(Debug, PartialEq)]
struct Traces {
    int_ports: Vec<String>,
    veths: Vec<String>,
    ips: Vec<String>,
    endpoints: Vec<String>,
}

fn traces(c: &Cluster, h: usize) -> Traces {
    let host: &TestHost = &c.hosts[h];
    let links = host.netns().ip_json(&["link", "show"]);
    let mut veths: Vec<String> = links
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["ifname"].as_str())
        .filter(|n| n.starts_with("tap") || n.starts_with("tmp"))
        .map(str::to_owned)
        .collect();
    veths.sort();
    Traces {
        // A tenant's gateway port stays while the host takes part in the tenant (it holds a
        // lease), plugged containers or not: not a trace of a plug.
        int_ports: ports_on(host, "br-int").into_keys().filter(|p| !p.starts_with("ovg-")).collect(),
        veths,
        ips: c.etcd_keys("ips/"),
        endpoints: c.etcd_keys("endpoints/"),
    }
}

fn addr_of(c: &Container, ifname: &str) -> (String, u64, String, u64) {
    let j = c.ip_json(&["addr", "show", "dev", ifname]);
    let l = &j[0];
    let a = l["addr_info"].as_array().unwrap().iter().find(|a| a["family"] == "inet").expect("an IPv4 address");
    (
        a["local"].as_str().unwrap().to_owned(),
        a["prefixlen"].as_u64().unwrap(),
        l["address"].as_str().unwrap().to_owned(),
        l["mtu"].as_u64().unwrap(),
    )
}

/// Every IPv6 address on `ifname` in `ns`, link-local ones included.
fn inet6_addrs(ns: &testbed::Netns, ifname: &str) -> Vec<String> {
    let j = ns.ip_json(&["addr", "show", "dev", ifname]);
    let infos = j[0]["addr_info"].as_array().cloned().unwrap_or_default();
    infos
        .iter()
        .filter(|a| a["family"] == "inet6")
        .map(|a| a["local"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn default_gw(c: &Container) -> String {
    let j = c.ip_json(&["route", "show", "default"]);
    j[0]["gateway"].as_str().unwrap_or_default().to_owned()
}

fn iperf(server: &Container, client: &Container, ip: &str) {
    let srv = IperfServer::start(server, 5201);
    // 16 MiB sent; the receiver's count must pass 10 MB (its final report can lag the sender's
    // by what is still in flight).
    let out = client.exec(&["timeout", "60", "iperf3", "-c", ip, "-n", "16M", "-J"]);
    drop(srv);
    assert!(out.status.success(), "iperf3 to {ip} failed: {}", String::from_utf8_lossy(&out.stdout));
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    let bytes = j["end"]["sum_received"]["bytes"].as_u64().unwrap();
    assert!(bytes >= 10_000_000, "only {bytes} bytes crossed");
    let retransmits = j["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
    eprintln!("iperf3 to {ip}: {bytes} bytes received, {retransmits} retransmits");
}

#[test]
fn containers_talk_within_a_tenant_and_never_across() {
    let c = Cluster::start(3, &[]);
    let a = &c.agents;
    a[0].cli_ok(&["tenant", "create", "red", "--vni", "5001", "--cidr", "198.19.0.0/16", "--tunnel", "vxlan"]);
    a[0].cli_ok(&["tenant", "create", "blue", "--vni", "5002", "--cidr", "198.19.0.0/16", "--tunnel", "gre"]);
    let mut red = Vec::new();
    let mut blue = Vec::new();
    for (i, agent) in a.iter().enumerate() {
        let r = Container::new("cr");
        let info = plug(agent, &format!("red-{i}"), "red", &r, &[]);
        red.push((r, info));
        let b = Container::new("cb");
        let info = plug(agent, &format!("blue-{i}"), "blue", &b, &[]);
        blue.push((b, info));
    }
    // What plug reports is what the container has.
    for ((ctr, info), (mtu, tenant)) in
        red.iter().map(|x| (x, (1450, "red"))).chain(blue.iter().map(|x| (x, (1458, "blue"))))
    {
        assert_eq!(info["tenant"], tenant);
        assert_eq!(info["prefix"], 16);
        assert_eq!(info["mtu"], mtu, "{info}");
        assert_eq!(info["gateway"], "198.19.0.1");
        assert!(info["port"].as_str().unwrap().len() <= 15);
        let (ip, prefix, mac, got_mtu) = addr_of(ctr, "eth0");
        assert_eq!(ip, info["ip"].as_str().unwrap());
        assert_eq!(prefix, 16);
        assert_eq!(mac, info["mac"].as_str().unwrap());
        assert_eq!(got_mtu, mtu);
        assert_eq!(default_gw(ctr), "198.19.0.1");
        let mac_first = u8::from_str_radix(&mac[..2], 16).unwrap();
        assert_eq!(mac_first & 0x03, 0x02, "generated MACs are locally administered unicast: {mac}");
        let k = ctr.run(&["ethtool", "-k", "eth0"]);
        assert!(k.contains("tx-checksumming: off"), "TX checksum offload must be off on netdev: {k}");
    }
    // IPv4 tenants: no IPv6 on either end, so no link-local chatter is flooded over the tenant.
    for (i, (ctr, info)) in red.iter().enumerate().chain(blue.iter().enumerate()) {
        assert_eq!(inet6_addrs(ctr, "eth0"), Vec::<String>::new(), "container end of {info}");
        let port = info["port"].as_str().unwrap();
        let host = c.hosts[i].netns();
        assert_eq!(inet6_addrs(host, port), Vec::<String>::new(), "host end of {info}");
        let sysctl = host.run(&["cat", &format!("/proc/sys/net/ipv6/conf/{port}/disable_ipv6")]);
        assert_eq!(sysctl.trim(), "1", "IPv6 off on the host end of {info}");
    }
    // Interface external_ids exactly as nova-docker and Neutron write them.
    let port0 = red[0].1["port"].as_str().unwrap();
    let ids = c.hosts[0].vsctl(&["get", "Interface", port0, "external_ids"]);
    let want = format!(
        "{{attached-mac=\"{}\", iface-id=red-0, iface-status=active, vm-uuid=red-0}}",
        red[0].1["mac"].as_str().unwrap()
    );
    assert_eq!(ids.trim(), want);

    // Same tenant: every pair of hosts, both directions for ICMP.
    for set in [&red, &blue] {
        for (i, (from, _)) in set.iter().enumerate() {
            for (j, (_, to)) in set.iter().enumerate() {
                if i != j {
                    wait_ping(from, to["ip"].as_str().unwrap(), WAIT);
                }
            }
        }
    }
    // TCP over both tunnel types (10 MB each).
    iperf(&red[1].0, &red[0].0, red[1].1["ip"].as_str().unwrap());
    iperf(&blue[2].0, &blue[0].0, blue[2].1["ip"].as_str().unwrap());

    // Isolation with overlapping addresses: the same address in both tenants, on different
    // hosts. A red container reaching it must reach the red one (its MAC), never the blue one.
    let red_dup = Container::new("cr");
    let blue_dup = Container::new("cb");
    let r = plug(&a[0], "red-dup", "red", &red_dup, &["--ip", "198.19.250.7"]);
    let b = plug(&a[1], "blue-dup", "blue", &blue_dup, &["--ip", "198.19.250.7"]);
    wait_ping(&red[2].0, "198.19.250.7", WAIT);
    let neigh = red[2].0.ip_json(&["neigh", "show", "198.19.250.7"]);
    assert_eq!(neigh[0]["lladdr"], r["mac"], "red reached {neigh} (blue is {})", b["mac"]);
    // A blue-only address is unreachable from red: no ICMP answer and no ARP answer.
    let blue_only = Container::new("cb");
    plug(&a[2], "blue-only", "blue", &blue_only, &["--ip", "198.19.251.9"]);
    wait_ping(&blue[0].0, "198.19.251.9", WAIT);
    assert!(!ping(&red[0].0, "198.19.251.9", 3, Duration::from_secs(1)), "red reached a blue-only address");
    let neigh = red[0].0.ip_json(&["neigh", "show", "198.19.251.9"]);
    let state = neigh[0]["state"]
        .as_array()
        .map(|s| s.iter().filter_map(Value::as_str).collect::<Vec<_>>())
        .unwrap_or_default();
    assert!(neigh[0]["lladdr"].is_null(), "red learnt a MAC for a blue address: {neigh}");
    assert!(state.iter().all(|s| *s == "FAILED" || *s == "INCOMPLETE"), "{neigh}");

    // The address host 0 would take next, reserved by a container on host 1 with a fixed --ip:
    // host 0's first try (the next address free by its own reservations) is refused, and the
    // full allocation finds another. Both containers get their own address and talk.
    let first: std::net::Ipv4Addr = red[0].1["ip"].as_str().unwrap().parse().unwrap();
    let next = std::net::Ipv4Addr::from(u32::from(first) + 1).to_string();
    let squat = Container::new("cr");
    plug(&a[1], "red-squat", "red", &squat, &["--ip", &next]);
    let late = Container::new("cr");
    let got = plug(&a[0], "red-late", "red", &late, &[]);
    let after_next = std::net::Ipv4Addr::from(u32::from(first) + 2).to_string();
    assert_eq!(got["ip"].as_str().unwrap(), after_next, "the lowest address left: {got}");
    wait_ping(&late, &next, WAIT);
    wait_ping(&squat, got["ip"].as_str().unwrap(), WAIT);

    // Unplug leaves nothing behind: port, veths, container interface, etcd keys.
    let before_unplug = traces(&c, 1);
    a[1].cli_ok(&["unplug", "blue-dup"]);
    a[1].cli_ok(&["unplug", "red-1"]);
    let after = traces(&c, 1);
    assert_eq!(after.int_ports.len(), before_unplug.int_ports.len() - 2, "{after:#?}");
    assert_eq!(after.veths.len(), before_unplug.veths.len() - 2, "{after:#?}");
    assert!(!red[1].0.has_link("eth0"));
    assert!(!blue_dup.has_link("eth0"));
    assert_eq!(after.ips.len(), before_unplug.ips.len() - 2);
    assert!(!after.endpoints.iter().any(|k| k.ends_with("/red-1") || k.ends_with("/blue-dup")));
    let again = a[1].cli_ok(&["unplug", "red-1"]);
    assert!(again.contains("was not plugged"), "unplug is idempotent: {again}");

    // Unplugged and plugged again at once, under the same port name: unplug returns once
    // ovs-vswitchd has let go of the old port, so the new one is not mistaken for it (it would
    // keep the deleted link's netdev and carry nothing). Five times, to give a race its chance.
    for round in 0..5 {
        let info = plug(&a[1], "red-1", "red", &red[1].0, &[]);
        wait_ping(&red[1].0, red[0].1["ip"].as_str().unwrap(), WAIT);
        assert_eq!(info["port"], red[1].1["port"], "round {round}");
        a[1].cli_ok(&["unplug", "red-1"]);
    }
    let logs = a[1].logs();
    assert!(!logs.contains("did not confirm"), "ovs-vswitchd confirmed every removal:\n{logs}");
    // Each plug logs where its time went: every step, and each part of the concurrent one.
    let line = logs.lines().find(|l| l.contains("container plugged")).expect("a plug's log line");
    let steps: Vec<(&str, f64)> = line
        .split("steps=")
        .nth(1)
        .expect("steps=")
        .split(',')
        .map(|p| p.split_once(':').map(|(n, ms)| (n, ms.trim().parse().expect("ms"))).expect("name:ms"))
        .collect();
    let names: Vec<&str> = steps.iter().map(|(n, _)| *n).collect();
    for step in ["lease", "port+veth+address", "port+veth+address.ovsdb", "port+veth+address.veth"] {
        assert!(names.contains(&step), "{step} missing in {line}");
    }
    assert!(names.contains(&"port+veth+address.etcd") && names.contains(&"vswitchd"), "{line}");
    let ms = |name: &str| steps.iter().find(|(n, _)| *n == name).map(|(_, ms)| *ms).unwrap();
    let slowest_part =
        ["ovsdb", "veth", "etcd"].map(|p| ms(&format!("port+veth+address.{p}"))).into_iter().fold(0.0, f64::max);
    // The step (which also opens the container's namespace) lasts at least as long as its
    // slowest part; each figure is rounded to 0.1 ms in the log.
    assert!(ms("port+veth+address") + 0.15 >= slowest_part, "{line}");
}

#[test]
fn ipv6_tenant_containers_keep_link_local_and_talk_across_hosts() {
    let c = Cluster::start(2, &[]);
    let a = &c.agents;
    // 2001:2::/48 is the IPv6 benchmarking range (RFC 5180).
    a[0].cli_ok(&["tenant", "create", "six", "--vni", "5101", "--cidr", "2001:2::/48", "--tunnel", "vxlan"]);
    let ctrs: Vec<Container> = (0..2).map(|_| Container::new("c6")).collect();
    let infos: Vec<Value> =
        ctrs.iter().enumerate().map(|(i, ctr)| plug(&a[i], &format!("six-{i}"), "six", ctr, &[])).collect();
    for (i, (ctr, info)) in ctrs.iter().zip(&infos).enumerate() {
        let ip = info["ip"].as_str().unwrap();
        let v6 = inet6_addrs(ctr, "eth0");
        assert!(v6.iter().any(|a| a == ip), "the tenant address on eth0: {v6:?} {info}");
        // IPv6 hosts expect a link-local address: only IPv4 tenants go without one.
        assert!(v6.iter().any(|a| a.starts_with("fe80:")), "a link-local address on eth0: {v6:?}");
        let port = info["port"].as_str().unwrap();
        assert_eq!(inet6_addrs(c.hosts[i].netns(), port), Vec::<String>::new(), "host end of {info}");
    }
    testbed::wait_ping(&ctrs[0], infos[1]["ip"].as_str().unwrap(), Duration::from_secs(20));
    testbed::wait_ping(&ctrs[1], infos[0]["ip"].as_str().unwrap(), Duration::from_secs(20));
}

#[test]
fn plug_is_idempotent_and_bad_input_leaves_nothing() {
    let c = Cluster::start(1, &[]);
    let a = &c.agents[0];
    a.cli_ok(&["tenant", "create", "red", "--vni", "6001", "--cidr", "198.19.0.0/16", "--subnet-len", "24"]);
    let ctr = Container::new("ci");
    let first = plug(a, "web-1", "red", &ctr, &[]);
    let second = plug(a, "web-1", "red", &ctr, &[]);
    assert_eq!(first, second, "plugging again with the same arguments returns the same result");
    // A plug again also makes the container's side what the result says: here its address and
    // default route were lost (as something in the container may flush them); the port, veth
    // and records stay the ones there were.
    let before = traces(&c, 0);
    let ip = first["ip"].as_str().unwrap();
    ctr.ip(&["addr", "flush", "dev", "eth0"]);
    ctr.ip(&["link", "set", "eth0", "mtu", "1300"]);
    assert_eq!(default_gw(&ctr), "", "flushing the address took the route with it");
    let third = plug(a, "web-1", "red", &ctr, &[]);
    assert_eq!(third, first);
    let (got_ip, prefix, mac, mtu) = addr_of(&ctr, "eth0");
    assert_eq!((got_ip.as_str(), prefix, mac.as_str()), (ip, 16, first["mac"].as_str().unwrap()));
    assert_eq!(mtu, first["mtu"].as_u64().unwrap());
    assert_eq!(default_gw(&ctr), first["gateway"].as_str().unwrap());
    assert_eq!(traces(&c, 0), before, "a plug again replaced what was there");
    let e = plug_err(
        a,
        &["plug", "web-1", "--tenant", "red", "--netns", &ctr.path().display().to_string(), "--ip", "198.19.9.9"],
    );
    assert!(e.contains("already plugged"), "{e}");

    let baseline = traces(&c, 0);
    let other = Container::new("ci");
    let ns = other.path().display().to_string();
    let taken = first["ip"].as_str().unwrap().to_owned();
    let long_id = "a".repeat(200);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["plug", "x1", "--tenant", "nope", "--netns", &ns], "tenant 'nope' does not exist"),
        (vec!["plug", "x1", "--tenant", "red", "--netns", "/var/run/netns/does-not-exist"], "does not exist"),
        (vec!["plug", "x1", "--tenant", "red", "--pid", "999999999"], "no process with PID"),
        (vec!["plug", "x1", "--tenant", "red", "--netns", &ns, "--ip", "203.0.113.5"], "203.0.113.5"),
        (vec!["plug", "x1", "--tenant", "red", "--netns", &ns, "--ip", &taken], "in use by container 'web-1'"),
        (vec!["plug", "x1", "--tenant", "red", "--netns", &ns, "--ip", "198.19.0.1"], "gateway"),
        (vec!["plug", "x1", "--tenant", "red", "--netns", &ns, "--ip", "198.19.0.0"], "198.19.0.0"),
        (vec!["plug", "x1", "--tenant", "red", "--netns", &ns, "--ip", "not-an-ip"], "not an IP address"),
        (vec!["plug", "x1", "--tenant", "red", "--netns", &ns, "--mac", "zz:00:00:00:00:01"], "MAC"),
        (vec!["plug", "x1", "--tenant", "red", "--netns", &ns, "--mac", "01:00:5e:00:00:01"], "not a unicast address"),
        (vec!["plug", "x1", "--tenant", "red", "--netns", &ns, "--ifname", "this-name-is-too-long"], "interface name"),
        (vec!["plug", "../etc", "--tenant", "red", "--netns", &ns], "container id"),
        (vec!["plug", "a/b", "--tenant", "red", "--netns", &ns], "container id"),
        (vec!["plug", "--tenant", "red", "--netns", &ns, "--", "-dash"], "container id"),
        (vec!["plug", &long_id, "--tenant", "red", "--netns", &ns], "container id"),
        (vec!["plug", "ünïcode", "--tenant", "red", "--netns", &ns], "container id"),
    ];
    for (args, want) in &cases {
        let e = plug_err(a, args);
        assert!(e.to_lowercase().contains(&want.to_lowercase()), "{args:?}: '{e}' should mention '{want}'");
        assert_eq!(traces(&c, 0), baseline, "{args:?} left something behind");
        assert!(!other.has_link("eth0"));
    }
    // The interface name taken inside the container: found only when the veth is created,
    // alongside the port's row and the address reservation, so this also checks the rollback
    // (as does the taken --ip above, found by the reservation).
    other.ip(&["link", "add", "eth5", "type", "veth", "peer", "name", "eth6"]);
    let e = plug_err(a, &["plug", "x1", "--tenant", "red", "--netns", &ns, "--ifname", "eth5"]);
    assert!(e.contains("already has an interface named eth5"), "{e}");
    assert_eq!(traces(&c, 0), baseline, "a taken --ifname left something behind");
}

#[test]
fn agent_restart_under_ping_loses_nothing_and_recreates_no_port() {
    let mut c = Cluster::start(2, &[]);
    c.agents[0].cli_ok(&["tenant", "create", "red", "--vni", "7001", "--cidr", "198.19.0.0/16"]);
    let c1 = Container::new("cp");
    let c2 = Container::new("cp");
    plug(&c.agents[0], "p-1", "red", &c1, &[]);
    let target = plug(&c.agents[1], "p-2", "red", &c2, &[]);
    let ip = target["ip"].as_str().unwrap().to_owned();
    wait_ping(&c1, &ip, WAIT);
    let before: BTreeMap<_, _> =
        ports_on(&c.hosts[0], "br-int").into_iter().map(|(n, p)| (n, (p.uuid, p.version))).collect();
    // 300 pings, 20 ms apart (6 s), while both agents restart: the restarts begin once the
    // first reply is in.
    let mut pinger = c1
        .command(&["ping", "-c", "300", "-i", "0.02", "-W", "1", &ip])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(pinger.stdout.take().unwrap()).lines().map_while(Result::ok);
    let mut text: Vec<String> = lines.by_ref().take_while(|l| !l.contains("bytes from")).collect();
    assert!(!text.iter().any(|l| l.contains("packets transmitted")), "no reply before the restarts: {text:?}");
    c.agents[0].stop();
    c.agents[0].restart();
    c.agents[1].kill();
    c.agents[1].restart();
    text.extend(lines);
    assert!(pinger.wait().unwrap().success(), "{text:?}");
    let text = text.join("\n");
    assert!(text.contains("300 received") && text.contains(" 0% packet loss"), "{text}");
    c.agents[0].wait_pass_after_now();
    let after: BTreeMap<_, _> =
        ports_on(&c.hosts[0], "br-int").into_iter().map(|(n, p)| (n, (p.uuid, p.version))).collect();
    assert_eq!(before, after, "a restart recreated or rewrote a port");
}

#[test]
fn plug_by_pid_and_a_half_done_plug_is_rolled_back_at_start() {
    let mut c = Cluster::start(1, &[]);
    c.agents[0].cli_ok(&["tenant", "create", "red", "--vni", "8001", "--cidr", "198.19.0.0/16"]);
    let baseline = traces(&c, 0);
    // A "container" process: a sleep inside a fresh namespace, plugged by its PID.
    let ctr = Container::new("cq");
    let mut sleeper = ctr.command(&["sleep", "60"]).spawn().unwrap();
    let pid = sleeper.id().to_string();
    let out: Value =
        serde_json::from_str(&c.agents[0].cli_ok(&["plug", "by-pid", "--tenant", "red", "--pid", &pid])).unwrap();
    assert_eq!(addr_of(&ctr, "eth0").0, out["ip"].as_str().unwrap());
    let listed: Value = serde_json::from_str(&c.agents[0].cli_ok(&["endpoints", "--json"])).unwrap();
    assert_eq!(listed[0]["container_id"], "by-pid");
    assert_eq!(listed[0]["ip"], out["ip"]);

    // Simulate a crash after the port was built but before the endpoint was recorded: the
    // record is missing, so the next start must roll the whole plug back.
    c.agents[0].kill();
    c.etcd.etcdctl(&["del", "--prefix", &format!("{}/endpoints/", c.prefix)]);
    // And a plug killed even earlier: its veth made, its port row and address claim not yet;
    // only the veth's name (the form the agent gives) says whose it is. A veth of another
    // tool, named otherwise, is left alone.
    let early = Container::new("cq");
    let ghost = overlay::naming::container_port_name("killed-early", "eth0");
    let early_ns = early.path().display().to_string();
    let host_ns = c.hosts[0].netns();
    host_ns.ip(&["link", "add", &ghost, "type", "veth", "peer", "name", "eth0", "netns", &early_ns]);
    let foreign = "tap1a2b3c4d-5e"; // Neutron's form
    host_ns.ip(&["link", "add", foreign, "type", "veth", "peer", "name", "foreign-peer"]);
    c.agents[0].restart();
    wait_until(WAIT, "the early-killed plug's veth removed", || !host_ns.has_link(&ghost));
    assert!(!early.has_link("eth0"), "the early-killed plug's container end went with its veth");
    assert!(host_ns.has_link(foreign), "a veth of another tool was removed");
    host_ns.ip(&["link", "del", foreign]);
    wait_until(WAIT, "the half-done plug rolled back", || traces(&c, 0) == baseline);
    assert!(!ctr.has_link("eth0"));
    let logs = c.agents[0].logs();
    assert!(logs.contains("removing a container interface at start"), "{logs}");
    assert!(logs.contains("veth of an interrupted plug found at start"), "{logs}");
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

#[test]
fn container_mtu_follows_the_underlay_interface() {
    let mut c = Cluster::start(1, &[]);
    // The underlay link (br-phy, holding the underlay IP) gets MTU 1400; the agent reads it at
    // start, so containers get 1400 - 50 on VXLAN.
    c.hosts[0].vsctl(&["set", "Interface", "br-phy", "mtu_request=1400"]);
    wait_until(WAIT, "br-phy MTU 1400", || c.hosts[0].netns().ip_json(&["link", "show", "br-phy"])[0]["mtu"] == 1400);
    c.agents[0].stop();
    c.agents[0].restart();
    c.agents[0].cli_ok(&["tenant", "create", "red", "--vni", "9001", "--cidr", "198.19.0.0/16"]);
    let ctr = Container::new("cm");
    let out = plug(&c.agents[0], "mtu-1", "red", &ctr, &[]);
    assert_eq!(out["mtu"], 1350, "{out}");
    assert_eq!(addr_of(&ctr, "eth0").3, 1350);
}
