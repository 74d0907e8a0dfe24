//! Transaction operations of RFC 7047 section 5.2 with typed conditions and mutations.

use serde::ser::{SerializeMap, SerializeTuple};
use serde::{Serialize, Serializer};
use serde_json::Value as Json;

use crate::error::ValidationError;
use crate::schema::{DatabaseSchema, WriteMode};
use crate::value::{NamedUuid, Row, Uuid, Value};

/// A condition function (RFC 7047 section 5.1, `<function>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `>=`
    Ge,
    /// `>`
    Gt,
    /// `includes`: the column's set/map contains every element of the value.
    Includes,
    /// `excludes`: the column's set/map contains no element of the value.
    Excludes,
}

impl Function {
    fn as_str(self) -> &'static str {
        match self {
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Eq => "==",
            Self::Ne => "!=",
            Self::Ge => ">=",
            Self::Gt => ">",
            Self::Includes => "includes",
            Self::Excludes => "excludes",
        }
    }
}

/// `[column, function, value]`: selects rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// Column name (`_uuid` included).
    pub column: String,
    /// Comparison.
    pub function: Function,
    /// Operand.
    pub value: Value,
}

impl Condition {
    /// Any function.
    pub fn new(column: impl Into<String>, function: Function, value: impl Into<Value>) -> Self {
        Condition { column: column.into(), function, value: value.into() }
    }
    /// `column == value`
    pub fn eq(column: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::new(column, Function::Eq, value)
    }
    /// `column != value`
    pub fn ne(column: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::new(column, Function::Ne, value)
    }
    /// `column includes value`
    pub fn includes(column: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::new(column, Function::Includes, value)
    }
    /// `column excludes value`
    pub fn excludes(column: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::new(column, Function::Excludes, value)
    }
    /// `_uuid == uuid`: the row with this UUID.
    pub fn uuid(uuid: &Uuid) -> Self {
        Self::eq("_uuid", uuid.clone())
    }
}

/// `[column, function-or-mutator, value]`.
fn triple<S: Serializer>(s: S, column: &str, op: &str, value: &Value) -> Result<S::Ok, S::Error> {
    let mut t = s.serialize_tuple(3)?;
    t.serialize_element(column)?;
    t.serialize_element(op)?;
    t.serialize_element(value)?;
    t.end()
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        triple(s, &self.column, self.function.as_str(), &self.value)
    }
}

/// A mutator (RFC 7047 section 5.1, `<mutator>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutator {
    /// `+=`
    Add,
    /// `-=`
    Sub,
    /// `*=`
    Mul,
    /// `/=`
    Div,
    /// `%=`
    Mod,
    /// `insert`: add set elements or map pairs (existing map keys are kept).
    Insert,
    /// `delete`: remove set elements, map pairs, or map keys given as a set.
    Delete,
}

impl Mutator {
    fn as_str(self) -> &'static str {
        match self {
            Self::Add => "+=",
            Self::Sub => "-=",
            Self::Mul => "*=",
            Self::Div => "/=",
            Self::Mod => "%=",
            Self::Insert => "insert",
            Self::Delete => "delete",
        }
    }
}

/// `[column, mutator, value]`: an in-place change.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    /// Column name.
    pub column: String,
    /// How to change it.
    pub mutator: Mutator,
    /// Operand.
    pub value: Value,
}

impl Mutation {
    /// Any mutator.
    pub fn new(column: impl Into<String>, mutator: Mutator, value: impl Into<Value>) -> Self {
        Mutation { column: column.into(), mutator, value: value.into() }
    }
    /// Insert elements into a set or pairs into a map.
    pub fn insert(column: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::new(column, Mutator::Insert, value)
    }
    /// Delete elements from a set, pairs from a map, or keys (given as a set) from a map.
    pub fn delete(column: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::new(column, Mutator::Delete, value)
    }
}

impl Serialize for Mutation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        triple(s, &self.column, self.mutator.as_str(), &self.value)
    }
}

/// What a `wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// The selected rows equal the given rows.
    Equal,
    /// The selected rows differ from the given rows.
    NotEqual,
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// Insert a row; `uuid_name` lets later operations refer to it.
    Insert {
        /// Table.
        table: String,
        /// Column values.
        row: Row,
        /// Symbolic name.
        uuid_name: Option<NamedUuid>,
    },
    /// Read rows.
    Select {
        /// Table.
        table: String,
        /// Conditions (all must hold).
        conditions: Vec<Condition>,
        /// Columns to return; `None` for all.
        columns: Option<Vec<String>>,
    },
    /// Set columns of matching rows.
    Update {
        /// Table.
        table: String,
        /// Conditions.
        conditions: Vec<Condition>,
        /// New values.
        row: Row,
    },
    /// Change columns of matching rows in place.
    Mutate {
        /// Table.
        table: String,
        /// Conditions.
        conditions: Vec<Condition>,
        /// Changes.
        mutations: Vec<Mutation>,
    },
    /// Delete matching rows.
    Delete {
        /// Table.
        table: String,
        /// Conditions.
        conditions: Vec<Condition>,
    },
    /// Wait until the matching rows' columns equal (or differ from) `rows`; with a timeout of
    /// zero this is the optimistic-concurrency "verify" of what was read.
    Wait {
        /// Table.
        table: String,
        /// Conditions.
        conditions: Vec<Condition>,
        /// Columns compared.
        columns: Vec<String>,
        /// Equal or not equal.
        until: Until,
        /// Expected rows (only `columns`).
        rows: Vec<Row>,
        /// Milliseconds; `None` waits for ever.
        timeout_ms: Option<u64>,
    },
    /// Make the transaction durable (or not) on commit.
    Commit {
        /// Wait for the write to reach disk.
        durable: bool,
    },
    /// Abort the transaction (for tests and dry runs).
    Abort,
    /// Text for the database log.
    Comment {
        /// The comment.
        text: String,
    },
    /// Fail unless this session holds the lock.
    Assert {
        /// Lock name.
        lock: String,
    },
}

impl Operation {
    /// The `op` name.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Insert { .. } => "insert",
            Operation::Select { .. } => "select",
            Operation::Update { .. } => "update",
            Operation::Mutate { .. } => "mutate",
            Operation::Delete { .. } => "delete",
            Operation::Wait { .. } => "wait",
            Operation::Commit { .. } => "commit",
            Operation::Abort => "abort",
            Operation::Comment { .. } => "comment",
            Operation::Assert { .. } => "assert",
        }
    }

    /// The table it acts on, if any.
    pub fn table(&self) -> Option<&str> {
        match self {
            Operation::Insert { table, .. }
            | Operation::Select { table, .. }
            | Operation::Update { table, .. }
            | Operation::Mutate { table, .. }
            | Operation::Delete { table, .. }
            | Operation::Wait { table, .. } => Some(table),
            _ => None,
        }
    }

    /// The JSON form sent in `transact`. (A transaction is written to the wire with this
    /// type's `Serialize`, without building this value.)
    pub fn to_json(&self) -> Json {
        serde_json::to_value(self).expect("an operation serializes to JSON")
    }

    /// Checks tables, columns and values against the schema.
    pub fn validate(&self, schema: &DatabaseSchema) -> Result<(), ValidationError> {
        let check_conditions = |table: &str, conditions: &[Condition]| {
            conditions.iter().try_for_each(|c| check_operand(schema, table, &c.column, &c.value))
        };
        // Also when nothing else names a column (a select or delete of every row).
        if let Some(table) = self.table() {
            schema.table(table)?;
        }
        match self {
            Operation::Insert { table, row, .. } => schema.validate_row(table, row, WriteMode::Insert),
            Operation::Update { table, conditions, row } => {
                check_conditions(table, conditions)?;
                schema.validate_row(table, row, WriteMode::Update)
            }
            Operation::Select { table, conditions, columns } => {
                check_conditions(table, conditions)?;
                columns.iter().flatten().try_for_each(|c| schema.column(table, c).map(drop))
            }
            Operation::Mutate { table, conditions, mutations } => {
                check_conditions(table, conditions)?;
                for m in mutations {
                    let col = schema.column(table, &m.column)?;
                    if !col.mutable || m.column.starts_with('_') {
                        return Err(ValidationError::ReadOnly {
                            table: table.clone(),
                            column: m.column.clone(),
                            why: String::new(),
                        });
                    }
                    check_operand(schema, table, &m.column, &m.value)?;
                }
                Ok(())
            }
            Operation::Delete { table, conditions } => check_conditions(table, conditions),
            Operation::Wait { table, conditions, columns, .. } => {
                check_conditions(table, conditions)?;
                columns.iter().try_for_each(|c| schema.column(table, c).map(drop))
            }
            Operation::Commit { .. } | Operation::Abort | Operation::Comment { .. } | Operation::Assert { .. } => {
                Ok(())
            }
        }
    }
}

impl Serialize for Operation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("op", self.name())?;
        if let Some(table) = self.table() {
            m.serialize_entry("table", table)?;
        }
        match self {
            Operation::Insert { row, uuid_name, .. } => {
                m.serialize_entry("row", row)?;
                if let Some(n) = uuid_name {
                    m.serialize_entry("uuid-name", n.as_str())?;
                }
            }
            Operation::Select { conditions, columns, .. } => {
                m.serialize_entry("where", conditions)?;
                if let Some(c) = columns {
                    m.serialize_entry("columns", c)?;
                }
            }
            Operation::Update { conditions, row, .. } => {
                m.serialize_entry("where", conditions)?;
                m.serialize_entry("row", row)?;
            }
            Operation::Mutate { conditions, mutations, .. } => {
                m.serialize_entry("where", conditions)?;
                m.serialize_entry("mutations", mutations)?;
            }
            Operation::Delete { conditions, .. } => m.serialize_entry("where", conditions)?,
            Operation::Wait { conditions, columns, until, rows, timeout_ms, .. } => {
                m.serialize_entry("where", conditions)?;
                m.serialize_entry("columns", columns)?;
                m.serialize_entry("until", if *until == Until::Equal { "==" } else { "!=" })?;
                m.serialize_entry("rows", rows)?;
                if let Some(t) = timeout_ms {
                    m.serialize_entry("timeout", t)?;
                }
            }
            Operation::Commit { durable } => m.serialize_entry("durable", durable)?,
            Operation::Abort => {}
            Operation::Comment { text } => m.serialize_entry("comment", text)?,
            Operation::Assert { lock } => m.serialize_entry("lock", lock)?,
        }
        m.end()
    }
}

/// Checks the atoms of a condition or mutation operand against the column's types. The element
/// count is not checked: operands may hold any number of elements, and a set of map keys is a
/// valid operand of a map `delete` or `excludes`.
fn check_operand(schema: &DatabaseSchema, table: &str, column: &str, value: &Value) -> Result<(), ValidationError> {
    let kind = &schema.column(table, column)?.kind;
    let bad = |reason: String| ValidationError::BadValue { table: table.to_owned(), column: column.to_owned(), reason };
    match (value, &kind.value) {
        (Value::Map(entries), Some(vt)) => entries.iter().try_for_each(|(k, v)| {
            kind.key.check(k).map_err(|e| bad(format!("map key: {e}")))?;
            vt.check(v).map_err(|e| bad(format!("map value: {e}")))
        }),
        (Value::Map(_), None) => Err(bad("a map was given but the column is not a map".into())),
        (v, _) => v.as_set().iter().try_for_each(|a| {
            // Arithmetic mutators on integer columns take a plain integer; the key check
            // covers the type, the range is the server's to judge after the arithmetic.
            match (&kind.key.atomic, a) {
                (crate::schema::AtomicType::Integer, crate::value::Atom::Integer(_)) => Ok(()),
                _ => kind.key.check(a).map_err(bad),
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_table_is_refused_even_without_columns() {
        let schema =
            DatabaseSchema::from_json(&json!({"name": "D", "tables": {"T": {"columns": {"c": {"type": "string"}}}}}))
                .unwrap();
        let ops = [
            Operation::Select { table: "Nope".into(), conditions: vec![], columns: None },
            Operation::Delete { table: "Nope".into(), conditions: vec![] },
            Operation::Mutate { table: "Nope".into(), conditions: vec![], mutations: vec![] },
            Operation::Wait {
                table: "Nope".into(),
                conditions: vec![],
                columns: vec![],
                until: Until::Equal,
                rows: vec![],
                timeout_ms: Some(0),
            },
        ];
        for op in ops {
            assert!(
                matches!(op.validate(&schema), Err(ValidationError::UnknownTable { ref table, .. }) if table == "Nope"),
                "{op:?}"
            );
        }
        Operation::Select { table: "T".into(), conditions: vec![], columns: None }.validate(&schema).unwrap();
    }
}
