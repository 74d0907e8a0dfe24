//! Host registration: the host key under a long lease, the underlay address claim, the short
//! liveness key, and what decides who may hold a hostname ([`overlay::identity`]).

use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use overlay::identity::{decide_registration, Claimant, Found, Registration as Decision};
use overlay::model::{HostRecord, Liveness};

use super::{etcd, first_get, Registry, RegistryError};

/// What a starting agent asks for.
#[derive(Debug, Clone)]
pub struct RegistrationRequest<'a> {
    /// The record it registers.
    pub me: &'a HostRecord,
    /// This boot's id (for [`overlay::identity`]).
    pub boot_id: &'a str,
    /// The machine identity the operator allows it to replace (`--take-over`).
    pub take_over: Option<&'a str>,
    /// The host lease's TTL.
    pub ttl: Duration,
}

/// This host's registration: the lease its keys hang on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The long host lease (host key, subnet leases).
    pub host_lease: i64,
    /// True when an existing registration of this machine was re-attached (or adopted from an
    /// older agent of this machine).
    pub reattached: bool,
    /// The machine this one replaced, when the operator asked for it.
    pub replaced: Option<HostRecord>,
}

impl Registry {
    /// Registers this host, or re-attaches to this machine's existing registration keeping its
    /// lease, so peers never see the host key vanish. Another machine holding the hostname is
    /// refused ([`RegistryError::HostConflict`]) unless the operator named it for take-over
    /// and its agent is not running; the same identity alive on another boot gives
    /// [`RegistryError::WaitForLiveness`]. `running(pid)` says whether that pid runs an agent
    /// on this boot.
    pub async fn register_host(
        &self,
        req: &RegistrationRequest<'_>,
        running: impl Fn(u32) -> bool,
    ) -> Result<Registration, RegistryError> {
        let mut c = self.client.clone();
        let me = req.me;
        let host_key = self.keys.host(&me.hostname);
        // Twice at most: a lost race to create the key is decided again from what won it.
        for _ in 0..2 {
            let read = c
                .txn(
                    Txn::new().and_then([
                        TxnOp::get(host_key.as_str(), None),
                        TxnOp::get(self.keys.alive(&me.hostname), None),
                    ]),
                )
                .await
                .map_err(etcd("reading the host and liveness keys"))?;
            let mut kvs = read.op_responses().into_iter().map(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().first().cloned(),
                _ => None,
            });
            let (host_kv, alive_kv) = (kvs.next().flatten(), kvs.next().flatten());
            let found = Found {
                record: host_kv.as_ref().and_then(|kv| match HostRecord::from_json(kv.value()) {
                    Ok(h) => Some(h),
                    Err(e) => {
                        tracing::warn!(key = %host_key, error = %e, "replacing a malformed host record");
                        None
                    }
                }),
                liveness: alive_kv.as_ref().map(|kv| Liveness::from_json(kv.value())),
            };
            let claimant = Claimant { record: me, boot_id: req.boot_id, take_over: req.take_over };
            let decision = decide_registration(&claimant, &found, &running);
            let host_kv = host_kv.filter(|_| found.record.is_some());
            match decision {
                Decision::Refuse(conflict) => return Err(RegistryError::HostConflict(conflict)),
                Decision::WaitForLiveness { if_still_held } => {
                    return Err(RegistryError::WaitForLiveness(if_still_held))
                }
                Decision::Reattach | Decision::Adopt => {
                    let kv = host_kv.expect("a decision to re-attach comes from a record");
                    let ttl_left = c.lease_time_to_live(kv.lease(), None).await.map(|r| r.ttl()).unwrap_or(-1);
                    if kv.lease() != 0 && ttl_left > 0 {
                        self.claim_underlay(me, kv.lease(), found.record.as_ref()).await?;
                        if self.put_host_if_unchanged(me, kv.lease(), kv.mod_revision()).await? {
                            return Ok(Registration { host_lease: kv.lease(), reattached: true, replaced: None });
                        }
                        continue;
                    }
                    // The key outlived its lease: etcd never does that, but register afresh if so.
                    if let Some(r) = self.register_fresh(req, Some(kv.mod_revision()), None).await? {
                        return Ok(r);
                    }
                }
                Decision::TakeOver { previous } => {
                    let kv = host_kv.expect("a take-over comes from a record");
                    if let Some(r) = self.register_fresh(req, Some(kv.mod_revision()), Some(previous)).await? {
                        return Ok(r);
                    }
                }
                Decision::Fresh => {
                    let expected = host_kv.map(|kv| kv.mod_revision());
                    if let Some(r) = self.register_fresh(req, expected, None).await? {
                        return Ok(r);
                    }
                }
            }
        }
        Err(RegistryError::Conflict(format!(
            "hostname '{}' changed hands while this agent registered it; try again",
            me.hostname
        )))
    }

    /// Registers under a new lease, provided the host key is still as read: absent
    /// (`expected` None) or at revision `expected`. `None` when it changed meanwhile.
    async fn register_fresh(
        &self,
        req: &RegistrationRequest<'_>,
        expected: Option<i64>,
        replaced: Option<HostRecord>,
    ) -> Result<Option<Registration>, RegistryError> {
        let mut c = self.client.clone();
        let ttl_secs = req.ttl.as_secs().max(1) as i64;
        let lease = c.lease_grant(ttl_secs, None).await.map_err(etcd("granting the host lease"))?.id();
        let registered = async {
            self.claim_underlay(req.me, lease, replaced.as_ref()).await?;
            match expected {
                Some(rev) => self.put_host_if_unchanged(req.me, lease, rev).await,
                None => self.create_host(req.me, lease).await,
            }
        }
        .await;
        match registered {
            Ok(true) => Ok(Some(Registration { host_lease: lease, reattached: false, replaced })),
            other => {
                let _ = c.lease_revoke(lease).await;
                other.map(|_| None)
            }
        }
    }

    async fn create_host(&self, me: &HostRecord, lease: i64) -> Result<bool, RegistryError> {
        let key = self.keys.host(&me.hostname);
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.as_str(), me.to_json(), Some(PutOptions::new().with_lease(lease)))]);
        let resp = self.client.clone().txn(txn).await.map_err(etcd("registering the host"))?;
        Ok(resp.succeeded())
    }

    async fn put_host_if_unchanged(&self, me: &HostRecord, lease: i64, rev: i64) -> Result<bool, RegistryError> {
        let key = self.keys.host(&me.hostname);
        let txn = Txn::new().when([Compare::mod_revision(key.as_str(), CompareOp::Equal, rev)]).and_then([TxnOp::put(
            key.as_str(),
            me.to_json(),
            Some(PutOptions::new().with_lease(lease)),
        )]);
        let resp = self.client.clone().txn(txn).await.map_err(etcd("updating the host key"))?;
        Ok(resp.succeeded())
    }

    /// Claims `underlays/<ip>` for this machine under `lease`, refusing an address another
    /// machine holds. `previous` is the registration being re-attached or replaced: its claim
    /// may be taken over, and its old address (if it differs) is released.
    async fn claim_underlay(
        &self,
        me: &HostRecord,
        lease: i64,
        previous: Option<&HostRecord>,
    ) -> Result<(), RegistryError> {
        let mut c = self.client.clone();
        let ip_key = self.keys.underlay(&me.underlay_ip);
        let value = serde_json::json!({"host": me.hostname, "system_id": me.system_id, "machine_id": me.machine_id})
            .to_string();
        let put = PutOptions::new().with_lease(lease);
        let txn = Txn::new()
            .when([Compare::create_revision(ip_key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(ip_key.as_str(), value.clone(), Some(put.clone()))])
            .or_else([TxnOp::get(ip_key.as_str(), None)]);
        let resp = c.txn(txn).await.map_err(etcd("claiming the underlay IP"))?;
        if !resp.succeeded() {
            let holder: Option<serde_json::Value> = first_get(&resp).and_then(|v| serde_json::from_slice(&v).ok());
            let field = |k: &str| holder.as_ref().and_then(|h| h[k].as_str()).unwrap_or("").to_owned();
            let (holder_machine, holder_sys, holder_host) = (field("machine_id"), field("system_id"), field("host"));
            let same_machine =
                if holder_machine.is_empty() { holder_sys == me.system_id } else { holder_machine == me.machine_id };
            let replaced = previous.is_some_and(|p| p.hostname == holder_host && p.machine_id == holder_machine);
            if !same_machine && !replaced {
                return Err(RegistryError::Conflict(format!(
                    "underlay IP {} is already registered by host '{holder_host}' (machine {}); each host needs \
                     its own --underlay-ip",
                    me.underlay_ip,
                    if holder_machine.is_empty() { &holder_sys } else { &holder_machine },
                )));
            }
            c.put(ip_key, value, Some(put)).await.map_err(etcd("claiming the underlay IP"))?;
        }
        if let Some(prev) = previous.filter(|p| p.underlay_ip != me.underlay_ip) {
            let _ = c.delete(self.keys.underlay(&prev.underlay_ip), None).await;
        }
        Ok(())
    }

    /// Keeps `lease` alive until it is lost (expired or revoked) or etcd fails; returns why.
    pub async fn keep_alive(&self, lease: i64, ttl: Duration) -> String {
        let mut c = self.client.clone();
        let (mut keeper, mut stream) = match c.lease_keep_alive(lease).await {
            Ok(k) => k,
            Err(e) => return format!("keep-alive stream failed: {e}"),
        };
        let period = (ttl / 3).max(Duration::from_millis(500));
        loop {
            if let Err(e) = keeper.keep_alive().await {
                return format!("keep-alive failed: {e}");
            }
            match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                Ok(Ok(Some(_))) => return "lease expired".into(),
                Ok(Ok(None)) => return "keep-alive stream closed".into(),
                Ok(Err(e)) => return format!("keep-alive failed: {e}"),
                Err(_) => return "keep-alive got no answer".into(),
            }
            tokio::time::sleep(period).await;
        }
    }

    /// Writes the liveness key (what it says: [`Liveness`]) under a fresh short lease; returns
    /// the lease.
    pub async fn set_alive(&self, host: &str, liveness: &Liveness, ttl: Duration) -> Result<i64, RegistryError> {
        let mut c = self.client.clone();
        let lease =
            c.lease_grant(ttl.as_secs().max(1) as i64, None).await.map_err(etcd("granting the liveness lease"))?.id();
        c.put(self.keys.alive(host), liveness.to_json(), Some(PutOptions::new().with_lease(lease)))
            .await
            .map_err(etcd("writing the liveness key"))?;
        Ok(lease)
    }

    /// The host record under `hostname` now (read from etcd, not the cache).
    pub async fn host(&self, hostname: &str) -> Result<Option<HostRecord>, RegistryError> {
        let got = self
            .client
            .clone()
            .get(self.keys.host(hostname), Some(GetOptions::new()))
            .await
            .map_err(etcd("reading the host key"))?;
        Ok(got.kvs().first().and_then(|kv| HostRecord::from_json(kv.value()).ok()))
    }
}
