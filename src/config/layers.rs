//! The layers of the configuration as TOML tables, before they become a
//! typed [`Config`](super::Config).
//!
//! The built-in defaults file is the schema: every key it holds (a leaf, or
//! an empty table such as `[delivery.hosts]`, which stands for a map) is a
//! [`Key`], and every key has an environment variable named by one rule
//! (`BOTWIRE_` + the dotted path in upper case with `.` → `_`). Because the
//! variables are derived from the file, a key added to the file cannot miss
//! its variable. A value given as text (environment, `--set`) is turned into
//! the TOML type of its default here, so a bad integer or boolean is refused
//! with the key and the variable named; everything else (durations, roles,
//! URLs) is parsed once, by the typed fields' deserializers.

use super::ConfigError;
use std::collections::BTreeMap;

/// One key of the defaults file.
#[derive(Clone, Debug)]
pub struct Key {
    /// The dotted path, e.g. `delivery.break_after`.
    pub path: String,
    /// Its default value.
    pub default: toml::Value,
}

impl Key {
    /// The environment variable that sets this key, e.g.
    /// `BOTWIRE_DELIVERY_BREAK_AFTER`.
    pub fn env(&self) -> String {
        env_name(&self.path)
    }
}

/// `BOTWIRE_` + the dotted path in upper case, `.` → `_`.
pub fn env_name(path: &str) -> String {
    format!("BOTWIRE_{}", path.replace('.', "_").to_ascii_uppercase())
}

/// Every key of `table` (the defaults), in file order of sections.
pub fn keys(table: &toml::Table) -> Vec<Key> {
    let mut out = Vec::new();
    walk(table, "", &mut out);
    out
}

fn walk(table: &toml::Table, prefix: &str, out: &mut Vec<Key>) {
    for (name, value) in table {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            toml::Value::Table(inner) if !inner.is_empty() => walk(inner, &path, out),
            other => out.push(Key {
                path,
                default: other.clone(),
            }),
        }
    }
}

/// Where each key's value came from, for error messages: dotted path →
/// `from BOTWIRE_X`, `from FILE`, `from --listen`. Keys left at their
/// default are absent.
#[derive(Debug, Default)]
pub struct Origins(BTreeMap<String, String>);

impl Origins {
    /// Records that `path` was set by `origin`.
    pub fn set(&mut self, path: &str, origin: String) {
        self.0.insert(path.to_owned(), origin);
    }

    /// Records every leaf of a file layer.
    pub fn file(&mut self, layer: &toml::Table, file: &str) {
        let mut leaves = Vec::new();
        walk(layer, "", &mut leaves);
        for key in leaves {
            self.set(&key.path, format!("from {file}"));
        }
    }

    /// The origin of `path` or of the nearest section above it that has
    /// one.
    pub fn of(&self, path: &str) -> Option<&str> {
        let mut p = path;
        loop {
            if let Some(o) = self.0.get(p) {
                return Some(o);
            }
            p = &p[..p.rfind('.')?];
        }
    }
}

/// Sets the key at dotted `path` in `table`, creating sections on the way.
pub fn set(table: &mut toml::Table, path: &str, value: toml::Value) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().expect("split yields at least one part");
    let mut t = table;
    for part in parts {
        t = match t
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(inner) => inner,
            other => {
                *other = toml::Value::Table(toml::Table::new());
                match other {
                    toml::Value::Table(inner) => inner,
                    _ => unreachable!("just made a table"),
                }
            }
        };
    }
    t.insert(last.to_owned(), value);
}

/// Turns the text `raw` given for `key` into a TOML value of the type of
/// its default: integers and booleans are checked here; a list takes
/// entries separated by commas or spaces; a map takes `name=value` entries
/// separated by commas or spaces (a name given twice collects its values,
/// comma-separated).
pub fn from_text(key: &Key, raw: &str, origin: &str) -> Result<toml::Value, ConfigError> {
    let bad = |message: String| ConfigError::Value {
        key: key.path.clone(),
        message,
        origin: Some(origin.to_owned()),
    };
    let entries = || raw.split([',', ' ']).filter(|s| !s.is_empty());
    Ok(match &key.default {
        toml::Value::Integer(_) => toml::Value::Integer(
            raw.trim()
                .parse::<i64>()
                .map_err(|_| bad(format!("expected an integer, got {raw:?}")))?,
        ),
        toml::Value::Boolean(_) => {
            toml::Value::Boolean(match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => return Err(bad(format!("expected true or false, got {raw:?}"))),
            })
        }
        toml::Value::Array(_) => toml::Value::Array(
            entries()
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
        toml::Value::Table(_) => {
            let mut map: BTreeMap<String, String> = BTreeMap::new();
            for entry in entries() {
                let (name, value) = entry.split_once('=').ok_or_else(|| {
                    bad(format!(
                        "{entry:?} is not name=value (e.g. hooks.example.com=10.0.0.5)"
                    ))
                })?;
                let values = map.entry(name.to_owned()).or_default();
                if !values.is_empty() {
                    values.push(',');
                }
                values.push_str(value);
            }
            toml::Value::Table(
                map.into_iter()
                    .map(|(k, v)| (k, toml::Value::String(v)))
                    .collect(),
            )
        }
        _ => toml::Value::String(raw.to_owned()),
    })
}

/// Parses one layer's TOML text.
pub fn parse(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        origin: origin.to_owned(),
        message: e.to_string(),
    })
}

/// Lays `layer` over `base`: sections merge key by key, anything else is
/// replaced.
pub fn merge(base: &mut toml::Table, layer: toml::Table) {
    for (key, value) in layer {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(l)) => merge(b, l),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_are_keys_and_sections_are_walked() {
        let table = parse("a = 1\n[s]\nb = \"x\"\n[s.m]\n", "t").unwrap();
        let paths: Vec<String> = keys(&table).into_iter().map(|k| k.path).collect();
        assert_eq!(paths, ["a", "s.b", "s.m"]);
        assert_eq!(env_name("s.b_c"), "BOTWIRE_S_B_C");
    }

    #[test]
    fn the_origin_of_an_entry_is_its_sections() {
        let mut o = Origins::default();
        o.set("delivery.hosts", "from BOTWIRE_DELIVERY_HOSTS".into());
        assert_eq!(
            o.of("delivery.hosts.a.test"),
            Some("from BOTWIRE_DELIVERY_HOSTS")
        );
        assert_eq!(o.of("delivery.timeout"), None);
    }
}
