//! Upgrading a running cluster from the port-per-peer agent (the last release before the flow
//! pipeline, built by `make old-agent`) to this one, host by host, under traffic: each host's
//! per-peer tunnel ports give way to one flow-based port per tenant within a second of loss,
//! old and new hosts carry each other's traffic both ways meanwhile, and the containers the old
//! agent plugged are adopted (kept, served, unpluggable) by the new one.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use overlay_tests::{ip_of, plug, tunnels, AgentProc, PingReport, Pinger};
use serde_json::Value;
use testbed::{wait_until, Container, Etcd, TestHost};

/// The most a container may lose while its host's agent is upgraded: 1 s of echoes at 0.05 s.
const MAX_LOST_ECHOES: usize = 20;

/// The old agent's binary: `$OVERLAY_OLD_AGENT` (make test sets it) or where `make old-agent`
/// puts it.
fn old_agent_binary() -> PathBuf {
    let path = std::env::var_os("OVERLAY_OLD_AGENT").map(PathBuf::from).unwrap_or_else(|| {
        let exe = std::env::current_exe().expect("current_exe");
        // target/<profile>/deps/<test> -> target/old-agent/overlay-agent
        exe.ancestors().nth(3).expect("target dir").join("old-agent/overlay-agent")
    });
    assert!(
        path.exists(),
        "the old agent {} is missing: run `make old-agent` (make test does), or set OVERLAY_OLD_AGENT",
        path.display()
    );
    path
}

/// An agent of the old release for one host: its CLI knows neither `--state-dir` nor
/// `--ovs-rundir`, and its status has no registration field (it answers once registered).
struct OldAgent {
    child: Option<Child>,
    dir: tempfile::TempDir,
    binary: PathBuf,
    hostname: String,
}

impl OldAgent {
    fn start(host: &TestHost, etcd: &Etcd, prefix: &str) -> OldAgent {
        let dir = tempfile::Builder::new().prefix("old-agent-").tempdir().expect("tempdir");
        let mut args = AgentProc::run_args(host, etcd, prefix, &dir.path().join("api.sock"));
        for flag in ["--state-dir", "--ovs-rundir"] {
            if let Some(i) = args.iter().position(|a| a == flag) {
                args.drain(i..i + 2);
            }
        }
        let config = dir.path().join("agent.toml");
        std::fs::write(&config, "").expect("config file");
        args.extend(["--config".to_owned(), config.display().to_string()]);
        let log = std::fs::File::create(dir.path().join("agent.log")).expect("log file");
        let binary = old_agent_binary();
        let child = Command::new(&binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawning the old overlay-agent");
        let mut a = OldAgent { child: Some(child), dir, binary, hostname: host.name().to_owned() };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(a.api_socket().exists() && a.cli(&["status", "--json"]).status.success()) {
            let exited = a.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            assert!(exited.is_none() && Instant::now() < deadline, "old agent {} not up:\n{}", a.hostname, a.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        a
    }

    fn api_socket(&self) -> PathBuf {
        self.dir.path().join("api.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(&self.binary).arg("--api-socket").arg(self.api_socket()).args(args).output().expect("old CLI")
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "old {args:?}: {}\n{}", String::from_utf8_lossy(&out.stderr), self.log());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn plug(&self, id: &str, tenant: &str, c: &Container) -> String {
        let path = c.path().display().to_string();
        let v: Value =
            serde_json::from_str(&self.cli_ok(&["plug", id, "--tenant", tenant, "--netns", &path])).expect("plug JSON");
        v["ip"].as_str().expect("ip").to_owned()
    }

    /// SIGTERM, as a package upgrade stops the service; waits for the exit.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() {
                assert!(Instant::now() < deadline, "old agent {} ignored SIGTERM:\n{}", self.hostname, self.log());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for OldAgent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Replaces `old` on `host` by this release's agent and waits until its flows are in.
fn upgrade(old: &mut OldAgent, host: &TestHost, etcd: &Etcd, prefix: &str) -> AgentProc {
    old.stop();
    let mut new = AgentProc::spawn_with(host, &etcd.endpoint(), prefix, &[], &[]);
    new.wait_ready();
    let peers_in = |s: &Value| {
        s["peers"].as_array().is_some_and(|p| !p.is_empty() && p.iter().all(|p| p["flows"].as_u64() > Some(0)))
    };
    new.wait_answering(|s| s["flows"]["pending"] == false && peers_in(s), "flows in for every peer");
    new
}

/// The tunnel ports on `host`'s br-tun: (name, remote_ip, key).
fn tunnel_ports(host: &TestHost) -> Vec<(String, String, String)> {
    tunnels(host)
        .into_values()
        .map(|p| {
            let opt = |k: &str| p.options.get(k).cloned().unwrap_or_default();
            (p.name, opt("remote_ip"), opt("key"))
        })
        .collect()
}

#[track_caller]
fn assert_short_loss(r: &PingReport, what: &str) {
    let lost = r.lost();
    assert!(r.transmitted > 10, "{what}: ping hardly ran");
    assert!(
        lost.len() <= MAX_LOST_ECHOES,
        "{what}: {} of {} echoes lost (seq {lost:?}); at most {MAX_LOST_ECHOES} (1 s) allowed",
        lost.len(),
        r.transmitted
    );
    eprintln!("{what}: {} echoes, {} lost", r.transmitted, lost.len());
}

fn ping_ok(from: &Container, ip: &str) -> bool {
    testbed::ping(from, ip, 1, Duration::from_millis(500))
}

#[test]
fn a_cluster_upgrades_host_by_host_under_traffic_and_keeps_every_container() {
    let etcd = Etcd::start();
    let fabric = testbed::Fabric::new();
    let prefix = format!("/{}", testbed::unique_name("up"));
    let hosts: Vec<TestHost> = (1..=2).map(|i| fabric.add_host(i)).collect();
    let mut old: Vec<OldAgent> = hosts.iter().map(|h| OldAgent::start(h, &etcd, &prefix)).collect();
    // Two tenants on one CIDR, one per tunnel type.
    old[0].cli_ok(&["tenant", "create", "red", "--vni", "4301", "--cidr", "198.19.0.0/16", "--tunnel", "vxlan"]);
    old[0].cli_ok(&["tenant", "create", "blue", "--vni", "4302", "--cidr", "198.19.0.0/16", "--tunnel", "gre"]);
    let (r1, r2, b1, b2) = (Container::new("ur"), Container::new("ur"), Container::new("ub"), Container::new("ub"));
    let r1_ip = old[0].plug("up-r1", "red", &r1);
    let r2_ip = old[1].plug("up-r2", "red", &r2);
    let b1_ip = old[0].plug("up-b1", "blue", &b1);
    let b2_ip = old[1].plug("up-b2", "blue", &b2);
    wait_until(Duration::from_secs(20), "the old cluster carries both tenants", || {
        ping_ok(&r1, &r2_ip) && ping_ok(&b1, &b2_ip)
    });
    let old_ports = tunnel_ports(&hosts[0]);
    assert!(
        old_ports.iter().all(|(_, remote, _)| remote == &hosts[1].underlay_ip().to_string()),
        "the old design: one port per (peer, tenant): {old_ports:?}"
    );
    let records = |etcd: &Etcd| etcd.etcdctl(&["get", "--prefix", "--keys-only", &format!("{prefix}/ips/")]);
    let addresses_before = records(&etcd);

    // Host 1 first, under traffic both ways and in both tenants.
    let pingers = [Pinger::start(&r2, &r1_ip), Pinger::start(&r1, &r2_ip), Pinger::start(&b1, &b2_ip)];
    let new0 = upgrade(&mut old[0], &hosts[0], &etcd, &prefix);
    wait_until(Duration::from_secs(5), "traffic across the upgraded host", || ping_ok(&r1, &r2_ip));
    for (p, what) in pingers.into_iter().zip(["red h2->h1", "red h1->h2", "blue h1->h2"]) {
        assert_short_loss(&p.stop(), &format!("{what} while h1 upgrades"));
    }
    let mut ports = tunnel_ports(&hosts[0]);
    ports.sort();
    assert_eq!(
        ports,
        vec![
            ("tun-gr-4302".to_owned(), "flow".to_owned(), "4302".to_owned()),
            ("tun-vx-4301".to_owned(), "flow".to_owned(), "4301".to_owned()),
        ],
        "h1 after its upgrade: one flow-based port per tenant, keyed by its VNI"
    );

    // A mixed cluster: a container plugged by the new agent and one plugged by the old reach
    // each other both ways, and the tenants stay apart on the shared CIDR.
    let r3 = Container::new("ur");
    let r3_ip = ip_of(&plug(&new0, "up-r3", "red", &r3, &[]));
    let r4 = Container::new("ur");
    let r4_ip = old[1].plug("up-r4", "red", &r4);
    wait_until(Duration::from_secs(20), "new and old hosts reach each other", || {
        ping_ok(&r3, &r2_ip) && ping_ok(&r3, &r4_ip) && ping_ok(&r4, &r3_ip) && ping_ok(&r4, &r1_ip)
    });
    assert_eq!(r1_ip, b1_ip, "both tenants gave h1's first container the same address");
    assert!(!ping_ok(&b2, &r3_ip), "blue reached red's new container across the mixed cluster");

    // Then host 2.
    let pingers = [Pinger::start(&r2, &r1_ip), Pinger::start(&r4, &r3_ip), Pinger::start(&b2, &b1_ip)];
    let new1 = upgrade(&mut old[1], &hosts[1], &etcd, &prefix);
    wait_until(Duration::from_secs(5), "traffic across the upgraded cluster", || ping_ok(&r2, &r1_ip));
    for (p, what) in pingers.into_iter().zip(["red h2->h1", "red h2->h1 (new container)", "blue h2->h1"]) {
        assert_short_loss(&p.stop(), &format!("{what} while h2 upgrades"));
    }
    for h in &hosts {
        assert!(
            tunnel_ports(h).iter().all(|(_, remote, _)| remote == "flow"),
            "{}: a per-peer port survived the upgrade: {:?}",
            h.name(),
            tunnel_ports(h)
        );
    }
    // Every container is still there, with its address; the old agent's are the new one's.
    let now = records(&etcd);
    for line in addresses_before.lines().filter(|l| !l.is_empty()) {
        assert!(now.contains(line), "address record {line} lost in the upgrade:\n{now}");
    }
    let listed = new1.cli_ok(&["endpoints", "--json"]);
    for id in ["up-r2", "up-b2", "up-r4"] {
        assert!(listed.contains(id), "{id} is not listed by the upgraded agent:\n{listed}");
    }
    new1.cli_ok(&["unplug", "up-r2"]);
    wait_until(Duration::from_secs(10), "the adopted container unplugged", || !ping_ok(&r1, &r2_ip));
    let r2_key = format!("{prefix}/ips/red/{r2_ip}");
    assert!(!records(&etcd).lines().any(|l| l == r2_key), "unplug left {r2_key}");
    assert!(!r2.ip(&["link"]).contains("eth0"), "unplug left the container's interface");
    assert!(ping_ok(&r4, &r1_ip), "after the unplug, the others still talk");
    drop((new0, new1));
}
