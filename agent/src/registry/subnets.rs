//! Subnet leases, flannel-style: each host holds a slice of every tenant CIDR it takes part in.

use std::collections::BTreeSet;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use ipnet::IpNet;
use overlay::model::{parse_lease_key_segment, HostRecord, SubnetLease, Tenant};

use super::{etcd, Registry, RegistryError};

impl Registry {
    /// Returns this host's subnet lease in `tenant`, taking a free one if it has none:
    /// candidates start at an offset from the hostname, each is claimed by compare-and-create,
    /// and a lost race moves on to the next. `known`, the lease this host took before, is
    /// checked first by its own key: a plug into a tenant the host is in reads one key, not the
    /// tenant's every lease.
    pub async fn ensure_lease(
        &self,
        tenant: &Tenant,
        me: &HostRecord,
        host_lease: i64,
        known: Option<&SubnetLease>,
    ) -> Result<SubnetLease, RegistryError> {
        let mut c = self.client.clone();
        if let Some(known) = known.filter(|k| k.tenant == tenant.name()) {
            let got = c
                .get(self.keys.subnet(tenant.name(), &known.subnet), None)
                .await
                .map_err(etcd("reading this host's subnet lease"))?;
            let held = got.kvs().first().filter(|kv| kv.lease() == host_lease).and_then(|kv| {
                SubnetLease::from_json(kv.value()).ok().filter(|l| l.host == me.hostname && l.subnet == known.subnet)
            });
            if let Some(lease) = held {
                return Ok(lease);
            }
        }
        for _attempt in 0..8 {
            let got = c
                .get(self.keys.subnets(tenant.name()), Some(GetOptions::new().with_prefix()))
                .await
                .map_err(etcd("listing subnet leases"))?;
            let mut taken = BTreeSet::new();
            for kv in got.kvs() {
                let Ok(lease) = SubnetLease::from_json(kv.value()) else {
                    // Keep a garbage key's subnet out of reach rather than fight over it.
                    if let Some(net) = kv
                        .key_str()
                        .ok()
                        .and_then(|k| k.rsplit('/').next())
                        .and_then(|s| parse_lease_key_segment(s).ok())
                    {
                        taken.insert(net);
                    }
                    continue;
                };
                if lease.host == me.hostname {
                    if kv.lease() != host_lease {
                        // Left from a previous host lease: move it onto ours.
                        let key = self.keys.subnet(tenant.name(), &lease.subnet);
                        let fresh = SubnetLease { underlay_ip: me.underlay_ip, ..lease.clone() };
                        c.put(key, fresh.to_json(), Some(PutOptions::new().with_lease(host_lease)))
                            .await
                            .map_err(etcd("renewing the subnet lease"))?;
                        return Ok(fresh);
                    }
                    return Ok(lease);
                }
                taken.insert(lease.subnet);
            }
            let candidates: Vec<IpNet> =
                overlay::ipam::subnet_candidates(tenant.cidr(), tenant.subnet_len(), &taken, &me.hostname)
                    .take(4)
                    .collect();
            if candidates.is_empty() {
                return Err(RegistryError::Conflict(format!(
                    "tenant '{}' has no free /{} subnet left in {} ({} taken); use a larger CIDR or a longer --subnet-len",
                    tenant.name(),
                    tenant.subnet_len(),
                    tenant.cidr(),
                    taken.len()
                )));
            }
            for subnet in candidates {
                let lease = SubnetLease {
                    tenant: tenant.name().to_owned(),
                    subnet,
                    host: me.hostname.clone(),
                    underlay_ip: me.underlay_ip,
                };
                let key = self.keys.subnet(tenant.name(), &subnet);
                let tkey = self.keys.tenant(tenant.name());
                let txn = Txn::new()
                    .when([
                        Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
                        Compare::create_revision(tkey.as_str(), CompareOp::Greater, 0),
                    ])
                    .and_then([TxnOp::put(
                        key.as_str(),
                        lease.to_json(),
                        Some(PutOptions::new().with_lease(host_lease)),
                    )]);
                let resp = c.txn(txn).await.map_err(etcd("claiming a subnet lease"))?;
                if resp.succeeded() {
                    tracing::info!(tenant = tenant.name(), %subnet, "subnet lease acquired");
                    return Ok(lease);
                }
                let t = c.get(tkey.as_str(), None).await.map_err(etcd("reading the tenant"))?;
                if t.kvs().is_empty() {
                    return Err(RegistryError::NotFound(format!("tenant '{}' was deleted", tenant.name())));
                }
            }
        }
        Err(RegistryError::Conflict(format!(
            "could not claim a subnet in tenant '{}' after several tries: too many hosts racing; try again",
            tenant.name()
        )))
    }
}
