//! The fixture: one host's facts and plug state, a plugger over borrowed fakes, and requests
//! and records as the tests need them.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use overlay::model::{Endpoint, IpClaim, MacAddr, SubnetLease, Tenant, TunnelType, Vni};
use overlay::naming::container_port_name;

use super::super::{HostFacts, Links, NetnsRef, PlugError, PlugRequest, PlugState, Plugger, Records, Switch};
use super::fakes::{FakeLinks, FakeRecords, FakeSwitch, HOST, ME};
use crate::netlink::{InterfaceConfig, InterfaceState, NetlinkError, VethSetup};
use crate::ovs::container_port::{ContainerPort, FoundPort};
use crate::registry::RegistryError;

pub(super) fn red() -> Tenant {
    Tenant::new("red", Vni::new(100).unwrap(), "198.19.0.0/16".parse().unwrap(), TunnelType::Vxlan, 24).unwrap()
}

/// A world, etcd holding tenant red, an empty switch and kernel: where most tests start.
pub(super) fn red_world() -> (World, FakeRecords, FakeSwitch, FakeLinks) {
    (World::new(), FakeRecords::with_tenant(red()), FakeSwitch::default(), FakeLinks::default())
}

fn facts() -> HostFacts {
    HostFacts { hostname: HOST.into(), machine_id: ME.into(), underlay_ipv6: false, underlay_mtu: 1500 }
}

pub(super) struct World {
    facts: HostFacts,
    pub(super) state: PlugState,
    /// A namespace file per container (the plug checks that it exists).
    pub(super) netns: tempfile::TempDir,
}

impl World {
    pub(super) fn new() -> Self {
        World { facts: facts(), state: PlugState::default(), netns: tempfile::tempdir().unwrap() }
    }
    pub(super) fn plugger<'a>(
        &'a self,
        records: &'a FakeRecords,
        switch: &'a FakeSwitch,
        links: &'a FakeLinks,
    ) -> Plugger<'a, &'a FakeRecords, &'a FakeSwitch, &'a FakeLinks> {
        Plugger { records, switch, links, host: &self.facts, state: &self.state }
    }
    pub(super) fn request(&self, container: &str, ifname: &str, ip: Option<&str>) -> PlugRequest {
        let netns = self.netns.path().join(container);
        std::fs::write(&netns, b"").unwrap();
        PlugRequest {
            container_id: container.into(),
            tenant: "red".into(),
            netns: NetnsRef::Path(netns),
            ifname: ifname.into(),
            ip: ip.map(Into::into),
            mac: None,
            reserved: false,
            owner: None,
            publish: vec![],
        }
    }
}

pub(super) fn endpoint(container: &str, machine: &str, ip: &str) -> Endpoint {
    Endpoint {
        tenant: "red".into(),
        container_id: container.into(),
        ifname: "eth0".into(),
        machine_id: machine.into(),
        host: HOST.into(),
        ip: ip.parse().unwrap(),
        mac: "02:00:00:00:00:01".parse().unwrap(),
        iface_id: container.into(),
        port: container_port_name(container, "eth0"),
        owner: None,
        publish: vec![],
    }
}

// The traits are implemented for references too, so a test keeps the fakes to look at.
impl<T: Records + Sync> Records for &T {
    async fn tenant(&self, name: &str) -> Result<Tenant, RegistryError> {
        (**self).tenant(name).await
    }
    async fn holdings(&self) -> Result<Vec<(String, Endpoint)>, RegistryError> {
        (**self).holdings().await
    }
    fn addresses_in(&self, tenant: &str) -> (i64, BTreeSet<IpAddr>) {
        (**self).addresses_in(tenant)
    }
    fn written(&self) -> i64 {
        (**self).written()
    }
    async fn ensure_lease(&self, tenant: &Tenant) -> Result<SubnetLease, RegistryError> {
        (**self).ensure_lease(tenant).await
    }
    async fn reserve_ip(&self, tenant: &str, ip: IpAddr, claim: &IpClaim) -> Result<(), RegistryError> {
        (**self).reserve_ip(tenant, ip, claim).await
    }
    async fn take_over_ip(&self, tenant: &str, ip: IpAddr, claim: &IpClaim) -> Result<(), RegistryError> {
        (**self).take_over_ip(tenant, ip, claim).await
    }
    async fn allocate_ip(
        &self,
        tenant: &Tenant,
        lease: &SubnetLease,
        claim: &IpClaim,
        held_here: &BTreeSet<IpAddr>,
    ) -> Result<IpAddr, RegistryError> {
        (**self).allocate_ip(tenant, lease, claim, held_here).await
    }
    async fn release_ip(&self, tenant: &str, ip: IpAddr, claim: &IpClaim) -> Result<(), RegistryError> {
        (**self).release_ip(tenant, ip, claim).await
    }
    async fn own_claims(&self) -> Result<Vec<(String, IpAddr, IpClaim)>, RegistryError> {
        (**self).own_claims().await
    }
    async fn put_endpoint(&self, ep: &Endpoint) -> Result<String, RegistryError> {
        (**self).put_endpoint(ep).await
    }
    async fn delete_endpoint(&self, key: &str, ep: &Endpoint) -> Result<(), RegistryError> {
        (**self).delete_endpoint(key, ep).await
    }
}

impl<T: Switch + Sync> Switch for &T {
    async fn add_port(
        &self,
        tenant: &str,
        known: Option<(MacAddr, IpAddr)>,
        make: impl FnOnce(u16) -> ContainerPort + Send,
    ) -> Result<(), PlugError> {
        (**self).add_port(tenant, known, make).await
    }
    async fn allow_port(&self, port: &str, mac: MacAddr, ip: IpAddr) -> Result<(), PlugError> {
        (**self).allow_port(port, mac, ip).await
    }
    fn release_port(&self, port: &str, succeeded: bool) {
        (**self).release_port(port, succeeded)
    }
    async fn port_taken(&self, port: &str) -> Result<(), PlugError> {
        (**self).port_taken(port).await
    }
    fn find_port(&self, name: &str) -> Option<FoundPort> {
        (**self).find_port(name)
    }
    fn ports(&self) -> Vec<FoundPort> {
        (**self).ports()
    }
    fn interface_names(&self) -> BTreeSet<String> {
        (**self).interface_names()
    }
    async fn remove_port(&self, port: &FoundPort) -> Result<(), PlugError> {
        (**self).remove_port(port).await
    }
}

impl<T: Links + Sync> Links for &T {
    type Netns = T::Netns;
    async fn open(&self, path: &Path) -> Result<Self::Netns, NetlinkError> {
        (**self).open(path).await
    }
    async fn create_veth(&self, port: &str, ifname: &str, ns: &Self::Netns, s: &VethSetup) -> Result<(), NetlinkError> {
        (**self).create_veth(port, ifname, ns, s).await
    }
    async fn configure(&self, ns: &Self::Netns, ifname: &str, cfg: &InterfaceConfig) -> Result<(), NetlinkError> {
        (**self).configure(ns, ifname, cfg).await
    }
    async fn exists(&self, name: &str) -> Result<bool, NetlinkError> {
        (**self).exists(name).await
    }
    async fn delete(&self, name: &str) -> Result<bool, NetlinkError> {
        (**self).delete(name).await
    }
    async fn veth_names(&self) -> Result<Vec<String>, NetlinkError> {
        (**self).veth_names().await
    }
    async fn host_ports_free(&self, ports: Vec<(u16, overlay::publish::Protocol)>) -> Result<(), PlugError> {
        (**self).host_ports_free(ports).await
    }
    fn host(&self) -> Self::Netns {
        (**self).host()
    }
    async fn hand_off(&self, name: &str) -> Result<(), NetlinkError> {
        (**self).hand_off(name).await
    }
    async fn state(&self, ns: &Self::Netns, ifname: &str) -> Result<Option<InterfaceState>, NetlinkError> {
        (**self).state(ns, ifname).await
    }
}
