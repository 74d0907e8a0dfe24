//! The client across a server crash: in-flight requests fail, the replica is rebuilt.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_server_restart_and_rebuilds_replica() {
    let srv = server();
    let client = client_for(&srv).await;
    let mut events = client.events();
    let mut tx = client.transaction();
    add_bridge(&mut tx, "br-old");
    add_bridge(&mut tx, "br-keep");
    within("add bridges", client.transact(&tx)).await.expect("add bridges");
    within("replica has br-old", client.wait_until(T, |r| r.table("Bridge").len() == 2)).await.unwrap();

    // A request in flight when the server dies: a wait that blocks on the server.
    let conn = client.connection().unwrap();
    let mut blocked = Transaction::new(DB);
    blocked.wait("Bridge", vec![Condition::eq("name", "never")], vec!["name".into()], Until::NotEqual, vec![], None);
    let in_flight = tokio::spawn(async move { conn.transact(&blocked).await });
    // Sent, and held by the server: ovsdb-server counts a wait it has not answered yet as a
    // trigger (`memory/show` says `triggers:1`).
    tokio::task::block_in_place(|| {
        testbed::wait_until(T, "ovsdb-server to hold the blocking wait (memory/show: triggers:1)", || {
            srv.try_appctl(&["memory/show"]).is_ok_and(|m| m.split_whitespace().any(|kv| kv == "triggers:1"))
        })
    });
    assert!(!in_flight.is_finished(), "the blocking wait is held by the server");

    tokio::task::block_in_place(|| srv.kill());
    match within("in-flight request fails", in_flight).await.unwrap() {
        Err(TransactError::Rpc(RpcError::Disconnected { reason })) => assert!(!reason.is_empty()),
        other => panic!("in-flight request after the server died: {other:?}"),
    }
    match within("Disconnected event", events.recv()).await.unwrap() {
        ClientEvent::Disconnected { reason } => assert!(!reason.is_empty()),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    assert!(!client.is_connected());
    let mut tx = client.transaction();
    tx.comment("while down");
    match within("request while down", client.transact(&tx)).await {
        Err(TransactError::Rpc(RpcError::NotConnected { remote })) => assert!(remote.starts_with("unix:")),
        other => panic!("request while the server is down: {other:?}"),
    }
    assert!(matches!(client.connection(), Err(RpcError::NotConnected { .. })));
    // The replica keeps its last state while disconnected.
    assert_eq!(client.replica().table("Bridge").len(), 2);

    // Change the database while the server is down: br-old goes, br-offline comes.
    let offline = json!([DB,
        {"op": "insert", "table": "Interface", "row": {"name": "br-offline", "type": "internal"}, "uuid-name": "i"},
        {"op": "insert", "table": "Port", "row": {"name": "br-offline", "interfaces": ["named-uuid", "i"]}, "uuid-name": "p"},
        {"op": "insert", "table": "Bridge", "row": {"name": "br-offline", "ports": ["named-uuid", "p"]}, "uuid-name": "b"},
        {"op": "mutate", "table": DB, "where": [], "mutations": [["bridges", "insert", ["named-uuid", "b"]]]}]);
    let old = client.replica().table("Bridge").find_one("name", &Atom::from("br-old")).map(|(u, _)| u.clone());
    let old = old.expect("br-old in replica");
    let detach = json!([DB, {"op": "mutate", "table": DB, "where": [],
        "mutations": [["bridges", "delete", ["set", [["uuid", old.to_string()]]]]]}]);
    for t in [offline, detach] {
        let out = tokio::task::block_in_place(|| {
            std::process::Command::new("ovsdb-tool")
                .arg("transact")
                .arg(srv.db_path())
                .arg(t.to_string())
                .output()
                .expect("run ovsdb-tool")
        });
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && !stdout.contains("\"error\""), "ovsdb-tool transact: {stdout} {out:?}");
    }

    tokio::task::block_in_place(|| srv.restart());
    let ev = within("ReplicaReset event", events.recv()).await.unwrap();
    assert_eq!(ev, ClientEvent::ReplicaReset);
    assert!(client.is_connected());
    let names = |client: &Client| -> Vec<String> {
        let mut v: Vec<String> =
            client.replica().table("Bridge").rows().map(|(_, r)| r.get_as::<String>("name").unwrap()).collect();
        v.sort();
        v
    };
    assert_eq!(names(&client), vec!["br-keep".to_owned(), "br-offline".to_owned()], "replica rebuilt");

    // ovs-vsctl on the restarted server, and the client's own transactions, work again.
    vsctl(&srv, &["add-br", "br-vsctl"]);
    let mut tx = client.transaction();
    add_bridge(&mut tx, "br-after");
    within("transaction after reconnect", client.transact(&tx)).await.expect("transact after reconnect");
    within("replica sees both", client.wait_until(T, |r| r.table("Bridge").len() == 4)).await.unwrap();
    assert_eq!(names(&client), ["br-after", "br-keep", "br-offline", "br-vsctl"]);
    assert_replica_matches_db(&client, &client.connection().unwrap()).await;
    let listed = vsctl(&srv, &["list-br"]);
    assert_eq!(listed.lines().collect::<Vec<_>>(), ["br-after", "br-keep", "br-offline", "br-vsctl"]);
}
