//! The bridge's own tables (schema version 4): `bridge_jobs` (one row per job ever seen, keyed
//! by a salted hash of its id) and `bridge_state` (the export cursor). This module is their only
//! owner; every write runs on the store's writer thread.
//!
//! `delete-all` leaves both alone on purpose: they hold no data about use, only what the bridge
//! has already read, so deleted events are not read back in from Printernizer's log or job list.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::jobs::{Closing, Known, Tracked};
use crate::Result;
use crate::event::vocab::PrinterType;
use crate::store::{fmt_ts, parse_ts};

/// `bridge_state` key: the id of the newest export event of the last complete ingest.
pub(crate) const EXPORT_CURSOR: &str = "export_cursor";

/// Reads a `bridge_state` value.
pub(crate) fn get(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT value FROM bridge_state WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

/// Writes a `bridge_state` value.
pub(crate) fn set(tx: &Transaction<'_>, key: &str, value: &str) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO bridge_state (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
    Ok(())
}

fn ts(v: Option<String>) -> Option<DateTime<Utc>> {
    v.as_deref().and_then(parse_ts)
}

/// Every tracked job: open rows in full, closed ones as [`Known::Closed`].
pub(crate) fn load_jobs(conn: &Connection) -> Result<HashMap<String, Known>> {
    let mut stmt = conn.prepare_cached(
        "SELECT job_key, event_key, printer_key, printer_type, started_at, last_active_at,
                printing_seen_at, progressed, vanished, closed_at IS NOT NULL
         FROM bridge_jobs",
    )?;
    let mut rows = stmt.query([])?;
    let mut out = HashMap::new();
    while let Some(r) = rows.next()? {
        let key: String = r.get(0)?;
        let known = if r.get::<_, bool>(9)? {
            Known::Closed
        } else {
            Known::Open(Tracked {
                job_key: key.clone(),
                event_key: r.get(1)?,
                printer_key: r.get(2)?,
                printer_type: r
                    .get::<_, Option<String>>(3)?
                    .as_deref()
                    .and_then(PrinterType::from_word),
                started_at: ts(r.get(4)?),
                last_active_at: ts(r.get(5)?),
                printing_seen_at: ts(r.get(6)?),
                progressed: r.get(7)?,
                vanished: r.get(8)?,
            })
        };
        out.insert(key, known);
    }
    Ok(out)
}

/// Saves a poll's decisions: open rows upserted, closed rows marked closed with their outcome.
pub(crate) fn save_jobs(
    tx: &Transaction<'_>,
    open: &[Tracked],
    closed: &[(Tracked, Closing)],
    now: DateTime<Utc>,
) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO bridge_jobs (job_key, event_key, printer_key, printer_type, started_at,
                last_active_at, printing_seen_at, progressed, vanished, closed_at, outcome, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT(job_key) DO UPDATE SET
            event_key = excluded.event_key, printer_key = excluded.printer_key,
            printer_type = excluded.printer_type, started_at = excluded.started_at,
            last_active_at = excluded.last_active_at, printing_seen_at = excluded.printing_seen_at,
            progressed = excluded.progressed, vanished = excluded.vanished,
            closed_at = coalesce(closed_at, excluded.closed_at),
            outcome = coalesce(outcome, excluded.outcome), updated_at = excluded.updated_at",
    )?;
    let now_s = fmt_ts(now);
    let rows = open
        .iter()
        .map(|t| (t, None))
        .chain(closed.iter().map(|(t, c)| (t, Some(c.word()))));
    for (t, outcome) in rows {
        stmt.execute(params![
            t.job_key,
            t.event_key,
            t.printer_key,
            t.printer_type.map(PrinterType::as_str),
            t.started_at.map(fmt_ts),
            t.last_active_at.map(fmt_ts),
            t.printing_seen_at.map(fmt_ts),
            t.progressed,
            t.vanished,
            outcome.map(|_| now_s.clone()),
            outcome,
            now_s,
        ])?;
    }
    Ok(())
}

/// Forgets closed jobs closed before `cutoff` (past retention: a job that old is not counted
/// even if it were seen again).
pub(crate) fn prune_jobs(tx: &Transaction<'_>, cutoff: DateTime<Utc>) -> Result<usize> {
    Ok(tx.execute(
        "DELETE FROM bridge_jobs WHERE closed_at IS NOT NULL AND closed_at < ?1",
        [fmt_ts(cutoff)],
    )?)
}
