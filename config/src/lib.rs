//! Configuration of `overlay-agent run`: a TOML file, command-line flags and `OVERLAY_*`
//! environment variables, merged and validated once at start.
//!
//! Precedence, highest first: flag > environment > file > built-in default. Flags and
//! environment are both handled by clap (every [`RunFlags`] field has an `env = "OVERLAY_..."`),
//! so [`RunFlags`] already holds "flag or env"; [`AgentConfig::resolve`] layers the file and the
//! defaults under it.
//!
//! The file (default [`DEFAULT_CONFIG_PATH`]) has this layout; `agent.example.toml` in this
//! crate (also [`AgentConfig::example_toml`]) documents every key:
//!
//! ```toml
//! hostname = "node1"             # default: the system hostname
//! underlay_ip = "192.0.2.10"     # required
//! underlay_mtu = 1500            # default: from the underlay interface, else 1500
//! state_dir = "/var/lib/overlay-agent"
//!
//! [etcd]
//! endpoints = ["http://127.0.0.1:2379"]
//! prefix = "/overlay"
//! ca_file = "/etc/overlay-agent/etcd-ca.pem"
//! cert_file = "/etc/overlay-agent/etcd-client.pem"
//! key_file = "/etc/overlay-agent/etcd-client-key.pem"
//! username = "overlay"
//! password = "secret"
//!
//! [ovs]
//! remote = "unix:/var/run/openvswitch/db.sock"
//! datapath_type = "system"
//! int_bridge = "br-int"
//! tun_bridge = "br-tun"
//! rundir = "/var/run/openvswitch"
//!
//! [api]
//! socket = "/run/overlay-agent/api.sock"
//!
//! [metrics]
//! address = "127.0.0.1:9477"     # default: disabled; "" or "off" disables
//!
//! [log]
//! format = "text"
//! level = "info"
//!
//! [timers]
//! host_ttl_secs = 86400
//! liveness_ttl_secs = 10
//! resync_interval_secs = 60
//!
//! [tenants]
//! default_subnet_len = 24
//!
//! [gateway]
//! transit_cidr = "169.254.64.0/19"
//! ```
#![warn(missing_docs)]

mod agent_config;
mod check;
mod error;
mod file;
mod flags;
mod resolve;
mod types;

#[cfg(test)]
mod tests;

pub use agent_config::{
    AgentConfig, ClientIdentity, EtcdAuth, EtcdConfig, EtcdTls, LogConfig, OvsConfig, OvsdbTls, Timers,
};
pub use error::{ConfigError, Origin};
pub use file::{ApiFile, EtcdFile, FileConfig, GatewayFile, LogFile, MetricsFile, OvsFile, TenantsFile, TimersFile};
pub use flags::RunFlags;
/// Where the agent reaches ovsdb-server: OVSDB's own remote type, so its syntax has one parser.
pub use ovsdb_client::Remote as OvsdbRemote;
pub use resolve::system_hostname;
pub use types::{DatapathType, LogFormat, Secret};

/// Where the agent looks for its config file when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/overlay-agent/agent.toml";
/// etcd endpoint used when none is configured: a local single-node etcd.
pub const DEFAULT_ETCD_ENDPOINT: &str = "http://127.0.0.1:2379";
/// Root of every key the agents write in etcd.
pub const DEFAULT_ETCD_PREFIX: &str = "/overlay";
/// The OVSDB socket of a stock Open vSwitch install.
pub const DEFAULT_OVSDB_REMOTE: &str = "unix:/var/run/openvswitch/db.sock";
/// Port used for `tcp:`/`ssl:` OVSDB remotes that omit one (the IANA OVSDB port).
pub const DEFAULT_OVSDB_PORT: u16 = ovsdb_client::DEFAULT_PORT;
/// Name of the bridge containers are plugged into.
pub const DEFAULT_INT_BRIDGE: &str = "br-int";
/// Name of the bridge holding the tunnel ports.
pub const DEFAULT_TUN_BRIDGE: &str = "br-tun";
/// Where ovs-vswitchd puts each bridge's OpenFlow management socket (`<bridge>.mgmt`).
pub const DEFAULT_OVS_RUNDIR: &str = "/var/run/openvswitch";
/// Path of the agent's local API socket.
pub const DEFAULT_API_SOCKET: &str = "/run/overlay-agent/api.sock";
/// Directory for the agent's state that outlives a reboot: the machine identity.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/overlay-agent";
/// Default `tracing` filter.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Host-registration lease TTL: flannel keeps its leases 24 h, so a host that is down for a
/// while (reboot, upgrade) keeps its registration and subnets.
pub const DEFAULT_HOST_TTL_SECS: u64 = 86_400;
/// Liveness lease TTL. The key says the agent runs: status shows peers alive by it, and a
/// registration waits for it to expire (up to twice the TTL) when its holder may be this
/// machine's own previous boot or older agent, and is refused while a live holder keeps it.
/// Short, so that wait is short.
pub const DEFAULT_LIVENESS_TTL_SECS: u64 = 10;
/// Full reconcile period, a safety net under the event-driven reconcile.
pub const DEFAULT_RESYNC_INTERVAL_SECS: u64 = 60;
/// Length of a host's subnet lease for tenants created without `--subnet-len`.
pub const DEFAULT_SUBNET_LEN: u8 = 24;
/// Where the links between router namespaces and the host namespace take their addresses.
pub const DEFAULT_GATEWAY_TRANSIT_CIDR: &str = "169.254.64.0/19";

/// One configuration key: its dotted name in the file, its flag and its environment variable.
/// Kept in one table so error messages and the tests agree with the clap definitions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key {
    pub(crate) name: &'static str,
    pub(crate) flag: &'static str,
    pub(crate) env: &'static str,
}

macro_rules! keys {
    ($($id:ident = $name:literal, $flag:literal, $env:literal;)*) => {
        $(pub(crate) const $id: Key = Key { name: $name, flag: $flag, env: $env };)*
        /// Every key.
        pub(crate) const ALL: &[Key] = &[$($id),*];
    };
}

/// The key table.
pub(crate) mod keys {
    use super::Key;

    /// "--flag or ENV" for a dotted key name, for error messages.
    pub(crate) fn flag_and_env(name: &str) -> String {
        match ALL.iter().find(|k| k.name == name) {
            Some(k) => format!("--{} or {}", k.flag, k.env),
            None => "its flag or environment variable".to_string(),
        }
    }

    keys! {
        CONFIG = "config", "config", "OVERLAY_CONFIG";
        HOSTNAME = "hostname", "hostname", "OVERLAY_HOSTNAME";
        UNDERLAY_IP = "underlay_ip", "underlay-ip", "OVERLAY_UNDERLAY_IP";
        UNDERLAY_MTU = "underlay_mtu", "underlay-mtu", "OVERLAY_UNDERLAY_MTU";
        STATE_DIR = "state_dir", "state-dir", "OVERLAY_STATE_DIR";
        HOST_NETNS = "host_netns", "host-netns", "OVERLAY_HOST_NETNS";
        ETCD_ENDPOINTS = "etcd.endpoints", "etcd-endpoints", "OVERLAY_ETCD_ENDPOINTS";
        ETCD_PREFIX = "etcd.prefix", "etcd-prefix", "OVERLAY_ETCD_PREFIX";
        ETCD_CA = "etcd.ca_file", "etcd-ca", "OVERLAY_ETCD_CA";
        ETCD_CERT = "etcd.cert_file", "etcd-cert", "OVERLAY_ETCD_CERT";
        ETCD_KEY = "etcd.key_file", "etcd-key", "OVERLAY_ETCD_KEY";
        ETCD_USERNAME = "etcd.username", "etcd-username", "OVERLAY_ETCD_USERNAME";
        ETCD_PASSWORD = "etcd.password", "etcd-password", "OVERLAY_ETCD_PASSWORD";
        OVSDB = "ovs.remote", "ovsdb", "OVERLAY_OVSDB";
        DATAPATH_TYPE = "ovs.datapath_type", "datapath-type", "OVERLAY_DATAPATH_TYPE";
        INT_BRIDGE = "ovs.int_bridge", "int-bridge", "OVERLAY_INT_BRIDGE";
        TUN_BRIDGE = "ovs.tun_bridge", "tun-bridge", "OVERLAY_TUN_BRIDGE";
        OVS_RUNDIR = "ovs.rundir", "ovs-rundir", "OVERLAY_OVS_RUNDIR";
        OVS_CA_CERT = "ovs.ca_cert", "ovsdb-ca-cert", "OVERLAY_OVSDB_CA_CERT";
        OVS_CERTIFICATE = "ovs.certificate", "ovsdb-certificate", "OVERLAY_OVSDB_CERTIFICATE";
        OVS_PRIVATE_KEY = "ovs.private_key", "ovsdb-private-key", "OVERLAY_OVSDB_PRIVATE_KEY";
        API_SOCKET = "api.socket", "api-socket", "OVERLAY_API_SOCKET";
        METRICS_ADDRESS = "metrics.address", "metrics-address", "OVERLAY_METRICS_ADDRESS";
        LOG_FORMAT = "log.format", "log-format", "OVERLAY_LOG_FORMAT";
        LOG_LEVEL = "log.level", "log-level", "OVERLAY_LOG_LEVEL";
        HOST_TTL = "timers.host_ttl_secs", "host-ttl", "OVERLAY_HOST_TTL";
        LIVENESS_TTL = "timers.liveness_ttl_secs", "liveness-ttl", "OVERLAY_LIVENESS_TTL";
        RESYNC_INTERVAL = "timers.resync_interval_secs", "resync-interval", "OVERLAY_RESYNC_INTERVAL";
        DEFAULT_SUBNET_LEN = "tenants.default_subnet_len", "default-subnet-len", "OVERLAY_DEFAULT_SUBNET_LEN";
        GATEWAY_TRANSIT_CIDR = "gateway.transit_cidr", "gateway-transit-cidr", "OVERLAY_GATEWAY_TRANSIT_CIDR";
    }
}
