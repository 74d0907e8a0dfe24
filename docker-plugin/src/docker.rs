//! The few calls this driver makes to dockerd itself (its Engine API over its unix socket):
//! libnetwork tells a driver a network's id in every call but its options only when the
//! network is created, so the tenant of a network is read back from Docker, which keeps it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use serde::Deserialize;

/// Why a call to dockerd failed.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// Nothing answers on the socket.
    #[error("cannot reach dockerd at {}: set --docker-host to its API socket", socket.display())]
    Unreachable {
        /// The socket tried.
        socket: PathBuf,
        /// The connect error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange broke off.
    #[error("talking to dockerd at {} failed", socket.display())]
    Http {
        /// The socket.
        socket: PathBuf,
        /// What hyper reported.
        #[source]
        source: hyper::Error,
    },
    /// dockerd answered with an error.
    #[error("dockerd answered {status} to {what}: {message}")]
    Refused {
        /// The request.
        what: String,
        /// The HTTP status.
        status: u16,
        /// dockerd's message.
        message: String,
    },
    /// The answer is not what this driver expects.
    #[error("cannot decode dockerd's answer to {what}")]
    Decode {
        /// The request.
        what: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
}

impl DockerError {
    /// Whether dockerd said the thing asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, DockerError::Refused { status: 404, .. })
    }
}

/// A network as `GET /networks/{id}` shows it (the fields this driver reads).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Network {
    /// Its name.
    pub name: String,
    /// Its IPAM driver and that driver's options (`--ipam-opt`).
    #[serde(rename = "IPAM")]
    pub ipam: Ipam,
    /// The containers on it (by container id) with their endpoints.
    pub containers: Option<BTreeMap<String, Attached>>,
}

/// A container attached to a network, as the network shows it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Attached {
    /// The container's endpoint on the network.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

/// A network's IPAM settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Ipam {
    /// The IPAM driver's name.
    pub driver: String,
    /// `--ipam-opt` options.
    pub options: Option<BTreeMap<String, String>>,
}

/// A client of one dockerd's API socket.
#[derive(Debug, Clone)]
pub struct Docker {
    socket: PathBuf,
}

impl Docker {
    /// A client of `host`: `unix:///path` or a plain path.
    pub fn new(host: &str) -> Self {
        Docker { socket: PathBuf::from(host.strip_prefix("unix://").unwrap_or(host)) }
    }

    /// The socket it calls.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The network `id`.
    pub async fn network(&self, id: &str) -> Result<Network, DockerError> {
        let what = format!("GET /networks/{id}");
        let body = self.get(&format!("/networks/{id}"), &what).await?;
        serde_json::from_slice(&body).map_err(|source| DockerError::Decode { what, source })
    }

    async fn get(&self, path: &str, what: &str) -> Result<Bytes, DockerError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| DockerError::Unreachable { socket: self.socket.clone(), source })?;
        let http = |source| DockerError::Http { socket: self.socket.clone(), source };
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(http)?;
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method("GET")
            .uri(path)
            .header("host", "docker")
            .body(Empty::<Bytes>::new())
            .expect("method and path are valid");
        let resp = sender.send_request(req).await.map_err(http)?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(http)?.to_bytes();
        if status >= 400 {
            #[derive(Deserialize)]
            struct Message {
                message: String,
            }
            let message = serde_json::from_slice::<Message>(&body)
                .map(|m| m.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).trim().to_owned());
            return Err(DockerError::Refused { what: what.to_owned(), status, message });
        }
        Ok(body)
    }
}
