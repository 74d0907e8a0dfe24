//! The cluster the scale examples measure: `peers` peer hosts and the local one, `tenants`
//! tenants (VXLAN and GRE alternating), every host holding a /24 lease in every tenant.
//! Included with `#[path]` by `overlay/examples/reconcile_cost.rs` and
//! `agent/examples/pass_cost.rs`, so both measure the same view.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use overlay::desired::ClusterView;
use overlay::model::{HostRecord, SubnetLease, Tenant, TunnelType, Vni};

/// The local host's name.
pub const LOCAL: &str = "local-host";

pub fn host(i: usize) -> HostRecord {
    HostRecord {
        hostname: format!("peer-{i:05}"),
        underlay_ip: IpAddr::V4(Ipv4Addr::new(10, 64 + (i >> 16) as u8, (i >> 8) as u8, i as u8)),
        system_id: format!("sys-{i:05}"),
        machine_id: String::new(),
        tunnel_types: TunnelType::ALL.to_vec(),
        version: "bench".into(),
    }
}

pub fn lease(tenant: &Tenant, index: usize, h: &HostRecord) -> SubnetLease {
    let subnet = format!("10.{}.{}.0/24", index >> 8, index & 0xff).parse().expect("subnet");
    SubnetLease { tenant: tenant.name().to_owned(), subnet, host: h.hostname.clone(), underlay_ip: h.underlay_ip }
}

/// The view of `peers` peers and `tenants` tenants.
pub fn scale_view(peers: usize, tenants: usize) -> ClusterView {
    let local = HostRecord {
        hostname: LOCAL.into(),
        underlay_ip: "10.63.255.254".parse().expect("ip"),
        system_id: "sys-local".into(),
        machine_id: String::new(),
        tunnel_types: TunnelType::ALL.to_vec(),
        version: "bench".into(),
    };
    let mut hosts: BTreeMap<String, HostRecord> = (1..=peers).map(|i| (host(i).hostname.clone(), host(i))).collect();
    hosts.insert(LOCAL.into(), local.clone());
    let tenants: BTreeMap<String, Tenant> = (0..tenants)
        .map(|t| {
            let tunnel = if t % 2 == 0 { TunnelType::Vxlan } else { TunnelType::Gre };
            let vni = Vni::new(1000 + t as u32).expect("vni");
            let tenant = Tenant::new(&format!("tenant-{t:02}"), vni, "10.0.0.0/8".parse().expect("cidr"), tunnel, 24)
                .expect("tenant");
            (tenant.name().to_owned(), tenant)
        })
        .collect();
    let mut leases = Vec::new();
    for t in tenants.values() {
        leases.push(lease(t, 0, &local));
        for i in 1..=peers {
            leases.push(lease(t, i, &hosts[&host(i).hostname]));
        }
    }
    ClusterView {
        local,
        hosts,
        tenants,
        leases,
        datapath_type: "netdev".into(),
        int_bridge: "br-int".into(),
        tun_bridge: "br-tun".into(),
    }
}

/// `PEERS TENANTS` from the command line, 1,000 and 20 when absent.
pub fn scale_args() -> (usize, usize) {
    let mut args = std::env::args().skip(1);
    let peers = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let tenants = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    (peers, tenants)
}

/// Runs `f`, printing its wall time; `black_box` keeps the result from being optimised away.
pub fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = black_box(f());
    println!("{what}: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    out
}
