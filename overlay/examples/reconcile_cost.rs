//! The pure reconcile path at scale, for instruction counts under callgrind (`make bench` runs
//! it under `valgrind --tool=callgrind` and reads each `phase_*` function's inclusive Ir with
//! `callgrind_annotate --inclusive=yes`; instruction counts do not depend on machine load).
//!
//! ```sh
//! cargo build --release -p overlay --example reconcile_cost
//! target/release/examples/reconcile_cost [PEERS] [TENANTS]     # wall time per phase
//! valgrind --tool=callgrind target/release/examples/reconcile_cost
//! ```
//!
//! A view of `PEERS` (default 1000) peer hosts plus this one and `TENANTS` (default 20)
//! tenants, every host holding a lease and one container in every tenant. Phases:
//! - `phase_build_view`: the [`ClusterView`] (what the agent builds from its etcd cache);
//! - `phase_desired`: [`desired_state`] on a first start (no VLANs yet);
//! - `phase_bridges_steady`: `existing_vlans_from` + `desired_state` + [`diff`] against bridges
//!   that already match (the OVSDB half of an idle pass: an empty plan);
//! - `phase_flows`: [`desired_flows`] for the whole pipeline (a cold start's flows);
//! - `phase_flows_steady`: `desired_flows` + [`changes`] against a switch that holds them (the
//!   OpenFlow half of an idle pass: nothing to send);
//! - `phase_peer_join`: both halves with one more peer in every tenant;
//! - `phase_local_plug`: both halves after a container is plugged on this host.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use overlay::desired::{desired_state, ClusterView, DesiredState};
use overlay::diff::{diff, existing_vlans_from, simulate_apply, ObservedState, Plan};
use overlay::model::{HostRecord, MacAddr, SubnetLease, Tenant, TunnelType, Vni};
use overlay::pipeline::{
    changes, desired_flows, CookieMap, DesiredFlows, PipelineInput, PortInput, RemoteEndpoint, TenantInput,
};

const LOCAL: &str = "local-host";

fn host(i: usize) -> HostRecord {
    HostRecord {
        hostname: format!("peer-{i:05}"),
        underlay_ip: IpAddr::V4(Ipv4Addr::new(10, 64 + (i >> 16) as u8, (i >> 8) as u8, i as u8)),
        system_id: format!("sys-{i:05}"),
        machine_id: format!("machine-{i:05}"),
        tunnel_types: TunnelType::ALL.to_vec(),
        version: "bench".into(),
    }
}

/// Lease `index` of a tenant: 10.a.b.0/24 for index a*256+b (index 0 is this host's).
fn lease(tenant: &Tenant, index: usize, h: &HostRecord) -> SubnetLease {
    let subnet = format!("10.{}.{}.0/24", index >> 8, index & 0xff).parse().expect("subnet");
    SubnetLease { tenant: tenant.name().to_owned(), subnet, host: h.hostname.clone(), underlay_ip: h.underlay_ip }
}

/// The container of host `index` in `tenant`: .2 of its lease, a MAC from both.
fn container(tenant: usize, index: usize) -> (MacAddr, IpAddr) {
    let ip = IpAddr::V4(Ipv4Addr::new(10, (index >> 8) as u8, index as u8, 2));
    let mac = format!("02:5c:{:02x}:{:02x}:{:02x}:02", tenant, index >> 8, index & 0xff).parse().expect("mac");
    (mac, ip)
}

fn scale_view(peers: usize, tenants: usize) -> ClusterView {
    let local = HostRecord {
        hostname: LOCAL.into(),
        underlay_ip: "10.63.255.254".parse().expect("ip"),
        system_id: "sys-local".into(),
        machine_id: "machine-local".into(),
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

/// The pipeline's input as the agent gathers it: every peer's container in every tenant, and
/// `local_ports` containers plugged here (in the first tenant).
fn pipeline_input(view: &ClusterView, desired: &DesiredState, local_ports: usize) -> PipelineInput {
    let index: HashMap<&str, usize> =
        view.hosts.keys().filter(|h| *h != LOCAL).enumerate().map(|(i, h)| (h.as_str(), i + 1)).collect();
    let mut tenants = BTreeMap::new();
    for (t_index, t) in desired.tunnels.iter().enumerate() {
        let members = &desired.members[&t.tenant];
        let remote = members
            .iter()
            .map(|m| {
                let (mac, ip) = container(t_index, index[m.host.as_str()]);
                RemoteEndpoint { mac, ip, host: m.underlay_ip }
            })
            .collect();
        let local = if t_index == 0 {
            (0..local_ports).map(|p| IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10 + p as u8))).collect()
        } else {
            Vec::new()
        };
        tenants.insert(
            t.tenant.clone(),
            Arc::new(TenantInput {
                vlan: t.local_vlan,
                tunnel_port: Some(2 + t_index as u32),
                members: members.iter().map(|m| m.underlay_ip).collect(),
                remote,
                local,
                gateway: view.tenants[&t.tenant].gateway(),
                gateway_mac: Some(overlay::gateway::gateway_mac(view.tenants[&t.tenant].vni())),
            }),
        );
    }
    let ports = (0..local_ports)
        .map(|p| {
            let mac: MacAddr = format!("02:aa:00:00:00:{:02x}", p).parse().expect("mac");
            PortInput {
                ofport: 1000 + p as u32,
                endpoint: Some((mac, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10 + p as u8)))),
            }
        })
        .collect();
    PipelineInput { tun_patch: Some(1), tenants, ports, gateway_ports: Vec::new() }
}

/// What a switch holding `flows` has, by cookie, per bridge.
fn held(flows: &DesiredFlows) -> (CookieMap<()>, CookieMap<()>) {
    (flows.tun.iter().map(|e| (e.cookie, ())).collect(), flows.int.iter().map(|e| (e.cookie, ())).collect())
}

/// Flows to add and delete over both bridges.
fn flow_changes(flows: &DesiredFlows, held: &(CookieMap<()>, CookieMap<()>)) -> (usize, usize) {
    let (a, d) = changes(&flows.tun, &held.0);
    let (b, e) = changes(&flows.int, &held.1);
    (a.len() + b.len(), d.len() + e.len())
}

#[inline(never)]
fn phase_build_view(peers: usize, tenants: usize) -> ClusterView {
    scale_view(peers, tenants)
}

#[inline(never)]
fn phase_desired(view: &ClusterView) -> DesiredState {
    desired_state(view, &BTreeMap::new()).expect("desired state")
}

#[inline(never)]
fn phase_bridges_steady(view: &ClusterView, observed: &ObservedState) -> (DesiredState, Plan) {
    let desired = desired_state(view, &existing_vlans_from(observed)).expect("desired state");
    let plan = diff(&desired, observed, LOCAL);
    (desired, plan)
}

#[inline(never)]
fn phase_flows(view: &ClusterView, desired: &DesiredState, local_ports: usize) -> DesiredFlows {
    desired_flows(&pipeline_input(view, desired, local_ports))
}

#[inline(never)]
fn phase_flows_steady(
    view: &ClusterView,
    desired: &DesiredState,
    held: &(CookieMap<()>, CookieMap<()>),
) -> (usize, usize) {
    let flows = desired_flows(&pipeline_input(view, desired, 0));
    flow_changes(&flows, held)
}

#[inline(never)]
fn phase_peer_join(
    view: &ClusterView,
    observed: &ObservedState,
    held: &(CookieMap<()>, CookieMap<()>),
) -> (Plan, (usize, usize)) {
    black_box("phase_peer_join");
    let desired = desired_state(view, &existing_vlans_from(observed)).expect("desired state");
    let plan = diff(&desired, observed, LOCAL);
    let flows = desired_flows(&pipeline_input(view, &desired, 0));
    (plan, flow_changes(&flows, held))
}

#[inline(never)]
fn phase_local_plug(
    view: &ClusterView,
    observed: &ObservedState,
    held: &(CookieMap<()>, CookieMap<()>),
) -> (Plan, (usize, usize)) {
    black_box("phase_local_plug");
    let desired = desired_state(view, &existing_vlans_from(observed)).expect("desired state");
    let plan = diff(&desired, observed, LOCAL);
    let flows = desired_flows(&pipeline_input(view, &desired, 1));
    (plan, flow_changes(&flows, held))
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = black_box(f());
    println!("{what}: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    out
}

fn main() {
    let mut args = std::env::args().skip(1);
    let peers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let tenants: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let view = timed("phase_build_view", || phase_build_view(peers, tenants));
    let desired = timed("phase_desired", || phase_desired(&view));
    let cold = diff(&desired, &ObservedState::default(), LOCAL);
    let observed = simulate_apply(&ObservedState::default(), &cold);
    let (desired, plan) = timed("phase_bridges_steady", || phase_bridges_steady(&view, &observed));
    assert!(plan.is_empty(), "a matching state must give an empty plan: {plan:?}");
    let flows = timed("phase_flows", || phase_flows(&view, &desired, 0));
    let held = held(&flows);
    let idle = timed("phase_flows_steady", || phase_flows_steady(&view, &desired, &held));
    assert_eq!(idle, (0, 0), "an idle pass sends nothing");
    let mut joined = view.clone();
    let newcomer = host(peers + 1);
    for t in joined.tenants.values() {
        joined.leases.push(lease(t, peers + 1, &newcomer));
    }
    joined.hosts.insert(newcomer.hostname.clone(), newcomer);
    let (plan, (added, deleted)) = timed("phase_peer_join", || phase_peer_join(&joined, &observed, &held));
    assert!(plan.is_empty(), "a peer joining changes no port");
    assert!(added >= 4 * tenants && deleted == tenants, "a peer's flows, the floods replaced: +{added} -{deleted}");
    let (plan, (plugged, _)) = timed("phase_local_plug", || phase_local_plug(&view, &observed, &held));
    assert!(plan.is_empty() && plugged > 0, "a plug adds flows and no port");
    println!(
        "flows: {} on br-tun, {} on br-int; a peer join adds {added} and deletes {deleted}; a plug adds {plugged}",
        flows.tun.len(),
        flows.int.len(),
    );
}
