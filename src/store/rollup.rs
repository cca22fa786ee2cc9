//! Hourly rollups: what makes aggregating a week independent of the number of stored events.
//!
//! The writer folds every inserted event into a [`RollupBatch`] and applies it in the same
//! transaction as the rows, so rollups and events never disagree. Per UTC hour (`period_start`
//! is the hour, `period_end` one hour later) `usage_aggregates` holds one row per metric:
//!
//! | metric              | value                                  |
//! |---------------------|----------------------------------------|
//! | `event:<type>`      | number of events of that type          |
//! | `error:<error_type>`| number of `error_occurred` events      |
//! | `feature:<feature>` | 1/0: the last feature state in the hour (`last_at` orders them) |
//!
//! `usage_fleet` holds the printers (salted hashes) seen per hour with their latest type and
//! the first and last time each was seen in that hour — enough to tell whether a printer was
//! seen in a partial hour at either edge of a range without reading events.
//!
//! Hours, not days: a report period starts wherever the previous one ended, and a rolling week
//! ends "now". A query over `[start, end)` sums the whole hours inside from the rollups and
//! counts only the partial hours at its edges from `usage_events` (index-only); on hour-aligned
//! ranges — the submission periods and the "this week" window — it reads rollups only.
//! Retention pruning deletes raw events but keeps the rollups.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{fmt_ts, hour_ceil, hour_floor, parse_ts};
use crate::Result;
use crate::event::vocab::Feature;
use crate::event::{EventType, Metadata, UsageEvent};

/// Names of rows in `usage_counters`.
pub mod counters {
    /// Events currently stored.
    pub const EVENTS_TOTAL: &str = "events_total";
    /// Stored events not yet part of an accepted report.
    pub const EVENTS_PENDING: &str = "events_pending";
    /// Messages rejected, across restarts (the `rejected_messages` sensor is
    /// `total_increasing`: it must not fall to 0 when the service restarts).
    pub const REJECTED_MESSAGES: &str = "rejected_messages";
}

#[derive(Debug, Clone, Copy)]
struct State {
    value: i64,
    last_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct FleetEntry {
    printer_type: Option<&'static str>,
    first_at: DateTime<Utc>,
    last_at: DateTime<Utc>,
}

/// Adds a printer sighting to its hour of `usage_fleet` (`?1` hour, `?2` hash, `?3` type or
/// NULL, `?4`/`?5` first and last seen): a known type is never replaced by NULL, and the
/// latest sighting's type wins.
const FLEET_UPSERT: &str =
    "INSERT INTO usage_fleet (period_start, printer_hash, printer_type, first_at, last_at)
     VALUES (?1, ?2, ?3, ?4, ?5)
     ON CONFLICT(period_start, printer_hash) DO UPDATE SET
        printer_type = CASE
            WHEN excluded.printer_type IS NOT NULL
                 AND (printer_type IS NULL OR excluded.last_at >= last_at)
            THEN excluded.printer_type ELSE printer_type END,
        first_at = min(first_at, excluded.first_at),
        last_at = max(last_at, excluded.last_at)";

/// Rollup changes of one write batch.
#[derive(Debug, Default)]
pub(crate) struct RollupBatch {
    counts: HashMap<(DateTime<Utc>, String), (i64, DateTime<Utc>)>,
    states: HashMap<(DateTime<Utc>, String), State>,
    fleet: HashMap<(DateTime<Utc>, String), FleetEntry>,
    events: i64,
}

impl RollupBatch {
    /// Folds one newly inserted event in.
    pub(crate) fn add(&mut self, e: &UsageEvent) {
        let hour = hour_floor(e.timestamp);
        let ts = e.timestamp;
        let mut count = |metric: String| {
            let entry = self.counts.entry((hour, metric)).or_insert((0, ts));
            entry.0 += 1;
            entry.1 = entry.1.max(ts);
        };
        count(format!("event:{}", e.event_type));
        if e.event_type == EventType::ErrorOccurred {
            let kind = e.metadata.error_type.map_or("unknown", |t| t.as_str());
            count(format!("error:{kind}"));
        }
        if let (Some(feature), Some(on)) = (e.metadata.feature, feature_state(e.event_type))
            && feature != Feature::Other
        {
            let state = State {
                value: i64::from(on),
                last_at: ts,
            };
            self.states
                .entry((hour, format!("feature:{feature}")))
                .and_modify(|s| {
                    if ts >= s.last_at {
                        *s = state;
                    }
                })
                .or_insert(state);
        }
        if let Some(hash) = &e.printer_hash {
            let typ = e.metadata.printer_type.map(|t| t.as_str());
            self.fleet
                .entry((hour, hash.clone()))
                .and_modify(|f| {
                    if typ.is_some() && (f.printer_type.is_none() || ts >= f.last_at) {
                        f.printer_type = typ;
                    }
                    f.first_at = f.first_at.min(ts);
                    f.last_at = f.last_at.max(ts);
                })
                .or_insert(FleetEntry {
                    printer_type: typ,
                    first_at: ts,
                    last_at: ts,
                });
        }
        self.events += 1;
    }

    /// Whether nothing was added.
    pub(crate) fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// Writes the batch into the rollup tables (inside the caller's transaction).
    pub(crate) fn apply(&self, tx: &Transaction<'_>, now: DateTime<Utc>) -> Result<()> {
        let now = fmt_ts(now);
        let mut count_stmt = tx.prepare_cached(
            "INSERT INTO usage_aggregates (period_start, period_end, metric, value, last_at, computed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(period_start, metric) DO UPDATE SET
                value = value + excluded.value,
                last_at = max(coalesce(last_at, ''), excluded.last_at),
                computed_at = excluded.computed_at",
        )?;
        for ((hour, metric), (n, last)) in &self.counts {
            count_stmt.execute(params![
                fmt_ts(*hour),
                fmt_ts(*hour + Duration::hours(1)),
                metric,
                n,
                fmt_ts(*last),
                now
            ])?;
        }
        let mut state_stmt = tx.prepare_cached(
            "INSERT INTO usage_aggregates (period_start, period_end, metric, value, last_at, computed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(period_start, metric) DO UPDATE SET
                value = CASE WHEN excluded.last_at >= coalesce(last_at, '') THEN excluded.value ELSE value END,
                last_at = max(coalesce(last_at, ''), excluded.last_at),
                computed_at = excluded.computed_at",
        )?;
        for ((hour, metric), s) in &self.states {
            state_stmt.execute(params![
                fmt_ts(*hour),
                fmt_ts(*hour + Duration::hours(1)),
                metric,
                s.value,
                fmt_ts(s.last_at),
                now
            ])?;
        }
        let mut fleet_stmt = tx.prepare_cached(FLEET_UPSERT)?;
        for ((hour, hash), f) in &self.fleet {
            fleet_stmt.execute(params![
                fmt_ts(*hour),
                hash,
                f.printer_type,
                fmt_ts(f.first_at),
                fmt_ts(f.last_at)
            ])?;
        }
        add_counter(tx, counters::EVENTS_TOTAL, self.events)?;
        add_counter(tx, counters::EVENTS_PENDING, self.events)?;
        Ok(())
    }
}

/// Records printers seen at `at` without an event (the Printernizer bridge polls its printer
/// list): each counts for the fleet of `at`'s hour, exactly as an event naming it would. A
/// `None` type never replaces a known one.
pub(crate) fn record_sightings(
    tx: &Transaction<'_>,
    at: DateTime<Utc>,
    printers: &[(String, Option<&'static str>)],
) -> Result<()> {
    let hour = fmt_ts(hour_floor(at));
    let at = fmt_ts(at);
    let mut stmt = tx.prepare_cached(FLEET_UPSERT)?;
    for (hash, typ) in printers {
        stmt.execute(params![hour, hash, typ, at, at])?;
    }
    Ok(())
}

fn feature_state(t: EventType) -> Option<bool> {
    match t {
        EventType::FeatureEnabled => Some(true),
        EventType::FeatureDisabled => Some(false),
        _ => None,
    }
}

/// Adds `delta` to a running counter.
pub(crate) fn add_counter(conn: &Connection, name: &str, delta: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO usage_counters (name, value) VALUES (?1, ?2)
         ON CONFLICT(name) DO UPDATE SET value = max(0, value + excluded.value)",
    )?
    .execute(params![name, delta])?;
    Ok(())
}

/// Reads a running counter (0 when never written).
pub fn counter(conn: &Connection, name: &str) -> Result<u64> {
    let v: Option<i64> = conn
        .prepare_cached("SELECT value FROM usage_counters WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    Ok(v.unwrap_or(0).max(0) as u64)
}

/// `[start, end)` split into whole hours (from rollups) and partial-hour edges (from events).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Split {
    /// Whole hours `[h0, h1)`, if any.
    pub(crate) hours: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Partial-hour ranges to count from raw events.
    pub(crate) edges: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

pub(crate) fn split(start: DateTime<Utc>, end: DateTime<Utc>) -> Split {
    if end <= start {
        return Split {
            hours: None,
            edges: vec![],
        };
    }
    let (h0, h1) = (hour_ceil(start), hour_floor(end));
    if h0 >= h1 {
        return Split {
            hours: None,
            edges: vec![(start, end)],
        };
    }
    let edges = [(start, h0), (h1, end)]
        .into_iter()
        .filter(|(a, b)| a < b)
        .collect();
    Split {
        hours: Some((h0, h1)),
        edges,
    }
}

/// Event counts of a range.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// Events per type.
    pub by_type: BTreeMap<EventType, u64>,
    /// `error_occurred` events per error type.
    pub errors: BTreeMap<String, u64>,
}

impl Counts {
    /// Count of one type.
    pub fn of(&self, t: EventType) -> u64 {
        self.by_type.get(&t).copied().unwrap_or(0)
    }
}

/// Counts events per type and errors per error type in `[start, end)`.
pub fn counts(conn: &Connection, start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Counts> {
    let s = split(start, end);
    let mut out = Counts::default();
    let mut add = |metric: &str, n: i64| {
        let n = n.max(0) as u64;
        if let Some(t) = metric.strip_prefix("event:") {
            if let Ok(t) = EventType::parse(t) {
                *out.by_type.entry(t).or_default() += n;
            }
        } else if let Some(kind) = metric.strip_prefix("error:") {
            *out.errors.entry(kind.to_owned()).or_default() += n;
        }
    };
    if let Some((h0, h1)) = s.hours {
        let mut stmt = conn.prepare_cached(
            "SELECT metric, sum(value) FROM usage_aggregates
             WHERE period_start >= ?1 AND period_start < ?2
               AND (metric >= 'error:' AND metric < 'error;' OR metric >= 'event:' AND metric < 'event;')
             GROUP BY metric",
        )?;
        let mut rows = stmt.query(params![fmt_ts(h0), fmt_ts(h1)])?;
        while let Some(r) = rows.next()? {
            add(&r.get::<_, String>(0)?, r.get(1)?);
        }
    }
    for (a, b) in s.edges {
        let mut stmt = conn.prepare_cached(
            "SELECT event_type, count(*) FROM usage_events
             WHERE timestamp >= ?1 AND timestamp < ?2 GROUP BY event_type",
        )?;
        let mut rows = stmt.query(params![fmt_ts(a), fmt_ts(b)])?;
        while let Some(r) = rows.next()? {
            add(&format!("event:{}", r.get::<_, String>(0)?), r.get(1)?);
        }
        let mut stmt = conn.prepare_cached(
            "SELECT coalesce(json_extract(metadata, '$.error_type'), 'unknown'), count(*)
             FROM usage_events
             WHERE event_type = 'error_occurred' AND timestamp >= ?1 AND timestamp < ?2
             GROUP BY 1",
        )?;
        let mut rows = stmt.query(params![fmt_ts(a), fmt_ts(b)])?;
        while let Some(r) = rows.next()? {
            add(&format!("error:{}", r.get::<_, String>(0)?), r.get(1)?);
        }
    }
    Ok(out)
}

/// Printers (salted hashes) seen in `[start, end)`, each with its latest known type
/// (`None` when no event ever named it).
pub fn fleet(
    conn: &Connection,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<BTreeMap<String, Option<String>>> {
    let s = split(start, end);
    let mut seen: HashMap<String, (Option<String>, String)> = HashMap::new();
    let mut note = |hash: String, typ: Option<String>, at: String| {
        let e = seen.entry(hash).or_insert((None, String::new()));
        if typ.is_some() && (e.0.is_none() || at >= e.1) {
            e.0 = typ;
        }
        if at > e.1 {
            e.1 = at;
        }
    };
    // Whole hours, and partial hours at the edges told apart by first/last seen: a printer
    // was seen in [start, next hour) iff its last sighting in start's hour is >= start, and
    // in [end's hour, end) iff its first sighting in end's hour is < end.
    let mut ranges: Vec<(&str, String, String)> = Vec::new();
    if let Some((h0, h1)) = s.hours {
        ranges.push((
            "period_start >= ?1 AND period_start < ?2",
            fmt_ts(h0),
            fmt_ts(h1),
        ));
    }
    for (a, b) in &s.edges {
        if s.hours.is_none() {
            // A range inside one hour: only the events can tell.
            let mut stmt = conn.prepare_cached(
                "SELECT printer_hash, json_extract(metadata, '$.printer_type'), timestamp
                 FROM usage_events
                 WHERE timestamp >= ?1 AND timestamp < ?2 AND printer_hash IS NOT NULL",
            )?;
            let mut rows = stmt.query(params![fmt_ts(*a), fmt_ts(*b)])?;
            while let Some(r) = rows.next()? {
                note(r.get(0)?, r.get(1)?, r.get(2)?);
            }
        } else if *a == start {
            ranges.push((
                "period_start = ?1 AND last_at >= ?2",
                fmt_ts(hour_floor(*a)),
                fmt_ts(*a),
            ));
        } else {
            ranges.push((
                "period_start = ?1 AND first_at < ?2",
                fmt_ts(*a),
                fmt_ts(*b),
            ));
        }
    }
    for (filter, p1, p2) in ranges {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT printer_hash, printer_type, last_at FROM usage_fleet WHERE {filter}"
        ))?;
        let mut rows = stmt.query(params![p1, p2])?;
        while let Some(r) = rows.next()? {
            note(r.get(0)?, r.get(1)?, r.get(2)?);
        }
    }
    let mut fallback = conn.prepare_cached(
        "SELECT printer_type FROM usage_fleet
         WHERE printer_hash = ?1 AND printer_type IS NOT NULL AND period_start < ?2
         ORDER BY period_start DESC LIMIT 1",
    )?;
    let mut out = BTreeMap::new();
    for (hash, (typ, _)) in seen {
        let typ = match typ {
            Some(t) => Some(t),
            None => fallback
                .query_row(params![hash, fmt_ts(end)], |r| r.get::<_, String>(0))
                .optional()?,
        };
        out.insert(hash, typ);
    }
    Ok(out)
}

/// The last known state of each feature as of `end` (features never toggled are absent).
pub fn features_as_of(conn: &Connection, end: DateTime<Utc>) -> Result<BTreeMap<Feature, bool>> {
    let h1 = hour_floor(end);
    let mut out = BTreeMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT value FROM usage_aggregates
         WHERE metric = ?1 AND period_start < ?2 ORDER BY period_start DESC LIMIT 1",
    )?;
    for word in Feature::WORDS {
        let Some(feature) = Feature::from_word(word).filter(|f| *f != Feature::Other) else {
            continue;
        };
        let v: Option<i64> = stmt
            .query_row(params![format!("feature:{word}"), fmt_ts(h1)], |r| r.get(0))
            .optional()?;
        if let Some(v) = v {
            out.insert(feature, v != 0);
        }
    }
    if h1 < end {
        let mut stmt = conn.prepare_cached(
            "SELECT event_type, metadata FROM usage_events
             WHERE event_type IN ('feature_enabled', 'feature_disabled')
               AND timestamp >= ?1 AND timestamp < ?2
             ORDER BY timestamp",
        )?;
        let mut rows = stmt.query(params![fmt_ts(h1), fmt_ts(end)])?;
        while let Some(r) = rows.next()? {
            let t = EventType::parse(&r.get::<_, String>(0)?).ok();
            let m = parse_metadata(r.get::<_, Option<String>>(1)?);
            if let (Some(on), Some(f)) = (t.and_then(feature_state), m.feature)
                && f != Feature::Other
            {
                out.insert(f, on);
            }
        }
    }
    Ok(out)
}

/// Seconds Printernizer was up inside `[start, end)`, measured from `app_start` / `app_shutdown`.
///
/// An up-interval starts at `app_start` and ends at `app_shutdown`. When an `app_start` follows
/// another without a shutdown (a crash), the earlier run is taken to have ended at the last
/// event recorded before the new start — the last evidence that it was alive; nothing is
/// guessed beyond that. A run still open at `end` counts up to `end`.
pub fn uptime_seconds(conn: &Connection, start: DateTime<Utc>, end: DateTime<Utc>) -> Result<i64> {
    if end <= start {
        return Ok(0);
    }
    let before: Option<String> = conn
        .prepare_cached(
            "SELECT event_type FROM usage_events
             WHERE event_type IN ('app_start', 'app_shutdown') AND timestamp < ?1
             ORDER BY timestamp DESC LIMIT 1",
        )?
        .query_row([fmt_ts(start)], |r| r.get(0))
        .optional()?;
    let mut up_since = (before.as_deref() == Some("app_start")).then_some(start);
    let mut total = Duration::zero();
    let mut stmt = conn.prepare_cached(
        "SELECT event_type, timestamp FROM usage_events
         WHERE event_type IN ('app_start', 'app_shutdown') AND timestamp >= ?1 AND timestamp < ?2
         ORDER BY timestamp",
    )?;
    let mut last_alive = conn.prepare_cached(
        "SELECT max(timestamp) FROM usage_events WHERE timestamp >= ?1 AND timestamp < ?2",
    )?;
    let mut rows = stmt.query(params![fmt_ts(start), fmt_ts(end)])?;
    while let Some(r) = rows.next()? {
        let kind: String = r.get(0)?;
        let Some(at) = parse_ts(&r.get::<_, String>(1)?) else {
            continue;
        };
        match (kind.as_str(), up_since) {
            ("app_start", Some(since)) => {
                let alive: Option<String> =
                    last_alive.query_row(params![fmt_ts(since), fmt_ts(at)], |r| r.get(0))?;
                let alive = alive.as_deref().and_then(parse_ts).unwrap_or(since);
                total += alive.max(since) - since;
                up_since = Some(at);
            }
            ("app_start", None) => up_since = Some(at),
            ("app_shutdown", Some(since)) => {
                total += at - since;
                up_since = None;
            }
            _ => {}
        }
    }
    if let Some(since) = up_since {
        total += end - since;
    }
    Ok(total.num_seconds().max(0))
}

/// Metadata of the latest `app_start` before `end`.
pub fn latest_app_start(conn: &Connection, end: DateTime<Utc>) -> Result<Option<Metadata>> {
    let m: Option<Option<String>> = conn
        .prepare_cached(
            "SELECT metadata FROM usage_events WHERE event_type = 'app_start' AND timestamp < ?1
             ORDER BY timestamp DESC LIMIT 1",
        )?
        .query_row([fmt_ts(end)], |r| r.get(0))
        .optional()?;
    Ok(m.map(parse_metadata))
}

/// Parses stored metadata; stored metadata was sanitized, so a failure means an old or
/// hand-edited row and yields empty metadata.
pub(crate) fn parse_metadata(text: Option<String>) -> Metadata {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("valid time")
    }

    #[test]
    fn split_uses_whole_hours_and_edges() {
        let s = split(t("2026-11-01T10:30:00Z"), t("2026-11-01T13:15:00Z"));
        assert_eq!(
            s.hours,
            Some((t("2026-11-01T11:00:00Z"), t("2026-11-01T13:00:00Z")))
        );
        assert_eq!(
            s.edges,
            vec![
                (t("2026-11-01T10:30:00Z"), t("2026-11-01T11:00:00Z")),
                (t("2026-11-01T13:00:00Z"), t("2026-11-01T13:15:00Z"))
            ]
        );
        let aligned = split(t("2026-11-01T10:00:00Z"), t("2026-11-08T10:00:00Z"));
        assert!(aligned.edges.is_empty());
        let inside = split(t("2026-11-01T10:10:00Z"), t("2026-11-01T10:20:00Z"));
        assert_eq!(inside.hours, None);
        assert_eq!(inside.edges.len(), 1);
        assert_eq!(
            split(t("2026-11-02T00:00:00Z"), t("2026-11-01T00:00:00Z")).edges,
            vec![]
        );
    }
}
