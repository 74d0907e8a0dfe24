//! Typed errors: what the server refuses and what the client refuses before sending.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_errors_from_server_and_from_validation() {
    let srv = server();
    let client = client_for(&srv).await;
    let conn = client.connection().unwrap();
    let mut tx = client.transaction();
    add_bridge(&mut tx, "br0");
    within("add br0", client.transact(&tx)).await.expect("add br0");

    // Referential integrity: a Port referencing an Interface that does not exist.
    let ghost = Uuid::parse("01234567-89ab-cdef-0123-456789abcdef").unwrap();
    let mut tx = Transaction::new(DB);
    let p = tx.insert("Port", Row::new().with("name", "p-ghost").with("interfaces", Value::set([ghost])));
    tx.mutate("Bridge", vec![Condition::eq("name", "br0")], vec![Mutation::insert("ports", Value::set([p]))]);
    let e = within("dangling reference", conn.transact(&tx)).await.unwrap_err();
    assert!(matches!(e, TransactError::Commit(_) | TransactError::Operation { .. }), "{e:?}");
    assert_eq!(ovsdb_kind(&e), OvsdbErrorKind::ReferentialIntegrityViolation, "{e}");

    // ... and deleting an Interface that a Port still references.
    let mut tx = client.transaction();
    tx.delete("Interface", vec![Condition::eq("name", "br0")]);
    let e = within("delete referenced", client.transact(&tx)).await.unwrap_err();
    assert_eq!(ovsdb_kind(&e), OvsdbErrorKind::ReferentialIntegrityViolation, "{e}");
    assert_eq!(select(&conn, "Interface", vec![Condition::eq("name", "br0")]).await.len(), 1, "rolled back");

    // Constraint violation: a second Bridge named br0 breaks the index on name.
    let mut tx = client.transaction();
    let iface = tx.insert("Interface", Row::new().with("name", "dup-i"));
    let port = tx.insert("Port", Row::new().with("name", "dup-p").with("interfaces", Value::set([iface])));
    let br = tx.insert("Bridge", Row::new().with("name", "br0").with("ports", Value::set([port])));
    tx.mutate(DB, vec![], vec![Mutation::insert("bridges", Value::set([br]))]);
    let e = within("duplicate name", client.transact(&tx)).await.unwrap_err();
    assert_eq!(ovsdb_kind(&e), OvsdbErrorKind::ConstraintViolation, "{e}");
    let details = e.ovsdb_error().unwrap().details.clone().unwrap_or_default();
    assert!(details.contains("br0"), "details name the duplicate: {details}");

    // Constraint violation from the server: tag 5000 sent without schema validation.
    let mut tx = Transaction::new(DB);
    tx.update("Port", vec![Condition::eq("name", "br0")], Row::new().with("tag", Value::set([5000i64])));
    let e = within("tag 5000", conn.transact(&tx)).await.unwrap_err();
    assert_op_error(&e, "update", OvsdbErrorKind::ConstraintViolation);
    // The same with the schema is refused before sending, naming table and column.
    let mut tx = client.transaction();
    tx.update("Port", vec![Condition::eq("name", "br0")], Row::new().with("tag", Value::set([5000i64])));
    match client.transact(&tx).await {
        Err(TransactError::Invalid(ValidationError::BadValue { table, column, reason })) => {
            assert_eq!((table.as_str(), column.as_str()), ("Port", "tag"));
            assert!(reason.contains("5000"), "{reason}");
        }
        other => panic!("tag 5000 with schema: {other:?}"),
    }

    // Unknown column, bad enum, unknown table, read-only column: all before sending.
    let mut tx = client.transaction();
    tx.update("Bridge", vec![], Row::new().with("nmae", "x"));
    match client.transact(&tx).await {
        Err(TransactError::Invalid(ValidationError::UnknownColumn { table, column })) => {
            assert_eq!((table.as_str(), column.as_str()), ("Bridge", "nmae"))
        }
        other => panic!("unknown column: {other:?}"),
    }
    let mut tx = client.transaction();
    tx.update("Port", vec![], Row::new().with("vlan_mode", Value::set(["bogus"])));
    let e = client.transact(&tx).await.unwrap_err();
    match &e {
        TransactError::Invalid(ValidationError::BadValue { table, column, reason }) => {
            assert_eq!((table.as_str(), column.as_str()), ("Port", "vlan_mode"));
            assert!(reason.contains("bogus") && reason.contains("access"), "{reason}");
        }
        other => panic!("bad enum: {other:?}"),
    }
    assert!(e.to_string().contains("Port") && e.to_string().contains("vlan_mode"), "{e}");
    let mut tx = client.transaction();
    tx.select("Brige", vec![], None);
    assert!(matches!(
        client.transact(&tx).await,
        Err(TransactError::Invalid(ValidationError::UnknownTable { table, .. })) if table == "Brige"
    ));
    let mut tx = client.transaction();
    tx.mutate("Bridge", vec![Condition::eq("nmae", "br0")], vec![]);
    assert!(matches!(
        client.transact(&tx).await,
        Err(TransactError::Invalid(ValidationError::UnknownColumn { column, .. })) if column == "nmae"
    ));
    // The server would have said the same (no schema: it reaches the server).
    let mut tx = Transaction::new(DB);
    tx.update("Port", vec![], Row::new().with("vlan_mode", Value::set(["bogus"])));
    let e = within("bad enum unvalidated", conn.transact(&tx)).await.unwrap_err();
    assert_op_error(&e, "update", OvsdbErrorKind::ConstraintViolation);
    let mut tx = Transaction::new(DB);
    tx.update("Bridge", vec![], Row::new().with("nmae", "x"));
    let e = within("unknown column unvalidated", conn.transact(&tx)).await.unwrap_err();
    assert!(matches!(e, TransactError::Operation { index: 0, op: "update", .. }), "{e:?}");

    // Nothing of the failed transactions is visible.
    let names: Vec<String> =
        select(&conn, "Port", vec![]).await.iter().map(|r| r.get_as::<String>("name").unwrap()).collect();
    assert_eq!(names, vec!["br0".to_owned()]);
}
