//! The IPAM driver: a pool is a tenant (named with `--ipam-opt tenant=NAME`, created if asked
//! with `vni`, `tunnel`, `subnet-len` and the CIDR from `--subnet`), an address is a reservation
//! in the agent that the endpoint's plug takes over.

use std::collections::BTreeMap;
use std::net::IpAddr;

use overlay_api::{CreateTenant, ReserveAddress, TenantInfo};
use serde_json::{json, Value};

use crate::wire::{ReleaseAddress, RequestAddress, RequestPool, GATEWAY_ADDRESS, REQUEST_ADDRESS_TYPE};
use crate::{DriverError, Plugin, ADDRESS_SPACE};

/// The pool id of a tenant.
fn pool_id(tenant: &str) -> String {
    format!("tenant:{tenant}")
}

/// The tenant of a pool id.
fn tenant_of(pool_id: &str) -> Result<&str, DriverError> {
    pool_id
        .strip_prefix("tenant:")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| DriverError(format!("pool '{pool_id}' is not one of this driver's")))
}

/// `a.b.c.d/len` as (address, length), to compare CIDRs written differently.
fn cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (a, l) = s.split_once('/')?;
    Some((a.parse().ok()?, l.parse().ok()?))
}

/// The options a pool takes.
const POOL_OPTIONS: &[&str] = &["tenant", "vni", "tunnel", "subnet-len", "cidr"];

impl Plugin {
    pub(crate) fn ipam_capabilities(&self) -> Value {
        json!({"RequiresMACAddress": false, "RequiresRequestReplay": false})
    }

    pub(crate) fn address_spaces(&self) -> Value {
        json!({"LocalDefaultAddressSpace": ADDRESS_SPACE, "GlobalDefaultAddressSpace": format!("{ADDRESS_SPACE}-global")})
    }

    pub(crate) async fn tenant(&self, name: &str) -> Result<Option<TenantInfo>, DriverError> {
        let tenants = self.agent("listing tenants", || self.agent.tenants()).await?;
        Ok(tenants.into_iter().find(|t| t.name == name))
    }

    pub(crate) async fn request_pool(&self, req: RequestPool) -> Result<Value, DriverError> {
        let name = &self.name;
        if req.v6 {
            return Err(DriverError("IPv6 is not supported by this driver: create the network without --ipv6".into()));
        }
        if !req.sub_pool.is_empty() {
            return Err(DriverError(format!(
                "--ip-range {} is not supported: the agent gives each host its own subnet of the tenant",
                req.sub_pool
            )));
        }
        let opts: BTreeMap<String, String> = req.options.unwrap_or_default();
        if let Some(k) = opts.keys().find(|k| !POOL_OPTIONS.contains(&k.as_str())) {
            return Err(DriverError(format!("unknown --ipam-opt {k}: this driver takes {}", POOL_OPTIONS.join(", "))));
        }
        let Some(tenant) = opts.get("tenant") else {
            return Err(DriverError(format!(
                "name the tenant this network is: --ipam-driver {name} --ipam-opt tenant=NAME"
            )));
        };
        let cidr_asked = Some(req.pool.as_str()).filter(|p| !p.is_empty()).or(opts.get("cidr").map(String::as_str));
        let t = match self.tenant(tenant).await? {
            Some(t) => t,
            None => self.create_tenant(tenant, &opts, cidr_asked).await?,
        };
        if let Some(asked) = cidr_asked {
            if cidr(asked).is_none() || cidr(asked) != cidr(&t.cidr) {
                return Err(DriverError(format!(
                    "tenant '{}' has CIDR {}, not {asked}: give --subnet {} or none",
                    t.name, t.cidr, t.cidr
                )));
            }
        }
        if let Some(vni) = opts.get("vni").filter(|v| **v != t.vni.to_string()) {
            return Err(DriverError(format!("tenant '{}' has VNI {}, not {vni}", t.name, t.vni)));
        }
        if let Some(tunnel) = opts.get("tunnel").filter(|v| **v != t.tunnel) {
            return Err(DriverError(format!("tenant '{}' uses {}, not {tunnel}", t.name, t.tunnel)));
        }
        tracing::info!(tenant = %t.name, cidr = %t.cidr, "pool requested");
        Ok(json!({"PoolID": pool_id(&t.name), "Pool": t.cidr, "Data": {}}))
    }

    /// Creates the tenant a network asks for (`vni` given), or finds the one another host
    /// created meanwhile.
    async fn create_tenant(
        &self,
        tenant: &str,
        opts: &BTreeMap<String, String>,
        cidr: Option<&str>,
    ) -> Result<TenantInfo, DriverError> {
        let Some(vni) = opts.get("vni") else {
            return Err(DriverError(format!(
                "tenant '{tenant}' does not exist: create it with `overlay-agent tenant create {tenant} --vni N --cidr \
                 CIDR`, or here with --ipam-opt vni=N --subnet CIDR"
            )));
        };
        let vni: u32 = vni.parse().map_err(|_| DriverError(format!("vni '{vni}' is not a number (1-16777215)")))?;
        let Some(cidr) = cidr else {
            return Err(DriverError(format!("creating tenant '{tenant}' needs its CIDR: add --subnet CIDR")));
        };
        let subnet_len = match opts.get("subnet-len") {
            None => None,
            Some(l) => Some(l.parse().map_err(|_| DriverError(format!("subnet-len '{l}' is not a prefix length")))?),
        };
        let egress = match opts.get("egress").map(String::as_str) {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(e) => return Err(DriverError(format!("egress '{e}' is not true or false"))),
        };
        let req = CreateTenant {
            name: tenant.to_owned(),
            vni,
            cidr: cidr.to_owned(),
            tunnel: opts.get("tunnel").cloned(),
            subnet_len,
            egress,
            control_plane_allow: vec![],
        };
        match self.agent("creating the tenant", || self.agent.create_tenant(&req)).await {
            Ok(t) => {
                tracing::info!(tenant = %t.name, vni = t.vni, cidr = %t.cidr, "tenant created for a Docker network");
                Ok(t)
            }
            // Created by another host at the same moment: it is compared like any existing one.
            Err(e) => self.tenant(tenant).await?.ok_or(e),
        }
    }

    pub(crate) async fn request_address(&self, req: RequestAddress) -> Result<Value, DriverError> {
        let tenant = tenant_of(&req.pool_id)?;
        let opts = req.options.unwrap_or_default();
        if opts.get(REQUEST_ADDRESS_TYPE).map(String::as_str) == Some(GATEWAY_ADDRESS) {
            let Some(t) = self.tenant(tenant).await? else {
                return Err(DriverError(format!("tenant '{tenant}' does not exist (deleted?)")));
            };
            if !req.address.is_empty() && req.address.parse::<IpAddr>().ok() != t.gateway.parse().ok() {
                return Err(DriverError(format!(
                    "tenant '{tenant}' has gateway {}, not {}: drop --gateway",
                    t.gateway, req.address
                )));
            }
            let prefix = t.cidr.rsplit('/').next().unwrap_or_default();
            return Ok(json!({"Address": format!("{}/{prefix}", t.gateway), "Data": {}}));
        }
        let ask = ReserveAddress { ip: Some(req.address.clone()).filter(|a| !a.is_empty()) };
        let r = self.agent("reserving an address", || self.agent.reserve_address(tenant, &ask)).await?;
        tracing::info!(%tenant, ip = %r.ip, "address reserved");
        Ok(json!({"Address": format!("{}/{}", r.ip, r.prefix), "Data": {}}))
    }

    pub(crate) async fn release_address(&self, req: ReleaseAddress) -> Result<Value, DriverError> {
        let tenant = tenant_of(&req.pool_id)?;
        // After an endpoint's unplug its address is free already: only an address reserved for an
        // endpoint that was never made (a failed start) is still held here.
        let what = "releasing the address";
        match self.agent_call(what, || self.agent.release_address(tenant, &req.address)).await {
            Ok(r) if r.released => tracing::info!(%tenant, ip = %req.address, "unused address reservation released"),
            Ok(_) => {}
            // The tenant is gone: so is every address of it.
            Err(e) if e.status() == Some(404) => {}
            Err(e) => return Err(DriverError(format!("{what}: {e}"))),
        }
        Ok(json!({}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_ids_name_their_tenant() {
        assert_eq!(tenant_of(&pool_id("red")).unwrap(), "red");
        assert!(tenant_of("LocalDefault/198.19.0.0/16").is_err());
        assert!(tenant_of("tenant:").is_err());
        assert_eq!(cidr("198.19.0.0/16"), cidr("198.19.0.0/16"));
        assert_ne!(cidr("198.19.0.0/16"), cidr("198.19.0.0/17"));
        assert_eq!(cidr("nonsense"), None);
    }
}
