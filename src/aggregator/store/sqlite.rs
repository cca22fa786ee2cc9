//! The SQLite backend: one writer thread owns the write connection (WAL, `synchronous=NORMAL`);
//! reads run on `spawn_blocking` with pooled read-only connections, so the async runtime never
//! waits on SQLite.
//!
//! The writer takes every command that is queued when it wakes and runs them in **one**
//! transaction (group commit): under load, one commit serves many requests. Every command
//! writes with a single statement (a submission is one conditional `INSERT … SELECT … WHERE`,
//! see [`submit`]), and SQLite undoes a failed statement by itself, so each request still
//! succeeds or fails on its own. A reply is sent only after the commit.
//!
//! The rate limit is counted from the submissions themselves (the writer thread serializes the
//! count and the insert); PostgreSQL, where several servers write, keeps a `rate_limits` row
//! per installation instead (see [`super::PgStore`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{RateLimit, ReportRow, SubmissionStore, SubmitOutcome, Summary, fmt_ts};
use crate::aggregator::overview::OverviewBuilder;
use crate::aggregator::submission::Submission;
use crate::{Error, Result};

/// Most commands committed in one transaction.
const MAX_GROUP: usize = 256;
/// Shortest time between two WAL checkpoints.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// Idle read connections kept.
const READERS: usize = 4;

const MIGRATIONS: &[&str] = &[r#"
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
"#];

enum Command {
    Submit {
        s: Box<Submission>,
        now: DateTime<Utc>,
        limit: RateLimit,
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
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
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
        let ckpt_conn = open_conn(path, false)?;
        std::thread::Builder::new()
            .name("aggregator-checkpoint".into())
            .spawn(move || checkpoint_loop(ckpt_conn, kicked))?;
        let writer = std::thread::Builder::new()
            .name("aggregator-writer".into())
            .spawn(move || writer_loop(conn, rx, replier, kick))?;
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

fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Command>,
    replier: Option<mpsc::UnboundedSender<Vec<Pending>>>,
    checkpoint: std::sync::mpsc::SyncSender<()>,
) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    loop {
        let Some(first) = rx.blocking_recv() else {
            return;
        };
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(c) => group.push(c),
                Err(_) => break,
            }
        }
        let answers = run_group(&mut conn, &mut group);
        // Full means a checkpoint is already due.
        let _ = checkpoint.try_send(());
        match &replier {
            Some(r) => {
                if let Err(unsent) = r.send(answers) {
                    unsent.0.into_iter().for_each(Pending::answer);
                }
            }
            None => answers.into_iter().for_each(Pending::answer),
        }
    }
}

/// Copies committed WAL pages into the database file after commits, at most every
/// [`CHECKPOINT_EVERY`], without blocking the writer (`PASSIVE`). Sleeps while nothing is
/// written; ends with the writer.
fn checkpoint_loop(conn: Connection, kicked: std::sync::mpsc::Receiver<()>) {
    while kicked.recv().is_ok() {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!("aggregator: WAL checkpoint failed (retried after the next write): {e}");
        }
        std::thread::sleep(CHECKPOINT_EVERY);
    }
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

/// A reply waiting for the commit.
enum Pending {
    Submit(
        oneshot::Sender<Result<SubmitOutcome>>,
        Result<SubmitOutcome>,
    ),
    Count(oneshot::Sender<Result<u64>>, Result<u64>),
}

impl Pending {
    fn answer(self) {
        // A caller that gave up (client disconnected) does not matter.
        match self {
            Pending::Submit(reply, out) => drop(reply.send(out)),
            Pending::Count(reply, out) => drop(reply.send(out)),
        }
    }
}

/// Runs `group` in one transaction; returns the answers, valid only now that it committed
/// (or all turned into errors when it did not).
fn run_group(conn: &mut Connection, group: &mut Vec<Command>) -> Vec<Pending> {
    let mut pending = Vec::with_capacity(group.len());
    let committed = (|| -> Result<()> {
        let tx = conn.transaction()?;
        for cmd in group.drain(..) {
            match cmd {
                Command::Submit {
                    s,
                    now,
                    limit,
                    reply,
                } => {
                    let out = submit(&tx, &s, now, limit);
                    pending.push(Pending::Submit(reply, out));
                }
                Command::Delete { id, reply } => {
                    let out = delete(&tx, id);
                    pending.push(Pending::Count(reply, out));
                }
                Command::Prune { before, reply } => {
                    let out = prune(&tx, before);
                    pending.push(Pending::Count(reply, out));
                }
            }
        }
        tx.commit()?;
        Ok(())
    })();
    let failure = committed.err().map(|e| e.to_string());
    if let Some(msg) = &failure {
        tracing::error!(
            "aggregator: commit failed, {} request(s) answered with an error: {msg}",
            pending.len()
        );
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
            Pending::Submit(reply, out) => Pending::Submit(reply, settle(out, failure.as_ref())),
            Pending::Count(reply, out) => Pending::Count(reply, settle(out, failure.as_ref())),
        })
        .collect()
}

fn find_duplicate(tx: &Connection, s: &Submission) -> Result<Option<i64>> {
    if let Some(key) = &s.idempotency_key {
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
            params![
                s.installation_id.to_string(),
                fmt_ts(s.period_start),
                fmt_ts(s.period_end)
            ],
            |r| r.get(0),
        )
        .optional()?)
}

fn submit(
    tx: &Connection,
    s: &Submission,
    now: DateTime<Utc>,
    limit: RateLimit,
) -> Result<SubmitOutcome> {
    if let Some(id) = find_duplicate(tx, s)? {
        return Ok(SubmitOutcome::Duplicate(id));
    }
    let installation = s.installation_id.to_string();
    let window_start = fmt_ts(now - limit.window);
    // One conditional insert: stored only while the installation has fewer than `limit.max`
    // submissions received within the window (the writer thread makes it atomic).
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
                  WHERE installation_id = ?1 AND received_at > ?25) < ?26",
        )?
        .execute(params![
            installation,
            s.idempotency_key,
            fmt_ts(now),
            s.schema_version,
            fmt_ts(s.submission_timestamp),
            fmt_ts(s.first_seen),
            fmt_ts(s.period_start),
            fmt_ts(s.period_end),
            s.duration_days,
            s.app_version,
            s.python_version,
            s.platform,
            s.deployment_mode,
            s.country_code,
            s.printer_count as i64,
            serde_json::to_string(&s.printer_type_counts)?,
            s.job_count as i64,
            s.jobs_completed.map(|n| n as i64),
            s.jobs_failed.map(|n| n as i64),
            s.file_count as i64,
            s.upload_count as i64,
            s.uptime_hours as i64,
            serde_json::to_string(&s.feature_usage)?,
            serde_json::to_string(&s.error_summary)?,
            window_start,
            limit.max,
        ])?;
    if inserted == 1 {
        return Ok(SubmitOutcome::Created(tx.last_insert_rowid()));
    }
    // Over the limit: the window ends an hour after the oldest submission in it.
    let oldest: Option<String> = tx
        .prepare_cached(
            "SELECT min(received_at) FROM submissions
              WHERE installation_id = ?1 AND received_at > ?2",
        )?
        .query_row(params![installation, window_start], |r| r.get(0))?;
    let oldest = oldest
        .as_deref()
        .and_then(crate::store::parse_ts)
        .unwrap_or(now);
    Ok(SubmitOutcome::RateLimited {
        retry_after_s: retry_after(oldest, now, limit),
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
        self.command(|reply| Command::Submit {
            s: Box::new(s),
            now,
            limit,
            reply,
        })
        .await
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
