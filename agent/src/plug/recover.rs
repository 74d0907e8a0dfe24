//! Making local state and the records match again: after a crash (start-up recovery), and
//! when a container dies without an unplug (its veth goes with its namespace).
//!
//! Only what is provably this machine's is ever removed from etcd: records that carry this
//! machine's identity, or (for an agent before machine ids) that a port on this host's own
//! bridge vouches for. No local evidence means "not mine", never "roll back".

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use overlay::naming::is_container_port_name;

use super::{interface_key, step, Links, PlugError, Plugger, Records, Switch};

impl<R: Records, S: Switch, L: Links> Plugger<'_, R, S, L> {
    /// Repairs what a crash mid-plug or mid-unplug left, and unplugs containers that went away
    /// while the agent was down (counted as reaped, as if the agent had seen them go). Returns
    /// how many container interfaces it removed.
    pub async fn recover(&self) -> Result<usize, PlugError> {
        let held = self.records.holdings().await?;
        let me = &self.host.machine_id;
        let mut removed = 0;
        let mut vouched = BTreeSet::new();
        // Ports of ours: complete, a container gone, or a plug that never finished.
        for port in self.switch.ports() {
            let Some((container, ifname)) = port.container.clone() else {
                tracing::warn!(port = %port.name, "container port without a container id left alone");
                continue;
            };
            vouched.insert((container.clone(), ifname.clone()));
            let recorded =
                held.iter().any(|(_, e)| e.container_id == container && e.ifname == ifname && e.port == port.name);
            let link = self.links.exists(&port.name).await.map_err(step("looking up the veth"))?;
            let (why, died) = match (recorded, link) {
                (true, true) => continue,
                (true, false) => ("its veth is gone (the container died while the agent was down)", true),
                (false, _) => ("the plug was interrupted", false),
            };
            tracing::warn!(%container, %ifname, port = %port.name, why, "removing a container interface at start");
            self.remove_locked(&container, &ifname).await?;
            removed += 1;
            if died {
                self.state.reaped.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Records of this host without a port.
        for (key, ep) in &held {
            if vouched.contains(&(ep.container_id.clone(), ep.ifname.clone())) {
                continue;
            }
            if ep.machine_id == *me {
                tracing::warn!(
                    container = %ep.container_id, ifname = %ep.ifname, port = %ep.port,
                    "endpoint of this machine has no port here (the container went away while the agent was down); unplugging it"
                );
                self.remove_locked(&ep.container_id, &ep.ifname).await?;
                removed += 1;
                self.state.reaped.fetch_add(1, Ordering::Relaxed);
            } else {
                tracing::warn!(
                    key, machine = %if ep.machine_id.is_empty() { "(an agent before machine ids)" } else { &ep.machine_id },
                    "endpoint record of this hostname with no port here and not written by this machine: left alone; \
                     unplug it by hand if its container is gone"
                );
            }
        }
        // Addresses this machine reserved for an interface that has no record: a plug that
        // stopped between its claim and its record.
        for (tenant, ip, claim) in self.records.own_claims().await? {
            let recorded = held.iter().any(|(_, e)| {
                e.container_id == claim.container && e.ifname == claim.ifname && e.tenant == tenant && e.ip == ip
            });
            if !recorded {
                tracing::warn!(%tenant, %ip, container = %claim.container, "address of an interrupted plug released");
                self.records.release_ip(&tenant, ip, &claim).await?;
            }
        }
        // A plug makes its veth, its port row and its address claim at once, so a crash can
        // leave the veth alone: no row or claim names its container. Such a veth (the agent's
        // name form, on no bridge, no endpoint's port) is removed, and its container end with it.
        let on_a_bridge = self.switch.interface_names();
        for name in self.links.veth_names().await.map_err(step("listing veths"))? {
            let ours = is_container_port_name(&name);
            if ours && !on_a_bridge.contains(&name) && !held.iter().any(|(_, e)| e.port == name) {
                tracing::warn!(veth = %name, "veth of an interrupted plug found at start (no port); removing it");
                self.links.delete(&name).await.map_err(step("deleting the veth"))?;
            }
        }
        Ok(removed)
    }

    async fn remove_locked(&self, container: &str, ifname: &str) -> Result<bool, PlugError> {
        let _guard = self.state.interfaces.lock(&interface_key(container, ifname)).await;
        let held = self.records.holdings().await?;
        self.remove_interface(container, ifname, &held).await
    }

    /// Unplugs the container interface whose host end `port` was, if its link is gone and this
    /// machine plugged it: what `unplug` does, logged and counted. Returns whether it did.
    pub async fn reap(&self, port: &str) -> Result<bool, PlugError> {
        if !is_container_port_name(port) {
            return Ok(false);
        }
        let held = self.records.holdings().await?;
        let recorded =
            held.iter().find(|(_, e)| e.port == port).map(|(_, e)| (e.container_id.clone(), e.ifname.clone()));
        let Some((container, ifname)) = recorded.or_else(|| self.switch.find_port(port).and_then(|p| p.container))
        else {
            return Ok(false);
        };
        let _guard = self.state.interfaces.lock(&interface_key(&container, &ifname)).await;
        // Looked at again under the lock: a plug of the same interface may have just made it.
        if self.links.exists(port).await.map_err(step("looking up the veth"))? {
            return Ok(false);
        }
        let held = self.records.holdings().await?;
        let mine = held.iter().filter(|(_, e)| e.container_id == container && e.ifname == ifname).all(|(_, e)| {
            e.machine_id == self.host.machine_id || (e.machine_id.is_empty() && self.switch.find_port(port).is_some())
        });
        if !mine {
            return Ok(false);
        }
        if self.remove_interface(&container, &ifname, &held).await? {
            self.state.reaped.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%container, %ifname, %port, "container interface gone (its veth was deleted); unplugged it");
            return Ok(true);
        }
        Ok(false)
    }

    /// Reaps every recorded interface of this host whose veth is gone: the safety net for link
    /// events the agent missed. Returns how many it unplugged.
    pub async fn sweep(&self) -> Result<usize, PlugError> {
        let held = self.records.holdings().await?;
        let mut reaped = 0;
        for (_, ep) in held.iter().filter(|(_, e)| e.machine_id == self.host.machine_id) {
            if !self.links.exists(&ep.port).await.map_err(step("looking up the veth"))? && self.reap(&ep.port).await? {
                reaped += 1;
            }
        }
        Ok(reaped)
    }
}
