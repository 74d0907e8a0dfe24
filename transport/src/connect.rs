//! Opening the byte stream an [`Endpoint`] names.

use tokio::io::{AsyncRead, AsyncWrite};

use crate::endpoint::Endpoint;
use crate::tls::{TlsError, TlsSettings};

/// A byte stream to a server. Any transport that reads and writes bytes fits, which is how a
/// TLS stream slots in without touching the protocol above it.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

/// Why no stream could be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The OS could not connect (nothing listening, no such socket, no route).
    #[error("cannot connect to {target}: {source}")]
    Io {
        /// The endpoint.
        target: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An `ssl:` endpoint without [`TlsSettings`].
    #[error("{target} is an ssl: {noun} and needs a CA certificate, a certificate and a private key")]
    NoTlsSettings {
        /// The endpoint.
        target: String,
        /// The protocol's word for it: `OVSDB remote`.
        noun: &'static str,
    },
    /// The TLS settings cannot be used for this endpoint.
    #[error("cannot use TLS for {target}: {source}")]
    Tls {
        /// The endpoint.
        target: String,
        /// What is wrong with the settings.
        #[source]
        source: TlsError,
    },
    /// The server was reached but the TLS handshake failed (its certificate is not signed by
    /// the CA, or it refused ours). The message leaves the endpoint to the caller's error.
    #[error("TLS handshake failed: {source}")]
    Handshake {
        /// The endpoint.
        target: String,
        /// The TLS error.
        #[source]
        source: std::io::Error,
    },
}

impl ConnectError {
    /// The endpoint that could not be reached, as written.
    pub fn target(&self) -> &str {
        match self {
            ConnectError::Io { target, .. }
            | ConnectError::NoTlsSettings { target, .. }
            | ConnectError::Tls { target, .. }
            | ConnectError::Handshake { target, .. } => target,
        }
    }
}

impl<const PROTOCOL: u8> Endpoint<PROTOCOL> {
    /// Opens a byte stream to the server (`ssl:` needs [`Endpoint::connect_tls`]).
    pub async fn connect(&self) -> Result<Box<dyn Transport>, ConnectError> {
        self.connect_tls(None).await
    }

    /// Opens a byte stream, with TLS settings for an `ssl:` endpoint.
    pub async fn connect_tls(&self, tls: Option<&TlsSettings>) -> Result<Box<dyn Transport>, ConnectError> {
        let io = |source| ConnectError::Io { target: self.to_string(), source };
        match self {
            Endpoint::Unix(path) => Ok(Box::new(tokio::net::UnixStream::connect(path).await.map_err(io)?)),
            Endpoint::Tcp { host, port } => {
                let s = tokio::net::TcpStream::connect((host.as_str(), *port)).await.map_err(io)?;
                // Requests are small and a reply is awaited: Nagle only delays them.
                s.set_nodelay(true).map_err(io)?;
                Ok(Box::new(s))
            }
            Endpoint::Ssl { host, port } => {
                let tls = tls.ok_or_else(|| ConnectError::NoTlsSettings {
                    target: self.to_string(),
                    noun: Self::GRAMMAR.noun,
                })?;
                let unusable = |source| ConnectError::Tls { target: self.to_string(), source };
                let config = tls.client_config().map_err(unusable)?;
                let tcp = tokio::net::TcpStream::connect((host.as_str(), *port)).await.map_err(io)?;
                tcp.set_nodelay(true).map_err(io)?;
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|source| unusable(TlsError::ServerName { host: host.clone(), source }))?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|source| ConnectError::Handshake { target: self.to_string(), source })?;
                Ok(Box::new(stream))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;
    use crate::endpoint::{OpenFlowTarget, OvsdbRemote};

    #[tokio::test]
    async fn a_missing_socket_is_an_os_error_naming_the_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let remote = OvsdbRemote::Unix(dir.path().join("db.sock"));
        let e = remote.connect().await.err().expect("nothing listens there");
        assert!(
            matches!(&e, ConnectError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
            "{e:?}"
        );
        assert_eq!(e.target(), remote.to_string());
    }

    // Neither case opens a socket: the settings are checked before anything is dialled.
    #[tokio::test]
    async fn ssl_without_usable_settings_says_what_is_missing() {
        let target: OpenFlowTarget = "ssl:198.18.0.1:6653".parse().unwrap();
        let e = target.connect().await.err().expect("no settings");
        assert!(matches!(e, ConnectError::NoTlsSettings { noun: "OpenFlow target", .. }), "{e:?}");
        assert!(e.to_string().contains("a CA certificate, a certificate and a private key"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let tls = TlsSettings {
            ca_cert: dir.path().join("nope.crt"),
            certificate: dir.path().join("me.crt"),
            private_key: dir.path().join("me.key"),
        };
        let e = target.connect_tls(Some(&tls)).await.err().expect("no such CA file");
        assert!(e.to_string().contains("CA certificate") && e.to_string().contains("nope.crt"), "{e}");
        let source = e.source().expect("the TLS error is kept");
        assert!(matches!(source.downcast_ref::<TlsError>(), Some(TlsError::Load { what: "CA certificate", .. })));
    }
}
