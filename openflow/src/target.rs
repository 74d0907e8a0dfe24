//! Where a switch listens: `unix:PATH` (a bridge's management socket), `tcp:HOST:PORT`,
//! `ssl:HOST:PORT` (ovs-ofctl's syntax), and the path of a bridge's management socket.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ovsdb_client::{TlsSettings, Transport};

use crate::client_error::ClientError;

/// Where ovs-vswitchd puts `<bridge>.mgmt` unless `OVS_RUNDIR` says otherwise.
pub const DEFAULT_OVS_RUNDIR: &str = "/var/run/openvswitch";

/// The management socket ovs-vswitchd opens for `bridge`: `<rundir>/<bridge>.mgmt`
/// (`rundir` `None`: [`DEFAULT_OVS_RUNDIR`]).
pub fn mgmt_socket(rundir: Option<&Path>, bridge: &str) -> PathBuf {
    rundir.unwrap_or(Path::new(DEFAULT_OVS_RUNDIR)).join(format!("{bridge}.mgmt"))
}

/// A parsed OpenFlow target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `unix:PATH`.
    Unix(PathBuf),
    /// `tcp:HOST:PORT` (IPv6 in brackets).
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// `ssl:HOST:PORT`: TLS with a client certificate (see [`crate::ConnectionOptions::tls`]).
    Ssl {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
}

impl Target {
    /// The management socket of `bridge` under `rundir` ([`mgmt_socket`]).
    pub fn mgmt(rundir: Option<&Path>, bridge: &str) -> Target {
        Target::Unix(mgmt_socket(rundir, bridge))
    }

    /// Opens a byte stream (TLS for `ssl:`, which needs `tls`).
    pub(crate) async fn connect(&self, tls: Option<&TlsSettings>) -> Result<Box<dyn Transport>, ClientError> {
        let err = |source| ClientError::Connect { target: self.to_string(), source };
        match self {
            Target::Unix(path) => Ok(Box::new(tokio::net::UnixStream::connect(path).await.map_err(err)?)),
            Target::Tcp { host, port } => {
                let s = tokio::net::TcpStream::connect((host.as_str(), *port)).await.map_err(err)?;
                // Flow_mods are small and a reply is awaited: Nagle only adds delay.
                s.set_nodelay(true).map_err(err)?;
                Ok(Box::new(s))
            }
            Target::Ssl { host, port } => {
                let bad = |reason: String| ClientError::BadTarget { target: self.to_string(), reason };
                let tls =
                    tls.ok_or_else(|| bad("ssl: targets need a CA certificate, a certificate and a key".into()))?;
                // The same verification as the OVSDB client: by CA, not by host name, as OVS does.
                let config = tls.client_config().map_err(|e| bad(e.to_string()))?;
                let tcp = tokio::net::TcpStream::connect((host.as_str(), *port)).await.map_err(err)?;
                tcp.set_nodelay(true).map_err(err)?;
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| bad(format!("'{host}' is not a host name or address: {e}")))?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| err(std::io::Error::other(format!("TLS handshake failed: {e}"))))?;
                Ok(Box::new(stream))
            }
        }
    }
}

fn host_port(target: &str, rest: &str) -> Result<(String, u16), ClientError> {
    let bad = |reason: &str| ClientError::BadTarget { target: target.to_owned(), reason: reason.to_owned() };
    let (host, port) = match rest.strip_prefix('[') {
        Some(r) => r.split_once("]:").ok_or_else(|| bad("want [IPV6]:PORT"))?,
        None => rest.rsplit_once(':').ok_or_else(|| bad("want HOST:PORT, e.g. tcp:127.0.0.1:6653"))?,
    };
    if host.is_empty() {
        return Err(bad("the host is empty"));
    }
    let port = port.parse::<u16>().map_err(|_| bad("the port is not a number from 0 to 65535"))?;
    Ok((host.to_owned(), port))
}

impl FromStr for Target {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(ClientError::BadTarget { target: s.into(), reason: "the socket path is empty".into() });
            }
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("tcp:") {
            let (host, port) = host_port(s, rest)?;
            return Ok(Target::Tcp { host, port });
        }
        if let Some(rest) = s.strip_prefix("ssl:") {
            let (host, port) = host_port(s, rest)?;
            return Ok(Target::Ssl { host, port });
        }
        Err(ClientError::BadTarget {
            target: s.into(),
            reason: "use unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT (e.g. unix:/var/run/openvswitch/br-tun.mgmt)".into(),
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bracket = |h: &str| if h.contains(':') { format!("[{h}]") } else { h.to_owned() };
        match self {
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
            Target::Tcp { host, port } => write!(f, "tcp:{}:{port}", bracket(host)),
            Target::Ssl { host, port } => write!(f, "ssl:{}:{port}", bracket(host)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in ["unix:/run/ovs/br-tun.mgmt", "tcp:127.0.0.1:6653", "tcp:[::1]:6653", "ssl:sw.example:6653"] {
            assert_eq!(s.parse::<Target>().unwrap().to_string(), s);
        }
        for s in ["", "br-tun.mgmt", "unix:", "tcp:127.0.0.1", "tcp::1", "tcp:h:70000", "ssl:[::1:1"] {
            let e = s.parse::<Target>().unwrap_err();
            assert!(e.to_string().contains("bad OpenFlow target"), "{s}: {e}");
        }
    }

    #[test]
    fn mgmt_path() {
        assert_eq!(mgmt_socket(None, "br-tun"), PathBuf::from("/var/run/openvswitch/br-tun.mgmt"));
        assert_eq!(Target::mgmt(Some(Path::new("/tmp/x")), "br0").to_string(), "unix:/tmp/x/br0.mgmt");
    }
}
