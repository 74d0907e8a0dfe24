//! Desired state: what the bridges of this host should hold, computed from the cluster view
//! alone. Level-triggered: the same view always gives the same state, whatever events led to
//! it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::error::DesiredError;
use crate::model::{HostRecord, SubnetLease, Tenant, TunnelType, Vni};
use crate::naming::{tunnel_port_name, PATCH_INT_TO_TUN, PATCH_TUN_TO_INT};
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
    /// Port and interface name (see [`tunnel_port_name`]).
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

    let mut members: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for lease in &view.leases {
        if view.tenants.contains_key(&lease.tenant) {
            members.entry(lease.tenant.as_str()).or_default().insert(lease.host.as_str());
        }
    }
    let local_tenants: BTreeSet<String> =
        members.iter().filter(|(_, hosts)| hosts.contains(local)).map(|(t, _)| (*t).to_owned()).collect();
    let tenant_vlans = allocate_vlans(&local_tenants, existing_vlans)?;

    let mut tunnels: BTreeMap<String, TunnelPortSpec> = BTreeMap::new();
    let mut skipped = BTreeSet::new();
    let mut skip = |peer: &str, reason: String| {
        skipped.insert(SkippedPeer { peer: peer.to_owned(), reason });
    };
    for (tenant_name, &local_vlan) in &tenant_vlans {
        let (Some(tenant), Some(hosts)) = (view.tenants.get(tenant_name), members.get(tenant_name.as_str())) else {
            continue;
        };
        for &peer in hosts.iter().filter(|&&h| h != local) {
            let Some(record) = view.hosts.get(peer) else {
                skip(peer, "no host record (expired or deleted); its leases are stale".into());
                continue;
            };
            let remote_ip = record.underlay_ip;
            if remote_ip.is_ipv4() != local_ip.is_ipv4() {
                skip(peer, format!("underlay IP {remote_ip} is not of the same family as ours ({local_ip})"));
                continue;
            }
            if remote_ip == local_ip {
                skip(peer, format!("claims our own underlay IP {local_ip}"));
                continue;
            }
            let name = tunnel_port_name(tenant.tunnel(), peer, tenant.vni());
            if let Some(other) = tunnels.get(&name) {
                // 48-bit name hash collision: keep the first, say so.
                skip(
                    peer,
                    format!("tunnel port name {name} collides with the one to {} for {}", other.peer, other.tenant),
                );
                continue;
            }
            tunnels.insert(
                name.clone(),
                TunnelPortSpec {
                    name,
                    tenant: tenant_name.clone(),
                    vni: tenant.vni(),
                    peer: peer.to_owned(),
                    remote_ip,
                    local_ip,
                    tunnel: tenant.tunnel(),
                    local_vlan,
                },
            );
        }
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
        tunnels: tunnels.into_values().collect(),
        tenant_vlans,
        skipped: skipped.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

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
