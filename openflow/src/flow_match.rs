//! A flow's match: a canonical set of fields and the OpenFlow 1.3 `ofp_match` (OXM) encoding;
//! its typed builder, which checks prerequisites, is in `match_builder`.
//!
//! Canonical form, so that a match read back from the switch compares equal to the one sent:
//! a field's value has the bits outside its mask cleared; a mask of all ones is no mask; a mask
//! of zero is no match on the field at all; fields are ordered by [`Field`] (a prerequisite
//! order); NXM and OXM headers of the same field decode to the same [`Field`].

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::error::{DecodeError, EncodeError, MatchError};
use crate::mac::Mac;
use crate::oxm::{put_tlv, read_tlv, Field, Kind, OxmId};
use crate::wire::{len16, Put, Reader};

/// `eth_type` of IPv4.
pub const ETH_TYPE_IP: u16 = 0x0800;
/// `eth_type` of ARP.
pub const ETH_TYPE_ARP: u16 = 0x0806;
/// `eth_type` of RARP.
pub const ETH_TYPE_RARP: u16 = 0x8035;
/// `eth_type` of IPv6.
pub const ETH_TYPE_IPV6: u16 = 0x86dd;
/// `eth_type` of an 802.1Q tag (push_vlan).
pub const ETH_TYPE_VLAN: u16 = 0x8100;
/// `vlan_vid` bit meaning "a VLAN tag is present" (OpenFlow 1.3 `OFPVID_PRESENT`).
pub const OFPVID_PRESENT: u16 = 0x1000;
/// ICMPv6 neighbour solicitation.
pub const ICMPV6_ND_SOLICIT: u8 = 135;
/// ICMPv6 neighbour advertisement.
pub const ICMPV6_ND_ADVERT: u8 = 136;

/// A field's value and mask, canonical: `value & !mask == 0`, and `mask` is `None` for an exact
/// match (never all ones, never zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Masked {
    /// The value, right-aligned.
    pub value: u128,
    /// The mask; `None` means every bit of the field.
    pub mask: Option<u128>,
}

/// A TLV of a field this crate does not know, kept byte for byte so that a dump holding it
/// still compares and prints.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RawOxm {
    /// Which field.
    pub id: OxmId,
    /// Its value.
    pub value: Vec<u8>,
    /// Its mask, if sent.
    pub mask: Option<Vec<u8>>,
}

/// A match: the fields a packet must have. `Match::default()` matches every packet.
///
/// Held as a vector sorted by field: a flow matches a handful of fields, and a map would give
/// each match a whole tree node (eleven slots) on the heap. Equality, order and hashing are
/// those of the sequence of `(Field, Masked)` pairs in field order.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Match {
    fields: Vec<Entry>,
    unknown: Vec<RawOxm>,
}

/// One matched field. Value and mask are kept as big-endian bytes rather than `u128`: no
/// 16-byte alignment (35 bytes an entry instead of 64), and the derived order of the bytes is
/// the numeric order, so entries compare as `(Field, Masked)` does.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Entry {
    field: Field,
    value: [u8; 16],
    mask: Option<[u8; 16]>,
}

impl Entry {
    fn new(field: Field, m: Masked) -> Entry {
        Entry { field, value: m.value.to_be_bytes(), mask: m.mask.map(u128::to_be_bytes) }
    }

    fn masked(&self) -> Masked {
        Masked { value: u128::from_be_bytes(self.value), mask: self.mask.map(u128::from_be_bytes) }
    }
}

impl fmt::Debug for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Match");
        d.field("fields", &DebugFields(self));
        if !self.unknown.is_empty() {
            d.field("unknown", &self.unknown);
        }
        d.finish()
    }
}

struct DebugFields<'a>(&'a Match);

impl fmt::Debug for DebugFields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.fields()).finish()
    }
}

/// What a field needs in the match before it.
enum Prereq {
    None,
    EthType(&'static [u16], &'static str),
    Proto(&'static [u16], u8, &'static str),
    Icmpv6Type(&'static [u8], &'static str),
    VlanPresent,
}

fn prereq(field: Field) -> Prereq {
    use Field::*;
    const IP_ANY: &[u16] = &[ETH_TYPE_IP, ETH_TYPE_IPV6];
    match field {
        IpProto | IpDscp | IpEcn => Prereq::EthType(IP_ANY, "eth_type=0x0800 or 0x86dd (ip or ipv6)"),
        Ipv4Src | Ipv4Dst => Prereq::EthType(&[ETH_TYPE_IP], "eth_type=0x0800 (ip)"),
        Ipv6Src | Ipv6Dst => Prereq::EthType(&[ETH_TYPE_IPV6], "eth_type=0x86dd (ipv6)"),
        ArpOp | ArpSpa | ArpTpa | ArpSha | ArpTha => {
            Prereq::EthType(&[ETH_TYPE_ARP, ETH_TYPE_RARP], "eth_type=0x0806 (arp) or 0x8035 (rarp)")
        }
        TcpSrc | TcpDst => Prereq::Proto(IP_ANY, 6, "ip_proto=6 (tcp) with eth_type ip or ipv6"),
        UdpSrc | UdpDst => Prereq::Proto(IP_ANY, 17, "ip_proto=17 (udp) with eth_type ip or ipv6"),
        Icmpv4Type | Icmpv4Code => Prereq::Proto(&[ETH_TYPE_IP], 1, "ip_proto=1 (icmp) with eth_type=0x0800"),
        Icmpv6Type | Icmpv6Code => Prereq::Proto(&[ETH_TYPE_IPV6], 58, "ip_proto=58 (icmpv6) with eth_type=0x86dd"),
        Ipv6NdTarget => Prereq::Icmpv6Type(&[ICMPV6_ND_SOLICIT, ICMPV6_ND_ADVERT], "icmpv6_type=135 or 136 (ND)"),
        Ipv6NdSll => Prereq::Icmpv6Type(&[ICMPV6_ND_SOLICIT], "icmpv6_type=135 (neighbour solicitation)"),
        Ipv6NdTll => Prereq::Icmpv6Type(&[ICMPV6_ND_ADVERT], "icmpv6_type=136 (neighbour advertisement)"),
        VlanPcp => Prereq::VlanPresent,
        _ => Prereq::None,
    }
}

impl Match {
    /// The match of every packet.
    pub fn new() -> Match {
        Match::default()
    }

    /// The fields, in encoding order.
    pub fn fields(&self) -> impl Iterator<Item = (Field, Masked)> + '_ {
        self.fields.iter().map(|e| (e.field, e.masked()))
    }

    /// One field's value and mask, if matched.
    pub fn get(&self, field: Field) -> Option<Masked> {
        self.position(field).ok().map(|i| self.fields[i].masked())
    }

    /// The exact value of `field`, if matched without a mask.
    pub fn exact(&self, field: Field) -> Option<u128> {
        self.get(field).filter(|m| m.mask.is_none()).map(|m| m.value)
    }

    /// Fields the switch sent that this crate does not know.
    pub fn unknown(&self) -> &[RawOxm] {
        &self.unknown
    }

    /// True when nothing is matched.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.unknown.is_empty()
    }

    /// Where `field` is (`Ok`) or would go (`Err`) in the sorted entries.
    fn position(&self, field: Field) -> Result<usize, usize> {
        self.fields.binary_search_by_key(&field, |e| e.field)
    }

    pub(crate) fn contains(&self, field: Field) -> bool {
        self.position(field).is_ok()
    }

    /// Sets a field, canonicalising value and mask; no prerequisite check.
    pub(crate) fn insert(&mut self, field: Field, value: u128, mask: Option<u128>) -> Result<(), MatchError> {
        if let Field::Reg(n) = field {
            if n > 15 {
                return Err(MatchError::NoSuchField { name: format!("reg{n}") });
            }
        }
        let full = field.full_mask();
        if value & !full != 0 {
            return Err(MatchError::ValueTooWide { field, value, bits: field.bits() });
        }
        let mask = match mask.map(|m| m & full) {
            Some(0) => {
                if let Ok(i) = self.position(field) {
                    self.fields.remove(i);
                }
                return Ok(());
            }
            Some(m) if m == full => None,
            Some(_) if !field.maskable() => return Err(MatchError::NotMaskable { field }),
            m => m,
        };
        let value = value & mask.unwrap_or(full);
        let entry = Entry::new(field, Masked { value, mask });
        match self.position(field) {
            Ok(i) => self.fields[i] = entry,
            Err(i) => self.fields.insert(i, entry),
        }
        Ok(())
    }

    /// Checks that `field` may be matched or set given this match: `Err` names what is missing.
    pub fn prerequisites_of(&self, field: Field) -> Result<(), String> {
        let eth = self.exact(Field::EthType).map(|v| v as u16);
        let ok = match prereq(field) {
            Prereq::None => return Ok(()),
            Prereq::EthType(types, needs) => eth.is_some_and(|e| types.contains(&e)).then_some(()).ok_or(needs),
            Prereq::Proto(types, proto, needs) => (eth.is_some_and(|e| types.contains(&e))
                && self.exact(Field::IpProto) == Some(u128::from(proto)))
            .then_some(())
            .ok_or(needs),
            Prereq::Icmpv6Type(types, needs) => {
                self.prerequisites_of(Field::Icmpv6Type)?;
                let t = self.exact(Field::Icmpv6Type).map(|v| v as u8);
                t.is_some_and(|t| types.contains(&t)).then_some(()).ok_or(needs)
            }
            Prereq::VlanPresent => {
                let present = u128::from(OFPVID_PRESENT);
                let vid = self.get(Field::VlanVid);
                vid.is_some_and(|m| m.value & present != 0 && m.mask.unwrap_or(present) & present != 0)
                    .then_some(())
                    .ok_or("vlan_vid with OFPVID_PRESENT (a VLAN tag)")
            }
        };
        ok.map_err(str::to_owned)
    }

    /// Checks every field's prerequisites.
    pub fn validate(&self) -> Result<(), MatchError> {
        for field in self.fields.iter().map(|e| e.field) {
            self.prerequisites_of(field).map_err(|needs| MatchError::MissingPrerequisite { field, needs })?;
        }
        Ok(())
    }

    /// Appends the `ofp_match` (type OXM, padded to 8 bytes).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        out.put_u16(1); // OFPMT_OXM
        out.put_u16(0);
        for (field, m) in self.fields() {
            put_tlv(out, field, m.value, m.mask);
        }
        for raw in &self.unknown {
            put_raw(out, raw);
        }
        let len = len16(out, start)?;
        out.set_u16(start + 2, len);
        out.pad_to_8(start);
        Ok(())
    }

    /// Reads an `ofp_match` and its padding.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Match, DecodeError> {
        let kind = r.u16("ofp_match type")?;
        if kind != 1 {
            return Err(DecodeError::BadValue { what: "ofp_match type", detail: format!("{kind}, want 1 (OXM)") });
        }
        let len = usize::from(r.u16("ofp_match length")?);
        let body_len = len.checked_sub(4).ok_or(DecodeError::BadLength {
            what: "ofp_match",
            len,
            reason: "shorter than its 4-byte header",
        })?;
        let mut body = r.sub(body_len, "ofp_match fields")?;
        r.skip((8 - len % 8) % 8, "ofp_match padding")?;
        let mut m = Match::default();
        while !body.is_empty() {
            let tlv = read_tlv(&mut body)?;
            match tlv.known()? {
                Some((field, value, mask)) => {
                    if m.contains(field) {
                        return Err(DecodeError::BadValue { what: "ofp_match", detail: format!("{field} twice") });
                    }
                    m.insert(field, value, mask)
                        .map_err(|e| DecodeError::BadValue { what: "ofp_match", detail: e.to_string() })?;
                }
                None => {
                    m.unknown.push(RawOxm { id: tlv.id, value: tlv.value.to_vec(), mask: tlv.mask.map(<[u8]>::to_vec) })
                }
            }
        }
        m.unknown.sort();
        Ok(m)
    }
}

pub(crate) fn put_raw(out: &mut Vec<u8>, raw: &RawOxm) {
    let exp = raw.id.experimenter.map_or(0, |_| 4);
    let len = raw.value.len() + raw.mask.as_ref().map_or(0, Vec::len) + exp;
    let h = (u32::from(raw.id.class) << 16)
        | (u32::from(raw.id.field) << 9)
        | (u32::from(raw.mask.is_some()) << 8)
        | (len as u32 & 0xff);
    out.put_u32(h);
    if let Some(e) = raw.id.experimenter {
        out.put_u32(e);
    }
    out.extend_from_slice(&raw.value);
    if let Some(m) = &raw.mask {
        out.extend_from_slice(m);
    }
}

/// Formats a field value the way ovs-ofctl does (MACs, dotted IPv4, IPv6, hex or decimal).
pub(crate) fn fmt_value(f: &mut fmt::Formatter<'_>, field: Field, v: u128) -> fmt::Result {
    match field.info().kind {
        Kind::Int => write!(f, "{v}"),
        Kind::Hex => write!(f, "{v:#x}"),
        Kind::Mac => write!(f, "{}", Mac::from_u128(v)),
        Kind::Ipv4 => write!(f, "{}", Ipv4Addr::from(v as u32)),
        Kind::Ipv6 => write!(f, "{}", Ipv6Addr::from(v)),
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (field, m) in self.fields() {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{field}=")?;
            fmt_value(f, field, m.value)?;
            if let Some(mask) = m.mask {
                f.write_str("/")?;
                fmt_value(f, field, mask)?;
            }
        }
        for raw in &self.unknown {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "oxm({:#06x}:{})=", raw.id.class, raw.id.field)?;
            for b in &raw.value {
                write!(f, "{b:02x}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prerequisites_are_named() {
        let e = Match::builder().ipv4_src(Ipv4Addr::new(198, 19, 0, 1)).build().unwrap_err();
        assert_eq!(e, MatchError::MissingPrerequisite { field: Field::Ipv4Src, needs: "eth_type=0x0800 (ip)".into() });
        assert!(e.to_string().contains("ipv4_src needs eth_type=0x0800"), "{e}");
        let e = Match::builder().ip().tcp_dst(80).build().unwrap_err();
        assert!(matches!(e, MatchError::MissingPrerequisite { field: Field::TcpDst, .. }), "{e}");
        let e = Match::builder().icmpv6().nd_target(Ipv6Addr::LOCALHOST).build().unwrap_err();
        assert!(e.to_string().contains("icmpv6_type=135 or 136"), "{e}");
        let e = Match::builder().vlan_pcp(3).build().unwrap_err();
        assert!(e.to_string().contains("OFPVID_PRESENT"), "{e}");
        assert!(Match::builder().vlan_vid(5).vlan_pcp(3).build().is_ok());
        assert!(Match::builder().icmpv6().icmpv6_type(136).nd_tll(Mac([2, 0, 0, 0, 0, 1])).build().is_ok());
        assert!(Match::builder().icmpv6().icmpv6_type(135).nd_tll(Mac([2, 0, 0, 0, 0, 1])).build().is_err());
    }

    #[test]
    fn canonical_masks() {
        let a = Match::builder()
            .ip()
            .ipv4_dst_masked(Ipv4Addr::new(10, 1, 2, 3), Ipv4Addr::new(255, 255, 0, 0))
            .ipv4_src_masked(Ipv4Addr::new(10, 1, 2, 3), Ipv4Addr::BROADCAST)
            .eth_src_masked(Mac([1; 6]), Mac([0; 6]))
            .build()
            .unwrap();
        let b = Match::builder()
            .ip()
            .ipv4_src(Ipv4Addr::new(10, 1, 2, 3))
            .ipv4_dst_masked(Ipv4Addr::new(10, 1, 0, 0), Ipv4Addr::new(255, 255, 0, 0))
            .build()
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "eth_type=0x800,ipv4_src=10.1.2.3,ipv4_dst=10.1.0.0/255.255.0.0");
    }

    #[test]
    fn builder_mistakes() {
        assert!(matches!(Match::builder().arp().arp_op(1).arp_op(2).build(), Err(MatchError::Duplicate { .. })));
        assert!(matches!(
            Match::builder().field_masked(Field::EthType, 0x800, 0xff00).build(),
            Err(MatchError::NotMaskable { .. })
        ));
        assert!(matches!(Match::builder().field(Field::VlanPcp, 8).build(), Err(MatchError::ValueTooWide { .. })));
        assert!(matches!(Match::builder().reg(16, 1).build(), Err(MatchError::NoSuchField { .. })));
    }

    #[test]
    fn order_and_equality_are_those_of_the_field_sequence() {
        let b = || Match::builder();
        let ms = [
            Match::new(),
            b().in_port(1).build().unwrap(),
            b().in_port(2).build().unwrap(),
            b().in_port(1).vlan_vid(3).build().unwrap(),
            b().vlan_any().build().unwrap(),
            b().vlan_vid(3).build().unwrap(),
            b().field_masked(Field::VlanVid, 0x1003, 0x1fff).build().unwrap(),
            b().metadata_masked(0x100, 0xff00).build().unwrap(),
            b().metadata_masked(0x100, 0xf00).build().unwrap(),
            b().metadata(0x100).build().unwrap(),
            b().ipv6().ipv6_dst(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)).build().unwrap(),
            b().ipv6().ipv6_dst(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 1, 0)).build().unwrap(),
            b().ip().ipv4_dst_masked(Ipv4Addr::new(10, 0, 0, 0), Ipv4Addr::new(255, 0, 0, 0)).build().unwrap(),
        ];
        let hash = |m: &Match| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            m.hash(&mut h);
            h.finish()
        };
        for x in &ms {
            for y in &ms {
                let (fx, fy): (Vec<_>, Vec<_>) = (x.fields().collect(), y.fields().collect());
                assert_eq!(x.cmp(y), fx.cmp(&fy), "{x} vs {y}");
                assert_eq!(x == y, fx == fy, "{x} vs {y}");
                if x == y {
                    assert_eq!(hash(x), hash(y));
                }
            }
        }
        // Fields come out in field order whatever the order they were given in.
        let m = b().arp_tpa(Ipv4Addr::new(10, 0, 0, 1)).arp_op(1).arp().vlan_vid(5).build().unwrap();
        let order: Vec<Field> = m.fields().map(|(f, _)| f).collect();
        assert_eq!(order, [Field::EthType, Field::VlanVid, Field::ArpOp, Field::ArpTpa]);
        assert_eq!(m, b().vlan_vid(5).arp().arp_op(1).arp_tpa(Ipv4Addr::new(10, 0, 0, 1)).build().unwrap());
        assert_eq!(format!("{m:?}").matches("Masked").count(), 4, "{m:?}");
    }

    #[test]
    fn encodes_the_spec_layout_and_decodes_back() {
        // OpenFlow 1.3 7.2.2: type OXM, length 4 + TLVs, padded to 8. in_port=1 is
        // 00 01 00 0c | 80 00 00 04 00 00 00 01 | 00 00 00 00.
        let m = Match::builder().in_port(1).build().unwrap();
        let mut out = Vec::new();
        m.encode(&mut out).unwrap();
        assert_eq!(out, [0, 1, 0, 12, 0x80, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0]);
        let back = Match::decode(&mut Reader::new(&out)).unwrap();
        assert_eq!(back, m);
        // An empty match is 00 01 00 04 00 00 00 00.
        let mut out = Vec::new();
        Match::new().encode(&mut out).unwrap();
        assert_eq!(out, [0, 1, 0, 4, 0, 0, 0, 0]);
    }
}
