//! Match fields and their OXM / NXM code points (ovs-fields(7)).
//!
//! A field is a [`Field`]; its value travels as a TLV whose 32-bit header is
//! `class << 16 | field << 9 | hasmask << 8 | length`. OpenFlow's basic class (0x8000) covers
//! the standard fields; Open vSwitch adds the Nicira classes NXM_OF (0x0000) and NXM_NX
//! (0x0001) for the rest (registers, tunnel endpoints, conntrack, packet mark). A field with
//! both an OXM and an NXM code point decodes from either to the same [`Field`]: that is what
//! makes a flow read back from the switch equal to the flow sent, whichever header the switch
//! chose when it encoded the dump.
//!
//! Values are held in a `u128`, right-aligned, as wide as the field's wire form (every field
//! here is at most 16 bytes).

use std::fmt;

use crate::error::DecodeError;
use crate::wire::{Put, Reader};

/// OpenFlow basic OXM class.
pub(crate) const OFPXMC_OPENFLOW_BASIC: u16 = 0x8000;
/// Nicira NXM classes.
pub(crate) const NXM_OF: u16 = 0x0000;
pub(crate) const NXM_NX: u16 = 0x0001;
/// Experimenter OXM class: the header is followed by a 32-bit experimenter id.
pub(crate) const OFPXMC_EXPERIMENTER: u16 = 0xffff;

/// A match field (or set-field / move target) known to this crate.
///
/// The declaration order is a prerequisite order (eth_type before ip_proto before the L4 ports,
/// icmpv6_type before the ND fields): a match is encoded in this order, because Open vSwitch
/// checks each field's prerequisites against the fields before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// `in_port`: the ingress OpenFlow port (32-bit OpenFlow 1.1+ numbering).
    InPort,
    /// `metadata`: the 64-bit pipeline metadata (write_metadata).
    Metadata,
    /// `tun_id` / `tunnel_id`: the tunnel key (VNI).
    TunId,
    /// `tun_src`: outer IPv4 source of a tunnelled packet (NXM_NX_TUN_IPV4_SRC).
    TunIpv4Src,
    /// `tun_dst`: outer IPv4 destination (NXM_NX_TUN_IPV4_DST); set it to pick the remote of a
    /// `remote_ip=flow` tunnel port.
    TunIpv4Dst,
    /// `tun_ipv6_src`: outer IPv6 source of a tunnelled packet (NXM_NX_TUN_IPV6_SRC).
    TunIpv6Src,
    /// `tun_ipv6_dst`: outer IPv6 destination (NXM_NX_TUN_IPV6_DST), for an IPv6 underlay.
    TunIpv6Dst,
    /// `reg0`..`reg15` (NXM_NX_REGn), 32 bits each.
    Reg(u8),
    /// `pkt_mark` (NXM_NX_PKT_MARK).
    PktMark,
    /// `ct_state` (NXM_NX_CT_STATE).
    CtState,
    /// `ct_zone` (NXM_NX_CT_ZONE).
    CtZone,
    /// `ct_mark` (NXM_NX_CT_MARK).
    CtMark,
    /// `eth_dst` / `dl_dst`.
    EthDst,
    /// `eth_src` / `dl_src`.
    EthSrc,
    /// `eth_type` / `dl_type`.
    EthType,
    /// `vlan_vid`: OXM semantics, 13 bits: [`crate::OFPVID_PRESENT`] | VLAN id.
    VlanVid,
    /// `vlan_pcp`.
    VlanPcp,
    /// `ip_proto` / `nw_proto`.
    IpProto,
    /// `ip_dscp` (the 6 DSCP bits).
    IpDscp,
    /// `ip_ecn`.
    IpEcn,
    /// `ipv4_src` / `nw_src`.
    Ipv4Src,
    /// `ipv4_dst` / `nw_dst`.
    Ipv4Dst,
    /// `ipv6_src`.
    Ipv6Src,
    /// `ipv6_dst`.
    Ipv6Dst,
    /// `arp_op`.
    ArpOp,
    /// `arp_spa`.
    ArpSpa,
    /// `arp_tpa`.
    ArpTpa,
    /// `arp_sha`.
    ArpSha,
    /// `arp_tha`.
    ArpTha,
    /// `tcp_src`.
    TcpSrc,
    /// `tcp_dst`.
    TcpDst,
    /// `udp_src`.
    UdpSrc,
    /// `udp_dst`.
    UdpDst,
    /// `icmp_type` (ICMPv4).
    Icmpv4Type,
    /// `icmp_code` (ICMPv4).
    Icmpv4Code,
    /// `icmpv6_type`.
    Icmpv6Type,
    /// `icmpv6_code`.
    Icmpv6Code,
    /// `nd_target`.
    Ipv6NdTarget,
    /// `nd_sll`.
    Ipv6NdSll,
    /// `nd_tll`.
    Ipv6NdTll,
}

/// How a field's value is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Int,
    Hex,
    Mac,
    Ipv4,
    Ipv6,
}

/// What the wire needs to know about a field.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Info {
    pub(crate) name: &'static str,
    /// Width of the value on the wire (preferred header).
    pub(crate) bytes: u8,
    /// Bits that are meaningful (OVS's n_bits: what `move` and ranges address).
    pub(crate) bits: u32,
    pub(crate) maskable: bool,
    /// OpenFlow basic field number.
    pub(crate) oxm: Option<u8>,
    /// Nicira (class, field).
    pub(crate) nxm: Option<(u16, u8)>,
    pub(crate) kind: Kind,
}

const fn info(
    name: &'static str,
    bytes: u8,
    bits: u32,
    maskable: bool,
    oxm: Option<u8>,
    nxm: Option<(u16, u8)>,
    kind: Kind,
) -> Info {
    Info { name, bytes, bits, maskable, oxm, nxm, kind }
}

impl Field {
    /// Every field (registers 0..15 included), in encoding order.
    pub fn all() -> Vec<Field> {
        use Field::*;
        let mut v = vec![InPort, Metadata, TunId, TunIpv4Src, TunIpv4Dst, TunIpv6Src, TunIpv6Dst];
        v.extend((0..16).map(Reg));
        v.extend([
            PktMark,
            CtState,
            CtZone,
            CtMark,
            EthDst,
            EthSrc,
            EthType,
            VlanVid,
            VlanPcp,
            IpProto,
            IpDscp,
            IpEcn,
            Ipv4Src,
            Ipv4Dst,
            Ipv6Src,
            Ipv6Dst,
            ArpOp,
            ArpSpa,
            ArpTpa,
            ArpSha,
            ArpTha,
            TcpSrc,
            TcpDst,
            UdpSrc,
            UdpDst,
            Icmpv4Type,
            Icmpv4Code,
            Icmpv6Type,
            Icmpv6Code,
            Ipv6NdTarget,
            Ipv6NdSll,
            Ipv6NdTll,
        ]);
        v
    }

    pub(crate) fn info(self) -> Info {
        use Kind::*;
        match self {
            Field::InPort => info("in_port", 4, 32, false, Some(0), Some((NXM_OF, 0)), Int),
            Field::Metadata => info("metadata", 8, 64, true, Some(2), None, Hex),
            Field::TunId => info("tun_id", 8, 64, true, Some(38), Some((NXM_NX, 16)), Hex),
            Field::TunIpv4Src => info("tun_src", 4, 32, true, None, Some((NXM_NX, 31)), Ipv4),
            Field::TunIpv4Dst => info("tun_dst", 4, 32, true, None, Some((NXM_NX, 32)), Ipv4),
            Field::TunIpv6Src => info("tun_ipv6_src", 16, 128, true, None, Some((NXM_NX, 109)), Ipv6),
            Field::TunIpv6Dst => info("tun_ipv6_dst", 16, 128, true, None, Some((NXM_NX, 110)), Ipv6),
            Field::Reg(n) => {
                const NAMES: [&str; 16] = [
                    "reg0", "reg1", "reg2", "reg3", "reg4", "reg5", "reg6", "reg7", "reg8", "reg9", "reg10", "reg11",
                    "reg12", "reg13", "reg14", "reg15",
                ];
                let name = NAMES.get(usize::from(n)).copied().unwrap_or("reg?");
                info(name, 4, 32, true, None, Some((NXM_NX, n)), Hex)
            }
            Field::PktMark => info("pkt_mark", 4, 32, true, None, Some((NXM_NX, 33)), Hex),
            Field::CtState => info("ct_state", 4, 32, true, None, Some((NXM_NX, 105)), Hex),
            Field::CtZone => info("ct_zone", 2, 16, false, None, Some((NXM_NX, 106)), Int),
            Field::CtMark => info("ct_mark", 4, 32, true, None, Some((NXM_NX, 107)), Hex),
            Field::EthDst => info("eth_dst", 6, 48, true, Some(3), Some((NXM_OF, 1)), Mac),
            Field::EthSrc => info("eth_src", 6, 48, true, Some(4), Some((NXM_OF, 2)), Mac),
            Field::EthType => info("eth_type", 2, 16, false, Some(5), Some((NXM_OF, 3)), Hex),
            Field::VlanVid => info("vlan_vid", 2, 13, true, Some(6), None, Int),
            Field::VlanPcp => info("vlan_pcp", 1, 3, false, Some(7), None, Int),
            Field::IpProto => info("ip_proto", 1, 8, false, Some(10), Some((NXM_OF, 6)), Int),
            Field::IpDscp => info("ip_dscp", 1, 6, false, Some(8), None, Int),
            Field::IpEcn => info("ip_ecn", 1, 2, false, Some(9), Some((NXM_NX, 28)), Int),
            Field::Ipv4Src => info("ipv4_src", 4, 32, true, Some(11), Some((NXM_OF, 7)), Ipv4),
            Field::Ipv4Dst => info("ipv4_dst", 4, 32, true, Some(12), Some((NXM_OF, 8)), Ipv4),
            Field::Ipv6Src => info("ipv6_src", 16, 128, true, Some(26), Some((NXM_NX, 19)), Ipv6),
            Field::Ipv6Dst => info("ipv6_dst", 16, 128, true, Some(27), Some((NXM_NX, 20)), Ipv6),
            Field::ArpOp => info("arp_op", 2, 16, false, Some(21), Some((NXM_OF, 15)), Int),
            Field::ArpSpa => info("arp_spa", 4, 32, true, Some(22), Some((NXM_OF, 16)), Ipv4),
            Field::ArpTpa => info("arp_tpa", 4, 32, true, Some(23), Some((NXM_OF, 17)), Ipv4),
            Field::ArpSha => info("arp_sha", 6, 48, true, Some(24), Some((NXM_NX, 17)), Mac),
            Field::ArpTha => info("arp_tha", 6, 48, true, Some(25), Some((NXM_NX, 18)), Mac),
            Field::TcpSrc => info("tcp_src", 2, 16, true, Some(13), Some((NXM_OF, 9)), Int),
            Field::TcpDst => info("tcp_dst", 2, 16, true, Some(14), Some((NXM_OF, 10)), Int),
            Field::UdpSrc => info("udp_src", 2, 16, true, Some(15), Some((NXM_OF, 11)), Int),
            Field::UdpDst => info("udp_dst", 2, 16, true, Some(16), Some((NXM_OF, 12)), Int),
            Field::Icmpv4Type => info("icmp_type", 1, 8, false, Some(19), Some((NXM_OF, 13)), Int),
            Field::Icmpv4Code => info("icmp_code", 1, 8, false, Some(20), Some((NXM_OF, 14)), Int),
            Field::Icmpv6Type => info("icmpv6_type", 1, 8, false, Some(29), Some((NXM_NX, 21)), Int),
            Field::Icmpv6Code => info("icmpv6_code", 1, 8, false, Some(30), Some((NXM_NX, 22)), Int),
            Field::Ipv6NdTarget => info("nd_target", 16, 128, true, Some(31), Some((NXM_NX, 23)), Ipv6),
            Field::Ipv6NdSll => info("nd_sll", 6, 48, true, Some(32), Some((NXM_NX, 24)), Mac),
            Field::Ipv6NdTll => info("nd_tll", 6, 48, true, Some(33), Some((NXM_NX, 25)), Mac),
        }
    }

    /// The ovs-fields(7) name (`eth_src`, `tun_dst`, `reg3`).
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// Meaningful bits: the range `move` can address and the largest value a match takes.
    pub fn bits(self) -> u32 {
        self.info().bits
    }

    /// Whether a match may mask it.
    pub fn maskable(self) -> bool {
        self.info().maskable
    }

    /// All-ones over the field's bits.
    pub fn full_mask(self) -> u128 {
        ones(self.bits())
    }

    /// The header a match or set-field carries: OXM where the field has one, NXM otherwise (as
    /// Open vSwitch itself encodes for OpenFlow 1.3/1.4).
    pub(crate) fn match_header(self, masked: bool) -> u32 {
        let i = self.info();
        let (class, field) = match (i.oxm, i.nxm) {
            (Some(f), _) => (OFPXMC_OPENFLOW_BASIC, f),
            (None, Some(cf)) => cf,
            (None, None) => unreachable!("every field has a code point"),
        };
        header(class, field, masked, i.bytes)
    }

    /// The header a Nicira action (`move`, `ct` zone) names a field by: NXM where the field has
    /// one (what Open vSwitch sends and what every OVS version accepts), OXM otherwise.
    pub(crate) fn nx_header(self) -> u32 {
        let i = self.info();
        match (i.nxm, i.oxm) {
            // NXM_OF_IN_PORT is 16 bits; name in_port by its OXM so the width stays 32.
            (Some(_), Some(f)) if self == Field::InPort => header(OFPXMC_OPENFLOW_BASIC, f, false, i.bytes),
            (Some((c, f)), _) => header(c, f, false, i.bytes),
            (None, Some(f)) => header(OFPXMC_OPENFLOW_BASIC, f, false, i.bytes),
            (None, None) => unreachable!("every field has a code point"),
        }
    }

    /// The field a (class, field number) names, if this crate knows it.
    pub(crate) fn from_code(class: u16, field: u8) -> Option<Field> {
        use std::sync::OnceLock;
        static TABLE: OnceLock<Vec<((u16, u8), Field)>> = OnceLock::new();
        let table = TABLE.get_or_init(|| {
            let mut t = Vec::new();
            for f in Field::all() {
                let i = f.info();
                if let Some(n) = i.oxm {
                    t.push(((OFPXMC_OPENFLOW_BASIC, n), f));
                }
                if let Some(cf) = i.nxm {
                    t.push((cf, f));
                }
            }
            t
        });
        table.iter().find(|(k, _)| *k == (class, field)).map(|(_, f)| *f)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `n` low bits set.
pub(crate) fn ones(n: u32) -> u128 {
    if n >= 128 {
        u128::MAX
    } else {
        (1u128 << n) - 1
    }
}

pub(crate) fn header(class: u16, field: u8, masked: bool, bytes: u8) -> u32 {
    let len = if masked { u32::from(bytes) * 2 } else { u32::from(bytes) };
    (u32::from(class) << 16) | (u32::from(field) << 9) | (u32::from(masked) << 8) | len
}

/// Writes `v`'s low `n` bytes big-endian.
pub(crate) fn put_value(out: &mut Vec<u8>, v: u128, n: u8) {
    let b = v.to_be_bytes();
    out.extend_from_slice(&b[16 - usize::from(n)..]);
}

/// Reads up to 16 bytes big-endian.
pub(crate) fn value_of(bytes: &[u8]) -> u128 {
    bytes.iter().fold(0u128, |acc, b| (acc << 8) | u128::from(*b))
}

/// Writes one TLV for `field` (mask omitted when `None`).
pub(crate) fn put_tlv(out: &mut Vec<u8>, field: Field, value: u128, mask: Option<u128>) {
    let bytes = field.info().bytes;
    out.put_u32(field.match_header(mask.is_some()));
    put_value(out, value, bytes);
    if let Some(m) = mask {
        put_value(out, m, bytes);
    }
}

/// Which field a TLV is, as found on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OxmId {
    /// OXM class.
    pub class: u16,
    /// Field number within the class.
    pub field: u8,
    /// Experimenter id for class 0xffff.
    pub experimenter: Option<u32>,
}

/// One TLV as read.
#[derive(Debug, Clone)]
pub(crate) struct Tlv<'a> {
    pub(crate) id: OxmId,
    pub(crate) value: &'a [u8],
    pub(crate) mask: Option<&'a [u8]>,
}

impl Tlv<'_> {
    /// The known field this TLV holds and its value and mask, converted to the field's own
    /// width (NXM_OF_IN_PORT's 16-bit port numbers become 32-bit ones).
    pub(crate) fn known(&self) -> Result<Option<(Field, u128, Option<u128>)>, DecodeError> {
        if self.id.experimenter.is_some() {
            return Ok(None);
        }
        let Some(field) = Field::from_code(self.id.class, self.id.field) else { return Ok(None) };
        let want = usize::from(field.info().bytes);
        if field == Field::InPort && self.id.class == NXM_OF {
            if self.value.len() != 2 || self.mask.is_some() {
                return Err(bad_width(field, self.value.len()));
            }
            return Ok(Some((field, u128::from(port_from_16(value_of(self.value) as u16)), None)));
        }
        if self.value.len() != want {
            return Err(bad_width(field, self.value.len()));
        }
        Ok(Some((field, value_of(self.value), self.mask.map(value_of))))
    }
}

fn bad_width(field: Field, got: usize) -> DecodeError {
    DecodeError::BadValue {
        what: "OXM field",
        detail: format!("{field} with a {got}-byte value, want {}", field.info().bytes),
    }
}

/// OpenFlow 1.0's 16-bit port numbers as 1.1+ 32-bit ones (reserved ports 0xff00.. move up).
pub(crate) fn port_from_16(p: u16) -> u32 {
    if p >= 0xff00 {
        0xffff_0000 | u32::from(p)
    } else {
        u32::from(p)
    }
}

/// Reads one OXM/NXM TLV.
pub(crate) fn read_tlv<'a>(r: &mut Reader<'a>) -> Result<Tlv<'a>, DecodeError> {
    let h = r.u32("OXM header")?;
    let class = (h >> 16) as u16;
    let field = ((h >> 9) & 0x7f) as u8;
    let masked = h & 0x100 != 0;
    let mut len = (h & 0xff) as usize;
    let mut body = r.sub(len, "OXM value")?;
    let experimenter = if class == OFPXMC_EXPERIMENTER {
        len = len.checked_sub(4).ok_or(DecodeError::BadLength {
            what: "experimenter OXM",
            len,
            reason: "shorter than its experimenter id",
        })?;
        Some(body.u32("OXM experimenter id")?)
    } else {
        None
    };
    if len == 0 || (masked && len % 2 != 0) {
        return Err(DecodeError::BadLength { what: "OXM field", len, reason: "empty, or masked with an odd length" });
    }
    let n = if masked { len / 2 } else { len };
    let value = body.bytes(n, "OXM value")?;
    let mask = if masked { Some(body.bytes(n, "OXM mask")?) } else { None };
    Ok(Tlv { id: OxmId { class, field, experimenter }, value, mask })
}

/// Reads a bare OXM/NXM header (as `move` and `ct` name fields) and the field it names.
pub(crate) fn field_of_header(h: u32) -> Option<Field> {
    let class = (h >> 16) as u16;
    let field = ((h >> 9) & 0x7f) as u8;
    Field::from_code(class, field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_match_the_spec() {
        // OXM_OF_IN_PORT = 0x80000004, OXM_OF_ETH_DST_W = 0x8000070c (OpenFlow 1.3 7.2.3.7).
        assert_eq!(Field::InPort.match_header(false), 0x8000_0004);
        assert_eq!(Field::EthDst.match_header(true), 0x8000_070c);
        assert_eq!(Field::VlanVid.match_header(false), 0x8000_0c02);
        // NXM_NX_TUN_IPV4_DST = NXM_HEADER(0x0001, 32, 4) = 0x00014004 (nicira-ext.h).
        assert_eq!(Field::TunIpv4Dst.match_header(false), 0x0001_4004);
        // NXM_NX_REG0 = 0x00010004; NXM_OF_ETH_SRC = 0x00000406.
        assert_eq!(Field::Reg(0).match_header(false), 0x0001_0004);
        assert_eq!(Field::EthSrc.nx_header(), 0x0000_0406);
        // NXM_NX_CT_STATE_W = 0x0001d308.
        assert_eq!(Field::CtState.match_header(true), 0x0001_d308);
    }

    #[test]
    fn every_code_point_maps_back() {
        for f in Field::all() {
            let i = f.info();
            if let Some(n) = i.oxm {
                assert_eq!(Field::from_code(OFPXMC_OPENFLOW_BASIC, n), Some(f));
            }
            if let Some((c, n)) = i.nxm {
                assert_eq!(Field::from_code(c, n), Some(f));
            }
            assert!(i.bits <= u32::from(i.bytes) * 8, "{f}");
        }
        let mut sorted = Field::all();
        sorted.sort();
        assert_eq!(sorted, Field::all(), "all() lists fields in their Ord (encoding) order");
    }

    #[test]
    fn nxm_in_port_widens() {
        let bytes = [0x00, 0x00, 0x00, 0x02, 0xff, 0xf8];
        let mut r = Reader::new(&bytes);
        let t = read_tlv(&mut r).unwrap();
        assert_eq!(t.known().unwrap(), Some((Field::InPort, 0xffff_fff8, None)));
    }

    #[test]
    fn bad_tlvs_are_errors() {
        // Length 0, length past the end, masked odd length, experimenter shorter than its id.
        for bytes in
            [&[0x80, 0, 0x0a, 0][..], &[0x80, 0, 0x0a, 9, 1], &[0x80, 0, 0x07, 3, 1, 2, 3], &[0xff, 0xff, 0, 2, 0, 0]]
        {
            assert!(read_tlv(&mut Reader::new(bytes)).is_err(), "{bytes:?}");
        }
    }
}
