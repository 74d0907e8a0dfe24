//! Bundles over a session: flow_mods streamed into one atomic, ordered bundle as an iterator
//! produces them.
//!
//! The exchange (ovs-ofctl `--bundle` does the same): open, and wait for the reply; add every
//! flow_mod, then a barrier, because the switch checks each add as it arrives and a commit
//! after a refused add would apply the others; on any refusal, discard. Otherwise commit: the
//! switch applies all or none, reporting a message that fails to apply with that message's own
//! xid before it refuses the commit.
//!
//! Memory: each flow_mod is encoded when the iterator yields it and then dropped. The encoded
//! adds go to the writer in chunks as they fill, and the same chunks (shared, not copied) are
//! kept until the bundle ends with one offset per flow_mod, because a refusal at commit may
//! name any of them: [`Sent::describe`] decodes that one back to show it. Peak memory is the
//! encoded bundle, about a third of the [`FlowMod`]s it came from.
//!
//! Open vSwitch (3.1) sets no limit on the messages of a bundle (ovs-ofctl commits a bundle of
//! 1,000,000 flows), but drops a bundle that has received nothing for
//! `other_config:bundle-idle-timeout` (10 s by default), saying so with OFPBFC_TIMEOUT under
//! the xid of the open; a later add then silently opens a new bundle with the same id. So the
//! open's xid stays registered to the end, and a timeout fails the bundle instead of committing
//! what came after it; and adds are flushed at least every [`FLUSH_AFTER`], so that a slow
//! iterator does not keep the switch idle while its messages wait in a buffer.

use std::borrow::Borrow;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::bundle::{encode_bundle_add, BundleAdd, BundleCtrl, BundleCtrlType, OFPBF_ATOMIC, OFPBF_ORDERED};
use crate::client_error::{BundleFailure, ClientError};
use crate::connection::{Connection, Inbox, Shared};
use crate::error::EncodeError;
use crate::flow_mod::FlowMod;
use crate::header::{msg_type, Header};
use crate::message::{self, encode_empty, Incoming};
use crate::ofp_error::OfpError;
use crate::requests::{check, index_of, unexpected};

/// Bytes of adds handed to the writer at once: a few hundred writes for tens of thousands of
/// flow_mods.
const WRITE_CHUNK: usize = 256 * 1024;
/// Longest time produced adds wait in the buffer.
const FLUSH_AFTER: Duration = Duration::from_millis(200);
/// Xids reserved for one bundle: the open, one per add, the barrier, the commit or discard.
const BUNDLE_XIDS: u32 = 1 << 22;
/// Most flow_mods in one bundle: the xids reserved, less the open, barrier and commit.
pub const MAX_BUNDLE_FLOW_MODS: usize = BUNDLE_XIDS as usize - 3;

const FLAGS: u16 = OFPBF_ATOMIC | OFPBF_ORDERED;

impl Connection {
    /// Applies `mods` as one atomic, ordered bundle: [`Connection::bundle_iter`] over a slice.
    pub async fn bundle(&self, mods: &[FlowMod]) -> Result<(), ClientError> {
        self.bundle_iter(mods).await
    }

    /// Applies the flow_mods `mods` yields (owned, or borrowed from a collection) as one
    /// atomic, ordered bundle: the switch applies every one or none. Each is validated
    /// ([`crate::Flow::validate`]), encoded and dropped as it is yielded; the encoded bundle is
    /// the memory it costs. An empty iterator sends nothing.
    ///
    /// Failures leave the switch as it was (the bundle is discarded):
    /// [`ClientError::Invalid`] for a flow_mod OVS would refuse, [`ClientError::Bundle`] when
    /// the switch refused one (naming it by index and showing it) or the bundle itself,
    /// [`ClientError::BundleTooLarge`] past [`MAX_BUNDLE_FLOW_MODS`]. The iterator is not
    /// drawn further once the switch has refused an add.
    ///
    /// # Example
    /// A reconciler whose flows carry a cookie under its own prefix (a hash of the flow's
    /// content below): read the cookies the switch holds, delete the stale ones by exact cookie
    /// and add the missing flows, generated again rather than kept.
    /// ```no_run
    /// use std::collections::HashSet;
    /// use openflow_client::{ClientError, Connection, Flow, FlowMod, FlowStatsRequest};
    ///
    /// async fn reconcile<I>(conn: &Connection, desired: impl Fn() -> I) -> Result<(), ClientError>
    /// where
    ///     I: Iterator<Item = Flow> + Send,
    /// {
    ///     let ours = FlowStatsRequest::all().cookie(0xa9e7 << 48, 0xffff << 48);
    ///     let held = conn.dump_cookies(&ours).await?;
    ///     let have: HashSet<u64> = held.iter().map(|c| c.cookie).collect();
    ///     let want: HashSet<u64> = desired().map(|f| f.cookie).collect();
    ///     let deletes = held
    ///         .iter()
    ///         .filter(|c| !want.contains(&c.cookie))
    ///         .map(|c| FlowMod::delete_by_cookie(c.table, c.cookie, u64::MAX));
    ///     let adds = desired().filter(|f| !have.contains(&f.cookie)).map(FlowMod::add);
    ///     conn.bundle_iter(deletes.chain(adds)).await
    /// }
    /// ```
    pub async fn bundle_iter<I>(&self, mods: I) -> Result<(), ClientError>
    where
        I: IntoIterator,
        I::Item: Borrow<FlowMod> + Send,
        I::IntoIter: Send,
    {
        let mut mods = mods.into_iter().peekable();
        if mods.peek().is_none() {
            return Ok(());
        }
        let s = &*self.shared;
        let (_reg, first, inbox) = s.register(BUNDLE_XIDS)?;
        let mut b = Bundle {
            s,
            id: s.next_bundle.fetch_add(1, Ordering::Relaxed),
            first,
            inbox,
            sent: Sent::new(s.version),
            started: Instant::now(),
        };
        b.open().await?;
        if let Err(e) = b.add_all(mods).await {
            // Still open on the switch (unless the session is gone): throw it away.
            if !matches!(e, ClientError::Disconnected { .. } | ClientError::Timeout { .. }) {
                b.discard().await;
            }
            return Err(e);
        }
        // Committed or refused, the switch has dropped the bundle.
        b.commit().await
    }
}

/// One bundle in progress. Its xids: `first` for the open, `first + 1 + i` for add `i`, then
/// the barrier, then the commit or discard.
struct Bundle<'a> {
    s: &'a Shared,
    id: u32,
    first: u32,
    inbox: Inbox,
    sent: Sent,
    started: Instant,
}

impl Bundle<'_> {
    fn add_xid(&self, i: usize) -> u32 {
        self.first.wrapping_add(1).wrapping_add(i as u32)
    }

    fn fail(&self, stage: &'static str, index: Option<usize>, error: OfpError) -> ClientError {
        ClientError::Bundle(Box::new(BundleFailure {
            stage,
            index,
            flow_mod: index.map(|i| self.sent.describe(i)),
            error,
            len: self.sent.len(),
        }))
    }

    async fn next(&mut self, what: &str) -> Result<Vec<u8>, ClientError> {
        self.s.next(&mut self.inbox, what).await
    }

    /// The add an error names: its own xid (at add time the switch answers with the add's),
    /// else the xid of the message it echoes. `None` for the open's (the bundle itself) or one
    /// outside the adds.
    fn index_of_add(&self, error: &OfpError, own_xid: u32) -> Option<usize> {
        let n = self.sent.len();
        let i = own_xid.wrapping_sub(self.add_xid(0)) as usize;
        if i < n {
            return Some(i);
        }
        index_of(error, own_xid, self.add_xid(0), n)
    }

    async fn open(&mut self) -> Result<(), ClientError> {
        self.control(BundleCtrlType::OpenRequest, self.first)?;
        let m = self.next("bundle open").await?;
        let (h, incoming) = message::decode(&m, Some(self.s.version))?;
        match incoming {
            Incoming::BundleCtrl(c) if h.xid == self.first && c.kind == BundleCtrlType::OpenReply => Ok(()),
            Incoming::Error(error) => Err(self.fail("open", None, error)),
            _ => Err(unexpected("bundle open", h.msg_type)),
        }
    }

    fn control(&self, kind: BundleCtrlType, xid: u32) -> Result<(), ClientError> {
        let mut buf = Vec::with_capacity(24);
        BundleCtrl { bundle_id: self.id, kind, flags: FLAGS }.encode(self.s.version, xid, &mut buf)?;
        self.s.send(buf)
    }

    /// Streams the adds, then waits for the barrier after them. After any error here the
    /// bundle is still open on the switch.
    async fn add_all<M: Borrow<FlowMod> + Send>(
        &mut self,
        mods: impl Iterator<Item = M> + Send,
    ) -> Result<(), ClientError> {
        let version = self.s.version;
        let mut inner = Vec::with_capacity(512);
        for (index, m) in mods.enumerate() {
            let m = m.borrow();
            if index >= MAX_BUNDLE_FLOW_MODS {
                return Err(ClientError::BundleTooLarge { limit: MAX_BUNDLE_FLOW_MODS });
            }
            check(index, m)?;
            let xid = self.add_xid(index);
            inner.clear();
            m.encode(version, xid, &mut inner).map_err(|e| invalid(index, m, e))?;
            let flushed = self.sent.push(self.s, xid, self.id, &inner).map_err(|e| match e {
                ClientError::Encode(e) => invalid(index, m, e),
                other => other,
            })?;
            if flushed {
                // Give the writer (and, on a current-thread runtime, the reader) a turn, and
                // stop early if the switch has refused an add already.
                tokio::task::yield_now().await;
                if let Some(e) = self.refused_so_far()? {
                    return Err(e);
                }
            }
        }
        self.sent.flush(self.s)?;
        let barrier_xid = self.add_xid(self.sent.len());
        self.s.send(encode_empty(version, msg_type::BARRIER_REQUEST, barrier_xid))?;
        let mut refused = None;
        loop {
            let m = self.next("barrier after bundle adds").await?;
            let (h, incoming) = message::decode(&m, Some(version))?;
            match incoming {
                Incoming::BarrierReply if h.xid == barrier_xid => break,
                Incoming::Error(error) => {
                    refused.get_or_insert_with(|| self.add_error(&h, error));
                }
                _ => return Err(unexpected("bundle add", h.msg_type)),
            }
        }
        refused.map_or(Ok(()), Err)
    }

    fn add_error(&self, h: &Header, error: OfpError) -> ClientError {
        let index = self.index_of_add(&error, h.xid);
        tracing::warn!(bundle_id = self.id, index, %error, "bundle add refused; discarding the bundle");
        self.fail("add", index, error)
    }

    /// An add refusal already in the inbox, without waiting.
    fn refused_so_far(&mut self) -> Result<Option<ClientError>, ClientError> {
        let Ok(m) = self.inbox.try_recv() else { return Ok(None) };
        let (h, incoming) = message::decode(&m, Some(self.s.version))?;
        match incoming {
            Incoming::Error(error) => Ok(Some(self.add_error(&h, error))),
            _ => Err(unexpected("bundle add", h.msg_type)),
        }
    }

    /// Commits; whatever the answer, the switch has dropped the bundle after it.
    async fn commit(&mut self) -> Result<(), ClientError> {
        let n = self.sent.len();
        let commit_xid = self.add_xid(n + 1);
        self.control(BundleCtrlType::CommitRequest, commit_xid)?;
        let mut msg_error: Option<(Option<usize>, OfpError)> = None;
        loop {
            let m = self.next("bundle commit").await?;
            let (h, incoming) = message::decode(&m, Some(self.s.version))?;
            match incoming {
                Incoming::BundleCtrl(c) if h.xid == commit_xid && c.kind == BundleCtrlType::CommitReply => {
                    return match msg_error {
                        None => {
                            tracing::debug!(
                                bundle_id = self.id,
                                flow_mods = n,
                                bytes = self.sent.bytes,
                                elapsed = ?self.started.elapsed(),
                                "bundle committed"
                            );
                            Ok(())
                        }
                        // A message refused yet the commit confirmed: not atomic after all.
                        Some((index, error)) => Err(self.fail("commit", index, error)),
                    };
                }
                Incoming::Error(error) if h.xid == commit_xid => {
                    let (index, error) = msg_error.unwrap_or((None, error));
                    tracing::warn!(bundle_id = self.id, index, %error, "bundle commit refused");
                    return Err(self.fail("commit", index, error));
                }
                Incoming::Error(error) => {
                    let index = self.index_of_add(&error, h.xid);
                    msg_error.get_or_insert((index, error));
                }
                _ => return Err(unexpected("bundle commit", h.msg_type)),
            }
        }
    }

    /// Throws the bundle away, best effort: a bundle left open lingers on the switch until
    /// its idle timeout.
    async fn discard(&mut self) {
        let xid = self.add_xid(self.sent.len() + 1);
        if let Err(e) = self.control(BundleCtrlType::DiscardRequest, xid) {
            tracing::warn!(bundle_id = self.id, error = %e, "bundle discard not sent");
            return;
        }
        loop {
            let m = match self.next("bundle discard").await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(bundle_id = self.id, error = %e, "bundle discard not confirmed");
                    return;
                }
            };
            match message::decode(&m, Some(self.s.version)) {
                Ok((h, Incoming::BundleCtrl(c))) if h.xid == xid && c.kind == BundleCtrlType::DiscardReply => return,
                Ok((h, Incoming::Error(error))) if h.xid == xid => {
                    tracing::warn!(bundle_id = self.id, %error, "bundle discard refused");
                    return;
                }
                // Errors for adds still in flight, now moot.
                _ => {}
            }
        }
    }
}

fn invalid(index: usize, m: &FlowMod, error: EncodeError) -> ClientError {
    ClientError::Invalid { index, flow_mod: m.to_string(), error: error.into() }
}

/// The adds of a bundle as sent: chunks shared with the writer, and where each add starts.
struct Sent {
    version: u8,
    /// Sent chunks, each with the index of its first add.
    chunks: Vec<(usize, Bytes)>,
    /// Offset of each add in its chunk.
    offsets: Vec<u32>,
    /// Adds not yet sent, from index `buf_first`.
    buf: Vec<u8>,
    buf_first: usize,
    last_flush: Instant,
    bytes: usize,
}

impl Sent {
    fn new(version: u8) -> Sent {
        Sent {
            version,
            chunks: Vec::new(),
            offsets: Vec::new(),
            buf: Vec::new(),
            buf_first: 0,
            last_flush: Instant::now(),
            bytes: 0,
        }
    }

    /// Adds produced so far.
    fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Appends the add carrying `inner`; true when a chunk went to the writer.
    fn push(&mut self, s: &Shared, xid: u32, bundle_id: u32, inner: &[u8]) -> Result<bool, ClientError> {
        // The add header is at most 24 bytes; flushing before the chunk would grow keeps every
        // chunk within the capacity it was given.
        let mut flushed = false;
        if self.buf.len() + inner.len() + 24 > self.buf.capacity() && !self.buf.is_empty() {
            self.flush(s)?;
            flushed = true;
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(WRITE_CHUNK);
        }
        let at = self.buf.len();
        if let Err(e) = encode_bundle_add(self.version, xid, bundle_id, FLAGS, inner, &mut self.buf) {
            self.buf.truncate(at);
            return Err(e.into());
        }
        let at = u32::try_from(at).expect("a chunk is smaller than 4 GiB");
        self.offsets.push(at);
        if self.last_flush.elapsed() >= FLUSH_AFTER {
            self.flush(s)?;
            flushed = true;
        }
        Ok(flushed)
    }

    fn flush(&mut self, s: &Shared) -> Result<(), ClientError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.buf);
        if buf.len() < buf.capacity() / 2 {
            buf.shrink_to_fit();
        }
        self.bytes += buf.len();
        let chunk = Bytes::from(buf);
        s.send(chunk.clone())?;
        self.chunks.push((self.buf_first, chunk));
        self.buf_first = self.offsets.len();
        self.last_flush = Instant::now();
        Ok(())
    }

    /// Add `i` as ovs-ofctl would write its flow_mod, decoded from the bytes sent.
    fn describe(&self, i: usize) -> String {
        let decoded = self.add(i).and_then(|add| {
            let inner = BundleAdd::decode(add).map_err(|e| e.to_string())?;
            FlowMod::decode(inner.message).map_err(|e| e.to_string())
        });
        match decoded {
            Ok(m) => m.to_string(),
            Err(e) => format!("not shown: {e}"),
        }
    }

    fn add(&self, i: usize) -> Result<&[u8], String> {
        let at = *self.offsets.get(i).ok_or("not sent")? as usize;
        let bytes: &[u8] = if i >= self.buf_first {
            &self.buf
        } else {
            let c = self.chunks.partition_point(|(first, _)| *first <= i);
            &self.chunks[c.checked_sub(1).ok_or("not sent")?].1
        };
        let rest = bytes.get(at..).ok_or("offset past its chunk")?;
        let len = Header::parse(rest).map_err(|e| e.to_string())?.length;
        rest.get(..usize::from(len)).ok_or_else(|| "cut short".to_owned())
    }
}
