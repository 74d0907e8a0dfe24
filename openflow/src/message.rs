//! The session messages (hello with version negotiation, echo, features, barrier) and the
//! decoder of everything the switch can send ([`Incoming`]).

use crate::bundle::BundleCtrl;
use crate::error::{DecodeError, EncodeError};
use crate::header::{finish_message, msg_type, start_message, Header, HEADER_LEN, OFP13_VERSION, OFP14_VERSION};
use crate::multipart::MultipartReply;
use crate::ofp_error::OfpError;
use crate::wire::{Put, Reader};

/// Versions this crate speaks, lowest first.
pub const SUPPORTED_VERSIONS: [u8; 2] = [OFP13_VERSION, OFP14_VERSION];

const OFPHET_VERSIONBITMAP: u16 = 1;

/// An `OFPT_HELLO` offering `versions` (header version = the highest, plus a version bitmap).
pub fn encode_hello(versions: &[u8], xid: u32) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(16);
    let top = versions.iter().copied().max().unwrap_or(OFP13_VERSION);
    let s = start_message(&mut out, top, msg_type::HELLO, xid);
    out.put_u16(OFPHET_VERSIONBITMAP);
    out.put_u16(8);
    out.put_u32(versions.iter().filter(|v| **v < 32).fold(0u32, |b, v| b | (1 << v)));
    finish_message(&mut out, s)?;
    Ok(out)
}

/// The highest version both sides speak (OpenFlow 1.3 section 6.3.1): with a version bitmap
/// from the peer, the highest bit set in both; without one, the lower of the two header
/// versions, if we speak it.
pub fn negotiate(ours: &[u8], peer_header_version: u8, peer_bitmap: Option<u32>) -> Option<u8> {
    match peer_bitmap {
        Some(bits) => ours.iter().copied().filter(|v| *v < 32 && bits & (1 << v) != 0).max(),
        None => {
            let top = ours.iter().copied().max()?;
            let v = top.min(peer_header_version);
            ours.contains(&v).then_some(v)
        }
    }
}

/// Any message with an empty body (`FEATURES_REQUEST`, `BARRIER_REQUEST`, ...).
pub fn encode_empty(version: u8, msg_type: u8, xid: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    let s = start_message(&mut out, version, msg_type, xid);
    finish_message(&mut out, s).expect("an 8-byte message fits");
    out
}

/// An echo request or reply with `data`.
pub fn encode_echo(version: u8, msg_type: u8, xid: u32, data: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(HEADER_LEN + data.len());
    let s = start_message(&mut out, version, msg_type, xid);
    out.extend_from_slice(data);
    finish_message(&mut out, s)?;
    Ok(out)
}

/// `OFPT_FEATURES_REPLY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// The datapath id.
    pub datapath_id: u64,
    /// Packets the switch can buffer.
    pub n_buffers: u32,
    /// Tables.
    pub n_tables: u8,
    /// Auxiliary connection id (0: main).
    pub auxiliary_id: u8,
    /// `OFPC_*` capabilities.
    pub capabilities: u32,
}

/// A decoded message from the switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// `OFPT_HELLO` and its version bitmap, if it sent one.
    Hello {
        /// Bit `v` set: the switch speaks wire version `v`.
        bitmap: Option<u32>,
    },
    /// `OFPT_ERROR`.
    Error(OfpError),
    /// `OFPT_ECHO_REQUEST`: answer with the same xid and data.
    EchoRequest(&'a [u8]),
    /// `OFPT_ECHO_REPLY`.
    EchoReply,
    /// `OFPT_FEATURES_REPLY`.
    FeaturesReply(Features),
    /// `OFPT_BARRIER_REPLY`.
    BarrierReply,
    /// `OFPT_MULTIPART_REPLY` (one part).
    MultipartReply(MultipartReply<'a>),
    /// A bundle control reply (either form).
    BundleCtrl(BundleCtrl),
    /// Anything else (packet-in, port status, ...), not decoded further.
    Other {
        /// The message type.
        msg_type: u8,
    },
}

/// Decodes a whole message (as [`crate::Framer`] returns it). `version`, once negotiated,
/// must match the header's (a hello may carry any).
pub fn decode(message: &[u8], version: Option<u8>) -> Result<(Header, Incoming<'_>), DecodeError> {
    let h = Header::parse(message)?;
    if usize::from(h.length) != message.len() {
        return Err(DecodeError::BadLength {
            what: "OpenFlow message",
            len: usize::from(h.length),
            reason: "differs from the bytes framed",
        });
    }
    if let Some(want) = version {
        if h.msg_type != msg_type::HELLO && h.version != want {
            return Err(DecodeError::BadVersion { got: h.version, want });
        }
    }
    let mut r = Reader::new(message);
    r.skip(HEADER_LEN, "OpenFlow header")?;
    let incoming = match h.msg_type {
        msg_type::HELLO => Incoming::Hello { bitmap: hello_bitmap(&mut r)? },
        msg_type::ERROR => Incoming::Error(OfpError::decode(message)?),
        msg_type::ECHO_REQUEST => Incoming::EchoRequest(r.rest()),
        msg_type::ECHO_REPLY => Incoming::EchoReply,
        msg_type::FEATURES_REPLY => {
            let datapath_id = r.u64("datapath_id")?;
            let n_buffers = r.u32("n_buffers")?;
            let n_tables = r.u8("n_tables")?;
            let auxiliary_id = r.u8("auxiliary_id")?;
            r.skip(2, "pad")?;
            let capabilities = r.u32("capabilities")?;
            Incoming::FeaturesReply(Features { datapath_id, n_buffers, n_tables, auxiliary_id, capabilities })
        }
        msg_type::BARRIER_REPLY => Incoming::BarrierReply,
        msg_type::MULTIPART_REPLY => Incoming::MultipartReply(MultipartReply::parse(message)?),
        msg_type::BUNDLE_CONTROL | msg_type::EXPERIMENTER => match BundleCtrl::decode(message)? {
            Some(c) => Incoming::BundleCtrl(c),
            None => Incoming::Other { msg_type: h.msg_type },
        },
        other => Incoming::Other { msg_type: other },
    };
    Ok((h, incoming))
}

/// The union of the version bitmaps in a hello's elements (`None` without any).
fn hello_bitmap(r: &mut Reader<'_>) -> Result<Option<u32>, DecodeError> {
    let mut bitmap = None;
    // Elements are padded to 8 bytes; a trailing fragment shorter than an element header is
    // padding.
    while r.remaining() >= 4 {
        let kind = r.u16("hello element type")?;
        let len = usize::from(r.u16("hello element length")?);
        let body_len = len.checked_sub(4).ok_or(DecodeError::BadLength {
            what: "hello element",
            len,
            reason: "shorter than its 4-byte header",
        })?;
        let mut body = r.sub(body_len, "hello element")?;
        r.skip(((8 - len % 8) % 8).min(r.remaining()), "hello element padding")?;
        if kind == OFPHET_VERSIONBITMAP {
            // Only the first 32-bit word covers versions 0..31.
            if body.remaining() >= 4 {
                *bitmap.get_or_insert(0) |= body.u32("version bitmap")?;
            }
        }
    }
    Ok(bitmap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_layout_and_negotiation() {
        let h = encode_hello(&SUPPORTED_VERSIONS, 1).unwrap();
        // OpenFlow 1.3 7.5.1: header, element type 1 len 8, bitmap with bits 4 and 5.
        assert_eq!(h, [5, 0, 0, 16, 0, 0, 0, 1, 0, 1, 0, 8, 0, 0, 0, 0x30]);
        let (_, inc) = decode(&h, None).unwrap();
        assert_eq!(inc, Incoming::Hello { bitmap: Some(0x30) });
        assert_eq!(negotiate(&SUPPORTED_VERSIONS, 4, Some(0x10)), Some(4));
        assert_eq!(negotiate(&SUPPORTED_VERSIONS, 6, Some(0x7e)), Some(5));
        assert_eq!(negotiate(&SUPPORTED_VERSIONS, 1, Some(0x02)), None);
        assert_eq!(negotiate(&SUPPORTED_VERSIONS, 6, None), Some(5));
        assert_eq!(negotiate(&SUPPORTED_VERSIONS, 4, None), Some(4));
        assert_eq!(negotiate(&SUPPORTED_VERSIONS, 1, None), None);
    }

    #[test]
    fn decode_checks_lengths_and_versions() {
        let e = encode_empty(4, msg_type::BARRIER_REPLY, 3);
        assert_eq!(decode(&e, Some(4)).unwrap().1, Incoming::BarrierReply);
        assert_eq!(decode(&e, Some(5)).unwrap_err(), DecodeError::BadVersion { got: 4, want: 5 });
        assert!(decode(&e[..7], Some(4)).is_err());
        let mut long = e.clone();
        long.push(0);
        assert!(decode(&long, Some(4)).is_err());
        let hello_bad_elem = [4, 0, 0, 12, 0, 0, 0, 1, 0, 1, 0, 2];
        assert!(decode(&hello_bad_elem, None).is_err());
    }
}
