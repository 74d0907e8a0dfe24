//! Merging flags, file and defaults into a validated [`AgentConfig`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::agent_config::{
    AgentConfig, ClientIdentity, EtcdAuth, EtcdConfig, EtcdTls, LogConfig, OvsConfig, OvsdbTls, Timers,
};
use crate::check::{
    check_bridge, check_endpoint, check_hostname, check_log_level, check_mtu, check_socket_path, normalize_prefix,
    parse_metrics_address, parse_underlay_ip,
};
use crate::keys;
use crate::Key;
use crate::{
    ConfigError, DatapathType, FileConfig, LogFormat, Origin, OvsdbRemote, RunFlags, DEFAULT_API_SOCKET,
    DEFAULT_CONFIG_PATH, DEFAULT_ETCD_ENDPOINT, DEFAULT_ETCD_PREFIX, DEFAULT_GATEWAY_TRANSIT_CIDR,
    DEFAULT_HOST_TTL_SECS, DEFAULT_INT_BRIDGE, DEFAULT_LIVENESS_TTL_SECS, DEFAULT_LOG_LEVEL, DEFAULT_OVSDB_REMOTE,
    DEFAULT_OVS_RUNDIR, DEFAULT_RESYNC_INTERVAL_SECS, DEFAULT_STATE_DIR, DEFAULT_SUBNET_LEN, DEFAULT_TUN_BRIDGE,
};

/// etcd refuses lease TTLs above this (its `MaxLeaseTTL`).
const ETCD_MAX_LEASE_TTL_SECS: u64 = 9_000_000_000;

impl AgentConfig {
    /// Loads the configuration for `overlay-agent run`: reads the file named by `--config`
    /// (or the default path, which may be absent), reads the system hostname, and resolves.
    pub fn load(flags: &RunFlags) -> Result<AgentConfig, ConfigError> {
        let (path, explicit) = match &flags.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let file = FileConfig::read(&path, explicit)?;
        Self::resolve(flags, file, system_hostname())
    }

    /// Merges flags (already merged with the environment by clap), an optional parsed file and
    /// the system hostname, and validates the result. Pure, for tests.
    pub fn resolve(
        flags: &RunFlags,
        file: Option<FileConfig>,
        system_hostname: Option<String>,
    ) -> Result<AgentConfig, ConfigError> {
        let file_path = flags.config.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
        let r = Resolver { file_path: &file_path };
        let file = file.unwrap_or_default();
        let f = flags.clone();

        let hostname = match r.pick(keys::HOSTNAME, f.hostname, file.hostname) {
            Some(v) => Some(v),
            None => system_hostname.map(|h| (h, Origin::SystemHostname)),
        };
        let (hostname, origin) = hostname.ok_or_else(|| r.missing(keys::HOSTNAME))?;
        check_hostname(&hostname).map_err(|p| invalid(keys::HOSTNAME, &hostname, origin, p))?;

        let (ip, origin) =
            r.pick(keys::UNDERLAY_IP, f.underlay_ip, file.underlay_ip).ok_or_else(|| r.missing(keys::UNDERLAY_IP))?;
        let underlay_ip = parse_underlay_ip(&ip).map_err(|p| invalid(keys::UNDERLAY_IP, &ip, origin.clone(), p))?;

        let underlay_mtu = match r.pick(keys::UNDERLAY_MTU, f.underlay_mtu, file.underlay_mtu) {
            None => None,
            Some((mtu, origin)) => {
                Some(check_mtu(mtu, underlay_ip).map_err(|p| invalid(keys::UNDERLAY_MTU, mtu, origin, p))?)
            }
        };

        let host_netns = match r.pick(keys::HOST_NETNS, f.host_netns, file.host_netns) {
            Some((p, origin)) if p.as_os_str().is_empty() || p.is_relative() => {
                return Err(invalid(keys::HOST_NETNS, p.display(), origin, "must be an absolute path to a netns file"));
            }
            other => other.map(|(p, _)| p),
        };

        let etcd = r.etcd(flags, file.etcd)?;

        let (remote, origin) = r.or_default(keys::OVSDB, f.ovsdb, file.ovs.remote, DEFAULT_OVSDB_REMOTE.into());
        let remote = remote
            .parse::<OvsdbRemote>()
            .map_err(|e| invalid(keys::OVSDB, &remote, origin, format!("is invalid: {}", e.advice())))?;

        let (dp, origin) = r.or_default(keys::DATAPATH_TYPE, f.datapath_type, file.ovs.datapath_type, "system".into());
        let datapath_type = dp
            .parse::<DatapathType>()
            .map_err(|()| invalid(keys::DATAPATH_TYPE, &dp, origin, "is invalid: use system or netdev"))?;

        let (int_bridge, origin) =
            r.or_default(keys::INT_BRIDGE, f.int_bridge, file.ovs.int_bridge, DEFAULT_INT_BRIDGE.into());
        check_bridge(&int_bridge).map_err(|p| invalid(keys::INT_BRIDGE, &int_bridge, origin, p))?;
        let (tun_bridge, origin) =
            r.or_default(keys::TUN_BRIDGE, f.tun_bridge, file.ovs.tun_bridge, DEFAULT_TUN_BRIDGE.into());
        check_bridge(&tun_bridge).map_err(|p| invalid(keys::TUN_BRIDGE, &tun_bridge, origin.clone(), p))?;
        if tun_bridge == int_bridge {
            return Err(invalid(
                keys::TUN_BRIDGE,
                &tun_bridge,
                origin,
                "is the same as ovs.int_bridge: the two bridges must differ",
            ));
        }

        let (rundir, origin) =
            r.or_default(keys::OVS_RUNDIR, f.ovs_rundir.clone(), file.ovs.rundir, DEFAULT_OVS_RUNDIR.into());
        if rundir.as_os_str().is_empty() {
            return Err(invalid(keys::OVS_RUNDIR, "", origin, "is empty: give ovs-vswitchd's run directory"));
        }

        let ca = r.pick(keys::OVS_CA_CERT, f.ovsdb_ca_cert.clone(), file.ovs.ca_cert);
        let cert = r.pick(keys::OVS_CERTIFICATE, f.ovsdb_certificate.clone(), file.ovs.certificate);
        let key = r.pick(keys::OVS_PRIVATE_KEY, f.ovsdb_private_key.clone(), file.ovs.private_key);
        let ovs_tls = match (&remote, ca, cert, key) {
            (OvsdbRemote::Ssl { .. }, Some((ca_cert, _)), Some((certificate, _)), Some((private_key, _))) => {
                Some(OvsdbTls { ca_cert, certificate, private_key })
            }
            (OvsdbRemote::Ssl { .. }, ca, cert, key) => {
                let missing = [
                    (ca.is_none(), keys::OVS_CA_CERT),
                    (cert.is_none(), keys::OVS_CERTIFICATE),
                    (key.is_none(), keys::OVS_PRIVATE_KEY),
                ]
                .into_iter()
                .find(|(m, _)| *m)
                .map(|(_, k)| k)
                .expect("one is missing");
                return Err(invalid(
                    keys::OVSDB,
                    &remote,
                    Origin::Default,
                    format!(
                        "is an ssl: remote and needs ovs.ca_cert, ovs.certificate and ovs.private_key: set {}",
                        missing.name
                    ),
                ));
            }
            // Certificates named for a unix: or tcp: remote are not used (the example file
            // documents them next to the remote; a switch to ssl: needs no other edit).
            _ => None,
        };

        let (api_socket, origin) =
            r.or_default(keys::API_SOCKET, f.api_socket, file.api.socket, DEFAULT_API_SOCKET.into());
        check_socket_path(&api_socket).map_err(|p| invalid(keys::API_SOCKET, api_socket.display(), origin, p))?;

        let metrics_address = match r.pick(keys::METRICS_ADDRESS, f.metrics_address, file.metrics.address) {
            None => None,
            Some((addr, origin)) => {
                parse_metrics_address(&addr).map_err(|p| invalid(keys::METRICS_ADDRESS, &addr, origin, p))?
            }
        };

        let (format, origin) = r.or_default(keys::LOG_FORMAT, f.log_format, file.log.format, "text".into());
        let format = format
            .parse::<LogFormat>()
            .map_err(|()| invalid(keys::LOG_FORMAT, &format, origin, "is invalid: use text or json"))?;
        let (level, origin) = r.or_default(keys::LOG_LEVEL, f.log_level, file.log.level, DEFAULT_LOG_LEVEL.into());
        check_log_level(&level).map_err(|p| invalid(keys::LOG_LEVEL, &level, origin, p))?;

        let timers = Timers {
            host_ttl: r.seconds(
                keys::HOST_TTL,
                f.host_ttl,
                file.timers.host_ttl_secs,
                DEFAULT_HOST_TTL_SECS,
                10..=ETCD_MAX_LEASE_TTL_SECS,
            )?,
            liveness_ttl: r.seconds(
                keys::LIVENESS_TTL,
                f.liveness_ttl,
                file.timers.liveness_ttl_secs,
                DEFAULT_LIVENESS_TTL_SECS,
                2..=ETCD_MAX_LEASE_TTL_SECS,
            )?,
            // A day is plenty for a safety-net resync, and bounding it keeps timer arithmetic
            // far from Instant overflow.
            resync_interval: r.seconds(
                keys::RESYNC_INTERVAL,
                f.resync_interval,
                file.timers.resync_interval_secs,
                DEFAULT_RESYNC_INTERVAL_SECS,
                1..=86_400,
            )?,
        };

        let (default_subnet_len, origin) = r.or_default(
            keys::DEFAULT_SUBNET_LEN,
            f.default_subnet_len,
            file.tenants.default_subnet_len,
            DEFAULT_SUBNET_LEN,
        );
        // Shorter than /8 is no slice; longer than /30 leaves no address for a container
        // next to the network and broadcast addresses.
        if !(8..=30).contains(&default_subnet_len) {
            return Err(invalid(keys::DEFAULT_SUBNET_LEN, default_subnet_len, origin, "is out of range: use 8..=30"));
        }

        let (transit, origin) = r.or_default(
            keys::GATEWAY_TRANSIT_CIDR,
            f.gateway_transit_cidr.clone(),
            file.gateway.transit_cidr.clone(),
            DEFAULT_GATEWAY_TRANSIT_CIDR.to_owned(),
        );
        let gateway_transit_cidr =
            match transit.parse::<ipnet::IpNet>() {
                Ok(ipnet::IpNet::V4(v4)) if v4.prefix_len() <= 19 && v4.trunc() == v4 => ipnet::IpNet::V4(v4),
                _ => return Err(invalid(
                    keys::GATEWAY_TRANSIT_CIDR,
                    &transit,
                    origin,
                    "must be an IPv4 network of /19 or larger (two addresses per tenant VLAN), e.g. 169.254.64.0/19",
                )),
            };

        let (state_dir, origin) = r.or_default(keys::STATE_DIR, f.state_dir, file.state_dir, DEFAULT_STATE_DIR.into());
        if state_dir.as_os_str().is_empty() {
            return Err(invalid(keys::STATE_DIR, "", origin, "is empty: give a directory"));
        }

        Ok(AgentConfig {
            hostname,
            underlay_ip,
            underlay_mtu,
            host_netns,
            etcd,
            ovs: OvsConfig { remote, datapath_type, int_bridge, tun_bridge, rundir, tls: ovs_tls },
            api_socket,
            metrics_address,
            log: LogConfig { format, level },
            timers,
            default_subnet_len,
            gateway_transit_cidr,
            state_dir,
        })
    }

    /// A fully commented example config file documenting every key (`agent.example.toml`).
    pub fn example_toml() -> &'static str {
        include_str!("../agent.example.toml")
    }
}

/// The machine's hostname from `/proc/sys/kernel/hostname`, else `/etc/hostname`.
pub fn system_hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
}

struct Resolver<'a> {
    file_path: &'a Path,
}

impl Resolver<'_> {
    /// Flag (or env) over file, with where the winner came from.
    fn pick<T>(&self, key: Key, flag: Option<T>, file: Option<T>) -> Option<(T, Origin)> {
        match (flag, file) {
            (Some(v), _) => Some((v, Origin::Flag { flag: key.flag, env: key.env })),
            (None, Some(v)) => Some((v, Origin::File(self.file_path.to_path_buf()))),
            (None, None) => None,
        }
    }

    fn or_default<T>(&self, key: Key, flag: Option<T>, file: Option<T>, default: T) -> (T, Origin) {
        self.pick(key, flag, file).unwrap_or((default, Origin::Default))
    }

    fn missing(&self, key: Key) -> ConfigError {
        ConfigError::Missing { key: key.name, file: self.file_path.to_path_buf(), flag: key.flag, env: key.env }
    }

    fn unpaired(&self, key: Key, origin: Origin, partner: Key) -> ConfigError {
        ConfigError::Unpaired { key: key.name, origin, partner: partner.name, file: self.file_path.to_path_buf() }
    }

    fn seconds(
        &self,
        key: Key,
        flag: Option<u64>,
        file: Option<u64>,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        let (secs, origin) = self.or_default(key, flag, file, default);
        if !range.contains(&secs) {
            return Err(invalid(
                key,
                secs,
                origin,
                format!("is out of range: use {}..={} seconds", range.start(), range.end()),
            ));
        }
        Ok(Duration::from_secs(secs))
    }

    fn etcd(&self, f: &RunFlags, file: crate::EtcdFile) -> Result<EtcdConfig, ConfigError> {
        let (endpoints, ep_origin) = self.or_default(
            keys::ETCD_ENDPOINTS,
            f.etcd_endpoints.clone(),
            file.endpoints,
            vec![DEFAULT_ETCD_ENDPOINT.to_string()],
        );
        // Spaces after the commas of a flag value are a natural thing to type.
        // A trailing comma leaves an empty item; it means nothing, so drop it.
        let endpoints: Vec<String> = endpoints.iter().map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect();
        if endpoints.is_empty() {
            return Err(invalid(
                keys::ETCD_ENDPOINTS,
                "",
                ep_origin,
                "is empty: give at least one http://HOST:PORT or https://HOST:PORT",
            ));
        }
        for (i, ep) in endpoints.iter().enumerate() {
            check_endpoint(ep).map_err(|p| ConfigError::Invalid {
                key: format!("{}[{i}]", keys::ETCD_ENDPOINTS.name),
                value: ep.clone(),
                origin: ep_origin.clone(),
                problem: p,
            })?;
        }

        let (prefix, origin) =
            self.or_default(keys::ETCD_PREFIX, f.etcd_prefix.clone(), file.prefix, DEFAULT_ETCD_PREFIX.into());
        let prefix = normalize_prefix(&prefix).map_err(|p| invalid(keys::ETCD_PREFIX, &prefix, origin, p))?;

        let ca = self.pick(keys::ETCD_CA, f.etcd_ca.clone(), file.ca_file);
        let cert = self.pick(keys::ETCD_CERT, f.etcd_cert.clone(), file.cert_file);
        let key = self.pick(keys::ETCD_KEY, f.etcd_key.clone(), file.key_file);
        for (k, v) in [(keys::ETCD_CA, &ca), (keys::ETCD_CERT, &cert), (keys::ETCD_KEY, &key)] {
            if let Some((p, origin)) = v {
                if p.as_os_str().is_empty() {
                    return Err(invalid(k, "", origin.clone(), "is empty: give a file path"));
                }
            }
        }
        let identity = match (cert, key) {
            (Some((cert_file, _)), Some((key_file, _))) => Some(ClientIdentity { cert_file, key_file }),
            (Some((_, o)), None) => return Err(self.unpaired(keys::ETCD_CERT, o, keys::ETCD_KEY)),
            (None, Some((_, o))) => return Err(self.unpaired(keys::ETCD_KEY, o, keys::ETCD_CERT)),
            (None, None) => None,
        };
        let tls = match (ca, identity) {
            (None, None) => None,
            (ca, identity) => Some(EtcdTls { ca_file: ca.map(|(p, _)| p), identity }),
        };
        if let Some(tls) = &tls {
            // TLS settings with a plain-http endpoint would silently talk cleartext to it.
            let which = if tls.ca_file.is_some() { keys::ETCD_CA.name } else { keys::ETCD_CERT.name };
            if let Some((i, ep)) = endpoints.iter().enumerate().find(|(_, ep)| !ep.starts_with("https://")) {
                return Err(ConfigError::Invalid {
                    key: format!("{}[{i}]", keys::ETCD_ENDPOINTS.name),
                    value: ep.clone(),
                    origin: ep_origin,
                    problem: format!("is not https:// although {which} is set: use https://HOST:PORT"),
                });
            }
        }

        let user = self.pick(keys::ETCD_USERNAME, f.etcd_username.clone(), file.username);
        let password = self.pick(keys::ETCD_PASSWORD, f.etcd_password.clone(), file.password);
        let auth = match (user, password) {
            (Some((username, origin)), Some((password, _))) => {
                if username.is_empty() {
                    return Err(invalid(keys::ETCD_USERNAME, "", origin, "is empty"));
                }
                Some(EtcdAuth { username, password })
            }
            (Some((_, o)), None) => return Err(self.unpaired(keys::ETCD_USERNAME, o, keys::ETCD_PASSWORD)),
            (None, Some((_, o))) => return Err(self.unpaired(keys::ETCD_PASSWORD, o, keys::ETCD_USERNAME)),
            (None, None) => None,
        };

        Ok(EtcdConfig { endpoints, prefix, tls, auth })
    }
}

fn invalid(key: Key, value: impl std::fmt::Display, origin: Origin, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.name.to_string(), value: value.to_string(), origin, problem: problem.into() }
}
