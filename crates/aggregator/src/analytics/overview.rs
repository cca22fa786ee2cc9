//! `/stats/overview` and `/stats/export`: upstream's composite answers, with ours added.
//!
//! * **overview** — upstream's keys (`installations` with a 30-day trend, `deployment_modes`,
//!   `versions`, `geography`, `printers`, `features`, `anomalies`, `last_updated`), so
//!   upstream's admin page renders it, plus `platforms`, `errors`, and `activity` (per ISO
//!   week for `?weeks=`, default 12: active installations, submissions, jobs and success rate)
//!   — what the dashboard and the e-mail reports show.
//! * **export** — upstream's keys (`versions` up to 20, `geography` up to 50) plus `errors`;
//!   like upstream, no row and no installation id, only the k-anonymous aggregates.
//!
//! Distributions are over each installation's latest stored report.

use chrono::SecondsFormat;
use serde_json::{Value, json};

use super::{Ask, DEFAULT_TREND_DAYS, everything};
use crate::Result;
use crate::store::SubmissionStore;

impl<S: SubmissionStore> Ask<'_, S> {
    /// `GET /stats/overview?weeks=`.
    pub async fn overview(&self, weeks: u32) -> Result<Value> {
        let all = everything();
        let errors = self.error_stats().await?;
        Ok(json!({
            "installations": self.installations(DEFAULT_TREND_DAYS).await?,
            "deployment_modes": self.deployment_modes(all).await?,
            "versions": self.versions(all, 10).await?,
            "geography": self.geography(all, 20).await?,
            "printers": self.printers(all).await?,
            "features": self.features(all).await?,
            "platforms": self.platforms(all).await?,
            "anomalies": self.anomalies_with(&errors).await?,
            "errors": errors.answer,
            "activity": self.weekly(weeks).await?,
            "k_anonymity": self.k,
            "last_updated": self.now.to_rfc3339_opts(SecondsFormat::Secs, true),
        }))
    }

    /// `GET /stats/export`.
    pub async fn export(&self) -> Result<Value> {
        let all = everything();
        let errors = self.error_stats().await?;
        Ok(json!({
            "exported_at": self.now.to_rfc3339_opts(SecondsFormat::Secs, true),
            "installations": self.installations(DEFAULT_TREND_DAYS).await?,
            "deployment_modes": self.deployment_modes(all).await?,
            "versions": self.versions(all, 20).await?,
            "geography": self.geography(all, 50).await?,
            "printers": self.printers(all).await?,
            "features": self.features(all).await?,
            "anomalies": self.anomalies_with(&errors).await?,
            "errors": errors.answer,
            "k_anonymity": self.k,
        }))
    }
}
