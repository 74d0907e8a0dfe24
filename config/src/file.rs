//! The TOML config file, as written: every key optional, nothing validated beyond TOML types.
//! Unknown keys are rejected so a typo is an error instead of a silently ignored setting.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{ConfigError, Secret};

/// The whole config file. See the crate documentation for the layout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `hostname`: this host's name in etcd.
    pub hostname: Option<String>,
    /// `underlay_ip`: the tunnel endpoint address (IPv4 or IPv6).
    pub underlay_ip: Option<String>,
    /// `underlay_mtu`: MTU of the underlay network.
    pub underlay_mtu: Option<u32>,
    /// `host_netns`: the network namespace of ovs-vswitchd, when it is not the agent's own.
    pub host_netns: Option<PathBuf>,
    /// `state_dir`: directory for state that outlives a reboot (the machine identity).
    pub state_dir: Option<PathBuf>,
    /// `[etcd]`.
    #[serde(default)]
    pub etcd: EtcdFile,
    /// `[ovs]`.
    #[serde(default)]
    pub ovs: OvsFile,
    /// `[api]`.
    #[serde(default)]
    pub api: ApiFile,
    /// `[metrics]`.
    #[serde(default)]
    pub metrics: MetricsFile,
    /// `[log]`.
    #[serde(default)]
    pub log: LogFile,
    /// `[timers]`.
    #[serde(default)]
    pub timers: TimersFile,
    /// `[tenants]`.
    #[serde(default)]
    pub tenants: TenantsFile,
    /// `[gateway]`.
    #[serde(default)]
    pub gateway: GatewayFile,
}

/// `[etcd]`: where the cluster state lives and how to authenticate to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdFile {
    /// `endpoints`: `http://HOST:PORT` or `https://HOST:PORT` URLs.
    pub endpoints: Option<Vec<String>>,
    /// `prefix`: root of the agent's keys.
    pub prefix: Option<String>,
    /// `ca_file`: CA bundle that verifies the etcd servers.
    pub ca_file: Option<PathBuf>,
    /// `cert_file`: client certificate.
    pub cert_file: Option<PathBuf>,
    /// `key_file`: client private key.
    pub key_file: Option<PathBuf>,
    /// `username`: etcd user.
    pub username: Option<String>,
    /// `password`: etcd password.
    pub password: Option<Secret>,
}

/// `[ovs]`: the local Open vSwitch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OvsFile {
    /// `remote`: OVSDB remote, `unix:PATH`, `tcp:HOST:PORT` or `ssl:HOST:PORT`.
    pub remote: Option<String>,
    /// `datapath_type`: `system` or `netdev`.
    pub datapath_type: Option<String>,
    /// `int_bridge`: the integration bridge.
    pub int_bridge: Option<String>,
    /// `tun_bridge`: the tunnel bridge.
    pub tun_bridge: Option<String>,
    /// `rundir`: ovs-vswitchd's run directory, where the bridges' OpenFlow sockets are.
    pub rundir: Option<PathBuf>,
    /// `ca_cert`: CA certificate for an `ssl:` remote.
    pub ca_cert: Option<PathBuf>,
    /// `certificate`: this agent's certificate for an `ssl:` remote.
    pub certificate: Option<PathBuf>,
    /// `private_key`: this agent's private key for an `ssl:` remote.
    pub private_key: Option<PathBuf>,
}

/// `[api]`: the local API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiFile {
    /// `socket`: Unix socket path.
    pub socket: Option<PathBuf>,
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsFile {
    /// `address`: listen address (`IP:PORT`), or `""`/`"off"` to disable.
    pub address: Option<String>,
}

/// `[log]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    /// `format`: `text` or `json`.
    pub format: Option<String>,
    /// `level`: a `tracing` filter such as `info` or `info,overlay=debug`.
    pub level: Option<String>,
}

/// `[timers]`: lease TTLs and the resync period, in seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimersFile {
    /// `host_ttl_secs`: TTL of the host-registration and subnet leases.
    pub host_ttl_secs: Option<u64>,
    /// `liveness_ttl_secs`: TTL of the liveness key.
    pub liveness_ttl_secs: Option<u64>,
    /// `resync_interval_secs`: period of the full reconcile.
    pub resync_interval_secs: Option<u64>,
}

/// `[tenants]`: defaults for tenants created through this agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantsFile {
    /// `default_subnet_len`: prefix length of per-host subnet leases.
    pub default_subnet_len: Option<u8>,
}

/// `[gateway]`: the router namespace each host builds per tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    /// `transit_cidr`: where the /31 between each router and the host namespace is taken.
    pub transit_cidr: Option<String>,
}

impl FileConfig {
    /// Parses the text of a config file; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|span| line_column(text, span.start)).unwrap_or((0, 0));
            ConfigError::Parse { path: path.to_path_buf(), line, column, message: e.message().trim_end().to_string() }
        })
    }

    /// Reads and parses a config file.
    ///
    /// `Ok(None)` when the file does not exist and `explicit` is false: running without a file
    /// at the default path is fine, but a file the operator named must be there.
    pub fn read(path: &Path, explicit: bool) -> Result<Option<FileConfig>, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => FileConfig::parse(&text, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if explicit {
                    Err(ConfigError::NotFound { path: path.to_path_buf() })
                } else {
                    Ok(None)
                }
            }
            Err(source) => Err(ConfigError::Read { path: path.to_path_buf(), source }),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}
