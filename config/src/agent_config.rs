//! The validated agent configuration that [`AgentConfig::resolve`] produces.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::{DatapathType, LogFormat, OvsdbRemote, Secret};

/// The validated, fully resolved agent configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// This host's name; safe to use as an etcd key segment.
    pub hostname: String,
    /// The tunnel endpoint address of this host.
    pub underlay_ip: IpAddr,
    /// Underlay MTU when configured; `None` means the agent reads it from the underlay
    /// interface and falls back to 1500.
    pub underlay_mtu: Option<u32>,
    /// The network namespace (a file such as /var/run/netns/NAME) where ovs-vswitchd runs and
    /// where the host ends of container veths go; `None` is the agent's own namespace (the
    /// normal case: the agent runs on the host).
    pub host_netns: Option<PathBuf>,
    /// etcd connection and key prefix.
    pub etcd: EtcdConfig,
    /// Local Open vSwitch.
    pub ovs: OvsConfig,
    /// Path of the local API's Unix socket.
    pub api_socket: PathBuf,
    /// Where to serve metrics; `None` disables them.
    pub metrics_address: Option<SocketAddr>,
    /// Logging.
    pub log: LogConfig,
    /// Lease TTLs and the resync period.
    pub timers: Timers,
    /// Subnet lease length for tenants created without an explicit one.
    pub default_subnet_len: u8,
    /// Directory for runtime state.
    pub state_dir: PathBuf,
    /// Where the /31 between each router namespace and the host namespace is taken.
    pub gateway_transit_cidr: ipnet::IpNet,
}

/// etcd settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `http://HOST:PORT` or `https://HOST:PORT` URLs, at least one; all https when `tls` is set.
    pub endpoints: Vec<String>,
    /// Key prefix: starts with `/`, no trailing `/`; keys are `{prefix}/hosts/{hostname}` etc.
    pub prefix: String,
    /// TLS files, when any is configured.
    pub tls: Option<EtcdTls>,
    /// User and password, when configured.
    pub auth: Option<EtcdAuth>,
}

/// TLS files for etcd. Existence is checked by the agent when it reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// CA bundle verifying the servers; `None` means the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub identity: Option<ClientIdentity>,
}

/// A client certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// PEM certificate (chain).
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

/// etcd user credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdAuth {
    /// User name.
    pub username: String,
    /// Password; its `Debug` is redacted.
    pub password: Secret,
}

/// Open vSwitch settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvsConfig {
    /// Where ovsdb-server listens.
    pub remote: OvsdbRemote,
    /// Datapath of the bridges the agent creates.
    pub datapath_type: DatapathType,
    /// Integration bridge name.
    pub int_bridge: String,
    /// Tunnel bridge name (different from `int_bridge`).
    pub tun_bridge: String,
    /// ovs-vswitchd's run directory (the bridges' `<bridge>.mgmt` OpenFlow sockets).
    pub rundir: PathBuf,
    /// Certificates for an `ssl:` remote (present exactly when the remote is `ssl:`).
    pub tls: Option<OvsdbTls>,
}

/// The files of an `ssl:` OVSDB remote, as ovs-vsctl's `--ca-cert`, `--certificate`,
/// `--private-key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvsdbTls {
    /// CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// This agent's certificate (PEM).
    pub certificate: PathBuf,
    /// This agent's private key (PEM).
    pub private_key: PathBuf,
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// A `tracing_subscriber::EnvFilter` directive string, e.g. `info,overlay=debug`.
    pub level: String,
}

/// Timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// TTL of the host registration and subnet leases (at least 10 s).
    pub host_ttl: Duration,
    /// TTL of the liveness key (at least 2 s).
    pub liveness_ttl: Duration,
    /// Period of the full reconcile (1 s ..= 1 day).
    pub resync_interval: Duration,
}
