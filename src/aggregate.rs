//! Aggregation: the anonymous report ([`AggregatedStats`], the seed's JSON shape) and the local
//! summary ([`LocalStats`]).
//!
//! Definitions (the server's sums rely on them):
//! * `job_count` = `job_completed` + `job_failed` events (a cancelled job is a `job_failed` with
//!   outcome `cancelled`); `job_created` is not counted, so a job is never counted twice;
//!   `jobs_completed` and `jobs_failed` (additions to the seed's shape, ignored by upstream's
//!   server) split it, so the server can compute success rates;
//! * `file_count` = `file_downloaded` events; `upload_count` = `file_uploaded` events;
//! * `printer_fleet` = the distinct printers (salted hashes) seen in the period, each with its
//!   latest known `printer_type`; events without `printer_id` do not count;
//! * `feature_usage` = the last known state of each feature as of the period's end, as
//!   `<feature>_enabled: bool` (features never toggled are absent);
//! * `uptime_hours` = measured up-time inside the period (see [`rollup::uptime_seconds`]),
//!   rounded to whole hours — never guessed;
//! * `app_version`, `python_version`, `platform` from the latest `app_start` ("unknown" if none);
//!   `country_code` from the configuration, else "XX"; `deployment_mode` configured or detected.
//!
//! All counts come from hourly rollups; see [`crate::store::rollup`].

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::event::EventType;
use crate::event::vocab::{DeploymentMode, PrinterType};
use crate::store::rollup::{self, counters};
use crate::store::{hour_floor, settings};
use printernizer_stats_shared::time::rfc3339_secs;

/// The report's wire types live in the shared crate: the server reads the very same types.
pub use printernizer_stats_shared::report::{
    AggregatedStats, InstallationInfo, PrinterFleetStats, SCHEMA_VERSION, TimePeriod, UsageStats,
};

/// Installation facts that do not come from events.
#[derive(Debug, Clone, PartialEq)]
pub struct InstallationContext {
    /// Reported country code ("XX" when unknown).
    pub country_code: String,
    /// Reported deployment mode.
    pub deployment_mode: DeploymentMode,
}

/// Most keys `printer_type_counts` and `error_summary` carry; the rest is folded into `other`.
pub const MAX_MAP_KEYS: usize = 16;

/// Keeps the `MAX_MAP_KEYS - 1` largest entries (ties by name) and sums the rest into `other`.
fn fold_into_other(map: BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    if map.len() <= MAX_MAP_KEYS {
        return map;
    }
    let mut entries: Vec<(String, u64)> = map.into_iter().collect();
    entries.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut out = BTreeMap::new();
    let mut other = 0;
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i < MAX_MAP_KEYS - 1 && k != "other" {
            out.insert(k, v);
        } else {
            other += v;
        }
    }
    *out.entry("other".to_owned()).or_default() += other;
    out
}

/// Builds the report for `[start, end)` at time `now`.
pub fn aggregate(
    conn: &Connection,
    ctx: &InstallationContext,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<AggregatedStats> {
    let counts = rollup::counts(conn, start, end)?;
    let fleet = rollup::fleet(conn, start, end)?;
    let mut printer_type_counts: BTreeMap<String, u64> = BTreeMap::new();
    for typ in fleet.values() {
        let typ = typ.as_deref().unwrap_or(PrinterType::Unknown.as_str());
        *printer_type_counts.entry(typ.to_owned()).or_default() += 1;
    }
    let printer_type_counts = fold_into_other(printer_type_counts);
    let feature_usage = rollup::features_as_of(conn, end)?
        .into_iter()
        .map(|(f, on)| (format!("{f}_enabled"), on))
        .collect();
    let uptime = rollup::uptime_seconds(conn, start, end)?;
    let app = rollup::latest_app_start(conn, end)?.unwrap_or_default();
    let unknown = || "unknown".to_owned();

    Ok(AggregatedStats {
        schema_version: SCHEMA_VERSION.to_owned(),
        submission_timestamp: now,
        installation: InstallationInfo {
            installation_id: settings::get(conn, settings::INSTALLATION_ID)?.unwrap_or_default(),
            first_seen: first_seen(conn, now)?,
            app_version: app
                .app_version
                .map_or_else(unknown, |v| v.as_str().to_owned()),
            python_version: app
                .python_version
                .map_or_else(unknown, |v| v.as_str().to_owned()),
            platform: app.platform.map_or_else(unknown, |p| p.as_str().to_owned()),
            deployment_mode: ctx.deployment_mode.as_str().to_owned(),
            country_code: ctx.country_code.clone(),
        },
        period: TimePeriod {
            start,
            end,
            duration_days: ((end - start).num_seconds() as f64 / 86_400.0).round() as i64,
        },
        printer_fleet: PrinterFleetStats {
            printer_count: fleet.len() as u64,
            printer_types: printer_type_counts.keys().cloned().collect(),
            printer_type_counts,
        },
        usage_stats: UsageStats {
            job_count: counts.of(EventType::JobCompleted) + counts.of(EventType::JobFailed),
            jobs_completed: Some(counts.of(EventType::JobCompleted)),
            jobs_failed: Some(counts.of(EventType::JobFailed)),
            file_count: counts.of(EventType::FileDownloaded),
            upload_count: counts.of(EventType::FileUploaded),
            uptime_hours: ((uptime as f64) / 3600.0).round() as u64,
            feature_usage,
        },
        error_summary: fold_into_other(counts.errors),
    })
}

fn first_seen(conn: &Connection, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    Ok(settings::get(conn, settings::FIRST_RUN_DATE)?
        .as_deref()
        .and_then(crate::store::parse_ts)
        .unwrap_or(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_keep_at_most_16_keys_and_lose_no_count() {
        let map: BTreeMap<String, u64> = (0..30).map(|i| (format!("k{i:02}"), i + 1)).collect();
        let total: u64 = map.values().sum();
        let folded = fold_into_other(map);
        assert_eq!(folded.len(), MAX_MAP_KEYS);
        assert_eq!(folded.values().sum::<u64>(), total);
        assert!(folded.contains_key("k29") && !folded.contains_key("k00"));
        let small: BTreeMap<String, u64> = [("a".to_owned(), 1)].into();
        assert_eq!(fold_into_other(small.clone()), small);
    }
}

/// The rolling "this week" window at `now`: the current UTC hour and the 167 before it.
pub fn this_week(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let end = hour_floor(now) + Duration::hours(1);
    (end - Duration::days(7), end)
}

/// Local summary (the seed's `/local` response plus weekly per-type counts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalStats {
    /// Random installation id.
    pub installation_id: String,
    /// First run.
    #[serde(with = "rfc3339_secs")]
    pub first_seen: DateTime<Utc>,
    /// `enabled` or `disabled`.
    pub opt_in_status: String,
    /// Events stored.
    pub total_events: u64,
    /// Stored events not yet part of an accepted report.
    pub pending_events: u64,
    /// Rolling last 7 days.
    pub this_week: WeekSummary,
    /// When the last report was accepted.
    pub last_submission: Option<String>,
    /// Reports accepted.
    pub submission_count: u64,
}

/// Rolling-week figures (also the Home Assistant sensors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeekSummary {
    /// Window start (inclusive).
    #[serde(with = "rfc3339_secs")]
    pub start: DateTime<Utc>,
    /// Window end (exclusive).
    #[serde(with = "rfc3339_secs")]
    pub end: DateTime<Utc>,
    /// Completed + failed jobs.
    pub job_count: u64,
    /// Files downloaded.
    pub file_count: u64,
    /// Errors.
    pub error_count: u64,
    /// Completed jobs.
    pub jobs_completed: u64,
    /// Failed (incl. cancelled) jobs.
    pub jobs_failed: u64,
    /// Files uploaded.
    pub upload_count: u64,
    /// Distinct printers seen.
    pub printer_count: u64,
    /// Measured up-time.
    pub uptime_hours: f64,
    /// Events per type (all 12 types, zeros included).
    pub event_counts: BTreeMap<String, u64>,
}

/// Builds the local summary at `now`.
pub fn local_stats(conn: &Connection, now: DateTime<Utc>) -> Result<LocalStats> {
    let (start, end) = this_week(now);
    let counts = rollup::counts(conn, start, end)?;
    let printers = rollup::fleet(conn, start, end)?.len() as u64;
    let uptime = rollup::uptime_seconds(conn, start, end.min(now).max(start))?;
    Ok(LocalStats {
        installation_id: settings::get(conn, settings::INSTALLATION_ID)?.unwrap_or_default(),
        first_seen: first_seen(conn, now)?,
        opt_in_status: settings::opt_in(conn)?.as_str().to_owned(),
        total_events: rollup::counter(conn, counters::EVENTS_TOTAL)?,
        pending_events: rollup::counter(conn, counters::EVENTS_PENDING)?,
        this_week: WeekSummary {
            start,
            end,
            job_count: counts.of(EventType::JobCompleted) + counts.of(EventType::JobFailed),
            file_count: counts.of(EventType::FileDownloaded),
            error_count: counts.of(EventType::ErrorOccurred),
            jobs_completed: counts.of(EventType::JobCompleted),
            jobs_failed: counts.of(EventType::JobFailed),
            upload_count: counts.of(EventType::FileUploaded),
            printer_count: printers,
            uptime_hours: (uptime as f64 / 360.0).round() / 10.0,
            event_counts: EventType::ALL
                .iter()
                .map(|t| (t.as_str().to_owned(), counts.of(*t)))
                .collect(),
        },
        last_submission: settings::get(conn, settings::LAST_SUBMISSION_DATE)?,
        submission_count: settings::get(conn, settings::SUBMISSION_COUNT)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    })
}
