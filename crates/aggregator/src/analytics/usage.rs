//! `/stats/features` and `/stats/errors`.
//!
//! * **features** — per feature flag over each installation's latest report: installations
//!   with it enabled and disabled. A feature shows only when both counts are 0 or at least `k`
//!   (otherwise one of them would single out fewer than `k`); the others are counted in
//!   `withheld_features`. Sorted by name, as upstream.
//! * **errors** — error types over each installation's latest report, folded by the
//!   installations that reported them; and the errors of *all* reports of this week against the
//!   week before (upstream's spike rule: more than 50 % up). Upstream guesses which keys are
//!   errors from the substrings `error`/`fail`; ours are a vocabulary of error types, so every
//!   key counts. A figure from fewer than `k` installations is `null`.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use super::anonymity::{Bucket, fold, percent, shown};
use super::{Ask, everything};
use crate::Result;
use crate::store::{SubmissionStore, Tally};

/// The error figures the anomalies check as well.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Errors {
    /// Installations whose latest report has errors (`None`: fewer than `k`).
    pub(super) installations_with_errors: Option<u64>,
    /// This week's change against the week before, in percent (`None`: withheld).
    pub(super) change_percent: Option<f64>,
    /// The answer of `/stats/errors`.
    pub(super) answer: Value,
}

impl<S: SubmissionStore> Ask<'_, S> {
    /// `GET /stats/features`.
    pub async fn features(&self, since: DateTime<Utc>) -> Result<Value> {
        let installations = self.one(Tally::FleetTotals(since)).await?.count(0);
        let mut withheld = 0u64;
        let mut features = Vec::new();
        for r in self.tally(Tally::Features(since)).await? {
            let (reporting, enabled) = (r.count(0), r.count(1));
            let disabled = reporting.saturating_sub(enabled);
            if !(shown(enabled, self.k) && shown(disabled, self.k)) {
                withheld += 1;
                continue;
            }
            features.push(json!({
                "feature": r.key,
                "enabled": enabled,
                "disabled": disabled,
                "enabled_percent": percent(enabled, reporting),
                "total_reporting": reporting,
            }));
        }
        features.sort_by(|a, b| a["feature"].as_str().cmp(&b["feature"].as_str()));
        Ok(json!({
            "features": features,
            "total_installations": installations,
            "withheld_features": withheld,
            "k_anonymity": self.k,
        }))
    }

    /// Errors of all reports received in `[from, to)`, if enough installations contribute.
    async fn errors_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Option<u64>> {
        let r = self.one(Tally::ErrorsBetween(from, to)).await?;
        Ok(shown(r.count(0), self.k).then(|| r.count(1)))
    }

    /// `GET /stats/errors`.
    pub(super) async fn error_stats(&self) -> Result<Errors> {
        let since = everything();
        let types: BTreeMap<String, Bucket> = self
            .tally(Tally::ErrorTypes(since))
            .await?
            .into_iter()
            .map(|r| {
                let b = Bucket {
                    installations: r.count(0),
                    total: r.count(1),
                };
                (r.key, b)
            })
            .collect();
        let folded = fold(types, self.k);
        let totals = self.one(Tally::ErrorTotals(since)).await?;
        let with_errors = shown(totals.count(0), self.k).then(|| totals.count(0));
        let this_week = self
            .errors_between(self.now - Duration::days(7), self.after_now())
            .await?;
        let last_week = self
            .errors_between(self.now - Duration::days(14), self.now - Duration::days(7))
            .await?;
        let change = match (this_week, last_week) {
            (Some(this), Some(last)) if last > 0 => {
                Some(((this as f64 - last as f64) / last as f64 * 1000.0).round() / 10.0)
            }
            (Some(_), Some(_)) => Some(0.0),
            _ => None,
        };
        let answer = json!({
            "total_errors": with_errors.map(|_| totals.count(1)),
            "installations_with_errors": with_errors,
            "error_types": folded
                .buckets
                .iter()
                .map(|(t, b)| (t.clone(), b.total))
                .collect::<BTreeMap<_, _>>(),
            "error_type_installations": folded
                .buckets
                .iter()
                .map(|(t, b)| (t.clone(), b.installations))
                .collect::<BTreeMap<_, _>>(),
            "this_week_errors": this_week,
            "last_week_errors": last_week,
            "error_change_percent": change,
            "has_spike": change.is_some_and(|c| c > 50.0),
            "k_anonymity": self.k,
        });
        Ok(Errors {
            installations_with_errors: with_errors,
            change_percent: change,
            answer,
        })
    }

    /// `GET /stats/errors`.
    pub async fn errors(&self) -> Result<Value> {
        Ok(self.error_stats().await?.answer)
    }
}
