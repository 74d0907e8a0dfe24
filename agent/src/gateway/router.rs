//! One router namespace: made (or repaired) to match its [`RouterSpec`], and removed.
//! Every step is idempotent, so a pass after a crash half-way finishes the job.

use std::net::IpAddr;
use std::path::Path;

use overlay::gateway::{self, RouterSpec, Table, ROUTER_TENANT_IFNAME, ROUTER_UPLINK_IFNAME};

use super::{pin, sysctl, GatewayError};
use crate::netlink::{InterfaceConfig, Netns, VethSetup};
use crate::ovs::{gateway_port, Ovsdb};

/// What making a router needs of the host.
pub(super) struct Host<'a> {
    /// The host namespace.
    pub netns: &'a Netns,
    /// OVSDB.
    pub ovs: &'a Ovsdb,
    /// The integration bridge.
    pub int_bridge: &'a str,
    /// This host (`overlay-owner` of the port rows).
    pub owner: &'a str,
    /// Whether the datapath is the userspace one (TX checksum offload off on `gw0`).
    pub netdev: bool,
}

/// The sysctls of a router namespace.
fn router_settings() -> Vec<(String, &'static str)> {
    vec![
        ("net/ipv4/ip_forward".to_owned(), "1"),
        (format!("net/ipv6/conf/{ROUTER_TENANT_IFNAME}/disable_ipv6"), "1"),
        (format!("net/ipv6/conf/{ROUTER_UPLINK_IFNAME}/disable_ipv6"), "1"),
        // Answer ARP on the tenant side for the gateway address only, never for the uplink's.
        (format!("net/ipv4/conf/{ROUTER_TENANT_IFNAME}/arp_ignore"), "1"),
    ]
}

/// Makes the router of `spec`, pinned at `path`, match it; `table` is its nft table. Returns
/// the namespace handle.
pub(super) async fn ensure(
    host: &Host<'_>,
    spec: &RouterSpec,
    path: &Path,
    table: &Table,
) -> Result<Netns, GatewayError> {
    let made = pin::ensure(path).map_err(|e| GatewayError::Pin { path: path.to_owned(), source: e })?;
    if made {
        tracing::info!(tenant = %spec.tenant, vni = spec.vni.get(), netns = %path.display(), "router namespace made");
    }
    let router = Netns::open(path).await.map_err(at(&spec.tenant, "opening the router namespace"))?;
    let port = gateway::gateway_port_name(spec.vni);
    let transit = gateway::transit_link_name(spec.vni);
    // The tenant side: `gw0` in the router, `ovg-<vni>` on br-int.
    let setup = VethSetup {
        mtu: Some(spec.mtu),
        peer_mac: Some(spec.mac.0),
        up: true,
        peer_up: true,
        promisc: true,
        ipv6_off: true,
        peer_ipv6_off: true,
    };
    pair(host.netns, &router, &port, ROUTER_TENANT_IFNAME, &setup)
        .await
        .map_err(at(&spec.tenant, "making the tenant-side veth"))?;
    let uplink = VethSetup {
        mtu: None,
        peer_mac: None,
        up: true,
        peer_up: true,
        promisc: false,
        ipv6_off: true,
        peer_ipv6_off: true,
    };
    pair(host.netns, &router, &transit, ROUTER_UPLINK_IFNAME, &uplink)
        .await
        .map_err(at(&spec.tenant, "making the uplink veth"))?;
    sysctl::ensure(&router, &router_settings()).await.map_err(at(&spec.tenant, "setting the router's sysctls"))?;
    let tenant_side = InterfaceConfig {
        mac: spec.mac.0,
        mtu: spec.mtu,
        address: IpAddr::V4(spec.gateway),
        prefix_len: spec.prefix,
        gateway: None,
    };
    router
        .configure_interface(ROUTER_TENANT_IFNAME, &tenant_side)
        .await
        .map_err(at(&spec.tenant, "configuring the gateway address"))?;
    if host.netdev {
        // As for containers: ovs-vswitchd's userspace datapath does not fill in checksums left
        // to offload, and TCP through the gateway would stall.
        router
            .disable_tx_checksum(ROUTER_TENANT_IFNAME)
            .await
            .map_err(at(&spec.tenant, "turning TX checksum offload off"))?;
    }
    let up_mac = router
        .link_mac(ROUTER_UPLINK_IFNAME)
        .await
        .map_err(at(&spec.tenant, "reading the uplink"))?
        .unwrap_or([2, 0, 0, 0, 0, 1]);
    let uplink_cfg = InterfaceConfig {
        mac: up_mac,
        mtu: 1500,
        address: IpAddr::V4(spec.transit.router),
        prefix_len: 31,
        gateway: Some(IpAddr::V4(spec.transit.host)),
    };
    router
        .configure_interface(ROUTER_UPLINK_IFNAME, &uplink_cfg)
        .await
        .map_err(at(&spec.tenant, "configuring the uplink"))?;
    let host_mac = host
        .netns
        .link_mac(&transit)
        .await
        .map_err(at(&spec.tenant, "reading the transit link"))?
        .unwrap_or([2, 0, 0, 0, 0, 2]);
    let host_cfg = InterfaceConfig {
        mac: host_mac,
        mtu: 1500,
        address: IpAddr::V4(spec.transit.host),
        prefix_len: 31,
        gateway: None,
    };
    host.netns
        .configure_interface(&transit, &host_cfg)
        .await
        .map_err(at(&spec.tenant, "configuring the transit link"))?;
    crate::nft::apply(&router, table).await.map_err(at(&spec.tenant, "programming the router's nft table"))?;
    ensure_port(host, spec, &port).await?;
    Ok(router)
}

/// The error of step `what` of the router of `tenant`.
fn at<'a, E: std::error::Error + Send + Sync + 'static>(
    tenant: &'a str,
    what: &'static str,
) -> impl FnOnce(E) -> GatewayError + 'a {
    move |e| GatewayError::step(tenant, what, e)
}

/// Makes the veth `name` (host namespace) <-> `peer` (router) exist as a pair. A half left by a
/// crash (one end, or an end whose peer is elsewhere) is removed first.
async fn pair(
    host: &Netns,
    router: &Netns,
    name: &str,
    peer: &str,
    setup: &VethSetup,
) -> Result<(), crate::netlink::NetlinkError> {
    let here = host.link_exists(name).await?;
    let there = router.link_exists(peer).await?;
    if here && there {
        return Ok(());
    }
    if here {
        host.delete_link(name).await?;
    }
    if there {
        router.delete_link(peer).await?;
    }
    host.create_veth_into_with(name, peer, router, setup).await
}

/// Makes the gateway port's row exist with the tenant's VLAN.
async fn ensure_port(host: &Host<'_>, spec: &RouterSpec, port: &str) -> Result<(), GatewayError> {
    let existing = gateway_port::all(&host.ovs.replica(), host.owner).into_iter().find(|p| p.name == port);
    if let Some(p) = &existing {
        if p.tag == Some(spec.vlan) {
            return Ok(());
        }
        crate::ovs::vswitchd::remove_port(host.ovs, &p.uuid, port)
            .await
            .map_err(|e| GatewayError::step(&spec.tenant, "re-tagging the gateway port", e))?;
    }
    gateway_port::insert(host.ovs, host.int_bridge, port, host.owner, &spec.tenant, spec.vni.get(), spec.vlan)
        .await
        .map_err(|e| GatewayError::step(&spec.tenant, "adding the gateway port to OVSDB", e))?;
    tracing::info!(tenant = %spec.tenant, %port, vlan = spec.vlan, "gateway port added");
    Ok(())
}

/// Removes everything of the router of `vni`: its port row, its two veths and its pinned
/// namespace (its table and conntrack go with it).
pub(super) async fn remove(host: &Host<'_>, vni: overlay::model::Vni, path: &Path) -> Result<(), GatewayError> {
    let what = format!("vni {}", vni.get());
    let port = gateway::gateway_port_name(vni);
    let found = gateway_port::all(&host.ovs.replica(), host.owner).into_iter().find(|p| p.name == port);
    if let Some(p) = found {
        crate::ovs::vswitchd::remove_port(host.ovs, &p.uuid, &port)
            .await
            .map_err(|e| GatewayError::step(&what, "removing the gateway port from OVSDB", e))?;
    }
    for link in [port, gateway::transit_link_name(vni)] {
        host.netns.delete_link(&link).await.map_err(|e| GatewayError::step(&what, "deleting a gateway veth", e))?;
    }
    pin::remove(path).map_err(|e| GatewayError::Pin { path: path.to_owned(), source: e })?;
    Ok(())
}
