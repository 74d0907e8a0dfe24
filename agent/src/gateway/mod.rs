//! The gateway of this host ([`overlay::gateway`]): a router namespace per tenant this host
//! takes part in, and the agent's nft table in the host namespace. A pass makes them match the
//! plan and removes what is the agent's but no longer planned: routers of tenants gone from
//! this host, pinned namespaces and veths a crash left half-made, gateway port rows.
//!
//! Everything the agent makes here is found again by its name (`gw-<VNI>` files in the
//! agent's netns directory, `ovg-<VNI>` / `ovt-<VNI>` links, the `overlay_agent` table with
//! the agent's comment, port rows with `overlay-kind=gateway`), so start-up recovery is the
//! first pass.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use overlay::gateway::{self, GatewayPlan, RouterSpec, TransitRange};
use overlay::model::Vni;

use crate::netlink::Netns;
use crate::ovs::{gateway_port, Ovsdb};

mod pin;
pub mod ports;
mod router;
mod sysctl;

/// Why a gateway pass failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A step of making or removing a router failed.
    #[error("gateway of {tenant}: {what}")]
    Step {
        /// The tenant (or VNI).
        tenant: String,
        /// The step.
        what: &'static str,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A namespace could not be pinned or unpinned.
    #[error("pinning or unpinning the router namespace {}", path.display())]
    Pin {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The host namespace's side failed.
    #[error("gateway in the host namespace: {what}")]
    Host {
        /// The step.
        what: &'static str,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl GatewayError {
    fn step<E: std::error::Error + Send + Sync + 'static>(tenant: &str, what: &'static str, e: E) -> GatewayError {
        GatewayError::Step { tenant: tenant.to_owned(), what, source: Box::new(e) }
    }

    fn host<E: std::error::Error + Send + Sync + 'static>(what: &'static str, e: E) -> GatewayError {
        GatewayError::Host { what, source: Box::new(e) }
    }
}

/// The sysctls of the host namespace: it forwards between the routers and the underlay.
const HOST_SETTINGS: [(&str, &str); 1] = [("net/ipv4/ip_forward", "1")];

/// What passes remember: the routers made as planned, and the host table's fingerprint.
#[derive(Default)]
pub struct GatewayMemo {
    routers: BTreeMap<Vni, RouterSpec>,
    /// The fingerprints of the routers' tables.
    router_tables: BTreeMap<Vni, u64>,
    /// Handles of the router namespaces (opening one costs a thread).
    handles: BTreeMap<Vni, Netns>,
    host_table: Option<u64>,
    forwarding: bool,
    /// A pass went through: the first looks at everything (start-up recovery: what a crash or
    /// a tenant deleted while the agent was down left).
    started: bool,
}

/// The gateway of this host.
pub struct GatewayPlane {
    /// Where router namespaces are pinned: `<state_dir>/netns`.
    dir: PathBuf,
    /// The transit range.
    pub transit: TransitRange,
    /// The etcd endpoints' addresses, protected.
    pub etcd_addresses: BTreeSet<IpAddr>,
    netdev: bool,
}

/// What a pass works with.
pub struct GatewayPassInput<'a> {
    /// The plan.
    pub plan: &'a GatewayPlan,
    /// The host namespace.
    pub host_netns: &'a Netns,
    /// OVSDB.
    pub ovs: &'a Ovsdb,
    /// The integration bridge.
    pub int_bridge: &'a str,
    /// This host.
    pub owner: &'a str,
    /// Look at everything again, not only what changed.
    pub full: bool,
}

impl GatewayPlane {
    /// The gateway of an agent whose state lives in `state_dir`.
    pub fn new(state_dir: &Path, transit: TransitRange, etcd_addresses: BTreeSet<IpAddr>, netdev: bool) -> Self {
        GatewayPlane { dir: state_dir.join("netns"), transit, etcd_addresses, netdev }
    }

    /// Where the router of `vni` is pinned.
    pub fn netns_path(&self, vni: Vni) -> PathBuf {
        self.dir.join(gateway::router_netns_file(vni))
    }

    /// One pass: routers made or removed, then the host table. Returns whether it changed
    /// anything.
    pub async fn pass(&self, memo: &mut GatewayMemo, input: GatewayPassInput<'_>) -> Result<bool, GatewayError> {
        let host = router::Host {
            netns: input.host_netns,
            ovs: input.ovs,
            int_bridge: input.int_bridge,
            owner: input.owner,
            netdev: self.netdev,
        };
        let plan = input.plan;
        let full = input.full || !memo.started;
        let mut changed = false;
        if !plan.routers.is_empty() && (full || !memo.forwarding) {
            let settings: Vec<(String, &'static str)> =
                HOST_SETTINGS.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
            let set = sysctl::ensure(input.host_netns, &settings)
                .await
                .map_err(|e| GatewayError::host("turning IPv4 forwarding on", e))?;
            for key in set {
                tracing::info!(%key, "host namespace: set to 1 (the gateway forwards between routers and the underlay)");
            }
            memo.forwarding = true;
        }
        for (vni, spec) in &plan.routers {
            let table = plan.router_table(spec);
            let fp = table.fingerprint();
            let same_spec = memo.routers.get(vni) == Some(spec);
            if !full && same_spec && memo.router_tables.get(vni) == Some(&fp) {
                continue;
            }
            if let (false, true, Some(netns)) = (full, same_spec, memo.handles.get(vni)) {
                // Only the table changed (a host joined or left: the protected addresses).
                crate::nft::apply(netns, &table)
                    .await
                    .map_err(|e| GatewayError::step(&spec.tenant, "programming the router's nft table", e))?;
                memo.router_tables.insert(*vni, fp);
                changed = true;
                continue;
            }
            let netns = router::ensure(&host, spec, &self.netns_path(*vni), &table).await?;
            memo.router_tables.insert(*vni, fp);
            if memo.routers.get(vni) != Some(spec) {
                tracing::info!(
                    tenant = %spec.tenant, vni = vni.get(), gateway = %spec.gateway, mac = %spec.mac,
                    transit = %spec.transit.router, egress = spec.egress, published = spec.forwards.len(),
                    "gateway ready"
                );
                changed = true;
            }
            memo.routers.insert(*vni, spec.clone());
            memo.handles.insert(*vni, netns);
        }
        changed |= self.remove_stale(memo, &host, plan, full).await?;
        match plan.host_table() {
            Some(table) if !plan.routers.is_empty() => {
                let fp = table.fingerprint();
                if full || memo.host_table != Some(fp) {
                    let wrote = crate::nft::apply(input.host_netns, &table)
                        .await
                        .map_err(|e| GatewayError::host("programming the host's nft table", e))?;
                    if wrote {
                        tracing::info!(fingerprint = format!("{fp:016x}"), "host nft table replaced");
                        changed = true;
                    }
                    memo.host_table = Some(fp);
                }
            }
            _ => {
                if full || memo.host_table.is_some() {
                    crate::nft::remove(input.host_netns, overlay::gateway::ruleset::TABLE)
                        .await
                        .map_err(|e| GatewayError::host("removing the host's nft table", e))?;
                    if memo.host_table.take().is_some() {
                        tracing::info!("host nft table removed (no gateway on this host)");
                        changed = true;
                    }
                }
            }
        }
        memo.started = true;
        Ok(changed)
    }

    /// Removes routers, links, pins and port rows of the agent's that the plan does not hold.
    /// Looked for on disk and in the kernel only at a full pass or when the memo says a router
    /// went: in between, nothing else makes them.
    async fn remove_stale(
        &self,
        memo: &mut GatewayMemo,
        host: &router::Host<'_>,
        plan: &GatewayPlan,
        full: bool,
    ) -> Result<bool, GatewayError> {
        let mut stale: BTreeSet<Vni> = memo.routers.keys().filter(|v| !plan.routers.contains_key(v)).copied().collect();
        if full {
            let pinned = pin::list(&self.dir).map_err(|e| GatewayError::Pin { path: self.dir.clone(), source: e })?;
            stale.extend(pinned.iter().filter_map(|(name, _)| gateway::vni_of_netns_file(name)));
            let links = host.netns.veth_names().await.map_err(|e| GatewayError::host("listing veths", e))?;
            stale.extend(links.iter().filter_map(|l| gateway::vni_of_link(l)));
            let rows = gateway_port::all(&host.ovs.replica(), host.owner);
            stale.extend(rows.iter().filter_map(|p| gateway::vni_of_link(&p.name)));
            stale.retain(|v| !plan.routers.contains_key(v));
        }
        for vni in &stale {
            router::remove(host, *vni, &self.netns_path(*vni)).await?;
            let was = memo.routers.remove(vni);
            memo.handles.remove(vni);
            memo.router_tables.remove(vni);
            tracing::info!(
                vni = vni.get(),
                tenant = was.as_ref().map(|r| r.tenant.as_str()).unwrap_or("(found at start)"),
                "gateway removed"
            );
        }
        Ok(!stale.is_empty())
    }

    /// The router namespaces the last pass made, for status.
    pub fn routers(memo: &GatewayMemo) -> Vec<RouterSpec> {
        memo.routers.values().cloned().collect()
    }
}

/// The addresses of `endpoints` (etcd URLs): literal addresses as they are, host names
/// resolved once (a name that does not resolve is logged and left out).
pub fn endpoint_addresses(endpoints: &[String]) -> BTreeSet<IpAddr> {
    use std::net::ToSocketAddrs;
    let mut out = BTreeSet::new();
    for endpoint in endpoints {
        let e = endpoint;
        let rest = e.split_once("://").map_or(e.as_str(), |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or(rest);
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        let with_port = if authority.starts_with('[') || authority.matches(':').count() == 1 {
            authority.to_owned()
        } else {
            format!("{authority}:2379")
        };
        match with_port.to_socket_addrs() {
            Ok(addrs) => out.extend(addrs.map(|a| a.ip())),
            Err(error) => {
                tracing::warn!(%endpoint, %error, "cannot resolve an etcd endpoint; containers are not kept from it")
            }
        }
    }
    out
}

/// This host's underlay address as the gateway uses it (IPv4 only).
pub fn underlay_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_endpoint_addresses() {
        let a = endpoint_addresses(&[
            "http://198.18.3.254:2379".into(),
            "https://user@127.0.0.1:4001/x".into(),
            "http://[fd00::1]:2379".into(),
            "198.18.9.9".into(),
        ]);
        let want: BTreeSet<IpAddr> =
            ["198.18.3.254", "127.0.0.1", "fd00::1", "198.18.9.9"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(a, want);
    }
}
