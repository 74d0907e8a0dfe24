//! The plugin's HTTP side: Docker POSTs `/<Interface>.<Method>` with a JSON body (and no
//! Content-Type) on the plugin's unix socket; answers are JSON, errors `{"Err": ".."}` with
//! status 500, which Docker shows prefixed with the method.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::{Config, DriverError, Plugin};

/// Why the plugin could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Another plugin answers on the socket.
    #[error("another plugin is serving {}: stop it first or use --socket", socket.display())]
    InUse {
        /// The socket.
        socket: PathBuf,
    },
    /// The socket could not be made.
    #[error("cannot serve {}: {what}", socket.display())]
    Socket {
        /// The socket.
        socket: PathBuf,
        /// The step that failed.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The media type Docker's plugin protocol speaks.
const MEDIA_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

fn answer(status: StatusCode, body: &Value) -> Response {
    (status, [(axum::http::header::CONTENT_TYPE, MEDIA_TYPE)], body.to_string()).into_response()
}

fn parse<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, DriverError> {
    if body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| DriverError(format!("cannot decode the request: {e}")))
}

async fn dispatch(State(plugin): State<Arc<Plugin>>, uri: Uri, body: Bytes) -> Response {
    let method = uri.path().trim_start_matches('/').to_owned();
    tracing::debug!(call = %method, bytes = body.len(), "call");
    let bodiless = [
        "Plugin.Activate",
        "NetworkDriver.GetCapabilities",
        "IpamDriver.GetCapabilities",
        "IpamDriver.GetDefaultAddressSpaces",
    ];
    if body.is_empty() && !bodiless.contains(&method.as_str()) {
        // Docker 20.10 repeats a call that failed on a dead plugin with the body already
        // consumed: whatever it asked is lost.
        let e = DriverError(format!(
            "Docker sent {method} without its request, as it does when it repeats a call after the plugin \
             restarted: the call is lost; run the command again (what its first attempt left is removed within {} s)",
            plugin.reconcile_secs()
        ));
        tracing::warn!(call = %method, "repeated call without a body refused");
        return answer(StatusCode::INTERNAL_SERVER_ERROR, &json!({"Err": e.0}));
    }
    let outcome: Result<Value, DriverError> = async {
        let p = &plugin;
        Ok(match method.as_str() {
            "Plugin.Activate" => json!({"Implements": ["NetworkDriver", "IpamDriver"]}),
            "NetworkDriver.GetCapabilities" => p.capabilities(),
            "NetworkDriver.CreateNetwork" => p.create_network(parse(&body)?)?,
            "NetworkDriver.DeleteNetwork" => p.delete_network(parse(&body)?).await?,
            "NetworkDriver.CreateEndpoint" => p.create_endpoint(parse(&body)?).await?,
            "NetworkDriver.Join" => p.join(parse(&body)?).await?,
            "NetworkDriver.Leave" => p.leave(parse(&body)?),
            "NetworkDriver.DeleteEndpoint" => p.delete_endpoint(parse(&body)?).await?,
            "NetworkDriver.EndpointOperInfo" => json!({"Value": {}}),
            // Published ports are refused at CreateEndpoint; swarm-only calls have nothing to do.
            "NetworkDriver.ProgramExternalConnectivity"
            | "NetworkDriver.RevokeExternalConnectivity"
            | "NetworkDriver.AllocateNetwork"
            | "NetworkDriver.FreeNetwork"
            | "NetworkDriver.DiscoverNew"
            | "NetworkDriver.DiscoverDelete" => json!({}),
            "IpamDriver.GetCapabilities" => p.ipam_capabilities(),
            "IpamDriver.GetDefaultAddressSpaces" => p.address_spaces(),
            "IpamDriver.RequestPool" => p.request_pool(parse(&body)?).await?,
            "IpamDriver.ReleasePool" => json!({}),
            "IpamDriver.RequestAddress" => p.request_address(parse(&body)?).await?,
            "IpamDriver.ReleaseAddress" => p.release_address(parse(&body)?).await?,
            other => return Err(DriverError(format!("{other} is not a call this plugin knows"))),
        })
    }
    .await;
    match outcome {
        Ok(v) => answer(StatusCode::OK, &v),
        Err(e) => {
            tracing::warn!(call = %method, error = %e, "refused");
            answer(StatusCode::INTERNAL_SERVER_ERROR, &json!({"Err": e.0}))
        }
    }
}

/// Serves the plugin on `config.socket` until `shutdown` completes, then removes the socket
/// (Docker would otherwise keep trying a dead one). A stale socket of a plugin that died is
/// replaced; a live one is an error.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
    let socket = config.socket.clone();
    let err = |what: &'static str| {
        let socket = socket.clone();
        move |source| ServeError::Socket { socket, what, source }
    };
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(err("creating its directory"))?;
    }
    if socket.exists() {
        if tokio::net::UnixStream::connect(&socket).await.is_ok() {
            return Err(ServeError::InUse { socket });
        }
        std::fs::remove_file(&socket).map_err(err("removing the stale socket"))?;
    }
    let listener = tokio::net::UnixListener::bind(&socket).map_err(err("binding"))?;
    use std::os::unix::fs::PermissionsExt;
    // Root only, as the agent's own socket: the plugin plugs and unplugs containers.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).map_err(err("restricting"))?;
    let plugin = Arc::new(Plugin::new(&config));
    let reconciler = crate::reconcile::Reconciler::new(plugin.clone(), config.reconcile_interval);
    let _ = plugin.reconciler.set(Arc::downgrade(&reconciler));
    let background = tokio::spawn(reconciler.run());
    tracing::info!(
        socket = %socket.display(), name = %config.name, agent = %config.agent_socket.display(),
        docker = %plugin.docker.socket().display(), "Docker network and IPAM plugin listening"
    );
    let app = axum::Router::new().fallback(dispatch).with_state(plugin);
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    background.abort();
    let _ = std::fs::remove_file(&socket);
    served.map_err(err("serving"))?;
    tracing::info!(socket = %socket.display(), "plugin stopped");
    Ok(())
}
