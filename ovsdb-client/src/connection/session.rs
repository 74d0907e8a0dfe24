//! The state one session shares between its handle and its tasks: the requests in flight
//! with the senders their replies go to, the monitors' channels, and whether the session is over.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ovs_transport::{Closed, LastHeard};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value as Json;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{ConnectionOptions, LockEvent};
use crate::error::RpcError;

/// Part of a message (a reply's `result`, a notification's `params`) as JSON text, still in
/// the buffer the message arrived in. Large results and updates are decoded from the text
/// straight into their final form ([`crate::TableUpdates::from_slice`]); nothing makes a
/// `serde_json::Value` tree of them, nor copies them to route them.
#[derive(Debug)]
pub(crate) struct RawJson {
    pub(super) message: Vec<u8>,
    pub(super) range: std::ops::Range<usize>,
}

impl RawJson {
    /// Where `part`, which `serde_json` borrowed from `message`, lies in it.
    pub(super) fn range_of(message: &[u8], part: Option<&RawValue>) -> Option<std::ops::Range<usize>> {
        let part = part?.get();
        let start = part.as_ptr() as usize - message.as_ptr() as usize;
        debug_assert_eq!(message.get(start..start + part.len()), Some(part.as_bytes()));
        Some(start..start + part.len())
    }

    /// The part of `message` at `range` (from [`RawJson::range_of`]); `null` if none.
    pub(super) fn cut(message: Vec<u8>, range: Option<std::ops::Range<usize>>) -> RawJson {
        match range {
            Some(range) => RawJson { message, range },
            None => RawJson { message: b"null".to_vec(), range: 0..4 },
        }
    }

    pub(crate) fn text(&self) -> &[u8] {
        &self.message[self.range.clone()]
    }

    pub(super) fn to_json(&self) -> Result<Json, serde_json::Error> {
        serde_json::from_slice(self.text())
    }
}

pub(super) type Reply = Result<RawJson, RpcError>;

/// A request written, its reply still to come.
pub(super) struct Sent {
    id: u64,
    rx: oneshot::Receiver<Reply>,
}

pub(super) struct Pending {
    pub(super) method: String,
    pub(super) reply: oneshot::Sender<Reply>,
}

pub(super) struct Shared {
    pub(super) remote: String,
    pub(super) options: ConnectionOptions,
    pub(super) next_id: AtomicU64,
    pub(super) writer: mpsc::UnboundedSender<Vec<u8>>,
    pub(super) pending: Mutex<HashMap<u64, Pending>>,
    /// Each monitor's channel, carrying the `params` of its notifications.
    pub(super) monitors: Mutex<HashMap<String, mpsc::UnboundedSender<RawJson>>>,
    pub(super) locks: broadcast::Sender<LockEvent>,
    pub(super) closed: Closed,
    pub(super) last_heard: LastHeard,
}

impl Shared {
    pub(super) fn close(&self, reason: &str) {
        if self.closed.close(reason) {
            tracing::debug!(remote = %self.remote, reason, "OVSDB session closed");
        }
        let pending: Vec<Pending> = self.pending.lock().expect("pending lock").drain().map(|(_, p)| p).collect();
        for p in pending {
            let _ = p.reply.send(Err(RpcError::Disconnected { reason: reason.to_owned() }));
        }
        self.monitors.lock().expect("monitors lock").clear();
    }

    pub(super) fn closed_reason(&self) -> Option<String> {
        self.closed.reason()
    }

    pub(super) fn send(&self, message: &impl Serialize) -> Result<(), RpcError> {
        let mut bytes = serde_json::to_vec(message).expect("messages serialize to JSON");
        bytes.push(b'\n');
        self.writer.send(bytes).map_err(|_| RpcError::Disconnected {
            reason: self.closed_reason().unwrap_or_else(|| "writer stopped".into()),
        })
    }

    /// Writes a request; [`Shared::reply`] waits for its answer. Once this returns,
    /// `params` are no longer needed.
    pub(super) fn send_request<P: Serialize + ?Sized>(&self, method: &str, params: &P) -> Result<Sent, RpcError> {
        #[derive(Serialize)]
        struct Request<'a, P: ?Sized> {
            method: &'a str,
            params: &'a P,
            id: u64,
        }
        if let Some(reason) = self.closed_reason() {
            return Err(RpcError::Disconnected { reason });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(id, Pending { method: method.to_owned(), reply: tx });
        // The session may have closed between the check and the insert; close() drains
        // `pending` after setting the flag, so re-checking here covers that window.
        if let Some(reason) = self.closed_reason() {
            self.pending.lock().expect("pending lock").remove(&id);
            return Err(RpcError::Disconnected { reason });
        }
        if let Err(e) = self.send(&Request { method, params, id }) {
            self.pending.lock().expect("pending lock").remove(&id);
            return Err(e);
        }
        Ok(Sent { id, rx })
    }

    pub(super) async fn reply(&self, method: &str, sent: Sent) -> Result<RawJson, RpcError> {
        let timeout = self.options.request_timeout;
        match tokio::time::timeout(timeout, sent.rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(RpcError::Disconnected {
                reason: self.closed_reason().unwrap_or_else(|| "connection dropped".into()),
            }),
            Err(_) => {
                self.pending.lock().expect("pending lock").remove(&sent.id);
                Err(RpcError::Timeout { method: method.to_owned(), after: timeout })
            }
        }
    }
}

impl ovs_transport::Session for Shared {
    fn close(&self, reason: &str) {
        Shared::close(self, reason);
    }
}

impl ovs_transport::Probed for Shared {
    const PEER: &'static str = "the server";

    fn closed(&self) -> &Closed {
        &self.closed
    }

    fn last_heard(&self) -> &LastHeard {
        &self.last_heard
    }

    fn send_probe(&self) -> bool {
        // A string id: dispatch() knows replies to it wait for nothing.
        let id = format!("probe-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        self.send(&serde_json::json!({"method": "echo", "params": [], "id": id})).is_ok()
    }
}
