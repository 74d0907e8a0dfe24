//! Section "dataplane": iperf3 through the agent's overlay, through the same overlay built
//! by hand on the same OVS, and over the bare underlay.

use std::time::Duration;

use overlay_tests::{Cluster, IperfServer};
use serde_json::Value;
use testbed::{wait_ping, Container, TestHost};

use crate::report::{env_num, stats, Report, Stats};

struct Iperf {
    gbps: f64,
    retransmits: u64,
    mss: u64,
}

fn iperf(server: &testbed::Netns, client: &testbed::Netns, ip: &str, secs: usize) -> Iperf {
    let srv = IperfServer::start(server, 5299);
    let t = secs.to_string();
    let out = client.exec(&["timeout", "120", "iperf3", "-c", ip, "-p", "5299", "-t", &t, "-J"]);
    drop(srv);
    let j: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(out.status.success(), "iperf3 to {ip} failed: {}", String::from_utf8_lossy(&out.stdout));
    Iperf {
        gbps: j["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9,
        retransmits: j["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
        mss: j["start"]["tcp_mss_default"].as_u64().unwrap_or(0),
    }
}

/// `Ip:` counters of /proc/net/snmp in a namespace, by name.
fn ip_snmp(ns: &testbed::Netns) -> std::collections::BTreeMap<String, u64> {
    let text = ns.run(&["cat", "/proc/net/snmp"]);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("Ip:")).collect();
    let (names, values) = (lines[0].split_whitespace(), lines[1].split_whitespace());
    names.zip(values).skip(1).filter_map(|(n, v)| Some((n.to_owned(), v.parse().ok()?))).collect()
}

/// (errors + dropped) TX and RX of `dev` in `ns`.
fn link_faults(ns: &testbed::Netns, dev: &str) -> u64 {
    let j = ns.ip_json(&["-s", "link", "show", "dev", dev]);
    let s = &j[0]["stats64"];
    ["rx", "tx"].iter().flat_map(|d| ["errors", "dropped"].map(|k| s[d][k].as_u64().unwrap_or(0))).sum()
}

/// The lab's datapath by hand on both hosts, beside the agent's: bridges hbr-int/hbr-tun, patch
/// ports, one VXLAN tunnel (key 999, VLAN 1, protected) and a container plugged the lab's way.
fn hand_built(hosts: &[TestHost]) -> Vec<Container> {
    let mut out = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let other = &hosts[1 - i];
        h.vsctl_wait(&["add-br", "hbr-int", "--", "set", "bridge", "hbr-int", "datapath_type=netdev"]);
        h.vsctl_wait(&["add-br", "hbr-tun", "--", "set", "bridge", "hbr-tun", "datapath_type=netdev"]);
        h.vsctl_wait(&[
            "add-port",
            "hbr-int",
            "hpatch-tun",
            "--",
            "set",
            "interface",
            "hpatch-tun",
            "type=patch",
            "options:peer=hpatch-int",
        ]);
        h.vsctl_wait(&[
            "add-port",
            "hbr-tun",
            "hpatch-int",
            "--",
            "set",
            "interface",
            "hpatch-int",
            "type=patch",
            "options:peer=hpatch-tun",
        ]);
        h.vsctl_wait(&[
            "add-port",
            "hbr-tun",
            "hvx",
            "tag=1",
            "protected=true",
            "--",
            "set",
            "interface",
            "hvx",
            "type=vxlan",
            &format!("options:remote_ip={}", other.underlay_ip()),
            &format!("options:local_ip={}", h.underlay_ip()),
            "options:key=999",
        ]);
        let c = Container::new("dh");
        let hn = h.netns();
        hn.ip(&["link", "add", "hv0", "type", "veth", "peer", "name", "eth0", "netns", c.name()]);
        hn.ip(&["link", "set", "hv0", "up"]);
        h.vsctl_wait(&["add-port", "hbr-int", "hv0", "tag=1"]);
        c.ip(&["link", "set", "eth0", "address", &format!("02:00:00:00:99:0{}", i + 1), "mtu", "1450"]);
        c.ip(&["addr", "add", &format!("198.19.128.1{}/17", i + 1), "dev", "eth0"]);
        c.ip(&["link", "set", "eth0", "up"]);
        c.run(&["ethtool", "-K", "eth0", "tx", "off"]);
        out.push(c);
    }
    out
}

pub(crate) fn bench_dataplane(r: &mut Report) {
    let secs = env_num("BENCH_IPERF_SECS", 5);
    let runs = env_num("BENCH_IPERF_RUNS", 3);
    r.line(format!("### `dataplane`: iperf3, one TCP stream, {secs} s x {runs} runs each, interleaved"));
    r.line("");
    let c = Cluster::start(2, &[]);
    c.agents[0].cli_ok(&["tenant", "create", "dp", "--vni", "7301", "--cidr", "198.19.0.0/17", "--tunnel", "vxlan"]);
    let ca: Vec<Container> = (0..2).map(|_| Container::new("da")).collect();
    let mut ips = Vec::new();
    for (i, ctr) in ca.iter().enumerate() {
        let p = ctr.path().display().to_string();
        let j: Value =
            serde_json::from_str(&c.agents[i].cli_ok(&["plug", &format!("dp{i}"), "--tenant", "dp", "--netns", &p]))
                .expect("plug JSON");
        ips.push((j["ip"].as_str().unwrap().to_owned(), j["mtu"].as_u64().unwrap()));
    }
    wait_ping(&ca[0], &ips[1].0, Duration::from_secs(20));
    let ch = hand_built(&c.hosts);
    wait_ping(&ch[0], "198.19.128.12", Duration::from_secs(20));
    let (h0, h1) = (c.hosts[0].netns(), c.hosts[1].netns());
    let underlay_ip = c.hosts[1].underlay_ip().to_string();

    // Full-size frames cross without fragmentation: DF set, payload = MTU - 28.
    let mtu = ips[0].1 as usize;
    let ping_df = |size: usize| {
        ca[0].exec(&["ping", "-n", "-q", "-M", "do", "-c", "3", "-s", &size.to_string(), &ips[1].0]).status.success()
    };
    let full_ok = ping_df(mtu - 28);
    let over_refused = !ping_df(mtu - 27);

    let snmp_before: Vec<_> = ca.iter().map(|c| ip_snmp(c)).collect();
    let faults_before = link_faults(h0, "eth1") + link_faults(h1, "eth1");
    let (mut under, mut agent, mut hand) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        under.push(iperf(h1, h0, &underlay_ip, secs));
        agent.push(iperf(&ca[1], &ca[0], &ips[1].0, secs));
        hand.push(iperf(&ch[1], &ch[0], "198.19.128.12", secs));
    }
    let snmp_after: Vec<_> = ca.iter().map(|c| ip_snmp(c)).collect();
    let faults_after = link_faults(h0, "eth1") + link_faults(h1, "eth1");
    let frag = |k: &str| -> u64 {
        (0..2).map(|i| snmp_after[i].get(k).unwrap_or(&0) - snmp_before[i].get(k).unwrap_or(&0)).sum()
    };
    let summary = |v: &[Iperf]| {
        let s = stats(&v.iter().map(|x| x.gbps).collect::<Vec<_>>());
        let re: Vec<String> = v.iter().map(|x| x.retransmits.to_string()).collect();
        (s, re.join(", "), v[0].mss)
    };
    let (su, ru, mu) = summary(&under);
    let (sa, ra, ma) = summary(&agent);
    let (sh, rh, mh) = summary(&hand);
    let rowf = |what: &str, s: &Stats, re: &str, mss: u64, base: f64| {
        vec![
            what.to_owned(),
            format!("{:.2}", s.p50),
            format!("{:.2}-{:.2}", s.min, s.max),
            format!("{:.2}", s.p50 / base),
            re.to_owned(),
            mss.to_string(),
        ]
    };
    r.table(
        &["path", "Gbit/s p50", "min-max", "vs underlay", "retransmits per run", "TCP MSS"],
        &[
            rowf("underlay: host netns -> host netns over br-phy", &su, &ru, mu, su.p50),
            rowf("overlay built by the agent (VXLAN, VNI 7301)", &sa, &ra, ma, su.p50),
            rowf("same OVS, overlay built by hand (VXLAN, key 999)", &sh, &rh, mh, su.p50),
        ],
    );
    r.line(format!(
        "Agent overlay / hand-built overlay: **{:.2}** (p50). Container MTU {mtu}: ping with DF and \
         {} bytes of payload (a full {mtu}-byte packet) {}; {} bytes {}. During the runs the two \
         containers counted FragCreates {} and ReasmReqds {}, and the hosts' eth1 counted {} \
         errors + drops.",
        sa.p50 / sh.p50,
        mtu - 28,
        if full_ok { "crosses" } else { "DOES NOT cross" },
        mtu - 27,
        if over_refused { "is refused (needs fragmenting)" } else { "is NOT refused" },
        frag("FragCreates"),
        frag("ReasmReqds"),
        faults_after - faults_before
    ));
    r.line("");
}
