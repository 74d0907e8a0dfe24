//! The OVSDB layer of the data plane: the two bridges, the patch link and one tunnel port per
//! tenant ([`overlay::desired`]), diffed against the replica ([`overlay::diff`]) and written by
//! [`crate::ovs::plan::apply`] when anything differs.

use std::collections::BTreeMap;
use std::sync::Arc;

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
        for own in own_leases.values() {
            let known = leases.iter().any(|l| l.tenant == own.tenant && l.host == own.host);
            if !known && cache.tenants.contains_key(&own.tenant) {
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

    /// Makes OVSDB hold the desired bridges and ports. Returns the desired state, the number of
    /// transactions sent, and the conflicts (rows in the way that are not the agent's).
    pub(super) async fn bridges_pass(
        &self,
        input: &PassInput<'_>,
    ) -> Result<(Arc<DesiredState>, usize, Vec<String>), PassError> {
        let view = self.view(&input.cluster.borrow(), &input.own_leases);
        let bridges = [self.int_bridge.as_str(), self.tun_bridge.as_str()];
        let (root_uuid, desired, plan) = {
            let r = input.ovs.replica();
            let observed = ovs::observe(&r, &bridges, &self.owner);
            let (root_uuid, _) = crate::ovs::root(&r).ok_or(PassError::NoRootRow)?;
            let desired = desired_state(&view, &existing_vlans_from(&observed))?;
            let plan = diff(&desired, &observed, &self.owner);
            (root_uuid, Arc::new(desired), plan)
        };
        let conflicts: Vec<String> = plan.conflicts.iter().map(|c| c.to_string()).collect();
        if plan.is_empty() {
            return Ok((desired, 0, conflicts));
        }
        let transactions = ovs::apply(input.ovs, plan, root_uuid).await.map_err(PassError::Transact)?;
        Ok((desired, transactions, conflicts))
    }
}
