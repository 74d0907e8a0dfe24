//! `ssl:` endpoints: TLS with a client certificate, verified the way OVS verifies peers.
//!
//! OVS authenticates both ends by their CA (`--ca-cert`), not by host name: certificates made
//! with `ovs-pki` carry no subjectAltName, and `ssl:IP:PORT` remotes name no host. So the server
//! chain is checked against the configured CA with the usual web-PKI rules, except that a name
//! mismatch is accepted — exactly what ovs-vsctl and ovn-controller accept.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error as RustlsError, SignatureScheme};

/// TLS settings that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file is missing, unreadable or not what it should be (PEM of the right kind, a key
    /// that goes with the certificate).
    #[error("cannot load the {what} {}: {source}", path.display())]
    Load {
        /// What the file should hold: `CA certificate`, `certificate`, `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it cannot be used.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The endpoint's host cannot be a TLS server name.
    #[error("'{host}' is not a host name or address: {source}")]
    ServerName {
        /// The host.
        host: String,
        /// Why.
        #[source]
        source: rustls::pki_types::InvalidDnsNameError,
    },
}

/// The files an `ssl:` endpoint needs, as ovs-vsctl's `--private-key`, `--certificate` and
/// `--ca-cert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// CA certificate(s) (PEM) that signed the server's certificate.
    pub ca_cert: PathBuf,
    /// This client's certificate (PEM).
    pub certificate: PathBuf,
    /// This client's private key (PEM).
    pub private_key: PathBuf,
}

fn bad(path: &Path, what: &'static str, e: impl std::error::Error + Send + Sync + 'static) -> TlsError {
    TlsError::Load { what, path: path.to_owned(), source: Box::new(e) }
}

#[derive(Debug)]
struct CaOnlyVerifier(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for CaOnlyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, RustlsError> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(RustlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

impl TlsSettings {
    /// A rustls client configuration from the files (read now, so a wrong path is reported
    /// with the file's name).
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        let cas = CertificateDer::pem_file_iter(&self.ca_cert).map_err(|e| bad(&self.ca_cert, "CA certificate", e))?;
        for ca in cas {
            roots
                .add(ca.map_err(|e| bad(&self.ca_cert, "CA certificate", e))?)
                .map_err(|e| bad(&self.ca_cert, "CA certificate", e))?;
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.certificate)
            .map_err(|e| bad(&self.certificate, "certificate", e))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad(&self.certificate, "certificate", e))?;
        let key =
            PrivateKeyDer::from_pem_file(&self.private_key).map_err(|e| bad(&self.private_key, "private key", e))?;
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| bad(&self.ca_cert, "CA certificate", e))?;
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(&self.ca_cert, "TLS setup", e))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CaOnlyVerifier(webpki)))
            .with_client_auth_cert(chain, key)
            .map_err(|e| bad(&self.certificate, "certificate/key pair", e))?;
        Ok(Arc::new(config))
    }
}
