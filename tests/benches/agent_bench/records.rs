//! The etcd records of hosts the benchmarks only pretend: what a real agent on such a host
//! would have written for a lease and a container (same keys and JSON as the agent's).

use std::net::IpAddr;

use overlay::model::{iface_id, Endpoint, HostRecord, IpClaim, MacAddr, SubnetLease};

/// `host`'s lease of `subnet` (a CIDR) in `tenant`.
pub(crate) fn lease_kv(prefix: &str, tenant: &str, subnet: &str, host: &HostRecord) -> (String, Vec<u8>) {
    let subnet = subnet.parse().expect("subnet");
    let lease =
        SubnetLease { tenant: tenant.into(), subnet, host: host.hostname.clone(), underlay_ip: host.underlay_ip };
    (format!("{prefix}/subnets/{tenant}/{}", overlay::model::lease_key_segment(&subnet)), lease.to_json())
}

/// The endpoint record and the address claim of `container_id`'s eth0 on `host`.
pub(crate) fn endpoint_kvs(
    prefix: &str,
    tenant: &str,
    host: &HostRecord,
    container_id: &str,
    ip: IpAddr,
    mac: MacAddr,
) -> [(String, Vec<u8>); 2] {
    let ep = Endpoint {
        tenant: tenant.into(),
        container_id: container_id.into(),
        ifname: "eth0".into(),
        machine_id: host.machine_id.clone(),
        host: host.hostname.clone(),
        ip,
        mac,
        iface_id: iface_id(container_id, "eth0"),
        port: overlay::naming::container_port_name(container_id, "eth0"),
        owner: None,
        publish: vec![],
    };
    let claim = IpClaim {
        container: container_id.into(),
        host: host.hostname.clone(),
        ifname: "eth0".into(),
        machine_id: host.machine_id.clone(),
    };
    [
        (format!("{prefix}/endpoints/{tenant}/{container_id}/eth0"), ep.to_json()),
        (format!("{prefix}/ips/{tenant}/{ip}"), claim.to_json()),
    ]
}
