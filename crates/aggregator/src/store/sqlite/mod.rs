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
//!
//! Files: `schema` (migrations), `writer` (the writer thread and the statements it runs),
//! `checkpoint` (the WAL checkpoint thread), `queries` (reads on pooled connections).

mod checkpoint;
mod queries;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use crate::{Error, Result};
use checkpoint::{Checkpoints, checkpoint_loop};
use writer::{Command, Pending, writer_loop};

/// Idle read connections kept.
const READERS: usize = 4;

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

impl SqliteStore {
    /// Opens (creating file and directory when missing) and migrates the database, and starts
    /// the writer thread.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut conn = open_conn(path, false)?;
        schema::migrate(&mut conn)?;
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

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use uuid::Uuid;

    use super::checkpoint::RESTART_FRAMES;
    use super::schema::MIGRATIONS;
    use super::*;
    use crate::store::{RateLimit, SubmissionStore, SubmitOutcome};
    use crate::submission::{self, Submission};

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
    async fn a_scheduled_mailing_is_claimed_once_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agg.db");
        let store = SqliteStore::open(&path).expect("open");
        assert!(
            store
                .claim_mailing("weekly", "2026-W49".into(), now())
                .await
                .expect("claim")
        );
        assert!(
            !store
                .claim_mailing("weekly", "2026-W49".into(), now())
                .await
                .expect("claim")
        );
        drop(store);
        let store = SqliteStore::open(&path).expect("reopen");
        assert!(
            !store
                .claim_mailing("weekly", "2026-W49".into(), now())
                .await
                .expect("claim")
        );
        assert!(
            store
                .claim_mailing("weekly", "2026-W50".into(), now())
                .await
                .expect("claim")
        );
    }

    #[tokio::test]
    async fn a_version_1_database_keeps_its_rows_ids_and_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agg.db");
        let known = Uuid::new_v4();
        {
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(MIGRATIONS[0].up).expect("v1 schema");
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

    #[test]
    fn every_migration_goes_down_and_up_again_keeping_rows() {
        use printernizer_stats_shared::sqlite_schema::{migrate_to, schema_dump};
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = Connection::open(dir.path().join("agg.db")).expect("open");
        let latest = MIGRATIONS.len() as u32;
        migrate_to(&mut conn, MIGRATIONS, latest).expect("up");
        let schema = schema_dump(&conn).expect("dump");
        conn.execute(
            "INSERT INTO submissions VALUES (3, 'i', NULL, 'r', '1.0', 's', 'f', 'a', 'b', 7, '2.7.0',
             '3.11.7', 'linux', 'docker', 'DE', 1, '{}', 2, 1, 1, 0, 0, 10, '{}', '{}')",
            [],
        )
        .expect("row");
        migrate_to(&mut conn, MIGRATIONS, 1).expect("down to 1");
        migrate_to(&mut conn, MIGRATIONS, latest).expect("up again");
        assert_eq!(schema_dump(&conn).expect("dump"), schema);
        let id: i64 = conn
            .query_row("SELECT id FROM submissions", [], |r| r.get(0))
            .expect("the row survived");
        assert_eq!(id, 3);
        migrate_to(&mut conn, MIGRATIONS, 0).expect("down to 0");
        assert_eq!(schema_dump(&conn).expect("dump"), "");
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
