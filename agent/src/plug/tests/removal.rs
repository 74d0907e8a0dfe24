//! What takes endpoints away: unplug, the start-up recovery and the dead-container reaper.

use super::*;

#[tokio::test]
async fn unplug_of_a_container_takes_all_its_interfaces_and_only_its_own() {
    let (w, records, switch, links) = red_world();
    let p = w.plugger(&records, &switch, &links);
    for (c, i) in [("c1", "eth0"), ("c1", "eth1"), ("c2", "eth0")] {
        p.plug(w.request(c, i, None)).await.unwrap();
    }
    assert!(p.unplug("c1", Some("eth1")).await.unwrap());
    assert!(!links.has(&container_port_name("c1", "eth1")));
    assert!(links.has(&container_port_name("c1", "eth0")));
    assert!(p.unplug("c1", None).await.unwrap());
    assert!(!p.unplug("c1", None).await.unwrap(), "nothing left to unplug");
    let left: Vec<String> = records.endpoints().into_iter().map(|e| e.container_id).collect();
    assert_eq!(left, ["c2"]);
    assert_eq!(records.claims().len(), 1);
    assert!(matches!(p.unplug("c/1", None).await, Err(PlugError::BadRequest(_))));
    assert!(matches!(p.unplug("c1", Some("Eth.0")).await, Err(PlugError::BadRequest(_))));
}

#[tokio::test]
async fn recovery_removes_only_what_is_provably_this_machines() {
    let w = World::new();
    let records = FakeRecords::with_tenant(red());
    let switch = FakeSwitch { others: BTreeSet::from(["foreign0".to_owned()]), ..Default::default() };
    let links = FakeLinks::default();
    let p = w.plugger(&records, &switch, &links);
    p.plug(w.request("healthy", "eth0", None)).await.unwrap();
    // A plug interrupted between its port and its record: port, veth and claim, no record.
    p.plug(w.request("half", "eth0", None)).await.unwrap();
    let key = records.0.lock().unwrap().endpoints.keys().find(|k| k.contains("/half/")).cloned().unwrap();
    records.0.lock().unwrap().endpoints.remove(&key);
    // Containers of this machine that died while the agent was down: one whose port stayed
    // (its veth went with its namespace), one with a record and no port.
    p.plug(w.request("died", "eth0", None)).await.unwrap();
    links.kill(&container_port_name("died", "eth0"));
    records.put_raw("endpoints/red/gone/eth0", endpoint("gone", ME, "198.19.1.50"));
    // Records under this hostname by another machine and by an agent before machine ids,
    // with no port here: not provably ours.
    records.put_raw("endpoints/red/theirs/eth0", endpoint("theirs", "m-other", "198.19.1.51"));
    records.put_raw("endpoints/red/legacy", endpoint("legacy", "", "198.19.1.52"));
    // A veth of an interrupted plug (the agent's name form, on no bridge), and one of another tool.
    let ghost = container_port_name("ghost", "eth0");
    links.add_host_link(&ghost);
    links.add_host_link("tap1a2b3c4d-5e");

    assert_eq!(p.recover().await.unwrap(), 3, "the half plug and the two dead containers");
    assert_eq!(w.state.reaped.load(Ordering::Relaxed), 2, "the dead containers count as reaped, the half plug not");
    let left: BTreeSet<String> = records.endpoints().into_iter().map(|e| e.container_id).collect();
    assert_eq!(left, BTreeSet::from(["healthy".into(), "theirs".into(), "legacy".into()]));
    let claimed: BTreeSet<String> = records.claims().into_iter().map(|(_, c)| c.container).collect();
    assert_eq!(claimed, left, "the interrupted plug's address and the gone one's are released");
    for gone in ["half", "died"] {
        let port = container_port_name(gone, "eth0");
        assert!(!links.has(&port) && switch.find_port(&port).is_none(), "{gone}");
    }
    assert!(!links.has(&ghost), "the interrupted plug's lone veth is removed");
    assert!(links.has("tap1a2b3c4d-5e"), "another tool's veth stays");
    assert!(links.has(&container_port_name("healthy", "eth0")));
    // Nothing more to do the second time.
    assert_eq!(p.recover().await.unwrap(), 0);
    assert_eq!(w.state.reaped.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_container_whose_veth_went_away_is_reaped_once_and_counted() {
    let (w, records, switch, links) = red_world();
    let p = w.plugger(&records, &switch, &links);
    let result = p.plug(w.request("c1", "eth0", None)).await.unwrap();
    p.plug(w.request("c2", "eth0", None)).await.unwrap();
    // Its veth is still there (a carrier going down deletes nothing): not reaped.
    assert!(!p.reap(&result.port).await.unwrap());
    links.kill(&result.port);
    assert!(p.reap(&result.port).await.unwrap());
    assert!(!p.reap(&result.port).await.unwrap(), "nothing left the second time");
    assert_eq!(w.state.reaped.load(Ordering::Relaxed), 1);
    let left: Vec<String> = records.endpoints().into_iter().map(|e| e.container_id).collect();
    assert_eq!(left, ["c2"]);
    assert!(switch.find_port(&result.port).is_none());
    // The same address can be plugged again at once.
    let again = p.plug(w.request("c3", "eth0", Some(&result.ip.to_string()))).await.unwrap();
    assert_eq!(again.ip, result.ip);
    // The sweep finds what events missed; a record of another machine is never reaped.
    records.put_raw("endpoints/red/theirs/eth0", endpoint("theirs", "m-other", "198.19.1.60"));
    links.kill(&container_port_name("c2", "eth0"));
    assert_eq!(p.sweep().await.unwrap(), 1);
    assert!(!p.reap(&container_port_name("theirs", "eth0")).await.unwrap());
    assert!(records.endpoints().iter().any(|e| e.container_id == "theirs"));
}
