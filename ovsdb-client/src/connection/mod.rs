//! One JSON-RPC session with an ovsdb-server (RFC 7047 section 4).
//!
//! A reader task splits the stream into messages and routes them: replies to the request
//! waiting for that id, `update*` notifications to their monitor, `locked`/`stolen` to lock
//! watchers, and the server's `echo` requests are answered at once so the server's inactivity
//! probe never drops an idle client. A writer task owns the write half, so a large outgoing
//! transaction never stops incoming messages from being read. When the stream ends, every
//! request in flight fails with [`RpcError::Disconnected`] and every monitor stream ends.

mod io;
mod session;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ovs_transport::{probe, Closed, LastHeard, Tasks, Transport};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value as Json};
use tokio::sync::{broadcast, mpsc};

use crate::error::{RpcError, TransactError};
use crate::framing::DEFAULT_MAX_MESSAGE_SIZE;
use crate::monitor::{Monitor, MonitorRequests, MonitorVersion, TableUpdates};
use crate::remote::Remote;
use crate::schema::DatabaseSchema;
use crate::transaction::{interpret_text, TransactOutcome, Transaction};
use io::{read_loop, write_loop};
pub(crate) use session::RawJson;
use session::Shared;

/// Tunables of one session.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// How long a request may wait for its reply.
    pub request_timeout: Duration,
    /// Largest accepted message.
    pub max_message_size: usize,
    /// Send an `echo` after this long without hearing from the server, and close the session
    /// if that gets no reply within the same interval (a hung server or a dead TCP path).
    /// `None` disables the probe.
    pub inactivity_probe: Option<Duration>,
    /// Certificates for `ssl:` remotes.
    pub tls: Option<crate::TlsSettings>,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            request_timeout: Duration::from_secs(30),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            inactivity_probe: Some(Duration::from_secs(5)),
            tls: None,
        }
    }
}

/// Lock notifications (`locked`, `stolen`) for locks this session asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockEvent {
    /// A lock that was queued is now held.
    Locked(String),
    /// A lock this session held was stolen by another.
    Stolen(String),
}

/// A session with an ovsdb-server. Cheap to clone; the session closes when the last clone is
/// dropped, when [`Connection::close`] is called, or when the server goes away.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
    tasks: Arc<Tasks<Shared>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("remote", &self.shared.remote).finish()
    }
}

impl Connection {
    /// Connects to `remote` with default options.
    pub async fn connect(remote: &Remote) -> Result<Self, RpcError> {
        Self::connect_with(remote, ConnectionOptions::default()).await
    }

    /// Connects to `remote`.
    pub async fn connect_with(remote: &Remote, options: ConnectionOptions) -> Result<Self, RpcError> {
        let stream = remote.connect_tls(options.tls.as_ref()).await?;
        Ok(Self::over(stream, remote.to_string(), options))
    }

    /// Runs the protocol over an already open byte stream (a TLS stream, a test socket pair).
    pub fn over(stream: Box<dyn Transport>, remote: String, options: ConnectionOptions) -> Self {
        let (read, write) = tokio::io::split(stream);
        let (writer_tx, writer_rx) = mpsc::unbounded_channel();
        let (locks, _) = broadcast::channel(16);
        let shared = Arc::new(Shared {
            remote,
            options,
            next_id: AtomicU64::new(1),
            writer: writer_tx,
            pending: Mutex::new(HashMap::new()),
            monitors: Mutex::new(HashMap::new()),
            locks,
            closed: Closed::new(),
            last_heard: LastHeard::new(),
        });
        let mut tasks = Tasks::new(shared.clone());
        tasks.spawn(read_loop(shared.clone(), read));
        tasks.spawn(write_loop(shared.clone(), write, writer_rx));
        if let Some(interval) = shared.options.inactivity_probe {
            tasks.spawn(probe(Arc::downgrade(&shared), interval));
        }
        Connection { shared, tasks: Arc::new(tasks) }
    }

    /// The remote this session talks to.
    pub fn remote(&self) -> &str {
        &self.shared.remote
    }

    /// True once the session is over.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_closed()
    }

    /// Resolves with the reason once the session is over.
    pub async fn closed(&self) -> String {
        self.shared.closed.wait().await
    }

    /// Ends the session; requests in flight fail with [`RpcError::Disconnected`].
    pub fn close(&self) {
        self.tasks.close("closed by the client");
    }

    /// Sends any JSON-RPC request and waits for its result.
    pub async fn call(&self, method: &str, params: Json) -> Result<Json, RpcError> {
        let reply = self.request(method, &params).await?;
        reply.to_json().map_err(|e| RpcError::MalformedReply { method: method.to_owned(), reason: e.to_string() })
    }

    /// [`Connection::call`] with any serializable params (written straight to the wire, with
    /// no `serde_json::Value` in between), giving back the result as text.
    pub(crate) async fn request<P: Serialize + ?Sized>(&self, method: &str, params: &P) -> Result<RawJson, RpcError> {
        let sent = self.shared.send_request(method, params)?;
        self.shared.reply(method, sent).await
    }

    /// `list_dbs`.
    pub async fn list_dbs(&self) -> Result<Vec<String>, RpcError> {
        let r = self.call("list_dbs", json!([])).await?;
        serde_json::from_value(r.clone()).map_err(|_| RpcError::MalformedReply {
            method: "list_dbs".into(),
            reason: format!("not an array of names: {}", crate::value::short(&r)),
        })
    }

    /// `get_schema`, parsed.
    pub async fn get_schema(&self, database: &str) -> Result<DatabaseSchema, RpcError> {
        let r = self.call("get_schema", json!([database])).await?;
        DatabaseSchema::from_json(&r)
            .map_err(|e| RpcError::MalformedReply { method: "get_schema".into(), reason: e.to_string() })
    }

    /// `echo`: the server returns `params` unchanged.
    pub async fn echo(&self, params: Json) -> Result<Json, RpcError> {
        self.call("echo", params).await
    }

    /// Validates and sends a transaction; every operation's result is checked, so `Ok` means
    /// the whole transaction committed.
    pub async fn transact(&self, tx: &Transaction) -> Result<TransactOutcome, TransactError> {
        tx.validate()?;
        let reply = self.request("transact", &tx.params()).await?;
        interpret_text(&tx.shapes(), reply.text())
    }

    /// [`Connection::transact`] taking the transaction: its rows are dropped as soon as they
    /// are written, not kept while the server works and the updates it causes come in. For a
    /// transaction of thousands of rows that is tens of MiB, and keeping them meant the
    /// replica's new rows were allocated among them and stayed scattered once they went.
    pub async fn transact_owned(&self, tx: Transaction) -> Result<TransactOutcome, TransactError> {
        tx.validate()?;
        let sent = self.shared.send_request("transact", &tx.params())?;
        let shapes = tx.into_shapes();
        let reply = self.shared.reply("transact", sent).await?;
        interpret_text(&shapes, reply.text())
    }

    async fn start_monitor(
        &self,
        method: &str,
        version: MonitorVersion,
        database: &str,
        requests: &MonitorRequests,
        since: Option<&str>,
    ) -> Result<(RawJson, Monitor), RpcError> {
        let id = format!("m{}", self.shared.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::unbounded_channel();
        // Registered before the request goes out: the server may send the first update right
        // after the reply, and the reader must already know where it goes.
        self.shared.monitors.lock().expect("monitors lock").insert(id.clone(), tx);
        let mut params = vec![json!(database), json!(id), requests.to_json(version)];
        if let Some(txn) = since {
            params.push(json!(txn));
        }
        match self.request(method, &params).await {
            Ok(reply) => Ok((reply, Monitor { id, version, rx })),
            Err(e) => {
                self.shared.monitors.lock().expect("monitors lock").remove(&id);
                Err(e)
            }
        }
    }

    /// `monitor` (RFC 7047): the initial rows and a stream of `update` notifications.
    pub async fn monitor(
        &self,
        database: &str,
        requests: &MonitorRequests,
    ) -> Result<(TableUpdates, Monitor), RpcError> {
        let (reply, m) = self.start_monitor("monitor", MonitorVersion::V1, database, requests, None).await?;
        let initial = TableUpdates::from_slice(reply.text(), MonitorVersion::V1, true)
            .map_err(|e| RpcError::MalformedReply { method: "monitor".into(), reason: e.to_string() })?;
        Ok((initial, m))
    }

    /// `monitor_cond`: like `monitor`, with conditions and `update2` diffs.
    pub async fn monitor_cond(
        &self,
        database: &str,
        requests: &MonitorRequests,
    ) -> Result<(TableUpdates, Monitor), RpcError> {
        let (reply, m) = self.start_monitor("monitor_cond", MonitorVersion::V2, database, requests, None).await?;
        let initial = TableUpdates::from_slice(reply.text(), MonitorVersion::V2, true)
            .map_err(|e| RpcError::MalformedReply { method: "monitor_cond".into(), reason: e.to_string() })?;
        Ok((initial, m))
    }

    /// `monitor_cond_since`: resume from `last_txn_id`. Returns whether the server still had
    /// that point (`found`: the updates are what changed since; otherwise they are a full
    /// initial set), the newest transaction id, the updates and the monitor.
    pub async fn monitor_cond_since(
        &self,
        database: &str,
        requests: &MonitorRequests,
        last_txn_id: Option<&str>,
    ) -> Result<(bool, Option<String>, TableUpdates, Monitor), RpcError> {
        let zero = "00000000-0000-0000-0000-000000000000";
        let (reply, m) = self
            .start_monitor(
                "monitor_cond_since",
                MonitorVersion::V3,
                database,
                requests,
                Some(last_txn_id.unwrap_or(zero)),
            )
            .await?;
        let bad = |reason: String| RpcError::MalformedReply { method: "monitor_cond_since".into(), reason };
        let parts: Vec<&RawValue> = serde_json::from_slice(reply.text())
            .ok()
            .filter(|a: &Vec<&RawValue>| a.len() == 3)
            .ok_or_else(|| bad("want [found, txn-id, updates]".into()))?;
        let found: bool = serde_json::from_str(parts[0].get()).map_err(|_| bad("found is not a boolean".into()))?;
        let txn = serde_json::from_str::<String>(parts[1].get()).ok();
        let updates = TableUpdates::from_slice(parts[2].get().as_bytes(), MonitorVersion::V3, !found)
            .map_err(|e| bad(e.to_string()))?;
        Ok((found, txn, updates, m))
    }

    /// `monitor_cancel`; the monitor's stream ends.
    pub async fn monitor_cancel(&self, monitor: &Monitor) -> Result<(), RpcError> {
        self.call("monitor_cancel", json!([monitor.id])).await?;
        self.shared.monitors.lock().expect("monitors lock").remove(&monitor.id);
        Ok(())
    }

    /// `lock`: true when granted now; otherwise a [`LockEvent::Locked`] follows when it is.
    pub async fn lock(&self, id: &str) -> Result<bool, RpcError> {
        self.lock_call("lock", id).await
    }

    /// `steal`: takes the lock from its holder (who gets [`LockEvent::Stolen`]).
    pub async fn steal(&self, id: &str) -> Result<bool, RpcError> {
        self.lock_call("steal", id).await
    }

    /// `unlock`.
    pub async fn unlock(&self, id: &str) -> Result<(), RpcError> {
        self.call("unlock", json!([id])).await.map(drop)
    }

    async fn lock_call(&self, method: &str, id: &str) -> Result<bool, RpcError> {
        let r = self.call(method, json!([id])).await?;
        r.get("locked")
            .and_then(Json::as_bool)
            .ok_or_else(|| RpcError::MalformedReply { method: method.into(), reason: format!("no \"locked\" in {r}") })
    }

    /// Subscribes to lock notifications.
    pub fn lock_events(&self) -> broadcast::Receiver<LockEvent> {
        self.shared.locks.subscribe()
    }
}
