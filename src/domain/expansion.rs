//! How big a YAML document is once its aliases are expanded.
//!
//! YAML lets a value be named once (`&big "…"`) and used again and again
//! (`*big`); every use is a full copy once deserialised. A 40 KB bot file
//! whose 40,000-character string is used through four levels of nine-alias
//! lists expands to 262 MB, and that is what would be validated, stored,
//! exported and listed. [`check_yaml`] measures the expanded size before the
//! real parse and refuses a document past the limit.
//!
//! Why measure rather than refuse aliases: anchors are ordinary YAML that
//! people use to avoid repeating themselves (one `validate` block or one set
//! of headers used by several nodes), and a document that uses them sensibly
//! is no harder to store than the same document written out. What must be
//! bounded is what the document becomes, whatever the syntax that got it
//! there; the limit is the one the source already has ([`MAX_SOURCE`], the
//! request body limit), so expansion can never make a document larger than
//! one that could have been sent written out.
//!
//! How: a first pass deserialises the document into nothing, counting the
//! bytes of every string and one byte for every other scalar, sequence and
//! mapping, and stops with an error as soon as the count passes the limit.
//! The YAML parser hands strings over borrowed, so the pass allocates
//! nothing per value and its cost is bounded by the limit: the 262 MB
//! document is refused after counting about 1 MiB. Without aliases the count
//! never exceeds the source length (every value takes at least as many bytes
//! to write as it counts), so no document that fits is refused.
//!
//! JSON has no aliases: its expanded size is its source size, which
//! [`MAX_SOURCE`] and the request body limit already bound.
//!
//! [`MAX_SOURCE`]: crate::domain::flow::MAX_SOURCE

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};
use std::cell::Cell;
use std::fmt;
use thiserror::Error;

/// A document that expands past the limit.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "the document expands to more than {limit} bytes once its YAML aliases (*name) are replaced by what they name; \
     repeat less through aliases or shorten the anchored values (&name)"
)]
pub struct TooLarge {
    /// The limit, in bytes.
    pub limit: usize,
}

/// Checks that the YAML document `src`, expanded, stays within `limit` bytes.
///
/// Syntax errors are not reported here (`Ok`): the real parse reports them
/// with their position.
pub fn check_yaml(src: &str, limit: usize) -> Result<(), TooLarge> {
    let used = Cell::new(0usize);
    let counter = Counter { used: &used, limit };
    let outcome = counter.deserialize(serde_yaml_ng::Deserializer::from_str(src));
    // The count, not the error text, says whether the limit stopped the pass.
    if outcome.is_err() && used.get() > limit {
        return Err(TooLarge { limit });
    }
    Ok(())
}

/// Deserialises any value into nothing, adding its size to `used`.
#[derive(Clone, Copy)]
struct Counter<'a> {
    used: &'a Cell<usize>,
    limit: usize,
}

impl Counter<'_> {
    fn add<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        let total = self.used.get().saturating_add(bytes.max(1));
        self.used.set(total);
        if total > self.limit {
            Err(E::custom(format!(
                "document expands past {} bytes",
                self.limit
            )))
        } else {
            Ok(())
        }
    }
}

impl<'de> DeserializeSeed<'de> for Counter<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Counter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.add(1)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.add(1)
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        self.add(1)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.add(1)
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        self.add(1)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.add(1)
    }
    fn visit_char<E: de::Error>(self, c: char) -> Result<(), E> {
        self.add(c.len_utf8())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.add(v.len())
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<(), E> {
        self.add(v.len())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.add(1)
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.add(1)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.add(1)?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.add(1)?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A tagged value (`!tag value`): the tag, then the value.
        let ((), variant) = data.variant_seed(self)?;
        de::VariantAccess::newtype_variant_seed(variant, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// The hostile document: a 40,000-character anchored string used through
    /// four levels of nine-alias lists (9^4 = 6,561 copies, 262 MB).
    pub(crate) fn alias_bomb() -> String {
        let mut y = format!("a: &a \"{}\"\n", "x".repeat(40_000));
        let names = ["a", "b", "c", "d", "e"];
        for level in 1..names.len() {
            let prev = names[level - 1];
            y.push_str(&format!(
                "{}: &{} [{}]\n",
                names[level],
                names[level],
                vec![format!("*{prev}"); 9].join(", ")
            ));
        }
        y
    }

    #[test]
    fn an_alias_bomb_is_refused_fast() {
        let y = alias_bomb();
        assert!(y.len() < 41_000);
        let started = Instant::now();
        assert_eq!(
            check_yaml(&y, 1024 * 1024),
            Err(TooLarge { limit: 1024 * 1024 })
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn sensible_aliases_and_plain_documents_pass() {
        let y = "v: &v { kind: text, min: 2 }\nn1: { validate: *v }\nn2: { validate: *v }\n";
        assert_eq!(check_yaml(y, 1024), Ok(()));
        // Written out, a document never counts more than its own length.
        for doc in [
            "{a, b: [1, 2.5, true, null, ~], c: \"x\\ty\", d: 'q''q'}",
            "- a\n- b:\n    c: |\n      text\n      more\n- !tag x\n- []\n- {}\n",
            "key: value\nlist:\n  - 1\n  -\n  - x\n",
        ] {
            let used = Cell::new(0);
            Counter {
                used: &used,
                limit: usize::MAX,
            }
            .deserialize(serde_yaml_ng::Deserializer::from_str(doc))
            .unwrap();
            assert!(
                used.get() <= doc.len(),
                "{doc:?}: {} > {}",
                used.get(),
                doc.len()
            );
        }
        // Syntax errors are the real parser's to report.
        assert_eq!(check_yaml("a: [", 1024), Ok(()));
    }

    #[test]
    fn the_limit_is_on_the_expanded_size() {
        let y = format!("a: &a \"{}\"\nb: [*a, *a, *a]\n", "x".repeat(300));
        assert_eq!(check_yaml(&y, 1300), Ok(()));
        assert_eq!(check_yaml(&y, 1100), Err(TooLarge { limit: 1100 }));
    }
}
