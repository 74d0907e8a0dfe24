//! Tenants: read, create (name and VNI claimed together), delete (refused while endpoints exist).

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use overlay::model::Tenant;

use super::keys::prefix_end;
use super::{etcd, txn_gets, Registry, RegistryError};

impl Registry {
    /// Reads one tenant.
    pub async fn get_tenant(&self, name: &str) -> Result<Tenant, RegistryError> {
        let got = self.client.clone().get(self.keys.tenant(name), None).await.map_err(etcd("reading the tenant"))?;
        let kv = got
            .kvs()
            .first()
            .ok_or_else(|| RegistryError::NotFound(format!("tenant '{name}' does not exist: create it first")))?;
        Tenant::from_json(kv.value())
            .map_err(|e| RegistryError::Conflict(format!("tenant '{name}' in etcd is malformed: {e}")))
    }

    /// Creates a tenant; the tenant name and its VNI are claimed in one transaction.
    pub async fn create_tenant(&self, tenant: &Tenant) -> Result<(), RegistryError> {
        let mut c = self.client.clone();
        let tkey = self.keys.tenant(tenant.name());
        let vkey = self.keys.vni(tenant.vni().get());
        let txn = Txn::new()
            .when([
                Compare::create_revision(tkey.as_str(), CompareOp::Equal, 0),
                Compare::create_revision(vkey.as_str(), CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::put(tkey.as_str(), tenant.to_json(), None),
                TxnOp::put(vkey.as_str(), tenant.name(), None),
            ])
            .or_else([TxnOp::get(tkey.as_str(), None), TxnOp::get(vkey.as_str(), None)]);
        let resp = c.txn(txn).await.map_err(etcd("creating the tenant"))?;
        if resp.succeeded() {
            return Ok(());
        }
        let gets = txn_gets(&resp);
        if gets.first().is_some_and(Option::is_some) {
            return Err(RegistryError::Conflict(format!("tenant '{}' already exists", tenant.name())));
        }
        let holder =
            gets.get(1).cloned().flatten().map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default();
        Err(RegistryError::Conflict(format!(
            "VNI {} is already used by tenant '{holder}'; choose another --vni",
            tenant.vni().get()
        )))
    }

    /// Deletes a tenant with its VNI claim, subnet leases and address reservations; refused
    /// while any endpoint exists. The endpoint check is part of the transaction: an endpoint
    /// created after the read makes it fail instead of leaving an orphan.
    pub async fn delete_tenant(&self, name: &str) -> Result<(), RegistryError> {
        let mut c = self.client.clone();
        let tkey = self.keys.tenant(name);
        let got = c.get(tkey.as_str(), None).await.map_err(etcd("reading the tenant"))?;
        let Some(kv) = got.kvs().first() else {
            return Err(RegistryError::NotFound(format!("tenant '{name}' does not exist")));
        };
        let tenant_rev = kv.mod_revision();
        let vni = Tenant::from_json(kv.value()).ok().map(|t| t.vni().get());
        let eprefix = self.keys.endpoints(name);
        let eps = c
            .get(eprefix.as_str(), Some(GetOptions::new().with_prefix().with_count_only()))
            .await
            .map_err(etcd("listing endpoints"))?;
        if eps.count() > 0 {
            return Err(RegistryError::Conflict(format!(
                "tenant '{name}' still has {} endpoint(s); unplug them first",
                eps.count()
            )));
        }
        let read_rev = eps.header().map(|h| h.revision()).unwrap_or(0);
        let mut ops = vec![
            TxnOp::delete(tkey.as_str(), None),
            TxnOp::delete(self.keys.subnets(name), Some(etcd_client::DeleteOptions::new().with_prefix())),
            TxnOp::delete(self.keys.ips(name), Some(etcd_client::DeleteOptions::new().with_prefix())),
        ];
        if let Some(v) = vni {
            ops.push(TxnOp::delete(self.keys.vni(v), None));
        }
        let txn = Txn::new()
            .when([
                Compare::mod_revision(tkey.as_str(), CompareOp::Equal, tenant_rev),
                Compare::create_revision(eprefix.as_str(), CompareOp::Less, read_rev + 1)
                    .with_range(prefix_end(&eprefix)),
            ])
            .and_then(ops);
        let resp = c.txn(txn).await.map_err(etcd("deleting the tenant"))?;
        if !resp.succeeded() {
            return Err(RegistryError::Conflict(format!(
                "tenant '{name}' changed or gained an endpoint while being deleted; try again"
            )));
        }
        Ok(())
    }
}
