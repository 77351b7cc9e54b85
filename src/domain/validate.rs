//! Validation of the answers given to an `ask` node.
//!
//! A [`Validation`] is part of the flow document (`validate: { kind: text, min: 2 }`).
//! [`Validation::check`] turns a raw chat answer into the normalised JSON value
//! that is stored in memory, or into a short human reason for the retry message.
//!
//! Invariants: checking never panics on any input; regex patterns are compiled
//! with a size limit and anchored to the whole answer, and a flow whose pattern
//! does not compile is rejected when the flow is validated
//! ([`Validation::problems`]), so a bad pattern never reaches a conversation.

use chrono::NaiveDate;
use regex::{Regex, RegexBuilder};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::str::FromStr;

/// Compiled-size limit of a user-supplied regex (bytes of compiled program).
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Longest accepted regex pattern source.
pub const REGEX_MAX_LEN: usize = 1000;

/// How an `ask` answer is checked and normalised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Validation {
    /// Free text; `min`/`max` count characters of the trimmed answer.
    Text {
        /// Fewest characters.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<usize>,
        /// Most characters.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<usize>,
    },
    /// A decimal number (`,` accepted as the decimal separator), optionally an integer.
    Number {
        /// Smallest value allowed.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::domain::quote::decimal_opt"
        )]
        min: Option<Decimal>,
        /// Largest value allowed.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "crate::domain::quote::decimal_opt"
        )]
        max: Option<Decimal>,
        /// Whether only whole numbers are accepted.
        #[serde(default)]
        integer: bool,
    },
    /// An e-mail address; the domain is lower-cased.
    Email {},
    /// An E.164 phone number: `+` then 8–15 digits; spaces, dashes and
    /// parentheses in the answer are tolerated and stripped.
    Phone {},
    /// A date as `YYYY-MM-DD` or `DD/MM/YYYY`, stored as `YYYY-MM-DD`.
    Date {},
    /// The whole (trimmed) answer must match `pattern`.
    Regex {
        /// Regex source (Rust `regex` syntax); anchored automatically.
        pattern: String,
    },
    /// One of a list of options, compared ignoring case and extra spaces;
    /// the stored value is the option as written in the flow.
    Choice {
        /// The accepted answers.
        options: Vec<String>,
    },
}

/// Lower-cases and collapses whitespace, for forgiving comparisons.
pub fn normalise(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Compiles a user pattern anchored to the whole input, with size limits.
pub fn compile_pattern(pattern: &str) -> Result<Regex, String> {
    if pattern.len() > REGEX_MAX_LEN {
        return Err(format!("pattern is longer than {REGEX_MAX_LEN} characters"));
    }
    RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("invalid regex: {e}"))
}

impl Validation {
    /// Problems with the validation itself, as `(field, message)` pairs where the
    /// field is relative to `validate` (`""`, `"pattern"`, `"options"`).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        match self {
            Validation::Text { min, max } => {
                if let (Some(a), Some(b)) = (min, max)
                    && a > b
                {
                    out.push(("max".into(), format!("max ({b}) is smaller than min ({a})")));
                }
            }
            Validation::Number { min, max, .. } => {
                if let (Some(a), Some(b)) = (min, max)
                    && a > b
                {
                    out.push(("max".into(), format!("max ({b}) is smaller than min ({a})")));
                }
            }
            Validation::Regex { pattern } => {
                if let Err(e) = compile_pattern(pattern) {
                    out.push(("pattern".into(), e));
                }
            }
            Validation::Choice { options } => {
                if options.is_empty() {
                    out.push(("options".into(), "choice needs at least one option".into()));
                }
                let mut seen = Vec::new();
                for (i, o) in options.iter().enumerate() {
                    let n = normalise(o);
                    if n.is_empty() {
                        out.push((format!("options[{i}]"), "empty option".into()));
                    } else if seen.contains(&n) {
                        out.push((format!("options[{i}]"), format!("duplicate option {o:?}")));
                    }
                    seen.push(n);
                }
            }
            Validation::Email {} | Validation::Phone {} | Validation::Date {} => {}
        }
        out
    }

    /// Checks an answer: `Ok(value to store)` or `Err(reason)` for the retry message.
    pub fn check(&self, answer: &str) -> Result<Value, String> {
        let trimmed = answer.trim();
        match self {
            Validation::Text { min, max } => {
                let n = trimmed.chars().count();
                if let Some(min) = min
                    && n < *min
                {
                    return Err(format!("it must be at least {min} characters long"));
                }
                if let Some(max) = max
                    && n > *max
                {
                    return Err(format!("it must be at most {max} characters long"));
                }
                if n == 0 {
                    return Err("it must not be empty".into());
                }
                Ok(Value::String(trimmed.to_string()))
            }
            Validation::Number { min, max, integer } => {
                check_number(trimmed, min.as_ref(), max.as_ref(), *integer)
            }
            Validation::Email {} => check_email(trimmed),
            Validation::Phone {} => check_phone(trimmed),
            Validation::Date {} => check_date(trimmed),
            Validation::Regex { pattern } => {
                let re =
                    compile_pattern(pattern).map_err(|_| "it cannot be checked".to_string())?;
                if re.is_match(trimmed) {
                    Ok(Value::String(trimmed.to_string()))
                } else {
                    Err("it is not in the expected format".into())
                }
            }
            Validation::Choice { options } => {
                let n = normalise(trimmed);
                options
                    .iter()
                    .find(|o| normalise(o) == n)
                    .map(|o| Value::String(o.clone()))
                    .ok_or_else(|| format!("it must be one of: {}", options.join(", ")))
            }
        }
    }
}

fn check_number(
    s: &str,
    min: Option<&Decimal>,
    max: Option<&Decimal>,
    integer: bool,
) -> Result<Value, String> {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let text =
        if compact.contains(',') && !compact.contains('.') && compact.matches(',').count() == 1 {
            compact.replace(',', ".")
        } else {
            compact
        };
    if text.is_empty()
        || text.len() > 40
        || !text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+'))
    {
        return Err("it must be a number".into());
    }
    let d = Decimal::from_str(&text).map_err(|_| "it must be a number".to_string())?;
    if integer && !d.fract().is_zero() {
        return Err("it must be a whole number".into());
    }
    if let Some(min) = min
        && d < *min
    {
        return Err(format!("it must be at least {min}"));
    }
    if let Some(max) = max
        && d > *max
    {
        return Err(format!("it must be at most {max}"));
    }
    let d = d.normalize();
    if d.fract().is_zero()
        && let Some(i) = d.to_i64()
    {
        return Ok(Value::from(i));
    }
    // Memory is JSON; a fractional answer becomes a JSON number parsed from its
    // exact decimal text (no arithmetic is done on it here).
    serde_json::from_str::<Value>(&d.to_string()).map_err(|_| "it must be a number".to_string())
}

fn check_email(s: &str) -> Result<Value, String> {
    const BAD: &str = "it must be an e-mail address like name@example.com";
    if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(BAD.into());
    }
    let (local, domain) = s.rsplit_once('@').ok_or(BAD)?;
    if local.is_empty() || local.len() > 64 || local.contains('@') {
        return Err(BAD.into());
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_alphanumeric() || c == '-')
    };
    if labels.len() < 2 || !labels.iter().all(label_ok) {
        return Err(BAD.into());
    }
    Ok(Value::String(format!("{local}@{}", domain.to_lowercase())))
}

fn check_phone(s: &str) -> Result<Value, String> {
    const BAD: &str = "it must be a phone number in international format, like +525500000000";
    let compact: String = s
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '\t'))
        .collect();
    let digits = compact.strip_prefix('+').ok_or(BAD)?;
    if (8..=15).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0')
    {
        Ok(Value::String(compact))
    } else {
        Err(BAD.into())
    }
}

fn check_date(s: &str) -> Result<Value, String> {
    const BAD: &str = "it must be a date like 2025-12-31 or 31/12/2025";
    if s.len() > 10 {
        return Err(BAD.into());
    }
    let parsed = if s.contains('/') {
        NaiveDate::parse_from_str(s, "%d/%m/%Y")
    } else {
        NaiveDate::parse_from_str(s, "%Y-%m-%d")
    };
    parsed
        .map(|d| Value::String(d.format("%Y-%m-%d").to_string()))
        .map_err(|_| BAD.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(yaml: &str) -> Validation {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn text() {
        let t = v("{ kind: text, min: 2, max: 5 }");
        assert_eq!(t.check("  Jo "), Ok(json!("Jo")));
        assert!(t.check("J").is_err());
        assert!(t.check("Johnny").is_err());
        assert!(t.check("  ").is_err());
        assert_eq!(v("{ kind: text }").check("ñ"), Ok(json!("ñ")));
    }

    #[test]
    fn number() {
        let n = v("{ kind: number, min: 1, max: \"10.5\" }");
        assert_eq!(n.check("3"), Ok(json!(3)));
        assert_eq!(n.check("2,5"), Ok(json!(2.5)));
        assert_eq!(n.check("10.50"), Ok(json!(10.5)));
        assert!(n.check("0").is_err());
        assert!(n.check("11").is_err());
        assert!(n.check("abc").is_err());
        assert!(n.check("1e5").is_err());
        let i = v("{ kind: number, integer: true }");
        assert!(i.check("2.5").is_err());
        assert_eq!(i.check(" 7 "), Ok(json!(7)));
        assert!(i.check(&"9".repeat(60)).is_err());
    }

    #[test]
    fn email() {
        let e = Validation::Email {};
        assert_eq!(e.check("Ana@Example.COM"), Ok(json!("Ana@example.com")));
        for bad in [
            "ana",
            "ana@",
            "@x.com",
            "ana@x",
            "a na@x.com",
            "ana@-x.com",
            "ana@x..com",
        ] {
            assert!(e.check(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn phone() {
        let p = Validation::Phone {};
        assert_eq!(p.check("+52 (55) 0000-0000"), Ok(json!("+525500000000")));
        assert!(p.check("5500000000").is_err());
        assert!(p.check("+1234567").is_err());
        assert!(p.check("+1234567890123456").is_err());
        assert!(p.check("+52abc00000000").is_err());
    }

    #[test]
    fn date() {
        let d = Validation::Date {};
        assert_eq!(d.check("2025-02-28"), Ok(json!("2025-02-28")));
        assert_eq!(d.check("28/02/2025"), Ok(json!("2025-02-28")));
        assert!(d.check("2025-02-30").is_err());
        assert!(d.check("02/28/2025").is_err());
        assert!(d.check("tomorrow").is_err());
    }

    #[test]
    fn regex() {
        let r = v("{ kind: regex, pattern: \"[A-Z]{2}[0-9]{3}\" }");
        assert_eq!(r.check(" AB123 "), Ok(json!("AB123")));
        assert!(r.check("xAB123").is_err(), "anchored");
        assert!(v("{ kind: regex, pattern: \"(\" }").problems()[0].0 == "pattern");
        let huge = Validation::Regex {
            pattern: "a{1000}{1000}".into(),
        };
        assert_eq!(huge.problems()[0].0, "pattern");
    }

    #[test]
    fn choice() {
        let c = v("{ kind: choice, options: [Small box, Large box] }");
        assert_eq!(c.check("  small   BOX"), Ok(json!("Small box")));
        assert!(c.check("medium").is_err());
        assert_eq!(
            v("{ kind: choice, options: [] }").problems()[0].0,
            "options"
        );
    }

    #[test]
    fn rejects_unknown_fields_and_kinds() {
        assert!(serde_yaml_ng::from_str::<Validation>("{ kind: text, mni: 2 }").is_err());
        assert!(serde_yaml_ng::from_str::<Validation>("{ kind: colour }").is_err());
        assert!(serde_yaml_ng::from_str::<Validation>("{ kind: email, min: 2 }").is_err());
        assert_eq!(
            serde_yaml_ng::from_str::<Validation>("{ kind: date }").unwrap(),
            Validation::Date {}
        );
        assert_eq!(
            serde_json::to_value(Validation::Phone {}).unwrap(),
            serde_json::json!({"kind": "phone"})
        );
    }
}
