//! A peer that crashes and comes back from a new underlay address.

use std::collections::BTreeMap;

use overlay_tests::{ip_of, ofport_of, tunnel_sources, tunnels, Cluster};
use testbed::{wait_ping, wait_until, Container, TestHost};

use super::{plug, WAIT};

#[test]
fn peer_returning_with_a_new_underlay_ip_gets_its_tunnels_updated_in_place() {
    // Losing the tunnels of a peer whose lease expires is tested in agent_mesh.rs; here the
    // peer comes back (before its 10 s lease expires) from a new underlay address.
    let mut c = Cluster::start(3, &["--host-ttl", "10"]);
    c.agents[0].cli_ok(&["tenant", "create", "red", "--vni", "3401", "--cidr", "198.19.0.0/16"]);
    c.agents[1].cli_ok(&["tenant", "join", "red"]);
    let (c0, c2) = (Container::new("fu"), Container::new("fu"));
    let ip0 = ip_of(&plug(&c.agents[0], "u-0", "red", &c0));
    let ip2 = ip_of(&plug(&c.agents[2], "u-2", "red", &c2));
    c.wait_ping(&c0, &ip2);
    let old = c.hosts[2].underlay_ip();
    let o = old.octets();
    let new = std::net::Ipv4Addr::new(o[0], o[1], o[2], 200 + o[3]);
    let ids = |h: &TestHost| -> BTreeMap<String, (String, String)> {
        tunnels(h).into_iter().map(|(n, p)| (n, (p.uuid, p.iface_uuid))).collect()
    };
    let before: Vec<_> = (0..2).map(|i| ids(&c.hosts[i])).collect();
    let before_own: BTreeMap<_, _> =
        tunnels(&c.hosts[2]).into_iter().map(|(n, p)| (n, (p.uuid, p.iface_uuid))).collect();
    assert_eq!(before_own.len(), 1, "one port for the one tenant");

    // The machine crashes and comes back with another address.
    c.agents[2].kill();
    let h2 = &c.hosts[2];
    // (Old one first: deleting a primary address takes its secondaries with it.)
    h2.netns().ip(&["addr", "del", &format!("{old}/24"), "dev", "br-phy"]);
    h2.netns().ip(&["addr", "add", &format!("{new}/24"), "dev", "br-phy"]);
    c.agents[2].set_arg("--underlay-ip", &new.to_string());
    c.agents[2].restart();

    let h = &c.hosts;
    for i in 0..2 {
        wait_until(WAIT, &format!("{}'s flows to host 3 to follow its new address", h[i].name()), || {
            let port = ofport_of(&h[i], "tun-vx-3401").expect("the tenant port");
            let sources = tunnel_sources(&h[i], port);
            sources.contains(&new.to_string()) && !sources.contains(&old.to_string())
        });
        assert_eq!(ids(&h[i]), before[i], "tunnel rows on {} changed for a peer's new address", h[i].name());
    }
    wait_until(WAIT, "host 3's own tunnels to use its new address", || {
        tunnels(&h[2]).values().all(|t| t.options["local_ip"] == new.to_string())
    });
    let after_own: BTreeMap<_, _> = tunnels(&h[2]).into_iter().map(|(n, p)| (n, (p.uuid, p.iface_uuid))).collect();
    assert_eq!(after_own, before_own, "host 3's tunnel rows were replaced, not updated");
    let underlays = c.etcd_keys("underlays/");
    assert!(underlays.iter().any(|k| k.ends_with(&format!("/{new}"))), "{underlays:?}");
    assert!(!underlays.iter().any(|k| k.ends_with(&format!("/{old}"))), "the old underlay claim stayed: {underlays:?}");
    let peers = c.agents[0].status()["peers"].clone();
    assert!(
        peers.as_array().unwrap().iter().any(|p| p["host"] == h[2].name() && p["underlay_ip"] == new.to_string()),
        "{peers}"
    );
    // Traffic flows over the new address (the old one is gone from the host).
    wait_ping(&c0, &ip2, WAIT);
    wait_ping(&c2, &ip0, WAIT);
}
