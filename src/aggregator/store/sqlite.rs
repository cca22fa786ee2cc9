//! The SQLite backend: one writer thread owns the write connection (WAL, `synchronous=NORMAL`);
//! reads run on `spawn_blocking` with pooled read-only connections, so the async runtime never
//! waits on SQLite.
//!
//! The writer takes every command that is queued when it wakes, and what arrives while these
//! run, and runs them in **one** transaction (group commit): under load, one commit serves
//! many requests. Every command writes with a single statement (a new submission is one
//! conditional `INSERT … SELECT … WHERE … ON CONFLICT DO NOTHING`, see [`submit`]), and SQLite
//! undoes a failed statement by itself, so each request still succeeds or fails on its own.
//! A reply is sent only after the commit.
//!
//! The rate limit is counted from the submissions themselves (the writer thread serializes the
//! count and the insert); PostgreSQL, where several servers write, keeps a `rate_limits` row
//! per installation instead (see [`super::PgStore`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{RateLimit, ReportRow, SubmissionStore, SubmitOutcome, Summary, fmt_ts};
use crate::aggregator::overview::OverviewBuilder;
use crate::aggregator::submission::Submission;
use crate::{Error, Result};

/// How long the writer keeps looking for work after a commit before it sleeps.
const LINGER: Duration = Duration::from_millis(1);
/// Most commands committed in one transaction.
const MAX_GROUP: usize = 256;
/// Shortest time between two WAL checkpoints.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// WAL length (frames of one page each) from which it is started over. A WAL that is written
/// without a pause never starts over by itself: a checkpoint running beside the writer never
/// catches up with it, and the file grows by every frame written (~200 MB/s under the
/// benchmark's load, each new page of it costing the kernel more than rewriting a cached one).
const RESTART_FRAMES: i64 = 4096;
/// How often the checkpoint thread, between two checkpoints, looks whether the WAL got long.
const WAL_LOOK_EVERY: Duration = Duration::from_millis(10);
/// Longest wait of the checkpoint thread for the writer to start the WAL over.
const HAND_OVER_WAIT: Duration = Duration::from_millis(100);
/// Frames copied by a checkpoint pass small enough that the writer can copy what came after
/// it in a moment.
const CATCH_UP_FRAMES: i64 = 512;
/// Checkpoint passes in a row before the rest is left to the writer whatever its length.
const CATCH_UP_PASSES: usize = 4;
/// Idle read connections kept.
const READERS: usize = 4;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE submissions (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    installation_id      TEXT    NOT NULL,
    idempotency_key      TEXT    UNIQUE,
    received_at          TEXT    NOT NULL,
    schema_version       TEXT    NOT NULL,
    submission_timestamp TEXT    NOT NULL,
    first_seen           TEXT    NOT NULL,
    period_start         TEXT    NOT NULL,
    period_end           TEXT    NOT NULL,
    duration_days        INTEGER NOT NULL,
    app_version          TEXT    NOT NULL,
    python_version       TEXT    NOT NULL,
    platform             TEXT    NOT NULL,
    deployment_mode      TEXT    NOT NULL,
    country_code         TEXT    NOT NULL,
    printer_count        INTEGER NOT NULL,
    printer_type_counts  TEXT    NOT NULL,
    job_count            INTEGER NOT NULL,
    jobs_completed       INTEGER,
    jobs_failed          INTEGER,
    file_count           INTEGER NOT NULL,
    upload_count         INTEGER NOT NULL,
    uptime_hours         INTEGER NOT NULL,
    feature_usage        TEXT    NOT NULL,
    error_summary        TEXT    NOT NULL,
    UNIQUE (installation_id, period_start, period_end)
);
CREATE INDEX submissions_received_at ON submissions (received_at);
"#,
    // 2: fewer pages written per commit. No AUTOINCREMENT (its counter row in `sqlite_sequence` was
    // rewritten by every commit); ids still only grow, except that the ids of the newest rows can
    // come back after `DELETE /installation` removed them. The idempotency key is indexed only
    // where a client sent one.
    r#"
CREATE TABLE submissions_v2 (
    id                   INTEGER PRIMARY KEY,
    installation_id      TEXT    NOT NULL,
    idempotency_key      TEXT,
    received_at          TEXT    NOT NULL,
    schema_version       TEXT    NOT NULL,
    submission_timestamp TEXT    NOT NULL,
    first_seen           TEXT    NOT NULL,
    period_start         TEXT    NOT NULL,
    period_end           TEXT    NOT NULL,
    duration_days        INTEGER NOT NULL,
    app_version          TEXT    NOT NULL,
    python_version       TEXT    NOT NULL,
    platform             TEXT    NOT NULL,
    deployment_mode      TEXT    NOT NULL,
    country_code         TEXT    NOT NULL,
    printer_count        INTEGER NOT NULL,
    printer_type_counts  TEXT    NOT NULL,
    job_count            INTEGER NOT NULL,
    jobs_completed       INTEGER,
    jobs_failed          INTEGER,
    file_count           INTEGER NOT NULL,
    upload_count         INTEGER NOT NULL,
    uptime_hours         INTEGER NOT NULL,
    feature_usage        TEXT    NOT NULL,
    error_summary        TEXT    NOT NULL,
    UNIQUE (installation_id, period_start, period_end)
);
INSERT INTO submissions_v2 SELECT * FROM submissions;
DROP TABLE submissions;
ALTER TABLE submissions_v2 RENAME TO submissions;
CREATE UNIQUE INDEX submissions_idempotency_key ON submissions (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX submissions_received_at ON submissions (received_at);
"#,
];

enum Command {
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
}

/// A submission as the writer binds it: every value already in its column's form, made on the
/// request's own thread so that the writer only binds. It goes back with the reply and is
/// freed there too (a free on another thread than the allocating one contends for the
/// allocator's locks).
struct Row {
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
    fn new(s: Submission, now: DateTime<Utc>, limit: RateLimit) -> Result<Self> {
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

/// SQLite-backed [`SubmissionStore`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    tx: mpsc::Sender<Command>,
    readers: Mutex<Vec<Connection>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The channel closes with `tx`; the writer drains it and ends.
        if let Some(handle) = self.writer.get_mut().ok().and_then(Option::take) {
            let (closed_tx, _) = mpsc::channel(1);
            drop(std::mem::replace(&mut self.tx, closed_tx));
            let _ = handle.join();
        }
    }
}

fn open_conn(path: &Path, read_only: bool) -> Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    if !read_only {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Checkpoints (the only fsyncs) run on their own thread, not in the writer's path.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // Inserts touch random leaves of the UUID indexes; keep them cached.
        conn.pragma_update(None, "cache_size", -16 * 1024)?;
    }
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(Error::Schema(format!(
            "the aggregator database has schema version {version}, newer than this program's \
             {known}: use a newer printernizer-stats"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating file and directory when missing) and migrates the database, and starts
    /// the writer thread.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut conn = open_conn(path, false)?;
        migrate(&mut conn)?;
        let (tx, rx) = mpsc::channel(4096);
        // Replies go back in one batch per commit to a task on the runtime, which answers
        // each request there: a group of N requests costs one cross-thread wake-up, not N
        // (each wake-up can preempt the writer on a busy machine).
        let replier = tokio::runtime::Handle::try_current().ok().map(|rt| {
            let (done, mut batches) = mpsc::unbounded_channel::<Vec<Pending>>();
            rt.spawn(async move {
                while let Some(batch) = batches.recv().await {
                    batch.into_iter().for_each(Pending::answer);
                }
            });
            done
        });
        let (kick, kicked) = std::sync::mpsc::sync_channel(1);
        let restart_due = Arc::new(AtomicBool::new(false));
        // After every commit SQLite tells the writer's connection how long the WAL is.
        let wal_frames = Arc::new(AtomicI64::new(0));
        let frames = wal_frames.clone();
        conn.wal_hook(Some(
            move |_: &mut rusqlite::hooks::Wal, n: std::ffi::c_int| {
                frames.store(i64::from(n), Ordering::Relaxed);
                Ok(())
            },
        ))?;
        let ckpt_conn = open_conn(path, false)?;
        let due = restart_due.clone();
        std::thread::Builder::new()
            .name("aggregator-checkpoint".into())
            .spawn(move || checkpoint_loop(ckpt_conn, kicked, &due, &wal_frames))?;
        let checkpoints = Checkpoints { kick, restart_due };
        let writer = std::thread::Builder::new()
            .name("aggregator-writer".into())
            .spawn(move || writer_loop(conn, rx, replier, checkpoints))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                tx,
                readers: Mutex::new(Vec::new()),
                writer: Mutex::new(Some(writer)),
            }),
        })
    }

    async fn command<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> Command,
    ) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .tx
            .send(make(reply))
            .await
            .map_err(|_| Error::WriterGone)?;
        rx.await.map_err(|_| Error::WriterGone)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner
                .readers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop();
            let conn = match pooled {
                Some(c) => c,
                None => open_conn(&inner.path, true)?,
            };
            let out = f(&conn);
            let mut pool = inner.readers.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < READERS {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))?
    }
}

/// The writer's side of the checkpoint thread.
struct Checkpoints {
    /// Wakes the checkpoint thread after a commit.
    kick: std::sync::mpsc::SyncSender<()>,
    /// Set by the checkpoint thread when the WAL is long and nearly all copied: the writer
    /// copies the rest between two transactions, so that its next one starts the WAL over.
    restart_due: Arc<AtomicBool>,
}

fn writer_loop(
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

/// Checkpoint passes for one kick: one while the WAL is short; while it is long, passes in a
/// row until one had little to do, and then the hand-over to the writer. Returns whether it
/// handed over.
fn catch_up(conn: &Connection, restart_due: &AtomicBool) -> bool {
    let mut copied_to = None;
    for pass in 1..=CATCH_UP_PASSES {
        match checkpoint(conn) {
            Ok(frames) if frames < RESTART_FRAMES => return false,
            Ok(frames) => {
                let small = copied_to.is_some_and(|before| frames - before <= CATCH_UP_FRAMES);
                if small || pass == CATCH_UP_PASSES {
                    restart_due.store(true, Ordering::Relaxed);
                    return true;
                }
                copied_to = Some(frames);
            }
            Err(e) => {
                tracing::warn!(
                    "aggregator: WAL checkpoint failed (retried after the next write): {e}"
                );
                return false;
            }
        }
    }
    false
}

/// One `PASSIVE` checkpoint; returns the number of frames in the WAL when it started, all of
/// which it copied unless a reader held some back.
fn checkpoint(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))?)
}

/// Copies committed WAL pages into the database file after commits, at most every
/// [`CHECKPOINT_EVERY`] or as soon as the WAL is longer than [`RESTART_FRAMES`] (`wal_frames`,
/// from the writer's WAL hook), without blocking the writer (`PASSIVE`). A long WAL it copies
/// again at once until a pass had little to do, and then asks the writer to copy the little
/// that came after ([`Checkpoints::restart_due`]): the writer's next transaction starts the
/// WAL over. Sleeps while nothing is written; ends with the writer.
fn checkpoint_loop(
    conn: Connection,
    kicked: std::sync::mpsc::Receiver<()>,
    restart_due: &AtomicBool,
    wal_frames: &AtomicI64,
) {
    while kicked.recv().is_ok() {
        let handed_over = catch_up(&conn, restart_due);
        if handed_over {
            // Stay out of the writer's way until it has copied the rest and started the WAL
            // over (a checkpoint of ours running meanwhile would make its own fail).
            let until = Instant::now() + HAND_OVER_WAIT;
            while Instant::now() < until
                && (restart_due.load(Ordering::Relaxed)
                    || wal_frames.load(Ordering::Relaxed) >= RESTART_FRAMES)
            {
                std::thread::sleep(Duration::from_millis(1));
            }
        } else {
            let until = Instant::now() + CHECKPOINT_EVERY;
            while Instant::now() < until && wal_frames.load(Ordering::Relaxed) < RESTART_FRAMES {
                std::thread::sleep(WAL_LOOK_EVERY);
            }
        }
    }
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

/// A reply waiting for the commit.
enum Pending {
    Submit(
        oneshot::Sender<Result<SubmitOutcome>>,
        Result<SubmitOutcome>,
        Box<Row>,
    ),
    Count(oneshot::Sender<Result<u64>>, Result<u64>),
}

impl Pending {
    fn answer(self) {
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
    }
}

/// The answer for a command that never ran.
fn execute_failed(cmd: Command, msg: &str) -> Pending {
    let err = Error::Write(msg.to_owned());
    match cmd {
        Command::Submit { reply, row } => Pending::Submit(reply, Err(err), row),
        Command::Delete { reply, .. } | Command::Prune { reply, .. } => {
            Pending::Count(reply, Err(err))
        }
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
        .and_then(crate::store::parse_ts)
        .unwrap_or(row.now);
    Ok(SubmitOutcome::RateLimited {
        retry_after_s: retry_after(oldest, row.now, row.limit),
    })
}

/// Seconds until the rate-limit window that started at `start` ends (at least 1).
pub(super) fn retry_after(start: DateTime<Utc>, now: DateTime<Utc>, limit: RateLimit) -> u64 {
    (start + limit.window - now).num_seconds().max(1) as u64
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

fn json_map<V: serde::de::DeserializeOwned>(text: &str) -> BTreeMap<String, V> {
    serde_json::from_str(text).unwrap_or_default()
}

impl SubmissionStore for SqliteStore {
    async fn submit(
        &self,
        s: Submission,
        now: DateTime<Utc>,
        limit: RateLimit,
    ) -> Result<SubmitOutcome> {
        let row = Box::new(Row::new(s, now, limit)?);
        self.command(|reply| Command::Submit { row, reply }).await
    }

    async fn delete_installation(&self, id: Uuid) -> Result<u64> {
        self.command(|reply| Command::Delete { id, reply }).await
    }

    async fn prune(&self, before: DateTime<Utc>, now: DateTime<Utc>) -> Result<u64> {
        // Nothing else expires: the rate limit is counted from the submissions themselves.
        let _ = now;
        self.command(|reply| Command::Prune { before, reply }).await
    }

    async fn summary(&self) -> Result<Summary> {
        self.read(|conn| {
            let (total, unique, latest): (i64, i64, Option<String>) = conn.query_row(
                "SELECT count(*), count(DISTINCT installation_id), max(received_at)
                   FROM submissions",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            Ok(Summary {
                total_submissions: total as u64,
                unique_installations: unique as u64,
                latest_submission_at: latest.as_deref().and_then(crate::store::parse_ts),
            })
        })
        .await
    }

    async fn overview(
        &self,
        since: DateTime<Utc>,
        mut builder: OverviewBuilder,
    ) -> Result<OverviewBuilder> {
        self.read(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT installation_id, received_at, app_version, platform, deployment_mode,
                        country_code, printer_count, printer_type_counts, feature_usage,
                        job_count, jobs_completed, jobs_failed, error_summary
                   FROM submissions WHERE received_at >= ?1 ORDER BY received_at, id",
            )?;
            let mut rows = stmt.query([fmt_ts(since)])?;
            while let Some(r) = rows.next()? {
                let id: String = r.get(0)?;
                let received: String = r.get(1)?;
                let (Ok(installation_id), Some(received_at)) =
                    (Uuid::parse_str(&id), crate::store::parse_ts(&received))
                else {
                    continue;
                };
                builder.add(ReportRow {
                    installation_id,
                    received_at,
                    app_version: r.get(2)?,
                    platform: r.get(3)?,
                    deployment_mode: r.get(4)?,
                    country_code: r.get(5)?,
                    printer_count: r.get::<_, i64>(6)?.max(0) as u64,
                    printer_type_counts: json_map(&r.get::<_, String>(7)?),
                    feature_usage: json_map(&r.get::<_, String>(8)?),
                    job_count: r.get::<_, i64>(9)?.max(0) as u64,
                    jobs_completed: r.get::<_, Option<i64>>(10)?.map(|n| n.max(0) as u64),
                    jobs_failed: r.get::<_, Option<i64>>(11)?.map(|n| n.max(0) as u64),
                    error_summary: json_map(&r.get::<_, String>(12)?),
                });
            }
            Ok(builder)
        })
        .await
    }

    async fn health(&self) -> Result<()> {
        self.read(|conn| {
            conn.query_row(
                "SELECT count(*) FROM (SELECT 1 FROM submissions LIMIT 1)",
                [],
                |r| r.get::<_, i64>(0),
            )?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregator::submission;

    fn submission(installation: Uuid, key: Option<&str>) -> Submission {
        let body = serde_json::json!({
            "schema_version": "1.0",
            "submission_timestamp": "2026-11-20T00:00:00Z",
            "installation": {
                "installation_id": installation.to_string(),
                "first_seen": "2026-01-01T00:00:00Z",
                "app_version": "2.7.0", "python_version": "3.11.7", "platform": "linux",
                "deployment_mode": "docker", "country_code": "DE"
            },
            "period": {"start": "2026-11-13T00:00:00Z", "end": "2026-11-20T00:00:00Z",
                       "duration_days": 7},
            "printer_fleet": {"printer_count": 1, "printer_types": ["prusa"],
                              "printer_type_counts": {"prusa": 1}},
            "usage_stats": {"job_count": 2, "file_count": 0, "upload_count": 0,
                            "uptime_hours": 10, "feature_usage": {}},
            "error_summary": {}
        });
        let now = "2026-11-20T01:00:00Z".parse().expect("time");
        submission::parse(&serde_json::to_vec(&body).expect("json"), key, now).expect("valid")
    }

    fn now() -> DateTime<Utc> {
        "2026-11-20T01:00:00Z".parse().expect("time")
    }

    #[tokio::test]
    async fn a_version_1_database_keeps_its_rows_ids_and_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agg.db");
        let known = Uuid::new_v4();
        {
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(MIGRATIONS[0]).expect("v1 schema");
            conn.pragma_update(None, "user_version", 1)
                .expect("version");
            conn.execute(
                "INSERT INTO submissions VALUES (7, ?1, 'key-7', '2026-11-20T00:30:00.000000Z',
                 '1.0', '2026-11-20T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z',
                 '2026-11-13T00:00:00.000000Z', '2026-11-20T00:00:00.000000Z', 7, '2.7.0', '3.11.7', 'linux', 'docker', 'DE', 1,
                 '{\"prusa\":1}', 2, NULL, NULL, 0, 0, 10, '{}', '{}')",
                [known.to_string()],
            )
            .expect("v1 row");
        }
        let store = SqliteStore::open(&path).expect("migrates");
        let limit = RateLimit::per_hour(1);
        // The stored key and the stored period still answer with the original id.
        let by_key = submission(Uuid::new_v4(), Some("key-7"));
        let out = store.submit(by_key, now(), limit).await.expect("submit");
        assert!(matches!(out, SubmitOutcome::Duplicate(7)), "{out:?}");
        let by_period = submission(known, None);
        let out = store.submit(by_period, now(), limit).await.expect("submit");
        assert!(matches!(out, SubmitOutcome::Duplicate(7)), "{out:?}");
        // New rows continue after the old ids; requests without a key do not collide.
        for expected in [8, 9] {
            let out = store
                .submit(submission(Uuid::new_v4(), None), now(), limit)
                .await
                .expect("submit");
            assert!(
                matches!(out, SubmitOutcome::Created(id) if id == expected),
                "{out:?}"
            );
        }
        let summary = store.summary().await.expect("summary");
        assert_eq!(summary.total_submissions, 3);
        let version: i64 = store
            .read(|c| Ok(c.pragma_query_value(None, "user_version", |r| r.get(0))?))
            .await
            .expect("version");
        assert_eq!(version, MIGRATIONS.len() as i64);
    }

    /// Without the hand-over to the writer, a WAL written without a pause grows by every frame:
    /// here to 820 MB, against a largest size of 54 MB with it (debug build).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_over_while_writes_never_pause() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agg.db");
        let store = SqliteStore::open(&path).expect("open");
        let wal = dir.path().join("agg.db-wal");
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (wal, done) = (wal.clone(), done.clone());
            tokio::spawn(async move {
                let mut largest = 0;
                while !done.load(Ordering::Relaxed) {
                    largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                largest
            })
        };
        const WRITERS: usize = 32;
        const EACH: usize = 2_000;
        let tasks: Vec<_> = (0..WRITERS)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    for _ in 0..EACH {
                        let s = submission(Uuid::new_v4(), Some(&Uuid::new_v4().to_string()));
                        let out = store.submit(s, now(), RateLimit::per_hour(1)).await;
                        assert!(matches!(out, Ok(SubmitOutcome::Created(_))), "{out:?}");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("writer task");
        }
        done.store(true, Ordering::Relaxed);
        let largest = watcher.await.expect("watcher");
        let rows: i64 = store
            .read(|c| Ok(c.query_row("SELECT count(*) FROM submissions", [], |r| r.get(0))?))
            .await
            .expect("count");
        assert_eq!(rows, (WRITERS * EACH) as i64);
        // 64,000 rows with two random index entries each dirty far more pages than the bound.
        let bound = 8 * RESTART_FRAMES as u64 * (4096 + 24);
        assert!(
            largest < bound,
            "the WAL grew to {largest} bytes (bound {bound})"
        );
    }
}
