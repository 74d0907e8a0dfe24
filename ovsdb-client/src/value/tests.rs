use super::*;

#[test]
fn uuid_parse_and_reject() {
    let u = Uuid::parse("550E8400-e29b-41d4-a716-446655440000").unwrap();
    assert_eq!(u.to_string(), "550e8400-e29b-41d4-a716-446655440000");
    assert_eq!(u.as_bytes()[..3], [0x55, 0x0e, 0x84]);
    assert_eq!(Uuid::from_bytes(*u.as_bytes()), u);
    // Byte order is text order, so sorted UUIDs sort as their text does.
    let v = Uuid::parse("550e8400-e29b-41d4-a716-4466554400ff").unwrap();
    assert!(u < v && u.to_string() < v.to_string());
    for bad in ["", "550e8400e29b41d4a716446655440000", "550e8400-e29b-41d4-a716-44665544000g", "x"] {
        assert!(Uuid::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn json_round_trip_of_every_kind() {
    let u = Uuid::parse("550e8400-e29b-41d4-a716-446655440000").unwrap();
    let values = [
        Value::from(42i64),
        Value::from(-1.5f64),
        Value::from(true),
        Value::from("br-int"),
        Value::from(u.clone()),
        Value::from(NamedUuid::new("row_1").unwrap()),
        Value::set([3i64, 1, 2, 3]),
        Value::empty_set(),
        Value::map([("b", "2"), ("a", "1")]),
    ];
    for v in values {
        let back = Value::from_json(&v.to_json()).unwrap();
        assert_eq!(back, v, "{}", v.to_json());
    }
    assert_eq!(Value::set([3i64, 1, 2, 3]).to_json(), json!(["set", [1, 2, 3]]));
    assert_eq!(Value::map([("b", "2"), ("a", "1")]).to_json(), json!(["map", [["a", "1"], ["b", "2"]]]));
}

#[test]
fn malformed_json_values_are_errors() {
    for bad in [
        json!(null),
        json!({"a": 1}),
        json!(["uuid", "nope"]),
        json!(["named-uuid", "1abc"]),
        json!(["set", 3]),
        json!(["map", [[1]]]),
        json!(["map", [1, 2]]),
        json!(["frob", 1]),
    ] {
        assert!(Value::from_json(&bad).is_err(), "{bad}");
    }
}

#[test]
fn conversions_to_rust_types() {
    let row = Row::new()
        .with("name", "eth0")
        .with("tag", Value::set([7i64]))
        .with("trunks", Value::set([1i64, 2]))
        .with("no_tag", Value::empty_set())
        .with("external_ids", Value::map([("iface-id", "p1")]));
    assert_eq!(row.get_as::<String>("name").unwrap(), "eth0");
    assert_eq!(row.get_as::<Option<i64>>("tag").unwrap(), Some(7));
    assert_eq!(row.get_as::<Option<i64>>("no_tag").unwrap(), None);
    assert_eq!(row.get_as::<Vec<i64>>("trunks").unwrap(), vec![1, 2]);
    assert!(row.get_as::<Option<i64>>("trunks").is_err());
    assert!(row.get_as::<i64>("name").unwrap_err().to_string().contains("column 'name'"));
    assert!(row.get_as::<i64>("missing").unwrap_err().to_string().contains("missing"));
    let ids: BTreeMap<String, String> = row.get_as("external_ids").unwrap();
    assert_eq!(ids["iface-id"], "p1");
    assert_eq!(row.map_str("external_ids", "iface-id"), Some("p1"));
    assert_eq!(row.map_str("external_ids", "nope"), None);
}

#[test]
fn rows_sharing_names_change_apart() {
    let a = Row::from_columns(vec![("tag".into(), Value::from(1i64)), ("name".into(), Value::from("p"))]);
    let mut b = a.clone();
    assert!(a.shares_names_with(&b));
    b.set("name", "q");
    assert!(a.shares_names_with(&b), "a new value for a column keeps the names");
    b.set("alias", "x");
    assert_eq!(b.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["alias", "name", "tag"]);
    assert_eq!(b.remove("tag"), Some(Value::from(1i64)));
    assert_eq!(a.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["name", "tag"]);
    assert_eq!(a.get("name"), Some(&Value::from("p")));
    assert_eq!(b.get_as::<String>("name").unwrap(), "q");
    // The last of a repeated column wins, as with set.
    let c = Row::from_columns(vec![("x".into(), Value::from(1i64)), ("x".into(), Value::from(2i64))]);
    assert_eq!((c.len(), c.get("x")), (1, Some(&Value::from(2i64))));
}

#[test]
fn values_stay_small() {
    // A replica holds one Value per column of every row: 40,000 rows of 5-6 columns for
    // 20,000 tunnels. An atom is a tag and 16 bytes; a value fits in the atom's tag.
    assert_eq!(std::mem::size_of::<Uuid>(), 16);
    assert_eq!(std::mem::size_of::<Atom>(), 24);
    assert_eq!(std::mem::size_of::<Value>(), 24);
}

#[test]
fn reals_order_and_hash_consistently() {
    let s = Value::set([1.0f64, f64::NAN, 1.0, -0.0]);
    assert_eq!(s.len(), 3);
    assert_eq!(Atom::Real(f64::NAN), Atom::Real(f64::NAN));
}

#[test]
fn short_cuts_on_char_boundary() {
    let long = Json::String("é".repeat(200));
    let s = short(&long);
    assert!(s.len() <= 120 && s.ends_with("..."));
}
