//! The writer thread: the only code that writes to the database.
//!
//! Before every commit — of events, and of [`super::Store::write`]'s jobs — it checks that the
//! database path still names the file it has open ([`FileGuard`]): a file deleted, replaced or
//! emptied under a running `run` would otherwise keep taking writes — into an unlinked inode,
//! or into a file that is now corrupt — and `run` would acknowledge events to the broker that
//! are gone (measured before this check: 2,003 of them in one run). Once the file is lost
//! every write fails (an event is then never acknowledged: the broker keeps it) and
//! [`super::Store::file_lost`] says why; `run` then stops and starts over with a new file
//! (`app`). An idle `run` does not wait for the next write: the watch on the database's
//! directory (`service::external`) calls [`super::Store::check_file`] when the file changes.

use std::sync::Arc;

use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::rollup::RollupBatch;
use super::{Inserted, fmt_ts};
use crate::clock::Clock;
use crate::event::UsageEvent;
use crate::{Error, Result};

/// Most inserts committed in one transaction.
pub const MAX_BATCH: usize = 1000;

pub(crate) type WriteOutcome = Result<Inserted>;

/// A request to the writer.
pub(crate) enum Command {
    /// Insert one event; answered after commit.
    Insert {
        event: UsageEvent,
        ack: oneshot::Sender<WriteOutcome>,
    },
    /// Run a closure with the write connection (it answers on its own channel).
    Exec(Box<dyn FnOnce(&mut Connection) + Send>),
    /// Commit what is queued, then stop.
    Shutdown(oneshot::Sender<()>),
}

/// How the database file was lost under the running process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileLoss {
    /// The path names no file any more.
    Deleted,
    /// The path names another file (moved or restored over it).
    Replaced,
    /// The file was truncated to 0 bytes.
    Emptied,
    /// SQLite found the file damaged (`database disk image is malformed`, not a database).
    Damaged,
}

impl FileLoss {
    /// What happened, for a log line.
    pub fn describe(self) -> &'static str {
        match self {
            FileLoss::Deleted => "was deleted",
            FileLoss::Replaced => "was replaced by another file",
            FileLoss::Emptied => "was emptied (truncated to 0 bytes)",
            FileLoss::Damaged => "is damaged (SQLite reports it malformed)",
        }
    }
}

/// Watches the identity of the database file (device and inode) and its size.
pub(crate) struct FileGuard {
    path: std::path::PathBuf,
    identity: Option<(u64, u64)>,
    lost: Arc<tokio::sync::watch::Sender<Option<FileLoss>>>,
}

impl FileGuard {
    pub(crate) fn new(
        path: &std::path::Path,
        lost: Arc<tokio::sync::watch::Sender<Option<FileLoss>>>,
    ) -> Self {
        Self {
            path: path.to_path_buf(),
            identity: identity(path),
            lost,
        }
    }

    /// Runs `f` (a write) only while the file is ours, and notices damage it reports.
    pub(crate) fn guarded<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.check()?;
        f().map_err(|e| {
            if is_damage(&e) {
                self.lose(FileLoss::Damaged)
            } else {
                e
            }
        })
    }

    /// The loss, if the file is lost (now or before).
    pub(crate) fn loss(&self) -> Option<FileLoss> {
        let _ = self.check();
        *self.lost.borrow()
    }

    /// `Err` once the file is lost (now or before).
    fn check(&self) -> Result<()> {
        if let Some(loss) = *self.lost.borrow() {
            return Err(self.error(loss));
        }
        let loss = match std::fs::metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(FileLoss::Deleted),
            Err(_) => None,
            Ok(m) => {
                use std::os::unix::fs::MetadataExt;
                if self.identity.is_some_and(|id| id != (m.dev(), m.ino())) {
                    Some(FileLoss::Replaced)
                } else if m.len() == 0 {
                    Some(FileLoss::Emptied)
                } else {
                    None
                }
            }
        };
        match loss {
            Some(loss) => Err(self.lose(loss)),
            None => Ok(()),
        }
    }

    fn lose(&self, loss: FileLoss) -> Error {
        if self.lost.borrow().is_none() {
            tracing::error!(
                file = %self.path.display(),
                "the database file {} while running: nothing more is stored or acknowledged \
                 in it (the MQTT broker keeps the events)",
                loss.describe()
            );
            self.lost.send_replace(Some(loss));
        }
        self.error(loss)
    }

    fn error(&self, loss: FileLoss) -> Error {
        Error::Storage(format!(
            "the database file {} {} while running",
            self.path.display(),
            loss.describe()
        ))
    }
}

/// Device and inode of `path`.
fn identity(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Whether `e` says that the file is not a (healthy) database.
fn is_damage(e: &Error) -> bool {
    matches!(
        e,
        Error::Database(rusqlite::Error::SqliteFailure(f, _))
            if matches!(f.code, rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

/// The writer loop; returns when told to shut down or when every sender is gone.
pub(crate) fn run(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Command>,
    clock: Arc<dyn Clock>,
    guard: Arc<FileGuard>,
) {
    let flush = |conn: &mut Connection, batch: &mut Vec<_>, clock: &dyn Clock| {
        flush(conn, batch, clock, &guard)
    };
    let mut batch: Vec<(UsageEvent, oneshot::Sender<WriteOutcome>)> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Insert { event, ack } => {
                    batch.push((event, ack));
                    if batch.len() >= MAX_BATCH {
                        flush(&mut conn, &mut batch, clock.as_ref());
                    }
                }
                Command::Exec(job) => {
                    flush(&mut conn, &mut batch, clock.as_ref());
                    job(&mut conn);
                }
                Command::Shutdown(done) => {
                    flush(&mut conn, &mut batch, clock.as_ref());
                    let loss = *guard.lost.borrow();
                    if let Some(FileLoss::Emptied | FileLoss::Damaged) = loss {
                        // What remains is set aside for inspection (`instance::set_aside`,
                        // with its WAL): leave it as it is — no checkpoint into it when the
                        // connection closes. (A deleted or replaced file is another inode:
                        // the usual checkpoint goes there and removes the WAL, which must not
                        // be replayed into a new or restored file.)
                        let _ = conn.set_db_config(
                            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                            true,
                        );
                    }
                    if loss.is_none() {
                        let _ = conn.pragma_update(None, "optimize", "");
                    }
                    let _ = done.send(());
                    tracing::debug!("store writer stopped");
                    return;
                }
            }
            next = rx.try_recv().ok();
        }
        flush(&mut conn, &mut batch, clock.as_ref());
    }
}

/// Commits the batch in one transaction and then answers every insert.
fn flush(
    conn: &mut Connection,
    batch: &mut Vec<(UsageEvent, oneshot::Sender<WriteOutcome>)>,
    clock: &dyn Clock,
    guard: &FileGuard,
) {
    if batch.is_empty() {
        return;
    }
    let result = guard.guarded(|| insert_batch(conn, batch, clock));
    match result {
        Err(e) if guard.lost.borrow().is_some() => {
            let msg = e.to_string();
            for (_, ack) in batch.drain(..) {
                let _ = ack.send(Err(Error::Storage(msg.clone())));
            }
        }
        Ok(outcomes) => {
            for ((_, ack), outcome) in batch.drain(..).zip(outcomes) {
                let _ = ack.send(Ok(outcome));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, events = batch.len(), "failed to store a batch of events; nothing of it was committed");
            let msg = e.to_string();
            for (_, ack) in batch.drain(..) {
                let _ = ack.send(Err(Error::Write(msg.clone())));
            }
        }
    }
}

/// The end of the newest period frozen into a report (accepted or pending), if any.
///
/// Reports count events by their timestamp. An event that arrives after its period was built
/// into a report would otherwise never be reported (the next period starts at that report's
/// end), so such an event is stored with its receive time instead: counted once, in the next
/// report.
fn frozen_until(conn: &Connection) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    let accepted = super::settings::get(conn, super::settings::LAST_REPORT_END)?;
    let queued = super::queue::queued_period_end(conn)?;
    // Both are stored as fixed-width RFC 3339: text order is time order.
    let newest = accepted.into_iter().chain(queued).max();
    Ok(newest.as_deref().and_then(super::parse_ts))
}

fn insert_batch(
    conn: &mut Connection,
    batch: &[(UsageEvent, oneshot::Sender<WriteOutcome>)],
    clock: &dyn Clock,
) -> Result<Vec<Inserted>> {
    let now = clock.now();
    let created_at = fmt_ts(now);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let frozen = frozen_until(&tx)?;
    let mut rollup = RollupBatch::default();
    let mut outcomes = Vec::with_capacity(batch.len());
    {
        let mut stmt = tx.prepare_cached(
            "INSERT OR IGNORE INTO usage_events
                (id, event_type, timestamp, metadata, submitted, created_at, printer_hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for (e, _) in batch {
            let metadata = serde_json::to_string(&e.metadata)?;
            // A late event for a period already frozen into a report belongs to the next one.
            let restamped;
            let e = match frozen {
                Some(f) if e.timestamp < f => {
                    restamped = UsageEvent {
                        timestamp: now.max(f),
                        ..e.clone()
                    };
                    &restamped
                }
                _ => e,
            };
            let changed = stmt.execute(params![
                e.id.to_string(),
                e.event_type.as_str(),
                fmt_ts(e.timestamp),
                metadata,
                e.submitted,
                created_at,
                e.printer_hash,
            ])?;
            if changed == 1 {
                rollup.add(e);
                outcomes.push(Inserted::New);
            } else {
                outcomes.push(Inserted::Duplicate);
            }
        }
    }
    if !rollup.is_empty() {
        rollup.apply(&tx, now)?;
    }
    tx.commit()?;
    Ok(outcomes)
}
