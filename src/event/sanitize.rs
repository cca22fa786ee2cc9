//! Allowlist sanitization: raw producer input in, an anonymous [`UsageEvent`] out.
//!
//! Rules (each is a property test in `tests/privacy.rs`):
//! * only the keys [`EventType::allowed_keys`] lists survive; every other key is dropped;
//! * string values are matched against the fixed vocabulary ([`super::vocab`]) and replaced by
//!   the vocabulary's word, or `other`; versions must look like versions; numbers must be in
//!   range; a value of the wrong type drops its key (the event itself is kept);
//! * `printer_id` is replaced by a salted SHA-256 hash that lives in its own column;
//! * the raw payload may be at most [`MAX_RAW_PAYLOAD_BYTES`] (checked before parsing), the
//!   sanitized metadata at most [`MAX_METADATA_BYTES`] (else the event is rejected, never
//!   truncated);
//! * a timestamp more than [`MAX_TIMESTAMP_SKEW`] in the future, older than the retention
//!   window, or unparseable is replaced by the receive time.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use thiserror::Error;
use uuid::Uuid;

use super::vocab::{
    Component, DeploymentMode, ErrorType, Feature, JobOutcome, Platform, PrinterType, Version,
};
use super::{EventType, Metadata, MetadataKey, RawEvent, UsageEvent};

/// Largest raw payload accepted; larger ones are rejected before parsing.
pub const MAX_RAW_PAYLOAD_BYTES: usize = 64 * 1024;
/// Largest sanitized metadata (serialized JSON) accepted.
pub const MAX_METADATA_BYTES: usize = 1024;
/// Largest accepted `duration_seconds` (one year).
pub const MAX_DURATION_SECONDS: u64 = 366 * 24 * 3600;
/// Largest accepted `file_size_mb` (1 TB).
pub const MAX_FILE_SIZE_MB: f64 = 1_000_000.0;
/// How far in the future a producer's timestamp may be before it is replaced.
pub const MAX_TIMESTAMP_SKEW: Duration = Duration::minutes(5);

/// Why an event was not stored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RejectReason {
    /// Not one of the 12 event types.
    #[error("unknown event type `{0}` (expected one of: {types})", types = type_list())]
    UnknownEventType(String),
    /// The raw payload is larger than [`MAX_RAW_PAYLOAD_BYTES`].
    #[error("payload of {0} bytes exceeds the limit of {MAX_RAW_PAYLOAD_BYTES} bytes")]
    PayloadTooLarge(usize),
    /// The payload is not valid JSON (or not UTF-8).
    #[error("payload is not valid JSON: {0}")]
    MalformedJson(String),
    /// The payload is JSON but not an object.
    #[error("metadata must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// The sanitized metadata is larger than [`MAX_METADATA_BYTES`].
    #[error("sanitized metadata of {0} bytes exceeds the limit of {MAX_METADATA_BYTES} bytes")]
    MetadataTooLarge(usize),
}

fn type_list() -> String {
    EventType::ALL.map(EventType::as_str).join(", ")
}

/// A short, printable excerpt of untrusted input for error messages (local logs only).
pub(crate) fn excerpt(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(40)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

/// Parses a raw metadata payload: size check first, then JSON, then "must be an object".
pub fn parse_metadata(bytes: &[u8]) -> Result<Value, RejectReason> {
    if bytes.len() > MAX_RAW_PAYLOAD_BYTES {
        return Err(RejectReason::PayloadTooLarge(bytes.len()));
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| RejectReason::MalformedJson(e.to_string()))?;
    match value {
        Value::Object(_) | Value::Null => Ok(value),
        other => Err(RejectReason::NotAnObject(json_kind(&other))),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Salted hash of a printer id: hex of the first 16 bytes of SHA-256(salt ‖ 0 ‖ id).
pub fn printer_hash(salt: &str, printer_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0u8]);
    h.update(printer_id.as_bytes());
    let digest = h.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Turns raw producer input into a stored event. Cheap to clone; holds the printer-hash salt.
#[derive(Clone)]
pub struct Sanitizer {
    salt: String,
    retention: Duration,
}

impl std::fmt::Debug for Sanitizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sanitizer")
            .field("salt", &"<secret>")
            .field("retention", &self.retention)
            .finish()
    }
}

impl Sanitizer {
    /// A sanitizer hashing printer ids with `salt`, accepting timestamps within `retention`.
    pub fn new(salt: impl Into<String>, retention: Duration) -> Self {
        Self {
            salt: salt.into(),
            retention,
        }
    }

    /// `printer_hash(salt, input)`: a keyed hash for anything that must be stable but anonymous.
    pub fn keyed_hash(&self, input: &str) -> String {
        printer_hash(&self.salt, input)
    }

    /// Validates and sanitizes one event received at `received_at`.
    pub fn sanitize(
        &self,
        raw: &RawEvent,
        received_at: DateTime<Utc>,
    ) -> Result<UsageEvent, RejectReason> {
        let event_type = EventType::parse(&raw.event_type)?;
        let empty = serde_json::Map::new();
        let object = match &raw.metadata {
            Value::Object(map) => map,
            Value::Null => &empty,
            other => return Err(RejectReason::NotAnObject(json_kind(other))),
        };

        let mut metadata = Metadata::default();
        for key in event_type.allowed_keys() {
            if let Some(value) = object.get(key.as_str()) {
                apply(&mut metadata, *key, value);
            }
        }
        let size = serde_json::to_vec(&metadata)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > MAX_METADATA_BYTES {
            return Err(RejectReason::MetadataTooLarge(size));
        }

        let printer_hash = object
            .get("printer_id")
            .and_then(|v| match v {
                Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .map(|id| printer_hash(&self.salt, &id));

        let id = raw
            .id
            .as_deref()
            .and_then(|s| Uuid::parse_str(s.trim()).ok())
            .filter(|u| !u.is_nil() && !u.is_max())
            .unwrap_or_else(Uuid::new_v4);

        Ok(UsageEvent {
            id,
            event_type,
            timestamp: self.plausible_time(raw.timestamp.as_deref(), received_at),
            metadata,
            printer_hash,
            submitted: false,
        })
    }

    fn plausible_time(&self, ts: Option<&str>, received_at: DateTime<Utc>) -> DateTime<Utc> {
        let Some(ts) = ts else { return received_at };
        // RFC 3339, or a naive ISO 8601 time (Python's `datetime.utcnow().isoformat()`) as UTC.
        match printernizer_stats_shared::time::parse_lenient(ts) {
            Some(t) => {
                if t > received_at + MAX_TIMESTAMP_SKEW || t < received_at - self.retention {
                    tracing::debug!(
                        timestamp = %t,
                        "event timestamp outside the plausible window; using the receive time"
                    );
                    received_at
                } else {
                    t
                }
            }
            None => {
                tracing::debug!("event timestamp is not RFC 3339; using the receive time");
                received_at
            }
        }
    }
}

/// Sets one metadata field from a raw value, if the value has the right type and range.
fn apply(m: &mut Metadata, key: MetadataKey, value: &Value) {
    let text = value.as_str();
    match key {
        MetadataKey::AppVersion => m.app_version = text.and_then(Version::parse),
        MetadataKey::PythonVersion => m.python_version = text.and_then(Version::parse),
        MetadataKey::Platform => m.platform = text.map(Platform::classify),
        MetadataKey::DeploymentMode => m.deployment_mode = text.map(DeploymentMode::classify),
        MetadataKey::PrinterType => m.printer_type = text.map(PrinterType::classify),
        MetadataKey::ErrorType => m.error_type = text.map(ErrorType::classify),
        MetadataKey::Component => m.component = text.map(Component::classify),
        MetadataKey::Feature => m.feature = text.map(Feature::classify),
        MetadataKey::Outcome => m.outcome = text.map(JobOutcome::classify),
        MetadataKey::DurationSeconds => {
            m.duration_seconds = value
                .as_u64()
                .filter(|d| *d <= MAX_DURATION_SECONDS)
                .or_else(|| {
                    // Accept whole-number floats such as 3600.0, nothing else.
                    value
                        .as_f64()
                        .filter(|f| {
                            f.fract() == 0.0 && (0.0..=MAX_DURATION_SECONDS as f64).contains(f)
                        })
                        .map(|f| f as u64)
                })
        }
        MetadataKey::FileSizeMb => {
            m.file_size_mb = value
                .as_f64()
                .filter(|f| f.is_finite() && (0.0..=MAX_FILE_SIZE_MB).contains(f))
                .map(|f| (f * 100.0).round() / 100.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        "2026-11-20T12:00:00Z".parse().expect("valid time")
    }

    #[test]
    fn drops_unknown_keys_and_hashes_printer_id() {
        let s = Sanitizer::new("salt", Duration::days(365));
        let raw = RawEvent::new(
            "job_completed",
            json!({"duration_seconds": 3600, "printer_type": "bambu_lab",
                   "file": "/home/u/benchy.3mf", "printer_id": "01S00A123456789"}),
        );
        let e = s.sanitize(&raw, now()).expect("accepted");
        assert_eq!(e.metadata.duration_seconds, Some(3600));
        assert_eq!(e.metadata.printer_type, Some(PrinterType::BambuLab));
        let stored = serde_json::to_string(&e).expect("serializes");
        assert!(!stored.contains("benchy"));
        assert!(!stored.contains("01S00A123456789"));
        assert_eq!(e.printer_hash.as_deref().map(str::len), Some(32));
        assert_ne!(
            printer_hash("a", "01S00A123456789"),
            printer_hash("b", "01S00A123456789")
        );
    }

    #[test]
    fn unknown_type_and_bad_shapes_are_rejected() {
        let s = Sanitizer::new("salt", Duration::days(365));
        assert!(matches!(
            s.sanitize(&RawEvent::new("not_a_type", json!({})), now()),
            Err(RejectReason::UnknownEventType(_))
        ));
        assert!(matches!(
            s.sanitize(&RawEvent::new("app_start", json!([1, 2])), now()),
            Err(RejectReason::NotAnObject(_))
        ));
        assert!(matches!(
            parse_metadata(&vec![b' '; MAX_RAW_PAYLOAD_BYTES + 1]),
            Err(RejectReason::PayloadTooLarge(_))
        ));
        assert!(matches!(
            parse_metadata(b"{nope"),
            Err(RejectReason::MalformedJson(_))
        ));
    }

    #[test]
    fn wrong_types_and_ranges_drop_the_key() {
        let s = Sanitizer::new("salt", Duration::days(365));
        let raw = RawEvent::new(
            "job_failed",
            json!({"duration_seconds": -5, "outcome": "Canceled", "error_type": {"x": 1}}),
        );
        let e = s.sanitize(&raw, now()).expect("accepted");
        assert_eq!(e.metadata.duration_seconds, None);
        assert_eq!(e.metadata.outcome, Some(JobOutcome::Cancelled));
        assert_eq!(e.metadata.error_type, None);
    }

    #[test]
    fn implausible_timestamps_fall_back_to_receive_time() {
        let s = Sanitizer::new("salt", Duration::days(30));
        let mut raw = RawEvent::new("app_start", json!({}));
        raw.timestamp = Some("2026-11-20T11:00:00Z".into());
        assert_eq!(
            s.sanitize(&raw, now()).expect("ok").timestamp,
            now() - Duration::hours(1)
        );
        raw.timestamp = Some("2026-11-20T11:30:00.123456".into());
        assert_eq!(
            s.sanitize(&raw, now()).expect("ok").timestamp,
            "2026-11-20T11:30:00.123456Z"
                .parse::<DateTime<Utc>>()
                .expect("time"),
            "naive ISO times are UTC"
        );
        for bad in ["2026-11-20T12:06:00Z", "2026-01-01T00:00:00Z", "yesterday"] {
            raw.timestamp = Some(bad.into());
            assert_eq!(
                s.sanitize(&raw, now()).expect("ok").timestamp,
                now(),
                "{bad}"
            );
        }
    }

    #[test]
    fn producer_uuid_is_kept_other_ids_are_replaced() {
        let s = Sanitizer::new("salt", Duration::days(30));
        let mut raw = RawEvent::new("app_start", json!({}));
        raw.id = Some("550e8400-e29b-41d4-a716-446655440000".into());
        assert_eq!(
            s.sanitize(&raw, now()).expect("ok").id.to_string(),
            "550e8400-e29b-41d4-a716-446655440000"
        );
        raw.id = Some("job-42".into());
        assert_ne!(
            s.sanitize(&raw, now()).expect("ok").id.to_string(),
            "job-42"
        );
    }
}
