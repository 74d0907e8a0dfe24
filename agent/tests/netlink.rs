//! The netlink plumbing against the real kernel: veth pairs, moving an end into a container
//! namespace, configuring it, TX checksum offload, idempotency, errors, namespaces kept apart.
//! Needs root (fails loudly otherwise). Assertions use `ip -j` and `ethtool` from the test side.

use overlay_agent::netlink::{format_mac, InterfaceConfig, Netns};
use serde_json::Value;

// A test crate root finds its modules next to itself; these live in netlink/ beside it.
#[path = "netlink/handles.rs"]
mod handles;
#[path = "netlink/veth.rs"]
mod veth;

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
