//! Address management, flannel style: each host leases slices (subnets) of a tenant's CIDR and
//! hands container addresses from its own slices, so hosts never need to agree on single
//! addresses. Uniqueness of leases and addresses is enforced by etcd transactions; these
//! functions only propose candidates.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::error::IpamError;
use crate::fnv;
use crate::model::Tenant;

/// At most this many addresses of a lease are scanned by [`next_free_address`]: an IPv6 /64
/// lease has 2⁶⁴ addresses, and a host never needs more than a few thousand of them. Addresses
/// beyond the first 65 536 of a lease are never handed out.
pub const ADDRESS_SCAN_LIMIT: u128 = 65_536;

/// An address as a number (IPv4 in the low 32 bits), for arithmetic.
pub(crate) fn addr_to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The inverse of [`addr_to_u128`] in the family of `like` (IPv4 keeps the low 32 bits).
pub(crate) fn addr_from_u128(v: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(v as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// Two prefixes overlap iff one contains the other's network address.
fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Every `/subnet_len` subnet of `cidr` that overlaps nothing in `taken`, in address order
/// starting at an offset derived from `seed` (the hostname) and wrapping around, so hosts
/// racing for leases mostly try different subnets first.
///
/// The iterator is lazy: the caller takes the first one and tries to claim it in etcd, moving
/// on when it loses. Yields nothing when `subnet_len` is outside `cidr.prefix_len()..=max`.
/// Subnets containing the tenant gateway are fine: the gateway address itself is excluded by
/// [`next_free_address`].
pub fn subnet_candidates<'a>(
    cidr: IpNet,
    subnet_len: u8,
    taken: &'a BTreeSet<IpNet>,
    seed: &str,
) -> impl Iterator<Item = IpNet> + 'a {
    let cidr = cidr.trunc();
    let valid = (cidr.prefix_len()..=cidr.max_prefix_len()).contains(&subnet_len);
    let bits = u32::from(subnet_len.saturating_sub(cidr.prefix_len()));
    // 2^128 subnets (a /128 per address of ::/0) do not fit; one fewer is close enough.
    let count: u128 = if valid { 1u128.checked_shl(bits).unwrap_or(u128::MAX) } else { 0 };
    // A zero step only happens for subnet_len 0, where count is 1.
    let step = 1u128.checked_shl(u32::from(cidr.max_prefix_len() - subnet_len.min(cidr.max_prefix_len()))).unwrap_or(0);
    let base = addr_to_u128(cidr.network());
    let offset = if count == 0 { 0 } else { u128::from(fnv::hash(seed.as_bytes())) % count };
    let like = cidr.network();
    (0..count)
        .map(move |i| {
            // (offset + i) mod count without overflowing when count is close to 2^128.
            let idx = if i < count - offset { offset + i } else { i - (count - offset) };
            base.wrapping_add(idx.wrapping_mul(step))
        })
        .filter_map(move |start| IpNet::new(addr_from_u128(start, like), subnet_len).ok())
        .filter(move |net| !taken.iter().any(|t| overlaps(t, net)))
}

/// Why an address in a tenant cannot be given to a container, if it cannot.
fn reserved_in_tenant(addr: IpAddr, tenant: &Tenant) -> Option<IpamError> {
    let cidr = tenant.cidr();
    let name = tenant.name().to_owned();
    if !same_family(addr, cidr.network()) {
        return Some(IpamError::FamilyMismatch { addr, tenant: name, cidr });
    }
    if !cidr.contains(&addr) {
        return Some(IpamError::OutsideTenant { addr, tenant: name, cidr });
    }
    if addr == cidr.network() {
        return Some(IpamError::NetworkAddress { addr, tenant: name });
    }
    if tenant.broadcast() == Some(addr) {
        return Some(IpamError::BroadcastAddress { addr, tenant: name });
    }
    if addr == tenant.gateway() {
        return Some(IpamError::GatewayAddress { addr, tenant: name });
    }
    None
}

/// The lowest address of `lease` a container may get: not the lease's network or (IPv4)
/// broadcast address, not the tenant's network, broadcast or gateway address, and not in
/// `used`. Only the first [`ADDRESS_SCAN_LIMIT`] addresses are scanned. `None` when the lease
/// is full or does not belong to the tenant's CIDR.
///
/// Lease network and broadcast addresses are skipped too, although containers use the
/// tenant's prefix length, so that a lease can later be routed as its own subnet.
pub fn next_free_address(lease: IpNet, tenant: &Tenant, used: &BTreeSet<IpAddr>) -> Option<IpAddr> {
    let lease = lease.trunc();
    let cidr = tenant.cidr();
    if !same_family(lease.network(), cidr.network())
        || lease.prefix_len() < cidr.prefix_len()
        || !cidr.contains(&lease.network())
    {
        return None;
    }
    let v6 = tenant.is_ipv6();
    let start = addr_to_u128(lease.network());
    let end = addr_to_u128(lease.broadcast()).min(start.saturating_add(ADDRESS_SCAN_LIMIT - 1));
    (start..=end).map(|v| addr_from_u128(v, lease.network())).find(|&a| {
        a != lease.network()
            && (v6 || a != lease.broadcast())
            && reserved_in_tenant(a, tenant).is_none()
            && !used.contains(&a)
    })
}

/// Checks an address a user asked for: inside the tenant CIDR and not its network,
/// broadcast or gateway address. (Whether it is free is for etcd to say.)
pub fn check_requested_address(addr: IpAddr, tenant: &Tenant) -> Result<(), IpamError> {
    reserved_in_tenant(addr, tenant).map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{TunnelType, Vni};

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn tenant(cidr: &str, len: u8) -> Tenant {
        Tenant::new("t", Vni::new(1).unwrap(), net(cidr), TunnelType::Vxlan, len).unwrap()
    }

    #[test]
    fn candidates_cover_every_subnet_once() {
        let taken = BTreeSet::new();
        let all: Vec<IpNet> = subnet_candidates(net("10.0.0.0/16"), 24, &taken, "node1").collect();
        assert_eq!(all.len(), 256);
        let uniq: BTreeSet<IpNet> = all.iter().copied().collect();
        assert_eq!(uniq.len(), 256);
        assert!(uniq.iter().all(|n| n.prefix_len() == 24 && net("10.0.0.0/16").contains(&n.network())));
        // Consecutive after the offset, wrapping around.
        let first = addr_to_u128(all[0].network());
        for (i, n) in all.iter().enumerate() {
            let expect = 0x0a00_0000 + ((first - 0x0a00_0000) / 256 + i as u128) % 256 * 256;
            assert_eq!(addr_to_u128(n.network()), expect);
        }
    }

    #[test]
    fn candidates_skip_taken_and_overlapping() {
        let taken: BTreeSet<IpNet> =
            [net("10.0.1.0/24"), net("10.0.2.128/25"), net("10.0.4.0/23")].into_iter().collect();
        let got: BTreeSet<IpNet> = subnet_candidates(net("10.0.0.0/21"), 24, &taken, "h").collect();
        let expect: BTreeSet<IpNet> =
            ["10.0.0.0/24", "10.0.3.0/24", "10.0.6.0/24", "10.0.7.0/24"].iter().map(|s| net(s)).collect();
        assert_eq!(got, expect);
        // A taken supernet blocks everything.
        let all: BTreeSet<IpNet> = [net("10.0.0.0/8")].into_iter().collect();
        assert_eq!(subnet_candidates(net("10.0.0.0/21"), 24, &all, "h").count(), 0);
        // A taken net of the other family blocks nothing.
        let v6: BTreeSet<IpNet> = [net("::/0")].into_iter().collect();
        assert_eq!(subnet_candidates(net("10.0.0.0/21"), 24, &v6, "h").count(), 8);
    }

    #[test]
    fn seeds_spread_hosts_over_subnets() {
        let taken = BTreeSet::new();
        let firsts: BTreeSet<IpNet> = (0..50)
            .map(|i| subnet_candidates(net("10.0.0.0/16"), 24, &taken, &format!("host{i}")).next().unwrap())
            .collect();
        assert!(firsts.len() > 35, "only {} distinct first picks", firsts.len());
        let a: Vec<_> = subnet_candidates(net("10.0.0.0/16"), 24, &taken, "x").take(3).collect();
        let b: Vec<_> = subnet_candidates(net("10.0.0.0/16"), 24, &taken, "x").take(3).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn candidates_edge_lengths() {
        let taken = BTreeSet::new();
        let c = net("10.0.0.0/24");
        assert_eq!(subnet_candidates(c, 24, &taken, "s").collect::<Vec<_>>(), vec![c]);
        assert_eq!(subnet_candidates(c, 23, &taken, "s").count(), 0);
        assert_eq!(subnet_candidates(c, 33, &taken, "s").count(), 0);
        assert_eq!(subnet_candidates(c, 32, &taken, "s").count(), 256);
        // Host bits in the CIDR are ignored rather than producing misaligned subnets.
        assert!(subnet_candidates(net("10.0.0.77/24"), 26, &taken, "s").all(|n| n.trunc() == n));
        assert_eq!(subnet_candidates(net("0.0.0.0/0"), 0, &taken, "s").count(), 1);
    }

    #[test]
    fn candidates_in_huge_ipv6_space_are_lazy() {
        let taken: BTreeSet<IpNet> = [net("fd00::/64")].into_iter().collect();
        let got: Vec<IpNet> = subnet_candidates(net("fd00::/8"), 64, &taken, "h").take(1000).collect();
        assert_eq!(got.len(), 1000);
        assert!(got.iter().all(|n| n.prefix_len() == 64 && net("fd00::/8").contains(&n.network())));
        assert!(!got.contains(&net("fd00::/64")));
        assert!(subnet_candidates(net("::/0"), 128, &BTreeSet::new(), "h").take(3).count() == 3);
    }

    #[test]
    fn first_address_skips_gateway_and_network() {
        let t = tenant("10.1.0.0/16", 24);
        let none = BTreeSet::new();
        // The first lease holds the tenant network (.0) and the gateway (.1).
        assert_eq!(next_free_address(net("10.1.0.0/24"), &t, &none), Some(ip("10.1.0.2")));
        // Other leases skip only their own network address.
        assert_eq!(next_free_address(net("10.1.5.0/24"), &t, &none), Some(ip("10.1.5.1")));
        let used: BTreeSet<IpAddr> = [ip("10.1.5.1"), ip("10.1.5.2"), ip("10.1.5.4")].into_iter().collect();
        assert_eq!(next_free_address(net("10.1.5.0/24"), &t, &used), Some(ip("10.1.5.3")));
    }

    #[test]
    fn broadcasts_are_never_handed_out() {
        let t = tenant("10.1.0.0/16", 30);
        let mut used = BTreeSet::new();
        // Last lease: .252 network, .253 and .254 hosts, .255 is lease and tenant broadcast.
        let lease = net("10.1.255.252/30");
        while let Some(a) = next_free_address(lease, &t, &used) {
            assert!(used.insert(a));
        }
        assert_eq!(used, [ip("10.1.255.253"), ip("10.1.255.254")].into_iter().collect());
        // First /30 lease: .0 network, .1 gateway, .2 host, .3 broadcast.
        let mut used = BTreeSet::new();
        while let Some(a) = next_free_address(net("10.1.0.0/30"), &t, &used) {
            assert!(used.insert(a));
        }
        assert_eq!(used, [ip("10.1.0.2")].into_iter().collect());
    }

    #[test]
    fn full_lease_gives_none_and_every_address_is_valid() {
        for (cidr, len) in [("10.9.0.0/22", 24), ("192.168.0.0/24", 26), ("fd00::/120", 124)] {
            let t = tenant(cidr, len);
            let taken = BTreeSet::new();
            for lease in subnet_candidates(t.cidr(), len, &taken, "h") {
                let mut used = BTreeSet::new();
                while let Some(a) = next_free_address(lease, &t, &used) {
                    assert!(lease.contains(&a));
                    assert!(check_requested_address(a, &t).is_ok(), "{a}");
                    assert!(used.insert(a), "{a} handed out twice");
                }
                let hosts = addr_to_u128(lease.broadcast()) - addr_to_u128(lease.network()) + 1;
                let v4_extra = if t.is_ipv6() { 0 } else { 1 };
                let gw = u128::from(lease.contains(&t.gateway()));
                assert_eq!(used.len() as u128, hosts - 1 - v4_extra - gw, "{lease}");
            }
        }
    }

    #[test]
    fn ipv6_scan_is_capped() {
        let t = tenant("fd00::/48", 64);
        let lease = net("fd00:0:0:5::/64");
        assert_eq!(next_free_address(lease, &t, &BTreeSet::new()), Some(ip("fd00:0:0:5::1")));
        let start = addr_to_u128(lease.network());
        let used: BTreeSet<IpAddr> =
            (1..ADDRESS_SCAN_LIMIT).map(|i| addr_from_u128(start + i, lease.network())).collect();
        assert_eq!(next_free_address(lease, &t, &used), None);
        let first = net("fd00::/64");
        assert_eq!(next_free_address(first, &t, &BTreeSet::new()), Some(ip("fd00::2")));
    }

    #[test]
    fn foreign_leases_give_nothing() {
        let t = tenant("10.1.0.0/16", 24);
        let none = BTreeSet::new();
        assert_eq!(next_free_address(net("10.2.0.0/24"), &t, &none), None);
        assert_eq!(next_free_address(net("10.0.0.0/8"), &t, &none), None);
        assert_eq!(next_free_address(net("fd00::/64"), &t, &none), None);
    }

    #[test]
    fn requested_address_rules() {
        let t = tenant("10.1.0.0/16", 24);
        assert!(check_requested_address(ip("10.1.3.4"), &t).is_ok());
        assert!(check_requested_address(ip("10.1.0.2"), &t).is_ok());
        let e = |s| check_requested_address(ip(s), &t).unwrap_err();
        assert!(matches!(e("10.1.0.0"), IpamError::NetworkAddress { .. }));
        assert!(matches!(e("10.1.255.255"), IpamError::BroadcastAddress { .. }));
        assert!(matches!(e("10.1.0.1"), IpamError::GatewayAddress { .. }));
        assert!(matches!(e("10.2.0.5"), IpamError::OutsideTenant { .. }));
        assert!(matches!(e("fd00::5"), IpamError::FamilyMismatch { .. }));
        assert!(e("10.1.0.1").to_string().contains("gateway"));
        assert!(e("10.2.0.5").to_string().contains("use an address inside 10.1.0.0/16"));
    }

    #[test]
    fn requested_ipv6_address_rules() {
        let t = tenant("fd00:1::/64", 120);
        assert!(check_requested_address(ip("fd00:1::ffff:ffff:ffff:ffff"), &t).is_ok());
        assert!(check_requested_address(ip("fd00:1::1"), &t).is_err());
        assert!(check_requested_address(ip("fd00:1::"), &t).is_err());
        assert!(check_requested_address(ip("10.0.0.1"), &t).is_err());
    }

    #[test]
    fn u128_round_trip() {
        for s in ["0.0.0.0", "255.255.255.255", "10.1.2.3", "::", "fd00::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"]
        {
            let a = ip(s);
            assert_eq!(addr_from_u128(addr_to_u128(a), a), a);
        }
    }
}
