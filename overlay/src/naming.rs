//! Deterministic Linux interface names.
//!
//! Names are at most 15 bytes (`IFNAMSIZ` is 16 including the NUL) and use only `[a-z0-9-]`,
//! so they are valid both as OVS port names and as kernel netdev names. They are derived from a
//! hash rather than truncated ids: Docker ids sharing their first characters must not collide,
//! and a restarted agent must compute the same names to find its ports again.
//!
//! Each container port name carries 48 bits of hash (12 hex digits). Only names on one host
//! can clash; with `n` ports on a host the odds of any collision are about `n² / 2⁴⁹`: 1.8e-7
//! for 10 000 ports.

use crate::fnv::Fnv1a;
use crate::model::{TunnelType, Vni};
use crate::text::push_hex;

/// Longest Linux interface name (`IFNAMSIZ - 1`).
pub const IFNAME_MAX: usize = 15;

/// The patch port on the integration bridge (br-int), peer of [`PATCH_TUN_TO_INT`].
pub const PATCH_INT_TO_TUN: &str = "patch-tun";

/// The patch port on the tunnel bridge (br-tun), peer of [`PATCH_INT_TO_TUN`].
pub const PATCH_TUN_TO_INT: &str = "patch-int";

/// The high 48 bits of a hash as 12 lowercase hex digits.
fn hex48(h: u64) -> String {
    let mut s = String::with_capacity(12);
    push_hex(&mut s, h >> 16, 12);
    s
}

/// The tunnel port of a tenant on br-tun: `tun-vx-<VNI>` or `tun-gr-<VNI>` (15 bytes at most:
/// VNIs have 8 digits at most). One per tenant: which peer a packet goes to is the flows' choice.
pub fn tenant_tunnel_port_name(tunnel: TunnelType, vni: Vni) -> String {
    let kind = match tunnel {
        TunnelType::Vxlan => "vx",
        TunnelType::Gre => "gr",
    };
    format!("tun-{kind}-{}", vni.get())
}

/// The host end of a container interface's veth pair, on br-int: `tap` + 12 hex digits. The
/// first interface (`eth0`) hashes the container id alone, as ports were named before a
/// container could have several, so a port of an older agent keeps its name.
pub fn container_port_name(container_id: &str, ifname: &str) -> String {
    let mut h = Fnv1a::new().write(container_id.as_bytes());
    if ifname != crate::model::DEFAULT_IFNAME {
        // NUL cannot occur in either, so ("a", "b/c") and ("a/b", "c") stay apart.
        h = h.write(&[0]).write(ifname.as_bytes());
    }
    format!("tap{}", hex48(h.finish()))
}

/// Whether `name` has the form of [`container_port_name`]: `tap` + 12 lower-case hex digits.
/// (Neutron's and nova's taps carry a dash: `tap` + 8 hex + `-` + 2 hex.)
pub fn is_container_port_name(name: &str) -> bool {
    name.len() == 15
        && name.starts_with("tap")
        && name[3..].bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// The container end of the veth pair while it is still in the host namespace (it is renamed
/// to eth0 when moved): `tmp` + 12 hex digits. A separate name keeps a half-done plug from
/// blocking a retry.
pub fn container_peer_temp_name(container_id: &str) -> String {
    format!("tmp{}", hex48(Fnv1a::new().write(container_id.as_bytes()).finish()))
}

/// Whether `name` is a name this module could produce, or a user may give a container
/// interface: 1..=15 bytes of `[a-z0-9-]`. Stricter than the kernel ([`kernel_ifname_error`]):
/// the same name must also be a valid OVS port name and etcd key segment.
pub fn is_valid_ifname(name: &str) -> bool {
    kernel_ifname_error(name).is_none()
        && name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

/// Why the kernel would refuse (or silently truncate) `name` as a link name, or `None` when it
/// takes it. Links the agent only looks at (`lo`, a test's `eth1`) may use more than
/// [`is_valid_ifname`] allows.
pub fn kernel_ifname_error(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty")
    } else if name.len() > IFNAME_MAX {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("reserved")
    } else if name.bytes().any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace()) {
        Some("contains '/', ':', NUL or whitespace")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn vni(v: u32) -> Vni {
        Vni::new(v).unwrap()
    }

    #[test]
    fn kernel_names_and_our_names() {
        assert_eq!(kernel_ifname_error("eth0"), None);
        assert_eq!(kernel_ifname_error("Eth.0"), None);
        assert_eq!(kernel_ifname_error("123456789012345"), None);
        assert!(kernel_ifname_error("1234567890123456").is_some());
        assert!(kernel_ifname_error("").is_some());
        assert!(kernel_ifname_error("a/b").is_some());
        assert!(kernel_ifname_error("a b").is_some());
        assert!(kernel_ifname_error("..").is_some());
        // Ours are stricter: the kernel takes these, an OVS port name or key segment should not.
        assert!(!is_valid_ifname("Eth.0"));
        assert!(is_valid_ifname("eth1"));
    }

    #[test]
    fn names_fill_exactly_fifteen_bytes() {
        assert!(tenant_tunnel_port_name(TunnelType::Vxlan, vni(16_777_215)).len() <= IFNAME_MAX);
        assert_eq!(container_port_name("c", "eth0").len(), IFNAME_MAX);
        assert_eq!(container_peer_temp_name("c").len(), IFNAME_MAX);
    }

    #[test]
    fn names_are_valid_for_any_input() {
        let long = "a".repeat(128);
        let inputs = ["", "x", "node1.example.com", "ünïcødé-höst", "名前", long.as_str(), "a/b\0c"];
        for s in inputs {
            assert!(is_valid_ifname(&container_port_name(s, "eth0")));
            assert!(is_valid_ifname(&container_peer_temp_name(s)));
        }
        for t in TunnelType::ALL {
            for v in [1, 2, 4096, 16_777_215] {
                let n = tenant_tunnel_port_name(t, vni(v));
                assert!(is_valid_ifname(&n) && !is_container_port_name(&n), "{n}");
            }
        }
        assert!(is_valid_ifname(PATCH_INT_TO_TUN) && is_valid_ifname(PATCH_TUN_TO_INT));
    }

    #[test]
    fn container_port_names_are_recognised_and_others_are_not() {
        for id in ["c", "web-1", "x".repeat(128).as_str()] {
            assert!(is_container_port_name(&container_port_name(id, "eth0")), "{id}");
        }
        for other in ["tap", "tap0", "tap1a2b3c4d-5e", "tapABCDEF012345", "tmp0123456789ab", "tap0123456789abc", "eth0"]
        {
            assert!(!is_container_port_name(other), "{other}");
        }
    }

    #[test]
    fn prefixes_tell_the_kind() {
        assert!(container_port_name("c", "eth0").starts_with("tap"));
        assert!(container_peer_temp_name("c").starts_with("tmp"));
        // Same hash body, different prefix: host and temp names never clash.
        assert_eq!(container_port_name("c", "eth0")[3..], container_peer_temp_name("c")[3..]);
    }

    #[test]
    fn names_are_pinned() {
        // A change here renames every port on every host after an upgrade: the new agent would
        // delete and re-create them. Change only on purpose.
        assert_eq!(tenant_tunnel_port_name(TunnelType::Vxlan, vni(100)), "tun-vx-100");
        assert_eq!(tenant_tunnel_port_name(TunnelType::Gre, vni(16_777_215)), "tun-gr-16777215");
        assert_eq!(container_port_name("abc", "eth0"), "tap33ebaf9927cb");
        // Other interfaces of the same container get ports of their own.
        assert_ne!(container_port_name("abc", "eth1"), container_port_name("abc", "eth0"));
        assert_ne!(container_port_name("abc", "eth1"), container_port_name("abc", "eth2"));
        assert!(is_container_port_name(&container_port_name("abc", "eth1")));
        assert_eq!(container_peer_temp_name("abc"), "tmp33ebaf9927cb");
    }

    #[test]
    fn shared_prefix_ids_do_not_collide() {
        let base = "f".repeat(120);
        let a = container_port_name(&format!("{base}00000001"), "eth0");
        let b = container_port_name(&format!("{base}00000002"), "eth0");
        assert_ne!(a, b);
        let id = "0123456789abcdef".repeat(4);
        assert_ne!(container_port_name(&id, "eth0"), container_port_name(&id[..12], "eth0"));
    }

    #[test]
    fn no_collisions_over_100k_container_ids() {
        let mut seen = HashSet::new();
        for i in 0..100_000u32 {
            let id = format!("{:064x}", u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            assert!(seen.insert(container_port_name(&id, "eth0")), "collision at {i}");
        }
    }
}
