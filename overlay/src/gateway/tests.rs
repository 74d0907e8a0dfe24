use std::collections::BTreeSet;
use std::net::IpAddr;

use super::*;
use crate::model::{MacAddr, Tenant, TunnelType, Vni};

fn vni(v: u32) -> Vni {
    Vni::new(v).unwrap()
}

fn tenant(name: &str, v: u32, cidr: &str) -> Tenant {
    let cidr = cidr.parse().unwrap();
    Tenant::new(name, vni(v), cidr, TunnelType::Vxlan, crate::model::default_subnet_len(&cidr)).unwrap()
}

fn endpoint(tenant: &str, container: &str, ip: &str, publish: &[&str]) -> Endpoint {
    Endpoint {
        tenant: tenant.into(),
        container_id: container.into(),
        ifname: "eth0".into(),
        machine_id: "m".into(),
        host: "h1".into(),
        ip: ip.parse().unwrap(),
        mac: MacAddr::locally_administered_from(container.as_bytes()),
        iface_id: container.into(),
        port: crate::naming::container_port_name(container, "eth0"),
        owner: None,
        publish: publish.iter().map(|p| p.parse().unwrap()).collect(),
    }
}

fn protected(addrs: &[&str]) -> BTreeSet<IpAddr> {
    addrs.iter().map(|a| a.parse().unwrap()).collect()
}

#[test]
fn gateway_macs_are_per_vni_local_unicast_and_recognised() {
    let m = gateway_mac(vni(0x0a0b0c));
    assert_eq!(m.to_string(), "02:4f:56:0a:0b:0c");
    assert!(m.is_locally_administered() && !m.is_multicast() && is_gateway_mac(&m));
    assert_ne!(gateway_mac(vni(100)), gateway_mac(vni(200)));
    assert!(!is_gateway_mac(&MacAddr::locally_administered_from(b"c1")));
}

#[test]
fn names_fit_and_give_their_vni_back() {
    for v in [1, 100, 16_777_215] {
        for name in [gateway_port_name(vni(v)), transit_link_name(vni(v))] {
            assert!(name.len() <= crate::naming::IFNAME_MAX && crate::naming::is_valid_ifname(&name), "{name}");
            assert!(!crate::naming::is_container_port_name(&name));
            assert_eq!(vni_of_link(&name), Some(vni(v)));
        }
        assert_eq!(vni_of_netns_file(&router_netns_file(vni(v))), Some(vni(v)));
    }
    for other in ["ovg-", "ovg-0", "ovg-01", "ovg-x", "ovt-16777216", "tap0123456789ab", "gw-", "gw-0"] {
        assert_eq!(vni_of_link(other), None, "{other}");
        assert_eq!(vni_of_netns_file(other), None, "{other}");
    }
}

#[test]
fn transit_pairs_follow_the_vlan_and_stay_in_range() {
    let t = TransitRange::default();
    assert_eq!(t.cidr().to_string(), "169.254.64.0/19");
    assert!(!t.cidr().contains(&"169.254.169.254".parse::<std::net::Ipv4Addr>().unwrap()));
    let p = t.pair(1);
    assert_eq!((p.host.to_string(), p.router.to_string()), ("169.254.64.2".into(), "169.254.64.3".into()));
    let last = t.pair(4094);
    assert!(t.cidr().contains(&last.router), "{last:?}");
    let all: BTreeSet<_> = (1..=4094).flat_map(|v| [t.pair(v).host, t.pair(v).router]).collect();
    assert_eq!(all.len(), 2 * 4094, "pairs never overlap");
    assert!(TransitRange::new("10.0.0.0/20".parse().unwrap()).is_err());
    assert!(TransitRange::new("fd00::/64".parse().unwrap()).is_err());
    assert!(TransitRange::new("10.0.0.0/16".parse().unwrap()).is_ok());
}

/// Two tenants sharing one CIDR and one container address, on one host.
fn two_tenants() -> (Tenant, Tenant, Vec<Endpoint>) {
    let red =
        tenant("red", 100, "198.19.0.0/16").with_control_plane_allow(vec!["198.18.7.0/24".parse().unwrap()]).unwrap();
    let blue = tenant("blue", 200, "198.19.0.0/16").with_egress(false);
    let eps = vec![
        endpoint("red", "r1", "198.19.5.1", &["8080:80/tcp", "5353:53/udp"]),
        endpoint("blue", "b1", "198.19.5.1", &["9090:90/tcp"]),
        endpoint("red", "r2", "198.19.5.2", &[]),
    ];
    (red, blue, eps)
}

fn input<'a>(red: &'a Tenant, blue: &'a Tenant, eps: &'a [Endpoint]) -> GatewayInput<'a> {
    GatewayInput {
        underlay_ip: "198.18.1.1".parse().unwrap(),
        transit: TransitRange::default(),
        tenants: vec![
            LocalTenant { tenant: red, vlan: 1, mtu: 1450 },
            LocalTenant { tenant: blue, vlan: 2, mtu: 1458 },
        ],
        endpoints: eps.iter().collect(),
        protected: protected(&["198.18.1.1", "198.18.1.2", "198.18.100.254", "127.0.0.1", "fd00::1"]),
    }
}

#[test]
fn one_router_per_tenant_with_its_pair_mac_and_published_ports() {
    let (red, blue, eps) = two_tenants();
    let p = plan(&input(&red, &blue, &eps));
    assert_eq!(p.routers.len(), 2);
    let r = &p.routers[&vni(100)];
    assert_eq!((r.vlan, r.prefix, r.mtu, r.egress), (1, 16, 1450, true));
    assert_eq!(r.gateway.to_string(), "198.19.0.1");
    assert_eq!(r.mac, gateway_mac(vni(100)));
    assert_eq!(r.transit, TransitRange::default().pair(1));
    assert_eq!(r.forwards.len(), 2);
    let b = &p.routers[&vni(200)];
    assert!(!b.egress);
    assert_eq!(b.forwards[0].container.to_string(), "198.19.5.1");
    assert_ne!(r.transit, b.transit, "tenants sharing a CIDR leave with different sources");
    // Loopback and IPv6 addresses are never routed by a router: left out.
    assert_eq!(
        p.protected.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        ["198.18.1.1", "198.18.1.2", "198.18.100.254"]
    );
    assert!(p.skipped.is_empty(), "{:?}", p.skipped);
}

#[test]
fn a_host_port_published_twice_goes_to_the_first_and_the_other_is_reported() {
    let (red, blue, mut eps) = two_tenants();
    eps.push(endpoint("blue", "b0", "198.19.5.9", &["8080:81/tcp"]));
    let p = plan(&input(&red, &blue, &eps));
    let blue_fwd: Vec<u16> = p.routers[&vni(200)].forwards.iter().map(|f| f.host_port).collect();
    let red_fwd: Vec<u16> = p.routers[&vni(100)].forwards.iter().map(|f| f.host_port).collect();
    // (blue, b0) sorts first: it keeps 8080; red's r1 loses it.
    assert!(blue_fwd.contains(&8080) && !red_fwd.contains(&8080), "{blue_fwd:?} {red_fwd:?}");
    assert_eq!(p.skipped.len(), 1, "{:?}", p.skipped);
    assert!(p.skipped[0].contains("r1/eth0") && p.skipped[0].contains("b0/eth0"), "{:?}", p.skipped);
}

#[test]
fn ipv6_tenants_and_an_ipv6_underlay_get_no_router() {
    let (red, _, eps) = two_tenants();
    let v6 = tenant("six", 300, "fd19::/64");
    let mut i = input(&red, &red, &eps);
    i.tenants = vec![LocalTenant { tenant: &red, vlan: 1, mtu: 1450 }, LocalTenant { tenant: &v6, vlan: 3, mtu: 1450 }];
    let p = plan(&i);
    assert_eq!(p.routers.keys().copied().collect::<Vec<_>>(), [vni(100)]);
    assert!(p.skipped.iter().any(|s| s.contains("six")), "{:?}", p.skipped);
    i.underlay_ip = "fd18::1".parse().unwrap();
    let p = plan(&i);
    assert!(p.routers.is_empty() && p.host_table().is_none());
    assert!(p.skipped.iter().any(|s| s.contains("IPv6")), "{:?}", p.skipped);
}

#[test]
fn the_router_table_translates_and_guards_as_documented() {
    let (red, blue, eps) = two_tenants();
    let p = plan(&input(&red, &blue, &eps));
    let text = p.router_table(&p.routers[&vni(100)]).to_string();
    let expected = "\
table ip overlay_agent {
\tset protected {
\t\ttype ipv4_addr
\t\telements = { 198.18.1.1, 198.18.1.2, 198.18.100.254 }
\t}
\tchain prerouting {
\t\ttype nat hook prerouting priority -100; policy accept;
\t\tiifname \"up0\" ip daddr 169.254.64.3 tcp dport 8080 dnat to 198.19.5.1:80
\t\tiifname \"up0\" ip daddr 169.254.64.3 udp dport 5353 dnat to 198.19.5.1:53
\t}
\tchain postrouting {
\t\ttype nat hook postrouting priority 100; policy accept;
\t\toifname \"up0\" snat to 169.254.64.3
\t}
\tchain forward {
\t\ttype filter hook forward priority 0; policy drop;
\t\tct state established,related accept
\t\tct state invalid counter drop
\t\tiifname \"up0\" oifname \"gw0\" ct status dnat accept
\t\tiifname \"gw0\" oifname \"up0\" ip daddr 198.18.7.0/24 accept
\t\tiifname \"gw0\" ip daddr @protected counter drop
\t\tiifname \"gw0\" ip daddr 169.254.64.0/19 counter drop
\t\tiifname \"gw0\" oifname \"up0\" accept
\t\tcounter drop
\t}
\tchain input {
\t\ttype filter hook input priority 0; policy drop;
\t\tct state established,related accept
\t\tiifname \"lo\" accept
\t\tiifname \"gw0\" ip daddr 198.19.0.1 meta l4proto icmp accept
\t\tcounter drop
\t}
}
";
    assert_eq!(text, expected);
    // Egress off: nothing leaves, published ports still come in.
    let blue_text = p.router_table(&p.routers[&vni(200)]).to_string();
    assert!(!blue_text.contains("iifname \"gw0\" oifname \"up0\" accept"), "{blue_text}");
    assert!(blue_text.contains("ct status dnat accept") && blue_text.contains("dnat to 198.19.5.1:90"));
}

#[test]
fn the_host_table_publishes_on_the_underlay_and_keeps_routers_out_of_the_host() {
    let (red, blue, eps) = two_tenants();
    let p = plan(&input(&red, &blue, &eps));
    let text = p.host_table().unwrap().to_string();
    for line in [
        "ip daddr 198.18.1.1 tcp dport 8080 dnat to 169.254.64.3:8080",
        "ip daddr 198.18.1.1 tcp dport 9090 dnat to 169.254.64.5:9090",
        "ip saddr 169.254.64.0/19 ip daddr != 169.254.64.0/19 snat to 198.18.1.1",
        "ip daddr 169.254.64.0/19 ct status dnat accept",
        "ip saddr 169.254.64.3 ip daddr 198.18.7.0/24 accept",
        "ip saddr 169.254.64.0/19 ip daddr @protected counter drop",
        "ip saddr 169.254.64.0/19 counter drop",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(!text.contains("policy drop"), "the host's own traffic is left alone:\n{text}");
    // Blue's egress is off: its allow-list (none) and nothing else lets it out.
    assert!(!text.contains("ip saddr 169.254.64.5 "), "{text}");
}

#[test]
fn fingerprints_change_with_content_only() {
    let (red, blue, eps) = two_tenants();
    let a = plan(&input(&red, &blue, &eps));
    let b = plan(&input(&red, &blue, &eps));
    let (ta, tb) = (a.host_table().unwrap(), b.host_table().unwrap());
    assert_eq!(ta.fingerprint(), tb.fingerprint());
    let mut eps2 = eps.clone();
    eps2[2].publish = vec!["7070:70/tcp".parse().unwrap()];
    let c = plan(&input(&red, &blue, &eps2));
    assert_ne!(c.host_table().unwrap().fingerprint(), ta.fingerprint());
}
