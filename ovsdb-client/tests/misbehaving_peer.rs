//! The client against a fake server that misbehaves: truncated or garbage bytes, unknown ids,
//! huge messages, silence, server-initiated echo, stray notifications, odd write boundaries.
//!
//! Every case must end in a result or an error, never a panic or a hang: each await on the
//! client is bounded by [`within`], so a hang fails the test with a message instead of blocking
//! the suite.

use std::future::Future;
use std::time::{Duration, Instant};

use ovsdb_client::framing::Framer;
use ovsdb_client::{
    Client, ClientOptions, Connection, ConnectionOptions, MonitorRequests, Remote, RpcError, TransactError, Transaction,
};
use serde_json::{json, Value as Json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// Upper bound for anything that should happen promptly.
const PROMPT: Duration = Duration::from_secs(10);

/// Awaits `f`, failing the test (not hanging it) if it takes longer than `limit`.
async fn within<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("hung: {what} did not finish within {limit:?}"),
    }
}

/// No probe (so the fake server sees only what the test sends) and a short request timeout.
fn quiet_options() -> ConnectionOptions {
    ConnectionOptions { request_timeout: Duration::from_secs(5), inactivity_probe: None, ..Default::default() }
}

/// An inactivity probe of `probe`, and a request timeout (30 s) far longer, so that only the
/// probe can end a session that stops answering.
fn probing(probe: Duration) -> ConnectionOptions {
    ConnectionOptions { request_timeout: Duration::from_secs(30), inactivity_probe: Some(probe), ..Default::default() }
}

/// The server end of a connection: reads whole JSON messages, writes raw bytes.
struct Peer {
    stream: UnixStream,
    framer: Framer,
}

impl Peer {
    /// The next message from the client; panics when the client closed the connection.
    async fn recv(&mut self) -> Json {
        self.try_recv().await.expect("the client closed the connection")
    }

    /// The next message, or `None` at EOF (or a reset).
    async fn try_recv(&mut self) -> Option<Json> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if let Some(m) = self.framer.next_message().expect("the client sends valid JSON") {
                return Some(m);
            }
            match self.stream.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.framer.push(&buf[..n]),
            }
        }
    }

    /// The next request from the client, checked to have `method`; returns its id.
    async fn expect_request(&mut self, method: &str) -> Json {
        let m = within(PROMPT, "the client's request", self.recv()).await;
        assert_eq!(m["method"], method, "unexpected message {m}");
        m["id"].clone()
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to the client");
    }

    async fn send(&mut self, msg: &Json) {
        let mut bytes = serde_json::to_vec(msg).unwrap();
        bytes.push(b'\n');
        self.write(&bytes).await;
    }

    async fn reply(&mut self, id: &Json, result: Json) {
        self.send(&json!({"id": id, "result": result, "error": null})).await;
    }
}

/// A fake server on a unix socket in a temp dir, and a client session to it.
async fn connect(options: ConnectionOptions) -> (Connection, Peer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fake.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let remote: Remote = format!("unix:{}", path.display()).parse().unwrap();
    let (conn, accepted) = within(PROMPT, "connect", async {
        tokio::join!(Connection::connect_with(&remote, options), listener.accept())
    })
    .await;
    let conn = conn.expect("connect to the fake server");
    let (stream, _) = accepted.unwrap();
    (conn, Peer { stream, framer: Framer::default() }, dir)
}

/// Starts `conn.call(method, params)` in the background.
fn call(conn: &Connection, method: &str, params: Json) -> tokio::task::JoinHandle<Result<Json, RpcError>> {
    let conn = conn.clone();
    let method = method.to_owned();
    tokio::spawn(async move { conn.call(&method, params).await })
}

async fn finish<T>(h: tokio::task::JoinHandle<T>, what: &str) -> T {
    within(PROMPT, what, h).await.expect("the call task panicked")
}

/// Asserts that the session still works: a `list_dbs` the fake server answers gets its answer.
async fn assert_session_works(conn: &Connection, peer: &mut Peer) {
    let pending = call(conn, "list_dbs", json!([]));
    let id = peer.expect_request("list_dbs").await;
    peer.reply(&id, json!(["Open_vSwitch"])).await;
    assert_eq!(finish(pending, "list_dbs").await.unwrap(), json!(["Open_vSwitch"]));
}

/// Opens a `monitor_cond` of `requests` through `conn`, answered by `peer` with no initial
/// rows; returns the request the fake server saw and the monitor.
async fn open_monitor(conn: &Connection, peer: &mut Peer, requests: MonitorRequests) -> (Json, ovsdb_client::Monitor) {
    let c = conn.clone();
    let monitor = tokio::spawn(async move { c.monitor_cond("Open_vSwitch", &requests).await });
    let req = within(PROMPT, "monitor_cond", peer.recv()).await;
    assert_eq!(req["method"], "monitor_cond");
    peer.reply(&req["id"], json!({})).await;
    let (initial, monitor) = finish(monitor, "monitor_cond").await.unwrap();
    assert!(initial.is_empty());
    (req, monitor)
}

fn disconnected_reason(r: Result<Json, RpcError>) -> String {
    match r {
        Err(RpcError::Disconnected { reason }) => reason,
        other => panic!("want RpcError::Disconnected, got {other:?}"),
    }
}

#[tokio::test]
async fn truncated_json_then_close_is_disconnected_mid_message() {
    let (conn, mut peer, _dir) = connect(quiet_options()).await;
    let pending = call(&conn, "list_dbs", json!([]));
    let id = peer.expect_request("list_dbs").await;
    peer.write(format!(r#"{{"id":{id},"result":["Open_vSw"#).as_bytes()).await;
    drop(peer);
    let reason = disconnected_reason(finish(pending, "list_dbs").await);
    assert!(reason.contains("middle of a message"), "{reason}");
    assert!(conn.is_closed());
    // Later requests fail at once with the same reason.
    let e = within(PROMPT, "call after close", conn.call("list_dbs", json!([]))).await.unwrap_err();
    assert!(e.to_string().contains("middle of a message"), "{e}");
}

#[tokio::test]
async fn close_between_messages_is_disconnected() {
    let (conn, mut peer, _dir) = connect(quiet_options()).await;
    let pending = call(&conn, "list_dbs", json!([]));
    peer.expect_request("list_dbs").await;
    drop(peer);
    let reason = disconnected_reason(finish(pending, "list_dbs").await);
    assert_eq!(reason, "the server closed the connection");
    let closed = within(PROMPT, "closed()", conn.closed()).await;
    assert_eq!(closed, reason);
}

#[tokio::test]
async fn garbage_bytes_are_a_protocol_error() {
    let (conn, mut peer, _dir) = connect(quiet_options()).await;
    let pending = call(&conn, "list_dbs", json!([]));
    peer.expect_request("list_dbs").await;
    peer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
    let reason = disconnected_reason(finish(pending, "list_dbs").await);
    assert!(reason.contains("protocol error"), "{reason}");
    // The client hangs up: a stream that lost its framing cannot be trusted again.
    assert_eq!(within(PROMPT, "the client to hang up", peer.try_recv()).await, None);
}

#[tokio::test]
async fn invalid_json_inside_an_object_is_a_protocol_error() {
    let (conn, mut peer, _dir) = connect(quiet_options()).await;
    let pending = call(&conn, "list_dbs", json!([]));
    let id = peer.expect_request("list_dbs").await;
    peer.write(format!(r#"{{"id":{id},"result":[tru]}}"#).as_bytes()).await;
    let reason = disconnected_reason(finish(pending, "list_dbs").await);
    assert!(reason.contains("protocol error") && reason.contains("invalid JSON"), "{reason}");
}

#[tokio::test]
async fn replies_with_unknown_ids_are_ignored() {
    let (conn, mut peer, _dir) = connect(quiet_options()).await;
    let pending = call(&conn, "list_dbs", json!([]));
    let id = peer.expect_request("list_dbs").await;
    peer.send(&json!({"id": 999_999, "result": ["wrong"], "error": null})).await;
    peer.send(&json!({"id": "not-ours", "result": ["wrong"], "error": null})).await;
    peer.send(&json!({"id": -1, "result": ["wrong"], "error": null})).await;
    peer.send(&json!({"id": 999_998, "result": null, "error": "bogus"})).await;
    peer.reply(&id, json!(["Open_vSwitch"])).await;
    let dbs = finish(pending, "list_dbs").await.unwrap();
    assert_eq!(dbs, json!(["Open_vSwitch"]));
    assert!(!conn.is_closed());
}

#[tokio::test]
async fn server_error_object_is_rpc_server_error() {
    let (conn, mut peer, _dir) = connect(quiet_options()).await;
    let pending = call(&conn, "frobnicate", json!([]));
    let id = peer.expect_request("frobnicate").await;
    peer.send(&json!({"id": id, "result": null, "error": "unknown method"})).await;
    match finish(pending, "frobnicate").await {
        Err(e @ RpcError::Server { .. }) => assert!(e.is_unknown_method(), "{e}"),
        other => panic!("want RpcError::Server, got {other:?}"),
    }
    assert!(!conn.is_closed());
}

#[tokio::test]
async fn malformed_replies_are_typed_errors_not_panics() {
    let (conn, mut peer, _dir) = connect(quiet_options()).await;
    // list_dbs answered with something that is not a list of names.
    let c = conn.clone();
    let pending = tokio::spawn(async move { c.list_dbs().await });
    let id = peer.expect_request("list_dbs").await;
    peer.reply(&id, json!({"not": "a list"})).await;
    let e = finish(pending, "list_dbs").await.unwrap_err();
    assert!(matches!(e, RpcError::MalformedReply { .. }), "{e:?}");

    // transact answered with fewer results than operations.
    let c = conn.clone();
    let pending = tokio::spawn(async move {
        let mut tx = Transaction::new("Open_vSwitch");
        tx.select("Bridge", vec![], None);
        tx.comment("two ops");
        c.transact(&tx).await
    });
    let id = peer.expect_request("transact").await;
    peer.reply(&id, json!([{"rows": []}])).await;
    let e = finish(pending, "transact").await.unwrap_err();
    assert!(matches!(e, TransactError::MalformedReply(_)), "{e:?}");

    // get_schema answered with something that is not a schema.
    let c = conn.clone();
    let pending = tokio::spawn(async move { c.get_schema("Open_vSwitch").await });
    let id = peer.expect_request("get_schema").await;
    peer.reply(&id, json!(42)).await;
    let e = finish(pending, "get_schema").await.unwrap_err();
    assert!(matches!(e, RpcError::MalformedReply { .. }), "{e:?}");
    assert!(!conn.is_closed(), "a malformed reply fails the request, not the session");
}

fn big_reply(id: &Json, len: usize) -> Vec<u8> {
    let mut msg = format!(r#"{{"id":{id},"error":null,"result":""#).into_bytes();
    msg.resize(msg.len() + len, b'x');
    msg.extend_from_slice(b"\"}\n");
    msg
}

#[tokio::test]
async fn fifty_megabyte_reply_is_delivered_intact() {
    const LEN: usize = 50 << 20;
    let (conn, mut peer, _dir) = connect(quiet_options()).await;
    let pending = call(&conn, "echo", json!(["big"]));
    let id = peer.expect_request("echo").await;
    let msg = big_reply(&id, LEN);
    let writer = tokio::spawn(async move {
        peer.write(&msg).await;
        peer
    });
    let result = within(Duration::from_secs(60), "a 50 MB reply", pending).await.unwrap().unwrap();
    let s = result.as_str().expect("a string result");
    assert_eq!(s.len(), LEN);
    assert!(s.bytes().all(|b| b == b'x'));
    let mut peer = within(PROMPT, "the writer", writer).await.unwrap();
    // The session goes on after the big message.
    assert_session_works(&conn, &mut peer).await;
}

#[tokio::test]
async fn fifty_megabyte_reply_over_the_limit_is_an_error() {
    const LEN: usize = 50 << 20;
    let options = ConnectionOptions { max_message_size: 1 << 20, ..quiet_options() };
    let (conn, mut peer, _dir) = connect(options).await;
    let pending = call(&conn, "echo", json!(["big"]));
    let id = peer.expect_request("echo").await;
    let msg = big_reply(&id, LEN);
    // The client stops reading once the limit is passed, so this write fails (EPIPE / reset)
    // when the client hangs up; it must not block for ever.
    let writer = tokio::spawn(async move { peer.stream.write_all(&msg).await });
    let reason = disconnected_reason(finish(pending, "echo over the limit").await);
    assert!(reason.contains("larger than the 1048576 byte limit"), "{reason}");
    let written = within(PROMPT, "the server's write to fail once the client hangs up", writer).await.unwrap();
    assert!(written.is_err(), "the client read all 50 MB despite a 1 MB limit");
}

#[tokio::test]
async fn close_in_the_middle_of_a_large_message_ends_requests_and_monitors() {
    let (conn, mut peer, _dir) = connect(quiet_options()).await;
    // A monitor, so that its stream must end too.
    let (_, mut monitor) = open_monitor(&conn, &mut peer, MonitorRequests::new().table::<&str>("Bridge", [])).await;

    let pending = call(&conn, "echo", json!([]));
    let id = peer.expect_request("echo").await;
    let msg = big_reply(&id, 4 << 20);
    // Half of it, in several writes, then hang up. Each write is larger than the socket's
    // buffer, so it returns only once the client has read most of it.
    for chunk in msg[..msg.len() / 2].chunks(256 * 1024) {
        peer.write(chunk).await;
    }
    drop(peer);
    let reason = disconnected_reason(finish(pending, "echo").await);
    assert!(reason.contains("middle of a message"), "{reason}");
    assert!(within(PROMPT, "the monitor stream to end", monitor.next()).await.is_none());
}

#[tokio::test]
async fn silent_server_times_out_and_a_late_reply_is_dropped() {
    let options = ConnectionOptions { request_timeout: Duration::from_millis(300), ..quiet_options() };
    let (conn, mut peer, _dir) = connect(options).await;
    let started = Instant::now();
    let pending = call(&conn, "list_dbs", json!([]));
    let late_id = peer.expect_request("list_dbs").await;
    match finish(pending, "list_dbs").await {
        Err(RpcError::Timeout { method, after }) => {
            assert_eq!(method, "list_dbs");
            assert_eq!(after, Duration::from_millis(300));
        }
        other => panic!("want RpcError::Timeout, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3), "{took:?}");
    // The late reply arrives with the next request's; only the right one resolves it.
    let pending = call(&conn, "list_dbs", json!([]));
    let id = peer.expect_request("list_dbs").await;
    peer.reply(&late_id, json!(["late"])).await;
    peer.reply(&id, json!(["on time"])).await;
    assert_eq!(finish(pending, "list_dbs").await.unwrap(), json!(["on time"]));
}

#[tokio::test]
async fn inactivity_probe_closes_a_server_that_stopped_answering() {
    let probe = Duration::from_millis(200);
    let options = probing(probe);
    let (conn, mut peer, _dir) = connect(options).await;
    let started = Instant::now();
    // A request the server reads and never answers; the probe must fail it long before its
    // 30 s timeout.
    let pending = call(&conn, "list_dbs", json!([]));
    peer.expect_request("list_dbs").await;
    let reason = within(PROMPT, "the inactivity probe to close the session", conn.closed()).await;
    assert!(reason.contains("inactivity probe"), "{reason}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?} with a {probe:?} probe");
    let r = disconnected_reason(finish(pending, "list_dbs").await);
    assert!(r.contains("inactivity probe"), "{r}");
    // The client sent its probe echo, then hung up the socket (while `conn` is still alive).
    let echo = within(PROMPT, "the probe echo", peer.recv()).await;
    assert_eq!(echo["method"], "echo", "{echo}");
    assert_eq!(within(PROMPT, "the client to hang up after the probe failed", peer.try_recv()).await, None);
    drop(conn);
}

#[tokio::test]
async fn inactivity_probe_closes_a_server_that_stopped_reading() {
    let probe = Duration::from_millis(200);
    let options = probing(probe);
    let (conn, peer, _dir) = connect(options).await;
    // 32 MB does not fit in the socket buffers: the client's writer blocks on a server that
    // never reads, and the probe echo queues behind it.
    let pending = call(&conn, "echo", json!(["y".repeat(32 << 20)]));
    let reason = within(PROMPT, "the inactivity probe to close the session", conn.closed()).await;
    assert!(reason.contains("inactivity probe"), "{reason}");
    let r = disconnected_reason(finish(pending, "the blocked echo").await);
    assert!(r.contains("inactivity probe"), "{r}");
    // The blocked write was abandoned and the socket closed: the server reads what was
    // buffered, then EOF.
    let mut stream = peer.stream;
    let mut sink = Vec::new();
    let n = within(PROMPT, "EOF on the server side", stream.read_to_end(&mut sink)).await;
    assert!(n.is_ok_and(|n| n < 32 << 20), "the server should see a partial request, then EOF");
}

#[tokio::test]
async fn inactivity_probe_keeps_a_session_that_answers_echo() {
    let probe = Duration::from_millis(100);
    let options = ConnectionOptions { inactivity_probe: Some(probe), ..quiet_options() };
    let (conn, mut peer, _dir) = connect(options).await;
    let (count, mut echoes) = tokio::sync::watch::channel(0u32);
    let answered = tokio::spawn(async move {
        while let Some(m) = peer.try_recv().await {
            if m["method"] == "echo" {
                peer.reply(&m["id"], m["params"].clone()).await;
                count.send_modify(|n| *n += 1);
            }
        }
    });
    // Five probes answered: the session stayed idle for five probe intervals and more, and the
    // client never gave up on it.
    let started = Instant::now();
    within(PROMPT, "five probes answered", echoes.wait_for(|n| *n >= 5)).await.expect("the fake server runs");
    assert!(!conn.is_closed(), "closed although the server answered: {:?}", conn.closed().await);
    assert!(started.elapsed() >= probe * 4, "five probes in {:?}, faster than one per {probe:?}", started.elapsed());
    conn.close();
    within(PROMPT, "the fake server to see EOF", answered).await.unwrap();
}

#[tokio::test]
async fn server_echo_request_gets_a_proper_reply() {
    let (conn, mut peer, _dir) = connect(quiet_options()).await;
    for id in [json!("srv-1"), json!(17), json!(["odd", "id"])] {
        peer.send(&json!({"method": "echo", "params": ["hello", {"n": 1}], "id": id})).await;
        let reply = within(PROMPT, "the echo reply", peer.recv()).await;
        assert_eq!(reply, json!({"id": id, "result": ["hello", {"n": 1}], "error": null}));
    }
    // Any other request from the server gets an error reply, not silence.
    peer.send(&json!({"method": "frob", "params": [], "id": "srv-2"})).await;
    let reply = within(PROMPT, "the error reply", peer.recv()).await;
    assert_eq!(reply["id"], "srv-2");
    assert!(reply["result"].is_null());
    assert!(reply["error"].as_str().unwrap().contains("frob"), "{reply}");
    assert!(!conn.is_closed());
}

#[tokio::test]
async fn notifications_for_unknown_monitors_are_ignored() {
    let (conn, mut peer, _dir) = connect(quiet_options()).await;
    let (req, mut monitor) = open_monitor(&conn, &mut peer, MonitorRequests::new().table("Bridge", ["name"])).await;
    let mid = req["params"][1].clone();
    assert_eq!(json!(monitor.id()), mid);

    let u1 = "11111111-1111-1111-1111-111111111111";
    let u2 = "22222222-2222-2222-2222-222222222222";
    for (method, params) in [
        ("update", json!(["no-such-monitor", {"Bridge": {u1: {"new": {"name": "a"}}}}])),
        ("update2", json!(["no-such-monitor", {"Bridge": {u1: {"insert": {"name": "a"}}}}])),
        ("update3", json!(["no-such-monitor", "00000000-0000-0000-0000-000000000000", {}])),
        ("update2", json!([null, {}])),
        ("update2", json!("not even an array")),
        ("surprise", json!([])),
        ("locked", json!(["some-lock"])),
    ] {
        peer.send(&json!({"method": method, "params": params, "id": null})).await;
    }
    peer.send(&json!({"method": "update2", "params": [mid, {"Bridge": {u2: {"insert": {"name": "b"}}}}], "id": null}))
        .await;
    let event = within(PROMPT, "the real update", monitor.next()).await.unwrap().unwrap();
    let rows = &event.updates.tables["Bridge"];
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0.to_string(), u2);
    // The session is still fine.
    assert_session_works(&conn, &mut peer).await;
}

#[tokio::test]
async fn several_messages_in_one_write() {
    let (conn, mut peer, _dir) = connect(quiet_options()).await;
    let calls: Vec<_> = (0..3).map(|i| call(&conn, "echo", json!([i]))).collect();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let m = within(PROMPT, "a request", peer.recv()).await;
        ids.push((m["id"].clone(), m["params"].clone()));
    }
    // Replies in reverse order, a server echo request in between, all in one write with no
    // separators at all.
    let mut bytes = Vec::new();
    for (i, (id, params)) in ids.iter().rev().enumerate() {
        bytes.extend(serde_json::to_vec(&json!({"id": id, "result": params, "error": null})).unwrap());
        if i == 1 {
            bytes.extend(br#"{"method":"echo","params":["in between"],"id":"e1"}"#);
        }
    }
    peer.write(&bytes).await;
    for (i, c) in calls.into_iter().enumerate() {
        assert_eq!(finish(c, "echo").await.unwrap(), json!([i]));
    }
    let echo = within(PROMPT, "the echo reply", peer.recv()).await;
    assert_eq!(echo, json!({"id": "e1", "result": ["in between"], "error": null}));
}

#[tokio::test]
async fn one_message_split_across_many_writes_with_delays() {
    let (conn, mut peer, _dir) = connect(quiet_options()).await;
    let pending = call(&conn, "echo", json!([]));
    let id = peer.expect_request("echo").await;
    // Braces, brackets, quotes and backslashes inside strings, non-ASCII text, and a cut at
    // every few bytes (so cuts land inside escapes and multi-byte characters).
    let result = json!(["a\"]}{\\", "\\\"", {"k}": ["[", "]"], "ünïcødé ✓": null}, 12.5, -3, true]);
    let text = serde_json::to_vec(&json!({"id": id, "result": result, "error": null})).unwrap();
    for chunk in text.chunks(3) {
        peer.write(chunk).await;
        // Spacing the writes is the input under test, not a wait for anything: it lets the
        // client read the message a few bytes at a time. Nothing asserted depends on how the
        // reads fall.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(finish(pending, "echo").await.unwrap(), result);
}

#[tokio::test]
async fn client_connect_to_a_missing_socket_fails_fast_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("db.sock");
    let remote: Remote = format!("unix:{}", path.display()).parse().unwrap();
    let started = Instant::now();
    let r = within(PROMPT, "Client::connect", Client::connect(ClientOptions::new(remote, "Open_vSwitch"))).await;
    let took = started.elapsed();
    let e = match r {
        Err(e) => e,
        Ok(_) => panic!("connected to a socket that does not exist"),
    };
    assert!(matches!(e, RpcError::Connect { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}
