//! Multi-host tests of the agent core: three hosts (network namespaces, each with its own
//! ovsdb-server + ovs-vswitchd on the netdev datapath), one etcd, real agents. What is checked
//! is what an operator would see with `ovs-vsctl` and `ovs-ofctl` on each host.

use std::collections::BTreeSet;
use std::time::Duration;

use overlay_tests::{
    flows_on, get_metrics, metrics_address, ofport_of, plug, ports_on, tunnel_sources, tunnels, AgentProc, Cluster,
};
use testbed::{wait_for, wait_until, Container, TestHost};

const WAIT: Duration = Duration::from_secs(15);

/// Checks host `host`'s tenant tunnel ports: exactly `want` (tenant, type, vni), one per
/// tenant, each `remote_ip=flow` with key = VNI, and its flows accepting frames from exactly
/// the peers listed (host indexes) for that tenant.
fn expect_tenants(c: &Cluster, host: usize, want: &[(&str, &str, u32, &[usize])]) {
    let h = &c.hosts[host];
    let got = wait_for(WAIT, &format!("tenant ports and peers on {}", h.name()), || {
        let t = tunnels(h);
        let ready = t.len() == want.len()
            && want.iter().all(|&(tenant, _, _, peers)| {
                let Some(port) =
                    t.values().find(|p| p.external_ids.get("overlay-tenant").map(String::as_str) == Some(tenant))
                else {
                    return false;
                };
                let sources = ofport_of(h, &port.name).map(|o| tunnel_sources(h, o)).unwrap_or_default();
                sources == peers.iter().map(|&p| c.hosts[p].underlay_ip().to_string()).collect::<BTreeSet<_>>()
            });
        ready.then_some(t)
    });
    let mut vlans = BTreeSet::new();
    for &(tenant, kind, vni, _) in want {
        let port = got.values().find(|p| p.external_ids["overlay-tenant"] == tenant).unwrap();
        assert_eq!(port.name, format!("tun-{}-{vni}", &kind[..2]), "{port:#?}");
        assert_eq!(port.kind, kind, "{port:#?}");
        assert_eq!(port.options["key"], vni.to_string());
        assert_eq!(port.options["remote_ip"], "flow");
        assert_eq!(port.options["local_ip"], h.underlay_ip().to_string());
        assert!(!port.protected && port.tag.is_none(), "no MAC learning on br-tun: {port:#?}");
        let vlan: u16 = port.external_ids["overlay-local-vlan"].parse().unwrap();
        assert!((1..=4094).contains(&vlan) && vlans.insert(vlan), "tenant VLANs must differ: {got:#?}");
        assert_eq!(port.external_ids["overlay-vni"], vni.to_string());
        assert_eq!(port.external_ids["overlay-owner"], h.name());
        assert_eq!(port.external_ids["overlay-kind"], "tunnel");
    }
}

fn bridges_and_patches(h: &TestHost) {
    let int = ports_on(h, "br-int");
    let tun = ports_on(h, "br-tun");
    assert_eq!(int["patch-tun"].kind, "patch");
    assert_eq!(int["patch-tun"].options["peer"], "patch-int");
    assert_eq!(tun["patch-int"].options["peer"], "patch-tun");
    assert_eq!(int["patch-tun"].tag, None, "patch ports are trunks");
    for b in ["br-int", "br-tun"] {
        assert_eq!(h.vsctl(&["get", "Bridge", b, "datapath_type"]).trim(), "netdev");
        assert_eq!(h.vsctl(&["get", "Bridge", b, "fail_mode"]).trim(), "secure", "{b}");
    }
}

#[test]
fn one_tunnel_port_per_tenant_and_flows_per_member_with_vxlan_and_gre() {
    let c = Cluster::start(3, &[]);
    for h in &c.hosts {
        wait_until(WAIT, "bridges", || ports_on(h, "br-tun").contains_key("patch-int"));
        bridges_and_patches(h);
    }
    let a = &c.agents;
    a[0].cli_ok(&["tenant", "create", "red", "--vni", "1001", "--cidr", "198.19.0.0/16", "--tunnel", "vxlan"]);
    a[0].cli_ok(&["tenant", "create", "blue", "--vni", "1002", "--cidr", "198.19.0.0/16", "--tunnel", "gre"]);
    // No host takes part yet: no tunnel ports anywhere, after a pass that saw both tenants.
    for (h, agent) in c.hosts.iter().zip(a) {
        agent.wait_pass_after_now();
        assert!(tunnels(h).is_empty());
    }
    for (i, t) in [(0, "red"), (1, "red"), (2, "red"), (0, "blue"), (2, "blue")] {
        a[i].cli_ok(&["tenant", "join", t]);
    }
    expect_tenants(&c, 0, &[("red", "vxlan", 1001, &[1, 2]), ("blue", "gre", 1002, &[2])]);
    expect_tenants(&c, 1, &[("red", "vxlan", 1001, &[0, 2])]);
    expect_tenants(&c, 2, &[("red", "vxlan", 1001, &[0, 1]), ("blue", "gre", 1002, &[0])]);

    // Host 2 joins blue later: no port anywhere changes, every blue host accepts it.
    let ports_before = tunnels(&c.hosts[0]);
    a[1].cli_ok(&["tenant", "join", "blue"]);
    expect_tenants(&c, 1, &[("red", "vxlan", 1001, &[0, 2]), ("blue", "gre", 1002, &[0, 2])]);
    expect_tenants(&c, 0, &[("red", "vxlan", 1001, &[1, 2]), ("blue", "gre", 1002, &[1, 2])]);
    let uuids = |t: &std::collections::BTreeMap<String, overlay_tests::PortRow>| -> Vec<String> {
        t.values().map(|p| p.uuid.clone()).collect()
    };
    assert_eq!(uuids(&tunnels(&c.hosts[0])), uuids(&ports_before), "a peer joining changed a port");

    // Status tells the same story: two tunnel ports, two peers, flows per tenant and peer.
    let s = a[0].status();
    assert_eq!(s["tunnels"].as_array().unwrap().len(), 2, "{s:#}");
    assert!(s["tunnels"].as_array().unwrap().iter().all(|t| t["peers"] == 2 && t["ofport"].is_u64()), "{s:#}");
    assert_eq!(s["peers"].as_array().unwrap().len(), 2, "{s:#}");
    assert!(s["peers"].as_array().unwrap().iter().all(|p| p["flows"].as_u64() >= Some(2)), "{s:#}");
    let ours: Vec<&serde_json::Value> =
        s["tenants"].as_array().unwrap().iter().filter(|t| t["name"] == "red" || t["name"] == "blue").collect();
    assert!(ours.len() == 2 && ours.iter().all(|t| t["flows"].as_u64() >= Some(3)), "{s:#}");
    assert_eq!(s["flows"]["tun"].as_u64(), Some(flows_on(&c.hosts[0], "br-tun").len() as u64), "{s:#}");
    let text = a[0].cli_ok(&["status"]);
    assert!(text.contains("remote_ip=flow") && text.contains("flows:"), "{text}");
    let list: serde_json::Value = serde_json::from_str(&a[2].cli_ok(&["tenant", "list", "--json"])).unwrap();
    // (Less the tenants wait_pass_after_now made.)
    let mut names: Vec<&str> = list.as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    names.retain(|n| !n.starts_with("nudge-"));
    assert_eq!(names, ["blue", "red"]);

    // A tenant deleted: its port and its flows go everywhere.
    let blue_port = ofport_of(&c.hosts[0], "tun-gr-1002").unwrap();
    a[2].cli_ok(&["tenant", "delete", "blue"]);
    expect_tenants(&c, 0, &[("red", "vxlan", 1001, &[1, 2])]);
    expect_tenants(&c, 2, &[("red", "vxlan", 1001, &[0, 1])]);
    wait_until(WAIT, "blue's flows gone", || tunnel_sources(&c.hosts[0], blue_port).is_empty());
}

#[test]
fn peer_that_leaves_loses_its_flows_only_when_its_lease_expires() {
    // A short host lease so expiry fits in a test; liveness is shorter still.
    let mut c = Cluster::start(3, &["--host-ttl", "10"]);
    c.agents[0].cli_ok(&["tenant", "create", "red", "--vni", "7", "--cidr", "198.19.0.0/16"]);
    for a in &c.agents {
        a.cli_ok(&["tenant", "join", "red"]);
    }
    expect_tenants(&c, 0, &[("red", "vxlan", 7, &[1, 2])]);
    let gone = c.hosts[2].name().to_owned();
    c.agents[2].kill();
    // Liveness goes within seconds, and status says so, but its flows stay.
    wait_until(WAIT, "peer marked not alive", || {
        c.agents[0].status()["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["host"] == gone.as_str() && p["alive"] == false)
    });
    c.agents[0].wait_pass_after_now();
    let port = ofport_of(&c.hosts[0], "tun-vx-7").unwrap();
    assert_eq!(tunnel_sources(&c.hosts[0], port).len(), 2, "a dead agent's flows stay until its lease expires");
    // Then the host lease (10 s) expires and its flows go.
    expect_tenants(&c, 0, &[("red", "vxlan", 7, &[1])]);
    expect_tenants(&c, 1, &[("red", "vxlan", 7, &[0])]);
    // A host key deleted by an operator has the same effect, at once.
    c.etcd.etcdctl(&["del", &format!("{}/hosts/{}", c.prefix, c.hosts[1].name())]);
    expect_tenants(&c, 0, &[("red", "vxlan", 7, &[])]);
}

#[test]
fn restarting_an_agent_changes_no_ovsdb_row_and_no_flow() {
    let mut c = Cluster::start(2, &[]);
    c.agents[0].cli_ok(&["tenant", "create", "red", "--vni", "9", "--cidr", "198.19.0.0/16"]);
    for a in &c.agents {
        a.cli_ok(&["tenant", "join", "red"]);
    }
    expect_tenants(&c, 0, &[("red", "vxlan", 9, &[1])]);
    let h = &c.hosts[0];
    let before = (ports_on(h, "br-int"), ports_on(h, "br-tun"), flows_on(h, "br-int"), flows_on(h, "br-tun"));
    for graceful in [true, false] {
        if graceful {
            c.agents[0].stop();
        } else {
            c.agents[0].kill();
        }
        c.agents[0].restart();
        // The restarted agent re-attached to its registration, read both bridges back and
        // found nothing to change: a whole pass that began after it was up ended, and it had
        // sent nothing.
        let s = c.agents[0].wait_pass_after_now();
        assert_eq!(s["counters"]["ovsdb_transactions"], 0, "restart sent a transaction: {s:#}");
        assert_eq!(s["counters"]["openflow_bundles"], 0, "restart changed flows: {s:#}");
        let after = (ports_on(h, "br-int"), ports_on(h, "br-tun"), flows_on(h, "br-int"), flows_on(h, "br-tun"));
        assert_eq!(before, after, "a restart rewrote OVSDB rows (uuid or _version changed) or flows");
        assert!(c.agents[0].logs().contains("reattached=true"), "{}", c.agents[0].logs());
    }
    // The peer never lost its flows.
    expect_tenants(&c, 1, &[("red", "vxlan", 9, &[0])]);
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
fn foreign_ports_flows_and_keys_are_left_alone_and_what_is_ours_comes_back() {
    let c = Cluster::start(2, &["--resync-interval", "2"]);
    c.agents[0].cli_ok(&["tenant", "create", "red", "--vni", "11", "--cidr", "198.19.0.0/16"]);
    for a in &c.agents {
        a.cli_ok(&["tenant", "join", "red"]);
    }
    expect_tenants(&c, 0, &[("red", "vxlan", 11, &[1])]);
    let h = &c.hosts[0];
    // Another tool's port, flow and external_ids keys.
    h.vsctl(&["add-port", "br-tun", "operator-port", "--", "set", "Interface", "operator-port", "type=internal"]);
    let foreign_flow = "cookie=0x1234,table=5,priority=7,ip,nw_dst=198.18.100.9 actions=drop";
    h.vswitchd().ofctl(&["-O", "OpenFlow13", "add-flow", "{mgmt:br-tun}", foreign_flow]);
    h.vsctl(&["set", "Interface", "tun-vx-11", "external_ids:other-tool=kept"]);
    h.vsctl(&["set", "Port", "tun-vx-11", "external_ids:other-tool=kept-too"]);
    // A drifted column of our port makes the agent update it: by mutation of its own keys.
    h.vsctl(&["set", "Port", "tun-vx-11", "tag=5"]);
    wait_until(WAIT, "the tag repaired", || tunnels(h)["tun-vx-11"].tag.is_none());
    let port = &tunnels(h)["tun-vx-11"];
    assert_eq!(port.iface_external_ids.get("other-tool").map(String::as_str), Some("kept"), "{port:#?}");
    assert_eq!(port.external_ids.get("other-tool").map(String::as_str), Some("kept-too"), "{port:#?}");
    // Our tunnel port deleted by hand comes back.
    h.vsctl(&["del-port", "br-tun", "tun-vx-11"]);
    expect_tenants(&c, 0, &[("red", "vxlan", 11, &[1])]);
    // One of our flows deleted by hand comes back at the next full pass.
    let ours = flows_on(h, "br-tun").into_iter().find(|f| f.contains("tun_src=")).unwrap();
    h.vswitchd().ofctl(&["-O", "OpenFlow13", "del-flows", "--strict", "{mgmt:br-tun}", &strict_spec(&ours)]);
    assert!(!flows_on(h, "br-tun").contains(&ours));
    wait_until(WAIT, "the deleted flow back", || flows_on(h, "br-tun").contains(&ours));
    assert!(ports_on(h, "br-tun").contains_key("operator-port"), "the agent removed a port it does not own");
    assert!(
        flows_on(h, "br-tun").iter().any(|f| f.contains("cookie=0x1234") && f.contains("nw_dst=198.18.100.9")),
        "the agent removed a flow it does not own"
    );
}

/// The spec of flow `f` (as `flows_on` prints it) for `ovs-ofctl del-flows --strict`.
fn strict_spec(f: &str) -> String {
    let matching = f.split(" actions=").next().unwrap();
    matching.split(", ").filter(|p| !p.starts_with("cookie=")).collect::<Vec<_>>().join(",")
}

#[test]
fn the_full_resync_runs_on_time_under_a_steady_stream_of_etcd_events() {
    let interval = Duration::from_secs(3);
    let c = Cluster::start(2, &["--resync-interval", "3"]);
    c.agents[0].cli_ok(&["tenant", "create", "red", "--vni", "13", "--cidr", "198.19.0.0/16"]);
    for a in &c.agents {
        a.cli_ok(&["tenant", "join", "red"]);
    }
    expect_tenants(&c, 0, &[("red", "vxlan", 13, &[1])]);
    let h = &c.hosts[0];
    // Events every 200 ms, each one a tenant the agents must take in (so each wakes a pass):
    // faster than the interval, as on a busy cluster where every plug anywhere writes etcd.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let streamer = {
        let (stop, etcd, prefix) = (stop.clone(), c.etcd.endpoint(), c.prefix.clone());
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("stream-{n}");
                let tenant = format!(
                    r#"{{"name":"{name}","vni":{},"cidr":"198.19.0.0/16","tunnel":"vxlan","subnet_len":24}}"#,
                    20_000 + n
                );
                let out = std::process::Command::new("etcdctl")
                    .args(["--endpoints", &etcd, "put", &format!("{prefix}/tenants/{name}"), &tenant])
                    .output()
                    .expect("etcdctl");
                assert!(out.status.success(), "etcdctl put: {}", String::from_utf8_lossy(&out.stderr));
                n += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            n
        })
    };
    // Let the stream run past one interval, then take a flow away behind the agent's back: no
    // event says so, only the full pass reads the flows back.
    let passes = || c.agents[0].status()["counters"]["reconciles"].as_u64().unwrap();
    let before = passes();
    let streaming = std::time::Instant::now();
    wait_until(WAIT, "the stream to run for an interval", || streaming.elapsed() > interval);
    let ours = flows_on(h, "br-tun").into_iter().find(|f| f.contains("tun_src=")).unwrap();
    h.vswitchd().ofctl(&["-O", "OpenFlow13", "del-flows", "--strict", "{mgmt:br-tun}", &strict_spec(&ours)]);
    let gone = std::time::Instant::now();
    wait_until(WAIT, "the deleted flow back", || flows_on(h, "br-tun").contains(&ours));
    let back_after = gone.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let events = streamer.join().expect("streamer");
    let woken = passes() - before;
    // The stream did wake the loop (a pass per event or so): the resync was not the only pass.
    assert!(woken >= u64::from(events) / 2, "{events} events woke only {woken} passes: the stream proves nothing");
    assert!(
        back_after <= interval + Duration::from_millis(1500),
        "the deleted flow came back after {back_after:?} with a {interval:?} resync interval and {events} events streaming"
    );
    eprintln!("deleted flow back after {back_after:?}; {events} events, {woken} passes");
}

#[test]
fn metrics_endpoint_serves_prometheus_text() {
    let addr = metrics_address();
    let c = Cluster::start(1, &["--metrics-address", &addr]);
    c.agents[0].cli_ok(&["tenant", "create", "red", "--vni", "12", "--cidr", "198.19.0.0/16"]);
    let get = || get_metrics(&addr);
    wait_until(WAIT, "metrics after a reconcile", || get().contains("overlay_reconciles_total "));
    let text = get();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for metric in [
        "overlay_ovsdb_transactions_total",
        "overlay_openflow_bundles_total",
        "overlay_reconcile_errors_total 0",
        "overlay_peers 0",
        "overlay_tunnels 0",
        "overlay_ovsdb_connected 1",
        "overlay_identity_conflict 0",
        "overlay_containers_reaped_total 0",
    ] {
        assert!(text.contains(metric), "{metric} missing:\n{text}");
    }
    assert!(text.contains("# TYPE overlay_reconciles_total counter"), "{text}");
    // Both bridges come to hold flows: the drops and NORMAL of the empty pipeline.
    let flows = |text: &str| -> u64 {
        text.lines().find_map(|l| l.strip_prefix("overlay_flows ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    };
    wait_until(WAIT, "the first pass's flows in the metrics", || flows(&get()) >= 4);
}

#[test]
fn what_plugs_and_unplugs_send_is_counted_like_what_passes_send() {
    let addr = metrics_address();
    let c = Cluster::start(1, &["--metrics-address", &addr]);
    let a = &c.agents[0];
    a.cli_ok(&["tenant", "create", "red", "--vni", "13", "--cidr", "198.19.0.0/16"]);
    let (first, second) = (Container::new("cnt"), Container::new("cnt"));
    plug(a, "first", "red", &first, &[]);
    let counted = |s: &serde_json::Value| {
        let c = &s["counters"];
        (c["ovsdb_transactions"].as_u64().unwrap(), c["openflow_bundles"].as_u64().unwrap())
    };
    // The host takes part in the tenant already: a second plug changes no bridge or tunnel, so
    // the passes around it write no OVSDB row. Its own port row is a transaction, and its port's
    // flows two bundles on br-int (everything dropped before the row exists, then its
    // container's addresses let through).
    let (tx0, bundles0) = counted(&a.wait_pass_after_now());
    plug(a, "second", "red", &second, &[]);
    let after_plug = a.wait_pass_after_now();
    let (tx1, bundles1) = counted(&after_plug);
    assert!(tx1 > tx0, "the plug's port row was not counted: {after_plug:#}");
    assert!(bundles1 >= bundles0 + 2, "the plug's two bundles were not counted: {after_plug:#}");
    // An unplug removes the port row: a transaction too.
    a.cli_ok(&["unplug", "second"]);
    let after_unplug = a.wait_pass_after_now();
    assert!(counted(&after_unplug).0 > tx1, "the unplug's transaction was not counted: {after_unplug:#}");
    // The metrics read the same counters.
    let (tx, bundles) = counted(&after_unplug);
    let text = get_metrics(&addr);
    assert!(text.contains(&format!("overlay_ovsdb_transactions_total {tx}\n")), "{tx}:\n{text}");
    assert!(text.contains(&format!("overlay_openflow_bundles_total {bundles}\n")), "{bundles}:\n{text}");
}

#[test]
fn the_cli_ends_quietly_when_its_reader_goes_away() {
    use std::process::{Command, Stdio};
    let c = Cluster::start(1, &[]);
    let a = &c.agents[0];
    a.cli_ok(&["tenant", "create", "red", "--vni", "14", "--cidr", "198.19.0.0/16"]);
    for args in [&["status"][..], &["status", "--json"], &["tenant", "list"], &["endpoints"]] {
        // `overlay-agent status | head -0`: the reader has gone before the first line is written.
        let mut reader = Command::new("true").stdin(Stdio::piped()).spawn().expect("true");
        let pipe = reader.stdin.take().expect("the reader's stdin");
        assert!(reader.wait().expect("true").success());
        let out = Command::new(overlay_tests::agent_binary())
            .arg("--api-socket")
            .arg(a.api_socket())
            .args(args)
            .stdout(pipe)
            .output()
            .expect("overlay-agent CLI");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stderr.is_empty(), "{args:?} into a closed pipe: {:?}\n{stderr}", out.status);
    }
    // Any other failure still fails.
    let out = Command::new(overlay_tests::agent_binary())
        .args(["--api-socket", "/nonexistent/overlay.sock", "status"])
        .output()
        .expect("overlay-agent CLI");
    assert!(!out.status.success(), "{out:?}");
}

#[test]
fn a_wrong_ovs_rundir_is_named_in_the_pass_error_with_what_to_check() {
    let mut c = Cluster::start(1, &[]);
    let wrong = tempfile::tempdir().expect("tempdir");
    let a = &mut c.agents[0];
    a.stop();
    a.set_arg("--ovs-rundir", &wrong.path().display().to_string());
    a.restart();
    // A pass programs br-int (under the plumbing lock) before br-tun: br-int's is the error.
    let socket = format!("unix:{}", wrong.path().join("br-int.mgmt").display());
    a.wait_answering(
        |s| s["last_error"].as_str().is_some_and(|e| e.contains(&socket)),
        "a pass error naming the socket it looked for",
    );
    let error = a.status()["last_error"].as_str().unwrap().to_owned();
    assert!(error.contains("No such file or directory") && error.contains("--ovs-rundir"), "{error}");
    assert!(a.cli_ok(&["status"]).contains(&format!("last reconcile error: cannot reach ovs-vswitchd for the flows of br-int: no OpenFlow session with the switch at {socket}")));
}
