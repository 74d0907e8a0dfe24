//! One JSON-RPC session with an ovsdb-server (RFC 7047 section 4).
//!
//! A reader task splits the stream into messages and routes them: replies to the request
//! waiting for that id, `update*` notifications to their monitor, `locked`/`stolen` to lock
//! watchers, and the server's `echo` requests are answered at once so the server's inactivity
//! probe never drops an idle client. A writer task owns the write half, so a large outgoing
//! transaction never stops incoming messages from being read. When the stream ends, every
//! request in flight fails with [`RpcError::Disconnected`] and every monitor stream ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value as Json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::{RpcError, TransactError};
use crate::framing::{Framer, DEFAULT_MAX_MESSAGE_SIZE};
use crate::monitor::{Monitor, MonitorRequests, MonitorVersion, TableUpdates};
use crate::remote::{Remote, Transport};
use crate::schema::DatabaseSchema;
use crate::transaction::{interpret_text, TransactOutcome, Transaction};

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

/// Part of a message (a reply's `result`, a notification's `params`) as JSON text, still in
/// the buffer the message arrived in. Large results and updates are decoded from the text
/// straight into their final form ([`crate::TableUpdates::from_slice`]); nothing makes a
/// `serde_json::Value` tree of them, nor copies them to route them.
#[derive(Debug)]
pub(crate) struct RawJson {
    message: Vec<u8>,
    range: std::ops::Range<usize>,
}

impl RawJson {
    /// Where `part`, which `serde_json` borrowed from `message`, lies in it.
    fn range_of(message: &[u8], part: Option<&RawValue>) -> Option<std::ops::Range<usize>> {
        let part = part?.get();
        let start = part.as_ptr() as usize - message.as_ptr() as usize;
        debug_assert_eq!(message.get(start..start + part.len()), Some(part.as_bytes()));
        Some(start..start + part.len())
    }

    /// The part of `message` at `range` (from [`RawJson::range_of`]); `null` if none.
    fn cut(message: Vec<u8>, range: Option<std::ops::Range<usize>>) -> RawJson {
        match range {
            Some(range) => RawJson { message, range },
            None => RawJson { message: b"null".to_vec(), range: 0..4 },
        }
    }

    pub(crate) fn text(&self) -> &[u8] {
        &self.message[self.range.clone()]
    }

    fn to_json(&self) -> Result<Json, serde_json::Error> {
        serde_json::from_slice(self.text())
    }
}

type Reply = Result<RawJson, RpcError>;

/// A request written, its reply still to come.
struct Sent {
    id: u64,
    rx: oneshot::Receiver<Reply>,
}

struct Pending {
    method: String,
    reply: oneshot::Sender<Reply>,
}

struct Shared {
    remote: String,
    options: ConnectionOptions,
    next_id: AtomicU64,
    writer: mpsc::UnboundedSender<Vec<u8>>,
    pending: Mutex<HashMap<u64, Pending>>,
    /// Each monitor's channel, carrying the `params` of its notifications.
    monitors: Mutex<HashMap<String, mpsc::UnboundedSender<RawJson>>>,
    locks: broadcast::Sender<LockEvent>,
    /// `Some(reason)` once the session is over.
    closed: watch::Sender<Option<String>>,
    last_heard: Mutex<Instant>,
}

impl Shared {
    fn close(&self, reason: &str) {
        let first = self.closed.send_if_modified(|c| {
            if c.is_none() {
                *c = Some(reason.to_owned());
                true
            } else {
                false
            }
        });
        if first {
            tracing::debug!(remote = %self.remote, reason, "OVSDB session closed");
        }
        let pending: Vec<Pending> = self.pending.lock().expect("pending lock").drain().map(|(_, p)| p).collect();
        for p in pending {
            let _ = p.reply.send(Err(RpcError::Disconnected { reason: reason.to_owned() }));
        }
        self.monitors.lock().expect("monitors lock").clear();
    }

    fn closed_reason(&self) -> Option<String> {
        self.closed.borrow().clone()
    }

    fn send(&self, message: &impl Serialize) -> Result<(), RpcError> {
        let mut bytes = serde_json::to_vec(message).expect("messages serialize to JSON");
        bytes.push(b'\n');
        self.writer.send(bytes).map_err(|_| RpcError::Disconnected {
            reason: self.closed_reason().unwrap_or_else(|| "writer stopped".into()),
        })
    }
}

struct Tasks {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.shared.close("connection dropped by the client");
        for h in &self.handles {
            h.abort();
        }
    }
}

/// A session with an ovsdb-server. Cheap to clone; the session closes when the last clone is
/// dropped, when [`Connection::close`] is called, or when the server goes away.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
    _tasks: Arc<Tasks>,
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
            closed: watch::channel(None).0,
            last_heard: Mutex::new(Instant::now()),
        });
        let mut handles = vec![
            tokio::spawn(read_loop(shared.clone(), read)),
            tokio::spawn(write_loop(shared.clone(), write, writer_rx)),
        ];
        if let Some(interval) = shared.options.inactivity_probe {
            handles.push(tokio::spawn(probe_loop(Arc::downgrade(&shared), interval)));
        }
        let tasks = Arc::new(Tasks { shared: shared.clone(), handles });
        Connection { shared, _tasks: tasks }
    }

    /// The remote this session talks to.
    pub fn remote(&self) -> &str {
        &self.shared.remote
    }

    /// True once the session is over.
    pub fn is_closed(&self) -> bool {
        self.shared.closed_reason().is_some()
    }

    /// Resolves with the reason once the session is over.
    pub async fn closed(&self) -> String {
        let mut rx = self.shared.closed.subscribe();
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                return "connection dropped".into();
            }
        }
    }

    /// Ends the session; requests in flight fail with [`RpcError::Disconnected`].
    pub fn close(&self) {
        self.shared.close("closed by the client");
        for h in &self._tasks.handles {
            h.abort();
        }
    }

    /// Sends any JSON-RPC request and waits for its result.
    pub async fn call(&self, method: &str, params: Json) -> Result<Json, RpcError> {
        let reply = self.request(method, &params).await?;
        reply.to_json().map_err(|e| RpcError::MalformedReply { method: method.to_owned(), reason: e.to_string() })
    }

    /// [`Connection::call`] with any serializable params (written straight to the wire, with
    /// no `serde_json::Value` in between), giving back the result as text.
    pub(crate) async fn request<P: Serialize + ?Sized>(&self, method: &str, params: &P) -> Result<RawJson, RpcError> {
        let sent = self.send_request(method, params)?;
        self.reply(method, sent).await
    }

    /// Writes a request; [`Connection::reply`] waits for its answer. Once this returns,
    /// `params` are no longer needed.
    fn send_request<P: Serialize + ?Sized>(&self, method: &str, params: &P) -> Result<Sent, RpcError> {
        #[derive(Serialize)]
        struct Request<'a, P: ?Sized> {
            method: &'a str,
            params: &'a P,
            id: u64,
        }
        if let Some(reason) = self.shared.closed_reason() {
            return Err(RpcError::Disconnected { reason });
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.shared.pending.lock().expect("pending lock").insert(id, Pending { method: method.to_owned(), reply: tx });
        // The session may have closed between the check and the insert; close() drains
        // `pending` after setting the flag, so re-checking here covers that window.
        if let Some(reason) = self.shared.closed_reason() {
            self.shared.pending.lock().expect("pending lock").remove(&id);
            return Err(RpcError::Disconnected { reason });
        }
        if let Err(e) = self.shared.send(&Request { method, params, id }) {
            self.shared.pending.lock().expect("pending lock").remove(&id);
            return Err(e);
        }
        Ok(Sent { id, rx })
    }

    async fn reply(&self, method: &str, sent: Sent) -> Result<RawJson, RpcError> {
        let timeout = self.shared.options.request_timeout;
        match tokio::time::timeout(timeout, sent.rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(RpcError::Disconnected {
                reason: self.shared.closed_reason().unwrap_or_else(|| "connection dropped".into()),
            }),
            Err(_) => {
                self.shared.pending.lock().expect("pending lock").remove(&sent.id);
                Err(RpcError::Timeout { method: method.to_owned(), after: timeout })
            }
        }
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
        let sent = self.send_request("transact", &tx.params())?;
        let shapes = tx.into_shapes();
        let reply = self.reply("transact", sent).await?;
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

async fn read_loop(shared: Arc<Shared>, mut read: tokio::io::ReadHalf<Box<dyn Transport>>) {
    let mut framer = Framer::new(shared.options.max_message_size);
    let mut buf = vec![0u8; 64 * 1024];
    let mut closed = shared.closed.subscribe();
    let reason = loop {
        let result = tokio::select! {
            r = read.read(&mut buf) => r,
            // Closed elsewhere (probe, write failure): drop the read half so that, with the
            // writer gone too, the socket is closed and the peer sees it.
            _ = closed.wait_for(Option::is_some) => return,
        };
        let n = match result {
            Ok(0) if framer.pending() > 0 => {
                break "the server closed the connection in the middle of a message".to_owned()
            }
            Ok(0) => break "the server closed the connection".to_owned(),
            Ok(n) => n,
            Err(e) => break format!("read failed: {e}"),
        };
        *shared.last_heard.lock().expect("last_heard lock") = Instant::now();
        framer.push(&buf[..n]);
        let mut failed = None;
        loop {
            match framer.next_text().and_then(|msg| msg.map(|m| dispatch(&shared, m)).transpose()) {
                Ok(Some(())) => {}
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        if let Some(reason) = failed {
            tracing::warn!(remote = %shared.remote, %reason, "dropping OVSDB connection");
            break reason;
        }
    };
    shared.close(&reason);
}

async fn write_loop(
    shared: Arc<Shared>,
    mut write: tokio::io::WriteHalf<Box<dyn Transport>>,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    // Stops as soon as the session is closed, even in the middle of a write to a peer that no
    // longer reads: holding the write half would keep the socket open.
    let mut closed = shared.closed.subscribe();
    loop {
        let bytes = tokio::select! {
            m = rx.recv() => match m {
                Some(bytes) => bytes,
                None => return,
            },
            _ = closed.wait_for(Option::is_some) => return,
        };
        let written = tokio::select! {
            r = write.write_all(&bytes) => r,
            _ = closed.wait_for(Option::is_some) => return,
        };
        if let Err(e) = written {
            shared.close(&format!("write failed: {e}"));
            return;
        }
    }
}

async fn probe_loop(shared: std::sync::Weak<Shared>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(s) = shared.upgrade() else { return };
        if s.closed_reason().is_some() {
            return;
        }
        let idle = s.last_heard.lock().expect("last_heard lock").elapsed();
        if idle < interval {
            continue;
        }
        let id = format!("probe-{}", s.next_id.fetch_add(1, Ordering::Relaxed));
        let sent = Instant::now();
        if s.send(&json!({"method": "echo", "params": [], "id": id})).is_err() {
            return;
        }
        drop(s);
        tokio::time::sleep(interval).await;
        let Some(s) = shared.upgrade() else { return };
        // Anything heard since the echo went out (its reply or any other message) proves the
        // server alive. (Comparing the idle time with `interval` instead would close a healthy
        // session whenever the timer overshoots by more than the round trip.)
        if *s.last_heard.lock().expect("last_heard lock") < sent {
            s.close(&format!("no message from the server for {:?} (inactivity probe)", interval * 2));
            return;
        }
    }
}

/// The members of a JSON-RPC message, as text borrowed from it.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    method: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

/// A member that should be a string, if it is one.
fn string(raw: Option<&RawValue>) -> Option<String> {
    raw.and_then(|r| serde_json::from_str(r.get()).ok())
}

/// Routes one message. Invalid JSON is an error that ends the session; valid JSON of the wrong
/// shape is logged and ignored.
fn dispatch(shared: &Shared, message: Vec<u8>) -> Result<(), RpcError> {
    let invalid = |e: serde_json::Error| RpcError::Protocol(format!("invalid JSON message: {e}"));
    if message.first() == Some(&b'[') {
        serde_json::from_slice::<serde::de::IgnoredAny>(&message).map_err(invalid)?;
        tracing::warn!("message that is neither request nor reply ignored");
        return Ok(());
    }
    let envelope: Envelope = match serde_json::from_slice(&message) {
        Ok(e) => e,
        Err(e) if e.is_data() => {
            tracing::warn!(error = %e, "malformed message ignored");
            return Ok(());
        }
        Err(e) => return Err(invalid(e)),
    };
    match (string(envelope.method), envelope.id) {
        (Some(method), Some(id)) => {
            // A request from the server; ovsdb-server only sends echo.
            let reply = if method == "echo" {
                json!({"id": id, "result": envelope.params.unwrap_or_else(|| empty_array()), "error": null})
            } else {
                json!({"id": id, "result": null, "error": format!("unknown method {method}")})
            };
            let _ = shared.send(&reply);
        }
        (Some(method), None) => match method.as_str() {
            "update" | "update2" | "update3" => {
                let first = envelope.params.and_then(|p| serde_json::from_str::<Vec<&RawValue>>(p.get()).ok());
                let mid = string(first.as_ref().and_then(|f| f.first().copied())).unwrap_or_default();
                let params = RawJson::range_of(&message, envelope.params);
                let monitors = shared.monitors.lock().expect("monitors lock");
                match monitors.get(&mid) {
                    Some(tx) => {
                        let _ = tx.send(RawJson::cut(message, params));
                    }
                    None => tracing::debug!(monitor = %mid, "update for an unknown monitor ignored"),
                }
            }
            "locked" | "stolen" => {
                let first = envelope.params.and_then(|p| serde_json::from_str::<Vec<&RawValue>>(p.get()).ok());
                let lock = string(first.as_ref().and_then(|f| f.first().copied())).unwrap_or_default();
                let ev = if method == "locked" { LockEvent::Locked(lock) } else { LockEvent::Stolen(lock) };
                let _ = shared.locks.send(ev);
            }
            other => tracing::debug!(method = other, "unexpected notification ignored"),
        },
        (None, Some(id)) => {
            let Ok(num) = serde_json::from_str::<u64>(id.get()) else {
                // Our own probe echoes use string ids; nothing waits for them.
                if !string(Some(id)).is_some_and(|s| s.starts_with("probe-")) {
                    tracing::warn!(id = %id.get(), "reply with an id this client never used ignored");
                }
                return Ok(());
            };
            let Some(p) = shared.pending.lock().expect("pending lock").remove(&num) else {
                tracing::warn!(id = num, "reply with an id that is not in flight ignored");
                return Ok(());
            };
            let reply = match envelope.error {
                Some(e) => Err(RpcError::Server {
                    method: p.method,
                    error: serde_json::from_str(e.get()).unwrap_or(Json::Null),
                }),
                None => {
                    let result = RawJson::range_of(&message, envelope.result);
                    Ok(RawJson::cut(message, result))
                }
            };
            let _ = p.reply.send(reply);
        }
        (None, None) => tracing::warn!("message that is neither request nor reply ignored"),
    }
    Ok(())
}

fn empty_array() -> &'static RawValue {
    static EMPTY: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| RawValue::from_string("[]".into()).expect("valid JSON"))
}
