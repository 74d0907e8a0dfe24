//! Checking a plug without changing anything (what a CNI runtime's CHECK asks): the record,
//! the port and its veth on this host, and inside the container the interface as the plug made
//! it.

use super::attach::interface_config;
use super::{interface_key, Links, PlugError, PlugRequest, PlugResult, Plugger, Records, Switch};

impl<R: Records, S: Switch, L: Links> Plugger<'_, R, S, L> {
    /// What a plug with `req` answered, if the container interface is still as that plug made
    /// it; [`PlugError::NotFound`] if it is not plugged, [`PlugError::Conflict`] saying what
    /// differs otherwise.
    pub async fn check_plugged(&self, req: PlugRequest) -> Result<PlugResult, PlugError> {
        let c = self.check(req).await?;
        let (container, ifname) = (&c.req.container_id, &c.req.ifname);
        let _guard = self.state.interfaces.lock(&interface_key(container, ifname)).await;
        let held = self.records.holdings().await?;
        let Some((_, ep)) = held.iter().find(|(_, e)| &e.container_id == container && &e.ifname == ifname) else {
            return Err(PlugError::NotFound(format!(
                "container '{container}' interface {ifname} is not plugged on this host"
            )));
        };
        let differs =
            |what: String| Err(PlugError::Conflict(format!("container '{container}' interface {ifname}: {what}")));
        if ep.tenant != c.req.tenant {
            return differs(format!("plugged into tenant {}, not {}", ep.tenant, c.req.tenant));
        }
        if let Some(ip) = c.ip.filter(|ip| *ip != ep.ip) {
            return differs(format!("has address {}, not {ip}", ep.ip));
        }
        if let Some(mac) = c.mac.filter(|mac| *mac != ep.mac) {
            return differs(format!("has MAC {}, not {mac}", ep.mac));
        }
        match self.switch.find_port(&ep.port) {
            None => return differs(format!("its port {} is not on the integration bridge", ep.port)),
            Some(p) if p.ofport.is_none() => {
                let why = p.error.unwrap_or_else(|| "no OpenFlow port number yet".into());
                return differs(format!("ovs-vswitchd has not taken its port {}: {why}", ep.port));
            }
            Some(_) => {}
        }
        if !self.links.exists(&ep.port).await.unwrap_or(false) {
            return differs(format!("the host end {} of its veth is gone", ep.port));
        }
        let result = self.result_for(&c, ep.ip, &ep.mac)?;
        // A hand-off plug's container side is the runtime's to make.
        let Some(path) = &c.netns else { return Ok(result) };
        let netns = match self.links.open(path).await {
            Ok(ns) => ns,
            Err(e) => return differs(format!("its network namespace cannot be opened: {e}")),
        };
        let want = interface_config(&ep.mac, &result);
        match self.links.state(&netns, ifname).await {
            Ok(Some(state)) if state.matches(&want) => Ok(result),
            Ok(Some(state)) => differs(format!(
                "the interface differs from the plug: it has MAC {}, MTU {}, {}, addresses {:?}, default routes \
                 via {:?}; the plug made MAC {}, MTU {}, up, {}/{} via {}",
                state.mac.map(|m| crate::netlink::format_mac(&m)).unwrap_or_default(),
                state.mtu,
                if state.up { "up" } else { "down" },
                state.addresses,
                state.gateways,
                ep.mac,
                want.mtu,
                want.address,
                want.prefix_len,
                result.gateway
            )),
            Ok(None) => differs("the interface is gone from the container".into()),
            Err(e) => differs(format!("the interface cannot be read: {e}")),
        }
    }
}
