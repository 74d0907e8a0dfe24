//! Where an OVSDB server listens: `unix:PATH`, `tcp:HOST[:PORT]`, `ssl:HOST[:PORT]` (the
//! ovs-vsctl `--db` syntax). The grammar, connecting and TLS are `ovs-transport`'s, shared with
//! the OpenFlow client; this module names them for OVSDB and maps their errors into
//! [`RpcError`].

use ovs_transport::{ConnectError, ParseError};

use crate::error::RpcError;

/// A parsed OVSDB remote: [`Remote::Unix`], [`Remote::Tcp`] or [`Remote::Ssl`], parsed with
/// `str::parse` ([`DEFAULT_PORT`] when the port is left out), printed back by `Display`, and
/// opened with [`Remote::connect`] / [`Remote::connect_tls`].
pub type Remote = ovs_transport::OvsdbRemote;

/// The port of a `tcp:` or `ssl:` remote that names none (the IANA OVSDB port, as OVS uses).
pub const DEFAULT_PORT: u16 = ovs_transport::OVSDB_DEFAULT_PORT;

impl From<ParseError> for RpcError {
    fn from(e: ParseError) -> Self {
        RpcError::BadRemote { remote: e.input().to_owned(), reason: e.advice() }
    }
}

impl From<ConnectError> for RpcError {
    fn from(e: ConnectError) -> Self {
        let remote = e.target().to_owned();
        match e {
            ConnectError::Io { source, .. } => RpcError::Connect { remote, source },
            // The handshake's I/O error, worded as the handshake's, keeps it as its source.
            e @ ConnectError::Handshake { .. } => RpcError::Connect { remote, source: std::io::Error::other(e) },
            ConnectError::NoTlsSettings { .. } => RpcError::BadRemote {
                remote,
                reason: "ssl: remotes need a CA certificate, a certificate and a private key".into(),
            },
            ConnectError::Tls { source, .. } => RpcError::Tls { remote, source },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[test]
    fn transport_errors_keep_their_kind_and_source() {
        let e: RpcError = "db.sock".parse::<Remote>().unwrap_err().into();
        assert!(matches!(&e, RpcError::BadRemote { remote, .. } if remote == "db.sock"), "{e:?}");
        assert!(e.to_string().starts_with("bad OVSDB remote 'db.sock': no scheme; use unix:PATH"), "{e}");

        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e: RpcError = ConnectError::Io { target: "tcp:h:1".into(), source: refused }.into();
        assert!(
            matches!(&e, RpcError::Connect { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused)
        );

        let bad_ca = std::io::Error::from(std::io::ErrorKind::InvalidData);
        let e: RpcError = ConnectError::Handshake { target: "ssl:h:1".into(), source: bad_ca }.into();
        assert!(e.to_string().contains("cannot connect to OVSDB at ssl:h:1: TLS handshake failed"), "{e}");
        assert!(e.source().and_then(|s| s.source()).is_some(), "the handshake's error is kept: {e:?}");

        let e: RpcError = ConnectError::NoTlsSettings { target: "ssl:h:1".into(), noun: "OVSDB remote" }.into();
        assert!(matches!(e, RpcError::BadRemote { .. }), "{e:?}");
    }
}
