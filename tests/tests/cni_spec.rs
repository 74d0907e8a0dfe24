//! The CNI plugin against the spec (1.0.0, and 1.1.0's STATUS and GC), run as a runtime runs
//! it, with a real agent: every error a runtime can provoke carries the spec's code, ADD gives
//! a result the container matches, CHECK finds what changed, DEL is idempotent, a failed ADD
//! leaves nothing.

use serde_json::{json, Value};
use testbed::Container;

use overlay_tests::cni::{conf, env, invoke};
use overlay_tests::leftovers::{check_host, endpoint_records};
use overlay_tests::Cluster;

/// One row: what is changed from a valid ADD, and the code that must come back (None: success).
struct Case {
    what: &'static str,
    command: &'static str,
    /// Variables removed from the environment.
    unset: &'static [&'static str],
    /// Variables set (after removal).
    set: Vec<(&'static str, String)>,
    /// The configuration (None: a valid one).
    stdin: Option<String>,
    code: Option<u64>,
}

fn case(what: &'static str, command: &'static str, code: Option<u64>) -> Case {
    Case { what, command, unset: &[], set: vec![], stdin: None, code }
}

#[test]
fn the_cni_plugin_answers_every_required_case_with_the_specs_codes() {
    let c = Cluster::start(1, &[]);
    let agent = &c.agents[0];
    agent.cli_ok(&["tenant", "create", "red", "--vni", "4201", "--cidr", "198.19.0.0/16"]);
    let socket = agent.api_socket();
    let ctr = Container::new("cni");
    let netns = ctr.path().display().to_string();
    let valid = conf("1.0.0", "red", &socket);
    let with = |k: &str, v: Value| {
        let mut c = valid.clone();
        c[k] = v;
        Some(c.to_string())
    };
    let mut cases = vec![
        case("VERSION", "VERSION", None),
        Case { stdin: with("cniVersion", json!("0.4.0")), ..case("a version it does not speak", "ADD", Some(1)) },
        Case { stdin: with("cniVersion", json!("2.0.0")), ..case("a version from the future", "ADD", Some(1)) },
        Case { unset: &["CNI_COMMAND"], ..case("no CNI_COMMAND", "ADD", Some(4)) },
        Case { set: vec![("CNI_COMMAND", "ATTACH".into())], ..case("an unknown CNI_COMMAND", "ADD", Some(4)) },
        Case { unset: &["CNI_CONTAINERID"], ..case("no CNI_CONTAINERID", "ADD", Some(4)) },
        Case { unset: &["CNI_NETNS"], ..case("no CNI_NETNS", "ADD", Some(4)) },
        Case { unset: &["CNI_IFNAME"], ..case("no CNI_IFNAME", "ADD", Some(4)) },
        Case { unset: &["CNI_PATH"], ..case("no CNI_PATH", "ADD", Some(4)) },
        Case { unset: &["CNI_CONTAINERID"], ..case("DEL without CNI_CONTAINERID", "DEL", Some(4)) },
        Case { set: vec![("CNI_ARGS", "FOO=1".into())], ..case("an unknown CNI_ARGS key", "ADD", Some(4)) },
        Case { stdin: Some("{not json".into()), ..case("a configuration that is not JSON", "ADD", Some(6)) },
        Case { stdin: with("tenant", json!("")), ..case("no tenant", "ADD", Some(7)) },
        Case { stdin: with("tenant", json!("nosuch")), ..case("a tenant that does not exist", "ADD", Some(7)) },
        Case { stdin: with("ipam", json!({"type": "host-local"})), ..case("an ipam section", "ADD", Some(2)) },
        Case {
            stdin: with(
                "runtimeConfig",
                json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "hostIP": "127.0.0.1"}]}),
            ),
            ..case("a port mapping on a host address", "ADD", Some(2))
        },
        Case {
            stdin: with("runtimeConfig", json!({"portMappings": [{"hostPort": 0, "containerPort": 80}]})),
            ..case("a port mapping without a host port", "ADD", Some(7))
        },
        Case {
            set: vec![("CNI_NETNS", "/var/run/netns/no-such-netns".into())],
            ..case("a namespace that is gone", "ADD", Some(3))
        },
        Case { stdin: with("agentSocket", json!("/nonexistent/api.sock")), ..case("no agent there", "ADD", Some(11)) },
        case("DEL of something never added", "DEL", None),
        Case { unset: &["CNI_NETNS"], ..case("DEL never added, without a namespace", "DEL", None) },
        case("STATUS in a 1.0.0 configuration", "STATUS", Some(1)),
        Case { stdin: Some(conf("1.1.0", "red", &socket).to_string()), ..case("STATUS", "STATUS", None) },
        Case {
            stdin: Some(conf("1.1.0", "red", std::path::Path::new("/nonexistent/api.sock")).to_string()),
            ..case("STATUS without an agent", "STATUS", Some(50))
        },
    ];
    for (i, c) in cases.iter_mut().enumerate() {
        let id = format!("spec{i}");
        let mut e = env(c.command, &id, &netns, "eth0", "");
        e.retain(|(k, _)| !c.unset.contains(k));
        for (k, v) in c.set.drain(..) {
            e.retain(|(kk, _)| *kk != k);
            e.push((k, v));
        }
        let stdin = c.stdin.clone().unwrap_or_else(|| valid.to_string());
        let got = invoke(&e, &stdin);
        assert_eq!(got.code(), c.code, "{}: {} {}", c.what, got.out, got.stderr);
        if let Some(code) = c.code {
            // An error object: the version, the code, a message; details say what to do.
            assert!(got.out["cniVersion"].is_string() && got.out["msg"].is_string(), "{}: {}", c.what, got.out);
            assert_eq!(got.out["code"], code);
        }
        if c.command == "VERSION" {
            assert_eq!(got.out["supportedVersions"], json!(["1.0.0", "1.1.0"]), "{}", got.out);
        }
    }
    // None of that plugged anything.
    assert!(endpoint_records(&c, 0).is_empty());
    check_host(&c, 0, false).unwrap();

    // ADD with a fixed address and MAC (CNI_ARGS), 1.1.0: the result and the container agree.
    let v11 = conf("1.1.0", "red", &socket).to_string();
    let args = "IgnoreUnknown=1;K8S_POD_NAME=p;IP=198.19.7.7;MAC=02:00:00:aa:bb:cc";
    let add = invoke(&env("ADD", "life1", &netns, "eth0", args), &v11);
    assert!(add.ok, "ADD: {} {}", add.out, add.stderr);
    let r = &add.out;
    assert_eq!(r["cniVersion"], "1.1.0");
    assert_eq!(r["ips"][0], json!({"address": "198.19.7.7/16", "gateway": "198.19.0.1", "interface": 1}));
    assert_eq!(r["interfaces"][1]["sandbox"], json!(netns));
    assert_eq!(
        (r["interfaces"][1]["name"].as_str(), r["interfaces"][1]["mac"].as_str()),
        (Some("eth0"), Some("02:00:00:aa:bb:cc"))
    );
    assert_eq!(r["interfaces"][1]["mtu"], 1450);
    assert_eq!(r["routes"], json!([{"dst": "0.0.0.0/0", "gw": "198.19.0.1"}]));
    assert_eq!(ctr.ipv4_addrs("eth0"), vec!["198.19.7.7".to_owned()]);
    assert_eq!(ctr.mac("eth0"), "02:00:00:aa:bb:cc");
    let rec = endpoint_records(&c, 0);
    assert_eq!(rec.values().next().expect("a record")["owner"], "cni:net-red");

    // CHECK with the ADD's result passes; with another address, or once the container's
    // interface changed, it fails with this plugin's check code.
    let mut with_prev = conf("1.1.0", "red", &socket);
    with_prev["prevResult"] = r.clone();
    let check = |stdin: &Value| invoke(&env("CHECK", "life1", &netns, "eth0", ""), &stdin.to_string());
    let got = check(&with_prev);
    assert!(got.ok, "CHECK right after ADD: {}", got.out);
    let mut wrong = with_prev.clone();
    wrong["prevResult"]["ips"][0]["address"] = json!("198.19.7.8/16");
    assert_eq!(check(&wrong).code(), Some(101));
    ctr.ip(&["link", "set", "eth0", "mtu", "1500"]);
    let got = check(&with_prev);
    assert_eq!(got.code(), Some(101), "{}", got.out);
    assert!(got.out["details"].as_str().unwrap_or_default().contains("MTU 1500"), "{}", got.out);
    // The same ADD again repairs it (ADD is idempotent), and CHECK passes again.
    assert!(invoke(&env("ADD", "life1", &netns, "eth0", args), &v11).ok);
    assert!(check(&with_prev).ok);

    // A failed ADD leaves nothing: the address is another interface's.
    let other = Container::new("cni");
    let other_ns = other.path().display().to_string();
    let got = invoke(&env("ADD", "life2", &other_ns, "eth0", "IP=198.19.7.7"), &v11);
    assert_eq!(got.code(), Some(100), "{}", got.out);
    assert!(!other.has_link("eth0"));
    assert_eq!(endpoint_records(&c, 0).len(), 1);
    check_host(&c, 0, false).unwrap();

    // DEL, twice, with and without prevResult; then CHECK says it is not there.
    let mut del_conf = conf("1.1.0", "red", &socket);
    del_conf["prevResult"] = r.clone();
    let del = invoke(&env("DEL", "life1", &netns, "eth0", ""), &del_conf.to_string());
    assert!(del.ok, "DEL: {}", del.out);
    assert!(!ctr.has_link("eth0"));
    assert!(invoke(&env("DEL", "life1", &netns, "eth0", ""), &v11).ok, "DEL again");
    assert_eq!(check(&with_prev).code(), Some(101));
    check_host(&c, 0, false).unwrap();
    assert!(endpoint_records(&c, 0).is_empty());

    // DEL after the namespace went away.
    let gone = Container::new("cni");
    let gone_ns = gone.path().display().to_string();
    assert!(invoke(&env("ADD", "life3", &gone_ns, "eth0", ""), &v11).ok);
    drop(gone);
    assert!(invoke(&env("DEL", "life3", &gone_ns, "eth0", ""), &v11).ok);

    // GC (1.1.0): this network's attachments the runtime no longer lists go, the others stay.
    let (a, b) = (Container::new("cni"), Container::new("cni"));
    let (a_ns, b_ns) = (a.path().display().to_string(), b.path().display().to_string());
    // "keep" publishes a port (the portMappings capability): the agent records it.
    let mut published = conf("1.1.0", "red", &socket);
    published["runtimeConfig"] = json!({"portMappings": [{"hostPort": 18090, "containerPort": 80, "protocol": "tcp"}]});
    let got = invoke(&env("ADD", "keep", &a_ns, "eth0", ""), &published.to_string());
    assert!(got.ok, "ADD with a port mapping: {} {}", got.out, got.stderr);
    let keep = endpoint_records(&c, 0).into_values().find(|e| e["container_id"] == "keep").expect("keep's record");
    assert_eq!(keep["publish"], json!([{"host_port": 18090, "port": 80, "protocol": "tcp"}]));
    assert!(invoke(&env("ADD", "stale", &b_ns, "eth0", ""), &v11).ok);
    let mut gc = conf("1.1.0", "red", &socket);
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    let got = invoke(&[("CNI_COMMAND", "GC".to_owned()), ("CNI_PATH", "/opt/cni/bin".to_owned())], &gc.to_string());
    assert!(got.ok, "GC: {}", got.out);
    let left: Vec<String> =
        endpoint_records(&c, 0).values().map(|e| e["container_id"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(left, vec!["keep".to_owned()]);
    assert!(a.has_link("eth0") && !b.has_link("eth0"));
    check_host(&c, 0, false).unwrap();
}
