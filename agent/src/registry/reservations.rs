//! Addresses reserved before their plug: a runtime's address manager asks for the address
//! first and plugs later (Docker calls its IPAM driver's `RequestAddress`, then the network
//! driver's `CreateEndpoint`). A reservation is a claim that names no interface
//! ([`IpClaim::reservation`]), under an etcd lease of its own so that one no plug takes over
//! goes by itself; a plug of the same address by the same machine takes it over by
//! compare-and-swap.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use overlay::model::{IpClaim, SubnetLease, Tenant};

use super::{etcd, Registry, RegistryError};

/// How long a reservation lives without a plug taking it over: far longer than a runtime
/// takes from asking for an address to plugging it (Docker asks its IPAM driver and then its
/// network driver in one step, milliseconds apart), short enough that one a plugin killed
/// between the two leaves behind is gone soon. A plug that comes later still gets the address
/// if nobody took it meanwhile.
pub const RESERVATION_TTL: Duration = Duration::from_secs(15);

/// A token no other reservation of this process has (the key is per host and machine already).
fn token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{:x}-{:x}", nanos as u64, NEXT.fetch_add(1, Ordering::Relaxed))
}

impl Registry {
    /// Reserves `ip`, or the next free address of this host's `lease`, for a plug to take over
    /// within [`RESERVATION_TTL`]. `held_here`: the addresses this host is known to hold in
    /// the tenant.
    pub async fn reserve_address(
        &self,
        tenant: &Tenant,
        lease: &SubnetLease,
        ip: Option<IpAddr>,
        (host, machine_id): (&str, &str),
        held_here: &BTreeSet<IpAddr>,
    ) -> Result<IpAddr, RegistryError> {
        let mut c = self.client.clone();
        let ttl = RESERVATION_TTL.as_secs() as i64;
        let etcd_lease = c.lease_grant(ttl, None).await.map_err(etcd("granting a reservation lease"))?.id();
        let claim = IpClaim::reservation(host, machine_id, &token());
        let reserved = match ip {
            Some(ip) => self.reserve_ip_with(tenant.name(), ip, &claim, Some(etcd_lease)).await.map(|()| ip),
            None => self.allocate_ip_with(tenant, lease, &claim, held_here, Some(etcd_lease)).await,
        };
        if reserved.is_err() {
            self.revoke(etcd_lease).await;
        }
        reserved
    }

    /// Reserves `ip` for `claim` (a plug), taking over a reservation of this machine on this
    /// host if one holds it. Held by anyone else, a conflict naming the holder.
    pub async fn take_over_ip(&self, tenant: &str, ip: IpAddr, claim: &IpClaim) -> Result<(), RegistryError> {
        let key = self.keys.ip(tenant, &ip);
        for _ in 0..8 {
            let conflict = match self.reserve_ip(tenant, ip, claim).await {
                Ok(()) => return Ok(()),
                Err(RegistryError::Conflict(m)) => m,
                Err(e) => return Err(e),
            };
            let got = self.client.clone().get(key.as_str(), None).await.map_err(etcd("reading the reservation"))?;
            let Some(held) = got.kvs().first().map(|kv| kv.value().to_vec()) else { continue };
            let ours = IpClaim::from_json(&held)
                .is_ok_and(|h| h.is_reservation() && h.host == claim.host && h.machine_id == claim.machine_id);
            if !ours {
                return Err(RegistryError::Conflict(conflict));
            }
            // Put without a lease: the address is the plug's now, for as long as it is plugged.
            let txn = Txn::new().when([Compare::value(key.as_str(), CompareOp::Equal, held)]).and_then([TxnOp::put(
                key.as_str(),
                claim.to_json(),
                None,
            )]);
            let resp = self.client.clone().txn(txn).await.map_err(etcd("taking over the reservation"))?;
            if resp.succeeded() {
                return Ok(());
            }
        }
        Err(RegistryError::Conflict(format!(
            "could not take over the reservation of {ip} in tenant '{tenant}': too much contention; try again"
        )))
    }

    /// Releases the reservation of `ip` if this machine made one on `host` that no plug took
    /// over; whether it did. An address a plug holds is left alone (unplug releases it).
    pub async fn release_reservation(
        &self,
        tenant: &str,
        ip: IpAddr,
        (host, machine_id): (&str, &str),
    ) -> Result<bool, RegistryError> {
        let key = self.keys.ip(tenant, &ip);
        let got = self.client.clone().get(key.as_str(), None).await.map_err(etcd("reading the reservation"))?;
        let Some(held) = got.kvs().first().map(|kv| kv.value().to_vec()) else { return Ok(false) };
        let ours =
            IpClaim::from_json(&held).is_ok_and(|h| h.is_reservation() && h.host == host && h.machine_id == machine_id);
        if !ours {
            return Ok(false);
        }
        let txn = Txn::new()
            .when([Compare::value(key.as_str(), CompareOp::Equal, held)])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        let resp = self.client.clone().txn(txn).await.map_err(etcd("releasing the reservation"))?;
        Ok(resp.succeeded())
    }
}
