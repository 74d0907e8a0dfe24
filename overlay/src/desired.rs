//! Desired state: what the bridges of this host should hold in OVSDB, and who this host's
//! peers are in each tenant, computed from the cluster view alone. Level-triggered: the same
//! view always gives the same state, whatever events led to it.
//!
//! OVSDB holds the two bridges (both `fail_mode=secure`: only the agent's flows forward), the
//! patch link between them and one tunnel port per tenant this host takes part in
//! (`remote_ip=flow`, `key` = the tenant's VNI). Which peer a frame goes to is a flow's choice
//! ([`crate::pipeline`]), so the port count does not grow with the cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::error::DesiredError;
use crate::model::{HostRecord, SubnetLease, Tenant, TunnelType, Vni};
use crate::naming::{tenant_tunnel_port_name, PATCH_INT_TO_TUN, PATCH_TUN_TO_INT};
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

/// The `fail_mode` of both bridges: without the agent's flows, nothing is forwarded (a bridge
/// that lost its flows, e.g. at an ovs-vswitchd restart, fails closed until the agent puts
/// them back).
pub const FAIL_MODE: &str = "secure";

/// A bridge that should exist.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BridgeSpec {
    /// Bridge name.
    pub name: String,
    /// `Bridge.datapath_type`.
    pub datapath_type: String,
    /// `Bridge.fail_mode`.
    pub fail_mode: String,
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

/// The tunnel port of one tenant on the tunnel bridge.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TunnelPortSpec {
    /// Port and interface name ([`crate::naming::tenant_tunnel_port_name`]).
    pub name: String,
    /// The tenant.
    pub tenant: String,
    /// `options:key`.
    pub vni: Vni,
    /// `options:local_ip`: ours.
    pub local_ip: IpAddr,
    /// `Interface.type`.
    pub tunnel: TunnelType,
    /// The tenant's VLAN on this host (recorded on the port, so a restart keeps it).
    pub local_vlan: u16,
}

/// A peer this host tunnels to in a tenant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    /// Its hostname.
    pub host: String,
    /// Its underlay address, from its host record.
    pub underlay_ip: IpAddr,
}

/// A peer the agent cannot tunnel to, with a reason worth logging.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SkippedPeer {
    /// The peer hostname.
    pub peer: String,
    /// Why, in words.
    pub reason: String,
}

/// Everything the diff and the flow pipeline need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredState {
    /// The integration bridge.
    pub int_bridge: BridgeSpec,
    /// The tunnel bridge; tunnel ports live here.
    pub tun_bridge: BridgeSpec,
    /// The two patch ports (br-int side first).
    pub patch_ports: Vec<PatchPortSpec>,
    /// One tunnel port per tenant this host takes part in, sorted by name.
    pub tunnels: Vec<TunnelPortSpec>,
    /// Local VLAN of every tenant this host takes part in (the plug path tags container
    /// ports with these).
    pub tenant_vlans: BTreeMap<String, u16>,
    /// The peers of each tenant this host takes part in, sorted by host.
    pub members: BTreeMap<String, Vec<Member>>,
    /// Peers left out, sorted and without duplicates.
    pub skipped: Vec<SkippedPeer>,
}

impl DesiredState {
    /// How many distinct peers this host tunnels to.
    pub fn peer_count(&self) -> usize {
        self.members.values().flatten().map(|m| m.host.as_str()).collect::<BTreeSet<_>>().len()
    }
}

/// Computes the desired state of this host's bridges.
///
/// A host takes part in a tenant iff it holds a lease in it. Leases of unknown tenants are
/// ignored (the tenant was deleted). Peers without a host record are left out even if a stale
/// lease remains: the host key is the authority on whether a host exists, and its underlay IP
/// is taken from there. Peers whose underlay IP family differs from ours, or that claim our
/// own underlay IP, are reported in `skipped`. `existing_vlans` comes from
/// [`crate::diff::existing_vlans_from`], so tags survive restarts.
pub fn desired_state(view: &ClusterView, existing_vlans: &BTreeMap<String, u16>) -> Result<DesiredState, DesiredError> {
    if view.int_bridge.is_empty() || view.tun_bridge.is_empty() || view.int_bridge == view.tun_bridge {
        return Err(DesiredError::BridgeNames { int: view.int_bridge.clone(), tun: view.tun_bridge.clone() });
    }
    let local = view.local.hostname.as_str();
    let local_ip = view.local.underlay_ip;

    // The hosts holding a lease in each existing tenant, sorted, each once. (Sorted vectors,
    // not sets: at 1,000 hosts x 20 tenants this runs at every pass.)
    let mut holders: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for lease in view.leases.iter().filter(|l| view.tenants.contains_key(&l.tenant)) {
        holders.entry(lease.tenant.as_str()).or_default().push(lease.host.as_str());
    }
    for hosts in holders.values_mut() {
        hosts.sort_unstable();
        hosts.dedup();
    }
    let local_tenants: BTreeSet<String> =
        holders.iter().filter(|(_, hosts)| hosts.binary_search(&local).is_ok()).map(|(t, _)| (*t).to_owned()).collect();
    let records: std::collections::HashMap<&str, &HostRecord> =
        view.hosts.iter().map(|(name, record)| (name.as_str(), record)).collect();
    let tenant_vlans = allocate_vlans(&local_tenants, existing_vlans)?;

    let mut skipped = BTreeSet::new();
    let mut members = BTreeMap::new();
    let mut tunnels = Vec::with_capacity(tenant_vlans.len());
    for (name, &local_vlan) in &tenant_vlans {
        let tenant = &view.tenants[name];
        let mut peers = Vec::new();
        for &peer in holders[name.as_str()].iter().filter(|&&h| h != local) {
            let Some(record) = records.get(peer) else {
                skipped.insert(SkippedPeer {
                    peer: peer.to_owned(),
                    reason: "no host record (expired or deleted); its leases are stale".into(),
                });
                continue;
            };
            let ip = record.underlay_ip;
            let reason = if ip.is_ipv4() != local_ip.is_ipv4() {
                format!("underlay IP {ip} is not of the same family as ours ({local_ip})")
            } else if ip == local_ip {
                format!("claims our own underlay IP {local_ip}")
            } else {
                peers.push(Member { host: peer.to_owned(), underlay_ip: ip });
                continue;
            };
            skipped.insert(SkippedPeer { peer: peer.to_owned(), reason });
        }
        members.insert(name.clone(), peers);
        tunnels.push(TunnelPortSpec {
            name: tenant_tunnel_port_name(tenant.tunnel(), tenant.vni()),
            tenant: name.clone(),
            vni: tenant.vni(),
            local_ip,
            tunnel: tenant.tunnel(),
            local_vlan,
        });
    }
    tunnels.sort_by(|a, b| a.name.cmp(&b.name));

    let bridge = |name: &str| BridgeSpec {
        name: name.to_owned(),
        datapath_type: view.datapath_type.clone(),
        fail_mode: FAIL_MODE.to_owned(),
    };
    Ok(DesiredState {
        int_bridge: bridge(&view.int_bridge),
        tun_bridge: bridge(&view.tun_bridge),
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
        members,
        skipped: skipped.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    fn member_hosts(d: &DesiredState, tenant: &str) -> Vec<String> {
        d.members[tenant].iter().map(|m| m.host.clone()).collect()
    }

    #[test]
    fn empty_cluster_gives_bridges_and_patches_only() {
        let v = view("a", &[host("a", "10.0.0.1")], &[], &[]);
        let d = desired_state(&v, &BTreeMap::new()).unwrap();
        let secure =
            |name: &str| BridgeSpec { name: name.into(), datapath_type: "netdev".into(), fail_mode: "secure".into() };
        assert_eq!(d.int_bridge, secure("br-int"));
        assert_eq!(d.tun_bridge, secure("br-tun"));
        assert_eq!(
            d.patch_ports,
            vec![
                PatchPortSpec { name: "patch-tun".into(), bridge: "br-int".into(), peer: "patch-int".into() },
                PatchPortSpec { name: "patch-int".into(), bridge: "br-tun".into(), peer: "patch-tun".into() },
            ]
        );
        assert!(d.tunnels.is_empty() && d.tenant_vlans.is_empty() && d.skipped.is_empty() && d.members.is_empty());
    }

    #[test]
    fn one_tunnel_port_per_tenant_whatever_the_peers() {
        let d = desired_state(&three_hosts("a"), &BTreeMap::new()).unwrap();
        let expected: BTreeMap<String, u16> = [("blue".into(), 1), ("red".into(), 2)].into_iter().collect();
        assert_eq!(d.tenant_vlans, expected);
        assert_eq!(
            d.tunnels,
            vec![
                TunnelPortSpec {
                    name: "tun-gr-200".into(),
                    tenant: "red".into(),
                    vni: Vni::new(200).unwrap(),
                    local_ip: "10.0.0.1".parse().unwrap(),
                    tunnel: TunnelType::Gre,
                    local_vlan: 2,
                },
                TunnelPortSpec {
                    name: "tun-vx-100".into(),
                    tenant: "blue".into(),
                    vni: Vni::new(100).unwrap(),
                    local_ip: "10.0.0.1".parse().unwrap(),
                    tunnel: TunnelType::Vxlan,
                    local_vlan: 1,
                },
            ]
        );
        assert_eq!(member_hosts(&d, "blue"), ["b", "c"]);
        assert_eq!(member_hosts(&d, "red"), ["c"]);
        assert_eq!(d.members["red"][0].underlay_ip, "10.0.0.3".parse::<IpAddr>().unwrap());
        assert_eq!(d.peer_count(), 2);
    }

    #[test]
    fn a_host_without_a_lease_takes_no_part() {
        // b holds no red lease: no red port and no red VLAN on b.
        let d = desired_state(&three_hosts("b"), &BTreeMap::new()).unwrap();
        assert_eq!(d.tunnels.iter().map(|t| t.tenant.as_str()).collect::<Vec<_>>(), ["blue"]);
        assert_eq!(d.tenant_vlans.keys().collect::<Vec<_>>(), ["blue"]);
        assert_eq!(member_hosts(&d, "blue"), ["a", "c"]);
    }

    #[test]
    fn several_leases_of_one_peer_make_it_one_member() {
        let mut v = three_hosts("a");
        v.leases.push(lease("blue", "172.16.4.0/24", "b"));
        v.leases.push(lease("blue", "172.16.5.0/24", "a"));
        let d = desired_state(&v, &BTreeMap::new()).unwrap();
        assert_eq!(member_hosts(&d, "blue"), ["b", "c"]);
        assert_eq!(d.tunnels.len(), 2);
    }

    #[test]
    fn peer_without_record_is_skipped_despite_stale_lease() {
        let mut v = three_hosts("a");
        v.hosts.remove("c");
        let d = desired_state(&v, &BTreeMap::new()).unwrap();
        assert_eq!(member_hosts(&d, "blue"), ["b"]);
        assert!(d.members["red"].is_empty());
        assert_eq!(d.skipped.len(), 1, "one entry per peer and reason: {:?}", d.skipped);
        assert_eq!(d.skipped[0].peer, "c");
        // The local host still takes part in red (its own lease), so red keeps its VLAN and port.
        assert!(d.tenant_vlans.contains_key("red") && d.tunnels.iter().any(|t| t.tenant == "red"));
    }

    #[test]
    fn leases_of_deleted_tenants_are_ignored() {
        let mut v = three_hosts("a");
        v.tenants.remove("red");
        let d = desired_state(&v, &BTreeMap::new()).unwrap();
        assert!(d.tunnels.iter().all(|t| t.tenant == "blue"));
        assert!(!d.tenant_vlans.contains_key("red") && !d.members.contains_key("red"));
    }

    #[test]
    fn underlay_family_mismatch_and_our_own_ip_are_skipped() {
        let mut v = three_hosts("a");
        v.hosts.insert("b".into(), host("b", "fd00::2"));
        v.hosts.insert("c".into(), host("c", "10.0.0.1"));
        let d = desired_state(&v, &BTreeMap::new()).unwrap();
        assert!(d.members.values().all(Vec::is_empty));
        assert_eq!(d.skipped.iter().map(|s| s.peer.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        assert!(d.skipped[0].reason.contains("fd00::2") && d.skipped[1].reason.contains("our own"));
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
        assert_eq!(d.tunnels[0].local_ip, "fd00::1".parse::<IpAddr>().unwrap());
        assert_eq!(d.members["blue"][0].underlay_ip, "fd00::2".parse::<IpAddr>().unwrap());
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
        v.int_bridge.clear();
        assert!(desired_state(&v, &BTreeMap::new()).is_err());
    }

    #[test]
    fn membership_is_symmetric_across_hosts() {
        for (a, b) in [("a", "b"), ("a", "c"), ("b", "c")] {
            for t in ["blue", "red"] {
                let from_a = desired_state(&three_hosts(a), &BTreeMap::new()).unwrap();
                let from_b = desired_state(&three_hosts(b), &BTreeMap::new()).unwrap();
                let a_sees_b = from_a.members.get(t).is_some_and(|m| m.iter().any(|m| m.host == b));
                let b_sees_a = from_b.members.get(t).is_some_and(|m| m.iter().any(|m| m.host == a));
                assert_eq!(a_sees_b, b_sees_a, "{a} and {b} disagree on {t}");
            }
        }
    }
}
