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
