//! The anonymous report on the wire: what the add-on sends and the aggregation server reads.
//!
//! The shape is the original design's `AggregatedStats` (the JSON upstream's FastAPI server
//! accepts), plus `jobs_completed`/`jobs_failed`, which upstream ignores and ours uses for
//! success rates. What each figure *means* is defined where it is computed, in the add-on's
//! `aggregate` module; what the server *accepts* is checked in its `submission` module.
//!
//! Reading is lenient where upstream's clients are: timestamps through
//! [`crate::time::parse_lenient`], and the maps, the type list and the job split may be
//! missing (an older client). Unknown fields are ignored — and never stored.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::time::rfc3339_secs;

/// The report schema version this program produces.
pub const SCHEMA_VERSION: &str = "1.0";

/// The anonymous weekly report (the seed's `AggregatedStats`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregatedStats {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: String,
    /// When the report was built.
    #[serde(with = "rfc3339_secs")]
    pub submission_timestamp: DateTime<Utc>,
    /// Anonymous installation facts.
    pub installation: InstallationInfo,
    /// The period covered.
    pub period: TimePeriod,
    /// Printers seen.
    pub printer_fleet: PrinterFleetStats,
    /// Activity counts.
    pub usage_stats: UsageStats,
    /// `error_occurred` events per error type.
    #[serde(default)]
    pub error_summary: BTreeMap<String, u64>,
}

/// Anonymous installation information.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstallationInfo {
    /// Random UUID (not derived from anything).
    pub installation_id: String,
    /// When this installation was first seen.
    #[serde(with = "rfc3339_secs")]
    pub first_seen: DateTime<Utc>,
    /// Printernizer version from its latest start, or "unknown".
    pub app_version: String,
    /// Python version from Printernizer's latest start, or "unknown".
    pub python_version: String,
    /// linux, windows, darwin, freebsd, other or unknown.
    pub platform: String,
    /// homeassistant, docker, standalone or pi.
    pub deployment_mode: String,
    /// ISO 3166-1 alpha-2, "XX" when unknown.
    pub country_code: String,
}

/// The period a report covers: `[start, end)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimePeriod {
    /// Inclusive start.
    #[serde(with = "rfc3339_secs")]
    pub start: DateTime<Utc>,
    /// Exclusive end.
    #[serde(with = "rfc3339_secs")]
    pub end: DateTime<Utc>,
    /// Length in days, rounded.
    pub duration_days: i64,
}

/// Printer fleet composition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrinterFleetStats {
    /// Distinct printers seen.
    pub printer_count: u64,
    /// Distinct printer types, sorted.
    #[serde(default)]
    pub printer_types: Vec<String>,
    /// Printers per type.
    #[serde(default)]
    pub printer_type_counts: BTreeMap<String, u64>,
}

/// Activity counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageStats {
    /// Completed + failed jobs.
    pub job_count: u64,
    /// Completed jobs (an addition to the seed's shape: lets the server compute success rates;
    /// `job_count = jobs_completed + jobs_failed`). The add-on always sends it; `None` from a
    /// client that does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs_completed: Option<u64>,
    /// Failed or cancelled jobs (addition, see `jobs_completed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs_failed: Option<u64>,
    /// Files downloaded from printers.
    pub file_count: u64,
    /// Files uploaded to the library.
    pub upload_count: u64,
    /// Measured up-time in whole hours.
    pub uptime_hours: u64,
    /// `<feature>_enabled` → last known state.
    #[serde(default)]
    pub feature_usage: BTreeMap<String, bool>,
}
