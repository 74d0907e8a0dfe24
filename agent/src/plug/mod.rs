//! Plugging containers the nova-docker way: a veth pair, the host end on the integration bridge
//! with the Interface external_ids Neutron and nova-docker use (`iface-id`, `iface-status`,
//! `attached-mac`, `vm-uuid`), the other end created inside the container's namespace with
//! MAC, address, MTU and default route. One endpoint per (container, interface). Every step is
//! undone when a later one fails; a crash half-way is repaired at the next start
//! ([`Plugger::recover`]), and a container that dies without an unplug is unplugged by the
//! agent ([`Plugger::reap`]).
//!
//! The logic is written against three small traits, [`Records`] (etcd), [`Switch`] (OVSDB and
//! the data plane) and [`Links`] (netlink), so it is unit-tested with fakes ([`tests`]); the
//! agent's real ones are in [`real`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use overlay::model::{Endpoint, IpClaim, MacAddr, SubnetLease, Tenant};

use crate::netlink::{InterfaceConfig, InterfaceState, NetlinkError, VethSetup};
use crate::ovs::container_port::{ContainerPort, FoundPort};
use crate::registry::RegistryError;

mod attach;
mod check;
mod publish;
pub mod real;
mod recover;
#[cfg(test)]
mod tests;
mod unplug;

pub use overlay_api::{NetnsRef, PlugRequest, PlugResult};

/// Why a plug or unplug failed.
#[derive(Debug, thiserror::Error)]
pub enum PlugError {
    /// The request itself is wrong; nothing was changed.
    #[error("{0}")]
    BadRequest(String),
    /// The container interface is plugged already with other arguments (or, for a check, is not
    /// as it should be).
    #[error("{0}")]
    Conflict(String),
    /// Nothing is plugged for that container interface (a check).
    #[error("{0}")]
    NotFound(String),
    /// The agent cannot plug now (it does not hold its hostname).
    #[error("{0}")]
    Unavailable(String),
    /// The registry refused or failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A netlink, OVSDB or ovs-vswitchd step failed.
    #[error("{step}: {source}")]
    Plumbing {
        /// The step, in words.
        step: &'static str,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A step failed and undoing what was done failed too: both are kept.
    #[error("{cause}; undoing the plug failed too: {rollback}")]
    RollbackFailed {
        /// The failure that made the plug roll back.
        cause: Box<PlugError>,
        /// The failure of the rollback.
        rollback: Box<PlugError>,
    },
}

/// The error for a failed step of the plumbing, saying which step.
pub(crate) fn step<E: std::error::Error + Send + Sync + 'static>(step: &'static str) -> impl FnOnce(E) -> PlugError {
    move |e| PlugError::Plumbing { step, source: Box::new(e) }
}

/// The etcd side of plugging.
pub trait Records {
    /// The tenant, read from etcd (a tenant created a moment ago elsewhere may not be in the
    /// watched cache yet).
    fn tenant(&self, name: &str) -> impl Future<Output = Result<Tenant, RegistryError>> + Send;
    /// This host's endpoint records with their keys, as they are after every write this agent
    /// made (the watched cache, once it has caught up with them).
    fn holdings(&self) -> impl Future<Output = Result<Vec<(String, Endpoint)>, RegistryError>> + Send;
    /// This host's lease in `tenant`, taken if it has none.
    fn ensure_lease(&self, tenant: &Tenant) -> impl Future<Output = Result<SubnetLease, RegistryError>> + Send;
    /// The addresses this host's records hold in `tenant`, as the watched cache shows them
    /// now, with the revision it is at (no waiting).
    fn addresses_in(&self, tenant: &str) -> (i64, BTreeSet<IpAddr>);
    /// The revision of this agent's newest endpoint write.
    fn written(&self) -> i64;
    /// Reserves exactly `ip`.
    fn reserve_ip(
        &self,
        tenant: &str,
        ip: IpAddr,
        claim: &IpClaim,
    ) -> impl Future<Output = Result<(), RegistryError>> + Send;
    /// Reserves a free address of `lease`, listing the tenant's reservations.
    fn allocate_ip(
        &self,
        tenant: &Tenant,
        lease: &SubnetLease,
        claim: &IpClaim,
        held_here: &BTreeSet<IpAddr>,
    ) -> impl Future<Output = Result<IpAddr, RegistryError>> + Send;
    /// Reserves exactly `ip` for `claim`, taking over a reservation this machine made for it
    /// on this host before the plug ([`crate::registry::Registry::reserve_address`]).
    fn take_over_ip(
        &self,
        tenant: &str,
        ip: IpAddr,
        claim: &IpClaim,
    ) -> impl Future<Output = Result<(), RegistryError>> + Send;
    /// Releases `ip` if `claim` holds it.
    fn release_ip(
        &self,
        tenant: &str,
        ip: IpAddr,
        claim: &IpClaim,
    ) -> impl Future<Output = Result<(), RegistryError>> + Send;
    /// Every reservation this machine made for this host (recovery only).
    fn own_claims(&self) -> impl Future<Output = Result<Vec<(String, IpAddr, IpClaim)>, RegistryError>> + Send;
    /// Writes the record; returns its key.
    fn put_endpoint(&self, ep: &Endpoint) -> impl Future<Output = Result<String, RegistryError>> + Send;
    /// Removes the record at `key` with the address it holds.
    fn delete_endpoint(&self, key: &str, ep: &Endpoint) -> impl Future<Output = Result<(), RegistryError>> + Send;
}

/// The OVSDB side of plugging.
pub trait Switch {
    /// Inserts the container port `make(vlan)` for the tenant's local VLAN on this host (found
    /// by a data plane pass if this host just joined the tenant). The VLAN and the row are
    /// taken under the lock data plane passes hold, so no pass can give the VLAN another
    /// meaning before the row pins it. The port's flows are in before the row: closed, or
    /// open to `known` (the container's MAC and address) when the plug knows them already.
    fn add_port(
        &self,
        tenant: &str,
        known: Option<(MacAddr, IpAddr)>,
        make: impl FnOnce(u16) -> ContainerPort + Send,
    ) -> impl Future<Output = Result<(), PlugError>> + Send;
    /// The container of `port` is known (its MAC and address): its port's flows let it send
    /// from those, and only those (until then everything from the port is dropped).
    fn allow_port(&self, port: &str, mac: MacAddr, ip: IpAddr) -> impl Future<Output = Result<(), PlugError>> + Send;
    /// The plug of `port` is over, successfully or not.
    fn release_port(&self, port: &str, succeeded: bool);
    /// Waits until ovs-vswitchd has taken the port.
    fn port_taken(&self, port: &str) -> impl Future<Output = Result<(), PlugError>> + Send;
    /// The container port `name`, if the agent made it.
    fn find_port(&self, name: &str) -> Option<FoundPort>;
    /// Every container port the agent made on this host.
    fn ports(&self) -> Vec<FoundPort>;
    /// The name of every interface on any bridge.
    fn interface_names(&self) -> BTreeSet<String>;
    /// Removes a container port and waits until ovs-vswitchd has let it go.
    fn remove_port(&self, port: &FoundPort) -> impl Future<Output = Result<(), PlugError>> + Send;
}

/// The netlink side of plugging.
pub trait Links {
    /// A container's network namespace, open.
    type Netns: Send + Sync;
    /// Opens a container's namespace by file.
    fn open(&self, path: &Path) -> impl Future<Output = Result<Self::Netns, NetlinkError>> + Send;
    /// The host namespace, where the host ends are (and the container end of a hand-off plug
    /// waits for its runtime).
    fn host(&self) -> Self::Netns;
    /// Creates the veth pair: `port` on the host, `ifname` inside `netns`.
    fn create_veth(
        &self,
        port: &str,
        ifname: &str,
        netns: &Self::Netns,
        setup: &VethSetup,
    ) -> impl Future<Output = Result<(), NetlinkError>> + Send;
    /// Configures the container end (and turns TX checksum offload off where the datapath
    /// needs it).
    fn configure(
        &self,
        netns: &Self::Netns,
        ifname: &str,
        cfg: &InterfaceConfig,
    ) -> impl Future<Output = Result<(), NetlinkError>> + Send;
    /// Readies the container end `name` of a hand-off plug, still in the host namespace, for
    /// the runtime to move (TX checksum offload off where the datapath needs it: a device
    /// setting, it moves with the link).
    fn hand_off(&self, name: &str) -> impl Future<Output = Result<(), NetlinkError>> + Send;
    /// What link `ifname` in `netns` looks like now, if it exists.
    fn state(
        &self,
        netns: &Self::Netns,
        ifname: &str,
    ) -> impl Future<Output = Result<Option<InterfaceState>, NetlinkError>> + Send;
    /// Whether a link of the host namespace exists.
    fn exists(&self, name: &str) -> impl Future<Output = Result<bool, NetlinkError>> + Send;
    /// Deletes a link of the host namespace; whether it was there.
    fn delete(&self, name: &str) -> impl Future<Output = Result<bool, NetlinkError>> + Send;
    /// The names of the veths of the host namespace.
    fn veth_names(&self) -> impl Future<Output = Result<Vec<String>, NetlinkError>> + Send;
    /// Whether nothing of the host listens on these ports (a published port would hide it);
    /// refused with what to do when something does.
    fn host_ports_free(
        &self,
        ports: Vec<(u16, overlay::publish::Protocol)>,
    ) -> impl Future<Output = Result<(), PlugError>> + Send;
}

/// What a plug needs to know of this host.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// Hostname.
    pub hostname: String,
    /// This machine's identity.
    pub machine_id: String,
    /// Whether the underlay is IPv6 (tunnel overhead).
    pub underlay_ipv6: bool,
    /// Underlay MTU.
    pub underlay_mtu: u32,
}

/// Locks by key, each made on first use and dropped when nobody holds it.
#[derive(Default)]
pub(crate) struct KeyedLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    /// Holds the lock of `key` until the guard is dropped.
    pub(crate) async fn lock(&self, key: &str) -> KeyGuard<'_> {
        let lock = self.locks.lock().expect("keyed locks").entry(key.to_owned()).or_default().clone();
        let guard = lock.clone().lock_owned().await;
        KeyGuard { locks: self, key: key.to_owned(), lock, _guard: Some(guard) }
    }
}

/// A held lock of [`KeyedLocks`].
pub(crate) struct KeyGuard<'a> {
    locks: &'a KeyedLocks,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    _guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        self._guard.take();
        let mut locks = self.locks.locks.lock().expect("keyed locks");
        // Ours, this guard's clone and the map's: nobody else waits for it.
        if Arc::strong_count(&self.lock) == 2 {
            locks.remove(&self.key);
        }
    }
}

/// What plugs share: a lock per container interface, the addresses being claimed right now,
/// and counters.
#[derive(Default)]
pub struct PlugState {
    interfaces: KeyedLocks,
    /// Addresses this agent's plugs claimed that the watched cache may not show yet, by tenant:
    /// concurrent plugs pick different ones. `None` while the plug runs; once its record is
    /// written, the revision of that write (the cache shows it from there on).
    in_flight: Mutex<BTreeMap<String, BTreeMap<IpAddr, Option<i64>>>>,
    /// Container interfaces unplugged by the agent because their link went away (seen going, or
    /// found gone by the start-up recovery).
    pub reaped: AtomicU64,
    /// Host ports plugs in flight publish, with the container publishing each.
    publishing: Mutex<BTreeMap<(u16, overlay::publish::Protocol), String>>,
    /// Start-up recovery is done. Until then the API holds plugs, unplugs and reservations
    /// back: recovery decides from what it listed first, and would take a plug made meanwhile
    /// (a runtime retrying against a restarted agent) for the interrupted one it replaces.
    recovered: std::sync::atomic::AtomicBool,
    recovered_changed: tokio::sync::Notify,
}

impl PlugState {
    /// Marks start-up recovery done and lets the waiting requests go.
    pub fn set_recovered(&self) {
        self.recovered.store(true, std::sync::atomic::Ordering::SeqCst);
        self.recovered_changed.notify_waiters();
    }

    /// Waits (up to `within`) for start-up recovery; whether it is done.
    pub async fn wait_recovered(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.recovered_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.recovered.load(std::sync::atomic::Ordering::SeqCst) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.recovered.load(std::sync::atomic::Ordering::SeqCst);
            }
        }
    }
}

/// The plug logic over one set of [`Records`], [`Switch`] and [`Links`].
pub struct Plugger<'a, R, S, L> {
    pub records: R,
    pub switch: S,
    pub links: L,
    pub host: &'a HostFacts,
    pub state: &'a PlugState,
}

/// The lock key of a container interface.
fn interface_key(container: &str, ifname: &str) -> String {
    format!("{container}/{ifname}")
}

/// Where a plug's time went, for its log line: a slow plug says which step was slow.
struct Steps {
    start: Instant,
    last: Instant,
    done: Vec<(&'static str, Duration)>,
}

impl Steps {
    fn new() -> Self {
        let now = Instant::now();
        Steps { start: now, last: now, done: Vec::with_capacity(12) }
    }

    /// Ends the step called `name`.
    fn end(&mut self, name: &'static str) {
        let now = Instant::now();
        self.done.push((name, now - self.last));
        self.last = now;
    }

    /// Records how long one of the concurrent parts of the step just ended took (listed after
    /// it as `step.part`): the step lasts at least as long as its slowest part, and this says
    /// which.
    fn part(&mut self, name: &'static str, took: Duration) {
        self.done.push((name, took));
    }

    fn total_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1e3
    }

    /// `check:0.4,lease:1.2,...` in milliseconds (one token, so logs stay easy to parse).
    fn summary(&self) -> String {
        let parts: Vec<String> = self.done.iter().map(|(n, d)| format!("{n}:{:.1}", d.as_secs_f64() * 1e3)).collect();
        parts.join(",")
    }
}

/// `fut`'s output and how long it took to produce.
async fn timed<T>(fut: impl Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let out = fut.await;
    (out, start.elapsed())
}
