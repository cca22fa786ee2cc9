//! `/stats/anomalies`: upstream's four checks, in its order and with its thresholds and
//! severities (`high`, `medium`, `info`). One difference: the daily volume compares the last
//! 24 hours with the 30-day daily average (upstream counts since UTC midnight, so its
//! `submission_drop` fires every morning).

use chrono::{Duration, SecondsFormat};
use serde_json::{Value, json};

use super::Ask;
use super::usage::Errors;
use crate::Result;
use crate::store::{SubmissionStore, Tally};

/// The checks, as upstream names them.
pub(super) const CHECKS: [&str; 4] = [
    "active_users_week_over_week",
    "daily_submission_volume",
    "error_spike_detection",
    "installation_error_rate",
];

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl<S: SubmissionStore> Ask<'_, S> {
    /// `GET /stats/anomalies`.
    pub async fn anomalies(&self) -> Result<Value> {
        let errors = self.error_stats().await?;
        self.anomalies_with(&errors).await
    }

    pub(super) async fn anomalies_with(&self, errors: &Errors) -> Result<Value> {
        let mut found = Vec::new();

        let (this, _) = self.active(7, false).await?;
        let (previous, _) = self.active(7, true).await?;
        if previous > 0 {
            let change = round1((this as f64 - previous as f64) / previous as f64 * 100.0);
            if change < -20.0 {
                found.push(json!({
                    "type": "active_users_drop",
                    "severity": if change < -50.0 { "high" } else { "medium" },
                    "message": format!("Active users dropped {:.1}% compared to last week", -change),
                    "current": this, "previous": previous, "change_percent": change,
                }));
            } else if change > 50.0 {
                found.push(json!({
                    "type": "active_users_spike",
                    "severity": "info",
                    "message": format!("Active users rose {change:.1}% compared to last week"),
                    "current": this, "previous": previous, "change_percent": change,
                }));
            }
        }

        let day = self
            .one(Tally::ActivityBetween(
                self.now - Duration::days(1),
                self.after_now(),
            ))
            .await?
            .count(1);
        let month = self
            .one(Tally::ActivityBetween(
                self.now - Duration::days(30),
                self.after_now(),
            ))
            .await?
            .count(1);
        let average = round1(month as f64 / 30.0);
        if average > 0.0 && day as f64 > 3.0 * average {
            found.push(json!({
                "type": "submission_spike", "severity": "info",
                "message": format!("{day} submissions in the last 24 hours, {average} a day on average"),
                "current": day, "average": average,
            }));
        } else if average > 5.0 && (day as f64) < 0.2 * average {
            found.push(json!({
                "type": "submission_drop", "severity": "medium",
                "message": format!("Only {day} submissions in the last 24 hours, {average} a day on average"),
                "current": day, "average": average,
            }));
        }

        if let Some(change) = errors.change_percent.filter(|c| *c > 50.0) {
            found.push(json!({
                "type": "error_spike",
                "severity": if change > 100.0 { "high" } else { "medium" },
                "message": format!("Errors rose {change:.1}% compared to last week"),
                "this_week": errors.answer["this_week_errors"],
                "last_week": errors.answer["last_week_errors"],
                "change_percent": change,
                "error_types": errors.answer["error_types"],
            }));
        }

        if let Some(with_errors) = errors.installations_with_errors.filter(|n| *n > 0) {
            let total: u64 = self.first_seen().await?.values().sum();
            if total > 0 {
                let rate = round1(with_errors as f64 / total as f64 * 100.0);
                if rate > 30.0 {
                    found.push(json!({
                        "type": "high_error_rate",
                        "severity": if rate > 50.0 { "high" } else { "medium" },
                        "message": format!("{rate:.1}% of installations report errors"),
                        "installations_with_errors": with_errors,
                        "total_installations": total,
                        "error_rate": rate,
                    }));
                }
            }
        }

        Ok(json!({
            "anomalies": found,
            "checked_at": self.now.to_rfc3339_opts(SecondsFormat::Secs, true),
            "checks_performed": CHECKS,
        }))
    }
}
