//! Monitor requests and the updates they produce: `monitor` (RFC 7047 section 4.1.5, `update`
//! with old/new rows), `monitor_cond` and `monitor_cond_since` (ovsdb-server(7), `update2` and
//! `update3` with per-column diffs).

use std::collections::BTreeMap;

use serde_json::{json, Value as Json};

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
        let mut out = TableUpdates::default();
        if json.is_null() {
            return Ok(out);
        }
        let tables = json.as_object().ok_or_else(|| ValueError::new("table updates are not an object"))?;
        for (table, rows) in tables {
            let rows = rows
                .as_object()
                .ok_or_else(|| ValueError::new(format!("updates of table {table} are not an object")))?;
            let mut list = Vec::with_capacity(rows.len());
            for (uuid, change) in rows {
                let uuid = Uuid::parse(uuid)?;
                let row_of = |j: &Json| Row::from_json(j).map_err(|e| ValueError::new(format!("{table} {uuid}: {e}")));
                let update = match version {
                    MonitorVersion::V1 => match (change.get("old"), change.get("new")) {
                        (_, Some(new)) if initial => RowUpdate::Initial(row_of(new)?),
                        (None, Some(new)) => RowUpdate::Insert(row_of(new)?),
                        (Some(_), None) => RowUpdate::Delete,
                        (Some(_), Some(new)) => RowUpdate::Replace(row_of(new)?),
                        (None, None) => return Err(ValueError::new(format!("{table} {uuid}: neither old nor new"))),
                    },
                    MonitorVersion::V2 | MonitorVersion::V3 => {
                        let obj = change.as_object().filter(|o| o.len() == 1).ok_or_else(|| {
                            ValueError::new(format!("{table} {uuid}: want one of initial/insert/delete/modify"))
                        })?;
                        let (kind, body) = obj.iter().next().expect("one entry");
                        match kind.as_str() {
                            "initial" => RowUpdate::Initial(row_of(body)?),
                            "insert" => RowUpdate::Insert(row_of(body)?),
                            "delete" => RowUpdate::Delete,
                            "modify" => RowUpdate::Modify(row_of(body)?),
                            other => return Err(ValueError::new(format!("{table} {uuid}: unknown change '{other}'"))),
                        }
                    }
                };
                list.push((uuid, update));
            }
            out.tables.insert(table.clone(), list);
        }
        Ok(out)
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
    pub(crate) rx: tokio::sync::mpsc::UnboundedReceiver<Json>,
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
        Some(self.parse(&params))
    }

    fn parse(&self, params: &Json) -> Result<MonitorEvent, RpcError> {
        let bad = |reason: String| RpcError::MalformedReply { method: "update".into(), reason };
        let arr = params.as_array().ok_or_else(|| bad("params are not an array".into()))?;
        let (updates, txn) = match self.version {
            MonitorVersion::V3 => (arr.get(2), arr.get(1).and_then(Json::as_str).map(str::to_owned)),
            _ => (arr.get(1), None),
        };
        let updates = updates.ok_or_else(|| bad("no table updates".into()))?;
        let updates = TableUpdates::from_json(updates, self.version, false).map_err(|e| bad(e.to_string()))?;
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
