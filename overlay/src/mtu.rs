//! Container MTU. Tunnelled frames carry extra headers; if the container MTU does not leave
//! room for them, full-size packets are dropped on the underlay (OVS does not fragment the
//! outer packet), and the symptom is that ping works while TCP moves nothing.

use crate::error::MtuError;
use crate::model::TunnelType;

/// Outer IPv4 header (no options).
pub const IPV4_HEADER: u32 = 20;
/// Outer IPv6 header (no extension headers): 20 bytes more than IPv4.
pub const IPV6_HEADER: u32 = 40;
/// Outer UDP header of VXLAN.
pub const UDP_HEADER: u32 = 8;
/// VXLAN header (RFC 7348).
pub const VXLAN_HEADER: u32 = 8;
/// GRE header with the key field (RFC 2890): 4 bytes base + 4 bytes key. OVS sets no
/// checksum or sequence number by default.
pub const GRE_KEY_HEADER: u32 = 8;
/// The inner Ethernet header: both tunnels carry whole L2 frames (OVS `gre` is Ethernet over
/// GRE, type 0x6558); the inner 802.1Q tag is stripped because tunnel ports are access ports.
pub const INNER_ETHERNET: u32 = 14;

/// The largest MTU accepted: the IPv4/IPv6 total-length field is 16 bits.
pub const MAX_MTU: u32 = 65_535;
/// IPv6 needs links of at least 1280 bytes (RFC 8200 section 5); below it, IPv6 in the
/// containers breaks.
pub const MIN_IPV6_MTU: u32 = 1280;
/// IPv4 only needs 68, but every IPv4 host must accept 576-byte datagrams (RFC 791) and DNS,
/// DHCP and many stacks assume them: a smaller container MTU means a misconfigured underlay.
pub const MIN_IPV4_MTU: u32 = 576;

/// Bytes a tunnel adds to each frame sent by a container:
/// VXLAN = outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14 = 50;
/// GRE = outer IP 20 + GRE with key 8 + inner Ethernet 14 = 42;
/// an IPv6 underlay adds 20 to either (40-byte outer header).
pub fn tunnel_overhead(tunnel: TunnelType, underlay_is_ipv6: bool) -> u32 {
    let outer_ip = if underlay_is_ipv6 { IPV6_HEADER } else { IPV4_HEADER };
    let encap = match tunnel {
        TunnelType::Vxlan => UDP_HEADER + VXLAN_HEADER,
        TunnelType::Gre => GRE_KEY_HEADER,
    };
    outer_ip + encap + INNER_ETHERNET
}

/// The MTU to give container interfaces: underlay MTU minus [`tunnel_overhead`].
///
/// The minimum depends on what the containers speak (`tenant_is_ipv6`), not on the underlay:
/// an IPv6 tenant needs [`MIN_IPV6_MTU`], an IPv4 tenant [`MIN_IPV4_MTU`].
pub fn container_mtu(
    underlay_mtu: u32,
    tunnel: TunnelType,
    underlay_is_ipv6: bool,
    tenant_is_ipv6: bool,
) -> Result<u32, MtuError> {
    if underlay_mtu > MAX_MTU {
        return Err(MtuError::UnderlayTooLarge { mtu: underlay_mtu });
    }
    let overhead = tunnel_overhead(tunnel, underlay_is_ipv6);
    let (min, family) = if tenant_is_ipv6 { (MIN_IPV6_MTU, "IPv6") } else { (MIN_IPV4_MTU, "IPv4") };
    match underlay_mtu.checked_sub(overhead) {
        Some(mtu) if mtu >= min => Ok(mtu),
        _ => Err(MtuError::TooSmall { underlay_mtu, overhead, min, family }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overheads_match_the_design() {
        assert_eq!(tunnel_overhead(TunnelType::Vxlan, false), 50);
        assert_eq!(tunnel_overhead(TunnelType::Gre, false), 42);
        assert_eq!(tunnel_overhead(TunnelType::Vxlan, true), 70);
        assert_eq!(tunnel_overhead(TunnelType::Gre, true), 62);
    }

    #[test]
    fn common_underlays() {
        assert_eq!(container_mtu(1500, TunnelType::Vxlan, false, false), Ok(1450));
        assert_eq!(container_mtu(1500, TunnelType::Gre, false, false), Ok(1458));
        assert_eq!(container_mtu(9000, TunnelType::Vxlan, true, true), Ok(8930));
        assert_eq!(container_mtu(65_535, TunnelType::Gre, false, true), Ok(65_493));
    }

    #[test]
    fn ipv6_tenants_need_1280() {
        // 1330 - 50 = 1280: just enough.
        assert_eq!(container_mtu(1330, TunnelType::Vxlan, false, true), Ok(1280));
        let err = container_mtu(1329, TunnelType::Vxlan, false, true).unwrap_err();
        assert_eq!(err, MtuError::TooSmall { underlay_mtu: 1329, overhead: 50, min: 1280, family: "IPv6" });
        assert!(err.to_string().contains("at least 1330"), "{err}");
        // The same underlay is fine for an IPv4 tenant.
        assert_eq!(container_mtu(1329, TunnelType::Vxlan, false, false), Ok(1279));
    }

    #[test]
    fn ipv4_tenants_need_576() {
        assert_eq!(container_mtu(618, TunnelType::Gre, false, false), Ok(576));
        assert!(container_mtu(617, TunnelType::Gre, false, false).is_err());
        assert!(container_mtu(0, TunnelType::Gre, false, false).is_err());
        assert!(container_mtu(10, TunnelType::Vxlan, true, false).is_err());
    }

    #[test]
    fn too_large_underlay() {
        assert_eq!(
            container_mtu(65_536, TunnelType::Vxlan, false, false),
            Err(MtuError::UnderlayTooLarge { mtu: 65_536 })
        );
        assert!(container_mtu(u32::MAX, TunnelType::Gre, true, true).is_err());
    }

    #[test]
    fn mtu_is_monotonic_and_exact_over_the_range() {
        for t in TunnelType::ALL {
            for u6 in [false, true] {
                for t6 in [false, true] {
                    let mut last = None;
                    for m in (0..=MAX_MTU).step_by(7) {
                        if let Ok(c) = container_mtu(m, t, u6, t6) {
                            assert_eq!(c + tunnel_overhead(t, u6), m);
                            assert!(last.is_none_or(|l| l < c));
                            last = Some(c);
                        }
                    }
                    assert!(last.is_some());
                }
            }
        }
    }
}
