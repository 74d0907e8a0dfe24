//! The agent killed (SIGKILL) in the middle of a plug, an unplug or a reconcile pass, at a
//! different point each round: after the restart nothing is orphaned and the tunnels are the
//! ones the registry calls for.
//!
//! The kill points are states the test sees the agent reach (an address reserved, a port row
//! written, a record deleted...), each probed until it appears: a probe takes a few
//! milliseconds, so the kill lands at or shortly after that state.

use std::collections::{BTreeMap, BTreeSet};

use overlay::naming::container_port_name;
use overlay_tests::leftovers::endpoint_records;
use overlay_tests::{ip_of, ports_on, wait_child, Cluster, Pinger};
use testbed::{wait_ping, wait_until, Container};

use super::{assert_no_duplicate_rows, expect_pairs, plug, try_wait, WAIT};

/// What plugging may leave on host `i`, checked against each other: every container port on
/// br-int has an endpoint record of this host and vice versa, every address reservation of this
/// host has its endpoint, every `tap*` veth has its port, no `tmp*` veth is left, and each
/// known container has an `eth0` exactly when it has an endpoint.
fn check_no_orphans(c: &Cluster, i: usize, known: &[(&str, &Container)]) -> Result<(), String> {
    let host = &c.hosts[i];
    let me = host.name();
    let ports: BTreeMap<String, String> = ports_on(host, "br-int")
        .into_values()
        .filter(|p| p.external_ids.get("overlay-kind").map(String::as_str) == Some("container"))
        .map(|p| (p.name, p.iface_external_ids.get("iface-id").cloned().unwrap_or_default()))
        .collect();
    let endpoints = endpoint_records(c, i);
    let port_names: BTreeSet<&String> = ports.keys().collect();
    let endpoint_ports: BTreeSet<&String> = endpoints.keys().collect();
    if port_names != endpoint_ports {
        return Err(format!("container ports {port_names:?} != endpoint records {endpoint_ports:?}"));
    }
    for (key, claim) in c.etcd_kvs("ips/").into_iter().filter(|(_, v)| v["host"] == me) {
        let ip = key.rsplit('/').next().unwrap_or_default();
        if !endpoints.values().any(|e| e["container_id"] == claim["container"] && e["ip"] == ip) {
            return Err(format!("address reservation {key} ({claim}) has no endpoint"));
        }
    }
    let links = host.netns().ip_json(&["link", "show"]);
    for name in links.as_array().unwrap().iter().filter_map(|l| l["ifname"].as_str()) {
        if name.starts_with("tmp") || (name.starts_with("tap") && !ports.contains_key(name)) {
            return Err(format!("veth {name} left without a port"));
        }
    }
    for (id, ctr) in known {
        let plugged = endpoints.values().any(|e| e["container_id"] == *id);
        if ctr.has_link("eth0") != plugged {
            return Err(format!("container {id}: eth0 present = {}, endpoint = {plugged}", !plugged));
        }
    }
    Ok(())
}

#[track_caller]
fn wait_no_orphans(c: &Cluster, i: usize, known: &[(&str, &Container)], what: &str) {
    if let Err(e) = try_wait(WAIT, || check_no_orphans(c, i, known)) {
        panic!("{what}: {e}\n--- agent log (end) ---\n{}", c.agents[i].log_tail(60));
    }
}

/// Where a plug of container `id` into `red` on host 1 is killed.
#[derive(Debug, Clone, Copy)]
enum PlugKill {
    /// As soon as the CLI runs (the request may not have arrived yet).
    Sent,
    /// Once its address reservation is in etcd.
    Reserved,
    /// Once its port row is on br-int.
    Ported,
    /// Once its endpoint record is in etcd (the plug may still wait for ovs-vswitchd).
    Recorded,
}

/// Where an unplug of container `id` on host 1 is killed.
#[derive(Debug, Clone, Copy)]
enum UnplugKill {
    /// As soon as the CLI runs.
    Sent,
    /// Once its port row is gone from br-int.
    Unported,
    /// Once its veth is gone from the host.
    VethGone,
    /// Once its endpoint record is gone from etcd.
    Released,
}

/// Where host 1's agent is killed while it builds the tunnels of a tenant host 2 joins.
#[derive(Debug, Clone, Copy)]
enum JoinKill {
    /// As soon as host 2's join CLI runs.
    Sent,
    /// Once host 2's subnet lease in the tenant is in etcd.
    Leased,
    /// Once host 1 has a tunnel port of the tenant.
    Built,
}

/// Whether host 1's br-int has a port named `port`.
fn has_port(c: &Cluster, port: &str) -> bool {
    c.hosts[0].try_vsctl(&["list-ports", "br-int"]).unwrap_or_default().lines().any(|l| l == port)
}

/// Waits until a plug of `id` has reached `at`.
fn reached_plug(c: &Cluster, id: &str, at: PlugKill) {
    let port = container_port_name(id, "eth0");
    let what = format!("the plug of {id} to reach {at:?}");
    match at {
        PlugKill::Sent => {}
        PlugKill::Reserved => {
            wait_until(WAIT, &what, || c.etcd_kvs("ips/red/").values().any(|claim| claim["container"] == id))
        }
        PlugKill::Ported => wait_until(WAIT, &what, || has_port(c, &port)),
        PlugKill::Recorded => wait_until(WAIT, &what, || !c.etcd_keys(&format!("endpoints/red/{id}/")).is_empty()),
    }
}

/// Waits until an unplug of `id` has reached `at`.
fn reached_unplug(c: &Cluster, id: &str, at: UnplugKill) {
    let port = container_port_name(id, "eth0");
    let what = format!("the unplug of {id} to reach {at:?}");
    match at {
        UnplugKill::Sent => {}
        UnplugKill::Unported => wait_until(WAIT, &what, || !has_port(c, &port)),
        UnplugKill::VethGone => wait_until(WAIT, &what, || !c.hosts[0].netns().has_link(&port)),
        UnplugKill::Released => wait_until(WAIT, &what, || c.etcd_keys(&format!("endpoints/red/{id}/")).is_empty()),
    }
}

/// Waits until host 2's join of `tenant` has got as far as `at` on host 1.
fn reached_join(c: &Cluster, tenant: &str, at: JoinKill) {
    let what = format!("host 2's join of {tenant} to reach {at:?}");
    match at {
        JoinKill::Sent => {}
        JoinKill::Leased => wait_until(WAIT, &what, || {
            c.etcd_kvs(&format!("subnets/{tenant}/")).values().any(|l| l["host"] == c.hosts[1].name())
        }),
        JoinKill::Built => {
            wait_until(WAIT, &what, || super::tunnel_pairs(c, &c.hosts[0]).iter().any(|(_, t)| t == tenant))
        }
    }
}

#[test]
fn agent_killed_mid_plug_unplug_or_reconcile_converges_without_orphans() {
    let mut c = Cluster::start(2, &[]);
    c.agents[0].cli_ok(&["tenant", "create", "red", "--vni", "3501", "--cidr", "198.19.0.0/16"]);
    let (a0, b0) = (Container::new("fk"), Container::new("fk"));
    plug(&c.agents[0], "k-a", "red", &a0);
    let ip_b = ip_of(&plug(&c.agents[1], "k-b", "red", &b0));
    wait_ping(&a0, &ip_b, WAIT);
    // Pinging from a container plugged before the kills, through all of them.
    let pinger = Pinger::start(&a0, &ip_b);

    const PLUG_KILLS: [PlugKill; 4] = [PlugKill::Sent, PlugKill::Reserved, PlugKill::Ported, PlugKill::Recorded];
    const UNPLUG_KILLS: [UnplugKill; 4] =
        [UnplugKill::Sent, UnplugKill::Unported, UnplugKill::VethGone, UnplugKill::Released];
    const ROUNDS: usize = 10;
    let victims: Vec<(String, Container)> = (0..ROUNDS).map(|i| (format!("k-v{i}"), Container::new("fk"))).collect();
    for (i, (id, ctr)) in victims.iter().enumerate() {
        let known: Vec<(&str, &Container)> = vec![("k-a", &a0), (id.as_str(), ctr)];
        let ns = ctr.path().display().to_string();
        // Mid-plug: the CLI is in flight when the agent dies.
        let at = PLUG_KILLS[i % PLUG_KILLS.len()];
        let cli = c.agents[0].spawn_cli(&["plug", id, "--tenant", "red", "--netns", &ns]);
        reached_plug(&c, id, at);
        c.agents[0].kill();
        wait_child(cli);
        c.agents[0].restart();
        wait_no_orphans(&c, 0, &known, &format!("after a kill in a plug, at {at:?} (round {i})"));
        // The same container plugs fine afterwards, and talks.
        plug(&c.agents[0], id, "red", ctr);
        c.wait_ping(ctr, &ip_b);

        // Mid-unplug.
        let at = UNPLUG_KILLS[(i / PLUG_KILLS.len() + i) % UNPLUG_KILLS.len()];
        let cli = c.agents[0].spawn_cli(&["unplug", id]);
        reached_unplug(&c, id, at);
        c.agents[0].kill();
        wait_child(cli);
        c.agents[0].restart();
        wait_no_orphans(&c, 0, &known, &format!("after a kill in an unplug, at {at:?} (round {i})"));
        c.agents[0].cli_ok(&["unplug", id]);
        wait_no_orphans(&c, 0, &known, "after unplugging again");
        assert!(!ctr.has_link("eth0"));
    }

    // While containers are plugged and unplugged beside it, a single echo may be lost now and
    // then (the userspace datapath, see assert_no_outage); never more.
    pinger.stop().assert_no_outage("ping beside interrupted plugs and unplugs");

    // Mid-reconcile: host 2 joins a tenant host 1 is in, and host 1's agent dies while it
    // builds the tunnel. After the restart host 1 has exactly the tunnels the registry calls
    // for.
    let pinger = Pinger::start(&a0, &ip_b);
    let mut want = vec![(1, "red")];
    let tenants: Vec<String> = (0..4).map(|i| format!("t{i}")).collect();
    let kills = [JoinKill::Sent, JoinKill::Leased, JoinKill::Built, JoinKill::Leased];
    for (i, (t, at)) in tenants.iter().zip(kills).enumerate() {
        c.agents[1].cli_ok(&["tenant", "create", t, "--vni", &(3510 + i).to_string(), "--cidr", "198.19.0.0/16"]);
        c.agents[0].cli_ok(&["tenant", "join", t]);
        let cli = c.agents[1].spawn_cli(&["tenant", "join", t]);
        reached_join(&c, t, at);
        c.agents[0].kill();
        wait_child(cli);
        c.agents[0].restart();
        c.agents[1].cli_ok(&["tenant", "join", t]);
        want.push((1, t.as_str()));
        expect_pairs(&c, 0, &want);
        assert_no_duplicate_rows(&c.hosts[0]);
    }
    wait_no_orphans(&c, 0, &[("k-a", &a0)], "at the end");
    let repaired = c.agents[0].logs().matches("removing a container interface at start").count();
    eprintln!("{repaired} interrupted plugs or unplugs were rolled back at a restart");
    pinger.stop().assert_no_loss("ping across agents killed mid-reconcile");
}
