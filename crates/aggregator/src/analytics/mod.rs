//! Upstream's analytics (`/stats/*`), answered k-anonymously from [`Tally`] reads.
//!
//! The database counts ([`crate::store::Tally`]); this module folds, replays and shapes the few
//! resulting rows, so memory grows with the size of an answer, never with the number of
//! installations. One [`Ask`] per request: the store, "now" and `k`.
//!
//! | file | routes |
//! |---|---|
//! | [`anonymity`] | the one k-anonymity rule |
//! | `distributions` | `deployment-modes`, `versions`, `geography`, `printers`, platforms |
//! | `activity` | `installations` (trend per day), activity and jobs per week |
//! | `usage` | `features`, `errors` |
//! | `trends` | `version-migration`, `feature-trends` (replayed from span deltas) |
//! | `anomalies` | `anomalies` |
//! | `overview` | `overview`, `export` (everything above in one answer) |
//!
//! Shapes follow upstream's (docs/upstream-aggregator.md §2); where upstream is weak, ours
//! differs, and docs/aggregator.md lists each difference. Every answer says which
//! `k_anonymity` it applied.

pub mod anonymity;

mod activity;
mod anomalies;
mod distributions;
mod overview;
mod trends;
mod usage;

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::Result;
use crate::store::{SubmissionStore, Tally, TallyRow};

/// Longest `?days=` of the per-day routes (installations, version-migration, feature-trends).
pub const MAX_TREND_DAYS: u32 = 366;
/// Default `?days=` of the per-day routes (upstream's).
pub const DEFAULT_TREND_DAYS: u32 = 30;

/// The analytics over one store, at one "now", with one `k`.
#[derive(Debug)]
pub struct Ask<'a, S> {
    store: &'a S,
    now: DateTime<Utc>,
    k: u32,
}

impl<'a, S: SubmissionStore> Ask<'a, S> {
    /// Analytics over `store` as of `now`, folding buckets under `k`.
    pub fn new(store: &'a S, now: DateTime<Utc>, k: u32) -> Self {
        Self {
            store,
            now,
            k: k.max(1),
        }
    }

    async fn tally(&self, q: Tally) -> Result<Vec<TallyRow>> {
        self.store.tally(q).await
    }

    /// The single row of a totals query (zeros when the database returned none).
    async fn one(&self, q: Tally) -> Result<TallyRow> {
        Ok(self.tally(q).await?.into_iter().next().unwrap_or_default())
    }

    /// Today (UTC).
    fn today(&self) -> NaiveDate {
        self.now.date_naive()
    }

    /// A moment after every report received so far: the open end of "until now" windows.
    fn after_now(&self) -> DateTime<Utc> {
        self.now + Duration::days(1)
    }
}

/// Midnight (UTC) at the start of `day`.
fn start_of(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// The `n` days ending with `last`, oldest first.
fn days_ending(last: NaiveDate, n: u32) -> Vec<NaiveDate> {
    (0..i64::from(n))
        .rev()
        .map(|i| last - Duration::days(i))
        .collect()
}

/// A `YYYY-MM-DD` key from the database.
fn parse_day(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// The beginning of time for "everything stored" windows.
fn everything() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}
