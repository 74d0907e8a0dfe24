//! Database schemas (RFC 7047 section 3.2): parsing, value normalisation and validation of rows
//! before they are sent, so a mistake is reported with its table and column instead of as an
//! opaque server error.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value as Json;

use crate::error::{SchemaError, ValidationError};
use crate::value::{Atom, Row, Value};

/// The atomic types of RFC 7047.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomicType {
    /// `integer`
    Integer,
    /// `real`
    Real,
    /// `boolean`
    Boolean,
    /// `string`
    String,
    /// `uuid`
    Uuid,
}

impl AtomicType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "integer" => Self::Integer,
            "real" => Self::Real,
            "boolean" => Self::Boolean,
            "string" => Self::String,
            "uuid" => Self::Uuid,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Integer => "integer",
            Self::Real => "real",
            Self::Boolean => "boolean",
            Self::String => "string",
            Self::Uuid => "uuid",
        }
    }
}

/// Whether a reference keeps its target alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RefType {
    /// The referenced row must exist; deleting it while referenced fails.
    #[default]
    Strong,
    /// The reference is dropped when the referenced row goes.
    Weak,
}

/// The type of a key or value: an atomic type with optional constraints.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseType {
    /// The atomic type.
    pub atomic: AtomicType,
    /// Allowed values, when the schema enumerates them.
    pub enumeration: Option<Vec<Atom>>,
    /// Inclusive integer bounds.
    pub min_integer: Option<i64>,
    /// Inclusive integer bounds.
    pub max_integer: Option<i64>,
    /// Inclusive real bounds.
    pub min_real: Option<f64>,
    /// Inclusive real bounds.
    pub max_real: Option<f64>,
    /// String length bounds, in bytes as ovsdb-server counts them.
    pub min_length: Option<u64>,
    /// String length bounds.
    pub max_length: Option<u64>,
    /// For a uuid, the table it refers to.
    pub ref_table: Option<String>,
    /// For a uuid with `ref_table`, strong or weak.
    pub ref_type: RefType,
}

impl BaseType {
    fn of(atomic: AtomicType) -> Self {
        BaseType {
            atomic,
            enumeration: None,
            min_integer: None,
            max_integer: None,
            min_real: None,
            max_real: None,
            min_length: None,
            max_length: None,
            ref_table: None,
            ref_type: RefType::Strong,
        }
    }

    fn parse(json: &Json, at: &dyn Fn(&str) -> SchemaError) -> Result<Self, SchemaError> {
        if let Some(s) = json.as_str() {
            return AtomicType::parse(s).map(Self::of).ok_or_else(|| at(&format!("unknown atomic type '{s}'")));
        }
        let obj = json.as_object().ok_or_else(|| at("base type is neither a string nor an object"))?;
        let atomic = obj
            .get("type")
            .and_then(Json::as_str)
            .and_then(AtomicType::parse)
            .ok_or_else(|| at("base type lacks a valid \"type\""))?;
        let mut base = Self::of(atomic);
        if let Some(e) = obj.get("enum") {
            let v = Value::from_json(e).map_err(|err| at(&format!("bad enum: {err}")))?;
            base.enumeration = Some(v.as_set().to_vec());
        }
        base.min_integer = obj.get("minInteger").and_then(Json::as_i64);
        base.max_integer = obj.get("maxInteger").and_then(Json::as_i64);
        base.min_real = obj.get("minReal").and_then(Json::as_f64);
        base.max_real = obj.get("maxReal").and_then(Json::as_f64);
        base.min_length = obj.get("minLength").and_then(Json::as_u64);
        base.max_length = obj.get("maxLength").and_then(Json::as_u64);
        base.ref_table = obj.get("refTable").and_then(Json::as_str).map(str::to_owned);
        if obj.get("refType").and_then(Json::as_str) == Some("weak") {
            base.ref_type = RefType::Weak;
        }
        Ok(base)
    }

    /// Checks one atom; `Err` says why it does not fit.
    pub fn check(&self, atom: &Atom) -> Result<(), String> {
        let ok_type = matches!(
            (self.atomic, atom),
            (AtomicType::Integer, Atom::Integer(_))
                | (AtomicType::Real, Atom::Real(_) | Atom::Integer(_))
                | (AtomicType::Boolean, Atom::Boolean(_))
                | (AtomicType::String, Atom::String(_))
                | (AtomicType::Uuid, Atom::Uuid(_) | Atom::NamedUuid(_))
        );
        if !ok_type {
            return Err(format!("{atom} is not of type {}", self.atomic.name()));
        }
        if let Some(allowed) = &self.enumeration {
            let fits = allowed.iter().any(|a| match (a, atom) {
                (Atom::Real(r), Atom::Integer(i)) => *r == *i as f64,
                _ => a == atom,
            });
            if !fits {
                let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
                return Err(format!("{atom} is not one of {}", list.join(", ")));
            }
        }
        match atom {
            Atom::Integer(i)
                if self.min_integer.is_some_and(|m| *i < m) || self.max_integer.is_some_and(|m| *i > m) =>
            {
                return Err(format!(
                    "{i} is outside {}..={}",
                    self.min_integer.map(|m| m.to_string()).unwrap_or_default(),
                    self.max_integer.map(|m| m.to_string()).unwrap_or_default()
                ));
            }
            Atom::Real(r) if self.min_real.is_some_and(|m| *r < m) || self.max_real.is_some_and(|m| *r > m) => {
                return Err(format!("{r} is outside the allowed range"));
            }
            Atom::String(s) => {
                let len = s.len() as u64;
                if self.min_length.is_some_and(|m| len < m) || self.max_length.is_some_and(|m| len > m) {
                    return Err(format!(
                        "string of {len} bytes is outside the allowed length {}..{}",
                        self.min_length.unwrap_or(0),
                        self.max_length.map(|m| m.to_string()).unwrap_or_default()
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The type of a column.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnType {
    /// Key type (the element type for a set).
    pub key: BaseType,
    /// Value type: present for a map.
    pub value: Option<BaseType>,
    /// Minimum number of elements (0 or 1).
    pub min: u64,
    /// Maximum number of elements; `None` is unlimited.
    pub max: Option<u64>,
}

impl ColumnType {
    /// Exactly one atom: encoded bare, and replaced whole by an update2 diff.
    pub fn is_scalar(&self) -> bool {
        self.value.is_none() && self.min == 1 && self.max == Some(1)
    }

    /// A map column.
    pub fn is_map(&self) -> bool {
        self.value.is_some()
    }

    fn parse(json: &Json, at: &dyn Fn(&str) -> SchemaError) -> Result<Self, SchemaError> {
        if json.is_string() {
            return Ok(ColumnType { key: BaseType::parse(json, at)?, value: None, min: 1, max: Some(1) });
        }
        let obj = json.as_object().ok_or_else(|| at("type is neither a string nor an object"))?;
        let key = BaseType::parse(obj.get("key").ok_or_else(|| at("type lacks \"key\""))?, at)?;
        let value = obj.get("value").map(|v| BaseType::parse(v, at)).transpose()?;
        let min = match obj.get("min") {
            None => 1,
            Some(m) => m.as_u64().filter(|m| *m <= 1).ok_or_else(|| at("\"min\" must be 0 or 1"))?,
        };
        let max = match obj.get("max") {
            None => Some(1),
            Some(Json::String(s)) if s == "unlimited" => None,
            Some(m) => Some(m.as_u64().filter(|m| *m >= 1).ok_or_else(|| at("\"max\" must be >= 1 or \"unlimited\""))?),
        };
        Ok(ColumnType { key, value, min, max })
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSchema {
    /// Column name.
    pub name: Arc<str>,
    /// Its type.
    pub kind: ColumnType,
    /// Not persisted across ovsdb-server restarts.
    pub ephemeral: bool,
    /// May be changed after insert.
    pub mutable: bool,
}

/// One table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSchema {
    /// Table name.
    pub name: String,
    /// Columns by name, including the implicit `_uuid` and `_version`.
    pub columns: BTreeMap<String, ColumnSchema>,
    /// Row limit, if any.
    pub max_rows: Option<u64>,
    /// Root tables keep rows that nothing references.
    pub is_root: bool,
    /// Column sets that must be unique.
    pub indexes: Vec<Vec<String>>,
}

impl TableSchema {
    /// A column by name.
    pub fn column(&self, name: &str) -> Option<&ColumnSchema> {
        self.columns.get(name)
    }
}

/// A database schema as `get_schema` returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseSchema {
    /// Database name (`Open_vSwitch`).
    pub name: String,
    /// Schema version.
    pub version: String,
    /// Tables by name.
    pub tables: BTreeMap<String, TableSchema>,
}

/// How a row is about to be written, which decides which columns may appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// A new row: immutable columns may be set.
    Insert,
    /// An update: immutable columns may not be written.
    Update,
}

impl DatabaseSchema {
    /// Parses the JSON `get_schema` returns (or a `.ovsschema` file).
    pub fn from_json(json: &Json) -> Result<Self, SchemaError> {
        let err = |location: String| {
            move |reason: &str| SchemaError { location: location.clone(), reason: reason.to_owned() }
        };
        let top = json.as_object().ok_or_else(|| err("schema".into())("not an object"))?;
        let name = top.get("name").and_then(Json::as_str).ok_or_else(|| err("schema".into())("no \"name\""))?;
        let version = top.get("version").and_then(Json::as_str).unwrap_or("").to_owned();
        let tables_json =
            top.get("tables").and_then(Json::as_object).ok_or_else(|| err("schema".into())("no \"tables\" object"))?;
        let mut tables = BTreeMap::new();
        for (tname, tjson) in tables_json {
            let at_table = err(format!("table {tname}"));
            let columns_json =
                tjson.get("columns").and_then(Json::as_object).ok_or_else(|| at_table("no \"columns\" object"))?;
            let mut columns = BTreeMap::new();
            for (cname, cjson) in columns_json {
                let at = err(format!("table {tname}, column {cname}"));
                let kind = ColumnType::parse(cjson.get("type").ok_or_else(|| at("no \"type\""))?, &at)?;
                columns.insert(
                    cname.clone(),
                    ColumnSchema {
                        name: Arc::from(cname.as_str()),
                        kind,
                        ephemeral: cjson.get("ephemeral").and_then(Json::as_bool).unwrap_or(false),
                        mutable: cjson.get("mutable").and_then(Json::as_bool).unwrap_or(true),
                    },
                );
            }
            for implicit in ["_uuid", "_version"] {
                columns.insert(
                    implicit.to_owned(),
                    ColumnSchema {
                        name: Arc::from(implicit),
                        kind: ColumnType { key: BaseType::of(AtomicType::Uuid), value: None, min: 1, max: Some(1) },
                        ephemeral: false,
                        mutable: false,
                    },
                );
            }
            let indexes = tjson
                .get("indexes")
                .and_then(Json::as_array)
                .map(|ix| {
                    ix.iter()
                        .filter_map(Json::as_array)
                        .map(|cols| cols.iter().filter_map(Json::as_str).map(str::to_owned).collect())
                        .collect()
                })
                .unwrap_or_default();
            tables.insert(
                tname.clone(),
                TableSchema {
                    name: tname.clone(),
                    columns,
                    max_rows: tjson.get("maxRows").and_then(Json::as_u64),
                    is_root: tjson.get("isRoot").and_then(Json::as_bool).unwrap_or(false),
                    indexes,
                },
            );
        }
        Ok(DatabaseSchema { name: name.to_owned(), version, tables })
    }

    /// A table, or an error naming it.
    pub fn table(&self, table: &str) -> Result<&TableSchema, ValidationError> {
        self.tables
            .get(table)
            .ok_or_else(|| ValidationError::UnknownTable { database: self.name.clone(), table: table.to_owned() })
    }

    /// A column, or an error naming the table and column.
    pub fn column(&self, table: &str, column: &str) -> Result<&ColumnSchema, ValidationError> {
        self.table(table)?
            .column(column)
            .ok_or_else(|| ValidationError::UnknownColumn { table: table.to_owned(), column: column.to_owned() })
    }

    /// Puts a value into the form its column declares: a bare atom in a set column becomes a
    /// set of one, a set of one in a scalar column becomes the atom. Reals that JSON wrote
    /// without a fraction come back as integers, so they are turned into reals where declared.
    pub fn normalize(kind: &ColumnType, value: Value) -> Value {
        let fix = |base: &BaseType, a: Atom| match (base.atomic, a) {
            (AtomicType::Real, Atom::Integer(i)) => Atom::Real(i as f64),
            (_, a) => a,
        };
        match value {
            Value::Atom(a) if kind.is_scalar() => Value::Atom(fix(&kind.key, a)),
            Value::Set(s) if kind.is_scalar() && s.len() == 1 => Value::Atom(fix(&kind.key, s[0].clone())),
            Value::Atom(a) if !kind.is_map() => Value::Set(Arc::from([fix(&kind.key, a)])),
            Value::Set(s) if kind.key.atomic == AtomicType::Real => {
                Value::set(s.iter().cloned().map(|a| fix(&kind.key, a)))
            }
            other => other,
        }
    }

    /// Normalises every column of a row from `table` (see [`DatabaseSchema::normalize`]);
    /// columns the schema does not know are left as they are.
    pub fn normalize_row(&self, table: &str, row: &mut Row) {
        let Ok(ts) = self.table(table) else { return };
        for (name, value) in row.values_mut() {
            if let Some(col) = ts.column(name) {
                let v = std::mem::replace(value, Value::empty_set());
                *value = Self::normalize(&col.kind, v);
            }
        }
    }

    /// Checks that `value` fits column `column` of `table`.
    pub fn validate_value(&self, table: &str, column: &str, value: &Value) -> Result<(), ValidationError> {
        let col = self.column(table, column)?;
        let bad =
            |reason: String| ValidationError::BadValue { table: table.to_owned(), column: column.to_owned(), reason };
        let kind = &col.kind;
        let count = value.len() as u64;
        match (value, kind.is_map()) {
            (Value::Map(entries), true) => {
                let vt = kind.value.as_ref().expect("map has a value type");
                for (k, v) in entries.iter() {
                    kind.key.check(k).map_err(|e| bad(format!("map key: {e}")))?;
                    vt.check(v).map_err(|e| bad(format!("map value for key {k}: {e}")))?;
                }
            }
            (Value::Map(_), false) => return Err(bad("a map was given but the column is not a map".into())),
            (_, true) => {
                if !value.is_empty() {
                    return Err(bad("the column is a map: give [\"map\", [[key, value], ...]]".into()));
                }
            }
            (v, false) => {
                for atom in v.as_set() {
                    kind.key.check(atom).map_err(bad)?;
                }
            }
        }
        if count < kind.min || kind.max.is_some_and(|m| count > m) {
            let max = kind.max.map(|m| m.to_string()).unwrap_or_else(|| "unlimited".into());
            return Err(bad(format!("{count} values given, the column takes {} to {max}", kind.min)));
        }
        Ok(())
    }

    /// Checks a whole row about to be inserted or written by an update.
    pub fn validate_row(&self, table: &str, row: &Row, mode: WriteMode) -> Result<(), ValidationError> {
        self.table(table)?;
        for (column, value) in row.iter() {
            let col = self.column(table, column)?;
            if column.starts_with('_') || (mode == WriteMode::Update && !col.mutable) {
                return Err(ValidationError::ReadOnly {
                    table: table.to_owned(),
                    column: column.to_owned(),
                    why: if column.starts_with('_') { String::new() } else { " after insert".to_owned() },
                });
            }
            self.validate_value(table, column, value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> DatabaseSchema {
        DatabaseSchema::from_json(&json!({
            "name": "Test", "version": "1.0.0",
            "tables": {
                "Port": {
                    "columns": {
                        "name": {"type": "string", "mutable": false},
                        "tag": {"type": {"key": {"type": "integer", "minInteger": 0, "maxInteger": 4095}, "min": 0, "max": 1}},
                        "trunks": {"type": {"key": {"type": "integer"}, "min": 0, "max": 4096}},
                        "vlan_mode": {"type": {"key": {"type": "string", "enum": ["set", ["access", "trunk"]]}, "min": 0, "max": 1}},
                        "interfaces": {"type": {"key": {"type": "uuid", "refTable": "Interface"}, "min": 1, "max": "unlimited"}},
                        "external_ids": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
                        "weight": {"type": "real"}
                    },
                    "indexes": [["name"]], "isRoot": false
                }
            }
        }))
        .unwrap()
    }

    #[test]
    fn parses_types_and_implicit_columns() {
        let s = schema();
        let port = s.table("Port").unwrap();
        assert!(port.column("name").unwrap().kind.is_scalar());
        assert!(!port.column("name").unwrap().mutable);
        assert!(!port.column("tag").unwrap().kind.is_scalar());
        assert_eq!(port.column("interfaces").unwrap().kind.max, None);
        assert_eq!(port.column("interfaces").unwrap().kind.key.ref_table.as_deref(), Some("Interface"));
        assert!(port.column("external_ids").unwrap().kind.is_map());
        assert!(port.column("_uuid").is_some());
        assert_eq!(port.indexes, vec![vec!["name".to_owned()]]);
    }

    #[test]
    fn real_vswitch_schema_parses() {
        let text = std::fs::read_to_string("/usr/share/openvswitch/vswitch.ovsschema")
            .expect("vswitch.ovsschema missing: apt-get install openvswitch-common");
        let s = DatabaseSchema::from_json(&serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(s.name, "Open_vSwitch");
        for t in ["Open_vSwitch", "Bridge", "Port", "Interface"] {
            assert!(s.tables.contains_key(t), "{t}");
        }
        assert!(s.column("Interface", "ofport").is_ok());
    }

    #[test]
    fn validation_names_table_and_column() {
        let s = schema();
        let ok = Row::new()
            .with("name", "p1")
            .with("tag", Value::set([5i64]))
            .with("interfaces", Value::set([crate::NamedUuid::new("i").unwrap()]));
        s.validate_row("Port", &ok, WriteMode::Insert).unwrap();
        let cases: Vec<(Row, &str)> = vec![
            (Row::new().with("nmae", "p"), "no column 'nmae'"),
            (Row::new().with("tag", Value::set([5000i64])), "outside 0..=4095"),
            (Row::new().with("tag", Value::set([1i64, 2])), "2 values given"),
            (Row::new().with("tag", "x"), "not of type integer"),
            (Row::new().with("vlan_mode", Value::set(["bogus"])), "not one of"),
            (Row::new().with("interfaces", Value::empty_set()), "0 values given"),
            (Row::new().with("external_ids", Value::map([("a", 1i64)])), "map value"),
            (Row::new().with("external_ids", Value::set(["a"])), "is a map"),
            (Row::new().with("_uuid", Value::set(["a"])), "read-only"),
        ];
        for (row, want) in cases {
            let e = s.validate_row("Port", &row, WriteMode::Insert).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("Port"), "{e} should contain {want}");
        }
        let e = s.validate_row("Port", &Row::new().with("name", "x"), WriteMode::Update).unwrap_err();
        assert!(e.to_string().contains("read-only after insert"), "{e}");
        assert!(s.validate_row("Nope", &Row::new(), WriteMode::Insert).unwrap_err().to_string().contains("'Nope'"));
    }

    #[test]
    fn normalize_follows_column_kind() {
        let s = schema();
        let mut row = Row::new().with("tag", 5i64).with("name", Value::set(["p"])).with("weight", 2i64);
        s.normalize_row("Port", &mut row);
        assert_eq!(row.get("tag"), Some(&Value::set([5i64])));
        assert_eq!(row.get("name"), Some(&Value::from("p")));
        assert_eq!(row.get("weight"), Some(&Value::from(2.0f64)));
    }

    #[test]
    fn malformed_schemas_are_errors() {
        for bad in [
            json!(1),
            json!({"name": "x"}),
            json!({"name": "x", "tables": {"T": {}}}),
            json!({"name": "x", "tables": {"T": {"columns": {"c": {"type": "frob"}}}}}),
            json!({"name": "x", "tables": {"T": {"columns": {"c": {"type": {"key": "string", "min": 2}}}}}}),
        ] {
            assert!(DatabaseSchema::from_json(&bad).is_err(), "{bad}");
        }
    }
}
