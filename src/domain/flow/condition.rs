//! Conditions and `set` expressions: CEL (the Common Expression Language),
//! compiled once when a flow is parsed and evaluated on every turn.
//!
//! An [`Expr`] is compiled from its source by [`Expr::compile`]: a syntax
//! error or a name outside the known roots ([`ROOTS`]) is an [`ExprError`]
//! with the 1-based column, so a flow with a typo is refused at save. The
//! compiled program is kept (behind an `Arc`) in the parsed flow, so a turn
//! never parses.
//!
//! Evaluation goes through a [`Scope`]: the roots an expression list needs
//! (`memory`, `user`, `contact`, `quote`, `appointment`, `channel`, `now`)
//! converted once from the conversation's JSON, then shared by every
//! expression of a branch list. Conversion rules: JSON numbers are CEL `int`
//! (whole) or `double`; strings are strings, except memory keys saved by a
//! `date` ask, which are timestamps (midnight UTC); `now` is a timestamp.
//!
//! Money stays decimal: CEL has no decimal type, so `money.add`,
//! `money.sub`, `money.mul` and `money.cmp` take amounts as decimal text
//! (`"12.50"`, as quotes store them) or integers and compute with
//! `rust_decimal`; `add`, `sub` and `mul` return the exact result as text,
//! rounded half-up to the cent.
//!
//! Invariants: evaluation never panics and always terminates (CEL has no
//! loops beyond the bounded macros over finite lists); an evaluation error
//! is a value ([`EvalError`]) for the caller to log, never a crash.

use cel::common::ast::{EntryExpr, Expr as Ast, IdedExpr};
use cel::common::types::DYN_TYPE;
use cel::common::value::{CowVal, Val};
use cel::{Env, Program};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use thiserror::Error;

/// The names an expression may start from.
pub const ROOTS: [&str; 7] = [
    "memory",
    "user",
    "contact",
    "quote",
    "appointment",
    "channel",
    "now",
];

/// Identifiers CEL itself defines (type names used with `type(x) == int`).
const BUILTIN_NAMES: [&str; 13] = [
    "int",
    "uint",
    "double",
    "bool",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
    "timestamp",
    "duration",
    "dyn",
];

/// Longest expression source, in characters.
pub const MAX_EXPR: usize = 1024;

/// Why an expression does not compile.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExprError {
    /// The text is not CEL.
    #[error("syntax error at column {column}: {message}")]
    Syntax {
        /// 1-based column (counted in characters on the expression's line).
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// A name that is not one of [`ROOTS`] (nor a variable of a macro).
    #[error(
        "unknown name \"{name}\" at column {column}; expressions start from memory, user, contact, quote, appointment, channel or now"
    )]
    UnknownRoot {
        /// The name.
        name: String,
        /// 1-based column.
        column: usize,
    },
    /// A root that exists but that this kind of expression cannot read
    /// (a contact filter reads `user` and `contact` only).
    #[error("\"{name}\" at column {column} cannot be used here; use {allowed}")]
    NotAllowed {
        /// The name.
        name: String,
        /// 1-based column.
        column: usize,
        /// The roots that may be used, for the message.
        allowed: String,
    },
    /// Empty or longer than [`MAX_EXPR`].
    #[error("expressions are 1 to {MAX_EXPR} characters")]
    Length,
}

impl ExprError {
    /// The 1-based column the problem is at, when there is one.
    pub fn column(&self) -> Option<usize> {
        match self {
            ExprError::Syntax { column, .. }
            | ExprError::UnknownRoot { column, .. }
            | ExprError::NotAllowed { column, .. } => Some(*column),
            ExprError::Length => None,
        }
    }
}

/// Why an evaluation failed (the branch list takes `else`).
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{0}")]
pub struct EvalError(pub String);

/// A compiled CEL expression and its source.
#[derive(Clone)]
pub struct Expr {
    source: String,
    program: Arc<Program>,
    roots: BTreeSet<&'static str>,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expr({:?})", self.source)
    }
}

impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// The environment every expression is compiled and run in: the standard
/// library, the strings extension and the `money` functions. Built once.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    // Registration only fails on duplicate names, which these are not.
    let _ = env.add_extension(cel::extensions::strings);
    for (name, id, f) in [
        (
            "money.add",
            "money_add",
            money_add as cel::common::functions::Function,
        ),
        ("money.sub", "money_sub", money_sub),
        ("money.mul", "money_mul", money_mul),
        ("money.cmp", "money_cmp", money_cmp),
    ] {
        let _ = env.add_overload(name, id, vec![DYN_TYPE, DYN_TYPE], f);
    }
    Arc::new(env)
});

impl Expr {
    /// Compiles `source`, checking its syntax and the names it uses.
    pub fn compile(source: &str) -> Result<Expr, ExprError> {
        Self::compile_with_roots(source, &ROOTS)
    }

    /// Compiles `source` allowing only the roots in `allowed` (a subset of
    /// [`ROOTS`]); another root is [`ExprError::NotAllowed`] with its column.
    pub fn compile_with_roots(source: &str, allowed: &[&'static str]) -> Result<Expr, ExprError> {
        let n = source.chars().count();
        if source.trim().is_empty() || n > MAX_EXPR {
            return Err(ExprError::Length);
        }
        let program = ENV.compile(source).map_err(|e| {
            let first = e.errors.first();
            ExprError::Syntax {
                column: first.map_or(1, |p| usize::try_from(p.pos.1).unwrap_or(0) + 1),
                message: first.map_or_else(|| "invalid expression".into(), |p| p.msg.clone()),
            }
        })?;
        let mut roots = BTreeSet::new();
        let mut bound = Vec::new();
        check_names(
            program.expression(),
            &program,
            source,
            &mut bound,
            &mut roots,
        )?;
        if let Some(name) = roots.iter().find(|r| !allowed.contains(r)) {
            let column = first_use(program.expression(), name)
                .and_then(|id| program.source_info().offset_for(id))
                .map_or(1, |o| column_at(source, o.0));
            return Err(ExprError::NotAllowed {
                name: (*name).to_string(),
                column,
                allowed: allowed.join(" or "),
            });
        }
        Ok(Expr {
            source: source.to_string(),
            program: Arc::new(program),
            roots,
        })
    }

    /// The compiled syntax tree (for callers that translate parts of it,
    /// such as contact filters into SQL).
    pub fn ast(&self) -> &IdedExpr {
        self.program.expression()
    }

    /// The source as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The roots this expression reads.
    pub fn roots(&self) -> &BTreeSet<&'static str> {
        &self.roots
    }

    /// Evaluates to a CEL value.
    pub fn eval(&self, scope: &Scope) -> Result<cel::Value, EvalError> {
        let mut ctx = cel::Context::with_env(Arc::clone(&ENV));
        for (name, value) in &scope.vars {
            if self.roots.contains(name) {
                ctx.add_variable_from_value(*name, value.clone());
            }
        }
        self.program
            .execute(&ctx)
            .map_err(|e| EvalError(format!("{} ({e})", self.source)))
    }

    /// Evaluates a condition: it must give a `bool`.
    pub fn eval_bool(&self, scope: &Scope) -> Result<bool, EvalError> {
        match self.eval(scope)? {
            cel::Value::Bool(b) => Ok(b),
            other => Err(EvalError(format!(
                "{} gave {} instead of true or false",
                self.source,
                type_name(&other)
            ))),
        }
    }

    /// Evaluates to JSON (for `set`).
    pub fn eval_json(&self, scope: &Scope) -> Result<Value, EvalError> {
        let v = self.eval(scope)?;
        to_json(&v).ok_or_else(|| {
            EvalError(format!(
                "{} gave a {} that memory cannot hold",
                self.source,
                type_name(&v)
            ))
        })
    }
}

/// Where a position of the source is, as a 1-based column on its line.
fn column_at(source: &str, offset: u32) -> usize {
    let before: String = source.chars().take(offset as usize).collect();
    match before.rfind('\n') {
        Some(i) => before[i + 1..].chars().count() + 1,
        None => before.chars().count() + 1,
    }
}

/// The id of the first identifier `name` in the tree, for its column.
fn first_use(e: &IdedExpr, name: &str) -> Option<u64> {
    match &e.expr {
        Ast::Ident(n) if n == name => Some(e.id),
        Ast::Call(call) => call
            .target
            .as_deref()
            .and_then(|t| first_use(t, name))
            .or_else(|| call.args.iter().find_map(|a| first_use(a, name))),
        Ast::Select(s) => first_use(&s.operand, name),
        Ast::List(l) => l.elements.iter().find_map(|x| first_use(x, name)),
        Ast::Comprehension(c) => [
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ]
        .into_iter()
        .find_map(|x| first_use(x, name)),
        _ => None,
    }
}

fn check_names(
    e: &IdedExpr,
    program: &Program,
    source: &str,
    bound: &mut Vec<String>,
    roots: &mut BTreeSet<&'static str>,
) -> Result<(), ExprError> {
    let mut walk = |child: &IdedExpr, bound: &mut Vec<String>| {
        check_names(child, program, source, bound, roots)
    };
    match &e.expr {
        Ast::Ident(name) => {
            if name.starts_with('@') || bound.iter().any(|b| b == name) {
                return Ok(());
            }
            if let Some(r) = ROOTS.iter().find(|r| **r == name) {
                roots.insert(r);
                return Ok(());
            }
            if BUILTIN_NAMES.contains(&name.as_str()) {
                return Ok(());
            }
            let offset = program.source_info().offset_for(e.id).map_or(0, |o| o.0);
            Err(ExprError::UnknownRoot {
                name: name.clone(),
                column: column_at(source, offset),
            })
        }
        Ast::Call(call) => {
            // `money.add(…)` parses as a call on `money`: a namespace, not a root.
            let namespace = call
                .target
                .as_deref()
                .is_some_and(|t| matches!(&t.expr, Ast::Ident(n) if n == "money"));
            if let Some(t) = call.target.as_deref().filter(|_| !namespace) {
                walk(t, bound)?;
            }
            for a in &call.args {
                walk(a, bound)?;
            }
            Ok(())
        }
        Ast::Comprehension(c) => {
            walk(&c.iter_range, bound)?;
            let depth = bound.len();
            bound.push(c.iter_var.clone());
            bound.extend(c.iter_var2.clone());
            bound.push(c.accu_var.clone());
            let r = walk(&c.accu_init, bound)
                .and_then(|_| walk(&c.loop_cond, bound))
                .and_then(|_| walk(&c.loop_step, bound))
                .and_then(|_| walk(&c.result, bound));
            bound.truncate(depth);
            r
        }
        Ast::List(l) => {
            for x in &l.elements {
                walk(x, bound)?;
            }
            Ok(())
        }
        Ast::Map(m) => {
            for entry in &m.entries {
                match &entry.expr {
                    EntryExpr::StructField(f) => walk(&f.value, bound)?,
                    EntryExpr::MapEntry(me) => {
                        walk(&me.key, bound)?;
                        walk(&me.value, bound)?;
                    }
                }
            }
            Ok(())
        }
        Ast::Struct(s) => {
            for entry in &s.entries {
                match &entry.expr {
                    EntryExpr::StructField(f) => walk(&f.value, bound)?,
                    EntryExpr::MapEntry(me) => {
                        walk(&me.key, bound)?;
                        walk(&me.value, bound)?;
                    }
                }
            }
            Ok(())
        }
        Ast::Select(s) => walk(&s.operand, bound),
        Ast::Literal(_) | Ast::Unspecified => Ok(()),
    }
}

/// The values expressions see, converted once and shared by a list of
/// expressions (a branch list, a `set` node).
pub struct Scope {
    vars: Vec<(&'static str, cel::Value)>,
}

/// What a [`Scope`] is built from.
pub struct ScopeInput<'a> {
    /// Session memory.
    pub memory: &'a Map<String, Value>,
    /// Contact attributes, this turn's changes applied.
    pub user: &'a Map<String, Value>,
    /// `{id, phone, external_id}`.
    pub contact: Value,
    /// The channel the conversation is on (`"api"`, `"web"` …).
    pub channel: &'a str,
    /// The current time.
    pub now: DateTime<Utc>,
    /// Memory keys that hold dates (saved by a `date` ask).
    pub date_keys: &'a BTreeSet<String>,
}

impl Scope {
    /// A scope of values already converted (contact filters build theirs
    /// from a stored contact).
    pub fn from_values(vars: Vec<(&'static str, cel::Value)>) -> Scope {
        Scope { vars }
    }

    /// Converts the roots in `needed` (and only those).
    pub fn new(input: &ScopeInput, needed: &BTreeSet<&'static str>) -> Scope {
        let mut vars = Vec::with_capacity(needed.len());
        for root in needed {
            let v = match *root {
                "memory" => memory_value(input.memory, input.date_keys),
                "user" => object_value(input.user),
                "contact" => from_json(&input.contact),
                "quote" => input
                    .memory
                    .get("quote")
                    .map_or(cel::Value::Null, from_json),
                "appointment" => input
                    .memory
                    .get("appointment")
                    .map_or(cel::Value::Null, from_json),
                "channel" => cel::Value::from(input.channel.to_string()),
                "now" => cel::Value::Timestamp(input.now.fixed_offset()),
                _ => continue,
            };
            vars.push((*root, v));
        }
        Scope { vars }
    }
}

fn memory_value(memory: &Map<String, Value>, dates: &BTreeSet<String>) -> cel::Value {
    let mut m: HashMap<String, cel::Value> = HashMap::with_capacity(memory.len());
    for (k, v) in memory {
        let date = match v {
            Value::String(s) if dates.contains(k) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| cel::Value::Timestamp(t.and_utc().fixed_offset())),
            _ => None,
        };
        m.insert(k.clone(), date.unwrap_or_else(|| from_json(v)));
    }
    m.into()
}

fn object_value(o: &Map<String, Value>) -> cel::Value {
    let m: HashMap<String, cel::Value> = o.iter().map(|(k, v)| (k.clone(), from_json(v))).collect();
    m.into()
}

/// JSON to CEL: whole numbers are `int`, other numbers `double`.
pub fn from_json(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => cel::Value::Int(i),
            None => n
                .as_u64()
                .map(cel::Value::UInt)
                .unwrap_or_else(|| cel::Value::Float(n.as_f64().unwrap_or(f64::NAN))),
        },
        Value::String(s) => cel::Value::from(s.clone()),
        Value::Array(a) => cel::Value::List(Arc::new(a.iter().map(from_json).collect())),
        Value::Object(o) => object_value(o),
    }
}

/// CEL to JSON, for values `set` stores; `None` for bytes, functions and the like.
pub fn to_json(v: &cel::Value) -> Option<Value> {
    Some(match v {
        cel::Value::Null => Value::Null,
        cel::Value::Bool(b) => Value::Bool(*b),
        cel::Value::Int(i) => Value::from(*i),
        cel::Value::UInt(u) => Value::from(*u),
        cel::Value::Float(f) => serde_json::Number::from_f64(*f).map(Value::Number)?,
        cel::Value::String(s) => Value::String(s.to_string()),
        cel::Value::Timestamp(t) => Value::String(
            t.to_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
        cel::Value::Duration(d) => Value::from(d.num_seconds()),
        cel::Value::List(l) => Value::Array(l.iter().map(to_json).collect::<Option<_>>()?),
        cel::Value::Map(m) => {
            let mut out = Map::new();
            for (k, v) in m.map.iter() {
                let key = match k {
                    cel::objects::Key::String(s) => s.to_string(),
                    cel::objects::Key::Int(i) => i.to_string(),
                    cel::objects::Key::Uint(u) => u.to_string(),
                    cel::objects::Key::Bool(b) => b.to_string(),
                };
                out.insert(key, to_json(v)?);
            }
            Value::Object(out)
        }
        _ => return None,
    })
}

fn type_name(v: &cel::Value) -> &'static str {
    match v {
        cel::Value::Null => "null",
        cel::Value::Bool(_) => "bool",
        cel::Value::Int(_) => "int",
        cel::Value::UInt(_) => "uint",
        cel::Value::Float(_) => "double",
        cel::Value::String(_) => "string",
        cel::Value::List(_) => "list",
        cel::Value::Map(_) => "map",
        cel::Value::Timestamp(_) => "timestamp",
        cel::Value::Duration(_) => "duration",
        _ => "value",
    }
}

// ---------------------------------------------------------------------------
// money.*: decimal arithmetic on amounts written as text or integers.

fn decimal_arg(function: &str, v: &CowVal) -> Result<Decimal, cel::ExecutionError> {
    let value = cel::Value::try_from(&**v)
        .map_err(|_| cel::ExecutionError::function_error(function, "not an amount"))?;
    match value {
        cel::Value::Int(i) => Ok(Decimal::from(i)),
        cel::Value::UInt(u) => Ok(Decimal::from(u)),
        cel::Value::String(s) => Decimal::from_str(s.trim()).map_err(|_| {
            cel::ExecutionError::function_error(function, format!("{s:?} is not an amount"))
        }),
        // A double is converted through its shortest exact text ("12.5").
        cel::Value::Float(f) => Decimal::from_str(&f.to_string()).map_err(|_| {
            cel::ExecutionError::function_error(function, format!("{f} is not an amount"))
        }),
        other => Err(cel::ExecutionError::function_error(
            function,
            format!("a {} is not an amount", type_name(&other)),
        )),
    }
}

fn two_args<'b, 'v>(
    function: &str,
    args: &[CowVal<'b, 'v>],
) -> Result<(Decimal, Decimal), cel::ExecutionError> {
    match args {
        [a, b] => Ok((decimal_arg(function, a)?, decimal_arg(function, b)?)),
        _ => Err(cel::ExecutionError::invalid_argument_count(2, args.len())),
    }
}

fn money_result<'b, 'v>(
    function: &str,
    d: Option<Decimal>,
) -> Result<CowVal<'b, 'v>, cel::ExecutionError> {
    let d = d.ok_or_else(|| cel::ExecutionError::function_error(function, "overflow"))?;
    let text = d
        .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
        .to_string();
    owned(cel::Value::from(text))
}

fn owned<'b, 'v>(v: cel::Value) -> Result<CowVal<'b, 'v>, cel::ExecutionError> {
    let b: Box<dyn Val> = v
        .try_into()
        .map_err(|_| cel::ExecutionError::function_error("money", "internal conversion"))?;
    Ok(CowVal::Owned(b))
}

fn money_add<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, cel::ExecutionError> {
    let (a, b) = two_args("money.add", &args)?;
    money_result("money.add", a.checked_add(b))
}

fn money_sub<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, cel::ExecutionError> {
    let (a, b) = two_args("money.sub", &args)?;
    money_result("money.sub", a.checked_sub(b))
}

fn money_mul<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, cel::ExecutionError> {
    let (a, b) = two_args("money.mul", &args)?;
    money_result("money.mul", a.checked_mul(b))
}

fn money_cmp<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, cel::ExecutionError> {
    let (a, b) = two_args("money.cmp", &args)?;
    owned(cel::Value::Int(match a.cmp(&b) {
        std::cmp::Ordering::Less => -1,
        std::cmp::Ordering::Equal => 0,
        std::cmp::Ordering::Greater => 1,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn scope(memory: Value, user: Value) -> (Map<String, Value>, Map<String, Value>) {
        (
            memory.as_object().cloned().unwrap_or_default(),
            user.as_object().cloned().unwrap_or_default(),
        )
    }

    fn eval(src: &str, memory: Value, user: Value) -> Result<cel::Value, EvalError> {
        let (m, u) = scope(memory, user);
        let dates: BTreeSet<String> = ["when".to_string()].into();
        let input = ScopeInput {
            memory: &m,
            user: &u,
            contact: json!({"id": "ct_1", "phone": null, "external_id": null}),
            channel: "api",
            now: Utc.with_ymd_and_hms(2025, 11, 23, 12, 0, 0).unwrap(),
            date_keys: &dates,
        };
        let e = Expr::compile(src).unwrap();
        e.eval(&Scope::new(&input, e.roots()))
    }

    #[test]
    fn conditions_over_memory_and_user() {
        let m = json!({"size": 12, "email": "ana@acme.com", "when": "2025-12-01"});
        let u = json!({"plan": "vip"});
        let t = |s: &str| eval(s, m.clone(), u.clone());
        assert_eq!(
            t("memory.size >= 10 && user.plan == \"vip\""),
            Ok(true.into())
        );
        assert_eq!(
            t("has(memory.email) && memory.email.endsWith(\"@acme.com\")"),
            Ok(true.into())
        );
        assert_eq!(t("has(memory.phone)"), Ok(false.into()));
        assert_eq!(
            t("memory.when > now"),
            Ok(true.into()),
            "dates are timestamps"
        );
        assert_eq!(t("channel == 'api'"), Ok(true.into()));
        assert_eq!(
            t("[1, 2, 3].exists(x, x == memory.size - 10)"),
            Ok(true.into())
        );
        // A missing key compared as a number is an error, not a crash.
        assert!(t("memory.budget > 5").is_err());
        // Strict typing: text is not a number.
        assert!(eval("memory.n >= 18", json!({"n": "18"}), json!({})).is_err());
    }

    #[test]
    fn compile_errors_name_the_column() {
        let e = Expr::compile("memory.size >= 10 && usr.plan == 'vip'").unwrap_err();
        assert_eq!(
            e,
            ExprError::UnknownRoot {
                name: "usr".into(),
                column: 22
            }
        );
        let e = Expr::compile("memory.size >= ").unwrap_err();
        assert!(matches!(e, ExprError::Syntax { .. }), "{e:?}");
        assert!(e.column().is_some_and(|c| c >= 14), "{e:?}");
        assert_eq!(Expr::compile("  ").unwrap_err(), ExprError::Length);
        // Macro variables are not roots.
        assert!(Expr::compile("memory.tags.all(t, t.size() < 10)").is_ok());
        assert!(Expr::compile("type(memory.size) == int").is_ok());
    }

    #[test]
    fn money_is_decimal() {
        let m = json!({"quote": {"total": "0.10"}});
        assert_eq!(
            eval("money.add(quote.total, '0.20')", m.clone(), json!({})),
            Ok(cel::Value::from("0.30".to_string()))
        );
        assert_eq!(
            eval("money.mul('12.345', 2)", m.clone(), json!({})),
            Ok(cel::Value::from("24.69".to_string()))
        );
        assert_eq!(
            eval("money.cmp(quote.total, '0.1') == 0", m.clone(), json!({})),
            Ok(true.into())
        );
        assert!(eval("money.add('ten', 1)", m, json!({})).is_err());
    }

    #[test]
    fn json_round_trip() {
        let v = json!({"a": [1, 2.5, "x", true, null], "b": {"c": 1}});
        assert_eq!(to_json(&from_json(&v)), Some(v));
    }
}
