//! `overlay-agent run`: registration, the etcd watch, the level-triggered reconcile loop, the
//! local API and metrics, and a shutdown that leaves the data plane up.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use overlay::desired::{desired_state, ClusterView, DesiredState};
use overlay::diff::{diff, diff_since, existing_vlans_from, Conflict};
use overlay::model::{HostRecord, SubnetLease, TunnelType};
use overlay_config::AgentConfig;
use ovsdb_client::{Client, Condition, Mutation, Value};
use serde_json::{json, Value as JsonValue};
use tokio::sync::{watch, Notify};

use crate::ovs;
use crate::registry::{ClusterCache, Registration, Registry, RegistryError};

/// Counters for the metrics endpoint.
#[derive(Default)]
pub struct Metrics {
    /// Reconcile passes.
    pub reconciles: AtomicU64,
    /// OVSDB transactions sent.
    pub transactions: AtomicU64,
    /// Failed reconcile passes.
    pub errors: AtomicU64,
    /// Peers in the last desired state.
    pub peers: AtomicU64,
    /// Tunnel ports in the last desired state.
    pub tunnels: AtomicU64,
}

/// What the last reconcile produced, for `status`.
#[derive(Default)]
struct LastReconcile {
    at: Option<Instant>,
    tunnels: TunnelList,
    tenant_vlans: BTreeMap<String, u16>,
    skipped: Vec<String>,
    conflicts: Vec<String>,
    error: Option<String>,
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

/// The tunnels as `status` lists them. Kept as plain data and turned into JSON only when
/// `status` is asked: as JSON objects, 20,000 tunnels held 13.7 MiB between passes (heaptrack,
/// scale benchmark). The names are in one buffer and peer and tenant names, which many tunnels
/// repeat, are shared: the list is rebuilt by every pass, and tens of thousands of small
/// allocations made in the middle of a pass's temporary memory keep its pages from being
/// given back.
#[derive(Default)]
struct TunnelList {
    names: String,
    tunnels: Vec<TunnelStatus>,
}

struct TunnelStatus {
    /// Where the name is in [`TunnelList::names`].
    name: std::ops::Range<u32>,
    peer: Arc<str>,
    tenant: Arc<str>,
    vni: u32,
    tunnel: TunnelType,
    remote_ip: std::net::IpAddr,
    local_vlan: u16,
}

impl TunnelList {
    fn new(tunnels: &[overlay::desired::TunnelPortSpec]) -> TunnelList {
        fn shared<'a>(names: &mut std::collections::HashMap<&'a str, Arc<str>>, s: &'a str) -> Arc<str> {
            names.entry(s).or_insert_with(|| Arc::from(s)).clone()
        }
        let mut shared_names = std::collections::HashMap::new();
        let mut names = String::with_capacity(tunnels.iter().map(|t| t.name.len()).sum());
        let tunnels = tunnels
            .iter()
            .map(|t| {
                let start = names.len() as u32;
                names.push_str(&t.name);
                TunnelStatus {
                    name: start..names.len() as u32,
                    peer: shared(&mut shared_names, &t.peer),
                    tenant: shared(&mut shared_names, &t.tenant),
                    vni: t.vni.get(),
                    tunnel: t.tunnel,
                    remote_ip: t.remote_ip,
                    local_vlan: t.local_vlan,
                }
            })
            .collect();
        TunnelList { names, tunnels }
    }
}

impl serde::Serialize for TunnelList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        struct One<'a>(&'a str, &'a TunnelStatus);
        impl serde::Serialize for One<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let (name, t) = (self.0, self.1);
                let mut m = s.serialize_map(Some(7))?;
                m.serialize_entry("name", name)?;
                m.serialize_entry("peer", &*t.peer)?;
                m.serialize_entry("tenant", &*t.tenant)?;
                m.serialize_entry("vni", &t.vni)?;
                m.serialize_entry("type", t.tunnel.as_str())?;
                m.serialize_entry("remote_ip", &t.remote_ip)?;
                m.serialize_entry("local_vlan", &t.local_vlan)?;
                m.end()
            }
        }
        let mut seq = s.serialize_seq(Some(self.tunnels.len()))?;
        for t in &self.tunnels {
            seq.serialize_element(&One(&self.names[t.name.start as usize..t.name.end as usize], t))?;
        }
        seq.end()
    }
}

/// The running agent, shared by the loops and the API.
pub struct Agent {
    /// Validated configuration.
    pub config: AgentConfig,
    /// This host as registered.
    pub me: HostRecord,
    /// etcd.
    pub registry: Registry,
    /// OVSDB with its replica.
    pub ovs: Client,
    /// The cluster as watched in etcd.
    pub cluster: watch::Receiver<ClusterCache>,
    registration: Mutex<Registration>,
    /// Leases this agent took, merged into the view until the watch shows them.
    own_leases: Mutex<BTreeMap<String, SubnetLease>>,
    /// Underlay MTU: configured, else the MTU of the link holding the underlay IP, else 1500.
    pub underlay_mtu: u32,
    /// Where ovs-vswitchd runs: the host ends of container veths go here.
    pub host_netns: crate::netlink::Netns,
    /// Serialises reconcile passes with plug and unplug: the local VLAN a plug reads must be
    /// the one the next reconcile keeps, and a container port is created under the same lock.
    pub(crate) plumbing_lock: tokio::sync::Mutex<()>,
    dirty: Notify,
    /// The last pass's finding, if OVSDB was in step; read and written under `plumbing_lock`.
    verified: Mutex<Option<Verified>>,
    /// Set by the periodic resync: the next pass compares every port, whatever it finds.
    full_pass_due: AtomicBool,
    /// The last pass's desired state and its inputs; read and written under `plumbing_lock`.
    computed: Mutex<Option<Computed>>,
    /// Counters.
    pub metrics: Metrics,
    last: Mutex<LastReconcile>,
}

impl Agent {
    fn owner(&self) -> &str {
        &self.me.hostname
    }

    /// Ensures this host holds a subnet lease in `tenant` (it then takes part in it).
    pub async fn join_tenant(&self, name: &str) -> Result<SubnetLease, RegistryError> {
        // Read it from etcd, not the watched cache: a tenant created a moment ago through
        // another host's agent may not have reached our watch yet.
        let tenant = self.registry.get_tenant(name).await?;
        let _guard = self.plumbing_lock.lock().await;
        self.join_tenant_locked(&tenant).await
    }

    pub(crate) async fn join_tenant_locked(
        &self,
        tenant: &overlay::model::Tenant,
    ) -> Result<SubnetLease, RegistryError> {
        let host_lease = self.registration.lock().expect("registration lock").host_lease;
        let lease = self.registry.ensure_lease(tenant, &self.me, host_lease).await?;
        self.own_leases.lock().expect("own_leases lock").insert(lease.tenant.clone(), lease.clone());
        self.dirty.notify_one();
        Ok(lease)
    }

    /// The local VLAN of `tenant`, allocating it (by a reconcile pass) if this host just joined.
    pub(crate) async fn tenant_vlan(&self, tenant: &str) -> anyhow::Result<u16> {
        // Known from the last pass: no pass needed (at 20,000 tunnel ports a full pass costs
        // tens of milliseconds). The caller holds the plumbing lock, so no pass runs
        // before its port exists, and from then on that port's tag pins the VLAN
        // (`existing_vlans_from`).
        if let Some(&vlan) = self.last.lock().expect("last lock").tenant_vlans.get(tenant) {
            return Ok(vlan);
        }
        // The plug read the tenant from etcd, but the watched cache may not show it yet (a
        // tenant created a moment ago): the view then leaves out our new lease and there is no
        // VLAN. Wait for the watch to catch up first, bounded (if it does not, the error below
        // says so). Plug right after `tenant create` failed now and then without this.
        let mut cluster = self.cluster.clone();
        let _ =
            tokio::time::timeout(Duration::from_secs(5), cluster.wait_for(|c| c.tenants.contains_key(tenant))).await;
        let (_, desired) = self.reconcile_locked().await?;
        desired
            .tenant_vlans
            .get(tenant)
            .copied()
            .with_context(|| format!("no local VLAN for tenant '{tenant}': this host holds no lease in it"))
    }

    fn view(&self, cache: &ClusterCache) -> ClusterView {
        let mut hosts = cache.hosts.clone();
        hosts.insert(self.me.hostname.clone(), self.me.clone());
        let mut leases = cache.valid_leases();
        for own in self.own_leases.lock().expect("own_leases lock").values() {
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
            datapath_type: self.config.ovs.datapath_type.as_str().to_owned(),
            int_bridge: self.config.ovs.int_bridge.clone(),
            tun_bridge: self.config.ovs.tun_bridge.clone(),
        }
    }

    /// One pass under the plumbing lock.
    async fn reconcile(&self) -> anyhow::Result<bool> {
        let _guard = self.plumbing_lock.lock().await;
        Ok(self.reconcile_locked().await?.0)
    }

    /// One pass: desired state from the cluster view, diff against the replica, and at most
    /// one transaction (more only to create more than [`ovs::CREATES_PER_TRANSACTION`] ports).
    /// Returns whether a transaction was sent, and the desired state.
    ///
    /// While the replica has not changed since a pass found nothing to write, only the tunnels
    /// whose desired state changed since that pass are compared (a peer joining or leaving
    /// touches a handful of 20,000); any change in OVSDB, and the periodic resync, make the
    /// next pass compare every port again.
    async fn reconcile_locked(&self) -> anyhow::Result<(bool, Arc<DesiredState>)> {
        self.metrics.reconciles.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        // The periodic pass computes everything afresh and compares every port.
        let full = self.full_pass_due.swap(false, Ordering::Relaxed);
        let computed = self.computed.lock().expect("computed lock").take().filter(|_| !full);
        // The view is freed when the pass ends, not before the transaction.
        let (revision, own_leases, mut view) = {
            let cache = self.cluster.borrow();
            let own_leases = self.own_leases.lock().expect("own_leases lock").clone();
            let same = computed.as_ref().is_some_and(|c| c.revision == cache.revision && c.own_leases == own_leases);
            // Built straight from the watched cache: cloning the whole cache first (20,000
            // leases at scale) only to copy it again into the view doubled the cost.
            let view = (!same).then(|| self.view(&cache));
            (cache.revision, own_leases, view)
        };
        let viewed = Instant::now();
        let bridges = [self.config.ovs.int_bridge.as_str(), self.config.ovs.tun_bridge.as_str()];
        let owner = self.owner();
        // The previous finding is dropped when the pass ends, not before the transaction: freeing
        // a desired state of 20,000 tunnels takes a few ms.
        let (root_uuid, desired, mut plan, verified, _prior) = {
            // The diff reads the replica's rows in place, under its read lock (a few ms).
            let r = self.ovs.replica();
            let observed = ovs::observe(&r, &bridges, owner);
            let (root_uuid, _) =
                ovs::root(&r).context("the Open_vSwitch table has no row: run `ovs-vsctl init` once")?;
            let prior = self.verified.lock().expect("verified lock").take().filter(|v| v.seqno == r.seqno() && !full);
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
                (_, None) => (Arc::new(desired_state(&self.view(&self.cluster.borrow()), &vlans)?), false),
            };
            if inputs_known {
                *self.computed.lock().expect("computed lock") =
                    Some(Computed { revision, own_leases, vlans: vlans.clone(), desired: desired.clone() });
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
        // Sent before the status is recorded (the JSON of every tunnel, tens of ms at 20,000),
        // which would otherwise delay every change by that much. A failure is returned after.
        let (ports, tunnels) = (std::mem::take(&mut plan.create_ports), std::mem::take(&mut plan.create_tunnels));
        let created = ports.len() + tunnels.len();
        let sent = if plan.is_empty() && created == 0 {
            None
        } else {
            // Only the desired state and what the commit check needs are kept while OVSDB
            // commits: the update it sends back would be decoded among the pass's memory, and
            // the replica's new rows would stay scattered over partly used pages once that
            // went (a cold-started agent settled 16 MiB larger than a restarted one).
            drop(view.take());
            // Each tunnel's row is made as its transaction is: all 20,000 of a cold start as
            // rows at once took 30 MB.
            let tun_bridge = desired.tun_bridge.name.as_str();
            let rows = tunnels.into_iter().map(|t| overlay::diff::tunnel_spec(&t, tun_bridge, owner));
            let mut planned = ovs::PlannedTransactions::new(&plan, ports.into_iter().chain(rows), root_uuid);
            let mut commit = ovs::Commit::new(&plan);
            let mut outcome = Ok(0);
            // Each after the one before committed. If one fails, those before it stay
            // applied, and the next pass plans what is still missing.
            while let Some((tx, inserted)) = planned.next(self.ovs.transaction()).map(|p| p.into_parts()) {
                self.metrics.transactions.fetch_add(1, Ordering::Relaxed);
                let sent_at = Instant::now();
                match self.ovs.transact_owned(tx).await {
                    Ok(o) => {
                        tracing::debug!(
                            ops = o.results.len(),
                            ms = sent_at.elapsed().as_secs_f64() * 1e3,
                            "OVSDB transaction committed"
                        );
                        commit.record(&inserted, &o);
                        outcome = outcome.map(|n| n + 1);
                    }
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                }
            }
            Some((commit, outcome))
        };
        let committed = Instant::now();
        {
            let mut last = self.last.lock().expect("last lock");
            let conflicts: Vec<String> = plan.conflicts.iter().map(|c| c.to_string()).collect();
            let skipped: Vec<String> = desired.skipped.iter().map(|s| format!("{}: {}", s.peer, s.reason)).collect();
            for c in conflicts.iter().filter(|c| !last.conflicts.contains(c)) {
                tracing::error!(conflict = %c, "cannot build a port");
            }
            for s in skipped.iter().filter(|s| !last.skipped.contains(s)) {
                tracing::warn!(peer = %s, "peer skipped");
            }
            *last = LastReconcile {
                at: Some(Instant::now()),
                tunnels: TunnelList::new(&desired.tunnels),
                tenant_vlans: desired.tenant_vlans.clone(),
                skipped,
                conflicts,
                error: None,
            };
        }
        self.metrics.peers.store(desired.peer_count() as u64, Ordering::Relaxed);
        self.metrics.tunnels.store(desired.tunnels.len() as u64, Ordering::Relaxed);
        let ms = |from: Instant, to: Instant| to.duration_since(from).as_secs_f64() * 1e3;
        let recorded = Instant::now();
        let Some((commit, outcome)) = sent else {
            *self.verified.lock().expect("verified lock") = verified;
            tracing::debug!(
                view_ms = ms(started, viewed),
                diff_ms = ms(viewed, diffed),
                status_ms = ms(committed, recorded),
                "reconcile pass: nothing to change"
            );
            return Ok((false, desired));
        };
        let transactions = outcome.context("applying the plan to OVSDB")?;
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
        // Wait for the replica to show our own commit, so the next pass does not plan the
        // same change again from stale rows. Checking the commit's own rows costs little per
        // replica change; diffing everything again did not.
        let _ = self.ovs.wait_until(Duration::from_secs(5), |r| commit.visible_in(r)).await;
        tracing::debug!(
            view_ms = ms(started, viewed),
            diff_ms = ms(viewed, diffed),
            transact_ms = ms(diffed, committed),
            status_ms = ms(committed, recorded),
            wait_ms = ms(recorded, Instant::now()),
            "reconcile pass: OVSDB updated"
        );
        Ok((true, desired))
    }

    /// The `status` answer, as JSON text. Written straight from the agent's state into one
    /// buffer: as a `serde_json::Value`, the answer at 20,000 tunnels took some 40 MiB for each
    /// call, and even the small values for 1,000 peers and a doubling buffer left 7 MiB
    /// resident after each call.
    pub fn status(&self) -> String {
        use serde::ser::{SerializeMap, SerializeSeq};
        struct Peers<'a>(&'a ClusterCache, &'a str);
        impl serde::Serialize for Peers<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(None)?;
                for h in self.0.hosts.values().filter(|h| h.hostname != self.1) {
                    seq.serialize_element(&Peer(h, self.0.alive.contains(&h.hostname)))?;
                }
                seq.end()
            }
        }
        struct Peer<'a>(&'a HostRecord, bool);
        impl serde::Serialize for Peer<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(3))?;
                m.serialize_entry("host", &self.0.hostname)?;
                m.serialize_entry("underlay_ip", &self.0.underlay_ip)?;
                m.serialize_entry("alive", &self.1)?;
                m.end()
            }
        }
        #[derive(serde::Serialize)]
        struct Status<'a> {
            host: JsonValue,
            peers: Peers<'a>,
            tenants: Vec<JsonValue>,
            tunnels: &'a TunnelList,
            endpoints: Vec<JsonValue>,
            skipped_peers: &'a [String],
            conflicts: &'a [String],
            last_error: &'a Option<String>,
            last_reconcile_ms_ago: Option<u64>,
            counters: JsonValue,
        }
        // Read in place: copying the cache and the tunnel list for this cost tens of MiB at
        // 20,000 tunnels. Neither is held across an await.
        let cache = self.cluster.borrow();
        let last = self.last.lock().expect("last lock");
        let tenants: Vec<JsonValue> = cache
            .tenants
            .values()
            .map(|t| {
                let lease = cache.leases.held_by(t.name(), &self.me.hostname);
                let mut j = crate::api::tenant_json(t);
                j["local_vlan"] = json!(last.tenant_vlans.get(t.name()));
                j["subnet"] = json!(lease.map(|l| l.subnet.to_string()));
                j
            })
            .collect();
        let endpoints: Vec<JsonValue> = cache
            .endpoints
            .values()
            .filter(|e| e.host == self.me.hostname)
            .map(|e| json!({"container": e.container_id, "tenant": e.tenant, "ip": e.ip.to_string(), "mac": e.mac.to_string(), "port": e.port}))
            .collect();
        let status = Status {
            host: json!({"name": self.me.hostname, "underlay_ip": self.me.underlay_ip.to_string(), "system_id": self.me.system_id,
                         "version": self.me.version, "ovsdb_connected": self.ovs.is_connected()}),
            peers: Peers(&cache, &self.me.hostname),
            tenants,
            tunnels: &last.tunnels,
            endpoints,
            skipped_peers: &last.skipped,
            conflicts: &last.conflicts,
            last_error: &last.error,
            last_reconcile_ms_ago: last.at.map(|a| a.elapsed().as_millis() as u64),
            counters: json!({
                "reconciles": self.metrics.reconciles.load(Ordering::Relaxed),
                "ovsdb_transactions": self.metrics.transactions.load(Ordering::Relaxed),
                "errors": self.metrics.errors.load(Ordering::Relaxed),
            }),
        };
        // A tunnel is about 150 bytes of JSON and a peer about 70: sized up front, the buffer
        // is allocated once (and, when large, mapped on its own and unmapped when dropped).
        let estimate = 4096 + 200 * last.tunnels.tunnels.len() + 100 * cache.hosts.len();
        let mut out = Vec::with_capacity(estimate);
        serde_json::to_writer(&mut out, &status).expect("the status serializes to JSON");
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }

    /// Prometheus text exposition.
    pub fn metrics_text(&self) -> String {
        let m = &self.metrics;
        let g = |v: &AtomicU64| v.load(Ordering::Relaxed);
        format!(
            "# HELP overlay_reconciles_total Reconcile passes.\n# TYPE overlay_reconciles_total counter\noverlay_reconciles_total {}\n\
             # HELP overlay_ovsdb_transactions_total OVSDB transactions sent.\n# TYPE overlay_ovsdb_transactions_total counter\noverlay_ovsdb_transactions_total {}\n\
             # HELP overlay_reconcile_errors_total Failed reconcile passes.\n# TYPE overlay_reconcile_errors_total counter\noverlay_reconcile_errors_total {}\n\
             # HELP overlay_peers Peer hosts with at least one tunnel.\n# TYPE overlay_peers gauge\noverlay_peers {}\n\
             # HELP overlay_tunnels Tunnel ports desired.\n# TYPE overlay_tunnels gauge\noverlay_tunnels {}\n\
             # HELP overlay_ovsdb_connected 1 while the OVSDB session is up.\n# TYPE overlay_ovsdb_connected gauge\noverlay_ovsdb_connected {}\n",
            g(&m.reconciles),
            g(&m.transactions),
            g(&m.errors),
            g(&m.peers),
            g(&m.tunnels),
            u8::from(self.ovs.is_connected()),
        )
    }
}

async fn connect_ovsdb(config: &AgentConfig) -> anyhow::Result<Client> {
    let remote: ovsdb_client::Remote = config.ovs.remote.to_string().parse()?;
    let mut delay = Duration::from_millis(200);
    loop {
        let mut options = ovs::client_options(remote.clone());
        options.connection.tls = config.ovs.tls.as_ref().map(|t| ovsdb_client::TlsSettings {
            ca_cert: t.ca_cert.clone(),
            certificate: t.certificate.clone(),
            private_key: t.private_key.clone(),
        });
        match Client::connect(options).await {
            Ok(c) => return Ok(c),
            Err(e @ ovsdb_client::RpcError::BadRemote { .. }) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "OVSDB not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The machine id, creating the agent's own in OVSDB when OVS has none.
async fn ensure_system_id(ovs: &Client) -> anyhow::Result<String> {
    if let Some(id) = ovs::system_id(&ovs.replica()) {
        return Ok(id);
    }
    let (root, _) =
        ovs::root(&ovs.replica()).context("the Open_vSwitch table has no row: run `ovs-vsctl init` once")?;
    let id =
        std::fs::read_to_string("/proc/sys/kernel/random/uuid").context("generating a system id")?.trim().to_owned();
    let mut tx = ovs.transaction();
    tx.mutate(
        "Open_vSwitch",
        vec![Condition::eq("_uuid", root)],
        vec![Mutation::insert("external_ids", Value::map([("overlay-system-id", id.as_str())]))],
    );
    ovs.transact(&tx).await.context("storing the agent's system id in OVSDB")?;
    tracing::info!(system_id = %id, "no OVS system-id; created the agent's own");
    Ok(id)
}

/// TLS options from the configured CA and client certificate (files read now, so a wrong path
/// is reported at start, naming the file).
fn etcd_tls(config: &AgentConfig) -> anyhow::Result<Option<etcd_client::TlsOptions>> {
    let Some(tls) = &config.etcd.tls else { return Ok(None) };
    let read = |p: &std::path::Path, what: &str| {
        std::fs::read(p).with_context(|| format!("reading the etcd {what} {} (etcd.{what}_file)", p.display()))
    };
    let mut opts = etcd_client::TlsOptions::new();
    match &tls.ca_file {
        Some(ca) => opts = opts.ca_certificate(etcd_client::Certificate::from_pem(read(ca, "ca")?)),
        None => opts = opts.with_native_roots(),
    }
    if let Some(id) = &tls.identity {
        opts = opts.identity(etcd_client::Identity::from_pem(read(&id.cert_file, "cert")?, read(&id.key_file, "key")?));
    }
    Ok(Some(opts))
}

async fn register_with_retry(registry: &Registry, me: &HostRecord, ttl: Duration) -> anyhow::Result<Registration> {
    let mut delay = Duration::from_millis(200);
    loop {
        match registry.register_host(me, ttl).await {
            Ok(r) => return Ok(r),
            Err(e @ RegistryError::Conflict(_)) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot register in etcd yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
    let ovs = connect_ovsdb(&config).await?;
    let system_id = ensure_system_id(&ovs).await?;
    let me = HostRecord {
        hostname: config.hostname.clone(),
        underlay_ip: config.underlay_ip,
        system_id,
        tunnel_types: vec![TunnelType::Vxlan, TunnelType::Gre],
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    me.validate().context("this host's record is invalid")?;
    let auth = config.etcd.auth.as_ref().map(|a| (a.username.clone(), a.password.expose().to_owned()));
    let registry = Registry::connect(&config.etcd.endpoints, &config.etcd.prefix, auth, etcd_tls(&config)?).await?;
    let registration = register_with_retry(&registry, &me, config.timers.host_ttl).await?;
    tracing::info!(
        host = %me.hostname, underlay_ip = %me.underlay_ip, lease = registration.host_lease,
        reattached = registration.reattached, "registered in etcd"
    );

    let host_netns = match &config.host_netns {
        Some(p) => crate::netlink::Netns::open(p).await,
        None => crate::netlink::Netns::current().await,
    }
    .context("opening the host network namespace")?;
    let underlay_mtu = match config.underlay_mtu {
        Some(m) => m,
        None => match host_netns.mtu_of_address(config.underlay_ip).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                tracing::warn!(underlay_ip = %config.underlay_ip, "no interface holds the underlay IP; assuming MTU 1500 (set underlay_mtu)");
                1500
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the underlay MTU; assuming 1500 (set underlay_mtu)");
                1500
            }
        },
    };
    tracing::info!(underlay_mtu, "underlay MTU");
    let (cluster_tx, cluster_rx) = watch::channel(ClusterCache::default());
    let agent = Arc::new(Agent {
        config: config.clone(),
        me: me.clone(),
        registry: registry.clone(),
        ovs,
        cluster: cluster_rx,
        registration: Mutex::new(registration),
        own_leases: Mutex::new(BTreeMap::new()),
        underlay_mtu,
        host_netns,
        plumbing_lock: tokio::sync::Mutex::new(()),
        dirty: Notify::new(),
        verified: Mutex::new(None),
        full_pass_due: AtomicBool::new(false),
        computed: Mutex::new(None),
        metrics: Metrics::default(),
        last: Mutex::new(LastReconcile::default()),
    });

    let mut tasks = Vec::new();
    {
        let r = registry.clone();
        tasks.push(tokio::spawn(async move { r.watch_forever(cluster_tx).await }));
    }
    tasks.push(tokio::spawn(keep_host_lease(agent.clone())));
    let liveness = Arc::new(Mutex::new(None::<i64>));
    tasks.push(tokio::spawn(keep_alive_key(agent.clone(), liveness.clone())));
    tasks.push(crate::api::serve(agent.clone(), config.api_socket.clone()).await?);
    if let Some(addr) = config.metrics_address {
        tasks.push(crate::metrics::serve(agent.clone(), addr).await?);
    }
    tasks.push(tokio::spawn(reconcile_loop(agent.clone())));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down, data plane left up"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down, data plane left up"),
    }
    for t in &tasks {
        t.abort();
    }
    // The host key and subnet leases stay (their lease outlives us): peers keep their tunnels
    // and a restarted agent re-attaches. Only the liveness key goes, so status shows us down.
    let liveness_lease = *liveness.lock().expect("liveness lock");
    if let Some(l) = liveness_lease {
        let _ = tokio::time::timeout(Duration::from_secs(2), registry.revoke(l)).await;
    }
    let _ = std::fs::remove_file(&config.api_socket);
    Ok(())
}

async fn keep_host_lease(agent: Arc<Agent>) {
    loop {
        let lease = agent.registration.lock().expect("registration lock").host_lease;
        let reason = agent.registry.keep_alive(lease, agent.config.timers.host_ttl).await;
        tracing::warn!(%reason, "host lease keep-alive interrupted");
        // Re-attach (same lease if it survived) or register afresh, then restore our leases.
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match agent.registry.register_host(&agent.me, agent.config.timers.host_ttl).await {
                Ok(reg) => {
                    let renewed = reg.host_lease != lease;
                    *agent.registration.lock().expect("registration lock") = reg;
                    if renewed {
                        tracing::warn!(lease = reg.host_lease, "host lease was lost; registered again");
                        let tenants: Vec<String> =
                            agent.last.lock().expect("last lock").tenant_vlans.keys().cloned().collect();
                        for t in tenants {
                            if let Err(e) = agent.join_tenant(&t).await {
                                tracing::warn!(tenant = %t, error = %e, "could not restore the subnet lease");
                            }
                        }
                    }
                    break;
                }
                Err(e) => tracing::debug!(error = %e, "re-registration failed; retrying"),
            }
        }
    }
}

async fn keep_alive_key(agent: Arc<Agent>, current: Arc<Mutex<Option<i64>>>) {
    let ttl = agent.config.timers.liveness_ttl;
    loop {
        match agent.registry.set_alive(&agent.me.hostname, ttl).await {
            Ok(lease) => {
                *current.lock().expect("liveness lock") = Some(lease);
                let reason = agent.registry.keep_alive(lease, ttl).await;
                tracing::debug!(%reason, "liveness keep-alive interrupted");
            }
            Err(e) => tracing::debug!(error = %e, "cannot write the liveness key"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Sets glibc's allocator up for a process whose work comes in bursts of tens of MiB that are
/// freed at once (a reconcile pass at 20,000 ports, a monitor update of as many rows). Call
/// before any thread is started.
///
/// - One arena for the whole process instead of one per thread that allocates. The work that
///   allocates is one reconcile pass at a time, but the runtime moves it between worker
///   threads, and with an arena per thread several grew to the pass's peak: during the scale
///   benchmark's peer events the RSS reached 277 MiB with them, 190 MiB with one.
/// - Blocks of 1 MiB and more always get their own mapping, given back when freed. By default
///   glibc raises that threshold to the largest block freed so far (up to 32 MiB), and the
///   threshold for giving back the top of the heap with it: after the first large message the
///   agent's big buffers (message texts, a status answer) stayed in the heap for good.
#[allow(unsafe_code)]
pub fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes no pointers; called before other threads exist.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1);
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Keeps glibc from holding on to memory the agent has freed.
///
/// At 20,000 tunnel ports a reconcile pass builds and drops some 65 MiB (observed state,
/// desired state, diff) over a heap of about 40 MiB that stays. glibc keeps freed pages, so
/// without help the RSS sits at the high-water mark of the passes (230 MiB at the end of the
/// scale benchmark, with a live heap of 40 MiB).
struct MemoryReleaser {
    /// Resident bytes right after the last trim.
    resident_after_trim: u64,
}

impl MemoryReleaser {
    fn new() -> Self {
        MemoryReleaser { resident_after_trim: 0 }
    }

    /// After a pass: returns freed pages to the kernel if the process grew since the last time
    /// by more than an eighth (and 4 MiB). Trimming a heap of this size takes 10-60 ms, so
    /// passes that allocated little skip it.
    fn after_pass(&mut self) {
        let Some(now) = resident_bytes() else { return };
        if now <= self.resident_after_trim + (self.resident_after_trim / 8).max(4 << 20) {
            return;
        }
        let started = Instant::now();
        trim();
        self.resident_after_trim = resident_bytes().unwrap_or(now);
        tracing::debug!(
            took = ?started.elapsed(),
            before_mib = now >> 20,
            after_mib = self.resident_after_trim >> 20,
            "freed memory returned to the kernel"
        );
    }
}

/// VmRSS of this process.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().strip_suffix("kB")?.trim();
    kib.parse::<u64>().ok().map(|k| k << 10)
}

#[allow(unsafe_code)]
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and only returns free pages of the heap to the
    // kernel; glibc makes it safe to call from any thread at any time.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// `d` scaled by 0.8..1.2, so agents retrying after the same outage do not retry in step.
pub(crate) fn jitter(d: Duration) -> Duration {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.subsec_nanos()).unwrap_or(0);
    d.mul_f64(0.8 + f64::from(nanos % 400) / 1000.0)
}

/// Events only mark the state dirty; this loop does the work, one pass at a time.
async fn reconcile_loop(agent: Arc<Agent>) {
    let mut cluster = agent.cluster.clone();
    let mut ovs_changes = agent.ovs.changes();
    let mut backoff = Duration::from_millis(200);
    let resync = agent.config.timers.resync_interval;
    let mut memory = MemoryReleaser::new();
    // Never reconcile against an empty view: before the first etcd list arrives, every tunnel
    // would look unwanted and a restart would tear the mesh down and build it again.
    if cluster.wait_for(|c| c.revision > 0).await.is_err() {
        return;
    }
    // A crash mid-plug or mid-unplug left half a container; finish the job before anything else.
    let mut delay = Duration::from_millis(200);
    while let Err(e) = agent.recover().await {
        tracing::warn!(error = %format!("{e:#}"), "repairing interrupted plugs failed; retrying");
        tokio::time::sleep(jitter(delay)).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
    loop {
        match agent.reconcile().await {
            Ok(_) => {
                backoff = Duration::from_millis(200);
                memory.after_pass();
            }
            Err(e) => {
                agent.metrics.errors.fetch_add(1, Ordering::Relaxed);
                let msg = format!("{e:#}");
                tracing::warn!(error = %msg, retry_in = ?backoff, "reconcile failed");
                agent.last.lock().expect("last lock").error = Some(msg);
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        }
        tokio::select! {
            _ = agent.dirty.notified() => {}
            r = cluster.changed() => if r.is_err() { return },
            r = ovs_changes.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(resync) => agent.full_pass_due.store(true, Ordering::Relaxed),
        }
        // Coalesce a burst of events (a peer registering writes several keys) into one pass.
        tokio::time::sleep(Duration::from_millis(20)).await;
        cluster.borrow_and_update();
        ovs_changes.borrow_and_update();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_tunnels_share_names_and_keep_their_json() {
        let spec = |tenant: &str, vni: u32| overlay::desired::TunnelPortSpec {
            name: format!("vx-{vni}"),
            tenant: tenant.into(),
            vni: overlay::model::Vni::new(vni).unwrap(),
            peer: "peer-1".into(),
            remote_ip: "10.0.0.2".parse().unwrap(),
            local_ip: "10.0.0.1".parse().unwrap(),
            tunnel: TunnelType::Vxlan,
            local_vlan: 3,
        };
        let list = TunnelList::new(&[spec("red", 100), spec("blue", 200)]);
        assert!(Arc::ptr_eq(&list.tunnels[0].peer, &list.tunnels[1].peer));
        assert_eq!(
            serde_json::to_value(&list).unwrap(),
            json!([{"name": "vx-100", "peer": "peer-1", "tenant": "red", "vni": 100, "type": "vxlan",
                    "remote_ip": "10.0.0.2", "local_vlan": 3},
                   {"name": "vx-200", "peer": "peer-1", "tenant": "blue", "vni": 200, "type": "vxlan",
                    "remote_ip": "10.0.0.2", "local_vlan": 3}])
        );
    }
}
