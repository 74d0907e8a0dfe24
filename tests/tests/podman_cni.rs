//! podman with the CNI backend and overlay-cni on two hosts, each with its own agent and OVS:
//! containers started with `podman run --network` reach each other within a tenant and not
//! across, a container connected to two networks reaches both, `podman stop` (CNI DEL) leaves
//! nothing, a DEL repeated is fine, and an ADD that fails leaves nothing.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testbed::Podman;

use overlay_tests::cni::{env, invoke};
use overlay_tests::gateway::{tcp_ask, SourceServer};
use overlay_tests::leftovers::{check_host, endpoint_records, wait_clean};
use overlay_tests::{workspace_binary, Cluster};

/// podman on host `i`, with one network (`NAME.conflist`) per tenant through that host's agent.
fn podman_on(c: &Cluster, i: usize, tenants: &[&str]) -> Podman {
    let plugin_dir = workspace_binary("overlay-cni").parent().expect("target dir").to_path_buf();
    let p = Podman::new(Some(c.hosts[i].netns()), &[plugin_dir.as_path()]);
    for t in tenants {
        let conflist = json!({"cniVersion": "1.0.0", "name": t, "plugins": [
            {"type": "overlay-cni", "tenant": t, "agentSocket": c.agents[i].api_socket(),
             "capabilities": {"portMappings": true}}]});
        std::fs::write(p.network_dir().join(format!("{t}.conflist")), conflist.to_string()).expect("conflist");
    }
    p
}

fn run(p: &Podman, image: &str, name: &str, network: &str, extra: &[&str]) -> String {
    let mut args = vec!["run", "-d", "--name", name, "--network", network, "--cap-add", "NET_RAW"];
    args.extend_from_slice(extra);
    args.extend([image, "sleep", "3600"]);
    p.podman_ok(&args)
}

fn ip(p: &Podman, name: &str, network: &str) -> String {
    let out = p.podman_ok(&["inspect", name]);
    let v: Value = serde_json::from_str(&out).expect("podman inspect JSON");
    v[0]["NetworkSettings"]["Networks"][network]["IPAddress"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no address on {network}: {}", v[0]["NetworkSettings"]))
        .to_owned()
}

fn pings(p: &Podman, name: &str, ip: &str, secs: u32) -> bool {
    p.podman(&["exec", name, "ping", "-c", "1", "-W", &secs.to_string(), ip]).status.success()
}

#[track_caller]
fn wait_ping(p: &Podman, name: &str, ip: &str) {
    testbed::wait_until(Duration::from_secs(20), &format!("{name} to reach {ip}"), || pings(p, name, ip, 1));
}

#[test]
fn podman_networks_are_tenants_across_two_hosts() {
    let started = Instant::now();
    let c = Cluster::start(2, &[]);
    let a = &c.agents[0];
    a.cli_ok(&["tenant", "create", "red", "--vni", "4301", "--cidr", "198.19.0.0/17"]);
    a.cli_ok(&["tenant", "create", "blue", "--vni", "4302", "--cidr", "198.19.0.0/17"]);
    a.cli_ok(&["tenant", "create", "green", "--vni", "4303", "--cidr", "198.19.128.0/17", "--tunnel", "gre"]);
    let p = [podman_on(&c, 0, &["red", "blue", "green"]), podman_on(&c, 1, &["red", "blue", "green"])];
    let image = p[0].import_busybox();
    p[1].import_busybox();
    eprintln!("cluster and podman ready in {:?}", started.elapsed());

    run(&p[0], image, "r1", "red", &[]);
    run(&p[1], image, "r2", "red", &[]);
    run(&p[0], image, "b1", "blue", &["--ip", "198.19.100.201"]);
    run(&p[1], image, "b2", "blue", &["--ip", "198.19.100.202"]);
    run(&p[1], image, "g2", "green", &[]);
    let (ip_r1, ip_r2, ip_g2) = (ip(&p[0], "r1", "red"), ip(&p[1], "r2", "red"), ip(&p[1], "g2", "green"));
    assert_eq!(ip(&p[1], "b2", "blue"), "198.19.100.202", "--ip (CNI_ARGS IP=) is honoured");
    let owners: Vec<Value> = endpoint_records(&c, 0).into_values().map(|e| e["owner"].clone()).collect();
    assert!(owners.contains(&json!("cni:red")) && owners.contains(&json!("cni:blue")), "{owners:?}");

    wait_ping(&p[0], "r1", &ip_r2);
    wait_ping(&p[1], "r2", &ip_r1);
    wait_ping(&p[0], "b1", "198.19.100.202");
    for to in ["198.19.100.201", "198.19.100.202", ip_g2.as_str()] {
        assert!(!pings(&p[0], "r1", to, 2), "r1 reached {to} across tenants");
    }

    // Two networks: eth1 on green, both reached.
    run(&p[0], image, "rg1", "red", &[]);
    p[0].podman_ok(&["network", "connect", "green", "rg1"]);
    wait_ping(&p[0], "rg1", &ip_r2);
    wait_ping(&p[0], "rg1", &ip_g2);
    p[0].podman_ok(&["network", "disconnect", "green", "rg1"]);
    assert!(!pings(&p[0], "rg1", &ip_g2, 1));
    check_host(&c, 0, false).unwrap_or_else(|e| panic!("after disconnect: {e}"));

    // -p (the portMappings capability): published by the agent's gateway on the host's
    // underlay address; a client on the other host reaches the container.
    run(&p[0], image, "web", "red", &["-p", "18082:80"]);
    let web_ip: Ipv4Addr = ip(&p[0], "web", "red").parse().expect("web's address");
    let sandbox = p[0].podman_ok(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", "web"]);
    let server = SourceServer::start(Path::new(sandbox.trim()), web_ip, 80, 0, "web");
    let (u0, u1) = (c.hosts[0].underlay_ip(), c.hosts[1].underlay_ip());
    let from = c.hosts[1].netns().path();
    testbed::wait_until(Duration::from_secs(20), "host 2 to reach web through host 1's 18082", || {
        tcp_ask(&from, SocketAddrV4::new(u0, 18082), Duration::from_secs(1)).is_ok_and(|a| a == format!("web {u1}"))
    });
    drop(server);
    p[0].podman_ok(&["rm", "-f", "-t", "1", "web"]);
    check_host(&c, 0, false).unwrap_or_else(|e| panic!("after removing a container with -p: {e}"));

    // A failed ADD (the address is b2's, on the other host) leaves nothing; podman says why.
    let before = endpoint_records(&c, 0).len();
    let out = p[0].podman(&[
        "run",
        "-d",
        "--name",
        "bad",
        "--network",
        "blue",
        "--ip",
        "198.19.100.202",
        image,
        "sleep",
        "60",
    ]);
    assert!(!out.status.success(), "a second container got b2's address");
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(endpoint_records(&c, 0).len(), before);
    check_host(&c, 0, false).unwrap_or_else(|e| panic!("after a failed ADD: {e}"));

    // Stop: DEL; the port, veth, record and address go. DEL again (as a runtime may) is fine.
    let id = p[0].podman_ok(&["inspect", "-f", "{{.Id}}", "r1"]);
    p[0].podman_ok(&["stop", "-t", "1", "r1"]);
    assert!(!endpoint_records(&c, 0).values().any(|e| e["container_id"] == id.as_str()));
    check_host(&c, 0, false).unwrap_or_else(|e| panic!("after podman stop: {e}"));
    let conf = json!({"cniVersion": "1.0.0", "name": "red", "type": "overlay-cni", "tenant": "red",
                      "agentSocket": c.agents[0].api_socket()});
    let del = invoke(&env("DEL", &id, "/var/run/netns/gone", "eth0", ""), &conf.to_string());
    assert!(del.ok, "a repeated DEL: {}", del.out);
    // Started again, it is plugged again and reaches red.
    p[0].podman_ok(&["start", "r1"]);
    wait_ping(&p[0], "r1", &ip_r2);

    for (i, host) in p.iter().enumerate() {
        host.podman_ok(&["rm", "-af", "-t", "1"]);
        wait_clean(&c, i, "after removing every container");
    }
    assert!(Path::new(&workspace_binary("overlay-cni")).exists());
    eprintln!("podman test done in {:?}", started.elapsed());
}
