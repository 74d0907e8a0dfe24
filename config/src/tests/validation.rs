//! What each key accepts, and what the refusal says.

use super::*;

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
