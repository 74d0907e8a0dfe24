//! The watched cache: a paged list at one revision, then a watch from the next one; on
//! compaction, a broken stream or an outage, list again.

use std::time::Duration;

use etcd_client::{EventType, GetOptions, WatchOptions};
use tokio::sync::watch;

use super::cache::ClusterCache;
use super::keys::prefix_end;
use super::{etcd, Registry, RegistryError, LIST_PAGE};
use crate::backoff::Backoff;

impl Registry {
    /// Reads what the cache holds (hosts, liveness, tenants, subnet leases, endpoints), all as
    /// of one revision, in pages of [`LIST_PAGE`] keys per kind.
    ///
    /// Why pages, and only those kinds: one range over the whole prefix is one gRPC message,
    /// and the client refuses messages over 4 MiB. A prefix holding more than that (some 10k
    /// endpoints plus their address reservations, or anyone's big keys) read at once could
    /// never be listed: every relist would fail, and a restarted agent would never reconcile
    /// (the compaction test writes 40 MB under the prefix). Kinds the cache does not use (`ips/`,
    /// `vnis/`, `underlays/`, foreign keys) are not read.
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
        // Capped at 1 s, not longer: a list against a down etcd fails at once and costs nothing,
        // and after an outage the agent must see the cluster again within a second or two of
        // etcd's return (the etcd outage test wants 2 s).
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(1));
        loop {
            match self.list().await {
                Ok(cache) => {
                    backoff.reset();
                    let rev = cache.revision;
                    out.send_replace(cache);
                    let reason = self.watch_from(rev + 1, &out).await;
                    tracing::warn!(%reason, "etcd watch ended; relisting");
                }
                Err(e) => tracing::warn!(error = %e, "cannot list the registry; retrying"),
            }
            backoff.wait().await;
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
