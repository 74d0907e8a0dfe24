//! The cluster registry in etcd (layout in docs/design.md): host registration under a
//! long lease that a restarted agent re-attaches to, a short liveness key, tenants with unique
//! VNIs, flannel-style subnet leases, and a watched cache of it all.
//!
//! Every uniqueness rule is an etcd transaction (compare create_revision == 0 and create),
//! never a read followed by a write.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use ipnet::IpNet;
use overlay::model::{lease_key_segment, parse_lease_key_segment, Endpoint, HostRecord, SubnetLease, Tenant};
use tokio::sync::watch;

/// What went wrong talking to the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// etcd could not be reached or refused the request.
    #[error("etcd request failed ({context}): {source}; is etcd reachable at the configured endpoints?")]
    Etcd {
        /// What the agent was doing.
        context: String,
        /// The client error.
        #[source]
        source: etcd_client::Error,
    },
    /// Someone else holds a name or address this host claims.
    #[error("{0}")]
    Conflict(String),
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
}

fn etcd(context: impl Into<String>) -> impl FnOnce(etcd_client::Error) -> RegistryError {
    let context = context.into();
    move |source| RegistryError::Etcd { context, source }
}

/// Key layout under the configured prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (no trailing slash).
    pub fn new(prefix: &str) -> Self {
        Keys { prefix: prefix.trim_end_matches('/').to_owned() }
    }
    /// Everything the agents share.
    pub fn root(&self) -> String {
        format!("{}/", self.prefix)
    }
    fn host(&self, h: &str) -> String {
        format!("{}/hosts/{h}", self.prefix)
    }
    fn alive(&self, h: &str) -> String {
        format!("{}/alive/{h}", self.prefix)
    }
    fn underlay(&self, ip: &IpAddr) -> String {
        format!("{}/underlays/{ip}", self.prefix)
    }
    fn tenant(&self, t: &str) -> String {
        format!("{}/tenants/{t}", self.prefix)
    }
    fn vni(&self, v: u32) -> String {
        format!("{}/vnis/{v}", self.prefix)
    }
    fn subnets(&self, t: &str) -> String {
        format!("{}/subnets/{t}/", self.prefix)
    }
    fn subnet(&self, t: &str, s: &IpNet) -> String {
        format!("{}/subnets/{t}/{}", self.prefix, lease_key_segment(s))
    }
    fn endpoints(&self, t: &str) -> String {
        format!("{}/endpoints/{t}/", self.prefix)
    }
    fn ips(&self, t: &str) -> String {
        format!("{}/ips/{t}/", self.prefix)
    }
    fn ip(&self, t: &str, ip: &IpAddr) -> String {
        format!("{}/ips/{t}/{ip}", self.prefix)
    }
    fn endpoint(&self, t: &str, c: &str) -> String {
        format!("{}/endpoints/{t}/{c}", self.prefix)
    }
    fn all_endpoints(&self) -> String {
        format!("{}/endpoints/", self.prefix)
    }
    fn all_ips(&self) -> String {
        format!("{}/ips/", self.prefix)
    }
}

/// Keys per page when listing the registry: records are well under 1 KiB, so a page stays far
/// below the 4 MiB gRPC message limit.
const LIST_PAGE: i64 = 500;

/// The end of the key range of every key that starts with `prefix` (etcd's prefix rule).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The cluster as the registry shows it, kept by the watch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterCache {
    /// Registered hosts.
    pub hosts: BTreeMap<String, HostRecord>,
    /// Hosts whose liveness key exists.
    pub alive: BTreeSet<String>,
    /// Tenants.
    pub tenants: BTreeMap<String, Tenant>,
    /// Subnet leases.
    pub leases: Leases,
    /// Endpoints by key.
    pub endpoints: BTreeMap<String, Endpoint>,
    /// etcd revision this view is at.
    pub revision: i64,
}

impl ClusterCache {
    /// Applies a put (value) or delete (`None`) of `key`; garbage values are logged and
    /// treated as absent, so one bad write cannot stop the agent.
    fn apply(&mut self, keys: &Keys, key: &str, value: Option<&[u8]>) {
        let Some(rest) = key.strip_prefix(&keys.root()) else { return };
        let (kind, name) = rest.split_once('/').unwrap_or((rest, ""));
        macro_rules! upsert {
            ($map:expr, $k:expr, $decode:expr) => {{
                match value.map($decode) {
                    Some(Ok(v)) => {
                        $map.insert($k, v);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(key, error = %e, "ignoring malformed value in etcd");
                        $map.remove(&$k);
                    }
                    None => {
                        $map.remove(&$k);
                    }
                }
            }};
        }
        match kind {
            "hosts" => upsert!(self.hosts, name.to_owned(), |b| HostRecord::from_json(b).and_then(|h| {
                if h.hostname == name {
                    Ok(h)
                } else {
                    Err(overlay::error::ModelError::InvalidHostname {
                        name: format!("{} under key {name}", h.hostname),
                    })
                }
            })),
            "alive" => {
                if value.is_some() {
                    self.alive.insert(name.to_owned());
                } else {
                    self.alive.remove(name);
                }
            }
            "tenants" => upsert!(self.tenants, name.to_owned(), Tenant::from_json),
            "subnets" => {
                let (tenant, seg) = name.rsplit_once('/').unwrap_or(("", name));
                let subnet = parse_lease_key_segment(seg);
                let decoded = value.map(|b| {
                    let lease = SubnetLease::from_json(b)?;
                    if subnet.as_ref().ok() != Some(&lease.subnet) {
                        return Err(overlay::error::ModelError::InvalidLeaseKey { input: key.to_owned() });
                    }
                    Ok(lease)
                });
                match decoded {
                    Some(Ok(lease)) => self.leases.insert(tenant, lease),
                    Some(Err(e)) => {
                        tracing::warn!(key, error = %e, "ignoring malformed value in etcd");
                        if let Ok(subnet) = subnet {
                            self.leases.remove(tenant, &subnet);
                        }
                    }
                    None => {
                        if let Ok(subnet) = subnet {
                            self.leases.remove(tenant, &subnet);
                        }
                    }
                }
            }
            "endpoints" => upsert!(self.endpoints, key.to_owned(), Endpoint::from_json),
            _ => {}
        }
    }

    /// Leases of tenants that exist and fit them (a lease that does not fit its tenant is
    /// ignored with a warning by the caller's view).
    pub fn valid_leases(&self) -> Vec<SubnetLease> {
        self.leases.iter().filter(|l| self.tenants.get(&l.tenant).is_some_and(|t| l.validate_for(t).is_ok())).collect()
    }
}

/// The subnet leases of the cluster, by etcd key (`subnets/<tenant>/<subnet>`).
///
/// Kept compactly because there is one per (host, tenant): 20,000 of them, as `SubnetLease`
/// values under their full keys, held 5 MiB in 60,000 allocations (heaptrack, scale
/// benchmark). Here a lease is a few dozen bytes in the map's nodes, and the tenant and host
/// names, which every lease repeats, are shared. `SubnetLease` values are made on demand.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Leases {
    by_key: BTreeMap<(Arc<str>, IpNet), Lease>,
    names: HashSet<Arc<str>>,
    /// Size of `names` after the last purge.
    names_live: usize,
}

#[derive(Debug, Clone, PartialEq)]
struct Lease {
    /// The lease's own tenant field (its key's tenant, unless the record is inconsistent).
    tenant: Arc<str>,
    host: Arc<str>,
    underlay_ip: IpAddr,
}

impl Leases {
    /// Number of leases.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Every lease, in key order.
    pub fn iter(&self) -> impl Iterator<Item = SubnetLease> + '_ {
        self.by_key.iter().map(|((_, subnet), l)| SubnetLease {
            tenant: l.tenant.to_string(),
            subnet: *subnet,
            host: l.host.to_string(),
            underlay_ip: l.underlay_ip,
        })
    }

    /// The lease `host` holds in `tenant`, if any.
    pub fn held_by(&self, tenant: &str, host: &str) -> Option<SubnetLease> {
        let tenant: Arc<str> = Arc::from(tenant);
        let first = (tenant.clone(), IpNet::V4(Default::default()));
        self.by_key
            .range(first..)
            .take_while(|((t, _), _)| *t == tenant)
            .find(|(_, l)| &*l.host == host && l.tenant == tenant)
            .map(|((_, subnet), l)| SubnetLease {
                tenant: l.tenant.to_string(),
                subnet: *subnet,
                host: l.host.to_string(),
                underlay_ip: l.underlay_ip,
            })
    }

    fn name(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.names.get(s) {
            return shared.clone();
        }
        let new: Arc<str> = Arc::from(s);
        self.names.insert(new.clone());
        new
    }

    /// Stores `lease` under the key `subnets/<key_tenant>/<lease.subnet>`.
    fn insert(&mut self, key_tenant: &str, lease: SubnetLease) {
        let key = (self.name(key_tenant), lease.subnet);
        let value =
            Lease { tenant: self.name(&lease.tenant), host: self.name(&lease.host), underlay_ip: lease.underlay_ip };
        self.by_key.insert(key, value);
    }

    fn remove(&mut self, key_tenant: &str, subnet: &IpNet) {
        self.by_key.remove(&(Arc::from(key_tenant), *subnet));
        // Names of hosts that left go once the set has doubled since the last purge.
        if self.names.len() >= 2 * self.names_live.max(1024) {
            self.names.retain(|n| Arc::strong_count(n) > 1);
            self.names_live = self.names.len();
        }
    }
}

/// The agent's handle on etcd.
#[derive(Clone)]
pub struct Registry {
    client: Client,
    keys: Keys,
}

/// This host's registration: the lease its keys hang on.
#[derive(Debug, Clone, Copy)]
pub struct Registration {
    /// The long host lease (host key, subnet leases).
    pub host_lease: i64,
    /// True when an existing registration of this machine was re-attached.
    pub reattached: bool,
}

impl Registry {
    /// Connects (lazily: etcd may be down now and come up later).
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        auth: Option<(String, String)>,
        tls: Option<etcd_client::TlsOptions>,
    ) -> Result<Self, RegistryError> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3));
        if let Some((u, p)) = auth {
            opts = opts.with_user(u, p);
        }
        if let Some(tls) = tls {
            opts = opts.with_tls(tls);
        }
        let client = Client::connect(endpoints, Some(opts)).await.map_err(etcd("connecting"))?;
        Ok(Registry { client, keys: Keys::new(prefix) })
    }

    /// Registers this host, or re-attaches to this machine's existing registration (same
    /// `system_id`) keeping its lease, so peers never see the host key vanish. A different
    /// machine holding the hostname or underlay IP is refused with who holds it.
    pub async fn register_host(&self, me: &HostRecord, ttl: Duration) -> Result<Registration, RegistryError> {
        let mut c = self.client.clone();
        let host_key = self.keys.host(&me.hostname);
        let ip_key = self.keys.underlay(&me.underlay_ip);
        let existing = c.get(host_key.as_str(), None).await.map_err(etcd("reading the host key"))?;
        if let Some(kv) = existing.kvs().first() {
            let theirs = HostRecord::from_json(kv.value()).ok();
            match theirs {
                Some(h) if h.system_id == me.system_id => {
                    // Ours from an earlier run: keep the lease if it is still alive.
                    let ttl_left = c.lease_time_to_live(kv.lease(), None).await.map(|r| r.ttl()).unwrap_or(-1);
                    if kv.lease() != 0 && ttl_left > 0 {
                        self.claim_underlay(&mut c, me, &ip_key, kv.lease(), Some(&h)).await?;
                        let put = PutOptions::new().with_lease(kv.lease());
                        c.put(host_key.as_str(), me.to_json(), Some(put))
                            .await
                            .map_err(etcd("updating the host key"))?;
                        return Ok(Registration { host_lease: kv.lease(), reattached: true });
                    }
                    // Lease gone with the key still there cannot happen in etcd; fall through
                    // to a fresh registration if it somehow did.
                }
                Some(h) => {
                    return Err(RegistryError::Conflict(format!(
                        "hostname '{}' is already registered by another machine (system-id {}, underlay {}); \
                         choose another --hostname, or delete {host_key} if that machine is gone",
                        me.hostname, h.system_id, h.underlay_ip
                    )))
                }
                None => {
                    tracing::warn!(key = %host_key, "replacing a malformed host record");
                }
            }
        }
        let ttl_secs = ttl.as_secs().max(1) as i64;
        let lease = c.lease_grant(ttl_secs, None).await.map_err(etcd("granting the host lease"))?.id();
        self.claim_underlay(&mut c, me, &ip_key, lease, None).await?;
        let put = PutOptions::new().with_lease(lease);
        let txn = Txn::new()
            .when([Compare::create_revision(host_key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(host_key.as_str(), me.to_json(), Some(put.clone()))])
            .or_else([TxnOp::get(host_key.as_str(), None)]);
        let resp = c.txn(txn).await.map_err(etcd("registering the host"))?;
        if !resp.succeeded() {
            // A malformed record we decided to replace, or a race with another machine.
            let holder = first_get(&resp).and_then(|kv| HostRecord::from_json(&kv).ok());
            match holder {
                Some(h) if h.system_id != me.system_id => {
                    let _ = c.lease_revoke(lease).await;
                    return Err(RegistryError::Conflict(format!(
                        "hostname '{}' was just registered by another machine (system-id {}, underlay {})",
                        me.hostname, h.system_id, h.underlay_ip
                    )));
                }
                _ => {
                    c.put(host_key.as_str(), me.to_json(), Some(put)).await.map_err(etcd("registering the host"))?;
                }
            }
        }
        Ok(Registration { host_lease: lease, reattached: false })
    }

    /// Claims `underlays/<ip>` for this machine under `lease`, refusing an IP another
    /// machine holds.
    async fn claim_underlay(
        &self,
        c: &mut Client,
        me: &HostRecord,
        ip_key: &str,
        lease: i64,
        previous: Option<&HostRecord>,
    ) -> Result<(), RegistryError> {
        let value = serde_json::json!({"host": me.hostname, "system_id": me.system_id}).to_string();
        let put = PutOptions::new().with_lease(lease);
        let txn = Txn::new()
            .when([Compare::create_revision(ip_key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(ip_key, value.clone(), Some(put.clone()))])
            .or_else([TxnOp::get(ip_key, None)]);
        let resp = c.txn(txn).await.map_err(etcd("claiming the underlay IP"))?;
        if !resp.succeeded() {
            let holder: Option<serde_json::Value> = first_get(&resp).and_then(|v| serde_json::from_slice(&v).ok());
            let holder_sys = holder.as_ref().and_then(|h| h["system_id"].as_str()).unwrap_or("");
            if holder_sys != me.system_id {
                let holder_host = holder.as_ref().and_then(|h| h["host"].as_str()).unwrap_or("?").to_owned();
                return Err(RegistryError::Conflict(format!(
                    "underlay IP {} is already registered by host '{holder_host}' (system-id {holder_sys}); \
                     each host needs its own --underlay-ip",
                    me.underlay_ip
                )));
            }
            c.put(ip_key, value, Some(put)).await.map_err(etcd("claiming the underlay IP"))?;
        }
        if let Some(prev) = previous.filter(|p| p.underlay_ip != me.underlay_ip) {
            let old = self.keys.underlay(&prev.underlay_ip);
            let _ = c.delete(old.as_str(), None).await;
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

    /// Writes the liveness key under a fresh short lease; returns the lease.
    pub async fn set_alive(&self, host: &str, ttl: Duration) -> Result<i64, RegistryError> {
        let mut c = self.client.clone();
        let lease =
            c.lease_grant(ttl.as_secs().max(1) as i64, None).await.map_err(etcd("granting the liveness lease"))?.id();
        c.put(self.keys.alive(host), "1", Some(PutOptions::new().with_lease(lease)))
            .await
            .map_err(etcd("writing the liveness key"))?;
        Ok(lease)
    }

    /// Revokes a lease (the liveness lease at shutdown).
    pub async fn revoke(&self, lease: i64) {
        let _ = self.client.clone().lease_revoke(lease).await;
    }

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

    /// Returns this host's subnet lease in `tenant`, taking a free one if it has none:
    /// candidates start at an offset from the hostname, each is claimed by compare-and-create,
    /// and a lost race moves on to the next.
    pub async fn ensure_lease(
        &self,
        tenant: &Tenant,
        me: &HostRecord,
        host_lease: i64,
    ) -> Result<SubnetLease, RegistryError> {
        let mut c = self.client.clone();
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

    /// Reads what the cache holds (hosts, liveness, tenants, subnet leases, endpoints), all as
    /// of one revision, in pages of [`LIST_PAGE`] keys per kind.
    ///
    /// Why pages, and only those kinds: one range over the whole prefix is one gRPC message,
    /// and the client refuses messages over 4 MiB. The first version read the whole prefix at
    /// once, so a prefix holding more than that (some 10k endpoints plus their address
    /// reservations, or anyone's big keys) could never be listed again: every relist failed,
    /// and a restarted agent never reconciled at all (found by the compaction test, which
    /// writes 40 MB under the prefix). Kinds the cache does not use (`ips/`, `vnis/`,
    /// `underlays/`, foreign keys) are not read.
    pub async fn list(&self) -> Result<ClusterCache, RegistryError> {
        let mut c = self.client.clone();
        let mut cache = ClusterCache::default();
        // 0 = the newest revision, for the first page; every later page reads the revision the
        // first one saw, so the cache is one consistent snapshot to watch on from.
        let mut revision = 0;
        for kind in ["hosts/", "alive/", "tenants/", "subnets/", "endpoints/"] {
            let prefix = format!("{}{kind}", self.keys.root());
            let end = prefix_end(&prefix);
            let mut start = prefix.into_bytes();
            loop {
                let opts = GetOptions::new().with_range(end.clone()).with_limit(LIST_PAGE).with_revision(revision);
                let resp = c.get(start.clone(), Some(opts)).await.map_err(etcd("listing the registry"))?;
                if revision == 0 {
                    revision = resp.header().map(|h| h.revision()).unwrap_or(0);
                }
                for kv in resp.kvs() {
                    if let Ok(k) = kv.key_str() {
                        cache.apply(&self.keys, k, Some(kv.value()));
                    }
                }
                match resp.kvs().last() {
                    Some(last) if resp.more() => {
                        // The next page starts right after the last key of this one.
                        start = last.key().to_vec();
                        start.push(0);
                    }
                    _ => break,
                }
            }
        }
        cache.revision = revision;
        Ok(cache)
    }

    /// Keeps `out` current: list, then watch from the next revision; on compaction, a broken
    /// stream or an etcd outage, back off and list again. Never returns.
    pub async fn watch_forever(&self, out: watch::Sender<ClusterCache>) {
        // The backoff is capped at 1 s (jittered), not longer: a list against a down etcd fails
        // at once and costs nothing, and after an outage the agent must see the cluster again
        // within a second or two of etcd's return. With a 5 s cap (the first version) the
        // next try could come up to 5 s after etcd was back (the etcd outage test wants 2 s).
        let mut delay = Duration::from_millis(200);
        loop {
            match self.list().await {
                Ok(cache) => {
                    delay = Duration::from_millis(200);
                    let rev = cache.revision;
                    out.send_replace(cache);
                    let reason = self.watch_from(rev + 1, &out).await;
                    tracing::warn!(%reason, "etcd watch ended; relisting");
                }
                Err(e) => tracing::warn!(error = %e, "cannot list the registry; retrying"),
            }
            tokio::time::sleep(crate::daemon::jitter(delay)).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    async fn watch_from(&self, revision: i64, out: &watch::Sender<ClusterCache>) -> String {
        let mut c = self.client.clone();
        let opts = WatchOptions::new().with_prefix().with_start_revision(revision).with_progress_notify();
        let mut stream = match c.watch(self.keys.root(), Some(opts)).await {
            Ok(s) => s,
            Err(e) => return format!("watch failed: {e}"),
        };
        loop {
            let resp = match stream.message().await {
                Ok(Some(r)) => r,
                Ok(None) => return "watch stream closed".into(),
                Err(e) => return format!("watch failed: {e}"),
            };
            if resp.compact_revision() > 0 {
                return format!("watch revision {revision} was compacted (now {})", resp.compact_revision());
            }
            if resp.canceled() {
                return format!("watch cancelled: {}", resp.cancel_reason());
            }
            if resp.events().is_empty() {
                continue;
            }
            out.send_modify(|cache| {
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let Ok(key) = kv.key_str() else { continue };
                    match ev.event_type() {
                        EventType::Put => cache.apply(&self.keys, key, Some(kv.value())),
                        EventType::Delete => cache.apply(&self.keys, key, None),
                    }
                    cache.revision = cache.revision.max(kv.mod_revision());
                }
            });
        }
    }
}

/// Who holds an address: the value of `ips/<tenant>/<ip>`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IpClaim {
    /// The container the address is for.
    pub container: String,
    /// The host that plugged it.
    pub host: String,
}

impl Registry {
    /// Reserves `ip` in `tenant` for `container` on `host` by compare-and-create. Reserving an
    /// address this container already holds succeeds (plug is idempotent); one held by anyone
    /// else is a conflict naming the holder.
    pub async fn reserve_ip(&self, tenant: &str, ip: IpAddr, claim: &IpClaim) -> Result<(), RegistryError> {
        let mut c = self.client.clone();
        let key = self.keys.ip(tenant, &ip);
        let value = serde_json::to_vec(claim).expect("claim serializes");
        let tkey = self.keys.tenant(tenant);
        let txn = Txn::new()
            .when([
                Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
                Compare::create_revision(tkey.as_str(), CompareOp::Greater, 0),
            ])
            .and_then([TxnOp::put(key.as_str(), value, None)])
            .or_else([TxnOp::get(key.as_str(), None), TxnOp::get(tkey.as_str(), None)]);
        let resp = c.txn(txn).await.map_err(etcd("reserving the address"))?;
        if resp.succeeded() {
            return Ok(());
        }
        let gets = txn_gets(&resp);
        if gets.get(1).is_some_and(Option::is_none) {
            return Err(RegistryError::NotFound(format!("tenant '{tenant}' does not exist (deleted while plugging?)")));
        }
        let holder: Option<IpClaim> = gets.first().cloned().flatten().and_then(|v| serde_json::from_slice(&v).ok());
        match holder {
            Some(h) if &h == claim => Ok(()),
            Some(h) => Err(RegistryError::Conflict(format!(
                "address {ip} in tenant '{tenant}' is in use by container '{}' on host '{}'; choose another --ip or omit it",
                h.container, h.host
            ))),
            None => Err(RegistryError::Conflict(format!(
                "address {ip} in tenant '{tenant}' is reserved by a malformed record ({key}); choose another --ip"
            ))),
        }
    }

    /// The `ips/` keys under `prefix`: (the rest of the key, the claim if it decodes).
    async fn claims_under(&self, prefix: &str) -> Result<Vec<(String, Option<IpClaim>)>, RegistryError> {
        let got = self
            .client
            .clone()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(etcd("listing addresses"))?;
        Ok(got
            .kvs()
            .iter()
            .filter_map(|kv| {
                let rest = kv.key_str().ok()?.strip_prefix(prefix)?.to_owned();
                Some((rest, serde_json::from_slice(kv.value()).ok()))
            })
            .collect())
    }

    /// Every reserved address of `tenant` with its claim (malformed claims count as used).
    pub async fn ip_claims(&self, tenant: &str) -> Result<BTreeMap<IpAddr, Option<IpClaim>>, RegistryError> {
        let claims = self.claims_under(&self.keys.ips(tenant)).await?;
        Ok(claims.into_iter().filter_map(|(ip, claim)| Some((ip.parse().ok()?, claim))).collect())
    }

    /// Picks and reserves the lowest free address of this host's lease, retrying when another
    /// host wins the race for one.
    /// [`Registry::allocate_ip`] for a container that holds no address in the tenant, with the
    /// addresses this host is known to hold in it: the first free one by those is tried with
    /// one transaction, without listing the tenant's reservations (a host allocates from its
    /// own lease, so they are nearly always all there are in its subnet). A fixed `--ip` taken
    /// elsewhere in the subnet makes the try fail, and the full allocation runs.
    pub async fn allocate_ip_hinted(
        &self,
        tenant: &Tenant,
        lease: &SubnetLease,
        claim: &IpClaim,
        held_here: &BTreeSet<IpAddr>,
    ) -> Result<IpAddr, RegistryError> {
        if let Some(ip) = overlay::ipam::next_free_address(lease.subnet, tenant, held_here) {
            match self.reserve_ip(tenant.name(), ip, claim).await {
                Ok(()) => return Ok(ip),
                Err(RegistryError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.allocate_ip(tenant, lease, claim).await
    }

    pub async fn allocate_ip(
        &self,
        tenant: &Tenant,
        lease: &SubnetLease,
        claim: &IpClaim,
    ) -> Result<IpAddr, RegistryError> {
        for _ in 0..16 {
            let claims = self.ip_claims(tenant.name()).await?;
            if let Some((ip, _)) = claims.iter().find(|(_, c)| c.as_ref() == Some(claim)) {
                return Ok(*ip);
            }
            let used: BTreeSet<IpAddr> = claims.keys().copied().collect();
            let ip = overlay::ipam::next_free_address(lease.subnet, tenant, &used).ok_or_else(|| {
                RegistryError::Conflict(format!(
                    "subnet {} of tenant '{}' on this host is full; unplug containers or use a shorter --subnet-len",
                    lease.subnet,
                    tenant.name()
                ))
            })?;
            match self.reserve_ip(tenant.name(), ip, claim).await {
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
        let mut c = self.client.clone();
        let key = self.keys.ip(tenant, &ip);
        let value = serde_json::to_vec(claim).expect("claim serializes");
        let txn = Txn::new()
            .when([Compare::value(key.as_str(), CompareOp::Equal, value)])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        c.txn(txn).await.map_err(etcd("releasing the address"))?;
        Ok(())
    }

    /// Writes an endpoint record; fails if the tenant is gone.
    pub async fn put_endpoint(&self, ep: &Endpoint) -> Result<(), RegistryError> {
        let mut c = self.client.clone();
        let key = self.keys.endpoint(&ep.tenant, &ep.container_id);
        let tkey = self.keys.tenant(&ep.tenant);
        let txn = Txn::new()
            .when([Compare::create_revision(tkey.as_str(), CompareOp::Greater, 0)])
            .and_then([TxnOp::put(key, ep.to_json(), None)]);
        let resp = c.txn(txn).await.map_err(etcd("writing the endpoint"))?;
        if !resp.succeeded() {
            return Err(RegistryError::NotFound(format!("tenant '{}' was deleted while plugging", ep.tenant)));
        }
        Ok(())
    }

    /// This host's endpoint records, read from etcd (not the watch cache).
    pub async fn endpoints_of(&self, host: &str) -> Result<Vec<Endpoint>, RegistryError> {
        let mut c = self.client.clone();
        let got = c
            .get(self.keys.all_endpoints(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(etcd("listing endpoints"))?;
        Ok(endpoints_of_host(got.kvs(), host))
    }

    /// This host's endpoint records and its address reservations, in one round trip (one
    /// read-only transaction, so both come from the same revision): what a plug checks first.
    pub async fn holdings_of(&self, host: &str) -> Result<Holdings, RegistryError> {
        let mut c = self.client.clone();
        let (eps, ips) = (self.keys.all_endpoints(), self.keys.all_ips());
        let txn = Txn::new().and_then([
            TxnOp::get(eps.as_str(), Some(GetOptions::new().with_prefix())),
            TxnOp::get(ips.as_str(), Some(GetOptions::new().with_prefix())),
        ]);
        let resp = c.txn(txn).await.map_err(etcd("listing endpoints and addresses"))?;
        let mut ranges = resp.op_responses().into_iter().filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g),
            _ => None,
        });
        let (Some(e), Some(i)) = (ranges.next(), ranges.next()) else {
            return Err(etcd("listing endpoints and addresses")(etcd_client::Error::InvalidArgs(
                "etcd answered a two-get transaction without two ranges".into(),
            )));
        };
        Ok(Holdings { endpoints: endpoints_of_host(e.kvs(), host), claims: claims_of_host(i.kvs(), &ips, host) })
    }

    /// Removes an endpoint record and releases its address, in one transaction.
    pub async fn delete_endpoint(&self, ep: &Endpoint) -> Result<(), RegistryError> {
        let mut c = self.client.clone();
        let claim = IpClaim { container: ep.container_id.clone(), host: ep.host.clone() };
        let ip_key = self.keys.ip(&ep.tenant, &ep.ip);
        let claim_json = serde_json::to_vec(&claim).expect("claim serializes");
        let endpoint_key = self.keys.endpoint(&ep.tenant, &ep.container_id);
        // The address goes with the record only if this container still holds it.
        let txn = Txn::new()
            .when([Compare::value(ip_key.as_str(), CompareOp::Equal, claim_json)])
            .and_then([TxnOp::delete(endpoint_key.as_str(), None), TxnOp::delete(ip_key.as_str(), None)])
            .or_else([TxnOp::delete(endpoint_key.as_str(), None)]);
        c.txn(txn).await.map_err(etcd("deleting the endpoint"))?;
        Ok(())
    }
}

/// A host's endpoint records and address reservations ([`Registry::holdings_of`]).
#[derive(Debug, Clone, Default)]
pub struct Holdings {
    /// Its endpoint records.
    pub endpoints: Vec<Endpoint>,
    /// Its address reservations: (tenant, ip, claim).
    pub claims: Vec<(String, IpAddr, IpClaim)>,
}

fn endpoints_of_host(kvs: &[etcd_client::KeyValue], host: &str) -> Vec<Endpoint> {
    kvs.iter().filter_map(|kv| Endpoint::from_json(kv.value()).ok()).filter(|e| e.host == host).collect()
}

/// The claims of `host` among `ips/<tenant>/<ip>` keys under `prefix`.
fn claims_of_host(kvs: &[etcd_client::KeyValue], prefix: &str, host: &str) -> Vec<(String, IpAddr, IpClaim)> {
    kvs.iter()
        .filter_map(|kv| {
            let claim: IpClaim = serde_json::from_slice(kv.value()).ok()?;
            if claim.host != host {
                return None;
            }
            let (tenant, ip) = kv.key_str().ok()?.strip_prefix(prefix)?.split_once('/')?;
            Some((tenant.to_owned(), ip.parse().ok()?, claim))
        })
        .collect()
}

/// The values the `get`s of a transaction's branch found (`None` for a missing key).
fn txn_gets(resp: &etcd_client::TxnResponse) -> Vec<Option<Vec<u8>>> {
    resp.op_responses()
        .into_iter()
        .map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        })
        .collect()
}

fn first_get(resp: &etcd_client::TxnResponse) -> Option<Vec<u8>> {
    txn_gets(resp).into_iter().flatten().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end("/o/e/t/"), b"/o/e/t0".to_vec());
    }

    #[test]
    fn cache_skips_garbage_and_applies_deletes() {
        let keys = Keys::new("/overlay");
        let mut cache = ClusterCache::default();
        cache.apply(&keys, "/overlay/tenants/a", Some(b"{not json"));
        assert!(cache.tenants.is_empty());
        let t = Tenant::new(
            "a",
            overlay::model::Vni::new(5).unwrap(),
            "198.19.0.0/16".parse().unwrap(),
            overlay::model::TunnelType::Vxlan,
            24,
        )
        .unwrap();
        cache.apply(&keys, "/overlay/tenants/a", Some(&t.to_json()));
        assert_eq!(cache.tenants.len(), 1);
        cache.apply(&keys, "/overlay/tenants/a", Some(b"[]"));
        assert!(cache.tenants.is_empty(), "a garbage overwrite removes the tenant from the view");
        cache.apply(&keys, "/overlay/alive/h1", Some(b"1"));
        assert!(cache.alive.contains("h1"));
        cache.apply(&keys, "/overlay/alive/h1", None);
        assert!(cache.alive.is_empty());
        cache.apply(&keys, "/elsewhere/tenants/a", Some(&t.to_json()));
        assert!(cache.tenants.is_empty());
    }

    #[test]
    fn leases_by_key_with_shared_names() {
        let keys = Keys::new("/overlay");
        let mut cache = ClusterCache::default();
        let lease = |tenant: &str, subnet: &str, host: &str| SubnetLease {
            tenant: tenant.into(),
            subnet: subnet.parse().unwrap(),
            host: host.into(),
            underlay_ip: "192.0.2.1".parse().unwrap(),
        };
        let put = |cache: &mut ClusterCache, key: &str, l: &SubnetLease| {
            cache.apply(&keys, &format!("/overlay/subnets/{key}"), Some(&l.to_json()))
        };
        let red = lease("red", "10.1.2.0/24", "h1");
        put(&mut cache, "red/10.1.2.0-24", &red);
        put(&mut cache, "red/10.1.3.0-24", &lease("red", "10.1.3.0/24", "h2"));
        put(&mut cache, "redx/10.1.4.0-24", &lease("redx", "10.1.4.0/24", "h3"));
        // A key whose subnet is not the record's, or is not a subnet at all, is no lease.
        put(&mut cache, "red/10.1.9.0-24", &lease("red", "10.1.5.0/24", "h4"));
        put(&mut cache, "red/garbage", &lease("red", "10.1.6.0/24", "h5"));
        assert_eq!(cache.leases.len(), 3);
        assert_eq!(cache.leases.held_by("red", "h1"), Some(red.clone()));
        assert_eq!(cache.leases.held_by("red", "h3"), None, "h3 holds a lease in redx, not red");
        assert_eq!(cache.leases.held_by("blue", "h1"), None);
        let all: Vec<SubnetLease> = cache.leases.iter().collect();
        assert_eq!(all.first(), Some(&red));
        let (a, b) =
            (&cache.leases.by_key.values().next().unwrap().tenant, &cache.leases.by_key.keys().nth(1).unwrap().0);
        assert!(Arc::ptr_eq(a, b), "tenant names are shared");
        // A bad overwrite and a delete both remove the lease.
        cache.apply(&keys, "/overlay/subnets/red/10.1.2.0-24", Some(b"{"));
        assert_eq!(cache.leases.held_by("red", "h1"), None);
        cache.apply(&keys, "/overlay/subnets/red/10.1.3.0-24", None);
        assert_eq!(cache.leases.len(), 1);
    }
}
