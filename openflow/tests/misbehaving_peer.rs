//! The client against a fake switch on a unix socket that misbehaves: wrong hello versions,
//! garbage, lengths shorter than a header or longer than what follows, replies with unknown
//! xids or of the wrong version, a close in the middle of a bundle, error replies, silence.
//! Every case must end in a typed error (or the right result), never a panic or a hang: each
//! await is bounded by `within`.

use std::future::Future;
use std::time::{Duration, Instant};

use openflow_client::header::msg_type;
use openflow_client::{
    encode_flow_stats_reply, Action, ClientError, Connection, ConnectionOptions, DecodeError, Flow, FlowCookie,
    FlowMod, FlowStats, FlowStatsRequest, Framer, Header, Match, Target, OFP13_VERSION, OFP14_VERSION,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

const PROMPT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(PROMPT, f).await.unwrap_or_else(|_| panic!("hung: {what} did not finish in {PROMPT:?}"))
}

fn quiet() -> ConnectionOptions {
    ConnectionOptions { request_timeout: Duration::from_millis(800), inactivity_probe: None, ..Default::default() }
}

/// The switch's end.
struct Peer {
    stream: UnixStream,
    framer: Framer,
}

impl Peer {
    /// The next whole message from the client, or None at EOF.
    async fn recv(&mut self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if let Some(m) = self.framer.next_message().expect("the client sends valid frames") {
                return Some(m.to_vec());
            }
            match self.stream.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.framer.push(&buf[..n]),
            }
        }
    }

    async fn expect(&mut self, t: u8) -> Header {
        let m = within("the client's message", self.recv()).await.expect("client closed");
        let h = Header::parse(&m).unwrap();
        assert_eq!(h.msg_type, t, "want type {t}, got {h:?}");
        h
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to the client");
    }

    /// A message with `body`.
    async fn msg(&mut self, version: u8, t: u8, xid: u32, body: &[u8]) {
        self.send(&msg(version, t, xid, body)).await;
    }
}

fn msg(version: u8, t: u8, xid: u32, body: &[u8]) -> Vec<u8> {
    let len = (8 + body.len()) as u16;
    let mut m = vec![version, t];
    m.extend_from_slice(&len.to_be_bytes());
    m.extend_from_slice(&xid.to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn hello(version: u8, bitmap: Option<u32>) -> Vec<u8> {
    let body = match bitmap {
        Some(b) => [&[0u8, 1, 0, 8][..], &b.to_be_bytes()].concat(),
        None => vec![],
    };
    msg(version, msg_type::HELLO, 1, &body)
}

fn features_reply(version: u8, xid: u32) -> Vec<u8> {
    let body = [&0x1234u64.to_be_bytes()[..], &[0, 0, 1, 0, 254, 0, 0, 0, 0, 0, 0, 0x4f, 0, 0, 0, 0]].concat();
    msg(version, msg_type::FEATURES_REPLY, xid, &body)
}

struct Fake {
    listener: UnixListener,
    target: Target,
    _dir: tempfile::TempDir,
}

fn fake() -> Fake {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sw.mgmt");
    Fake { listener: UnixListener::bind(&path).unwrap(), target: Target::Unix(path), _dir: dir }
}

/// Connects; the peer answers the hello with `peer_hello` and nothing else.
async fn handshake_with(peer_hello: Vec<u8>) -> (Result<Connection, ClientError>, Peer) {
    let f = fake();
    let client = Connection::connect(&f.target, quiet());
    let server = async {
        let (stream, _) = f.listener.accept().await.unwrap();
        let mut p = Peer { stream, framer: Framer::new() };
        p.expect(msg_type::HELLO).await;
        p.send(&peer_hello).await;
        p
    };
    within("handshake", async { tokio::join!(client, server) }).await
}

/// A session at `version` whose peer answered hello and features properly.
async fn session(version: u8, options: ConnectionOptions) -> (Connection, Peer, Fake) {
    let f = fake();
    let client = Connection::connect(&f.target, options);
    let server = async {
        let (stream, _) = f.listener.accept().await.unwrap();
        let mut p = Peer { stream, framer: Framer::new() };
        p.expect(msg_type::HELLO).await;
        p.send(&hello(version, Some(1 << version))).await;
        let h = p.expect(msg_type::FEATURES_REQUEST).await;
        p.send(&features_reply(version, h.xid)).await;
        p
    };
    let (c, p) = within("session", async { tokio::join!(client, server) }).await;
    (c.expect("session up"), p, f)
}

#[tokio::test]
async fn hello_of_a_version_we_do_not_speak_is_refused_with_an_error_to_the_peer() {
    for h in [hello(0x01, None), hello(0x06, Some(1 << 6)), hello(0x04, Some(0x02))] {
        let (c, mut p) = handshake_with(h.clone()).await;
        let e = c.unwrap_err();
        assert!(matches!(e, ClientError::Handshake { .. }), "{h:?}: {e:?}");
        assert!(e.to_string().contains("no common version"), "{e}");
        // OpenFlow says: tell the peer with OFPET_HELLO_FAILED / OFPHFC_INCOMPATIBLE.
        let m = within("error to the peer", p.recv()).await.expect("an error message");
        assert_eq!(m[1], msg_type::ERROR);
        assert_eq!(&m[8..12], [0, 0, 0, 0]);
    }
    // A peer that says only "1.5" without a bitmap: we speak 1.4, it must fall back to ours.
    let (c, mut p) = handshake_with(hello(0x06, None)).await;
    // The handshake itself succeeds at 1.4; features then get no reply: a timeout, typed.
    let _ = p.expect(msg_type::FEATURES_REQUEST).await;
    assert!(matches!(c, Err(ClientError::Timeout { .. })), "{c:?}");
}

#[tokio::test]
async fn garbage_or_silence_instead_of_a_hello() {
    // A header whose length is below 8.
    let (c, _p) = handshake_with(vec![4, 0, 0, 3, 0, 0, 0, 1]).await;
    assert!(matches!(c, Err(ClientError::Protocol(DecodeError::BadLength { len: 3, .. }))), "{c:?}");
    // Text: its "length" is large; the peer then closes.
    let f = fake();
    let client = Connection::connect(&f.target, quiet());
    let server = async {
        let (mut s, _) = f.listener.accept().await.unwrap();
        let mut b = [0u8; 16];
        s.read_exact(&mut b).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    };
    let (c, ()) = within("garbage", async { tokio::join!(client, server) }).await;
    assert!(matches!(c, Err(ClientError::Handshake { .. })), "{c:?}");
    // Another message before the hello.
    let (c, _p) = handshake_with(msg(4, msg_type::BARRIER_REPLY, 1, &[])).await;
    assert!(c.unwrap_err().to_string().contains("BARRIER_REPLY before its hello"));
    // Silence: the hello times out.
    let f = fake();
    let started = Instant::now();
    let client = Connection::connect(&f.target, quiet());
    let server = async { f.listener.accept().await.unwrap() };
    let (c, _s) = within("silent hello", async { tokio::join!(client, server) }).await;
    assert!(matches!(c, Err(ClientError::Timeout { ref request, .. }) if request == "hello"), "{c:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn short_and_huge_frames_end_the_session_with_typed_errors() {
    // Length shorter than the header, mid-session: the request in flight is Disconnected with
    // the reason, later ones too.
    let (c, mut p, _f) = session(OFP14_VERSION, quiet()).await;
    let req = tokio::spawn({
        let c = c.clone();
        async move { c.barrier().await }
    });
    p.expect(msg_type::BARRIER_REQUEST).await;
    p.send(&[5, 21, 0, 4, 0, 0, 0, 2]).await;
    let e = within("barrier", req).await.unwrap().unwrap_err();
    let ClientError::Disconnected { reason } = &e else { panic!("{e:?}") };
    assert!(reason.contains("shorter than the 8-byte header"), "{reason}");
    assert!(matches!(c.echo().await, Err(ClientError::Disconnected { .. })));

    // A huge length, then the peer closes: "in the middle of a message".
    let (c, mut p, _f) = session(OFP14_VERSION, quiet()).await;
    let req = tokio::spawn({
        let c = c.clone();
        async move { c.barrier().await }
    });
    let h = p.expect(msg_type::BARRIER_REQUEST).await;
    let mut big = msg(5, msg_type::BARRIER_REPLY, h.xid, &[0; 100]);
    big[2..4].copy_from_slice(&0xffffu16.to_be_bytes());
    p.send(&big).await;
    drop(p);
    let e = within("barrier", req).await.unwrap().unwrap_err();
    assert!(e.to_string().contains("in the middle of a message"), "{e}");

    // A huge length and silence: the request times out; the session is not wedged forever.
    let (c, mut p, _f) = session(OFP14_VERSION, quiet()).await;
    let req = tokio::spawn({
        let c = c.clone();
        async move { c.barrier().await }
    });
    let h = p.expect(msg_type::BARRIER_REQUEST).await;
    let mut big = msg(5, msg_type::BARRIER_REPLY, h.xid, &[0; 100]);
    big[2..4].copy_from_slice(&0xffffu16.to_be_bytes());
    p.send(&big).await;
    let e = within("barrier", req).await.unwrap().unwrap_err();
    assert!(matches!(e, ClientError::Timeout { .. }), "{e:?}");
}

#[tokio::test]
async fn unknown_xids_wrong_versions_and_error_replies() {
    let (c, mut p, _f) = session(OFP14_VERSION, quiet()).await;
    // A reply with an xid never used is ignored; the real reply still completes the request.
    let req = tokio::spawn({
        let c = c.clone();
        async move { c.barrier().await }
    });
    let h = p.expect(msg_type::BARRIER_REQUEST).await;
    p.msg(5, msg_type::BARRIER_REPLY, 0xdead_beef, &[]).await;
    p.msg(5, msg_type::PORT_STATUS, 0, &[0; 8]).await;
    p.msg(5, msg_type::BARRIER_REPLY, h.xid, &[]).await;
    within("barrier", req).await.unwrap().expect("barrier after a stray reply");

    // An error reply names the request and decodes the type and code.
    let req = tokio::spawn({
        let c = c.clone();
        async move { c.echo().await }
    });
    let h = p.expect(msg_type::ECHO_REQUEST).await;
    let mut body = vec![0, 1, 0, 1];
    body.extend_from_slice(&msg(5, msg_type::ECHO_REQUEST, h.xid, b"ofc"));
    p.msg(5, msg_type::ERROR, h.xid, &body).await;
    let e = within("echo", req).await.unwrap().unwrap_err();
    let ClientError::Rejected { error, request, .. } = &e else { panic!("{e:?}") };
    assert_eq!(request, "echo");
    assert_eq!((error.type_name(), error.code_name()), ("OFPET_BAD_REQUEST", Some("OFPBRC_BAD_TYPE")));
    assert!(e.to_string().contains("OFPBRC_BAD_TYPE"), "{e}");

    // The switch's echo request is answered with its xid and data.
    p.msg(5, msg_type::ECHO_REQUEST, 77, b"ping").await;
    let m = within("echo reply", p.recv()).await.unwrap();
    assert_eq!(m, msg(5, msg_type::ECHO_REPLY, 77, b"ping"));

    // A message of another version after negotiation is a protocol error.
    let req = tokio::spawn({
        let c = c.clone();
        async move { c.barrier().await }
    });
    let h = p.expect(msg_type::BARRIER_REQUEST).await;
    p.msg(4, msg_type::BARRIER_REPLY, h.xid, &[]).await;
    let e = within("barrier", req).await.unwrap().unwrap_err();
    assert!(e.to_string().contains("version 0x04, but the session speaks 0x05"), "{e}");
}

#[tokio::test]
async fn silence_times_out_and_the_probe_closes_a_dead_session() {
    let (c, mut p, _f) = session(OFP14_VERSION, quiet()).await;
    let started = Instant::now();
    let e = within("barrier", c.barrier()).await.unwrap_err();
    assert!(
        matches!(e, ClientError::Timeout { ref request, after } if request == "barrier" && after == Duration::from_millis(800)),
        "{e:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    p.expect(msg_type::BARRIER_REQUEST).await;

    let probe = ConnectionOptions { inactivity_probe: Some(Duration::from_millis(200)), ..quiet() };
    let (c, mut p, _f) = session(OFP14_VERSION, probe).await;
    // The probe's echo arrives; the peer never answers; the session closes by itself.
    let h = p.expect(msg_type::ECHO_REQUEST).await;
    assert_eq!(h.xid, 0);
    let reason = within("probe close", c.closed()).await;
    assert!(reason.contains("inactivity probe"), "{reason}");
}

fn stats(n: u16) -> FlowStats {
    FlowStats {
        flow: Flow::builder(1, n)
            .matching(Match::builder().in_port(u32::from(n)).build().unwrap())
            .action(Action::output(2))
            .build()
            .unwrap(),
        duration_sec: 1,
        duration_nsec: 0,
        flags: 0,
        packet_count: 0,
        byte_count: 0,
    }
}

#[tokio::test]
async fn multipart_replies_written_a_byte_at_a_time_are_gathered() {
    let (c, mut p, _f) = session(OFP13_VERSION, quiet()).await;
    let req = tokio::spawn({
        let c = c.clone();
        async move { c.dump_flows(&FlowStatsRequest::all()).await }
    });
    let h = p.expect(msg_type::MULTIPART_REQUEST).await;
    let parts = [
        encode_flow_stats_reply(4, h.xid, true, &[stats(1), stats(2)]).unwrap(),
        encode_flow_stats_reply(4, h.xid, true, &[]).unwrap(),
        encode_flow_stats_reply(4, h.xid, false, &[stats(3)]).unwrap(),
    ];
    for b in parts.concat() {
        p.send(&[b]).await;
    }
    let got = within("dump", req).await.unwrap().expect("dump");
    assert_eq!(got, [stats(1), stats(2), stats(3)]);

    // The same replies read as cookies alone.
    let req = tokio::spawn({
        let c = c.clone();
        async move { c.dump_cookies(&FlowStatsRequest::all().cookie(0, 0)).await }
    });
    let h = p.expect(msg_type::MULTIPART_REQUEST).await;
    for b in parts.iter().map(|m| [&m[..4], &h.xid.to_be_bytes()[..], &m[8..]].concat()).collect::<Vec<_>>().concat() {
        p.send(&[b]).await;
    }
    let got = within("dump cookies", req).await.unwrap().expect("dump cookies");
    let want: Vec<FlowCookie> =
        (1..=3).map(|n| FlowCookie { table: 1, priority: n, cookie: stats(n).flow.cookie }).collect();
    assert_eq!(got, want);

    // A truncated flow stats entry inside a well-framed reply: a protocol error, typed.
    let req = tokio::spawn({
        let c = c.clone();
        async move { c.dump_flows(&FlowStatsRequest::all()).await }
    });
    let h = p.expect(msg_type::MULTIPART_REQUEST).await;
    let mut bad = encode_flow_stats_reply(4, h.xid, false, &[stats(1)]).unwrap();
    bad.truncate(bad.len() - 8);
    let len = bad.len() as u16;
    bad[2..4].copy_from_slice(&len.to_be_bytes());
    p.send(&bad).await;
    let e = within("dump", req).await.unwrap().unwrap_err();
    assert!(matches!(e, ClientError::Protocol(_)), "{e:?}");

    // And an entry too short for its fixed fields, read as cookies: the same.
    let req = tokio::spawn({
        let c = c.clone();
        async move { c.dump_cookies(&FlowStatsRequest::all()).await }
    });
    let h = p.expect(msg_type::MULTIPART_REQUEST).await;
    let mut bad = encode_flow_stats_reply(4, h.xid, false, &[stats(1)]).unwrap();
    bad.truncate(16 + 40);
    bad[2..4].copy_from_slice(&56u16.to_be_bytes());
    p.send(&bad).await;
    let e = within("dump cookies", req).await.unwrap().unwrap_err();
    assert!(matches!(e, ClientError::Protocol(_)), "{e:?}");
}

fn mods(n: u16) -> Vec<FlowMod> {
    (0..n).map(|i| FlowMod::add(stats(i + 1).flow)).collect()
}

#[tokio::test]
async fn bundles_against_a_peer_that_closes_or_refuses() {
    // Closed after the open reply, while adds arrive: Disconnected.
    let (c, mut p, _f) = session(OFP13_VERSION, quiet()).await;
    let req = tokio::spawn({
        let c = c.clone();
        async move { c.bundle(&mods(50)).await }
    });
    let h = p.expect(msg_type::EXPERIMENTER).await;
    let m = msg(4, msg_type::EXPERIMENTER, h.xid, &[0x4f, 0x4e, 0x46, 0, 0, 0, 0x08, 0xfc, 0, 0, 0, 1, 0, 1, 0, 0]);
    p.send(&m).await;
    p.expect(msg_type::EXPERIMENTER).await;
    drop(p);
    let e = within("bundle", req).await.unwrap().unwrap_err();
    assert!(matches!(e, ClientError::Disconnected { .. }), "{e:?}");

    // OpenFlow 1.3 (ONF) commit refused: the failing message's error, then OFPBFC_MSG_FAILED
    // as an ONF experimenter error; the failure names flow_mod 3.
    let (c, mut p, _f) = session(OFP13_VERSION, quiet()).await;
    let req = tokio::spawn({
        let c = c.clone();
        async move { c.bundle(&mods(5)).await }
    });
    let open = p.expect(msg_type::EXPERIMENTER).await;
    p.send(&msg(4, 4, open.xid, &[0x4f, 0x4e, 0x46, 0, 0, 0, 0x08, 0xfc, 0, 0, 0, 1, 0, 1, 0, 0])).await;
    let mut adds = Vec::new();
    for _ in 0..5 {
        adds.push(p.expect(msg_type::EXPERIMENTER).await);
    }
    let barrier = p.expect(msg_type::BARRIER_REQUEST).await;
    p.msg(4, msg_type::BARRIER_REPLY, barrier.xid, &[]).await;
    let commit = p.expect(msg_type::EXPERIMENTER).await;
    // OFPET_FLOW_MOD_FAILED / OFPFMFC_TABLE_FULL for the inner flow_mod of add 3.
    let inner = mods(5)[3].to_bytes(4, adds[3].xid).unwrap();
    p.msg(4, msg_type::ERROR, adds[3].xid, &[&[0, 5, 0, 1][..], &inner[..64]].concat()).await;
    p.msg(4, msg_type::ERROR, commit.xid, &[0xff, 0xff, 0x09, 0x0d, 0x4f, 0x4e, 0x46, 0]).await;
    let e = within("bundle", req).await.unwrap().unwrap_err();
    let ClientError::Bundle(b) = &e else { panic!("{e:?}") };
    assert_eq!((b.stage, b.index, b.len), ("commit", Some(3), 5), "{e}");
    assert_eq!(b.error.code_name(), Some("OFPFMFC_TABLE_FULL"), "{e}");
    assert!(e.to_string().contains("flow_mod 3 (add table=1,priority=4,in_port=4"), "{e}");

    // Refused at open.
    let req = tokio::spawn({
        let c = c.clone();
        async move { c.bundle(&mods(2)).await }
    });
    let open = p.expect(msg_type::EXPERIMENTER).await;
    p.msg(4, msg_type::ERROR, open.xid, &[0xff, 0xff, 0x08, 0xfd, 0x4f, 0x4e, 0x46, 0]).await;
    let e = within("bundle", req).await.unwrap().unwrap_err();
    let ClientError::Bundle(b) = &e else { panic!("{e:?}") };
    assert_eq!((b.stage, b.index), ("open", None));
    assert_eq!(b.error.code_name(), Some("OFPBFC_EPERM"));
}
