//! The data plane of one tunnel port per (peer, tenant) on the tunnel bridge, built through
//! OVSDB alone: desired state from the cluster view ([`overlay::desired`]), a diff against the
//! replica ([`overlay::diff`]), and at most one transaction per event.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use overlay::desired::{desired_state, ClusterView, DesiredState};
use overlay::diff::{diff, diff_since, existing_vlans_from, Conflict};
use overlay::model::{HostRecord, SubnetLease};

use super::{PassInput, PassOutcome, Report, TunnelList};
use crate::ovs::plan as ovs;
use crate::registry::ClusterCache;

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// OVS was never initialised.
    #[error("the Open_vSwitch table has no row: run `ovs-vsctl init` once")]
    NoRootRow,
    /// The desired state cannot be computed (configuration, VLANs exhausted).
    #[error(transparent)]
    Desired(#[from] overlay::DesiredError),
    /// OVSDB refused or lost a transaction; those before it stay applied.
    #[error("applying the plan to OVSDB")]
    Transact(#[source] ovsdb_client::TransactError),
}

/// The desired state a pass computed, and what it was computed from: the view (the watched
/// cache at `revision`, with our own leases) and the VLANs read from OVSDB. A pass with the same
/// inputs reuses it, skipping the view and `desired_state` (most of a pass after our own commit,
/// which changes OVSDB but not the cluster).
struct Computed {
    revision: i64,
    own_leases: BTreeMap<String, SubnetLease>,
    vlans: BTreeMap<String, u16>,
    desired: Arc<DesiredState>,
}

/// What a pass found OVSDB in step with (nothing to write), while the replica is at `seqno`.
struct Verified {
    seqno: u64,
    desired: Arc<DesiredState>,
    /// `existing_vlans_from` the replica at `seqno`.
    vlans: BTreeMap<String, u16>,
    conflicts: Vec<Conflict>,
}

/// What passes remember between them; lives inside the plumbing lock, which every pass holds.
#[derive(Default)]
pub struct Memo {
    computed: Option<Computed>,
    verified: Option<Verified>,
}

/// The port data plane of this host.
pub struct PortDataPlane {
    me: HostRecord,
    datapath_type: String,
    int_bridge: String,
    tun_bridge: String,
}

impl PortDataPlane {
    /// The data plane `me` builds, with these bridges.
    pub fn new(me: HostRecord, datapath_type: &str, int_bridge: &str, tun_bridge: &str) -> Self {
        PortDataPlane {
            me,
            datapath_type: datapath_type.to_owned(),
            int_bridge: int_bridge.to_owned(),
            tun_bridge: tun_bridge.to_owned(),
        }
    }

    fn owner(&self) -> &str {
        &self.me.hostname
    }

    /// The integration bridge, where container ports go.
    pub fn int_bridge(&self) -> &str {
        &self.int_bridge
    }

    /// The local VLAN of `tenant` as the last pass computed it.
    pub fn tenant_vlan(&self, memo: &Memo, tenant: &str) -> Option<u16> {
        memo.computed.as_ref().and_then(|c| c.desired.tenant_vlans.get(tenant).copied())
    }

    fn view(&self, cache: &ClusterCache, own_leases: &BTreeMap<String, SubnetLease>) -> ClusterView {
        let mut hosts = cache.hosts.clone();
        hosts.insert(self.me.hostname.clone(), self.me.clone());
        let mut leases = cache.valid_leases();
        for own in own_leases.values() {
            let known = leases.iter().any(|l| l.tenant == own.tenant && l.host == own.host);
            let tenant_exists = cache.tenants.contains_key(&own.tenant);
            if !known && tenant_exists {
                leases.push(own.clone());
            }
        }
        ClusterView {
            local: self.me.clone(),
            hosts,
            tenants: cache.tenants.clone(),
            leases,
            datapath_type: self.datapath_type.clone(),
            int_bridge: self.int_bridge.clone(),
            tun_bridge: self.tun_bridge.clone(),
        }
    }

    /// One pass: desired state from the cluster view, diff against the replica, and at most
    /// one transaction (more only to create more than [`ovs::CREATES_PER_TRANSACTION`] ports).
    ///
    /// While the replica has not changed since a pass found nothing to write, only the tunnels
    /// whose desired state changed since that pass are compared (a peer joining or leaving
    /// touches a handful of 20,000); any change in OVSDB, and a full pass, make the next pass
    /// compare every port again.
    pub async fn pass(&self, memo: &mut Memo, input: PassInput<'_>) -> Result<PassOutcome, PassError> {
        let started = Instant::now();
        let PassInput { ovs: client, cluster, own_leases, full } = input;
        let computed = memo.computed.take().filter(|_| !full);
        // The view is freed when the pass ends, not before the transaction.
        let (revision, mut view) = {
            let cache = cluster.borrow();
            let same = computed.as_ref().is_some_and(|c| c.revision == cache.revision && c.own_leases == own_leases);
            // Built straight from the watched cache: cloning the whole cache first (20,000
            // leases at scale) only to copy it again into the view doubled the cost.
            let view = (!same).then(|| self.view(&cache, &own_leases));
            (cache.revision, view)
        };
        let viewed = Instant::now();
        let bridges = [self.int_bridge.as_str(), self.tun_bridge.as_str()];
        let owner = self.owner();
        // The previous finding is dropped when the pass ends, not before the transaction: freeing
        // a desired state of 20,000 tunnels takes a few ms.
        let (root_uuid, desired, mut plan, verified, _prior) = {
            // The diff reads the replica's rows in place, under its read lock (a few ms).
            let r = client.replica();
            let observed = ovs::observe(&r, &bridges, owner);
            let (root_uuid, _) = crate::ovs::root(&r).ok_or(PassError::NoRootRow)?;
            let prior = memo.verified.take().filter(|v| v.seqno == r.seqno() && !full);
            let vlans = match &prior {
                Some(v) => v.vlans.clone(),
                None => existing_vlans_from(&observed),
            };
            // The same view and VLANs give the same desired state.
            let (desired, inputs_known) = match (computed, &view) {
                (Some(c), None) if c.vlans == vlans => (c.desired, true),
                (_, Some(view)) => (Arc::new(desired_state(view, &vlans)?), true),
                // The cluster is as before but OVSDB holds other VLANs: the view again, from the
                // cache as it is now, which `revision` may no longer describe.
                (_, None) => (Arc::new(desired_state(&self.view(&cluster.borrow(), &own_leases), &vlans)?), false),
            };
            if inputs_known {
                memo.computed = Some(Computed { revision, own_leases, vlans: vlans.clone(), desired: desired.clone() });
            }
            let plan = prior
                .as_ref()
                .and_then(|v| diff_since(&v.desired, &v.conflicts, &desired, &observed, owner))
                .unwrap_or_else(|| diff(&desired, &observed, owner));
            let verified = plan.is_empty().then(|| Verified {
                seqno: r.seqno(),
                desired: desired.clone(),
                vlans,
                conflicts: plan.conflicts.clone(),
            });
            (root_uuid, desired, plan, verified, prior)
        };
        let diffed = Instant::now();
        let (ports, tunnels) = (std::mem::take(&mut plan.create_ports), std::mem::take(&mut plan.create_tunnels));
        let created = ports.len() + tunnels.len();
        let report = |desired: &DesiredState, plan_conflicts: &[Conflict]| Report {
            tenant_vlans: desired.tenant_vlans.clone(),
            tunnels: TunnelList::new(&desired.tunnels),
            skipped: desired.skipped.iter().map(|s| format!("{}: {}", s.peer, s.reason)).collect(),
            conflicts: plan_conflicts.iter().map(|c| c.to_string()).collect(),
            peers: desired.peer_count(),
        };
        let ms = |from: Instant, to: Instant| to.duration_since(from).as_secs_f64() * 1e3;
        if plan.is_empty() && created == 0 {
            memo.verified = verified;
            tracing::debug!(
                view_ms = ms(started, viewed),
                diff_ms = ms(viewed, diffed),
                "reconcile pass: nothing to change"
            );
            return Ok(PassOutcome { transactions: 0, report: report(&desired, &plan.conflicts) });
        }
        // Only the desired state and what the commit check needs are kept while OVSDB commits:
        // the update it sends back would be decoded among the pass's memory, and the replica's
        // new rows would stay scattered over partly used pages once that went (a cold-started
        // agent settled 16 MiB larger than a restarted one).
        drop(view.take());
        // Each tunnel's row is made as its transaction is: all 20,000 of a cold start as rows at
        // once took 30 MB.
        let tun_bridge = desired.tun_bridge.name.as_str();
        let rows = tunnels.into_iter().map(|t| overlay::diff::tunnel_spec(&t, tun_bridge, owner));
        let mut planned = ovs::PlannedTransactions::new(&plan, ports.into_iter().chain(rows), root_uuid);
        let mut commit = ovs::Commit::new(&plan);
        let mut transactions = 0;
        // Each after the one before committed. If one fails, those before it stay applied, and
        // the next pass plans what is still missing.
        while let Some((tx, inserted)) = planned.next(client.transaction()).map(|p| p.into_parts()) {
            let sent_at = Instant::now();
            let o = client.transact_owned(tx).await.map_err(PassError::Transact)?;
            tracing::debug!(
                ops = o.results.len(),
                ms = sent_at.elapsed().as_secs_f64() * 1e3,
                "OVSDB transaction committed"
            );
            commit.record(&inserted, &o);
            transactions += 1;
        }
        let committed = Instant::now();
        tracing::info!(
            transactions,
            bridges = plan.create_bridges.len(),
            created,
            updated = plan.update_ports.len(),
            deleted = plan.delete_ports.len(),
            "OVSDB updated"
        );
        for u in &plan.update_ports {
            tracing::info!(port = %u.name, changes = ?u.changes, "port updated");
        }
        // Wait for the replica to show our own commit, so the next pass does not plan the same
        // change again from stale rows. Checking the commit's own rows costs little per replica
        // change; diffing everything again did not.
        let _ = client.wait_until(Duration::from_secs(5), |r| commit.visible_in(r)).await;
        tracing::debug!(
            view_ms = ms(started, viewed),
            diff_ms = ms(viewed, diffed),
            transact_ms = ms(diffed, committed),
            wait_ms = ms(committed, Instant::now()),
            "reconcile pass: OVSDB updated"
        );
        Ok(PassOutcome { transactions, report: report(&desired, &plan.conflicts) })
    }
}
