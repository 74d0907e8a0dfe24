//! The agent against an etcd that demands TLS client certificates, one that demands a
//! username and password, and an ovsdb-server reached over ssl:. Certificates come from a
//! throwaway CA made with openssl.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

use overlay_tests::AgentProc;
use tempfile::TempDir;
use testbed::{
    free_port_on, make_ca, make_cert, private_loopback_ip, unique_name, wait_until, ChildGuard, Etcd, Fabric,
};

/// A temp dir with a CA, a server certificate for a private loopback address (returned) and a
/// client certificate.
fn pki() -> (TempDir, Ipv4Addr) {
    let dir = tempfile::tempdir().unwrap();
    let ip = private_loopback_ip();
    make_ca(dir.path(), "ca");
    make_cert(dir.path(), "server", "ca", &[&format!("subjectAltName=IP:{ip}"), "extendedKeyUsage=serverAuth"]);
    make_cert(dir.path(), "client", "ca", &["extendedKeyUsage=clientAuth"]);
    (dir, ip)
}

#[test]
fn agent_uses_etcd_over_tls_with_a_client_certificate() {
    testbed::require_etcd();
    let (dir, ip) = pki();
    let d = dir.path();
    let (cport, pport) = (free_port_on(ip), free_port_on(ip));
    let url = format!("https://{ip}:{cport}");
    let peer = format!("http://{ip}:{pport}");
    let name = unique_name("tls");
    let log = std::fs::File::create(d.join("etcd.log")).unwrap();
    let _etcd = ChildGuard(
        Command::new("etcd")
            .args(["--name", &name, "--data-dir", &d.join("data").display().to_string()])
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("{name}={peer}")])
            .args([
                "--cert-file",
                "server.crt",
                "--key-file",
                "server.key",
                "--client-cert-auth",
                "--trusted-ca-file",
                "ca.crt",
            ])
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd"),
    );
    let etcdctl = |args: &[&str]| {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .current_dir(d)
            .args(["--endpoints", &url, "--cacert", "ca.crt", "--cert", "client.crt", "--key", "client.key"])
            .args(args)
            .output()
            .unwrap()
    };
    wait_until(Duration::from_secs(20), "etcd with TLS", || etcdctl(&["endpoint", "health"]).status.success());

    let fabric = Fabric::new();
    let host = fabric.add_host(1);
    let p = |f: &str| d.join(f).display().to_string();
    let (ca, cert, key) = (p("ca.crt"), p("client.crt"), p("client.key"));
    let agent =
        AgentProc::start_with(&host, &url, "/tls", &["--etcd-ca", &ca, "--etcd-cert", &cert, "--etcd-key", &key]);
    agent.cli_ok(&["tenant", "create", "red", "--vni", "3", "--cidr", "198.19.0.0/16"]);
    let keys = String::from_utf8(etcdctl(&["get", "--prefix", "--keys-only", "/tls/"]).stdout).unwrap();
    assert!(keys.contains(&format!("/tls/hosts/{}", host.name())), "{keys}");
    assert!(keys.contains("/tls/tenants/red"), "{keys}");

    // Without the client certificate the server refuses the agent: it never registers.
    let host2 = fabric.add_host(2);
    let refused = AgentProc::run_args_for(&host2, &url, "/tls", &d.join("b.sock"));
    let log = d.join("refused.log");
    let child = ChildGuard(
        Command::new(overlay_tests::agent_binary())
            .args(&refused)
            .args(["--etcd-ca", &ca])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(20), "the agent without a client certificate to say it cannot register", || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("cannot register in etcd yet")
    });
    drop(child);
    let keys = String::from_utf8(etcdctl(&["get", "--prefix", "--keys-only", "/tls/hosts/"]).stdout).unwrap();
    assert_eq!(keys.lines().filter(|l| !l.is_empty()).count(), 1, "{keys}");
}

#[test]
fn agent_authenticates_to_etcd_with_username_and_password() {
    let etcd = Etcd::start();
    etcd.etcdctl(&["user", "add", "root:s3cret"]);
    etcd.etcdctl(&["auth", "enable"]);
    let fabric = Fabric::new();
    let host = fabric.add_host(1);
    let agent = AgentProc::start(&host, &etcd, "/auth", &["--etcd-username", "root", "--etcd-password", "s3cret"]);
    agent.cli_ok(&["tenant", "create", "red", "--vni", "4", "--cidr", "198.19.0.0/16"]);
    let keys = etcd.etcdctl(&["--user", "root:s3cret", "get", "--prefix", "--keys-only", "/auth/tenants/"]);
    assert!(keys.contains("/auth/tenants/red"), "{keys}");
    // Unauthenticated reads are refused: the credentials really were needed.
    assert!(etcd.try_etcdctl(&["get", "--prefix", "/auth/"]).is_err());
}

#[test]
fn agent_talks_to_ovsdb_over_ssl_with_certificates() {
    testbed::require_ovs();
    let (dir, ip) = pki();
    let d = dir.path();
    let db = d.join("conf.db");
    assert!(Command::new("ovsdb-tool").arg("create").arg(&db).arg(testbed::VSWITCH_SCHEMA).status().unwrap().success());
    let port = free_port_on(ip);
    let sock = d.join("db.sock");
    let _server = ChildGuard(
        Command::new("ovsdb-server")
            .arg(&db)
            .arg(format!("--remote=pssl:{port}:{ip}"))
            .arg(format!("--remote=punix:{}", sock.display()))
            .args(["--private-key=server.key", "--certificate=server.crt", "--ca-cert=ca.crt", "--no-chdir"])
            .arg(format!("--unixctl={}", d.join("ctl").display()))
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ovsdb-server"),
    );
    let vsctl = |args: &[&str]| {
        let out = Command::new("ovs-vsctl")
            .arg(format!("--db=unix:{}", sock.display()))
            .args(["--no-wait"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_until(Duration::from_secs(10), "ovsdb-server up", || {
        sock.exists()
            && Command::new("ovs-vsctl")
                .arg(format!("--db=unix:{}", sock.display()))
                .args(["--no-wait", "init"])
                .status()
                .unwrap()
                .success()
    });
    let etcd = Etcd::start();
    let p = |f: &str| d.join(f).display().to_string();
    let run = |ca: &str, log: &str| {
        Command::new(overlay_tests::agent_binary())
            .args(["run", "--hostname", &unique_name("ssl"), "--underlay-ip", "198.18.254.1"])
            .args(["--etcd-endpoints", &etcd.endpoint(), "--etcd-prefix", "/ssl", "--datapath-type", "netdev"])
            .args(["--ovsdb", &format!("ssl:{ip}:{port}"), "--ovsdb-ca-cert", ca])
            .args(["--ovsdb-certificate", &p("client.crt"), "--ovsdb-private-key", &p("client.key")])
            .args(["--api-socket", &p(&format!("{log}.sock")), "--config", "/dev/null"])
            // Its own machine identity and state, never the host's /var/lib/overlay-agent.
            .args(["--state-dir", &p(&format!("{log}.state"))])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join(log)).unwrap())
            .spawn()
            .unwrap()
    };
    let _agent = ChildGuard(run(&p("ca.crt"), "agent.log"));
    wait_until(Duration::from_secs(20), "bridges built over ssl:", || {
        let brs = vsctl(&["list-br"]);
        brs.contains("br-int") && brs.contains("br-tun")
    });
    // Trusting the wrong CA, the agent refuses the server and says why.
    make_ca(d, "rogue");
    let _bad = ChildGuard(run(&p("rogue.crt"), "bad.log"));
    wait_until(Duration::from_secs(20), "TLS refusal logged", || {
        std::fs::read_to_string(d.join("bad.log")).unwrap_or_default().contains("TLS handshake failed")
    });
}
