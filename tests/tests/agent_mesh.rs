//! Multi-host tests of the agent core: three hosts (network namespaces, each with its own
//! ovsdb-server + ovs-vswitchd on the netdev datapath), one etcd, real agents. What is checked
//! is what an operator would see with `ovs-vsctl` on each host.

use std::collections::BTreeMap;
use std::time::Duration;

use overlay_tests::{get_metrics, metrics_address, ports_on, tunnels, AgentProc, Cluster, PortRow};
use testbed::{wait_for, wait_until, TestHost};

const WAIT: Duration = Duration::from_secs(15);

/// The tunnels a host should have: (peer index, tenant, type, vni).
fn expect_tunnels(c: &Cluster, host: usize, want: &[(usize, &str, &str, u32)]) {
    let h = &c.hosts[host];
    let got = wait_for(WAIT, &format!("tunnels on {}", h.name()), || {
        let t = tunnels(h);
        (t.len() == want.len()).then_some(t)
    });
    for &(peer, tenant, kind, vni) in want {
        let p = &c.hosts[peer];
        let port: &PortRow = got
            .values()
            .find(|t| {
                t.external_ids.get("overlay-peer").map(String::as_str) == Some(p.name())
                    && t.external_ids["overlay-tenant"] == tenant
            })
            .unwrap_or_else(|| panic!("no tunnel {tenant} -> {} on {}: {got:#?}", p.name(), h.name()));
        assert_eq!(port.kind, kind, "{port:#?}");
        assert_eq!(port.options["key"], vni.to_string());
        assert_eq!(port.options["remote_ip"], p.underlay_ip().to_string());
        assert_eq!(port.options["local_ip"], h.underlay_ip().to_string());
        assert!(port.protected, "tunnel ports are protected (split horizon): {port:#?}");
        let vlan = port.tag.expect("tunnel ports are access ports");
        assert!((1..=4094).contains(&vlan));
        assert_eq!(port.external_ids["overlay-local-vlan"], vlan.to_string());
        assert_eq!(port.external_ids["overlay-vni"], vni.to_string());
        assert_eq!(port.external_ids["overlay-owner"], h.name());
        assert_eq!(port.external_ids["overlay-kind"], "tunnel");
        assert!(port.name.len() <= 15, "{}", port.name);
    }
    // One local VLAN per tenant on this host.
    let mut vlan_of: BTreeMap<&str, i64> = BTreeMap::new();
    for t in got.values() {
        let prev = vlan_of.insert(&t.external_ids["overlay-tenant"], t.tag.unwrap());
        assert!(prev.is_none() || prev == t.tag, "tenant VLANs differ on {}: {got:#?}", h.name());
    }
    let vlans: std::collections::BTreeSet<i64> = vlan_of.values().copied().collect();
    assert_eq!(vlans.len(), vlan_of.len(), "two tenants share a VLAN on {}", h.name());
}

fn bridges_and_patches(h: &TestHost) {
    let int = ports_on(h, "br-int");
    let tun = ports_on(h, "br-tun");
    assert_eq!(int["patch-tun"].kind, "patch");
    assert_eq!(int["patch-tun"].options["peer"], "patch-int");
    assert_eq!(tun["patch-int"].options["peer"], "patch-tun");
    assert_eq!(int["patch-tun"].tag, None, "patch ports are trunks");
    let dp = h.vsctl(&["get", "Bridge", "br-int", "datapath_type"]);
    assert_eq!(dp.trim(), "netdev");
}

#[test]
fn tunnels_follow_tenant_membership_with_vxlan_and_gre() {
    let c = Cluster::start(3, &[]);
    for h in &c.hosts {
        wait_until(WAIT, "bridges", || ports_on(h, "br-tun").contains_key("patch-int"));
        bridges_and_patches(h);
    }
    let a = &c.agents;
    a[0].cli_ok(&["tenant", "create", "red", "--vni", "1001", "--cidr", "198.19.0.0/16", "--tunnel", "vxlan"]);
    a[0].cli_ok(&["tenant", "create", "blue", "--vni", "1002", "--cidr", "198.19.0.0/16", "--tunnel", "gre"]);
    // No host takes part yet: no tunnels anywhere, after a pass that saw both tenants.
    for (h, agent) in c.hosts.iter().zip(a) {
        agent.wait_pass_after_now();
        assert!(tunnels(h).is_empty());
    }
    for (i, t) in [(0, "red"), (1, "red"), (2, "red"), (0, "blue"), (2, "blue")] {
        a[i].cli_ok(&["tenant", "join", t]);
    }
    expect_tunnels(&c, 0, &[(1, "red", "vxlan", 1001), (2, "red", "vxlan", 1001), (2, "blue", "gre", 1002)]);
    expect_tunnels(&c, 1, &[(0, "red", "vxlan", 1001), (2, "red", "vxlan", 1001)]);
    expect_tunnels(&c, 2, &[(0, "red", "vxlan", 1001), (1, "red", "vxlan", 1001), (0, "blue", "gre", 1002)]);

    // Host 2 joins blue later: every blue host gains a tunnel to it.
    a[1].cli_ok(&["tenant", "join", "blue"]);
    expect_tunnels(
        &c,
        1,
        &[(0, "red", "vxlan", 1001), (2, "red", "vxlan", 1001), (0, "blue", "gre", 1002), (2, "blue", "gre", 1002)],
    );
    expect_tunnels(
        &c,
        0,
        &[(1, "red", "vxlan", 1001), (2, "red", "vxlan", 1001), (2, "blue", "gre", 1002), (1, "blue", "gre", 1002)],
    );

    // Status tells the same story.
    let s = a[0].status();
    assert_eq!(s["tunnels"].as_array().unwrap().len(), 4, "{s:#}");
    assert_eq!(s["peers"].as_array().unwrap().len(), 2, "{s:#}");
    let list = a[2].cli_ok(&["tenant", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    // (Less the tenants wait_pass_after_now made.)
    let mut names: Vec<&str> = list.as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    names.retain(|n| !n.starts_with("nudge-"));
    assert_eq!(names, ["blue", "red"]);

    // A tenant deleted: its tunnels go everywhere.
    a[2].cli_ok(&["tenant", "delete", "blue"]);
    expect_tunnels(&c, 0, &[(1, "red", "vxlan", 1001), (2, "red", "vxlan", 1001)]);
    expect_tunnels(&c, 2, &[(0, "red", "vxlan", 1001), (1, "red", "vxlan", 1001)]);
}

#[test]
fn peer_that_leaves_loses_its_tunnels_only_when_its_lease_expires() {
    // A short host lease so expiry fits in a test; liveness is shorter still.
    let mut c = Cluster::start(3, &["--host-ttl", "10"]);
    c.agents[0].cli_ok(&["tenant", "create", "red", "--vni", "7", "--cidr", "198.19.0.0/16"]);
    for a in &c.agents {
        a.cli_ok(&["tenant", "join", "red"]);
    }
    expect_tunnels(&c, 0, &[(1, "red", "vxlan", 7), (2, "red", "vxlan", 7)]);
    let gone = c.hosts[2].name().to_owned();
    c.agents[2].kill();
    // Liveness goes within seconds, and status says so, but the tunnels stay.
    wait_until(WAIT, "peer marked not alive", || {
        c.agents[0].status()["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["host"] == gone.as_str() && p["alive"] == false)
    });
    c.agents[0].wait_pass_after_now();
    assert_eq!(tunnels(&c.hosts[0]).len(), 2, "a dead agent's tunnels stay until its lease expires");
    // Then the host lease (10 s) expires and the tunnels go.
    expect_tunnels(&c, 0, &[(1, "red", "vxlan", 7)]);
    expect_tunnels(&c, 1, &[(0, "red", "vxlan", 7)]);
    // A host key deleted by an operator has the same effect, at once.
    c.etcd.etcdctl(&["del", &format!("{}/hosts/{}", c.prefix, c.hosts[1].name())]);
    expect_tunnels(&c, 0, &[]);
}

#[test]
fn restarting_an_agent_changes_no_ovsdb_row() {
    let mut c = Cluster::start(2, &[]);
    c.agents[0].cli_ok(&["tenant", "create", "red", "--vni", "9", "--cidr", "198.19.0.0/16"]);
    for a in &c.agents {
        a.cli_ok(&["tenant", "join", "red"]);
    }
    expect_tunnels(&c, 0, &[(1, "red", "vxlan", 9)]);
    let before = (ports_on(&c.hosts[0], "br-int"), ports_on(&c.hosts[0], "br-tun"));
    for graceful in [true, false] {
        if graceful {
            c.agents[0].stop();
        } else {
            c.agents[0].kill();
        }
        c.agents[0].restart();
        // The restarted agent re-attached to its registration; a whole pass that began after
        // it was up found everything in place, as did every pass before.
        let s = c.agents[0].wait_pass_after_now();
        assert_eq!(s["counters"]["ovsdb_transactions"], 0, "restart sent a transaction: {s:#}");
        let after = (ports_on(&c.hosts[0], "br-int"), ports_on(&c.hosts[0], "br-tun"));
        assert_eq!(before, after, "a restart rewrote OVSDB rows (uuid or _version changed)");
        assert!(c.agents[0].logs().contains("reattached=true"), "{}", c.agents[0].logs());
    }
    // The peer never lost its tunnel.
    assert_eq!(tunnels(&c.hosts[1]).len(), 1);
}

#[test]
fn second_agent_with_same_hostname_or_underlay_ip_is_refused() {
    let c = Cluster::start(2, &[]);
    let (h1, h2) = (&c.hosts[0], &c.hosts[1]);
    let before = c.etcd.etcdctl(&["get", "--prefix", &c.prefix]);
    // Host 2's machine claiming host 1's underlay IP: refused, it stays up and says why.
    let ip = h1.underlay_ip().to_string();
    let mut intruder = AgentProc::spawn_with(
        h2,
        &c.etcd.endpoint(),
        &c.prefix,
        &[("--underlay-ip", ip.as_str()), ("--hostname", "intruder")],
        &[],
    );
    let why = intruder.wait_refused();
    assert!(why.contains(&format!("underlay IP {ip} is already registered by host '{}'", h1.name())), "{why}");
    assert_eq!(intruder.status()["host"]["registered"], false);
    // ... and claiming host 1's hostname while host 1's agent runs.
    let mut twin = AgentProc::spawn_with(h2, &c.etcd.endpoint(), &c.prefix, &[("--hostname", h1.name())], &[]);
    let why = twin.wait_refused();
    assert!(why.contains(&format!("hostname '{}' is held by machine", h1.name())), "{why}");
    assert!(why.contains(&h1.underlay_ip().to_string()) && why.contains("cannot be taken over"), "{why}");
    // Neither writes anything: etcd is as it was, and they keep refusing.
    intruder.stop();
    twin.stop();
    assert_eq!(c.etcd.etcdctl(&["get", "--prefix", &c.prefix]), before);
    assert_eq!(c.agents[0].status()["host"]["name"], h1.name());
}

#[test]
fn foreign_ports_are_left_alone_and_a_deleted_tunnel_comes_back() {
    let c = Cluster::start(2, &[]);
    c.agents[0].cli_ok(&["tenant", "create", "red", "--vni", "11", "--cidr", "198.19.0.0/16"]);
    for a in &c.agents {
        a.cli_ok(&["tenant", "join", "red"]);
    }
    expect_tunnels(&c, 0, &[(1, "red", "vxlan", 11)]);
    let h = &c.hosts[0];
    h.vsctl(&["add-port", "br-tun", "operator-port", "--", "set", "Interface", "operator-port", "type=internal"]);
    let name = tunnels(h).into_keys().next().unwrap();
    h.vsctl(&["del-port", "br-tun", &name]);
    expect_tunnels(&c, 0, &[(1, "red", "vxlan", 11)]);
    assert!(ports_on(h, "br-tun").contains_key("operator-port"), "the agent removed a port it does not own");
}

#[test]
fn metrics_endpoint_serves_prometheus_text() {
    let addr = metrics_address();
    let c = Cluster::start(1, &["--metrics-address", &addr]);
    c.agents[0].cli_ok(&["tenant", "create", "red", "--vni", "12", "--cidr", "198.19.0.0/16"]);
    wait_until(WAIT, "metrics after a reconcile", || get_metrics(&addr).contains("overlay_reconciles_total "));
    let text = get_metrics(&addr);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for metric in [
        "overlay_ovsdb_transactions_total",
        "overlay_reconcile_errors_total 0",
        "overlay_peers 0",
        "overlay_tunnels 0",
        "overlay_ovsdb_connected 1",
    ] {
        assert!(text.contains(metric), "{metric} missing:\n{text}");
    }
    assert!(text.contains("# TYPE overlay_reconciles_total counter"), "{text}");
}
