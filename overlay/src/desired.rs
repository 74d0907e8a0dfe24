//! Desired state: what the bridges of this host should hold, computed from the cluster view
//! alone. Level-triggered: the same view always gives the same state, whatever events led to
//! it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use crate::error::DesiredError;
use crate::fnv::FnvBuild;
use crate::model::{HostRecord, SubnetLease, Tenant, TunnelType, Vni};
use crate::naming::{peer_hash, tunnel_name_from_key, tunnel_name_key, PATCH_INT_TO_TUN, PATCH_TUN_TO_INT};
use crate::vlan::allocate_vlans;

/// What the agent knows of the cluster (from etcd) plus its own configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// This host's record (used even when its etcd key is momentarily missing).
    pub local: HostRecord,
    /// All registered hosts by hostname, this one included.
    pub hosts: BTreeMap<String, HostRecord>,
    /// All tenants by name.
    pub tenants: BTreeMap<String, Tenant>,
    /// All subnet leases of all hosts.
    pub leases: Vec<SubnetLease>,
    /// `Bridge.datapath_type` for both bridges: "system" or "netdev".
    pub datapath_type: String,
    /// The integration bridge (containers), e.g. "br-int".
    pub int_bridge: String,
    /// The tunnel bridge (tunnel ports), e.g. "br-tun".
    pub tun_bridge: String,
}

/// A bridge that should exist.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BridgeSpec {
    /// Bridge name.
    pub name: String,
    /// `Bridge.datapath_type`.
    pub datapath_type: String,
}

/// One end of the patch link between the two bridges.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PatchPortSpec {
    /// Port and interface name.
    pub name: String,
    /// The bridge it lives on.
    pub bridge: String,
    /// `options:peer`: the name of the other end.
    pub peer: String,
}

/// One tunnel port on the tunnel bridge: to one peer, for one tenant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TunnelPortSpec {
    /// Port and interface name (see [`crate::naming::tunnel_port_name`]).
    pub name: String,
    /// The tenant.
    pub tenant: String,
    /// `options:key`.
    pub vni: Vni,
    /// The peer hostname.
    pub peer: String,
    /// `options:remote_ip`: the peer's underlay IP.
    pub remote_ip: IpAddr,
    /// `options:local_ip`: ours.
    pub local_ip: IpAddr,
    /// `Interface.type`.
    pub tunnel: TunnelType,
    /// `Port.tag`: the tenant's VLAN on this host.
    pub local_vlan: u16,
}

/// A peer the agent cannot build tunnels to, with a reason worth logging.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SkippedPeer {
    /// The peer hostname.
    pub peer: String,
    /// Why, in words.
    pub reason: String,
}

/// Everything the diff needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredState {
    /// The integration bridge.
    pub int_bridge: BridgeSpec,
    /// The tunnel bridge; tunnel ports live here.
    pub tun_bridge: BridgeSpec,
    /// The two patch ports (br-int side first).
    pub patch_ports: Vec<PatchPortSpec>,
    /// Tunnel ports, sorted by name.
    pub tunnels: Vec<TunnelPortSpec>,
    /// Local VLAN of every tenant this host takes part in (the plug path tags container
    /// ports with these).
    pub tenant_vlans: BTreeMap<String, u16>,
    /// Peers left out, sorted and without duplicates.
    pub skipped: Vec<SkippedPeer>,
}

impl DesiredState {
    /// How many peers have at least one tunnel. Counted with a hash set: a tree of names, at
    /// 20,000 tunnels, cost more than the diff of an event.
    pub fn peer_count(&self) -> usize {
        let peers: HashSet<&str, FnvBuild> = self.tunnels.iter().map(|t| t.peer.as_str()).collect();
        peers.len()
    }
}

/// Computes the desired state of this host's bridges.
///
/// A host takes part in a tenant iff it holds a lease in it; there is one tunnel port per
/// (peer, tenant) that both take part in. Leases of unknown tenants are ignored (the tenant was
/// deleted). Peers without a host record are left out even if a stale lease remains: the
/// host key is the authority on whether a host exists, and its underlay IP is taken from
/// there. Peers whose underlay IP family differs from ours, or that claim our own underlay IP,
/// are reported in `skipped`. `existing_vlans` comes from
/// [`crate::diff::existing_vlans_from`], so tags survive restarts.
pub fn desired_state(view: &ClusterView, existing_vlans: &BTreeMap<String, u16>) -> Result<DesiredState, DesiredError> {
    if view.int_bridge.is_empty() || view.tun_bridge.is_empty() || view.int_bridge == view.tun_bridge {
        return Err(DesiredError::BridgeNames { int: view.int_bridge.clone(), tun: view.tun_bridge.clone() });
    }
    let local = view.local.hostname.as_str();
    let local_ip = view.local.underlay_ip;

    // Hosts by their position in name order: members are kept as positions, which sort and
    // compare faster than names (20,000 leases at scale).
    let records: Vec<(&str, &HostRecord)> = view.hosts.iter().map(|(n, r)| (n.as_str(), r)).collect();
    let positions: HashMap<&str, usize, FnvBuild> = records.iter().enumerate().map(|(i, &(n, _))| (n, i)).collect();
    let local_position = positions.get(local).copied();

    // The hosts holding a lease in each existing tenant, sorted and deduplicated. Leases come
    // grouped by tenant (etcd key order), so the tenant of the previous lease is reused rather
    // than looked up again: at 20,000 leases the lookups were a good part of the cost.
    #[derive(Default)]
    struct Members<'a> {
        /// Positions in `records`.
        known: Vec<usize>,
        /// Hosts without a record.
        unknown: Vec<&'a str>,
    }
    let mut slots: BTreeMap<&str, usize> = BTreeMap::new();
    let mut members: Vec<Members> = Vec::new();
    let mut last: Option<(&str, Option<usize>)> = None;
    for lease in &view.leases {
        let tenant = lease.tenant.as_str();
        let slot = match last {
            Some((name, slot)) if name == tenant => slot,
            _ => {
                let slot = view.tenants.contains_key(tenant).then(|| {
                    *slots.entry(tenant).or_insert_with(|| {
                        members.push(Members::default());
                        members.len() - 1
                    })
                });
                last = Some((tenant, slot));
                slot
            }
        };
        if let Some(slot) = slot {
            let host = lease.host.as_str();
            match positions.get(host) {
                Some(&i) => members[slot].known.push(i),
                None => members[slot].unknown.push(host),
            }
        }
    }
    for m in &mut members {
        m.known.sort_unstable();
        m.known.dedup();
        m.unknown.sort_unstable();
        m.unknown.dedup();
    }
    let holds_local = |m: &Members| match local_position {
        Some(p) => m.known.binary_search(&p).is_ok(),
        None => m.unknown.binary_search(&local).is_ok(),
    };
    let local_tenants: BTreeSet<String> =
        slots.iter().filter(|(_, &slot)| holds_local(&members[slot])).map(|(t, _)| (*t).to_owned()).collect();
    let tenant_vlans = allocate_vlans(&local_tenants, existing_vlans)?;

    let mut skipped = BTreeSet::new();
    let mut skip = |peer: &str, reason: String| {
        skipped.insert(SkippedPeer { peer: peer.to_owned(), reason });
    };
    // Tunnels are first collected as (name key, tenant, peer), in tenant then peer order, and
    // named only once sorted and checked for collisions: names are numbers until then.
    struct Candidate<'a> {
        key: u64,
        tenant: usize,
        peer: &'a str,
        remote_ip: IpAddr,
    }
    let mut tenants: Vec<(&String, &Tenant, u16)> = Vec::with_capacity(tenant_vlans.len());
    let mut candidates: Vec<Candidate> = Vec::new();
    for (tenant_name, &local_vlan) in &tenant_vlans {
        let (Some(tenant), Some(&slot)) = (view.tenants.get(tenant_name), slots.get(tenant_name.as_str())) else {
            continue;
        };
        tenants.push((tenant_name, tenant, local_vlan));
        let m = &members[slot];
        for &peer in m.unknown.iter().filter(|&&h| h != local) {
            skip(peer, "no host record (expired or deleted); its leases are stale".into());
        }
        for &i in m.known.iter().filter(|&&i| Some(i) != local_position) {
            let (peer, record) = records[i];
            let remote_ip = record.underlay_ip;
            if remote_ip.is_ipv4() != local_ip.is_ipv4() {
                skip(peer, format!("underlay IP {remote_ip} is not of the same family as ours ({local_ip})"));
                continue;
            }
            if remote_ip == local_ip {
                skip(peer, format!("claims our own underlay IP {local_ip}"));
                continue;
            }
            let key = tunnel_name_key(tenant.tunnel(), peer_hash(peer), tenant.vni());
            candidates.push(Candidate { key, tenant: tenants.len() - 1, peer, remote_ip });
        }
    }
    // Sorted by (key, position): of two candidates with one name, the first in tenant and peer
    // order is kept. Small pairs sort much faster than the candidates themselves.
    let mut order: Vec<(u64, usize)> = candidates.iter().enumerate().map(|(i, c)| (c.key, i)).collect();
    order.sort_unstable();
    let mut tunnels: Vec<TunnelPortSpec> = Vec::with_capacity(candidates.len());
    let mut previous_key = None;
    for c in order.into_iter().map(|(_, i)| &candidates[i]) {
        let (tenant_name, tenant, local_vlan) = tenants[c.tenant];
        let name = tunnel_name_from_key(tenant.tunnel(), c.key);
        if previous_key == Some(c.key) {
            // 48-bit name hash collision: keep the first, say so.
            let other = tunnels.last().expect("a previous key means a kept tunnel");
            skip(
                c.peer,
                format!("tunnel port name {name} collides with the one to {} for {}", other.peer, other.tenant),
            );
            continue;
        }
        previous_key = Some(c.key);
        tunnels.push(TunnelPortSpec {
            name,
            tenant: tenant_name.clone(),
            vni: tenant.vni(),
            peer: c.peer.to_owned(),
            remote_ip: c.remote_ip,
            local_ip,
            tunnel: tenant.tunnel(),
            local_vlan,
        });
    }

    Ok(DesiredState {
        int_bridge: BridgeSpec { name: view.int_bridge.clone(), datapath_type: view.datapath_type.clone() },
        tun_bridge: BridgeSpec { name: view.tun_bridge.clone(), datapath_type: view.datapath_type.clone() },
        patch_ports: vec![
            PatchPortSpec {
                name: PATCH_INT_TO_TUN.to_owned(),
                bridge: view.int_bridge.clone(),
                peer: PATCH_TUN_TO_INT.to_owned(),
            },
            PatchPortSpec {
                name: PATCH_TUN_TO_INT.to_owned(),
                bridge: view.tun_bridge.clone(),
                peer: PATCH_INT_TO_TUN.to_owned(),
            },
        ],
        tunnels,
        tenant_vlans,
        skipped: skipped.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    use crate::naming::tunnel_port_name;

    fn names(d: &DesiredState) -> Vec<(String, String, TunnelType)> {
        d.tunnels
            .iter()
            .map(|t| (t.peer.clone(), t.tenant.clone(), t.tunnel))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    #[test]
    fn empty_cluster_gives_bridges_and_patches_only() {
        let v = view("a", &[host("a", "10.0.0.1")], &[], &[]);
        let d = desired_state(&v, &BTreeMap::new()).unwrap();
        assert_eq!(d.int_bridge, BridgeSpec { name: "br-int".into(), datapath_type: "netdev".into() });
        assert_eq!(d.tun_bridge, BridgeSpec { name: "br-tun".into(), datapath_type: "netdev".into() });
        assert_eq!(
            d.patch_ports,
            vec![
                PatchPortSpec { name: "patch-tun".into(), bridge: "br-int".into(), peer: "patch-int".into() },
                PatchPortSpec { name: "patch-int".into(), bridge: "br-tun".into(), peer: "patch-tun".into() },
            ]
        );
        assert!(d.tunnels.is_empty() && d.tenant_vlans.is_empty() && d.skipped.is_empty());
    }

    #[test]
    fn three_hosts_two_tenants_from_a() {
        let d = desired_state(&three_hosts("a"), &BTreeMap::new()).unwrap();
        assert_eq!(
            names(&d),
            vec![
                ("b".into(), "blue".into(), TunnelType::Vxlan),
                ("c".into(), "blue".into(), TunnelType::Vxlan),
                ("c".into(), "red".into(), TunnelType::Gre),
            ]
        );
        let expected: BTreeMap<String, u16> = [("blue".into(), 1), ("red".into(), 2)].into_iter().collect();
        assert_eq!(d.tenant_vlans, expected);
        let red = d.tunnels.iter().find(|t| t.tenant == "red").unwrap();
        assert_eq!(
            red,
            &TunnelPortSpec {
                name: tunnel_port_name(TunnelType::Gre, "c", Vni::new(200).unwrap()),
                tenant: "red".into(),
                vni: Vni::new(200).unwrap(),
                peer: "c".into(),
                remote_ip: "10.0.0.3".parse().unwrap(),
                local_ip: "10.0.0.1".parse().unwrap(),
                tunnel: TunnelType::Gre,
                local_vlan: 2,
            }
        );
        assert!(d.tunnels.windows(2).all(|w| w[0].name < w[1].name));
    }

    #[test]
    fn three_hosts_two_tenants_from_b() {
        // b holds no red lease: no red tunnels and no red VLAN on b.
        let d = desired_state(&three_hosts("b"), &BTreeMap::new()).unwrap();
        assert_eq!(
            names(&d),
            vec![("a".into(), "blue".into(), TunnelType::Vxlan), ("c".into(), "blue".into(), TunnelType::Vxlan)]
        );
        assert_eq!(d.tenant_vlans.keys().collect::<Vec<_>>(), vec!["blue"]);
    }

    #[test]
    fn peers_are_counted_once() {
        assert_eq!(desired_state(&three_hosts("a"), &BTreeMap::new()).unwrap().peer_count(), 2);
        assert_eq!(desired_state(&three_hosts("b"), &BTreeMap::new()).unwrap().peer_count(), 2);
        let alone = view("a", &[host("a", "10.0.0.1")], &[], &[]);
        assert_eq!(desired_state(&alone, &BTreeMap::new()).unwrap().peer_count(), 0);
    }

    #[test]
    fn several_leases_of_one_peer_give_one_tunnel() {
        let mut v = three_hosts("a");
        v.leases.push(lease("blue", "172.16.4.0/24", "b"));
        v.leases.push(lease("blue", "172.16.5.0/24", "a"));
        assert_eq!(desired_state(&v, &BTreeMap::new()).unwrap().tunnels.len(), 3);
    }

    #[test]
    fn peer_without_record_is_skipped_despite_stale_lease() {
        let mut v = three_hosts("a");
        v.hosts.remove("c");
        let d = desired_state(&v, &BTreeMap::new()).unwrap();
        assert_eq!(names(&d), vec![("b".into(), "blue".into(), TunnelType::Vxlan)]);
        assert_eq!(d.skipped.len(), 1, "one entry per peer and reason: {:?}", d.skipped);
        assert_eq!(d.skipped[0].peer, "c");
        // The local host still takes part in red (its own lease), so red keeps its VLAN.
        assert!(d.tenant_vlans.contains_key("red"));
    }

    #[test]
    fn leases_of_deleted_tenants_are_ignored() {
        let mut v = three_hosts("a");
        v.tenants.remove("red");
        let d = desired_state(&v, &BTreeMap::new()).unwrap();
        assert!(d.tunnels.iter().all(|t| t.tenant == "blue"));
        assert!(!d.tenant_vlans.contains_key("red"));
    }

    #[test]
    fn underlay_family_mismatch_is_skipped() {
        let mut v = three_hosts("a");
        v.hosts.insert("b".into(), host("b", "fd00::2"));
        let d = desired_state(&v, &BTreeMap::new()).unwrap();
        assert!(d.tunnels.iter().all(|t| t.peer != "b"));
        assert_eq!(d.skipped.iter().map(|s| s.peer.as_str()).collect::<Vec<_>>(), vec!["b"]);
        assert!(d.skipped[0].reason.contains("fd00::2"));
    }

    #[test]
    fn peer_claiming_our_ip_is_skipped() {
        let mut v = three_hosts("a");
        v.hosts.insert("b".into(), host("b", "10.0.0.1"));
        let d = desired_state(&v, &BTreeMap::new()).unwrap();
        assert!(d.tunnels.iter().all(|t| t.peer != "b"));
        assert_eq!(d.skipped[0].peer, "b");
    }

    #[test]
    fn ipv6_underlay_works() {
        let v = view(
            "a",
            &[host("a", "fd00::1"), host("b", "fd00::2")],
            &[tenant("blue", 7, "10.1.0.0/16", TunnelType::Gre)],
            &[lease("blue", "10.1.1.0/24", "a"), lease("blue", "10.1.2.0/24", "b")],
        );
        let d = desired_state(&v, &BTreeMap::new()).unwrap();
        assert_eq!(d.tunnels.len(), 1);
        assert_eq!(d.tunnels[0].remote_ip, "fd00::2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn existing_vlans_are_kept() {
        let existing: BTreeMap<String, u16> = [("red".into(), 40), ("blue".into(), 7)].into_iter().collect();
        let d = desired_state(&three_hosts("a"), &existing).unwrap();
        assert_eq!(d.tenant_vlans, existing);
        assert!(d.tunnels.iter().all(|t| t.local_vlan == existing[&t.tenant]));
    }

    #[test]
    fn bad_bridge_names_are_errors() {
        let mut v = three_hosts("a");
        v.tun_bridge = v.int_bridge.clone();
        assert!(matches!(desired_state(&v, &BTreeMap::new()), Err(DesiredError::BridgeNames { .. })));
        v.tun_bridge = String::new();
        assert!(desired_state(&v, &BTreeMap::new()).is_err());
    }

    #[test]
    fn same_state_as_the_reference_implementation() {
        let mut rng = Rng(0x5eed_0d15_ea5e_0001);
        for round in 0..600 {
            let mut v = random_view(&mut rng);
            // Leases usually come grouped by tenant; the result must not depend on it.
            if rng.below(2) == 0 {
                for i in (1..v.leases.len()).rev() {
                    v.leases.swap(i, rng.below(i as u64 + 1) as usize);
                }
            }
            // Now and then a peer that must be skipped, our own record missing (the view's
            // `local` still counts), and a lease of the same host twice.
            match rng.below(6) {
                5 => {
                    v.hosts.remove(&v.local.hostname);
                }
                0 => {
                    v.hosts.insert("h9".into(), host("h9", "fd00::9"));
                }
                1 => {
                    v.hosts.insert("h9".into(), host("h9", &v.local.underlay_ip.to_string()));
                }
                _ => {}
            }
            if let Some(l) = v.leases.first().cloned() {
                let mut twice = l.clone();
                twice.host = "h9".into();
                v.leases.extend([l, twice]);
            }
            let existing: BTreeMap<String, u16> =
                (0..rng.below(4)).map(|_| (format!("t{}", rng.below(6)), rng.below(6) as u16)).collect();
            assert_eq!(desired_state(&v, &existing), crate::reference::desired_state(&v, &existing), "round {round}");
        }
    }

    #[test]
    fn colliding_tunnel_names_keep_the_first_peer_and_report_the_other() {
        // Found by a birthday search over 40 million hostnames: both name vx-0aa117ce0e8d.
        let (first, second) = ("h20292426", "h620797");
        let vni = Vni::new(100).unwrap();
        assert_eq!(tunnel_port_name(TunnelType::Vxlan, first, vni), tunnel_port_name(TunnelType::Vxlan, second, vni));
        assert_ne!(
            tunnel_port_name(TunnelType::Gre, first, Vni::new(200).unwrap()),
            tunnel_port_name(TunnelType::Gre, second, Vni::new(200).unwrap())
        );
        let v = view(
            "a",
            &[host("a", "10.0.0.1"), host(second, "10.0.0.2"), host(first, "10.0.0.3")],
            &[
                tenant("blue", 100, "172.16.0.0/16", TunnelType::Vxlan),
                tenant("red", 200, "172.16.0.0/16", TunnelType::Gre),
            ],
            &[
                lease("blue", "172.16.1.0/24", "a"),
                lease("blue", "172.16.2.0/24", second),
                lease("blue", "172.16.3.0/24", first),
                lease("red", "172.16.1.0/24", "a"),
                lease("red", "172.16.2.0/24", second),
                lease("red", "172.16.3.0/24", first),
            ],
        );
        let d = desired_state(&v, &BTreeMap::new()).unwrap();
        assert_eq!(
            names(&d),
            vec![
                (first.into(), "blue".into(), TunnelType::Vxlan),
                (first.into(), "red".into(), TunnelType::Gre),
                (second.into(), "red".into(), TunnelType::Gre),
            ]
        );
        assert_eq!(d.skipped.len(), 1);
        assert_eq!(d.skipped[0].peer, second);
        assert!(d.skipped[0].reason.contains(&format!("collides with the one to {first} for blue")), "{:?}", d.skipped);
        assert_eq!(Ok(d), crate::reference::desired_state(&v, &BTreeMap::new()));
    }

    #[test]
    fn tunnels_are_symmetric_across_hosts() {
        // Property: a has a tunnel to b for t iff b has one to a for t, with swapped IPs.
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..200 {
            let v = random_view(&mut rng);
            let states: BTreeMap<String, DesiredState> = v
                .hosts
                .keys()
                .map(|h| {
                    let mut vv = v.clone();
                    vv.local = v.hosts[h].clone();
                    (h.clone(), desired_state(&vv, &BTreeMap::new()).unwrap())
                })
                .collect();
            for (h, d) in &states {
                for t in &d.tunnels {
                    let back = states[&t.peer]
                        .tunnels
                        .iter()
                        .find(|x| x.peer == *h && x.tenant == t.tenant)
                        .unwrap_or_else(|| panic!("{} has no tunnel back to {h} for {}", t.peer, t.tenant));
                    assert_eq!((back.remote_ip, back.local_ip), (t.local_ip, t.remote_ip));
                    assert_eq!(back.vni, t.vni);
                    assert_ne!(t.peer, *h);
                }
                let vlans: BTreeSet<u16> = d.tenant_vlans.values().copied().collect();
                assert_eq!(vlans.len(), d.tenant_vlans.len());
            }
        }
    }
}
