//! The running agent: the parts the loops, the plug path and the API share, each with its own
//! lock, and the operations on them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use overlay_config::AgentConfig;
use tokio::sync::watch;

use crate::dataplane::{DataPlane, Memo, PassError, PassInput, Report};
use crate::host::HostState;
use crate::netlink::Netns;
use crate::ovs::Ovsdb;
use crate::plug::real::{EtcdRecords, NetlinkLinks, OvsSwitch};
use crate::plug::{HostFacts, PlugState, Plugger};
use crate::registry::{ClusterCache, Registry};

/// Counters of the passes for the metrics endpoint and status. What the agent sends is
/// counted where it is sent: OVSDB transactions by [`Ovsdb`], OpenFlow bundles by the flow
/// plane ([`crate::dataplane::FlowPlane::bundles_sent`]).
#[derive(Default)]
pub struct Metrics {
    /// Reconcile passes.
    pub reconciles: AtomicU64,
    /// Flows on the bridges, after the last pass.
    pub flows: AtomicU64,
    /// Failed reconcile passes.
    pub errors: AtomicU64,
    /// Peers in the last desired state.
    pub peers: AtomicU64,
    /// Tunnel ports in the last desired state.
    pub tunnels: AtomicU64,
}

/// What the last pass produced, for `status`.
#[derive(Default)]
pub struct LastPass {
    /// When it ended.
    pub at: Option<Instant>,
    /// What the data plane reported.
    pub report: Report,
    /// Its error, if it failed.
    pub error: Option<String>,
}

/// The running agent.
pub struct Agent {
    /// Validated configuration.
    pub config: AgentConfig,
    /// This host's standing: record, registration, own leases, conflict.
    pub host: HostState,
    /// What the plug path needs of this host.
    pub facts: HostFacts,
    /// etcd.
    pub registry: Registry,
    /// OVSDB with its replica.
    pub ovs: Ovsdb,
    /// The cluster as watched in etcd.
    pub cluster: watch::Receiver<ClusterCache>,
    /// Where ovs-vswitchd runs: the host ends of container veths go here.
    pub host_netns: Netns,
    /// The data plane.
    pub dataplane: DataPlane,
    /// Held by every data plane pass, and by a plug while it pins its tenant's VLAN with its
    /// port row; holds what passes remember.
    pub plumbing: tokio::sync::Mutex<Memo>,
    /// What concurrent plugs share.
    pub plugs: PlugState,
    /// Counters.
    pub metrics: Metrics,
    /// The last pass, for status.
    pub last: Mutex<LastPass>,
}

impl Agent {
    /// The plug logic over this agent's real components.
    pub fn plugger(&self) -> Plugger<'_, EtcdRecords<'_>, OvsSwitch<'_>, NetlinkLinks<'_>> {
        Plugger {
            records: EtcdRecords {
                registry: &self.registry,
                cluster: &self.cluster,
                host: &self.host,
                facts: &self.facts,
            },
            switch: OvsSwitch {
                ovs: &self.ovs,
                dataplane: &self.dataplane,
                plumbing: &self.plumbing,
                cluster: &self.cluster,
                host: &self.host,
                host_netns: &self.host_netns,
            },
            links: NetlinkLinks {
                host_netns: &self.host_netns,
                netdev: self.config.ovs.datapath_type == overlay_config::DatapathType::Netdev,
            },
            host: &self.facts,
            state: &self.plugs,
        }
    }

    /// One data plane pass under the plumbing lock; records what status shows. `full`
    /// compares everything afresh. Returns whether it wrote anything.
    pub async fn pass(&self, full: bool) -> Result<bool, PassError> {
        self.metrics.reconciles.fetch_add(1, Ordering::Relaxed);
        let outcome = {
            let mut memo = self.plumbing.lock().await;
            let input = PassInput { ovs: &self.ovs, cluster: &self.cluster, own_leases: self.host.own_leases(), full };
            self.dataplane.pass(&mut memo, input).await
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                self.last.lock().expect("last lock").error = Some(format!("{e:#}"));
                return Err(e);
            }
        };
        let report = outcome.report;
        self.metrics.peers.store(report.peers as u64, Ordering::Relaxed);
        self.metrics.tunnels.store(report.tunnels.len() as u64, Ordering::Relaxed);
        self.metrics.flows.store((report.flows.0 + report.flows.1) as u64, Ordering::Relaxed);
        let mut last = self.last.lock().expect("last lock");
        for c in report.conflicts.iter().filter(|c| !last.report.conflicts.contains(c)) {
            tracing::error!(conflict = %c, "cannot build a port");
        }
        for s in report.skipped.iter().filter(|s| !last.report.skipped.contains(s)) {
            tracing::warn!(peer = %s, "peer skipped");
        }
        *last = LastPass { at: Some(Instant::now()), report, error: None };
        Ok(outcome.transactions + outcome.bundles > 0)
    }

    /// The tenants this host takes part in, with their local VLANs, as the last pass saw them.
    pub fn tenant_vlans(&self) -> BTreeMap<String, u16> {
        self.last.lock().expect("last lock").report.tenant_vlans.clone()
    }
}
