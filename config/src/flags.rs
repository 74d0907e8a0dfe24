//! Flags of `overlay-agent run`, each with its `OVERLAY_*` environment variable.

use std::path::PathBuf;

use clap::Args;

use crate::Secret;

/// Flags of `overlay-agent run`. Flatten into the subcommand with `#[command(flatten)]`.
///
/// Every field is optional: `None` means "neither the flag nor its environment variable was
/// given", so the file or the default applies. clap gives the flag precedence over the
/// environment variable. Values are checked by [`crate::AgentConfig::resolve`], not here, so
/// that flag, environment and file values get the same checks and messages; only numbers and
/// paths are parsed by clap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
// Without this, clap would use the doc comment above as the `run` subcommand's help text.
#[command(about = None, long_about = None)]
pub struct RunFlags {
    /// Config file (TOML) [default: /etc/overlay-agent/agent.toml, which may be absent; a file
    /// named here must exist]
    #[arg(long, env = "OVERLAY_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// This host's name in etcd [default: the system hostname]
    #[arg(long, env = "OVERLAY_HOSTNAME", value_name = "NAME")]
    pub hostname: Option<String>,

    /// Underlay (tunnel endpoint) IP address of this host, IPv4 or IPv6 (required)
    #[arg(long, env = "OVERLAY_UNDERLAY_IP", value_name = "IP")]
    pub underlay_ip: Option<String>,

    /// Underlay MTU, 576..=65535 [default: the underlay interface's MTU, else 1500]
    #[arg(long, env = "OVERLAY_UNDERLAY_MTU", value_name = "BYTES")]
    pub underlay_mtu: Option<u32>,

    /// Network namespace (file) where ovs-vswitchd runs and veth host ends go [default: the agent's own]
    #[arg(long, env = "OVERLAY_HOST_NETNS", value_name = "PATH")]
    pub host_netns: Option<PathBuf>,

    /// Directory for state that outlives a reboot: the machine identity [default: /var/lib/overlay-agent]
    #[arg(long, env = "OVERLAY_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// etcd endpoints, comma-separated http:// or https:// URLs [default: http://127.0.0.1:2379]
    #[arg(long, env = "OVERLAY_ETCD_ENDPOINTS", value_name = "URLS", value_delimiter = ',')]
    pub etcd_endpoints: Option<Vec<String>>,

    /// Root of the agent's etcd keys [default: /overlay]
    #[arg(long, env = "OVERLAY_ETCD_PREFIX", value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,

    /// CA bundle that verifies the etcd servers (endpoints must then be https://)
    #[arg(long, env = "OVERLAY_ETCD_CA", value_name = "PATH")]
    pub etcd_ca: Option<PathBuf>,

    /// Client certificate for etcd (needs --etcd-key)
    #[arg(long, env = "OVERLAY_ETCD_CERT", value_name = "PATH")]
    pub etcd_cert: Option<PathBuf>,

    /// Client private key for etcd (needs --etcd-cert)
    #[arg(long, env = "OVERLAY_ETCD_KEY", value_name = "PATH")]
    pub etcd_key: Option<PathBuf>,

    /// etcd user name (needs a password)
    #[arg(long, env = "OVERLAY_ETCD_USERNAME", value_name = "USER")]
    pub etcd_username: Option<String>,

    /// etcd password; prefer OVERLAY_ETCD_PASSWORD or the config file, since a flag is visible
    /// to every local user in the process list
    // The value is hidden from --help so a password set in the environment is not printed.
    #[arg(long, env = "OVERLAY_ETCD_PASSWORD", value_name = "PASSWORD", hide_env_values = true)]
    pub etcd_password: Option<Secret>,

    /// OVSDB remote: unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT
    /// [default: unix:/var/run/openvswitch/db.sock]
    #[arg(long, env = "OVERLAY_OVSDB", value_name = "REMOTE")]
    pub ovsdb: Option<String>,

    /// OVS datapath of the agent's bridges: system or netdev [default: system]
    #[arg(long, env = "OVERLAY_DATAPATH_TYPE", value_name = "TYPE")]
    pub datapath_type: Option<String>,

    /// Integration bridge, where containers are plugged [default: br-int]
    #[arg(long, env = "OVERLAY_INT_BRIDGE", value_name = "NAME")]
    pub int_bridge: Option<String>,

    /// Tunnel bridge, where tunnel ports live [default: br-tun]
    #[arg(long, env = "OVERLAY_TUN_BRIDGE", value_name = "NAME")]
    pub tun_bridge: Option<String>,

    /// ovs-vswitchd's run directory: the agent reaches each bridge's flows through its
    /// <bridge>.mgmt socket there [default: /var/run/openvswitch]
    #[arg(long, env = "OVERLAY_OVS_RUNDIR", value_name = "DIR")]
    pub ovs_rundir: Option<PathBuf>,

    /// CA certificate (PEM) that signed ovsdb-server's certificate, for an ssl: remote
    #[arg(long, env = "OVERLAY_OVSDB_CA_CERT", value_name = "FILE")]
    pub ovsdb_ca_cert: Option<PathBuf>,

    /// This agent's certificate (PEM) for an ssl: OVSDB remote
    #[arg(long, env = "OVERLAY_OVSDB_CERTIFICATE", value_name = "FILE")]
    pub ovsdb_certificate: Option<PathBuf>,

    /// This agent's private key (PEM) for an ssl: OVSDB remote
    #[arg(long, env = "OVERLAY_OVSDB_PRIVATE_KEY", value_name = "FILE")]
    pub ovsdb_private_key: Option<PathBuf>,

    /// Local API socket [default: /run/overlay-agent/api.sock]
    #[arg(long, env = "OVERLAY_API_SOCKET", value_name = "PATH")]
    pub api_socket: Option<PathBuf>,

    /// Metrics listen address, e.g. 127.0.0.1:9477; "" or "off" disables [default: off]
    #[arg(long, env = "OVERLAY_METRICS_ADDRESS", value_name = "ADDR")]
    pub metrics_address: Option<String>,

    /// Log format: text or json [default: text]
    #[arg(long, env = "OVERLAY_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,

    /// Log filter, e.g. info or info,overlay=debug [default: info]
    #[arg(long, env = "OVERLAY_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,

    /// TTL in seconds of the host registration and subnet leases, at least 10 [default: 86400]
    #[arg(long, env = "OVERLAY_HOST_TTL", value_name = "SECS")]
    pub host_ttl: Option<u64>,

    /// TTL in seconds of the liveness key, at least 2 [default: 10]
    #[arg(long, env = "OVERLAY_LIVENESS_TTL", value_name = "SECS")]
    pub liveness_ttl: Option<u64>,

    /// Seconds between full reconciles [default: 60]
    #[arg(long, env = "OVERLAY_RESYNC_INTERVAL", value_name = "SECS")]
    pub resync_interval: Option<u64>,

    /// Subnet lease length for tenants created without --subnet-len, 8..=30 [default: 24]
    #[arg(long, env = "OVERLAY_DEFAULT_SUBNET_LEN", value_name = "LEN")]
    pub default_subnet_len: Option<u8>,

    /// IPv4 range (a /19 or larger) for the links between routers and the host namespace [default: 169.254.64.0/19]
    #[arg(long, env = "OVERLAY_GATEWAY_TRANSIT_CIDR", value_name = "CIDR")]
    pub gateway_transit_cidr: Option<String>,
}
