//! Small value types of the resolved configuration.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;

use crate::DEFAULT_OVSDB_PORT;

/// The OVS datapath the agent's bridges are created with (`Bridge.datapath_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DatapathType {
    /// The kernel datapath, the production choice.
    #[default]
    System,
    /// The userspace datapath, for hosts where the kernel module cannot be loaded.
    Netdev,
}

impl DatapathType {
    /// The value OVSDB expects in `Bridge.datapath_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            DatapathType::System => "system",
            DatapathType::Netdev => "netdev",
        }
    }
}

impl fmt::Display for DatapathType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DatapathType {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "system" => Ok(DatapathType::System),
            "netdev" => Ok(DatapathType::Netdev),
            _ => Err(()),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogFormat {
    /// The config spelling: `text` or `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogFormat {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(()),
        }
    }
}

/// Where the agent reaches ovsdb-server, in OVS's active-remote syntax.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OvsdbRemote {
    /// `unix:PATH`: a Unix socket.
    Unix(PathBuf),
    /// `tcp:HOST[:PORT]`: plain TCP (IPv6 hosts in brackets, as OVS writes them).
    Tcp {
        /// Host name or IP address, without brackets.
        host: String,
        /// TCP port (6640 when the remote omits it, like OVS).
        port: u16,
    },
    /// `ssl:HOST[:PORT]`: TLS over TCP.
    Ssl {
        /// Host name or IP address, without brackets.
        host: String,
        /// TCP port (6640 when the remote omits it, like OVS).
        port: u16,
    },
}

impl FromStr for OvsdbRemote {
    /// Why the remote is invalid, e.g. "the port is missing".
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let Some((scheme, rest)) = s.split_once(':') else {
            return Err("no scheme".to_string());
        };
        match scheme {
            "unix" if rest.is_empty() => Err("the socket path is empty".to_string()),
            "unix" => Ok(OvsdbRemote::Unix(PathBuf::from(rest))),
            "tcp" | "ssl" => {
                let (host, port) = split_host_port(rest)?;
                Ok(if scheme == "tcp" { OvsdbRemote::Tcp { host, port } } else { OvsdbRemote::Ssl { host, port } })
            }
            // Passive remotes make ovsdb-server the client; the agent only dials out.
            "punix" | "ptcp" | "pssl" => Err("passive remotes are not supported".to_string()),
            _ => Err(format!("unknown scheme '{scheme}'")),
        }
    }
}

fn split_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| "missing ']' after the IPv6 address".to_string())?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(|| "expected ':PORT' after ']'".to_string())?),
        };
        (host, port)
    } else {
        match s.split_once(':') {
            Some((_, p)) if p.contains(':') => {
                return Err("IPv6 addresses go in brackets, like tcp:[::1]:6640".to_string())
            }
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err("the host is missing or malformed".to_string());
    }
    let port = match port {
        None => DEFAULT_OVSDB_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(format!("port '{p}' is not 1..=65535")),
        },
    };
    Ok((host.to_string(), port))
}

impl fmt::Display for OvsdbRemote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, host, port) = match self {
            OvsdbRemote::Unix(p) => return write!(f, "unix:{}", p.display()),
            OvsdbRemote::Tcp { host, port } => ("tcp", host, port),
            OvsdbRemote::Ssl { host, port } => ("ssl", host, port),
        };
        if host.contains(':') {
            write!(f, "{scheme}:[{host}]:{port}")
        } else {
            write!(f, "{scheme}:{host}:{port}")
        }
    }
}

/// A secret string (the etcd password) whose `Debug` output is redacted, so printing a config
/// or the flags for diagnostics never leaks it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for handing to the etcd client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}
