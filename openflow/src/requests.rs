//! What a session does with flows: flow_mods followed by a barrier, bundles applied atomically,
//! and flow dumps gathered across multipart replies.

use crate::bundle::{encode_bundle_add, BundleCtrl, BundleCtrlType, OFPBF_ATOMIC, OFPBF_ORDERED};
use crate::client_error::{BundleFailure, ClientError};
use crate::connection::{Connection, Inbox, Shared};
use crate::flow_mod::{Flow, FlowMod, FlowModCommand};
use crate::header::{msg_type, type_name};
use crate::message::{self, encode_empty, Incoming};
use crate::multipart::{FlowStats, FlowStatsRequest};
use crate::ofp_error::OfpError;

/// Bytes of encoded messages handed to the writer at once: big enough that tens of thousands
/// of flow_mods cost a few hundred writes, small enough not to hold a second copy of them all.
const WRITE_CHUNK: usize = 256 * 1024;

fn validate(mods: &[FlowMod]) -> Result<(), ClientError> {
    for (index, m) in mods.iter().enumerate() {
        let checked = match m.command {
            FlowModCommand::Add | FlowModCommand::Modify | FlowModCommand::ModifyStrict => m.flow.validate(),
            FlowModCommand::Delete | FlowModCommand::DeleteStrict => m.flow.matching.validate().map_err(Into::into),
        };
        checked.map_err(|error| ClientError::Invalid { index, flow_mod: m.to_string(), error })?;
    }
    Ok(())
}

/// Which of `n` messages starting at `first` an error names, by the xid of the failed request
/// it echoes or, failing that, its own.
fn index_of(error: &OfpError, own_xid: u32, first: u32, n: usize) -> Option<usize> {
    let xid = error.failed_header().map_or(own_xid, |h| h.xid);
    let i = xid.wrapping_sub(first) as usize;
    (i < n).then_some(i)
}

impl Connection {
    /// Sends `mods` in order, then a barrier. `Ok` when the switch applied every one; the first
    /// refusal is [`ClientError::Rejected`] naming the flow_mod by index (the others were still
    /// applied: use [`Connection::bundle`] for all or nothing). Nothing is sent if one of them
    /// fails [`Flow::validate`].
    pub async fn flow_mods(&self, mods: &[FlowMod]) -> Result<(), ClientError> {
        validate(mods)?;
        let s = &self.shared;
        let n = u32::try_from(mods.len() + 1).map_err(|_| too_many(mods.len()))?;
        let (_reg, first, mut inbox) = s.register(n)?;
        let barrier_xid = first.wrapping_add(n - 1);
        let mut buf = Vec::with_capacity(WRITE_CHUNK.min(mods.len() * 160 + 8));
        for (i, m) in mods.iter().enumerate() {
            m.encode(s.version, first.wrapping_add(i as u32), &mut buf)?;
            flush_if_full(s, &mut buf)?;
        }
        buf.extend_from_slice(&encode_empty(s.version, msg_type::BARRIER_REQUEST, barrier_xid));
        s.send(buf)?;
        let mut first_error = None;
        loop {
            let m = s.next(&mut inbox, "barrier after flow_mods").await?;
            let (h, incoming) = message::decode(&m, Some(s.version))?;
            match incoming {
                Incoming::BarrierReply if h.xid == barrier_xid => break,
                Incoming::Error(error) => {
                    let index = index_of(&error, h.xid, first, mods.len());
                    tracing::warn!(index, %error, "flow_mod refused");
                    first_error.get_or_insert((index, error));
                }
                _ => return Err(unexpected("barrier after flow_mods", h.msg_type)),
            }
        }
        match first_error {
            None => Ok(()),
            Some((index, error)) => Err(ClientError::Rejected {
                request: match index {
                    Some(i) => format!("flow_mod {i} ({})", mods[i]),
                    None => "a flow_mod".into(),
                },
                index,
                error,
            }),
        }
    }

    /// Applies `mods` as one atomic, ordered bundle: the switch applies every one or none.
    /// Each is validated first ([`ClientError::Invalid`], nothing sent). A refusal is
    /// [`ClientError::Bundle`] naming the flow_mod by index with the switch's error; the bundle
    /// is then discarded. An empty list sends nothing.
    pub async fn bundle(&self, mods: &[FlowMod]) -> Result<(), ClientError> {
        if mods.is_empty() {
            return Ok(());
        }
        validate(mods)?;
        let s = &self.shared;
        let bundle_id = s.next_bundle.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let flags = OFPBF_ATOMIC | OFPBF_ORDERED;
        let fail = |stage, index: Option<usize>, error| {
            ClientError::Bundle(Box::new(BundleFailure {
                stage,
                index,
                flow_mod: index.map(|i| mods[i].to_string()),
                error,
                len: mods.len(),
            }))
        };

        // Open.
        control(s, bundle_id, BundleCtrlType::OpenRequest, flags).await.map_err(|e| match e {
            ClientError::Rejected { error, .. } => fail("open", None, error),
            other => other,
        })?;

        // Add every message, then a barrier: the switch checks each as it is added, and a
        // commit after a refused add would apply the others (ovs-ofctl does the same).
        let n = u32::try_from(mods.len() + 1).map_err(|_| too_many(mods.len()))?;
        let (reg, first, mut inbox) = s.register(n)?;
        let barrier_xid = first.wrapping_add(n - 1);
        let mut buf = Vec::with_capacity(WRITE_CHUNK.min(mods.len() * 180 + 8));
        let mut inner = Vec::with_capacity(256);
        for (i, m) in mods.iter().enumerate() {
            let xid = first.wrapping_add(i as u32);
            inner.clear();
            m.encode(s.version, xid, &mut inner)?;
            encode_bundle_add(s.version, xid, bundle_id, flags, &inner, &mut buf)?;
            flush_if_full(s, &mut buf)?;
        }
        buf.extend_from_slice(&encode_empty(s.version, msg_type::BARRIER_REQUEST, barrier_xid));
        s.send(buf)?;
        let mut add_error = None;
        loop {
            let m = s.next(&mut inbox, "bundle add").await?;
            let (h, incoming) = message::decode(&m, Some(s.version))?;
            match incoming {
                Incoming::BarrierReply if h.xid == barrier_xid => break,
                Incoming::Error(error) => {
                    add_error.get_or_insert((index_of_add(&error, h.xid, first, mods.len()), error));
                }
                _ => return Err(unexpected("bundle add", h.msg_type)),
            }
        }
        if let Some((index, error)) = add_error {
            tracing::warn!(bundle_id, index, %error, "bundle add refused; discarding the bundle");
            if let Err(e) = control(s, bundle_id, BundleCtrlType::DiscardRequest, flags).await {
                tracing::warn!(bundle_id, error = %e, "bundle discard failed");
            }
            return Err(fail("add", index, error));
        }

        // Commit. The switch reports a message that fails to apply with that message's own
        // xid (the add's), then refuses the commit with OFPBFC_MSG_FAILED.
        let (_creg, commit_xid, mut commit_inbox) = s.register(1)?;
        let mut commit = Vec::with_capacity(24);
        BundleCtrl { bundle_id, kind: BundleCtrlType::CommitRequest, flags }.encode(
            s.version,
            commit_xid,
            &mut commit,
        )?;
        s.send(commit)?;
        let mut msg_error: Option<(Option<usize>, OfpError)> = None;
        loop {
            let m = tokio::select! {
                biased;
                m = s.next(&mut inbox, "bundle commit") => m?,
                m = s.next(&mut commit_inbox, "bundle commit") => m?,
            };
            let (h, incoming) = message::decode(&m, Some(s.version))?;
            match incoming {
                Incoming::BundleCtrl(c) if h.xid == commit_xid && c.kind == BundleCtrlType::CommitReply => {
                    return match msg_error {
                        None => Ok(()),
                        // A message refused yet the commit confirmed: not atomic after all.
                        Some((index, error)) => Err(fail("commit", index, error)),
                    };
                }
                Incoming::Error(error) if h.xid == commit_xid => {
                    // The failing message's own error came first on the other inbox; it may
                    // still sit there if both arrived in one read.
                    while let Ok(m) = inbox.try_recv() {
                        if let Ok((h2, Incoming::Error(e2))) = message::decode(&m, Some(s.version)) {
                            msg_error.get_or_insert((index_of(&e2, h2.xid, first, mods.len()), e2));
                        }
                    }
                    drop(reg);
                    let (index, error) = msg_error.unwrap_or((None, error));
                    return Err(fail("commit", index, error));
                }
                Incoming::Error(error) => {
                    msg_error.get_or_insert((index_of(&error, h.xid, first, mods.len()), error));
                }
                _ => return Err(unexpected("bundle commit", h.msg_type)),
            }
        }
    }

    /// Reads the flows `request` selects, every part of the multipart reply gathered.
    pub async fn dump_flows(&self, request: &FlowStatsRequest) -> Result<Vec<FlowStats>, ClientError> {
        request.matching.validate().map_err(|e| ClientError::Invalid {
            index: 0,
            flow_mod: "flow stats request".into(),
            error: e.into(),
        })?;
        let s = &self.shared;
        let (_reg, xid, mut inbox) = s.register(1)?;
        let mut buf = Vec::new();
        request.encode(s.version, xid, &mut buf)?;
        s.send(buf)?;
        let mut out = Vec::new();
        loop {
            let m = s.next(&mut inbox, "flow stats request").await?;
            let (h, incoming) = message::decode(&m, Some(s.version))?;
            match incoming {
                Incoming::MultipartReply(part) => {
                    part.flow_stats(&mut out)?;
                    if !part.more {
                        return Ok(out);
                    }
                }
                Incoming::Error(error) => {
                    return Err(ClientError::Rejected { request: "flow stats request".into(), index: None, error })
                }
                _ => return Err(unexpected("flow stats request", h.msg_type)),
            }
        }
    }

    /// [`Connection::dump_flows`], the flows alone.
    pub async fn flows(&self, request: &FlowStatsRequest) -> Result<Vec<Flow>, ClientError> {
        Ok(self.dump_flows(request).await?.into_iter().map(|s| s.flow).collect())
    }
}

/// At add time the switch answers with the add's xid and echoes the add message (whose inner
/// message has the same xid), so either names the flow_mod.
fn index_of_add(error: &OfpError, own_xid: u32, first: u32, n: usize) -> Option<usize> {
    let i = own_xid.wrapping_sub(first) as usize;
    if i < n {
        return Some(i);
    }
    index_of(error, own_xid, first, n)
}

async fn control(s: &Shared, bundle_id: u32, kind: BundleCtrlType, flags: u16) -> Result<(), ClientError> {
    let what = format!("bundle {kind:?}");
    let (_reg, xid, mut inbox) = s.register(1)?;
    let mut buf = Vec::new();
    BundleCtrl { bundle_id, kind, flags }.encode(s.version, xid, &mut buf)?;
    s.send(buf)?;
    let want = match kind {
        BundleCtrlType::OpenRequest => BundleCtrlType::OpenReply,
        BundleCtrlType::CloseRequest => BundleCtrlType::CloseReply,
        BundleCtrlType::CommitRequest => BundleCtrlType::CommitReply,
        _ => BundleCtrlType::DiscardReply,
    };
    let m = next(s, &mut inbox, &what).await?;
    crate::connection::expect(s, &what, &m, |i| matches!(i, Incoming::BundleCtrl(c) if c.kind == want))
}

async fn next(s: &Shared, inbox: &mut Inbox, what: &str) -> Result<Vec<u8>, ClientError> {
    s.next(inbox, what).await
}

fn flush_if_full(s: &Shared, buf: &mut Vec<u8>) -> Result<(), ClientError> {
    if buf.len() >= WRITE_CHUNK {
        s.send(std::mem::replace(buf, Vec::with_capacity(WRITE_CHUNK + 1024)))?;
    }
    Ok(())
}

fn too_many(n: usize) -> ClientError {
    ClientError::Encode(crate::error::EncodeError::TooLong { len: n })
}

fn unexpected(request: &str, t: u8) -> ClientError {
    ClientError::UnexpectedReply { request: request.to_owned(), got: type_name(t).to_owned() }
}
