//! Local VLANs: each tenant the host takes part in gets one 802.1Q tag on this host, used as
//! `Port.tag` on its container ports (br-int) and tunnel ports (br-tun). Tags are local: two
//! hosts may give one tenant different tags, since the VNI is what crosses the wire.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::VlanError;

/// Lowest usable tag (0 means "priority tagged, no VLAN").
pub const VLAN_MIN: u16 = 1;
/// Highest usable tag (4095 is reserved by 802.1Q).
pub const VLAN_MAX: u16 = 4094;

/// Gives every tenant in `needed` a local VLAN, keeping the ones in `existing`.
///
/// `existing` is what the OVSDB rows record (`overlay-local-vlan`), so a restarted agent keeps
/// its mapping and no port has to be re-tagged. Mappings are kept for tenants still needed;
/// if two tenants claim one tag (corrupt rows) or a tag is out of range, the first tenant by
/// name keeps it and the others get new ones. New tenants get the lowest free tag, preferring
/// tags no `existing` tenant holds: a tenant that stopped being needed may still have
/// container ports carrying its old tag until they are unplugged, and reusing that tag at once
/// would join the two tenants' L2 segments. Its tags are reused only when nothing else is left.
pub fn allocate_vlans(
    needed: &BTreeSet<String>,
    existing: &BTreeMap<String, u16>,
) -> Result<BTreeMap<String, u16>, VlanError> {
    let mut out = BTreeMap::new();
    let mut used = BTreeSet::new();
    for (tenant, &tag) in existing {
        if needed.contains(tenant) && (VLAN_MIN..=VLAN_MAX).contains(&tag) && used.insert(tag) {
            out.insert(tenant.clone(), tag);
        }
    }
    let stale: BTreeSet<u16> = existing.iter().filter(|(t, _)| !needed.contains(*t)).map(|(_, &tag)| tag).collect();
    let mut fresh = (VLAN_MIN..=VLAN_MAX).filter(|t| !used.contains(t) && !stale.contains(t));
    let mut recycled = stale.iter().copied().filter(|t| (VLAN_MIN..=VLAN_MAX).contains(t) && !used.contains(t));
    for tenant in needed {
        if out.contains_key(tenant) {
            continue;
        }
        // `fresh` and `recycled` are disjoint and each yields a tag once, so no tag is given twice.
        let tag = fresh
            .next()
            .or_else(|| recycled.next())
            .ok_or_else(|| VlanError::Exhausted { tenant: tenant.clone(), needed: needed.len() })?;
        out.insert(tenant.clone(), tag);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn map(pairs: &[(&str, u16)]) -> BTreeMap<String, u16> {
        pairs.iter().map(|(s, v)| (s.to_string(), *v)).collect()
    }

    #[test]
    fn fresh_host_gets_lowest_tags_in_name_order() {
        let got = allocate_vlans(&set(&["b", "a", "c"]), &BTreeMap::new()).unwrap();
        assert_eq!(got, map(&[("a", 1), ("b", 2), ("c", 3)]));
        assert!(allocate_vlans(&BTreeSet::new(), &map(&[("a", 1)])).unwrap().is_empty());
    }

    #[test]
    fn existing_mappings_survive() {
        let got = allocate_vlans(&set(&["a", "b", "new"]), &map(&[("a", 7), ("b", 3)])).unwrap();
        assert_eq!(got, map(&[("a", 7), ("b", 3), ("new", 1)]));
    }

    #[test]
    fn duplicate_tag_keeps_first_by_name() {
        let got = allocate_vlans(&set(&["x", "y"]), &map(&[("y", 5), ("x", 5)])).unwrap();
        assert_eq!(got, map(&[("x", 5), ("y", 1)]));
    }

    #[test]
    fn out_of_range_tags_are_reassigned() {
        let got = allocate_vlans(&set(&["a", "b"]), &map(&[("a", 0), ("b", 4095)])).unwrap();
        assert_eq!(got, map(&[("a", 1), ("b", 2)]));
    }

    #[test]
    fn stale_tags_are_avoided_then_recycled() {
        let existing = map(&[("gone", 1), ("kept", 2)]);
        let got = allocate_vlans(&set(&["kept", "new"]), &existing).unwrap();
        assert_eq!(got, map(&[("kept", 2), ("new", 3)]));

        // With every other tag taken, the stale one is reused rather than failing.
        let mut existing: BTreeMap<String, u16> = (2..=VLAN_MAX).map(|v| (format!("t{v:04}"), v)).collect();
        existing.insert("gone".into(), 1);
        let mut needed: BTreeSet<String> = existing.keys().filter(|k| *k != "gone").cloned().collect();
        needed.insert("new".into());
        let got = allocate_vlans(&needed, &existing).unwrap();
        assert_eq!(got["new"], 1);
    }

    #[test]
    fn exhaustion_is_an_error() {
        let needed: BTreeSet<String> = (0..VLAN_MAX).map(|i| format!("t{i:04}")).collect();
        let got = allocate_vlans(&needed, &BTreeMap::new()).unwrap();
        assert_eq!(got.len(), usize::from(VLAN_MAX));
        let mut more = needed.clone();
        more.insert("zzz".into());
        let err = allocate_vlans(&more, &BTreeMap::new()).unwrap_err();
        assert_eq!(err, VlanError::Exhausted { tenant: "zzz".into(), needed: 4095 });
        assert!(err.to_string().contains("4094"));
    }

    #[test]
    fn result_is_injective_and_in_range_for_messy_inputs() {
        // Property loop: random-ish existing maps with duplicates and junk tags.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..300 {
            let existing: BTreeMap<String, u16> =
                (0..next() % 40).map(|_| (format!("t{}", next() % 60), (next() % 12) as u16)).collect();
            let needed: BTreeSet<String> = (0..next() % 40).map(|_| format!("t{}", next() % 60)).collect();
            let got = allocate_vlans(&needed, &existing).unwrap();
            assert_eq!(got.keys().collect::<Vec<_>>(), needed.iter().collect::<Vec<_>>());
            let tags: BTreeSet<u16> = got.values().copied().collect();
            assert_eq!(tags.len(), got.len(), "two tenants share a tag");
            assert!(tags.iter().all(|t| (VLAN_MIN..=VLAN_MAX).contains(t)));
            // Idempotent: feeding the result back changes nothing.
            assert_eq!(allocate_vlans(&needed, &got).unwrap(), got);
            // Valid, unique existing tags of needed tenants are kept.
            for (t, v) in &got {
                if let Some(old) = existing.get(t) {
                    let unique = existing.values().filter(|x| *x == old).count() == 1;
                    if unique && (VLAN_MIN..=VLAN_MAX).contains(old) {
                        assert_eq!(v, old, "{t} lost its tag");
                    }
                }
            }
        }
    }
}
