//! The Home Assistant add-on's options file (`/data/options.json`): flat keys from
//! `addon/config.yaml` mapped onto configuration keys.

use std::path::Path;

use crate::{Error, Result};

/// The add-on's flat options (`addon/config.yaml`) and the configuration keys they set.
pub const ADDON_OPTIONS: &[(&str, &str)] = &[
    ("log_level", "log_level"),
    ("language", "language"),
    ("submission_endpoint", "submission.endpoint"),
    ("submission_api_key", "submission.api_key"),
    ("submission_interval_days", "submission.interval_days"),
    ("retention_days", "retention.days"),
    ("printernizer_prefix", "mqtt.printernizer_prefix"),
    ("discovery_prefix", "mqtt.discovery_prefix"),
    ("mqtt_host", "mqtt.host"),
    ("mqtt_port", "mqtt.port"),
    ("mqtt_username", "mqtt.username"),
    ("mqtt_password", "mqtt.password"),
    ("printernizer_url", "printernizer.url"),
];

/// Reads `/data/options.json` and maps the add-on's flat options onto configuration keys
/// (`retention_days` → `retention.days`); other keys pass through as they are (so a nested
/// file works too). Empty and `null` values mean "not set". Returns the nested JSON.
pub(super) fn nested(path: &Path) -> Result<String> {
    let bad = |msg: String| Error::Config(format!("{}: {msg}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON ({e})")))?;
    let serde_json::Value::Object(flat) = value else {
        return Err(bad("not a JSON object".into()));
    };
    let mut nested = serde_json::Map::new();
    for (key, value) in flat {
        if value.is_null() || value.as_str().is_some_and(|s| s.trim().is_empty()) {
            continue;
        }
        let target = ADDON_OPTIONS
            .iter()
            .find(|(option, _)| *option == key)
            .map_or(key.as_str(), |(_, target)| target);
        match target.split_once('.') {
            Some((section, leaf)) => {
                let entry = nested
                    .entry(section.to_owned())
                    .or_insert_with(|| serde_json::Value::Object(Default::default()));
                if let serde_json::Value::Object(map) = entry {
                    map.insert(leaf.to_owned(), value);
                }
            }
            None => {
                nested.insert(target.to_owned(), value);
            }
        }
    }
    Ok(serde_json::Value::Object(nested).to_string())
}
