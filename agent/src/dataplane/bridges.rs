//! The OVSDB layer of the data plane: the two bridges, the patch link and one tunnel port per
//! tenant ([`overlay::desired`]), diffed against the replica ([`overlay::diff`]) and written by
//! [`crate::ovs::plan::apply`] when anything differs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use overlay::desired::{desired_state, ClusterView, DesiredState};
use overlay::diff::{diff, existing_vlans_from};
use overlay::model::SubnetLease;

use super::{DataPlane, PassError, PassInput};
use crate::ovs::plan as ovs;
use crate::registry::ClusterCache;

impl DataPlane {
    fn view(&self, cache: &ClusterCache, own_leases: &BTreeMap<String, SubnetLease>) -> ClusterView {
        let mut hosts = cache.hosts.clone();
        hosts.insert(self.me.hostname.clone(), self.me.clone());
        let mut leases = cache.valid_leases();
        let missing: Vec<SubnetLease> = {
            let hosts: std::collections::HashSet<&str> = own_leases.values().map(|l| l.host.as_str()).collect();
            let known: std::collections::HashSet<(&str, &str)> = leases
                .iter()
                .filter(|l| hosts.contains(l.host.as_str()))
                .map(|l| (l.tenant.as_str(), l.host.as_str()))
                .collect();
            own_leases
                .values()
                .filter(|own| !known.contains(&(own.tenant.as_str(), own.host.as_str())))
                .filter(|own| cache.tenants.contains_key(&own.tenant))
                .cloned()
                .collect()
        };
        leases.extend(missing);
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

    /// The bridges and ports this host should have, for the cluster as watched: the
    /// cluster-sized part of the OVSDB half of a pass, computed without the plumbing lock, and
    /// only when what it is computed from changed (a plug, a container elsewhere, an OVSDB
    /// event leave it as it was).
    pub(super) fn desired_bridges(&self, input: &PassInput<'_>) -> Result<Arc<DesiredState>, overlay::DesiredError> {
        let bridges = [self.int_bridge.as_str(), self.tun_bridge.as_str()];
        let vlans = existing_vlans_from(&ovs::observe(&input.ovs.replica(), &bridges, &self.owner));
        let cache = input.cluster.borrow();
        let from = MemoInput { topology: cache.topology, own_leases: input.own_leases.clone(), vlans };
        if let Some(memo) = self.bridges_memo.lock().expect("bridges memo").as_ref().filter(|m| m.from == from) {
            return Ok(memo.desired.clone());
        }
        let view = self.view(&cache, &input.own_leases);
        drop(cache);
        let desired = Arc::new(desired_state(&view, &from.vlans)?);
        *self.bridges_memo.lock().expect("bridges memo") = Some(Memo { from, desired: desired.clone() });
        Ok(desired)
    }

    /// Makes OVSDB hold `desired` (the caller holds the plumbing lock): diffed against the
    /// replica as it is now, written by [`ovs::apply`] when anything differs. Returns the
    /// number of transactions sent, the conflicts (rows in the way that are not the agent's),
    /// and the bridges whose flow tables ovs-vswitchd emptied meanwhile (see [`flushed`]).
    pub(super) async fn apply_bridges(
        &self,
        input: &PassInput<'_>,
        desired: &DesiredState,
    ) -> Result<(usize, Vec<String>, Vec<String>), PassError> {
        let bridges = [self.int_bridge.as_str(), self.tun_bridge.as_str()];
        let (root_uuid, plan) = {
            let r = input.ovs.replica();
            let observed = ovs::observe(&r, &bridges, &self.owner);
            let (root_uuid, _) = crate::ovs::root(&r).ok_or(PassError::NoRootRow)?;
            (root_uuid, diff(desired, &observed, &self.owner))
        };
        let conflicts: Vec<String> = plan.conflicts.iter().map(|c| c.to_string()).collect();
        if plan.is_empty() {
            return Ok((0, conflicts, Vec::new()));
        }
        let flushed = flushed(&plan);
        let transactions = ovs::apply(input.ovs, plan, root_uuid).await.map_err(PassError::Transact)?;
        if !flushed.is_empty() {
            // Flows sent before ovs-vswitchd applies the change would be emptied with the rest
            // while the agent counted them as installed: they go once it has. The tunnel ports
            // made in the same reconfiguration have their ofports by then (or soon), so their
            // tenants' flows go in this pass, shortening the time the emptied bridge drops. (Under
            // the plumbing lock, at most 7 s, and only when a bridge's mode changes: an upgrade.)
            tracing::info!(bridges = ?flushed, "fail_mode or datapath changed: ovs-vswitchd empties these bridges");
            crate::ovs::vswitchd::reconfigured(input.ovs, "the bridges' new fail_mode or datapath").await;
            let _ = input.ovs.wait_until(Duration::from_secs(2), |r| tunnels_numbered(r, desired)).await;
        }
        Ok((transactions, conflicts, flushed))
    }
}

/// The bridges whose flow tables ovs-vswitchd empties when it applies `plan`: one whose
/// `fail_mode` changes while it has no controller (the agent programs flows through the
/// management socket and sets none), which is how ovs-vswitchd treats a fail mode change, and
/// one whose datapath changes, which it makes anew. A bridge an earlier release left standalone
/// turns secure on the first pass after an upgrade.
fn flushed(plan: &overlay::diff::Plan) -> Vec<String> {
    let mut names: Vec<String> =
        plan.set_bridge_fail_mode.iter().chain(&plan.set_bridge_datapath).map(|(b, _)| b.clone()).collect();
    names.sort();
    names.dedup();
    names
}

/// Every tunnel port of `desired` has its ofport in the replica.
fn tunnels_numbered(r: &ovsdb_client::Replica, desired: &DesiredState) -> bool {
    desired.tunnels.iter().all(|t| {
        r.table("Interface")
            .find_one("name", &ovsdb_client::Atom::from(t.name.as_str()))
            .is_some_and(|(_, row)| row.get_as::<Option<i64>>("ofport").ok().flatten().is_some_and(|p| p > 0))
    })
}

/// The last desired bridges, with what they were computed from.
pub(super) struct Memo {
    from: MemoInput,
    desired: Arc<DesiredState>,
}

/// What [`desired_state`] is a pure function of: the view (the cache's hosts, tenants and
/// leases, which its topology stamp identifies, and this agent's own leases) and the VLANs the
/// bridges' ports have.
#[derive(PartialEq)]
struct MemoInput {
    topology: u64,
    own_leases: BTreeMap<String, SubnetLease>,
    vlans: BTreeMap<String, u16>,
}
