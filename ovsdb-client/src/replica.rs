//! An in-memory copy of the monitored tables, kept current from monitor updates, with a change
//! counter and indexes by column (e.g. Interface by name).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::codec::StrPool;
use crate::error::ValueError;
use crate::monitor::{MonitorRequests, RowUpdate, TableUpdates};
use crate::schema::{AtomicType, ColumnType, DatabaseSchema, TableSchema};
use crate::value::{Atom, Row, Uuid, Value};

/// One table of the replica.
#[derive(Debug, Default, Clone)]
pub struct TableReplica {
    rows: HashMap<Uuid, Row>,
    /// Column name to (atom to rows holding it). Only scalar and set columns can be indexed.
    indexes: HashMap<String, HashMap<Atom, Holders>>,
}

/// The rows holding one indexed atom. Indexed columns are mostly names, held by one row each,
/// so that case is kept inline rather than in an allocation of its own.
#[derive(Debug, Clone)]
enum Holders {
    One(Uuid),
    Many(Box<[Uuid]>),
}

impl Holders {
    fn as_slice(&self) -> &[Uuid] {
        match self {
            Holders::One(u) => std::slice::from_ref(u),
            Holders::Many(v) => v,
        }
    }

    fn push(&mut self, uuid: Uuid) {
        let mut all = self.as_slice().to_vec();
        all.push(uuid);
        *self = Holders::Many(all.into());
    }

    /// Removes `uuid`; true when no row is left.
    fn remove(&mut self, uuid: &Uuid) -> bool {
        match self {
            Holders::One(u) => u == uuid,
            Holders::Many(v) => {
                let rest: Vec<Uuid> = v.iter().filter(|u| *u != uuid).cloned().collect();
                match rest.as_slice() {
                    [] => return true,
                    [one] => *self = Holders::One(one.clone()),
                    _ => *self = Holders::Many(rest.into()),
                }
                false
            }
        }
    }
}

impl TableReplica {
    /// A row by UUID.
    pub fn get(&self, uuid: &Uuid) -> Option<&Row> {
        self.rows.get(uuid)
    }

    /// Every row, in no particular order.
    pub fn rows(&self) -> impl Iterator<Item = (&Uuid, &Row)> {
        self.rows.iter()
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Rows whose `column` holds `value` (equal scalar, or a set containing it). Uses the index
    /// when the column has one, otherwise scans.
    pub fn find<'a>(&'a self, column: &str, value: &Atom) -> Vec<(&'a Uuid, &'a Row)> {
        if let Some(index) = self.indexes.get(column) {
            return index
                .get(value)
                .map(Holders::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|u| self.rows.get_key_value(u))
                .collect();
        }
        self.rows.iter().filter(|(_, r)| r.get(column).is_some_and(|v| v.as_set().contains(value))).collect()
    }

    /// The one row whose `column` holds `value`, if exactly one does.
    pub fn find_one(&self, column: &str, value: &Atom) -> Option<(&Uuid, &Row)> {
        match self.find(column, value).as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }

    fn index_add(&mut self, uuid: &Uuid, row: &Row) {
        for (column, index) in self.indexes.iter_mut() {
            if let Some(v) = row.get(column) {
                for a in v.as_set() {
                    match index.get_mut(a) {
                        Some(holders) => holders.push(uuid.clone()),
                        None => {
                            index.insert(a.clone(), Holders::One(uuid.clone()));
                        }
                    }
                }
            }
        }
    }

    fn index_remove(&mut self, uuid: &Uuid, row: &Row) {
        for (column, index) in self.indexes.iter_mut() {
            if let Some(v) = row.get(column) {
                for a in v.as_set() {
                    if index.get_mut(a).is_some_and(|holders| holders.remove(uuid)) {
                        index.remove(a);
                    }
                }
            }
        }
    }
}

/// The replica of one database.
#[derive(Debug, Clone)]
pub struct Replica {
    schema: Arc<DatabaseSchema>,
    tables: BTreeMap<String, TableReplica>,
    seqno: u64,
    /// What the monitor asked for; `None`: every column of every table.
    monitored: Option<MonitorRequests>,
    /// One shared copy of each string the rows hold. Most strings of an Open_vSwitch replica
    /// repeat from row to row (`external_ids` keys and values, tunnel types, option keys,
    /// peer addresses): the Port and Interface rows of one tunnel hold some 30 strings, and
    /// only its name is its own, shared by the two rows.
    strings: StrPool,
}

impl Replica {
    /// An empty replica; `indexes` lists `(table, column)` pairs to index.
    pub fn new(schema: Arc<DatabaseSchema>, indexes: &[(String, String)]) -> Self {
        let mut tables: BTreeMap<String, TableReplica> = BTreeMap::new();
        for (table, column) in indexes {
            tables.entry(table.clone()).or_default().indexes.insert(column.clone(), HashMap::new());
        }
        Replica { schema, tables, seqno: 0, monitored: None, strings: StrPool::default() }
    }

    /// Tells the replica which columns its monitor asked for. `update2`/`update3` leave out
    /// the columns of an inserted row that hold their default value, and the replica fills
    /// them in, so every row has every monitored column (as with `monitor`, or a `select`).
    /// Without this call, every column of the schema counts as monitored.
    pub fn set_monitored(&mut self, requests: &MonitorRequests) {
        self.monitored = Some(requests.clone());
    }

    /// The schema the replica interprets updates with.
    pub fn schema(&self) -> &Arc<DatabaseSchema> {
        &self.schema
    }

    /// Counts applied updates; grows by one for every [`Replica::apply`] and [`Replica::reset`].
    pub fn seqno(&self) -> u64 {
        self.seqno
    }

    pub(crate) fn set_seqno(&mut self, seqno: u64) {
        self.seqno = seqno;
    }

    /// A table (empty when nothing of it was seen).
    pub fn table(&self, table: &str) -> &TableReplica {
        static EMPTY: std::sync::OnceLock<TableReplica> = std::sync::OnceLock::new();
        self.tables.get(table).unwrap_or_else(|| EMPTY.get_or_init(TableReplica::default))
    }

    /// A row by table and UUID.
    pub fn get(&self, table: &str, uuid: &Uuid) -> Option<&Row> {
        self.table(table).get(uuid)
    }

    /// Drops every row (keeping the indexes' definitions), as after a reconnect.
    pub fn reset(&mut self) {
        for t in self.tables.values_mut() {
            t.rows.clear();
            for index in t.indexes.values_mut() {
                index.clear();
            }
        }
        self.strings = StrPool::default();
        self.seqno += 1;
    }

    /// Applies one notification or initial reply. On error the replica may be partly updated
    /// and must be rebuilt from a fresh monitor.
    pub fn apply(&mut self, updates: &TableUpdates) -> Result<(), ValueError> {
        self.apply_owned(updates.clone())
    }

    /// [`Replica::apply`] taking the updates by value: rows move into the replica instead of
    /// being copied (an initial monitor reply of a large database is mostly rows).
    pub fn apply_owned(&mut self, updates: TableUpdates) -> Result<(), ValueError> {
        for (table, changes) in updates.tables {
            let table = table.as_str();
            let ts = self.schema.table(table).map_err(|e| ValueError::new(e.to_string()))?;
            let t = self.tables.entry(table.to_owned()).or_default();
            for (uuid, change) in changes {
                let uuid = &uuid;
                match change {
                    RowUpdate::Initial(mut row) | RowUpdate::Insert(mut row) | RowUpdate::Replace(mut row) => {
                        self.schema.normalize_row(table, &mut row);
                        fill_defaults(self.monitored.as_ref(), table, ts, &mut row);
                        self.strings.intern_row(&mut row);
                        row.shrink_to_fit();
                        if let Some(old) = t.rows.remove(uuid) {
                            t.index_remove(uuid, &old);
                        }
                        t.index_add(uuid, &row);
                        t.rows.insert(uuid.clone(), row);
                    }
                    RowUpdate::Delete => {
                        if let Some(old) = t.rows.remove(uuid) {
                            t.index_remove(uuid, &old);
                        }
                    }
                    RowUpdate::Modify(diff) => {
                        let mut row = t
                            .rows
                            .remove(uuid)
                            .ok_or_else(|| ValueError::new(format!("modify of unknown row {uuid} in {table}")))?;
                        t.index_remove(uuid, &row);
                        for (column, d) in diff.iter() {
                            let Some(col) = ts.column(column) else { continue };
                            let d = DatabaseSchema::normalize(&col.kind, d.clone());
                            match row.get_mut(column) {
                                Some(slot) => {
                                    let old = std::mem::replace(slot, Value::empty_set());
                                    *slot = apply_diff(&col.kind, old, d);
                                }
                                None => row.set(col.name.clone(), apply_diff(&col.kind, Value::empty_set(), d)),
                            }
                        }
                        self.strings.intern_row(&mut row);
                        row.shrink_to_fit();
                        t.index_add(uuid, &row);
                        t.rows.insert(uuid.clone(), row);
                    }
                }
            }
        }
        self.strings.purge();
        self.seqno += 1;
        Ok(())
    }
}

/// Adds, with its default value, every monitored column that `row` lacks.
fn fill_defaults(monitored: Option<&MonitorRequests>, table: &str, ts: &TableSchema, row: &mut Row) {
    let asked = monitored.and_then(|m| m.tables().find(|(t, _)| *t == table)).and_then(|(_, m)| m.columns.as_ref());
    let columns: Vec<&crate::schema::ColumnSchema> = match asked {
        Some(names) => names.iter().filter_map(|c| ts.column(c)).collect(),
        None => ts.columns.values().collect(),
    };
    let missing: Vec<(Arc<str>, Value)> = columns
        .into_iter()
        .filter(|col| !col.name.starts_with('_') && row.get(&col.name).is_none())
        .map(|col| (col.name.clone(), default_value(&col.kind)))
        .collect();
    if !missing.is_empty() {
        // Rebuilt once rather than set column by column: each set copies the list of names.
        let mut columns = std::mem::take(row).into_columns();
        columns.extend(missing);
        *row = Row::from_columns(columns);
    }
}

/// The default value of a column (RFC 7047 section 5.1 / ovsdb-server): an empty set or map
/// when the column may be empty, otherwise 0, 0.0, false, "" or the all-zero UUID.
fn default_value(kind: &ColumnType) -> Value {
    if kind.is_map() {
        return Value::empty_map();
    }
    if kind.min == 0 {
        return Value::empty_set();
    }
    let atom = match kind.key.atomic {
        AtomicType::Integer => Atom::Integer(0),
        AtomicType::Real => Atom::Real(0.0),
        AtomicType::Boolean => Atom::Boolean(false),
        AtomicType::String => Atom::String("".into()),
        AtomicType::Uuid => Atom::Uuid(Uuid::parse("00000000-0000-0000-0000-000000000000").expect("valid UUID")),
    };
    if kind.is_scalar() {
        Value::Atom(atom)
    } else {
        Value::Set(Arc::from([atom]))
    }
}

/// Applies an `update2` column diff (ovsdb-server(7), "update2 notification"): a column that
/// holds at most one value (a scalar, or an optional value with `"max": 1`) is replaced by the
/// diff, which is its new value (ovsdb-server diffs only "composite" types, `max > 1`); a set
/// toggles every element of the diff (symmetric difference); a map removes a key whose diff
/// value equals the old one, and sets it otherwise.
pub fn apply_diff(kind: &ColumnType, old: Value, diff: Value) -> Value {
    if kind.max == Some(1) {
        return diff;
    }
    if kind.is_map() {
        let mut m: BTreeMap<Atom, Atom> = old.as_map().iter().cloned().collect();
        for (k, v) in diff.as_map() {
            if m.get(k) == Some(v) {
                m.remove(k);
            } else {
                m.insert(k.clone(), v.clone());
            }
        }
        return Value::map(m);
    }
    let mut s: std::collections::BTreeSet<Atom> = old.as_set().iter().cloned().collect();
    for a in diff.as_set() {
        if !s.remove(a) {
            s.insert(a.clone());
        }
    }
    Value::set(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::MonitorVersion;
    use serde_json::json;

    fn schema() -> Arc<DatabaseSchema> {
        Arc::new(
            DatabaseSchema::from_json(&json!({"name": "T", "tables": {"Port": {"columns": {
                "name": {"type": "string"},
                "tag": {"type": {"key": "integer", "min": 0, "max": 1}},
                "trunks": {"type": {"key": "integer", "min": 0, "max": "unlimited"}},
                "external_ids": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}}
            }}}}))
            .unwrap(),
        )
    }

    const U: &str = "550e8400-e29b-41d4-a716-446655440000";

    fn upd(j: serde_json::Value) -> TableUpdates {
        TableUpdates::from_json(&j, MonitorVersion::V2, false).unwrap()
    }

    #[test]
    fn insert_modify_delete_with_diff_semantics() {
        let mut r = Replica::new(schema(), &[("Port".into(), "name".into())]);
        r.apply(&upd(json!({"Port": {U: {"insert": {
            "name": "p1", "tag": 1, "trunks": ["set", [1, 2]],
            "external_ids": ["map", [["a", "1"], ["b", "2"]]]}}}})))
            .unwrap();
        let u = Uuid::parse(U).unwrap();
        assert_eq!(r.get("Port", &u).unwrap().get("tag"), Some(&Value::set([1i64])));
        // tag (max 1) 1 -> 2 arrives as the new value 2, as ovsdb-server sends it; trunks
        // gains 3 and loses 1; map: a removed, b changed, c added; name replaced.
        r.apply(&upd(json!({"Port": {U: {"modify": {
            "name": "p2", "tag": 2, "trunks": ["set", [1, 3]],
            "external_ids": ["map", [["a", "1"], ["b", "3"], ["c", "4"]]]}}}})))
            .unwrap();
        let row = r.get("Port", &u).unwrap();
        assert_eq!(row.get("name"), Some(&Value::from("p2")));
        assert_eq!(row.get("tag"), Some(&Value::set([2i64])));
        assert_eq!(row.get("trunks"), Some(&Value::set([2i64, 3])));
        assert_eq!(row.get("external_ids"), Some(&Value::map([("b", "3"), ("c", "4")])));
        // Index follows the rename.
        assert!(r.table("Port").find_one("name", &Atom::from("p1")).is_none());
        assert_eq!(r.table("Port").find_one("name", &Atom::from("p2")).unwrap().0, &u);
        r.apply(&upd(json!({"Port": {U: {"delete": null}}}))).unwrap();
        assert!(r.table("Port").is_empty());
        assert!(r.table("Port").find("name", &Atom::from("p2")).is_empty());
        assert_eq!(r.seqno(), 3);
    }

    #[test]
    fn optional_column_diff_is_the_new_value() {
        // ovsdb-server diffs only types with max > 1; for max 1 the diff is the new value.
        let mut r = Replica::new(schema(), &[]);
        let u = Uuid::parse(U).unwrap();
        r.apply(&upd(json!({"Port": {U: {"insert": {"name": "p", "tag": 7}}}}))).unwrap();
        let tag = |r: &Replica| r.get("Port", &u).unwrap().get("tag").cloned();
        r.apply(&upd(json!({"Port": {U: {"modify": {"tag": 8}}}}))).unwrap();
        assert_eq!(tag(&r), Some(Value::set([8i64])));
        r.apply(&upd(json!({"Port": {U: {"modify": {"tag": ["set", []]}}}}))).unwrap();
        assert_eq!(tag(&r), Some(Value::empty_set()));
        r.apply(&upd(json!({"Port": {U: {"modify": {"tag": 9}}}}))).unwrap();
        assert_eq!(tag(&r), Some(Value::set([9i64])));
    }

    #[test]
    fn columns_left_out_of_an_insert_get_their_defaults() {
        // update2 omits columns holding their default value.
        let u = Uuid::parse(U).unwrap();
        let mut r = Replica::new(schema(), &[]);
        r.apply(&upd(json!({"Port": {U: {"insert": {"trunks": 5}}}}))).unwrap();
        let row = r.get("Port", &u).unwrap();
        assert_eq!(row.get("name"), Some(&Value::from("")));
        assert_eq!(row.get("tag"), Some(&Value::empty_set()));
        assert_eq!(row.get("trunks"), Some(&Value::set([5i64])));
        assert_eq!(row.get("external_ids"), Some(&Value::empty_map()));
        assert_eq!(row.get_as::<String>("name").unwrap(), "");
        assert!(row.get("_uuid").is_none());
        // Only the monitored columns are filled in.
        let mut r = Replica::new(schema(), &[]);
        r.set_monitored(&MonitorRequests::new().table("Port", ["name", "tag"]));
        r.apply(&upd(json!({"Port": {U: {"initial": {"tag": 1}}}}))).unwrap();
        let row = r.get("Port", &u).unwrap();
        assert_eq!(row.len(), 2, "{row:?}");
        assert_eq!(row.get("name"), Some(&Value::from("")));
    }

    #[test]
    fn index_holds_every_row_with_the_value() {
        let mut r = Replica::new(schema(), &[("Port".into(), "trunks".into())]);
        let (u1, u2) = ("11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222");
        r.apply(&upd(json!({"Port": {u1: {"insert": {"trunks": ["set", [1, 2]]}}, u2: {"insert": {"trunks": 2}}}})))
            .unwrap();
        let holders = |r: &Replica, v: i64| {
            let mut u: Vec<String> =
                r.table("Port").find("trunks", &Atom::from(v)).iter().map(|(u, _)| u.to_string()).collect();
            u.sort();
            u
        };
        assert_eq!(holders(&r, 2), [u1, u2]);
        assert_eq!(holders(&r, 1), [u1]);
        r.apply(&upd(json!({"Port": {u1: {"delete": null}}}))).unwrap();
        assert_eq!(holders(&r, 2), [u2]);
        assert!(holders(&r, 1).is_empty());
        r.apply(&upd(json!({"Port": {u2: {"modify": {"trunks": ["set", [2, 3]]}}}}))).unwrap();
        assert!(holders(&r, 2).is_empty());
        assert_eq!(holders(&r, 3), [u2]);
    }

    #[test]
    fn rows_share_one_copy_of_a_string() {
        // Two updates, so the second row's strings come from another message.
        let mut r = Replica::new(schema(), &[]);
        let (u1, u2) = ("11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222");
        r.apply(&upd(json!({"Port": {u1: {"insert": {"external_ids": ["map", [["kind", "tunnel"]]]}}}}))).unwrap();
        r.apply(&upd(json!({"Port": {u2: {"insert": {"name": "tunnel"}}}}))).unwrap();
        let kind = match &r.get("Port", &Uuid::parse(u1).unwrap()).unwrap().get("external_ids").unwrap().as_map()[0].1 {
            Atom::String(s) => s.clone(),
            other => panic!("{other:?}"),
        };
        let name = match r.get("Port", &Uuid::parse(u2).unwrap()).unwrap().get("name").unwrap() {
            Value::Atom(Atom::String(s)) => s.clone(),
            other => panic!("{other:?}"),
        };
        assert!(Arc::ptr_eq(&kind, &name));
    }

    #[test]
    fn rows_share_one_copy_of_a_map() {
        let mut r = Replica::new(schema(), &[]);
        let (u1, u2) = ("11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222");
        let ids = json!(["map", [["overlay-kind", "tunnel"], ["overlay-peer", "h2"]]]);
        r.apply(&upd(json!({"Port": {u1: {"insert": {"external_ids": ids}}}}))).unwrap();
        r.apply(&upd(json!({"Port": {u2: {"insert": {"external_ids": ids, "trunks": 7}}}}))).unwrap();
        let map = |r: &Replica, u: &str| match r.get("Port", &Uuid::parse(u).unwrap()).unwrap().get("external_ids") {
            Some(Value::Map(m)) => m.clone(),
            other => panic!("{other:?}"),
        };
        assert!(Arc::ptr_eq(&map(&r, u1), &map(&r, u2)));
        // With every monitored column filled in, both rows have one list of column names.
        let row = |u: &str| r.get("Port", &Uuid::parse(u).unwrap()).unwrap().clone();
        assert!(row(u1).shares_names_with(&row(u2)));
        // A modify gives the row a new map, not a change to the shared one.
        r.apply(&upd(json!({"Port": {u2: {"modify": {"external_ids": ["map", [["overlay-peer", "h3"]]]}}}}))).unwrap();
        assert_eq!(map(&r, u1).len(), 2);
        assert_eq!(
            r.get("Port", &Uuid::parse(u2).unwrap()).unwrap().map_str("external_ids", "overlay-peer"),
            Some("h3")
        );
        assert_eq!(
            r.get("Port", &Uuid::parse(u1).unwrap()).unwrap().map_str("external_ids", "overlay-peer"),
            Some("h2")
        );
    }

    #[test]
    fn modify_of_unknown_row_is_an_error() {
        let mut r = Replica::new(schema(), &[]);
        assert!(r.apply(&upd(json!({"Port": {U: {"modify": {"name": "x"}}}}))).is_err());
        assert!(r.apply(&upd(json!({"Nope": {U: {"insert": {}}}}))).is_err());
    }
}
