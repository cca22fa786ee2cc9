//! Changes made by other processes: the CLI beside a running `run` (`opt-in`, `opt-out`,
//! `delete-all`, `events record` …) writes to the same database, and Home Assistant must show it
//! — the switch, its attributes and the sensors — without waiting for a reconnect.
//!
//! SQLite tells nobody, so [`watch`] looks every [`POLL`]: `PRAGMA data_version` on a connection
//! of its own (it changes when any *other* connection committed — the CLI's, or `run`'s own
//! writer), and only then the fingerprint: the settings a user can change (not the ones `run`
//! itself writes all the time: what was sent to Home Assistant, the bridge's last poll) and the
//! event total. A changed setting republishes the opt-in switch ([`StatsService::changes`]),
//! a changed total the sensors ([`StatsService::activity`]); `run`'s own ingest changes the
//! total too, which only republishes (debounced) what the handler publishes anyway.

use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio_util::sync::CancellationToken;

use super::StatsService;
use crate::Result;
use crate::store::rollup::{self, counters};
use crate::store::settings;

/// How often the database is looked at.
pub const POLL: Duration = Duration::from_secs(2);

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

/// Watches for other processes' changes until `stop`; runs on a blocking thread.
pub async fn watch(service: StatsService, stop: CancellationToken) {
    let path = service.store().path().to_path_buf();
    let task = tokio::task::spawn_blocking(move || {
        let open = || -> Result<Connection> {
            let c = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            c.busy_timeout(Duration::from_secs(5))?;
            Ok(c)
        };
        let mut conn: Option<Connection> = None;
        let mut seen: Option<(i64, Fingerprint)> = None;
        let mut failing = false;
        while !stop.is_cancelled() {
            let step = (|| -> Result<()> {
                let c = match &conn {
                    Some(c) => c,
                    None => conn.insert(open()?),
                };
                let version: i64 = c.pragma_query_value(None, "data_version", |r| r.get(0))?;
                if seen.as_ref().is_some_and(|(v, _)| *v == version) {
                    return Ok(());
                }
                let now = fingerprint(c)?;
                if let Some((_, before)) = &seen {
                    if before.settings != now.settings {
                        tracing::info!("settings changed by another process; republishing");
                        service.changed();
                    }
                    if before.events != now.events {
                        service.touched();
                    }
                }
                seen = Some((version, now));
                Ok(())
            })();
            match step {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("watching the database for other processes' changes again");
                }
                Ok(()) => {}
                Err(e) => {
                    // A new connection next time (the file may have been replaced).
                    conn = None;
                    if !failing {
                        failing = true;
                        tracing::warn!(error = %e, "cannot watch the database for other processes' changes");
                    }
                }
            }
            // In slices, so that shutdown never waits for a whole poll.
            for _ in 0..20 {
                if stop.is_cancelled() {
                    break;
                }
                std::thread::sleep(POLL / 20);
            }
        }
    });
    let _ = task.await;
}
