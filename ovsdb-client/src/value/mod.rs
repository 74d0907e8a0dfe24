//! The OVSDB data model of RFC 7047 section 5.1: atoms, sets, maps and rows, with their JSON
//! encoding and conversions from and to Rust types.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde_json::{json, Value as Json};

use crate::error::ValueError;

mod row;
pub use row::Row;

/// A row UUID. It is kept as its 16 bytes rather than its 36-character text: a replica holds
/// one per row and one per reference, and text would cost a heap allocation each.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid([u8; 16]);

impl Uuid {
    /// Parses the 36-character text form (`8-4-4-4-12` hex digits, either case).
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let bytes = text.as_bytes();
        let well_formed = bytes.len() == 36
            && bytes.iter().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => *b == b'-',
                _ => b.is_ascii_hexdigit(),
            });
        if !well_formed {
            return Err(ValueError::new(format!("'{text}' is not a UUID (want 8-4-4-4-12 hex digits)")));
        }
        let nibble = |b: u8| match b {
            b'0'..=b'9' => b - b'0',
            _ => (b | 0x20) - b'a' + 10,
        };
        let mut digits = bytes.iter().copied().filter(|b| *b != b'-').map(nibble);
        let mut out = [0u8; 16];
        for byte in &mut out {
            let (hi, lo) = (digits.next().unwrap_or(0), digits.next().unwrap_or(0));
            *byte = hi << 4 | lo;
        }
        Ok(Uuid(out))
    }

    /// A UUID from its 16 bytes, most significant first.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Uuid(bytes)
    }

    /// The 16 bytes, most significant first. Their order is the order of the text forms.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for Uuid {
    /// The canonical text form: lowercase, `8-4-4-4-12`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uuid({self})")
    }
}

/// A name given to a row inserted earlier in the same transaction (`["named-uuid", name]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamedUuid(pub(crate) Arc<str>);

impl NamedUuid {
    /// Creates a symbolic name; it must be a valid OVSDB `<id>` (`[A-Za-z_][A-Za-z0-9_]*`).
    pub fn new(name: impl Into<String>) -> Result<Self, ValueError> {
        let name = name.into();
        if !is_id(&name) {
            return Err(ValueError::new(format!(
                "'{name}' is not a valid uuid-name: use letters, digits and '_', not starting with a digit"
            )));
        }
        Ok(NamedUuid(name.into()))
    }

    /// The symbolic name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub(crate) fn is_id(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One scalar OVSDB value.
#[derive(Clone, Debug)]
pub enum Atom {
    /// A 64-bit integer.
    Integer(i64),
    /// A double; ordered and hashed by its bits so atoms can be set members and map keys.
    Real(f64),
    /// A boolean.
    Boolean(bool),
    /// A UTF-8 string. Shared rather than owned, so that a replica can keep one copy of a
    /// string that many rows hold (a tunnel type, an `external_ids` key, a peer's address).
    String(Arc<str>),
    /// A reference to a row.
    Uuid(Uuid),
    /// A reference to a row inserted earlier in the same transaction.
    NamedUuid(NamedUuid),
}

impl Atom {
    fn rank(&self) -> u8 {
        match self {
            Atom::Integer(_) => 0,
            Atom::Real(_) => 1,
            Atom::Boolean(_) => 2,
            Atom::String(_) => 3,
            Atom::Uuid(_) => 4,
            Atom::NamedUuid(_) => 5,
        }
    }

    /// The JSON encoding (RFC 7047 section 5.1).
    pub fn to_json(&self) -> Json {
        match self {
            Atom::Integer(i) => json!(i),
            Atom::Real(r) => json!(r),
            Atom::Boolean(b) => json!(b),
            Atom::String(s) => Json::String(s.to_string()),
            Atom::Uuid(u) => json!(["uuid", u.to_string()]),
            Atom::NamedUuid(n) => json!(["named-uuid", n.as_str()]),
        }
    }

    /// Decodes an atom. Integers that JSON carries as `1.0` stay reals: the schema decides later.
    pub fn from_json(json: &Json) -> Result<Self, ValueError> {
        match json {
            Json::Bool(b) => Ok(Atom::Boolean(*b)),
            Json::String(s) => Ok(Atom::String(s.as_str().into())),
            Json::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Ok(Atom::Integer(i))
                } else if let Some(f) = n.as_f64() {
                    Ok(Atom::Real(f))
                } else {
                    Err(ValueError::new(format!("number {n} does not fit an OVSDB integer or real")))
                }
            }
            Json::Array(a) if a.len() == 2 => match (a[0].as_str(), a[1].as_str()) {
                (Some("uuid"), Some(u)) => Ok(Atom::Uuid(Uuid::parse(u)?)),
                (Some("named-uuid"), Some(n)) => Ok(Atom::NamedUuid(NamedUuid::new(n)?)),
                _ => Err(ValueError::new(format!("{json} is not an atom"))),
            },
            _ => Err(ValueError::new(format!("{} is not an atom", short(json)))),
        }
    }

    /// The string, if this is a string atom.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Atom::String(s) => Some(&**s),
            _ => None,
        }
    }

    /// The integer, if this is an integer atom.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Atom::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The UUID, if this is a UUID atom.
    pub fn as_uuid(&self) -> Option<&Uuid> {
        match self {
            Atom::Uuid(u) => Some(u),
            _ => None,
        }
    }

    /// The boolean, if this is a boolean atom.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Atom::Boolean(b) => Some(*b),
            _ => None,
        }
    }
}

impl PartialEq for Atom {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Atom {}
impl PartialOrd for Atom {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Atom {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Atom::Integer(a), Atom::Integer(b)) => a.cmp(b),
            (Atom::Real(a), Atom::Real(b)) => a.total_cmp(b),
            (Atom::Boolean(a), Atom::Boolean(b)) => a.cmp(b),
            (Atom::String(a), Atom::String(b)) => a.cmp(b),
            (Atom::Uuid(a), Atom::Uuid(b)) => a.cmp(b),
            (Atom::NamedUuid(a), Atom::NamedUuid(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}
impl Hash for Atom {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.rank().hash(state);
        match self {
            Atom::Integer(i) => i.hash(state),
            Atom::Real(r) => r.to_bits().hash(state),
            Atom::Boolean(b) => b.hash(state),
            Atom::String(s) => s.hash(state),
            Atom::Uuid(u) => u.hash(state),
            Atom::NamedUuid(n) => n.hash(state),
        }
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Atom::Integer(i) => write!(f, "{i}"),
            Atom::Real(r) => write!(f, "{r}"),
            Atom::Boolean(b) => write!(f, "{b}"),
            Atom::String(s) => write!(f, "{s:?}"),
            Atom::Uuid(u) => write!(f, "{u}"),
            Atom::NamedUuid(n) => write!(f, "@{}", n.as_str()),
        }
    }
}

macro_rules! atom_from {
    ($($t:ty => $variant:ident($conv:expr)),* $(,)?) => {
        $(impl From<$t> for Atom {
            fn from(v: $t) -> Self { Atom::$variant($conv(v)) }
        })*
    };
}
atom_from! {
    i64 => Integer(|v| v),
    i32 => Integer(i64::from),
    u16 => Integer(i64::from),
    u32 => Integer(i64::from),
    f64 => Real(|v| v),
    bool => Boolean(|v| v),
    String => String(Arc::from),
    &str => String(Arc::from),
    &String => String(|v: &String| Arc::from(v.as_str())),
    Arc<str> => String(|v| v),
    Uuid => Uuid(|v| v),
    &Uuid => Uuid(Uuid::clone),
    NamedUuid => NamedUuid(|v| v),
    &NamedUuid => NamedUuid(NamedUuid::clone),
}

/// A column value: an atom, a set of atoms, or a map from atoms to atoms.
///
/// Sets are kept sorted and free of duplicates and maps sorted by key, so two values that mean
/// the same compare equal. A set of one element may arrive from the server as a bare atom; the
/// schema-aware [`crate::DatabaseSchema::normalize`] turns it into the form its column declares.
///
/// Sets and maps are immutable shared slices: cloning a value or a row copies no elements, and
/// a [`crate::Replica`] keeps one copy of a set or map that many rows hold (the Port and the
/// Interface of a tunnel carry the same `external_ids`). Build them with [`Value::set`] and
/// [`Value::map`], or from a sorted, duplicate-free `Vec` with `.into()`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Value {
    /// A single atom (the form of a column with exactly one value).
    Atom(Atom),
    /// A set (sorted, no duplicates).
    Set(Arc<[Atom]>),
    /// A map (sorted by key, one value per key).
    Map(Arc<[(Atom, Atom)]>),
}

/// The one empty set and the one empty map, so that the many empty columns of a replica
/// (an Interface's `error`, a Port's `trunks`) allocate nothing.
fn empty_atoms() -> Arc<[Atom]> {
    static EMPTY: std::sync::OnceLock<Arc<[Atom]>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Arc::from(Vec::new())).clone()
}

fn empty_pairs() -> Arc<[(Atom, Atom)]> {
    static EMPTY: std::sync::OnceLock<Arc<[(Atom, Atom)]>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Arc::from(Vec::new())).clone()
}

impl Value {
    /// A set from any atoms; sorts and removes duplicates.
    pub fn set<A: Into<Atom>>(items: impl IntoIterator<Item = A>) -> Self {
        let mut v: Vec<Atom> = items.into_iter().map(Into::into).collect();
        v.sort();
        v.dedup();
        if v.is_empty() {
            return Value::empty_set();
        }
        Value::Set(v.into())
    }

    /// The empty set (also the "no value" of an optional column).
    pub fn empty_set() -> Self {
        Value::Set(empty_atoms())
    }

    /// The empty map.
    pub fn empty_map() -> Self {
        Value::Map(empty_pairs())
    }

    /// A map from any key/value pairs; sorts by key, the last value of a repeated key wins.
    pub fn map<K: Into<Atom>, V: Into<Atom>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        let sorted: BTreeMap<Atom, Atom> = pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        if sorted.is_empty() {
            return Value::empty_map();
        }
        Value::Map(sorted.into_iter().collect())
    }

    /// The JSON encoding (RFC 7047 section 5.1).
    pub fn to_json(&self) -> Json {
        match self {
            Value::Atom(a) => a.to_json(),
            Value::Set(s) => json!(["set", s.iter().map(Atom::to_json).collect::<Vec<_>>()]),
            Value::Map(m) => {
                json!(["map", m.iter().map(|(k, v)| json!([k.to_json(), v.to_json()])).collect::<Vec<_>>()])
            }
        }
    }

    /// Decodes a value without a schema: `["set", ..]` and `["map", ..]` are recognised, all
    /// else must be an atom.
    pub fn from_json(json: &Json) -> Result<Self, ValueError> {
        if let Json::Array(a) = json {
            if a.len() == 2 {
                match (a[0].as_str(), &a[1]) {
                    (Some("set"), Json::Array(items)) => {
                        let atoms = items.iter().map(Atom::from_json).collect::<Result<Vec<_>, _>>()?;
                        return Ok(Value::set(atoms));
                    }
                    (Some("map"), Json::Array(pairs)) => {
                        let mut out = Vec::with_capacity(pairs.len());
                        for pair in pairs {
                            match pair {
                                Json::Array(kv) if kv.len() == 2 => {
                                    out.push((Atom::from_json(&kv[0])?, Atom::from_json(&kv[1])?))
                                }
                                _ => {
                                    return Err(ValueError::new(format!(
                                        "map entry {} is not a [key, value] pair",
                                        short(pair)
                                    )))
                                }
                            }
                        }
                        return Ok(Value::map(out));
                    }
                    (Some("set" | "map"), other) => {
                        return Err(ValueError::new(format!("{} is not an array of elements", short(other))))
                    }
                    _ => {}
                }
            }
        }
        Atom::from_json(json).map(Value::Atom)
    }

    /// The elements as a slice: an atom is a set of one.
    pub fn as_set(&self) -> &[Atom] {
        match self {
            Value::Atom(a) => std::slice::from_ref(a),
            Value::Set(s) => s,
            Value::Map(_) => &[],
        }
    }

    /// The map entries (empty for a non-map).
    pub fn as_map(&self) -> &[(Atom, Atom)] {
        match self {
            Value::Map(m) => m,
            _ => &[],
        }
    }

    /// The single atom of a scalar, or of a set of exactly one.
    pub fn as_atom(&self) -> Option<&Atom> {
        match self {
            Value::Atom(a) => Some(a),
            Value::Set(s) if s.len() == 1 => Some(&s[0]),
            _ => None,
        }
    }

    /// The string of a scalar string value.
    pub fn as_str(&self) -> Option<&str> {
        self.as_atom().and_then(Atom::as_str)
    }

    /// The integer of a scalar integer value.
    pub fn as_integer(&self) -> Option<i64> {
        self.as_atom().and_then(Atom::as_integer)
    }

    /// The boolean of a scalar boolean value.
    pub fn as_bool(&self) -> Option<bool> {
        self.as_atom().and_then(Atom::as_bool)
    }

    /// The UUID of a scalar reference.
    pub fn as_uuid(&self) -> Option<&Uuid> {
        self.as_atom().and_then(Atom::as_uuid)
    }

    /// Looks a key up in a map value.
    pub fn map_get(&self, key: &str) -> Option<&Atom> {
        let m = self.as_map();
        m.binary_search_by(|(k, _)| match k {
            Atom::String(s) => (**s).cmp(key),
            other => other.rank().cmp(&3),
        })
        .ok()
        .map(|i| &m[i].1)
    }

    /// The number of elements (1 for an atom).
    pub fn len(&self) -> usize {
        match self {
            Value::Atom(_) => 1,
            Value::Set(s) => s.len(),
            Value::Map(m) => m.len(),
        }
    }

    /// True for an empty set or map.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: Into<Atom>> From<T> for Value {
    fn from(v: T) -> Self {
        Value::Atom(v.into())
    }
}

impl<T: Into<Atom>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        Value::set(v)
    }
}

impl<T: Into<Atom>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Self {
        Value::set(v)
    }
}

impl<K: Into<Atom>, V: Into<Atom>> From<BTreeMap<K, V>> for Value {
    fn from(m: BTreeMap<K, V>) -> Self {
        Value::map(m)
    }
}

// `Serialize` for atoms, values and rows is in `codec`, with the decoders messages use.

impl<'de> serde::Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::DeserializeSeed;
        crate::codec::ValueSeed(&mut crate::codec::StrPool::default()).deserialize(d)
    }
}

/// Conversion from a column value to a Rust type.
pub trait FromValue: Sized {
    /// Converts, or says what the value was instead.
    fn from_value(value: &Value) -> Result<Self, ValueError>;
}

fn mismatch(want: &str, value: &Value) -> ValueError {
    ValueError::new(format!("expected {want}, found {}", short(&value.to_json())))
}

macro_rules! scalar_from_value {
    ($($t:ty, $want:literal, $get:expr;)*) => {
        $(impl FromValue for $t {
            fn from_value(value: &Value) -> Result<Self, ValueError> {
                value.as_atom().and_then($get).ok_or_else(|| mismatch($want, value))
            }
        })*
    };
}
scalar_from_value! {
    i64, "an integer", Atom::as_integer;
    bool, "a boolean", Atom::as_bool;
    String, "a string", |a: &Atom| a.as_str().map(str::to_owned);
    Uuid, "a UUID", |a: &Atom| a.as_uuid().cloned();
    f64, "a real", |a: &Atom| match a { Atom::Real(r) => Some(*r), Atom::Integer(i) => Some(*i as f64), _ => None };
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Result<Self, ValueError> {
        match value.as_set() {
            [] => Ok(None),
            [a] => T::from_value(&Value::Atom(a.clone())).map(Some),
            _ => Err(mismatch("at most one value", value)),
        }
    }
}

impl<T: FromValue> FromValue for Vec<T> {
    fn from_value(value: &Value) -> Result<Self, ValueError> {
        value.as_set().iter().map(|a| T::from_value(&Value::Atom(a.clone()))).collect()
    }
}

impl FromValue for BTreeMap<String, String> {
    fn from_value(value: &Value) -> Result<Self, ValueError> {
        if let Value::Atom(_) = value {
            return Err(mismatch("a map", value));
        }
        value
            .as_map()
            .iter()
            .map(|(k, v)| match (k, v) {
                (Atom::String(k), Atom::String(v)) => Ok((k.to_string(), v.to_string())),
                _ => Err(mismatch("a map of strings to strings", value)),
            })
            .collect()
    }
}

/// A JSON value shortened for an error message, so a 50 MB payload never lands in a log line.
pub(crate) fn short(json: &Json) -> String {
    let mut s = json.to_string();
    if s.len() > 120 {
        let mut cut = 117;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests;
