//! The two tables of the gateway: one per router namespace, one in the host namespace. Filter
//! rules look at the first packet of a connection only: everything conntrack has seen both
//! ways (and ICMP errors about it) is accepted first.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::ruleset::{Chain, ChainType, Hook, Match, Rule, Set, Table, Verdict, TABLE};
use super::{GatewayPlan, RouterSpec, ROUTER_TENANT_IFNAME as GW, ROUTER_UPLINK_IFNAME as UP};

/// The set of protected addresses in both tables.
const PROTECTED: &str = "protected";

fn host(a: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::new(a, 32).expect("/32")
}

fn chain(name: &str, kind: ChainType, hook: Hook, drop_by_default: bool, rules: Vec<Rule>) -> Chain {
    let priority = match (kind, hook) {
        (ChainType::Nat, Hook::Prerouting | Hook::Output) => -100,
        (ChainType::Nat, _) => 100,
        (ChainType::Filter, _) => 0,
    };
    Chain { name: name.to_owned(), kind, hook, priority, drop_by_default, rules }
}

/// The table of a router namespace:
/// - prerouting: a published port arriving on the uplink goes to its container;
/// - postrouting: what leaves by the uplink leaves with the router's transit address (tenants
///   sharing a CIDR become different sources in the host namespace);
/// - forward (drop by default): replies, published ports in; out, when egress is on: the
///   allow-list, then never the protected addresses nor another router, then anything;
/// - input (drop by default): replies, and ICMP to the gateway address (ping the gateway).
pub fn router_table(r: &RouterSpec, protected: &[Ipv4Addr], transit: Ipv4Net) -> Table {
    use Match::*;
    let gw = || Iif(GW.to_owned());
    let prerouting = r
        .forwards
        .iter()
        .map(|f| {
            Rule::new(
                vec![Iif(UP.to_owned()), Daddr(host(r.transit.router)), Dport(f.protocol, Some(f.host_port))],
                Verdict::Dnat(f.container, f.port),
            )
        })
        .collect();
    let postrouting = vec![Rule::new(vec![Oif(UP.to_owned())], Verdict::Snat(r.transit.router))];
    let mut forward = vec![
        Rule::new(vec![EstablishedOrRelated], Verdict::Accept),
        Rule::new(vec![Invalid], Verdict::Drop),
        Rule::new(vec![Iif(UP.to_owned()), Oif(GW.to_owned()), Dnatted], Verdict::Accept),
    ];
    if r.egress {
        for a in &r.allow {
            forward.push(Rule::new(vec![gw(), Oif(UP.to_owned()), Daddr(*a)], Verdict::Accept));
        }
        forward.push(Rule::new(vec![gw(), DaddrIn(PROTECTED.to_owned())], Verdict::Drop));
        forward.push(Rule::new(vec![gw(), Daddr(transit)], Verdict::Drop));
        forward.push(Rule::new(vec![gw(), Oif(UP.to_owned())], Verdict::Accept));
    }
    forward.push(Rule::new(vec![], Verdict::Drop));
    let input = vec![
        Rule::new(vec![EstablishedOrRelated], Verdict::Accept),
        Rule::new(vec![Iif("lo".to_owned())], Verdict::Accept),
        Rule::new(vec![gw(), Daddr(host(r.gateway)), Icmp], Verdict::Accept),
        Rule::new(vec![], Verdict::Drop),
    ];
    Table {
        name: TABLE.to_owned(),
        sets: vec![Set { name: PROTECTED.to_owned(), elements: protected.to_vec() }],
        chains: vec![
            chain("prerouting", ChainType::Nat, Hook::Prerouting, false, prerouting),
            chain("postrouting", ChainType::Nat, Hook::Postrouting, false, postrouting),
            chain("forward", ChainType::Filter, Hook::Forward, true, forward),
            chain("input", ChainType::Filter, Hook::Input, true, input),
        ],
    }
}

/// The table of the host namespace (whose own traffic it leaves alone: its filter chains
/// accept by default and only look at the transit range):
/// - prerouting and output: a published port of the underlay address goes to its router's
///   transit address (output: the host itself reaching it);
/// - postrouting: connections from routers leave with the underlay address (SNAT, not
///   masquerade: masquerade's entries are flushed when the device goes down, as br-phy does at
///   an ovs-vswitchd restart);
/// - forward: nothing reaches a router but replies and published ports; a router reaches
///   neither the protected addresses nor another router, beyond its tenant's allow-list;
/// - input: a router reaches nothing of the host itself, beyond its tenant's allow-list.
pub fn host_table(plan: &GatewayPlan, underlay: Ipv4Addr) -> Table {
    use Match::*;
    let transit = plan.transit;
    let mut published = Vec::new();
    for r in plan.routers.values() {
        for f in &r.forwards {
            published.push(Rule::new(
                vec![Daddr(host(underlay)), Dport(f.protocol, Some(f.host_port))],
                Verdict::Dnat(r.transit.router, f.host_port),
            ));
        }
    }
    let postrouting = vec![Rule::new(vec![Saddr(transit), DaddrNot(transit)], Verdict::Snat(underlay))];
    let allowed = |out: &mut Vec<Rule>| {
        for r in plan.routers.values().filter(|r| r.egress) {
            for a in &r.allow {
                out.push(Rule::new(vec![Saddr(host(r.transit.router)), Daddr(*a)], Verdict::Accept));
            }
        }
    };
    let mut forward = vec![
        Rule::new(vec![Saddr(transit), EstablishedOrRelated], Verdict::Accept),
        Rule::new(vec![Daddr(transit), EstablishedOrRelated], Verdict::Accept),
        Rule::new(vec![Daddr(transit), Dnatted], Verdict::Accept),
        Rule::new(vec![Daddr(transit)], Verdict::Drop),
    ];
    allowed(&mut forward);
    forward.push(Rule::new(vec![Saddr(transit), DaddrIn(PROTECTED.to_owned())], Verdict::Drop));
    let mut input = vec![Rule::new(vec![Saddr(transit), EstablishedOrRelated], Verdict::Accept)];
    allowed(&mut input);
    input.push(Rule::new(vec![Saddr(transit)], Verdict::Drop));
    Table {
        name: TABLE.to_owned(),
        sets: vec![Set { name: PROTECTED.to_owned(), elements: plan.protected.clone() }],
        chains: vec![
            chain("prerouting", ChainType::Nat, Hook::Prerouting, false, published.clone()),
            chain("output", ChainType::Nat, Hook::Output, false, published),
            chain("postrouting", ChainType::Nat, Hook::Postrouting, false, postrouting),
            chain("forward", ChainType::Filter, Hook::Forward, false, forward),
            chain("input", ChainType::Filter, Hook::Input, false, input),
        ],
    }
}
