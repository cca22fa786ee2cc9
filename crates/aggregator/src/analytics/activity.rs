//! `/stats/installations?days=` and the weekly activity of the overview.
//!
//! * `total` — installations with a stored report; `active_7d`/`active_30d` — with a report
//!   received in the last 7/30 days; `growth_7d_percent` — this week's active against the
//!   week before (0 when the week before had none, as upstream).
//! * `trend` — per UTC day, oldest first: `total` installations first seen up to that day and
//!   `active` installations that reported on it. Two queries for the whole trend (upstream
//!   runs two per day).
//! * weekly — per ISO week: active installations, submissions, and the jobs their reports
//!   carry, withheld (`null`) in a week with fewer than `k` reporting installations.

use std::collections::BTreeMap;

use chrono::{Datelike, Duration, NaiveDate};
use serde_json::{Value, json};

use super::anonymity::{percent, shown};
use super::{Ask, days_ending, parse_day, start_of};
use crate::Result;
use crate::store::{Period, SubmissionStore, Tally};

/// `(installations, submissions, [jobs, completed, failed])` per period.
type Activity = BTreeMap<NaiveDate, (u64, u64, [u64; 3])>;

impl<S: SubmissionStore> Ask<'_, S> {
    /// Installations first seen per day, all stored.
    pub(super) async fn first_seen(&self) -> Result<BTreeMap<NaiveDate, u64>> {
        let mut out = BTreeMap::new();
        for r in self.tally(Tally::FirstSeen).await? {
            if let Some(day) = parse_day(&r.key) {
                *out.entry(day).or_default() += r.count(0);
            }
        }
        Ok(out)
    }

    /// Distinct installations and submissions received in the last `days` days (and in the
    /// `days` before that, when `previous`).
    pub(super) async fn active(&self, days: i64, previous: bool) -> Result<(u64, u64)> {
        let (from, to) = if previous {
            (
                self.now - Duration::days(2 * days),
                self.now - Duration::days(days),
            )
        } else {
            (self.now - Duration::days(days), self.after_now())
        };
        let r = self.one(Tally::ActivityBetween(from, to)).await?;
        Ok((r.count(0), r.count(1)))
    }

    async fn periods(&self, period: Period, first: NaiveDate) -> Result<Activity> {
        let mut out = Activity::new();
        for r in self.tally(Tally::Periods(period, start_of(first))).await? {
            if let Some(day) = parse_day(&r.key) {
                out.insert(
                    day,
                    (r.count(0), r.count(1), [r.count(2), r.count(3), r.count(4)]),
                );
            }
        }
        Ok(out)
    }

    /// `GET /stats/installations?days=`.
    pub async fn installations(&self, days: u32) -> Result<Value> {
        let first_seen = self.first_seen().await?;
        let (active_7d, _) = self.active(7, false).await?;
        let (active_30d, _) = self.active(30, false).await?;
        let (previous_7d, _) = self.active(7, true).await?;
        let growth = if previous_7d == 0 {
            0.0
        } else {
            ((active_7d as f64 - previous_7d as f64) / previous_7d as f64 * 1000.0).round() / 10.0
        };
        let days = days_ending(self.today(), days.max(1));
        let active = self.periods(Period::Day, days[0]).await?;
        let mut seen: u64 = first_seen.range(..days[0]).map(|(_, n)| n).sum();
        let trend: Vec<Value> = days
            .iter()
            .map(|day| {
                seen += first_seen.get(day).copied().unwrap_or(0);
                json!({
                    "date": day.to_string(),
                    "total": seen,
                    "active": active.get(day).map_or(0, |a| a.0),
                })
            })
            .collect();
        Ok(json!({
            "total": first_seen.values().sum::<u64>(),
            "active_7d": active_7d,
            "active_30d": active_30d,
            "growth_7d_percent": growth,
            "trend": trend,
        }))
    }

    /// Activity and jobs per ISO week for the last `weeks` weeks, oldest first.
    pub async fn weekly(&self, weeks: u32) -> Result<Value> {
        let today = self.today();
        let this_monday = today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
        let mondays: Vec<NaiveDate> = (0..i64::from(weeks.max(1)))
            .rev()
            .map(|i| this_monday - Duration::weeks(i))
            .collect();
        let activity = self.periods(Period::Week, mondays[0]).await?;
        let (mut total, mut completed, mut failed, mut contributors) = (0u64, 0u64, 0u64, 0u64);
        let rows: Vec<Value> = mondays
            .iter()
            .map(|monday| {
                let (installations, submissions, [jobs, done, bad]) =
                    activity.get(monday).copied().unwrap_or_default();
                let visible = shown(installations, self.k);
                if visible {
                    total = total.saturating_add(jobs);
                    completed = completed.saturating_add(done);
                    failed = failed.saturating_add(bad);
                    contributors += installations;
                }
                json!({
                    "week_start": monday.to_string(),
                    "active_installations": installations,
                    "submissions": submissions,
                    "jobs": visible.then_some(jobs),
                    "jobs_completed": visible.then_some(done),
                    "jobs_failed": visible.then_some(bad),
                    "success_rate": (visible && done + bad > 0)
                        .then(|| percent(done, done + bad)),
                })
            })
            .collect();
        Ok(json!({
            "weeks": rows,
            "jobs": {
                "total": total,
                "completed": completed,
                "failed": failed,
                "success_rate": (completed + failed > 0)
                    .then(|| percent(completed, completed + failed)),
                "reports_from_installations": contributors,
            },
        }))
    }
}
