//! The WAL checkpoint thread: keeps the WAL short without blocking the writer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::Result;

/// Shortest time between two WAL checkpoints.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// WAL length (frames of one page each) from which it is started over. A WAL that is written
/// without a pause never starts over by itself: a checkpoint running beside the writer never
/// catches up with it, and the file grows by every frame written (~200 MB/s under the
/// benchmark's load, each new page of it costing the kernel more than rewriting a cached one).
pub(super) const RESTART_FRAMES: i64 = 4096;
/// How often the checkpoint thread, between two checkpoints, looks whether the WAL got long.
const WAL_LOOK_EVERY: Duration = Duration::from_millis(10);
/// Longest wait of the checkpoint thread for the writer to start the WAL over.
const HAND_OVER_WAIT: Duration = Duration::from_millis(100);
/// Frames copied by a checkpoint pass small enough that the writer can copy what came after
/// it in a moment.
const CATCH_UP_FRAMES: i64 = 512;
/// Checkpoint passes in a row before the rest is left to the writer whatever its length.
const CATCH_UP_PASSES: usize = 4;

/// The writer's side of the checkpoint thread.
pub(super) struct Checkpoints {
    /// Wakes the checkpoint thread after a commit.
    pub(super) kick: std::sync::mpsc::SyncSender<()>,
    /// Set by the checkpoint thread when the WAL is long and nearly all copied: the writer
    /// copies the rest between two transactions, so that its next one starts the WAL over.
    pub(super) restart_due: Arc<AtomicBool>,
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
pub(super) fn checkpoint(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))?)
}

/// Copies committed WAL pages into the database file after commits, at most every
/// [`CHECKPOINT_EVERY`] or as soon as the WAL is longer than [`RESTART_FRAMES`] (`wal_frames`,
/// from the writer's WAL hook), without blocking the writer (`PASSIVE`). A long WAL it copies
/// again at once until a pass had little to do, and then asks the writer to copy the little
/// that came after ([`Checkpoints::restart_due`]): the writer's next transaction starts the
/// WAL over. Sleeps while nothing is written; ends with the writer.
pub(super) fn checkpoint_loop(
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
