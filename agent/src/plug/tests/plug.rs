//! Plugs: hand-off, reservations, checks, repeats and conflicts, failures, concurrency.

use super::*;

#[tokio::test]
async fn a_hand_off_plug_leaves_the_container_end_in_the_host_namespace_for_the_runtime() {
    let (w, records, switch, links) = red_world();
    let p = w.plugger(&records, &switch, &links);
    let req = PlugRequest { owner: Some("docker:n1".into()), ..PlugRequest::new("ep1", "red", NetnsRef::Handoff) };
    let r = p.plug(req.clone()).await.unwrap();
    let peer = overlay_api::handoff_name("ep1", "eth0");
    assert_eq!(r.handoff.as_deref(), Some(peer.as_str()));
    {
        let k = links.0.lock().unwrap();
        assert_eq!(k.peers[&r.port], (PathBuf::from(HOST_NETNS), peer.clone()));
        assert!(k.handed_off.contains(&peer));
        assert!(k.configured.is_empty(), "the runtime configures the container side, not the agent");
    }
    assert_eq!(records.endpoints()[0].owner.as_deref(), Some("docker:n1"));
    // Plugging again answers the same (a runtime retrying); the check finds it as plugged.
    assert_eq!(p.plug(req.clone()).await.unwrap(), r);
    assert_eq!(p.check_plugged(req).await.unwrap(), r);
    assert!(p.unplug("ep1", None).await.unwrap());
    assert!(!links.has(&r.port) && records.endpoints().is_empty() && records.claims().is_empty());
}

#[tokio::test]
async fn a_plug_takes_over_a_reservation_of_this_machine_and_no_one_elses() {
    let (w, records, switch, links) = red_world();
    let p = w.plugger(&records, &switch, &links);
    let reserve = |ip: &str, host: &str, machine: &str| {
        records
            .0
            .lock()
            .unwrap()
            .claims
            .insert(("red".into(), ip.parse().unwrap()), IpClaim::reservation(host, machine, ip));
    };
    reserve("198.19.1.7", HOST, ME);
    reserve("198.19.1.8", "h2", "m-other");
    let take = |ip: &str| PlugRequest { ip: Some(ip.into()), reserved: true, ..w.request(ip, "eth0", None) };
    let r = p.plug(take("198.19.1.7")).await.unwrap();
    assert_eq!(r.ip.to_string(), "198.19.1.7");
    let claim = records.claims().into_iter().find(|(ip, _)| ip.to_string() == "198.19.1.7").unwrap().1;
    assert!(!claim.is_reservation() && claim.container == "198.19.1.7");
    let err = p.plug(take("198.19.1.8")).await.unwrap_err();
    assert!(matches!(err, PlugError::Registry(RegistryError::Conflict(_))), "{err}");
    // Nothing reserved: the plug reserves it as usual.
    assert_eq!(p.plug(take("198.19.1.9")).await.unwrap().ip.to_string(), "198.19.1.9");
    // reserved without an address is refused before anything is done.
    let bad = PlugRequest { reserved: true, ..w.request("c9", "eth0", None) };
    assert!(matches!(p.plug(bad).await, Err(PlugError::BadRequest(_))));
}

#[tokio::test]
async fn a_check_says_what_differs_and_changes_nothing() {
    let (w, records, switch, links) = red_world();
    let p = w.plugger(&records, &switch, &links);
    assert!(matches!(p.check_plugged(w.request("c1", "eth0", None)).await, Err(PlugError::NotFound(_))));
    let r = p.plug(w.request("c1", "eth0", None)).await.unwrap();
    assert_eq!(p.check_plugged(w.request("c1", "eth0", None)).await.unwrap(), r);
    let err = p.check_plugged(w.request("c1", "eth0", Some("198.19.1.99"))).await.unwrap_err();
    assert!(matches!(&err, PlugError::Conflict(m) if m.contains("not 198.19.1.99")), "{err}");
    // The container's interface changed behind the agent's back.
    let netns = w.netns.path().join("c1");
    links.0.lock().unwrap().configured.get_mut(&(netns, "eth0".to_owned())).unwrap().mtu = 1500;
    let err = p.check_plugged(w.request("c1", "eth0", None)).await.unwrap_err();
    assert!(matches!(&err, PlugError::Conflict(m) if m.contains("MTU 1500")), "{err}");
    links.kill(&r.port);
    let err = p.check_plugged(w.request("c1", "eth0", None)).await.unwrap_err();
    assert!(matches!(&err, PlugError::Conflict(m) if m.contains("is gone")), "{err}");
    assert_eq!(records.endpoints().len(), 1, "a check removes nothing");
}

#[tokio::test]
async fn a_plug_again_returns_the_same_result_and_other_arguments_are_a_conflict() {
    let (w, records, switch, links) = red_world();
    let p = w.plugger(&records, &switch, &links);
    let first = p.plug(w.request("c1", "eth0", None)).await.unwrap();
    assert_eq!((first.ip.to_string().as_str(), first.mtu, first.prefix), ("198.19.1.1", 1450, 16));
    assert_eq!(first.port, container_port_name("c1", "eth0"));
    let again = p.plug(w.request("c1", "eth0", None)).await.unwrap();
    assert_eq!(again, first);
    assert_eq!((records.endpoints().len(), records.claims().len()), (1, 1));
    let ep = &records.endpoints()[0];
    assert_eq!((ep.machine_id.as_str(), ep.host.as_str(), ep.ifname.as_str()), (ME, HOST, "eth0"));
    let err = p.plug(w.request("c1", "eth0", Some("198.19.1.9"))).await.unwrap_err();
    assert!(matches!(err, PlugError::Conflict(_)), "{err}");
    // A second interface of the same container is an endpoint of its own.
    let second = p.plug(w.request("c1", "eth1", None)).await.unwrap();
    assert_ne!(second.port, first.port);
    assert_ne!(second.ip, first.ip);
    assert_eq!(records.endpoints().len(), 2);
}

#[tokio::test]
async fn a_failed_plug_leaves_nothing_and_says_which_step_failed() {
    let w = World::new();
    let records = FakeRecords::with_tenant(red());
    let switch =
        FakeSwitch { refuse: Some("could not open network device (No such device)".into()), ..Default::default() };
    let links = FakeLinks::default();
    let err = w.plugger(&records, &switch, &links).plug(w.request("c1", "eth0", None)).await.unwrap_err();
    assert!(err.to_string().contains("waiting for ovs-vswitchd"), "{err}");
    assert!(records.endpoints().is_empty() && records.claims().is_empty());
    assert!(switch.ports.lock().unwrap().is_empty());
    assert!(links.0.lock().unwrap().host.is_empty());
    assert!(w.state.in_flight.lock().unwrap().is_empty(), "no address stays in flight");
}

#[tokio::test]
async fn concurrent_plugs_of_one_tenant_get_distinct_addresses_without_listing_the_tenant() {
    let (w, records, switch, links) = red_world();
    let p = w.plugger(&records, &switch, &links);
    let requests: Vec<PlugRequest> = (0..20).map(|i| w.request(&format!("c{i}"), "eth0", None)).collect();
    let results = futures::future::join_all(requests.into_iter().map(|r| p.plug(r))).await;
    let ips: BTreeSet<IpAddr> = results.into_iter().map(|r| r.unwrap().ip).collect();
    assert_eq!(ips.len(), 20, "an address was handed out twice");
    assert_eq!(records.claims().len(), 20);
    assert_eq!(records.1.load(Ordering::Relaxed), 0, "a plug listed the tenant's reservations");
}
