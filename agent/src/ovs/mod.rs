//! Everything the agent writes to or reads from OVSDB goes through this module: the
//! connection and what it monitors ([`connect`], [`Ovsdb`]), the container ports of the plug
//! path ([`container_port`]), waiting on ovs-vswitchd ([`vswitchd`]), and the bridges and
//! tunnel ports the data plane plans ([`plan`]). Every transaction is sent by
//! [`Ovsdb::transact`], which counts it for status and the metrics.
//!
//! `external_ids` of rows others may also write are changed by map mutation of the agent's own
//! keys ([`overlay::external_ids::ALL`]), never by overwriting the column.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLockReadGuard;
use std::time::Duration;

use ovsdb_client::{
    Client, ClientOptions, MonitorRequests, Remote, Replica, Row, RpcError, TransactError, TransactOutcome,
    Transaction, Uuid, WaitTimeout,
};
use tokio::sync::watch;

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
    /// The configured remote, or its TLS settings, cannot be used at all.
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

/// The agent's OVSDB session: the client with its replica, and the count of transactions sent.
/// The agent writes only through [`Ovsdb::transact`] and [`Ovsdb::transact_owned`], so status
/// and the metrics count every transaction, whichever path (pass, plug, unplug) sent it.
pub struct Ovsdb {
    client: Client,
    transactions: AtomicU64,
}

impl Ovsdb {
    /// The session of `client`, nothing sent yet.
    pub fn new(client: Client) -> Self {
        Ovsdb { client, transactions: AtomicU64::new(0) }
    }

    /// A new transaction, its operations checked against the schema as they are added.
    pub fn transaction(&self) -> Transaction {
        self.client.transaction()
    }

    /// Sends `tx` (counted once it went out, whatever the answer).
    pub async fn transact(&self, tx: &Transaction) -> Result<TransactOutcome, TransactError> {
        self.counted(self.client.transact(tx).await)
    }

    /// [`Ovsdb::transact`] taking the transaction, whose rows are dropped once written: for
    /// large transactions.
    pub async fn transact_owned(&self, tx: Transaction) -> Result<TransactOutcome, TransactError> {
        self.counted(self.client.transact_owned(tx).await)
    }

    fn counted(&self, r: Result<TransactOutcome, TransactError>) -> Result<TransactOutcome, TransactError> {
        let not_sent = matches!(r, Err(TransactError::Invalid(_) | TransactError::Rpc(RpcError::NotConnected { .. })));
        if !not_sent {
            self.transactions.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// Transactions sent since the agent started.
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    /// Reads the replica. Do not hold the guard across an `.await`.
    pub fn replica(&self) -> RwLockReadGuard<'_, Replica> {
        self.client.replica()
    }

    /// A receiver that changes whenever the replica does.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.client.changes()
    }

    /// Waits until `done(replica)` holds, re-checking at every replica change.
    pub async fn wait_until(&self, timeout: Duration, done: impl FnMut(&Replica) -> bool) -> Result<(), WaitTimeout> {
        self.client.wait_until(timeout, done).await
    }

    /// Whether the session is up.
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }
}

/// Connects to OVSDB, retrying with backoff until it answers (it may start after the agent).
/// Only a remote that can never work is an error.
pub async fn connect(remote: Remote, tls: Option<ovsdb_client::TlsSettings>) -> Result<Ovsdb, ConnectError> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let mut options = client_options(remote.clone());
        options.connection.tls = tls.clone();
        match Client::connect(options).await {
            Ok(c) => return Ok(Ovsdb::new(c)),
            Err(e @ (ovsdb_client::RpcError::BadRemote { .. } | ovsdb_client::RpcError::Tls { .. })) => {
                return Err(ConnectError::BadRemote(e))
            }
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
