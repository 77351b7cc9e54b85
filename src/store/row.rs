//! Values and rows: the small common ground of both backends.
//!
//! A [`Row`] is a list of named [`Cell`]s, so resource code can read a
//! column by its name ([`Row::text_at`]) and not only by its position
//! ([`Row::text`]). The name is the column's as the backend reports it:
//! the bare column name for `t.col`, the alias for `expr AS alias`. A part
//! split off a row keeps its names, so a join's parts can be read one table
//! at a time even where two tables share a column name.

use super::{Result, StoreError};
use std::fmt::Display;
use std::sync::Arc;

/// A parameter or column value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit integer (`BIGINT`; also booleans on SQLite).
    Int(i64),
    /// Text (`TEXT`).
    Text(String),
    /// A boolean (`BOOLEAN` on PostgreSQL, an integer on SQLite).
    Bool(bool),
    /// A double (`DOUBLE PRECISION` on PostgreSQL, `REAL` on SQLite); only
    /// indexed contact attributes use it.
    Float(f64),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// One column of a result row: its name and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    /// The column's name, shared by every row of a result.
    pub name: Arc<str>,
    /// Its value.
    pub value: Value,
}

/// One result row, materialised so resource code is backend-agnostic.
#[derive(Clone, Debug, PartialEq)]
pub struct Row(pub Vec<Cell>);

impl Row {
    /// A row of `values` named by `names`, in order (the backends build
    /// rows with it; `names` is made once per result).
    pub fn new(names: &[Arc<str>], values: Vec<Value>) -> Self {
        Row(names
            .iter()
            .cloned()
            .zip(values)
            .map(|(name, value)| Cell { name, value })
            .collect())
    }

    /// Moves the columns from position `at` on, with their names, into a
    /// row of their own (none when `at` is past the end).
    pub fn split_off(&mut self, at: usize) -> Row {
        Row(self.0.split_off(at.min(self.0.len())))
    }

    fn at(&self, i: usize) -> Result<&Value> {
        self.0
            .get(i)
            .map(|c| &c.value)
            .ok_or_else(|| StoreError::Database(format!("column {i} missing")))
    }

    fn named(&self, name: &str) -> Result<&Value> {
        self.0
            .iter()
            .find(|c| &*c.name == name)
            .map(|c| &c.value)
            .ok_or_else(|| StoreError::Database(format!("column {name:?} missing from the result")))
    }

    /// A non-null text column, by position.
    pub fn text(&self, i: usize) -> Result<String> {
        text(self.at(i)?, i)
    }

    /// A nullable text column, by position.
    pub fn opt_text(&self, i: usize) -> Result<Option<String>> {
        nullable(self.at(i)?, i, text)
    }

    /// A non-null integer column, by position.
    pub fn int(&self, i: usize) -> Result<i64> {
        int(self.at(i)?, i)
    }

    /// A nullable integer column, by position.
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        nullable(self.at(i)?, i, int)
    }

    /// A boolean column (an integer on SQLite), by position.
    pub fn bool(&self, i: usize) -> Result<bool> {
        boolean(self.at(i)?, i)
    }

    /// A JSON column stored as text, by position.
    pub fn json<T: serde::de::DeserializeOwned>(&self, i: usize) -> Result<T> {
        json(self.at(i)?, i)
    }

    /// A non-null text column, by name.
    pub fn text_at(&self, name: &str) -> Result<String> {
        text(self.named(name)?, name)
    }

    /// A nullable text column, by name.
    pub fn opt_text_at(&self, name: &str) -> Result<Option<String>> {
        nullable(self.named(name)?, name, text)
    }

    /// A non-null integer column, by name.
    pub fn int_at(&self, name: &str) -> Result<i64> {
        int(self.named(name)?, name)
    }

    /// A nullable integer column, by name.
    pub fn opt_int_at(&self, name: &str) -> Result<Option<i64>> {
        nullable(self.named(name)?, name, int)
    }

    /// A boolean column (an integer on SQLite), by name.
    pub fn bool_at(&self, name: &str) -> Result<bool> {
        boolean(self.named(name)?, name)
    }

    /// A JSON column stored as text, by name.
    pub fn json_at<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T> {
        json(self.named(name)?, name)
    }
}

fn nullable<C: Display + Copy, T>(
    v: &Value,
    col: C,
    read: fn(&Value, C) -> Result<T>,
) -> Result<Option<T>> {
    match v {
        Value::Null => Ok(None),
        v => read(v, col).map(Some),
    }
}

fn text<C: Display>(v: &Value, col: C) -> Result<String> {
    match v {
        Value::Text(s) => Ok(s.clone()),
        other => Err(StoreError::Database(format!(
            "column {col}: expected text, got {other:?}"
        ))),
    }
}

fn int<C: Display>(v: &Value, col: C) -> Result<i64> {
    match v {
        Value::Int(v) => Ok(*v),
        Value::Bool(b) => Ok(i64::from(*b)),
        other => Err(StoreError::Database(format!(
            "column {col}: expected integer, got {other:?}"
        ))),
    }
}

fn boolean<C: Display>(v: &Value, col: C) -> Result<bool> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Int(v) => Ok(*v != 0),
        other => Err(StoreError::Database(format!(
            "column {col}: expected boolean, got {other:?}"
        ))),
    }
}

fn json<T: serde::de::DeserializeOwned, C: Display>(v: &Value, col: C) -> Result<T> {
    let t = text(v, &col)?;
    serde_json::from_str(&t)
        .map_err(|e| StoreError::Database(format!("column {col}: bad JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        let names: Vec<Arc<str>> = ["id", "n", "gone", "tags", "note"]
            .into_iter()
            .map(Arc::from)
            .collect();
        Row::new(
            &names,
            vec![
                "a".into(),
                Value::Int(3),
                Value::Int(1),
                r#"["x"]"#.into(),
                Value::Null,
            ],
        )
    }

    #[test]
    fn columns_read_by_name_and_by_position_agree() {
        let r = row();
        assert_eq!(r.text_at("id").unwrap(), r.text(0).unwrap());
        assert_eq!(r.int_at("n").unwrap(), 3);
        assert!(r.bool_at("gone").unwrap());
        assert_eq!(r.json_at::<Vec<String>>("tags").unwrap(), vec!["x"]);
        assert_eq!(r.opt_text_at("note").unwrap(), None);
        assert_eq!(r.opt_int_at("n").unwrap(), Some(3));
    }

    #[test]
    fn a_missing_or_mistyped_column_is_named_in_the_error() {
        let r = row();
        let e = r.text_at("nope").unwrap_err().to_string();
        assert!(e.contains("\"nope\""), "{e}");
        let e = r.int_at("id").unwrap_err().to_string();
        assert!(e.contains("column id: expected integer"), "{e}");
    }

    #[test]
    fn a_split_keeps_its_names() {
        let mut r = row();
        let tail = r.split_off(3);
        assert_eq!(tail.0.len(), 2);
        assert_eq!(tail.json_at::<Vec<String>>("tags").unwrap(), vec!["x"]);
        assert!(tail.text_at("id").is_err());
        let mid = r.split_off(1);
        assert_eq!(mid.int_at("n").unwrap(), 3);
        assert_eq!(r.text_at("id").unwrap(), "a");
        assert!(r.split_off(9).0.is_empty());
    }
}
