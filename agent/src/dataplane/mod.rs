//! The boundary between the desired state and what realises it. The daemon hands a pass the
//! cluster as watched and this host's own leases; the data plane makes the switch match and
//! reports what `status` shows. Status, the registry and the plug path know only this module's
//! [`Report`], [`DataPlane::tenant_vlan`] and the container-port calls, not how the data plane
//! is built.
//!
//! The data plane is two layers: the bridges, patch ports and one tunnel port per tenant in
//! OVSDB ([`bridges`]), and the flow pipeline on both bridges over OpenFlow ([`flows`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use overlay::desired::DesiredState;
use overlay::model::{MacAddr, SubnetLease};
use overlay_config::AgentConfig;
use tokio::sync::watch;

use crate::ovs::Ovsdb;
use crate::registry::ClusterCache;

mod bridges;
mod flows;
mod inputs;

pub use flows::FlowPlane;

/// What a pass works from.
pub struct PassInput<'a> {
    /// OVSDB.
    pub ovs: &'a Ovsdb,
    /// The cluster as watched.
    pub cluster: &'a watch::Receiver<ClusterCache>,
    /// Leases this agent took that the watch may not show yet.
    pub own_leases: BTreeMap<String, SubnetLease>,
    /// Compare everything afresh (the periodic resync): the switch's flows are read back.
    pub full: bool,
}

/// What a pass did.
pub struct PassOutcome {
    /// OVSDB transactions sent.
    pub transactions: usize,
    /// OpenFlow bundles sent.
    pub bundles: usize,
    /// What status shows.
    pub report: Report,
}

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// OVS was never initialised.
    #[error("the Open_vSwitch table has no row: run `ovs-vsctl init` once")]
    NoRootRow,
    /// The desired state cannot be computed (configuration, VLANs exhausted).
    #[error(transparent)]
    Desired(#[from] overlay::DesiredError),
    /// OVSDB refused or lost a transaction.
    #[error("applying the bridges and ports to OVSDB: {0}")]
    Transact(#[source] ovsdb_client::TransactError),
    /// No OpenFlow session with a bridge came up: its management socket is not where the agent
    /// looks, or ovs-vswitchd does not run or lacks the bridge.
    #[error(
        "cannot reach ovs-vswitchd for the flows of {bridge}: {source}; check that ovs-vswitchd runs and has the \
         bridge, and that --ovs-rundir (ovs.rundir) is the directory it runs in (its OVS_RUNDIR)"
    )]
    SwitchUnreachable {
        /// The bridge.
        bridge: String,
        /// The session that did not come up (it names the socket).
        #[source]
        source: openflow_client::ClientError,
    },
    /// A bridge's flows could not be read or changed.
    #[error("programming the flows of {bridge}: {source}")]
    OpenFlow {
        /// The bridge.
        bridge: String,
        /// What failed.
        #[source]
        source: openflow_client::ClientError,
    },
    /// The gateway (router namespaces, nft tables) could not be made to match.
    #[error(transparent)]
    Gateway(#[from] crate::gateway::GatewayError),
    /// The host namespace's addresses (protected from containers) could not be read.
    #[error("reading the host namespace's addresses")]
    HostAddresses(#[source] crate::netlink::NetlinkError),
    /// A flow the pipeline computed is not valid OpenFlow: a bug of the agent.
    #[error("the flow pipeline built an invalid flow ({spec}); please report this")]
    InvalidFlow {
        /// The flow, as computed.
        spec: String,
        /// Why it is invalid.
        #[source]
        source: openflow_client::FlowError,
    },
}

/// A tunnel port as status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelReport {
    /// Port name.
    pub name: String,
    /// Its tenant.
    pub tenant: String,
    /// The key.
    pub vni: u32,
    /// `vxlan` or `gre`.
    pub kind: &'static str,
    /// The tenant's VLAN.
    pub local_vlan: u16,
    /// Its ofport, once known.
    pub ofport: Option<u32>,
    /// How many hosts it reaches.
    pub peers: usize,
}

/// What the data plane built, for `status` and the metrics.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Local VLAN of every tenant this host takes part in.
    pub tenant_vlans: BTreeMap<String, u16>,
    /// The tunnel ports.
    pub tunnels: Vec<TunnelReport>,
    /// Flows on br-tun per tenant.
    pub tenant_flows: BTreeMap<String, usize>,
    /// Flows on br-tun per peer underlay address.
    pub peer_flows: BTreeMap<IpAddr, usize>,
    /// Flows per bridge: (br-tun, br-int).
    pub flows: (usize, usize),
    /// Peers left out, and why.
    pub skipped: Vec<String>,
    /// What cannot be built because something else is in the way.
    pub conflicts: Vec<String>,
    /// Distinct peers this host tunnels to.
    pub peers: usize,
}

/// What passes remember between them; lives inside the plumbing lock, which a pass holds while
/// it writes OVSDB and br-int, and every change of a container port holds. What is
/// cluster-sized (the desired state, br-tun's flows) is computed and applied outside it, so a
/// plug never waits for it.
#[derive(Default)]
pub struct Memo {
    /// The last desired state applied (local VLANs for plugs).
    desired: Option<Arc<DesiredState>>,
    /// Bumped whenever a pass applies a desired state: a state computed outside the lock
    /// before another pass applied its own may miss what that one allocated (a VLAN a plug
    /// pinned), and is computed again.
    generation: u64,
    /// What the agent knows br-int holds.
    int: flows::Held,
}

/// The data plane of this host.
pub struct DataPlane {
    owner: String,
    me: overlay::model::HostRecord,
    datapath_type: String,
    int_bridge: String,
    tun_bridge: String,
    /// The last desired bridges computed, with what they were computed from.
    bridges_memo: std::sync::Mutex<Option<bridges::Memo>>,
    /// br-tun's tenant inputs as the last pass built them.
    tun_inputs: std::sync::Mutex<inputs::TunInputs>,
    /// The flows.
    pub flows: FlowPlane,
}

impl DataPlane {
    /// The data plane `me` builds with `config`'s bridges; it programs their flows through
    /// ovs-vswitchd's management sockets (connecting in the background: the bridges may not
    /// exist yet).
    pub fn new(me: overlay::model::HostRecord, config: &AgentConfig) -> Self {
        DataPlane {
            owner: me.hostname.clone(),
            me,
            datapath_type: config.ovs.datapath_type.as_str().to_owned(),
            int_bridge: config.ovs.int_bridge.clone(),
            tun_bridge: config.ovs.tun_bridge.clone(),
            bridges_memo: std::sync::Mutex::new(None),
            tun_inputs: std::sync::Mutex::default(),
            flows: FlowPlane::start(&config.ovs.rundir, &config.ovs.int_bridge, &config.ovs.tun_bridge),
        }
    }

    /// The integration bridge, where container ports go.
    pub fn int_bridge(&self) -> &str {
        &self.int_bridge
    }

    /// The local VLAN of `tenant` as the last pass computed it.
    pub fn tenant_vlan(&self, memo: &Memo, tenant: &str) -> Option<u16> {
        memo.desired.as_ref().and_then(|d| d.tenant_vlans.get(tenant).copied())
    }

    /// One pass: the bridges and ports in OVSDB and br-int's flows under the plumbing lock,
    /// then br-tun's flows under br-tun's own lock.
    pub async fn pass(
        &self,
        plumbing: &tokio::sync::Mutex<Memo>,
        input: PassInput<'_>,
    ) -> Result<PassOutcome, PassError> {
        let started = std::time::Instant::now();
        let seen = plumbing.lock().await.generation;
        let computed = self.desired_bridges(&input)?;
        let computed_in = started.elapsed();
        let (desired, transactions, conflicts, int_flows, int_bundles) = {
            let mut memo = plumbing.lock().await;
            let desired = if memo.generation == seen { computed } else { self.desired_bridges(&input)? };
            let (transactions, conflicts, int_flows, bundles) = self.apply_locked(&mut memo, &input, &desired).await?;
            (desired, transactions, conflicts, int_flows, bundles)
        };
        let locked_in = started.elapsed() - computed_in;
        let tun_input = {
            let cache = input.cluster.borrow();
            let mut memo = self.tun_inputs.lock().expect("tun inputs");
            inputs::tun_input(&mut memo, &desired, &cache, &input.ovs.replica(), &self.owner)
        };
        let (tun_bundles, tun_flows) = self.flows.apply_tun(&tun_input, input.full).await?;
        let ms = |d: std::time::Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
        tracing::debug!(
            desired_ms = ms(computed_in),
            locked_ms = ms(locked_in),
            tun_ms = ms(started.elapsed() - computed_in - locked_in),
            flows = tun_flows.len() + int_flows,
            "pass timings"
        );
        let mut report = report(&desired, &tun_input, &tun_flows, conflicts);
        report.flows.1 = int_flows;
        Ok(PassOutcome { transactions, bundles: int_bundles + tun_bundles, report })
    }

    /// What a pass does under the plumbing lock: `desired` into OVSDB, then br-int's flows
    /// (this host's ports only). Returns the transactions, the conflicts, br-int's flow count
    /// and its bundles.
    async fn apply_locked(
        &self,
        memo: &mut Memo,
        input: &PassInput<'_>,
        desired: &Arc<DesiredState>,
    ) -> Result<(usize, Vec<String>, usize, usize), PassError> {
        let (transactions, conflicts, emptied) = self.apply_bridges(input, desired).await?;
        if emptied.contains(&self.int_bridge) {
            memo.int.forget();
        }
        if emptied.contains(&self.tun_bridge) {
            self.flows.tun_emptied();
        }
        memo.desired = Some(desired.clone());
        memo.generation += 1;
        let ports = {
            let cache = input.cluster.borrow();
            let recorded: std::collections::HashSet<&str> =
                cache.endpoints.of_host(&self.owner).map(|(_, e)| e.port.as_str()).collect();
            self.flows.forget_recorded(&recorded);
            let replica = input.ovs.replica();
            let ports = inputs::port_inputs(&cache, &replica, &self.owner, &self.flows.pending());
            (ports, inputs::gateway_port_inputs(desired, &cache, &replica))
        };
        let int_flows = overlay::pipeline::int_flows(&ports.0, &ports.1);
        let bundles = self.flows.apply_int(&mut memo.int, &int_flows, input.full).await?;
        Ok((transactions, conflicts, int_flows.len(), bundles))
    }

    /// The plumbing lock, held, with `tenant`'s local VLAN, for a plug (`None` if the tenant
    /// has none even after a pass). When no pass has given the tenant a VLAN yet (this host has
    /// just joined it), the OVSDB half of a pass gives it one: the watched cache is waited for
    /// (at most `wait`: a tenant created a moment ago may not be in it yet) and the desired
    /// bridges computed before the lock is taken; under the lock they are only written, with
    /// br-int's flows. br-tun's flows follow in the reconcile loop's next pass.
    pub async fn lock_with_vlan<'m>(
        &self,
        plumbing: &'m tokio::sync::Mutex<Memo>,
        input: PassInput<'_>,
        tenant: &str,
        wait: std::time::Duration,
    ) -> Result<(tokio::sync::MutexGuard<'m, Memo>, Option<u16>), PassError> {
        let seen = {
            let memo = plumbing.lock().await;
            if let Some(vlan) = self.tenant_vlan(&memo, tenant) {
                return Ok((memo, Some(vlan)));
            }
            memo.generation
        };
        let mut cluster = input.cluster.clone();
        let _ = tokio::time::timeout(wait, cluster.wait_for(|c| c.tenants.contains_key(tenant))).await;
        let computed = self.desired_bridges(&input)?;
        let mut memo = plumbing.lock().await;
        if let Some(vlan) = self.tenant_vlan(&memo, tenant) {
            // A pass (or another plug) ran meanwhile and gave the tenant its VLAN.
            return Ok((memo, Some(vlan)));
        }
        let desired = if memo.generation == seen { computed } else { self.desired_bridges(&input)? };
        self.apply_locked(&mut memo, &input, &desired).await?;
        let vlan = self.tenant_vlan(&memo, tenant);
        Ok((memo, vlan))
    }

    /// Registers a container port a plug is making, before its row exists: its ofport is
    /// requested, and its flows put in: open to `known` (the container's MAC and address), or,
    /// until the plug knows them, dropping everything from it. Returns the ofport to request.
    pub async fn reserve_port(
        &self,
        memo: &mut Memo,
        ovs: &Ovsdb,
        port: &str,
        known: Option<(MacAddr, IpAddr)>,
    ) -> Result<u32, PassError> {
        self.flows.reserve_port(&mut memo.int, ovs, &self.int_bridge, port, known).await
    }

    /// The plug of `port` knows its container's MAC and address: its flows let that through.
    pub async fn allow_port(
        &self,
        memo: &mut Memo,
        ovs: &Ovsdb,
        port: &str,
        endpoint: (MacAddr, IpAddr),
    ) -> Result<(), PassError> {
        self.flows.allow_port(&mut memo.int, ovs, port, endpoint).await
    }

    /// The plug of `port` is over: once the watched cache shows its record (or at once if it
    /// failed), passes take the port's flows from the record.
    pub fn release_port(&self, port: &str, succeeded: bool) {
        self.flows.release_port(port, succeeded);
    }
}

fn report(
    desired: &DesiredState,
    pipeline: &overlay::pipeline::PipelineInput,
    tun_flows: &overlay::pipeline::TunGroups,
    conflicts: Vec<String>,
) -> Report {
    let (by_vlan, peer_flows) = tun_flows.counts();
    let tenant_flows =
        desired.tenant_vlans.iter().map(|(t, v)| (t.clone(), by_vlan.get(v).copied().unwrap_or(0))).collect();
    let tunnels = desired
        .tunnels
        .iter()
        .map(|t| TunnelReport {
            name: t.name.clone(),
            tenant: t.tenant.clone(),
            vni: t.vni.get(),
            kind: t.tunnel.as_str(),
            local_vlan: t.local_vlan,
            ofport: pipeline.tenants.get(&t.tenant).and_then(|i| i.tunnel_port),
            peers: desired.members.get(&t.tenant).map_or(0, Vec::len),
        })
        .collect();
    Report {
        tenant_vlans: desired.tenant_vlans.clone(),
        tunnels,
        tenant_flows,
        peer_flows,
        flows: (tun_flows.len(), 0),
        skipped: desired.skipped.iter().map(|s| format!("{}: {}", s.peer, s.reason)).collect(),
        conflicts,
        peers: desired.peer_count(),
    }
}
