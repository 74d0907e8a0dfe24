//! Open vSwitch's Nicira extension actions (nicira-ext.h, ovs-actions(7)): `move`
//! (NXAST_REG_MOVE), `resubmit` (NXAST_RESUBMIT / NXAST_RESUBMIT_TABLE), `ct` (NXAST_CT) with
//! `nat` (NXAST_NAT) inside, and `ct_clear` (NXAST_CT_CLEAR). Each is an OpenFlow experimenter
//! action: type 0xffff, length, vendor 0x00002320, a 16-bit subtype, then its body.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::action::{decode_actions, encode_actions, Action, OFPAT_EXPERIMENTER};
use crate::error::{DecodeError, EncodeError, FlowError};
use crate::oxm::{field_of_header, port_from_16, Field};
use crate::wire::{len16, Put, Reader};

/// Nicira's experimenter (vendor) id.
pub(crate) const NX_VENDOR_ID: u32 = 0x0000_2320;
const NXAST_RESUBMIT: u16 = 1;
const NXAST_REG_MOVE: u16 = 6;
const NXAST_RESUBMIT_TABLE: u16 = 14;
const NXAST_CT: u16 = 35;
const NXAST_NAT: u16 = 36;
const NXAST_CT_CLEAR: u16 = 43;

/// OpenFlow 1.0 `OFPP_IN_PORT`, as resubmit's 16-bit in_port says "the packet's own".
const OFPP10_IN_PORT: u16 = 0xfff8;
/// `recirc_table` of a `ct` that does not recirculate.
const NX_CT_RECIRC_NONE: u8 = 0xff;

/// Bits `ofs .. ofs + n_bits` of a field (`NXM_OF_ETH_SRC[]`, `NXM_NX_REG0[0..15]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldRange {
    /// The field.
    pub field: Field,
    /// First bit (0 is the least significant).
    pub ofs: u16,
    /// Number of bits.
    pub n_bits: u16,
}

impl FieldRange {
    /// The whole field (`FIELD[]`).
    pub fn whole(field: Field) -> FieldRange {
        FieldRange { field, ofs: 0, n_bits: field.bits() as u16 }
    }

    pub(crate) fn check(&self, what: &'static str) -> Result<(), FlowError> {
        let end = u32::from(self.ofs) + u32::from(self.n_bits);
        if self.n_bits == 0 || end > self.field.bits() {
            return Err(FlowError::BadFieldRange {
                what,
                field: self.field,
                ofs: self.ofs,
                end,
                bits: self.field.bits(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for FieldRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ofs == 0 && u32::from(self.n_bits) == self.field.bits() {
            write!(f, "{}[]", self.field)
        } else {
            write!(f, "{}[{}..{}]", self.field, self.ofs, u32::from(self.ofs) + u32::from(self.n_bits) - 1)
        }
    }
}

/// The conntrack zone of a `ct` action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CtZone {
    /// `zone=N`.
    Immediate(u16),
    /// `zone=FIELD[a..b]` (16 bits of a register, typically).
    Field(FieldRange),
}

impl Default for CtZone {
    fn default() -> Self {
        CtZone::Immediate(0)
    }
}

/// `ct(...)`: send the packet through the connection tracker.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ct {
    /// `commit`: create the connection entry.
    pub commit: bool,
    /// `force`: a committed connection in the other direction is ended first.
    pub force: bool,
    /// `zone=`.
    pub zone: CtZone,
    /// `table=N`: continue, with ct_state filled in, in this table (a recirculation).
    pub table: Option<u8>,
    /// `alg=` (0 none, 21 ftp, 69 tftp).
    pub alg: u16,
    /// Nested actions: [`Action::Nat`] and `set_field` of `ct_mark` (ovs-ofctl's `exec(...)`).
    pub actions: Vec<Action>,
}

impl Ct {
    pub(crate) fn check(&self) -> Result<(), FlowError> {
        if let CtZone::Field(r) = &self.zone {
            r.check("ct zone")?;
        }
        Ok(())
    }
}

/// Addresses a `nat` maps to: one address or an inclusive range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NatAddrs {
    /// IPv4 `min[-max]`.
    V4(Ipv4Addr, Option<Ipv4Addr>),
    /// IPv6 `min[-max]`.
    V6(Ipv6Addr, Option<Ipv6Addr>),
}

/// `nat(...)` inside `ct`: `nat` alone applies the NAT of an existing connection;
/// `nat(src=...)` / `nat(dst=...)` set it up on commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nat {
    /// `src=`: source NAT; `dst=` when false and [`Nat::addrs`] is set.
    pub src: bool,
    /// Addresses (with `src` or `dst`).
    pub addrs: Option<NatAddrs>,
    /// Ports `min[-max]`.
    pub ports: Option<(u16, Option<u16>)>,
    /// `persistent`.
    pub persistent: bool,
    /// `hash` port selection.
    pub hash: bool,
    /// `random` port selection.
    pub random: bool,
}

const NAT_SRC: u16 = 1;
const NAT_DST: u16 = 2;
const NAT_PERSISTENT: u16 = 4;
const NAT_PROTO_HASH: u16 = 8;
const NAT_PROTO_RANDOM: u16 = 16;
const R_IPV4_MIN: u16 = 1;
const R_IPV4_MAX: u16 = 2;
const R_IPV6_MIN: u16 = 4;
const R_IPV6_MAX: u16 = 8;
const R_PROTO_MIN: u16 = 16;
const R_PROTO_MAX: u16 = 32;

fn header(out: &mut Vec<u8>, subtype: u16) -> usize {
    let start = out.len();
    out.put_u16(OFPAT_EXPERIMENTER);
    out.put_u16(0);
    out.put_u32(NX_VENDOR_ID);
    out.put_u16(subtype);
    start
}

fn finish(out: &mut Vec<u8>, start: usize) -> Result<(), EncodeError> {
    out.pad_to_8(start);
    let len = len16(out, start)?;
    out.set_u16(start + 2, len);
    Ok(())
}

fn ofs_nbits(r: &FieldRange) -> u16 {
    (r.ofs << 6) | (r.n_bits.saturating_sub(1) & 0x3f)
}

/// Appends a Nicira action (the caller routes only those here).
pub(crate) fn encode(a: &Action, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start;
    match a {
        Action::Move { src, dst } => {
            start = header(out, NXAST_REG_MOVE);
            out.put_u16(src.n_bits);
            out.put_u16(src.ofs);
            out.put_u16(dst.ofs);
            out.put_u32(src.field.nx_header());
            out.put_u32(dst.field.nx_header());
        }
        Action::Resubmit { in_port, table } => {
            // OVS sends the short form when no table is named; so does this, so a dump equals.
            start = header(out, if table.is_some() { NXAST_RESUBMIT_TABLE } else { NXAST_RESUBMIT });
            out.put_u16(in_port.map_or(OFPP10_IN_PORT, port_to_16));
            out.put_u8(table.unwrap_or(0xff));
        }
        Action::Ct(ct) => {
            start = header(out, NXAST_CT);
            out.put_u16(u16::from(ct.commit) | (u16::from(ct.force) << 1));
            match &ct.zone {
                CtZone::Immediate(z) => {
                    out.put_u32(0);
                    out.put_u16(*z);
                }
                CtZone::Field(r) => {
                    out.put_u32(r.field.nx_header());
                    out.put_u16(ofs_nbits(r));
                }
            }
            out.put_u8(ct.table.unwrap_or(NX_CT_RECIRC_NONE));
            out.put_zeros(3);
            out.put_u16(ct.alg);
            encode_actions(&ct.actions, out)?;
        }
        Action::Nat(nat) => {
            start = header(out, NXAST_NAT);
            out.put_zeros(2);
            let mut flags = 0;
            if nat.addrs.is_some() || nat.ports.is_some() {
                flags |= if nat.src { NAT_SRC } else { NAT_DST };
            }
            flags |= if nat.persistent { NAT_PERSISTENT } else { 0 };
            flags |= if nat.hash { NAT_PROTO_HASH } else { 0 };
            flags |= if nat.random { NAT_PROTO_RANDOM } else { 0 };
            out.put_u16(flags);
            let present_at = out.len();
            out.put_u16(0);
            let mut present = 0;
            match nat.addrs {
                Some(NatAddrs::V4(min, max)) => {
                    out.put_u32(min.into());
                    present |= R_IPV4_MIN;
                    if let Some(max) = max {
                        out.put_u32(max.into());
                        present |= R_IPV4_MAX;
                    }
                }
                Some(NatAddrs::V6(min, max)) => {
                    out.extend_from_slice(&min.octets());
                    present |= R_IPV6_MIN;
                    if let Some(max) = max {
                        out.extend_from_slice(&max.octets());
                        present |= R_IPV6_MAX;
                    }
                }
                None => {}
            }
            if let Some((min, max)) = nat.ports {
                out.put_u16(min);
                present |= R_PROTO_MIN;
                if let Some(max) = max {
                    out.put_u16(max);
                    present |= R_PROTO_MAX;
                }
            }
            out.set_u16(present_at, present);
        }
        Action::CtClear => start = header(out, NXAST_CT_CLEAR),
        other => unreachable!("{other:?} is not a Nicira action"),
    }
    finish(out, start)
}

fn port_to_16(p: u32) -> u16 {
    if p >= 0xffff_ff00 {
        p as u16
    } else {
        p.min(0xfeff) as u16
    }
}

fn range(header: u32, ofs: u16, n_bits: u16) -> Option<FieldRange> {
    Some(FieldRange { field: field_of_header(header)?, ofs, n_bits })
}

/// Decodes the body of an experimenter action (after type and length); `None` for a vendor
/// or subtype this crate does not know (the caller keeps it raw).
pub(crate) fn decode(body: &mut Reader<'_>) -> Result<Option<Action>, DecodeError> {
    if body.u32("action experimenter")? != NX_VENDOR_ID {
        return Ok(None);
    }
    let subtype = body.u16("Nicira action subtype")?;
    Ok(match subtype {
        NXAST_REG_MOVE => {
            let n_bits = body.u16("move n_bits")?;
            let src_ofs = body.u16("move src_ofs")?;
            let dst_ofs = body.u16("move dst_ofs")?;
            let src = body.u32("move src")?;
            let dst = body.u32("move dst")?;
            match (range(src, src_ofs, n_bits), range(dst, dst_ofs, n_bits)) {
                (Some(src), Some(dst)) => Some(Action::Move { src, dst }),
                _ => None,
            }
        }
        NXAST_RESUBMIT | NXAST_RESUBMIT_TABLE => {
            let port = body.u16("resubmit in_port")?;
            let table = if subtype == NXAST_RESUBMIT_TABLE { body.u8("resubmit table")? } else { 0xff };
            Some(Action::Resubmit {
                in_port: (port != OFPP10_IN_PORT).then(|| port_from_16(port)),
                table: (table != 0xff).then_some(table),
            })
        }
        NXAST_CT => {
            let flags = body.u16("ct flags")?;
            let zone_src = body.u32("ct zone_src")?;
            let zone = body.u16("ct zone")?;
            let table = body.u8("ct recirc_table")?;
            body.skip(3, "ct pad")?;
            let alg = body.u16("ct alg")?;
            let zone = if zone_src == 0 {
                CtZone::Immediate(zone)
            } else {
                match range(zone_src, zone >> 6, (zone & 0x3f) + 1) {
                    Some(r) => CtZone::Field(r),
                    None => return Ok(None),
                }
            };
            let actions = decode_actions(body)?;
            Some(Action::Ct(Ct {
                commit: flags & 1 != 0,
                force: flags & 2 != 0,
                zone,
                table: (table != NX_CT_RECIRC_NONE).then_some(table),
                alg,
                actions,
            }))
        }
        NXAST_NAT => {
            body.skip(2, "nat pad")?;
            let flags = body.u16("nat flags")?;
            let present = body.u16("nat range_present")?;
            let v4 = |b: &mut Reader<'_>, bit: u16| -> Result<Option<Ipv4Addr>, DecodeError> {
                Ok(if present & bit != 0 { Some(Ipv4Addr::from(b.u32("nat IPv4 address")?)) } else { None })
            };
            let v6 = |b: &mut Reader<'_>, bit: u16| -> Result<Option<Ipv6Addr>, DecodeError> {
                if present & bit == 0 {
                    return Ok(None);
                }
                let mut a = [0u8; 16];
                a.copy_from_slice(b.bytes(16, "nat IPv6 address")?);
                Ok(Some(Ipv6Addr::from(a)))
            };
            let (min4, max4) = (v4(body, R_IPV4_MIN)?, v4(body, R_IPV4_MAX)?);
            let (min6, max6) = (v6(body, R_IPV6_MIN)?, v6(body, R_IPV6_MAX)?);
            let pmin = if present & R_PROTO_MIN != 0 { Some(body.u16("nat port min")?) } else { None };
            let pmax = if present & R_PROTO_MAX != 0 { Some(body.u16("nat port max")?) } else { None };
            let addrs = match (min4, min6) {
                (Some(a), _) => Some(NatAddrs::V4(a, max4)),
                (None, Some(a)) => Some(NatAddrs::V6(a, max6)),
                (None, None) => None,
            };
            // Without addresses or ports the direction means nothing: read it as none, the one
            // form this crate writes.
            let directed = addrs.is_some() || pmin.is_some();
            Some(Action::Nat(Nat {
                src: directed && flags & NAT_SRC != 0,
                addrs,
                ports: pmin.map(|m| (m, pmax)),
                persistent: flags & NAT_PERSISTENT != 0,
                hash: flags & NAT_PROTO_HASH != 0,
                random: flags & NAT_PROTO_RANDOM != 0,
            }))
        }
        NXAST_CT_CLEAR => Some(Action::CtClear),
        _ => None,
    })
}

impl fmt::Display for Ct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if self.commit {
            parts.push("commit".into());
        }
        if self.force {
            parts.push("force".into());
        }
        if let Some(t) = self.table {
            parts.push(format!("table={t}"));
        }
        match &self.zone {
            CtZone::Immediate(0) => {}
            CtZone::Immediate(z) => parts.push(format!("zone={z}")),
            CtZone::Field(r) => parts.push(format!("zone={r}")),
        }
        if self.alg != 0 {
            parts.push(format!("alg={}", self.alg));
        }
        let (nat, exec): (Vec<&Action>, Vec<&Action>) = self.actions.iter().partition(|a| matches!(a, Action::Nat(_)));
        parts.extend(nat.iter().map(|a| a.to_string()));
        if !exec.is_empty() {
            parts.push(format!("exec({})", exec.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",")));
        }
        write!(f, "ct({})", parts.join(","))
    }
}

impl fmt::Display for Nat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("nat")?;
        let mut parts: Vec<String> = Vec::new();
        if self.addrs.is_some() || self.ports.is_some() {
            let mut s = String::from(if self.src { "src=" } else { "dst=" });
            match self.addrs {
                Some(NatAddrs::V4(a, b)) => {
                    s += &a.to_string();
                    if let Some(b) = b {
                        s += &format!("-{b}");
                    }
                }
                Some(NatAddrs::V6(a, b)) => {
                    s += &format!("[{a}]");
                    if let Some(b) = b {
                        s += &format!("-[{b}]");
                    }
                }
                None => {}
            }
            if let Some((min, max)) = self.ports {
                s += &format!(":{min}");
                if let Some(max) = max {
                    s += &format!("-{max}");
                }
            }
            parts.push(s);
        }
        for (on, name) in [(self.persistent, "persistent"), (self.hash, "hash"), (self.random, "random")] {
            if on {
                parts.push(name.into());
            }
        }
        if !parts.is_empty() {
            write!(f, "({})", parts.join(","))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(a: &Action) -> Vec<u8> {
        let mut out = Vec::new();
        encode(a, &mut out).unwrap();
        out
    }

    #[test]
    fn nicira_layouts() {
        // nx_action_reg_move: ffff 0018 00002320 0006 | n_bits 48, src_ofs 0, dst_ofs 0 |
        // NXM_OF_ETH_SRC 00000406 | NXM_OF_ETH_DST 00000206.
        assert_eq!(
            bytes(&Action::move_field(Field::EthSrc, Field::EthDst)),
            [0xff, 0xff, 0, 24, 0, 0, 0x23, 0x20, 0, 6, 0, 48, 0, 0, 0, 0, 0, 0, 4, 6, 0, 0, 2, 6]
        );
        // nx_action_resubmit (table form): ffff 0010 00002320 000e | in_port fff8 | table 1 | pad.
        assert_eq!(
            bytes(&Action::resubmit_table(1)),
            [0xff, 0xff, 0, 16, 0, 0, 0x23, 0x20, 0, 14, 0xff, 0xf8, 1, 0, 0, 0]
        );
        assert_eq!(bytes(&Action::CtClear), [0xff, 0xff, 0, 16, 0, 0, 0x23, 0x20, 0, 43, 0, 0, 0, 0, 0, 0]);
        // ct(commit,zone=5,table=3): flags 1, zone_src 0, zone 5, recirc 3, pad, alg 0.
        let ct = Action::Ct(Ct { commit: true, zone: CtZone::Immediate(5), table: Some(3), ..Ct::default() });
        assert_eq!(bytes(&ct), [0xff, 0xff, 0, 24, 0, 0, 0x23, 0x20, 0, 35, 0, 1, 0, 0, 0, 0, 0, 5, 3, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn nicira_round_trip() {
        let nat = Nat {
            src: true,
            addrs: Some(NatAddrs::V4(Ipv4Addr::new(198, 18, 100, 1), Some(Ipv4Addr::new(198, 18, 100, 9)))),
            ports: Some((1024, Some(2048))),
            persistent: true,
            ..Nat::default()
        };
        let acts = vec![
            Action::Move {
                src: FieldRange { field: Field::Reg(1), ofs: 0, n_bits: 16 },
                dst: FieldRange { field: Field::TunId, ofs: 16, n_bits: 16 },
            },
            Action::Resubmit { in_port: Some(3), table: None },
            Action::Ct(Ct {
                commit: true,
                zone: CtZone::Field(FieldRange { field: Field::Reg(5), ofs: 0, n_bits: 16 }),
                table: Some(4),
                actions: vec![Action::Nat(nat), Action::set_field(Field::CtMark, 7)],
                ..Ct::default()
            }),
            Action::Ct(Ct { actions: vec![Action::Nat(Nat::default())], ..Ct::default() }),
            Action::CtClear,
        ];
        let mut out = Vec::new();
        encode_actions(&acts, &mut out).unwrap();
        assert_eq!(decode_actions(&mut Reader::new(&out)).unwrap(), acts);
        assert_eq!(
            acts[2].to_string(),
            "ct(commit,table=4,zone=reg5[0..15],nat(src=198.18.100.1-198.18.100.9:1024-2048,persistent),exec(set_field:0x7->ct_mark))"
        );
    }
}
