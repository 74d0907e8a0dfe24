//! The plug traits over the agent's real components: etcd through the registry and its
//! watched cache, OVSDB and the data plane, netlink.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use overlay::model::{Endpoint, IpClaim, MacAddr, SubnetLease, Tenant};
use tokio::sync::watch;

use super::{step, HostFacts, Links, PlugError, Records, Switch};
use crate::dataplane::{DataPlane, Memo, PassInput};
use crate::host::HostState;
use crate::netlink::{InterfaceConfig, InterfaceState, NetlinkError, Netns, VethSetup};
use crate::ovs::container_port::{self, ContainerPort, FoundPort};
use crate::ovs::{vswitchd, Ovsdb};
use crate::registry::{ClusterCache, Registry, RegistryError};

/// How long a plug waits for the watched cache to show this agent's own writes.
const CACHE_CATCHES_UP_WITHIN: Duration = Duration::from_secs(5);

/// [`Records`] over etcd and the watched cache.
pub struct EtcdRecords<'a> {
    /// etcd.
    pub registry: &'a Registry,
    /// The watched cache.
    pub cluster: &'a watch::Receiver<ClusterCache>,
    /// This host.
    pub host: &'a HostState,
    /// Its facts.
    pub facts: &'a HostFacts,
}

impl Records for EtcdRecords<'_> {
    async fn tenant(&self, name: &str) -> Result<Tenant, RegistryError> {
        self.registry.get_tenant(name).await
    }

    /// From the watched cache, once it shows every endpoint write of this agent: O(this host),
    /// whatever the size of the cluster.
    async fn holdings(&self) -> Result<Vec<(String, Endpoint)>, RegistryError> {
        let written = self.registry.written();
        let mut cluster = self.cluster.clone();
        let caught_up = tokio::time::timeout(
            CACHE_CATCHES_UP_WITHIN,
            cluster.wait_for(|c| c.revision > 0 && c.revision >= written),
        )
        .await;
        if !matches!(caught_up, Ok(Ok(_))) {
            return Err(RegistryError::Conflict(format!(
                "the agent's view of etcd has not caught up with its own writes within {} s (is the etcd watch \
                 down?); try again",
                CACHE_CATCHES_UP_WITHIN.as_secs()
            )));
        }
        let cache = self.cluster.borrow();
        Ok(cache.endpoints.of_host(&self.facts.hostname).map(|(k, e)| (k.to_owned(), e.clone())).collect())
    }

    fn addresses_in(&self, tenant: &str) -> (i64, BTreeSet<IpAddr>) {
        let cache = self.cluster.borrow();
        let addresses =
            cache.endpoints.of_host(&self.facts.hostname).filter(|(_, e)| e.tenant == tenant).map(|(_, e)| e.ip);
        (cache.revision, addresses.collect())
    }

    fn written(&self) -> i64 {
        self.registry.written()
    }

    async fn ensure_lease(&self, tenant: &Tenant) -> Result<SubnetLease, RegistryError> {
        self.host.join_tenant(self.registry, tenant).await
    }

    async fn reserve_ip(&self, tenant: &str, ip: IpAddr, claim: &IpClaim) -> Result<(), RegistryError> {
        self.registry.reserve_ip(tenant, ip, claim).await
    }

    async fn allocate_ip(
        &self,
        tenant: &Tenant,
        lease: &SubnetLease,
        claim: &IpClaim,
        held_here: &BTreeSet<IpAddr>,
    ) -> Result<IpAddr, RegistryError> {
        self.registry.allocate_ip(tenant, lease, claim, held_here).await
    }

    async fn take_over_ip(&self, tenant: &str, ip: IpAddr, claim: &IpClaim) -> Result<(), RegistryError> {
        self.registry.take_over_ip(tenant, ip, claim).await
    }

    async fn release_ip(&self, tenant: &str, ip: IpAddr, claim: &IpClaim) -> Result<(), RegistryError> {
        self.registry.release_ip(tenant, ip, claim).await
    }

    async fn own_claims(&self) -> Result<Vec<(String, IpAddr, IpClaim)>, RegistryError> {
        self.registry.claims_of_machine(&self.facts.hostname, &self.facts.machine_id).await
    }

    async fn put_endpoint(&self, ep: &Endpoint) -> Result<String, RegistryError> {
        self.registry.put_endpoint(ep).await
    }

    async fn delete_endpoint(&self, key: &str, ep: &Endpoint) -> Result<(), RegistryError> {
        self.registry.delete_endpoint(key, ep).await
    }
}

/// [`Switch`] over OVSDB and the data plane.
pub struct OvsSwitch<'a> {
    /// OVSDB.
    pub ovs: &'a Ovsdb,
    /// The data plane (local VLANs).
    pub dataplane: &'a DataPlane,
    /// The lock every data plane pass holds, with what passes remember.
    pub plumbing: &'a tokio::sync::Mutex<Memo>,
    /// The watched cache, for a pass.
    pub cluster: &'a watch::Receiver<ClusterCache>,
    /// This host, for a pass.
    pub host: &'a HostState,
    /// The host namespace, where the veths are.
    pub host_netns: &'a Netns,
}

impl Switch for OvsSwitch<'_> {
    async fn add_port(
        &self,
        tenant: &str,
        known: Option<(MacAddr, IpAddr)>,
        make: impl FnOnce(u16) -> ContainerPort + Send,
    ) -> Result<(), PlugError> {
        let input = PassInput { ovs: self.ovs, cluster: self.cluster, own_leases: self.host.own_leases(), full: false };
        let (mut memo, vlan) = self
            .dataplane
            .lock_with_vlan(self.plumbing, input, tenant, CACHE_CATCHES_UP_WITHIN)
            .await
            .map_err(step("computing the tenant's local VLAN"))?;
        let Some(vlan) = vlan else {
            // The lease was taken a moment ago: a tenant without a VLAN is one deleted since.
            if !self.cluster.borrow().tenants.contains_key(tenant) {
                return Err(RegistryError::NotFound(format!("tenant '{tenant}' was deleted while plugging")).into());
            }
            return Err(PlugError::Plumbing {
                step: "finding the tenant's local VLAN",
                source: format!("no local VLAN for tenant '{tenant}': this host holds no lease in it").into(),
            });
        };
        let mut port = make(vlan);
        // The port's number is chosen, and its flows are in, before the row exists: the
        // container gets no moment without anti-spoofing.
        port.ofport_request = Some(
            self.dataplane
                .reserve_port(&mut memo, self.ovs, &port.name, known)
                .await
                .map_err(step("closing the new port's flows"))?,
        );
        let inserted = port.insert(self.ovs, self.dataplane.int_bridge()).await;
        if inserted.is_err() {
            self.dataplane.release_port(&port.name, false);
        }
        inserted.map_err(step("adding the port to OVSDB"))
    }

    async fn allow_port(&self, port: &str, mac: MacAddr, ip: IpAddr) -> Result<(), PlugError> {
        let mut memo = self.plumbing.lock().await;
        self.dataplane
            .allow_port(&mut memo, self.ovs, port, (mac, ip))
            .await
            .map_err(step("opening the port's flows to its container"))
    }

    fn release_port(&self, port: &str, succeeded: bool) {
        self.dataplane.release_port(port, succeeded);
    }

    async fn port_taken(&self, port: &str) -> Result<(), PlugError> {
        vswitchd::port_taken(self.ovs, port, || async { self.host_netns.link_exists(port).await.unwrap_or(false) })
            .await
            .map_err(step("waiting for ovs-vswitchd"))
    }

    fn find_port(&self, name: &str) -> Option<FoundPort> {
        container_port::find(&self.ovs.replica(), name, &self.host.me.hostname)
    }

    fn ports(&self) -> Vec<FoundPort> {
        container_port::all(&self.ovs.replica(), &self.host.me.hostname)
    }

    fn interface_names(&self) -> BTreeSet<String> {
        container_port::interface_names(&self.ovs.replica())
    }

    async fn remove_port(&self, port: &FoundPort) -> Result<(), PlugError> {
        vswitchd::remove_port(self.ovs, &port.uuid, &port.name).await.map_err(step("removing the port from OVSDB"))?;
        // A plug that finished waits for the cache to show its record before passes take its
        // flows from there; unplugged before that (its record written and deleted between two
        // passes), it would wait forever, and keep its flows and its ofport.
        self.dataplane.release_port(&port.name, false);
        Ok(())
    }
}

/// [`Links`] over netlink.
pub struct NetlinkLinks<'a> {
    /// The host namespace.
    pub host_netns: &'a Netns,
    /// The underlay address, where published ports are (IPv4 only).
    pub underlay: Option<std::net::Ipv4Addr>,
    /// Whether the datapath is the userspace one (which needs TX checksum offload off in the
    /// container: it does not fill in checksums the kernel left to offload, and TCP over the
    /// tunnel stalls while ping works).
    pub netdev: bool,
}

impl Links for NetlinkLinks<'_> {
    type Netns = Netns;

    async fn open(&self, path: &Path) -> Result<Netns, NetlinkError> {
        Netns::open(path).await
    }

    fn host(&self) -> Netns {
        self.host_netns.clone()
    }

    async fn hand_off(&self, name: &str) -> Result<(), NetlinkError> {
        if self.netdev {
            self.host_netns.disable_tx_checksum(name).await?;
        }
        Ok(())
    }

    async fn state(&self, netns: &Netns, ifname: &str) -> Result<Option<InterfaceState>, NetlinkError> {
        netns.interface_state(ifname).await
    }

    async fn create_veth(
        &self,
        port: &str,
        ifname: &str,
        netns: &Netns,
        setup: &VethSetup,
    ) -> Result<(), NetlinkError> {
        self.host_netns.create_veth_into_with(port, ifname, netns, setup).await
    }

    async fn configure(&self, netns: &Netns, ifname: &str, cfg: &InterfaceConfig) -> Result<(), NetlinkError> {
        netns.configure_interface(ifname, cfg).await?;
        if self.netdev {
            netns.disable_tx_checksum(ifname).await?;
        }
        Ok(())
    }

    async fn exists(&self, name: &str) -> Result<bool, NetlinkError> {
        self.host_netns.link_exists(name).await
    }

    async fn delete(&self, name: &str) -> Result<bool, NetlinkError> {
        self.host_netns.delete_link(name).await
    }

    async fn veth_names(&self) -> Result<Vec<String>, NetlinkError> {
        self.host_netns.veth_names().await
    }

    async fn host_ports_free(&self, ports: Vec<(u16, overlay::publish::Protocol)>) -> Result<(), PlugError> {
        let Some(underlay) = self.underlay else {
            return Err(PlugError::BadRequest("published ports need an IPv4 underlay".into()));
        };
        match crate::gateway::ports::check_free(self.host_netns, underlay, ports).await {
            Ok(()) => Ok(()),
            Err(e @ crate::gateway::ports::PortCheckError::InUse { .. }) => Err(PlugError::Conflict(e.to_string())),
            Err(e) => Err(step("checking the published ports")(e)),
        }
    }
}
