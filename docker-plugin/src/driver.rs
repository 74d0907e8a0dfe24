//! The network driver: a network is checked to use this driver's IPAM (which names its tenant);
//! an endpoint is a hand-off plug in the agent, keyed by Docker's endpoint id.

use overlay_api::{handoff_name, NetnsRef, PlugRequest, DEFAULT_IFNAME};
use serde_json::{json, Value};

use crate::wire::{
    CreateEndpoint, CreateNetwork, EndpointInterface, EndpointRef, InterfaceName, Join, JoinResponse, NetworkRef,
    ENABLE_IPV6, GENERIC_OPTIONS, PORT_MAP,
};
use crate::{DriverError, Plugin, ADDRESS_SPACE};

/// The owner label of a network's endpoints in the agent.
fn owner(network_id: &str) -> String {
    format!("docker:{network_id}")
}

impl Plugin {
    pub(crate) fn capabilities(&self) -> Value {
        json!({"Scope": "local", "ConnectivityScope": "global"})
    }

    pub(crate) fn create_network(&self, req: CreateNetwork) -> Result<Value, DriverError> {
        let name = &self.name;
        let opts = req.options.unwrap_or_default();
        if opts.get(ENABLE_IPV6).and_then(Value::as_bool) == Some(true) || req.ipv6_data.is_some_and(|d| !d.is_empty())
        {
            return Err(DriverError("IPv6 is not supported by this driver: create the network without --ipv6".into()));
        }
        if let Some(k) = opts.get(GENERIC_OPTIONS).and_then(Value::as_object).and_then(|o| o.keys().next()) {
            return Err(DriverError(format!(
                "the {name} driver takes no -o options (got {k}): name the tenant, and its VNI to create it, with \
                 --ipam-opt (--ipam-driver {name} --ipam-opt tenant=NAME)"
            )));
        }
        let pools = req.ipv4_data.unwrap_or_default();
        if pools.len() != 1 || pools[0].address_space != ADDRESS_SPACE {
            return Err(DriverError(format!(
                "the {name} driver takes its addresses from the overlay-agent: create the network with \
                 --ipam-driver {name} --ipam-opt tenant=NAME (one pool, no --aux-address)"
            )));
        }
        tracing::info!(network = %req.network_id, pool = %pools[0].pool, "network created");
        Ok(json!({}))
    }

    /// Refused while the agent still has endpoints of the network on this host (Docker refuses
    /// first while containers are attached; this also covers endpoints Docker lost track of).
    pub(crate) async fn delete_network(&self, req: NetworkRef) -> Result<Value, DriverError> {
        let mine = owner(&req.network_id);
        let endpoints = self.agent("listing endpoints", || self.agent.endpoints()).await?;
        let left: Vec<String> = endpoints
            .into_iter()
            .filter(|e| e.owner.as_deref() == Some(mine.as_str()))
            .map(|e| e.container_id)
            .collect();
        if !left.is_empty() {
            return Err(DriverError(format!(
                "the network still has {} endpoint(s) on this host ({}): disconnect or remove their containers first",
                left.len(),
                left.join(", ")
            )));
        }
        tracing::info!(network = %req.network_id, "network deleted");
        Ok(json!({}))
    }

    pub(crate) async fn create_endpoint(&self, req: CreateEndpoint) -> Result<Value, DriverError> {
        let opts = req.options.unwrap_or_default();
        let publish = crate::ports::publish_of(opts.get(PORT_MAP))?;
        let iface = req.interface.unwrap_or_default();
        if !iface.address_ipv6.is_empty() {
            return Err(DriverError("IPv6 is not supported by this driver".into()));
        }
        let Some(ip) = iface.address.split('/').next().filter(|a| !a.is_empty()) else {
            return Err(DriverError(format!(
                "the endpoint has no address: the network must use --ipam-driver {}",
                self.name
            )));
        };
        let tenant = self.tenant_of_network(&req.network_id).await?;
        let plug = PlugRequest {
            ip: Some(ip.to_owned()),
            mac: Some(iface.mac_address.clone()).filter(|m| !m.is_empty()),
            reserved: true,
            owner: Some(owner(&req.network_id)),
            publish,
            ..PlugRequest::new(&req.endpoint_id, &tenant, NetnsRef::Handoff)
        };
        let r = self.agent("plugging the endpoint", || self.agent.plug(&plug)).await?;
        tracing::info!(
            network = %req.network_id, endpoint = %req.endpoint_id, %tenant, ip = %r.ip, port = %r.port,
            published = ?r.publish, "endpoint created"
        );
        // Docker takes a MAC from the driver only when it has none itself (`--mac-address`).
        let answer = match iface.mac_address.is_empty() {
            true => EndpointInterface { mac_address: r.mac, ..Default::default() },
            false => EndpointInterface::default(),
        };
        Ok(json!({"Interface": answer}))
    }

    /// The tenant of a network: its IPAM option, which dockerd keeps (libnetwork passes a
    /// driver a network's options only when it is created).
    async fn tenant_of_network(&self, network_id: &str) -> Result<String, DriverError> {
        let net = self
            .docker
            .network(network_id)
            .await
            .map_err(|e| DriverError(format!("reading network {network_id} from dockerd (for its tenant): {e}")))?;
        net.ipam.options.unwrap_or_default().remove("tenant").ok_or_else(|| {
            DriverError(format!(
                "network {} names no tenant: it must be created with --ipam-driver {} --ipam-opt tenant=NAME",
                net.name, self.name
            ))
        })
    }

    pub(crate) async fn join(&self, req: Join) -> Result<Value, DriverError> {
        let endpoints = self.agent("listing endpoints", || self.agent.endpoints()).await?;
        let Some(ep) = endpoints.iter().find(|e| e.container_id == req.endpoint_id && e.ifname == DEFAULT_IFNAME)
        else {
            return Err(DriverError(format!(
                "endpoint {} is not plugged on this host (was the agent's state lost?): start the container again",
                req.endpoint_id
            )));
        };
        let Some(tenant) = self.tenant(&ep.tenant).await? else {
            return Err(DriverError(format!("tenant '{}' does not exist (deleted?)", ep.tenant)));
        };
        let src = handoff_name(&req.endpoint_id, DEFAULT_IFNAME);
        tracing::info!(endpoint = %req.endpoint_id, sandbox = %req.sandbox_key, interface = %src, "joined");
        // The port gets its container's id once Docker shows who joined.
        self.nudge();
        let answer = JoinResponse {
            interface_name: InterfaceName { src_name: src, dst_prefix: "eth".into() },
            gateway: tenant.gateway,
        };
        Ok(serde_json::to_value(answer).expect("join answers serialize"))
    }

    /// Docker moves the interface back out of the container itself; `DeleteEndpoint` removes it.
    pub(crate) fn leave(&self, req: EndpointRef) -> Value {
        tracing::info!(endpoint = %req.endpoint_id, "left");
        json!({})
    }

    pub(crate) async fn delete_endpoint(&self, req: EndpointRef) -> Result<Value, DriverError> {
        let r = self.agent("unplugging the endpoint", || self.agent.unplug(&req.endpoint_id, None)).await?;
        tracing::info!(network = %req.network_id, endpoint = %req.endpoint_id, was_plugged = r.was_plugged, "endpoint deleted");
        Ok(json!({}))
    }
}
