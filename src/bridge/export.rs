//! Printernizer's usage-statistics export, read as a stream, and its events mapped onto ours.
//!
//! `GET /api/v1/usage-stats/export` is the whole log, newest first, pretty-printed and never
//! pruned: `{"events": [...], "settings": {...}, "exported_at": …, "export_version": …}`. It is
//! parsed with a serde visitor straight from the response body (on a blocking thread), one
//! event at a time: a 100 000-event export (≈ 20 MB) never exists in memory as a whole.
//! `settings` (Printernizer's own installation id) is skipped unread — or, usually, never
//! reached: reading stops at the cursor, the newest event of the last complete ingest, because
//! everything after it (older) was stored then.
//!
//! Mapping ([`map_log_event`]): the event keeps Printernizer's UUID (a redelivered event is
//! stored once, across our restarts too) and its timestamp (naive times are UTC); only the keys
//! our allowlist has for its type are copied, then the sanitizer applies the allowlist again.
//! `job_*` entries are skipped (jobs come from `/api/v1/jobs`, where each job has an id; the
//! log's entries have none and would count jobs twice); events older than `retention.days`
//! are skipped, never re-dated.

use std::borrow::Cow;
use std::fmt;
use std::io::Read;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::event::{EventType, MAX_RAW_PAYLOAD_BYTES, MetadataKey, RawEvent};

/// One event of the export, as Printernizer wrote it (only what is read).
#[derive(Debug, Deserialize)]
pub(crate) struct LogEvent {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    event_type: Option<String>,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    metadata: Option<Box<RawValue>>,
}

impl LogEvent {
    /// Printernizer's id of the event, as sent.
    pub(crate) fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }
}

/// Why an export entry is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skip {
    /// A `job_*` entry: jobs come from `/api/v1/jobs`.
    Job,
    /// Older than `retention.days`.
    TooOld,
    /// A type we do not record.
    Unrecorded,
    /// No UUID, no parseable timestamp, or not an event object.
    Malformed,
}

/// What an export entry becomes.
#[derive(Debug)]
pub(crate) enum Mapped {
    /// An event to sanitize and store.
    Store(RawEvent),
    /// Not stored.
    Skip(Skip),
}

/// Parses a Printernizer timestamp: RFC 3339, or naive ISO 8601 (`T` or a space) as UTC.
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    printernizer_stats_shared::time::parse_lenient(s)
}

/// Maps one export entry (see the module docs). `cutoff`: the oldest time still kept.
pub(crate) fn map_log_event(event: LogEvent, cutoff: DateTime<Utc>) -> Mapped {
    let Some(id) = event
        .id
        .as_deref()
        .and_then(|s| Uuid::parse_str(s.trim()).ok())
        .filter(|u| !u.is_nil() && !u.is_max())
    else {
        return Mapped::Skip(Skip::Malformed);
    };
    let Some(name) = event.event_type.as_deref() else {
        return Mapped::Skip(Skip::Malformed);
    };
    let event_type = match name {
        "job_created" | "job_started" | "job_completed" | "job_failed" | "job_cancelled" => {
            return Mapped::Skip(Skip::Job);
        }
        other => match EventType::parse(other) {
            Ok(t) => t,
            Err(_) => return Mapped::Skip(Skip::Unrecorded),
        },
    };
    let Some(at) = event.timestamp.as_deref().and_then(parse_time) else {
        return Mapped::Skip(Skip::Malformed);
    };
    if at < cutoff {
        return Mapped::Skip(Skip::TooOld);
    }
    let metadata = match event.metadata {
        None => Map::new(),
        Some(raw) if raw.get().len() > MAX_RAW_PAYLOAD_BYTES => {
            return Mapped::Skip(Skip::Malformed);
        }
        Some(raw) => match serde_json::from_str::<Value>(raw.get()) {
            Ok(Value::Object(m)) => allowlisted(event_type, &m),
            Ok(Value::Null) => Map::new(),
            _ => return Mapped::Skip(Skip::Malformed),
        },
    };
    Mapped::Store(RawEvent {
        event_type: event_type.as_str().to_owned(),
        id: Some(id.to_string()),
        timestamp: Some(at.to_rfc3339()),
        metadata: Value::Object(metadata),
    })
}

/// The keys our allowlist has for `event_type`, copied; `duration_minutes` becomes
/// `duration_seconds`; a `printer_type` of `unknown` (Printernizer's printer events always say
/// so) is left out, so it can never replace a known type.
fn allowlisted(event_type: EventType, m: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for key in event_type.allowed_keys() {
        if let Some(v) = m.get(key.as_str()) {
            if *key == MetadataKey::PrinterType
                && v.as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case("unknown"))
            {
                continue;
            }
            out.insert(key.as_str().to_owned(), v.clone());
        }
    }
    if event_type
        .allowed_keys()
        .contains(&MetadataKey::DurationSeconds)
        && !out.contains_key("duration_seconds")
        && let Some(minutes) = m.get("duration_minutes").and_then(Value::as_f64)
    {
        out.insert("duration_seconds".into(), json!((minutes * 60.0).round()));
    }
    out
}

/// Whether to go on reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Read the next event.
    Continue,
    /// Stop reading (the rest of the body is never read).
    Stop,
}

/// What reading the export came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ReadSummary {
    /// Entries handed to the callback.
    pub(crate) entries: u64,
    /// Entries that were not event objects (skipped).
    pub(crate) malformed: u64,
    /// Whether the callback stopped the reading.
    pub(crate) stopped: bool,
}

/// Reading the export failed.
#[derive(Debug, thiserror::Error)]
#[error("Printernizer's usage-statistics export cannot be read: {0}")]
pub struct ExportError(String);

impl ExportError {
    pub(crate) fn new(detail: String) -> Self {
        Self(detail)
    }
}

const STOP_MARKER: &str = "\u{0}printernizer-stats: stop reading";

/// Reads `{"events": [...], ...}` from `reader`, calling `each` for every event in order.
pub(crate) fn for_each_event<R: Read>(
    reader: R,
    mut each: impl FnMut(LogEvent) -> Flow,
) -> Result<ReadSummary, ExportError> {
    let mut summary = ReadSummary::default();
    let mut found_events = false;
    let mut de = serde_json::Deserializer::from_reader(reader);
    let result = de::Deserializer::deserialize_map(
        &mut de,
        Root {
            each: &mut each,
            summary: &mut summary,
            found_events: &mut found_events,
        },
    );
    match result {
        Ok(()) => {}
        Err(_) if summary.stopped => return Ok(summary),
        Err(e) => return Err(ExportError(e.to_string())),
    }
    if !found_events {
        return Err(ExportError("the answer has no `events` list".into()));
    }
    de.end().map_err(|e| ExportError(e.to_string()))?;
    Ok(summary)
}

struct Root<'a, F> {
    each: &'a mut F,
    summary: &'a mut ReadSummary,
    found_events: &'a mut bool,
}

impl<'de, F: FnMut(LogEvent) -> Flow> Visitor<'de> for Root<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with an `events` list")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "events" {
                *self.found_events = true;
                map.next_value_seed(Events {
                    each: &mut *self.each,
                    summary: &mut *self.summary,
                })?;
            } else {
                // `settings` (Printernizer's installation id) and the rest: parsed over, unkept.
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

struct Events<'a, F> {
    each: &'a mut F,
    summary: &'a mut ReadSummary,
}

impl<'de, F: FnMut(LogEvent) -> Flow> DeserializeSeed<'de> for Events<'_, F> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(LogEvent) -> Flow> Visitor<'de> for Events<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // Each entry is read as raw JSON first, so one malformed entry is skipped alone.
        while let Some(raw) = seq.next_element::<Box<RawValue>>()? {
            self.summary.entries += 1;
            let Ok(event) = serde_json::from_str::<LogEvent>(raw.get()) else {
                self.summary.malformed += 1;
                continue;
            };
            if (self.each)(event) == Flow::Stop {
                self.summary.stopped = true;
                return Err(de::Error::custom(STOP_MARKER));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    #[test]
    fn timestamps_naive_are_utc() {
        let want = t("2026-12-01T20:35:56.153080Z");
        assert_eq!(parse_time("2026-12-01T20:35:56.153080"), Some(want));
        assert_eq!(parse_time("2026-12-01 20:35:56.153080"), Some(want));
        assert_eq!(
            parse_time("2026-12-01T20:35:56"),
            Some(t("2026-12-01T20:35:56Z"))
        );
        assert_eq!(
            parse_time("2026-12-01T21:35:56+01:00"),
            Some(t("2026-12-01T20:35:56Z"))
        );
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn streaming_reads_events_in_order_and_skips_settings() {
        let body = br#"{"events": [{"id": "c2554a04-2214-4bad-9706-77ab4f4efa60", "event_type": "app_start",
            "timestamp": "2026-12-01T20:38:24.221125", "metadata": {"app_version": "2.42.0"}}, 7,
            {"id": "7c47d23a-2655-4509-b815-b6a20f05640f", "event_type": "printer_connected",
            "timestamp": "2026-12-01T20:37:54.185890", "metadata": {"printer_type": "unknown"}}],
            "settings": {"installation_id": "8b4f3b55-f3f6-413c-bb48-d12c2c177e28"}, "export_version": "1.0"}"#;
        let mut seen = Vec::new();
        let summary = for_each_event(&body[..], |e| {
            seen.push(map_log_event(e, t("2026-01-01T00:00:00Z")));
            Flow::Continue
        })
        .expect("reads");
        assert_eq!(summary.entries, 3);
        assert_eq!(summary.malformed, 1);
        assert_eq!(seen.len(), 2);
        let Mapped::Store(connected) = &seen[1] else {
            panic!("stored")
        };
        assert_eq!(
            connected.metadata,
            json!({}),
            "unknown printer type dropped"
        );

        let mut n = 0;
        let summary = for_each_event(&body[..], |_| {
            n += 1;
            Flow::Stop
        })
        .expect("stops");
        assert!(summary.stopped);
        assert_eq!(n, 1);
        assert!(for_each_event(&b"{\"other\": 1}"[..], |_| Flow::Continue).is_err());
        assert!(for_each_event(&b"<html>"[..], |_| Flow::Continue).is_err());
        assert!(for_each_event(&b"{\"events\": [ {\"id\": "[..], |_| Flow::Continue).is_err());
    }

    #[test]
    fn mapping_follows_the_allowlist() {
        let cutoff = t("2026-11-01T00:00:00Z");
        let ev = |kind: &str, ts: &str, meta: Value| LogEvent {
            id: Some("66ce3410-a589-4c51-8fd9-8ef4496405b8".into()),
            event_type: Some(kind.into()),
            timestamp: Some(ts.into()),
            metadata: Some(RawValue::from_string(meta.to_string()).expect("raw")),
        };
        let Mapped::Store(up) = map_log_event(
            ev(
                "file_uploaded",
                "2026-12-01T20:35:56.432317",
                json!({"file_size_mb": 0.01, "is_business": true}),
            ),
            cutoff,
        ) else {
            panic!("stored")
        };
        assert_eq!(up.metadata, json!({"file_size_mb": 0.01}));
        assert_eq!(
            up.timestamp.as_deref(),
            Some("2026-12-01T20:35:56.432317+00:00")
        );
        assert!(matches!(
            map_log_event(
                ev(
                    "job_completed",
                    "2026-12-01T20:35:56",
                    json!({"duration_minutes": 3})
                ),
                cutoff
            ),
            Mapped::Skip(Skip::Job)
        ));
        assert!(matches!(
            map_log_event(ev("app_start", "2026-10-01T00:00:00", json!({})), cutoff),
            Mapped::Skip(Skip::TooOld)
        ));
        assert!(matches!(
            map_log_event(ev("print_paused", "2026-12-01T00:00:00", json!({})), cutoff),
            Mapped::Skip(Skip::Unrecorded)
        ));
        let Mapped::Store(down) = map_log_event(
            ev(
                "app_shutdown",
                "2026-12-01T00:00:00",
                json!({"duration_minutes": 2}),
            ),
            cutoff,
        ) else {
            panic!("stored")
        };
        assert_eq!(down.metadata, json!({"duration_seconds": 120.0}));
    }
}
