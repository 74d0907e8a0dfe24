//! The TOML file: unknown keys, syntax and type errors, reading, the shipped example.

use super::*;

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
