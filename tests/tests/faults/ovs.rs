//! ovsdb-server crashing (with the database changed behind the agent's back while it is down)
//! and ovs-vswitchd crashing.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

use overlay_tests::{ip_of, ports_on, tunnels, AgentProc, Cluster, Pinger};
use testbed::{wait_ping, wait_until, Container, TestHost};

use super::{assert_no_duplicate_rows, plug, WAIT};

/// (Port uuid, Interface uuid) of every port on br-int and br-tun. (`_version` cannot be
/// compared across an ovsdb-server restart: the server makes new ones when it loads the file.)
fn row_ids(host: &TestHost) -> BTreeMap<String, (String, String)> {
    ["br-int", "br-tun"].iter().flat_map(|b| ports_on(host, b)).map(|(n, p)| (n, (p.uuid, p.iface_uuid))).collect()
}

fn ovsdb_connected(a: &AgentProc) -> bool {
    a.status()["host"]["ovsdb_connected"] == true
}

#[test]
fn ovsdb_server_and_vswitchd_restarts_are_survived() {
    let c = Cluster::start(2, &[]);
    let (a, h) = (&c.agents, &c.hosts);
    a[0].cli_ok(&["tenant", "create", "red", "--vni", "3301", "--cidr", "198.19.0.0/16"]);
    let (c0, c1) = (Container::new("fo"), Container::new("fo"));
    let ip0 = ip_of(&plug(&a[0], "o-0", "red", &c0));
    let ip1 = ip_of(&plug(&a[1], "o-1", "red", &c1));
    c.wait_ping(&c0, &ip1);
    let before = row_ids(&h[0]);

    // 1. ovsdb-server crashes and comes back (same database): forwarding never stops, the
    // agent reconnects, finds everything in place and writes nothing.
    let pinger = Pinger::start(&c0, &ip1);
    pinger.wait_replies(5);
    let counters = a[0].status()["counters"].clone();
    h[0].ovsdb().kill();
    wait_until(WAIT, "status to show OVSDB disconnected", || !ovsdb_connected(&a[0]));
    h[0].ovsdb().restart();
    wait_until(WAIT, "status to show OVSDB connected again", || ovsdb_connected(&a[0]));
    wait_until(WAIT, "a reconcile after the reconnect", || {
        a[0].status()["counters"]["reconciles"].as_u64() > counters["reconciles"].as_u64()
    });
    let now = a[0].wait_pass_after_now()["counters"].clone();
    assert_eq!(row_ids(&h[0]), before, "rows were replaced after the ovsdb-server restart");
    assert_eq!(now["ovsdb_transactions"], counters["ovsdb_transactions"], "the agent wrote after the reconnect");
    assert_no_duplicate_rows(&h[0]);
    pinger.stop().assert_no_loss("ping across an ovsdb-server restart");

    // 2. While ovsdb-server is down, the tunnel port is removed from its database file: after
    // the restart the agent's fresh replica lacks it and the agent builds it again (once).
    let tunnel = tunnels(&h[0]).into_values().next().expect("a tunnel");
    h[0].ovsdb().kill();
    wait_until(WAIT, "status to show OVSDB disconnected", || !ovsdb_connected(&a[0]));
    let txn = serde_json::json!(["Open_vSwitch", {"op": "mutate", "table": "Bridge", "where": [["name", "==", "br-tun"]],
        "mutations": [["ports", "delete", ["uuid", tunnel.uuid]]]}]);
    let db = h[0].ovsdb().db_path().display().to_string();
    let out = Command::new("ovsdb-tool").args(["transact", &db, &txn.to_string()]).output().expect("ovsdb-tool");
    assert!(out.status.success(), "ovsdb-tool transact: {}", String::from_utf8_lossy(&out.stderr));
    h[0].ovsdb().restart();
    wait_until(WAIT, "the tunnel removed offline to be rebuilt", || {
        tunnels(&h[0]).get(&tunnel.name).is_some_and(|t| t.uuid != tunnel.uuid && t.options == tunnel.options)
    });
    assert_no_duplicate_rows(&h[0]);
    wait_ping(&c0, &ip1, WAIT);
    // The monitors are live again: a port an operator deletes now comes back too.
    h[0].vsctl(&["del-port", "br-tun", &tunnel.name]);
    wait_until(WAIT, "the deleted tunnel to come back", || tunnels(&h[0]).contains_key(&tunnel.name));
    wait_ping(&c0, &ip1, WAIT);

    // 3. ovs-vswitchd crashes and restarts: the database is untouched, so the agent has
    // nothing to do; containers on both sides talk again as soon as the datapath is back.
    let sent = a[0].status()["counters"]["ovsdb_transactions"].as_u64().unwrap();
    let rows = row_ids(&h[0]);
    h[0].vswitchd().kill();
    let down = Instant::now();
    h[0].vswitchd().restart();
    wait_ping(&c0, &ip1, WAIT);
    wait_ping(&c1, &ip0, WAIT);
    eprintln!("traffic back {:?} after ovs-vswitchd was killed", down.elapsed());
    let pinger = Pinger::start(&c0, &ip1);
    pinger.stop().assert_no_loss("ping after the ovs-vswitchd restart");
    assert!(ovsdb_connected(&a[0]));
    let now = a[0].wait_pass_after_now();
    assert_eq!(now["counters"]["ovsdb_transactions"].as_u64().unwrap(), sent, "the agent wrote to OVSDB");
    assert_eq!(row_ids(&h[0]).keys().collect::<Vec<_>>(), rows.keys().collect::<Vec<_>>());
    assert_no_duplicate_rows(&h[0]);
}
