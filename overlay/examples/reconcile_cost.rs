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
//! A view of `PEERS` (default 1000) peer hosts plus this one, `TENANTS` (default 20) tenants,
//! every host holding a lease in every tenant: PEERS x TENANTS tunnel ports. Phases:
//! - `phase_build_view`: the [`ClusterView`] itself (what the agent clones from its etcd cache);
//! - `phase_desired`: [`desired_state`] with no existing VLANs (first start);
//! - `phase_diff_cold`: [`diff`] against empty bridges: every port is created;
//! - `phase_steady`: `existing_vlans_from` + `desired_state` + `diff` against bridges that
//!   already match (an idle reconcile pass: the plan is empty);
//! - `phase_peer_join`: the same with one more peer in every tenant (TENANTS ports created);
//! - `phase_peer_join_since`: that join as the agent handles it when OVSDB has not changed
//!   since the idle pass: `desired_state` (VLANs known) + `diff_since` the idle pass's state.

use std::collections::BTreeMap;
use std::hint::black_box;

use overlay::desired::{desired_state, ClusterView, DesiredState};
use overlay::diff::{diff, diff_since, existing_vlans_from, simulate_apply, ObservedState, Plan};

#[path = "shared/scale_view.rs"]
mod scale_view;
use scale_view::{host, lease, scale_args, scale_view, timed, LOCAL};

#[inline(never)]
fn phase_build_view(peers: usize, tenants: usize) -> ClusterView {
    scale_view(peers, tenants)
}

#[inline(never)]
fn phase_desired(view: &ClusterView) -> DesiredState {
    desired_state(view, &BTreeMap::new()).expect("desired state")
}

#[inline(never)]
fn phase_diff_cold(desired: &DesiredState) -> Plan {
    diff(desired, &ObservedState::default(), LOCAL)
}

#[inline(never)]
fn phase_steady(view: &ClusterView, observed: &ObservedState) -> Plan {
    let desired = desired_state(view, &existing_vlans_from(observed)).expect("desired state");
    diff(&desired, observed, LOCAL)
}

#[inline(never)]
fn phase_peer_join(view: &ClusterView, observed: &ObservedState) -> Plan {
    // The same work as phase_steady, not a call to it: each phase's inclusive count must be
    // its own (and the marker keeps the linker from folding the two identical functions).
    black_box("phase_peer_join");
    let desired = desired_state(view, &existing_vlans_from(observed)).expect("desired state");
    diff(&desired, observed, LOCAL)
}

#[inline(never)]
fn phase_peer_join_since(
    view: &ClusterView,
    verified: &DesiredState,
    vlans: &BTreeMap<String, u16>,
    observed: &ObservedState,
) -> Plan {
    let desired = desired_state(view, vlans).expect("desired state");
    diff_since(verified, &[], &desired, observed, LOCAL).expect("same bridges")
}

fn main() {
    let (peers, tenants) = scale_args();
    let view = timed("phase_build_view", || phase_build_view(peers, tenants));
    let desired = timed("phase_desired", || phase_desired(&view));
    let cold = timed("phase_diff_cold", || phase_diff_cold(&desired));
    assert_eq!(cold.create_tunnels.len(), peers * tenants, "every tunnel");
    assert_eq!(cold.create_ports.len(), 2, "the two patch ports");
    let observed = simulate_apply(&ObservedState::default(), &cold.into_rows(&desired.tun_bridge.name, LOCAL));
    let steady = timed("phase_steady", || phase_steady(&view, &observed));
    assert!(steady.is_empty(), "a matching state must give an empty plan: {steady:?}");
    let mut joined = view.clone();
    let newcomer = host(peers + 1);
    for (i, t) in joined.tenants.values().enumerate() {
        joined.leases.push(lease(t, peers + 1 + i, &newcomer));
    }
    joined.hosts.insert(newcomer.hostname.clone(), newcomer);
    let join = timed("phase_peer_join", || phase_peer_join(&joined, &observed));
    assert_eq!(join.create_tunnels.len(), tenants, "one port per tenant for the new peer");
    assert!(join.update_ports.is_empty() && join.delete_ports.is_empty());
    let vlans = existing_vlans_from(&observed);
    let verified = desired_state(&view, &vlans).expect("desired state");
    let since = timed("phase_peer_join_since", || phase_peer_join_since(&joined, &verified, &vlans, &observed));
    assert_eq!(since, join, "diff_since must give the full diff's plan");
    println!("tunnel ports: {}; peer join creates {}", desired.tunnels.len(), join.create_tunnels.len());
}
