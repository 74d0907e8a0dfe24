//! Hostile input at every entry point a user or another agent controls: CLI/API arguments,
//! values other writers put in etcd, and the API socket's permissions. Each case asserts a clear
//! error and that nothing was left behind. docs/reliability.md tabulates these cases.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::time::Duration;

use overlay_tests::{agent_binary, ports_on, tunnels, Cluster};
use testbed::{signal, wait_ping, wait_until, Cleanup, Container};

const WAIT: Duration = Duration::from_secs(20);

fn refused(c: &Cluster, args: &[&str], want: &str) {
    let out = c.agents[0].cli(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} was accepted: {}", String::from_utf8_lossy(&out.stdout));
    assert!(err.to_lowercase().contains(&want.to_lowercase()), "{args:?}: '{err}' should mention '{want}'");
}

#[test]
fn hostile_tenant_requests_are_refused_and_leave_nothing() {
    let c = Cluster::start(1, &[]);
    let long = "t".repeat(300);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["tenant", "create", "a/b", "--vni", "10", "--cidr", "198.19.0.0/16"], "tenant name"),
        (vec!["tenant", "create", "..", "--vni", "10", "--cidr", "198.19.0.0/16"], "tenant name"),
        (vec!["tenant", "create", "a\"b", "--vni", "10", "--cidr", "198.19.0.0/16"], "tenant name"),
        (vec!["tenant", "create", "ténant", "--vni", "10", "--cidr", "198.19.0.0/16"], "tenant name"),
        (vec!["tenant", "create", &long, "--vni", "10", "--cidr", "198.19.0.0/16"], "tenant name"),
        (vec!["tenant", "create", "ok", "--vni", "0", "--cidr", "198.19.0.0/16"], "VNI 0"),
        (vec!["tenant", "create", "ok", "--vni", "16777216", "--cidr", "198.19.0.0/16"], "16777216"),
        (vec!["tenant", "create", "ok", "--vni", "10", "--cidr", "198.19.0.0/30", "--subnet-len", "24"], "subnet"),
        (vec!["tenant", "create", "ok", "--vni", "10", "--cidr", "198.19.0.0/16", "--subnet-len", "31"], "subnet"),
        (vec!["tenant", "create", "ok", "--vni", "10", "--cidr", "198.19.0.1/16"], "198.19.0.0/16"),
        (vec!["tenant", "create", "ok", "--vni", "10", "--cidr", "not-a-cidr"], "not a CIDR"),
        (vec!["tenant", "create", "ok", "--vni", "10", "--cidr", "198.19.0.0/16", "--tunnel", "geneve"], "geneve"),
        (vec!["tenant", "delete", "../hosts"], "tenant name"),
        (vec!["tenant", "delete", "absent"], "does not exist"),
        (vec!["tenant", "join", "absent"], "does not exist"),
    ];
    let before = c.etcd_keys("");
    for (args, want) in &cases {
        refused(&c, args, want);
    }
    assert_eq!(c.etcd_keys(""), before, "a refused request wrote to etcd");
    // The same name or VNI twice: the second is refused by the etcd transaction.
    c.agents[0].cli_ok(&["tenant", "create", "red", "--vni", "10", "--cidr", "198.19.0.0/16"]);
    refused(&c, &["tenant", "create", "red", "--vni", "11", "--cidr", "198.19.0.0/16"], "already exists");
    refused(
        &c,
        &["tenant", "create", "blue", "--vni", "10", "--cidr", "198.19.0.0/16"],
        "VNI 10 is already used by tenant 'red'",
    );
}

#[test]
fn garbage_in_etcd_is_skipped_and_the_agent_keeps_working() {
    let c = Cluster::start(2, &[]);
    c.agents[0].cli_ok(&["tenant", "create", "red", "--vni", "20", "--cidr", "198.19.0.0/16"]);
    let p = &c.prefix;
    // Another writer (a bug, an old version, an attacker with etcd access) puts garbage everywhere.
    let garbage = [
        (format!("{p}/tenants/evil"), "{not json"),
        (
            format!("{p}/tenants/vni0"),
            r#"{"name":"vni0","vni":0,"cidr":"10.0.0.0/8","tunnel":"vxlan","subnet_len":24}"#,
        ),
        (
            format!("{p}/tenants/big"),
            r#"{"name":"big","vni":99999999,"cidr":"10.0.0.0/8","tunnel":"vxlan","subnet_len":24}"#,
        ),
        (format!("{p}/hosts/ghost"), r#"{"hostname":"ghost","underlay_ip":"0.0.0.0","system_id":"x"}"#),
        (format!("{p}/hosts/mismatch"), r#"{"hostname":"other","underlay_ip":"198.18.255.9","system_id":"x"}"#),
        (format!("{p}/hosts/../../etc"), r#"{"hostname":"x","underlay_ip":"198.18.255.9","system_id":"x"}"#),
        (format!("{p}/subnets/red/garbage"), "[]"),
        (
            format!("{p}/subnets/red/198.19.77.0-24"),
            r#"{"tenant":"red","subnet":"10.9.9.0/24","host":"ghost","underlay_ip":"198.18.255.9"}"#,
        ),
        (format!("{p}/endpoints/red/x"), "\u{1}\u{2}binary"),
        (format!("{p}/alive/{}", "a".repeat(300)), "1"),
    ];
    for (k, v) in &garbage {
        c.etcd.etcdctl(&["put", k, v]);
    }
    for a in &c.agents {
        a.cli_ok(&["tenant", "join", "red"]);
    }
    // The real mesh still forms, and nothing from the garbage becomes a tunnel.
    wait_until(WAIT, "tunnels despite garbage", || tunnels(&c.hosts[0]).len() == 1 && tunnels(&c.hosts[1]).len() == 1);
    let list = c.agents[0].cli_ok(&["tenant", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let names: Vec<&str> = list.as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["red"], "garbage tenants must not show");
    let ctr0 = Container::new("cg");
    let ctr1 = Container::new("cg");
    let path = |c: &Container| c.path().display().to_string();
    c.agents[0].cli_ok(&["plug", "g0", "--tenant", "red", "--netns", &path(&ctr0)]);
    let out = c.agents[1].cli_ok(&["plug", "g1", "--tenant", "red", "--netns", &path(&ctr1)]);
    let ip: serde_json::Value = serde_json::from_str(&out).unwrap();
    wait_ping(&ctr0, ip["ip"].as_str().unwrap(), WAIT);
    for a in &c.agents {
        assert!(a.logs().contains("ignoring malformed value in etcd"), "{}", a.logs());
        assert_eq!(a.status()["counters"]["errors"], 0);
    }
}

/// When the tenant delete of [`a_tenant_deleted_while_plugging_leaves_nothing`] is sent,
/// relative to the plug into that tenant.
#[derive(Debug, Clone, Copy, PartialEq)]
enum DeleteAt {
    /// As the plug starts: either may win.
    Once,
    /// Once the plug's address reservation is in etcd: its endpoint may be recorded or not yet.
    Reserved,
    /// Once the plug's endpoint is recorded: the delete must be refused.
    Recorded,
    /// While the plug holds its address reservation and has not recorded its endpoint: the
    /// delete must win and the plug must fail and undo itself. The plug is held there by
    /// stopping ovsdb-server (SIGSTOP) before it starts: the plug reserves the address while it
    /// writes its port row, and records the endpoint only after that row is committed.
    MidPlug,
}

/// Which of a racing plug and tenant delete succeeded.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Won {
    Plug,
    Delete,
}

/// Plugs `id` (in `ctr`) into `tenant` on host 1 and deletes `tenant` through the same agent,
/// the delete sent `at` a point of the plug; returns both CLI outputs.
fn race(c: &Cluster, tenant: &str, id: &str, ctr: &Container, at: DeleteAt) -> (Output, Output) {
    let agent = &c.agents[0];
    let ns = ctr.path().display().to_string();
    let resume = Cleanup::new();
    if at == DeleteAt::MidPlug {
        let pid = c.hosts[0].ovsdb().pid().expect("ovsdb-server runs");
        signal(pid, "-STOP");
        resume.add(move || signal(pid, "-CONT"));
    }
    std::thread::scope(|s| {
        let plug = s.spawn(|| agent.cli(&["plug", id, "--tenant", tenant, "--netns", &ns]));
        let seen = |sub: &str| !c.etcd_keys(&format!("{sub}/{tenant}/")).is_empty();
        match at {
            DeleteAt::Once => {}
            DeleteAt::Reserved | DeleteAt::MidPlug => {
                wait_until(WAIT, "the plug's address reservation", || seen("ips"))
            }
            DeleteAt::Recorded => wait_until(WAIT, "the plug's endpoint record", || seen("endpoints")),
        }
        let delete = agent.cli(&["tenant", "delete", tenant]);
        resume.run();
        (plug.join().expect("plug thread"), delete)
    })
}

/// What must hold once a plug into `tenant` and a delete of it have both answered: exactly one
/// succeeded and the other says why it failed; the winner's work is whole and the loser left
/// nothing (checked at once: neither answers before it is done).
#[track_caller]
fn judge(c: &Cluster, tenant: &str, id: &str, ctr: &Container, plug: &Output, delete: &Output) -> (Won, String) {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    // The keys of one kind (`tenants/`, `ips/`, ...) that belong to the tenant.
    let keys = |kind: &str| -> Vec<String> {
        let (me, mine) = (format!("/{tenant}"), format!("/{tenant}/"));
        c.etcd_keys(kind).into_iter().filter(|k| k.ends_with(&me) || k.contains(&mine)).collect()
    };
    // The VNI claims hold the tenant's name as their value.
    let vni_claims = || {
        let out = c.etcd.etcdctl(&["get", "--prefix", "--print-value-only", &format!("{}/vnis/", c.prefix)]);
        out.lines().filter(|v| *v == tenant).count()
    };
    let port = overlay::naming::container_port_name(id, "eth0");
    let host = &c.hosts[0];
    match (plug.status.success(), delete.status.success()) {
        (true, false) => {
            let why = text(&delete.stderr);
            assert!(why.contains(&format!("tenant '{tenant}'")) && why.contains("endpoint"), "delete refused: {why}");
            let plugged: serde_json::Value = serde_json::from_slice(&plug.stdout).expect("plug JSON");
            let ip = plugged["ip"].as_str().expect("an ip").to_owned();
            assert_eq!(ctr.ipv4_addrs("eth0"), std::slice::from_ref(&ip), "the plug that won configured the container");
            assert_eq!((keys("tenants/").len(), vni_claims()), (1, 1), "the tenant stays");
            assert!(keys("endpoints/")[..] == [format!("{}/endpoints/{tenant}/{id}/eth0", c.prefix)]);
            assert!(keys("ips/")[..] == [format!("{}/ips/{tenant}/{ip}", c.prefix)]);
            assert!(ports_on(host, "br-int").contains_key(&port), "the plug's port");
            (Won::Plug, why)
        }
        (false, true) => {
            let why = text(&plug.stderr);
            for kind in ["tenants/", "subnets/", "ips/", "endpoints/"] {
                assert_eq!(keys(kind), Vec::<String>::new(), "left in etcd after: {why}");
            }
            assert_eq!(vni_claims(), 0, "the tenant's VNI claim was left");
            assert!(!ctr.has_link("eth0"), "the failed plug left the container's interface: {why}");
            assert!(!ports_on(host, "br-int").contains_key(&port), "the failed plug left its port: {why}");
            assert!(!host.netns().has_link(&port), "the failed plug left its veth: {why}");
            // What the plug says depends on where it was when the tenant went: before it read
            // the tenant ("does not exist: create it first"), at its lease ("was deleted"), its
            // address ("does not exist (deleted while plugging?)"), its endpoint record ("was
            // deleted while plugging"), or before its port took the tenant's VLAN ("no local
            // VLAN for tenant ..."; that one does not say the tenant is gone).
            let gone = ["does not exist", "was deleted", "no local VLAN"].iter().any(|w| why.contains(w));
            assert!(gone && why.contains(&format!("tenant '{tenant}'")), "the plug lost to the delete: {why}");
            (Won::Delete, why)
        }
        (true, true) => panic!("the tenant was deleted under a completed plug: {}", text(&plug.stdout)),
        (false, false) => {
            panic!("both failed: plug: {}; delete: {}", text(&plug.stderr), text(&delete.stderr))
        }
    }
}

#[test]
fn a_tenant_deleted_while_plugging_leaves_nothing() {
    let c = Cluster::start(1, &[]);
    // A tenant deleted under a plug, the delete sent at several points of the plug. Whichever
    // wins, there must never be a half-plugged container or a record in a tenant that no
    // longer exists; at the two points that decide it, the winner is known.
    let rounds = [DeleteAt::Once, DeleteAt::Reserved, DeleteAt::Once, DeleteAt::Reserved, DeleteAt::Recorded];
    let mut outcomes = Vec::new();
    for (round, at) in rounds.into_iter().chain([DeleteAt::MidPlug]).enumerate() {
        let name = format!("race{round}");
        let vni = (100 + round).to_string();
        c.agents[0].cli_ok(&["tenant", "create", &name, "--vni", &vni, "--cidr", "198.19.0.0/16"]);
        let ctr = Container::new("cd");
        let id = format!("victim{round}");
        let (plug, delete) = race(&c, &name, &id, &ctr, at);
        let (won, why) = judge(&c, &name, &id, &ctr, &plug, &delete);
        match at {
            DeleteAt::Recorded => assert_eq!(won, Won::Plug, "a tenant with an endpoint was deleted"),
            DeleteAt::MidPlug => {
                assert_eq!(won, Won::Delete, "the delete should win over a plug that has not recorded its endpoint");
                assert!(why.contains("was deleted while plugging"), "the plug failed for another reason: {why}");
            }
            DeleteAt::Once | DeleteAt::Reserved => {}
        }
        if won == Won::Plug {
            c.agents[0].cli_ok(&["unplug", &id]);
            c.agents[0].cli_ok(&["tenant", "delete", &name]);
        }
        wait_until(WAIT, "no traces", || {
            c.etcd_keys("ips/").is_empty() && c.etcd_keys("endpoints/").is_empty() && !ctr.has_link("eth0")
        });
        outcomes.push((at, won));
    }
    eprintln!("who won: {outcomes:?}");
}

#[test]
fn api_socket_refuses_non_root_users() {
    let c = Cluster::start(1, &[]);
    let sock = c.agents[0].api_socket();
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "API socket mode");
    // Open the directory so only the socket's own mode stands between nobody and the API.
    let dir = sock.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(agent_binary())
        .args([
            "--api-socket",
            &sock.display().to_string(),
            "tenant",
            "create",
            "x",
            "--vni",
            "5",
            "--cidr",
            "198.19.0.0/16",
        ])
        .output()
        .expect("setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nobody used the API: {}", String::from_utf8_lossy(&out.stdout));
    assert!(err.contains("Permission denied") && err.contains("are you root"), "{err}");
    assert!(c.etcd_keys("tenants/").is_empty());
}
