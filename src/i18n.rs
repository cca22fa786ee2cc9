//! The service's own user-facing strings (Home Assistant entity names, the web page), from
//! `translations/<lang>.yaml` (nested keys read as `web.title`).
//!
//! The catalogs are compiled in; `en` is complete by definition and every other language must
//! have exactly the same keys (a unit test checks it). A missing key falls back to English.

use std::collections::BTreeMap;

use crate::config::Language;

const EN: &str = include_str!("../translations/en.yaml");
const DE: &str = include_str!("../translations/de.yaml");

/// A string catalog for one language.
#[derive(Debug, Clone)]
pub struct Catalog {
    strings: BTreeMap<String, String>,
    fallback: BTreeMap<String, String>,
}

/// Flattens nested YAML maps into `parent.child` keys.
fn flatten(prefix: &str, value: &serde_norway::Value, out: &mut BTreeMap<String, String>) {
    match value {
        serde_norway::Value::Mapping(map) => {
            for (k, v) in map {
                let Some(k) = k.as_str() else { continue };
                let key = if prefix.is_empty() {
                    k.to_owned()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        serde_norway::Value::String(s) => {
            out.insert(prefix.to_owned(), s.clone());
        }
        _ => {}
    }
}

fn parse(text: &str) -> BTreeMap<String, String> {
    // The catalogs are part of the binary and checked by tests; a broken one is a build defect.
    let mut out = BTreeMap::new();
    if let Ok(value) = serde_norway::from_str::<serde_norway::Value>(text) {
        flatten("", &value, &mut out);
    }
    out
}

impl Catalog {
    /// The catalog for `language`.
    pub fn new(language: Language) -> Self {
        let strings = match language {
            Language::En => EN,
            Language::De => DE,
        };
        Self {
            strings: parse(strings),
            fallback: parse(EN),
        }
    }

    /// The string for `key` (English if this language lacks it, the key itself if both do).
    pub fn get<'a>(&'a self, key: &'a str) -> &'a str {
        self.strings
            .get(key)
            .or_else(|| self.fallback.get(key))
            .map_or(key, String::as_str)
    }
}

impl Catalog {
    /// Every string whose key starts with `prefix` (English where this language lacks one),
    /// keyed without the prefix.
    pub fn with_prefix(&self, prefix: &str) -> BTreeMap<String, String> {
        self.fallback
            .keys()
            .filter_map(|k| {
                k.strip_prefix(prefix)
                    .map(|short| (short.to_owned(), self.get(k).to_owned()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_has_every_key() {
        let en = parse(EN);
        assert!(en.len() > 10, "en catalog parses");
        let de = parse(DE);
        assert_eq!(
            en.keys().collect::<Vec<_>>(),
            de.keys().collect::<Vec<_>>(),
            "de keys differ from en"
        );
        assert_eq!(Catalog::new(Language::De).get("printers"), "Drucker");
        assert_eq!(Catalog::new(Language::En).get("no_such_key"), "no_such_key");
    }
}
