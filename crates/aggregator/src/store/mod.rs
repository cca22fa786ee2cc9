//! Where the aggregation server keeps submissions: [`SubmissionStore`], with a SQLite
//! ([`SqliteStore`]) and a PostgreSQL ([`PgStore`]) implementation that share one schema and
//! one set of rules.
//!
//! ## Schema (both backends, versioned migrations)
//! * `submissions` — one row per accepted report: the installation facts, the period, the counts
//!   as columns, and the three maps (`printer_type_counts`, `feature_usage`, `error_summary`) as
//!   JSON exactly as validated. Unique `(installation_id, period_start, period_end)` and unique
//!   `idempotency_key`. No address, no header, no raw body is ever stored.
//! * `report_mailings` — which scheduled e-mail report went out for which period.
//! * `rate_limits` (PostgreSQL) — per installation: `window_start` and `count` of accepted
//!   submissions in the hour since `window_start`. SQLite counts the submissions themselves.
//!
//! ## The rules of one submission
//! [`SubmissionStore::submit`] applies, atomically:
//! 1. **Duplicate?** A row with the same `Idempotency-Key`, or the same installation and period
//!    → [`SubmitOutcome::Duplicate`] with the original id; nothing written, no rate limit used.
//! 2. **Rate limit** — on PostgreSQL a single conditional upsert on `rate_limits` (SQLite, with
//!    its single writer, makes the insert itself conditional on the count; see `sqlite/writer.rs`):
//!    ```sql
//!    INSERT … VALUES (id, now, 1) ON CONFLICT (installation_id) DO UPDATE
//!      SET window_start = CASE WHEN expired THEN now ELSE window_start END,
//!          count        = CASE WHEN expired THEN 1   ELSE count + 1 END
//!      WHERE expired OR count < limit
//!    RETURNING count
//!    ```
//!    No row back means the limit is reached ([`SubmitOutcome::RateLimited`]). PostgreSQL
//!    locks the conflicting row, so concurrent requests — also from other server processes —
//!    queue on it and each sees the committed count: the check and the increment cannot
//!    interleave. (SQLite has one writer anyway.)
//! 3. **Insert.** A unique violation here means a concurrent duplicate won the race: its
//!    rate-limit increment is undone in the same transaction and the winner's id returned.
//!
//! Both backends commit in groups: SQLite's writer thread puts whatever is queued into one
//! transaction, PostgreSQL's committer puts it into one statement over arrays
//! (`postgres/batch.rs`) — one durable commit for many submissions, the rules per submission.

mod postgres;
mod sqlite;
mod tally;

use std::future::Future;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Result;
use crate::submission::Submission;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub(crate) use tally::Dialect;
pub use tally::{Period, SpanKey, Tally, TallyRow};

/// What happened to a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// Stored under this id.
    Created(i64),
    /// Seen before (same key or same installation and period): the original id.
    Duplicate(i64),
    /// The installation's hourly limit is used up; try again in this many seconds.
    RateLimited {
        /// Seconds until the window ends (≥ 1).
        retry_after_s: u64,
    },
}

/// `GET /stats/summary` (as upstream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Rows in `submissions`.
    pub total_submissions: u64,
    /// Distinct installation ids.
    pub unique_installations: u64,
    /// When the newest submission was received.
    pub latest_submission_at: Option<DateTime<Utc>>,
}

/// The rate limit applied by [`SubmissionStore::submit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Accepted submissions per installation per window.
    pub max: u32,
    /// Window length.
    pub window: chrono::Duration,
}

impl RateLimit {
    /// `max` per hour.
    pub fn per_hour(max: u32) -> Self {
        Self {
            max,
            window: chrono::Duration::hours(1),
        }
    }

    /// Seconds until the window that started at `start` ends (at least 1).
    pub fn retry_after(self, start: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
        (start + self.window - now).num_seconds().max(1) as u64
    }
}

/// A column the distributions group by, over each installation's latest report ([`Tally::Latest`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// `deployment_mode`.
    DeploymentMode,
    /// `app_version` (Printernizer's).
    AppVersion,
    /// `country_code`.
    CountryCode,
    /// `platform` (the operating system).
    Platform,
}

impl Dimension {
    pub(crate) fn column(self) -> &'static str {
        match self {
            Dimension::DeploymentMode => "deployment_mode",
            Dimension::AppVersion => "app_version",
            Dimension::CountryCode => "country_code",
            Dimension::Platform => "platform",
        }
    }
}

/// Storage of the aggregation server. Every method is atomic.
pub trait SubmissionStore: Send + Sync + 'static {
    /// Stores `s` unless it is a duplicate or over the rate limit (see the module docs).
    fn submit(
        &self,
        s: Submission,
        now: DateTime<Utc>,
        limit: RateLimit,
    ) -> impl Future<Output = Result<SubmitOutcome>> + Send;

    /// Deletes every submission and the rate-limit row of `id`; returns submissions deleted.
    fn delete_installation(&self, id: Uuid) -> impl Future<Output = Result<u64>> + Send;

    /// Deletes submissions received before `before` and expired rate-limit rows; returns
    /// submissions deleted.
    fn prune(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Claims the scheduled mailing `kind` of `period` (e.g. `weekly`, `2026-W49`): `true` for
    /// the first claim only — across restarts and across servers sharing the database.
    fn claim_mailing(
        &self,
        kind: &'static str,
        period: String,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Totals for `/stats/summary`.
    fn summary(&self) -> impl Future<Output = Result<Summary>> + Send;

    /// The rows of one analytics read ([`Tally`]), counted by the database.
    fn tally(&self, query: Tally) -> impl Future<Output = Result<Vec<TallyRow>>> + Send;

    /// Whether the database answers.
    fn health(&self) -> impl Future<Output = Result<()>> + Send;
}

/// A parsed `aggregator.database_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://relative/path.db` or `sqlite:///absolute/path.db`.
    Sqlite(PathBuf),
    /// `postgres://…` or `postgresql://…` (passed to tokio-postgres as is).
    Postgres(String),
}

impl DatabaseUrl {
    /// Parses the URL; the error says which forms are accepted.
    pub fn parse(url: &str) -> std::result::Result<Self, String> {
        let url = url.trim();
        if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() || path == "/" {
                return Err("`sqlite://` needs a file path".into());
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            url.parse::<tokio_postgres::Config>()
                .map_err(|e| format!("invalid PostgreSQL URL: {e}"))?;
            return Ok(Self::Postgres(url.to_owned()));
        }
        Err(format!(
            "`{}` is not sqlite://relative/path.db, sqlite:///absolute/path.db or postgres://…",
            url.chars().take(40).collect::<String>()
        ))
    }
}

/// Timestamps in SQLite: fixed-width RFC 3339 with microseconds, so text order is time order.
fn fmt_ts(t: DateTime<Utc>) -> String {
    printernizer_stats_shared::time::fmt_ts(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            DatabaseUrl::parse("sqlite://agg.db"),
            Ok(DatabaseUrl::Sqlite("agg.db".into()))
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///var/lib/agg.db"),
            Ok(DatabaseUrl::Sqlite("/var/lib/agg.db".into()))
        );
        assert!(matches!(
            DatabaseUrl::parse("postgres://u@127.0.0.1:5432/agg"),
            Ok(DatabaseUrl::Postgres(_))
        ));
        assert!(DatabaseUrl::parse("mysql://x").is_err());
        assert!(DatabaseUrl::parse("sqlite://").is_err());
    }
}
