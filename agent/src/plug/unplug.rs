//! Unplug: port, veth, endpoint record and address of one container interface, or of all of a
//! container's; each step tolerates the thing being gone already, so it also cleans up after a
//! crash or a failed plug.

use std::collections::BTreeSet;

use overlay::model::{validate_container_id, Endpoint};
use overlay::naming::{container_peer_temp_name, container_port_name, is_valid_ifname};

use super::{interface_key, step, Links, PlugError, Plugger, Records, Switch};

impl<R: Records, S: Switch, L: Links> Plugger<'_, R, S, L> {
    /// Unplugs one interface of a container, or every one when `ifname` is `None`. Returns
    /// whether anything was there.
    pub async fn unplug(&self, container_id: &str, ifname: Option<&str>) -> Result<bool, PlugError> {
        validate_container_id(container_id).map_err(|e| PlugError::BadRequest(e.to_string()))?;
        if let Some(i) = ifname.filter(|i| !is_valid_ifname(i)) {
            return Err(PlugError::BadRequest(format!(
                "interface name '{i}' is not valid: use 1-15 characters of [a-z0-9-], e.g. eth0"
            )));
        }
        let ifnames: BTreeSet<String> = match ifname {
            Some(i) => BTreeSet::from([i.to_owned()]),
            None => self.interfaces_of(container_id).await?,
        };
        let mut found = false;
        for ifname in ifnames {
            let _guard = self.state.interfaces.lock(&interface_key(container_id, &ifname)).await;
            let held = self.records.holdings().await?;
            if self.remove_interface(container_id, &ifname, &held).await? {
                found = true;
                tracing::info!(container = %container_id, %ifname, "container unplugged");
            }
        }
        Ok(found)
    }

    /// The interfaces this host knows of a container: recorded, or with a port of the agent's.
    async fn interfaces_of(&self, container_id: &str) -> Result<BTreeSet<String>, PlugError> {
        let held = self.records.holdings().await?;
        let mut ifnames: BTreeSet<String> =
            held.iter().filter(|(_, e)| e.container_id == container_id).map(|(_, e)| e.ifname.clone()).collect();
        ifnames.extend(
            self.switch
                .ports()
                .into_iter()
                .filter_map(|p| p.container)
                .filter(|(c, _)| c == container_id)
                .map(|(_, i)| i),
        );
        if ifnames.is_empty() {
            // Nothing known: still sweep what a crash of a plug of the first interface may have
            // left (its veth).
            ifnames.insert(overlay::model::DEFAULT_IFNAME.to_owned());
        }
        Ok(ifnames)
    }

    /// Removes every trace of one container interface on this host: its port, its veth, and
    /// the records in `held` this machine (or an agent before machine ids) wrote for it, with
    /// their addresses. Returns whether anything was there.
    pub(super) async fn remove_interface(
        &self,
        container_id: &str,
        ifname: &str,
        held: &[(String, Endpoint)],
    ) -> Result<bool, PlugError> {
        let port = container_port_name(container_id, ifname);
        let mut found = false;
        if let Some(p) = self.switch.find_port(&port) {
            found = true;
            self.switch.remove_port(&p).await?;
        }
        // The host end takes its peer with it; a hand-off end the runtime moved back out of a
        // container it left (Docker does) is that peer too. Only the leftovers of a plug that
        // failed half-way need deleting by name.
        let mut links = vec![port.clone(), overlay_api::handoff_name(container_id, ifname)];
        if ifname == overlay::model::DEFAULT_IFNAME {
            // Agents that moved the container end in from the host namespace named it so there.
            links.push(container_peer_temp_name(container_id));
        }
        for link in links {
            found |= self.links.delete(&link).await.map_err(step("deleting the veth"))?;
        }
        for (key, ep) in held.iter().filter(|(_, e)| e.container_id == container_id && e.ifname == ifname) {
            if !ep.machine_id.is_empty() && ep.machine_id != self.host.machine_id {
                tracing::warn!(
                    key, machine = %ep.machine_id,
                    "endpoint record under this hostname was written by another machine; left alone"
                );
                continue;
            }
            found = true;
            self.records.delete_endpoint(key, ep).await?;
        }
        Ok(found)
    }
}
