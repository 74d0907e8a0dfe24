//! In-memory fakes of etcd ([`Records`]), OVSDB and the data plane ([`Switch`]) and netlink
//! ([`Links`]), each keeping what was written so a test can look at it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use overlay::model::{Endpoint, IpClaim, MacAddr, SubnetLease, Tenant};
use ovsdb_client::Uuid;

use super::super::{Links, PlugError, Records, Switch};
use crate::netlink::{InterfaceConfig, InterfaceState, NetlinkError, VethSetup};
use crate::ovs::container_port::{ContainerPort, FoundPort};
use crate::registry::RegistryError;

pub(super) const ME: &str = "m-self";
pub(super) const HOST: &str = "h1";

#[derive(Default)]
pub(super) struct Etcd {
    pub(super) tenants: BTreeMap<String, Tenant>,
    pub(super) endpoints: BTreeMap<String, Endpoint>,
    pub(super) claims: BTreeMap<(String, IpAddr), IpClaim>,
    pub(super) revision: i64,
    pub(super) written: i64,
}

#[derive(Default)]
pub(super) struct FakeRecords(pub(super) Mutex<Etcd>, pub(super) std::sync::atomic::AtomicUsize);

impl FakeRecords {
    pub(super) fn with_tenant(t: Tenant) -> Self {
        let r = FakeRecords::default();
        r.0.lock().unwrap().tenants.insert(t.name().to_owned(), t);
        r
    }
    pub(super) fn endpoints(&self) -> Vec<Endpoint> {
        self.0.lock().unwrap().endpoints.values().cloned().collect()
    }
    pub(super) fn claims(&self) -> Vec<(IpAddr, IpClaim)> {
        self.0.lock().unwrap().claims.iter().map(|((_, ip), c)| (*ip, c.clone())).collect()
    }
    pub(super) fn put_raw(&self, key: &str, ep: Endpoint) {
        let mut e = self.0.lock().unwrap();
        e.claims.insert(
            (ep.tenant.clone(), ep.ip),
            IpClaim {
                container: ep.container_id.clone(),
                host: ep.host.clone(),
                ifname: ep.ifname.clone(),
                machine_id: ep.machine_id.clone(),
            },
        );
        e.endpoints.insert(key.to_owned(), ep);
    }
}

impl Records for FakeRecords {
    async fn tenant(&self, name: &str) -> Result<Tenant, RegistryError> {
        self.0.lock().unwrap().tenants.get(name).cloned().ok_or_else(|| RegistryError::NotFound(format!("no {name}")))
    }
    async fn holdings(&self) -> Result<Vec<(String, Endpoint)>, RegistryError> {
        let e = self.0.lock().unwrap();
        Ok(e.endpoints.iter().filter(|(_, ep)| ep.host == HOST).map(|(k, ep)| (k.clone(), ep.clone())).collect())
    }
    fn addresses_in(&self, tenant: &str) -> (i64, BTreeSet<IpAddr>) {
        let e = self.0.lock().unwrap();
        (e.revision, e.endpoints.values().filter(|ep| ep.host == HOST && ep.tenant == tenant).map(|ep| ep.ip).collect())
    }
    fn written(&self) -> i64 {
        self.0.lock().unwrap().written
    }
    async fn ensure_lease(&self, tenant: &Tenant) -> Result<SubnetLease, RegistryError> {
        Ok(SubnetLease {
            tenant: tenant.name().to_owned(),
            subnet: "198.19.1.0/24".parse().unwrap(),
            host: HOST.into(),
            underlay_ip: "198.18.0.1".parse().unwrap(),
        })
    }
    async fn reserve_ip(&self, tenant: &str, ip: IpAddr, claim: &IpClaim) -> Result<(), RegistryError> {
        // Another task runs between the read and the write, as a real round trip would let it.
        tokio::task::yield_now().await;
        let mut e = self.0.lock().unwrap();
        match e.claims.get(&(tenant.to_owned(), ip)) {
            Some(c) if c.same_holder(claim) => Ok(()),
            Some(c) => Err(RegistryError::Conflict(format!("{ip} held by {}", c.container))),
            None => {
                e.claims.insert((tenant.to_owned(), ip), claim.clone());
                Ok(())
            }
        }
    }
    async fn allocate_ip(
        &self,
        tenant: &Tenant,
        lease: &SubnetLease,
        claim: &IpClaim,
        held_here: &BTreeSet<IpAddr>,
    ) -> Result<IpAddr, RegistryError> {
        self.1.fetch_add(1, Ordering::Relaxed);
        let used: BTreeSet<IpAddr> = {
            let e = self.0.lock().unwrap();
            e.claims
                .keys()
                .filter(|(t, _)| t == tenant.name())
                .map(|(_, ip)| *ip)
                .chain(held_here.iter().copied())
                .collect()
        };
        let ip = overlay::ipam::next_free_address(lease.subnet, tenant, &used).expect("a free address");
        self.reserve_ip(tenant.name(), ip, claim).await.map(|()| ip)
    }
    async fn take_over_ip(&self, tenant: &str, ip: IpAddr, claim: &IpClaim) -> Result<(), RegistryError> {
        {
            let mut e = self.0.lock().unwrap();
            let held = e.claims.get(&(tenant.to_owned(), ip));
            if held.is_some_and(|h| h.is_reservation() && h.host == claim.host && h.machine_id == claim.machine_id) {
                e.claims.insert((tenant.to_owned(), ip), claim.clone());
                return Ok(());
            }
        }
        self.reserve_ip(tenant, ip, claim).await
    }
    async fn release_ip(&self, tenant: &str, ip: IpAddr, claim: &IpClaim) -> Result<(), RegistryError> {
        let mut e = self.0.lock().unwrap();
        if e.claims.get(&(tenant.to_owned(), ip)) == Some(claim) {
            e.claims.remove(&(tenant.to_owned(), ip));
        }
        Ok(())
    }
    async fn own_claims(&self) -> Result<Vec<(String, IpAddr, IpClaim)>, RegistryError> {
        let e = self.0.lock().unwrap();
        Ok(e.claims
            .iter()
            .filter(|(_, c)| c.host == HOST && c.machine_id == ME)
            .map(|((t, ip), c)| (t.clone(), *ip, c.clone()))
            .collect())
    }
    async fn put_endpoint(&self, ep: &Endpoint) -> Result<String, RegistryError> {
        let mut e = self.0.lock().unwrap();
        let key = format!("endpoints/{}/{}/{}", ep.tenant, ep.container_id, ep.ifname);
        e.endpoints.insert(key.clone(), ep.clone());
        e.revision += 1;
        e.written = e.revision;
        Ok(key)
    }
    async fn delete_endpoint(&self, key: &str, ep: &Endpoint) -> Result<(), RegistryError> {
        let mut e = self.0.lock().unwrap();
        e.endpoints.remove(key);
        let mine = e.claims.get(&(ep.tenant.clone(), ep.ip)).is_some_and(|c| c.container == ep.container_id);
        if mine {
            e.claims.remove(&(ep.tenant.clone(), ep.ip));
        }
        e.revision += 1;
        e.written = e.revision;
        Ok(())
    }
}

#[derive(Default)]
pub(super) struct FakeSwitch {
    pub(super) ports: Mutex<BTreeMap<String, ContainerPort>>,
    /// Other interfaces on the bridges (not the agent's).
    pub(super) others: BTreeSet<String>,
    /// ovs-vswitchd refuses every port with this error.
    pub(super) refuse: Option<String>,
    /// Ports whose flows let their container through, while their plug runs.
    pub(super) allowed: Mutex<BTreeSet<String>>,
}

impl Switch for FakeSwitch {
    async fn add_port(
        &self,
        _tenant: &str,
        _known: Option<(MacAddr, IpAddr)>,
        make: impl FnOnce(u16) -> ContainerPort + Send,
    ) -> Result<(), PlugError> {
        let p = make(7);
        self.ports.lock().unwrap().insert(p.name.clone(), p);
        Ok(())
    }
    async fn allow_port(&self, port: &str, _: MacAddr, _: IpAddr) -> Result<(), PlugError> {
        self.allowed.lock().unwrap().insert(port.to_owned());
        Ok(())
    }
    fn release_port(&self, port: &str, _: bool) {
        self.allowed.lock().unwrap().remove(port);
    }
    async fn port_taken(&self, port: &str) -> Result<(), PlugError> {
        match &self.refuse {
            Some(e) => {
                Err(PlugError::Plumbing { step: "waiting for ovs-vswitchd", source: format!("{port}: {e}").into() })
            }
            None => Ok(()),
        }
    }
    fn find_port(&self, name: &str) -> Option<FoundPort> {
        self.ports.lock().unwrap().get(name).map(|p| FoundPort {
            uuid: Uuid::parse("5bd3df86-2f2d-4c1b-9a6f-9a3c1f0e8a11").unwrap(),
            name: p.name.clone(),
            container: Some((p.container_id.clone(), p.ifname.clone())),
            ofport: Some(5),
            error: None,
        })
    }
    fn ports(&self) -> Vec<FoundPort> {
        let names: Vec<String> = self.ports.lock().unwrap().keys().cloned().collect();
        names.iter().filter_map(|n| self.find_port(n)).collect()
    }
    fn interface_names(&self) -> BTreeSet<String> {
        self.ports.lock().unwrap().keys().cloned().chain(self.others.iter().cloned()).collect()
    }
    async fn remove_port(&self, port: &FoundPort) -> Result<(), PlugError> {
        self.ports.lock().unwrap().remove(&port.name);
        Ok(())
    }
}

/// Host links (veth host ends) and, per container namespace, its interfaces with their config.
#[derive(Default)]
pub(super) struct Kernel {
    pub(super) host: BTreeSet<String>,
    /// Host end -> (namespace, interface inside).
    pub(super) peers: BTreeMap<String, (PathBuf, String)>,
    pub(super) configured: BTreeMap<(PathBuf, String), InterfaceConfig>,
    /// Container ends readied for their runtime in the host namespace.
    pub(super) handed_off: BTreeSet<String>,
    /// Host ports something of the host listens on.
    pub(super) listening: BTreeSet<(u16, overlay::publish::Protocol)>,
}

/// What [`FakeLinks::host`] calls the host namespace.
pub(super) const HOST_NETNS: &str = "/host";

#[derive(Default)]
pub(super) struct FakeLinks(pub(super) Mutex<Kernel>);

impl FakeLinks {
    pub(super) fn has(&self, name: &str) -> bool {
        self.0.lock().unwrap().host.contains(name)
    }
    pub(super) fn add_host_link(&self, name: &str) {
        self.0.lock().unwrap().host.insert(name.to_owned());
    }
    /// The container's namespace is gone: its veth goes with it.
    pub(super) fn kill(&self, port: &str) {
        let mut k = self.0.lock().unwrap();
        k.host.remove(port);
        if let Some(peer) = k.peers.remove(port) {
            k.configured.remove(&peer);
        }
    }
}

impl Links for FakeLinks {
    type Netns = PathBuf;
    async fn open(&self, path: &Path) -> Result<PathBuf, NetlinkError> {
        Ok(path.to_path_buf())
    }
    fn host(&self) -> PathBuf {
        PathBuf::from(HOST_NETNS)
    }
    async fn hand_off(&self, name: &str) -> Result<(), NetlinkError> {
        self.0.lock().unwrap().handed_off.insert(name.to_owned());
        Ok(())
    }
    async fn state(&self, netns: &PathBuf, ifname: &str) -> Result<Option<InterfaceState>, NetlinkError> {
        let k = self.0.lock().unwrap();
        Ok(k.configured.get(&(netns.clone(), ifname.to_owned())).map(|c| InterfaceState {
            index: 2,
            mac: Some(c.mac),
            mtu: c.mtu,
            up: true,
            lower_up: true,
            addresses: vec![(c.address, c.prefix_len)],
            gateways: c.gateway.into_iter().collect(),
        }))
    }
    async fn create_veth(&self, port: &str, ifname: &str, netns: &PathBuf, _: &VethSetup) -> Result<(), NetlinkError> {
        let mut k = self.0.lock().unwrap();
        if k.peers.values().any(|(ns, i)| ns == netns && i == ifname) {
            return Err(NetlinkError::AlreadyExists { name: ifname.into(), netns: netns.display().to_string() });
        }
        k.host.insert(port.to_owned());
        k.peers.insert(port.to_owned(), (netns.clone(), ifname.to_owned()));
        Ok(())
    }
    async fn configure(&self, netns: &PathBuf, ifname: &str, cfg: &InterfaceConfig) -> Result<(), NetlinkError> {
        self.0.lock().unwrap().configured.insert((netns.clone(), ifname.to_owned()), cfg.clone());
        Ok(())
    }
    async fn exists(&self, name: &str) -> Result<bool, NetlinkError> {
        Ok(self.has(name))
    }
    async fn delete(&self, name: &str) -> Result<bool, NetlinkError> {
        let mut k = self.0.lock().unwrap();
        if let Some(peer) = k.peers.remove(name) {
            k.configured.remove(&peer);
        }
        Ok(k.host.remove(name))
    }
    async fn veth_names(&self) -> Result<Vec<String>, NetlinkError> {
        Ok(self.0.lock().unwrap().host.iter().cloned().collect())
    }
    async fn host_ports_free(&self, ports: Vec<(u16, overlay::publish::Protocol)>) -> Result<(), PlugError> {
        match ports.iter().find(|p| self.0.lock().unwrap().listening.contains(p)) {
            Some((port, proto)) => Err(PlugError::Conflict(format!("host port {port}/{proto} is in use on this host"))),
            None => Ok(()),
        }
    }
}
