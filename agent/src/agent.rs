//! The running agent: the parts the loops, the plug path and the API share, each with its own
//! lock, and the operations on them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use overlay_config::AgentConfig;
use tokio::sync::watch;

use crate::dataplane::{DataPlane, Memo, PassError, PassInput, Report};
use crate::gateway::{GatewayMemo, GatewayPassInput, GatewayPlane};
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
    /// The gateways the last gateway pass made.
    pub gateways: Vec<overlay::gateway::RouterSpec>,
    /// Tenants and published ports the gateway leaves out, and why.
    pub gateway_skipped: Vec<String>,
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
    /// The gateway: router namespaces and the host's nft table.
    pub gateway: GatewayPlane,
    /// Held by every gateway pass; holds what they remember.
    pub gateway_memo: tokio::sync::Mutex<GatewayMemo>,
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
                underlay: crate::gateway::underlay_v4(self.host.me.underlay_ip),
            },
            host: &self.facts,
            state: &self.plugs,
        }
    }

    /// One data plane pass (it takes the plumbing lock for what must not race a plug); records
    /// what status shows. `full`
    /// compares everything afresh. Returns whether it wrote anything.
    pub async fn pass(&self, full: bool) -> Result<bool, PassError> {
        self.metrics.reconciles.fetch_add(1, Ordering::Relaxed);
        let outcome = {
            let input = PassInput { ovs: &self.ovs, cluster: &self.cluster, own_leases: self.host.own_leases(), full };
            self.dataplane.pass(&self.plumbing, input).await
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
        let vlans = report.tenant_vlans.clone();
        self.metrics.peers.store(report.peers as u64, Ordering::Relaxed);
        self.metrics.tunnels.store(report.tunnels.len() as u64, Ordering::Relaxed);
        self.metrics.flows.store((report.flows.0 + report.flows.1) as u64, Ordering::Relaxed);
        {
            // The data plane's part is in place: status shows it before the gateway's pass.
            let mut last = self.last.lock().expect("last lock");
            for c in report.conflicts.iter().filter(|c| !last.report.conflicts.contains(c)) {
                tracing::error!(conflict = %c, "cannot build a port");
            }
            for s in report.skipped.iter().filter(|s| !last.report.skipped.contains(s)) {
                tracing::warn!(peer = %s, "peer skipped");
            }
            last.at = Some(Instant::now());
            last.report = report;
            last.error = None;
        }
        let (plan, gateway_wrote) = match self.gateway_pass(&vlans, full).await {
            Ok(g) => g,
            Err(e) => {
                self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                self.last.lock().expect("last lock").error = Some(format!("{e:#}"));
                return Err(e);
            }
        };
        let mut last = self.last.lock().expect("last lock");
        for s in plan.skipped.iter().filter(|s| !last.gateway_skipped.contains(s)) {
            tracing::warn!(what = %s, "left out of the gateway");
        }
        last.gateways = plan.routers.into_values().collect();
        last.gateway_skipped = plan.skipped;
        Ok(outcome.transactions + outcome.bundles > 0 || gateway_wrote)
    }

    /// The gateway plan of this host now: its tenants (with their VLANs), endpoints and the
    /// addresses the routers keep containers from.
    async fn gateway_plan(&self, vlans: &BTreeMap<String, u16>) -> Result<overlay::gateway::GatewayPlan, PassError> {
        use overlay::gateway::{GatewayInput, LocalTenant};
        let own = self.host_netns.all_addresses().await.map_err(PassError::HostAddresses)?;
        let transit = self.gateway.transit.cidr();
        let cache = self.cluster.borrow();
        let mut protected = self.gateway.etcd_addresses.clone();
        protected.extend(cache.hosts.values().map(|h| h.underlay_ip));
        protected.insert(self.host.me.underlay_ip);
        protected.extend(own.into_iter().filter(|a| !matches!(a, std::net::IpAddr::V4(v4) if transit.contains(v4))));
        let endpoints: Vec<&overlay::model::Endpoint> =
            cache.endpoints.of_host(&self.host.me.hostname).map(|(_, e)| e).collect();
        // A router for each tenant with containers here: a host that only holds a lease (a
        // `tenant join`, the last container gone) needs none, and adding its port to br-int
        // would make the userspace datapath reload its queues for nothing.
        let tenants = vlans
            .iter()
            .filter(|(name, _)| endpoints.iter().any(|e| &e.tenant == *name))
            .filter_map(|(name, &vlan)| {
                let tenant = cache.tenants.get(name)?;
                let mtu = overlay::mtu::container_mtu(
                    self.facts.underlay_mtu,
                    tenant.tunnel(),
                    self.facts.underlay_ipv6,
                    tenant.is_ipv6(),
                )
                .ok()?;
                Some(LocalTenant { tenant, vlan, mtu })
            })
            .collect();
        let input = GatewayInput {
            underlay_ip: self.host.me.underlay_ip,
            transit: self.gateway.transit,
            tenants,
            endpoints,
            protected,
        };
        Ok(overlay::gateway::plan(&input))
    }

    /// The gateway pass after a data plane pass: returns the plan and whether it wrote.
    async fn gateway_pass(
        &self,
        vlans: &BTreeMap<String, u16>,
        full: bool,
    ) -> Result<(overlay::gateway::GatewayPlan, bool), PassError> {
        let plan = self.gateway_plan(vlans).await?;
        let mut memo = self.gateway_memo.lock().await;
        let input = GatewayPassInput {
            plan: &plan,
            host_netns: &self.host_netns,
            ovs: &self.ovs,
            int_bridge: self.dataplane.int_bridge(),
            owner: &self.host.me.hostname,
            full,
        };
        let wrote = self.gateway.pass(&mut memo, input).await?;
        Ok((plan, wrote))
    }

    /// The tenants this host takes part in, with their local VLANs, as the last pass saw them.
    pub fn tenant_vlans(&self) -> BTreeMap<String, u16> {
        self.last.lock().expect("last lock").report.tenant_vlans.clone()
    }
}
