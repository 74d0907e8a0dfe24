//! ovs-vsctl and the client see each other's writes.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_created_by_client_is_visible_to_ovs_vsctl() {
    let (srv, client, mut tx, br) = client_adding_bridge("br-client").await;
    let i = tx.len();
    tx.update(
        "Bridge",
        vec![Condition::eq("name", "br-client")],
        Row::new().with("external_ids", Value::map([("owner", "test")])),
    );
    let out = within("create br-client", client.transact(&tx)).await.expect("create br-client");
    assert_eq!(out.count(i), Some(1), "later operations see the rows inserted earlier in the transaction");
    assert!(out.uuid(&br).is_some());
    let listed = vsctl(&srv, &["list-br"]);
    assert!(listed.lines().any(|l| l == "br-client"), "ovs-vsctl list-br: {listed}");
    assert_eq!(vsctl(&srv, &["list-ports", "br-client"]), "", "the bridge's own port is not listed");
    assert_eq!(vsctl(&srv, &["get", "Port", "br-client", "name"]), "br-client");
    vsctl(&srv, &["br-exists", "br-client"]);
    assert_eq!(vsctl(&srv, &["get", "Interface", "br-client", "type"]), "internal");
    assert_eq!(vsctl(&srv, &["br-get-external-id", "br-client", "owner"]), "test");

    // And the other way: what ovs-vsctl writes lands in the replica.
    vsctl(&srv, &["add-port", "br-client", "vp1", "--", "set", "Interface", "vp1", "type=internal"]);
    vsctl(&srv, &["br-set-external-id", "br-client", "k", "v"]);
    within(
        "replica sees vp1 and k=v",
        client.wait_until(T, |r| {
            r.table("Port").find_one("name", &Atom::from("vp1")).is_some()
                && r.table("Bridge").rows().any(|(_, b)| b.map_str("external_ids", "k") == Some("v"))
        }),
    )
    .await
    .expect("replica sees ovs-vsctl's changes");
    assert_replica_matches_db(&client, &client.connection().unwrap()).await;
}
