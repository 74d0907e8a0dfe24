//! Making the agent's Docker endpoints match Docker's, in the background:
//! - every endpoint gets its container's id as `vm-uuid` (the nova-docker key): libnetwork
//!   never tells a driver the container id, but once the container has joined, the network
//!   shows which container holds which endpoint;
//! - an endpoint Docker does not know (a call lost when this plugin was killed: Docker 20.10
//!   repeats a call to a restarted plugin without its body, so the call fails and the endpoint
//!   its first attempt plugged is never deleted) is unplugged once it has been missing from
//!   Docker's view for a whole interval (an endpoint exists a few milliseconds before its
//!   container joins).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::Plugin;

/// The background pass and what it remembers between passes (a cache: a restarted plugin
/// labels once more, which the agent does not even send to OVS when nothing changes).
pub(crate) struct Reconciler {
    plugin: Arc<Plugin>,
    interval: Duration,
    nudge: Notify,
    /// Endpoints Docker did not show, since when.
    missing: std::sync::Mutex<BTreeMap<String, Instant>>,
    /// (endpoint, container) pairs labelled.
    labelled: std::sync::Mutex<BTreeSet<(String, String)>>,
}

impl Reconciler {
    pub(crate) fn new(plugin: Arc<Plugin>, interval: Duration) -> Arc<Self> {
        Arc::new(Reconciler {
            plugin,
            interval,
            nudge: Notify::new(),
            missing: Default::default(),
            labelled: Default::default(),
        })
    }

    /// Time between passes.
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// Asks for a pass soon (a container just joined: its port can be labelled).
    pub(crate) fn nudge(&self) {
        self.nudge.notify_one();
    }

    /// Passes every interval, and soon after a nudge, until the task is dropped.
    pub(crate) async fn run(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = self.nudge.notified() => {
                    // Docker records the join once the driver has answered it.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            self.pass().await;
        }
    }

    async fn pass(&self) {
        let p = &self.plugin;
        let endpoints = match p.agent.endpoints().await {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(error = %e, "agent not answering; endpoints not compared with Docker");
                return;
            }
        };
        let mut by_network: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for e in &endpoints {
            if let Some(nid) = e.owner.as_deref().and_then(|o| o.strip_prefix("docker:")) {
                by_network.entry(nid).or_default().push(e.container_id.as_str());
            }
        }
        let now = Instant::now();
        let mut seen = BTreeSet::new();
        for (nid, eids) in by_network {
            // Endpoint -> container, as Docker shows the network; None: Docker has no such network.
            let attached: Option<BTreeMap<String, String>> = match p.docker.network(nid).await {
                Ok(net) => {
                    Some(net.containers.unwrap_or_default().into_iter().map(|(cid, a)| (a.endpoint_id, cid)).collect())
                }
                Err(e) if e.is_not_found() => None,
                Err(e) => {
                    tracing::debug!(network = %nid, error = %e, "dockerd not answering; endpoints not compared");
                    seen.extend(eids.iter().map(|e| e.to_string()));
                    continue;
                }
            };
            for eid in eids {
                seen.insert(eid.to_owned());
                match attached.as_ref().and_then(|a| a.get(eid)) {
                    Some(cid) => {
                        self.missing.lock().expect("missing").remove(eid);
                        self.label(eid, cid).await;
                    }
                    None => self.missing_from_docker(nid, eid, now).await,
                }
            }
        }
        self.missing.lock().expect("missing").retain(|e, _| seen.contains(e));
        self.labelled.lock().expect("labelled").retain(|(e, _)| seen.contains(e));
    }

    async fn label(&self, eid: &str, cid: &str) {
        let key = (eid.to_owned(), cid.to_owned());
        if self.labelled.lock().expect("labelled").contains(&key) {
            return;
        }
        match self.plugin.agent.set_vm_uuid(eid, None, cid).await {
            Ok(()) => {
                tracing::debug!(endpoint = %eid, container = %cid, "port labelled with its container");
                self.labelled.lock().expect("labelled").insert(key);
            }
            Err(e) => tracing::debug!(endpoint = %eid, error = %e, "port not labelled yet"),
        }
    }

    async fn missing_from_docker(&self, nid: &str, eid: &str, now: Instant) {
        let since = *self.missing.lock().expect("missing").entry(eid.to_owned()).or_insert(now);
        if now.duration_since(since) < self.interval {
            return;
        }
        match self.plugin.agent.unplug(eid, None).await {
            Ok(_) => {
                tracing::warn!(
                    network = %nid, endpoint = %eid,
                    "endpoint Docker does not know (a call lost to a plugin restart?) unplugged"
                );
                self.missing.lock().expect("missing").remove(eid);
            }
            Err(e) => tracing::warn!(endpoint = %eid, error = %e, "cannot unplug an endpoint Docker does not know"),
        }
    }
}
