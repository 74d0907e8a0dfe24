//! A Docker libnetwork remote driver, network and IPAM, that plugs containers through the
//! overlay-agent's local API ([`overlay_api`]); it links no etcd or OVSDB code. `overlay-agent
//! docker-plugin` serves it.
//!
//! How Docker's model maps onto the agent's (README, "Docker"):
//! - A Docker network is a tenant: `docker network create -d overlay-agent --ipam-driver
//!   overlay-agent --ipam-opt tenant=red red`. The IPAM driver is needed because Docker asks it
//!   for the container's address before it tells the network driver about the container; it
//!   reserves the address in the agent (the tenant's per-host subnet, `--ip` honoured), and the
//!   plug takes the reservation over.
//! - `CreateEndpoint` plugs a hand-off endpoint ([`overlay_api::NetnsRef::Handoff`]): veth, port
//!   and record as for any plug, the container end left in the host namespace, because the
//!   container's namespace does not exist yet when Docker asks. `Join` names that end for Docker
//!   to move, rename and configure. `DeleteEndpoint` unplugs.
//! - Nothing is kept in this process: the agent holds the endpoints (keyed by Docker's endpoint
//!   id, labelled `docker:<network id>`), Docker holds each network's options. A restarted
//!   plugin, which Docker does not activate again, serves every call as the first did; every
//!   call is idempotent, so Docker's retries are too.

#![warn(missing_docs)]

mod docker;
mod driver;
mod ipam;
mod ports;
mod reconcile;
mod server;
mod wire;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use docker::{Docker, DockerError};
pub use server::{serve, ServeError};

/// Where Docker looks for the socket of a plugin named `overlay-agent`.
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/overlay-agent.sock";

/// The address space this IPAM driver answers for (`docker network inspect` shows it).
pub const ADDRESS_SPACE: &str = "overlay-agent";

/// How the plugin runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The socket to serve; Docker finds it by name in `/run/docker/plugins` (or through a
    /// `.spec` file in `/etc/docker/plugins` naming it).
    pub socket: PathBuf,
    /// The driver's name as Docker knows it (the socket's or spec file's name), for hints in
    /// errors.
    pub name: String,
    /// The agent's API socket.
    pub agent_socket: PathBuf,
    /// dockerd's API (`unix:///var/run/docker.sock`).
    pub docker_host: String,
    /// How long a call waits for an agent that is not answering (restarting) before it fails.
    pub agent_wait: Duration,
    /// How often the agent's endpoints are compared with Docker's (labels, endpoints Docker
    /// lost); an endpoint Docker does not show for this long is unplugged.
    pub reconcile_interval: Duration,
}

/// What a call of Docker's failed with: the message Docker shows (it prefixes the call name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DriverError(pub String);

/// The driver: the agent and dockerd it talks to.
pub(crate) struct Plugin {
    pub(crate) agent: overlay_api::Client,
    pub(crate) docker: Docker,
    pub(crate) name: String,
    pub(crate) agent_wait: Duration,
    /// Set once serving: nudged after each join.
    pub(crate) reconciler: std::sync::OnceLock<std::sync::Weak<reconcile::Reconciler>>,
}

impl Plugin {
    pub(crate) fn new(config: &Config) -> Self {
        Plugin {
            agent: overlay_api::Client::new(&config.agent_socket),
            docker: Docker::new(&config.docker_host),
            name: config.name.clone(),
            agent_wait: config.agent_wait,
            reconciler: std::sync::OnceLock::new(),
        }
    }

    /// Seconds between background passes, for messages.
    pub(crate) fn reconcile_secs(&self) -> u64 {
        self.reconciler.get().and_then(std::sync::Weak::upgrade).map(|r| r.interval().as_secs() * 2).unwrap_or(0)
    }

    /// Asks the background pass to compare endpoints with Docker soon.
    pub(crate) fn nudge(&self) {
        if let Some(r) = self.reconciler.get().and_then(std::sync::Weak::upgrade) {
            r.nudge();
        }
    }

    /// Calls the agent with `call`, again while it fails in a way that may pass (the agent
    /// restarting, a connection broken off: every call is idempotent) until `agent_wait` is up.
    pub(crate) async fn agent<T, F, Fut>(&self, what: &str, call: F) -> Result<T, DriverError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, overlay_api::ClientError>>,
    {
        self.agent_call(what, call).await.map_err(|e| DriverError(format!("{what}: {e}")))
    }

    /// [`Plugin::agent`], keeping the agent's error.
    pub(crate) async fn agent_call<T, F, Fut>(&self, what: &str, call: F) -> Result<T, overlay_api::ClientError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, overlay_api::ClientError>>,
    {
        let deadline = Instant::now() + self.agent_wait;
        let mut delay = Duration::from_millis(50);
        let mut warned = false;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && Instant::now() + delay < deadline => {
                    if !warned {
                        tracing::warn!(%what, error = %e, "the agent cannot answer now; trying again");
                        warned = true;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
    }
}
