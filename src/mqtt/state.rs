//! The retained JSON on `<base>/state` that every sensor and binary sensor reads.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::aggregate::LocalStats;
use crate::metrics::Metrics;

/// One state message. Keys are the entities' object ids.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatePayload {
    /// Completed + failed jobs, rolling 7 days (same definition as the report's `job_count`).
    pub jobs_week: u64,
    /// Completed jobs, rolling 7 days.
    pub jobs_completed_week: u64,
    /// Failed (incl. cancelled) jobs, rolling 7 days.
    pub jobs_failed_week: u64,
    /// Files downloaded, rolling 7 days.
    pub files_downloaded_week: u64,
    /// Files uploaded, rolling 7 days.
    pub files_uploaded_week: u64,
    /// Errors, rolling 7 days.
    pub errors_week: u64,
    /// Printers seen, rolling 7 days.
    pub printers: u64,
    /// Measured Printernizer up-time, rolling 7 days, hours.
    pub uptime_week: f64,
    /// Last accepted report (RFC 3339) or null.
    pub last_submission: Option<String>,
    /// Next planned report (RFC 3339) or null when none is planned.
    pub next_submission: Option<String>,
    /// Events stored.
    pub events_total: u64,
    /// Events not yet reported.
    pub events_pending: u64,
    /// Reports accepted.
    pub submissions_total: u64,
    /// Random installation id.
    pub installation_id: String,
    /// Messages rejected since this process started.
    pub rejected_messages: u64,
    /// `ON`/`OFF` from Printernizer's status topic; null until it said anything.
    pub printernizer_online: Option<&'static str>,
    /// `ON` when submission has a problem the user should look at.
    pub submission_problem: &'static str,
    /// `ON` while events cannot be stored (disk full …); they wait at the broker.
    pub storage_problem: &'static str,
    /// Where events come from: `mqtt`, `printernizer api`, `mqtt, printernizer api` or `none`.
    pub data_source: String,
    /// When the Printernizer bridge last completed a poll (RFC 3339) or null.
    pub bridge_last_success: Option<String>,
}

fn on_off(b: bool) -> &'static str {
    if b { "ON" } else { "OFF" }
}

impl StatePayload {
    /// Builds the state from the local statistics and the process counters.
    pub fn new(
        local: &LocalStats,
        metrics: &Metrics,
        printernizer_online: Option<bool>,
        submission_problem: bool,
        next_submission: Option<DateTime<Utc>>,
        sources: &[String],
        bridge_last_success: Option<String>,
    ) -> Self {
        let week = &local.this_week;
        Self {
            jobs_week: week.job_count,
            jobs_completed_week: week.jobs_completed,
            jobs_failed_week: week.jobs_failed,
            files_downloaded_week: week.file_count,
            files_uploaded_week: week.upload_count,
            errors_week: week.error_count,
            printers: week.printer_count,
            uptime_week: week.uptime_hours,
            last_submission: local.last_submission.clone(),
            next_submission: next_submission.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            events_total: local.total_events,
            events_pending: local.pending_events,
            submissions_total: local.submission_count,
            installation_id: local.installation_id.clone(),
            rejected_messages: Metrics::get(&metrics.rejected_messages),
            printernizer_online: printernizer_online.map(on_off),
            submission_problem: on_off(submission_problem),
            storage_problem: on_off(
                metrics
                    .storage_failing
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
            data_source: if sources.is_empty() {
                "none".to_owned()
            } else {
                sources.join(", ")
            },
            bridge_last_success,
        }
    }
}
