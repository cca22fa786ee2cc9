//! The writer thread: group commit of submissions, deletions and pruning, one statement each.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::checkpoint::{Checkpoints, checkpoint};
use crate::store::{RateLimit, SubmitOutcome, fmt_ts};
use crate::submission::Submission;
use crate::{Error, Result};

/// How long the writer keeps looking for work after a commit before it sleeps.
const LINGER: Duration = Duration::from_millis(1);
/// Most commands committed in one transaction.
const MAX_GROUP: usize = 256;

pub(super) enum Command {
    Submit {
        row: Box<Row>,
        reply: oneshot::Sender<Result<SubmitOutcome>>,
    },
    Delete {
        id: Uuid,
        reply: oneshot::Sender<Result<u64>>,
    },
    Prune {
        before: DateTime<Utc>,
        reply: oneshot::Sender<Result<u64>>,
    },
    Claim {
        kind: &'static str,
        period: String,
        at: DateTime<Utc>,
        reply: oneshot::Sender<Result<u64>>,
    },
}

/// A submission as the writer binds it: every value already in its column's form, made on the
/// request's own thread so that the writer only binds. It goes back with the reply and is
/// freed there too (a free on another thread than the allocating one contends for the
/// allocator's locks).
pub(super) struct Row {
    installation_id: String,
    idempotency_key: Option<String>,
    received_at: String,
    schema_version: String,
    submission_timestamp: String,
    first_seen: String,
    period_start: String,
    period_end: String,
    duration_days: i64,
    app_version: String,
    python_version: String,
    platform: String,
    deployment_mode: String,
    country_code: String,
    printer_count: i64,
    printer_type_counts: String,
    job_count: i64,
    jobs_completed: Option<i64>,
    jobs_failed: Option<i64>,
    file_count: i64,
    upload_count: i64,
    uptime_hours: i64,
    feature_usage: String,
    error_summary: String,
    /// Rate limit: submissions received after this count.
    window_start: String,
    limit: RateLimit,
    now: DateTime<Utc>,
}

impl Row {
    pub(super) fn new(s: Submission, now: DateTime<Utc>, limit: RateLimit) -> Result<Self> {
        Ok(Self {
            installation_id: s.installation_id.to_string(),
            idempotency_key: s.idempotency_key,
            received_at: fmt_ts(now),
            schema_version: s.schema_version,
            submission_timestamp: fmt_ts(s.submission_timestamp),
            first_seen: fmt_ts(s.first_seen),
            period_start: fmt_ts(s.period_start),
            period_end: fmt_ts(s.period_end),
            duration_days: s.duration_days,
            app_version: s.app_version,
            python_version: s.python_version,
            platform: s.platform,
            deployment_mode: s.deployment_mode,
            country_code: s.country_code,
            printer_count: s.printer_count as i64,
            printer_type_counts: serde_json::to_string(&s.printer_type_counts)?,
            job_count: s.job_count as i64,
            jobs_completed: s.jobs_completed.map(|n| n as i64),
            jobs_failed: s.jobs_failed.map(|n| n as i64),
            file_count: s.file_count as i64,
            upload_count: s.upload_count as i64,
            uptime_hours: s.uptime_hours as i64,
            feature_usage: serde_json::to_string(&s.feature_usage)?,
            error_summary: serde_json::to_string(&s.error_summary)?,
            window_start: fmt_ts(now - limit.window),
            limit,
            now,
        })
    }
}

pub(super) fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Command>,
    replier: Option<mpsc::UnboundedSender<Vec<Pending>>>,
    checkpoints: Checkpoints,
) {
    let mut last_busy = Instant::now();
    while let Some(first) = next_command(&mut rx, last_busy) {
        let answers = run_group(&mut conn, first, &mut rx);
        match &replier {
            Some(r) => {
                if let Err(unsent) = r.send(answers) {
                    unsent.0.into_iter().for_each(Pending::answer);
                }
            }
            None => answers.into_iter().for_each(Pending::answer),
        }
        if checkpoints.restart_due.swap(false, Ordering::Relaxed) {
            // No transaction is open, so nothing is added while this copies the frames left
            // (a reader still on an old snapshot can hold some back: then the next round).
            if let Err(e) = checkpoint(&conn) {
                tracing::warn!("aggregator: WAL checkpoint failed (retried later): {e}");
            }
        }
        // Full means a checkpoint is already due.
        let _ = checkpoints.kick.try_send(());
        last_busy = Instant::now();
    }
}

/// The next command: after a commit, the writer looks for one without sleeping for
/// [`LINGER`] (yielding the processor between looks), and only then sleeps until one arrives.
/// Under load the next request comes within that time and is taken without its sender having
/// to wake a sleeping thread, which was the largest single cost of the hand-off (a futex wake
/// and, on a virtual machine, an interrupt to an idle processor). An idle server sleeps.
fn next_command(rx: &mut mpsc::Receiver<Command>, last_busy: Instant) -> Option<Command> {
    loop {
        match rx.try_recv() {
            Ok(cmd) => return Some(cmd),
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
            Err(mpsc::error::TryRecvError::Empty) if last_busy.elapsed() < LINGER => {
                std::thread::yield_now();
            }
            Err(mpsc::error::TryRecvError::Empty) => return rx.blocking_recv(),
        }
    }
}

/// A reply waiting for the commit.
pub(super) enum Pending {
    Submit(
        oneshot::Sender<Result<SubmitOutcome>>,
        Result<SubmitOutcome>,
        Box<Row>,
    ),
    Count(oneshot::Sender<Result<u64>>, Result<u64>),
}

impl Pending {
    pub(super) fn answer(self) {
        // A caller that gave up (client disconnected) does not matter.
        match self {
            Pending::Submit(reply, out, row) => {
                drop(reply.send(out));
                drop(row);
            }
            Pending::Count(reply, out) => drop(reply.send(out)),
        }
    }
}

/// Runs `first` and whatever else is queued, also what arrives while these run, in one
/// transaction (at most [`MAX_GROUP`] commands); returns the answers, valid only now that it
/// committed (or all turned into errors when it did not). Taking in what arrives meanwhile
/// makes groups larger under load at no cost in latency: the commit, which writes the pages
/// every submission shares, is the expensive part.
fn run_group(
    conn: &mut Connection,
    first: Command,
    rx: &mut mpsc::Receiver<Command>,
) -> Vec<Pending> {
    let mut pending = Vec::new();
    let mut next = Some(first);
    let committed = (|| -> Result<()> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        while let Some(cmd) = next.take() {
            pending.push(execute(&tx, cmd));
            if pending.len() < MAX_GROUP {
                next = rx.try_recv().ok();
            }
        }
        tx.commit()?;
        Ok(())
    })();
    let failure = committed.err().map(|e| e.to_string());
    if let Some(msg) = &failure {
        tracing::error!(
            "aggregator: commit failed, {} request(s) answered with an error: {msg}",
            pending.len() + usize::from(next.is_some())
        );
        // A transaction that could not even begin leaves its first command unrun.
        pending.extend(next.map(|cmd| execute_failed(cmd, msg)));
    }
    fn settle<T>(out: Result<T>, failure: Option<&String>) -> Result<T> {
        match failure {
            Some(msg) => Err(Error::Write(msg.clone())),
            None => out,
        }
    }
    pending
        .into_iter()
        .map(|p| match p {
            Pending::Submit(reply, out, row) => {
                Pending::Submit(reply, settle(out, failure.as_ref()), row)
            }
            Pending::Count(reply, out) => Pending::Count(reply, settle(out, failure.as_ref())),
        })
        .collect()
}

/// Runs one command inside the group's transaction.
fn execute(tx: &Connection, cmd: Command) -> Pending {
    match cmd {
        Command::Submit { row, reply } => {
            let out = submit(tx, &row);
            Pending::Submit(reply, out, row)
        }
        Command::Delete { id, reply } => Pending::Count(reply, delete(tx, id)),
        Command::Prune { before, reply } => Pending::Count(reply, prune(tx, before)),
        Command::Claim {
            kind,
            period,
            at,
            reply,
        } => Pending::Count(reply, claim(tx, kind, &period, at)),
    }
}

/// The answer for a command that never ran.
fn execute_failed(cmd: Command, msg: &str) -> Pending {
    let err = Error::Write(msg.to_owned());
    match cmd {
        Command::Submit { reply, row } => Pending::Submit(reply, Err(err), row),
        Command::Delete { reply, .. }
        | Command::Prune { reply, .. }
        | Command::Claim { reply, .. } => Pending::Count(reply, Err(err)),
    }
}

fn find_duplicate(tx: &Connection, row: &Row) -> Result<Option<i64>> {
    if let Some(key) = &row.idempotency_key {
        let by_key = tx
            .prepare_cached("SELECT id FROM submissions WHERE idempotency_key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?;
        if by_key.is_some() {
            return Ok(by_key);
        }
    }
    Ok(tx
        .prepare_cached(
            "SELECT id FROM submissions
              WHERE installation_id = ?1 AND period_start = ?2 AND period_end = ?3",
        )?
        .query_row(
            params![row.installation_id, row.period_start, row.period_end],
            |r| r.get(0),
        )
        .optional()?)
}

fn submit(tx: &Connection, row: &Row) -> Result<SubmitOutcome> {
    // One statement on the common path: stored only while the installation has fewer than
    // `limit.max` submissions received within the window, and only if neither its idempotency
    // key nor its (installation, period) is stored already. Atomic: the group's transaction
    // holds the write lock from its start (`BEGIN IMMEDIATE`).
    let inserted = tx
        .prepare_cached(
            "INSERT INTO submissions (
            installation_id, idempotency_key, received_at, schema_version, submission_timestamp,
            first_seen, period_start, period_end, duration_days, app_version, python_version,
            platform, deployment_mode, country_code, printer_count, printer_type_counts,
            job_count, jobs_completed, jobs_failed, file_count, upload_count, uptime_hours,
            feature_usage, error_summary)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
                ?19, ?20, ?21, ?22, ?23, ?24
          WHERE (SELECT count(*) FROM submissions
                  WHERE installation_id = ?1 AND received_at > ?25) < ?26
         ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            row.installation_id,
            row.idempotency_key,
            row.received_at,
            row.schema_version,
            row.submission_timestamp,
            row.first_seen,
            row.period_start,
            row.period_end,
            row.duration_days,
            row.app_version,
            row.python_version,
            row.platform,
            row.deployment_mode,
            row.country_code,
            row.printer_count,
            row.printer_type_counts,
            row.job_count,
            row.jobs_completed,
            row.jobs_failed,
            row.file_count,
            row.upload_count,
            row.uptime_hours,
            row.feature_usage,
            row.error_summary,
            row.window_start,
            row.limit.max,
        ])?;
    if inserted == 1 {
        return Ok(SubmitOutcome::Created(tx.last_insert_rowid()));
    }
    // Not stored: a repeat (answered with the original id, whatever the limit says) or over
    // the limit.
    if let Some(id) = find_duplicate(tx, row)? {
        return Ok(SubmitOutcome::Duplicate(id));
    }
    // Over the limit: the window ends an hour after the oldest submission in it.
    let oldest: Option<String> = tx
        .prepare_cached(
            "SELECT min(received_at) FROM submissions
              WHERE installation_id = ?1 AND received_at > ?2",
        )?
        .query_row(params![row.installation_id, row.window_start], |r| r.get(0))?;
    let oldest = oldest
        .as_deref()
        .and_then(printernizer_stats_shared::time::parse_ts)
        .unwrap_or(row.now);
    Ok(SubmitOutcome::RateLimited {
        retry_after_s: row.limit.retry_after(oldest, row.now),
    })
}

fn delete(tx: &Connection, id: Uuid) -> Result<u64> {
    let id = id.to_string();
    let n = tx.execute("DELETE FROM submissions WHERE installation_id = ?1", [&id])?;
    Ok(n as u64)
}

fn prune(tx: &Connection, before: DateTime<Utc>) -> Result<u64> {
    let n = tx.execute(
        "DELETE FROM submissions WHERE received_at < ?1",
        [fmt_ts(before)],
    )?;
    Ok(n as u64)
}

/// 1 when this is the first claim of `(kind, period)`, else 0.
fn claim(tx: &Connection, kind: &str, period: &str, at: DateTime<Utc>) -> Result<u64> {
    let n = tx.execute(
        "INSERT INTO report_mailings (kind, period, sent_at) VALUES (?1, ?2, ?3)
         ON CONFLICT DO NOTHING",
        rusqlite::params![kind, period, fmt_ts(at)],
    )?;
    Ok(n as u64)
}
