//! Changes made by other processes: the CLI beside a running `run` (`opt-in`, `opt-out`,
//! `delete-all`, `events record` …) writes to the same database, and Home Assistant must show it
//! — the switch, its attributes and the sensors — without waiting for a reconnect.
//!
//! SQLite tells nobody, so [`watch`] asks the kernel: an inotify watch on the database's
//! directory reports every write to the database file or its WAL (by any process). Then —
//! after [`SETTLE`], so that a burst is one look — `PRAGMA data_version` on a connection of its
//! own (it changes when any *other* connection committed: the CLI's, or `run`'s own writer), and
//! only then the fingerprint: the settings a user can change (not the ones `run`
//! itself writes all the time: what was sent to Home Assistant, the bridge's last poll) and the
//! event total. A changed setting republishes the opt-in switch ([`StatsService::changes`]),
//! a changed total the sensors ([`StatsService::activity`]); `run`'s own ingest changes the
//! total too, which only republishes (debounced) what the handler publishes anyway.
//!
//! The same look first asks the store whether the file is still the one it has open
//! ([`crate::store::Store::check_file`]): a database deleted or emptied under an idle `run` is
//! noticed within a second, not at the next event.
//!
//! Why not a timer: on this VM every periodic wake-up of an idle `run` was charged about 10 ms
//! of CPU (a 2-second poll: 90–130 ms in 30 s, where `tests/system_faults.rs` wants an idle
//! `run` at ~0); with inotify an idle `run` is not woken at all. Where inotify is not available
//! (no watches left), it falls back to looking every [`POLL`].

use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio_util::sync::CancellationToken;

use super::StatsService;
use crate::Result;
use crate::store::rollup::{self, counters};
use crate::store::settings;

/// How long after a write the database is looked at (writes in between are one look).
pub const SETTLE: Duration = Duration::from_millis(300);
/// How often the database is looked at when inotify is not available.
pub const POLL: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    settings: String,
    events: u64,
}

fn fingerprint(conn: &Connection) -> Result<Fingerprint> {
    let settings: String = conn.query_row(
        "SELECT coalesce(group_concat(key || '=' || value, char(10)), '')
           FROM (SELECT key, value FROM usage_settings
                  WHERE key NOT LIKE ?1 AND key <> ?2 ORDER BY key)",
        [
            format!("{}%", settings::HA_SENT_PREFIX),
            settings::BRIDGE_LAST_SUCCESS.to_owned(),
        ],
        |r| r.get(0),
    )?;
    let events = rollup::counter(conn, counters::EVENTS_TOTAL)?;
    Ok(Fingerprint { settings, events })
}

/// What the watcher keeps between two looks.
#[derive(Default)]
struct Watch {
    conn: Option<Connection>,
    seen: Option<(i64, Fingerprint)>,
}

/// One look: `Ok(Some((settings_changed, events_changed)))` when the database changed.
fn look(path: &std::path::Path, w: &mut Watch) -> Result<Option<(bool, bool)>> {
    let c = match &w.conn {
        Some(c) => c,
        None => {
            let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            c.busy_timeout(Duration::from_secs(5))?;
            w.conn.insert(c)
        }
    };
    let version: i64 = c.pragma_query_value(None, "data_version", |r| r.get(0))?;
    if w.seen.as_ref().is_some_and(|(v, _)| *v == version) {
        return Ok(None);
    }
    let now = fingerprint(c)?;
    let changed = w
        .seen
        .as_ref()
        .map(|(_, before)| (before.settings != now.settings, before.events != now.events));
    w.seen = Some((version, now));
    Ok(changed)
}

/// An inotify watch on the directory of `db` that signals `tx` when the database file or its
/// WAL is written; `None` (logged) when the kernel will not give one.
fn file_events(
    db: &std::path::Path,
    tx: tokio::sync::mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let name = db.file_name()?.to_os_string();
    let mut wal = name.clone();
    wal.push("-wal");
    let dir = match db.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => std::path::PathBuf::from("."),
    };
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        let ours = event
            .paths
            .iter()
            .any(|p| p.file_name().is_some_and(|f| f == name || f == wal));
        if ours {
            let _ = tx.try_send(());
        }
    };
    let started = notify::recommended_watcher(handler).and_then(|mut w| {
        w.watch(&dir, RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    match started {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the database's directory; looking for other processes' changes every {} s instead", POLL.as_secs());
            None
        }
    }
}

/// Watches for other processes' changes until `stop`.
pub async fn watch(service: StatsService, stop: CancellationToken) {
    let path = service.store().path().to_path_buf();
    let (tx, mut written) = tokio::sync::mpsc::channel::<()>(1);
    // Kept alive for the loop; dropping it ends the watch.
    let watcher = file_events(&path, tx);
    let mut state = Some(Watch::default());
    let mut failing = false;
    let mut first = true;
    loop {
        if !std::mem::take(&mut first) {
            tokio::select! {
                () = stop.cancelled() => return,
                Some(()) = written.recv(), if watcher.is_some() => {
                    tokio::time::sleep(SETTLE).await;
                    while written.try_recv().is_ok() {}
                }
                () = tokio::time::sleep(POLL), if watcher.is_none() => {}
            }
        }
        let Some(w) = state.take() else { return };
        let path = path.clone();
        let store = service.store().clone();
        let Ok((mut w, result)) = tokio::task::spawn_blocking(move || {
            let mut w = w;
            // Deleted, replaced or emptied: the store announces it and `run` starts over; an
            // idle `run` notices here instead of at its next write.
            if store.check_file().is_some() {
                return (w, Ok(None));
            }
            let result = look(&path, &mut w);
            (w, result)
        })
        .await
        else {
            return;
        };
        match result {
            Ok(changed) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("watching the database for other processes' changes again");
                }
                if let Some((settings, events)) = changed {
                    if settings {
                        tracing::info!("settings changed by another process; republishing");
                        service.changed();
                    }
                    if events {
                        service.touched();
                    }
                }
            }
            Err(e) => {
                // A new connection next time (the file may have been replaced).
                w.conn = None;
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(error = %e, "cannot watch the database for other processes' changes");
                }
            }
        }
        state = Some(w);
    }
}
