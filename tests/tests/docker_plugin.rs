//! Docker with the overlay-agent network and IPAM driver on two hosts, each with its own
//! dockerd (in the host's namespace), agent, OVS and plugin: networks map to tenants, containers
//! started with `docker run --network` reach each other within a tenant and not across, a
//! container connected to two networks reaches both, stop and disconnect leave nothing, and a
//! plugin or agent killed in the middle of `docker run` leaves nothing once it is back.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};

use overlay_tests::docker::DockerHost;
use overlay_tests::gateway::{tcp_ask, SourceServer};
use overlay_tests::leftovers::{check_host, endpoint_records, wait_clean};
use overlay_tests::{ports_on, Cluster};

#[test]
fn docker_networks_are_tenants_across_two_hosts() {
    let started = Instant::now();
    let c = Cluster::start(2, &[]);
    let d = [DockerHost::start(&c, 0), DockerHost::start(&c, 1)];
    eprintln!("cluster and two dockerds up in {:?}", started.elapsed());
    // red and blue share a CIDR; green has its own, for a container on two networks (Docker,
    // like Linux routing, cannot hold two interfaces on one subnet).
    d[0].network("red", "red", &["vni=4101"], &["--subnet", "198.19.0.0/17"]);
    d[0].network("blue", "blue", &["vni=4102"], &["--subnet", "198.19.0.0/17"]);
    d[0].network("green", "green", &["vni=4103", "tunnel=gre"], &["--subnet", "198.19.128.0/17"]);
    for n in ["red", "blue", "green"] {
        d[1].network(n, n, &[], &["--subnet", if n == "green" { "198.19.128.0/17" } else { "198.19.0.0/17" }]);
    }
    let tenants = c.agents[0].cli_ok(&["tenant", "list"]);
    assert!(tenants.contains("4101") && tenants.contains("4102") && tenants.contains("gre"), "{tenants}");

    let r1 = d[0].run("r1", "red", &[]);
    d[1].run("r2", "red", &[]);
    // Blue containers at fixed addresses no red container has: reaching one from red would be
    // a leak, not a red container answering.
    d[0].run("b1", "blue", &["--ip", "198.19.100.201"]);
    d[1].run("b2", "blue", &["--ip", "198.19.100.202"]);
    d[1].run("g2", "green", &[]);
    let (ip_r1, ip_r2, ip_g2) = (d[0].ip("r1", "red"), d[1].ip("r2", "red"), d[1].ip("g2", "green"));
    assert_eq!(d[1].ip("b2", "blue"), "198.19.100.202", "--ip is honoured");
    eprintln!("r1 {ip_r1} r2 {ip_r2} g2 {ip_g2}");

    // The endpoint is the agent's: Docker's address and MAC are the agent's record, the port
    // carries the nova-docker external_ids.
    let ep = d[0].on_network("r1", "red");
    let eid = ep["EndpointID"].as_str().expect("EndpointID").to_owned();
    let records = endpoint_records(&c, 0);
    let rec = records.values().find(|e| e["container_id"] == eid.as_str()).expect("an endpoint record for r1");
    assert_eq!((rec["ip"].as_str(), rec["mac"].as_str()), (ep["IPAddress"].as_str(), ep["MacAddress"].as_str()));
    let port_name = rec["port"].as_str().unwrap().to_owned();
    let ids = ports_on(&c.hosts[0], "br-int")[&port_name].iface_external_ids.clone();
    assert_eq!(ids["iface-id"], eid);
    assert_eq!(ids["attached-mac"], ep["MacAddress"].as_str().unwrap());
    assert_eq!(ids["iface-status"], "active");
    // vm-uuid: the container, once Docker shows which container joined (a driver is never told).
    testbed::wait_until(Duration::from_secs(10), "the port's vm-uuid to be r1's container id", || {
        ports_on(&c.hosts[0], "br-int")[&port_name].iface_external_ids.get("vm-uuid") == Some(&r1)
    });
    // Inside: eth0 with the tenant's prefix, MTU and default route.
    let inside =
        String::from_utf8_lossy(&d[0].docker(&["exec", "r1", "ip", "addr", "show", "eth0"]).stdout).into_owned();
    assert!(inside.contains(&format!("{ip_r1}/17")) && inside.contains("mtu 1450"), "{inside}");
    let routes = String::from_utf8_lossy(&d[0].docker(&["exec", "r1", "ip", "route"]).stdout).into_owned();
    assert!(routes.contains("default via 198.19.0.1 dev eth0"), "{routes}");

    // Within a tenant, across hosts, both ways; TCP too (checksum offload follows the move).
    d[0].wait_ping("r1", &ip_r2);
    d[1].wait_ping("r2", &ip_r1);
    d[0].wait_ping("b1", "198.19.100.202");
    // 256 KiB over TCP: segments of the full MTU, checksums the userspace datapath must not lose.
    d[1].ok(&[
        "exec",
        "-d",
        "r2",
        "sh",
        "-c",
        "dd if=/dev/zero of=/var/www/big bs=1024 count=256 && httpd -p 8080 -h /var/www",
    ]);
    let fetch = format!("printf 'GET /big HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {ip_r2} 8080 | wc -c");
    testbed::wait_until(Duration::from_secs(20), "256 KiB over HTTP from r2", || {
        let out = d[0].docker(&["exec", "r1", "sh", "-c", &fetch]);
        String::from_utf8_lossy(&out.stdout).trim().parse::<usize>().is_ok_and(|n| n > 256 * 1024)
    });
    // Not across tenants, on the same host or another.
    for (from, to) in [("r1", "198.19.100.201"), ("r1", "198.19.100.202"), ("r1", ip_g2.as_str())] {
        assert!(!d[0].pings(from, to, 2), "{from} reached {to} across tenants");
    }
    assert!(!d[1].pings("b2", &ip_r2, 2), "b2 reached red's r2");

    // A container on two networks reaches both.
    d[0].run("rg1", "red", &[]);
    d[0].ok(&["network", "connect", "green", "rg1"]);
    d[0].wait_ping("rg1", &ip_r2);
    d[0].wait_ping("rg1", &ip_g2);
    assert_eq!(endpoint_records(&c, 0).values().filter(|e| e["owner"].as_str().is_some()).count(), 4);

    // Refused: removing a network with containers on it.
    let err = d[0].fails(&["network", "rm", "red"]);
    assert!(err.contains("active endpoints"), "{err}");

    // -p: a published port of the agent's gateway, on the host's underlay address. A client on
    // the other host reaches the container, which sees the client's own address.
    d[0].run("web", "red", &["-p", "18080:80"]);
    let web_ip: Ipv4Addr = d[0].ip("web", "red").parse().expect("web's address");
    let web_eid = d[0].on_network("web", "red")["EndpointID"].as_str().expect("EndpointID").to_owned();
    let rec = endpoint_records(&c, 0).into_values().find(|e| e["container_id"] == web_eid.as_str()).expect("web");
    assert_eq!(rec["publish"], serde_json::json!([{"host_port": 18080, "port": 80, "protocol": "tcp"}]));
    let sandbox = d[0].inspect("web")["NetworkSettings"]["SandboxKey"].as_str().expect("SandboxKey").to_owned();
    let server = SourceServer::start(Path::new(&sandbox), web_ip, 80, 0, "web");
    let (u0, u1) = (c.hosts[0].underlay_ip(), c.hosts[1].underlay_ip());
    let from = c.hosts[1].netns().path();
    testbed::wait_until(Duration::from_secs(20), "host 2 to reach web through host 1's 18080", || {
        tcp_ask(&from, SocketAddrV4::new(u0, 18080), Duration::from_secs(1)).is_ok_and(|a| a == format!("web {u1}"))
    });
    // What the gateway cannot publish is refused with what to do, and leaves nothing.
    let err = d[0].fails(&["run", "-d", "-p", "127.0.0.1:18081:80", "--network", "red", d[0].image, "sleep", "60"]);
    assert!(err.contains("underlay address"), "{err}");
    let err = d[0].fails(&["run", "-d", "-p", "18080:81", "--network", "red", d[0].image, "sleep", "60"]);
    assert!(err.contains("18080/tcp"), "the same host port twice: {err}");
    d[0].ok(&["container", "prune", "-f"]);
    // Stopped, its port is no longer published.
    drop(server);
    d[0].ok(&["stop", "-t", "1", "web"]);
    testbed::wait_until(Duration::from_secs(20), "host 1's nft table to lose port 18080", || {
        !c.hosts[0]
            .netns()
            .try_run(&["nft", "list", "table", "ip", "overlay_agent"])
            .unwrap_or_default()
            .contains("dport 18080")
    });
    assert!(tcp_ask(&from, SocketAddrV4::new(u0, 18080), Duration::from_millis(700)).is_err());
    check_host(&c, 0, false).unwrap_or_else(|e| panic!("after stopping a container with -p: {e}"));

    // Disconnect, stop: the endpoint goes, port, veth, record and address with it.
    d[0].ok(&["network", "disconnect", "green", "rg1"]);
    assert!(!d[0].pings("rg1", &ip_g2, 1));
    d[0].wait_ping("rg1", &ip_r2);
    d[0].ok(&["stop", "-t", "1", "r1"]);
    let left = endpoint_records(&c, 0);
    assert!(!left.values().any(|e| e["container_id"] == eid.as_str()), "r1's record is left: {left:?}");
    assert!(!c.etcd_kvs("ips/").values().any(|v| v["container"] == eid.as_str()));
    check_host(&c, 0, false).unwrap_or_else(|e| panic!("after docker stop: {e}"));
    // Started again it is a new endpoint, and reaches red again.
    d[0].ok(&["start", "r1"]);
    d[0].wait_ping("r1", &ip_r2);

    for host in &d {
        host.dockerd.remove_all_containers();
    }
    for i in 0..2 {
        wait_clean(&c, i, "after removing every container");
    }
    for host in &d {
        for n in ["red", "blue", "green"] {
            host.ok(&["network", "rm", n]);
        }
    }
    eprintln!("docker test done in {:?}", started.elapsed());
}

/// Waits (60 s at most) for a `docker` CLI started in the background; whether it succeeded,
/// and its stderr.
fn finish(mut child: std::process::Child) -> (bool, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("try_wait").is_none() {
        assert!(Instant::now() < deadline, "docker run did not finish within 60 s of its plugin or agent coming back");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("docker run output");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_plugin_or_agent_killed_mid_docker_run_leaves_nothing_once_back() {
    let started = Instant::now();
    let mut c = Cluster::start(1, &[]);
    let mut d = DockerHost::start(&c, 0);
    d.network("red", "red", &["vni=4111"], &["--subnet", "198.19.0.0/16"]);
    // A container that stays, plugged before the kills: the kills must not touch it.
    d.run("stays", "red", &[]);
    let stays_ip = d.ip("stays", "red");
    let t = Instant::now();
    d.run("probe", "red", &[]);
    let run_time = t.elapsed();
    d.ok(&["rm", "-f", "probe"]);
    eprintln!("a docker run takes {run_time:?}");

    // Where each round kills: a victim stopped (SIGSTOP) before the run, killed while Docker
    // or the plugin waits on it; or the plugin or agent killed a few milliseconds after the
    // agent reserved the container's address, inside the plug that follows.
    // "agent-paused": the agent stopped right after the reservation, so the plugin's plug call
    // hangs in it; the plugin is killed there and the agent resumed: the agent finishes the plug
    // for a caller that is gone, Docker's repeated call fails, and the plugin must find and
    // unplug the endpoint Docker never got.
    let rounds: [(&str, &str, u64); 10] = [
        ("plugin", "agent-paused", 0),
        ("plugin", "agent-paused", 0),
        ("plugin", "stopped", 0),
        ("agent", "stopped", 0),
        ("agent", "reserved", 0),
        ("agent", "reserved", 10),
        ("agent", "reserved", 30),
        ("plugin", "reserved", 0),
        ("plugin", "reserved", 15),
        ("plugin", "reserved", 40),
    ];
    let mut outcomes = Vec::new();
    for (round, (victim, when, delay_ms)) in rounds.into_iter().enumerate() {
        let name = format!("v{round}");
        let pid = if victim == "plugin" { d.plugin.pid() } else { c.agents[0].pid() }.expect("victim pid");
        let signal = |sig: &str| {
            assert!(std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success())
        };
        let reserved = |c: &Cluster| c.agents[0].logs().matches("address reserved for a plug to come").count();
        let before = reserved(&c);
        if when == "stopped" {
            signal("-STOP");
        }
        let child = d
            .dockerd
            .command(&["run", "-d", "--name", &name, "--network", "red", d.image, "sleep", "3600"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("docker run");
        match when {
            "stopped" => std::thread::sleep(run_time),
            "agent-paused" => {}
            _ => {
                testbed::wait_until(Duration::from_secs(20), "the agent to reserve the address", || {
                    reserved(&c) > before
                });
                std::thread::sleep(Duration::from_millis(delay_ms));
            }
        }
        let agent_pid = c.agents[0].pid().expect("agent pid").to_string();
        let agent_signal =
            |sig: &str| assert!(std::process::Command::new("kill").args([sig, &agent_pid]).status().unwrap().success());
        if when == "agent-paused" {
            // Paused once the plugin has its address (the reservation's answer is in), so the
            // plug that follows waits in the agent.
            let count = |d: &DockerHost, what: &str| d.plugin.logs().matches(what).count();
            let reserved_before = count(&d, "address reserved");
            let calls_before = count(&d, "call=NetworkDriver.CreateEndpoint");
            testbed::wait_until(Duration::from_secs(20), "the plugin to get its address", || {
                count(&d, "address reserved") > reserved_before
            });
            agent_signal("-STOP");
            testbed::wait_until(Duration::from_secs(20), "Docker's CreateEndpoint to reach the plugin", || {
                count(&d, "call=NetworkDriver.CreateEndpoint") > calls_before
            });
            std::thread::sleep(Duration::from_millis(50));
        }
        if victim == "plugin" {
            d.plugin.kill();
            d.plugin.restart();
            if when == "agent-paused" {
                agent_signal("-CONT");
            }
        } else {
            c.agents[0].kill();
            c.agents[0].restart();
        }
        let (ok, stderr) = finish(child);
        let context = format!(
            "round {round}: {victim} killed ({when}, +{delay_ms} ms), docker run {}",
            if ok { "succeeded" } else { "failed" }
        );
        if ok {
            // Plugged for real: it reaches the container that stayed.
            d.wait_ping(&name, &stays_ip);
        } else {
            eprintln!("{context}: {stderr}");
        }
        outcomes.push(format!("{victim}/{when}+{delay_ms}:{}", if ok { "ran" } else { "failed" }));
        d.ok(&["rm", "-f", &name]);
        // Nothing of the round is left: an endpoint the killed plugin never handed to Docker
        // is unplugged by the restarted plugin's background pass (1 s interval here).
        testbed::wait_until(Duration::from_secs(10), &format!("{context}: only 'stays' to be plugged"), || {
            endpoint_records(&c, 0).len() == 1
        });
        wait_clean(&c, 0, &context);
        d.wait_ping("stays", &stays_ip);
    }
    // Evidence that the kills landed inside calls: plugs the agent rolled back at a start,
    // calls the plugin repeated while the agent was down, calls Docker repeated to a new plugin.
    let agent_log = c.agents[0].logs();
    let rolled_back = agent_log.matches("removing a container interface at start").count()
        + agent_log.matches("address of an interrupted plug released").count();
    let plugin_log = d.plugin.logs();
    let waited = plugin_log.matches("the agent cannot answer now").count();
    let lost = plugin_log.matches("endpoint Docker does not know").count();
    eprintln!(
        "outcomes: {outcomes:?}; agent rolled back {rolled_back} interrupted plug(s), plugin waited for the agent \
         {waited} time(s), unplugged {lost} endpoint(s) Docker lost"
    );
    // Whether an endpoint plugged for a killed plugin is removed by Docker's own rollback
    // (DeleteEndpoint after the failed call) or by the plugin's background pass depends on
    // which reaches the agent first; either way each round above ended clean. What must hold:
    // kills of the plugin made Docker's call fail (they landed inside it), and the plugin
    // waited for a killed agent (that kill landed inside a call too).
    assert!(
        outcomes.iter().any(|o| o.starts_with("plugin/") && o.ends_with(":failed")),
        "no plugin kill landed inside a docker run: {outcomes:?}"
    );
    assert!(waited >= 1, "the plugin never waited for a killed agent: the agent kills missed the runs");
    // The container that stayed is still plugged, and nothing else is.
    let records = endpoint_records(&c, 0);
    assert_eq!(records.len(), 1, "{records:?}");
    check_host(&c, 0, false).unwrap();
    eprintln!("kill test done in {:?}", started.elapsed());
}
