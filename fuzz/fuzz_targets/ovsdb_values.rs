//! Everything the client decodes from a server: values, rows, table updates (v1/v2), schemas
//! and transact replies. Garbage must give errors, never panics; values must round-trip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ovsdb_client::{DatabaseSchema, MonitorVersion, Row, TableUpdates, Transaction, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    if let Ok(v) = Value::from_json(&json) {
        assert_eq!(Value::from_json(&v.to_json()).unwrap(), v);
    }
    let _ = Row::from_json(&json);
    for version in [MonitorVersion::V1, MonitorVersion::V2, MonitorVersion::V3] {
        // The client decodes updates from their text; the tree path must agree with it.
        let tree = TableUpdates::from_json(&json, version, false);
        let text = TableUpdates::from_slice(data, version, false);
        if let (Ok(a), Ok(b)) = (&tree, &text) {
            assert_eq!(a, b);
        }
    }
    if let Ok(schema) = DatabaseSchema::from_json(&json) {
        for (t, _) in schema.tables.iter() {
            let mut row = Row::from_json(&json).unwrap_or_default();
            schema.normalize_row(t, &mut row);
            let _ = schema.validate_row(t, &row, ovsdb_client::WriteMode::Insert);
        }
    }
    let mut tx = Transaction::new("db");
    tx.insert("T", Row::new());
    tx.select("T", vec![], None);
    let _ = tx.interpret(&json);
});
