//! The netlink plumbing against the real kernel: veth pairs, moving an end into a container
//! namespace, configuring it, TX checksum offload, idempotency, errors, namespaces kept apart.
//! Needs root (fails loudly otherwise). Assertions use `ip -j` and `ethtool` from the test side.

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use overlay_agent::netlink::{format_mac, InterfaceConfig, NetlinkError, Netns, VethSetup};
use serde_json::Value;

const MAC: [u8; 6] = [0x02, 0x42, 0xc6, 0x13, 0x00, 0x0a];

fn cfg4(address: &str, gateway: Option<&str>) -> InterfaceConfig {
    InterfaceConfig {
        mac: MAC,
        mtu: 1450,
        address: address.parse().unwrap(),
        prefix_len: 16,
        gateway: gateway.map(|g| g.parse().unwrap()),
    }
}

fn setup() {
    testbed::require_root();
    testbed::require_binary("ethtool", "apt-get install ethtool");
    testbed::require_binary("ping", "apt-get install iputils-ping");
}

/// A "host" and a "container" namespace (removed on drop) and netlink handles in each.
async fn namespaces() -> (testbed::Netns, testbed::Container, Netns, Netns) {
    setup();
    let h = testbed::Netns::new("nlh");
    let c = testbed::Container::new("nlc");
    let host = Netns::open(&h.path()).await.unwrap();
    let container = Netns::open(&c.path()).await.unwrap();
    (h, c, host, container)
}

/// A veth pair in `host`, its peer moved into `container` as `eth0`; returns the host end's name.
async fn plugged_pair(host: &Netns, container: &Netns) -> String {
    let host_if = testbed::unique_name("vh");
    let peer = testbed::unique_name("vp");
    host.create_veth(&host_if, &peer).await.unwrap();
    host.move_link(&peer, container, "eth0").await.unwrap();
    host_if
}

fn link_json(ns: &testbed::Netns, ifname: &str) -> Value {
    ns.ip_json(&["link", "show", "dev", ifname])[0].clone()
}

/// (local, prefixlen) of every address of `family` ("inet"/"inet6") on `ifname`.
fn addrs(ns: &testbed::Netns, ifname: &str, family: &str) -> Vec<(String, u64)> {
    let v = ns.ip_json(&["addr", "show", "dev", ifname]);
    v[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["family"] == family)
        .map(|a| (a["local"].as_str().unwrap().to_string(), a["prefixlen"].as_u64().unwrap()))
        .collect()
}

fn default_routes(ns: &testbed::Netns, v6: bool) -> Vec<Value> {
    let fam = if v6 { "-6" } else { "-4" };
    let v = ns.ip_json(&[fam, "route", "show", "default"]);
    v.as_array().cloned().unwrap_or_default()
}

fn assert_configured(c: &testbed::Netns, cfg: &InterfaceConfig) {
    let link = link_json(c, "eth0");
    assert_eq!(link["address"], format_mac(&cfg.mac), "{link}");
    assert_eq!(link["mtu"], cfg.mtu, "{link}");
    let flags: Vec<&str> = link["flags"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert!(flags.contains(&"UP"), "eth0 not up: {link}");
    let family = if cfg.address.is_ipv4() { "inet" } else { "inet6" };
    assert_eq!(
        addrs(c, "eth0", family).into_iter().filter(|(a, _)| !a.starts_with("fe80")).collect::<Vec<_>>(),
        vec![(cfg.address.to_string(), u64::from(cfg.prefix_len))],
        "addresses of eth0"
    );
    let lo = link_json(c, "lo");
    assert!(lo["flags"].as_array().unwrap().iter().any(|f| f == "UP"), "lo not up: {lo}");
    if let Some(gw) = cfg.gateway {
        let routes = default_routes(c, gw.is_ipv6());
        assert_eq!(routes.len(), 1, "one default route: {routes:?}");
        assert_eq!(routes[0]["gateway"], gw.to_string(), "{routes:?}");
        assert_eq!(routes[0]["dev"], "eth0", "{routes:?}");
    }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_bogus_netns_gives_clear_errors() {
    setup();
    let missing = Path::new("/proc/999999999/ns/net");
    let err = Netns::open(missing).await.unwrap_err();
    assert!(matches!(err, NetlinkError::NetnsNotFound { .. }), "{err:?}");
    assert_eq!(err.to_string(), "netns /proc/999999999/ns/net does not exist: is the container running?");

    let err = Netns::open(Path::new("/var/run/netns/no-such-netns-nl")).await.unwrap_err();
    assert!(matches!(err, NetlinkError::NetnsNotFound { .. }), "{err:?}");

    let file = tempfile::NamedTempFile::new().unwrap();
    let err = Netns::open(file.path()).await.unwrap_err();
    assert!(matches!(err, NetlinkError::NotANetns { .. }), "{err:?}");
    assert!(err.to_string().contains("is not a network namespace"), "{err}");

    let err = Netns::open(Path::new("/proc/self/ns/uts")).await.unwrap_err();
    assert!(matches!(err, NetlinkError::NotANetns { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_errors_name_link_and_netns() {
    let (h, c, host, container) = namespaces().await;
    let label = h.path().display().to_string();

    let a = testbed::unique_name("va");
    let b = testbed::unique_name("vb");
    host.create_veth(&a, &b).await.unwrap();
    let err = host.create_veth(&a, &testbed::unique_name("vx")).await.unwrap_err();
    assert!(matches!(&err, NetlinkError::AlreadyExists { name, .. } if *name == a), "{err:?}");
    assert_eq!(err.to_string(), format!("link {a} already exists in netns {label}"));
    let err = host.create_veth(&testbed::unique_name("vx"), &b).await.unwrap_err();
    assert!(matches!(&err, NetlinkError::AlreadyExists { name, .. } if *name == b), "{err:?}");

    // Moving onto a name the container already has.
    let y = testbed::unique_name("vy");
    let z = testbed::unique_name("vz");
    host.create_veth(&y, &z).await.unwrap();
    host.move_link(&b, &container, "eth0").await.unwrap();
    let err = host.move_link(&z, &container, "eth0").await.unwrap_err();
    assert!(matches!(err, NetlinkError::AlreadyExists { .. }), "{err:?}");
    assert!(err.to_string().contains(&c.path().display().to_string()), "{err}");
    assert!(h.has_link(&z), "a failed move leaves the link where it was");

    let err = host.set_up("nosuchlink0").await.unwrap_err();
    assert!(matches!(err, NetlinkError::LinkNotFound { .. }), "{err:?}");
    assert_eq!(err.to_string(), format!("link nosuchlink0 not found in netns {label}"));
    let err = container.configure_interface("eth9", &cfg4("198.19.0.10", None)).await.unwrap_err();
    assert!(matches!(err, NetlinkError::LinkNotFound { .. }), "{err:?}");
    let err = host.move_link("nosuchlink0", &container, "eth1").await.unwrap_err();
    assert!(matches!(err, NetlinkError::LinkNotFound { .. }), "{err:?}");
    let err = container.disable_tx_checksum("eth9").await.unwrap_err();
    assert!(matches!(err, NetlinkError::LinkNotFound { .. }), "{err:?}");

    let err = host.create_veth("a-name-longer-than-15", "x").await.unwrap_err();
    assert!(matches!(err, NetlinkError::InvalidName { .. }), "{err:?}");

    let mut bad = cfg4("198.19.0.10", Some("fd00::1"));
    let err = container.configure_interface("eth0", &bad).await.unwrap_err();
    assert!(matches!(err, NetlinkError::InvalidConfig { .. }), "{err:?}");
    bad = InterfaceConfig { prefix_len: 33, ..cfg4("198.19.0.10", None) };
    assert!(matches!(container.configure_interface("eth0", &bad).await, Err(NetlinkError::InvalidConfig { .. })));
    bad = InterfaceConfig { mac: [0x01, 0, 0x5e, 0, 0, 1], ..cfg4("198.19.0.10", None) };
    assert!(matches!(container.configure_interface("eth0", &bad).await, Err(NetlinkError::InvalidConfig { .. })));

    // A kernel refusal carries the errno and says what failed where.
    let err = container.set_mtu("eth0", 10).await.unwrap_err();
    assert!(matches!(err, NetlinkError::Request { .. }), "{err:?}");
    assert!(err.raw_os_error().is_some());
    assert!(err.to_string().starts_with(&format!("set MTU on link eth0 in netns {}", c.path().display())), "{err}");
    container.set_mtu("eth0", 1300).await.unwrap();
    assert_eq!(link_json(&c, "eth0")["mtu"], 1300);
    container.set_up("eth0").await.unwrap();
    assert!(container.interface_state("eth0").await.unwrap().unwrap().up);

    host.delete_link(&a).await.unwrap();
    host.delete_link(&y).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_handle_acts_in_its_own_namespace() {
    let (h, c, host, container) = namespaces().await;
    let agent = Netns::current().await.unwrap();
    assert_eq!(agent.path(), None);

    let a = testbed::unique_name("vi");
    let b = testbed::unique_name("vj");
    container.create_veth(&a, &b).await.unwrap();
    assert!(c.has_link(&a) && c.has_link(&b), "created in the container netns");
    assert!(!h.has_link(&a) && !h.has_link(&b), "not visible in the host netns");
    assert!(!host.link_exists(&a).await.unwrap());
    assert!(!agent.link_exists(&a).await.unwrap(), "not in the agent's own netns either");
    assert!(container.link_exists(&a).await.unwrap());

    // The same names can exist in both namespaces at once.
    host.create_veth(&a, &b).await.unwrap();
    assert!(h.has_link(&a));
    host.set_mtu(&a, 1234).await.unwrap();
    assert_eq!(link_json(&h, &a)["mtu"], 1234);
    assert_ne!(link_json(&c, &a)["mtu"], 1234, "the container's link of that name is untouched");

    // Moving from the agent's own netns and back (current() works as a move target).
    let x = testbed::unique_name("vk");
    let y = testbed::unique_name("vl");
    host.create_veth(&x, &y).await.unwrap();
    host.move_link(&y, &agent, &y).await.unwrap();
    assert!(agent.link_exists(&y).await.unwrap());
    assert!(!h.has_link(&y));
    agent.move_link(&y, &host, &y).await.unwrap();
    assert!(!agent.link_exists(&y).await.unwrap());
    assert!(h.has_link(&y));

    assert!(container.delete_link(&a).await.unwrap());
    assert!(host.delete_link(&a).await.unwrap());
    assert!(host.delete_link(&x).await.unwrap());
    assert!(!c.has_link(&b) && !h.has_link(&b) && !h.has_link(&y));
}

/// The namespace of the calling thread, as `net:[inode]`.
fn thread_netns() -> String {
    std::fs::read_link("/proc/thread-self/ns/net").unwrap().display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_plugs_on_a_busy_multithread_runtime() {
    setup();
    let own_netns = thread_netns();
    let h = testbed::Netns::new("nlh");
    let host = Netns::open(&h.path()).await.unwrap();

    // Other work going on meanwhile.
    let ticks = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut busy = Vec::new();
    for _ in 0..8 {
        let (ticks, stop) = (ticks.clone(), stop.clone());
        busy.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(1)).await;
                ticks.fetch_add(1, Ordering::Relaxed);
                seen.push(thread_netns());
            }
            seen
        }));
    }

    const N: usize = 6;
    let containers: Vec<testbed::Container> = (0..N).map(|_| testbed::Container::new("nlc")).collect();
    let mut plugs = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        let host = host.clone();
        let path = c.path();
        plugs.push(tokio::spawn(async move {
            let container = Netns::open(&path).await.unwrap();
            let host_if = plugged_pair(&host, &container).await;
            let cfg = cfg4(&format!("198.19.1.{}", 10 + i), Some("198.19.0.1"));
            container.configure_interface("eth0", &cfg).await.unwrap();
            container.disable_tx_checksum("eth0").await.unwrap();
            (host_if, cfg)
        }));
    }
    let mut plugged = Vec::new();
    for p in plugs {
        plugged.push(p.await.expect("plug task"));
    }
    for (c, (host_if, cfg)) in containers.iter().zip(&plugged) {
        assert_configured(c, cfg);
        assert!(h.has_link(host_if));
        assert!(c.run(&["ethtool", "-k", "eth0"]).contains("tx-checksumming: off"));
    }
    // Checked on whatever workers run these: no runtime thread ever changed namespace.
    let mut checks = Vec::new();
    for _ in 0..64 {
        checks.push(tokio::spawn(async { thread_netns() }));
        checks.push(tokio::task::spawn_blocking(thread_netns));
    }
    for check in checks {
        assert_eq!(check.await.unwrap(), own_netns, "a runtime thread changed namespace");
    }
    stop.store(true, Ordering::Relaxed);
    for b in busy {
        let seen = b.await.unwrap();
        assert!(seen.iter().all(|ns| *ns == own_netns), "a busy task ran in another namespace");
    }
    assert!(ticks.load(Ordering::Relaxed) > 0, "the other tasks made progress");
    for (host_if, _) in &plugged {
        assert!(host.delete_link(host_if).await.unwrap());
    }
    for c in &containers {
        assert!(!c.has_link("eth0"));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn works_on_a_current_thread_runtime() {
    let (_h, c, host, container) = namespaces().await;
    let host_if = plugged_pair(&host, &container).await;
    let cfg = cfg4("198.19.0.10", Some("198.19.0.1"));
    container.configure_interface("eth0", &cfg).await.unwrap();
    container.disable_tx_checksum("eth0").await.unwrap();
    assert_configured(&c, &cfg);
    assert!(host.delete_link(&host_if).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_by_container_pid() {
    setup();
    let c = testbed::Container::new("nlc");
    // `ip netns exec` execs the command: the child's pid is the process inside the netns.
    let mut child = c.command(&["sleep", "30"]).spawn().unwrap();
    let path = format!("/proc/{}/ns/net", child.id());
    testbed::wait_until(Duration::from_secs(5), "sleep to enter the netns", || {
        std::fs::read_link(&path).ok() != std::fs::read_link("/proc/self/ns/net").ok()
    });
    let container = Netns::open(Path::new(&path)).await.unwrap();
    assert_eq!(container.path(), Some(Path::new(&path)));
    let a = testbed::unique_name("vq");
    container.create_veth(&a, &testbed::unique_name("vr")).await.unwrap();
    assert!(c.has_link(&a), "created in the container found by pid");
    child.kill().unwrap();
    child.wait().unwrap();
    // The process is gone: its /proc entry too, but the open handle still works.
    let err = Netns::open(Path::new(&path)).await.unwrap_err();
    assert!(matches!(err, NetlinkError::NetnsNotFound { .. }), "{err:?}");
    assert!(container.delete_link(&a).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_outlives_the_netns_name() {
    setup();
    let c = testbed::Container::new("nlc");
    let container = Netns::open(&c.path()).await.unwrap();
    let a = testbed::unique_name("vm");
    container.create_veth(&a, &testbed::unique_name("vn")).await.unwrap();
    drop(c); // `ip netns del`: the name goes, the namespace lives on while the handle holds it
    assert!(container.link_exists(&a).await.unwrap());
    let state = container.interface_state("lo").await.unwrap().unwrap();
    assert!(state.addresses.contains(&(IpAddr::from([127, 0, 0, 1]), 8)), "{state:?}");
}

#[tokio::test]
async fn deleting_a_containers_namespace_announces_its_veths_deletion_in_the_host_namespace() {
    let (_h, c, host, container) = namespaces().await;
    let mut deletions = host.link_deletions().await.unwrap();
    let host_if = testbed::unique_name("vh");
    host.create_veth_into(&host_if, "eth0", &container).await.unwrap();
    // A link that comes and goes by itself is announced too; a carrier change is not a deletion.
    let other = testbed::unique_name("vo");
    let other_peer = testbed::unique_name("vq");
    host.create_veth(&other, &other_peer).await.unwrap();
    host.set_up(&other).await.unwrap();
    assert!(host.delete_link(&other).await.unwrap());
    let first = tokio::time::timeout(Duration::from_secs(5), deletions.next()).await.unwrap().unwrap();
    assert!(first == other || first == other_peer, "{first}");
    // The container goes: its namespace, and the veth with it.
    drop(container);
    drop(c);
    let deleted = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match deletions.next().await {
                Some(name) if name == host_if => return name,
                Some(_) => {}
                None => panic!("the event stream ended"),
            }
        }
    })
    .await
    .expect("the host end's deletion was announced within 5 s");
    assert_eq!(deleted, host_if);
}
