//! Where an OVSDB server listens: `unix:PATH`, `tcp:HOST:PORT`, `ssl:HOST:PORT` (the
//! ovs-vsctl `--db` syntax).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::RpcError;

/// A byte stream to a server. Any transport that reads and writes bytes fits, which is how a
/// TLS stream slots in without touching the JSON-RPC layer.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

/// A parsed OVSDB remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// `unix:PATH`
    Unix(PathBuf),
    /// `tcp:HOST:PORT` (IPv6 hosts in brackets: `tcp:[::1]:6640`)
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// `ssl:HOST:PORT`: TLS with a client certificate ([`crate::TlsSettings`]).
    Ssl {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
}

fn host_port(remote: &str, rest: &str) -> Result<(String, u16), RpcError> {
    let bad = |reason: &str| RpcError::BadRemote { remote: remote.to_owned(), reason: reason.to_owned() };
    let (host, port) = if let Some(stripped) = rest.strip_prefix('[') {
        let (h, p) = stripped.split_once("]:").ok_or_else(|| bad("want [IPV6]:PORT"))?;
        (h, p)
    } else {
        rest.rsplit_once(':').ok_or_else(|| bad("want HOST:PORT, e.g. tcp:127.0.0.1:6640"))?
    };
    if host.is_empty() {
        return Err(bad("the host is empty"));
    }
    let port = port.parse::<u16>().map_err(|_| bad("the port is not a number from 0 to 65535"))?;
    Ok((host.to_owned(), port))
}

impl FromStr for Remote {
    type Err = RpcError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(RpcError::BadRemote { remote: s.into(), reason: "the socket path is empty".into() });
            }
            return Ok(Remote::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("tcp:") {
            let (host, port) = host_port(s, rest)?;
            return Ok(Remote::Tcp { host, port });
        }
        if let Some(rest) = s.strip_prefix("ssl:") {
            let (host, port) = host_port(s, rest)?;
            return Ok(Remote::Ssl { host, port });
        }
        Err(RpcError::BadRemote {
            remote: s.into(),
            reason: "use unix:PATH or tcp:HOST:PORT (e.g. unix:/var/run/openvswitch/db.sock)".into(),
        })
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bracket = |h: &str| if h.contains(':') { format!("[{h}]") } else { h.to_owned() };
        match self {
            Remote::Unix(p) => write!(f, "unix:{}", p.display()),
            Remote::Tcp { host, port } => write!(f, "tcp:{}:{port}", bracket(host)),
            Remote::Ssl { host, port } => write!(f, "ssl:{}:{port}", bracket(host)),
        }
    }
}

impl Remote {
    /// Opens a byte stream to the server (`ssl:` needs [`Remote::connect_tls`]).
    pub async fn connect(&self) -> Result<Box<dyn Transport>, RpcError> {
        self.connect_tls(None).await
    }

    /// Opens a byte stream, with TLS settings for an `ssl:` remote.
    pub async fn connect_tls(&self, tls: Option<&crate::TlsSettings>) -> Result<Box<dyn Transport>, RpcError> {
        let connect_err = |source| RpcError::Connect { remote: self.to_string(), source };
        match self {
            Remote::Unix(path) => {
                let s = tokio::net::UnixStream::connect(path).await.map_err(connect_err)?;
                Ok(Box::new(s))
            }
            Remote::Tcp { host, port } => {
                let s = tokio::net::TcpStream::connect((host.as_str(), *port)).await.map_err(connect_err)?;
                // Requests are small and latency-bound; Nagle only delays them.
                s.set_nodelay(true).map_err(connect_err)?;
                Ok(Box::new(s))
            }
            Remote::Ssl { host, port } => {
                let tls = tls.ok_or_else(|| RpcError::BadRemote {
                    remote: self.to_string(),
                    reason: "ssl: remotes need a CA certificate, a certificate and a private key".into(),
                })?;
                let config = tls.client_config()?;
                let tcp = tokio::net::TcpStream::connect((host.as_str(), *port)).await.map_err(connect_err)?;
                tcp.set_nodelay(true).map_err(connect_err)?;
                let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| RpcError::BadRemote {
                    remote: self.to_string(),
                    reason: format!("'{host}' is not a host name or address: {e}"),
                })?;
                let stream = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| {
                    RpcError::Connect {
                        remote: self.to_string(),
                        source: std::io::Error::other(format!("TLS handshake failed: {e}")),
                    }
                })?;
                Ok(Box::new(stream))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in ["unix:/var/run/openvswitch/db.sock", "tcp:127.0.0.1:6640", "tcp:[::1]:6640", "ssl:ovs.example:6641"] {
            let r: Remote = s.parse().unwrap();
            assert_eq!(r.to_string(), s);
        }
        assert_eq!("tcp:[::1]:6640".parse::<Remote>().unwrap(), Remote::Tcp { host: "::1".into(), port: 6640 });
    }

    #[test]
    fn rejects_bad_remotes_with_advice() {
        for s in ["", "db.sock", "unix:", "tcp:127.0.0.1", "tcp::6640", "tcp:h:99999", "tcp:[::1:6640"] {
            let e = s.parse::<Remote>().unwrap_err().to_string();
            assert!(e.contains("bad OVSDB remote"), "{s}: {e}");
        }
    }
}
