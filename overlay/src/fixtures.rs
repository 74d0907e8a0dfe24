//! Test fixtures shared by the desired-state and diff tests.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::desired::ClusterView;
use crate::model::{HostRecord, SubnetLease, Tenant, TunnelType, Vni};

pub(crate) fn host(name: &str, ip: &str) -> HostRecord {
    HostRecord {
        hostname: name.into(),
        underlay_ip: ip.parse().unwrap(),
        system_id: format!("sys-{name}"),
        machine_id: format!("m-{name}"),
        tunnel_types: TunnelType::ALL.to_vec(),
        version: "test".into(),
    }
}

pub(crate) fn tenant(name: &str, vni: u32, cidr: &str, tunnel: TunnelType) -> Tenant {
    Tenant::new(name, Vni::new(vni).unwrap(), cidr.parse().unwrap(), tunnel, 24).unwrap()
}

pub(crate) fn lease(tenant: &str, subnet: &str, host: &str) -> SubnetLease {
    SubnetLease {
        tenant: tenant.into(),
        subnet: subnet.parse().unwrap(),
        host: host.into(),
        underlay_ip: "192.0.2.1".parse::<IpAddr>().unwrap(),
    }
}

/// A view from `local`'s point of view; `hosts` must contain `local`.
pub(crate) fn view(local: &str, hosts: &[HostRecord], tenants: &[Tenant], leases: &[SubnetLease]) -> ClusterView {
    let hosts: BTreeMap<String, HostRecord> = hosts.iter().map(|h| (h.hostname.clone(), h.clone())).collect();
    ClusterView {
        local: hosts[local].clone(),
        hosts,
        tenants: tenants.iter().map(|t| (t.name().to_owned(), t.clone())).collect(),
        leases: leases.to_vec(),
        datapath_type: "netdev".into(),
        int_bridge: "br-int".into(),
        tun_bridge: "br-tun".into(),
    }
}

/// Three hosts; blue (VXLAN) on all three, red (GRE) on a and c.
pub(crate) fn three_hosts(local: &str) -> ClusterView {
    view(
        local,
        &[host("a", "10.0.0.1"), host("b", "10.0.0.2"), host("c", "10.0.0.3")],
        &[
            tenant("blue", 100, "172.16.0.0/16", TunnelType::Vxlan),
            tenant("red", 200, "172.16.0.0/16", TunnelType::Gre),
        ],
        &[
            lease("blue", "172.16.1.0/24", "a"),
            lease("blue", "172.16.2.0/24", "b"),
            lease("blue", "172.16.3.0/24", "c"),
            lease("red", "172.16.1.0/24", "a"),
            lease("red", "172.16.9.0/24", "c"),
        ],
    )
}

/// xorshift64: deterministic pseudo-random numbers for property loops.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
