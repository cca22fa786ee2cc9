//! Report bodies as a client sends them.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// A valid report of `installation` for `[start, end)`.
pub fn report(installation: &str, start: &str, end: &str) -> Value {
    let s: DateTime<Utc> = start.parse().expect("start");
    let e: DateTime<Utc> = end.parse().expect("end");
    let days = ((e - s).num_seconds() as f64 / 86_400.0).round() as i64;
    json!({
        "schema_version": "1.0",
        "submission_timestamp": end,
        "installation": {
            "installation_id": installation,
            "first_seen": "2026-01-01T00:00:00Z",
            "app_version": "2.7.0",
            "python_version": "3.11.7",
            "platform": "linux",
            "deployment_mode": "homeassistant",
            "country_code": "DE"
        },
        "period": {"start": start, "end": end, "duration_days": days},
        "printer_fleet": {
            "printer_count": 3,
            "printer_types": ["bambu_lab", "prusa"],
            "printer_type_counts": {"bambu_lab": 2, "prusa": 1}
        },
        "usage_stats": {
            "job_count": 12, "jobs_completed": 10, "jobs_failed": 2,
            "file_count": 4, "upload_count": 3, "uptime_hours": 20,
            "feature_usage": {"library_enabled": true, "timelapse_enabled": false}
        },
        "error_summary": {"connection_timeout": 3, "disk_full": 1}
    })
}

/// A new random installation id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
