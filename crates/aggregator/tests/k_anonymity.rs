//! The k-anonymity property over real storage: generated fleets (installations with random
//! versions, countries, modes, printer types, features and errors, some reporting again days
//! later) are stored in a real SQLite file, and then **every** `/stats/*` answer is checked:
//! no bucket, on any day, shows fewer than `k` installations — for any fleet and any `k`.
//! (`tests/aggregator.rs` runs the same queries on PostgreSQL and checks they agree.)

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use printernizer_stats_aggregator::analytics::Ask;
use printernizer_stats_aggregator::store::{RateLimit, SqliteStore, SubmissionStore};
use printernizer_stats_aggregator::submission;
use printernizer_stats_test_support::aggregator::{NOW, new_id, report};
use proptest::prelude::*;
use serde_json::{Value, json};

const VERSIONS: [&str; 4] = ["2.6.0", "2.7.0", "2.8.0", "2.10.1"];
const COUNTRIES: [&str; 4] = ["DE", "AT", "FR", "US"];
const MODES: [&str; 4] = ["homeassistant", "docker", "standalone", "pi"];
const TYPES: [&str; 3] = ["bambu_lab", "prusa", "klipper"];
const FEATURES: [&str; 3] = ["library", "timelapse", "camera"];
const ERRORS: [&str; 3] = ["disk_full", "connection_timeout", "printer_offline"];

/// One installation: indexes into the lists above, bit sets, and whether it reports again.
#[derive(Debug, Clone)]
struct Member {
    version: usize,
    country: usize,
    mode: usize,
    types: u8,
    features: u8,
    errors: u8,
    again: Option<(u8, usize)>,
}

fn member() -> impl Strategy<Value = Member> {
    (
        0..VERSIONS.len(),
        0..COUNTRIES.len(),
        0..MODES.len(),
        0u8..8,
        0u8..8,
        0u8..8,
        proptest::option::of((1u8..4, 0..VERSIONS.len())),
    )
        .prop_map(
            |(version, country, mode, types, features, errors, again)| Member {
                version,
                country,
                mode,
                types,
                features,
                errors,
                again,
            },
        )
}

fn body(id: &str, m: &Member, version: usize, day: i64) -> Value {
    let start = (NOW.parse::<DateTime<Utc>>().expect("now") + Duration::days(day - 7)).to_rfc3339();
    let end = (NOW.parse::<DateTime<Utc>>().expect("now") + Duration::days(day)).to_rfc3339();
    let mut b = report(id, &start, &end);
    b["installation"]["app_version"] = json!(VERSIONS[version]);
    b["installation"]["country_code"] = json!(COUNTRIES[m.country]);
    b["installation"]["deployment_mode"] = json!(MODES[m.mode]);
    let picked = |bits: u8, names: &[&'static str]| -> Vec<&'static str> {
        names
            .iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .map(|(_, n)| *n)
            .collect()
    };
    let types = picked(m.types, &TYPES);
    b["printer_fleet"] = json!({
        "printer_count": types.len(),
        "printer_types": types,
        "printer_type_counts": types.iter().map(|t| (t.to_string(), 1)).collect::<BTreeMap<_, _>>(),
    });
    b["usage_stats"]["feature_usage"] = FEATURES
        .iter()
        .enumerate()
        .map(|(i, f)| (format!("{f}_enabled"), json!(m.features & (1 << i) != 0)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    b["error_summary"] = picked(m.errors, &ERRORS)
        .iter()
        .map(|e| (e.to_string(), json!(2)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    b
}

/// Every count of installations that a bucket shows, with where it was found.
fn buckets(name: &str, v: &Value, total_by_day: &[u64]) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut push = |at: String, n: &Value| {
        if let Some(n) = n.as_u64() {
            out.push((at, n));
        }
    };
    let objects = |v: &Value| v.as_object().cloned().unwrap_or_default();
    match name {
        "deployment-modes" => objects(&v["breakdown"])
            .iter()
            .for_each(|(k, n)| push(format!("mode {k}"), n)),
        "versions" => v["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .for_each(|r| {
                push(format!("version {}", r["version"]), &r["count"]);
            }),
        "geography" => v["countries"]
            .as_array()
            .into_iter()
            .flatten()
            .for_each(|r| {
                push(format!("country {}", r["code"]), &r["count"]);
            }),
        "printers" => objects(&v["type_installations"])
            .iter()
            .for_each(|(k, n)| push(format!("type {k}"), n)),
        "features" => v["features"]
            .as_array()
            .into_iter()
            .flatten()
            .for_each(|r| {
                push(format!("{} on", r["feature"]), &r["enabled"]);
                push(format!("{} off", r["feature"]), &r["disabled"]);
            }),
        "errors" => {
            objects(&v["error_type_installations"])
                .iter()
                .for_each(|(k, n)| push(format!("error {k}"), n));
            push(
                "installations_with_errors".into(),
                &v["installations_with_errors"],
            );
        }
        "version-migration" => v["migration"]
            .as_array()
            .into_iter()
            .flatten()
            .for_each(|d| {
                objects(&d["versions"])
                    .iter()
                    .for_each(|(k, n)| push(format!("{} {k}", d["date"]), n));
            }),
        "feature-trends" => {
            for (day, d) in v["trends"].as_array().into_iter().flatten().enumerate() {
                let total = total_by_day.get(day).copied().unwrap_or(0);
                for (f, fig) in objects(&d["features"]) {
                    if let Some(on) = fig["enabled"].as_u64() {
                        push(format!("{} {f} on", d["date"]), &json!(on));
                        push(format!("{} {f} off", d["date"]), &json!(total - on));
                    }
                }
            }
        }
        _ => {}
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn no_answer_shows_a_bucket_under_k(
        fleet in proptest::collection::vec(member(), 0..24),
        k in 1u32..8,
    ) {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = SqliteStore::open(&dir.path().join("agg.db")).expect("open");
            let t0: DateTime<Utc> = NOW.parse().expect("now");
            let limit = RateLimit::per_hour(100);
            let mut ids = Vec::new();
            for m in &fleet {
                let id = new_id();
                let b = serde_json::to_vec(&body(&id, m, m.version, 0)).expect("json");
                let s = submission::parse(&b, None, t0).expect("valid");
                store.submit(s, t0, limit).await.expect("stored");
                ids.push(id);
            }
            for (id, m) in ids.iter().zip(&fleet) {
                if let Some((day, version)) = m.again {
                    let at = t0 + Duration::days(i64::from(day));
                    let b = serde_json::to_vec(&body(id, m, version, i64::from(day))).expect("json");
                    let s = submission::parse(&b, None, at).expect("valid");
                    store.submit(s, at, limit).await.expect("stored");
                }
            }
            let now = t0 + Duration::days(4);
            let ask = Ask::new(&store, now, k);
            let all = DateTime::<Utc>::UNIX_EPOCH;
            let trends = ask.feature_trends(6).await.expect("trends");
            let totals: Vec<u64> = trends["trends"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| d["total_installations"].as_u64().unwrap_or(0))
                .collect();
            let answers = [
                ("deployment-modes", ask.deployment_modes(all).await.expect("modes")),
                ("versions", ask.versions(all, 100).await.expect("versions")),
                ("geography", ask.geography(all, 100).await.expect("geography")),
                ("printers", ask.printers(all).await.expect("printers")),
                ("features", ask.features(all).await.expect("features")),
                ("errors", ask.errors().await.expect("errors")),
                ("version-migration", ask.version_migration(6).await.expect("migration")),
                ("feature-trends", trends),
            ];
            let overview = ask.overview(4).await.expect("overview").to_string();
            let export = ask.export().await.expect("export").to_string();
            for (name, answer) in &answers {
                for (at, n) in buckets(name, answer, &totals) {
                    prop_assert!(n == 0 || n >= u64::from(k), "{name}: {at} = {n} < k = {k}\n{answer}");
                }
                let text = answer.to_string();
                for id in &ids {
                    prop_assert!(!text.contains(id.as_str()), "{name} names an installation");
                }
            }
            for id in &ids {
                prop_assert!(!overview.contains(id.as_str()) && !export.contains(id.as_str()));
            }
            // Nobody is lost: shown buckets and withheld installations add up to the fleet.
            let modes = &answers[0].1;
            let shown: u64 = modes["breakdown"].as_object().map_or(0, |m| {
                m.values().filter_map(Value::as_u64).sum()
            });
            prop_assert_eq!(shown + modes["withheld"].as_u64().unwrap_or(0), fleet.len() as u64);
            Ok(())
        })?;
    }
}
