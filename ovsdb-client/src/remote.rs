//! Where an OVSDB server listens: `unix:PATH`, `tcp:HOST:PORT`, `ssl:HOST:PORT` (the
//! ovs-vsctl `--db` syntax). The one parser of it: the agent's configuration uses this one.

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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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

/// The port of a `tcp:` or `ssl:` remote that names none (the IANA OVSDB port, as OVS uses).
pub const DEFAULT_PORT: u16 = 6640;

/// `HOST[:PORT]` or `[IPV6][:PORT]`; why not, in words, when it is neither.
fn host_port(rest: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("missing ']' after the IPv6 address")?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or("expected ':PORT' after ']'")?),
        };
        (host, port)
    } else {
        match rest.split_once(':') {
            Some((_, p)) if p.contains(':') => return Err("IPv6 addresses go in brackets, like tcp:[::1]:6640".into()),
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err("the host is missing or malformed".into());
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(format!("port '{p}' is not 1..=65535")),
        },
    };
    Ok((host.to_owned(), port))
}

/// Why `s` is not a remote, in words (without the advice [`Remote::from_str`] adds).
fn parse(s: &str) -> Result<Remote, String> {
    let Some((scheme, rest)) = s.split_once(':') else {
        return Err("no scheme".into());
    };
    match scheme {
        "unix" if rest.is_empty() => Err("the socket path is empty".into()),
        "unix" => Ok(Remote::Unix(PathBuf::from(rest))),
        "tcp" => host_port(rest).map(|(host, port)| Remote::Tcp { host, port }),
        "ssl" => host_port(rest).map(|(host, port)| Remote::Ssl { host, port }),
        // Passive remotes make ovsdb-server the client; this client only dials out.
        "punix" | "ptcp" | "pssl" => Err("passive remotes are not supported".into()),
        _ => Err(format!("unknown scheme '{scheme}'")),
    }
}

impl FromStr for Remote {
    type Err = RpcError;

    /// OVS's active-remote syntax: `unix:PATH`, `tcp:HOST[:PORT]`, `ssl:HOST[:PORT]` (IPv6
    /// hosts in brackets; [`DEFAULT_PORT`] when the port is left out).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s).map_err(|why| RpcError::BadRemote {
            remote: s.into(),
            reason: format!(
                "{why}; use unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT (e.g. unix:/var/run/openvswitch/db.sock)"
            ),
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
        let cases = [
            ("", "no scheme"),
            ("db.sock", "no scheme"),
            ("unix:", "the socket path is empty"),
            ("tcp::6640", "the host is missing"),
            ("tcp:h:99999", "port '99999' is not 1..=65535"),
            ("tcp:h:0", "port '0' is not"),
            ("tcp:[::1:6640", "missing ']'"),
            ("tcp:::1:6640", "IPv6 addresses go in brackets"),
            ("ptcp:6640", "passive remotes are not supported"),
            ("http:h:80", "unknown scheme 'http'"),
        ];
        for (s, why) in cases {
            let e = s.parse::<Remote>().unwrap_err().to_string();
            assert!(e.contains("bad OVSDB remote") && e.contains(why) && e.contains("use unix:PATH"), "{s}: {e}");
        }
    }

    #[test]
    fn a_left_out_port_is_the_ovsdb_port() {
        assert_eq!("tcp:10.0.0.1".parse::<Remote>().unwrap(), Remote::Tcp { host: "10.0.0.1".into(), port: 6640 });
        assert_eq!("ssl:[::1]".parse::<Remote>().unwrap(), Remote::Ssl { host: "::1".into(), port: DEFAULT_PORT });
    }
}
