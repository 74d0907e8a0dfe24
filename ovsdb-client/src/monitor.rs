//! Monitor requests and the updates they produce: `monitor` (RFC 7047 section 4.1.5, `update`
//! with old/new rows), `monitor_cond` and `monitor_cond_since` (ovsdb-server(7), `update2` and
//! `update3` with per-column diffs).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::{json, Value as Json};

use crate::codec::{RowSeed, StrPool};

use crate::error::{RpcError, ValueError};
use crate::operation::Condition;
use crate::value::{Row, Uuid};

/// Which protocol a monitor speaks; decides the shape of its updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorVersion {
    /// `monitor` / `update`: full new rows.
    V1,
    /// `monitor_cond` / `update2`: diffs.
    V2,
    /// `monitor_cond_since` / `update3`: diffs plus a transaction id to resume from.
    V3,
}

/// What to monitor in one table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableMonitor {
    /// Columns to send; `None` for all.
    pub columns: Option<Vec<String>>,
    /// Only rows matching these conditions (`monitor_cond` only; ignored by `monitor`).
    pub conditions: Option<Vec<Condition>>,
}

/// Monitor requests for several tables.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MonitorRequests {
    tables: BTreeMap<String, TableMonitor>,
}

impl MonitorRequests {
    /// No tables yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Monitor `columns` of `table` (empty for every column).
    pub fn table<S: Into<String>>(mut self, table: impl Into<String>, columns: impl IntoIterator<Item = S>) -> Self {
        let cols: Vec<String> = columns.into_iter().map(Into::into).collect();
        self.tables.insert(
            table.into(),
            TableMonitor { columns: if cols.is_empty() { None } else { Some(cols) }, conditions: None },
        );
        self
    }

    /// Monitor a table with a full [`TableMonitor`].
    pub fn with(mut self, table: impl Into<String>, monitor: TableMonitor) -> Self {
        self.tables.insert(table.into(), monitor);
        self
    }

    /// The tables asked for.
    pub fn tables(&self) -> impl Iterator<Item = (&str, &TableMonitor)> {
        self.tables.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub(crate) fn to_json(&self, version: MonitorVersion) -> Json {
        let mut out = serde_json::Map::new();
        for (table, m) in &self.tables {
            let mut req = serde_json::Map::new();
            if let Some(c) = &m.columns {
                req.insert("columns".into(), json!(c));
            }
            if version != MonitorVersion::V1 {
                if let Some(conds) = &m.conditions {
                    let w: Vec<Json> = conds.iter().map(|c| json!([c.column, cond_fn(c), c.value.to_json()])).collect();
                    req.insert("where".into(), Json::Array(w));
                }
            }
            out.insert(table.clone(), Json::Object(req));
        }
        Json::Object(out)
    }
}

fn cond_fn(c: &Condition) -> Json {
    // Reuse the operation encoding so both stay in step.
    let op = crate::operation::Operation::Delete { table: String::new(), conditions: vec![c.clone()] };
    op.to_json()["where"][0][1].clone()
}

/// One change to one row.
#[derive(Debug, Clone, PartialEq)]
pub enum RowUpdate {
    /// The row existed when the monitor started.
    Initial(Row),
    /// The row was inserted.
    Insert(Row),
    /// The row was deleted (`monitor` sends its old columns).
    Delete,
    /// `update2`/`update3` modify: each column holds the diff to apply to the old value
    /// (new value for scalars, symmetric difference for sets, changed pairs for maps).
    Modify(Row),
    /// `update` modify: the complete new row (of the monitored columns).
    Replace(Row),
}

/// The changes of one notification (or of the initial reply), table by table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableUpdates {
    /// Table name to (row UUID, change), in the order the server sent them.
    pub tables: BTreeMap<String, Vec<(Uuid, RowUpdate)>>,
}

impl TableUpdates {
    /// Total number of row changes.
    pub fn len(&self) -> usize {
        self.tables.values().map(Vec::len).sum()
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parses `<table-updates>` or `<table-updates2>`; `initial` marks a monitor reply.
    pub fn from_json(json: &Json, version: MonitorVersion, initial: bool) -> Result<Self, ValueError> {
        let mut strings = StrPool::default();
        UpdatesSeed { version, initial, strings: &mut strings }
            .deserialize(json)
            .map_err(|e| ValueError::new(e.to_string()))
    }

    /// [`TableUpdates::from_json`] from the JSON text, decoded straight into rows: a monitor
    /// reply for a large database is tens of megabytes of text, and as a `serde_json::Value`
    /// it would take about eight times that. Strings repeated in many rows are allocated once.
    pub fn from_slice(text: &[u8], version: MonitorVersion, initial: bool) -> Result<Self, ValueError> {
        let mut strings = StrPool::default();
        let mut de = serde_json::Deserializer::from_slice(text);
        UpdatesSeed { version, initial, strings: &mut strings }
            .deserialize(&mut de)
            .and_then(|updates| de.end().map(|()| updates))
            .map_err(|e| ValueError::new(e.to_string()))
    }
}

/// Decodes `<table-updates>` / `<table-updates2>`: `null`, or table name to row UUID to change.
struct UpdatesSeed<'p> {
    version: MonitorVersion,
    initial: bool,
    strings: &'p mut StrPool,
}

impl<'de> DeserializeSeed<'de> for UpdatesSeed<'_> {
    type Value = TableUpdates;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<TableUpdates, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UpdatesSeed<'_> {
    type Value = TableUpdates;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("table updates (an object of tables)")
    }
    fn visit_unit<E: de::Error>(self) -> Result<TableUpdates, E> {
        Ok(TableUpdates::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TableUpdates, A::Error> {
        let mut out = TableUpdates::default();
        while let Some(table) = map.next_key::<String>()? {
            let rows = map.next_value_seed(RowsSeed {
                version: self.version,
                initial: self.initial,
                strings: &mut *self.strings,
                table: &table,
            })?;
            out.tables.insert(table, rows);
        }
        Ok(out)
    }
}

/// The changes of one table: row UUID to change.
struct RowsSeed<'p> {
    version: MonitorVersion,
    initial: bool,
    strings: &'p mut StrPool,
    table: &'p str,
}

impl<'de> DeserializeSeed<'de> for RowsSeed<'_> {
    type Value = Vec<(Uuid, RowUpdate)>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowsSeed<'_> {
    type Value = Vec<(Uuid, RowUpdate)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "the updates of table {} (an object of rows)", self.table)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut list = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let uuid = Uuid::parse(&key).map_err(de::Error::custom)?;
            let seed = ChangeSeed { version: self.version, initial: self.initial, strings: &mut *self.strings };
            let update =
                map.next_value_seed(seed).map_err(|e| de::Error::custom(format_args!("{} {uuid}: {e}", self.table)))?;
            list.push((uuid, update));
        }
        Ok(list)
    }
}

/// One row's change: `{"old": .., "new": ..}` (`update`) or `{"<kind>": row}` (`update2/3`).
struct ChangeSeed<'p> {
    version: MonitorVersion,
    initial: bool,
    strings: &'p mut StrPool,
}

impl<'de> DeserializeSeed<'de> for ChangeSeed<'_> {
    type Value = RowUpdate;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<RowUpdate, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ChangeSeed<'_> {
    type Value = RowUpdate;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.version {
            MonitorVersion::V1 => f.write_str("a row update {\"old\": .., \"new\": ..}"),
            _ => f.write_str("one of initial/insert/delete/modify"),
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RowUpdate, A::Error> {
        if self.version == MonitorVersion::V1 {
            let (mut old, mut new) = (false, None);
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                match &*key {
                    // Only whether there was an old row matters: the replica keeps its own.
                    "old" => old = map.next_value::<IgnoredAny>().map(|_| true)?,
                    "new" => new = Some(map.next_value_seed(RowSeed(&mut *self.strings))?),
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            return match (old, new) {
                (_, Some(new)) if self.initial => Ok(RowUpdate::Initial(new)),
                (false, Some(new)) => Ok(RowUpdate::Insert(new)),
                (true, None) => Ok(RowUpdate::Delete),
                (true, Some(new)) => Ok(RowUpdate::Replace(new)),
                (false, None) => Err(de::Error::custom("neither old nor new")),
            };
        }
        let want_one = || de::Error::custom("want one of initial/insert/delete/modify");
        let kind = map.next_key::<Cow<'de, str>>()?.ok_or_else(want_one)?;
        let row = RowSeed(self.strings);
        let update = match &*kind {
            "initial" => RowUpdate::Initial(map.next_value_seed(row)?),
            "insert" => RowUpdate::Insert(map.next_value_seed(row)?),
            "modify" => RowUpdate::Modify(map.next_value_seed(row)?),
            "delete" => map.next_value::<IgnoredAny>().map(|_| RowUpdate::Delete)?,
            other => return Err(de::Error::custom(format_args!("unknown change '{other}'"))),
        };
        if map.next_key::<IgnoredAny>()?.is_some() {
            return Err(want_one());
        }
        Ok(update)
    }
}

/// A notification from a monitor.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorEvent {
    /// The changes.
    pub updates: TableUpdates,
    /// For `update3`: the id of the transaction that made them, to resume from after a reconnect.
    pub last_txn_id: Option<String>,
}

/// A live monitor: notifications in order, ending (`None`) when the connection closes or the
/// monitor is cancelled.
#[derive(Debug)]
pub struct Monitor {
    pub(crate) id: String,
    pub(crate) version: MonitorVersion,
    pub(crate) rx: tokio::sync::mpsc::UnboundedReceiver<crate::connection::RawJson>,
}

impl Monitor {
    /// The monitor id used on the wire (for `monitor_cancel`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The protocol version in use.
    pub fn version(&self) -> MonitorVersion {
        self.version
    }

    /// The next notification; `None` once the monitor is gone. A malformed notification is an
    /// error; the replica fed from it can no longer be trusted.
    pub async fn next(&mut self) -> Option<Result<MonitorEvent, RpcError>> {
        let params = self.rx.recv().await?;
        Some(self.parse(params.text()))
    }

    fn parse(&self, params: &[u8]) -> Result<MonitorEvent, RpcError> {
        let bad = |reason: String| RpcError::MalformedReply { method: "update".into(), reason };
        let arr: Vec<&serde_json::value::RawValue> =
            serde_json::from_slice(params).map_err(|_| bad("params are not an array".into()))?;
        let (updates, txn) = match self.version {
            MonitorVersion::V3 => (arr.get(2), arr.get(1).and_then(|t| serde_json::from_str::<String>(t.get()).ok())),
            _ => (arr.get(1), None),
        };
        let updates = updates.ok_or_else(|| bad("no table updates".into()))?;
        let updates =
            TableUpdates::from_slice(updates.get().as_bytes(), self.version, false).map_err(|e| bad(e.to_string()))?;
        Ok(MonitorEvent { updates, last_txn_id: txn })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_update_and_update2() {
        let u = "550e8400-e29b-41d4-a716-446655440000";
        let v1 = json!({"Bridge": {u: {"new": {"name": "br0"}}}});
        let t = TableUpdates::from_json(&v1, MonitorVersion::V1, false).unwrap();
        assert!(matches!(t.tables["Bridge"][0].1, RowUpdate::Insert(_)));
        let v1 = json!({"Bridge": {u: {"old": {"name": "br0"}}}});
        let t = TableUpdates::from_json(&v1, MonitorVersion::V1, false).unwrap();
        assert_eq!(t.tables["Bridge"][0].1, RowUpdate::Delete);
        let v2 = json!({"Bridge": {u: {"modify": {"ports": ["set", []]}}}});
        let t = TableUpdates::from_json(&v2, MonitorVersion::V2, false).unwrap();
        assert!(matches!(t.tables["Bridge"][0].1, RowUpdate::Modify(_)));
        for bad in [
            json!([]),
            json!({"Bridge": 1}),
            json!({"Bridge": {"nope": {"insert": {}}}}),
            json!({"Bridge": {u: {"frob": {}}}}),
            json!({"Bridge": {u: {"insert": {}, "delete": null}}}),
        ] {
            assert!(TableUpdates::from_json(&bad, MonitorVersion::V2, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_json() {
        let r = MonitorRequests::new().table("Bridge", ["name"]).table::<&str>("Port", []);
        assert_eq!(r.to_json(MonitorVersion::V1), json!({"Bridge": {"columns": ["name"]}, "Port": {}}));
        let r = MonitorRequests::new()
            .with("Interface", TableMonitor { columns: None, conditions: Some(vec![Condition::eq("type", "vxlan")]) });
        assert_eq!(r.to_json(MonitorVersion::V2), json!({"Interface": {"where": [["type", "==", "vxlan"]]}}));
    }
}
