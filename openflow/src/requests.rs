//! What a session does with flows outside bundles: flow_mods followed by a barrier, and flow
//! dumps decoded one multipart reply at a time (whole flows, or only their cookies). Bundles
//! are in `bundling`.

use crate::client_error::ClientError;
use crate::connection::{Connection, Shared};
use crate::error::DecodeError;
use crate::flow_mod::{Flow, FlowMod, FlowModCommand};
use crate::header::{msg_type, type_name};
use crate::message::{self, encode_empty, Incoming};
use crate::multipart::{FlowCookie, FlowStats, FlowStatsRequest, MultipartReply};
use crate::ofp_error::OfpError;

/// Bytes of encoded messages handed to the writer at once: big enough that tens of thousands
/// of flow_mods cost a few hundred writes, small enough not to hold a second copy of them all.
const WRITE_CHUNK: usize = 256 * 1024;

/// What Open vSwitch would check of flow_mod `index`: the whole flow for an add or modify, the
/// match for a delete.
pub(crate) fn check(index: usize, m: &FlowMod) -> Result<(), ClientError> {
    let checked = match m.command {
        FlowModCommand::Add | FlowModCommand::Modify | FlowModCommand::ModifyStrict => m.flow.validate(),
        FlowModCommand::Delete | FlowModCommand::DeleteStrict => m.flow.matching.validate().map_err(Into::into),
    };
    checked.map_err(|error| ClientError::Invalid { index, flow_mod: m.to_string(), error })
}

/// Which of `n` messages starting at `first` an error names, by the xid of the failed request
/// it echoes or, failing that, its own.
pub(crate) fn index_of(error: &OfpError, own_xid: u32, first: u32, n: usize) -> Option<usize> {
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
        for (index, m) in mods.iter().enumerate() {
            check(index, m)?;
        }
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

    /// Reads the flows `request` selects, every part of the multipart reply gathered.
    pub async fn dump_flows(&self, request: &FlowStatsRequest) -> Result<Vec<FlowStats>, ClientError> {
        let mut out = Vec::new();
        self.flow_stats(request, |part| part.flow_stats(&mut out)).await?;
        Ok(out)
    }

    /// [`Connection::dump_flows`], the flows alone.
    pub async fn flows(&self, request: &FlowStatsRequest) -> Result<Vec<Flow>, ClientError> {
        Ok(self.dump_flows(request).await?.into_iter().map(|s| s.flow).collect())
    }

    /// Table, priority and cookie of each flow `request` selects (a cookie and mask select a
    /// prefix of the cookie: `FlowStatsRequest::all().cookie(prefix << 48, 0xffff << 48)`).
    /// Each reply is decoded as it arrives and only its fixed fields are read: the memory is
    /// one reply (about 64 KB) and 16 bytes a flow.
    pub async fn dump_cookies(&self, request: &FlowStatsRequest) -> Result<Vec<FlowCookie>, ClientError> {
        let mut out = Vec::new();
        self.flow_stats(request, |part| part.flow_cookies(&mut out)).await?;
        Ok(out)
    }

    /// Sends a flow stats request and hands each part of the reply to `each` as it arrives.
    async fn flow_stats(
        &self,
        request: &FlowStatsRequest,
        mut each: impl FnMut(&MultipartReply<'_>) -> Result<(), DecodeError>,
    ) -> Result<(), ClientError> {
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
        loop {
            let m = s.next(&mut inbox, "flow stats request").await?;
            let (h, incoming) = message::decode(&m, Some(s.version))?;
            match incoming {
                Incoming::MultipartReply(part) => {
                    each(&part)?;
                    if !part.more {
                        return Ok(());
                    }
                }
                Incoming::Error(error) => {
                    return Err(ClientError::Rejected { request: "flow stats request".into(), index: None, error })
                }
                _ => return Err(unexpected("flow stats request", h.msg_type)),
            }
        }
    }
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

pub(crate) fn unexpected(request: &str, t: u8) -> ClientError {
    ClientError::UnexpectedReply { request: request.to_owned(), got: type_name(t).to_owned() }
}
