//! A typed client of the agent's local API: HTTP/1.1 over its unix socket.

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::{
    CreateTenant, EndpointInfo, ErrorBody, JoinResult, PlugRequest, PlugResult, ReleaseResult, Reservation,
    ReserveAddress, SetVmUuid, Status, TenantInfo, UnplugResult,
};

/// Why a call to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers on the socket.
    #[error(
        "cannot reach the agent at {socket}: is `overlay-agent run` running (and are you root)? \
         Set --api-socket or OVERLAY_API_SOCKET if it listens elsewhere"
    )]
    Unreachable {
        /// The socket tried.
        socket: PathBuf,
        /// The connect error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange broke off.
    #[error("talking to the agent at {socket} failed")]
    Http {
        /// The socket.
        socket: PathBuf,
        /// What hyper reported.
        #[source]
        source: hyper::Error,
    },
    /// The agent refused the request; `message` says why and what to do.
    #[error("{message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The agent's explanation.
        message: String,
    },
    /// The answer is not what this client expects (an agent of another version?).
    #[error("cannot decode the agent's answer to {what}: is the agent the same version as this command?")]
    Decode {
        /// The request.
        what: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    /// The HTTP status the agent answered with, for a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the call may succeed if made again unchanged: the agent was not there, the
    /// connection broke off (every call is idempotent, so repeating one whose answer was lost
    /// is safe), or the agent said to try again (503: still registering, etcd unreachable).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } | ClientError::Http { .. } => true,
            ClientError::Refused { status, .. } => *status == 503,
            ClientError::Decode { .. } => false,
        }
    }
}

/// The agent's local API, reached through `socket`. Every call opens its own connection: the
/// CLI makes one call, the plugins a few per container.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

/// One URL path segment, percent-encoded: a name like `../hosts` must stay one segment and
/// reach the agent's own validation, not be resolved as a path.
pub fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Client {
    /// A client of the agent listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client { socket: socket.into() }
    }

    /// The socket this client calls.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// This host, its peers, tenants, tunnels and endpoints.
    pub async fn status(&self) -> Result<Status, ClientError> {
        self.call("GET", "/v1/status", None::<&()>).await
    }

    /// Every tenant.
    pub async fn tenants(&self) -> Result<Vec<TenantInfo>, ClientError> {
        self.call("GET", "/v1/tenants", None::<&()>).await
    }

    /// Creates a tenant (cluster-wide).
    pub async fn create_tenant(&self, req: &CreateTenant) -> Result<TenantInfo, ClientError> {
        self.call("POST", "/v1/tenants", Some(req)).await
    }

    /// Deletes a tenant; refused while it has endpoints.
    pub async fn delete_tenant(&self, name: &str) -> Result<(), ClientError> {
        self.call_empty("DELETE", &format!("/v1/tenants/{}", path_segment(name))).await
    }

    /// Makes this host take part in a tenant now.
    pub async fn join_tenant(&self, name: &str) -> Result<JoinResult, ClientError> {
        self.call("POST", &format!("/v1/tenants/{}/join", path_segment(name)), None::<&()>).await
    }

    /// Plugs a container interface.
    pub async fn plug(&self, req: &PlugRequest) -> Result<PlugResult, ClientError> {
        self.call("POST", "/v1/endpoints", Some(req)).await
    }

    /// Unplugs one interface of a container, or all of them when `ifname` is `None`.
    pub async fn unplug(&self, container_id: &str, ifname: Option<&str>) -> Result<UnplugResult, ClientError> {
        let mut path = format!("/v1/endpoints/{}", path_segment(container_id));
        if let Some(i) = ifname {
            path.push_str(&format!("?ifname={}", path_segment(i)));
        }
        self.call("DELETE", &path, None::<&()>).await
    }

    /// This host's endpoints.
    pub async fn endpoints(&self) -> Result<Vec<EndpointInfo>, ClientError> {
        self.call("GET", "/v1/endpoints", None::<&()>).await
    }

    /// Checks, changing nothing, that a container interface is plugged as `req` says: its
    /// record, port and veth, and inside the container its MAC, MTU, address and default route.
    /// Answers what a plug answered; a refusal says what differs (404: nothing is plugged).
    pub async fn check(&self, req: &PlugRequest) -> Result<PlugResult, ClientError> {
        self.call("POST", "/v1/endpoints/check", Some(req)).await
    }

    /// Sets the `vm-uuid` of a plugged interface's port (`ifname` default: eth0).
    pub async fn set_vm_uuid(
        &self,
        container_id: &str,
        ifname: Option<&str>,
        vm_uuid: &str,
    ) -> Result<(), ClientError> {
        let mut path = format!("/v1/endpoints/{}/vm-uuid", path_segment(container_id));
        if let Some(i) = ifname {
            path.push_str(&format!("?ifname={}", path_segment(i)));
        }
        self.exchange("PUT", &path, Some(&SetVmUuid { vm_uuid: vm_uuid.to_owned() })).await.map(drop)
    }

    /// Reserves an address of `tenant` on this host for a plug to take over
    /// ([`PlugRequest::reserved`]).
    pub async fn reserve_address(&self, tenant: &str, req: &ReserveAddress) -> Result<Reservation, ClientError> {
        self.call("POST", &format!("/v1/tenants/{}/addresses", path_segment(tenant)), Some(req)).await
    }

    /// Releases a reservation of `ip` that no plug took over.
    pub async fn release_address(&self, tenant: &str, ip: &str) -> Result<ReleaseResult, ClientError> {
        let path = format!("/v1/tenants/{}/addresses/{}", path_segment(tenant), path_segment(ip));
        self.call("DELETE", &path, None::<&()>).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let bytes = self.exchange(method, path, body).await?;
        serde_json::from_slice(&bytes)
            .map_err(|source| ClientError::Decode { what: format!("{method} {path}"), source })
    }

    async fn call_empty(&self, method: &str, path: &str) -> Result<(), ClientError> {
        self.exchange(method, path, None::<&()>).await.map(drop)
    }

    /// Sends one request and returns the body of a successful answer.
    async fn exchange(&self, method: &str, path: &str, body: Option<&impl Serialize>) -> Result<Bytes, ClientError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ClientError::Unreachable { socket: self.socket.clone(), source })?;
        let http = |source| ClientError::Http { socket: self.socket.clone(), source };
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(http)?;
        tokio::spawn(conn);
        let bytes = body.map(|b| serde_json::to_vec(b).expect("request types serialize")).unwrap_or_default();
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "overlay-agent")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .expect("method and path are valid");
        let resp = sender.send_request(req).await.map_err(http)?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(http)?.to_bytes();
        if status >= 400 {
            let message = match serde_json::from_slice::<ErrorBody>(&body) {
                Ok(e) => e.error,
                Err(_) => format!(
                    "the agent answered HTTP {status} to {method} {path}: {}",
                    String::from_utf8_lossy(&body).trim()
                ),
            };
            return Err(ClientError::Refused { status, message });
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_stay_one_segment() {
        assert_eq!(path_segment("red-1_a~"), "red-1_a~");
        assert_eq!(path_segment("../hosts"), "%2E%2E%2Fhosts");
        assert_eq!(path_segment("a b"), "a%20b");
    }

    #[tokio::test]
    async fn a_missing_socket_says_how_to_reach_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let err = Client::new(dir.path().join("none.sock")).status().await.unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }));
        assert!(err.to_string().contains("is `overlay-agent run` running"), "{err}");
    }

    /// A one-request HTTP server on a unix socket answering `status` with `body`.
    async fn answer_once(dir: &Path, status: &str, body: &str) -> PathBuf {
        let path = dir.join("api.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let reply = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await;
            s.write_all(reply.as_bytes()).await.unwrap();
        });
        path
    }

    #[tokio::test]
    async fn a_refusal_carries_the_agents_message_and_status() {
        let dir = tempfile::tempdir().unwrap();
        let socket =
            answer_once(dir.path(), "409 Conflict", r#"{"error":"address in use: choose another --ip"}"#).await;
        let err = Client::new(socket).delete_tenant("red").await.unwrap_err();
        assert_eq!(err.status(), Some(409));
        assert_eq!(err.to_string(), "address in use: choose another --ip");
    }

    #[tokio::test]
    async fn an_answer_of_another_shape_is_a_decode_error_naming_the_request() {
        let dir = tempfile::tempdir().unwrap();
        let socket = answer_once(dir.path(), "200 OK", r#"{"unexpected":true}"#).await;
        let err = Client::new(socket).endpoints().await.unwrap_err();
        assert!(matches!(err, ClientError::Decode { .. }));
        assert!(err.to_string().contains("GET /v1/endpoints"), "{err}");
    }
}
