//! The client's replica: right after 1,000 concurrent changes, owned transactions, wait_until.

use super::*;

/// A tiny deterministic PRNG (no dependency): xorshift64*.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `changes` changes by one writer on ports `<prefix>-N` of bridge `br-burst`, in transactions of
/// up to 10 operations: inserts, tag updates, external_ids map inserts/deletes, deletes.
async fn burst(conn: Connection, prefix: String, seed: u64, changes: usize) {
    let mut rng = Rng(seed);
    let mut live: Vec<(String, Uuid)> = Vec::new();
    let mut made = 0;
    let mut serial = 0;
    while made < changes {
        let mut tx = Transaction::new(DB);
        let mut inserted = Vec::new();
        let mut deleted = Vec::new();
        let batch = 1 + rng.below(10) as usize;
        for _ in 0..batch.min(changes - made) {
            let pick = rng.below(100);
            let target = (!live.is_empty()).then(|| live[rng.below(live.len() as u64) as usize].clone());
            match (pick, target) {
                (0..=29, _) | (_, None) => {
                    serial += 1;
                    let name = format!("{prefix}-{serial}");
                    let iface = tx.insert("Interface", Row::new().with("name", name.as_str()));
                    let port = tx.insert(
                        "Port",
                        Row::new()
                            .with("name", name.as_str())
                            .with("interfaces", Value::set([iface]))
                            .with("external_ids", Value::map([("k0", name.as_str())])),
                    );
                    tx.mutate(
                        "Bridge",
                        vec![Condition::eq("name", "br-burst")],
                        vec![Mutation::insert("ports", Value::set([port.clone()]))],
                    );
                    inserted.push((name, port));
                }
                (30..=54, Some((name, _))) => {
                    let tag = if rng.below(5) == 0 { Value::empty_set() } else { Value::set([rng.below(4096) as i64]) };
                    tx.update("Port", vec![Condition::eq("name", name.as_str())], Row::new().with("tag", tag));
                }
                (55..=74, Some((name, _))) => {
                    let key = format!("k{}", rng.below(5));
                    let val = format!("v{}", rng.next());
                    // insert keeps an existing key: delete it first so the new value lands.
                    tx.mutate(
                        "Port",
                        vec![Condition::eq("name", name.as_str())],
                        vec![
                            Mutation::delete("external_ids", Value::set([key.as_str()])),
                            Mutation::insert("external_ids", Value::map([(key.as_str(), val.as_str())])),
                        ],
                    );
                }
                (75..=86, Some((name, _))) => {
                    let key = format!("k{}", rng.below(5));
                    tx.mutate(
                        "Port",
                        vec![Condition::eq("name", name.as_str())],
                        vec![Mutation::delete("external_ids", Value::set([key.as_str()]))],
                    );
                }
                (_, Some((name, uuid))) => {
                    if deleted.contains(&name) {
                        continue;
                    }
                    tx.mutate(
                        "Bridge",
                        vec![Condition::eq("name", "br-burst")],
                        vec![Mutation::delete("ports", Value::set([uuid.clone()]))],
                    );
                    deleted.push(name);
                }
            }
            made += 1;
        }
        if tx.is_empty() {
            continue;
        }
        let out = within("burst transaction", conn.transact(&tx)).await.unwrap_or_else(|e| panic!("burst: {e}"));
        live.retain(|(n, _)| !deleted.contains(n));
        for (name, nu) in inserted {
            live.push((name, out.uuid(&nu).expect("inserted").clone()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_matches_database_after_1000_changes() {
    let srv = server();
    let client = client_for(&srv).await;
    let writer = connect(&srv.unix_remote()).await;
    let mut tx = Transaction::new(DB);
    add_bridge(&mut tx, "br-burst");
    within("br-burst", writer.transact(&tx)).await.expect("br-burst");
    let seq0 = client.replica().seqno();

    // 1000 changes: four writers of 250 on their own ports, concurrently, on one session.
    let tasks: Vec<_> = (0..4u64)
        .map(|w| tokio::spawn(burst(writer.clone(), format!("w{w}"), 0x9e37_79b9_7f4a_7c15 ^ (w + 1), 250)))
        .collect();
    for t in tasks {
        within("burst writer", t).await.expect("burst writer panicked");
    }
    // A marker written last: once the replica shows it, every earlier change was applied.
    let mut tx = Transaction::new(DB);
    tx.update(DB, vec![], Row::new().with("external_ids", Value::map([("burst", "done")])));
    within("marker", writer.transact(&tx)).await.expect("marker");
    within(
        "replica settles",
        client
            .wait_until(T, |r| r.table(DB).rows().any(|(_, row)| row.map_str("external_ids", "burst") == Some("done"))),
    )
    .await
    .expect("replica shows the marker");
    assert!(client.replica().seqno() > seq0 + 10, "the replica applied many updates");
    assert!(client.replica().table("Port").len() > 20, "the burst left ports behind");
    assert_replica_matches_db(&client, &writer).await;
    assert_replica_matches_db(&client, &client.connection().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_transaction_gives_the_same_outcome() {
    let (_srv, client, mut tx, br) = client_adding_bridge("br-o").await;
    let sel = tx.select("Bridge", vec![Condition::eq("name", "br-o")], Some(vec!["name".into()]));
    let out = within("owned insert", client.transact_owned(tx)).await.expect("insert br-o");
    let uuid = out.uuid(&br).expect("the named row's UUID").clone();
    assert_eq!(out.rows(sel).len(), 1);
    assert_eq!(out.count(3), Some(1), "the mutate of the root row");
    assert!(matches!(out.results[2], OpResult::Inserted(ref u) if *u == uuid));
    // Errors name the operation and table as with a borrowed transaction.
    let conn = client.connection().unwrap();
    let mut tx = Transaction::new(DB);
    tx.comment("first");
    tx.update("Port", vec![Condition::eq("name", "br-o")], Row::new().with("tag", Value::set([5000i64])));
    match within("tag 5000", conn.transact_owned(tx)).await {
        Err(TransactError::Operation { index: 1, op: "update", table, error }) => {
            assert_eq!((table.as_str(), error.kind), ("Port", OvsdbErrorKind::ConstraintViolation))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_until_sees_own_insert() {
    let (_srv, client, tx, br) = client_adding_bridge("br-w").await;
    let out = within("insert br-w", client.transact(&tx)).await.expect("insert br-w");
    let uuid = out.uuid(&br).unwrap().clone();
    within(
        "wait_until",
        client
            .wait_until(T, |r| r.table("Bridge").find_one("name", &Atom::from("br-w")).map(|(u, _)| u) == Some(&uuid)),
    )
    .await
    .expect("the replica shows br-w");
    {
        let r = client.replica();
        let row = r.get("Bridge", &uuid).unwrap();
        assert_eq!(row.get_as::<String>("name").unwrap(), "br-w");
        let port = r.table("Port").find_one("name", &Atom::from("br-w")).expect("index on Port.name");
        assert_eq!(row.get_as::<Vec<Uuid>>("ports").unwrap(), vec![port.0.clone()]);
    }
    // A condition that never comes true is a timeout, not a hang.
    let e = within("wait_until times out", client.wait_until(Duration::from_millis(200), |_| false)).await;
    assert!(e.is_err());
}
