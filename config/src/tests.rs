use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser};

use crate::*;

/// Environment variables are process-global and clap reads every `OVERLAY_*` on each parse, so
/// every test that parses through clap holds this lock.
static ENV_LOCK: Mutex<()> = Mutex::new(());

#[derive(Debug, Parser)]
struct TestCli {
    #[command(flatten)]
    flags: RunFlags,
}

fn parse_cli(args: &[&str]) -> Result<RunFlags, clap::Error> {
    let argv = std::iter::once("overlay-agent").chain(args.iter().copied());
    TestCli::try_parse_from(argv).map(|c| c.flags)
}

fn flags() -> RunFlags {
    RunFlags { underlay_ip: Some("192.0.2.1".into()), ..RunFlags::default() }
}

fn host() -> Option<String> {
    Some("node1".into())
}

fn resolve_ok(flags: &RunFlags, file: Option<FileConfig>) -> AgentConfig {
    AgentConfig::resolve(flags, file, host()).expect("config should resolve")
}

fn resolve_err(flags: &RunFlags, file: Option<FileConfig>) -> ConfigError {
    AgentConfig::resolve(flags, file, host()).expect_err("config should be rejected")
}

fn toml(text: &str) -> FileConfig {
    FileConfig::parse(text, Path::new("/test/agent.toml")).expect("test TOML should parse")
}

fn file_with_ip(extra: &str) -> FileConfig {
    toml(&format!("underlay_ip = \"192.0.2.1\"\n{extra}"))
}

fn expect_invalid(err: ConfigError, key: &str) -> String {
    assert_eq!(err.key(), Some(key), "wrong key in: {err}");
    assert!(matches!(err, ConfigError::Invalid { .. }), "{err:?}");
    err.to_string()
}

#[test]
fn defaults() {
    let c = resolve_ok(&flags(), None);
    assert_eq!(c.hostname, "node1");
    assert_eq!(c.underlay_ip, "192.0.2.1".parse::<IpAddr>().unwrap());
    assert_eq!(c.underlay_mtu, None);
    assert_eq!(c.etcd.endpoints, vec!["http://127.0.0.1:2379".to_string()]);
    assert_eq!(c.etcd.prefix, "/overlay");
    assert_eq!(c.etcd.tls, None);
    assert_eq!(c.etcd.auth, None);
    assert_eq!(c.ovs.remote, OvsdbRemote::Unix("/var/run/openvswitch/db.sock".into()));
    assert_eq!(c.ovs.datapath_type, DatapathType::System);
    assert_eq!(c.ovs.int_bridge, "br-int");
    assert_eq!(c.ovs.tun_bridge, "br-tun");
    assert_eq!(c.api_socket, PathBuf::from("/run/overlay-agent/api.sock"));
    assert_eq!(c.metrics_address, None);
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.log.level, "info");
    assert_eq!(c.timers.host_ttl, Duration::from_secs(86_400));
    assert_eq!(c.timers.liveness_ttl, Duration::from_secs(10));
    assert_eq!(c.timers.resync_interval, Duration::from_secs(60));
    assert_eq!(c.default_subnet_len, 24);
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/overlay-agent"));
}

#[test]
fn underlay_ip_is_required_and_the_error_says_where_to_set_it() {
    let err = resolve_err(&RunFlags::default(), None);
    assert!(matches!(err, ConfigError::Missing { .. }));
    assert_eq!(
        err.to_string(),
        "underlay_ip is required: set underlay_ip in /etc/overlay-agent/agent.toml, \
         --underlay-ip or OVERLAY_UNDERLAY_IP"
    );
    let f = RunFlags { config: Some("/srv/a.toml".into()), ..RunFlags::default() };
    assert!(resolve_err(&f, None).to_string().contains("/srv/a.toml"));
}

#[test]
fn hostname_falls_back_to_the_system_hostname_and_is_required_without_it() {
    let from_file = toml("hostname = \"filehost\"");
    let c = AgentConfig::resolve(&flags(), Some(from_file), host()).unwrap();
    assert_eq!(c.hostname, "filehost");
    let err = AgentConfig::resolve(&flags(), None, None).unwrap_err();
    assert!(matches!(err, ConfigError::Missing { key: "hostname", .. }), "{err}");
    // A bad system hostname is reported as such, not blamed on a flag.
    let err = AgentConfig::resolve(&flags(), None, Some("bad_host".into())).unwrap_err();
    assert!(err.to_string().contains("the system hostname"), "{err}");
}

#[test]
fn flag_beats_file_beats_default() {
    let file = toml(
        r#"
        hostname = "filehost"
        underlay_ip = "198.51.100.7"
        [etcd]
        prefix = "/fileprefix"
        endpoints = ["http://file:2379"]
        [ovs]
        datapath_type = "netdev"
        [timers]
        host_ttl_secs = 600
        "#,
    );
    let c = resolve_ok(&RunFlags::default(), Some(file.clone()));
    assert_eq!(c.hostname, "filehost");
    assert_eq!(c.underlay_ip, "198.51.100.7".parse::<IpAddr>().unwrap());
    assert_eq!(c.etcd.prefix, "/fileprefix");
    assert_eq!(c.etcd.endpoints, vec!["http://file:2379".to_string()]);
    assert_eq!(c.ovs.datapath_type, DatapathType::Netdev);
    assert_eq!(c.timers.host_ttl, Duration::from_secs(600));
    // Untouched keys keep their defaults.
    assert_eq!(c.timers.liveness_ttl, Duration::from_secs(10));

    let f = RunFlags {
        hostname: Some("flaghost".into()),
        underlay_ip: Some("2001:db8::1".into()),
        etcd_prefix: Some("/flagprefix".into()),
        etcd_endpoints: Some(vec!["http://flag:2379".into()]),
        datapath_type: Some("system".into()),
        host_ttl: Some(30),
        ..RunFlags::default()
    };
    let c = resolve_ok(&f, Some(file));
    assert_eq!(c.hostname, "flaghost");
    assert_eq!(c.underlay_ip, "2001:db8::1".parse::<IpAddr>().unwrap());
    assert_eq!(c.etcd.prefix, "/flagprefix");
    assert_eq!(c.etcd.endpoints, vec!["http://flag:2379".to_string()]);
    assert_eq!(c.ovs.datapath_type, DatapathType::System);
    assert_eq!(c.timers.host_ttl, Duration::from_secs(30));
}

#[test]
fn every_key_has_a_flag_with_its_env_var_and_vice_versa() {
    let cmd = RunFlags::augment_args(clap::Command::new("t"));
    for key in keys::ALL {
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key.flag))
            .unwrap_or_else(|| panic!("no --{} for {}", key.flag, key.name));
        assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(key.env), "env of --{}", key.flag);
        assert!(key.env.starts_with("OVERLAY_"));
        assert!(arg.get_help().is_some(), "--{} has no help", key.flag);
    }
    for arg in cmd.get_arguments() {
        let long = arg.get_long().unwrap();
        assert!(keys::ALL.iter().any(|k| k.flag == long), "--{long} is missing from the key table");
    }
    let password = cmd.get_arguments().find(|a| a.get_long() == Some("etcd-password")).unwrap();
    assert!(password.is_hide_env_values_set());
    TestCli::command().debug_assert();
}

#[test]
fn env_is_below_flags_through_clap() {
    let _guard = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    std::env::set_var("OVERLAY_LOG_LEVEL", "debug");
    std::env::set_var("OVERLAY_ETCD_ENDPOINTS", "http://e1:2379,http://e2:2379");
    let from_env = parse_cli(&[]);
    let from_flag = parse_cli(&["--log-level", "warn", "--etcd-endpoints", "http://f:2379"]);
    std::env::remove_var("OVERLAY_LOG_LEVEL");
    std::env::remove_var("OVERLAY_ETCD_ENDPOINTS");

    let from_env = from_env.unwrap();
    assert_eq!(from_env.log_level.as_deref(), Some("debug"));
    assert_eq!(from_env.etcd_endpoints, Some(vec!["http://e1:2379".to_string(), "http://e2:2379".to_string()]));
    let from_flag = from_flag.unwrap();
    assert_eq!(from_flag.log_level.as_deref(), Some("warn"));
    assert_eq!(from_flag.etcd_endpoints, Some(vec!["http://f:2379".to_string()]));

    // And env (in RunFlags) beats the file.
    let file = file_with_ip("[log]\nlevel = \"error\"");
    let c = resolve_ok(&from_env, Some(file));
    assert_eq!(c.log.level, "debug");
}

#[test]
fn flags_parse_through_clap() {
    let _guard = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let f = parse_cli(&[
        "--config=/x.toml",
        "--underlay-ip=10.0.0.1",
        "--etcd-endpoints=https://a:2379, https://b:2379,",
        "--underlay-mtu=9000",
        "--host-ttl=100",
        "--etcd-password=pw",
        "--default-subnet-len=26",
    ])
    .unwrap();
    assert_eq!(f.config, Some(PathBuf::from("/x.toml")));
    assert_eq!(f.underlay_mtu, Some(9000));
    assert!(!format!("{f:?}").contains("pw"), "password leaks in Debug");
    let c = resolve_ok(&RunFlags { etcd_username: Some("u".into()), ..f }, None);
    // Whitespace and the empty item after the trailing comma are dropped.
    assert_eq!(c.etcd.endpoints, vec!["https://a:2379", "https://b:2379"]);
    assert_eq!(c.etcd.auth.unwrap().password.expose(), "pw");
    assert_eq!(c.default_subnet_len, 26);
    // Numbers are parsed by clap, which names the flag.
    let err = parse_cli(&["--underlay-mtu=big"]).unwrap_err().to_string();
    assert!(err.contains("--underlay-mtu"), "{err}");
}

#[test]
fn errors_name_the_source_of_the_value() {
    let err = resolve_err(&flags(), Some(toml("[ovs]\ndatapath_type = \"kernel\"")));
    assert_eq!(
        err.to_string(),
        "ovs.datapath_type 'kernel' (from /etc/overlay-agent/agent.toml) is invalid: \
         use system or netdev"
    );
    let f = RunFlags { datapath_type: Some("kernel".into()), ..flags() };
    assert_eq!(
        resolve_err(&f, None).to_string(),
        "ovs.datapath_type 'kernel' (from --datapath-type or OVERLAY_DATAPATH_TYPE) is invalid: \
         use system or netdev"
    );
}

#[test]
fn underlay_ip_must_be_a_unicast_address() {
    for bad in ["10.0.0", "foo", "0.0.0.0", "::", "224.0.0.1", "255.255.255.255", ""] {
        let f = RunFlags { underlay_ip: Some(bad.into()), ..RunFlags::default() };
        expect_invalid(resolve_err(&f, None), "underlay_ip");
    }
}

#[test]
fn underlay_mtu_range() {
    for (ip, mtu, ok) in [
        ("192.0.2.1", 575, false),
        ("192.0.2.1", 576, true),
        ("192.0.2.1", 65535, true),
        ("192.0.2.1", 65536, false),
        ("2001:db8::1", 1279, false),
        ("2001:db8::1", 1280, true),
    ] {
        let f = RunFlags { underlay_ip: Some(ip.into()), underlay_mtu: Some(mtu), ..RunFlags::default() };
        match AgentConfig::resolve(&f, None, host()) {
            Ok(c) => assert!(ok && c.underlay_mtu == Some(mtu), "{ip} {mtu}"),
            Err(e) => assert!(!ok && e.key() == Some("underlay_mtu"), "{ip} {mtu}: {e}"),
        }
    }
}

#[test]
fn etcd_endpoints_must_be_http_urls_with_a_port() {
    let err = resolve_err(
        &flags(),
        Some(toml(
            r#"[etcd]
endpoints = ["http://a:2379", "foo"]"#,
        )),
    );
    assert_eq!(
        err.to_string(),
        "etcd.endpoints[1] 'foo' (from /etc/overlay-agent/agent.toml) is not a URL: \
         use http://HOST:PORT or https://HOST:PORT"
    );
    for bad in [
        "http://",
        "http://host",
        "http://host:0",
        "http://host:99999",
        "http://:2379",
        "https://a:2379/v3",
        "http://user@a:2379",
        "ftp://a:21",
        "http://[::1]",
    ] {
        let f = RunFlags { etcd_endpoints: Some(vec![bad.into()]), ..flags() };
        let err = resolve_err(&f, None);
        assert_eq!(err.key(), Some("etcd.endpoints[0]"), "{bad}: {err}");
    }
    for good in ["http://a:2379", "https://a.b:2379/", "http://[::1]:2379"] {
        let f = RunFlags { etcd_endpoints: Some(vec![good.into()]), ..flags() };
        resolve_ok(&f, None);
    }
    let f = RunFlags { etcd_endpoints: Some(vec![]), ..flags() };
    expect_invalid(resolve_err(&f, None), "etcd.endpoints");
}

#[test]
fn etcd_prefix_is_normalized_and_checked() {
    let with = |p: &str| RunFlags { etcd_prefix: Some(p.into()), ..flags() };
    assert_eq!(resolve_ok(&with("/overlay/"), None).etcd.prefix, "/overlay");
    assert_eq!(resolve_ok(&with("/a/b//"), None).etcd.prefix, "/a/b");
    for bad in ["overlay", "/", "//", "/a/../b", "/a//b", "/a b", ""] {
        expect_invalid(resolve_err(&with(bad), None), "etcd.prefix");
    }
}

#[test]
fn ovsdb_remotes() {
    let cases = [
        ("unix:/run/db.sock", OvsdbRemote::Unix("/run/db.sock".into())),
        ("tcp:127.0.0.1:6641", OvsdbRemote::Tcp { host: "127.0.0.1".into(), port: 6641 }),
        ("ssl:ovs.example:6640", OvsdbRemote::Ssl { host: "ovs.example".into(), port: 6640 }),
        ("tcp:[::1]:6640", OvsdbRemote::Tcp { host: "::1".into(), port: 6640 }),
    ];
    for (text, want) in cases {
        let got: OvsdbRemote = text.parse().unwrap();
        assert_eq!(got, want);
        assert_eq!(got.to_string(), text, "Display round-trips");
    }
    assert_eq!(
        "tcp:10.0.0.1".parse::<OvsdbRemote>().unwrap(),
        OvsdbRemote::Tcp { host: "10.0.0.1".into(), port: DEFAULT_OVSDB_PORT }
    );
    for bad in [
        "unix:",
        "/var/run/db.sock",
        "tcp:",
        "tcp::6640",
        "tcp:h:0",
        "tcp:h:x",
        "tcp:::1:6640",
        "tcp:[::1",
        "ptcp:6640",
        "http:h:1",
    ] {
        let f = RunFlags { ovsdb: Some(bad.into()), ..flags() };
        let msg = expect_invalid(resolve_err(&f, None), "ovs.remote");
        assert!(msg.contains("unix:PATH"), "{msg}");
    }
}

#[test]
fn bridges_must_be_valid_and_distinct() {
    let f = RunFlags { tun_bridge: Some("br-int".into()), ..flags() };
    let msg = expect_invalid(resolve_err(&f, None), "ovs.tun_bridge");
    assert!(msg.contains("must differ"), "{msg}");
    for bad in ["", "br/int", "br int", "a-very-long-bridge", ".."] {
        let f = RunFlags { int_bridge: Some(bad.into()), ..flags() };
        expect_invalid(resolve_err(&f, None), "ovs.int_bridge");
    }
    let c = resolve_ok(&flags(), Some(file_with_ip("[ovs]\nint_bridge = \"br_int.1\"")));
    assert_eq!(c.ovs.int_bridge, "br_int.1");
}

#[test]
fn api_socket_path_must_fit_sun_path() {
    let f = RunFlags { api_socket: Some(PathBuf::from(format!("/{}", "s".repeat(107)))), ..flags() };
    expect_invalid(resolve_err(&f, None), "api.socket");
    let f = RunFlags { api_socket: Some(PathBuf::from(format!("/{}", "s".repeat(106)))), ..flags() };
    resolve_ok(&f, None);
}

#[test]
fn metrics_address() {
    let with = |a: &str| RunFlags { metrics_address: Some(a.into()), ..flags() };
    assert_eq!(resolve_ok(&with("127.0.0.1:9477"), None).metrics_address, Some("127.0.0.1:9477".parse().unwrap()));
    assert_eq!(resolve_ok(&with("[::1]:9477"), None).metrics_address, Some("[::1]:9477".parse().unwrap()));
    // A flag's "off" disables metrics even when the file enables them.
    let file = file_with_ip("[metrics]\naddress = \"0.0.0.0:9477\"");
    assert_eq!(resolve_ok(&with("off"), Some(file)).metrics_address, None);
    assert_eq!(resolve_ok(&with(""), None).metrics_address, None);
    for bad in ["9477", "localhost:9477", "127.0.0.1:0", "127.0.0.1"] {
        expect_invalid(resolve_err(&with(bad), None), "metrics.address");
    }
}

#[test]
fn log_settings() {
    let c = resolve_ok(&flags(), Some(toml("[log]\nformat = \"json\"\nlevel = \"info,overlay=debug\"")));
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.log.level, "info,overlay=debug");
    let f = RunFlags { log_format: Some("xml".into()), ..flags() };
    let msg = expect_invalid(resolve_err(&f, None), "log.format");
    assert!(msg.ends_with("use text or json"), "{msg}");
    for bad in ["", "info debug"] {
        let f = RunFlags { log_level: Some(bad.into()), ..flags() };
        expect_invalid(resolve_err(&f, None), "log.level");
    }
}

#[test]
fn timer_minimums() {
    type Set = fn(&mut RunFlags, u64);
    let cases: [(&str, Set, u64, u64); 3] = [
        ("timers.host_ttl_secs", |f, v| f.host_ttl = Some(v), 9, 10),
        ("timers.liveness_ttl_secs", |f, v| f.liveness_ttl = Some(v), 1, 2),
        ("timers.resync_interval_secs", |f, v| f.resync_interval = Some(v), 0, 1),
    ];
    for (key, set, bad, good) in cases {
        let mut f = flags();
        set(&mut f, bad);
        expect_invalid(resolve_err(&f, None), key);
        set(&mut f, good);
        resolve_ok(&f, None);
    }
    let f = RunFlags { resync_interval: Some(86_401), ..flags() };
    expect_invalid(resolve_err(&f, None), "timers.resync_interval_secs");
    let f = RunFlags { host_ttl: Some(u64::MAX), ..flags() };
    expect_invalid(resolve_err(&f, None), "timers.host_ttl_secs");
}

#[test]
fn default_subnet_len_range() {
    for (len, ok) in [(7, false), (8, true), (30, true), (31, false)] {
        let f = RunFlags { default_subnet_len: Some(len), ..flags() };
        match AgentConfig::resolve(&f, None, host()) {
            Ok(c) => assert!(ok && c.default_subnet_len == len),
            Err(e) => assert!(!ok && e.key() == Some("tenants.default_subnet_len"), "{e}"),
        }
    }
}

#[test]
fn state_dir_from_file() {
    let c = resolve_ok(&flags(), Some(file_with_ip("state_dir = \"/var/lib/oa\"")));
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/oa"));
    let err = resolve_err(&flags(), Some(file_with_ip("state_dir = \"\"")));
    expect_invalid(err, "state_dir");
}

#[test]
fn hostname_validation() {
    let long_ok = format!("a{}a", "b".repeat(251));
    let too_long = format!("a{}a", "b".repeat(252));
    for (h, ok) in [
        ("node1", true),
        ("Node-1.example.com", true),
        ("a", true),
        (long_ok.as_str(), true),
        (too_long.as_str(), false),
        ("", false),
        ("-node", false),
        ("node-", false),
        ("node..x", false),
        ("node/x", false),
        ("node_x", false),
        ("nöde", false),
    ] {
        let f = RunFlags { hostname: Some(h.into()), ..flags() };
        match AgentConfig::resolve(&f, None, host()) {
            Ok(c) => assert!(ok && c.hostname == h, "{h}"),
            Err(e) => assert!(!ok && e.key() == Some("hostname"), "{h}: {e}"),
        }
    }
}

#[test]
fn tls_cert_and_key_go_together() {
    let f =
        RunFlags { etcd_endpoints: Some(vec!["https://a:2379".into()]), etcd_cert: Some("/c.pem".into()), ..flags() };
    let err = resolve_err(&f, None);
    assert!(matches!(err, ConfigError::Unpaired { .. }));
    assert_eq!(err.key(), Some("etcd.cert_file"));
    assert!(err.to_string().contains("--etcd-key or OVERLAY_ETCD_KEY"), "{err}");

    let f = RunFlags { etcd_endpoints: Some(vec!["https://a:2379".into()]), ..flags() };
    let file = toml("[etcd]\nkey_file = \"/k.pem\"");
    let err = resolve_err(&f, Some(file));
    assert_eq!(err.key(), Some("etcd.key_file"));
    assert!(err.to_string().contains("/etc/overlay-agent/agent.toml"), "{err}");

    let f = RunFlags {
        etcd_endpoints: Some(vec!["https://a:2379".into()]),
        etcd_cert: Some("/c.pem".into()),
        etcd_key: Some("/k.pem".into()),
        ..flags()
    };
    let tls = resolve_ok(&f, None).etcd.tls.unwrap();
    assert_eq!(tls.ca_file, None);
    assert_eq!(tls.identity, Some(ClientIdentity { cert_file: "/c.pem".into(), key_file: "/k.pem".into() }));
}

#[test]
fn tls_requires_https_endpoints() {
    let f = RunFlags {
        etcd_endpoints: Some(vec!["https://a:2379".into(), "http://b:2379".into()]),
        etcd_ca: Some("/ca.pem".into()),
        ..flags()
    };
    let err = resolve_err(&f, None);
    assert_eq!(err.key(), Some("etcd.endpoints[1]"));
    assert!(err.to_string().contains("etcd.ca_file"), "{err}");
    // The default endpoint is http, so a CA alone is an error too.
    let f = RunFlags { etcd_ca: Some("/ca.pem".into()), ..flags() };
    assert_eq!(resolve_err(&f, None).key(), Some("etcd.endpoints[0]"));
    let f =
        RunFlags { etcd_endpoints: Some(vec!["https://a:2379".into()]), etcd_ca: Some("/ca.pem".into()), ..flags() };
    let tls = resolve_ok(&f, None).etcd.tls.unwrap();
    assert_eq!(tls.ca_file, Some(PathBuf::from("/ca.pem")));
    assert_eq!(tls.identity, None);
}

#[test]
fn username_and_password_go_together() {
    let f = RunFlags { etcd_username: Some("u".into()), ..flags() };
    let err = resolve_err(&f, None);
    assert_eq!(err.key(), Some("etcd.username"));
    assert!(err.to_string().contains("OVERLAY_ETCD_PASSWORD"), "{err}");
    let err = resolve_err(&flags(), Some(toml("[etcd]\npassword = \"p\"")));
    assert_eq!(err.key(), Some("etcd.password"));

    let c = resolve_ok(
        &RunFlags { etcd_username: Some("u".into()), ..flags() },
        Some(toml("[etcd]\npassword = \"s3cret\"")),
    );
    let auth = c.etcd.auth.clone().unwrap();
    assert_eq!(auth.username, "u");
    assert_eq!(auth.password.expose(), "s3cret");
    assert!(!format!("{c:?}").contains("s3cret"), "password leaks in Debug");
}

#[test]
fn unknown_keys_are_rejected_with_their_position() {
    let text = "underlay_ip = \"192.0.2.1\"\n[ovs]\ndatapath = \"netdev\"\n";
    let err = FileConfig::parse(text, Path::new("/e/agent.toml")).unwrap_err();
    match &err {
        ConfigError::Parse { line, .. } => assert_eq!(*line, 3),
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.starts_with("/e/agent.toml:3:1: "), "{msg}");
    assert!(msg.contains("datapath") && msg.contains("datapath_type"), "{msg}");

    let err = FileConfig::parse("underlay = 1", Path::new("/e")).unwrap_err();
    assert!(err.to_string().contains("underlay"), "{err}");
    let err = FileConfig::parse("[etcdd]\nprefix = \"/x\"", Path::new("/e")).unwrap_err();
    assert!(err.to_string().contains("etcdd"), "{err}");
}

#[test]
fn syntax_and_type_errors_carry_path_and_line() {
    let err = FileConfig::parse("a = 1\n\nhostname = \"x\n", Path::new("/e/bad.toml")).unwrap_err();
    assert!(err.to_string().starts_with("/e/bad.toml:3:"), "{err}");
    let err = FileConfig::parse("# c\nunderlay_mtu = \"big\"\n", Path::new("/e/bad.toml")).unwrap_err();
    match err {
        ConfigError::Parse { line, .. } => assert_eq!(line, 2),
        other => panic!("{other:?}"),
    }
    let err = FileConfig::parse("[timers]\nhost_ttl_secs = -5\n", Path::new("/e")).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { line: 2, .. }), "{err}");
}

#[test]
fn reading_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    assert_eq!(FileConfig::read(&missing, false).unwrap(), None);
    let err = FileConfig::read(&missing, true).unwrap_err();
    assert!(matches!(err, ConfigError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("nope.toml"));

    let err = AgentConfig::load(&RunFlags { config: Some(missing), ..flags() }).unwrap_err();
    assert!(matches!(err, ConfigError::NotFound { .. }), "{err}");

    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "underlay_ip = \"192.0.2.9\"\nhostname = \"h\"\n").unwrap();
    let c = AgentConfig::load(&RunFlags { config: Some(path.clone()), ..RunFlags::default() }).unwrap();
    assert_eq!(c.underlay_ip, "192.0.2.9".parse::<IpAddr>().unwrap());
    assert_eq!(c.hostname, "h");

    // A directory cannot be read as a file: an I/O error, not "missing".
    let err = FileConfig::read(dir.path(), false).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
}

#[test]
fn system_hostname_is_read() {
    if Path::new("/proc/sys/kernel/hostname").exists() {
        let h = system_hostname().unwrap();
        assert!(!h.is_empty() && !h.ends_with('\n'));
    }
}

/// Uncomments `# key = value` lines, the example's convention for keys without a default.
fn uncomment_keys(text: &str) -> String {
    text.lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest)
                if rest
                    .split_once(" = ")
                    .is_some_and(|(k, _)| k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')) =>
            {
                rest
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn example_as_shipped_sets_only_defaults() {
    let example = toml(AgentConfig::example_toml());
    let from_example = resolve_ok(&RunFlags::default(), Some(example));
    let ip_only = RunFlags { underlay_ip: Some("192.0.2.10".into()), ..RunFlags::default() };
    assert_eq!(from_example, resolve_ok(&ip_only, None));
}

#[test]
fn example_documents_every_key() {
    let text = uncomment_keys(AgentConfig::example_toml());
    let file = toml(&text);
    // No `..` in these patterns: a new key breaks the build here until the example has it.
    let FileConfig {
        hostname,
        underlay_ip,
        underlay_mtu,
        host_netns,
        state_dir,
        etcd: EtcdFile { endpoints, prefix, ca_file, cert_file, key_file, username, password },
        ovs: OvsFile { remote, datapath_type, int_bridge, tun_bridge, rundir, ca_cert, certificate, private_key },
        api: ApiFile { socket },
        metrics: MetricsFile { address },
        log: LogFile { format, level },
        timers: TimersFile { host_ttl_secs, liveness_ttl_secs, resync_interval_secs },
        tenants: TenantsFile { default_subnet_len },
        gateway: GatewayFile { transit_cidr },
    } = file.clone();
    let present = [
        hostname.is_some(),
        underlay_ip.is_some(),
        underlay_mtu.is_some(),
        host_netns.is_some(),
        state_dir.is_some(),
        endpoints.is_some(),
        prefix.is_some(),
        ca_file.is_some(),
        cert_file.is_some(),
        key_file.is_some(),
        username.is_some(),
        password.is_some(),
        remote.is_some(),
        datapath_type.is_some(),
        int_bridge.is_some(),
        tun_bridge.is_some(),
        rundir.is_some(),
        ca_cert.is_some(),
        certificate.is_some(),
        private_key.is_some(),
        socket.is_some(),
        address.is_some(),
        format.is_some(),
        level.is_some(),
        host_ttl_secs.is_some(),
        liveness_ttl_secs.is_some(),
        resync_interval_secs.is_some(),
        default_subnet_len.is_some(),
        transit_cidr.is_some(),
    ];
    assert!(present.iter().all(|p| *p), "{present:?}");
    assert_eq!(present.len() + 1, keys::ALL.len(), "every key but --config");

    // The example's TLS files need https endpoints; everything else resolves as written.
    let https = RunFlags { etcd_endpoints: Some(vec!["https://127.0.0.1:2379".into()]), ..RunFlags::default() };
    let c = AgentConfig::resolve(&https, Some(file), None).unwrap();
    assert_eq!(c.hostname, "node1");
    assert_eq!(c.underlay_mtu, Some(1500));
    assert!(c.etcd.tls.unwrap().identity.is_some());
    assert_eq!(c.etcd.auth.unwrap().username, "overlay");
    assert_eq!(c.metrics_address, Some("127.0.0.1:9477".parse().unwrap()));
}

#[test]
fn enums_display_their_config_spelling() {
    for d in [DatapathType::System, DatapathType::Netdev] {
        assert_eq!(d.to_string().parse::<DatapathType>(), Ok(d));
    }
    for l in [LogFormat::Text, LogFormat::Json] {
        assert_eq!(l.to_string().parse::<LogFormat>(), Ok(l));
    }
    assert_eq!(DatapathType::Netdev.as_str(), "netdev");
}

#[derive(Debug, Parser)]
struct AgentLikeCli {
    #[command(subcommand)]
    cmd: AgentLikeCmd,
}

#[derive(Debug, clap::Subcommand)]
enum AgentLikeCmd {
    /// Run the agent.
    Run {
        #[command(flatten)]
        flags: RunFlags,
    },
}

#[test]
fn flattening_keeps_the_subcommand_help() {
    let cmd = AgentLikeCli::command();
    let run = cmd.find_subcommand("run").unwrap();
    assert_eq!(run.get_about().map(|a| a.to_string()).as_deref(), Some("Run the agent"));
    let help = TestCli::command().render_long_help().to_string();
    assert!(!help.contains("Flatten into"), "{help}");
    assert!(help.contains("[env: OVERLAY_UNDERLAY_IP"), "{help}");
    let _guard = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let parsed = AgentLikeCli::try_parse_from(["a", "run", "--underlay-ip", "10.1.1.1"]).unwrap();
    let AgentLikeCmd::Run { flags } = parsed.cmd;
    assert_eq!(flags.underlay_ip.as_deref(), Some("10.1.1.1"));
}
