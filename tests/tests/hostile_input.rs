//! Hostile input at every entry point a user or another agent controls: CLI/API arguments,
//! values other writers put in etcd, and the API socket's permissions. Each case asserts a clear
//! error and that nothing was left behind. docs/reliability.md tabulates these cases.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use overlay_tests::{agent_binary, tunnels, Cluster};
use testbed::{wait_ping, wait_until, Container};

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

#[test]
fn a_tenant_deleted_while_plugging_leaves_nothing() {
    let c = Cluster::start(1, &[]);
    // Delete and recreate the tenant under a plug many times; whichever wins, there must never
    // be a half-plugged container or a reservation in a tenant that no longer exists.
    for round in 0..5 {
        let name = format!("race{round}");
        c.agents[0].cli_ok(&[
            "tenant",
            "create",
            &name,
            "--vni",
            &format!("{}", 100 + round),
            "--cidr",
            "198.19.0.0/16",
        ]);
        let ctr = Container::new("cd");
        let ns = ctr.path().display().to_string();
        let sock = c.agents[0].api_socket();
        let id = format!("victim{round}");
        let plugger = {
            let (sock, ns, name, id) = (sock.clone(), ns.clone(), name.clone(), id.clone());
            std::thread::spawn(move || {
                Command::new(agent_binary())
                    .args(["--api-socket", &sock.display().to_string(), "plug", &id, "--tenant", &name, "--netns", &ns])
                    .output()
                    .unwrap()
            })
        };
        std::thread::sleep(Duration::from_millis(5 * round as u64));
        let deleted = c.agents[0].cli(&["tenant", "delete", &name]).status.success();
        let plugged = plugger.join().unwrap().status.success();
        if plugged && !deleted {
            // The plug won: the tenant cannot be deleted while its endpoint exists.
            let e = String::from_utf8_lossy(&c.agents[0].cli(&["tenant", "delete", &name]).stderr).into_owned();
            assert!(e.contains("endpoint"), "{e}");
            c.agents[0].cli_ok(&["unplug", &id]);
            c.agents[0].cli_ok(&["tenant", "delete", &name]);
        }
        assert!(!(plugged && deleted), "round {round}: the tenant was deleted under a completed plug");
        wait_until(WAIT, "no traces", || {
            c.etcd_keys("ips/").is_empty() && c.etcd_keys("endpoints/").is_empty() && !ctr.has_link("eth0")
        });
    }
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
