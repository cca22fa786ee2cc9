//! The writer thread: the only code that writes to the database.

use std::sync::Arc;

use rusqlite::{Connection, params};
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

/// The writer loop; returns when told to shut down or when every sender is gone.
pub(crate) fn run(mut conn: Connection, mut rx: mpsc::Receiver<Command>, clock: Arc<dyn Clock>) {
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
                    let _ = conn.pragma_update(None, "optimize", "");
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
) {
    if batch.is_empty() {
        return;
    }
    match insert_batch(conn, batch, clock) {
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
    let tx = conn.transaction()?;
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
