//! One flow of the pipeline as a small value ([`FlowSpec`]): what it is for and the few
//! numbers it needs. It is hashed into its cookie and rendered into an OpenFlow flow only when
//! it has to be sent, so tens of thousands of them cost little memory.

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use openflow_client::{port, Action, Field, Flow, FlowError, Mac, Match, MatchBuilder};

use super::{cookie_of, tables, Bridge};
use crate::model::MacAddr;

/// Which MAC field of a frame a flow matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MacField {
    /// `eth_src`.
    Source,
    /// `eth_dst`.
    Destination,
}

/// A flow of the pipeline. Each variant says which table it lives in and what it does; the
/// tables are documented in docs/pipeline.md.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FlowSpec {
    /// br-tun, table 0: frames from br-int go to the table that sends them out.
    FromIntegration {
        /// patch-int's ofport.
        patch: u32,
    },
    /// br-tun, table 0: a frame from a tenant's tunnel port, sent by a host that holds a lease
    /// in the tenant, gets the tenant's VLAN and goes to br-int. Other senders are dropped.
    FromTunnel {
        /// The tenant's tunnel port.
        tunnel_port: u32,
        /// The sending host's underlay address (`tun_src`).
        peer: IpAddr,
        /// The tenant's VLAN on this host.
        vlan: u16,
        /// patch-int's ofport.
        patch: u32,
    },
    /// br-tun, tables 0 and 1: anything else is dropped (a bridge in secure mode would drop
    /// it anyway; the flow counts it).
    Drop {
        /// The table.
        table: u8,
    },
    /// br-tun, table 1: an ARP request for a container on another host is answered here.
    ArpResponder {
        /// The tenant's VLAN.
        vlan: u16,
        /// The container's address.
        ip: Ipv4Addr,
        /// Its MAC.
        mac: MacAddr,
    },
    /// br-tun, table 1: an ARP request for a container on this host was delivered by br-int
    /// already; it does not cross a tunnel.
    ArpLocal {
        /// The tenant's VLAN.
        vlan: u16,
        /// The local container's address.
        ip: Ipv4Addr,
    },
    /// br-tun, table 1: a frame to a container on another host goes to that host only.
    Unicast {
        /// The tenant's VLAN.
        vlan: u16,
        /// The container's MAC.
        mac: MacAddr,
        /// Its host's underlay address (`tun_dst`).
        host: IpAddr,
        /// The tenant's tunnel port.
        tunnel_port: u32,
    },
    /// br-tun, table 1: broadcast, multicast and unknown unicast of a tenant go to every host
    /// that holds a lease in it.
    Flood {
        /// The tenant's VLAN.
        vlan: u16,
        /// The tenant's tunnel port.
        tunnel_port: u32,
        /// The members' underlay addresses, sorted.
        members: Arc<[IpAddr]>,
    },
    /// br-tun, table 1: a frame from or to the gateway MAC does not leave this host.
    LocalGatewayMac {
        /// The tenant's VLAN.
        vlan: u16,
        /// The gateway MAC.
        mac: MacAddr,
        /// Which field.
        field: MacField,
    },
    /// br-tun, table 1: an ARP request for the gateway address is answered on this host.
    LocalGatewayArp {
        /// The tenant's VLAN.
        vlan: u16,
        /// The gateway address.
        ip: Ipv4Addr,
    },
    /// br-tun, table 0: a frame from or to the gateway MAC from a tunnel is dropped (each host
    /// has its own gateway).
    TunnelGatewayMac {
        /// The tenant's tunnel port.
        tunnel_port: u32,
        /// The gateway MAC.
        mac: MacAddr,
        /// Which field.
        field: MacField,
    },
    /// br-tun, table 0: an ARP request for the gateway address from a tunnel is dropped.
    TunnelGatewayArp {
        /// The tenant's tunnel port.
        tunnel_port: u32,
        /// The gateway address.
        ip: Ipv4Addr,
    },
    /// br-int, table 0: what no other flow takes is switched as a learning switch would.
    Normal,
    /// br-int, table 0: a gateway port sends from the gateway MAC only.
    GatewayPort {
        /// Its port.
        ofport: u32,
        /// The gateway MAC.
        mac: MacAddr,
    },
    /// br-int, table 0: a container sends IP only from its own MAC and address.
    PortIp {
        /// Its port.
        ofport: u32,
        /// Its MAC.
        mac: MacAddr,
        /// Its address.
        ip: IpAddr,
    },
    /// br-int, table 0: a container sends ARP only from its own MAC and for its own address.
    PortArp {
        /// Its port.
        ofport: u32,
        /// Its MAC.
        mac: MacAddr,
        /// Its address.
        ip: Ipv4Addr,
    },
    /// br-int, table 0: in an IPv6 tenant, a container also sends from its link-local
    /// addresses.
    PortIpv6LinkLocal {
        /// Its port.
        ofport: u32,
        /// Its MAC.
        mac: MacAddr,
    },
    /// br-int, table 0: in an IPv6 tenant, a container's duplicate address detection probes
    /// (neighbour solicitations from `::`).
    PortDad {
        /// Its port.
        ofport: u32,
        /// Its MAC.
        mac: MacAddr,
    },
    /// br-int, table 0: a neighbour advertisement from a container only for its own address or
    /// a link-local one.
    PortNeighbourAdvert {
        /// Its port.
        ofport: u32,
        /// Its MAC.
        mac: MacAddr,
        /// The target it may advertise.
        target: Ipv6Addr,
        /// The target's prefix length (128, or 10 for link-local).
        prefix: u8,
    },
    /// br-int, table 0: any other neighbour advertisement from the port is dropped.
    PortDropNeighbourAdvert {
        /// Its port.
        ofport: u32,
    },
    /// br-int, table 0: anything else from a container port is dropped.
    PortDrop {
        /// Its port.
        ofport: u32,
    },
}

/// The match of an IPv6 address with a prefix length.
fn v6_masked(addr: Ipv6Addr, prefix: u8) -> (Ipv6Addr, Ipv6Addr) {
    let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix.min(128))) };
    (addr, Ipv6Addr::from(mask))
}

fn mac(m: &MacAddr) -> Mac {
    Mac(m.0)
}

/// A match on the source or destination MAC.
fn eth(m: MatchBuilder, field: MacField, value: &MacAddr) -> MatchBuilder {
    match field {
        MacField::Source => m.eth_src(mac(value)),
        MacField::Destination => m.eth_dst(mac(value)),
    }
}

/// `set_field` of a tunnel destination: IPv4 or IPv6 underlay.
fn set_tun_dst(host: IpAddr) -> Action {
    match host {
        IpAddr::V4(v4) => Action::set_field(Field::TunIpv4Dst, u32::from(v4).into()),
        IpAddr::V6(v6) => Action::set_field(Field::TunIpv6Dst, u128::from(v6)),
    }
}

/// A match on a tunnel source, IPv4 or IPv6 underlay.
fn tun_src(m: MatchBuilder, peer: IpAddr) -> MatchBuilder {
    match peer {
        IpAddr::V4(v4) => m.tun_src(v4),
        IpAddr::V6(v6) => m.field(Field::TunIpv6Src, u128::from(v6)),
    }
}

impl FlowSpec {
    /// The bridge it is installed on.
    pub fn bridge(&self) -> Bridge {
        match self {
            FlowSpec::FromIntegration { .. }
            | FlowSpec::FromTunnel { .. }
            | FlowSpec::Drop { .. }
            | FlowSpec::ArpResponder { .. }
            | FlowSpec::ArpLocal { .. }
            | FlowSpec::Unicast { .. }
            | FlowSpec::Flood { .. }
            | FlowSpec::LocalGatewayMac { .. }
            | FlowSpec::LocalGatewayArp { .. }
            | FlowSpec::TunnelGatewayMac { .. }
            | FlowSpec::TunnelGatewayArp { .. } => Bridge::Tun,
            _ => Bridge::Int,
        }
    }

    /// The tenant VLAN it belongs to, for the flows of one tenant.
    pub fn vlan(&self) -> Option<u16> {
        match self {
            FlowSpec::FromTunnel { vlan, .. }
            | FlowSpec::ArpResponder { vlan, .. }
            | FlowSpec::ArpLocal { vlan, .. }
            | FlowSpec::Unicast { vlan, .. }
            | FlowSpec::Flood { vlan, .. }
            | FlowSpec::LocalGatewayMac { vlan, .. }
            | FlowSpec::LocalGatewayArp { vlan, .. } => Some(*vlan),
            _ => None,
        }
    }

    /// The peer it concerns, for the flows to and from one host.
    pub fn peer(&self) -> Option<IpAddr> {
        match self {
            FlowSpec::FromTunnel { peer, .. } => Some(*peer),
            FlowSpec::Unicast { host, .. } => Some(*host),
            _ => None,
        }
    }

    /// The container port a br-int flow is about.
    pub fn in_port(&self) -> Option<u32> {
        match self {
            FlowSpec::PortIp { ofport, .. }
            | FlowSpec::PortArp { ofport, .. }
            | FlowSpec::PortIpv6LinkLocal { ofport, .. }
            | FlowSpec::PortDad { ofport, .. }
            | FlowSpec::PortNeighbourAdvert { ofport, .. }
            | FlowSpec::PortDropNeighbourAdvert { ofport }
            | FlowSpec::PortDrop { ofport }
            | FlowSpec::GatewayPort { ofport, .. } => Some(*ofport),
            _ => None,
        }
    }

    /// Its cookie: the agent's prefix and a hash of its content (with `salt` 0, unless two
    /// specs of one desired state collide).
    pub fn cookie(&self, salt: u32) -> u64 {
        let mut h = crate::fnv::FnvHasher::default();
        salt.hash(&mut h);
        self.hash(&mut h);
        cookie_of(h.finish())
    }

    /// The OpenFlow flow, with `cookie`.
    pub fn render(&self, cookie: u64) -> Result<Flow, FlowError> {
        let (table, priority, m, actions, goto) = self.parts()?;
        let mut b = Flow::builder(table, priority).cookie(cookie).matching(m).actions(actions);
        if let Some(t) = goto {
            b = b.goto_table(t);
        }
        b.build()
    }

    /// Table, priority, match, actions and goto of the flow.
    #[allow(clippy::type_complexity)]
    fn parts(&self) -> Result<(u8, u16, Match, Vec<Action>, Option<u8>), FlowError> {
        use tables::*;
        let m = Match::builder();
        Ok(match self {
            FlowSpec::FromIntegration { patch } => {
                (TUN_CLASSIFY, 100, m.in_port(*patch).build()?, vec![], Some(TUN_FROM_INT))
            }
            FlowSpec::FromTunnel { tunnel_port, peer, vlan, patch } => (
                TUN_CLASSIFY,
                100,
                tun_src(m.in_port(*tunnel_port), *peer).build()?,
                vec![Action::push_vlan(), Action::set_vlan_vid(*vlan), Action::output(*patch)],
                None,
            ),
            FlowSpec::Drop { table } => (*table, 0, m.build()?, vec![], None),
            FlowSpec::ArpResponder { vlan, ip, mac: answer } => (
                TUN_FROM_INT,
                30,
                m.vlan_vid(*vlan).arp().arp_op(1).arp_tpa(*ip).build()?,
                // The request turned into the reply, sent back where it came from.
                vec![
                    Action::move_field(Field::EthSrc, Field::EthDst),
                    Action::set_field(Field::EthSrc, mac(answer).to_u128()),
                    Action::set_field(Field::ArpOp, 2),
                    Action::move_field(Field::ArpSha, Field::ArpTha),
                    Action::move_field(Field::ArpSpa, Field::ArpTpa),
                    Action::set_field(Field::ArpSha, mac(answer).to_u128()),
                    Action::set_field(Field::ArpSpa, u32::from(*ip).into()),
                    Action::in_port(),
                ],
                None,
            ),
            FlowSpec::ArpLocal { vlan, ip } => {
                (TUN_FROM_INT, 25, m.vlan_vid(*vlan).arp().arp_op(1).arp_tpa(*ip).build()?, vec![], None)
            }
            FlowSpec::Unicast { vlan, mac: dst, host, tunnel_port } => (
                TUN_FROM_INT,
                20,
                m.vlan_vid(*vlan).eth_dst(mac(dst)).build()?,
                vec![Action::PopVlan, set_tun_dst(*host), Action::output(*tunnel_port)],
                None,
            ),
            FlowSpec::Flood { vlan, tunnel_port, members } => {
                let mut actions = Vec::with_capacity(1 + 2 * members.len());
                actions.push(Action::PopVlan);
                for m in members.iter() {
                    actions.push(set_tun_dst(*m));
                    actions.push(Action::output(*tunnel_port));
                }
                (TUN_FROM_INT, 5, m.vlan_vid(*vlan).build()?, actions, None)
            }
            FlowSpec::LocalGatewayMac { vlan, mac: gw, field } => {
                (TUN_FROM_INT, 40, eth(m.vlan_vid(*vlan), *field, gw).build()?, vec![], None)
            }
            FlowSpec::LocalGatewayArp { vlan, ip } => {
                (TUN_FROM_INT, 40, m.vlan_vid(*vlan).arp().arp_op(1).arp_tpa(*ip).build()?, vec![], None)
            }
            FlowSpec::TunnelGatewayMac { tunnel_port, mac: gw, field } => {
                (TUN_CLASSIFY, 110, eth(m.in_port(*tunnel_port), *field, gw).build()?, vec![], None)
            }
            FlowSpec::TunnelGatewayArp { tunnel_port, ip } => {
                (TUN_CLASSIFY, 110, m.in_port(*tunnel_port).arp().arp_op(1).arp_tpa(*ip).build()?, vec![], None)
            }
            FlowSpec::Normal => (INT_CLASSIFY, 0, m.build()?, vec![Action::output(port::NORMAL)], None),
            FlowSpec::GatewayPort { ofport, mac: gw } => (
                INT_CLASSIFY,
                100,
                m.in_port(*ofport).eth_src(mac(gw)).build()?,
                vec![Action::output(port::NORMAL)],
                None,
            ),
            FlowSpec::PortIp { ofport, mac: src, ip } => {
                let m = m.in_port(*ofport).eth_src(mac(src));
                let m = match ip {
                    IpAddr::V4(v4) => m.ip().ipv4_src(*v4),
                    IpAddr::V6(v6) => m.ipv6().ipv6_src(*v6),
                };
                (INT_CLASSIFY, 100, m.build()?, vec![Action::output(port::NORMAL)], None)
            }
            FlowSpec::PortArp { ofport, mac: src, ip } => (
                INT_CLASSIFY,
                100,
                m.in_port(*ofport).eth_src(mac(src)).arp().arp_spa(*ip).arp_sha(mac(src)).build()?,
                vec![Action::output(port::NORMAL)],
                None,
            ),
            FlowSpec::PortIpv6LinkLocal { ofport, mac: src } => {
                let (net, mask) = v6_masked(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10);
                let m = m.in_port(*ofport).eth_src(mac(src)).ipv6().ipv6_src_masked(net, mask);
                (INT_CLASSIFY, 100, m.build()?, vec![Action::output(port::NORMAL)], None)
            }
            FlowSpec::PortDad { ofport, mac: src } => {
                let m = m.in_port(*ofport).eth_src(mac(src)).icmpv6().ipv6_src(Ipv6Addr::UNSPECIFIED).icmpv6_type(135);
                (INT_CLASSIFY, 100, m.build()?, vec![Action::output(port::NORMAL)], None)
            }
            FlowSpec::PortNeighbourAdvert { ofport, mac: src, target, prefix } => {
                let (net, mask) = v6_masked(*target, *prefix);
                let m = m.in_port(*ofport).eth_src(mac(src)).icmpv6().icmpv6_type(136).nd_target_masked(net, mask);
                (INT_CLASSIFY, 110, m.build()?, vec![Action::output(port::NORMAL)], None)
            }
            FlowSpec::PortDropNeighbourAdvert { ofport } => {
                (INT_CLASSIFY, 105, m.in_port(*ofport).icmpv6().icmpv6_type(136).build()?, vec![], None)
            }
            FlowSpec::PortDrop { ofport } => (INT_CLASSIFY, 90, m.in_port(*ofport).build()?, vec![], None),
        })
    }
}
