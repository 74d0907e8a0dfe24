//! Attaching a container interface (a plug): check the request, then veth, port row and address together, then the container's
//! side, and the endpoint record last.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use overlay::model::{
    iface_id, validate_container_id, validate_owner, Endpoint, IpClaim, MacAddr, SubnetLease, Tenant,
};
use overlay::naming::{container_port_name, is_valid_ifname};
use overlay::publish::Publish;
use overlay_api::handoff_name;

use super::{
    interface_key, step, timed, Links, NetnsRef, PlugError, PlugRequest, PlugResult, Plugger, Records, Steps, Switch,
};
use crate::netlink::{InterfaceConfig, NetlinkError, VethSetup};
use crate::ovs::container_port::ContainerPort;
use crate::registry::RegistryError;

/// A request that passed [`Plugger::check`].
pub(super) struct Checked {
    pub(super) req: PlugRequest,
    pub(super) tenant: Tenant,
    pub(super) ip: Option<IpAddr>,
    /// The MAC asked for; without one, the MAC follows from the address ([`mac_for`]).
    pub(super) mac: Option<MacAddr>,
    pub(super) port: String,
    /// The container's namespace; `None` for a hand-off plug ([`NetnsRef::Handoff`]).
    pub(super) netns: Option<PathBuf>,
    /// The ports to publish, checked for form.
    pub(super) publish: Vec<Publish>,
}

impl Checked {
    /// The container end's name where the plug creates it: the interface name inside the
    /// container, or in the host namespace for a hand-off.
    pub(super) fn peer_name(&self) -> String {
        match self.netns {
            Some(_) => self.req.ifname.clone(),
            None => handoff_name(&self.req.container_id, &self.req.ifname),
        }
    }
}

impl<R: Records, S: Switch, L: Links> Plugger<'_, R, S, L> {
    /// Validates a request; reads the tenant. Nothing is changed.
    pub(super) async fn check(&self, req: PlugRequest) -> Result<Checked, PlugError> {
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
                if overlay::gateway::is_gateway_mac(&mac) {
                    return Err(bad(format!(
                        "MAC {mac} is in the range of tenant gateways (02:4f:56:..): choose another"
                    )));
                }
                Some(mac)
            }
            None => None,
        };
        let netns = req.netns.path();
        if let NetnsRef::Pid(pid) = req.netns {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                return Err(bad(format!("no process with PID {pid}: is the container running?")));
            }
        }
        if let Some(netns) = netns.as_ref().filter(|n| !n.exists()) {
            return Err(bad(format!(
                "network namespace {} does not exist: is the container running?",
                netns.display()
            )));
        }
        if let Some(owner) = &req.owner {
            validate_owner(owner).map_err(|e| bad(e.to_string()))?;
        }
        if req.reserved && req.ip.is_none() {
            return Err(bad("a plug of a reserved address names the address: give ip with reserved".into()));
        }
        let tenant = self.records.tenant(&req.tenant).await?;
        let ip = match &req.ip {
            None => None,
            Some(s) => {
                let ip: IpAddr =
                    s.parse().map_err(|_| bad(format!("'{s}' is not an IP address: give one like 198.19.0.10")))?;
                overlay::ipam::check_requested_address(ip, &tenant).map_err(|e| bad(e.to_string()))?;
                Some(ip)
            }
        };
        let publish = self.check_publish(&req, &tenant)?;
        let port = container_port_name(&req.container_id, &req.ifname);
        Ok(Checked { req, tenant, ip, mac, port, netns, publish })
    }

    fn container_mtu(&self, tenant: &Tenant) -> Result<u32, PlugError> {
        overlay::mtu::container_mtu(self.host.underlay_mtu, tenant.tunnel(), self.host.underlay_ipv6, tenant.is_ipv6())
            .map_err(|e| PlugError::BadRequest(e.to_string()))
    }

    pub(super) fn result_for(&self, c: &Checked, ip: IpAddr, mac: &MacAddr) -> Result<PlugResult, PlugError> {
        Ok(PlugResult {
            ip,
            prefix: c.tenant.cidr().prefix_len(),
            mac: mac.to_string(),
            gateway: c.tenant.gateway(),
            mtu: self.container_mtu(&c.tenant)?,
            port: c.port.clone(),
            tenant: c.tenant.name().to_owned(),
            ifname: c.req.ifname.clone(),
            handoff: c.netns.is_none().then(|| c.peer_name()),
            publish: c.publish.iter().map(ToString::to_string).collect(),
        })
    }

    fn claim(&self, c: &Checked) -> IpClaim {
        IpClaim {
            container: c.req.container_id.clone(),
            host: self.host.hostname.clone(),
            ifname: c.req.ifname.clone(),
            machine_id: self.host.machine_id.clone(),
        }
    }

    /// Plugs a container interface; plugging it again with the same arguments returns the same
    /// result (and repairs the container's side if it was changed).
    pub async fn plug(&self, req: PlugRequest) -> Result<PlugResult, PlugError> {
        let mut steps = Steps::new();
        let c = self.check(req).await?;
        let _guard = self.state.interfaces.lock(&interface_key(&c.req.container_id, &c.req.ifname)).await;
        let held = self.records.holdings().await?;
        steps.end("check+holdings");
        let existing = held.iter().find(|(_, e)| e.container_id == c.req.container_id && e.ifname == c.req.ifname);
        if let Some((_, existing)) = existing {
            if let Some(result) = self.plugged_already(&c, existing).await? {
                return Ok(result);
            }
        }
        steps.end("existing");
        // Published ports are taken before anything changes: a refusal leaves nothing.
        let _published = self.reserve_publish(&c, &held).await?;
        // Whatever a crashed or failed attempt left is removed before starting afresh.
        self.remove_interface(&c.req.container_id, &c.req.ifname, &held).await?;
        steps.end("cleanup");
        let lease = self.records.ensure_lease(&c.tenant).await?;
        steps.end("lease");
        let mut claimed = None;
        let outcome = self.plumb(&c, &lease, &mut claimed, &mut steps).await;
        self.switch.release_port(&c.port, outcome.is_ok());
        if let Some(ip) = claimed {
            let written = outcome.is_ok().then(|| self.records.written());
            self.settle(c.tenant.name(), ip, written);
        }
        match outcome {
            Ok(result) => {
                tracing::info!(
                    container = %c.req.container_id, ifname = %c.req.ifname, tenant = %c.req.tenant, ip = %result.ip,
                    port = %c.port, took_ms = format!("{:.1}", steps.total_ms()), steps = %steps.summary(),
                    "container plugged"
                );
                Ok(result)
            }
            Err(cause) => {
                tracing::warn!(container = %c.req.container_id, ifname = %c.req.ifname, error = %cause, "plug failed; rolling back");
                match self.roll_back(&c, claimed).await {
                    Ok(()) => Err(cause),
                    Err(rollback) => {
                        Err(PlugError::RollbackFailed { cause: Box::new(cause), rollback: Box::new(rollback) })
                    }
                }
            }
        }
    }

    /// For a container interface recorded already: its result if it is plugged as asked (the
    /// container's side made as recorded), `None` if it must be plugged afresh, a conflict if
    /// it was plugged with other arguments.
    async fn plugged_already(&self, c: &Checked, existing: &Endpoint) -> Result<Option<PlugResult>, PlugError> {
        let same = existing.tenant == c.req.tenant
            && c.ip.is_none_or(|ip| ip == existing.ip)
            && c.mac.is_none_or(|mac| mac == existing.mac)
            && sorted(&c.publish) == sorted(&existing.publish);
        if !same {
            return Err(PlugError::Conflict(format!(
                "container '{}' interface {} is already plugged (tenant {}, ip {}, mac {}, published [{}]): unplug it first to \
                 change that",
                existing.container_id,
                existing.ifname,
                existing.tenant,
                existing.ip,
                existing.mac,
                existing.publish.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            )));
        }
        let complete = self.switch.find_port(&c.port).is_some_and(|p| p.ofport.is_some())
            && self.links.exists(&c.port).await.unwrap_or(false);
        if !complete {
            tracing::warn!(container = %existing.container_id, ifname = %existing.ifname, "endpoint recorded but its port is incomplete; plugging again");
            return Ok(None);
        }
        // A plug again makes the container's side as recorded, so it also repairs it. A hand-off
        // plug's container side is the runtime's.
        let result = self.result_for(c, existing.ip, &existing.mac)?;
        let Some(netns) = &c.netns else { return Ok(Some(result)) };
        let configured = match self.links.open(netns).await {
            Ok(ns) => self.links.configure(&ns, &c.req.ifname, &interface_config(&existing.mac, &result)).await,
            Err(e) => Err(e),
        };
        match configured {
            Ok(()) => Ok(Some(result)),
            Err(e) => {
                tracing::warn!(
                    container = %existing.container_id, ifname = %existing.ifname, error = %e,
                    "endpoint recorded but the container's interface cannot be configured; plugging again"
                );
                Ok(None)
            }
        }
    }

    /// Creates the veth and the port, claims the address, configures the container's side and
    /// records the endpoint. `claimed` gets the address once reserved, for the rollback.
    async fn plumb(
        &self,
        c: &Checked,
        lease: &SubnetLease,
        claimed: &mut Option<IpAddr>,
        steps: &mut Steps,
    ) -> Result<PlugResult, PlugError> {
        let mtu = self.container_mtu(&c.tenant)?;
        let container_ns = match &c.netns {
            Some(path) => self.links.open(path).await.map_err(step("opening the container namespace"))?,
            None => self.links.host(),
        };
        let peer = c.peer_name();
        // The container end is created inside the container under its final name: moving a
        // link between namespaces costs the kernel 10-20 ms (RCU grace periods), most of a plug.
        // MTU, MAC, the host end's up state and promiscuity (a bridge port's, which
        // ovs-vswitchd would set otherwise) go in the creating request and the container end
        // comes up right after: each change of the host end is a link event for ovs-vswitchd,
        // and close together they are taken in one reconfiguration, not spread over several.
        // IPv6 goes off on the host end, and in an IPv4 tenant the container end gets no
        // link-local address: their DAD, MLD and router solicitations would otherwise be
        // flooded to every port and tunnel of the tenant.
        // Without a MAC asked for, the address comes first: the MAC follows from it, so a
        // container given an address another one had before has that one's MAC too, and the
        // other containers' ARP entries for the address stay right (ARP for remote containers
        // is answered by the flows, so the new container's own requests do not refresh them).
        let mut steps_address = None;
        let early_ip = match c.mac {
            Some(_) => None,
            None => {
                let (ip, took) = timed(self.claim_address(c, lease)).await;
                let ip = ip?;
                *claimed = Some(ip);
                steps_address = Some(took);
                Some(ip)
            }
        };
        let mac = c.mac.or_else(|| early_ip.map(|ip| mac_for(&c.tenant, ip))).expect("a MAC or an address");
        let setup = VethSetup {
            mtu: Some(mtu),
            peer_mac: Some(mac.0),
            up: true,
            peer_up: true,
            promisc: true,
            ipv6_off: true,
            peer_ipv6_off: !c.tenant.is_ipv6(),
        };
        // A hand-off end stays down: the runtime brings it up once it is in the container.
        let setup = VethSetup { peer_up: c.netns.is_some(), ..setup };
        let veth = async {
            match self.links.create_veth(&c.port, &peer, &container_ns, &setup).await {
                Ok(()) => Ok(()),
                Err(NetlinkError::AlreadyExists { name, .. }) if name == peer && c.netns.is_some() => {
                    Err(PlugError::BadRequest(format!(
                        "the container already has an interface named {}: choose another --ifname",
                        c.req.ifname
                    )))
                }
                Err(e) => Err(step("creating the veth pair into the container")(e)),
            }
        };
        let address = async {
            match early_ip {
                Some(ip) => Ok(ip),
                None => self.claim_address(c, lease).await,
            }
        };
        // With the address claimed already, the port's flows go in once, open to it.
        let known = early_ip.map(|ip| (mac, ip));
        let port = self.switch.add_port(c.tenant.name(), known, |vlan| ContainerPort {
            name: c.port.clone(),
            tag: vlan,
            owner: self.host.hostname.clone(),
            tenant: c.tenant.name().to_owned(),
            vni: c.tenant.vni().get(),
            container_id: c.req.container_id.clone(),
            ifname: c.req.ifname.clone(),
            iface_id: iface_id(&c.req.container_id, &c.req.ifname),
            mac: mac.to_string(),
            ofport_request: None,
        });
        // ovs-vswitchd reconfigures (walking every port of the host) once for the new OVSDB row
        // and once for the new link. Sent together, they usually reach it before it wakes, and
        // one walk takes both; sent one after the other, a plug waits for two. If ovs-vswitchd
        // reaches the row before the link exists, it records "No such device" and takes the
        // port at the link's event.
        let ((added, ovsdb_took), (created, veth_took), (address, address_took)) =
            tokio::join!(timed(port), timed(veth), timed(address));
        if let Ok(ip) = &address {
            *claimed = Some(*ip);
        }
        added?;
        created?;
        let ip = address?;
        self.switch.allow_port(&c.port, mac, ip).await?;
        steps.end("port+veth+address");
        steps.part("port+veth+address.ovsdb", ovsdb_took);
        steps.part("port+veth+address.veth", veth_took);
        steps.part("port+veth+address.etcd", steps_address.unwrap_or(address_took));
        let result = self.result_for(c, ip, &mac)?;

        // The container's side, then the endpoint record, are done while ovs-vswitchd takes the
        // port. The record comes last because it is what marks the plug complete: an agent
        // killed before it finds the plug incomplete at start and rolls it back, and a plug
        // again of the same interface starts afresh.
        let ep = Endpoint {
            tenant: c.tenant.name().to_owned(),
            container_id: c.req.container_id.clone(),
            ifname: c.req.ifname.clone(),
            machine_id: self.host.machine_id.clone(),
            host: self.host.hostname.clone(),
            ip,
            mac,
            iface_id: iface_id(&c.req.container_id, &c.req.ifname),
            port: c.port.clone(),
            owner: c.req.owner.clone(),
            publish: c.publish.clone(),
        };
        let configured_then_recorded = async {
            let configured = match c.netns {
                Some(_) => self.links.configure(&container_ns, &c.req.ifname, &interface_config(&mac, &result)).await,
                None => self.links.hand_off(&peer).await,
            };
            configured.map_err(step("configuring the container interface"))?;
            self.records.put_endpoint(&ep).await?;
            Ok::<(), PlugError>(())
        };
        let (taken, recorded) = tokio::join!(self.switch.port_taken(&c.port), configured_then_recorded);
        recorded?;
        taken?;
        steps.end("vswitchd");
        Ok(result)
    }

    /// Reserves the asked address, or the next free one of this host's lease. Concurrent plugs
    /// of the tenant each take another: the candidate is marked in flight before it is tried,
    /// and stays marked until the watched cache shows its record.
    async fn claim_address(&self, c: &Checked, lease: &SubnetLease) -> Result<IpAddr, PlugError> {
        let claim = self.claim(c);
        let tenant = c.tenant.name();
        if let Some(ip) = c.ip {
            match c.req.reserved {
                true => self.records.take_over_ip(tenant, ip, &claim).await?,
                false => self.records.reserve_ip(tenant, ip, &claim).await?,
            }
            self.mark(tenant, ip);
            return Ok(ip);
        }
        let (candidate, used) = {
            let (revision, recorded) = self.records.addresses_in(tenant);
            let mut in_flight = self.state.in_flight.lock().expect("in-flight addresses");
            let flying = in_flight.entry(tenant.to_owned()).or_default();
            // Records the cache shows from `revision` on are in `recorded` now.
            flying.retain(|_, written| written.is_none_or(|w| w > revision));
            let used: BTreeSet<IpAddr> = recorded.into_iter().chain(flying.keys().copied()).collect();
            let candidate = overlay::ipam::next_free_address(lease.subnet, &c.tenant, &used);
            if let Some(ip) = candidate {
                flying.insert(ip, None);
            }
            (candidate, used)
        };
        if let Some(ip) = candidate {
            match self.records.reserve_ip(tenant, ip, &claim).await {
                Ok(()) => return Ok(ip),
                Err(e) => {
                    self.forget(tenant, ip);
                    if !matches!(e, RegistryError::Conflict(_)) {
                        return Err(e.into());
                    }
                }
            }
        }
        // Taken by someone this host does not know of (a fixed --ip elsewhere): list the tenant.
        let ip = self.records.allocate_ip(&c.tenant, lease, &claim, &used).await?;
        self.mark(tenant, ip);
        Ok(ip)
    }

    /// Marks `ip` as claimed by a plug in flight.
    fn mark(&self, tenant: &str, ip: IpAddr) {
        self.state
            .in_flight
            .lock()
            .expect("in-flight addresses")
            .entry(tenant.to_owned())
            .or_default()
            .insert(ip, None);
    }

    /// The plug that claimed `ip` is over: if it recorded its endpoint (at `written`), the
    /// address stays marked until the cache shows that; if it failed, it goes now.
    fn settle(&self, tenant: &str, ip: IpAddr, written: Option<i64>) {
        let mut in_flight = self.state.in_flight.lock().expect("in-flight addresses");
        let Some(flying) = in_flight.get_mut(tenant) else { return };
        match written {
            Some(rev) => {
                flying.insert(ip, Some(rev));
            }
            None => {
                flying.remove(&ip);
            }
        }
        if flying.is_empty() {
            in_flight.remove(tenant);
        }
    }

    fn forget(&self, tenant: &str, ip: IpAddr) {
        self.settle(tenant, ip, None);
    }

    /// Undoes a failed plug: its port, veth and record, and the address it claimed.
    async fn roll_back(&self, c: &Checked, claimed: Option<IpAddr>) -> Result<(), PlugError> {
        let held = self.records.holdings().await?;
        self.remove_interface(&c.req.container_id, &c.req.ifname, &held).await?;
        if let Some(ip) = claimed {
            self.records.release_ip(c.tenant.name(), ip, &self.claim(c)).await?;
        }
        Ok(())
    }
}

/// The MAC of a container interface whose MAC was not asked for: one per (tenant, address),
/// the way Docker derives its own from the address. Whichever container holds an address has
/// its MAC.
pub(super) fn mac_for(tenant: &Tenant, ip: IpAddr) -> MacAddr {
    MacAddr::locally_administered_from(format!("{}/{ip}", tenant.name()).as_bytes())
}

fn sorted(p: &[Publish]) -> Vec<Publish> {
    let mut v = p.to_vec();
    v.sort_unstable();
    v
}

/// The container end's settings for `result`.
pub(super) fn interface_config(mac: &MacAddr, result: &PlugResult) -> InterfaceConfig {
    InterfaceConfig {
        mac: mac.0,
        mtu: result.mtu,
        address: result.ip,
        prefix_len: result.prefix,
        gateway: Some(result.gateway),
    }
}
