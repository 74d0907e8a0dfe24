//! Flow statistics (`OFPMP_FLOW`): the request that asks the switch for its flows, filtered by
//! table, cookie/mask, output port and match, and the decoders of its replies: whole flows
//! ([`FlowStats`]), or only the fixed fields that identify a flow by its cookie
//! ([`FlowCookie`]). A large table comes back as many `OFPT_MULTIPART_REPLY` messages (Open
//! vSwitch fills each to about 64 KB); all but the last carry `OFPMPF_REPLY_MORE`
//! ([`MultipartReply::more`]), and the client decodes each as it arrives.

use crate::action::port;
use crate::error::{DecodeError, EncodeError};
use crate::flow_match::Match;
use crate::flow_mod::{Flow, OFPG_ANY, OFPTT_ALL};
use crate::header::{finish_message, msg_type, start_message, HEADER_LEN};
use crate::instruction::Instructions;
use crate::wire::{Put, Reader};

/// `OFPMP_FLOW`.
pub const OFPMP_FLOW: u16 = 1;
/// More replies follow.
pub const OFPMPF_REPLY_MORE: u16 = 1;

/// Which flows to read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowStatsRequest {
    /// A table, or [`OFPTT_ALL`].
    pub table: u8,
    /// Only flows that output to this port ([`port::ANY`]: any).
    pub out_port: u32,
    /// Only flows that output to this group ([`OFPG_ANY`]: any).
    pub out_group: u32,
    /// Cookie the flows must have under `cookie_mask`.
    pub cookie: u64,
    /// Which cookie bits count (0: any cookie).
    pub cookie_mask: u64,
    /// Only flows this match covers (empty: all).
    pub matching: Match,
}

impl Default for FlowStatsRequest {
    fn default() -> Self {
        FlowStatsRequest {
            table: OFPTT_ALL,
            out_port: port::ANY,
            out_group: OFPG_ANY,
            cookie: 0,
            cookie_mask: 0,
            matching: Match::new(),
        }
    }
}

impl FlowStatsRequest {
    /// Every flow of every table.
    pub fn all() -> Self {
        Self::default()
    }

    /// Every flow of `table`.
    pub fn table(table: u8) -> Self {
        FlowStatsRequest { table, ..Self::default() }
    }

    /// Restricts to flows whose cookie equals `cookie` under `mask`.
    pub fn cookie(mut self, cookie: u64, mask: u64) -> Self {
        self.cookie = cookie;
        self.cookie_mask = mask;
        self
    }

    /// Appends the `OFPT_MULTIPART_REQUEST`.
    pub fn encode(&self, version: u8, xid: u32, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = start_message(out, version, msg_type::MULTIPART_REQUEST, xid);
        out.put_u16(OFPMP_FLOW);
        out.put_u16(0);
        out.put_zeros(4);
        out.put_u8(self.table);
        out.put_zeros(3);
        out.put_u32(self.out_port);
        out.put_u32(self.out_group);
        out.put_zeros(4);
        out.put_u64(self.cookie);
        out.put_u64(self.cookie_mask);
        self.matching.encode(out)?;
        finish_message(out, start)
    }
}

/// One flow as the switch reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowStats {
    /// The flow, canonical: compare it with the [`Flow`] that was installed.
    pub flow: Flow,
    /// Seconds since it was installed.
    pub duration_sec: u32,
    /// Nanoseconds beyond `duration_sec`.
    pub duration_nsec: u32,
    /// `OFPFF_*` flags the switch kept.
    pub flags: u16,
    /// Packets matched.
    pub packet_count: u64,
    /// Bytes matched.
    pub byte_count: u64,
}

/// The fixed fields of a flow stats entry that a reconciler keyed by cookie needs: which flow
/// (table, priority) carries which cookie. 16 bytes, where a whole [`FlowStats`] is hundreds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowCookie {
    /// Table.
    pub table: u8,
    /// Priority.
    pub priority: u16,
    /// Cookie.
    pub cookie: u64,
}

/// The fixed part of a flow stats entry: `length` to `byte_count`, before the match.
const FLOW_STATS_FIXED: usize = 48;

/// The head of an `OFPT_MULTIPART_REPLY` and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartReply<'a> {
    /// `OFPMP_*`.
    pub mp_type: u16,
    /// `OFPMPF_REPLY_MORE` was set: more parts follow with the same xid.
    pub more: bool,
    /// The body after the multipart header.
    pub body: &'a [u8],
}

impl<'a> MultipartReply<'a> {
    /// Splits a whole multipart reply message (header included).
    pub fn parse(message: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(message);
        r.skip(HEADER_LEN, "OpenFlow header")?;
        let mp_type = r.u16("multipart type")?;
        let flags = r.u16("multipart flags")?;
        r.skip(4, "multipart pad")?;
        Ok(MultipartReply { mp_type, more: flags & OFPMPF_REPLY_MORE != 0, body: r.rest() })
    }

    /// The flows of an `OFPMP_FLOW` reply body, appended to `out`.
    pub fn flow_stats(&self, out: &mut Vec<FlowStats>) -> Result<(), DecodeError> {
        self.each_entry(|e| {
            out.push(decode_flow_stats(e)?);
            Ok(())
        })
    }

    /// Table, priority and cookie of each flow of an `OFPMP_FLOW` reply body, appended to
    /// `out`; the match and instructions are skipped, not decoded.
    pub fn flow_cookies(&self, out: &mut Vec<FlowCookie>) -> Result<(), DecodeError> {
        self.each_entry(|mut e| {
            let table = e.u8("flow stats table")?;
            e.skip(9, "pad, duration")?;
            let priority = e.u16("priority")?;
            e.skip(10, "timeouts, flags, pad")?;
            let cookie = e.u64("cookie")?;
            out.push(FlowCookie { table, priority, cookie });
            Ok(())
        })
    }

    /// Calls `f` with each entry of a flow stats body, after its length field.
    fn each_entry(&self, mut f: impl FnMut(Reader<'a>) -> Result<(), DecodeError>) -> Result<(), DecodeError> {
        if self.mp_type != OFPMP_FLOW {
            return Err(DecodeError::BadValue {
                what: "multipart reply",
                detail: format!("type {}, want {OFPMP_FLOW} (flow stats)", self.mp_type),
            });
        }
        let mut r = Reader::new(self.body);
        while !r.is_empty() {
            let len = usize::from(r.u16("flow stats length")?);
            if len < FLOW_STATS_FIXED {
                return Err(DecodeError::BadLength {
                    what: "flow stats entry",
                    len,
                    reason: "shorter than its 48-byte fixed part",
                });
            }
            f(r.sub(len - 2, "flow stats entry")?)?;
        }
        Ok(())
    }
}

fn decode_flow_stats(mut e: Reader<'_>) -> Result<FlowStats, DecodeError> {
    let table = e.u8("flow stats table")?;
    e.skip(1, "pad")?;
    let duration_sec = e.u32("duration_sec")?;
    let duration_nsec = e.u32("duration_nsec")?;
    let priority = e.u16("priority")?;
    let idle_timeout = e.u16("idle_timeout")?;
    let hard_timeout = e.u16("hard_timeout")?;
    let flags = e.u16("flags")?;
    e.skip(4, "pad / importance")?;
    let cookie = e.u64("cookie")?;
    let packet_count = e.u64("packet_count")?;
    let byte_count = e.u64("byte_count")?;
    let matching = Match::decode(&mut e)?;
    let instructions = Instructions::decode(&mut e)?;
    Ok(FlowStats {
        flow: Flow { table, priority, cookie, idle_timeout, hard_timeout, matching, instructions },
        duration_sec,
        duration_nsec,
        flags,
        packet_count,
        byte_count,
    })
}

/// Encodes one flow stats entry (the switch's side; used by tests and the fuzz seeds).
pub fn encode_flow_stats(s: &FlowStats, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    let f = &s.flow;
    out.put_u16(0);
    out.put_u8(f.table);
    out.put_u8(0);
    out.put_u32(s.duration_sec);
    out.put_u32(s.duration_nsec);
    out.put_u16(f.priority);
    out.put_u16(f.idle_timeout);
    out.put_u16(f.hard_timeout);
    out.put_u16(s.flags);
    out.put_zeros(4);
    out.put_u64(f.cookie);
    out.put_u64(s.packet_count);
    out.put_u64(s.byte_count);
    f.matching.encode(out)?;
    f.instructions.encode(out)?;
    let len = crate::wire::len16(out, start)?;
    out.set_u16(start, len);
    Ok(())
}

/// A whole `OFPT_MULTIPART_REPLY` of flow stats (the switch's side; for tests and fuzz seeds).
pub fn encode_flow_stats_reply(version: u8, xid: u32, more: bool, stats: &[FlowStats]) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    let start = start_message(&mut out, version, msg_type::MULTIPART_REPLY, xid);
    out.put_u16(OFPMP_FLOW);
    out.put_u16(if more { OFPMPF_REPLY_MORE } else { 0 });
    out.put_zeros(4);
    for s in stats {
        encode_flow_stats(s, &mut out)?;
    }
    finish_message(&mut out, start)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Action;
    use crate::header::OFP13_VERSION;

    #[test]
    fn request_layout() {
        let mut out = Vec::new();
        FlowStatsRequest::table(1).cookie(0x10, 0xff).encode(OFP13_VERSION, 9, &mut out).unwrap();
        // header 8 + multipart 8 + flow stats request 32 + empty match 8 (OpenFlow 1.3 7.3.5.2).
        assert_eq!(out.len(), 56);
        assert_eq!(&out[..8], [4, 18, 0, 56, 0, 0, 0, 9]);
        assert_eq!(&out[8..12], [0, 1, 0, 0]);
        assert_eq!(out[16], 1);
        assert_eq!(&out[32..40], 0x10u64.to_be_bytes());
        assert_eq!(&out[40..48], 0xffu64.to_be_bytes());
    }

    #[test]
    fn reply_round_trip_and_truncation() {
        let flow = Flow::builder(2, 30)
            .cookie(5)
            .matching(Match::builder().in_port(3).build().unwrap())
            .action(Action::output(4))
            .build()
            .unwrap();
        let stats = FlowStats { flow, duration_sec: 1, duration_nsec: 2, flags: 0, packet_count: 3, byte_count: 4 };
        let msg = encode_flow_stats_reply(OFP13_VERSION, 1, true, &[stats.clone(), stats.clone()]).unwrap();
        let reply = MultipartReply::parse(&msg).unwrap();
        assert!(reply.more);
        let mut got = Vec::new();
        reply.flow_stats(&mut got).unwrap();
        assert_eq!(got, [stats.clone(), stats]);
        for cut in 17..msg.len() {
            let r = MultipartReply::parse(&msg[..cut]).unwrap();
            let mut v = Vec::new();
            let mut c = Vec::new();
            if cut != 16 + (msg.len() - 16) / 2 {
                assert!(r.flow_stats(&mut v).is_err(), "cut {cut}");
                assert!(r.flow_cookies(&mut c).is_err(), "cut {cut}");
            }
        }
    }

    #[test]
    fn cookies_are_the_fixed_fields_of_each_entry() {
        let flow = |table, priority, cookie, in_port| {
            Flow::builder(table, priority)
                .cookie(cookie)
                .timeouts(7, 9)
                .matching(Match::builder().in_port(in_port).vlan_vid(5).build().unwrap())
                .actions([Action::PopVlan, Action::output(4)])
                .build()
                .unwrap()
        };
        let stats: Vec<FlowStats> = [(0, 1, 0xa9e7_0000_0000_0001, 1), (3, 0xffff, u64::MAX, 2), (254, 0, 0, 3)]
            .into_iter()
            .map(|(t, p, c, i)| FlowStats {
                flow: flow(t, p, c, i),
                duration_sec: 0xdead,
                duration_nsec: 0xbeef,
                flags: 0xffff,
                packet_count: u64::MAX,
                byte_count: 1,
            })
            .collect();
        let msg = encode_flow_stats_reply(OFP13_VERSION, 1, false, &stats).unwrap();
        let reply = MultipartReply::parse(&msg).unwrap();
        let mut got = Vec::new();
        reply.flow_cookies(&mut got).unwrap();
        let want: Vec<FlowCookie> = stats
            .iter()
            .map(|s| FlowCookie { table: s.flow.table, priority: s.flow.priority, cookie: s.flow.cookie })
            .collect();
        assert_eq!(got, want);
        // An entry whose length does not cover its fixed part is refused, not read past.
        let mut bad = msg.clone();
        bad[16..18].copy_from_slice(&47u16.to_be_bytes());
        assert!(MultipartReply::parse(&bad).unwrap().flow_cookies(&mut got).is_err());
        let other = MultipartReply { mp_type: 2, more: false, body: &[] };
        assert!(other.flow_cookies(&mut got).is_err());
    }
}
