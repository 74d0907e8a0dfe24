//! The plug logic against in-memory fakes of etcd, OVSDB and netlink: what a plug, an unplug,
//! the start-up recovery and the dead-container reaper decide, without root. The real
//! components are exercised by the multi-host tests in `tests/`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use overlay::model::{Endpoint, IpClaim, MacAddr, SubnetLease, Tenant, TunnelType, Vni};
use overlay::naming::container_port_name;
use ovsdb_client::Uuid;

use super::*;
use crate::netlink::{InterfaceConfig, InterfaceState, NetlinkError, VethSetup};
use crate::ovs::container_port::{ContainerPort, FoundPort};
use crate::registry::RegistryError;

mod publish_tests;

const ME: &str = "m-self";
const HOST: &str = "h1";

#[derive(Default)]
struct Etcd {
    tenants: BTreeMap<String, Tenant>,
    endpoints: BTreeMap<String, Endpoint>,
    claims: BTreeMap<(String, IpAddr), IpClaim>,
    revision: i64,
    written: i64,
}

#[derive(Default)]
struct FakeRecords(Mutex<Etcd>, std::sync::atomic::AtomicUsize);

impl FakeRecords {
    fn with_tenant(t: Tenant) -> Self {
        let r = FakeRecords::default();
        r.0.lock().unwrap().tenants.insert(t.name().to_owned(), t);
        r
    }
    fn endpoints(&self) -> Vec<Endpoint> {
        self.0.lock().unwrap().endpoints.values().cloned().collect()
    }
    fn claims(&self) -> Vec<(IpAddr, IpClaim)> {
        self.0.lock().unwrap().claims.iter().map(|((_, ip), c)| (*ip, c.clone())).collect()
    }
    fn put_raw(&self, key: &str, ep: Endpoint) {
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
struct FakeSwitch {
    ports: Mutex<BTreeMap<String, ContainerPort>>,
    /// Other interfaces on the bridges (not the agent's).
    others: BTreeSet<String>,
    /// ovs-vswitchd refuses every port with this error.
    refuse: Option<String>,
    /// Ports whose flows let their container through, while their plug runs.
    allowed: Mutex<BTreeSet<String>>,
}

impl Switch for FakeSwitch {
    async fn add_port(&self, _tenant: &str, make: impl FnOnce(u16) -> ContainerPort + Send) -> Result<(), PlugError> {
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
struct Kernel {
    host: BTreeSet<String>,
    /// Host end -> (namespace, interface inside).
    peers: BTreeMap<String, (PathBuf, String)>,
    configured: BTreeMap<(PathBuf, String), InterfaceConfig>,
    /// Container ends readied for their runtime in the host namespace.
    handed_off: BTreeSet<String>,
    /// Host ports something of the host listens on.
    listening: BTreeSet<(u16, overlay::publish::Protocol)>,
}

/// What [`FakeLinks::host`] calls the host namespace.
const HOST_NETNS: &str = "/host";

#[derive(Default)]
struct FakeLinks(Mutex<Kernel>);

impl FakeLinks {
    fn has(&self, name: &str) -> bool {
        self.0.lock().unwrap().host.contains(name)
    }
    fn add_host_link(&self, name: &str) {
        self.0.lock().unwrap().host.insert(name.to_owned());
    }
    /// The container's namespace is gone: its veth goes with it.
    fn kill(&self, port: &str) {
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

fn red() -> Tenant {
    Tenant::new("red", Vni::new(100).unwrap(), "198.19.0.0/16".parse().unwrap(), TunnelType::Vxlan, 24).unwrap()
}

fn facts() -> HostFacts {
    HostFacts { hostname: HOST.into(), machine_id: ME.into(), underlay_ipv6: false, underlay_mtu: 1500 }
}

struct World {
    facts: HostFacts,
    state: PlugState,
    /// A namespace file per container (the plug checks that it exists).
    netns: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        World { facts: facts(), state: PlugState::default(), netns: tempfile::tempdir().unwrap() }
    }
    fn plugger<'a>(
        &'a self,
        records: &'a FakeRecords,
        switch: &'a FakeSwitch,
        links: &'a FakeLinks,
    ) -> Plugger<'a, &'a FakeRecords, &'a FakeSwitch, &'a FakeLinks> {
        Plugger { records, switch, links, host: &self.facts, state: &self.state }
    }
    fn request(&self, container: &str, ifname: &str, ip: Option<&str>) -> PlugRequest {
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
    async fn add_port(&self, tenant: &str, make: impl FnOnce(u16) -> ContainerPort + Send) -> Result<(), PlugError> {
        (**self).add_port(tenant, make).await
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

#[tokio::test]
async fn a_hand_off_plug_leaves_the_container_end_in_the_host_namespace_for_the_runtime() {
    let (w, records, switch, links) =
        (World::new(), FakeRecords::with_tenant(red()), FakeSwitch::default(), FakeLinks::default());
    let p = w.plugger(&records, &switch, &links);
    let req = PlugRequest { owner: Some("docker:n1".into()), ..PlugRequest::new("ep1", "red", NetnsRef::Handoff) };
    let r = p.plug(req.clone()).await.unwrap();
    let peer = overlay_api::handoff_name("ep1", "eth0");
    assert_eq!(r.handoff.as_deref(), Some(peer.as_str()));
    {
        let k = links.0.lock().unwrap();
        assert_eq!(k.peers[&r.port], (PathBuf::from(HOST_NETNS), peer.clone()));
        assert!(k.handed_off.contains(&peer));
        assert!(k.configured.is_empty(), "the runtime configures the container side, not the agent");
    }
    assert_eq!(records.endpoints()[0].owner.as_deref(), Some("docker:n1"));
    // Plugging again answers the same (a runtime retrying); the check finds it as plugged.
    assert_eq!(p.plug(req.clone()).await.unwrap(), r);
    assert_eq!(p.check_plugged(req).await.unwrap(), r);
    assert!(p.unplug("ep1", None).await.unwrap());
    assert!(!links.has(&r.port) && records.endpoints().is_empty() && records.claims().is_empty());
}

#[tokio::test]
async fn a_plug_takes_over_a_reservation_of_this_machine_and_no_one_elses() {
    let (w, records, switch, links) =
        (World::new(), FakeRecords::with_tenant(red()), FakeSwitch::default(), FakeLinks::default());
    let p = w.plugger(&records, &switch, &links);
    let reserve = |ip: &str, host: &str, machine: &str| {
        records
            .0
            .lock()
            .unwrap()
            .claims
            .insert(("red".into(), ip.parse().unwrap()), IpClaim::reservation(host, machine, ip));
    };
    reserve("198.19.1.7", HOST, ME);
    reserve("198.19.1.8", "h2", "m-other");
    let take = |ip: &str| PlugRequest { ip: Some(ip.into()), reserved: true, ..w.request(ip, "eth0", None) };
    let r = p.plug(take("198.19.1.7")).await.unwrap();
    assert_eq!(r.ip.to_string(), "198.19.1.7");
    let claim = records.claims().into_iter().find(|(ip, _)| ip.to_string() == "198.19.1.7").unwrap().1;
    assert!(!claim.is_reservation() && claim.container == "198.19.1.7");
    let err = p.plug(take("198.19.1.8")).await.unwrap_err();
    assert!(matches!(err, PlugError::Registry(RegistryError::Conflict(_))), "{err}");
    // Nothing reserved: the plug reserves it as usual.
    assert_eq!(p.plug(take("198.19.1.9")).await.unwrap().ip.to_string(), "198.19.1.9");
    // reserved without an address is refused before anything is done.
    let bad = PlugRequest { reserved: true, ..w.request("c9", "eth0", None) };
    assert!(matches!(p.plug(bad).await, Err(PlugError::BadRequest(_))));
}

#[tokio::test]
async fn a_check_says_what_differs_and_changes_nothing() {
    let (w, records, switch, links) =
        (World::new(), FakeRecords::with_tenant(red()), FakeSwitch::default(), FakeLinks::default());
    let p = w.plugger(&records, &switch, &links);
    assert!(matches!(p.check_plugged(w.request("c1", "eth0", None)).await, Err(PlugError::NotFound(_))));
    let r = p.plug(w.request("c1", "eth0", None)).await.unwrap();
    assert_eq!(p.check_plugged(w.request("c1", "eth0", None)).await.unwrap(), r);
    let err = p.check_plugged(w.request("c1", "eth0", Some("198.19.1.99"))).await.unwrap_err();
    assert!(matches!(&err, PlugError::Conflict(m) if m.contains("not 198.19.1.99")), "{err}");
    // The container's interface changed behind the agent's back.
    let netns = w.netns.path().join("c1");
    links.0.lock().unwrap().configured.get_mut(&(netns, "eth0".to_owned())).unwrap().mtu = 1500;
    let err = p.check_plugged(w.request("c1", "eth0", None)).await.unwrap_err();
    assert!(matches!(&err, PlugError::Conflict(m) if m.contains("MTU 1500")), "{err}");
    links.kill(&r.port);
    let err = p.check_plugged(w.request("c1", "eth0", None)).await.unwrap_err();
    assert!(matches!(&err, PlugError::Conflict(m) if m.contains("is gone")), "{err}");
    assert_eq!(records.endpoints().len(), 1, "a check removes nothing");
}

#[tokio::test]
async fn a_plug_again_returns_the_same_result_and_other_arguments_are_a_conflict() {
    let (w, records, switch, links) =
        (World::new(), FakeRecords::with_tenant(red()), FakeSwitch::default(), FakeLinks::default());
    let p = w.plugger(&records, &switch, &links);
    let first = p.plug(w.request("c1", "eth0", None)).await.unwrap();
    assert_eq!((first.ip.to_string().as_str(), first.mtu, first.prefix), ("198.19.1.1", 1450, 16));
    assert_eq!(first.port, container_port_name("c1", "eth0"));
    let again = p.plug(w.request("c1", "eth0", None)).await.unwrap();
    assert_eq!(again, first);
    assert_eq!((records.endpoints().len(), records.claims().len()), (1, 1));
    let ep = &records.endpoints()[0];
    assert_eq!((ep.machine_id.as_str(), ep.host.as_str(), ep.ifname.as_str()), (ME, HOST, "eth0"));
    let err = p.plug(w.request("c1", "eth0", Some("198.19.1.9"))).await.unwrap_err();
    assert!(matches!(err, PlugError::Conflict(_)), "{err}");
    // A second interface of the same container is an endpoint of its own.
    let second = p.plug(w.request("c1", "eth1", None)).await.unwrap();
    assert_ne!(second.port, first.port);
    assert_ne!(second.ip, first.ip);
    assert_eq!(records.endpoints().len(), 2);
}

#[tokio::test]
async fn a_failed_plug_leaves_nothing_and_says_which_step_failed() {
    let w = World::new();
    let records = FakeRecords::with_tenant(red());
    let switch =
        FakeSwitch { refuse: Some("could not open network device (No such device)".into()), ..Default::default() };
    let links = FakeLinks::default();
    let err = w.plugger(&records, &switch, &links).plug(w.request("c1", "eth0", None)).await.unwrap_err();
    assert!(err.to_string().contains("waiting for ovs-vswitchd"), "{err}");
    assert!(records.endpoints().is_empty() && records.claims().is_empty());
    assert!(switch.ports.lock().unwrap().is_empty());
    assert!(links.0.lock().unwrap().host.is_empty());
    assert!(w.state.in_flight.lock().unwrap().is_empty(), "no address stays in flight");
}

#[tokio::test]
async fn concurrent_plugs_of_one_tenant_get_distinct_addresses_without_listing_the_tenant() {
    let (w, records, switch, links) =
        (World::new(), FakeRecords::with_tenant(red()), FakeSwitch::default(), FakeLinks::default());
    let p = w.plugger(&records, &switch, &links);
    let requests: Vec<PlugRequest> = (0..20).map(|i| w.request(&format!("c{i}"), "eth0", None)).collect();
    let results = futures::future::join_all(requests.into_iter().map(|r| p.plug(r))).await;
    let ips: BTreeSet<IpAddr> = results.into_iter().map(|r| r.unwrap().ip).collect();
    assert_eq!(ips.len(), 20, "an address was handed out twice");
    assert_eq!(records.claims().len(), 20);
    assert_eq!(records.1.load(Ordering::Relaxed), 0, "a plug listed the tenant's reservations");
}

#[tokio::test]
async fn unplug_of_a_container_takes_all_its_interfaces_and_only_its_own() {
    let (w, records, switch, links) =
        (World::new(), FakeRecords::with_tenant(red()), FakeSwitch::default(), FakeLinks::default());
    let p = w.plugger(&records, &switch, &links);
    for (c, i) in [("c1", "eth0"), ("c1", "eth1"), ("c2", "eth0")] {
        p.plug(w.request(c, i, None)).await.unwrap();
    }
    assert!(p.unplug("c1", Some("eth1")).await.unwrap());
    assert!(!links.has(&container_port_name("c1", "eth1")));
    assert!(links.has(&container_port_name("c1", "eth0")));
    assert!(p.unplug("c1", None).await.unwrap());
    assert!(!p.unplug("c1", None).await.unwrap(), "nothing left to unplug");
    let left: Vec<String> = records.endpoints().into_iter().map(|e| e.container_id).collect();
    assert_eq!(left, ["c2"]);
    assert_eq!(records.claims().len(), 1);
    assert!(matches!(p.unplug("c/1", None).await, Err(PlugError::BadRequest(_))));
    assert!(matches!(p.unplug("c1", Some("Eth.0")).await, Err(PlugError::BadRequest(_))));
}

fn endpoint(container: &str, machine: &str, ip: &str) -> Endpoint {
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

#[tokio::test]
async fn recovery_removes_only_what_is_provably_this_machines() {
    let w = World::new();
    let records = FakeRecords::with_tenant(red());
    let switch = FakeSwitch { others: BTreeSet::from(["foreign0".to_owned()]), ..Default::default() };
    let links = FakeLinks::default();
    let p = w.plugger(&records, &switch, &links);
    p.plug(w.request("healthy", "eth0", None)).await.unwrap();
    // A plug interrupted between its port and its record: port, veth and claim, no record.
    p.plug(w.request("half", "eth0", None)).await.unwrap();
    let key = records.0.lock().unwrap().endpoints.keys().find(|k| k.contains("/half/")).cloned().unwrap();
    records.0.lock().unwrap().endpoints.remove(&key);
    // Containers of this machine that died while the agent was down: one whose port stayed
    // (its veth went with its namespace), one with a record and no port.
    p.plug(w.request("died", "eth0", None)).await.unwrap();
    links.kill(&container_port_name("died", "eth0"));
    records.put_raw("endpoints/red/gone/eth0", endpoint("gone", ME, "198.19.1.50"));
    // Records under this hostname by another machine and by an agent before machine ids,
    // with no port here: not provably ours.
    records.put_raw("endpoints/red/theirs/eth0", endpoint("theirs", "m-other", "198.19.1.51"));
    records.put_raw("endpoints/red/legacy", endpoint("legacy", "", "198.19.1.52"));
    // A veth of an interrupted plug (the agent's name form, on no bridge), and one of another tool.
    let ghost = container_port_name("ghost", "eth0");
    links.add_host_link(&ghost);
    links.add_host_link("tap1a2b3c4d-5e");

    assert_eq!(p.recover().await.unwrap(), 3, "the half plug and the two dead containers");
    assert_eq!(w.state.reaped.load(Ordering::Relaxed), 2, "the dead containers count as reaped, the half plug not");
    let left: BTreeSet<String> = records.endpoints().into_iter().map(|e| e.container_id).collect();
    assert_eq!(left, BTreeSet::from(["healthy".into(), "theirs".into(), "legacy".into()]));
    let claimed: BTreeSet<String> = records.claims().into_iter().map(|(_, c)| c.container).collect();
    assert_eq!(claimed, left, "the interrupted plug's address and the gone one's are released");
    for gone in ["half", "died"] {
        let port = container_port_name(gone, "eth0");
        assert!(!links.has(&port) && switch.find_port(&port).is_none(), "{gone}");
    }
    assert!(!links.has(&ghost), "the interrupted plug's lone veth is removed");
    assert!(links.has("tap1a2b3c4d-5e"), "another tool's veth stays");
    assert!(links.has(&container_port_name("healthy", "eth0")));
    // Nothing more to do the second time.
    assert_eq!(p.recover().await.unwrap(), 0);
    assert_eq!(w.state.reaped.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_container_whose_veth_went_away_is_reaped_once_and_counted() {
    let (w, records, switch, links) =
        (World::new(), FakeRecords::with_tenant(red()), FakeSwitch::default(), FakeLinks::default());
    let p = w.plugger(&records, &switch, &links);
    let result = p.plug(w.request("c1", "eth0", None)).await.unwrap();
    p.plug(w.request("c2", "eth0", None)).await.unwrap();
    // Its veth is still there (a carrier going down deletes nothing): not reaped.
    assert!(!p.reap(&result.port).await.unwrap());
    links.kill(&result.port);
    assert!(p.reap(&result.port).await.unwrap());
    assert!(!p.reap(&result.port).await.unwrap(), "nothing left the second time");
    assert_eq!(w.state.reaped.load(Ordering::Relaxed), 1);
    let left: Vec<String> = records.endpoints().into_iter().map(|e| e.container_id).collect();
    assert_eq!(left, ["c2"]);
    assert!(switch.find_port(&result.port).is_none());
    // The same address can be plugged again at once.
    let again = p.plug(w.request("c3", "eth0", Some(&result.ip.to_string()))).await.unwrap();
    assert_eq!(again.ip, result.ip);
    // The sweep finds what events missed; a record of another machine is never reaped.
    records.put_raw("endpoints/red/theirs/eth0", endpoint("theirs", "m-other", "198.19.1.60"));
    links.kill(&container_port_name("c2", "eth0"));
    assert_eq!(p.sweep().await.unwrap(), 1);
    assert!(!p.reap(&container_port_name("theirs", "eth0")).await.unwrap());
    assert!(records.endpoints().iter().any(|e| e.container_id == "theirs"));
}
