//! Where a switch listens: `unix:PATH` (a bridge's management socket), `tcp:HOST:PORT`,
//! `ssl:HOST:PORT` (ovs-ofctl's syntax). The grammar, connecting and TLS are `ovs-transport`'s,
//! shared with the OVSDB client; this module names them for OpenFlow and maps their errors into
//! [`ClientError`].

use ovs_transport::{ConnectError, ParseError};

use crate::client_error::ClientError;

pub use ovs_transport::{mgmt_socket, DEFAULT_OVS_RUNDIR};

/// A parsed OpenFlow target: [`Target::Unix`], [`Target::Tcp`] or [`Target::Ssl`] (the port
/// must be written), parsed with `str::parse`, printed back by `Display`;
/// [`Target::mgmt`] names a bridge's management socket.
pub type Target = ovs_transport::OpenFlowTarget;

impl From<ParseError> for ClientError {
    fn from(e: ParseError) -> Self {
        ClientError::BadTarget { target: e.input().to_owned(), reason: e.advice() }
    }
}

impl From<ConnectError> for ClientError {
    fn from(e: ConnectError) -> Self {
        let target = e.target().to_owned();
        match e {
            ConnectError::Io { source, .. } => ClientError::Connect { target, source },
            // The handshake's I/O error, worded as the handshake's, keeps it as its source.
            e @ ConnectError::Handshake { .. } => ClientError::Connect { target, source: std::io::Error::other(e) },
            ConnectError::NoTlsSettings { .. } => ClientError::BadTarget {
                target,
                reason: "ssl: targets need a CA certificate, a certificate and a private key".into(),
            },
            ConnectError::Tls { source, .. } => ClientError::Tls { target, source },
        }
    }
}
