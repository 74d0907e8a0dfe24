//! Bundles: a set of messages the switch applies all or none (OpenFlow 1.4 section 7.3.9).
//!
//! OpenFlow 1.4 has `OFPT_BUNDLE_CONTROL` (33) and `OFPT_BUNDLE_ADD_MESSAGE` (34). For
//! OpenFlow 1.3, Open vSwitch accepts the same bodies as ONF extension EXT-230: an
//! `OFPT_EXPERIMENTER` message with experimenter `0x4f4e4600` (ONF) and exp_type 2300 (control)
//! or 2301 (add), which is what `ovs-ofctl -O OpenFlow13 --bundle` sends. The body is the same
//! in both: `bundle_id, type, flags` for control, `bundle_id, pad, flags, message` for add.
//! The xid of a message added to a bundle is the xid of its add message, so the switch's error
//! about it (at add or at commit) names it.

use crate::error::{DecodeError, EncodeError};
use crate::header::{finish_message, msg_type, start_message, Header, HEADER_LEN, OFP13_VERSION};
use crate::wire::{Put, Reader};

/// ONF's experimenter id.
pub const ONF_EXPERIMENTER_ID: u32 = 0x4f4e_4600;
const ONFT_BUNDLE_CONTROL: u32 = 2300;
const ONFT_BUNDLE_ADD_MESSAGE: u32 = 2301;

/// `OFPBF_ATOMIC`: all or nothing.
pub const OFPBF_ATOMIC: u16 = 1;
/// `OFPBF_ORDERED`: in the order added.
pub const OFPBF_ORDERED: u16 = 2;

/// `ofp_bundle_ctrl_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleCtrlType {
    /// Open a bundle.
    OpenRequest = 0,
    /// Opened.
    OpenReply = 1,
    /// Close (no more adds).
    CloseRequest = 2,
    /// Closed.
    CloseReply = 3,
    /// Apply every message.
    CommitRequest = 4,
    /// Applied.
    CommitReply = 5,
    /// Throw the bundle away.
    DiscardRequest = 6,
    /// Thrown away.
    DiscardReply = 7,
}

impl BundleCtrlType {
    fn from_u16(v: u16) -> Option<Self> {
        use BundleCtrlType::*;
        [OpenRequest, OpenReply, CloseRequest, CloseReply, CommitRequest, CommitReply, DiscardRequest, DiscardReply]
            .get(usize::from(v))
            .copied()
    }
}

/// A bundle control message (either direction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleCtrl {
    /// The bundle.
    pub bundle_id: u32,
    /// What it asks or answers.
    pub kind: BundleCtrlType,
    /// `OFPBF_*`.
    pub flags: u16,
}

fn start(out: &mut Vec<u8>, version: u8, xid: u32, of14_type: u8, onf_type: u32) -> usize {
    if version == OFP13_VERSION {
        let s = start_message(out, version, msg_type::EXPERIMENTER, xid);
        out.put_u32(ONF_EXPERIMENTER_ID);
        out.put_u32(onf_type);
        s
    } else {
        start_message(out, version, of14_type, xid)
    }
}

impl BundleCtrl {
    /// Appends the message in the form `version` uses.
    pub fn encode(&self, version: u8, xid: u32, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let s = start(out, version, xid, msg_type::BUNDLE_CONTROL, ONFT_BUNDLE_CONTROL);
        out.put_u32(self.bundle_id);
        out.put_u16(self.kind as u16);
        out.put_u16(self.flags);
        finish_message(out, s)
    }

    /// Decodes a bundle control message (header included) in either form; `Ok(None)` for an
    /// experimenter message that is not ONF bundle control.
    pub fn decode(message: &[u8]) -> Result<Option<BundleCtrl>, DecodeError> {
        let h = Header::parse(message)?;
        let mut r = Reader::new(message);
        r.skip(HEADER_LEN, "OpenFlow header")?;
        if h.msg_type == msg_type::EXPERIMENTER {
            let exp = r.u32("experimenter id")?;
            let exp_type = r.u32("experimenter type")?;
            if exp != ONF_EXPERIMENTER_ID || exp_type != ONFT_BUNDLE_CONTROL {
                return Ok(None);
            }
        }
        let bundle_id = r.u32("bundle_id")?;
        let kind = r.u16("bundle control type")?;
        let flags = r.u16("bundle flags")?;
        let kind = BundleCtrlType::from_u16(kind)
            .ok_or_else(|| DecodeError::BadValue { what: "bundle control type", detail: kind.to_string() })?;
        Ok(Some(BundleCtrl { bundle_id, kind, flags }))
    }
}

/// Appends an add message carrying `inner` (a whole message whose xid should be `xid`).
pub fn encode_bundle_add(
    version: u8,
    xid: u32,
    bundle_id: u32,
    flags: u16,
    inner: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let s = start(out, version, xid, msg_type::BUNDLE_ADD_MESSAGE, ONFT_BUNDLE_ADD_MESSAGE);
    out.put_u32(bundle_id);
    out.put_u16(0);
    out.put_u16(flags);
    out.extend_from_slice(inner);
    finish_message(out, s)
}

/// A decoded add message: its bundle, flags, and the message it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleAdd<'a> {
    /// The bundle.
    pub bundle_id: u32,
    /// `OFPBF_*`.
    pub flags: u16,
    /// The whole message added (header included).
    pub message: &'a [u8],
}

impl<'a> BundleAdd<'a> {
    /// Decodes an add message (header included) in either form, as [`encode_bundle_add`]
    /// writes it.
    pub fn decode(message: &'a [u8]) -> Result<BundleAdd<'a>, DecodeError> {
        let h = Header::parse(message)?;
        let body = message.get(..usize::from(h.length)).ok_or(DecodeError::BadLength {
            what: "bundle add message",
            len: usize::from(h.length),
            reason: "longer than the bytes given",
        })?;
        let mut r = Reader::new(body);
        r.skip(HEADER_LEN, "OpenFlow header")?;
        match h.msg_type {
            msg_type::BUNDLE_ADD_MESSAGE => {}
            msg_type::EXPERIMENTER => {
                let exp = r.u32("experimenter id")?;
                let exp_type = r.u32("experimenter type")?;
                if exp != ONF_EXPERIMENTER_ID || exp_type != ONFT_BUNDLE_ADD_MESSAGE {
                    return Err(DecodeError::BadValue {
                        what: "bundle add message",
                        detail: format!("experimenter {exp:#x} type {exp_type}, want ONF 2301"),
                    });
                }
            }
            t => return Err(DecodeError::UnexpectedType { msg_type: t, name: crate::header::type_name(t) }),
        }
        let bundle_id = r.u32("bundle_id")?;
        r.skip(2, "pad")?;
        let flags = r.u16("bundle flags")?;
        Ok(BundleAdd { bundle_id, flags, message: r.rest() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::OFP14_VERSION;

    #[test]
    fn both_forms() {
        let c = BundleCtrl { bundle_id: 7, kind: BundleCtrlType::OpenRequest, flags: OFPBF_ATOMIC | OFPBF_ORDERED };
        let mut of14 = Vec::new();
        c.encode(OFP14_VERSION, 1, &mut of14).unwrap();
        assert_eq!(of14, [5, 33, 0, 16, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 3]);
        let mut of13 = Vec::new();
        c.encode(OFP13_VERSION, 1, &mut of13).unwrap();
        assert_eq!(of13, [4, 4, 0, 24, 0, 0, 0, 1, 0x4f, 0x4e, 0x46, 0, 0, 0, 0x08, 0xfc, 0, 0, 0, 7, 0, 0, 0, 3]);
        assert_eq!(BundleCtrl::decode(&of14).unwrap(), Some(c));
        assert_eq!(BundleCtrl::decode(&of13).unwrap(), Some(c));
        let mut add = Vec::new();
        encode_bundle_add(OFP13_VERSION, 2, 7, 3, &[4, 20, 0, 8, 0, 0, 0, 2], &mut add).unwrap();
        assert_eq!(add.len(), 8 + 8 + 8 + 8);
        assert_eq!(&add[12..16], 2301u32.to_be_bytes());
        let inner = [5, 14, 0, 8, 0, 0, 0, 2];
        let mut add14 = Vec::new();
        encode_bundle_add(OFP14_VERSION, 2, 7, 3, &inner, &mut add14).unwrap();
        assert_eq!(add14.len(), 8 + 8 + 8);
        for (bytes, want) in [(&add, [4, 20, 0, 8, 0, 0, 0, 2]), (&add14, inner)] {
            let a = BundleAdd::decode(bytes).unwrap();
            assert_eq!((a.bundle_id, a.flags, a.message), (7, 3, &want[..]));
            for cut in 0..bytes.len() {
                assert!(BundleAdd::decode(&bytes[..cut]).is_err(), "cut {cut}");
            }
        }
        assert!(BundleAdd::decode(&of13).is_err(), "a control message is not an add");
    }
}
