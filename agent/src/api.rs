//! The local API: HTTP/1.1 + JSON on a unix socket (mode 0600, so only root can use it), and
//! the client the CLI uses to call it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as JsonValue};

use crate::daemon::Agent;
use crate::registry::RegistryError;

/// The body of `POST /v1/tenants`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateTenant {
    /// Tenant name.
    pub name: String,
    /// VNI (1..=16777215).
    pub vni: u32,
    /// The tenant's CIDR.
    pub cidr: String,
    /// `vxlan` or `gre`.
    #[serde(default)]
    pub tunnel: Option<String>,
    /// Per-host subnet length.
    #[serde(default)]
    pub subnet_len: Option<u8>,
}

/// An API error: a status and a message that says what to do.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let status = match &e {
            RegistryError::Conflict(_) => StatusCode::CONFLICT,
            RegistryError::NotFound(_) => StatusCode::NOT_FOUND,
            RegistryError::Etcd { .. } => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

fn bad_request(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, e.to_string())
}

async fn create_tenant(State(agent): State<Arc<Agent>>, Json(req): Json<CreateTenant>) -> Result<Response, ApiError> {
    let vni = overlay::model::Vni::new(req.vni).map_err(bad_request)?;
    let cidr: ipnet::IpNet = req
        .cidr
        .parse()
        .map_err(|_| bad_request(format!("'{}' is not a CIDR: use ADDRESS/LEN, e.g. 198.19.0.0/16", req.cidr)))?;
    let tunnel = match req.tunnel.as_deref() {
        None => overlay::model::TunnelType::Vxlan,
        Some(t) => t.parse().map_err(bad_request)?,
    };
    let subnet_len = req.subnet_len.unwrap_or_else(|| {
        let want = agent.config.default_subnet_len;
        if matches!(cidr, ipnet::IpNet::V4(_)) && want >= cidr.prefix_len() {
            want
        } else {
            overlay::model::default_subnet_len(&cidr)
        }
    });
    let tenant = overlay::model::Tenant::new(&req.name, vni, cidr, tunnel, subnet_len).map_err(bad_request)?;
    agent.registry.create_tenant(&tenant).await?;
    tracing::info!(tenant = tenant.name(), vni = vni.get(), %cidr, %tunnel, "tenant created");
    Ok((StatusCode::CREATED, Json(tenant_json(&tenant))).into_response())
}

/// The JSON form of a tenant in API answers.
pub fn tenant_json(t: &overlay::model::Tenant) -> JsonValue {
    json!({
        "name": t.name(), "vni": t.vni().get(), "cidr": t.cidr().to_string(), "tunnel": t.tunnel().as_str(),
        "subnet_len": t.subnet_len(), "gateway": t.gateway().to_string(),
    })
}

async fn list_tenants(State(agent): State<Arc<Agent>>) -> Json<JsonValue> {
    let cache = agent.cluster.borrow().clone();
    Json(JsonValue::Array(cache.tenants.values().map(tenant_json).collect()))
}

async fn delete_tenant(
    State(agent): State<Arc<Agent>>,
    UrlPath(name): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    overlay::model::validate_tenant_name(&name).map_err(bad_request)?;
    agent.registry.delete_tenant(&name).await?;
    tracing::info!(tenant = %name, "tenant deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn join_tenant(
    State(agent): State<Arc<Agent>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<JsonValue>, ApiError> {
    overlay::model::validate_tenant_name(&name).map_err(bad_request)?;
    let lease = agent.join_tenant(&name).await?;
    Ok(Json(json!({"tenant": lease.tenant, "subnet": lease.subnet.to_string(), "host": lease.host})))
}

impl From<crate::plug::PlugError> for ApiError {
    fn from(e: crate::plug::PlugError) -> Self {
        use crate::plug::PlugError as P;
        match e {
            P::BadRequest(m) => ApiError(StatusCode::BAD_REQUEST, m),
            P::Conflict(m) => ApiError(StatusCode::CONFLICT, m),
            P::Registry(r) => r.into(),
            P::Plumbing(m) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, m),
        }
    }
}

async fn plug(
    State(agent): State<Arc<Agent>>,
    Json(req): Json<crate::plug::PlugRequest>,
) -> Result<Json<JsonValue>, ApiError> {
    let result = agent.plug(req).await?;
    Ok(Json(serde_json::to_value(result).expect("result serializes")))
}

async fn unplug(State(agent): State<Arc<Agent>>, UrlPath(id): UrlPath<String>) -> Result<Json<JsonValue>, ApiError> {
    let was_plugged = agent.unplug(&id).await?;
    Ok(Json(json!({"container_id": id, "was_plugged": was_plugged})))
}

async fn endpoints(State(agent): State<Arc<Agent>>) -> Result<Json<JsonValue>, ApiError> {
    let eps = agent.registry.endpoints_of(&agent.me.hostname).await?;
    Ok(Json(JsonValue::Array(
        eps.iter()
            .map(|e| {
                json!({"container_id": e.container_id, "tenant": e.tenant, "ip": e.ip.to_string(),
                       "mac": e.mac.to_string(), "port": e.port, "iface_id": e.iface_id})
            })
            .collect(),
    )))
}

async fn status(State(agent): State<Arc<Agent>>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], agent.status()).into_response()
}

/// Serves the API on `path` until the process ends. A stale socket from a dead agent is
/// replaced; a live one (another agent running) is an error.
pub async fn serve(agent: Arc<Agent>, path: PathBuf) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(&path).await.is_ok() {
            anyhow::bail!("another agent is already serving {}; stop it first or use --api-socket", path.display());
        }
        std::fs::remove_file(&path).with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let listener =
        tokio::net::UnixListener::bind(&path).with_context(|| format!("binding the API socket {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    // Root only: the API can create and delete tenants and plug containers.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/tenants", get(list_tenants).post(create_tenant))
        .route("/v1/tenants/{name}", axum::routing::delete(delete_tenant))
        .route("/v1/tenants/{name}/join", post(join_tenant))
        .route("/v1/endpoints", get(endpoints).post(plug))
        .route("/v1/endpoints/{id}", axum::routing::delete(unplug))
        .with_state(agent);
    tracing::info!(socket = %path.display(), "local API listening");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "local API stopped");
        }
    }))
}

/// Calls the local API: `method` on `path` with an optional JSON body. Returns the status and
/// the decoded JSON body (null when empty).
pub async fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<JsonValue>,
) -> anyhow::Result<(u16, JsonValue)> {
    let stream = tokio::net::UnixStream::connect(socket).await.with_context(|| {
        format!(
            "cannot reach the agent at {}: is `overlay-agent run` running (and are you root)? \
             Set --api-socket or OVERLAY_API_SOCKET if it listens elsewhere",
            socket.display()
        )
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .context("HTTP handshake with the agent")?;
    tokio::spawn(conn);
    let bytes = body.map(|b| serde_json::to_vec(&b).expect("JSON serializes")).unwrap_or_default();
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "overlay-agent")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .context("building the request")?;
    let resp = sender.send_request(req).await.context("calling the agent")?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.context("reading the agent's answer")?.to_bytes();
    let json = if body.is_empty() {
        JsonValue::Null
    } else {
        serde_json::from_slice(&body).context("decoding the agent's answer")?
    };
    Ok((status, json))
}
