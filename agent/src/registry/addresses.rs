//! Address reservations: `ips/<tenant>/<ip>`, made unique by compare-and-create, whose value
//! names the container interface, host and machine holding it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use overlay::model::{IpClaim, SubnetLease, Tenant};

use super::keys::prefix_end;
use super::{etcd, txn_gets, Registry, RegistryError, LIST_PAGE};

impl Registry {
    /// Reserves `ip` in `tenant` for `claim` by compare-and-create. Reserving an address the same
    /// holder already has succeeds (plug is idempotent); one held by anyone else is a conflict
    /// naming the holder.
    pub async fn reserve_ip(&self, tenant: &str, ip: IpAddr, claim: &IpClaim) -> Result<(), RegistryError> {
        self.reserve_ip_with(tenant, ip, claim, None).await
    }

    /// [`Registry::reserve_ip`], the key under `lease` if one is given (it goes when the
    /// lease expires).
    pub(super) async fn reserve_ip_with(
        &self,
        tenant: &str,
        ip: IpAddr,
        claim: &IpClaim,
        lease: Option<i64>,
    ) -> Result<(), RegistryError> {
        let mut c = self.client.clone();
        let key = self.keys.ip(tenant, &ip);
        let tkey = self.keys.tenant(tenant);
        let txn = Txn::new()
            .when([
                Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
                Compare::create_revision(tkey.as_str(), CompareOp::Greater, 0),
            ])
            .and_then([TxnOp::put(key.as_str(), claim.to_json(), lease.map(|l| PutOptions::new().with_lease(l)))])
            .or_else([TxnOp::get(key.as_str(), None), TxnOp::get(tkey.as_str(), None)]);
        let resp = c.txn(txn).await.map_err(etcd("reserving the address"))?;
        if resp.succeeded() {
            return Ok(());
        }
        let gets = txn_gets(&resp);
        if gets.get(1).is_some_and(Option::is_none) {
            return Err(RegistryError::NotFound(format!("tenant '{tenant}' does not exist (deleted while plugging?)")));
        }
        let holder = gets.first().cloned().flatten().and_then(|v| IpClaim::from_json(&v).ok());
        match holder {
            Some(h) if h.same_holder(claim) => Ok(()),
            Some(h) if h.is_reservation() => Err(RegistryError::Conflict(format!(
                "address {ip} in tenant '{tenant}' is reserved on host '{}' for a container being started; choose \
                 another --ip or omit it",
                h.host
            ))),
            Some(h) => Err(RegistryError::Conflict(format!(
                "address {ip} in tenant '{tenant}' is in use by container '{}' ({}) on host '{}'; choose another \
                 --ip or omit it",
                h.container, h.ifname, h.host
            ))),
            None => Err(RegistryError::Conflict(format!(
                "address {ip} in tenant '{tenant}' is reserved by a malformed record ({key}); choose another --ip"
            ))),
        }
    }

    /// Every reserved address of `tenant` with its claim (malformed claims count as used).
    pub(super) async fn ip_claims(&self, tenant: &str) -> Result<BTreeMap<IpAddr, Option<IpClaim>>, RegistryError> {
        let prefix = self.keys.ips(tenant);
        let got = self
            .client
            .clone()
            .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(etcd("listing addresses"))?;
        Ok(got
            .kvs()
            .iter()
            .filter_map(|kv| {
                let ip = kv.key_str().ok()?.strip_prefix(&prefix)?.parse().ok()?;
                Some((ip, IpClaim::from_json(kv.value()).ok()))
            })
            .collect())
    }

    /// Picks and reserves a free address of this host's lease for a container interface that
    /// holds none in the tenant. `held_here` are the addresses this host is known to hold there
    /// (its endpoints and the plugs in flight): the first free one by those is tried with one
    /// transaction, without listing the tenant's reservations (a host allocates from its own
    /// lease, so they are nearly always all there are in its subnet). A fixed `--ip` taken
    /// elsewhere in the subnet makes the try fail, and the allocation lists the tenant.
    pub async fn allocate_ip(
        &self,
        tenant: &Tenant,
        lease: &SubnetLease,
        claim: &IpClaim,
        held_here: &BTreeSet<IpAddr>,
    ) -> Result<IpAddr, RegistryError> {
        self.allocate_ip_with(tenant, lease, claim, held_here, None).await
    }

    /// [`Registry::allocate_ip`], the key under `etcd_lease` if one is given.
    pub(super) async fn allocate_ip_with(
        &self,
        tenant: &Tenant,
        lease: &SubnetLease,
        claim: &IpClaim,
        held_here: &BTreeSet<IpAddr>,
        etcd_lease: Option<i64>,
    ) -> Result<IpAddr, RegistryError> {
        if let Some(ip) = overlay::ipam::next_free_address(lease.subnet, tenant, held_here) {
            match self.reserve_ip_with(tenant.name(), ip, claim, etcd_lease).await {
                Ok(()) => return Ok(ip),
                Err(RegistryError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        for _ in 0..16 {
            let claims = self.ip_claims(tenant.name()).await?;
            if let Some((ip, _)) = claims.iter().find(|(_, c)| c.as_ref().is_some_and(|c| c.same_holder(claim))) {
                return Ok(*ip);
            }
            let used: BTreeSet<IpAddr> = claims.keys().copied().chain(held_here.iter().copied()).collect();
            let ip = overlay::ipam::next_free_address(lease.subnet, tenant, &used).ok_or_else(|| {
                RegistryError::Conflict(format!(
                    "subnet {} of tenant '{}' on this host is full; unplug containers or use a shorter --subnet-len",
                    lease.subnet,
                    tenant.name()
                ))
            })?;
            match self.reserve_ip_with(tenant.name(), ip, claim, etcd_lease).await {
                Ok(()) => return Ok(ip),
                Err(RegistryError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(RegistryError::Conflict(format!(
            "could not reserve an address in tenant '{}': too much contention; try again",
            tenant.name()
        )))
    }

    /// Releases an address if `claim` holds it.
    pub async fn release_ip(&self, tenant: &str, ip: IpAddr, claim: &IpClaim) -> Result<(), RegistryError> {
        let key = self.keys.ip(tenant, &ip);
        let txn = Txn::new()
            .when([Compare::value(key.as_str(), CompareOp::Equal, claim.to_json())])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        self.client.clone().txn(txn).await.map_err(etcd("releasing the address"))?;
        Ok(())
    }

    /// Every address reservation `machine_id` made for `host`: (tenant, address, claim). Read
    /// in pages over the whole `ips/` range; for the start-up recovery only.
    pub async fn claims_of_machine(
        &self,
        host: &str,
        machine_id: &str,
    ) -> Result<Vec<(String, IpAddr, IpClaim)>, RegistryError> {
        let prefix = self.keys.kind("ips/");
        let end = prefix_end(&prefix);
        let mut start = prefix.clone().into_bytes();
        let mut out = Vec::new();
        loop {
            let opts = GetOptions::new().with_range(end.clone()).with_limit(LIST_PAGE);
            let resp = self.client.clone().get(start.clone(), Some(opts)).await.map_err(etcd("listing addresses"))?;
            for kv in resp.kvs() {
                let Ok(claim) = IpClaim::from_json(kv.value()) else { continue };
                if claim.host != host || claim.machine_id != machine_id {
                    continue;
                }
                let parsed = kv.key_str().ok().and_then(|k| k.strip_prefix(&prefix)).and_then(|rest| {
                    let (tenant, ip) = rest.split_once('/')?;
                    Some((tenant.to_owned(), ip.parse().ok()?))
                });
                if let Some((tenant, ip)) = parsed {
                    out.push((tenant, ip, claim));
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
