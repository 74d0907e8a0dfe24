//! Tests of the fixtures themselves. They need root, Open vSwitch, etcd and iproute2, and fail
//! (never skip) when something is missing.

use std::time::Duration;

use testbed::{ping, unique_name, wait_until, Cleanup, Container, Etcd, Fabric, Netns, OvsdbServer, Vswitchd};

fn netns_list() -> String {
    let out = std::process::Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ovsdb_server_add_br_kill_restart_keeps_data() {
    let db = OvsdbServer::start();
    assert!(db.unix_remote().starts_with("unix:/"));
    assert!(db.tcp_port() > 0, "{}", db.tcp_remote());
    let pid = db.pid().expect("running");

    // No vswitchd: --no-wait writes the database only.
    db.vsctl(&["add-br", "br-test"]);
    assert_eq!(db.vsctl(&["list-br"]), "br-test");
    assert!(db.try_vsctl(&["add-br", "br-test"]).is_err());

    // The TCP remote serves the same database.
    let via_tcp = std::process::Command::new("ovs-vsctl")
        .args(["--no-wait", "--timeout=5", &format!("--db={}", db.tcp_remote()), "list-br"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&via_tcp.stdout).trim(), "br-test");

    let port = db.tcp_port();
    db.kill();
    assert!(!db.is_running());
    assert!(db.try_vsctl(&["list-br"]).is_err());
    db.restart();
    assert_ne!(db.pid(), Some(pid));
    assert_eq!(db.tcp_port(), port, "same TCP port after restart");
    assert_eq!(db.vsctl(&["list-br"]), "br-test");

    let dir = db.dir().to_path_buf();
    let pid = db.pid().unwrap();
    drop(db);
    assert!(!dir.exists(), "temp dir removed");
    wait_until(Duration::from_secs(5), "ovsdb-server to be gone", || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
}

#[test]
fn vswitchd_in_netns_creates_netdev_bridge_and_survives_restart() {
    let ns = Netns::new("vs");
    let db = OvsdbServer::start_in(Some(ns.name()));
    let vs = Vswitchd::start(&db, Some(ns.name()));
    assert!(vs.appctl(&["version"]).contains("Open vSwitch"));
    db.vsctl_wait(&["add-br", "br-x", "--", "set", "bridge", "br-x", "datapath_type=netdev"]);
    assert!(ns.has_link("br-x"), "tap device of br-x inside the netns");
    assert!(vs.dir().join("br-x.mgmt").exists(), "OVS_RUNDIR is the temp dir");

    vs.kill();
    vs.restart();
    db.vsctl_wait(&["add-br", "br-y", "--", "set", "bridge", "br-y", "datapath_type=netdev"]);
    assert!(ns.has_link("br-y"));
}

#[test]
fn etcd_put_get_stop_start_again() {
    let etcd = Etcd::start();
    let host = etcd.endpoint().trim_start_matches("http://").rsplit_once(':').unwrap().0.to_owned();
    let ip: std::net::Ipv4Addr = host.parse().unwrap();
    assert!(
        ip.is_loopback() && ip != std::net::Ipv4Addr::LOCALHOST,
        "etcd should have a loopback address of its own: {ip}"
    );
    etcd.etcdctl(&["put", "/testbed/k", "v1"]);
    assert_eq!(etcd.etcdctl(&["get", "--print-value-only", "/testbed/k"]), "v1");

    etcd.stop();
    assert!(!etcd.healthy());
    etcd.start_again();
    assert_eq!(etcd.etcdctl(&["get", "--print-value-only", "/testbed/k"]), "v1");
}

#[test]
fn fabric_two_hosts_ping_over_underlay_and_clean_up() {
    let fabric = Fabric::new();
    let h1 = fabric.add_host(1);
    let h2 = fabric.add_host(2);
    assert_eq!(h2.underlay_ip(), fabric.underlay_ip(2));
    assert_eq!(h1.netns().ipv4_addrs("br-phy"), vec![h1.underlay_ip().to_string()]);
    assert_eq!(h1.vsctl(&["list-ports", "br-phy"]), "eth1");
    assert_eq!(h1.vsctl(&["get", "Open_vSwitch", ".", "external_ids:hostname"]).trim_matches('"'), h1.name());
    let hwaddr = h1.vsctl(&["get", "bridge", "br-phy", "other_config:hwaddr"]);
    assert_eq!(hwaddr.trim_matches('"'), h1.netns().mac("eth1"));

    let ip2 = h2.underlay_ip().to_string();
    assert!(ping(h1.netns(), &ip2, 1, Duration::from_secs(2)), "host1 cannot ping host2's underlay IP {ip2}");
    assert!(ping(h2.netns(), &h1.underlay_ip().to_string(), 1, Duration::from_secs(2)));

    let c = Container::new("c");
    assert!(Netns::exists(c.name()));
    assert!(c.path().exists());

    let names = [
        fabric.netns().name().to_string(),
        h1.netns().name().to_string(),
        h2.netns().name().to_string(),
        c.name().to_string(),
    ];
    let dirs = [h1.ovsdb().dir().to_path_buf(), h2.vswitchd().dir().to_path_buf()];
    drop(fabric); // the fabric netns lives on while hosts use it
    assert!(Netns::exists(&names[0]));
    drop((h1, h2, c));
    let list = netns_list();
    for n in &names {
        assert!(!list.contains(n.as_str()), "{n} left behind: {list}");
    }
    for d in &dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

#[test]
fn netns_drop_survives_a_panicking_test_and_kills_processes() {
    let (name, mut sleeper) = std::thread::spawn(|| {
        let ns = Netns::new("p");
        let name = ns.name().to_string();
        let sleeper = ns.command(&["sleep", "60"]).spawn().unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _ns = ns;
            panic!("test failure inside a test");
        }));
        assert!(r.is_err());
        (name, sleeper)
    })
    .join()
    .unwrap();
    assert!(!Netns::exists(&name));
    let status = sleeper.wait().unwrap();
    assert!(!status.success(), "the process in the netns was killed");
}

#[test]
fn cleanup_guard_and_names() {
    let n = unique_name("tb");
    assert!(n.len() <= 15);
    let ns = Netns::new("cl");
    let name = ns.name().to_string();
    {
        let c = Cleanup::new();
        let link = unique_name("d");
        ns.ip(&["link", "add", &link, "type", "veth", "peer", "name", "eth1"]);
        assert!(ns.has_link(&link));
        c.add(move || drop(ns));
    }
    assert!(!Netns::exists(&name));
}

#[test]
fn vswitchd_in_root_netns_leaves_no_tap_device() {
    let db = OvsdbServer::start();
    let vs = Vswitchd::start(&db, None);
    let br = unique_name("tbbr");
    db.vsctl_wait(&["add-br", &br, "--", "set", "bridge", &br, "datapath_type=netdev"]);
    let has_link = |name: &str| std::path::Path::new("/sys/class/net").join(name).exists();
    assert!(has_link(&br), "{}", std::fs::read_to_string(vs.log_path()).unwrap_or_default());
    drop(vs);
    wait_until(Duration::from_secs(5), "the tap device to go", || !has_link(&br));
}
