//! Where values come from: defaults, file, flags, environment, through clap.

use super::*;

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

/// Asserts the keys [`flag_beats_file_beats_default`] sets: hostname, underlay IP, etcd prefix and
/// (only) endpoint, datapath type and host TTL.
#[track_caller]
fn assert_set(c: &AgentConfig, [hostname, ip, prefix, endpoint]: [&str; 4], datapath: DatapathType, ttl: u64) {
    assert_eq!(c.hostname, hostname);
    assert_eq!(c.underlay_ip, ip.parse::<IpAddr>().unwrap());
    assert_eq!(c.etcd.prefix, prefix);
    assert_eq!(c.etcd.endpoints, vec![endpoint.to_string()]);
    assert_eq!(c.ovs.datapath_type, datapath);
    assert_eq!(c.timers.host_ttl, Duration::from_secs(ttl));
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
    assert_set(&c, ["filehost", "198.51.100.7", "/fileprefix", "http://file:2379"], DatapathType::Netdev, 600);
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
    assert_set(&c, ["flaghost", "2001:db8::1", "/flagprefix", "http://flag:2379"], DatapathType::System, 30);
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
