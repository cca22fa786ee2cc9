//! `GET /stats/overview`: what the maintainers want to know, k-anonymous.
//!
//! The store streams every submission of the window (oldest first) into an [`OverviewBuilder`],
//! which keeps only per-installation state — memory grows with installations, not with
//! submissions — and [`OverviewBuilder::finish`] turns it into an [`Overview`]:
//!
//! * **active installations per week** — distinct installations whose reports were received in
//!   each ISO week (Monday, UTC);
//! * **distributions** (versions, platforms, deployment modes, countries, printer types, fleet
//!   sizes, feature adoption) over the *latest* report of each installation in the window;
//! * **jobs** — totals and the success rate over reports that carry job outcomes;
//! * **top error types** — error counts summed over all reports, with how many installations
//!   reported each.
//!
//! **k-anonymity:** every bucket that fewer than `k` installations fall into is folded into
//! `other`. If `other` itself ends up with fewer than `k` (but more than zero) installations,
//! the smallest remaining buckets are folded into it too, until it reaches `k` or nothing is
//! left — so no bucket, `other` included, singles out fewer than `k` installations (apart from
//! the case where all installations together are fewer than `k`).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The facts of one stored submission that `/stats/overview` folds.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    /// Installation.
    pub installation_id: Uuid,
    /// When the server accepted it.
    pub received_at: DateTime<Utc>,
    /// Printernizer version.
    pub app_version: String,
    /// Operating system.
    pub platform: String,
    /// Deployment mode.
    pub deployment_mode: String,
    /// Country.
    pub country_code: String,
    /// Fleet size.
    pub printer_count: u64,
    /// Printers per type.
    pub printer_type_counts: BTreeMap<String, u64>,
    /// Feature flags.
    pub feature_usage: BTreeMap<String, bool>,
    /// Jobs.
    pub job_count: u64,
    /// Completed jobs (if reported).
    pub jobs_completed: Option<u64>,
    /// Failed jobs (if reported).
    pub jobs_failed: Option<u64>,
    /// Errors per type.
    pub error_summary: BTreeMap<String, u64>,
}

/// Name of the bucket that collects small buckets.
pub const OTHER: &str = "other";
/// Most error types listed.
pub const TOP_ERRORS: usize = 10;

/// A bucket: how many installations fall into it, and a summed quantity (printers, errors …).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Installations in the bucket.
    pub installations: u64,
    /// The bucket's summed quantity.
    pub total: u64,
}

/// One feature's adoption.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Adoption {
    /// Installations whose latest report includes the feature flag.
    pub installations: u64,
    /// …of which have it enabled.
    pub enabled: u64,
}

/// One ISO week's activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeekActivity {
    /// Monday of the week (UTC).
    pub week_start: NaiveDate,
    /// Distinct installations that submitted in the week.
    pub active_installations: u64,
    /// Submissions received in the week.
    pub submissions: u64,
}

/// Job totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Jobs {
    /// All finished jobs reported.
    pub total: u64,
    /// Completed, over reports that carry outcomes.
    pub completed: u64,
    /// Failed or cancelled, over reports that carry outcomes.
    pub failed: u64,
    /// `completed / (completed + failed)`; `null` when no report carries outcomes.
    pub success_rate: Option<f64>,
}

/// One error type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBucket {
    /// Error type (vocabulary word or `other`).
    pub error_type: String,
    /// Errors reported.
    pub count: u64,
    /// Installations that reported it.
    pub installations: u64,
}

/// The `/stats/overview` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    /// Window length.
    pub weeks: u32,
    /// Window start (received at or after).
    pub since: DateTime<Utc>,
    /// The k used for folding.
    pub k_anonymity: u32,
    /// Installations with at least one report in the window.
    pub installations: u64,
    /// Reports in the window.
    pub submissions: u64,
    /// Activity per ISO week, oldest first.
    pub active_installations_per_week: Vec<WeekActivity>,
    /// Installations per Printernizer version.
    pub versions: BTreeMap<String, u64>,
    /// Installations per operating system.
    pub platforms: BTreeMap<String, u64>,
    /// Installations per deployment mode.
    pub deployment_modes: BTreeMap<String, u64>,
    /// Installations per country.
    pub countries: BTreeMap<String, u64>,
    /// Installations owning the type, and printers of the type.
    pub printer_types: BTreeMap<String, Bucket>,
    /// Installations per fleet size (`0`, `1`, `2`, `3-5`, `6-10`, `11+`).
    pub fleet_sizes: BTreeMap<String, u64>,
    /// Adoption per feature flag.
    pub feature_adoption: BTreeMap<String, Adoption>,
    /// Job totals and success rate.
    pub jobs: Jobs,
    /// The most frequent error types, most frequent first.
    pub top_error_types: Vec<ErrorBucket>,
}

/// The latest report's dimensions of one installation.
#[derive(Debug)]
struct Latest {
    app_version: String,
    platform: String,
    deployment_mode: String,
    country_code: String,
    printer_count: u64,
    printer_type_counts: BTreeMap<String, u64>,
    feature_usage: BTreeMap<String, bool>,
}

/// Folds a stream of [`ReportRow`]s (see the module docs).
#[derive(Debug)]
pub struct OverviewBuilder {
    latest: HashMap<Uuid, Latest>,
    weeks: BTreeMap<NaiveDate, (HashSet<Uuid>, u64)>,
    submissions: u64,
    jobs_total: u64,
    completed: u64,
    failed: u64,
    with_outcomes: bool,
    errors: HashMap<String, (u64, HashSet<Uuid>)>,
}

fn week_start(t: DateTime<Utc>) -> NaiveDate {
    let d = t.date_naive();
    d - Duration::days(i64::from(d.weekday().num_days_from_monday()))
}

fn fleet_bucket(n: u64) -> &'static str {
    match n {
        0 => "0",
        1 => "1",
        2 => "2",
        3..=5 => "3-5",
        6..=10 => "6-10",
        _ => "11+",
    }
}

impl Default for OverviewBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl OverviewBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self {
            latest: HashMap::new(),
            weeks: BTreeMap::new(),
            submissions: 0,
            jobs_total: 0,
            completed: 0,
            failed: 0,
            with_outcomes: false,
            errors: HashMap::new(),
        }
    }

    /// Adds one report; rows must come oldest first (the later one is an installation's latest).
    pub fn add(&mut self, row: ReportRow) {
        self.submissions += 1;
        let week = self.weeks.entry(week_start(row.received_at)).or_default();
        week.0.insert(row.installation_id);
        week.1 += 1;
        self.jobs_total = self.jobs_total.saturating_add(row.job_count);
        if let (Some(c), Some(f)) = (row.jobs_completed, row.jobs_failed) {
            self.completed = self.completed.saturating_add(c);
            self.failed = self.failed.saturating_add(f);
            self.with_outcomes = true;
        }
        for (typ, n) in &row.error_summary {
            if *n == 0 {
                continue;
            }
            let e = self.errors.entry(typ.clone()).or_default();
            e.0 = e.0.saturating_add(*n);
            e.1.insert(row.installation_id);
        }
        self.latest.insert(
            row.installation_id,
            Latest {
                app_version: row.app_version,
                platform: row.platform,
                deployment_mode: row.deployment_mode,
                country_code: row.country_code,
                printer_count: row.printer_count,
                printer_type_counts: row.printer_type_counts,
                feature_usage: row.feature_usage,
            },
        );
    }

    /// The overview of window `[since, …)` of `weeks` weeks, folded with `k`.
    pub fn finish(self, since: DateTime<Utc>, weeks: u32, k: u32) -> Overview {
        let k = u64::from(k.max(1));
        let count_by = |f: &dyn Fn(&Latest) -> &str| {
            let mut m: BTreeMap<String, Bucket> = BTreeMap::new();
            for l in self.latest.values() {
                m.entry(f(l).to_owned()).or_default().installations += 1;
            }
            installations_only(fold_small(m, k))
        };
        let versions = count_by(&|l| &l.app_version);
        let platforms = count_by(&|l| &l.platform);
        let deployment_modes = count_by(&|l| &l.deployment_mode);
        let countries = count_by(&|l| &l.country_code);
        let fleet_sizes = count_by(&|l| fleet_bucket(l.printer_count));

        let mut printer_types: BTreeMap<String, Bucket> = BTreeMap::new();
        let mut features: BTreeMap<String, Adoption> = BTreeMap::new();
        for l in self.latest.values() {
            for (typ, n) in &l.printer_type_counts {
                let b = printer_types.entry(typ.clone()).or_default();
                b.installations += 1;
                b.total = b.total.saturating_add(*n);
            }
            for (feature, on) in &l.feature_usage {
                let a = features.entry(feature.clone()).or_default();
                a.installations += 1;
                a.enabled += u64::from(*on);
            }
        }
        let printer_types = fold_small(printer_types, k);
        let feature_adoption = fold_small(
            features
                .into_iter()
                .map(|(f, a)| {
                    (
                        f,
                        Bucket {
                            installations: a.installations,
                            total: a.enabled,
                        },
                    )
                })
                .collect(),
            k,
        )
        .into_iter()
        .map(|(f, b)| {
            (
                f,
                Adoption {
                    installations: b.installations,
                    enabled: b.total,
                },
            )
        })
        .collect();

        let errors: BTreeMap<String, Bucket> = self
            .errors
            .into_iter()
            .map(|(typ, (count, who))| {
                (
                    typ,
                    Bucket {
                        installations: who.len() as u64,
                        total: count,
                    },
                )
            })
            .collect();
        let mut top_error_types: Vec<ErrorBucket> = fold_small(errors, k)
            .into_iter()
            .map(|(error_type, b)| ErrorBucket {
                error_type,
                count: b.total,
                installations: b.installations,
            })
            .collect();
        top_error_types.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.error_type.cmp(&b.error_type))
        });
        top_error_types.truncate(TOP_ERRORS);

        let decided = self.completed + self.failed;
        Overview {
            weeks,
            since,
            k_anonymity: k as u32,
            installations: self.latest.len() as u64,
            submissions: self.submissions,
            active_installations_per_week: self
                .weeks
                .into_iter()
                .map(|(week_start, (who, n))| WeekActivity {
                    week_start,
                    active_installations: who.len() as u64,
                    submissions: n,
                })
                .collect(),
            versions,
            platforms,
            deployment_modes,
            countries,
            printer_types,
            fleet_sizes,
            feature_adoption,
            jobs: Jobs {
                total: self.jobs_total,
                completed: self.completed,
                failed: self.failed,
                success_rate: (self.with_outcomes && decided > 0)
                    .then(|| self.completed as f64 / decided as f64),
            },
            top_error_types,
        }
    }
}

fn installations_only(m: BTreeMap<String, Bucket>) -> BTreeMap<String, u64> {
    m.into_iter().map(|(k, b)| (k, b.installations)).collect()
}

/// Folds every bucket with fewer than `k` installations into [`OTHER`]; then, while `other`
/// has fewer than `k` (but some), folds the smallest remaining bucket into it.
///
/// Installations of folded buckets are summed: an installation in two small buckets (a printer
/// type, an error type) counts twice in `other` — `other` answers "how many bucket
/// memberships", which is the conservative reading for the `k` check.
pub fn fold_small(map: BTreeMap<String, Bucket>, k: u64) -> BTreeMap<String, Bucket> {
    type Named = Vec<(String, Bucket)>;
    let (mut keep, small): (Named, Named) = map
        .into_iter()
        .partition(|(name, b)| b.installations >= k && name != OTHER);
    fn absorb(other: &mut Bucket, b: Bucket) {
        other.installations += b.installations;
        other.total = other.total.saturating_add(b.total);
    }
    let mut other = Bucket::default();
    for (_, b) in small {
        absorb(&mut other, b);
    }
    // Smallest last, so `pop` takes it.
    keep.sort_by(|a, b| {
        b.1.installations
            .cmp(&a.1.installations)
            .then_with(|| b.0.cmp(&a.0))
    });
    while other.installations > 0 && other.installations < k {
        match keep.pop() {
            Some((_, b)) => absorb(&mut other, b),
            None => break,
        }
    }
    let mut out: BTreeMap<String, Bucket> = keep.into_iter().collect();
    if other.installations > 0 {
        out.insert(OTHER.to_owned(), other);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(i: u64) -> Bucket {
        Bucket {
            installations: i,
            total: i * 10,
        }
    }

    #[test]
    fn small_buckets_fold_into_other_and_other_reaches_k() {
        let m: BTreeMap<String, Bucket> = [("a", 9), ("b", 6), ("c", 2), ("d", 1)]
            .into_iter()
            .map(|(n, i)| (n.to_owned(), b(i)))
            .collect();
        let out = fold_small(m.clone(), 5);
        // c+d = 3 < 5, so the smallest kept bucket (b) joins them.
        assert_eq!(out.len(), 2);
        assert_eq!(out["a"], b(9));
        assert_eq!(out[OTHER], b(9));
        let total: u64 = out.values().map(|b| b.total).sum();
        assert_eq!(total, m.values().map(|b| b.total).sum::<u64>());
        assert_eq!(fold_small(m, 1).len(), 4);
        assert!(fold_small(BTreeMap::new(), 5).is_empty());
    }

    #[test]
    fn weeks_start_on_monday() {
        let t = DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        assert_eq!(
            week_start(t),
            NaiveDate::from_ymd_opt(2026, 11, 23).expect("date")
        );
    }
}
