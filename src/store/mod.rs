//! The SQLite store: schema, the single writer thread, pooled readers.
//!
//! * **One writer.** [`Store::open`] migrates the database and hands the write connection to a
//!   dedicated `std::thread`. Everything that writes goes through a bounded channel to it. The
//!   writer batches consecutive inserts into one transaction (up to [`MAX_BATCH`] rows, or
//!   whatever is queued when the channel runs empty — so under load batches fill up, and a lone
//!   event commits at once without waiting) and answers each insert only **after commit**: a
//!   caller that got `Ok` knows the row is durable (MQTT acknowledges the broker on that).
//! * **Readers** are separate read-only connections, pooled, used on `spawn_blocking` threads so
//!   the async runtime never blocks on SQLite.
//! * Connections use WAL, `synchronous=NORMAL` (crash-safe; the last transactions may be lost on
//!   power loss) and a busy timeout.
//!
//! Timestamps are stored as fixed-width RFC 3339 UTC text with microseconds
//! (`2026-11-20T12:00:00.000000Z`), so text order is time order.

pub mod migrations;
pub mod queue;
pub mod rollup;
pub mod settings;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::clock::Clock;
use crate::event::UsageEvent;
use crate::{Error, Result};

use writer::{Command, FileGuard, WriteOutcome};
pub use writer::{FileLoss, MAX_BATCH};

/// Capacity of the writer's command channel (back-pressure beyond it).
pub const CHANNEL_CAPACITY: usize = 4096;
/// How long a connection waits for a lock before failing.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Page cache of the write connection, in KiB. Inserts touch random leaves of the primary-key
/// index (UUIDs); with SQLite's default 2 MiB, a store of a million events spends most of its
/// ingest time re-reading pages.
pub const WRITER_CACHE_KIB: i64 = 16 * 1024;
/// Idle read connections kept for reuse.
const READER_POOL: usize = 4;

/// Timestamps: the shared crate's format (fixed-width RFC 3339, microseconds, `Z`) and hours.
pub use printernizer_stats_shared::time::{fmt_ts, hour_ceil, hour_floor, parse_ts};

/// Turns SQLite's terse open failures into one line that says what to do. The file is never
/// touched on the way: a damaged database stays for the user to inspect or restore.
fn explain_open_error(path: &Path, e: Error) -> Error {
    use rusqlite::ErrorCode::*;
    let code = match &e {
        Error::Database(rusqlite::Error::SqliteFailure(f, _)) => Some(f.code),
        _ => None,
    };
    let shown = path.display();
    match code {
        Some(NotADatabase | DatabaseCorrupt) => Error::Storage(format!(
            "{shown} is not a usable printernizer-stats database (damaged, or another file). \
             It was left untouched: move it away to start with an empty one, or restore a backup"
        )),
        Some(CannotOpen | ReadOnly | PermissionDenied) => Error::Storage(format!(
            "cannot open {shown} for writing: make sure its directory exists and is writable \
             (in the add-on: /data) and the file is not read-only"
        )),
        Some(DiskFull) => Error::Storage(format!(
            "the disk holding {shown} is full: free some space and start again"
        )),
        _ => e,
    }
}

/// What happened to an inserted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// A new row was committed.
    New,
    /// A row with the same id already existed; nothing changed.
    Duplicate,
}

/// A write that was queued; await it to learn that it was committed.
#[derive(Debug)]
pub struct PendingInsert(oneshot::Receiver<WriteOutcome>);

impl PendingInsert {
    /// Waits until the row is committed (or the batch failed).
    pub async fn committed(self) -> Result<Inserted> {
        self.0.await.map_err(|_| Error::WriterGone)?
    }

    /// Blocking variant for non-async threads.
    pub fn committed_blocking(self) -> Result<Inserted> {
        self.0.blocking_recv().map_err(|_| Error::WriterGone)?
    }
}

/// Handle to the store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    tx: mpsc::Sender<Command>,
    readers: Mutex<Vec<Connection>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    clock: Arc<dyn Clock>,
    lost: Arc<tokio::sync::watch::Sender<Option<FileLoss>>>,
    /// Shared with the writer thread, which checks before every commit.
    guard: Arc<FileGuard>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Sets the per-connection pragmas.
fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

impl Store {
    /// Opens (creating when missing) and migrates the database, initialises the installation's
    /// settings and starts the writer thread.
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Self> {
        Self::open_capped(path, clock, None)
    }

    /// [`Store::open`], with the database file capped at `max_size_mb` MiB: beyond it, writes
    /// fail as on a full disk (events then stay with the MQTT broker).
    pub fn open_capped(
        path: &Path,
        clock: Arc<dyn Clock>,
        max_size_mb: Option<u32>,
    ) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("cannot create database directory {}: {e}", dir.display()),
                ))
            })?;
        }
        let prepare = || -> Result<Connection> {
            let mut conn = Connection::open(path)?;
            let mode: String =
                conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(journal_mode = %mode, "SQLite did not switch to WAL mode");
            }
            configure(&conn)?;
            conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
            if let Some(mb) = max_size_mb {
                let page: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
                let pages = i64::from(mb) * 1024 * 1024 / page.max(512);
                conn.pragma_update(None, "max_page_count", pages)?;
            }
            migrations::migrate_to(&mut conn, migrations::latest_version())?;
            init_settings(&mut conn, clock.now())?;
            Ok(conn)
        };
        let conn = prepare().map_err(|e| explain_open_error(path, e))?;

        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let writer_clock = clock.clone();
        let lost = Arc::new(tokio::sync::watch::Sender::new(None));
        let guard = Arc::new(FileGuard::new(path, lost.clone()));
        let writer_guard = guard.clone();
        let handle = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer::run(conn, rx, writer_clock, writer_guard))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                tx,
                readers: Mutex::new(Vec::new()),
                writer: Mutex::new(Some(handle)),
                clock,
                lost,
                guard,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Set once the database file was deleted, replaced, emptied or found damaged under the
    /// running process; from then on every insert fails (see `writer`).
    pub fn file_lost(&self) -> tokio::sync::watch::Receiver<Option<FileLoss>> {
        self.inner.lost.subscribe()
    }

    /// Looks now whether the database file is still the one open here (not deleted, replaced
    /// or emptied) and returns the loss if not; a loss is also announced on
    /// [`Self::file_lost`]. Every write checks this itself; this is for noticing while idle.
    pub fn check_file(&self) -> Option<FileLoss> {
        self.inner.guard.loss()
    }

    /// The store's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Queues an event; the returned handle resolves after commit.
    pub async fn enqueue(&self, event: UsageEvent) -> Result<PendingInsert> {
        let (ack, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Command::Insert { event, ack })
            .await
            .map_err(|_| Error::WriterGone)?;
        Ok(PendingInsert(rx))
    }

    /// Queues an event from a non-async thread (blocks while the channel is full).
    pub fn enqueue_blocking(&self, event: UsageEvent) -> Result<PendingInsert> {
        let (ack, rx) = oneshot::channel();
        self.inner
            .tx
            .blocking_send(Command::Insert { event, ack })
            .map_err(|_| Error::WriterGone)?;
        Ok(PendingInsert(rx))
    }

    /// Inserts one event and waits for its commit.
    pub async fn insert(&self, event: UsageEvent) -> Result<Inserted> {
        self.enqueue(event).await?.committed().await
    }

    /// Runs `f` in a write transaction on the writer thread (ordered after every write queued
    /// before it) and returns its result after commit.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, DateTime<Utc>) -> Result<T> + Send + 'static,
    {
        let (ack, rx) = oneshot::channel();
        let clock = self.inner.clock.clone();
        let guard = self.inner.guard.clone();
        let job = Box::new(move |conn: &mut Connection| {
            // Never a write into a file that is no longer the database (see `writer`).
            let result = guard.guarded(|| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let value = f(&tx, clock.now())?;
                tx.commit()?;
                Ok(value)
            });
            let _ = ack.send(result);
        });
        self.inner
            .tx
            .send(Command::Exec(job))
            .await
            .map_err(|_| Error::WriterGone)?;
        rx.await.map_err(|_| Error::WriterGone)?
    }

    /// Runs `f` with a read-only connection on a blocking thread.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read_blocking(f))
            .await
            .map_err(|e| Error::Io(std::io::Error::other(format!("read task failed: {e}"))))?
    }

    /// Runs `f` with a read-only connection on the current thread (never call it on an async
    /// worker; use [`Store::read`] there).
    pub fn read_blocking<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self
            .inner
            .readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.inner.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                configure(&c)?;
                c
            }
        };
        let result = f(&conn);
        let mut pool = self.inner.readers.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < READER_POOL {
            pool.push(conn);
        }
        result
    }

    /// Deletes all events, rollups and counters; returns the number of events deleted.
    /// Settings (opt-in, installation id) stay.
    pub async fn delete_all(&self) -> Result<u64> {
        self.write(|tx, _| {
            let n: i64 = tx.query_row("SELECT count(*) FROM usage_events", [], |r| r.get(0))?;
            tx.execute_batch(
                "DELETE FROM usage_events; DELETE FROM usage_aggregates;
                 DELETE FROM usage_fleet; DELETE FROM usage_counters;",
            )?;
            queue::drop_reports(tx)?;
            queue::clear_log(tx)?;
            Ok(n.max(0) as u64)
        })
        .await
    }

    /// Deletes raw events older than `cutoff` (rollups stay). The newest `app_start` and
    /// `app_shutdown` are kept: they carry the app version and the up/down state that the
    /// next report needs. Returns the number of events deleted.
    pub async fn prune(&self, cutoff: DateTime<Utc>) -> Result<u64> {
        self.write(move |tx, _| {
            let keep = "(SELECT id FROM (SELECT id FROM usage_events WHERE event_type = 'app_start'
                          ORDER BY timestamp DESC LIMIT 1)
                         UNION SELECT id FROM (SELECT id FROM usage_events
                          WHERE event_type = 'app_shutdown' ORDER BY timestamp DESC LIMIT 1))";
            let cutoff = fmt_ts(cutoff);
            let (n, unsubmitted): (i64, i64) = tx.query_row(
                &format!(
                    "SELECT count(*), coalesce(sum(submitted = 0), 0) FROM usage_events
                     WHERE timestamp < ?1 AND id NOT IN {keep}"
                ),
                [&cutoff],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            tx.execute(
                &format!("DELETE FROM usage_events WHERE timestamp < ?1 AND id NOT IN {keep}"),
                [&cutoff],
            )?;
            rollup::add_counter(tx, rollup::counters::EVENTS_TOTAL, -n)?;
            rollup::add_counter(tx, rollup::counters::EVENTS_PENDING, -unsubmitted)?;
            Ok(n.max(0) as u64)
        })
        .await
    }

    /// Stops the writer after everything queued before this call is committed.
    ///
    /// Idle readers are closed first so that the writer's connection is the last one: only a
    /// read-write connection can checkpoint the WAL and remove `-wal`/`-shm` on close.
    pub async fn close(&self) -> Result<()> {
        self.inner
            .readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let (done, rx) = oneshot::channel();
        if self.inner.tx.send(Command::Shutdown(done)).await.is_ok() {
            let _ = rx.await;
        }
        let handle = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle {
            tokio::task::spawn_blocking(move || handle.join())
                .await
                .ok();
        }
        Ok(())
    }
}

/// First-run settings: a random installation id, the first-run date, opt-in off, a salt.
fn init_settings(conn: &mut Connection, now: DateTime<Utc>) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    settings::set_default(
        &tx,
        settings::INSTALLATION_ID,
        &Uuid::new_v4().to_string(),
        now,
    )?;
    settings::set_default(&tx, settings::FIRST_RUN_DATE, &fmt_ts(now), now)?;
    settings::set_default(
        &tx,
        settings::OPT_IN_STATUS,
        settings::OptIn::Disabled.as_str(),
        now,
    )?;
    settings::set_default(&tx, settings::SUBMISSION_COUNT, "0", now)?;
    let salt = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    settings::set_default(&tx, settings::PRINTER_SALT, &salt, now)?;
    tx.commit()?;
    Ok(())
}
