//! Rows: column names shared between rows of one layout, values apart.

use std::fmt;
use std::sync::Arc;

use serde_json::Value as Json;

use super::{short, Atom, FromValue, Value};
use crate::error::ValueError;

/// A row: column name to value, sorted by name.
///
/// The names are held apart from the values, as one list that rows with the same columns
/// share: a replica keeps one list per table layout (all its rows of a table have the
/// monitored columns) instead of a name per column of every row, and a row is little more
/// than its values. Rows have a handful of columns, so lookups search the sorted names.
#[derive(Clone, PartialEq, Eq)]
pub struct Row {
    names: Arc<[Arc<str>]>,
    values: Vec<Value>,
}

fn no_names() -> Arc<[Arc<str>]> {
    static EMPTY: std::sync::OnceLock<Arc<[Arc<str>]>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Arc::from(Vec::new())).clone()
}

impl Default for Row {
    fn default() -> Self {
        Row { names: no_names(), values: Vec::new() }
    }
}

impl fmt::Debug for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Row {
    /// An empty row.
    pub fn new() -> Self {
        Row::default()
    }

    /// A row from columns in any order; the last value of a repeated column wins.
    pub(crate) fn from_columns(mut columns: Vec<(Arc<str>, Value)>) -> Self {
        columns.sort_by(|(a, _), (b, _)| a.cmp(b));
        let mut names = Vec::with_capacity(columns.len());
        let mut values: Vec<Value> = Vec::with_capacity(columns.len());
        for (name, value) in columns {
            if names.last() == Some(&name) {
                *values.last_mut().expect("a value per name") = value;
            } else {
                names.push(name);
                values.push(value);
            }
        }
        Row { names: names.into(), values }
    }

    /// The columns, to rebuild the row from (see [`Row::from_columns`]).
    pub(crate) fn into_columns(self) -> Vec<(Arc<str>, Value)> {
        self.names.iter().cloned().zip(self.values).collect()
    }

    /// Builder form of [`Row::set`].
    pub fn with(mut self, column: impl Into<Arc<str>>, value: impl Into<Value>) -> Self {
        self.set(column, value);
        self
    }

    fn position(&self, column: &str) -> Result<usize, usize> {
        self.names.binary_search_by(|name| (**name).cmp(column))
    }

    /// Sets a column.
    pub fn set(&mut self, column: impl Into<Arc<str>>, value: impl Into<Value>) {
        let column = column.into();
        let value = value.into();
        match self.position(&column) {
            Ok(i) => self.values[i] = value,
            Err(i) => {
                let mut names = self.names.to_vec();
                names.insert(i, column);
                self.names = names.into();
                self.values.insert(i, value);
            }
        }
    }

    /// Removes a column, returning its value.
    pub fn remove(&mut self, column: &str) -> Option<Value> {
        let i = self.position(column).ok()?;
        let mut names = self.names.to_vec();
        names.remove(i);
        self.names = names.into();
        Some(self.values.remove(i))
    }

    /// A column's value.
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.position(column).ok().map(|i| &self.values[i])
    }

    /// A column's value, to change in place.
    pub(crate) fn get_mut(&mut self, column: &str) -> Option<&mut Value> {
        self.position(column).ok().map(|i| &mut self.values[i])
    }

    /// A column converted to a Rust type; a missing column is an error naming it.
    pub fn get_as<T: FromValue>(&self, column: &str) -> Result<T, ValueError> {
        let v = self.get(column).ok_or_else(|| ValueError::new(format!("column '{column}' is not in the row")))?;
        T::from_value(v).map_err(|e| ValueError::new(format!("column '{column}': {e}")))
    }

    /// The string value of a key in a map column (typically `external_ids`).
    pub fn map_str(&self, column: &str, key: &str) -> Option<&str> {
        self.get(column).and_then(|v| v.map_get(key)).and_then(Atom::as_str)
    }

    /// Iterates over columns in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.names.iter().map(|n| &**n).zip(self.values.iter())
    }

    /// Iterates over columns in name order, with values to change in place.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = (&str, &mut Value)> {
        self.names.iter().map(|n| &**n).zip(self.values.iter_mut())
    }

    /// The list of names, to be replaced by an equal list that other rows share.
    pub(crate) fn names_mut(&mut self) -> &mut Arc<[Arc<str>]> {
        &mut self.names
    }

    /// Number of columns present.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    #[cfg(test)]
    pub(crate) fn shares_names_with(&self, other: &Row) -> bool {
        Arc::ptr_eq(&self.names, &other.names)
    }

    /// True when no column is present.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The JSON object form.
    pub fn to_json(&self) -> Json {
        Json::Object(self.iter().map(|(k, v)| (k.to_owned(), v.to_json())).collect())
    }

    /// Decodes a JSON object without a schema.
    pub fn from_json(json: &Json) -> Result<Self, ValueError> {
        let obj = json.as_object().ok_or_else(|| ValueError::new(format!("{} is not a row object", short(json))))?;
        let mut columns = Vec::with_capacity(obj.len());
        for (k, v) in obj {
            let value = Value::from_json(v).map_err(|e| ValueError::new(format!("column '{k}': {e}")))?;
            columns.push((Arc::from(k.as_str()), value));
        }
        Ok(Row::from_columns(columns))
    }

    /// Gives back the spare capacity of the row (a row kept in a replica lives long; one
    /// being built grows by doubling).
    pub(crate) fn shrink_to_fit(&mut self) {
        self.values.shrink_to_fit();
    }
}

impl FromIterator<(String, Value)> for Row {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        Row::from_columns(iter.into_iter().map(|(k, v)| (Arc::from(k), v)).collect())
    }
}
