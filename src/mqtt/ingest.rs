//! The ingest contract: `<printernizer_prefix>/events/<name>` payloads → [`RawEvent`]s.
//!
//! Accepted names (see `docs/mqtt.md`):
//! * the 12 event types, payload = the metadata object, optionally wrapped as
//!   `{"id": UUID, "timestamp": RFC3339, "metadata": {...}}` (top-level `id`/`timestamp` are
//!   read in both forms);
//! * Printernizer's own event-bus names, mapped onto those types (table in [`map_event`]).
//!
//! Everything else is [`Mapped::Ignored`]. Only allowlisted fields are copied into the mapped
//! metadata; the sanitizer then applies the allowlist of the target type on top.

use serde_json::{Map, Value, json};

use crate::event::{EventType, RawEvent, RejectReason, parse_metadata};

/// What an incoming event message becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    /// An event to sanitize and store.
    Event(RawEvent),
    /// A name we do not record (e.g. `printer_status_update`); acknowledged and counted.
    Ignored,
}

fn text(o: &Map<String, Value>, key: &str) -> Option<String> {
    o.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// Copies `keys` that exist from `from` into a new object.
fn pick(from: &Map<String, Value>, keys: &[&str]) -> Map<String, Value> {
    keys.iter()
        .filter_map(|k| from.get(*k).map(|v| ((*k).to_owned(), v.clone())))
        .collect()
}

/// Maps one message on `<prefix>/events/<name>` to an event.
///
/// | name | becomes |
/// |---|---|
/// | any of the 12 event types (except `job_completed`, below) | itself |
/// | `printer_connected` / `printer_disconnected` `{printer_id, type}` | same type, `printer_type` from `type` |
/// | `job_created`, `job_started` | `job_created` |
/// | `job_completed` `{status}` | `completed`/none → `job_completed`; `failed` → `job_failed`; `cancelled` → `job_failed` with outcome `cancelled`; duration from `duration_seconds` or `duration_minutes` |
/// | `file_download_complete` / `file_upload_complete` `{file_size}` (bytes) | `file_downloaded` / `file_uploaded` with `file_size_mb` |
/// | `file_download_failed` / `file_upload_failed` | `error_occurred` (`download_failed`/`upload_failed`) |
/// | `printer_connection_progress` `{status: failed\|error}` | `error_occurred` (`connection_failed`, `printer_service`) |
pub fn map_event(name: &str, payload: &[u8]) -> Result<Mapped, RejectReason> {
    let value = parse_metadata(payload)?;
    let empty = Map::new();
    let outer = value.as_object().unwrap_or(&empty);
    let (id, timestamp) = (text(outer, "id"), text(outer, "timestamp"));
    let body = match outer.get("metadata") {
        Some(Value::Object(inner)) => inner,
        Some(Value::Null) | None => outer,
        Some(other) => {
            return Err(RejectReason::NotAnObject(match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                _ => "a scalar",
            }));
        }
    };
    let printer = |extra: &[(&str, Value)]| {
        let mut m = pick(body, &["printer_id", "printer_type"]);
        if let Some(t) = body.get("type").filter(|_| !m.contains_key("printer_type")) {
            m.insert("printer_type".into(), t.clone());
        }
        for (k, v) in extra {
            m.insert((*k).to_owned(), v.clone());
        }
        m
    };
    let (event_type, metadata): (EventType, Map<String, Value>) = match name {
        "job_completed" => {
            let status = text(body, "status")
                .unwrap_or_default()
                .to_ascii_lowercase();
            let mut m = printer(&[]);
            m.extend(pick(body, &["duration_seconds"]));
            if !m.contains_key("duration_seconds")
                && let Some(minutes) = body.get("duration_minutes").and_then(Value::as_f64)
            {
                m.insert("duration_seconds".into(), json!((minutes * 60.0).round()));
            }
            match status.as_str() {
                "failed" | "error" => {
                    m.insert("outcome".into(), json!("failed"));
                    m.extend(pick(body, &["error_type"]));
                    (EventType::JobFailed, m)
                }
                "cancelled" | "canceled" => {
                    m.insert("outcome".into(), json!("cancelled"));
                    (EventType::JobFailed, m)
                }
                _ => (EventType::JobCompleted, m),
            }
        }
        "printer_connected" => (EventType::PrinterConnected, printer(&[])),
        "printer_disconnected" => (EventType::PrinterDisconnected, printer(&[])),
        "job_created" | "job_started" => (EventType::JobCreated, printer(&[])),
        "file_download_complete" | "file_upload_complete" => {
            let mut m = printer(&[]);
            if let Some(bytes) = body.get("file_size").and_then(Value::as_f64) {
                m.insert("file_size_mb".into(), json!(bytes / 1_048_576.0));
            }
            m.extend(pick(body, &["file_size_mb"]));
            let t = if name == "file_download_complete" {
                EventType::FileDownloaded
            } else {
                EventType::FileUploaded
            };
            (t, m)
        }
        "file_download_failed" => (
            EventType::ErrorOccurred,
            printer(&[
                ("error_type", json!("download_failed")),
                ("component", json!("download_service")),
            ]),
        ),
        "file_upload_failed" => (
            EventType::ErrorOccurred,
            printer(&[
                ("error_type", json!("upload_failed")),
                ("component", json!("upload_service")),
            ]),
        ),
        "printer_connection_progress" => match text(body, "status").unwrap_or_default().as_str() {
            "failed" | "error" => (
                EventType::ErrorOccurred,
                printer(&[
                    ("error_type", json!("connection_failed")),
                    ("component", json!("printer_service")),
                ]),
            ),
            _ => return Ok(Mapped::Ignored),
        },
        other => match EventType::parse(other) {
            Ok(t) => (t, body.clone()),
            Err(_) => return Ok(Mapped::Ignored),
        },
    };
    Ok(Mapped::Event(RawEvent {
        event_type: event_type.as_str().to_owned(),
        id,
        timestamp,
        metadata: Value::Object(metadata),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, payload: Value) -> RawEvent {
        match map_event(name, payload.to_string().as_bytes()).expect("accepted") {
            Mapped::Event(e) => e,
            Mapped::Ignored => panic!("{name} ignored"),
        }
    }

    #[test]
    fn printernizer_bus_names_are_mapped() {
        let e = event(
            "printer_connected",
            json!({"printer_id": "01S00A", "name": "Kitchen X1C", "type": "bambu_lab"}),
        );
        assert_eq!(e.event_type, "printer_connected");
        assert_eq!(
            e.metadata,
            json!({"printer_id": "01S00A", "printer_type": "bambu_lab"})
        );

        let e = event(
            "job_completed",
            json!({"job_id": 7, "job_name": "benchy", "status": "cancelled", "duration_minutes": 2}),
        );
        assert_eq!(e.event_type, "job_failed");
        assert_eq!(e.metadata["outcome"], "cancelled");
        assert_eq!(e.metadata["duration_seconds"], 120.0);
        assert!(e.metadata.get("job_name").is_none());

        assert_eq!(
            event("job_completed", json!({"status": "failed"})).event_type,
            "job_failed"
        );
        assert_eq!(
            event("job_completed", json!({"duration_seconds": 5})).event_type,
            "job_completed"
        );
        assert_eq!(
            event("job_started", json!({"printer_id": "p"})).event_type,
            "job_created"
        );
        let e = event(
            "file_download_complete",
            json!({"file_size": 2_097_152, "filename": "/x/y.3mf"}),
        );
        assert_eq!(
            (e.event_type.as_str(), &e.metadata["file_size_mb"]),
            ("file_downloaded", &json!(2.0))
        );
        let e = event(
            "file_upload_failed",
            json!({"error": "disk /dev/sda1 full"}),
        );
        assert_eq!(
            e.metadata,
            json!({"error_type": "upload_failed", "component": "upload_service"})
        );
        let e = event(
            "printer_connection_progress",
            json!({"status": "failed", "message": "10.0.0.4 refused"}),
        );
        assert_eq!(e.metadata["error_type"], "connection_failed");
    }

    #[test]
    fn wrapped_payloads_carry_id_and_timestamp() {
        let e = event(
            "job_created",
            json!({"id": "550e8400-e29b-41d4-a716-446655440000", "timestamp": "2026-11-20T12:00:00Z",
                   "metadata": {"printer_type": "prusa"}}),
        );
        assert_eq!(
            e.id.as_deref(),
            Some("550e8400-e29b-41d4-a716-446655440000")
        );
        assert_eq!(e.timestamp.as_deref(), Some("2026-11-20T12:00:00Z"));
        assert_eq!(e.metadata, json!({"printer_type": "prusa"}));
    }

    #[test]
    fn unknown_names_are_ignored_and_garbage_rejected() {
        assert_eq!(
            map_event("printer_status_update", b"{}"),
            Ok(Mapped::Ignored)
        );
        assert_eq!(
            map_event("printer_connection_progress", br#"{"status":"connecting"}"#),
            Ok(Mapped::Ignored)
        );
        assert!(map_event("job_created", b"\xff\xfe").is_err());
        assert!(map_event("job_created", b"[1,2]").is_err());
        assert!(map_event("job_created", br#"{"metadata": [1]}"#).is_err());
        assert!(map_event("job_created", &vec![b'{'; 70_000]).is_err());
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(map_event("job_created", deep.as_bytes()).is_err());
    }
}
