//! The local API: HTTP/1.1 + JSON on a unix socket (mode 0600, so only root can use it). Its
//! types and client are in the `overlay-api` crate.

use std::path::PathBuf;
use std::sync::Arc;

use crate::plug::Switch;
use anyhow::Context;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use overlay_api::{
    CreateTenant, EndpointInfo, ErrorBody, JoinResult, PlugRequest, PlugResult, ReleaseResult, Reservation,
    ReserveAddress, SetVmUuid, TenantInfo, UnplugResult,
};

use crate::agent::Agent;
use crate::plug::PlugError;
use crate::registry::RegistryError;
use crate::status::{endpoint_info, status_json, tenant_info};

/// An API error: a status and a message that says what to do.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let status = match &e {
            RegistryError::Conflict(_) | RegistryError::HostConflict(_) | RegistryError::WaitForLiveness(_) => {
                StatusCode::CONFLICT
            }
            RegistryError::NotFound(_) => StatusCode::NOT_FOUND,
            RegistryError::Etcd { .. } => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

impl From<PlugError> for ApiError {
    fn from(e: PlugError) -> Self {
        match e {
            PlugError::BadRequest(m) => ApiError(StatusCode::BAD_REQUEST, m),
            PlugError::Conflict(m) => ApiError(StatusCode::CONFLICT, m),
            PlugError::NotFound(m) => ApiError(StatusCode::NOT_FOUND, m),
            PlugError::Unavailable(m) => ApiError(StatusCode::SERVICE_UNAVAILABLE, m),
            PlugError::Registry(r) => r.into(),
            e @ (PlugError::Plumbing { .. } | PlugError::RollbackFailed { .. }) => {
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}

/// Runs `work` to its end even if the client goes away: hyper drops the handler of a closed
/// connection, and a plug stopped between two steps would leave its port and veth behind until
/// the agent's next start (a runtime plugin killed mid-call does exactly that).
async fn to_the_end<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, ApiError>> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(work).await.unwrap_or_else(|e| {
        Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("the request failed inside the agent: {e}")))
    })
}

/// How long a plug, unplug or reservation waits for start-up recovery before it is refused.
const RECOVERY_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Registered, and start-up recovery done (waited for): what a changing request needs.
async fn ready_to_change(agent: &Agent) -> Result<(), ApiError> {
    registered(agent)?;
    if agent.plugs.wait_recovered(RECOVERY_WAIT).await {
        return Ok(());
    }
    Err(ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "the agent is still repairing what its last stop left (start-up recovery); try again".into(),
    ))
}

fn bad_request(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, e.to_string())
}

/// Refuses what changes the cluster while another machine holds this agent's hostname.
fn registered(agent: &Agent) -> Result<(), ApiError> {
    match (agent.host.registration(), agent.host.conflict()) {
        (Some(_), None) => Ok(()),
        (_, Some(why)) => {
            Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("this agent is not registered: {why}")))
        }
        (None, None) => {
            Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, "the agent is still registering; try again".into()))
        }
    }
}

async fn create_tenant(
    State(agent): State<Arc<Agent>>,
    Json(req): Json<CreateTenant>,
) -> Result<(StatusCode, Json<TenantInfo>), ApiError> {
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
    let mut allow = Vec::with_capacity(req.control_plane_allow.len());
    for a in &req.control_plane_allow {
        allow.push(a.parse::<ipnet::IpNet>().map_err(|_| {
            bad_request(format!("allow-list entry '{a}' is not a CIDR: use ADDRESS/LEN, e.g. 198.18.0.0/24"))
        })?);
    }
    let tenant = overlay::model::Tenant::new(&req.name, vni, cidr, tunnel, subnet_len)
        .map_err(bad_request)?
        .with_egress(req.egress.unwrap_or(true))
        .with_control_plane_allow(allow)
        .map_err(bad_request)?;
    agent.registry.create_tenant(&tenant).await?;
    tracing::info!(
        tenant = tenant.name(), vni = vni.get(), %cidr, %tunnel, egress = tenant.egress(),
        allow = ?tenant.control_plane_allow(), "tenant created"
    );
    Ok((StatusCode::CREATED, Json(tenant_info(&tenant))))
}

async fn list_tenants(State(agent): State<Arc<Agent>>) -> Json<Vec<TenantInfo>> {
    Json(agent.cluster.borrow().tenants.values().map(tenant_info).collect())
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
) -> Result<Json<JoinResult>, ApiError> {
    overlay::model::validate_tenant_name(&name).map_err(bad_request)?;
    registered(&agent)?;
    // Read from etcd, not the watched cache: a tenant created a moment ago through another
    // host's agent may not have reached our watch yet.
    let tenant = agent.registry.get_tenant(&name).await?;
    let lease = agent.host.join_tenant(&agent.registry, &tenant).await?;
    Ok(Json(JoinResult { tenant: lease.tenant, subnet: lease.subnet.to_string(), host: lease.host }))
}

async fn plug(State(agent): State<Arc<Agent>>, Json(req): Json<PlugRequest>) -> Result<Json<PlugResult>, ApiError> {
    ready_to_change(&agent).await?;
    to_the_end(async move { Ok(Json(agent.plugger().plug(req).await?)) }).await
}

async fn check_plugged(
    State(agent): State<Arc<Agent>>,
    Json(req): Json<PlugRequest>,
) -> Result<Json<PlugResult>, ApiError> {
    Ok(Json(agent.plugger().check_plugged(req).await?))
}

async fn reserve_address(
    State(agent): State<Arc<Agent>>,
    UrlPath(name): UrlPath<String>,
    Json(req): Json<ReserveAddress>,
) -> Result<(StatusCode, Json<Reservation>), ApiError> {
    overlay::model::validate_tenant_name(&name).map_err(bad_request)?;
    ready_to_change(&agent).await?;
    let tenant = agent.registry.get_tenant(&name).await?;
    let ip = match &req.ip {
        None => None,
        Some(s) => {
            let ip: std::net::IpAddr =
                s.parse().map_err(|_| bad_request(format!("'{s}' is not an IP address: give one like 198.19.0.10")))?;
            overlay::ipam::check_requested_address(ip, &tenant).map_err(bad_request)?;
            Some(ip)
        }
    };
    let lease = agent.host.join_tenant(&agent.registry, &tenant).await?;
    let me = &agent.host.me;
    let held: std::collections::BTreeSet<_> = agent
        .cluster
        .borrow()
        .endpoints
        .of_host(&me.hostname)
        .filter(|(_, e)| e.tenant == name)
        .map(|(_, e)| e.ip)
        .collect();
    let reserve = {
        let agent = agent.clone();
        let tenant = tenant.clone();
        async move {
            let me = &agent.host.me;
            Ok(agent.registry.reserve_address(&tenant, &lease, ip, (&me.hostname, &me.machine_id), &held).await?)
        }
    };
    let ip = to_the_end(reserve).await?;
    tracing::info!(tenant = %name, %ip, "address reserved for a plug to come");
    Ok((
        StatusCode::CREATED,
        Json(Reservation {
            tenant: name,
            ip,
            prefix: tenant.cidr().prefix_len(),
            gateway: tenant.gateway(),
            expires_in_secs: crate::registry::RESERVATION_TTL.as_secs(),
        }),
    ))
}

async fn release_address(
    State(agent): State<Arc<Agent>>,
    UrlPath((name, ip)): UrlPath<(String, String)>,
) -> Result<Json<ReleaseResult>, ApiError> {
    overlay::model::validate_tenant_name(&name).map_err(bad_request)?;
    let ip: std::net::IpAddr =
        ip.parse().map_err(|_| bad_request(format!("'{ip}' is not an IP address: give one like 198.19.0.10")))?;
    ready_to_change(&agent).await?;
    let me = &agent.host.me;
    let released = agent.registry.release_reservation(&name, ip, (&me.hostname, &me.machine_id)).await?;
    if released {
        tracing::info!(tenant = %name, %ip, "address reservation released");
    }
    Ok(Json(ReleaseResult { released }))
}

#[derive(serde::Deserialize)]
struct UnplugQuery {
    ifname: Option<String>,
}

async fn unplug(
    State(agent): State<Arc<Agent>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<UnplugQuery>,
) -> Result<Json<UnplugResult>, ApiError> {
    ready_to_change(&agent).await?;
    to_the_end(async move {
        let was_plugged = agent.plugger().unplug(&id, q.ifname.as_deref()).await?;
        Ok(Json(UnplugResult { container_id: id, ifname: q.ifname, was_plugged }))
    })
    .await
}

async fn set_vm_uuid(
    State(agent): State<Arc<Agent>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<UnplugQuery>,
    Json(req): Json<SetVmUuid>,
) -> Result<StatusCode, ApiError> {
    overlay::model::validate_container_id(&req.vm_uuid).map_err(|_| {
        bad_request(format!("vm-uuid '{}' is not valid: [A-Za-z0-9][A-Za-z0-9_.-]{{0,127}}", req.vm_uuid))
    })?;
    registered(&agent)?;
    let ifname = q.ifname.unwrap_or_else(|| overlay::model::DEFAULT_IFNAME.to_owned());
    let port = overlay::naming::container_port_name(&id, &ifname);
    if agent.plugger().switch.find_port(&port).is_none() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("container '{id}' interface {ifname} is not plugged on this host"),
        ));
    }
    let changed = crate::ovs::container_port::set_vm_uuid(&agent.ovs, &port, &req.vm_uuid)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("setting vm-uuid on port {port}: {e}")))?;
    if changed {
        tracing::info!(container = %id, %ifname, %port, vm_uuid = %req.vm_uuid, "port labelled with its container");
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn endpoints(State(agent): State<Arc<Agent>>) -> Json<Vec<EndpointInfo>> {
    // As of this agent's own last write: a plug that just answered is listed.
    let written = agent.registry.written();
    let mut cluster = agent.cluster.clone();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        cluster.wait_for(|c| c.revision > 0 && c.revision >= written),
    )
    .await;
    let cache = agent.cluster.borrow();
    Json(cache.endpoints.of_host(&agent.host.me.hostname).map(|(_, e)| endpoint_info(e)).collect())
}

async fn status(State(agent): State<Arc<Agent>>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], status_json(&agent)).into_response()
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
        .route("/v1/tenants/{name}/addresses", post(reserve_address))
        .route("/v1/tenants/{name}/addresses/{ip}", axum::routing::delete(release_address))
        .route("/v1/endpoints/check", post(check_plugged))
        .route("/v1/endpoints", get(endpoints).post(plug))
        .route("/v1/endpoints/{id}", axum::routing::delete(unplug))
        .route("/v1/endpoints/{id}/vm-uuid", axum::routing::put(set_vm_uuid))
        .with_state(agent);
    tracing::info!(socket = %path.display(), "local API listening");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "local API stopped");
        }
    }))
}
