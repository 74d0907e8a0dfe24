//! Transactions as values: a builder that collects operations (nothing is sent while building),
//! validation against the schema before sending, and the reply turned into typed results or a
//! typed error for the first operation that failed.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::ser::SerializeSeq;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value as Json;

use crate::codec::StrPool;
use crate::error::{OvsdbError, TransactError, ValidationError};
use crate::operation::{Condition, Mutation, Operation, Until};
use crate::schema::DatabaseSchema;
use crate::value::{Atom, NamedUuid, Row, Uuid, Value};

/// A transaction being built.
///
/// ```
/// use ovsdb_client::{Condition, Mutation, Row, Transaction, Value};
/// let mut tx = Transaction::new("Open_vSwitch");
/// let iface = tx.insert("Interface", Row::new().with("name", "vx1").with("type", "vxlan"));
/// let port = tx.insert("Port", Row::new().with("name", "vx1").with("interfaces", Value::set([iface])));
/// tx.mutate("Bridge", vec![Condition::eq("name", "br-tun")], vec![Mutation::insert("ports", Value::set([port]))]);
/// assert_eq!(tx.len(), 3);
/// ```
#[derive(Debug, Clone)]
pub struct Transaction {
    database: String,
    ops: Vec<Operation>,
    schema: Option<Arc<DatabaseSchema>>,
    next_name: u32,
    /// Strings, sets and maps of the operations, one copy of each. A transaction that creates
    /// thousands of ports repeats nearly all of them (column names, `external_ids` keys and
    /// values, whole `external_ids` maps shared by a Port and its Interface): 20,000 tunnel
    /// ports took 57 MiB of operations without this and 28 MiB with it.
    shared: StrPool,
}

impl Transaction {
    /// An empty transaction on `database`.
    pub fn new(database: impl Into<String>) -> Self {
        Transaction {
            database: database.into(),
            ops: Vec::new(),
            schema: None,
            next_name: 0,
            shared: StrPool::default(),
        }
    }

    /// An empty transaction that is validated against `schema` before it is sent.
    pub fn with_schema(schema: Arc<DatabaseSchema>) -> Self {
        Transaction {
            database: schema.name.clone(),
            ops: Vec::new(),
            schema: Some(schema),
            next_name: 0,
            shared: StrPool::default(),
        }
    }

    /// The database.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The operations so far.
    pub fn operations(&self) -> &[Operation] {
        &self.ops
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Appends any operation, returning its index in the results.
    pub fn push(&mut self, mut op: Operation) -> usize {
        let mut share_row = |row: &mut Row| {
            self.shared.intern_row(row);
            row.shrink_to_fit();
        };
        match &mut op {
            Operation::Insert { row, .. } | Operation::Update { row, .. } => share_row(row),
            Operation::Wait { rows, .. } => rows.iter_mut().for_each(share_row),
            Operation::Mutate { mutations, .. } => {
                mutations.iter_mut().for_each(|m| self.shared.intern_value(&mut m.value))
            }
            _ => {}
        }
        self.ops.push(op);
        self.ops.len() - 1
    }

    /// Inserts a row; the returned name refers to it in later operations of this transaction,
    /// and [`TransactOutcome::uuid`] gives its real UUID after commit.
    pub fn insert(&mut self, table: impl Into<String>, row: Row) -> NamedUuid {
        let name = NamedUuid(format!("row{}", self.next_name).into());
        self.next_name += 1;
        self.push(Operation::Insert { table: table.into(), row, uuid_name: Some(name.clone()) });
        name
    }

    /// Reads rows; the result index gives them via [`TransactOutcome::rows`].
    pub fn select(
        &mut self,
        table: impl Into<String>,
        conditions: Vec<Condition>,
        columns: Option<Vec<String>>,
    ) -> usize {
        self.push(Operation::Select { table: table.into(), conditions, columns })
    }

    /// Sets columns of matching rows.
    pub fn update(&mut self, table: impl Into<String>, conditions: Vec<Condition>, row: Row) -> usize {
        self.push(Operation::Update { table: table.into(), conditions, row })
    }

    /// Changes columns of matching rows in place.
    pub fn mutate(&mut self, table: impl Into<String>, conditions: Vec<Condition>, mutations: Vec<Mutation>) -> usize {
        self.push(Operation::Mutate { table: table.into(), conditions, mutations })
    }

    /// Deletes matching rows.
    pub fn delete(&mut self, table: impl Into<String>, conditions: Vec<Condition>) -> usize {
        self.push(Operation::Delete { table: table.into(), conditions })
    }

    /// A general `wait`.
    pub fn wait(
        &mut self,
        table: impl Into<String>,
        conditions: Vec<Condition>,
        columns: Vec<String>,
        until: Until,
        rows: Vec<Row>,
        timeout_ms: Option<u64>,
    ) -> usize {
        self.push(Operation::Wait { table: table.into(), conditions, columns, until, rows, timeout_ms })
    }

    /// Guards a read-modify-write: the transaction fails (see
    /// [`TransactError::is_verify_failure`]) unless row `uuid` still has, in `columns`, the
    /// values `as_read` had. This is the IDL's `verify`: a `wait` with timeout 0.
    pub fn verify(&mut self, table: impl Into<String>, uuid: &Uuid, as_read: &Row, columns: &[&str]) -> usize {
        let mut expected = Row::new();
        for c in columns {
            if let Some(v) = as_read.get(c) {
                expected.set(*c, v.clone());
            }
        }
        self.wait(
            table,
            vec![Condition::uuid(uuid)],
            columns.iter().map(|c| c.to_string()).collect(),
            Until::Equal,
            vec![expected],
            Some(0),
        )
    }

    /// Asks for a durable (or not) commit.
    pub fn commit(&mut self, durable: bool) -> usize {
        self.push(Operation::Commit { durable })
    }

    /// Makes the transaction fail with "aborted" (nothing is applied).
    pub fn abort(&mut self) -> usize {
        self.push(Operation::Abort)
    }

    /// Adds a comment to the database log.
    pub fn comment(&mut self, text: impl Into<String>) -> usize {
        self.push(Operation::Comment { text: text.into() })
    }

    /// Fails unless this session holds `lock`.
    pub fn assert_lock(&mut self, lock: impl Into<String>) -> usize {
        self.push(Operation::Assert { lock: lock.into() })
    }

    /// Checks the operations against the schema (when the transaction has one) and checks that
    /// every named-uuid is inserted before it is used.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut defined: BTreeSet<&str> = BTreeSet::new();
        for (index, op) in self.ops.iter().enumerate() {
            if let Some(schema) = &self.schema {
                op.validate(schema)?;
            }
            for name in named_uuids_used(op) {
                if !defined.contains(name.as_str()) {
                    return Err(ValidationError::BadOperation {
                        index,
                        reason: format!("named-uuid '{}' is used before any insert defines it", name.as_str()),
                    });
                }
            }
            if let Operation::Assert { lock } = op {
                if !crate::value::is_id(lock) {
                    return Err(ValidationError::BadOperation {
                        index,
                        reason: format!(
                            "lock name '{lock}' is not an OVSDB <id> (letters, digits and '_', not starting with a digit)"
                        ),
                    });
                }
            }
            if let Operation::Insert { uuid_name: Some(n), .. } = op {
                if !defined.insert(n.as_str()) {
                    return Err(ValidationError::BadOperation {
                        index,
                        reason: format!("named-uuid '{}' is defined twice", n.as_str()),
                    });
                }
            }
        }
        Ok(())
    }

    /// The `transact` params: `[db, op...]`.
    pub fn to_params(&self) -> Json {
        serde_json::to_value(self.params()).expect("operations serialize to JSON")
    }

    /// The `transact` params as they are written to the wire: straight from the operations,
    /// since as a `serde_json::Value` the params of a 20,000-port transaction took 96 MB.
    pub(crate) fn params(&self) -> impl Serialize + '_ {
        struct Params<'a>(&'a Transaction);
        impl Serialize for Params<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(1 + self.0.ops.len()))?;
                seq.serialize_element(&self.0.database)?;
                for op in &self.0.ops {
                    seq.serialize_element(op)?;
                }
                seq.end()
            }
        }
        Params(self)
    }

    /// Turns a `transact` result array into an outcome or the first error.
    pub fn interpret(&self, reply: &Json) -> Result<TransactOutcome, TransactError> {
        let results = reply.as_array().ok_or_else(|| {
            TransactError::MalformedReply(format!("result is not an array: {}", crate::value::short(reply)))
        })?;
        let shapes: Vec<OpShape> = self.ops.iter().map(OpShape::of).collect();
        interpret(&shapes, results.len(), |i| Cow::Borrowed(&results[i]))
    }

    /// What reading the reply needs of the operations, without their rows.
    pub(crate) fn shapes(&self) -> Vec<OpShape<'_>> {
        self.ops.iter().map(OpShape::of).collect()
    }

    /// [`Transaction::shapes`] taking the transaction, so its rows go.
    pub(crate) fn into_shapes(self) -> Vec<OpShape<'static>> {
        self.ops.into_iter().map(OpShape::owned).collect()
    }
}

/// What reading a `transact` reply needs of one operation. Kept apart from the operation so
/// that a transaction's rows can be dropped once written, while the server works on it
/// ([`crate::Connection::transact_owned`]).
pub(crate) struct OpShape<'a> {
    name: &'static str,
    table: Option<Cow<'a, str>>,
    expect: Expect,
}

enum Expect {
    /// `insert`: a UUID, known by this name in the transaction.
    Uuid(Option<NamedUuid>),
    /// `select`.
    Rows,
    /// `update`, `mutate`, `delete`.
    Count,
    /// Everything else.
    Nothing,
}

impl<'a> OpShape<'a> {
    fn of(op: &'a Operation) -> Self {
        let expect = match op {
            Operation::Insert { uuid_name, .. } => Expect::Uuid(uuid_name.clone()),
            Operation::Select { .. } => Expect::Rows,
            Operation::Update { .. } | Operation::Mutate { .. } | Operation::Delete { .. } => Expect::Count,
            _ => Expect::Nothing,
        };
        OpShape { name: op.name(), table: op.table().map(Cow::Borrowed), expect }
    }

    fn owned(op: Operation) -> OpShape<'static> {
        let name = op.name();
        let (table, expect) = match op {
            Operation::Insert { table, uuid_name, .. } => (Some(table), Expect::Uuid(uuid_name)),
            Operation::Select { table, .. } => (Some(table), Expect::Rows),
            Operation::Update { table, .. } | Operation::Mutate { table, .. } | Operation::Delete { table, .. } => {
                (Some(table), Expect::Count)
            }
            Operation::Wait { table, .. } => (Some(table), Expect::Nothing),
            _ => (None, Expect::Nothing),
        };
        OpShape { name, table: table.map(Cow::Owned), expect }
    }
}

/// [`Transaction::interpret`] from the result's JSON text, one result at a time (the reply to
/// a transaction of thousands of operations is megabytes).
pub(crate) fn interpret_text(shapes: &[OpShape], reply: &[u8]) -> Result<TransactOutcome, TransactError> {
    let results: Vec<&RawValue> = serde_json::from_slice(reply).map_err(|_| {
        let text = String::from_utf8_lossy(&reply[..reply.len().min(120)]).into_owned();
        TransactError::MalformedReply(format!("result is not an array: {text}"))
    })?;
    // Each was parsed once already, as part of the reply, so parsing it again cannot fail.
    interpret(shapes, results.len(), |i| Cow::Owned(serde_json::from_str(results[i].get()).unwrap_or_default()))
}

fn named_uuids_used(op: &Operation) -> Vec<&NamedUuid> {
    let values: Vec<&Value> = match op {
        Operation::Insert { row, .. } | Operation::Update { row, .. } => row.iter().map(|(_, v)| v).collect(),
        Operation::Mutate { mutations, .. } => mutations.iter().map(|m| &m.value).collect(),
        _ => Vec::new(),
    };
    values
        .into_iter()
        .flat_map(|v| v.as_set().iter().chain(v.as_map().iter().flat_map(|(k, v)| [k, v])))
        .filter_map(|a| match a {
            Atom::NamedUuid(n) => Some(n),
            _ => None,
        })
        .collect()
}

/// The result of one successful operation.
#[derive(Debug, Clone, PartialEq)]
pub enum OpResult {
    /// `insert`: the new row's UUID.
    Inserted(Uuid),
    /// `select`: the rows.
    Rows(Vec<Row>),
    /// `update`, `mutate`, `delete`: how many rows matched.
    Count(u64),
    /// Operations without a result.
    Empty,
}

/// A committed transaction's results, one per operation.
#[derive(Debug, Clone, Default)]
pub struct TransactOutcome {
    /// Results in operation order.
    pub results: Vec<OpResult>,
    named: HashMap<NamedUuid, Uuid>,
}

impl TransactOutcome {
    /// The real UUID of a row inserted under `name`.
    pub fn uuid(&self, name: &NamedUuid) -> Option<&Uuid> {
        self.named.get(name)
    }

    /// Rows of the `select` at `index` (empty for another kind of operation).
    pub fn rows(&self, index: usize) -> &[Row] {
        match self.results.get(index) {
            Some(OpResult::Rows(r)) => r,
            _ => &[],
        }
    }

    /// Count of the update/mutate/delete at `index`.
    pub fn count(&self, index: usize) -> Option<u64> {
        match self.results.get(index) {
            Some(OpResult::Count(c)) => Some(*c),
            _ => None,
        }
    }
}

/// Maps a `transact` reply onto the operations that produced it (RFC 7047 section 4.1.3): one
/// result per operation, `null` after the first failure, and possibly one extra error for a
/// failure at commit time.
fn interpret<'a>(
    ops: &[OpShape],
    count: usize,
    result: impl Fn(usize) -> Cow<'a, Json>,
) -> Result<TransactOutcome, TransactError> {
    if count < ops.len() {
        return Err(TransactError::MalformedReply(format!("{count} results for {} operations", ops.len())));
    }
    for index in 0..count {
        if let Some(error) = OvsdbError::from_json(&result(index)) {
            return Err(match ops.get(index) {
                Some(op) => TransactError::Operation {
                    index,
                    op: op.name,
                    table: op.table.as_deref().unwrap_or_default().to_owned(),
                    error,
                },
                None => TransactError::Commit(error),
            });
        }
    }
    let mut outcome = TransactOutcome::default();
    for (index, op) in ops.iter().enumerate() {
        let r = result(index);
        let r = r.as_ref();
        let result = match &op.expect {
            Expect::Uuid(uuid_name) => {
                let uuid = r
                    .get("uuid")
                    .and_then(|u| crate::value::Atom::from_json(u).ok())
                    .and_then(|a| a.as_uuid().cloned())
                    .ok_or_else(|| TransactError::MalformedReply(format!("insert result without uuid: {r}")))?;
                if let Some(n) = uuid_name {
                    outcome.named.insert(n.clone(), uuid.clone());
                }
                OpResult::Inserted(uuid)
            }
            Expect::Rows => {
                let rows = r.get("rows").and_then(Json::as_array).ok_or_else(|| {
                    TransactError::MalformedReply(format!("select result without rows: {}", crate::value::short(r)))
                })?;
                let rows = rows
                    .iter()
                    .map(Row::from_json)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| TransactError::MalformedReply(e.to_string()))?;
                OpResult::Rows(rows)
            }
            Expect::Count => OpResult::Count(
                r.get("count")
                    .and_then(Json::as_u64)
                    .ok_or_else(|| TransactError::MalformedReply(format!("result without count: {r}")))?,
            ),
            Expect::Nothing => OpResult::Empty,
        };
        outcome.results.push(result);
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::OvsdbErrorKind;
    use serde_json::json;

    #[test]
    fn builder_json_shape() {
        let mut tx = Transaction::new("Open_vSwitch");
        let i = tx.insert("Interface", Row::new().with("name", "p"));
        tx.mutate("Bridge", vec![Condition::eq("name", "br")], vec![Mutation::insert("ports", Value::set([i]))]);
        tx.comment("hi");
        let p = tx.to_params();
        assert_eq!(p[0], "Open_vSwitch");
        assert_eq!(p[1]["uuid-name"], "row0");
        assert_eq!(p[2]["mutations"][0], json!(["ports", "insert", ["set", [["named-uuid", "row0"]]]]));
        assert_eq!(p[3], json!({"op": "comment", "comment": "hi"}));
        tx.validate().unwrap();
    }

    #[test]
    fn operations_share_repeated_maps_and_strings() {
        let mut tx = Transaction::new("Open_vSwitch");
        let ids = || Value::map([("overlay-kind", "tunnel"), ("overlay-peer", "h2")]);
        let i = tx.insert("Interface", Row::new().with("name", "vx1").with("external_ids", ids()));
        tx.insert(
            "Port",
            Row::new().with("name", "vx1").with("interfaces", Value::set([i])).with("external_ids", ids()),
        );
        let rows: Vec<&Row> = tx
            .operations()
            .iter()
            .map(|op| match op {
                Operation::Insert { row, .. } => row,
                other => panic!("{other:?}"),
            })
            .collect();
        let map = |r: &Row| match r.get("external_ids") {
            Some(Value::Map(m)) => m.clone(),
            other => panic!("{other:?}"),
        };
        assert!(Arc::ptr_eq(&map(rows[0]), &map(rows[1])));
        let name = |r: &Row| match r.get("name") {
            Some(Value::Atom(Atom::String(s))) => s.clone(),
            other => panic!("{other:?}"),
        };
        assert!(Arc::ptr_eq(&name(rows[0]), &name(rows[1])));
        // Sharing changes nothing on the wire.
        assert_eq!(
            tx.to_params()[1]["row"]["external_ids"],
            json!(["map", [["overlay-kind", "tunnel"], ["overlay-peer", "h2"]]])
        );
    }

    #[test]
    fn named_uuid_must_be_defined_first() {
        let mut tx = Transaction::new("db");
        tx.update("T", vec![], Row::new().with("r", NamedUuid::new("later").unwrap()));
        let e = tx.validate().unwrap_err().to_string();
        assert!(e.contains("operation 0") && e.contains("later"), "{e}");
    }

    #[test]
    fn results_are_mapped_and_errors_typed() {
        let mut tx = Transaction::new("db");
        let n = tx.insert("T", Row::new());
        tx.select("T", vec![], None);
        tx.delete("T", vec![]);
        let u = "550e8400-e29b-41d4-a716-446655440000";
        let out = tx.interpret(&json!([{"uuid": ["uuid", u]}, {"rows": [{"a": 1}]}, {"count": 2}])).unwrap();
        assert_eq!(out.uuid(&n).unwrap().to_string(), u);
        assert_eq!(out.rows(1).len(), 1);
        assert_eq!(out.count(2), Some(2));

        let e = tx
            .interpret(&json!([{"uuid": ["uuid", u]}, {"error": "constraint violation", "details": "x"}, null]))
            .unwrap_err();
        match &e {
            TransactError::Operation { index: 1, op: "select", error, .. } => {
                assert_eq!(error.kind, OvsdbErrorKind::ConstraintViolation)
            }
            other => panic!("{other:?}"),
        }
        let e = tx
            .interpret(&json!([{"uuid": ["uuid", u]}, {"rows": []}, {"count": 0}, {"error": "referential integrity violation"}]))
            .unwrap_err();
        assert!(matches!(
            e,
            TransactError::Commit(OvsdbError { kind: OvsdbErrorKind::ReferentialIntegrityViolation, .. })
        ));
        assert!(matches!(tx.interpret(&json!([{}])), Err(TransactError::MalformedReply(_))));
        assert!(matches!(tx.interpret(&json!("x")), Err(TransactError::MalformedReply(_))));
    }

    #[test]
    fn assert_lock_name_must_be_an_id() {
        let mut tx = Transaction::new("db");
        tx.assert_lock("ok_lock1");
        tx.validate().unwrap();
        tx.assert_lock("not-an-id");
        let e = tx.validate().unwrap_err().to_string();
        assert!(e.contains("operation 1") && e.contains("not-an-id"), "{e}");
    }

    #[test]
    fn verify_is_a_zero_timeout_wait() {
        let mut tx = Transaction::new("db");
        let u = Uuid::parse("550e8400-e29b-41d4-a716-446655440000").unwrap();
        tx.verify("Bridge", &u, &Row::new().with("ports", Value::empty_set()).with("name", "x"), &["ports"]);
        let p = tx.to_params();
        assert_eq!(p[1]["timeout"], 0);
        assert_eq!(p[1]["until"], "==");
        assert_eq!(p[1]["rows"], json!([{"ports": ["set", []]}]));
    }
}
