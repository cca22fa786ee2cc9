//! Privacy as a property: whatever a producer sends, only allowlisted keys with vocabulary
//! words, versions or bounded numbers are stored, and no identifying input string reaches the
//! database file or the report.

mod common;

use common::open_at;
use printernizer_stats::event::vocab::{
    Component, DeploymentMode, ErrorType, Feature, JobOutcome, Platform, PrinterType, Version,
};
use printernizer_stats::event::{EventType, MAX_DURATION_SECONDS, MAX_FILE_SIZE_MB, RawEvent};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Strings a careless producer could send: all of them identify someone or something.
fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "/(home|Users|mnt|data)/[a-z]{3,10}/[A-Za-z0-9_ ]{3,12}\\.(3mf|gcode|stl)",
        "C:\\\\Users\\\\[A-Za-z]{3,8}\\\\Prints\\\\[A-Za-z0-9]{3,10}\\.gcode",
        (1u8..=254, 0u8..=255, 0u8..=255, 1u8..=254)
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        "fe80::[0-9a-f]{1,4}:[0-9a-f]{1,4}:[0-9a-f]{1,4}",
        "2001:db8:[0-9a-f]{1,4}::[0-9a-f]{1,4}",
        "[a-z]{3,10}\\.[a-z]{2,8}@(gmail|example|posteo)\\.(com|de|org)",
        "(printer|octopi|bambu|prusa)-[a-z]{2,6}\\.(local|lan|fritz\\.box)",
        "[0-9][0-9A-Z]{11,15}",
        "SN[0-9A-Z]{8,12}",
        "\\PC{8,40}",
        "[A-Za-z]{4,12}( [A-Za-z]{3,12}){2,6}",
        (0usize..3).prop_map(|n| "Z".repeat(70_000 + n)),
    ]
}

fn nasty_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => nasty_string().prop_map(Value::String),
        1 => nasty_string().prop_map(|s| json!([s])),
        1 => nasty_string().prop_map(|s| json!({"nested": s})),
        1 => any::<i64>().prop_map(|n| json!(n)),
        1 => any::<f64>().prop_map(|n| json!(n)),
    ]
}

const KEYS: &[&str] = &[
    "app_version",
    "python_version",
    "platform",
    "deployment_mode",
    "printer_type",
    "duration_seconds",
    "file_size_mb",
    "error_type",
    "component",
    "feature",
    "outcome",
    "printer_id",
    "file",
    "file_name",
    "name",
    "job_name",
    "host",
    "ip",
    "email",
    "message",
    "error",
    "serial",
    "path",
];

fn metadata() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((prop::sample::select(KEYS), nasty_value()), 0..12)
        .prop_map(|pairs| pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// Every string the input contains, recursively.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Value::Object(o) => o.iter().for_each(|(k, v)| {
            out.push(k.clone());
            strings(v, out)
        }),
        _ => {}
    }
}

fn is_vocabulary_word(s: &str) -> bool {
    [
        PrinterType::WORDS,
        Component::WORDS,
        Feature::WORDS,
        ErrorType::WORDS,
        JobOutcome::WORDS,
        Platform::WORDS,
        DeploymentMode::WORDS,
    ]
    .iter()
    .any(|words| words.contains(&s))
}

/// Checks a stored metadata object against the allowlist of its event type.
fn assert_allowlisted(event_type: EventType, metadata: &Value) {
    let obj = metadata.as_object().expect("metadata is an object");
    let allowed: Vec<&str> = event_type
        .allowed_keys()
        .iter()
        .map(|k| k.as_str())
        .collect();
    for (k, v) in obj {
        assert!(
            allowed.contains(&k.as_str()),
            "{event_type}: key `{k}` is not allowlisted"
        );
        match (k.as_str(), v) {
            ("app_version" | "python_version", Value::String(s)) => {
                assert!(Version::parse(s).is_some(), "{k}={s} is not a version")
            }
            ("duration_seconds", Value::Number(n)) => {
                assert!(
                    n.as_u64().is_some_and(|d| d <= MAX_DURATION_SECONDS),
                    "{k}={n}"
                )
            }
            ("file_size_mb", Value::Number(n)) => {
                assert!(
                    n.as_f64()
                        .is_some_and(|f| (0.0..=MAX_FILE_SIZE_MB).contains(&f)),
                    "{k}={n}"
                )
            }
            (_, Value::String(s)) => {
                assert!(is_vocabulary_word(s), "{k}={s} is not a vocabulary word")
            }
            (_, other) => panic!("{k} has an unexpected value {other}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn nothing_but_the_allowlist_is_stored_or_reported(
        batch in prop::collection::vec((0usize..12, metadata()), 1..12)
    ) {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let ts = open_at("2026-11-20T12:00:00Z");
            let mut inputs = Vec::new();
            for (kind, meta) in &batch {
                let value = Value::Object(meta.clone());
                strings(&value, &mut inputs);
                let event_type = EventType::ALL[*kind];
                let raw = RawEvent::new(event_type.as_str(), value);
                match ts.service.record(&raw).await {
                    Ok((event, _)) => {
                        let stored = serde_json::to_value(&event.metadata).expect("serializes");
                        assert_allowlisted(event_type, &stored);
                    }
                    Err(e) => assert!(e.to_string().contains("exceeds"), "unexpected rejection: {e}"),
                }
            }

            // Every stored row, read back from the file.
            let rows: Vec<(String, String)> = ts.service.store().read(|c| {
                let mut stmt = c.prepare("SELECT event_type, metadata FROM usage_events")?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            }).await.expect("read");
            for (event_type, metadata) in &rows {
                let t: EventType = event_type.parse().expect("known type");
                assert_allowlisted(t, &serde_json::from_str(metadata).expect("json"));
            }

            let report = serde_json::to_string(&ts.service.report(None, None).await.expect("report"))
                .expect("serializes");
            let local = serde_json::to_string(&ts.service.local_stats().await.expect("local"))
                .expect("serializes");
            ts.service.close().await.expect("close");

            // The raw database file (and WAL), byte for byte.
            let mut file_bytes = Vec::new();
            for entry in std::fs::read_dir(ts.dir.path()).expect("dir") {
                file_bytes.extend(std::fs::read(entry.expect("entry").path()).expect("read"));
            }
            let file_text = String::from_utf8_lossy(&file_bytes);

            for s in inputs.iter().filter(|s| s.chars().count() >= 8) {
                if is_vocabulary_word(s) || Version::parse(s).is_some() || KEYS.contains(&s.as_str()) {
                    continue;
                }
                let probe: String = s.chars().take(64).collect();
                assert!(!report.contains(&probe), "report leaks {probe:?}");
                assert!(!local.contains(&probe), "local stats leak {probe:?}");
                assert!(!file_text.contains(&probe), "database file leaks {probe:?}");
            }
        });
    }
}

#[test]
fn a_serial_or_address_never_becomes_a_normalized_copy() {
    for input in [
        "01S00A123456789",
        "192.168.1.20",
        "Printer-Kitchen.local",
        "me@example.com",
    ] {
        assert_eq!(PrinterType::classify(input).as_str(), "other");
        assert_eq!(ErrorType::classify(input).as_str(), "other");
        assert!(Version::parse(input).is_none());
    }
}
