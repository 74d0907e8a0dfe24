//! Plugging containers the nova-docker way: a veth pair, the host end on br-int with the
//! Interface external_ids Neutron and nova-docker use (`iface-id`, `iface-status`,
//! `attached-mac`, `vm-uuid`), the other end moved into the container's namespace with MAC,
//! address, MTU and default route. Every step is undone when a later one fails, and a crash
//! half-way is repaired at the next start ([`Agent::recover`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use overlay::model::{validate_container_id, Endpoint, MacAddr, SubnetLease, Tenant};
use overlay::naming::{container_peer_temp_name, container_port_name, is_valid_ifname};
use ovsdb_client::{Atom, Condition, Function, Mutation, Mutator, Row, Until, Value};
use serde::{Deserialize, Serialize};

use crate::daemon::Agent;
use crate::netlink::{InterfaceConfig, NetlinkError, Netns, VethSetup};
use crate::registry::{Holdings, IpClaim, RegistryError};

/// Why a plug or unplug failed.
#[derive(Debug, thiserror::Error)]
pub enum PlugError {
    /// The request itself is wrong; nothing was changed.
    #[error("{0}")]
    BadRequest(String),
    /// The container is plugged already with other arguments.
    #[error("{0}")]
    Conflict(String),
    /// The registry refused or failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A netlink or OVSDB step failed; what was done was rolled back.
    #[error("{0}")]
    Plumbing(String),
}

/// How long a plug waits for ovs-vswitchd to take its port.
const PORT_TAKEN_WITHIN: Duration = Duration::from_secs(30);

/// How to find the container's network namespace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NetnsRef {
    /// `/proc/PID/ns/net`.
    Pid(u32),
    /// A namespace file (`/var/run/netns/NAME`, `/proc/PID/ns/net`).
    Path(PathBuf),
}

impl NetnsRef {
    fn path(&self) -> PathBuf {
        match self {
            NetnsRef::Pid(p) => PathBuf::from(format!("/proc/{p}/ns/net")),
            NetnsRef::Path(p) => p.clone(),
        }
    }
}

/// The body of `POST /v1/endpoints`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlugRequest {
    /// Container id: `[A-Za-z0-9][A-Za-z0-9_.-]{0,127}`.
    pub container_id: String,
    /// Tenant name.
    pub tenant: String,
    /// The container's namespace.
    pub netns: NetnsRef,
    /// Interface name inside the container.
    #[serde(default = "default_ifname")]
    pub ifname: String,
    /// A fixed address (any free host address of the tenant CIDR).
    #[serde(default)]
    pub ip: Option<String>,
    /// A fixed MAC (unicast).
    #[serde(default)]
    pub mac: Option<String>,
}

fn default_ifname() -> String {
    "eth0".into()
}

/// What `plug` reports.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlugResult {
    /// The container's address.
    pub ip: IpAddr,
    /// Its prefix length (the tenant's: one L2 segment across hosts).
    pub prefix: u8,
    /// Its MAC.
    pub mac: String,
    /// Default gateway (the tenant's first address).
    pub gateway: IpAddr,
    /// Interface MTU.
    pub mtu: u32,
    /// The host-side port on br-int.
    pub port: String,
    /// The tenant.
    pub tenant: String,
}

/// Where ovs-vswitchd is with a new port.
enum PortState {
    /// It has an ofport: traffic can flow.
    Taken,
    /// It reported an error it will not retry by itself.
    Refused(String),
    /// Not yet; with the "No such device" it reported, if any.
    Pending(Option<String>),
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
    /// it as `step.part`): the step lasts at least as long as its slowest part, and this says which.
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

/// The error for a failed netlink step of the plumbing, saying which step.
fn plumbing(what: &'static str) -> impl FnOnce(NetlinkError) -> PlugError {
    move |e| PlugError::Plumbing(format!("{what}: {e}"))
}

/// `fut`'s output and how long it took to produce.
async fn timed<T>(fut: impl std::future::Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let out = fut.await;
    (out, start.elapsed())
}

struct Checked {
    req: PlugRequest,
    tenant: Tenant,
    ip: Option<IpAddr>,
    mac: MacAddr,
    port: String,
    netns: PathBuf,
}

impl Agent {
    async fn check(&self, req: PlugRequest) -> Result<Checked, PlugError> {
        let bad = |m: String| PlugError::BadRequest(m);
        validate_container_id(&req.container_id).map_err(|e| bad(e.to_string()))?;
        overlay::model::validate_tenant_name(&req.tenant).map_err(|e| bad(e.to_string()))?;
        if !is_valid_ifname(&req.ifname) {
            return Err(bad(format!(
                "interface name '{}' is not valid: use 1-15 characters of [a-z0-9-], e.g. eth0",
                req.ifname
            )));
        }
        let mac = match &req.mac {
            Some(m) => {
                let mac: MacAddr = m.parse().map_err(|e: overlay::error::ModelError| bad(e.to_string()))?;
                mac.validate_unicast().map_err(|e| bad(e.to_string()))?;
                mac
            }
            None => MacAddr::locally_administered_from(format!("{}/{}", req.tenant, req.container_id).as_bytes()),
        };
        let netns = req.netns.path();
        if let NetnsRef::Pid(pid) = req.netns {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                return Err(bad(format!("no process with PID {pid}: is the container running?")));
            }
        }
        if !netns.exists() {
            return Err(bad(format!(
                "network namespace {} does not exist: is the container running?",
                netns.display()
            )));
        }
        let tenant = self.registry.get_tenant(&req.tenant).await?;
        let ip = match &req.ip {
            None => None,
            Some(s) => {
                let ip: IpAddr =
                    s.parse().map_err(|_| bad(format!("'{s}' is not an IP address: give one like 198.19.0.10")))?;
                overlay::ipam::check_requested_address(ip, &tenant).map_err(|e| bad(e.to_string()))?;
                Some(ip)
            }
        };
        let port = container_port_name(&req.container_id);
        Ok(Checked { req, tenant, ip, mac, port, netns })
    }

    fn result_for(&self, tenant: &Tenant, ip: IpAddr, mac: &MacAddr, port: &str) -> Result<PlugResult, PlugError> {
        Ok(PlugResult {
            ip,
            prefix: tenant.cidr().prefix_len(),
            mac: mac.to_string(),
            gateway: tenant.gateway(),
            mtu: self.container_mtu(tenant)?,
            port: port.to_owned(),
            tenant: tenant.name().to_owned(),
        })
    }

    fn container_mtu(&self, tenant: &Tenant) -> Result<u32, PlugError> {
        let underlay = self.underlay_mtu;
        overlay::mtu::container_mtu(underlay, tenant.tunnel(), self.me.underlay_ip.is_ipv6(), tenant.is_ipv6())
            .map_err(|e| PlugError::BadRequest(e.to_string()))
    }

    /// Plugs a container; plugging it again with the same arguments returns the same result.
    pub async fn plug(&self, req: PlugRequest) -> Result<PlugResult, PlugError> {
        let mut steps = Steps::new();
        // The tenant's read (in the check) and this host's holdings are two etcd round trips
        // with nothing between them; the holdings are read under the lock, as they must be.
        let locked_holdings = async {
            let guard = self.plumbing_lock.lock().await;
            self.registry.holdings_of(&self.me.hostname).await.map(|held| (guard, held))
        };
        let (c, locked) = tokio::join!(self.check(req), locked_holdings);
        let c = c?;
        let (_guard, held) = locked?;
        steps.end("check+holdings");
        if let Some(existing) = held.endpoints.iter().find(|e| e.container_id == c.req.container_id) {
            let same = existing.tenant == c.req.tenant
                && c.ip.is_none_or(|ip| ip == existing.ip)
                && (c.req.mac.is_none() || existing.mac == c.mac);
            if !same {
                return Err(PlugError::Conflict(format!(
                    "container '{}' is already plugged (tenant {}, ip {}, mac {}): unplug it first to change that",
                    existing.container_id, existing.tenant, existing.ip, existing.mac
                )));
            }
            if self.port_complete(&c.port).await {
                // Plugged already: the container's side is made as the result says, so a plug
                // again repairs it (earlier versions could record a plug whose container was
                // never configured, when killed between the two).
                let result = self.result_for(&c.tenant, existing.ip, &existing.mac, &c.port)?;
                let configured = match Netns::open(&c.netns).await {
                    Ok(ns) => self.configure_container(&ns, &c, &result).await,
                    Err(e) => Err(plumbing("opening the container namespace")(e)),
                };
                match configured {
                    Ok(()) => return Ok(result),
                    Err(e) => tracing::warn!(
                        container = %existing.container_id, error = %e,
                        "endpoint recorded but the container's interface cannot be configured; plugging again"
                    ),
                }
            } else {
                tracing::warn!(container = %existing.container_id, "endpoint recorded but its port is incomplete; plugging again");
            }
        }
        steps.end("existing");
        // Whatever a crashed or failed attempt left is removed before starting afresh.
        self.remove_container(&c.req.container_id, &held).await?;
        steps.end("cleanup");
        let lease = self.join_tenant_locked(&c.tenant).await?;
        steps.end("lease");
        let held_here: BTreeSet<IpAddr> = held
            .claims
            .iter()
            .filter(|(tenant, _, claim)| tenant == c.tenant.name() && claim.container != c.req.container_id)
            .map(|(_, ip, _)| *ip)
            .collect();
        match self.plumb(&c, &lease, &held_here, &mut steps).await {
            Ok(result) => {
                tracing::info!(
                    container = %c.req.container_id, tenant = %c.req.tenant, ip = %result.ip, port = %c.port,
                    took_ms = format!("{:.1}", steps.total_ms()), steps = %steps.summary(), "container plugged"
                );
                Ok(result)
            }
            Err(e) => {
                tracing::warn!(container = %c.req.container_id, error = %e, "plug failed; rolling back");
                if let Err(re) = self.unplug_locked(&c.req.container_id).await {
                    tracing::error!(container = %c.req.container_id, error = %re, "rollback incomplete");
                }
                Err(e)
            }
        }
    }

    /// Creates the veth and the port, claims the address, configures the container's side and
    /// records the endpoint; the caller rolls everything back when this fails.
    async fn plumb(
        &self,
        c: &Checked,
        lease: &SubnetLease,
        held_here: &BTreeSet<IpAddr>,
        steps: &mut Steps,
    ) -> Result<PlugResult, PlugError> {
        let mtu = self.container_mtu(&c.tenant)?;
        let vlan = self.tenant_vlan(c.tenant.name()).await.map_err(|e| PlugError::Plumbing(format!("{e:#}")))?;
        steps.end("vlan");
        let container_ns = Netns::open(&c.netns).await.map_err(plumbing("opening the container namespace"))?;
        // The container end is created inside the container under its final name: moving a
        // link between namespaces costs the kernel 10-20 ms (RCU grace periods), most of a plug.
        // MTU, MAC, the host end's up state and promiscuity (a bridge port's, which
        // ovs-vswitchd would set otherwise) go in the creating request and the container end
        // comes up right after: each change of the host end is a link event for ovs-vswitchd,
        // and close together they are taken in one reconfiguration, not spread over several.
        // IPv6 goes off on the host end, and in an IPv4 tenant the container end gets no
        // link-local address: their DAD, MLD and router solicitations would otherwise be
        // flooded to every port and tunnel of the tenant.
        let setup = VethSetup {
            mtu: Some(mtu),
            peer_mac: Some(c.mac.0),
            up: true,
            peer_up: true,
            promisc: true,
            ipv6_off: true,
            peer_ipv6_off: !c.tenant.is_ipv6(),
        };
        let veth = async {
            match self.host_netns.create_veth_into_with(&c.port, &c.req.ifname, &container_ns, &setup).await {
                Ok(()) => Ok(()),
                Err(NetlinkError::AlreadyExists { netns, .. }) if netns == container_ns.label() => {
                    Err(PlugError::BadRequest(format!(
                        "the container already has an interface named {}: choose another --ifname",
                        c.req.ifname
                    )))
                }
                Err(e) => Err(plumbing("creating the veth pair into the container")(e)),
            }
        };
        let claim = IpClaim { container: c.req.container_id.clone(), host: self.me.hostname.clone() };
        let address = async {
            match c.ip {
                Some(ip) => self.registry.reserve_ip(c.tenant.name(), ip, &claim).await.map(|()| ip),
                // The cleanup above released whatever this container held.
                None => self.registry.allocate_ip_hinted(&c.tenant, lease, &claim, held_here).await,
            }
        };
        // ovs-vswitchd reconfigures (walking every port of the host, see docs/benchmarks.md)
        // once for the new OVSDB row and once for the new link. Sent together, they usually
        // reach it before it wakes, and one walk takes both; sent one after the other, a plug
        // waits for two. The row is sent first: if ovs-vswitchd reaches it before the link
        // exists, it records "No such device" and takes the port at the link's event.
        let ((added, ovsdb_took), (created, veth_took), (claimed, address_took)) =
            tokio::join!(timed(self.add_container_port(c, vlan)), timed(veth), timed(address));
        added?;
        created?;
        let ip = claimed?;
        steps.end("port+veth+address");
        steps.part("port+veth+address.ovsdb", ovsdb_took);
        steps.part("port+veth+address.veth", veth_took);
        steps.part("port+veth+address.etcd", address_took);
        let result = self.result_for(&c.tenant, ip, &c.mac, &c.port)?;

        // The container's side, then the endpoint record, are done while ovs-vswitchd takes
        // the port; a failure of any rolls back all three. The record comes last because it
        // is what marks the plug complete: an agent killed before it finds the plug incomplete
        // at start and rolls it back, and a plug again of the same container starts afresh.
        // Written alongside the container's configuration (as it once was), a kill between the
        // two left a recorded plug whose container had no address, and a plug again returned
        // it as done (seen in the kill-mid-plug fault test under load).
        let container_side = self.configure_container(&container_ns, c, &result);
        let ep = Endpoint {
            tenant: c.tenant.name().to_owned(),
            container_id: c.req.container_id.clone(),
            host: self.me.hostname.clone(),
            ip,
            mac: c.mac,
            iface_id: c.req.container_id.clone(),
            port: c.port.clone(),
        };
        let configured_then_recorded = async {
            container_side.await?;
            self.registry.put_endpoint(&ep).await?;
            Ok::<(), PlugError>(())
        };
        let (taken, recorded) = tokio::join!(self.port_taken_by_vswitchd(&c.port), configured_then_recorded);
        recorded?;
        taken?;
        steps.end("vswitchd");
        Ok(result)
    }

    /// Gives the container's interface the MAC, MTU, address and default route of `result`
    /// (from whatever state it is in: each setting is made only where it differs).
    async fn configure_container(&self, netns: &Netns, c: &Checked, result: &PlugResult) -> Result<(), PlugError> {
        let cfg = InterfaceConfig {
            mac: c.mac.0,
            mtu: result.mtu,
            address: result.ip,
            prefix_len: result.prefix,
            gateway: Some(result.gateway),
        };
        netns
            .configure_interface(&c.req.ifname, &cfg)
            .await
            .map_err(plumbing("configuring the container interface"))?;
        if self.config.ovs.datapath_type == overlay_config::DatapathType::Netdev {
            // The userspace datapath does not fill in checksums the kernel left to offload:
            // without this, TCP over the tunnel stalls while ping works.
            crate::netlink::disable_tx_checksum(netns, &c.req.ifname)
                .await
                .map_err(plumbing("turning off TX checksum offload"))?;
        }
        Ok(())
    }

    /// Inserts the container's port on br-int with the Neutron / nova-docker external_ids.
    async fn add_container_port(&self, c: &Checked, vlan: u16) -> Result<(), PlugError> {
        let mut iface_ids = BTreeMap::new();
        iface_ids.insert("iface-id".to_owned(), c.req.container_id.clone());
        iface_ids.insert("iface-status".to_owned(), "active".to_owned());
        iface_ids.insert("attached-mac".to_owned(), c.mac.to_string());
        iface_ids.insert("vm-uuid".to_owned(), c.req.container_id.clone());
        let port_ids =
            overlay::external_ids::container_port(&self.me.hostname, c.tenant.name(), c.tenant.vni().get(), vlan);
        let mut tx = self.ovs.transaction();
        let iface = tx
            .insert("Interface", Row::new().with("name", c.port.as_str()).with("external_ids", Value::map(iface_ids)));
        let port = tx.insert(
            "Port",
            Row::new()
                .with("name", c.port.as_str())
                .with("interfaces", Value::set([iface]))
                .with("tag", Value::set([i64::from(vlan)]))
                .with("external_ids", Value::map(port_ids)),
        );
        tx.mutate(
            "Bridge",
            vec![Condition::eq("name", self.config.ovs.int_bridge.as_str())],
            vec![Mutation::insert("ports", Value::set([port]))],
        );
        self.ovs.transact(&tx).await.map_err(|e| PlugError::Plumbing(format!("adding the port to OVSDB: {e}")))?;
        Ok(())
    }

    /// Waits until ovs-vswitchd has given `port` an ofport (traffic can flow), or says why not.
    /// 30 s at most: a loaded host's ovs-vswitchd falls seconds behind (100 concurrent plugs
    /// on this 2-CPU test machine took over 10 s); ovs-vsctl itself waits without a limit.
    ///
    /// "No such device" is expected when ovs-vswitchd read the row before the kernel had the
    /// link: it opens the port again at the link's event. Rarely (once in some 1,700 plugs of
    /// the plug benchmark, under load) no later pass took it, and the port waited forever. So
    /// while that error stays and the link exists, ovs-vswitchd is asked to reconfigure (by
    /// bumping `next_cfg`, the OVSDB change ovs-vsctl makes for the same purpose): after 1 s,
    /// then every 5 s.
    async fn port_taken_by_vswitchd(&self, port: &str) -> Result<(), PlugError> {
        let deadline = Instant::now() + PORT_TAKEN_WITHIN;
        let mut slice = Duration::from_secs(1);
        let last_error = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.port_state_within(port, slice.min(remaining)).await {
                PortState::Taken => return Ok(()),
                PortState::Refused(err) => {
                    return Err(PlugError::Plumbing(format!("ovs-vswitchd could not add {port}: {err}")))
                }
                PortState::Pending(last) if Instant::now() >= deadline => break last,
                PortState::Pending(Some(err)) if err.contains("No such device") => {
                    if self.host_netns.link_exists(port).await.unwrap_or(false) {
                        tracing::warn!(%port, "ovs-vswitchd missed the link it found missing; asking it to reconfigure");
                        self.nudge_vswitchd().await;
                    }
                }
                PortState::Pending(_) => {}
            }
            slice = Duration::from_secs(5);
        };
        Err(PlugError::Plumbing(match last_error {
            Some(err) => format!(
                "ovs-vswitchd did not take port {port} within {} s; the last error it reported: {err}",
                PORT_TAKEN_WITHIN.as_secs()
            ),
            None => {
                format!(
                    "ovs-vswitchd did not take port {port} within {} s: is it running?",
                    PORT_TAKEN_WITHIN.as_secs()
                )
            }
        }))
    }

    /// What ovs-vswitchd made of `port` once it has an ofport or an error other than "No such
    /// device" (which it retries), or after `within`.
    async fn port_state_within(&self, port: &str, within: Duration) -> PortState {
        let mut state = PortState::Pending(None);
        let _ = self
            .ovs
            .wait_until(within, |r| {
                let Some((_, row)) = r.table("Interface").find_one("name", &Atom::from(port)) else {
                    return false;
                };
                if row.get_as::<Option<i64>>("ofport").ok().flatten().is_some_and(|p| p > 0) {
                    state = PortState::Taken;
                    return true;
                }
                match row.get_as::<Option<String>>("error").ok().flatten() {
                    Some(err) if err.contains("No such device") => {
                        state = PortState::Pending(Some(err));
                        false
                    }
                    Some(err) => {
                        state = PortState::Refused(err);
                        true
                    }
                    None => false,
                }
            })
            .await;
        state
    }

    /// Makes ovs-vswitchd reconfigure, which opens again every port it could not open before.
    async fn nudge_vswitchd(&self) {
        let Some(root) = crate::ovs::root(&self.ovs.replica()).map(|(u, _)| u) else { return };
        let mut tx = self.ovs.transaction();
        bump_next_cfg(&mut tx, &root);
        if let Err(e) = self.ovs.transact(&tx).await {
            tracing::warn!(error = %e, "could not ask ovs-vswitchd to reconfigure");
        }
    }

    /// True when the port is on br-int, has an ofport, and its veth exists.
    async fn port_complete(&self, port: &str) -> bool {
        let in_ovs = {
            let r = self.ovs.replica();
            r.table("Interface")
                .find_one("name", &Atom::from(port))
                .is_some_and(|(_, row)| row.get_as::<Option<i64>>("ofport").ok().flatten().is_some_and(|p| p > 0))
        };
        in_ovs && self.host_netns.link_exists(port).await.unwrap_or(false)
    }

    /// Unplugs a container: port, veth, endpoint record and address. Returns whether anything
    /// was there.
    pub async fn unplug(&self, container_id: &str) -> Result<bool, PlugError> {
        validate_container_id(container_id).map_err(|e| PlugError::BadRequest(e.to_string()))?;
        let _guard = self.plumbing_lock.lock().await;
        let found = self.unplug_locked(container_id).await?;
        if found {
            tracing::info!(container = %container_id, "container unplugged");
        }
        Ok(found)
    }

    /// Removes every trace of `container_id` on this host; each step tolerates the thing
    /// being gone already, so it also cleans up after a crash.
    pub(crate) async fn unplug_locked(&self, container_id: &str) -> Result<bool, PlugError> {
        let held = self.registry.holdings_of(&self.me.hostname).await?;
        self.remove_container(container_id, &held).await
    }

    /// [`Agent::unplug_locked`] with this host's etcd records already read.
    async fn remove_container(&self, container_id: &str, held: &Holdings) -> Result<bool, PlugError> {
        let port = container_port_name(container_id);
        let mut found = false;
        let port_uuid = {
            let r = self.ovs.replica();
            r.table("Port").find_one("name", &Atom::from(port.as_str())).and_then(|(u, row)| {
                let ours = row.map_str("external_ids", overlay::external_ids::OWNER) == Some(self.me.hostname.as_str())
                    && row.map_str("external_ids", overlay::external_ids::KIND)
                        == Some(overlay::external_ids::KIND_CONTAINER);
                ours.then(|| u.clone())
            })
        };
        if let Some(uuid) = port_uuid {
            found = true;
            let root = crate::ovs::root(&self.ovs.replica()).map(|(u, _)| u);
            let mut tx = self.ovs.transaction();
            tx.mutate(
                "Bridge",
                vec![Condition::includes("ports", Value::set([uuid.clone()]))],
                vec![Mutation::delete("ports", Value::set([uuid.clone()]))],
            );
            // ovs-vsctl's way to learn when ovs-vswitchd has applied a change: it copies
            // next_cfg to cur_cfg at the end of the reconfiguration that saw it.
            let next_cfg = root.as_ref().map(|root| {
                bump_next_cfg(&mut tx, root);
                tx.select("Open_vSwitch", vec![Condition::uuid(root)], Some(vec!["next_cfg".to_owned()]))
            });
            let outcome = self
                .ovs
                .transact(&tx)
                .await
                .map_err(|e| PlugError::Plumbing(format!("removing port {port} from OVSDB: {e}")))?;
            // The veth goes next, and the same container may be plugged again at once under the
            // same port name. If ovs-vswitchd took the removal and the new port in one pass, it
            // would keep the old port's netdev, bound to the deleted link, and the new port
            // would carry no traffic.
            let wanted = next_cfg.and_then(|i| outcome.rows(i).first()?.get_as::<i64>("next_cfg").ok());
            if let (Some(root), Some(wanted)) = (root, wanted) {
                self.vswitchd_applied(&root, wanted, &port).await;
            }
            let _ = self.ovs.wait_until(Duration::from_secs(5), |r| r.get("Port", &uuid).is_none()).await;
        }
        for link in [port.clone(), container_peer_temp_name(container_id)] {
            found |= self
                .host_netns
                .delete_link(&link)
                .await
                .map_err(|e| PlugError::Plumbing(format!("deleting veth {link}: {e}")))?;
        }
        for ep in held.endpoints.iter().filter(|e| e.container_id == container_id) {
            found = true;
            self.registry.delete_endpoint(ep).await?;
        }
        for (tenant, ip, claim) in held.claims.iter().filter(|(_, _, claim)| claim.container == container_id) {
            found = true;
            // delete_endpoint released its record's address in the same transaction.
            let released =
                held.endpoints.iter().any(|e| e.container_id == container_id && &e.tenant == tenant && e.ip == *ip);
            if !released {
                self.registry.release_ip(tenant, *ip, claim).await?;
            }
        }
        Ok(found)
    }

    /// Waits (5 s at most) until ovs-vswitchd's `cur_cfg` reaches `next_cfg`: a `wait`
    /// operation, which ovsdb-server holds until it holds, so nothing polls. A timeout is only
    /// logged: the row is gone either way, and without ovs-vswitchd there is nothing to wait for.
    async fn vswitchd_applied(&self, root: &ovsdb_client::Uuid, next_cfg: i64, port: &str) {
        let mut tx = self.ovs.transaction();
        tx.wait(
            "Open_vSwitch",
            vec![Condition::uuid(root), Condition::new("cur_cfg", Function::Ge, next_cfg)],
            vec!["cur_cfg".to_owned()],
            Until::NotEqual,
            Vec::new(),
            Some(5000),
        );
        if let Err(e) = self.ovs.transact(&tx).await {
            tracing::warn!(%port, error = %e, "ovs-vswitchd did not confirm the port's removal within 5 s: is it running?");
        }
    }

    /// Repairs what a crash mid-plug or mid-unplug left: every container port, veth or address
    /// of this host without a complete endpoint record is removed.
    pub async fn recover(&self) -> anyhow::Result<()> {
        let _guard = self.plumbing_lock.lock().await;
        let Holdings { endpoints, claims } = self.registry.holdings_of(&self.me.hostname).await?;
        let mut suspects: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        {
            let r = self.ovs.replica();
            for (_, row) in r.table("Port").rows() {
                let ours = row.map_str("external_ids", overlay::external_ids::OWNER) == Some(self.me.hostname.as_str())
                    && row.map_str("external_ids", overlay::external_ids::KIND)
                        == Some(overlay::external_ids::KIND_CONTAINER);
                if !ours {
                    continue;
                }
                let name: String = row.get_as("name").unwrap_or_default();
                let iface = row
                    .get_as::<Vec<ovsdb_client::Uuid>>("interfaces")
                    .ok()
                    .and_then(|i| i.first().cloned())
                    .and_then(|u| r.get("Interface", &u).cloned());
                let cid = iface.as_ref().and_then(|i| i.map_str("external_ids", "vm-uuid").map(str::to_owned));
                match cid {
                    Some(cid) if endpoints.iter().any(|e| e.container_id == cid && e.port == name) => {}
                    Some(cid) => {
                        suspects.insert(cid);
                    }
                    None => tracing::warn!(port = %name, "container port without vm-uuid left alone"),
                }
            }
        }
        for (_, _, claim) in claims {
            if !endpoints.iter().any(|e| e.container_id == claim.container) {
                suspects.insert(claim.container);
            }
        }
        for ep in &endpoints {
            if !self.port_complete(&ep.port).await {
                suspects.insert(ep.container_id.clone());
            }
        }
        for cid in suspects {
            tracing::warn!(container = %cid, "incomplete plug found at start; rolling it back");
            self.unplug_locked(&cid).await?;
        }
        // A plug makes its veth, its port row and its address claim at once, so a crash can
        // leave the veth alone: no row or claim names its container. Such a veth (our name
        // form, on no bridge, no endpoint's port) is removed, and its container end with it.
        let on_a_bridge: BTreeSet<String> = {
            let r = self.ovs.replica();
            r.table("Interface").rows().filter_map(|(_, row)| row.get_as::<String>("name").ok()).collect()
        };
        for name in self.host_netns.veth_names().await? {
            let ours = overlay::naming::is_container_port_name(&name);
            if ours && !on_a_bridge.contains(&name) && !endpoints.iter().any(|e| e.port == name) {
                tracing::warn!(veth = %name, "veth of an interrupted plug found at start (no port); removing it");
                self.host_netns.delete_link(&name).await?;
            }
        }
        Ok(())
    }
}

/// Adds to `tx` the change that makes ovs-vswitchd reconfigure: `next_cfg` + 1 on the root row
/// (ovs-vswitchd copies it to `cur_cfg` once the reconfiguration that saw it is done).
fn bump_next_cfg(tx: &mut ovsdb_client::Transaction, root: &ovsdb_client::Uuid) {
    tx.mutate("Open_vSwitch", vec![Condition::uuid(root)], vec![Mutation::new("next_cfg", Mutator::Add, 1i64)]);
}
