//! The distributed gateway on real hosts (network namespaces with their own OVS and agent, etcd
//! over the fabric, an outside network routed by the fabric): egress from every host with the
//! host's own address though tenants share addresses, the gateway answered at home and its MAC
//! never on the wire, path MTU, isolation between tenants and from the control plane, published
//! ports, an agent restarted under a long stream, and what unplug, tenant delete and a crash
//! mid-plug leave (nothing).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

use overlay_tests::gateway::{tcp_ask, tcp_connects, udp_ask, GatewayLab, SourceServer, OUTSIDE_IP};
use overlay_tests::plug;
use serde_json::Value;
use testbed::{wait_until, Container, TestHost};

const WAIT: Duration = Duration::from_secs(30);
const ASK: Duration = Duration::from_secs(2);

/// The gateway MAC of a VNI, as the agent derives it (02:4f:56 + the VNI's 24 bits).
fn gateway_mac(vni: u32) -> [u8; 6] {
    let v = vni.to_be_bytes();
    [0x02, 0x4f, 0x56, v[1], v[2], v[3]]
}

fn mac_text(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Asks until an answer comes (the gateway is made by the pass after the first plug).
#[track_caller]
fn wait_answer(what: &str, mut ask: impl FnMut() -> std::io::Result<String>) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        match ask() {
            Ok(a) => return a,
            Err(e) if Instant::now() > deadline => panic!("{what}: no answer within {WAIT:?}: {e}"),
            Err(_) => {}
        }
    }
}

/// The agent's table in the host namespace, as nft lists it ("" when there is none).
fn host_table(h: &TestHost) -> String {
    h.netns().try_run(&["nft", "list", "table", "ip", "overlay_agent"]).unwrap_or_default()
}

/// A packet capture on a host's underlay NIC, read back as raw frames.
struct Capture {
    child: Child,
    file: tempfile::NamedTempFile,
}

impl Capture {
    fn start(h: &TestHost) -> Capture {
        testbed::require_binary("tcpdump", "apt-get install tcpdump");
        let file = tempfile::NamedTempFile::new().unwrap();
        let path = file.path().display().to_string();
        let child = h
            .netns()
            .command(&["tcpdump", "-i", "eth1", "--immediate-mode", "-U", "-n", "-s", "256", "-w", &path])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tcpdump");
        // The file header is written once the capture runs.
        wait_until(Duration::from_secs(10), "tcpdump to start", || {
            std::fs::metadata(file.path()).is_ok_and(|m| m.len() >= 24)
        });
        Capture { child, file }
    }

    /// Stops it; the frames it saw.
    fn stop(mut self) -> Vec<Vec<u8>> {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        self.frames()
    }

    /// The frames it saw so far.
    fn frames(&self) -> Vec<Vec<u8>> {
        let bytes = std::fs::read(self.file.path()).unwrap();
        let mut frames = Vec::new();
        let mut at = 24;
        while at + 16 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
            at += 16;
            frames.push(bytes[at..(at + len).min(bytes.len())].to_vec());
            at += len;
        }
        frames
    }
}

fn containing(frames: &[Vec<u8>], needle: &[u8]) -> usize {
    frames.iter().filter(|f| f.windows(needle.len()).any(|w| w == needle)).count()
}

#[test]
fn containers_on_every_host_reach_the_outside_with_their_hosts_address_though_tenants_share_addresses() {
    let lab = GatewayLab::start(3);
    let a = &lab.agents;
    a[0].cli_ok(&["tenant", "create", "red", "--vni", "4100", "--cidr", "198.19.0.0/16"]);
    a[0].cli_ok(&["tenant", "create", "blue", "--vni", "4200", "--cidr", "198.19.0.0/16", "--tunnel", "gre"]);
    let server = SourceServer::start(&lab.outside.path(), OUTSIDE_IP, 0, 0, "outside");
    let capture = Capture::start(&lab.hosts[0]);
    // On every host a red and a blue container with the same address.
    let mut ctrs = Vec::new();
    for (i, agent) in a.iter().enumerate() {
        let ip = format!("198.19.200.{}", i + 1);
        for tenant in ["red", "blue"] {
            let c = Container::new("gw");
            plug(agent, &format!("{tenant}{i}"), tenant, &c, &["--ip", &ip]);
            ctrs.push((i, tenant, c));
        }
    }
    for (i, tenant, c) in &ctrs {
        let underlay = lab.hosts[*i].underlay_ip();
        let what = format!("{tenant} container on host {}", i + 1);
        let tcp = wait_answer(&what, || tcp_ask(&c.path(), server.tcp, ASK));
        assert_eq!(tcp, format!("outside {underlay}"), "{what}: TCP leaves with its host's address");
        let udp = wait_answer(&what, || udp_ask(&c.path(), server.udp, ASK));
        assert_eq!(udp, format!("outside {underlay}"), "{what}: UDP leaves with its host's address");
        // The gateway answers at home, with its tenant's MAC.
        testbed::wait_ping(c, "198.19.0.1", WAIT);
        let vni = if *tenant == "red" { 4100 } else { 4200 };
        let neigh = c.run(&["ip", "neigh", "show", "198.19.0.1"]);
        assert!(neigh.contains(&mac_text(gateway_mac(vni))), "{what}: {neigh}");
    }
    // A reply too big for the outside link (MTU 1400) is refused on the way, and the ICMP error
    // finds the container through both translations.
    let red0 = &ctrs[0].2;
    let out = red0.exec(&["ping", "-n", "-M", "do", "-s", "1422", "-c", "3", "-i", "0.3", &OUTSIDE_IP.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("mtu = 1400") || text.contains("mtu=1400"),
        "no too-big error reached the container:\n{text}"
    );
    // The positive control of the capture: red0 talks to red1 across the fabric.
    testbed::wait_ping(red0, "198.19.200.2", WAIT);
    let frames = capture.stop();
    let red0_mac: Vec<u8> = red0.mac("eth0").split(':').map(|b| u8::from_str_radix(b, 16).unwrap()).collect();
    assert!(
        containing(&frames, &red0_mac) > 0,
        "the capture saw none of red0's {} frames: it does not work",
        frames.len()
    );
    for vni in [4100, 4200] {
        assert_eq!(containing(&frames, &gateway_mac(vni)), 0, "a frame of gateway {vni} crossed the underlay");
    }
    // Status shows each host's gateways.
    let s = a[1].status();
    let gws: Vec<&str> = s["gateways"].as_array().unwrap().iter().map(|g| g["tenant"].as_str().unwrap()).collect();
    assert_eq!(gws, ["red", "blue"], "by VNI: {s}");
}

/// A TCP listener in `h`'s namespace on its underlay address (a service of the host).
fn host_service(h: &TestHost) -> SourceServer {
    SourceServer::start(&h.netns().path(), h.underlay_ip(), 0, 0, h.name())
}

fn reaches(c: &Container, to: SocketAddrV4) -> bool {
    tcp_connects(&c.path(), to, Duration::from_millis(700))
}

#[test]
fn tenants_reach_neither_each_other_nor_the_control_plane_unless_allowed() {
    let mut lab = GatewayLab::start(2);
    let a = &lab.agents;
    let x = lab.fabric.subnet_octet();
    a[0].cli_ok(&["tenant", "create", "red", "--vni", "4300", "--cidr", "198.19.0.0/16"]);
    a[0].cli_ok(&["tenant", "create", "blue", "--vni", "4400", "--cidr", "198.19.0.0/16"]);
    let allow = format!("198.18.{x}.0/24");
    a[0].cli_ok(&["tenant", "create", "ops", "--vni", "4500", "--cidr", "198.19.0.0/16", "--allow", &allow]);
    a[0].cli_ok(&["tenant", "create", "closed", "--vni", "4600", "--cidr", "198.19.0.0/16", "--egress", "off"]);
    // Another host lists tenants from its watch of etcd: they show up there within a moment.
    let listed = |list: &str| {
        list.lines().any(|l| l.starts_with("closed") && l.contains(" off "))
            && list.lines().any(|l| l.starts_with("ops") && l.contains(&allow))
    };
    wait_until(WAIT, "host 2 to list the closed and ops tenants with their egress and allow-list", || {
        listed(&a[1].cli_ok(&["tenant", "list"]))
    });

    let server = SourceServer::start(&lab.outside.path(), OUTSIDE_IP, 0, 0, "outside");
    let (red, blue, ops, closed) =
        (Container::new("gi"), Container::new("gi"), Container::new("gi"), Container::new("gi"));
    plug(&a[0], "red", "red", &red, &["--ip", "198.19.9.1"]);
    plug(&a[0], "blue", "blue", &blue, &["--ip", "198.19.9.2"]);
    plug(&a[0], "ops", "ops", &ops, &["--ip", "198.19.9.3"]);
    plug(&a[0], "closed", "closed", &closed, &["--ip", "198.19.9.4"]);
    let blue_server = SourceServer::start(&blue.path(), "198.19.9.2".parse().unwrap(), 80, 0, "blue");
    // The outside works for red: what follows is refused for what it is, not for a broken path.
    let seen = wait_answer("red to the outside", || tcp_ask(&red.path(), server.tcp, ASK));
    assert_eq!(seen, format!("outside {}", lab.hosts[0].underlay_ip()));
    testbed::wait_ping(&closed, "198.19.0.1", WAIT);
    wait_answer("ops to the outside", || tcp_ask(&ops.path(), server.tcp, ASK));

    // Red cannot reach blue through the gateway: not blue's container (forced via the gateway)...
    red.ip(&["route", "add", "198.19.9.2/32", "via", "198.19.0.1"]);
    assert!(!reaches(&red, SocketAddrV4::new("198.19.9.2".parse().unwrap(), 80)));
    // ...nor blue's gateway (its router, by its transit address).
    let status = a[0].status();
    let transit = |tenant: &str| -> Ipv4Addr {
        let g = status["gateways"].as_array().unwrap().iter().find(|g| g["tenant"] == tenant).expect("a gateway");
        g["transit"].as_str().unwrap().parse().unwrap()
    };
    let blue_transit = transit("blue");
    assert!(!testbed::ping(&red, &blue_transit.to_string(), 2, Duration::from_millis(500)));
    assert!(!reaches(&red, SocketAddrV4::new(blue_transit, 80)));
    // Not the etcd the agents use, not its host's underlay address, not another host's.
    let etcd = lab.etcd_address();
    assert!(tcp_connects(&lab.hosts[0].netns().path(), etcd, ASK), "the host itself reaches etcd");
    assert!(!reaches(&red, etcd), "a container opened a connection to etcd");
    let services: Vec<SourceServer> = lab.hosts.iter().map(host_service).collect();
    for s in &services {
        assert!(tcp_ask(&lab.outside.path(), s.tcp, ASK).is_ok(), "the outside reaches the host service {}", s.tcp);
        assert!(!reaches(&red, s.tcp), "red reached the host service {}", s.tcp);
    }
    // The allow-list lets ops reach them, and only ops.
    for s in &services {
        let answer = wait_answer("ops to a host service", || tcp_ask(&ops.path(), s.tcp, ASK));
        assert!(answer.starts_with("host"), "{answer}");
    }
    // Egress off: the gateway answers, nothing leaves.
    assert!(!reaches(&closed, server.tcp), "a tenant with egress off reached the outside");
    // A host joining later is protected from then on, in the routers as in the host.
    lab.add_host(3);
    let h3 = lab.hosts[2].underlay_ip().to_string();
    wait_until(WAIT, "host 3's address in red's router on host 1", || lab.router_table(0, 4300).contains(&h3));
    let s3 = host_service(&lab.hosts[2]);
    assert!(tcp_ask(&lab.outside.path(), s3.tcp, ASK).is_ok(), "the outside reaches host 3's service");
    assert!(!reaches(&red, s3.tcp), "red reached the service of a host that joined later");
    // The drops were counted where the routers and the host keep them.
    let table = host_table(&lab.hosts[0]);
    assert!(table.contains("ip daddr @protected counter"), "{table}");
    drop(blue_server);
}

#[test]
fn published_ports_reach_containers_refuse_taken_ports_and_go_with_unplug_and_tenant_delete() {
    let lab = GatewayLab::start(2);
    let a = &lab.agents;
    a[0].cli_ok(&["tenant", "create", "red", "--vni", "4700", "--cidr", "198.19.0.0/16"]);
    let (web, other, late) = (Container::new("gp"), Container::new("gp"), Container::new("gp"));
    let r = plug(&a[0], "web", "red", &web, &["--publish", "8080:80/tcp", "--publish", "5353:53/udp"]);
    assert_eq!(r["publish"], serde_json::json!(["8080:80/tcp", "5353:53/udp"]));
    let ip: Ipv4Addr = r["ip"].as_str().unwrap().parse().unwrap();
    let inside = SourceServer::start(&web.path(), ip, 80, 53, "web");
    let underlay = lab.hosts[0].underlay_ip();
    let answer =
        wait_answer("outside to 8080", || tcp_ask(&lab.outside.path(), SocketAddrV4::new(underlay, 8080), ASK));
    assert_eq!(answer, format!("web {OUTSIDE_IP}"), "the container sees the client's own address");
    let answer =
        wait_answer("outside to 5353", || udp_ask(&lab.outside.path(), SocketAddrV4::new(underlay, 5353), ASK));
    assert_eq!(answer, format!("web {OUTSIDE_IP}"));
    let eps = a[0].cli_ok(&["endpoints"]);
    assert!(eps.contains("8080:80/tcp,5353:53/udp"), "{eps}");
    let status = a[0].status();
    assert!(status["endpoints"][0]["publish"].as_array().is_some_and(|p| p.len() == 2), "{status}");
    let gw = &status["gateways"][0];
    let forward = format!("8080/tcp -> {ip}:80");
    assert!(gw["published"].as_array().unwrap().iter().any(|p| p.as_str() == Some(forward.as_str())), "{gw}");

    // The same host port again: refused, and nothing of the second plug is left.
    let table_before = host_table(&lab.hosts[0]);
    let path = other.path().display().to_string();
    let out = a[0].cli(&["plug", "other", "--tenant", "red", "--netns", &path, "--publish", "8080:81/tcp"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("8080/tcp") && err.contains("already published"), "{err}");
    // A port something of the host listens on: refused too.
    let listening = SourceServer::start(&lab.hosts[0].netns().path(), Ipv4Addr::UNSPECIFIED, 7070, 0, "host");
    let out = a[0].cli(&["plug", "other", "--tenant", "red", "--netns", &path, "--publish", "7070:70/tcp"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("in use on this host"), "{err}");
    drop(listening);
    assert!(!other.has_link("eth0"), "the refused plug made an interface");
    assert!(!a[0].cli_ok(&["endpoints"]).contains("other"));
    let keys = lab.etcd.etcdctl(&["get", "--prefix", "--keys-only", &format!("{}/", lab.prefix)]);
    assert!(!keys.contains("/other"), "{keys}");
    assert_eq!(host_table(&lab.hosts[0]), table_before, "the refused plug changed the host's table");

    // A second host's container publishes the same port number on its own host: fine.
    let r2 = plug(&a[1], "late", "red", &late, &["--publish", "8080:80/tcp"]);
    let ip2: Ipv4Addr = r2["ip"].as_str().unwrap().parse().unwrap();
    let _inside2 = SourceServer::start(&late.path(), ip2, 80, 0, "late");
    let u2 = lab.hosts[1].underlay_ip();
    let answer =
        wait_answer("outside to host 2's 8080", || tcp_ask(&lab.outside.path(), SocketAddrV4::new(u2, 8080), ASK));
    assert!(answer.starts_with("late "), "{answer}");

    // Unplug: the port goes.
    drop(inside);
    a[0].cli_ok(&["unplug", "web"]);
    wait_until(WAIT, "host 1's table to lose the published ports", || {
        !host_table(&lab.hosts[0]).contains("dport 8080")
    });
    assert!(tcp_ask(&lab.outside.path(), SocketAddrV4::new(underlay, 8080), Duration::from_millis(700)).is_err());

    // Tenant delete: every host's gateway goes (router namespace, links, port row, tables).
    a[1].cli_ok(&["unplug", "late"]);
    a[0].cli_ok(&["tenant", "delete", "red"]);
    for (h, agent) in lab.hosts.iter().zip(a) {
        wait_until(WAIT, &format!("{}'s gateway to go", h.name()), || {
            agent.pinned().is_empty()
                && !h.netns().has_link("ovg-4700")
                && !h.netns().has_link("ovt-4700")
                && host_table(h).is_empty()
                && !h.vsctl(&["list-ports", "br-int"]).contains("ovg-4700")
        });
    }
}

/// Each host port published in `h`'s table, as `dport N` words.
fn published_in(h: &TestHost) -> Vec<String> {
    let t = host_table(h);
    let mut v: Vec<String> = t
        .lines()
        .filter(|l| l.contains("dnat to"))
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "dport").nth(1).map(str::to_owned))
        .collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn a_stream_through_snat_survives_agent_restarts_and_a_crash_mid_plug_leaves_no_stale_rule() {
    testbed::require_binary("iperf3", "apt-get install iperf3");
    let mut lab = GatewayLab::start(1);
    lab.agents[0].cli_ok(&["tenant", "create", "red", "--vni", "4800", "--cidr", "198.19.0.0/16"]);
    let c = Container::new("gr");
    plug(&lab.agents[0], "streamer", "red", &c, &[]);
    let server = SourceServer::start(&lab.outside.path(), OUTSIDE_IP, 0, 0, "outside");
    wait_answer("the outside", || tcp_ask(&c.path(), server.tcp, ASK));
    let mut iperf_server = lab
        .outside
        .command(&["iperf3", "-s", "-1", "-B", &OUTSIDE_IP.to_string(), "-p", "5211"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(WAIT, "iperf3 to listen", || lab.outside.run(&["ss", "-Htln", "sport = :5211"]).contains("5211"));
    let client = c
        .command(&["iperf3", "-c", &OUTSIDE_IP.to_string(), "-p", "5211", "-t", "20", "-b", "50M"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    // Under the stream: a clean restart, a restart after a crash, and a change of the host's
    // table (a new published port) that replaces it whole.
    wait_until(WAIT, "the stream to run", || started.elapsed() > Duration::from_secs(3));
    lab.agents[0].stop();
    lab.agents[0].restart();
    let p = Container::new("gr");
    plug(&lab.agents[0], "pub", "red", &p, &["--publish", "8088:80/tcp"]);
    wait_until(WAIT, "the new published port", || published_in(&lab.hosts[0]).contains(&"8088".to_owned()));
    lab.agents[0].kill();
    lab.agents[0].restart();
    let out = client.wait_with_output().unwrap();
    let _ = iperf_server.wait();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the stream broke:\n{text}");
    assert!(!text.contains("reset") && !text.contains("error"), "{text}");
    assert!(started.elapsed() >= Duration::from_secs(20), "iperf3 ended early:\n{text}");

    // Crashes mid-plug (with a published port), at a different point each round: after each
    // restart, every published port in the table is a recorded endpoint's, and the routers are
    // the tenants'.
    for round in 0..6u32 {
        let v = Container::new("gk");
        let id = format!("victim{round}");
        let path = v.path().display().to_string();
        let port = format!("{}", 9000 + round);
        let publish = format!("{port}:80/tcp");
        let mut cli =
            lab.agents[0].spawn_cli(&["plug", &id, "--tenant", "red", "--netns", &path, "--publish", &publish]);
        std::thread::sleep(Duration::from_millis(20 + 30 * u64::from(round)));
        lab.agents[0].kill();
        let _ = cli.wait();
        lab.agents[0].restart();
        let recorded: Vec<String> = {
            let eps: Value = serde_json::from_str(&lab.agents[0].cli_ok(&["endpoints", "--json"])).unwrap();
            let mut v: Vec<String> = eps
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|e| e["publish"].as_array().cloned().unwrap_or_default())
                .map(|p| p.as_str().unwrap().split(':').next().unwrap().to_owned())
                .collect();
            v.sort();
            v
        };
        wait_until(WAIT, &format!("round {round}: the table to hold exactly the recorded ports {recorded:?}"), || {
            published_in(&lab.hosts[0]) == recorded
        });
        assert_eq!(lab.agents[0].pinned(), ["gw-4800"], "round {round}");
        if recorded.contains(&port) {
            lab.agents[0].cli_ok(&["unplug", &id]);
        }
    }
}
