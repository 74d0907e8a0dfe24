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

/// What passes remember between them; lives inside the plumbing lock, which every pass and
/// every change of a container port's flows hold.
#[derive(Default)]
pub struct Memo {
    /// The last desired state (local VLANs for plugs).
    desired: Option<Arc<DesiredState>>,
    /// What the flow plane knows the switches hold.
    flows: flows::Installed,
}

/// The data plane of this host.
pub struct DataPlane {
    owner: String,
    me: overlay::model::HostRecord,
    datapath_type: String,
    int_bridge: String,
    tun_bridge: String,
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

    /// One pass: the bridges and ports in OVSDB, then the flows of both bridges.
    pub async fn pass(&self, memo: &mut Memo, input: PassInput<'_>) -> Result<PassOutcome, PassError> {
        let (desired, transactions, conflicts) = self.bridges_pass(&input).await?;
        memo.desired = Some(desired.clone());
        let pipeline = {
            let cache = input.cluster.borrow();
            let recorded: std::collections::HashSet<&str> =
                cache.endpoints.of_host(&self.owner).map(|(_, e)| e.port.as_str()).collect();
            self.flows.forget_recorded(&recorded);
            inputs::pipeline_input(&desired, &cache, &input.ovs.replica(), &self.owner, &self.flows.pending())
        };
        let flows = overlay::pipeline::desired_flows(&pipeline);
        let bundles = self.flows.apply(&mut memo.flows, &flows, input.full).await?;
        Ok(PassOutcome { transactions, bundles, report: report(&desired, &pipeline, &flows, conflicts) })
    }

    /// Registers a container port a plug is making, before its row exists: its ofport is
    /// requested, and until the plug knows the container's address, everything from it is
    /// dropped. Returns the ofport to request.
    pub async fn reserve_port(&self, memo: &mut Memo, ovs: &Ovsdb, port: &str) -> Result<u32, PassError> {
        self.flows.reserve_port(&mut memo.flows, ovs, &self.int_bridge, port).await
    }

    /// The plug of `port` knows its container's MAC and address: its flows let that through.
    pub async fn allow_port(
        &self,
        memo: &mut Memo,
        ovs: &Ovsdb,
        port: &str,
        endpoint: (MacAddr, IpAddr),
    ) -> Result<(), PassError> {
        self.flows.allow_port(&mut memo.flows, ovs, port, endpoint).await
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
    flows: &overlay::pipeline::DesiredFlows,
    conflicts: Vec<String>,
) -> Report {
    let (by_vlan, peer_flows) = flows.counts();
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
        flows: (flows.tun.len(), flows.int.len()),
        skipped: desired.skipped.iter().map(|s| format!("{}: {}", s.peer, s.reason)).collect(),
        conflicts,
        peers: desired.peer_count(),
    }
}
