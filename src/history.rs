//! History for the web page: events per UTC day and type (from the hourly rollups, so it
//! survives retention pruning), and the last delivery attempts of reports.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::event::EventType;
use crate::store::fmt_ts;

/// Longest history window.
pub const MAX_DAYS: u32 = 365;
/// Submission attempts returned.
pub const ATTEMPTS: usize = 20;

/// Events of one UTC day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Day {
    /// The day.
    pub date: NaiveDate,
    /// Events per type (all 12 types, zeros included).
    pub counts: BTreeMap<String, u64>,
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// When.
    pub attempted_at: String,
    /// Report period start.
    pub period_start: Option<String>,
    /// Report period end.
    pub period_end: Option<String>,
    /// The server's HTTP status, if it answered.
    pub http_status: Option<u16>,
    /// `accepted`, `retry` or `refused`.
    pub outcome: String,
    /// Why it was not accepted.
    pub detail: Option<String>,
}

/// `GET /history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Oldest first, `days` entries ending today.
    pub days: Vec<Day>,
    /// Newest first.
    pub submissions: Vec<Attempt>,
}

/// The last `days` UTC days (today included) and the last [`ATTEMPTS`] attempts.
pub fn history(conn: &Connection, now: DateTime<Utc>, days: u32) -> Result<History> {
    let days = days.clamp(1, MAX_DAYS);
    let today = now.date_naive();
    let first = today - Duration::days(i64::from(days) - 1);
    let zero: BTreeMap<String, u64> = EventType::ALL
        .iter()
        .map(|t| (t.as_str().to_owned(), 0))
        .collect();
    let mut by_day: BTreeMap<NaiveDate, BTreeMap<String, u64>> = (0..days)
        .map(|i| (first + Duration::days(i64::from(i)), zero.clone()))
        .collect();
    let mut stmt = conn.prepare(
        "SELECT substr(period_start, 1, 10), substr(metric, 7), sum(value) FROM usage_aggregates
          WHERE period_start >= ?1 AND metric >= 'event:' AND metric < 'event;'
          GROUP BY 1, 2",
    )?;
    let start = fmt_ts(first.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    let mut rows = stmt.query([start])?;
    while let Some(r) = rows.next()? {
        let (day, typ, n): (String, String, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
        if let Ok(day) = NaiveDate::parse_from_str(&day, "%Y-%m-%d")
            && let Some(slot) = by_day.get_mut(&day).and_then(|c| c.get_mut(&typ))
        {
            *slot += n.max(0) as u64;
        }
    }
    let mut stmt = conn.prepare(
        "SELECT attempted_at, period_start, period_end, http_status, outcome, detail
           FROM usage_submission_log ORDER BY id DESC LIMIT ?1",
    )?;
    let submissions = stmt
        .query_map([ATTEMPTS as i64], |r| {
            Ok(Attempt {
                attempted_at: r.get(0)?,
                period_start: r.get(1)?,
                period_end: r.get(2)?,
                http_status: r.get(3)?,
                outcome: r.get(4)?,
                detail: r.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(History {
        days: by_day
            .into_iter()
            .map(|(date, counts)| Day { date, counts })
            .collect(),
        submissions,
    })
}
