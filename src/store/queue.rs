//! The submission queue: the owner of `usage_submissions` (a report waiting for delivery,
//! deletion requests) and `usage_submission_log` (the last delivery attempts).
//!
//! Every function takes the connection or transaction it runs in, so a caller composes them
//! with other tables' changes in one transaction (the writer thread's `Store::write`). The
//! decisions — when to send, what backoff, what counts as refused — are `crate::submission`'s;
//! here is only what is stored and how.
//!
//! * At most one report is queued (`kind = 'report'`): built once, persisted with its
//!   `Idempotency-Key` before the first attempt, sent byte for byte until the server has it.
//! * [`accept`] is the one transaction that closes a period: the report leaves the queue, the
//!   events before its end stop being pending, `submission_count`, `last_submission_date` and
//!   the next period's start move.
//! * Deletion requests (`kind = 'deletion'`) are queued by an opt-out in the same transaction
//!   that rotates the installation id, and removed when the server confirmed them.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use super::rollup::{self, counters};
use super::{fmt_ts, parse_ts, settings};
use crate::Result;

/// Delivery attempts kept in `usage_submission_log`.
pub const LOG_KEEP: i64 = 100;

/// A report in the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedReport {
    /// Row id.
    pub id: i64,
    /// The `Idempotency-Key` every attempt sends.
    pub key: String,
    /// Where it goes.
    pub url: String,
    /// The JSON body, exactly as built.
    pub body: String,
    /// Period start.
    pub start: DateTime<Utc>,
    /// Period end.
    pub end: DateTime<Utc>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not before this time (unless the user presses "submit now").
    pub next_attempt_at: DateTime<Utc>,
    /// Refused by the server under this configuration fingerprint.
    pub blocked_fingerprint: Option<String>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// A deletion request in the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedDeletion {
    /// Row id.
    pub id: i64,
    /// `DELETE` this URL.
    pub url: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not before this time (unless forced).
    pub next_attempt_at: DateTime<Utc>,
}

/// One delivery attempt, for the history.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt<'a> {
    /// When.
    pub at: DateTime<Utc>,
    /// The report's period.
    pub period: (DateTime<Utc>, DateTime<Utc>),
    /// The server's status, if it answered.
    pub http_status: Option<u16>,
    /// `accepted`, `retry` or `refused`.
    pub outcome: &'static str,
    /// Why, in a few words (cut to 200 characters).
    pub detail: Option<&'a str>,
}

fn ts(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<DateTime<Utc>> {
    Ok(parse_ts(&r.get::<_, String>(i)?).unwrap_or_default())
}

/// The queued report, if any.
pub fn pending_report(conn: &Connection) -> Result<Option<QueuedReport>> {
    Ok(conn
        .query_row(
            "SELECT id, idempotency_key, url, body, period_start, period_end, attempts,
                    next_attempt_at, blocked_fingerprint, last_error
             FROM usage_submissions WHERE kind = 'report' ORDER BY id LIMIT 1",
            [],
            |r| {
                Ok(QueuedReport {
                    id: r.get(0)?,
                    key: r.get(1)?,
                    url: r.get(2)?,
                    body: r.get(3)?,
                    start: ts(r, 4)?,
                    end: ts(r, 5)?,
                    attempts: r.get(6)?,
                    next_attempt_at: ts(r, 7)?,
                    blocked_fingerprint: r.get(8)?,
                    last_error: r.get(9)?,
                })
            },
        )
        .optional()?)
}

/// Queues a built report for `[start, end)` under a new `Idempotency-Key`, due at once.
pub fn enqueue_report(
    tx: &Connection,
    url: &str,
    body: &str,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    now: DateTime<Utc>,
) -> Result<QueuedReport> {
    let key = Uuid::new_v4().to_string();
    tx.execute(
        "INSERT INTO usage_submissions
            (kind, idempotency_key, url, body, period_start, period_end, next_attempt_at, created_at)
         VALUES ('report', ?1, ?2, ?3, ?4, ?5, ?6, ?6)",
        params![key, url, body, fmt_ts(start), fmt_ts(end), fmt_ts(now)],
    )?;
    Ok(QueuedReport {
        id: tx.last_insert_rowid(),
        key,
        url: url.to_owned(),
        body: body.to_owned(),
        start,
        end,
        attempts: 0,
        next_attempt_at: end,
        blocked_fingerprint: None,
        last_error: None,
    })
}

/// The end of the newest period frozen into a queued report, if any.
pub fn queued_period_end(conn: &Connection) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT max(period_end) FROM usage_submissions WHERE kind = 'report'")?
        .query_row([], |r| r.get(0))?)
}

/// A press of "submit now": the same report at once, the backoff afresh.
pub fn reset_attempts(tx: &Connection, id: i64) -> Result<()> {
    tx.execute(
        "UPDATE usage_submissions SET attempts = 0 WHERE id = ?1",
        [id],
    )?;
    Ok(())
}

/// A failed attempt of a report or deletion: tried again at `next`; `blocked` with the
/// configuration fingerprint when the server refused it.
pub fn record_failure(
    tx: &Connection,
    id: i64,
    next: DateTime<Utc>,
    reason: &str,
    blocked: Option<&str>,
) -> Result<()> {
    tx.execute(
        "UPDATE usage_submissions SET attempts = attempts + 1, next_attempt_at = ?2,
            last_error = ?3, blocked_fingerprint = ?4 WHERE id = ?1",
        params![id, fmt_ts(next), reason, blocked],
    )?;
    Ok(())
}

/// The server accepted the report `id` for the period ending at `end`: in one transaction it
/// leaves the queue; every event before `end` stops being pending (it is in this report, or
/// older than the first one and never to be reported); `submission_count`,
/// `last_submission_date` and the next period's start move.
pub fn accept(tx: &Connection, id: i64, end: DateTime<Utc>, now: DateTime<Utc>) -> Result<()> {
    let end = fmt_ts(end);
    let marked = tx.execute(
        "UPDATE usage_events SET submitted = 1 WHERE submitted = 0 AND timestamp < ?1",
        params![end],
    )?;
    rollup::add_counter(tx, counters::EVENTS_PENDING, -(marked as i64))?;
    let count: u64 = settings::get(tx, settings::SUBMISSION_COUNT)?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    settings::set(
        tx,
        settings::SUBMISSION_COUNT,
        &(count + 1).to_string(),
        now,
    )?;
    settings::set(tx, settings::LAST_SUBMISSION_DATE, &fmt_ts(now), now)?;
    settings::set(tx, settings::LAST_REPORT_END, &end, now)?;
    remove(tx, id)
}

/// Drops the queued report (opt-out, delete-all): it will never be sent.
pub fn drop_reports(tx: &Connection) -> Result<()> {
    tx.execute("DELETE FROM usage_submissions WHERE kind = 'report'", [])?;
    Ok(())
}

/// Queues one deletion request for `url`, due at once.
pub fn enqueue_deletion(tx: &Connection, url: &str, now: DateTime<Utc>) -> Result<()> {
    tx.execute(
        "INSERT INTO usage_submissions (kind, idempotency_key, url, next_attempt_at, created_at)
         VALUES ('deletion', ?1, ?2, ?3, ?3)",
        params![Uuid::new_v4().to_string(), url, fmt_ts(now)],
    )?;
    Ok(())
}

/// Every queued deletion request, oldest first.
pub fn deletions(conn: &Connection) -> Result<Vec<QueuedDeletion>> {
    let mut stmt = conn.prepare(
        "SELECT id, url, attempts, next_attempt_at FROM usage_submissions
         WHERE kind = 'deletion' ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(QueuedDeletion {
            id: r.get(0)?,
            url: r.get(1)?,
            attempts: r.get(2)?,
            next_attempt_at: ts(r, 3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Removes an entry the server has (a report accepted, a deletion confirmed).
pub fn remove(tx: &Connection, id: i64) -> Result<()> {
    tx.execute("DELETE FROM usage_submissions WHERE id = ?1", [id])?;
    Ok(())
}

/// Records one delivery attempt; only the newest [`LOG_KEEP`] are kept.
pub fn log_attempt(tx: &Connection, attempt: &Attempt<'_>) -> Result<()> {
    let detail = attempt
        .detail
        .map(|d| d.chars().take(200).collect::<String>());
    tx.execute(
        "INSERT INTO usage_submission_log
            (attempted_at, period_start, period_end, http_status, outcome, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            fmt_ts(attempt.at),
            fmt_ts(attempt.period.0),
            fmt_ts(attempt.period.1),
            attempt.http_status,
            attempt.outcome,
            detail
        ],
    )?;
    tx.execute(
        "DELETE FROM usage_submission_log WHERE id <= (SELECT max(id) FROM usage_submission_log) - ?1",
        [LOG_KEEP],
    )?;
    Ok(())
}

/// Forgets the attempt history (delete-all).
pub fn clear_log(tx: &Connection) -> Result<()> {
    tx.execute("DELETE FROM usage_submission_log", [])?;
    Ok(())
}
