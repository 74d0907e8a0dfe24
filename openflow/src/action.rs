//! Actions: the OpenFlow 1.3 standard ones the overlay uses and Open vSwitch's Nicira
//! extensions ([`crate::nx`]), with their wire encoding and a decoder that keeps any action it
//! does not know byte for byte ([`Action::Raw`]).
//!
//! Adding an action: a variant here, its encoding and decoding (in [`crate::nx`] for a Nicira
//! one), its `Display` arm, and, if it needs something of the match, a line in
//! [`check_actions`].

use std::fmt;

use crate::error::{DecodeError, EncodeError, FlowError};
use crate::flow_match::{fmt_value, Match, ETH_TYPE_IP, ETH_TYPE_IPV6, OFPVID_PRESENT};
use crate::nx::{self, Ct, FieldRange, Nat};
use crate::oxm::{put_tlv, read_tlv, Field};
use crate::wire::{len16, Put, Reader};

/// Reserved OpenFlow port numbers (OpenFlow 1.3 `ofp_port_no`).
pub mod port {
    /// Send the packet back out of the port it came in on.
    pub const IN_PORT: u32 = 0xffff_fff8;
    /// Submit to the first table (packet-out only).
    pub const TABLE: u32 = 0xffff_fff9;
    /// The switch's normal L2 processing.
    pub const NORMAL: u32 = 0xffff_fffa;
    /// Every port but the ingress port and those with flooding disabled.
    pub const FLOOD: u32 = 0xffff_fffb;
    /// Every port but the ingress port.
    pub const ALL: u32 = 0xffff_fffc;
    /// To the controller (a packet-in).
    pub const CONTROLLER: u32 = 0xffff_fffd;
    /// The bridge's local (internal) port.
    pub const LOCAL: u32 = 0xffff_fffe;
    /// Wildcard in requests (flow_mod delete `out_port`, flow stats).
    pub const ANY: u32 = 0xffff_ffff;
}

/// `max_len` asking for the whole packet in a packet-in (`OFPCML_NO_BUFFER`).
pub const OFPCML_NO_BUFFER: u16 = 0xffff;

const OFPAT_OUTPUT: u16 = 0;
const OFPAT_PUSH_VLAN: u16 = 17;
const OFPAT_POP_VLAN: u16 = 18;
const OFPAT_DEC_NW_TTL: u16 = 24;
const OFPAT_SET_FIELD: u16 = 25;
pub(crate) const OFPAT_EXPERIMENTER: u16 = 0xffff;

/// One action.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// `output:PORT` (a number or one of [`port`]); `max_len` matters only for
    /// [`port::CONTROLLER`].
    Output {
        /// The port.
        port: u32,
        /// Bytes of the packet sent to the controller.
        max_len: u16,
    },
    /// `push_vlan:ETHERTYPE` (0x8100).
    PushVlan(u16),
    /// `pop_vlan` (`strip_vlan`).
    PopVlan,
    /// `set_field:VALUE->FIELD`: the whole field. For `vlan_vid` the value carries
    /// [`OFPVID_PRESENT`] (use [`Action::set_vlan_vid`]).
    SetField {
        /// The field.
        field: Field,
        /// Its new value, right-aligned.
        value: u128,
    },
    /// `dec_ttl` (OFPAT_DEC_NW_TTL).
    DecTtl,
    /// `move:SRC[a..b]->DST[c..d]` (NXAST_REG_MOVE).
    Move {
        /// Bits read.
        src: FieldRange,
        /// Bits written (same width).
        dst: FieldRange,
    },
    /// `resubmit(PORT,TABLE)` (NXAST_RESUBMIT / NXAST_RESUBMIT_TABLE).
    Resubmit {
        /// The in_port the packet looks like it came from; `None` keeps its own.
        in_port: Option<u32>,
        /// The table to search; `None` is the current one.
        table: Option<u8>,
    },
    /// `ct(...)` (NXAST_CT).
    Ct(Ct),
    /// `nat(...)`: only inside [`Ct::actions`] (NXAST_NAT).
    Nat(Nat),
    /// `ct_clear` (NXAST_CT_CLEAR).
    CtClear,
    /// An action this crate does not decode, as sent (type, length and body).
    Raw(Vec<u8>),
}

impl Action {
    /// `output:PORT`.
    pub fn output(port: u32) -> Action {
        Action::Output { port, max_len: 0 }
    }

    /// `IN_PORT`: back where the packet came from.
    pub fn in_port() -> Action {
        Action::output(port::IN_PORT)
    }

    /// `CONTROLLER:65535`.
    pub fn controller() -> Action {
        Action::Output { port: port::CONTROLLER, max_len: OFPCML_NO_BUFFER }
    }

    /// `push_vlan:0x8100`.
    pub fn push_vlan() -> Action {
        Action::PushVlan(crate::flow_match::ETH_TYPE_VLAN)
    }

    /// `set_field:VID->vlan_vid` with [`OFPVID_PRESENT`] (as ovs-ofctl's `mod_vlan_vid` after a
    /// `push_vlan`).
    pub fn set_vlan_vid(vid: u16) -> Action {
        Action::SetField { field: Field::VlanVid, value: u128::from(OFPVID_PRESENT | (vid & 0x0fff)) }
    }

    /// `set_field:VALUE->FIELD`.
    pub fn set_field(field: Field, value: u128) -> Action {
        Action::SetField { field, value }
    }

    /// `move:SRC[]->DST[]`, whole fields (the narrower width is moved).
    pub fn move_field(src: Field, dst: Field) -> Action {
        let n = src.bits().min(dst.bits()) as u16;
        Action::Move {
            src: FieldRange { field: src, ofs: 0, n_bits: n },
            dst: FieldRange { field: dst, ofs: 0, n_bits: n },
        }
    }

    /// `resubmit(,TABLE)`.
    pub fn resubmit_table(table: u8) -> Action {
        Action::Resubmit { in_port: None, table: Some(table) }
    }
}

impl Action {
    /// Rewrites the action into the one form the switch reads back, where the wire has two
    /// spellings of the same thing: a resubmit to in_port [`port::IN_PORT`] is a resubmit with
    /// no port; a `nat` with neither addresses nor ports has no direction.
    pub fn canonicalize(&mut self) {
        match self {
            Action::Resubmit { in_port, .. } if *in_port == Some(port::IN_PORT) => *in_port = None,
            Action::Nat(nat) if nat.addrs.is_none() && nat.ports.is_none() => nat.src = false,
            Action::Ct(ct) => ct.actions.iter_mut().for_each(Action::canonicalize),
            _ => {}
        }
    }
}

/// Appends one action.
pub(crate) fn encode_action(a: &Action, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    match a {
        Action::Output { port, max_len } => {
            out.put_u16(OFPAT_OUTPUT);
            out.put_u16(16);
            out.put_u32(*port);
            out.put_u16(*max_len);
            out.put_zeros(6);
        }
        Action::PushVlan(ethertype) => {
            out.put_u16(OFPAT_PUSH_VLAN);
            out.put_u16(8);
            out.put_u16(*ethertype);
            out.put_zeros(2);
        }
        Action::PopVlan | Action::DecTtl => {
            out.put_u16(if *a == Action::PopVlan { OFPAT_POP_VLAN } else { OFPAT_DEC_NW_TTL });
            out.put_u16(8);
            out.put_zeros(4);
        }
        Action::SetField { field, value } => {
            out.put_u16(OFPAT_SET_FIELD);
            out.put_u16(0);
            put_tlv(out, *field, *value, None);
            out.pad_to_8(start);
            let len = len16(out, start)?;
            out.set_u16(start + 2, len);
        }
        Action::Raw(bytes) => out.extend_from_slice(bytes),
        nx_action => nx::encode(nx_action, out)?,
    }
    Ok(())
}

/// Appends an action list.
pub(crate) fn encode_actions(actions: &[Action], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    actions.iter().try_for_each(|a| encode_action(a, out))
}

/// Reads actions until `r` is empty.
pub(crate) fn decode_actions(r: &mut Reader<'_>) -> Result<Vec<Action>, DecodeError> {
    let mut v = Vec::new();
    while !r.is_empty() {
        v.push(decode_action(r)?);
    }
    Ok(v)
}

fn decode_action(r: &mut Reader<'_>) -> Result<Action, DecodeError> {
    let whole = r.rest();
    let kind = r.u16("action type")?;
    let len = usize::from(r.u16("action length")?);
    if len < 8 || len % 8 != 0 {
        return Err(DecodeError::BadLength { what: "action", len, reason: "want a multiple of 8, at least 8" });
    }
    let mut body = r.sub(len - 4, "action body")?;
    let raw = || Action::Raw(whole[..len].to_vec());
    Ok(match kind {
        OFPAT_OUTPUT if len == 16 => {
            let port = body.u32("output port")?;
            let max_len = body.u16("output max_len")?;
            Action::Output { port, max_len }
        }
        OFPAT_PUSH_VLAN if len == 8 => Action::PushVlan(body.u16("push_vlan ethertype")?),
        OFPAT_POP_VLAN if len == 8 => Action::PopVlan,
        OFPAT_DEC_NW_TTL if len == 8 => Action::DecTtl,
        OFPAT_SET_FIELD => {
            let tlv = read_tlv(&mut body)?;
            match tlv.known()? {
                Some((field, value, None)) => Action::SetField { field, value },
                _ => raw(),
            }
        }
        OFPAT_EXPERIMENTER => nx::decode(&mut body)?.unwrap_or_else(raw),
        _ => raw(),
    })
}

/// Checks what an action list needs of the match, as Open vSwitch does when it installs the
/// flow (it would answer OFPBAC_MATCH_INCONSISTENT): set-field and move operands have their
/// fields' prerequisites, VLAN fields need a tag (matched, or pushed by an earlier action),
/// `ct` and `dec_ttl` need IP.
pub(crate) fn check_actions(m: &Match, actions: &[Action]) -> Result<(), FlowError> {
    let p = u128::from(OFPVID_PRESENT);
    let mut vlan = m.get(Field::VlanVid).is_some_and(|v| v.value & p != 0 && v.mask.unwrap_or(p) & p != 0);
    let is_ip = matches!(m.exact(Field::EthType).map(|v| v as u16), Some(ETH_TYPE_IP | ETH_TYPE_IPV6));
    for (index, a) in actions.iter().enumerate() {
        let fail = |needs: String| FlowError::ActionPrerequisite { index, action: a.to_string(), needs };
        let field_ok = |f: Field, vlan: bool| -> Result<(), FlowError> {
            if matches!(f, Field::VlanVid | Field::VlanPcp) {
                return if vlan { Ok(()) } else { Err(fail("a VLAN tag (match one, or push_vlan first)".into())) };
            }
            m.prerequisites_of(f).map_err(fail)
        };
        match a {
            Action::PushVlan(_) => vlan = true,
            Action::PopVlan => vlan = false,
            Action::SetField { field, .. } => field_ok(*field, vlan)?,
            Action::Move { src, dst } => {
                src.check("move source")?;
                dst.check("move destination")?;
                field_ok(src.field, vlan)?;
                field_ok(dst.field, vlan)?;
            }
            Action::Ct(ct) => {
                if !is_ip {
                    return Err(fail("eth_type ip or ipv6".into()));
                }
                ct.check()?;
            }
            Action::DecTtl if !is_ip => return Err(fail("eth_type ip or ipv6".into())),
            _ => {}
        }
    }
    Ok(())
}

/// An OpenFlow port number as ovs-ofctl prints it.
pub(crate) fn fmt_port(f: &mut fmt::Formatter<'_>, p: u32) -> fmt::Result {
    match p {
        port::IN_PORT => f.write_str("IN_PORT"),
        port::TABLE => f.write_str("TABLE"),
        port::NORMAL => f.write_str("NORMAL"),
        port::FLOOD => f.write_str("FLOOD"),
        port::ALL => f.write_str("ALL"),
        port::CONTROLLER => f.write_str("CONTROLLER"),
        port::LOCAL => f.write_str("LOCAL"),
        port::ANY => f.write_str("ANY"),
        n => write!(f, "{n}"),
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Output { port: port::CONTROLLER, max_len } => write!(f, "CONTROLLER:{max_len}"),
            Action::Output { port: p, .. } if *p >= port::IN_PORT => fmt_port(f, *p),
            Action::Output { port, .. } => write!(f, "output:{port}"),
            Action::PushVlan(t) => write!(f, "push_vlan:{t:#06x}"),
            Action::PopVlan => f.write_str("pop_vlan"),
            Action::SetField { field, value } => {
                f.write_str("set_field:")?;
                fmt_value(f, *field, *value)?;
                write!(f, "->{field}")
            }
            Action::DecTtl => f.write_str("dec_ttl"),
            Action::Move { src, dst } => write!(f, "move:{src}->{dst}"),
            Action::Resubmit { in_port, table } => {
                f.write_str("resubmit(")?;
                if let Some(p) = in_port {
                    fmt_port(f, *p)?;
                }
                f.write_str(",")?;
                if let Some(t) = table {
                    write!(f, "{t}")?;
                }
                f.write_str(")")
            }
            Action::Ct(ct) => write!(f, "{ct}"),
            Action::Nat(nat) => write!(f, "{nat}"),
            Action::CtClear => f.write_str("ct_clear"),
            Action::Raw(bytes) => {
                f.write_str("raw(")?;
                for b in bytes {
                    write!(f, "{b:02x}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// Formats an action list as ovs-ofctl does (`drop` when empty).
pub(crate) fn fmt_actions(f: &mut fmt::Formatter<'_>, actions: &[Action]) -> fmt::Result {
    if actions.is_empty() {
        return f.write_str("drop");
    }
    for (i, a) in actions.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        write!(f, "{a}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(a: &Action) -> Vec<u8> {
        let mut out = Vec::new();
        encode_action(a, &mut out).unwrap();
        out
    }

    #[test]
    fn standard_layouts() {
        // OpenFlow 1.3 7.2.5: ofp_action_output is 16 bytes: type 0, len 16, port, max_len, pad.
        assert_eq!(bytes(&Action::output(10)), [0, 0, 0, 16, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes(&Action::push_vlan()), [0, 17, 0, 8, 0x81, 0, 0, 0]);
        assert_eq!(bytes(&Action::PopVlan), [0, 18, 0, 8, 0, 0, 0, 0]);
        assert_eq!(bytes(&Action::DecTtl), [0, 24, 0, 8, 0, 0, 0, 0]);
        // set_field:4097->vlan_vid: type 25, len 16, OXM_OF_VLAN_VID (0x80000c02) 0x1001, pad 6.
        assert_eq!(bytes(&Action::set_vlan_vid(1)), [0, 25, 0, 16, 0x80, 0, 0x0c, 2, 0x10, 1, 0, 0, 0, 0, 0, 0]);
        // set_field:198.18.0.2->tun_dst: NXM_NX_TUN_IPV4_DST (0x00014004), len 16.
        assert_eq!(
            bytes(&Action::set_field(Field::TunIpv4Dst, 0xc612_0002)),
            [0, 25, 0, 16, 0, 1, 0x40, 4, 198, 18, 0, 2, 0, 0, 0, 0]
        );
    }

    #[test]
    fn round_trip_and_raw() {
        let acts = vec![
            Action::output(1),
            Action::controller(),
            Action::push_vlan(),
            Action::set_vlan_vid(7),
            Action::PopVlan,
            Action::DecTtl,
            Action::set_field(Field::EthSrc, 0x0200_0000_0102),
            Action::set_field(Field::TunId, 100),
            Action::Raw(vec![0, 11, 0, 8, 0, 0, 0, 0]),
        ];
        let mut out = Vec::new();
        encode_actions(&acts, &mut out).unwrap();
        let back = decode_actions(&mut Reader::new(&out)).unwrap();
        assert_eq!(back, acts);
    }

    #[test]
    fn bad_lengths() {
        for b in [&[0u8, 0, 0, 4][..], &[0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0], &[0, 0, 0, 16, 0, 0, 0, 0]] {
            assert!(decode_actions(&mut Reader::new(b)).is_err(), "{b:?}");
        }
    }
}
