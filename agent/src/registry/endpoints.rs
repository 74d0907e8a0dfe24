//! Endpoint records: one per plugged container interface, written last by a plug and removed
//! with the address it holds.

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use overlay::model::{Endpoint, IpClaim};

use super::keys::prefix_end;
use super::{etcd, Registry, RegistryError, LIST_PAGE};

impl Registry {
    /// Writes an endpoint record at its key; fails if the tenant is gone. Returns the key.
    pub async fn put_endpoint(&self, ep: &Endpoint) -> Result<String, RegistryError> {
        let key = self.keys.endpoint(&ep.tenant, &ep.container_id, &ep.ifname);
        let tkey = self.keys.tenant(&ep.tenant);
        let txn = Txn::new()
            .when([Compare::create_revision(tkey.as_str(), CompareOp::Greater, 0)])
            .and_then([TxnOp::put(key.as_str(), ep.to_json(), None)]);
        let resp = self.client.clone().txn(txn).await.map_err(etcd("writing the endpoint"))?;
        if !resp.succeeded() {
            return Err(RegistryError::NotFound(format!("tenant '{}' was deleted while plugging", ep.tenant)));
        }
        self.note_write(resp.header());
        Ok(key)
    }

    /// Removes the endpoint record at `key` and releases its address, in one transaction. The
    /// address goes only if this interface still holds it.
    pub async fn delete_endpoint(&self, key: &str, ep: &Endpoint) -> Result<(), RegistryError> {
        let claim = IpClaim {
            container: ep.container_id.clone(),
            host: ep.host.clone(),
            ifname: ep.ifname.clone(),
            machine_id: ep.machine_id.clone(),
        };
        let ip_key = self.keys.ip(&ep.tenant, &ep.ip);
        let txn = Txn::new()
            .when([Compare::value(ip_key.as_str(), CompareOp::Equal, claim.to_json())])
            .and_then([TxnOp::delete(key, None), TxnOp::delete(ip_key.as_str(), None)])
            .or_else([TxnOp::delete(key, None)]);
        let resp = self.client.clone().txn(txn).await.map_err(etcd("deleting the endpoint"))?;
        self.note_write(resp.header());
        if !resp.succeeded() {
            // A record of an older agent: its claim has another shape. Release it if it still
            // names this container on this host.
            self.release_legacy_claim(&ep.tenant, ep).await?;
        }
        Ok(())
    }

    async fn release_legacy_claim(&self, tenant: &str, ep: &Endpoint) -> Result<(), RegistryError> {
        let legacy = serde_json::json!({"container": ep.container_id, "host": ep.host}).to_string();
        let ip_key = self.keys.ip(tenant, &ep.ip);
        let txn = Txn::new()
            .when([Compare::value(ip_key.as_str(), CompareOp::Equal, legacy)])
            .and_then([TxnOp::delete(ip_key.as_str(), None)]);
        self.client.clone().txn(txn).await.map_err(etcd("releasing the address"))?;
        Ok(())
    }

    /// Every endpoint record of `host`, with its key, read from etcd in pages (the watch does
    /// not run yet when a take-over needs them).
    pub async fn endpoints_of_host(&self, host: &str) -> Result<Vec<(String, Endpoint)>, RegistryError> {
        let prefix = self.keys.kind("endpoints/");
        let end = prefix_end(&prefix);
        let mut start = prefix.into_bytes();
        let mut out = Vec::new();
        loop {
            let opts = GetOptions::new().with_range(end.clone()).with_limit(LIST_PAGE);
            let resp = self.client.clone().get(start.clone(), Some(opts)).await.map_err(etcd("listing endpoints"))?;
            for kv in resp.kvs() {
                if let (Ok(key), Ok(ep)) = (kv.key_str(), Endpoint::from_json(kv.value())) {
                    if ep.host == host {
                        out.push((key.to_owned(), ep));
                    }
                }
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => return Ok(out),
            }
        }
    }
}
