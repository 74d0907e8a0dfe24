use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

/// flow-lab's host 1 in one tenant: hosts 2 and 3 hold leases, each with one container.
fn lab() -> PipelineInput {
    let tenant = TenantInput {
        vlan: 1,
        tunnel_port: Some(10),
        members: vec![ip("198.18.0.3"), ip("198.18.0.2")],
        remote: vec![
            RemoteEndpoint { mac: mac("02:00:00:00:01:02"), ip: ip("198.19.0.12"), host: ip("198.18.0.2") },
            RemoteEndpoint { mac: mac("02:00:00:00:01:03"), ip: ip("198.19.0.13"), host: ip("198.18.0.3") },
        ],
        local: vec![ip("198.19.0.11")],
        gateway: ip("198.19.0.1"),
        gateway_mac: None,
    };
    PipelineInput {
        tun_patch: Some(1),
        tenants: BTreeMap::from([("red".to_owned(), Arc::new(tenant))]),
        ports: vec![PortInput { ofport: 5, endpoint: Some((mac("02:00:00:00:01:01"), ip("198.19.0.11"))) }],
        gateway_ports: vec![],
    }
}

/// The flows as ovs-ofctl would print them (without cookies), sorted.
fn rendered(entries: &[Entry]) -> Vec<String> {
    let mut out: Vec<String> = entries
        .iter()
        .map(|e| {
            let text = e.spec.render(e.cookie).unwrap().to_string();
            text.split_once(", ").map(|(_, rest)| rest.to_owned()).unwrap_or(text)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_lab_pipeline_is_flow_lab_with_tunnel_sources_checked_and_local_arp_kept_home() {
    let d = desired_flows(&lab());
    let tun = rendered(&d.tun);
    let expected_tun = [
        "table=0, priority=0 actions=drop",
        "table=0, priority=100,in_port=1 actions=goto_table:1",
        "table=0, priority=100,in_port=10,tun_src=198.18.0.2 actions=push_vlan:0x8100,set_field:4097->vlan_vid,output:1",
        "table=0, priority=100,in_port=10,tun_src=198.18.0.3 actions=push_vlan:0x8100,set_field:4097->vlan_vid,output:1",
        "table=1, priority=0 actions=drop",
        "table=1, priority=20,eth_dst=02:00:00:00:01:02,vlan_vid=4097 actions=pop_vlan,set_field:198.18.0.2->tun_dst,output:10",
        "table=1, priority=20,eth_dst=02:00:00:00:01:03,vlan_vid=4097 actions=pop_vlan,set_field:198.18.0.3->tun_dst,output:10",
        "table=1, priority=25,eth_type=0x806,vlan_vid=4097,arp_op=1,arp_tpa=198.19.0.11 actions=drop",
    ];
    for e in expected_tun {
        assert!(tun.iter().any(|t| t == e), "missing {e}\nhave:\n{}", tun.join("\n"));
    }
    let flood = tun.iter().find(|t| t.starts_with("table=1, priority=5,")).expect("a flood flow");
    assert!(
        flood.ends_with(
            "actions=pop_vlan,set_field:198.18.0.2->tun_dst,output:10,set_field:198.18.0.3->tun_dst,output:10"
        ),
        "{flood}"
    );
    let responder = tun.iter().find(|t| t.contains("arp_tpa=198.19.0.12")).expect("an ARP responder");
    assert!(responder.contains("priority=30"), "{responder}");
    assert!(responder.ends_with("set_field:198.19.0.12->arp_spa,IN_PORT"), "{responder}");
    assert_eq!(tun.len(), 11, "{}", tun.join("\n"));

    let int = rendered(&d.int);
    assert_eq!(int.len(), 4, "{}", int.join("\n"));
    assert!(int.contains(&"table=0, priority=0 actions=NORMAL".to_owned()), "{int:?}");
    assert!(int.contains(&"table=0, priority=90,in_port=5 actions=drop".to_owned()), "{int:?}");
    assert!(int.iter().any(|f| f.contains("in_port=5,eth_src=02:00:00:00:01:01,eth_type=0x800,ipv4_src=198.19.0.11")));
    assert!(int.iter().any(|f| f.contains("arp_spa=198.19.0.11") && f.contains("arp_sha=02:00:00:00:01:01")));
}

#[test]
fn cookies_carry_the_prefix_are_unique_and_stable() {
    let a = desired_flows(&lab());
    let b = desired_flows(&lab());
    assert_eq!(a, b, "the same input gives the same flows and cookies");
    let all: Vec<u64> = a.tun.iter().chain(&a.int).map(|e| e.cookie).collect();
    assert!(all.iter().all(|c| c & COOKIE_MASK == COOKIE_PREFIX));
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), all.len());
    // A flow whose content changes gets another cookie.
    let mut moved = lab();
    Arc::make_mut(moved.tenants.get_mut("red").unwrap()).remote[0].host = ip("198.18.0.3");
    let c = desired_flows(&moved);
    let (add, delete) = changes(&c.tun, &a.tun.iter().map(|e| (e.cookie, ())).collect::<HashMap<u64, ()>>());
    let added: Vec<String> = add.iter().map(|e| e.spec.render(e.cookie).unwrap().to_string()).collect();
    assert_eq!(added.len(), 1, "{added:?}");
    assert!(added[0].contains("eth_dst=02:00:00:00:01:02") && added[0].contains("198.18.0.3->tun_dst"));
    assert_eq!(delete.len(), 1);
}

#[test]
fn nothing_to_send_when_the_switch_holds_the_flows_and_only_stale_ones_go() {
    let d = desired_flows(&lab());
    let installed: HashMap<u64, ()> = d.tun.iter().map(|e| (e.cookie, ())).collect();
    let (add, delete) = changes(&d.tun, &installed);
    assert!(add.is_empty() && delete.is_empty());
    let mut with_stale = installed.clone();
    with_stale.insert(COOKIE_PREFIX | 0x1234, ());
    let (add, delete) = changes(&d.tun, &with_stale);
    assert!(add.is_empty());
    assert_eq!(delete, [COOKIE_PREFIX | 0x1234]);
    let (add, _) = changes(&d.tun, &HashMap::<u64, ()>::new());
    assert_eq!(add.len(), d.tun.len());
}

#[test]
fn records_of_non_members_the_gateway_and_twins_are_left_out() {
    let mut input = lab();
    let t = Arc::make_mut(input.tenants.get_mut("red").unwrap());
    // A record of a host that holds no lease (or is skipped): no flow to it.
    t.remote.push(RemoteEndpoint { mac: mac("02:00:00:00:09:09"), ip: ip("198.19.0.99"), host: ip("198.18.0.9") });
    // A record claiming the gateway: never answered.
    t.remote.push(RemoteEndpoint { mac: mac("02:00:00:00:09:01"), ip: ip("198.19.0.1"), host: ip("198.18.0.2") });
    // A remote record claiming a local container's address: the local one wins.
    t.remote.push(RemoteEndpoint { mac: mac("02:00:00:00:09:02"), ip: ip("198.19.0.11"), host: ip("198.18.0.3") });
    // Twins: two records with one address; one responder, the first in order.
    t.remote.push(RemoteEndpoint { mac: mac("02:00:00:00:09:03"), ip: ip("198.19.0.12"), host: ip("198.18.0.3") });
    let tun = rendered(&desired_flows(&input).tun);
    assert!(!tun.iter().any(|f| f.contains("198.18.0.9") || f.contains("02:00:00:00:09:09")), "{tun:#?}");
    assert!(!tun.iter().any(|f| f.contains("arp_tpa=198.19.0.1 ")), "{tun:#?}");
    let responders: Vec<&String> = tun.iter().filter(|f| f.contains("priority=30")).collect();
    assert_eq!(responders.len(), 2, "{responders:#?}");
    assert!(responders.iter().any(|f| f.contains("arp_tpa=198.19.0.12") && f.contains("02:00:00:00:01:02")));
    assert!(!responders.iter().any(|f| f.contains("arp_tpa=198.19.0.11")));
}

#[test]
fn until_ovs_vswitchd_has_the_ports_only_what_needs_no_port_is_there() {
    let mut input = lab();
    Arc::make_mut(input.tenants.get_mut("red").unwrap()).tunnel_port = None;
    let d = desired_flows(&input);
    assert_eq!(rendered(&d.tun).len(), 3, "the two drops and from-integration");
    input.tun_patch = None;
    assert_eq!(rendered(&desired_flows(&input).tun).len(), 2);
    // A port whose plug has no address yet: everything from it is dropped.
    input.ports = vec![PortInput { ofport: 7, endpoint: None }];
    assert_eq!(
        rendered(&desired_flows(&input).int),
        ["table=0, priority=0 actions=NORMAL", "table=0, priority=90,in_port=7 actions=drop"]
    );
}

#[test]
fn ipv6_containers_send_from_their_address_and_link_local_and_advertise_only_those() {
    let input = PipelineInput {
        ports: vec![PortInput { ofport: 8, endpoint: Some((mac("02:00:00:00:02:01"), ip("fd19::5"))) }],
        ..Default::default()
    };
    let int = rendered(&desired_flows(&input).int);
    let has = |s: &str| int.iter().any(|f| f.contains(s));
    assert!(has("ipv6_src=fd19::5"), "{int:#?}");
    assert!(has("ipv6_src=fe80::/ffc0::"), "{int:#?}");
    assert!(has("priority=110") && has("nd_target=fd19::5"), "{int:#?}");
    assert!(has("priority=105,in_port=8"), "{int:#?}");
    assert!(has("icmpv6_type=135") && has("ipv6_src=::"), "{int:#?}");
    assert!(!has("arp"), "{int:#?}");
}

#[test]
fn an_ipv6_underlay_sets_and_matches_the_ipv6_tunnel_fields() {
    let mut input = lab();
    let t = Arc::make_mut(input.tenants.get_mut("red").unwrap());
    t.members = vec![ip("fd18::2")];
    t.remote = vec![RemoteEndpoint { mac: mac("02:00:00:00:01:02"), ip: ip("198.19.0.12"), host: ip("fd18::2") }];
    let tun = rendered(&desired_flows(&input).tun);
    assert!(tun.iter().any(|f| f.contains("tun_ipv6_src=fd18::2")), "{tun:#?}");
    assert!(tun.iter().any(|f| f.contains("set_field:fd18::2->tun_ipv6_dst")), "{tun:#?}");
}

#[test]
fn a_port_alone_gets_what_the_whole_pipeline_gives_it() {
    let input = lab();
    let whole = desired_flows(&input);
    let alone = port_flows(&input.ports[0]);
    assert_eq!(alone.len(), 3);
    assert!(alone.iter().all(|e| whole.int.contains(e)), "{alone:?}");
    assert!(alone.iter().all(|e| e.spec.in_port() == Some(5)));
}

#[test]
fn counts_per_tenant_vlan_and_peer() {
    let (by_vlan, by_peer) = desired_flows(&lab()).counts();
    assert_eq!(by_vlan[&1], 8, "2 ingress, flood, 2 unicast, 2 responders, 1 local ARP");
    assert_eq!(by_peer[&ip("198.18.0.2")], 2);
    assert_eq!(by_peer[&ip("198.18.0.3")], 2);
}

/// The lab with a gateway on this host: its port on br-int is ofport 7.
fn lab_with_gateway() -> PipelineInput {
    let mut input = lab();
    let gw = mac("02:4f:56:00:00:64");
    Arc::make_mut(input.tenants.get_mut("red").unwrap()).gateway_mac = Some(gw);
    input.gateway_ports = vec![GatewayPortInput { ofport: 7, mac: gw }];
    input
}

#[test]
fn the_gateway_stays_on_its_host_both_ways() {
    let d = desired_flows(&lab_with_gateway());
    let tun = rendered(&d.tun);
    for e in [
        "table=0, priority=110,in_port=10,eth_src=02:4f:56:00:00:64 actions=drop",
        "table=0, priority=110,in_port=10,eth_dst=02:4f:56:00:00:64 actions=drop",
        "table=0, priority=110,in_port=10,eth_type=0x806,arp_op=1,arp_tpa=198.19.0.1 actions=drop",
        "table=1, priority=40,eth_src=02:4f:56:00:00:64,vlan_vid=4097 actions=drop",
        "table=1, priority=40,eth_dst=02:4f:56:00:00:64,vlan_vid=4097 actions=drop",
        "table=1, priority=40,eth_type=0x806,vlan_vid=4097,arp_op=1,arp_tpa=198.19.0.1 actions=drop",
    ] {
        assert!(tun.iter().any(|t| t == e), "missing {e}\nhave:\n{}", tun.join("\n"));
    }
    // Above everything that would send a frame out: responders (30), unicast (20), flood (5),
    // and above the tunnel ingress (100).
    assert_eq!(tun.len(), 11 + 6, "{}", tun.join("\n"));
    let int = rendered(&d.int);
    assert!(
        int.contains(&"table=0, priority=100,in_port=7,eth_src=02:4f:56:00:00:64 actions=NORMAL".to_owned()),
        "{int:#?}"
    );
    assert!(int.contains(&"table=0, priority=90,in_port=7 actions=drop".to_owned()), "{int:#?}");
    let (by_vlan, _) = d.counts();
    assert_eq!(by_vlan[&1], 8 + 3, "the local drops count for the tenant");
}

#[test]
fn without_a_gateway_nothing_of_it_is_there() {
    let tun = rendered(&desired_flows(&lab()).tun);
    assert!(!tun.iter().any(|t| t.contains("02:4f:56") || t.contains("arp_tpa=198.19.0.1 ")), "{tun:#?}");
}

#[test]
fn a_spec_given_twice_gets_a_salted_cookie_and_the_fast_path_agrees_with_the_salted_one() {
    let specs: Vec<FlowSpec> = desired_flows(&lab()).tun.into_iter().map(|e| e.spec).collect();
    let fast = with_cookies(specs.clone());
    assert_eq!(fast, with_salted_cookies(specs.clone()), "without clashes both give the same entries");

    let twice = vec![FlowSpec::PortDrop { ofport: 7 }, FlowSpec::PortDrop { ofport: 7 }];
    let salted = with_cookies(twice);
    assert_eq!(salted.len(), 2);
    assert_ne!(salted[0].cookie, salted[1].cookie);
    assert!(salted[0].cookie < salted[1].cookie, "sorted by cookie");
    let first = FlowSpec::PortDrop { ofport: 7 }.cookie(0);
    assert!(salted.iter().any(|e| e.cookie == first), "the first keeps its unsalted cookie");
}
