//! Veth pairs: created in or moved into a container namespace, configured in one request,
//! offload, IPv6, idempotency, deletion from either side, traffic across.

use std::time::Duration;

use overlay_agent::netlink::{NetlinkError, VethSetup};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plug_configure_offload_idempotent_and_delete() {
    let (h, c, host, container) = namespaces().await;
    assert_eq!(container.path(), Some(c.path().as_path()));

    let host_if = testbed::unique_name("vh");
    let peer = testbed::unique_name("vp");
    host.create_veth(&host_if, &peer).await.unwrap();
    assert!(h.has_link(&host_if) && h.has_link(&peer), "both ends in the host netns");
    assert!(host.link_exists(&peer).await.unwrap());
    assert_eq!(host.link_mac(&host_if).await.unwrap().map(|m| format_mac(&m)), Some(h.mac(&host_if)));
    let host_index = host.link_index(&host_if).await.unwrap().expect("host end has an index");
    assert!(host_index > 1);

    host.move_link(&peer, &container, "eth0").await.unwrap();
    assert!(!h.has_link(&peer), "peer left the host netns");
    assert!(c.has_link("eth0"), "peer arrived as eth0");
    assert!(h.has_link(&host_if), "host end stays");
    assert!(!host.link_exists(&peer).await.unwrap());
    assert!(container.link_exists("eth0").await.unwrap());

    let cfg = cfg4("198.19.0.10", Some("198.19.0.1"));
    container.configure_interface("eth0", &cfg).await.unwrap();
    assert_configured(&c, &cfg);
    let state = container.interface_state("eth0").await.unwrap().expect("eth0 state");
    assert!(state.matches(&cfg), "{state:?}");
    assert_eq!(state.gateways, vec![cfg.gateway.unwrap()]);
    assert!(!state.lower_up, "host end still down: no carrier");

    // TX checksum offload off, checked with ethtool inside the container.
    assert!(container.tx_checksum_enabled("eth0").await.unwrap(), "veth starts with tx csum on");
    container.disable_tx_checksum("eth0").await.unwrap();
    let features = c.run(&["ethtool", "-k", "eth0"]);
    assert!(features.lines().any(|l| l.trim() == "tx-checksumming: off"), "{features}");
    assert!(!container.tx_checksum_enabled("eth0").await.unwrap());
    container.disable_tx_checksum("eth0").await.unwrap(); // idempotent
                                                          // Only the container end was touched.
    let host_features = h.run(&["ethtool", "-k", &host_if]);
    assert!(host_features.lines().any(|l| l.trim() == "tx-checksumming: on"), "{host_features}");

    // Configure again: same state, nothing duplicated.
    container.configure_interface("eth0", &cfg).await.unwrap();
    assert_configured(&c, &cfg);
    assert_eq!(container.interface_state("eth0").await.unwrap().unwrap(), state);

    // Re-configure with another address and gateway: the old ones are replaced.
    // (New MAC too, while the link is up.)
    let cfg2 = InterfaceConfig { mtu: 1400, mac: [0x02, 0, 0, 0, 0, 0x2a], ..cfg4("198.19.0.11", Some("198.19.0.2")) };
    container.configure_interface("eth0", &cfg2).await.unwrap();
    assert_configured(&c, &cfg2);

    // Deleting the host end removes both ends; deleting again is a no-op.
    assert!(host.delete_link(&host_if).await.unwrap());
    assert!(!h.has_link(&host_if));
    assert!(!c.has_link("eth0"), "deleting one veth end deletes the other");
    assert!(!host.delete_link(&host_if).await.unwrap());
    assert!(!container.delete_link("eth0").await.unwrap());
    assert_eq!(container.interface_state("eth0").await.unwrap(), None);
    assert_eq!(host.link_index(&host_if).await.unwrap(), None);
    assert_eq!(host.link_mac(&host_if).await.unwrap(), None);
}

/// What plug does: the container end created directly inside the container under its final
/// name (no move), atomic on a name clash on either side, TX checksum through the handle's own
/// socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn veth_created_straight_into_the_container() {
    let (h, c, host, container) = namespaces().await;
    let host_if = testbed::unique_name("vh");
    host.create_veth_into(&host_if, "eth0", &container).await.unwrap();
    assert!(h.has_link(&host_if), "host end in the host netns");
    assert!(!h.has_link("eth0"), "no container end in the host netns");
    assert!(c.has_link("eth0"), "container end created inside the container as eth0");
    let cfg = cfg4("198.19.0.10", Some("198.19.0.1"));
    container.configure_interface("eth0", &cfg).await.unwrap();
    assert_configured(&c, &cfg);
    assert!(container.tx_checksum_enabled("eth0").await.unwrap());
    container.disable_tx_checksum("eth0").await.unwrap();
    assert!(!container.tx_checksum_enabled("eth0").await.unwrap());

    // eth0 taken in the container: refused, naming the container, and nothing created.
    let other = testbed::unique_name("vh");
    match host.create_veth_into(&other, "eth0", &container).await {
        Err(NetlinkError::AlreadyExists { name, netns }) => {
            assert_eq!(name, "eth0");
            assert_eq!(netns, c.path().display().to_string());
        }
        other => panic!("expected AlreadyExists for eth0, got {other:?}"),
    }
    assert!(!h.has_link(&other), "nothing left behind in the host netns");
    // The host name taken: refused, naming the host end.
    match host.create_veth_into(&host_if, "eth1", &container).await {
        Err(NetlinkError::AlreadyExists { name, .. }) => assert_eq!(name, host_if),
        other => panic!("expected AlreadyExists for {host_if}, got {other:?}"),
    }
    assert!(!c.has_link("eth1"));
    assert!(host.delete_link(&host_if).await.unwrap());
    assert!(!c.has_link("eth0"), "deleting the host end removes the container end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn veth_created_with_mtu_mac_up_and_promisc_in_one_request() {
    let (h, c, host, container) = namespaces().await;
    let host_if = testbed::unique_name("vh");
    let mac = [0x02, 0x42, 0xc6, 0x13, 0x00, 0x07];
    let setup = VethSetup {
        mtu: Some(1400),
        peer_mac: Some(mac),
        up: true,
        peer_up: true,
        promisc: true,
        ipv6_off: true,
        peer_ipv6_off: true,
    };
    host.create_veth_into_with(&host_if, "eth0", &container, &setup).await.unwrap();
    let (hl, cl) = (link_json(&h, &host_if), link_json(&c, "eth0"));
    assert_eq!(hl["mtu"], 1400, "host end MTU: {hl}");
    assert_eq!(cl["mtu"], 1400, "container end MTU: {cl}");
    assert_eq!(cl["address"], "02:42:c6:13:00:07", "container end MAC: {cl}");
    let flag = |l: &Value, f: &str| l["flags"].as_array().is_some_and(|fs| fs.iter().any(|x| x == f));
    assert!(flag(&hl, "UP") && flag(&hl, "LOWER_UP"), "host end up with carrier: {hl}");
    assert!(flag(&cl, "UP") && flag(&cl, "LOWER_UP"), "container end up with carrier: {cl}");
    assert!(flag(&hl, "PROMISC"), "host end promiscuous: {hl}");
    assert!(!flag(&cl, "PROMISC"), "container end not promiscuous: {cl}");
    // The default setup is the plain pair: nothing set.
    let other = testbed::unique_name("vh");
    host.create_veth_into_with(&other, "eth1", &container, &VethSetup::default()).await.unwrap();
    let (ol, pl) = (link_json(&h, &other), link_json(&c, "eth1"));
    assert!(!flag(&ol, "UP") && !flag(&pl, "UP") && !flag(&ol, "PROMISC"), "plain pair: {ol} {pl}");
    assert_ne!(pl["address"], "02:42:c6:13:00:07");
}

/// The `disable_ipv6` sysctl of `ifname` as seen inside `ns`.
fn ipv6_disabled(ns: &testbed::Netns, ifname: &str) -> bool {
    ns.run(&["cat", &format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6")]).trim() == "1"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn veth_ends_come_up_without_ipv6_link_local_when_asked() {
    let (h, c, host, container) = namespaces().await;
    let up = VethSetup { up: true, peer_up: true, promisc: true, ..VethSetup::default() };
    // The control: left alone, both ends get a link-local address as they come up.
    let chatty = testbed::unique_name("vh");
    host.create_veth_into_with(&chatty, "eth1", &container, &up).await.unwrap();
    assert_eq!(addrs(&h, &chatty, "inet6").len(), 1, "host end has its fe80 address");
    assert_eq!(addrs(&c, "eth1", "inet6").len(), 1, "container end has its fe80 address");

    let quiet = testbed::unique_name("vh");
    let setup = VethSetup { ipv6_off: true, peer_ipv6_off: true, ..up };
    host.create_veth_into_with(&quiet, "eth0", &container, &setup).await.unwrap();
    let (hl, cl) = (link_json(&h, &quiet), link_json(&c, "eth0"));
    let flag = |l: &Value, f: &str| l["flags"].as_array().is_some_and(|fs| fs.iter().any(|x| x == f));
    assert!(flag(&hl, "LOWER_UP") && flag(&cl, "LOWER_UP"), "both ends up with carrier: {hl} {cl}");
    // Link-local addresses are made at carrier-up, synchronously: none now means none ever.
    assert_eq!(addrs(&h, &quiet, "inet6"), vec![], "host end: no IPv6 at all");
    assert_eq!(addrs(&c, "eth0", "inet6"), vec![], "container end: no link-local address");
    // The sysctl was written in the host namespace the handle is bound to, not in ours.
    assert!(ipv6_disabled(&h, &quiet), "disable_ipv6 set on the host end");
    assert!(!ipv6_disabled(&h, &chatty), "and only there");
    // The container end keeps IPv6 usable for an address given explicitly (an IPv6 tenant
    // would get its own, the agent only skips the link-local one in IPv4 tenants).
    assert!(!ipv6_disabled(&c, "eth0"));
    let cl = c.ip_json(&["-d", "link", "show", "dev", "eth0"])[0].clone();
    assert_eq!(cl["inet6_addr_gen_mode"], "none", "container end: {cl}");
    container.configure_interface("eth0", &cfg4("198.19.0.10", None)).await.unwrap();
    assert_eq!(addrs(&c, "eth0", "inet6"), vec![], "configuring IPv4 brings no IPv6 address");

    // Bad input: no such link.
    match host.disable_ipv6("nosuchlink0").await {
        Err(NetlinkError::LinkNotFound { name, .. }) => assert_eq!(name, "nosuchlink0"),
        other => panic!("expected LinkNotFound, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_from_container_side_removes_host_end() {
    let (h, _c, host, container) = namespaces().await;
    let host_if = plugged_pair(&host, &container).await;
    assert!(container.delete_link("eth0").await.unwrap());
    assert!(!h.has_link(&host_if));
    assert!(!host.delete_link(&host_if).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn traffic_passes_across_the_veth() {
    let (h, c, host, container) = namespaces().await;
    let host_if = plugged_pair(&host, &container).await;

    // Container first, with the host end still down (the agent's order), then the host end.
    container.configure_interface("eth0", &cfg4("198.19.0.10", Some("198.19.0.1"))).await.unwrap();
    container.disable_tx_checksum("eth0").await.unwrap();
    let host_cfg = InterfaceConfig { mac: [0x02, 0, 0, 0, 0, 0x01], ..cfg4("198.19.0.1", None) };
    host.configure_interface(&host_if, &host_cfg).await.unwrap();

    testbed::wait_ping(&c, "198.19.0.1", Duration::from_secs(10));
    testbed::wait_ping(&h, "198.19.0.10", Duration::from_secs(10));
    // Through the default route: an address outside the /16, answered by nobody, must go out
    // eth0 via the gateway.
    let route = c.run(&["ip", "-j", "route", "get", "203.0.113.9"]);
    let route: Value = serde_json::from_str(&route).unwrap();
    assert_eq!(route[0]["gateway"], "198.19.0.1", "{route}");
    assert_eq!(route[0]["dev"], "eth0", "{route}");
    let state = container.interface_state("eth0").await.unwrap().unwrap();
    assert!(state.lower_up, "carrier once both ends are up: {state:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ipv6_address_and_gateway() {
    let (_h, c, host, container) = namespaces().await;
    let host_if = plugged_pair(&host, &container).await;

    let cfg = InterfaceConfig {
        mac: MAC,
        mtu: 1430,
        address: "fd00:19::10".parse().unwrap(),
        prefix_len: 64,
        gateway: Some("fd00:19::1".parse().unwrap()),
    };
    container.configure_interface("eth0", &cfg).await.unwrap();
    container.configure_interface("eth0", &cfg).await.unwrap();
    assert_configured(&c, &cfg);
    let v = c.ip_json(&["-6", "addr", "show", "dev", "eth0"]);
    let info = v[0]["addr_info"].as_array().unwrap();
    let ours = info.iter().find(|a| a["local"] == "fd00:19::10").expect("address present");
    assert!(ours.get("tentative").is_none(), "added without DAD: {ours}");
    assert!(container.interface_state("eth0").await.unwrap().unwrap().matches(&cfg));

    let host_cfg = InterfaceConfig {
        mac: [0x02, 0, 0, 0, 0, 0x01],
        address: "fd00:19::1".parse().unwrap(),
        gateway: None,
        ..cfg.clone()
    };
    host.configure_interface(&host_if, &host_cfg).await.unwrap();
    testbed::wait_ping(&c, "fd00:19::1", Duration::from_secs(10));
}
