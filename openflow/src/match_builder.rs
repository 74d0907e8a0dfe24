//! [`MatchBuilder`]: a [`Match`] built field by field with typed values, checked for widths,
//! masks, duplicates and prerequisites in [`MatchBuilder::build`].

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::error::MatchError;
use crate::flow_match::{Match, ETH_TYPE_ARP, ETH_TYPE_IP, ETH_TYPE_IPV6, OFPVID_PRESENT};
use crate::mac::Mac;
use crate::oxm::Field;

impl Match {
    /// A builder that checks widths, masks and prerequisites in [`MatchBuilder::build`].
    pub fn builder() -> MatchBuilder {
        MatchBuilder::default()
    }
}

/// Builds a [`Match`]; the first mistake is kept and returned by [`MatchBuilder::build`].
#[derive(Debug, Clone, Default)]
pub struct MatchBuilder {
    m: Match,
    error: Option<MatchError>,
}

macro_rules! exact_and_masked {
    ($(#[$doc:meta])* $name:ident, $masked:ident, $field:expr, $ty:ty, $conv:expr) => {
        $(#[$doc])*
        pub fn $name(self, v: $ty) -> Self {
            let conv: fn($ty) -> u128 = $conv;
            self.field($field, conv(v))
        }
        /// The same field with a mask (1 bits must match).
        pub fn $masked(self, v: $ty, mask: $ty) -> Self {
            let conv: fn($ty) -> u128 = $conv;
            self.field_masked($field, conv(v), conv(mask))
        }
    };
}

macro_rules! exact {
    ($(#[$doc:meta])* $name:ident, $field:expr, $ty:ty) => {
        $(#[$doc])*
        pub fn $name(self, v: $ty) -> Self {
            self.field($field, u128::from(v))
        }
    };
}

fn ip4(a: Ipv4Addr) -> u128 {
    u128::from(u32::from(a))
}
fn ip6(a: Ipv6Addr) -> u128 {
    u128::from(a)
}
fn mac(m: Mac) -> u128 {
    m.to_u128()
}

impl MatchBuilder {
    /// Matches `field` exactly (any known field; the typed methods below are shorthands).
    pub fn field(self, field: Field, value: u128) -> Self {
        self.set(field, value, None)
    }

    /// Matches the bits of `field` that are 1 in `mask`.
    pub fn field_masked(self, field: Field, value: u128, mask: u128) -> Self {
        self.set(field, value, Some(mask))
    }

    fn set(mut self, field: Field, value: u128, mask: Option<u128>) -> Self {
        if self.error.is_none() {
            if self.m.contains(field) {
                self.error = Some(MatchError::Duplicate { field });
            } else if let Err(e) = self.m.insert(field, value, mask) {
                self.error = Some(e);
            }
        }
        self
    }

    exact!(/// `in_port`.
        in_port, Field::InPort, u32);
    exact!(/// `eth_type`.
        eth_type, Field::EthType, u16);
    exact_and_masked!(/// `eth_src`.
        eth_src, eth_src_masked, Field::EthSrc, Mac, mac);
    exact_and_masked!(/// `eth_dst`.
        eth_dst, eth_dst_masked, Field::EthDst, Mac, mac);
    /// Packets tagged with VLAN `vid` (sets [`OFPVID_PRESENT`]; ovs-ofctl's `dl_vlan=vid`).
    pub fn vlan_vid(self, vid: u16) -> Self {
        self.field(Field::VlanVid, u128::from(OFPVID_PRESENT | (vid & 0x0fff)))
    }
    /// Packets without a VLAN tag (`vlan_tci=0x0000/0x1000`'s OXM form: vlan_vid=0).
    pub fn vlan_none(self) -> Self {
        self.field(Field::VlanVid, 0)
    }
    /// Packets with any VLAN tag (`vlan_vid=0x1000/0x1000`).
    pub fn vlan_any(self) -> Self {
        let p = u128::from(OFPVID_PRESENT);
        self.field_masked(Field::VlanVid, p, p)
    }
    exact!(/// `vlan_pcp` (needs a VLAN tag match).
        vlan_pcp, Field::VlanPcp, u8);
    exact!(/// `ip_proto` (needs eth_type ip or ipv6).
        ip_proto, Field::IpProto, u8);
    exact_and_masked!(/// `ipv4_src`.
        ipv4_src, ipv4_src_masked, Field::Ipv4Src, Ipv4Addr, ip4);
    exact_and_masked!(/// `ipv4_dst`.
        ipv4_dst, ipv4_dst_masked, Field::Ipv4Dst, Ipv4Addr, ip4);
    exact_and_masked!(/// `ipv6_src`.
        ipv6_src, ipv6_src_masked, Field::Ipv6Src, Ipv6Addr, ip6);
    exact_and_masked!(/// `ipv6_dst`.
        ipv6_dst, ipv6_dst_masked, Field::Ipv6Dst, Ipv6Addr, ip6);
    exact!(/// `tcp_src`.
        tcp_src, Field::TcpSrc, u16);
    exact!(/// `tcp_dst`.
        tcp_dst, Field::TcpDst, u16);
    exact!(/// `udp_src`.
        udp_src, Field::UdpSrc, u16);
    exact!(/// `udp_dst`.
        udp_dst, Field::UdpDst, u16);
    exact!(/// `icmp_type`.
        icmp_type, Field::Icmpv4Type, u8);
    exact!(/// `icmp_code`.
        icmp_code, Field::Icmpv4Code, u8);
    exact!(/// `icmpv6_type`.
        icmpv6_type, Field::Icmpv6Type, u8);
    exact!(/// `icmpv6_code`.
        icmpv6_code, Field::Icmpv6Code, u8);
    exact!(/// `arp_op` (1 request, 2 reply).
        arp_op, Field::ArpOp, u16);
    exact_and_masked!(/// `arp_spa`.
        arp_spa, arp_spa_masked, Field::ArpSpa, Ipv4Addr, ip4);
    exact_and_masked!(/// `arp_tpa`.
        arp_tpa, arp_tpa_masked, Field::ArpTpa, Ipv4Addr, ip4);
    exact_and_masked!(/// `arp_sha`.
        arp_sha, arp_sha_masked, Field::ArpSha, Mac, mac);
    exact_and_masked!(/// `arp_tha`.
        arp_tha, arp_tha_masked, Field::ArpTha, Mac, mac);
    exact_and_masked!(/// `nd_target`.
        nd_target, nd_target_masked, Field::Ipv6NdTarget, Ipv6Addr, ip6);
    exact_and_masked!(/// `nd_sll`.
        nd_sll, nd_sll_masked, Field::Ipv6NdSll, Mac, mac);
    exact_and_masked!(/// `nd_tll`.
        nd_tll, nd_tll_masked, Field::Ipv6NdTll, Mac, mac);
    exact_and_masked!(/// `metadata`.
        metadata, metadata_masked, Field::Metadata, u64, u128::from);
    exact_and_masked!(/// `tun_id`.
        tun_id, tun_id_masked, Field::TunId, u64, u128::from);
    exact_and_masked!(/// `tun_src`.
        tun_src, tun_src_masked, Field::TunIpv4Src, Ipv4Addr, ip4);
    exact_and_masked!(/// `tun_dst`.
        tun_dst, tun_dst_masked, Field::TunIpv4Dst, Ipv4Addr, ip4);
    exact_and_masked!(/// `pkt_mark`.
        pkt_mark, pkt_mark_masked, Field::PktMark, u32, u128::from);
    exact_and_masked!(/// `ct_state` (the `CT_*` bits).
        ct_state, ct_state_masked, Field::CtState, u32, u128::from);
    exact!(/// `ct_zone`.
        ct_zone, Field::CtZone, u16);
    exact_and_masked!(/// `ct_mark`.
        ct_mark, ct_mark_masked, Field::CtMark, u32, u128::from);

    /// `reg<n>` (n in 0..=15).
    pub fn reg(self, n: u8, value: u32) -> Self {
        self.field(Field::Reg(n), u128::from(value))
    }
    /// `reg<n>` with a mask.
    pub fn reg_masked(self, n: u8, value: u32, mask: u32) -> Self {
        self.field_masked(Field::Reg(n), u128::from(value), u128::from(mask))
    }

    /// `eth_type=0x0800` (ovs-ofctl's `ip`).
    pub fn ip(self) -> Self {
        self.eth_type(ETH_TYPE_IP)
    }
    /// `eth_type=0x86dd` (`ipv6`).
    pub fn ipv6(self) -> Self {
        self.eth_type(ETH_TYPE_IPV6)
    }
    /// `eth_type=0x0806` (`arp`).
    pub fn arp(self) -> Self {
        self.eth_type(ETH_TYPE_ARP)
    }
    /// `ip,ip_proto=6` (`tcp`).
    pub fn tcp(self) -> Self {
        self.ip().ip_proto(6)
    }
    /// `ip,ip_proto=17` (`udp`).
    pub fn udp(self) -> Self {
        self.ip().ip_proto(17)
    }
    /// `ip,ip_proto=1` (`icmp`).
    pub fn icmp(self) -> Self {
        self.ip().ip_proto(1)
    }
    /// `ipv6,ip_proto=58` (`icmp6`).
    pub fn icmpv6(self) -> Self {
        self.ipv6().ip_proto(58)
    }

    /// The match, or the first mistake: a value too wide, a mask on an exact-only field, a
    /// field twice, or a field whose prerequisite is missing.
    pub fn build(self) -> Result<Match, MatchError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.m.validate()?;
        Ok(self.m)
    }
}
