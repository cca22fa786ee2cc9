//! `/stats/version-migration?days=` and `/stats/feature-trends?days=`: per UTC day, what each
//! installation's latest report *up to the end of that day* said — replayed from the span
//! deltas the database counts ([`crate::store::Tally::Spans`]) in one query for any number of
//! days (upstream runs one per day and loads every `feature_usage` into memory).
//!
//! Each day's versions are folded k-anonymously; a feature's figure on a day shows only when
//! the installations with it enabled and those without are each 0 or at least `k`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use serde_json::{Value, json};

use super::anonymity::{k_anonymous, percent, shown};
use super::distributions::version_key;
use super::{Ask, days_ending, everything, parse_day};
use crate::Result;
use crate::store::{SpanKey, SubmissionStore, Tally, TallyRow};

/// Replays span deltas: for each of `days` (ascending), the count per value at its end.
fn replay(rows: Vec<TallyRow>, days: &[NaiveDate]) -> Vec<BTreeMap<String, u64>> {
    let mut deltas: Vec<(NaiveDate, String, i64)> = rows
        .into_iter()
        .filter_map(|r| parse_day(&r.key).map(|day| (day, r.key2, r.n[0])))
        .collect();
    deltas.sort_by_key(|d| d.0);
    let mut state: BTreeMap<String, i64> = BTreeMap::new();
    let mut next = deltas.into_iter().peekable();
    days.iter()
        .map(|day| {
            while let Some((_, value, delta)) = next.next_if(|d| d.0 <= *day) {
                *state.entry(value).or_default() += delta;
            }
            state
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(v, n)| (v.clone(), *n as u64))
                .collect()
        })
        .collect()
}

impl<S: SubmissionStore> Ask<'_, S> {
    /// `GET /stats/version-migration?days=`.
    pub async fn version_migration(&self, days: u32) -> Result<Value> {
        let days = days_ending(self.today(), days.max(1));
        let per_day = replay(self.tally(Tally::Spans(SpanKey::Version)).await?, &days);
        let mut all = BTreeSet::new();
        let migration: Vec<Value> = days
            .iter()
            .zip(per_day)
            .map(|(day, counts)| {
                let (versions, withheld) = k_anonymous(counts, self.k);
                all.extend(versions.keys().cloned());
                json!({"date": day.to_string(), "versions": versions, "withheld": withheld})
            })
            .collect();
        let mut all: Vec<String> = all.into_iter().collect();
        // Highest version first (upstream sorts text: "2.9.0" before "2.10.0"); `other` last.
        all.sort_by(|a, b| version_key(b).cmp(&version_key(a)).then(a.cmp(b)));
        Ok(json!({
            "migration": migration,
            "all_versions": all,
            "k_anonymity": self.k,
        }))
    }

    /// `GET /stats/feature-trends?days=`.
    pub async fn feature_trends(&self, days: u32) -> Result<Value> {
        let days = days_ending(self.today(), days.max(1));
        let enabled = replay(
            self.tally(Tally::Spans(SpanKey::EnabledFeature)).await?,
            &days,
        );
        let first_seen = self.first_seen().await?;
        let all_features: BTreeSet<String> = self
            .tally(Tally::Features(everything()))
            .await?
            .into_iter()
            .map(|r| r.key)
            .collect();
        let trends: Vec<Value> = days
            .iter()
            .zip(enabled)
            .map(|(day, enabled)| {
                let total: u64 = first_seen.range(..=day).map(|(_, n)| n).sum();
                let features: BTreeMap<&str, Value> = all_features
                    .iter()
                    .map(|f| {
                        let on = enabled.get(f).copied().unwrap_or(0);
                        let figure = if shown(on, self.k) && shown(total.saturating_sub(on), self.k)
                        {
                            json!({"enabled": on, "percent": percent(on, total)})
                        } else {
                            Value::Null
                        };
                        (f.as_str(), figure)
                    })
                    .collect();
                json!({"date": day.to_string(), "total_installations": total,
                       "features": features})
            })
            .collect();
        Ok(json!({
            "trends": trends,
            "all_features": all_features,
            "k_anonymity": self.k,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(day: &str, v: &str, d: i64) -> TallyRow {
        TallyRow {
            key: day.into(),
            key2: v.into(),
            n: [d, 0, 0, 0, 0],
        }
    }

    #[test]
    fn replay_applies_deltas_up_to_each_day() {
        let d = |s: &str| parse_day(s).expect("day");
        let rows = vec![
            row("2026-11-20", "2.7.0", 2),
            row("2026-11-22", "2.8.0", 1),
            row("2026-11-22", "2.7.0", -1),
            row("2026-11-18", "2.6.0", 1),
        ];
        let out = replay(rows, &[d("2026-11-19"), d("2026-11-21"), d("2026-11-23")]);
        assert_eq!(out[0], BTreeMap::from([("2.6.0".into(), 1)]));
        assert_eq!(out[1].get("2.7.0"), Some(&2));
        assert_eq!(out[2].get("2.7.0"), Some(&1));
        assert_eq!(out[2].get("2.8.0"), Some(&1));
    }
}
