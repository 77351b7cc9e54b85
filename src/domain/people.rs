//! Contacts as the people a bot talks to: the filter language over them
//! (CEL over `user` and `contact`, compiled with the same environment as flow
//! conditions), the part of a filter a database index can answer, and how
//! attribute changes merge.
//!
//! A [`ContactFilter`] is compiled once. Its [`Pushdown`] conjuncts are the
//! top-level `&&` terms that compare an attribute or a contact column with a
//! literal; the store turns them into indexed SQL. The pushdown is only ever
//! a *superset* of the matches (strict comparisons are widened to their
//! non-strict form, numbers are compared as doubles), and the compiled CEL is
//! always evaluated on every candidate, so the answer is exactly the CEL's.
//! When every term was pushed down exactly ([`ContactFilter::exact`]), a count
//! can be answered by SQL alone.
//!
//! Invariants: evaluation never panics; a contact whose evaluation fails (a
//! missing attribute compared as a number, a wrong type) does not match.

use super::flow::condition::{Expr, ExprError, Scope, from_json};
use cel::common::ast::{Expr as Ast, IdedExpr, LiteralValue};
use chrono::DateTime;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// The roots a contact filter may read.
pub const FILTER_ROOTS: [&str; 2] = ["user", "contact"];

/// Longest attribute text that is indexed (longer values are found by the
/// CEL evaluation alone).
pub const MAX_INDEXED_TEXT: usize = 256;

/// A contact as filters see it.
#[derive(Clone, Debug, PartialEq)]
pub struct ContactFacts {
    /// `ct_…`
    pub id: String,
    /// E.164, when known by one.
    pub phone: Option<String>,
    /// An id in the caller's system (or a channel's `kind:user`).
    pub external_id: Option<String>,
    /// The channel it talks through: `api`, `web`, `whatsapp`, …
    pub channel: String,
    /// Unix ms of its first turn (or import).
    pub first_seen: i64,
    /// Unix ms of its last turn, if it ever talked.
    pub last_seen: Option<i64>,
    /// Whether it asked not to be messaged.
    pub opted_out: bool,
    /// `user` attributes.
    pub attributes: Map<String, Value>,
}

/// The channel a contact talks through, from its external id: the prefix of
/// botwire's own contacts (`web:`, `whatsapp:` …) without its colon, `api`
/// for every other contact.
pub fn channel_of(external_id: Option<&str>) -> &'static str {
    const PREFIXES: [&str; 5] = ["web", "whatsapp", "telegram", "twilio", "messenger"];
    external_id
        .and_then(|id| {
            PREFIXES.iter().find(|p| {
                id.len() > p.len() && id.starts_with(**p) && id.as_bytes()[p.len()] == b':'
            })
        })
        .copied()
        .unwrap_or("api")
}

/// A column of `contacts` a filter can compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContactColumn {
    /// `contact.channel`
    Channel,
    /// `contact.phone`
    Phone,
    /// `contact.first_seen` (Unix ms)
    FirstSeen,
    /// `contact.last_seen` (Unix ms)
    LastSeen,
    /// `contact.opted_out`
    OptedOut,
}

impl ContactColumn {
    /// The SQL column.
    pub fn column(self) -> &'static str {
        match self {
            ContactColumn::Channel => "channel",
            ContactColumn::Phone => "phone",
            ContactColumn::FirstSeen => "created_at",
            ContactColumn::LastSeen => "last_seen",
            ContactColumn::OptedOut => "opted_out",
        }
    }
}

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// `==`
    Eq,
    /// `<=` (a strict `<` is widened to this)
    Le,
    /// `>=` (a strict `>` is widened to this)
    Ge,
}

impl Cmp {
    /// The SQL operator.
    pub fn sql(self) -> &'static str {
        match self {
            Cmp::Eq => "=",
            Cmp::Le => "<=",
            Cmp::Ge => ">=",
        }
    }
}

/// One conjunct the store can answer from an index.
#[derive(Clone, Debug, PartialEq)]
pub enum Pushdown {
    /// `user.key == "text"`
    AttrText {
        /// Attribute key.
        key: String,
        /// The text.
        value: String,
    },
    /// `user.key <op> number`
    AttrNumber {
        /// Attribute key.
        key: String,
        /// The comparison.
        cmp: Cmp,
        /// The number.
        value: f64,
    },
    /// `contact.channel == "whatsapp"`, `contact.phone == "+34…"`
    ColumnText {
        /// The column.
        column: ContactColumn,
        /// The text.
        value: String,
    },
    /// `contact.last_seen >= timestamp("…")` and the like (Unix ms).
    ColumnTime {
        /// The column.
        column: ContactColumn,
        /// The comparison.
        cmp: Cmp,
        /// Unix ms.
        value: i64,
    },
    /// `contact.opted_out == false`
    ColumnBool {
        /// The column.
        column: ContactColumn,
        /// The value.
        value: bool,
    },
}

/// A compiled contact filter.
#[derive(Clone, Debug)]
pub struct ContactFilter {
    expr: Expr,
    pushdown: Vec<Pushdown>,
    exact: bool,
}

impl ContactFilter {
    /// Compiles a filter; a syntax error, an unknown name or a root other
    /// than `user` and `contact` is an error with its column.
    pub fn compile(source: &str) -> Result<ContactFilter, ExprError> {
        let expr = Expr::compile_with_roots(source, &FILTER_ROOTS)?;
        let mut terms = Vec::new();
        conjuncts(expr.ast(), &mut terms);
        let mut pushdown = Vec::new();
        let mut exact = true;
        for t in terms {
            match translate(t) {
                Some((p, is_exact)) => {
                    exact &= is_exact;
                    pushdown.push(p);
                }
                None => exact = false,
            }
        }
        Ok(ContactFilter {
            expr,
            pushdown,
            exact,
        })
    }

    /// The source as written.
    pub fn source(&self) -> &str {
        self.expr.source()
    }

    /// The conjuncts an index can answer (a superset of the matches).
    pub fn pushdown(&self) -> &[Pushdown] {
        &self.pushdown
    }

    /// Whether the pushdown alone gives exactly the matches.
    pub fn exact(&self) -> bool {
        self.exact
    }

    /// Whether a contact matches; an evaluation error is no match.
    pub fn matches(&self, c: &ContactFacts) -> bool {
        let scope =
            Scope::from_values(vec![("user", user_value(c)), ("contact", contact_value(c))]);
        self.expr.eval_bool(&scope).unwrap_or(false)
    }
}

fn user_value(c: &ContactFacts) -> cel::Value {
    from_json(&Value::Object(c.attributes.clone()))
}

fn timestamp(ms: i64) -> cel::Value {
    DateTime::from_timestamp_millis(ms)
        .map(|t| cel::Value::Timestamp(t.fixed_offset()))
        .unwrap_or(cel::Value::Null)
}

fn text(s: &Option<String>) -> cel::Value {
    s.as_ref()
        .map_or(cel::Value::Null, |s| cel::Value::from(s.clone()))
}

fn contact_value(c: &ContactFacts) -> cel::Value {
    let mut m: HashMap<String, cel::Value> = HashMap::with_capacity(7);
    m.insert("id".into(), cel::Value::from(c.id.clone()));
    m.insert("phone".into(), text(&c.phone));
    m.insert("external_id".into(), text(&c.external_id));
    m.insert("channel".into(), cel::Value::from(c.channel.clone()));
    m.insert("first_seen".into(), timestamp(c.first_seen));
    m.insert(
        "last_seen".into(),
        c.last_seen.map_or(cel::Value::Null, timestamp),
    );
    m.insert("opted_out".into(), cel::Value::Bool(c.opted_out));
    m.into()
}

fn conjuncts<'a>(e: &'a IdedExpr, out: &mut Vec<&'a IdedExpr>) {
    match &e.expr {
        Ast::Call(call) if call.func_name == "_&&_" && call.target.is_none() => {
            for a in &call.args {
                conjuncts(a, out);
            }
        }
        _ => out.push(e),
    }
}

/// What one side of a comparison is.
enum Side<'a> {
    Attr(&'a str),
    Column(&'a str),
    Text(&'a str),
    Number(f64),
    Bool(bool),
    Time(i64, i64),
}

fn side(e: &IdedExpr) -> Option<Side<'_>> {
    match &e.expr {
        Ast::Select(s) if !s.test => match &s.operand.expr {
            Ast::Ident(root) if root == "user" => Some(Side::Attr(&s.field)),
            Ast::Ident(root) if root == "contact" => Some(Side::Column(&s.field)),
            _ => None,
        },
        Ast::Literal(LiteralValue::String(s)) => Some(Side::Text(s.inner())),
        Ast::Literal(LiteralValue::Int(i)) => Some(Side::Number(*i.inner() as f64)),
        Ast::Literal(LiteralValue::UInt(u)) => Some(Side::Number(*u.inner() as f64)),
        Ast::Literal(LiteralValue::Double(d)) if d.inner().is_finite() => {
            Some(Side::Number(*d.inner()))
        }
        Ast::Literal(LiteralValue::Boolean(b)) => Some(Side::Bool(*b.inner())),
        // timestamp("2026-01-01T00:00:00Z"): floor and ceiling in ms.
        Ast::Call(call)
            if call.func_name == "timestamp" && call.target.is_none() && call.args.len() == 1 =>
        {
            match &call.args[0].expr {
                Ast::Literal(LiteralValue::String(s)) => {
                    let t = DateTime::parse_from_rfc3339(s.inner()).ok()?;
                    let floor = t.timestamp_millis();
                    let ceil = if t.timestamp_subsec_nanos() % 1_000_000 == 0 {
                        floor
                    } else {
                        floor + 1
                    };
                    Some(Side::Time(floor, ceil))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// One conjunct as a pushdown and whether it is exact.
fn translate(e: &IdedExpr) -> Option<(Pushdown, bool)> {
    let Ast::Call(call) = &e.expr else {
        return match side(e) {
            Some(Side::Column("opted_out")) => Some((
                Pushdown::ColumnBool {
                    column: ContactColumn::OptedOut,
                    value: true,
                },
                true,
            )),
            _ => None,
        };
    };
    if call.func_name == "!_" && call.args.len() == 1 {
        return match side(&call.args[0]) {
            Some(Side::Column("opted_out")) => Some((
                Pushdown::ColumnBool {
                    column: ContactColumn::OptedOut,
                    value: false,
                },
                true,
            )),
            _ => None,
        };
    }
    if call.target.is_some() || call.args.len() != 2 {
        return None;
    }
    let (op, flipped) = match call.func_name.as_str() {
        "_==_" => (Cmp::Eq, Cmp::Eq),
        "_<_" | "_<=_" => (Cmp::Le, Cmp::Ge),
        "_>_" | "_>=_" => (Cmp::Ge, Cmp::Le),
        _ => return None,
    };
    let (l, r) = (side(&call.args[0])?, side(&call.args[1])?);
    // Put the field on the left.
    let (field, lit, cmp) = match (&l, &r) {
        (Side::Attr(_) | Side::Column(_), _) => (l, r, op),
        (_, Side::Attr(_) | Side::Column(_)) => (r, l, flipped),
        _ => return None,
    };
    match (field, lit) {
        (Side::Attr(key), Side::Text(v)) if cmp == Cmp::Eq && v.len() <= MAX_INDEXED_TEXT => {
            Some((
                Pushdown::AttrText {
                    key: key.to_owned(),
                    value: v.to_owned(),
                },
                true,
            ))
        }
        (Side::Attr(key), Side::Number(value)) => Some((
            Pushdown::AttrNumber {
                key: key.to_owned(),
                cmp,
                value,
            },
            false,
        )),
        (Side::Column(col @ ("channel" | "phone")), Side::Text(v)) if cmp == Cmp::Eq => {
            let column = if col == "channel" {
                ContactColumn::Channel
            } else {
                ContactColumn::Phone
            };
            Some((
                Pushdown::ColumnText {
                    column,
                    value: v.to_owned(),
                },
                true,
            ))
        }
        (Side::Column(col @ ("first_seen" | "last_seen")), Side::Time(floor, ceil))
            if cmp != Cmp::Eq =>
        {
            let column = if col == "first_seen" {
                ContactColumn::FirstSeen
            } else {
                ContactColumn::LastSeen
            };
            let value = if cmp == Cmp::Ge { floor } else { ceil };
            Some((Pushdown::ColumnTime { column, cmp, value }, false))
        }
        (Side::Column("opted_out"), Side::Bool(value)) if cmp == Cmp::Eq => Some((
            Pushdown::ColumnBool {
                column: ContactColumn::OptedOut,
                value,
            },
            true,
        )),
        _ => None,
    }
}

/// What an attribute value is indexed as: (text, number). Booleans, lists,
/// objects, nulls and long texts are not indexed (filters on them are
/// answered by evaluation).
pub fn indexed_value(v: &Value) -> Option<(Option<String>, Option<f64>)> {
    match v {
        Value::String(s) if s.len() <= MAX_INDEXED_TEXT => Some((Some(s.clone()), None)),
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(|f| (None, Some(f))),
        _ => None,
    }
}

/// Applies a patch to attributes the way story webhooks' `user_attributes`
/// do: each key replaces its value, `null` deletes it.
pub fn merge_attributes(attrs: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        if v.is_null() {
            attrs.remove(k);
        } else {
            attrs.insert(k.clone(), v.clone());
        }
    }
}

/// Why an attribute patch is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    /// A key is empty, too long or not `[A-Za-z0-9_-]`.
    #[error("attribute key {0:?} must be 1 to 64 characters of A-Z a-z 0-9 _ -")]
    Key(String),
    /// The attributes grew too large.
    #[error("attributes may hold at most {0} bytes of JSON")]
    TooLarge(usize),
}

/// Largest attributes object, in bytes of JSON.
pub const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;

/// Checks the keys of a patch (they must be usable as `user.key` in a
/// filter and as `{{user.key}}` in a merge tag).
pub fn check_patch(patch: &Map<String, Value>) -> Result<(), AttributeError> {
    for k in patch.keys() {
        if k.is_empty()
            || k.len() > 64
            || !k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(AttributeError::Key(k.clone()));
        }
    }
    Ok(())
}

/// Checks the size of merged attributes.
pub fn check_size(attrs: &Map<String, Value>) -> Result<(), AttributeError> {
    let n = serde_json::to_string(attrs).map_or(0, |s| s.len());
    if n > MAX_ATTRIBUTES_BYTES {
        return Err(AttributeError::TooLarge(MAX_ATTRIBUTES_BYTES));
    }
    Ok(())
}

/// A shared compiled filter.
pub type SharedFilter = Arc<ContactFilter>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn facts(attrs: Value) -> ContactFacts {
        ContactFacts {
            id: "ct_1".into(),
            phone: Some("+34600000000".into()),
            external_id: None,
            channel: "whatsapp".into(),
            first_seen: 1_700_000_000_000,
            last_seen: Some(1_800_000_000_000),
            opted_out: false,
            attributes: attrs.as_object().cloned().unwrap(),
        }
    }

    #[test]
    fn filters_read_user_and_contact() {
        let c = facts(json!({"plan": "vip", "age": 30}));
        let t = |s: &str| ContactFilter::compile(s).unwrap().matches(&c);
        assert!(t(r#"user.plan == "vip" && contact.channel == "whatsapp""#));
        assert!(!t(r#"user.plan == "free""#));
        assert!(t("user.age >= 18 && user.age < 31"));
        assert!(!t("user.missing > 3"), "an error is no match");
        assert!(t(
            r#"contact.last_seen > timestamp("2026-01-01T00:00:00Z")"#
        ));
        assert!(t("!contact.opted_out"));
    }

    #[test]
    fn bad_filters_name_their_column() {
        let e = ContactFilter::compile("user.plan == memory.x").unwrap_err();
        assert_eq!(e.column(), Some(14), "{e}");
        let e = ContactFilter::compile("user.plan == ").unwrap_err();
        assert!(e.column().is_some());
    }

    #[test]
    fn indexable_conjuncts_are_pushed_down() {
        let f = ContactFilter::compile(
            r#"user.plan == "vip" && 18 < user.age && contact.channel == "web" && size(user.tags) > 0"#,
        )
        .unwrap();
        assert_eq!(
            f.pushdown(),
            &[
                Pushdown::AttrText {
                    key: "plan".into(),
                    value: "vip".into()
                },
                Pushdown::AttrNumber {
                    key: "age".into(),
                    cmp: Cmp::Ge,
                    value: 18.0
                },
                Pushdown::ColumnText {
                    column: ContactColumn::Channel,
                    value: "web".into()
                },
            ]
        );
        assert!(!f.exact());
        let f = ContactFilter::compile(r#"user.plan == "vip" && !contact.opted_out"#).unwrap();
        assert_eq!(f.pushdown().len(), 2);
        assert!(f.exact());
        assert!(!ContactFilter::compile("user.n == 1").unwrap().exact());
        assert!(
            ContactFilter::compile(r#"user.plan == "vip" && contact.opted_out == false"#)
                .unwrap()
                .exact()
        );
        // A disjunction is evaluated, not pushed down.
        let f = ContactFilter::compile(r#"user.plan == "vip" || user.plan == "gold""#).unwrap();
        assert!(f.pushdown().is_empty());
    }

    #[test]
    fn channels_come_from_the_external_id_prefix() {
        assert_eq!(channel_of(Some("whatsapp:5255")), "whatsapp");
        assert_eq!(channel_of(Some("web:v_1")), "web");
        assert_eq!(channel_of(Some("webby")), "api");
        assert_eq!(channel_of(None), "api");
    }

    #[test]
    fn patches_merge_and_null_deletes() {
        let mut a = json!({"plan": "free", "age": 3})
            .as_object()
            .cloned()
            .unwrap();
        let p = json!({"plan": "vip", "age": null})
            .as_object()
            .cloned()
            .unwrap();
        check_patch(&p).unwrap();
        merge_attributes(&mut a, &p);
        assert_eq!(Value::Object(a), json!({"plan": "vip"}));
        let bad = json!({"a b": 1}).as_object().cloned().unwrap();
        assert!(check_patch(&bad).is_err());
    }
}
