//! State that matches reality: a machine cloned from another's image can never take over a live
//! host's name or erase its containers; a dead machine is replaced only on purpose; a container
//! that dies without an unplug is unplugged by the agent within seconds.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use overlay_tests::{agent_binary, get_metrics, metrics_address, plug, ports_on, AgentProc, Cluster, Pinger};
use serde_json::Value;
use testbed::{wait_until, Container, TestHost};

const WAIT: Duration = Duration::from_secs(20);

/// `n` hosts whose OVS databases all carry one `system-id`, as machines built from one image do.
fn cloned_cluster(n: u8) -> Cluster {
    Cluster::start_prepared(n, &[], |h| {
        h.vsctl(&["set", "Open_vSwitch", ".", "external_ids:system-id=one-image"]);
    })
}

/// Every key and value under `<prefix>/<sub>`, as etcdctl prints them.
fn records(c: &Cluster, sub: &str) -> String {
    c.etcd.etcdctl(&["get", "--prefix", &format!("{}/{sub}", c.prefix)])
}

/// Under systemd, a state directory inside the unit's RuntimeDirectory (`$RUNTIME_DIRECTORY`;
/// /run/overlay-agent was the default of earlier releases) loses the identity at every stop, and
/// the next start would be refused its own hostname: the agent refuses it at start, before it
/// connects to anything or writes anything, and says what to set.
#[test]
fn a_state_dir_that_systemd_empties_at_every_stop_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = dir.path().join("run-overlay-agent");
    std::fs::create_dir(&runtime).expect("runtime dir");
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "").expect("config file");
    let path = |p: &std::path::Path| p.display().to_string();
    let mut child = Command::new(agent_binary())
        .args(["run", "--config", &path(&config), "--underlay-ip", "198.18.0.1", "--state-dir", &path(&runtime)])
        .args(["--ovsdb", &format!("unix:{}", path(&dir.path().join("none.sock")))])
        .args(["--api-socket", &path(&dir.path().join("api.sock")), "--etcd-endpoints", "http://198.18.0.1:2379"])
        .env("RUNTIME_DIRECTORY", &runtime)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning overlay-agent");
    // Without the check it would wait for an OVSDB that never answers.
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the agent started with its state_dir in RUNTIME_DIRECTORY: {:?}", child.wait_with_output());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("agent output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("state_dir {} is inside", runtime.display())), "{stderr}");
    assert!(
        stderr.contains("RuntimeDirectory") && stderr.contains("state_dir = \"/var/lib/overlay-agent\""),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(&runtime).expect("runtime dir").count(), 0, "the refused agent wrote into it");
    assert!(!dir.path().join("api.sock").exists(), "the refused agent opened its API");
}

#[test]
fn a_clone_started_under_a_live_hosts_name_is_refused_and_changes_nothing() {
    let metrics = metrics_address();
    let mut c = cloned_cluster(3);
    c.agents[0].cli_ok(&["tenant", "create", "red", "--vni", "31", "--cidr", "198.19.0.0/16"]);
    let (c1, c3) = (Container::new("ic"), Container::new("ic"));
    let ip1 = plug(&c.agents[0], "on-h1", "red", &c1, &[])["ip"].as_str().unwrap().to_owned();
    plug(&c.agents[2], "on-h3", "red", &c3, &[]);
    c.wait_ping(&c3, &ip1);
    let snapshot =
        |c: &Cluster| (records(c, "hosts/"), records(c, "endpoints/"), records(c, "ips/"), records(c, "subnets/"));
    let before = snapshot(&c);
    let ports_before = port_rows(&c.hosts[0]);
    let pinger = Pinger::start(&c3, &ip1);

    // A fourth agent, on h2's machine (same system-id: one image), started as h1.
    let h1 = c.hosts[0].name().to_owned();
    let mut clone = AgentProc::spawn_with(
        &c.hosts[1],
        &c.etcd.endpoint(),
        &c.prefix,
        &[("--hostname", h1.as_str())],
        &["--metrics-address", &metrics],
    );
    let why = clone.wait_refused();
    let holder_machine = c.agents[0].status()["host"]["machine_id"].as_str().unwrap().to_owned();
    assert!(why.contains(&format!("hostname '{h1}' is held by machine {holder_machine}")), "{why}");
    assert!(why.contains(&c.hosts[0].underlay_ip().to_string()) && why.contains("agent running"), "{why}");
    assert!(why.contains("give it its own --hostname"), "{why}");
    let status = clone.status();
    assert_eq!(status["host"]["registered"], false, "{status}");
    assert_ne!(status["host"]["machine_id"], holder_machine.as_str(), "a clone gets its own identity");
    let scrape = get_metrics(&metrics);
    assert!(scrape.contains("overlay_identity_conflict 1"), "{scrape}");
    assert!(clone.logs().contains("refusing to register"), "{}", clone.logs());
    // Plugging through it is refused too.
    let extra = Container::new("ic");
    let out = clone.cli(&["plug", "x", "--tenant", "red", "--netns", &extra.path().display().to_string()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not registered"));

    // Nothing it could have touched changed: h1's record, every endpoint, address and lease,
    // h1's ports; and h3 -> h1 never lost an echo.
    let report = pinger.stop();
    clone.stop();
    assert_eq!(snapshot(&c), before, "the refused clone changed etcd");
    assert_eq!(port_rows(&c.hosts[0]), ports_before);
    report.assert_no_loss("h3 -> h1 while a clone claimed h1");
    assert!(!c.agents[0].logs().contains("removing a container interface at start"));

    // The real h1, killed -9 and restarted: re-attaches at once, recreates nothing, loses nothing.
    let pinger = Pinger::start(&c3, &ip1);
    c.agents[0].kill();
    c.agents[0].restart();
    assert!(c.agents[0].logs().contains("reattached=true"), "{}", c.agents[0].logs());
    // A whole pass that began once the restarted agent was up found everything in place.
    c.agents[0].wait_pass_after_now();
    pinger.stop().assert_no_loss("h3 -> h1 across a kill -9 of h1's agent");
    assert_eq!(port_rows(&c.hosts[0]), ports_before, "the restart recreated or rewrote a port");
    assert_eq!(snapshot(&c), before);
}

/// Each port of br-int with its row's and its interface row's uuid and the port row's version
/// (ovs-vswitchd itself rewrites interface rows: statistics, link state).
fn port_rows(h: &TestHost) -> Vec<(String, String, String, String)> {
    ports_on(h, "br-int").into_values().map(|p| (p.name, p.uuid, p.version, p.iface_uuid)).collect()
}

#[test]
fn a_machine_gone_for_good_is_replaced_only_with_take_over_and_its_endpoints_go() {
    let mut c = Cluster::start(2, &[]);
    let fabric_host = c.add_host(3);
    c.agents[0].cli_ok(&["tenant", "create", "red", "--vni", "32", "--cidr", "198.19.0.0/16"]);
    let (old1, on2) = (Container::new("ir"), Container::new("ir"));
    let old_ip = plug(&c.agents[0], "old-on-h1", "red", &old1, &[])["ip"].as_str().unwrap().to_owned();
    plug(&c.agents[1], "on-h2", "red", &on2, &[]);
    let old_machine = c.agents[0].status()["host"]["machine_id"].as_str().unwrap().to_owned();
    let old_subnet = subnet_of(&c.agents[0], "red");
    let h1 = c.hosts[0].name().to_owned();
    // h1's machine is gone for good: its agent dies (its liveness key expires), its container
    // with it.
    c.agents[0].kill();
    drop(old1);

    // A new machine (h3's) started as h1 is refused, and told how to replace the old one.
    let mut new1 =
        AgentProc::spawn_with(&fabric_host, &c.etcd.endpoint(), &c.prefix, &[("--hostname", h1.as_str())], &[]);
    new1.wait_refused();
    // Refused while h1's liveness key lives; then, with the old machine's agent gone, told how to
    // replace it.
    new1.wait_answering(
        |s| s["host"]["identity_conflict"].as_str().is_some_and(|w| w.contains("agent not running")),
        "refused as a dead host's replacement",
    );
    let why = new1.status()["host"]["identity_conflict"].as_str().unwrap().to_owned();
    assert!(why.contains("agent not running") && why.contains(&format!("--take-over {old_machine}")), "{why}");
    new1.stop();
    assert_eq!(c.etcd_keys("endpoints/").len(), 2, "a refused machine removed an endpoint");

    // The documented procedure: start it with --take-over and the old machine's id.
    new1.set_arg("--take-over", &old_machine);
    new1.restart();
    let status = new1.status();
    assert_eq!(status["host"]["underlay_ip"], fabric_host.underlay_ip().to_string());
    assert_ne!(status["host"]["machine_id"], old_machine.as_str());
    let logs = new1.logs();
    assert!(logs.contains("took over the hostname of a machine that is gone"), "{logs}");
    assert!(logs.contains("endpoint of the replaced machine removed") && logs.contains("old-on-h1"), "{logs}");
    // Its endpoints and addresses are gone, h2's are not; its subnet is kept.
    let endpoints = c.etcd_keys("endpoints/");
    assert!(endpoints.iter().all(|k| !k.contains("old-on-h1")) && endpoints.len() == 1, "{endpoints:?}");
    assert!(!c.etcd_keys("ips/").iter().any(|k| k.ends_with(&format!("/{old_ip}"))));
    // A container on the new h1 talks to h2's, in the subnet the old machine had.
    let new_ctr = Container::new("ir");
    let new_ip = plug(&new1, "new-on-h1", "red", &new_ctr, &[])["ip"].as_str().unwrap().to_owned();
    assert_eq!(subnet_of(&new1, "red"), old_subnet, "the replaced machine's subnet is kept");
    wait_until(WAIT, "h2 -> new h1", || testbed::ping(&on2, &new_ip, 1, Duration::from_millis(500)));
}

fn subnet_of(agent: &AgentProc, tenant: &str) -> String {
    let status = agent.status();
    let t = status["tenants"].as_array().unwrap().iter().find(|t| t["name"] == tenant).cloned().unwrap_or(Value::Null);
    t["subnet"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn a_container_whose_namespace_is_deleted_is_unplugged_within_seconds_but_a_carrier_flap_is_not() {
    let c = Cluster::start(1, &[]);
    let a = &c.agents[0];
    a.cli_ok(&["tenant", "create", "red", "--vni", "33", "--cidr", "198.19.0.0/16"]);
    let (dies, flaps, witness) = (Container::new("id"), Container::new("id"), Container::new("id"));
    let ip = "198.19.77.7";
    let port = plug(a, "dies", "red", &dies, &["--ip", ip])["port"].as_str().unwrap().to_owned();
    let flap_ip = plug(a, "flaps", "red", &flaps, &[])["ip"].as_str().unwrap().to_owned();
    let witness_port = plug(a, "witness", "red", &witness, &[])["port"].as_str().unwrap().to_owned();

    // The carrier of one goes down and up: its veth stays, so nothing is unplugged...
    flaps.ip(&["link", "set", "eth0", "down"]);
    wait_until(WAIT, "no carrier on the host end", || {
        !c.hosts[0].netns().ip_json(&["link", "show", &plug_port(a, "flaps")])[0]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "LOWER_UP")
    });
    flaps.ip(&["link", "set", "eth0", "up"]);
    // ...which a later deletion shows: the agent handles link events in order, so once the
    // witness (deleted after the flap) is gone, the flap has been seen and left alone.
    drop(witness);
    if let Err(e) = testbed::try_wait_for(Duration::from_secs(10), "the witness unplugged", || {
        (!has_port(&c, &witness_port)).then_some(())
    }) {
        panic!("{e}\n--- agent log ---\n{}", a.logs());
    }

    // The other's namespace is deleted: within 10 s its port, record and address are gone.
    drop(dies);
    let started = std::time::Instant::now();
    wait_until(Duration::from_secs(10), "the dead container unplugged", || {
        !has_port(&c, &port)
            && !c.etcd_keys("endpoints/").iter().any(|k| k.contains("/dies/"))
            && !c.etcd_keys("ips/").iter().any(|k| k.ends_with(&format!("/{ip}")))
    });
    eprintln!("dead container unplugged {:?} after its namespace was deleted", started.elapsed());
    assert!(a.logs().contains("container interface gone (its veth was deleted); unplugged it"));
    assert_eq!(a.status()["counters"]["reaped"], 2);
    // The flapping one is still plugged and talks; the address is free for a new container.
    assert!(c.etcd_keys("endpoints/").iter().any(|k| k.contains("/flaps/")));
    let next = Container::new("id");
    let again = plug(a, "next", "red", &next, &["--ip", ip]);
    assert_eq!(again["ip"], ip);
    wait_until(WAIT, "the flapped container talks to the new one", || {
        testbed::ping(&flaps, ip, 1, Duration::from_millis(500))
    });
    assert!(testbed::ping(&next, &flap_ip, 1, Duration::from_secs(2)));
}

fn plug_port(agent: &AgentProc, container: &str) -> String {
    let eps: Value = serde_json::from_str(&agent.cli_ok(&["endpoints", "--json"])).unwrap();
    eps.as_array().unwrap().iter().find(|e| e["container_id"] == container).unwrap()["port"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn has_port(c: &Cluster, port: &str) -> bool {
    ports_on(&c.hosts[0], "br-int").contains_key(port)
}

#[test]
fn while_a_predecessors_liveness_key_lives_status_says_what_registering_waits_for() {
    let mut c = Cluster::start(1, &[]);
    let a = &mut c.agents[0];
    let host = a.status()["host"].clone();
    let (machine, underlay) = (host["machine_id"].as_str().unwrap().to_owned(), host["underlay_ip"].clone());
    a.stop();
    // The key this machine's agent left on its previous boot, as after a quick reboot: it
    // outlives the agent by its lease.
    let lease = c.etcd.etcdctl(&["lease", "grant", "8"]);
    let lease = lease.split_whitespace().nth(1).expect("etcdctl lease grant: lease ID granted ...").to_owned();
    let key = format!("{}/alive/{}", c.prefix, c.hosts[0].name());
    let previous =
        serde_json::json!({"machine_id": machine, "boot_id": "a-previous-boot", "pid": 1, "underlay_ip": underlay});
    c.etcd.etcdctl(&["put", &format!("--lease={lease}"), &key, &previous.to_string()]);
    let a = &mut c.agents[0];
    // A wait of 2 x 10 + 1 s: the key's 8 s run out within it.
    a.set_arg("--liveness-ttl", "10");
    a.launch(WAIT);
    a.wait_answering(|s| s["host"]["waiting_to_register"].is_string(), "waiting to register");
    let status = a.status();
    let waiting = status["host"]["waiting_to_register"].as_str().unwrap();
    assert!(waiting.contains(&format!("liveness key of machine {machine}")) && waiting.contains("21 s"), "{waiting}");
    assert_eq!(
        (&status["host"]["registered"], &status["host"]["identity_conflict"]),
        (&Value::Bool(false), &Value::Null)
    );
    let text = a.cli_ok(&["status"]);
    assert!(text.contains("not registered yet: waiting up to 21 s for the liveness key"), "{text}");
    // The key expires: the agent registers and says so.
    a.wait_ready();
    let status = a.status();
    assert_eq!(status["host"]["waiting_to_register"], Value::Null, "{status}");
    assert!(!a.cli_ok(&["status"]).contains("not registered"));
}
