//! What `status` and `/metrics` answer, read in place from the agent's state.

use std::sync::atomic::{AtomicU64, Ordering};

use overlay::model::{HostRecord, Tenant};
use overlay_api::{
    Counters, EndpointInfo, FlowsStatus, GatewayStatus, HostStatus, TenantInfo, TenantStatus, TunnelStatus,
};

use crate::agent::Agent;
use crate::registry::ClusterCache;

/// A tenant as the API shows it.
pub fn tenant_info(t: &Tenant) -> TenantInfo {
    TenantInfo {
        name: t.name().to_owned(),
        vni: t.vni().get(),
        cidr: t.cidr().to_string(),
        tunnel: t.tunnel().as_str().to_owned(),
        subnet_len: t.subnet_len(),
        gateway: t.gateway().to_string(),
        egress: t.egress(),
        control_plane_allow: t.control_plane_allow().iter().map(ToString::to_string).collect(),
    }
}

/// A router namespace as the API shows it.
pub fn gateway_status(r: &overlay::gateway::RouterSpec) -> GatewayStatus {
    GatewayStatus {
        tenant: r.tenant.clone(),
        vni: r.vni.get(),
        address: format!("{}/{}", r.gateway, r.prefix),
        mac: r.mac.to_string(),
        transit: r.transit.router.to_string(),
        egress: r.egress,
        published: r
            .forwards
            .iter()
            .map(|f| format!("{}/{} -> {}:{}", f.host_port, f.protocol, f.container, f.port))
            .collect(),
    }
}

/// An endpoint record as the API shows it.
pub fn endpoint_info(e: &overlay::model::Endpoint) -> EndpointInfo {
    EndpointInfo {
        container_id: e.container_id.clone(),
        ifname: e.ifname.clone(),
        tenant: e.tenant.clone(),
        ip: e.ip,
        mac: e.mac.to_string(),
        port: e.port.clone(),
        iface_id: e.iface_id.clone(),
        owner: e.owner.clone(),
        publish: e.publish.iter().map(ToString::to_string).collect(),
    }
}

/// The `status` answer ([`overlay_api::Status`]), as JSON text. Written straight from the
/// agent's state into one buffer: as a `serde_json::Value`, an answer for 1,000 peers left
/// several MiB resident after each call.
pub fn status_json(agent: &Agent) -> String {
    use serde::ser::{SerializeMap, SerializeSeq};
    struct Peers<'a>(&'a ClusterCache, &'a str, &'a std::collections::BTreeMap<std::net::IpAddr, usize>);
    impl serde::Serialize for Peers<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(None)?;
            for h in self.0.hosts.values().filter(|h| h.hostname != self.1) {
                let flows = self.2.get(&h.underlay_ip).copied().unwrap_or(0);
                seq.serialize_element(&Peer(h, self.0.alive.contains(&h.hostname), flows))?;
            }
            seq.end()
        }
    }
    struct Peer<'a>(&'a HostRecord, bool, usize);
    impl serde::Serialize for Peer<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(Some(4))?;
            m.serialize_entry("host", &self.0.hostname)?;
            m.serialize_entry("underlay_ip", &self.0.underlay_ip)?;
            m.serialize_entry("alive", &self.1)?;
            m.serialize_entry("flows", &self.2)?;
            m.end()
        }
    }
    #[derive(serde::Serialize)]
    struct Status<'a> {
        host: HostStatus,
        peers: Peers<'a>,
        tenants: Vec<TenantStatus>,
        tunnels: Vec<TunnelStatus>,
        flows: FlowsStatus,
        endpoints: Vec<EndpointInfo>,
        gateways: Vec<GatewayStatus>,
        gateway_skipped: &'a [String],
        skipped_peers: &'a [String],
        conflicts: &'a [String],
        last_error: &'a Option<String>,
        last_reconcile_ms_ago: Option<u64>,
        counters: Counters,
    }
    let me = &agent.host.me;
    // Read in place: copying the cache and the tunnel list for this cost tens of MiB at 20,000
    // tunnels. Neither is held across an await.
    let cache = agent.cluster.borrow();
    let last = agent.last.lock().expect("last lock");
    let tenants = cache
        .tenants
        .values()
        .map(|t| TenantStatus {
            tenant: tenant_info(t),
            local_vlan: last.report.tenant_vlans.get(t.name()).copied(),
            subnet: cache.leases.held_by(t.name(), &me.hostname).map(|l| l.subnet.to_string()),
            flows: last.report.tenant_flows.get(t.name()).copied().unwrap_or(0),
        })
        .collect();
    let status = Status {
        host: HostStatus {
            name: me.hostname.clone(),
            underlay_ip: me.underlay_ip,
            machine_id: me.machine_id.clone(),
            version: me.version.clone(),
            ovsdb_connected: agent.ovs.is_connected(),
            registered: agent.host.registration().is_some() && agent.host.conflict().is_none(),
            identity_conflict: agent.host.conflict(),
            waiting_to_register: agent.host.waiting(),
        },
        peers: Peers(&cache, &me.hostname, &last.report.peer_flows),
        tenants,
        tunnels: last
            .report
            .tunnels
            .iter()
            .map(|t| TunnelStatus {
                name: t.name.clone(),
                tenant: t.tenant.clone(),
                vni: t.vni,
                kind: t.kind.to_owned(),
                local_vlan: t.local_vlan,
                ofport: t.ofport,
                peers: t.peers,
            })
            .collect(),
        flows: FlowsStatus { tun: last.report.flows.0, int: last.report.flows.1, pending: last.error.is_some() },
        endpoints: cache.endpoints.of_host(&me.hostname).map(|(_, e)| endpoint_info(e)).collect(),
        gateways: last.gateways.iter().map(gateway_status).collect(),
        gateway_skipped: &last.gateway_skipped,
        skipped_peers: &last.report.skipped,
        conflicts: &last.report.conflicts,
        last_error: &last.error,
        last_reconcile_ms_ago: last.at.map(|a| a.elapsed().as_millis() as u64),
        counters: Counters {
            reconciles: agent.metrics.reconciles.load(Ordering::Relaxed),
            ovsdb_transactions: agent.ovs.transactions(),
            openflow_bundles: agent.dataplane.flows.bundles_sent(),
            errors: agent.metrics.errors.load(Ordering::Relaxed),
            reaped: agent.plugs.reaped.load(Ordering::Relaxed),
        },
    };
    // A peer is about 90 bytes of JSON: sized up front, the buffer is allocated once (and, when
    // large, mapped on its own and unmapped when dropped).
    let estimate = 4096 + 200 * last.report.tunnels.len() + 120 * cache.hosts.len();
    let mut out = Vec::with_capacity(estimate);
    serde_json::to_writer(&mut out, &status).expect("the status serializes to JSON");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Prometheus text exposition.
pub fn metrics_text(agent: &Agent) -> String {
    let m = &agent.metrics;
    let g = |v: &AtomicU64| v.load(Ordering::Relaxed);
    let metric = |out: &mut String, name: &str, kind: &str, help: &str, value: u64| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
    };
    let mut out = String::with_capacity(2048);
    metric(&mut out, "overlay_reconciles_total", "counter", "Reconcile passes.", g(&m.reconciles));
    metric(
        &mut out,
        "overlay_ovsdb_transactions_total",
        "counter",
        "OVSDB transactions sent.",
        agent.ovs.transactions(),
    );
    metric(&mut out, "overlay_reconcile_errors_total", "counter", "Failed reconcile passes.", g(&m.errors));
    metric(
        &mut out,
        "overlay_openflow_bundles_total",
        "counter",
        "OpenFlow bundles sent.",
        agent.dataplane.flows.bundles_sent(),
    );
    metric(&mut out, "overlay_peers", "gauge", "Peer hosts this host tunnels to.", g(&m.peers));
    metric(
        &mut out,
        "overlay_tunnels",
        "gauge",
        "Tunnel ports (one per tenant this host takes part in).",
        g(&m.tunnels),
    );
    metric(&mut out, "overlay_flows", "gauge", "Flows the agent holds on its two bridges.", g(&m.flows));
    metric(
        &mut out,
        "overlay_ovsdb_connected",
        "gauge",
        "1 while the OVSDB session is up.",
        u64::from(agent.ovs.is_connected()),
    );
    metric(
        &mut out,
        "overlay_identity_conflict",
        "gauge",
        "1 while another machine holds this agent's hostname (status says which).",
        u64::from(agent.host.conflict().is_some()),
    );
    metric(
        &mut out,
        "overlay_containers_reaped_total",
        "counter",
        "Container interfaces unplugged by the agent because their veth went away.",
        g(&agent.plugs.reaped),
    );
    out
}
