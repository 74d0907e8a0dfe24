//! Published ports of a plug: checked for form with the request, then taken before anything
//! changes, against the agent's own published ports (recorded, and those of plugs in flight)
//! and against whatever of the host listens on them; a refusal leaves nothing behind.

use overlay::model::{Endpoint, Tenant};
use overlay::publish::{validate_list, Protocol, Publish};

use super::attach::Checked;
use super::{Links, PlugError, PlugRequest, Plugger, Records, Switch};

/// Host ports a plug in flight has taken; given back when the plug ends (its record, if it
/// succeeded, holds them from then on).
pub(super) struct Taken<'a> {
    state: &'a super::PlugState,
    keys: Vec<(u16, Protocol)>,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        let mut publishing = self.state.publishing.lock().expect("publishing lock");
        for k in &self.keys {
            publishing.remove(k);
        }
    }
}

impl<R: Records, S: Switch, L: Links> Plugger<'_, R, S, L> {
    /// The request's published ports, parsed and checked for form.
    pub(super) fn check_publish(&self, req: &PlugRequest, tenant: &Tenant) -> Result<Vec<Publish>, PlugError> {
        let bad = |m: String| PlugError::BadRequest(m);
        let list: Vec<Publish> = req
            .publish
            .iter()
            .map(|p| p.parse::<Publish>())
            .collect::<Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?;
        validate_list(&list).map_err(|e| bad(e.to_string()))?;
        if !list.is_empty() && (tenant.is_ipv6() || self.host.underlay_ipv6) {
            return Err(bad(format!(
                "tenant {} cannot publish ports: published ports need an IPv4 tenant and an IPv4 underlay",
                tenant.name()
            )));
        }
        Ok(list)
    }

    /// Takes the plug's host ports: refused if another interface of this host publishes one
    /// (recorded in `held` or being plugged) or anything of the host listens on it.
    pub(super) async fn reserve_publish(
        &self,
        c: &Checked,
        held: &[(String, Endpoint)],
    ) -> Result<Taken<'_>, PlugError> {
        let mut taken = Taken { state: self.state, keys: Vec::new() };
        if c.publish.is_empty() {
            return Ok(taken);
        }
        let me = (c.req.container_id.as_str(), c.req.ifname.as_str());
        {
            let mut publishing = self.state.publishing.lock().expect("publishing lock");
            for p in &c.publish {
                let key = p.host_key();
                let recorded = held
                    .iter()
                    .map(|(_, e)| e)
                    .filter(|e| (e.container_id.as_str(), e.ifname.as_str()) != me)
                    .find(|e| e.publish.iter().any(|q| q.host_key() == key));
                if let Some(e) = recorded {
                    return Err(PlugError::Conflict(format!(
                        "host port {}/{} is already published by container '{}' ({}): pick another host port",
                        p.host_port, p.protocol, e.container_id, e.ifname
                    )));
                }
                if let Some(who) = publishing.get(&key) {
                    return Err(PlugError::Conflict(format!(
                        "host port {}/{} is being published by container '{who}' right now: pick another host port",
                        p.host_port, p.protocol
                    )));
                }
                publishing.insert(key, c.req.container_id.clone());
                taken.keys.push(key);
            }
        }
        self.links.host_ports_free(c.publish.iter().map(Publish::host_key).collect()).await?;
        Ok(taken)
    }
}
