//! A client that stays connected: it keeps a replica of the monitored tables current, and when
//! the session drops it fails the requests in flight, reconnects with exponential backoff and
//! jitter, re-issues its monitor and rebuilds the replica, telling subscribers with
//! [`ClientEvent::ReplicaReset`].

use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::connection::{Connection, ConnectionOptions};
use crate::error::{RpcError, TransactError};
use crate::monitor::{Monitor, MonitorRequests, TableUpdates};
use crate::remote::Remote;
use crate::replica::Replica;
use crate::schema::DatabaseSchema;
use crate::transaction::{TransactOutcome, Transaction};

/// How to connect and what to replicate.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Where the server is.
    pub remote: Remote,
    /// Database to replicate (`Open_vSwitch`).
    pub database: String,
    /// Tables and columns to keep in the replica.
    pub monitor: MonitorRequests,
    /// `(table, column)` pairs to index in the replica.
    pub indexes: Vec<(String, String)>,
    /// First reconnect delay; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Options of each session.
    pub connection: ConnectionOptions,
}

impl ClientOptions {
    /// Defaults: backoff 100 ms to 10 s, default session options, nothing monitored.
    pub fn new(remote: Remote, database: impl Into<String>) -> Self {
        ClientOptions {
            remote,
            database: database.into(),
            monitor: MonitorRequests::new(),
            indexes: Vec::new(),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            connection: ConnectionOptions::default(),
        }
    }

    /// Sets what to monitor.
    pub fn monitor(mut self, requests: MonitorRequests) -> Self {
        self.monitor = requests;
        self
    }

    /// Adds an index on `table.column`.
    pub fn index(mut self, table: impl Into<String>, column: impl Into<String>) -> Self {
        self.indexes.push((table.into(), column.into()));
        self
    }
}

/// What happened to the client's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The session dropped; requests fail with [`RpcError::NotConnected`] until it is back.
    Disconnected {
        /// Why.
        reason: String,
    },
    /// A new session is up and the replica was rebuilt from scratch: state derived from the
    /// old replica must be recomputed.
    ReplicaReset,
}

/// Waiting for the replica timed out.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {0:?} waiting for the OVSDB replica to reach the expected state")]
pub struct WaitTimeout(pub Duration);

struct Shared {
    options: ClientOptions,
    conn: RwLock<Option<Connection>>,
    replica: RwLock<Replica>,
    seqno: watch::Sender<u64>,
    events: broadcast::Sender<ClientEvent>,
}

/// The reconnecting client. Dropping it stops the background task and closes the session.
pub struct Client {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(c) = self.shared.conn.write().expect("conn lock").take() {
            c.close();
        }
    }
}

async fn establish(
    options: &ClientOptions,
) -> Result<(Connection, Arc<DatabaseSchema>, TableUpdates, Monitor), RpcError> {
    let conn = Connection::connect_with(&options.remote, options.connection.clone()).await?;
    let schema = Arc::new(conn.get_schema(&options.database).await?);
    let (initial, monitor) = match conn.monitor_cond(&options.database, &options.monitor).await {
        Err(e) if e.is_unknown_method() => conn.monitor(&options.database, &options.monitor).await?,
        other => other?,
    };
    Ok((conn, schema, initial, monitor))
}

impl Client {
    /// Connects, reads the schema, starts the monitor and fills the replica. Fails if the first
    /// attempt fails, so a wrong remote is reported at once; later drops are retried for ever.
    pub async fn connect(options: ClientOptions) -> Result<Client, RpcError> {
        let (conn, schema, initial, monitor) = establish(&options).await?;
        let mut replica = Replica::new(schema, &options.indexes);
        replica.set_monitored(&options.monitor);
        replica
            .apply_owned(initial)
            .map_err(|e| RpcError::MalformedReply { method: "monitor".into(), reason: e.to_string() })?;
        let (seqno, _) = watch::channel(replica.seqno());
        let (events, _) = broadcast::channel(64);
        let shared =
            Arc::new(Shared { options, conn: RwLock::new(Some(conn)), replica: RwLock::new(replica), seqno, events });
        let task = tokio::spawn(supervise(shared.clone(), monitor));
        Ok(Client { shared, task })
    }

    /// The current session, if up.
    pub fn connection(&self) -> Result<Connection, RpcError> {
        self.shared
            .conn
            .read()
            .expect("conn lock")
            .clone()
            .ok_or_else(|| RpcError::NotConnected { remote: self.shared.options.remote.to_string() })
    }

    /// True while a session is up.
    pub fn is_connected(&self) -> bool {
        self.shared.conn.read().expect("conn lock").as_ref().is_some_and(|c| !c.is_closed())
    }

    /// The schema of the replicated database (as of the latest session).
    pub fn schema(&self) -> Arc<DatabaseSchema> {
        self.replica().schema().clone()
    }

    /// A new transaction validated against the schema.
    pub fn transaction(&self) -> Transaction {
        Transaction::with_schema(self.schema())
    }

    /// Sends a transaction on the current session.
    pub async fn transact(&self, tx: &Transaction) -> Result<TransactOutcome, TransactError> {
        let conn = self.connection()?;
        conn.transact(tx).await
    }

    /// [`Client::transact`] taking the transaction, whose rows are dropped once written (see
    /// [`Connection::transact_owned`]): for large transactions.
    pub async fn transact_owned(&self, tx: Transaction) -> Result<TransactOutcome, TransactError> {
        let conn = self.connection()?;
        conn.transact_owned(tx).await
    }

    /// Reads the replica. Do not hold the guard across an `.await`.
    pub fn replica(&self) -> RwLockReadGuard<'_, Replica> {
        self.shared.replica.read().expect("replica lock")
    }

    /// Subscribes to session events.
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        self.shared.events.subscribe()
    }

    /// A receiver that changes whenever the replica does (its value is the replica's seqno).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.seqno.subscribe()
    }

    /// Waits until `done(replica)` is true, re-checking after every replica change; use it to
    /// wait until a transaction's effect (or ovs-vswitchd's reaction, like an `ofport`) is
    /// visible.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&Replica) -> bool,
    ) -> Result<(), WaitTimeout> {
        let mut changes = self.changes();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changes.borrow_and_update();
            if done(&self.replica()) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    return if done(&self.replica()) { Ok(()) } else { Err(WaitTimeout(timeout)) };
                }
            }
        }
    }
}

fn jitter(d: Duration) -> Duration {
    // Spread reconnects of many agents after a server restart: 75%..125% of the delay. The
    // nanosecond clock is random enough for that and needs no RNG dependency.
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.subsec_nanos()).unwrap_or(0);
    let factor = 0.75 + f64::from(nanos % 1000) / 2000.0;
    d.mul_f64(factor)
}

async fn supervise(shared: Arc<Shared>, mut monitor: Monitor) {
    loop {
        let reason = loop {
            match monitor.next().await {
                Some(Ok(event)) => {
                    let result = shared.replica.write().expect("replica lock").apply_owned(event.updates);
                    match result {
                        Ok(()) => {
                            let seq = shared.replica.read().expect("replica lock").seqno();
                            shared.seqno.send_replace(seq);
                        }
                        Err(e) => break format!("replica out of step with the server ({e}); resynchronising"),
                    }
                }
                Some(Err(e)) => break format!("bad update from the server ({e}); resynchronising"),
                None => {
                    let conn = shared.conn.read().expect("conn lock").clone();
                    break match conn {
                        Some(c) => c.closed().await,
                        None => "session closed".into(),
                    };
                }
            }
        };
        if let Some(c) = shared.conn.write().expect("conn lock").take() {
            c.close();
        }
        tracing::warn!(remote = %shared.options.remote, %reason, "OVSDB session lost; reconnecting");
        let _ = shared.events.send(ClientEvent::Disconnected { reason });
        let mut delay = shared.options.backoff_min;
        loop {
            tokio::time::sleep(jitter(delay)).await;
            match establish(&shared.options).await {
                Ok((conn, schema, initial, m)) => {
                    let mut fresh = Replica::new(schema, &shared.options.indexes);
                    fresh.set_monitored(&shared.options.monitor);
                    if let Err(e) = fresh.apply_owned(initial) {
                        tracing::warn!(error = %e, "initial monitor reply did not apply; retrying");
                        continue;
                    }
                    {
                        let mut r = shared.replica.write().expect("replica lock");
                        // Keep the counter monotonic across resets so waiters see a change.
                        let next = r.seqno() + 1;
                        *r = fresh;
                        r.set_seqno(next);
                        shared.seqno.send_replace(r.seqno());
                    }
                    *shared.conn.write().expect("conn lock") = Some(conn);
                    monitor = m;
                    tracing::info!(remote = %shared.options.remote, "OVSDB session re-established; replica rebuilt");
                    let _ = shared.events.send(ClientEvent::ReplicaReset);
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, ?delay, "OVSDB reconnect failed");
                    delay = (delay * 2).min(shared.options.backoff_max);
                }
            }
        }
    }
}
