//! The Prometheus-style metrics endpoint (`GET /metrics` on the configured TCP address).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::routing::get;
use axum::Router;

use crate::agent::Agent;

async fn metrics(State(agent): State<Arc<Agent>>) -> String {
    crate::status::metrics_text(&agent)
}

/// Serves `/metrics` on `addr`.
pub async fn serve(agent: Arc<Agent>, addr: SocketAddr) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the metrics address {addr}"))?;
    let app = Router::new().route("/metrics", get(metrics)).with_state(agent);
    tracing::info!(%addr, "metrics listening");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    }))
}
