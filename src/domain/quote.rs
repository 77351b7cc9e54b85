//! Price tables and the quotes priced from them.
//!
//! A bot of type `quote_generation` holds one [`PriceTable`]; a `quote` node
//! calls [`price`] with the conversation memory and stores the resulting
//! [`Quote`] in memory under `quote`.
//!
//! Invariants:
//! - money is [`Decimal`] from end to end and is serialised as a decimal string
//!   (`"11.60"`); no floating-point arithmetic ever touches it. A JSON/YAML number
//!   written in a price table is converted through its shortest decimal text,
//!   which reproduces any literal of up to 15 significant digits exactly;
//!   writing prices as strings avoids even that;
//! - every money figure of a quote is rounded to 2 places **half-up** (midpoint
//!   away from zero): each line amount, then the tax on the subtotal;
//!   `total == subtotal + tax` exactly;
//! - all arithmetic is checked: overflow or a bad quantity is a [`QuoteError`]
//!   with a plain message, never a panic;
//! - a valid table ([`PriceTable::validate`]) writes money with no more places
//!   than [`price_decimals`] allows its currency, so a price is never rounded
//!   on the way into a quote, and has no option that makes a unit price
//!   negative whatever else applies (such a quote could only fail at chat
//!   time).

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::str::FromStr;
use thiserror::Error;

/// Serde for a [`Decimal`]: written as a string, read from a string or a number.
pub mod decimal {
    use rust_decimal::Decimal;
    use serde::{Deserializer, Serializer, de};
    use std::fmt;
    use std::str::FromStr;

    /// Writes the decimal as a string.
    pub fn serialize<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(d)
    }

    /// Reads a decimal from a string or number.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        d.deserialize_any(DecimalVisitor)
    }

    pub(super) struct DecimalVisitor;

    impl de::Visitor<'_> for DecimalVisitor {
        type Value = Decimal;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a decimal number such as \"12.50\"")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Decimal, E> {
            Decimal::from_str(v.trim())
                .or_else(|_| Decimal::from_scientific(v.trim()))
                .map_err(|_| E::custom(format!("invalid decimal {v:?}")))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Decimal, E> {
            Ok(Decimal::from(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Decimal, E> {
            Ok(Decimal::from(v))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Decimal, E> {
            if !v.is_finite() {
                return Err(E::custom("invalid decimal"));
            }
            // Shortest round-trip text of the literal, then exact decimal parsing.
            self.visit_str(&v.to_string())
        }
    }
}

/// Serde for an `Option<Decimal>` (see [`decimal`]).
pub mod decimal_opt {
    use rust_decimal::Decimal;
    use serde::{Deserializer, Serializer, de};
    use std::fmt;

    /// Writes the decimal as a string, or nothing.
    pub fn serialize<S: Serializer>(d: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.collect_str(d),
            None => s.serialize_none(),
        }
    }

    /// Reads an optional decimal from a string, number or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        d.deserialize_option(OptVisitor)
    }

    struct OptVisitor;

    impl<'de> de::Visitor<'de> for OptVisitor {
        type Value = Option<Decimal>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a decimal number or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            super::decimal::deserialize(d).map(Some)
        }
    }
}

/// The prices of a quote bot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    /// ISO 4217 code, three capital letters (`MXN`, `EUR`).
    pub currency: String,
    /// Tax as a fraction of the subtotal (`"0.16"` for 16 %).
    #[serde(with = "decimal", default)]
    pub tax_rate: Decimal,
    /// How many days a quote stays valid.
    #[serde(default = "default_validity")]
    pub validity_days: u32,
    /// What can be sold.
    pub items: Vec<Item>,
    /// Memory key naming the chosen item (its key or name, any case); when
    /// absent every item is priced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_from: Option<String>,
}

fn default_validity() -> u32 {
    30
}

/// One product or service of a [`PriceTable`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// Stable key (`box-small`).
    pub key: String,
    /// Name shown to people.
    pub name: String,
    /// Price of one unit, before options and tax.
    #[serde(with = "decimal")]
    pub unit_price: Decimal,
    /// Memory key holding the quantity (number or numeric string); 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity_from: Option<String>,
    /// Surcharges and multipliers applied to the unit price, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<PriceOption>,
}

/// A conditional change of an item's unit price: `unit = (unit + add) * multiply`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceOption {
    /// Stable key.
    pub key: String,
    /// Name shown on the quote line.
    pub name: String,
    /// Memory key that switches the option on.
    pub when: String,
    /// Applies when memory\[when\] equals this (ignoring case and spaces); when
    /// absent, applies when memory\[when\] is "truthy" (true, a non-zero number,
    /// or a string other than "", "no", "false", "0", "n").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    /// Added to the unit price.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "decimal_opt")]
    pub add: Option<Decimal>,
    /// Multiplies the unit price (after `add`).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "decimal_opt")]
    pub multiply: Option<Decimal>,
}

/// A priced quote. Ids are the caller's business.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quote {
    /// One line per priced item.
    pub lines: Vec<QuoteLine>,
    /// Sum of the line amounts.
    #[serde(with = "decimal")]
    pub subtotal: Decimal,
    /// `subtotal * tax_rate`, rounded half-up to 2 places.
    #[serde(with = "decimal")]
    pub tax: Decimal,
    /// `subtotal + tax`.
    #[serde(with = "decimal")]
    pub total: Decimal,
    /// ISO 4217 code.
    pub currency: String,
    /// Last day (UTC) on which the quote holds.
    pub valid_until: NaiveDate,
}

/// One line of a [`Quote`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuoteLine {
    /// Item key.
    pub item: String,
    /// Item name.
    pub name: String,
    /// Names of the options that applied.
    #[serde(default)]
    pub options: Vec<String>,
    /// Units.
    #[serde(with = "decimal")]
    pub quantity: Decimal,
    /// Unit price after options, rounded to 2 places.
    #[serde(with = "decimal")]
    pub unit_price: Decimal,
    /// `quantity * unit_price`, rounded to 2 places.
    #[serde(with = "decimal")]
    pub amount: Decimal,
}

/// Why a quote could not be made (messages are fit to show a person), or what is
/// wrong with a price table.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum QuoteError {
    /// The chosen item is missing from memory.
    #[error("no product was chosen")]
    NoItemChosen,
    /// The chosen item does not exist.
    #[error("we do not sell \"{0}\"")]
    UnknownItem(String),
    /// A quantity is not a positive number.
    #[error("the quantity for {item} must be a positive number, not \"{value}\"")]
    BadQuantity {
        /// Item name.
        item: String,
        /// What memory held.
        value: String,
    },
    /// A figure grew out of range or went negative.
    #[error("the price of {0} cannot be computed")]
    OutOfRange(String),
    /// The table itself is invalid.
    #[error("price table, field \"{field}\": {message}")]
    InvalidTable {
        /// Field path inside the table (`items[1].unit_price`).
        field: String,
        /// What to fix.
        message: String,
    },
}

/// Largest quantity accepted from a conversation.
pub const MAX_QUANTITY: u32 = 1_000_000;

/// Largest unit price, and largest `add`, of a price table.
pub const MAX_PRICE: u64 = 1_000_000_000;

/// Currencies whose ISO 4217 minor unit is 0 (no cents).
const NO_MINOR_UNIT: [&str; 17] = [
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
    "VUV", "XAF", "XOF", "XPF",
];

/// Most decimal places a price in `currency` may be written with: its ISO
/// 4217 minor unit (0 for JPY), at most the 2 places every quote is
/// computed to (so a KWD price in fils, 3 places, is refused rather than
/// rounded).
pub fn price_decimals(currency: &str) -> u32 {
    if NO_MINOR_UNIT.contains(&currency) {
        0
    } else {
        2
    }
}

/// The places `d` is written with, trailing zeros aside (`4.50` has 1).
fn places(d: Decimal) -> u32 {
    d.normalize().scale()
}

/// `(x + add) * multiply`, as a quote applies an option; `None` on overflow.
fn apply(x: Decimal, opt: &PriceOption) -> Option<Decimal> {
    let x = x.checked_add(opt.add.unwrap_or(Decimal::ZERO))?;
    x.checked_mul(opt.multiply.unwrap_or(Decimal::ONE))
}

/// The highest unit price `item` can reach, starting from `from`, when any
/// of `options` may apply or not. Each option's effect is non-decreasing in
/// the price (multipliers are not negative), so the highest price after an
/// option is the higher of skipping it and applying it to the highest price
/// before it. `None` when that overflows (no upper bound worth checking).
fn highest(from: Decimal, options: &[PriceOption]) -> Option<Decimal> {
    options
        .iter()
        .try_fold(from, |hi, opt| Some(hi.max(apply(hi, opt)?)))
}

fn money(d: Decimal) -> Decimal {
    let mut r = d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    r.rescale(2);
    r
}

impl PriceTable {
    /// Checks the table: currency, rates, unique keys, non-negative prices.
    pub fn validate(&self) -> Result<(), Vec<QuoteError>> {
        let mut errs = Vec::new();
        let mut bad = |field: String, message: &str| {
            errs.push(QuoteError::InvalidTable {
                field,
                message: message.to_string(),
            })
        };
        if self.currency.len() != 3 || !self.currency.chars().all(|c| c.is_ascii_uppercase()) {
            bad(
                "currency".into(),
                "must be an ISO 4217 code of three capital letters, like MXN",
            );
        }
        if self.tax_rate < Decimal::ZERO || self.tax_rate > Decimal::ONE {
            bad("tax_rate".into(), "must be between 0 and 1 (0.16 for 16 %)");
        }
        if self.validity_days > 3650 {
            bad("validity_days".into(), "must be at most 3650");
        }
        if self.items.is_empty() {
            bad("items".into(), "needs at least one item");
        }
        let max = Decimal::from(MAX_PRICE);
        let decimals = price_decimals(&self.currency);
        let too_precise = |d: Decimal| {
            let n = places(d);
            format!(
                "{} has {n} decimal {}; {} prices have at most {decimals} (write the amount as it is to be charged: prices are not rounded)",
                d.normalize(),
                if n == 1 { "place" } else { "places" },
                self.currency
            )
        };
        for (i, item) in self.items.iter().enumerate() {
            if item.key.trim().is_empty() {
                bad(format!("items[{i}].key"), "must not be empty");
            }
            if self.items[..i].iter().any(|o| o.key == item.key) {
                bad(format!("items[{i}].key"), "duplicate item key");
            }
            if item.unit_price < Decimal::ZERO || item.unit_price > max {
                bad(
                    format!("items[{i}].unit_price"),
                    "must be between 0 and 1000000000",
                );
            } else if places(item.unit_price) > decimals {
                bad(
                    format!("items[{i}].unit_price"),
                    &too_precise(item.unit_price),
                );
            }
            let mut options_ok = true;
            for (j, opt) in item.options.iter().enumerate() {
                if opt.add.is_none() && opt.multiply.is_none() {
                    bad(format!("items[{i}].options[{j}]"), "needs add or multiply");
                }
                if opt.add.is_some_and(|a| a.abs() > max) {
                    options_ok = false;
                    bad(
                        format!("items[{i}].options[{j}].add"),
                        "must be between -1000000000 and 1000000000",
                    );
                } else if let Some(a) = opt.add.filter(|a| places(*a) > decimals) {
                    bad(format!("items[{i}].options[{j}].add"), &too_precise(a));
                }
                if opt
                    .multiply
                    .is_some_and(|m| m < Decimal::ZERO || m > Decimal::from(1000))
                {
                    options_ok = false;
                    bad(
                        format!("items[{i}].options[{j}].multiply"),
                        "must be between 0 and 1000",
                    );
                }
            }
            // An option that leaves the unit price negative even at its
            // best (every option that can raise the price before and after
            // it applied too) makes every quote it is part of fail.
            if options_ok && item.unit_price >= Decimal::ZERO {
                for (j, opt) in item.options.iter().enumerate() {
                    let best = highest(item.unit_price, &item.options[..j])
                        .and_then(|hi| apply(hi, opt))
                        .and_then(|at| highest(at, &item.options[j + 1..]));
                    if best.is_some_and(|b| b < Decimal::ZERO) {
                        bad(
                            format!("items[{i}].options[{j}]"),
                            &format!(
                                "option {:?} makes the unit price of {:?} negative whenever it applies, so every quote with it would fail; keep (unit_price + add) * multiply at 0 or more",
                                opt.key, item.name
                            ),
                        );
                    }
                }
            }
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n
            .as_i64()
            .map_or_else(|| n.as_f64().is_some_and(|f| f != 0.0), |i| i != 0),
        Value::String(s) => !matches!(
            crate::domain::validate::normalise(s).as_str(),
            "" | "no" | "false" | "0" | "n"
        ),
        _ => true,
    }
}

fn value_as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn quantity(item: &Item, memory: &Map<String, Value>) -> Result<Decimal, QuoteError> {
    let Some(key) = &item.quantity_from else {
        return Ok(Decimal::ONE);
    };
    let raw = memory.get(key).cloned().unwrap_or(Value::Null);
    let bad = || QuoteError::BadQuantity {
        item: item.name.clone(),
        value: value_as_text(&raw).chars().take(40).collect(),
    };
    let text = match &raw {
        // The JSON number's own text; parsed exactly as a decimal.
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().replace(',', "."),
        _ => return Err(bad()),
    };
    if text.len() > 40 {
        return Err(bad());
    }
    let q = Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .map_err(|_| bad())?;
    if q <= Decimal::ZERO || q > Decimal::from(MAX_QUANTITY) {
        return Err(bad());
    }
    Ok(q.normalize())
}

/// Prices `memory` against `table`; `now` fixes `valid_until`.
pub fn price(
    table: &PriceTable,
    memory: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<Quote, QuoteError> {
    let chosen: Vec<&Item> = match &table.item_from {
        None => table.items.iter().collect(),
        Some(key) => {
            let want = match memory.get(key) {
                None | Some(Value::Null) => return Err(QuoteError::NoItemChosen),
                Some(v) => value_as_text(v),
            };
            let n = crate::domain::validate::normalise(&want);
            let item = table
                .items
                .iter()
                .find(|i| {
                    crate::domain::validate::normalise(&i.key) == n
                        || crate::domain::validate::normalise(&i.name) == n
                })
                .ok_or_else(|| QuoteError::UnknownItem(want.chars().take(60).collect()))?;
            vec![item]
        }
    };
    let mut lines = Vec::new();
    let mut subtotal = Decimal::ZERO;
    for item in chosen {
        let range = || QuoteError::OutOfRange(item.name.clone());
        let qty = quantity(item, memory)?;
        let mut unit = item.unit_price;
        let mut applied = Vec::new();
        for opt in &item.options {
            let Some(v) = memory.get(&opt.when) else {
                continue;
            };
            let on = match &opt.equals {
                Some(e) => {
                    crate::domain::validate::normalise(&value_as_text(v))
                        == crate::domain::validate::normalise(e)
                }
                None => truthy(v),
            };
            if !on {
                continue;
            }
            if let Some(a) = opt.add {
                unit = unit.checked_add(a).ok_or_else(range)?;
            }
            if let Some(m) = opt.multiply {
                unit = unit.checked_mul(m).ok_or_else(range)?;
            }
            applied.push(opt.name.clone());
        }
        if unit < Decimal::ZERO {
            return Err(range());
        }
        let unit = money(unit);
        let amount = money(unit.checked_mul(qty).ok_or_else(range)?);
        subtotal = subtotal.checked_add(amount).ok_or_else(range)?;
        lines.push(QuoteLine {
            item: item.key.clone(),
            name: item.name.clone(),
            options: applied,
            quantity: qty,
            unit_price: unit,
            amount,
        });
    }
    let overflow = || QuoteError::OutOfRange("the quote".into());
    let subtotal = money(subtotal);
    let tax = money(subtotal.checked_mul(table.tax_rate).ok_or_else(overflow)?);
    let total = money(subtotal.checked_add(tax).ok_or_else(overflow)?);
    let valid_until = Duration::try_days(i64::from(table.validity_days))
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(overflow)?
        .date_naive();
    Ok(Quote {
        lines,
        subtotal,
        tax,
        total,
        currency: table.currency.clone(),
        valid_until,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use serde_json::json;

    fn table() -> PriceTable {
        serde_yaml_ng::from_str(
            r#"
currency: MXN
tax_rate: "0.16"
validity_days: 15
item_from: product
items:
  - key: small
    name: Small box
    unit_price: 10.01
    quantity_from: qty
    options:
      - { key: fragile, name: Fragile, when: fragile, add: "2.50" }
      - { key: express, name: Express, when: speed, equals: express, multiply: 1.5 }
  - { key: large, name: Large box, unit_price: "20" }
"#,
        )
        .unwrap()
    }

    fn mem(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 30, 12, 0, 0).unwrap()
    }

    #[test]
    fn prices_with_options_and_tax() {
        let t = table();
        assert!(t.validate().is_ok());
        let q = price(
            &t,
            &mem(json!({"product": "small box", "qty": "3", "fragile": "yes", "speed": "Express"})),
            now(),
        )
        .unwrap();
        // unit = (10.01 + 2.50) * 1.5 = 18.765 -> 18.77 (half-up, not to even)
        assert_eq!(q.lines[0].unit_price.to_string(), "18.77");
        assert_eq!(q.lines[0].amount.to_string(), "56.31");
        assert_eq!(q.lines[0].options, vec!["Fragile", "Express"]);
        assert_eq!(q.tax.to_string(), "9.01"); // 56.31 * 0.16 = 9.0096
        assert_eq!(q.total.to_string(), "65.32");
        assert_eq!(q.valid_until.to_string(), "2025-02-14");
        let v = serde_json::to_value(&q).unwrap();
        assert_eq!(v["total"], json!("65.32"));
        assert_eq!(v["lines"][0]["quantity"], json!("3"));
        assert_eq!(v["valid_until"], json!("2025-02-14"));
    }

    #[test]
    fn half_up_rounding() {
        let t: PriceTable = serde_json::from_value(json!({
            "currency": "EUR", "tax_rate": "0.1", "items": [{"key": "a", "name": "A", "unit_price": "0.05"}]
        }))
        .unwrap();
        let q = price(&t, &Map::new(), now()).unwrap();
        assert_eq!(q.tax.to_string(), "0.01"); // 0.005 rounds up
        assert_eq!(q.total.to_string(), "0.06");
    }

    #[test]
    fn bad_quantities_and_items() {
        let t = table();
        for bad in [
            json!("abc"),
            json!(-1),
            json!(0),
            json!("1e400"),
            json!([1]),
            json!(2_000_000),
        ] {
            let e = price(&t, &mem(json!({"product": "small", "qty": bad})), now()).unwrap_err();
            assert!(matches!(e, QuoteError::BadQuantity { .. }), "{e}");
        }
        assert_eq!(
            price(&t, &Map::new(), now()).unwrap_err(),
            QuoteError::NoItemChosen
        );
        assert!(matches!(
            price(&t, &mem(json!({"product": "boat"})), now()),
            Err(QuoteError::UnknownItem(_))
        ));
        let q = price(&t, &mem(json!({"product": "LARGE", "qty": 2.5})), now()).unwrap();
        assert_eq!(q.total.to_string(), "23.20"); // quantity_from absent on large -> 1
    }

    #[test]
    fn table_validation() {
        let mut t = table();
        t.currency = "pesos".into();
        t.tax_rate = Decimal::from(2);
        t.items[1].key = "small".into();
        let errs = t.validate().unwrap_err();
        let fields: Vec<String> = errs
            .iter()
            .map(|e| match e {
                QuoteError::InvalidTable { field, .. } => field.clone(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(fields, vec!["currency", "tax_rate", "items[1].key"]);
    }

    fn fields(t: &PriceTable) -> Vec<(String, String)> {
        match t.validate() {
            Ok(()) => Vec::new(),
            Err(errs) => errs
                .into_iter()
                .map(|e| match e {
                    QuoteError::InvalidTable { field, message } => (field, message),
                    other => (String::new(), other.to_string()),
                })
                .collect(),
        }
    }

    #[test]
    fn prices_with_more_places_than_the_currency_are_refused_not_rounded() {
        let mut t = table();
        t.items[0].unit_price = Decimal::from_str("10.005").unwrap();
        t.items[0].options[0].add = Some(Decimal::from_str("2.505").unwrap());
        let errs = fields(&t);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[0].0, "items[0].unit_price");
        assert!(
            errs[0]
                .1
                .contains("10.005 has 3 decimal places; MXN prices have at most 2"),
            "{}",
            errs[0].1
        );
        assert_eq!(errs[1].0, "items[0].options[0].add");
        // Trailing zeros are not places; a multiplier is not money.
        t.items[0].unit_price = Decimal::from_str("10.500").unwrap();
        t.items[0].options[0].add = Some(Decimal::from_str("2.5").unwrap());
        t.items[0].options[1].multiply = Some(Decimal::from_str("1.125").unwrap());
        assert_eq!(fields(&t), Vec::new());
        // No cents in yen.
        t.currency = "JPY".into();
        let errs = fields(&t);
        assert_eq!(errs[0].0, "items[0].unit_price");
        assert!(
            errs[0].1.contains("JPY prices have at most 0"),
            "{}",
            errs[0].1
        );
        t.items[0].unit_price = Decimal::from(1200);
        t.items[0].options[0].add = Some(Decimal::from(300));
        assert_eq!(fields(&t), Vec::new());
    }

    #[test]
    fn options_that_can_only_fail_are_refused() {
        let mut t = table();
        t.items[1].options = vec![PriceOption {
            key: "bad".into(),
            name: "Bad".into(),
            when: "x".into(),
            equals: None,
            add: Some(Decimal::from(-1_000_000_000)),
            multiply: None,
        }];
        let errs = fields(&t);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].0, "items[1].options[0]");
        assert!(
            errs[0]
                .1
                .contains("\"bad\" makes the unit price of \"Large box\" negative")
        );
        // What the refused option does at chat time.
        assert!(matches!(
            price(&t, &mem(json!({"product": "large", "x": true})), now()),
            Err(QuoteError::OutOfRange(_))
        ));
        // A discount that other options can make up for may apply: some
        // quotes with it succeed.
        t.items[1].options[0].add = Some(Decimal::from(-25));
        t.items[1].options.push(PriceOption {
            key: "big".into(),
            name: "Big".into(),
            when: "y".into(),
            equals: None,
            add: Some(Decimal::from(10)),
            multiply: Some(Decimal::from(2)),
        });
        assert_eq!(fields(&t), Vec::new());
        let q = price(
            &t,
            &mem(json!({"product": "large", "x": true, "y": true})),
            now(),
        )
        .unwrap();
        assert_eq!(q.lines[0].unit_price.to_string(), "10.00"); // (20 - 25 + 10) * 2
        // A multiplier cannot rescue a price that is already negative.
        t.items[1].options[1].add = None;
        let errs = fields(&t);
        assert_eq!(errs[0].0, "items[1].options[0]");
    }

    proptest! {
        #[test]
        fn total_is_subtotal_plus_tax(cents in 0u64..100_000_000, rate in 0u32..=100, qty in 1u32..10_000, add in 0u64..10_000) {
            let t = PriceTable {
                currency: "USD".into(),
                tax_rate: Decimal::new(i64::from(rate), 2),
                validity_days: 1,
                item_from: None,
                items: vec![Item {
                    key: "x".into(), name: "X".into(),
                    unit_price: Decimal::new(cents as i64, 2),
                    quantity_from: Some("q".into()),
                    options: vec![PriceOption { key: "o".into(), name: "O".into(), when: "o".into(), equals: None, add: Some(Decimal::new(add as i64, 3)), multiply: None }],
                }],
            };
            let q = price(&t, &mem(json!({"q": qty.to_string(), "o": true})), now()).unwrap();
            prop_assert_eq!(q.total, q.subtotal + q.tax);
            prop_assert_eq!(q.total.scale(), 2);
            // Exactness: recompute with integer cents, no floats.
            let unit_mills = cents as i128 * 10 + add as i128;
            let unit_cents = (unit_mills + 5) / 10;
            prop_assert_eq!(q.subtotal.mantissa(), unit_cents * qty as i128);
            // Serialised money is always a string with two decimals.
            let v = serde_json::to_value(&q).unwrap();
            let total = v["total"].as_str().unwrap().to_string();
            prop_assert!(total.split('.').nth(1).is_some_and(|f| f.len() == 2));
        }
    }
}
