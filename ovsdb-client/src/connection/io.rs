//! The session's tasks: the reader that splits the stream into messages and routes each one,
//! and the writer that owns the write half.

use std::sync::Arc;

use ovs_transport::{write_until_closed, Transport};
use serde_json::value::RawValue;
use serde_json::{json, Value as Json};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::session::{RawJson, Shared};
use super::LockEvent;
use crate::error::RpcError;
use crate::framing::Framer;

pub(super) async fn read_loop(shared: Arc<Shared>, mut read: tokio::io::ReadHalf<Box<dyn Transport>>) {
    let mut framer = Framer::new(shared.options.max_message_size);
    let mut buf = vec![0u8; 64 * 1024];
    let mut closed = shared.closed.watch();
    let reason = loop {
        let result = tokio::select! {
            r = read.read(&mut buf) => r,
            // Closed elsewhere (probe, write failure): drop the read half so that, with the
            // writer gone too, the socket is closed and the peer sees it.
            _ = closed.closed() => return,
        };
        let n = match result {
            Ok(0) if framer.pending() > 0 => {
                break "the server closed the connection in the middle of a message".to_owned()
            }
            Ok(0) => break "the server closed the connection".to_owned(),
            Ok(n) => n,
            Err(e) => break format!("read failed: {e}"),
        };
        shared.last_heard.touch();
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

pub(super) async fn write_loop(
    shared: Arc<Shared>,
    write: tokio::io::WriteHalf<Box<dyn Transport>>,
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    if let Err(e) = write_until_closed(write, rx, shared.closed.watch()).await {
        shared.close(&format!("write failed: {e}"));
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
