//! Everything the agent writes to or reads from OVSDB goes through this module: the
//! connection and what it monitors ([`connect`]), the container ports of the plug path
//! ([`container_port`]), waiting on ovs-vswitchd ([`vswitchd`]), and the bridges and tunnel
//! ports the data plane plans ([`plan`]).
//!
//! `external_ids` of rows others may also write are changed by map mutation of the agent's own
//! keys ([`overlay::external_ids::ALL`]), never by overwriting the column.

use std::time::Duration;

use ovsdb_client::{Client, ClientOptions, MonitorRequests, Remote, Replica, Row, Uuid};

use crate::backoff::Backoff;

pub mod container_port;
pub mod gateway_port;
pub mod plan;
pub mod vswitchd;

/// The database the agent works on.
pub const DATABASE: &str = "Open_vSwitch";

/// Why OVSDB could not be reached at start.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The configured remote cannot be used at all.
    #[error("the OVSDB remote is invalid")]
    BadRemote(#[source] ovsdb_client::RpcError),
}

/// Client options: the tables and columns the agent reads, indexed by name.
pub fn client_options(remote: Remote) -> ClientOptions {
    ClientOptions::new(remote, DATABASE)
        .monitor(
            MonitorRequests::new()
                .table("Open_vSwitch", ["bridges", "external_ids"])
                .table("Bridge", ["name", "ports", "datapath_type", "fail_mode", "external_ids"])
                .table("Port", ["name", "interfaces", "tag", "protected", "external_ids"])
                .table("Interface", ["name", "type", "options", "external_ids", "ofport", "ofport_request", "error"]),
        )
        .index("Bridge", "name")
        .index("Port", "name")
        .index("Interface", "name")
}

/// Connects to OVSDB, retrying with backoff until it answers (it may start after the agent).
/// Only a remote that can never work is an error.
pub async fn connect(remote: Remote, tls: Option<ovsdb_client::TlsSettings>) -> Result<Client, ConnectError> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let mut options = client_options(remote.clone());
        options.connection.tls = tls.clone();
        match Client::connect(options).await {
            Ok(c) => return Ok(c),
            Err(e @ ovsdb_client::RpcError::BadRemote { .. }) => return Err(ConnectError::BadRemote(e)),
            Err(e) => {
                tracing::warn!(error = %e, "OVSDB not reachable yet; retrying");
                backoff.wait().await;
            }
        }
    }
}

/// The root row's UUID and row.
pub fn root(replica: &Replica) -> Option<(Uuid, Row)> {
    replica.table("Open_vSwitch").rows().next().map(|(u, r)| (u.clone(), r.clone()))
}

/// OVS's `system-id` if the packaging set one, else the id earlier agents kept in
/// `external_ids:overlay-system-id`.
pub fn system_id(replica: &Replica) -> Option<String> {
    let (_, row) = root(replica)?;
    row.map_str("external_ids", "system-id")
        .or_else(|| row.map_str("external_ids", "overlay-system-id"))
        .filter(|s| !s.trim().is_empty())
        .map(str::to_owned)
}
