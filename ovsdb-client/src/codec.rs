//! The JSON encoding of atoms, values and rows (RFC 7047 section 5.1) as serde impls, so that
//! messages are written from and read into these types directly.
//!
//! Why not through `serde_json::Value`: a monitor reply or `update2` for 20,000 tunnel ports
//! is about 15 MB of text, and as a `serde_json::Value` tree it took 125 MB, plus as much
//! again for the copy the reader made to route it; a transaction creating those ports took
//! 96 MB as a tree before it was written out. Decoding with the visitors below goes from text
//! to rows, and encoding from operations to text, with nothing in between.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, SerializeTuple};
use serde::{Serialize, Serializer};

use crate::value::{Atom, NamedUuid, Row, Uuid, Value};

/// One shared copy of each distinct string, set and map. Used while decoding a message, so
/// what many rows repeat is allocated once, and by the replica for the rows it keeps.
#[derive(Debug, Default, Clone)]
pub(crate) struct StrPool {
    strings: HashSet<Arc<str>>,
    sets: HashSet<Arc<[Atom]>>,
    maps: HashSet<Arc<[(Atom, Atom)]>>,
    /// Column name lists of rows (see [`Row`]).
    layouts: HashSet<Arc<[Arc<str>]>>,
    /// Entries after the last purge.
    live: usize,
}

impl StrPool {
    /// The shared copy of `s`.
    pub(crate) fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(s) {
            return shared.clone();
        }
        let new: Arc<str> = Arc::from(s);
        self.strings.insert(new.clone());
        new
    }

    /// Replaces `s` by the shared copy of its text (making it the shared copy if there is none).
    pub(crate) fn intern(&mut self, s: &mut Arc<str>) {
        match self.strings.get(&**s) {
            Some(shared) => {
                if !Arc::ptr_eq(shared, s) {
                    *s = shared.clone();
                }
            }
            None => {
                self.strings.insert(s.clone());
            }
        }
    }

    fn intern_atom(&mut self, a: &mut Atom) {
        if let Atom::String(s) = a {
            self.intern(s);
        }
    }

    /// Whether `a` already holds the shared copy of its string (a string not seen before
    /// becomes the shared copy).
    fn is_shared(&mut self, a: &Atom) -> bool {
        let Atom::String(s) = a else { return true };
        match self.strings.get(&**s) {
            Some(shared) => Arc::ptr_eq(shared, s),
            None => {
                self.strings.insert(s.clone());
                true
            }
        }
    }

    /// Replaces `v` by the shared copy of its contents. Sets of references (UUIDs or named
    /// UUIDs: a Port's `interfaces`, a Bridge's `ports`) are not kept for sharing: no two rows
    /// hold the same.
    pub(crate) fn intern_value(&mut self, v: &mut Value) {
        match v {
            Value::Atom(a) => self.intern_atom(a),
            Value::Set(set) => {
                if set.is_empty() {
                    return;
                }
                if let Some(shared) = self.sets.get(&**set) {
                    *set = shared.clone();
                    return;
                }
                // Without a copy when possible: decoded values hold decoded strings.
                if !set.iter().all(|a| self.is_shared(a)) {
                    let mut atoms = set.to_vec();
                    atoms.iter_mut().for_each(|a| self.intern_atom(a));
                    *set = atoms.into();
                }
                if !set.iter().any(|a| matches!(a, Atom::Uuid(_) | Atom::NamedUuid(_))) {
                    self.sets.insert(set.clone());
                }
            }
            Value::Map(map) => {
                if map.is_empty() {
                    return;
                }
                if let Some(shared) = self.maps.get(&**map) {
                    *map = shared.clone();
                    return;
                }
                if !map.iter().all(|(k, v)| self.is_shared(k) && self.is_shared(v)) {
                    let mut pairs = map.to_vec();
                    pairs.iter_mut().for_each(|(k, v)| {
                        self.intern_atom(k);
                        self.intern_atom(v);
                    });
                    *map = pairs.into();
                }
                self.maps.insert(map.clone());
            }
        }
    }

    /// Gives a row the shared copy of its list of column names, and its values shared
    /// contents.
    pub(crate) fn intern_row(&mut self, row: &mut Row) {
        for (_, value) in row.values_mut() {
            self.intern_value(value);
        }
        let names = row.names_mut();
        if let Some(shared) = self.layouts.get(&**names) {
            if !Arc::ptr_eq(shared, names) {
                *names = shared.clone();
            }
            return;
        }
        let mut list = names.to_vec();
        list.iter_mut().for_each(|n| self.intern(n));
        *names = list.into();
        self.layouts.insert(names.clone());
    }

    fn len(&self) -> usize {
        self.strings.len() + self.sets.len() + self.maps.len() + self.layouts.len()
    }

    /// Forgets what nothing else holds any more (a deleted port's name and `external_ids`).
    /// Only once the pool has doubled since the last purge, so the scans cost O(1) per entry
    /// added.
    pub(crate) fn purge(&mut self) {
        if self.len() >= 2 * self.live.max(1024) {
            self.strings.retain(|s| Arc::strong_count(s) > 1);
            self.sets.retain(|s| Arc::strong_count(s) > 1);
            self.maps.retain(|m| Arc::strong_count(m) > 1);
            self.layouts.retain(|l| Arc::strong_count(l) > 1);
            self.strings.shrink_to_fit();
            self.sets.shrink_to_fit();
            self.maps.shrink_to_fit();
            self.layouts.shrink_to_fit();
            self.live = self.len();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding.

struct UuidText<'a>(&'a Uuid);

impl Serialize for UuidText<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self.0)
    }
}

/// `[tag, payload]`, the form of UUIDs, sets and maps.
fn tagged<S: Serializer, P: Serialize + ?Sized>(s: S, tag: &str, payload: &P) -> Result<S::Ok, S::Error> {
    let mut t = s.serialize_tuple(2)?;
    t.serialize_element(tag)?;
    t.serialize_element(payload)?;
    t.end()
}

impl Serialize for Atom {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Atom::Integer(i) => s.serialize_i64(*i),
            Atom::Real(r) => s.serialize_f64(*r),
            Atom::Boolean(b) => s.serialize_bool(*b),
            Atom::String(text) => s.serialize_str(text),
            Atom::Uuid(u) => tagged(s, "uuid", &UuidText(u)),
            Atom::NamedUuid(n) => tagged(s, "named-uuid", n.as_str()),
        }
    }
}

struct Pairs<'a>(&'a [(Atom, Atom)]);

impl Serialize for Pairs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for pair in self.0 {
            seq.serialize_element(pair)?;
        }
        seq.end()
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Atom(a) => a.serialize(s),
            Value::Set(atoms) => tagged(s, "set", &**atoms),
            Value::Map(pairs) => tagged(s, "map", &Pairs(pairs)),
        }
    }
}

impl Serialize for Row {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len()))?;
        for (column, value) in self.iter() {
            map.serialize_entry(column, value)?;
        }
        map.end()
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding. Each seed carries the pool its strings come from.

/// Decodes an [`Atom`].
pub(crate) struct AtomSeed<'p>(pub(crate) &'p mut StrPool);

/// Decodes a [`Value`]: an atom, `["set", [...]]` or `["map", [[k, v], ...]]`.
pub(crate) struct ValueSeed<'p>(pub(crate) &'p mut StrPool);

/// Decodes a [`Row`] (a JSON object of columns) without a schema.
pub(crate) struct RowSeed<'p>(pub(crate) &'p mut StrPool);

impl<'de> DeserializeSeed<'de> for AtomSeed<'_> {
    type Value = Atom;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Atom, D::Error> {
        d.deserialize_any(AtomVisitor(self.0))
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor(self.0))
    }
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = Row;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Row, D::Error> {
        d.deserialize_any(RowVisitor(self.0))
    }
}

/// The first element of `[tag, payload]`.
struct TagVisitor;

impl<'de> Visitor<'de> for TagVisitor {
    type Value = Tag;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("\"uuid\", \"named-uuid\", \"set\" or \"map\"")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Tag, E> {
        match v {
            "uuid" => Ok(Tag::Uuid),
            "named-uuid" => Ok(Tag::NamedUuid),
            "set" => Ok(Tag::Set),
            "map" => Ok(Tag::Map),
            other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
        }
    }
}

enum Tag {
    Uuid,
    NamedUuid,
    Set,
    Map,
}

impl<'de> de::Deserialize<'de> for Tag {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Tag, D::Error> {
        d.deserialize_str(TagVisitor)
    }
}

struct UuidVisitor;

impl<'de> Visitor<'de> for UuidVisitor {
    type Value = Uuid;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a UUID string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Uuid, E> {
        Uuid::parse(v).map_err(E::custom)
    }
}

struct UuidSeed;

impl<'de> DeserializeSeed<'de> for UuidSeed {
    type Value = Uuid;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Uuid, D::Error> {
        d.deserialize_str(UuidVisitor)
    }
}

/// The rest of a `[tag, payload]` array once its tag is read, refusing a third element.
fn payload<'de, A: SeqAccess<'de>, T>(
    seq: &mut A,
    seed: impl DeserializeSeed<'de, Value = T>,
    what: &str,
) -> Result<T, A::Error> {
    let value = seq.next_element_seed(seed)?.ok_or_else(|| de::Error::custom(format!("{what} without its payload")))?;
    if seq.next_element::<IgnoredAny>()?.is_some() {
        return Err(de::Error::custom(format!("{what} with more than two elements")));
    }
    Ok(value)
}

/// `["uuid", text]` or `["named-uuid", name]` once the tag is read.
fn reference<'de, A: SeqAccess<'de>>(seq: &mut A, tag: Tag) -> Result<Atom, A::Error> {
    match tag {
        Tag::Uuid => payload(seq, UuidSeed, "[\"uuid\", ...]").map(Atom::Uuid),
        Tag::NamedUuid => {
            let name: String = payload(seq, std::marker::PhantomData, "[\"named-uuid\", ...]")?;
            NamedUuid::new(name).map(Atom::NamedUuid).map_err(de::Error::custom)
        }
        Tag::Set | Tag::Map => Err(de::Error::custom("a set or map where an atom belongs")),
    }
}

macro_rules! scalar_visits {
    ($out:expr) => {
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok($out(Atom::Boolean(v)))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok($out(Atom::Integer(v)))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            // Beyond i64 it can only be a real, as serde_json's own `as_i64`/`as_f64` has it.
            Ok($out(i64::try_from(v).map(Atom::Integer).unwrap_or(Atom::Real(v as f64))))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok($out(Atom::Real(v)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok($out(Atom::String(self.0.get(v))))
        }
    };
}

struct AtomVisitor<'p>(&'p mut StrPool);

impl<'de> Visitor<'de> for AtomVisitor<'_> {
    type Value = Atom;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an atom: a number, string, boolean, [\"uuid\", ...] or [\"named-uuid\", ...]")
    }
    scalar_visits!(|a| a);
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Atom, A::Error> {
        let tag: Tag = seq.next_element()?.ok_or_else(|| de::Error::custom("an empty array is not an atom"))?;
        reference(&mut seq, tag)
    }
}

struct ValueVisitor<'p>(&'p mut StrPool);

impl<'de> Visitor<'de> for ValueVisitor<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an OVSDB value: an atom, [\"set\", [...]] or [\"map\", [[key, value], ...]]")
    }
    scalar_visits!(Value::Atom);
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let tag: Tag = seq.next_element()?.ok_or_else(|| de::Error::custom("an empty array is not a value"))?;
        match tag {
            Tag::Set => payload(&mut seq, AtomsSeed(self.0), "[\"set\", ...]").map(Value::set),
            Tag::Map => payload(&mut seq, PairsSeed(self.0), "[\"map\", ...]").map(Value::map),
            reference_tag => reference(&mut seq, reference_tag).map(Value::Atom),
        }
    }
}

struct AtomsSeed<'p>(&'p mut StrPool);

impl<'de> DeserializeSeed<'de> for AtomsSeed<'_> {
    type Value = Vec<Atom>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Vec<Atom>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for AtomsSeed<'_> {
    type Value = Vec<Atom>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of atoms")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Atom>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(a) = seq.next_element_seed(AtomSeed(self.0))? {
            out.push(a);
        }
        Ok(out)
    }
}

struct PairsSeed<'p>(&'p mut StrPool);

impl<'de> DeserializeSeed<'de> for PairsSeed<'_> {
    type Value = Vec<(Atom, Atom)>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for PairsSeed<'_> {
    type Value = Vec<(Atom, Atom)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of [key, value] pairs")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(pair) = seq.next_element_seed(PairSeed(self.0))? {
            out.push(pair);
        }
        Ok(out)
    }
}

struct PairSeed<'p>(&'p mut StrPool);

impl<'de> DeserializeSeed<'de> for PairSeed<'_> {
    type Value = (Atom, Atom);
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for PairSeed<'_> {
    type Value = (Atom, Atom);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map entry [key, value]")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let not_a_pair = || de::Error::custom("map entry is not a [key, value] pair");
        let key = seq.next_element_seed(AtomSeed(self.0))?.ok_or_else(not_a_pair)?;
        let value = seq.next_element_seed(AtomSeed(self.0))?.ok_or_else(not_a_pair)?;
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(not_a_pair());
        }
        Ok((key, value))
    }
}

struct RowVisitor<'p>(&'p mut StrPool);

impl<'de> Visitor<'de> for RowVisitor<'_> {
    type Value = Row;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Row, A::Error> {
        let mut columns = Vec::with_capacity(8);
        while let Some(column) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let value = map
                .next_value_seed(ValueSeed(self.0))
                .map_err(|e| de::Error::custom(format_args!("column '{column}': {e}")))?;
            columns.push((self.0.get(&column), value));
        }
        let mut row = Row::from_columns(columns);
        self.0.intern_row(&mut row);
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_decodes_like_the_tree_and_encodes_back() {
        let text = r#"{"name":"vx1","tag":["set",[3,1,3]],"ofport":-1,"ok":true,"w":1.5,
            "ids":["map",[["b","2"],["a","1"]]],"iface":["uuid","550E8400-e29b-41d4-a716-446655440000"],
            "new":["named-uuid","row_1"],"empty":["set",[]],"esc":"a\"b\u00e9"}"#;
        let mut pool = StrPool::default();
        let row = RowSeed(&mut pool).deserialize(&mut serde_json::Deserializer::from_str(text)).unwrap();
        let tree: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(row, Row::from_json(&tree).unwrap());
        assert_eq!(row.get("tag"), Some(&Value::set([1i64, 3])));
        assert_eq!(row.map_str("ids", "a"), Some("1"));
        assert_eq!(row.get_as::<String>("esc").unwrap(), "a\"bé");
        // Encoding writes what the tree form holds.
        let again: serde_json::Value = serde_json::from_slice(&serde_json::to_vec(&row).unwrap()).unwrap();
        assert_eq!(Row::from_json(&again).unwrap(), row);
        assert_eq!(again["iface"], json!(["uuid", "550e8400-e29b-41d4-a716-446655440000"]));
        assert_eq!(again["ids"], json!(["map", [["a", "1"], ["b", "2"]]]));
    }

    #[test]
    fn repeated_strings_are_decoded_once() {
        let text = r#"[{"k":["map",[["overlay-kind","tunnel"]]]},{"k":["map",[["overlay-kind","tunnel"]]]}]"#;
        let mut pool = StrPool::default();
        let rows: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
        let decoded: Vec<Row> = rows.iter().map(|r| RowSeed(&mut pool).deserialize(r).unwrap()).collect();
        let kind = |r: &Row| match &r.get("k").unwrap().as_map()[0].1 {
            Atom::String(s) => s.clone(),
            other => panic!("{other:?}"),
        };
        assert!(Arc::ptr_eq(&kind(&decoded[0]), &kind(&decoded[1])));
    }

    #[test]
    fn pool_purge_forgets_strings_nobody_holds() {
        let mut pool = StrPool::default();
        let kept: Vec<Arc<str>> = (0..2048).map(|i| pool.get(&format!("kept{i}"))).collect();
        for i in 0..2048 {
            pool.get(&format!("gone{i}"));
        }
        pool.purge();
        assert_eq!(pool.strings.len(), kept.len());
        assert!(Arc::ptr_eq(&pool.get("kept7"), &kept[7]));
    }
}
