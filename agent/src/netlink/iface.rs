//! The container end of a plug: MAC, MTU, address and default route, and reading them back.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use nix::libc;
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope};
use rtnetlink::packet_route::link::LinkFlags;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{LinkUnspec, RouteMessageBuilder};

use super::link::{mac_of, mtu_of};
use super::{errno, NetlinkError, Netns};

/// The main routing table (RT_TABLE_MAIN).
const RT_TABLE_MAIN: u32 = 254;

/// What [`Netns::configure_interface`] sets on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// Unicast MAC address.
    pub mac: [u8; 6],
    pub mtu: u32,
    /// The interface address, IPv4 or IPv6.
    pub address: IpAddr,
    /// Prefix length of `address` (at most 32 for IPv4, 128 for IPv6).
    pub prefix_len: u8,
    /// Default route via this gateway (same family as `address`), if any.
    pub gateway: Option<IpAddr>,
}

/// What a link looks like now ([`Netns::interface_state`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceState {
    pub index: u32,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Carrier (IFF_LOWER_UP): for a veth, both ends are up.
    pub lower_up: bool,
    /// Every address on the link, with its prefix length (IPv6 link-local ones included).
    pub addresses: Vec<(IpAddr, u8)>,
    /// Gateways of the default routes through this link in the main table (IPv4 first).
    pub gateways: Vec<IpAddr>,
}

impl InterfaceState {
    /// Whether the link already has everything `cfg` asks for: MAC, MTU, up, the address and, if
    /// one is configured, the default route via the gateway.
    pub fn matches(&self, cfg: &InterfaceConfig) -> bool {
        self.mac == Some(cfg.mac)
            && self.mtu == cfg.mtu
            && self.up
            && self.addresses.contains(&(cfg.address, cfg.prefix_len))
            && cfg.gateway.is_none_or(|gw| self.gateways.contains(&gw))
    }
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

impl Netns {
    /// Makes link `name` look like `cfg`: MAC and MTU (changed only if different), up, the
    /// address (other global addresses of the same family are removed, IPv6 ones are added
    /// without DAD), `lo` up, and the default route via `cfg.gateway` through this link
    /// (replacing an existing default route). Idempotent. With no gateway, existing routes are
    /// left alone.
    pub async fn configure_interface(&self, name: &str, cfg: &InterfaceConfig) -> Result<(), NetlinkError> {
        self.check_config(name, cfg)?;
        let link = self.require_link(name).await?;
        let index = link.header.index;

        let mut change = LinkUnspec::new_with_index(index);
        let mut changed = false;
        if mac_of(&link) != Some(cfg.mac) {
            change = change.address(cfg.mac.to_vec());
            changed = true;
        }
        if mtu_of(&link) != Some(cfg.mtu) {
            change = change.mtu(cfg.mtu);
            changed = true;
        }
        if changed {
            self.set_link("set MAC and MTU", name, change.build()).await?;
        }
        if !link.header.flags.contains(LinkFlags::Up) {
            self.set_link("set up", name, LinkUnspec::new_with_index(index).up().build()).await?;
        }

        let mut present = false;
        for addr in self.addresses(index, name).await? {
            let Some((ip, prefix)) = address_of(&addr) else { continue };
            if (ip, prefix) == (cfg.address, cfg.prefix_len) {
                present = true;
            } else if ip.is_ipv4() == cfg.address.is_ipv4() && addr.header.scope == AddressScope::Universe {
                match self.handle.address().del(addr).execute().await {
                    Ok(()) => {}
                    Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => {}
                    Err(e) => return Err(self.request_error("remove stale address", name, e)),
                }
            }
        }
        if !present {
            let mut add = self.handle.address().add(index, cfg.address, cfg.prefix_len);
            if cfg.address.is_ipv6() {
                add.message_mut().header.flags |= AddressHeaderFlags::Nodad;
            }
            match add.execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(self.request_error("add address", name, e)),
            }
        }

        let lo = self.require_link("lo").await?;
        if !lo.header.flags.contains(LinkFlags::Up) {
            self.set_link("set up", "lo", LinkUnspec::new_with_index(lo.header.index).up().build()).await?;
        }

        if let Some(gateway) = cfg.gateway {
            let route = match gateway {
                IpAddr::V4(gw) => RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw).output_interface(index).build(),
                IpAddr::V6(gw) => RouteMessageBuilder::<Ipv6Addr>::new().gateway(gw).output_interface(index).build(),
            };
            self.handle
                .route()
                .add(route)
                .replace()
                .execute()
                .await
                .map_err(|e| self.request_error("set default route", name, e))?;
        }
        Ok(())
    }

    fn check_config(&self, name: &str, cfg: &InterfaceConfig) -> Result<(), NetlinkError> {
        let invalid = |reason: String| NetlinkError::InvalidConfig { link: name.into(), netns: self.label(), reason };
        let max_prefix = if cfg.address.is_ipv4() { 32 } else { 128 };
        if cfg.prefix_len > max_prefix {
            return Err(invalid(format!("prefix length {} is too long for {}", cfg.prefix_len, cfg.address)));
        }
        if cfg.mac[0] & 1 != 0 || cfg.mac == [0; 6] {
            return Err(invalid(format!("{} is not a unicast MAC address", format_mac(&cfg.mac))));
        }
        if let Some(gw) = cfg.gateway {
            if gw.is_ipv4() != cfg.address.is_ipv4() {
                return Err(invalid(format!("gateway {gw} and address {} are of different families", cfg.address)));
            }
        }
        Ok(())
    }

    async fn addresses(&self, index: u32, name: &str) -> Result<Vec<AddressMessage>, NetlinkError> {
        self.handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.request_error("list addresses", name, e))
    }

    async fn default_gateways(&self, index: u32, name: &str) -> Result<Vec<IpAddr>, NetlinkError> {
        let mut gateways = Vec::new();
        for query in [RouteMessageBuilder::<Ipv4Addr>::new().build(), RouteMessageBuilder::<Ipv6Addr>::new().build()] {
            let routes: Vec<RouteMessage> = self
                .handle
                .route()
                .get(query)
                .execute()
                .try_collect()
                .await
                .map_err(|e| self.request_error("list routes", name, e))?;
            gateways.extend(routes.iter().filter_map(|r| default_gateway_via(r, index)));
        }
        Ok(gateways)
    }

    /// Every address message of this namespace, on any link.
    async fn address_messages(&self) -> Result<Vec<AddressMessage>, NetlinkError> {
        self.handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.request_error("list addresses", "*", e))
    }

    /// Every address of this namespace, on any link.
    pub async fn all_addresses(&self) -> Result<Vec<IpAddr>, NetlinkError> {
        let all = self.address_messages().await?;
        Ok(all.iter().filter_map(address_of).map(|(a, _)| a).collect())
    }

    /// The MTU of the link that holds address `ip` (None when no link has it): the underlay
    /// MTU when `ip` is the tunnel endpoint.
    pub async fn mtu_of_address(&self, ip: IpAddr) -> Result<Option<u32>, NetlinkError> {
        let all = self.address_messages().await?;
        let Some(index) = all.iter().find(|m| address_of(m).is_some_and(|(a, _)| a == ip)).map(|m| m.header.index)
        else {
            return Ok(None);
        };
        let mut links = self.handle.link().get().match_index(index).execute();
        match links.try_next().await {
            Ok(link) => Ok(link.as_ref().and_then(mtu_of)),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(self.request_error("get link", &index.to_string(), e)),
        }
    }

    /// The state of link `name` (None if there is none): MAC, MTU, flags, addresses, default
    /// gateways through it.
    pub async fn interface_state(&self, name: &str) -> Result<Option<InterfaceState>, NetlinkError> {
        let Some(link) = self.get_link(name).await? else {
            return Ok(None);
        };
        let index = link.header.index;
        let addresses = self.addresses(index, name).await?.iter().filter_map(address_of).collect();
        let gateways = self.default_gateways(index, name).await?;
        Ok(Some(InterfaceState {
            index,
            mac: mac_of(&link),
            mtu: mtu_of(&link).unwrap_or(0),
            up: link.header.flags.contains(LinkFlags::Up),
            lower_up: link.header.flags.contains(LinkFlags::LowerUp),
            addresses,
            gateways,
        }))
    }
}

/// (address, prefix) of an address message: IFA_LOCAL if present (IFA_ADDRESS is the peer on
/// point-to-point links), else IFA_ADDRESS.
fn address_of(msg: &AddressMessage) -> Option<(IpAddr, u8)> {
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    local.or(address).map(|ip| (ip, msg.header.prefix_len))
}

/// The gateway of `route` if it is a unicast default route in the main table out of `index`.
fn default_gateway_via(route: &RouteMessage, index: u32) -> Option<IpAddr> {
    if route.header.destination_prefix_length != 0 || route.header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(route.header.table);
    let mut oif = None;
    let mut gateway = None;
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(IpAddr::V4(*ip)),
            RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => gateway = Some(IpAddr::V6(*ip)),
            RouteAttribute::Via(RouteVia::Inet(ip)) => gateway = Some(IpAddr::V4(*ip)),
            RouteAttribute::Via(RouteVia::Inet6(ip)) => gateway = Some(IpAddr::V6(*ip)),
            _ => {}
        }
    }
    let family_ok = matches!(route.header.address_family, AddressFamily::Inet | AddressFamily::Inet6);
    (family_ok && table == RT_TABLE_MAIN && oif == Some(index)).then_some(gateway).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_format() {
        assert_eq!(format_mac(&[0x02, 0, 0xab, 1, 2, 0xff]), "02:00:ab:01:02:ff");
    }

    #[test]
    fn state_matches() {
        let cfg = InterfaceConfig {
            mac: [2, 0, 0, 0, 0, 1],
            mtu: 1450,
            address: "10.0.0.2".parse().unwrap(),
            prefix_len: 24,
            gateway: Some("10.0.0.1".parse().unwrap()),
        };
        let mut st = InterfaceState {
            index: 3,
            mac: Some(cfg.mac),
            mtu: 1450,
            up: true,
            lower_up: false,
            addresses: vec![(cfg.address, 24)],
            gateways: vec![cfg.gateway.unwrap()],
        };
        assert!(st.matches(&cfg));
        st.gateways.clear();
        assert!(!st.matches(&cfg));
    }
}
