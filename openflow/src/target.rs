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

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[test]
    fn transport_errors_keep_their_kind_and_source() {
        let e: ClientError = "tcp:127.0.0.1".parse::<Target>().unwrap_err().into();
        assert!(matches!(&e, ClientError::BadTarget { target, .. } if target == "tcp:127.0.0.1"), "{e:?}");
        assert!(e.to_string().starts_with("bad OpenFlow target 'tcp:127.0.0.1': the port is missing"), "{e}");

        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e: ClientError = ConnectError::Io { target: "tcp:h:1".into(), source: refused }.into();
        assert!(
            matches!(&e, ClientError::Connect { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused)
        );

        let bad_ca = std::io::Error::from(std::io::ErrorKind::InvalidData);
        let e: ClientError = ConnectError::Handshake { target: "ssl:h:1".into(), source: bad_ca }.into();
        assert!(e.to_string().contains("cannot connect to the switch at ssl:h:1: TLS handshake failed"), "{e}");
        assert!(e.source().and_then(|s| s.source()).is_some(), "the handshake's error is kept: {e:?}");

        let e: ClientError = ConnectError::NoTlsSettings { target: "ssl:h:1".into(), noun: "OpenFlow target" }.into();
        assert!(matches!(e, ClientError::BadTarget { .. }), "{e:?}");
    }
}
