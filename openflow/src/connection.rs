//! One OpenFlow session with a switch.
//!
//! [`Connection::connect`] opens the stream, exchanges hellos (OpenFlow 1.4 preferred, 1.3
//! accepted), and asks for the switch's features. Then a reader task cuts the stream into
//! messages and routes each by xid to the request waiting for it, answers the switch's echo
//! requests at once, and a writer task owns the write half, so a bundle of tens of thousands of
//! flow_mods being written never stops replies from being read. A probe sends an echo after a
//! quiet interval and closes a session that stays silent. When the session ends, every request
//! in flight fails with [`ClientError::Disconnected`].
//!
//! Requests register a range of xids before writing (one entry however many messages: a bundle
//! of 60,000 flow_mods is one range); every message the switch sends with one of those xids (a reply, each part of a multipart reply, an error for a flow_mod that has no
//! reply of its own) goes to one channel in the order it arrived, so a request that ends with a
//! barrier or a bundle commit sees the errors of its earlier messages before that reply.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ovs_transport::{probe, write_until_closed, Closed, LastHeard, Tasks, TlsSettings, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::client_error::ClientError;
use crate::header::{msg_type, type_name, Framer, Header};
use crate::message::{
    self, encode_echo, encode_empty, encode_hello, negotiate, Features, Incoming, SUPPORTED_VERSIONS,
};
use crate::target::Target;

/// Tunables of one session.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// How long one wait for the switch may take (a reply, a barrier, a bundle commit).
    pub request_timeout: Duration,
    /// Send an echo after this long without a message from the switch, and close the session
    /// when nothing arrives within the same time again. `None`: no probe.
    pub inactivity_probe: Option<Duration>,
    /// Versions to offer (wire numbers, from [`crate::OFP13_VERSION`] and
    /// [`crate::OFP14_VERSION`]).
    pub versions: Vec<u8>,
    /// Certificates for `ssl:` targets.
    pub tls: Option<TlsSettings>,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            request_timeout: Duration::from_secs(30),
            inactivity_probe: Some(Duration::from_secs(5)),
            versions: SUPPORTED_VERSIONS.to_vec(),
            tls: None,
        }
    }
}

/// Messages for one request, in arrival order.
pub(crate) type Inbox = mpsc::UnboundedReceiver<Vec<u8>>;

pub(crate) struct Shared {
    pub(crate) target: String,
    pub(crate) options: ConnectionOptions,
    pub(crate) version: u8,
    next_xid: AtomicU32,
    pub(crate) next_bundle: AtomicU32,
    writer: mpsc::UnboundedSender<Bytes>,
    pending: Mutex<Vec<Pending>>,
    closed: Closed,
    last_heard: LastHeard,
}

/// A request's xids: `first` and the `n - 1` after it.
struct Pending {
    first: u32,
    n: u32,
    tx: mpsc::UnboundedSender<Vec<u8>>,
}

impl Pending {
    fn holds(&self, xid: u32) -> bool {
        xid.wrapping_sub(self.first) < self.n
    }
}

impl Shared {
    pub(crate) fn close(&self, reason: &str) {
        if self.closed.close(reason) {
            tracing::info!(target = %self.target, reason, "OpenFlow session closed");
        }
        // Dropping the senders ends every request's inbox: they report Disconnected.
        self.pending.lock().expect("pending lock").clear();
    }

    pub(crate) fn closed_reason(&self) -> Option<String> {
        self.closed.reason()
    }

    pub(crate) fn disconnected(&self) -> ClientError {
        ClientError::Disconnected { reason: self.closed_reason().unwrap_or_else(|| "writer stopped".into()) }
    }

    /// `n` consecutive xids (never 0, which the switch uses for its own messages).
    pub(crate) fn xids(&self, n: u32) -> u32 {
        loop {
            let first = self.next_xid.fetch_add(n, Ordering::Relaxed);
            if first != 0 && first.checked_add(n).is_some() {
                return first;
            }
        }
    }

    /// Queues bytes for the writer (a `Vec` moves in without a copy; [`Bytes`] may be shared
    /// with whoever keeps them).
    pub(crate) fn send(&self, bytes: impl Into<Bytes>) -> Result<(), ClientError> {
        self.writer.send(bytes.into()).map_err(|_| self.disconnected())
    }
}

/// Xids registered for one request; unregistered when it is done, however it ends.
pub(crate) struct Registration<'a> {
    shared: &'a Shared,
    first: u32,
    n: u32,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut p = self.shared.pending.lock().expect("pending lock");
        p.retain(|r| !(r.first == self.first && r.n == self.n));
    }
}

impl Shared {
    /// Registers `n` xids starting at a fresh one; their messages arrive in the inbox.
    pub(crate) fn register(&self, n: u32) -> Result<(Registration<'_>, u32, Inbox), ClientError> {
        let first = self.xids(n);
        let (tx, rx) = mpsc::unbounded_channel();
        self.pending.lock().expect("pending lock").push(Pending { first, n, tx });
        let reg = Registration { shared: self, first, n };
        // close() drains `pending` after setting the flag; checking after inserting covers a
        // close that ran in between.
        if self.closed_reason().is_some() {
            return Err(self.disconnected());
        }
        Ok((reg, first, rx))
    }

    /// The next message for a request, within the request timeout.
    pub(crate) async fn next(&self, inbox: &mut Inbox, request: &str) -> Result<Vec<u8>, ClientError> {
        let after = self.options.request_timeout;
        match tokio::time::timeout(after, inbox.recv()).await {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(self.disconnected()),
            Err(_) => Err(ClientError::Timeout { request: request.to_owned(), after }),
        }
    }
}

impl ovs_transport::Session for Shared {
    fn close(&self, reason: &str) {
        Shared::close(self, reason);
    }
}

impl ovs_transport::Probed for Shared {
    const PEER: &'static str = "the switch";

    fn closed(&self) -> &Closed {
        &self.closed
    }

    fn last_heard(&self) -> &LastHeard {
        &self.last_heard
    }

    fn send_probe(&self) -> bool {
        // Xid 0 is never registered: the reply is dropped by route(), having touched last_heard.
        encode_echo(self.version, msg_type::ECHO_REQUEST, 0, b"probe").is_ok_and(|echo| self.send(echo).is_ok())
    }
}

/// A session with a switch. Cheap to clone; it ends when the last clone is dropped, on
/// [`Connection::close`], or when the switch goes away.
#[derive(Clone)]
pub struct Connection {
    pub(crate) shared: Arc<Shared>,
    features: Features,
    tasks: Arc<Tasks<Shared>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("target", &self.shared.target)
            .field("version", &self.shared.version)
            .field("datapath_id", &format_args!("{:#018x}", self.features.datapath_id))
            .finish()
    }
}

impl Connection {
    /// Connects, negotiates the version and reads the switch's features.
    pub async fn connect(target: &Target, options: ConnectionOptions) -> Result<Connection, ClientError> {
        let stream = target.connect_tls(options.tls.as_ref()).await?;
        Connection::over(stream, target.to_string(), options).await
    }

    /// Runs the protocol over an already open stream (a test socket, a proxied stream).
    pub async fn over(
        mut stream: Box<dyn Transport>,
        target: String,
        options: ConnectionOptions,
    ) -> Result<Connection, ClientError> {
        let mut framer = Framer::new();
        let version = handshake(&mut stream, &mut framer, &target, &options).await?;
        let (read, write) = tokio::io::split(stream);
        let (writer, writer_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            target,
            options,
            version,
            next_xid: AtomicU32::new(2),
            next_bundle: AtomicU32::new(1),
            writer,
            pending: Mutex::new(Vec::new()),
            closed: Closed::new(),
            last_heard: LastHeard::new(),
        });
        let mut tasks = Tasks::new(shared.clone());
        tasks.spawn(read_loop(shared.clone(), read, framer));
        tasks.spawn(write_loop(shared.clone(), write, writer_rx));
        if let Some(interval) = shared.options.inactivity_probe {
            tasks.spawn(probe(Arc::downgrade(&shared), interval));
        }
        let tasks = Arc::new(tasks);
        let features = features(&shared).await?;
        tracing::info!(
            target = %shared.target,
            version = shared.version,
            datapath_id = %format_args!("{:#018x}", features.datapath_id),
            "OpenFlow session up"
        );
        Ok(Connection { shared, features, tasks })
    }

    /// The negotiated wire version ([`crate::OFP13_VERSION`] or [`crate::OFP14_VERSION`]).
    pub fn version(&self) -> u8 {
        self.shared.version
    }

    /// The switch's features, read when the session opened.
    pub fn features(&self) -> Features {
        self.features
    }

    /// The target this session talks to.
    pub fn target(&self) -> &str {
        &self.shared.target
    }

    /// True once the session is over.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_closed()
    }

    /// Resolves with the reason once the session is over.
    pub async fn closed(&self) -> String {
        self.shared.closed.wait().await
    }

    /// Ends the session; requests in flight fail with [`ClientError::Disconnected`].
    pub fn close(&self) {
        self.tasks.close("closed by the client");
    }

    /// Sends an echo request and waits for the reply; returns the round trip.
    pub async fn echo(&self) -> Result<Duration, ClientError> {
        let (_reg, xid, mut inbox) = self.shared.register(1)?;
        let started = Instant::now();
        self.shared.send(encode_echo(self.shared.version, msg_type::ECHO_REQUEST, xid, b"ofc")?)?;
        let m = self.shared.next(&mut inbox, "echo").await?;
        expect(&self.shared, "echo", &m, |i| matches!(i, Incoming::EchoReply))?;
        Ok(started.elapsed())
    }

    /// Sends a barrier and waits for its reply: every message sent before it has been
    /// processed, and the errors they caused were reported before it.
    pub async fn barrier(&self) -> Result<(), ClientError> {
        let (_reg, xid, mut inbox) = self.shared.register(1)?;
        self.shared.send(encode_empty(self.shared.version, msg_type::BARRIER_REQUEST, xid))?;
        let m = self.shared.next(&mut inbox, "barrier").await?;
        expect(&self.shared, "barrier", &m, |i| matches!(i, Incoming::BarrierReply))
    }
}

/// Decodes a message routed to a request: `Ok` when `want` accepts it, the switch's error as
/// [`ClientError::Rejected`], anything else [`ClientError::UnexpectedReply`].
pub(crate) fn expect(
    shared: &Shared,
    request: &str,
    m: &[u8],
    want: impl Fn(&Incoming<'_>) -> bool,
) -> Result<(), ClientError> {
    let (h, incoming) = message::decode(m, Some(shared.version))?;
    match incoming {
        i if want(&i) => Ok(()),
        Incoming::Error(error) => Err(ClientError::Rejected { request: request.to_owned(), index: None, error }),
        _ => Err(ClientError::UnexpectedReply { request: request.to_owned(), got: type_name(h.msg_type).to_owned() }),
    }
}

async fn features(shared: &Shared) -> Result<Features, ClientError> {
    let (_reg, xid, mut inbox) = shared.register(1)?;
    shared.send(encode_empty(shared.version, msg_type::FEATURES_REQUEST, xid))?;
    let m = shared.next(&mut inbox, "features request").await?;
    let (h, incoming) = message::decode(&m, Some(shared.version))?;
    match incoming {
        Incoming::FeaturesReply(f) => Ok(f),
        Incoming::Error(error) => Err(ClientError::Rejected { request: "features request".into(), index: None, error }),
        _ => Err(ClientError::UnexpectedReply {
            request: "features request".into(),
            got: type_name(h.msg_type).to_owned(),
        }),
    }
}

/// Sends our hello and reads the switch's; returns the negotiated version.
async fn handshake(
    stream: &mut Box<dyn Transport>,
    framer: &mut Framer,
    target: &str,
    options: &ConnectionOptions,
) -> Result<u8, ClientError> {
    let fail = |reason: String| ClientError::Handshake { target: target.to_owned(), reason };
    let after = options.request_timeout;
    let exchange = async {
        stream.write_all(&encode_hello(&options.versions, 1)?).await.map_err(|e| fail(format!("write: {e}")))?;
        let mut buf = vec![0u8; 4096];
        loop {
            if let Some(m) = framer.next_message()? {
                let (h, incoming) = message::decode(m, None)?;
                return match incoming {
                    Incoming::Hello { bitmap } => Ok((h, bitmap)),
                    Incoming::Error(e) => Err(fail(format!("the switch answered the hello with {e}"))),
                    _ => Err(fail(format!("the switch sent {} before its hello", type_name(h.msg_type)))),
                };
            }
            let n = stream.read(&mut buf).await.map_err(|e| fail(format!("read: {e}")))?;
            if n == 0 {
                return Err(fail("the switch closed the connection during the hello".into()));
            }
            framer.push(&buf[..n]);
        }
    };
    let (h, bitmap): (Header, Option<u32>) = tokio::time::timeout(after, exchange)
        .await
        .map_err(|_| ClientError::Timeout { request: "hello".into(), after })??;
    match negotiate(&options.versions, h.version, bitmap) {
        Some(v) => Ok(v),
        None => {
            // OpenFlow 1.3 6.3.1: say why before closing.
            let mut e = Vec::new();
            let s = crate::header::start_message(&mut e, h.version, msg_type::ERROR, h.xid);
            e.extend_from_slice(&[0, 0, 0, 0]);
            e.extend_from_slice(b"no common OpenFlow version");
            crate::header::finish_message(&mut e, s)?;
            let _ = stream.write_all(&e).await;
            let theirs = match bitmap {
                Some(b) => (0..32).filter(|v| b & (1 << v) != 0).map(|v| format!("0x{v:02x}")).collect(),
                None => vec![format!("up to 0x{:02x}", h.version)],
            };
            Err(fail(format!(
                "no common version: the switch speaks {}, this client {:02x?} (OpenFlow 1.3 is 0x04); enable \
                 OpenFlow13 in the bridge's protocols",
                theirs.join(", "),
                options.versions
            )))
        }
    }
}

async fn read_loop(shared: Arc<Shared>, mut read: tokio::io::ReadHalf<Box<dyn Transport>>, mut framer: Framer) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut closed = shared.closed.watch();
    let reason = 'outer: loop {
        // Messages that came with the hello are routed before reading more.
        loop {
            match framer.next_message() {
                Ok(Some(m)) => {
                    if let Err(e) = route(&shared, m) {
                        break 'outer format!("{e}");
                    }
                }
                Ok(None) => break,
                Err(e) => break 'outer format!("{e}"),
            }
        }
        let n = tokio::select! {
            r = read.read(&mut buf) => r,
            _ = closed.closed() => return,
        };
        match n {
            Ok(0) if framer.pending() > 0 => {
                break "the switch closed the connection in the middle of a message".into()
            }
            Ok(0) => break "the switch closed the connection".into(),
            Ok(n) => {
                shared.last_heard.touch();
                framer.push(&buf[..n]);
            }
            Err(e) => break format!("read failed: {e}"),
        }
    };
    if shared.closed_reason().is_none() {
        tracing::warn!(target = %shared.target, %reason, "dropping OpenFlow session");
    }
    shared.close(&reason);
}

/// Routes one message: echo requests answered, replies to their request, the rest logged.
fn route(shared: &Shared, m: &[u8]) -> Result<(), ClientError> {
    let (h, incoming) = message::decode(m, Some(shared.version))?;
    if let Incoming::EchoRequest(data) = incoming {
        return shared.send(encode_echo(shared.version, msg_type::ECHO_REPLY, h.xid, data)?);
    }
    let tx = shared.pending.lock().expect("pending lock").iter().find(|p| p.holds(h.xid)).map(|p| p.tx.clone());
    match (tx, incoming) {
        (Some(tx), _) => {
            let _ = tx.send(m.to_vec());
        }
        // Our probe's replies, and the switch's own notifications (xid 0).
        (None, Incoming::EchoReply) => {}
        (None, Incoming::Other { msg_type }) => {
            tracing::debug!(msg = type_name(msg_type), xid = h.xid, "unsolicited OpenFlow message ignored")
        }
        (None, Incoming::Error(e)) => tracing::warn!(xid = h.xid, error = %e, "OpenFlow error for no pending request"),
        (None, _) => {
            tracing::warn!(msg = type_name(h.msg_type), xid = h.xid, "OpenFlow reply with an xid not in flight ignored")
        }
    }
    Ok(())
}

async fn write_loop(
    shared: Arc<Shared>,
    write: tokio::io::WriteHalf<Box<dyn Transport>>,
    rx: mpsc::UnboundedReceiver<Bytes>,
) {
    if let Err(e) = write_until_closed(write, rx, shared.closed.watch()).await {
        shared.close(&format!("write failed: {e}"));
    }
}
