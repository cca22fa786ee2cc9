//! What a client submits, and how the server checks it.
//!
//! A body is parsed in two steps, both turning every problem into a FastAPI-style field error
//! (`{"loc": ["body", "installation", "country_code"], "msg": …, "type": …}`), so the response is
//! the same `422` upstream clients already understand:
//!
//! 1. **Types** — serde into the shared [`AggregatedStats`] (through `serde_path_to_error`, so the location of a
//!    wrong type is known). Counts are `u64`: negative numbers, fractions and numbers beyond
//!    2⁶⁴ fail here. Unknown fields are ignored — and never stored.
//! 2. **Meaning** — [`validate`] checks ranges and consistency and collects *all*
//!    problems at once: UUID installation id, two-letter country, schema `1.x`, period end ≥
//!    start and ≤ 31 days, ≤ 16 printer types, plausible counts.
//!
//! Categorical strings are not trusted either: the server stores a client's words only after
//! matching them against the same fixed vocabulary the client sanitizes with
//! ([`printernizer_stats_shared::vocab`]). An unknown printer or error type is counted under `other` (no
//! count is lost, the name is); an unknown feature flag is dropped; a version string that is not
//! a version becomes `other`. So nothing that looks like a host name, a path or a serial number
//! can reach the server's tables, whoever the client is.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use printernizer_stats_shared::report::AggregatedStats;
use printernizer_stats_shared::vocab::{
    DeploymentMode, ErrorType, Feature, Platform, PrinterType, Version, country_code,
};

/// Most printer types one report may list.
pub const MAX_PRINTER_TYPES: usize = 16;
/// Most keys in `error_summary` and `feature_usage`.
pub const MAX_MAP_KEYS: usize = 64;
/// Longest period one report may cover.
pub const MAX_PERIOD: Duration = Duration::days(31);
/// Largest plausible count of anything in one report (jobs, files, errors …).
pub const MAX_COUNT: u64 = 10_000_000;
/// Largest plausible fleet.
pub const MAX_PRINTERS: u64 = 10_000;
/// Longest `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY: usize = 200;

/// One field-level problem (FastAPI's error item).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Where: `["body", "period", "end"]`, `["header", "Idempotency-Key"]`.
    pub loc: Vec<String>,
    /// What is wrong, in words.
    pub msg: String,
    /// A short machine-readable kind (`missing`, `type_error`, `value_error` …).
    #[serde(rename = "type")]
    pub kind: String,
}

impl FieldError {
    fn new(loc: &[&str], msg: impl Into<String>, kind: &str) -> Self {
        Self {
            loc: std::iter::once("body")
                .chain(loc.iter().copied())
                .map(str::to_owned)
                .collect(),
            msg: msg.into(),
            kind: kind.to_owned(),
        }
    }
}

/// A validated submission: everything the server stores about one report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    /// The client's `Idempotency-Key` header, if any.
    pub idempotency_key: Option<String>,
    /// Random installation id.
    pub installation_id: Uuid,
    /// `1.x`.
    pub schema_version: String,
    /// When the client built the report.
    pub submission_timestamp: DateTime<Utc>,
    /// When the installation was first seen.
    pub first_seen: DateTime<Utc>,
    /// Printernizer version, or `unknown`/`other`.
    pub app_version: String,
    /// Python version, or `unknown`/`other`.
    pub python_version: String,
    /// Operating system (vocabulary).
    pub platform: String,
    /// Deployment mode (vocabulary).
    pub deployment_mode: String,
    /// ISO 3166-1 alpha-2, upper-case (`XX` = unknown).
    pub country_code: String,
    /// Inclusive period start.
    pub period_start: DateTime<Utc>,
    /// Exclusive period end.
    pub period_end: DateTime<Utc>,
    /// Period length in days as the client rounded it.
    pub duration_days: i64,
    /// Distinct printers.
    pub printer_count: u64,
    /// Printers per type (vocabulary words; unknown types summed into `other`).
    pub printer_type_counts: BTreeMap<String, u64>,
    /// Jobs finished (completed + failed).
    pub job_count: u64,
    /// Completed jobs, when the client reports outcomes.
    pub jobs_completed: Option<u64>,
    /// Failed or cancelled jobs, when the client reports outcomes.
    pub jobs_failed: Option<u64>,
    /// Files downloaded.
    pub file_count: u64,
    /// Files uploaded.
    pub upload_count: u64,
    /// Up-time in hours.
    pub uptime_hours: u64,
    /// `<feature>_enabled` → state (known features only).
    pub feature_usage: BTreeMap<String, bool>,
    /// Errors per type (vocabulary words; unknown types summed into `other`).
    pub error_summary: BTreeMap<String, u64>,
}

/// Parses and validates a request body; `Err` lists every problem found.
pub fn parse(
    body: &[u8],
    idempotency_key: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Submission, Vec<FieldError>> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let report: AggregatedStats = serde_path_to_error::deserialize(de).map_err(|e| {
        let loc: Vec<String> = e
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Enum { variant } => Some(variant.clone()),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let inner = e.into_inner();
        let kind = match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "json_invalid"
            }
            _ if inner.to_string().starts_with("missing field") => "missing",
            _ => "type_error",
        };
        let loc: Vec<&str> = loc.iter().map(String::as_str).collect();
        vec![FieldError::new(&loc, short_message(&inner), kind)]
    })?;
    validate(report, idempotency_key, now)
}

/// serde_json's message without the " at line 1 column 42" tail, and never echoing more than a
/// few characters of the input.
fn short_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let msg = full
        .rsplit_once(" at line ")
        .map_or(full.as_str(), |(m, _)| m);
    msg.chars().take(120).collect()
}

/// Adds `count` under `key` with overflow turned into an error.
fn add_count(map: &mut BTreeMap<String, u64>, key: &str, count: u64) -> bool {
    let slot = map.entry(key.to_owned()).or_default();
    match slot.checked_add(count) {
        Some(sum) => {
            *slot = sum;
            true
        }
        None => false,
    }
}

/// Checks meaning and ranges; maps categorical strings onto the vocabulary.
pub fn validate(
    report: AggregatedStats,
    idempotency_key: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Submission, Vec<FieldError>> {
    let mut errors = Vec::new();
    let idempotency_key = idempotency_key.map(str::trim).filter(|k| !k.is_empty());
    if let Some(key) = idempotency_key
        && (key.len() > MAX_IDEMPOTENCY_KEY
            || !key.bytes().all(|b| b == b' ' || b.is_ascii_graphic()))
    {
        errors.push(FieldError {
            loc: vec!["header".into(), "Idempotency-Key".into()],
            msg: format!("must be 1–{MAX_IDEMPOTENCY_KEY} printable ASCII characters"),
            kind: "value_error".into(),
        });
    }
    let mut fail = |loc: &[&str], msg: String| {
        errors.push(FieldError::new(loc, msg, "value_error"));
    };

    // `1.x` or `1.x.y` (upstream's clients send `1.0.0`).
    let schema_ok = report
        .schema_version
        .strip_prefix("1.")
        .is_some_and(|rest| {
            let parts: Vec<&str> = rest.split('.').collect();
            parts.len() <= 2
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
        });
    if !schema_ok {
        fail(
            &["schema_version"],
            "unsupported schema version (expected 1.x)".into(),
        );
    }

    let inst = &report.installation;
    let installation_id = match Uuid::try_parse(&inst.installation_id) {
        Ok(id) if inst.installation_id.len() == 36 => Some(id),
        _ => {
            fail(
                &["installation", "installation_id"],
                "must be a UUID in its 36-character form".into(),
            );
            None
        }
    };
    let country = country_code(&inst.country_code);
    if country.is_none() {
        fail(
            &["installation", "country_code"],
            "must be a two-letter ISO 3166-1 code".into(),
        );
    }
    let tomorrow = now + Duration::days(1);
    if inst.first_seen > tomorrow {
        fail(&["installation", "first_seen"], "lies in the future".into());
    }

    let (start, end) = (report.period.start, report.period.end);
    if end < start {
        fail(&["period", "end"], "must not be before period.start".into());
    } else if end - start > MAX_PERIOD {
        fail(
            &["period", "end"],
            "a period may cover at most 31 days".into(),
        );
    }
    if end > tomorrow {
        fail(&["period", "end"], "lies in the future".into());
    }
    let days = (end - start).num_seconds() as f64 / 86_400.0;
    if !(0..=31).contains(&report.period.duration_days)
        || (report.period.duration_days as f64 - days).abs() > 1.0
    {
        fail(
            &["period", "duration_days"],
            "does not match the period".into(),
        );
    }

    let fleet = &report.printer_fleet;
    if fleet.printer_count > MAX_PRINTERS {
        fail(
            &["printer_fleet", "printer_count"],
            format!("more than {MAX_PRINTERS} printers is not plausible"),
        );
    }
    if fleet.printer_types.len() > MAX_PRINTER_TYPES
        || fleet.printer_type_counts.len() > MAX_PRINTER_TYPES
    {
        fail(
            &["printer_fleet", "printer_type_counts"],
            format!("at most {MAX_PRINTER_TYPES} printer types"),
        );
    }
    let mut printer_type_counts = BTreeMap::new();
    for (typ, n) in &fleet.printer_type_counts {
        if *n > fleet.printer_count {
            fail(
                &["printer_fleet", "printer_type_counts"],
                "a type has more printers than printer_count".into(),
            );
            break;
        }
        add_count(
            &mut printer_type_counts,
            PrinterType::classify(typ).as_str(),
            *n,
        );
    }
    // Types listed without counts (a client that only sends the list) count as present.
    for typ in &fleet.printer_types {
        printer_type_counts
            .entry(PrinterType::classify(typ).as_str().to_owned())
            .or_insert(0);
    }

    let usage = &report.usage_stats;
    for (name, value) in [
        ("job_count", usage.job_count),
        ("file_count", usage.file_count),
        ("upload_count", usage.upload_count),
        ("jobs_completed", usage.jobs_completed.unwrap_or(0)),
        ("jobs_failed", usage.jobs_failed.unwrap_or(0)),
    ] {
        if value > MAX_COUNT {
            fail(
                &["usage_stats", name],
                format!("more than {MAX_COUNT} in one report is not plausible"),
            );
        }
    }
    if let (Some(done), Some(failed)) = (usage.jobs_completed, usage.jobs_failed)
        && done.saturating_add(failed) != usage.job_count
    {
        fail(
            &["usage_stats", "job_count"],
            "must equal jobs_completed + jobs_failed".into(),
        );
    }
    let max_hours = ((end - start).num_seconds().max(0) as u64).div_ceil(3600) + 1;
    if usage.uptime_hours > max_hours {
        fail(
            &["usage_stats", "uptime_hours"],
            "exceeds the length of the period".into(),
        );
    }
    if usage.feature_usage.len() > MAX_MAP_KEYS {
        fail(
            &["usage_stats", "feature_usage"],
            format!("at most {MAX_MAP_KEYS} features"),
        );
    }
    let feature_usage = usage
        .feature_usage
        .iter()
        .filter_map(|(name, on)| match Feature::classify(name) {
            Feature::Other => None,
            f => Some((format!("{}_enabled", f.as_str()), *on)),
        })
        .collect();

    if report.error_summary.len() > MAX_MAP_KEYS {
        fail(
            &["error_summary"],
            format!("at most {MAX_MAP_KEYS} error types"),
        );
    }
    let mut error_summary = BTreeMap::new();
    for (typ, n) in &report.error_summary {
        if *n > MAX_COUNT || !add_count(&mut error_summary, ErrorType::classify(typ).as_str(), *n) {
            fail(
                &[
                    "error_summary",
                    typ.chars().take(48).collect::<String>().as_str(),
                ],
                format!("more than {MAX_COUNT} errors of one type is not plausible"),
            );
            break;
        }
    }

    let (Some(installation_id), true) = (installation_id, errors.is_empty()) else {
        return Err(errors);
    };
    let version = |s: &str| {
        if s.trim().eq_ignore_ascii_case("unknown") {
            "unknown".to_owned()
        } else {
            Version::parse(s).map_or_else(|| "other".to_owned(), |v| v.as_str().to_owned())
        }
    };
    let inst = report.installation;
    Ok(Submission {
        idempotency_key: idempotency_key.map(str::to_owned),
        installation_id,
        schema_version: report.schema_version,
        submission_timestamp: report.submission_timestamp,
        first_seen: inst.first_seen,
        app_version: version(&inst.app_version),
        python_version: version(&inst.python_version),
        platform: Platform::classify(&inst.platform).as_str().to_owned(),
        deployment_mode: DeploymentMode::classify(&inst.deployment_mode)
            .as_str()
            .to_owned(),
        country_code: country.unwrap_or_default(),
        period_start: start,
        period_end: end,
        duration_days: report.period.duration_days,
        printer_count: report.printer_fleet.printer_count,
        printer_type_counts,
        job_count: usage.job_count,
        jobs_completed: usage.jobs_completed,
        jobs_failed: usage.jobs_failed,
        file_count: usage.file_count,
        upload_count: usage.upload_count,
        uptime_hours: usage.uptime_hours,
        feature_usage,
        error_summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    fn body() -> serde_json::Value {
        json!({
            "schema_version": "1.0",
            "submission_timestamp": "2026-11-28T11:00:00Z",
            "installation": {
                "installation_id": "550e8400-e29b-41d4-a716-446655440000",
                "first_seen": "2026-01-01T00:00:00Z",
                "app_version": "2.7.0", "python_version": "3.11.7",
                "platform": "linux", "deployment_mode": "homeassistant", "country_code": "de"
            },
            "period": {"start": "2026-11-21T00:00:00Z", "end": "2026-11-28T00:00:00Z", "duration_days": 7},
            "printer_fleet": {"printer_count": 2, "printer_types": ["bambu_lab", "prusa"],
                              "printer_type_counts": {"bambu_lab": 1, "prusa": 1}},
            "usage_stats": {"job_count": 5, "jobs_completed": 4, "jobs_failed": 1, "file_count": 2,
                            "upload_count": 1, "uptime_hours": 100,
                            "feature_usage": {"library_enabled": true, "my-secret-flag": true}},
            "error_summary": {"connection_timeout": 2, "/home/alice/x.3mf": 1}
        })
    }

    fn check(v: &serde_json::Value) -> Result<Submission, Vec<FieldError>> {
        parse(&serde_json::to_vec(v).expect("json"), Some("key-1"), now())
    }

    #[test]
    fn a_good_report_is_mapped_onto_the_vocabulary() {
        let s = check(&body()).expect("valid");
        assert_eq!(s.country_code, "DE");
        assert_eq!(s.jobs_completed, Some(4));
        assert_eq!(s.error_summary.get("other"), Some(&1));
        assert!(!format!("{s:?}").contains("alice"));
        assert!(!s.feature_usage.contains_key("my-secret-flag"));
        assert_eq!(s.feature_usage.get("library_enabled"), Some(&true));
        assert_eq!(s.idempotency_key.as_deref(), Some("key-1"));
    }

    #[test]
    fn upstream_clients_schema_and_python_str_datetimes_are_accepted() {
        let mut b = body();
        b["schema_version"] = json!("1.0.0");
        b["submission_timestamp"] = json!("2026-11-28 11:00:00.123456");
        b["period"]["start"] = json!("2026-11-21 00:00:00");
        let s = check(&b).expect("valid");
        assert_eq!(s.schema_version, "1.0.0");
        assert_eq!(s.submission_timestamp.timestamp_subsec_micros(), 123_456);
        for bad in ["2.0.0", "1.0.0.0", "1.", "1.x", "1.0.", "v1.0"] {
            b["schema_version"] = json!(bad);
            assert!(check(&b).is_err(), "{bad}");
        }
    }

    #[test]
    fn python_naive_timestamps_are_utc() {
        let mut b = body();
        b["submission_timestamp"] = json!("2026-11-28T11:00:00.123456");
        let s = check(&b).expect("valid");
        assert_eq!(s.submission_timestamp.timestamp_subsec_micros(), 123_456);
    }

    #[test]
    fn type_errors_name_the_field() {
        let mut b = body();
        b["usage_stats"]["job_count"] = json!(-1);
        let e = check(&b).expect_err("negative");
        assert_eq!(e[0].loc, ["body", "usage_stats", "job_count"]);
        let mut b = body();
        b["usage_stats"]["job_count"] = json!(1e300);
        assert_eq!(check(&b).expect_err("huge")[0].kind, "type_error");
        let mut b = body();
        b["installation"]
            .as_object_mut()
            .expect("obj")
            .remove("country_code");
        let e = check(&b).expect_err("missing");
        assert_eq!(e[0].kind, "missing");
        assert_eq!(e[0].loc, ["body", "installation"]);
        assert_eq!(
            parse(b"{not json", None, now()).expect_err("syntax")[0].kind,
            "json_invalid"
        );
    }

    #[test]
    fn meaning_errors_are_all_reported() {
        let mut b = body();
        b["installation"]["installation_id"] = json!("not-a-uuid");
        b["installation"]["country_code"] = json!("Germany");
        b["period"]["end"] = json!("2026-11-01T00:00:00Z");
        b["schema_version"] = json!("2.0");
        b["usage_stats"]["job_count"] = json!(9);
        let e = check(&b).expect_err("invalid");
        let locs: Vec<String> = e.iter().map(|e| e.loc.join(".")).collect();
        for want in [
            "body.schema_version",
            "body.installation.installation_id",
            "body.installation.country_code",
            "body.period.end",
            "body.usage_stats.job_count",
        ] {
            assert!(locs.iter().any(|l| l == want), "{want} missing in {locs:?}");
        }
    }

    #[test]
    fn limits() {
        let mut b = body();
        b["period"]["start"] = json!("2026-10-01T00:00:00Z");
        b["period"]["duration_days"] = json!(58);
        assert!(check(&b).is_err());
        let mut b = body();
        let many: serde_json::Map<String, serde_json::Value> =
            (0..17).map(|i| (format!("t{i}"), json!(0))).collect();
        b["printer_fleet"]["printer_type_counts"] = json!(many);
        assert!(check(&b).is_err());
        let mut b = body();
        b["usage_stats"]["uptime_hours"] = json!(10_000);
        assert!(check(&b).is_err());
        let mut b = body();
        b["installation"]["app_version"] = json!("my-laptop.local");
        assert_eq!(check(&b).expect("valid").app_version, "other");
        assert!(
            parse(
                &serde_json::to_vec(&body()).expect("json"),
                Some("bad\tkey"),
                now()
            )
            .is_err()
        );
    }

    proptest::proptest! {
        /// Whatever strings a client puts into the categorical fields, what the server keeps is
        /// a vocabulary word, `other`, `unknown` or a version.
        #[test]
        fn no_client_string_survives_unless_it_is_a_known_word(
            words in proptest::collection::vec("\\PC{0,40}|[a-z_]{1,20}|[0-9.]{1,15}", 8)
        ) {
            let mut b = body();
            b["installation"]["app_version"] = json!(words[0]);
            b["installation"]["python_version"] = json!(words[1]);
            b["installation"]["platform"] = json!(words[2]);
            b["installation"]["deployment_mode"] = json!(words[3]);
            b["printer_fleet"]["printer_type_counts"] = json!({words[4].clone(): 1});
            b["usage_stats"]["feature_usage"] = json!({words[5].clone(): true});
            b["error_summary"] = json!({words[6].clone(): 1, words[7].clone(): 2});
            let s = check(&b).expect("valid whatever the words");
            let is_version = |v: &str| v == "other" || v == "unknown"
                || v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'));
            proptest::prop_assert!(is_version(&s.app_version) && is_version(&s.python_version));
            proptest::prop_assert_eq!(Platform::classify(&s.platform).as_str(), s.platform.as_str());
            proptest::prop_assert_eq!(
                DeploymentMode::classify(&s.deployment_mode).as_str(),
                s.deployment_mode.as_str()
            );
            for k in s.printer_type_counts.keys() {
                proptest::prop_assert_eq!(PrinterType::classify(k).as_str(), k.as_str());
            }
            for k in s.error_summary.keys() {
                proptest::prop_assert_eq!(ErrorType::classify(k).as_str(), k.as_str());
            }
            let sent = if words[6] == words[7] { 2 } else { 3 };
            proptest::prop_assert_eq!(s.error_summary.values().sum::<u64>(), sent);
            for k in s.feature_usage.keys() {
                proptest::prop_assert!(Feature::classify(k) != Feature::Other);
            }
        }
    }
}
