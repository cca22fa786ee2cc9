//! A 100 000-event Printernizer log (≈ 25 MB, pretty-printed like the real one): streamed in
//! with a small peak RSS, and a SIGKILL of `run` half-way through loses nothing and doubles
//! nothing. (Its own test binary, so the child's peak RSS is all that is measured.)

use printernizer_stats_test_support::child;
use printernizer_stats_test_support::mqtt as support;
use printernizer_stats_test_support::printernizer;

use std::path::Path;
use std::time::{Duration, Instant};

use printernizer::Standin;
use serde_json::{Value, json};
use support::App;

const EVENTS: usize = 100_000;
const RSS_LIMIT_KIB: u64 = 60 * 1024;

/// The log, newest first: a realistic mix, including `job_*` entries (not stored: jobs come
/// from the job list) and events past retention (skipped). Returns it and how many are stored.
fn big_log() -> (Vec<Value>, i64) {
    let now = chrono::Utc::now();
    let mut events = Vec::with_capacity(EVENTS);
    let mut stored = 0;
    for i in 0..EVENTS {
        let at = now - chrono::Duration::seconds(i as i64 * 30);
        let (kind, metadata) = match i % 10 {
            0 => (
                "app_start",
                json!({"app_version": "2.42.0", "python_version": "3.11.7", "platform": "linux"}),
            ),
            1 | 2 => (
                "job_created",
                json!({"printer_type": "prusa_core", "is_auto_created": true}),
            ),
            3 => ("job_completed", json!({"duration_minutes": null})),
            4 | 5 => ("file_downloaded", json!({"file_size_mb": 0.03})),
            6 => (
                "file_uploaded",
                json!({"file_size_mb": 1.5, "is_business": true}),
            ),
            7 => ("printer_connected", json!({"printer_type": "unknown"})),
            8 => ("printer_disconnected", json!({"printer_type": "unknown"})),
            _ => ("job_failed", Value::Null),
        };
        let old = i >= EVENTS - 1000;
        let at = if old {
            at - chrono::Duration::days(4000)
        } else {
            at
        };
        if !kind.starts_with("job_") && !old {
            stored += 1;
        }
        events.push(json!({
            "id": uuid::Uuid::new_v4().to_string(),
            "event_type": kind,
            "timestamp": at.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
            "metadata": metadata,
            "submitted": 0,
            "created_at": at.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
        }));
    }
    (events, stored)
}

fn serve(standin: &Standin, events: &[Value]) -> usize {
    let export = json!({"events": events, "settings": {"installation_id": "8b4f3b55-f3f6-413c-bb48-d12c2c177e28"},
        "exported_at": "2026-12-01T20:39:09", "export_version": "1.0"});
    let body = serde_json::to_vec_pretty(&export).expect("json");
    let size = body.len();
    standin.set_json("usage-stats-export", body);
    standin.set_json(
        "usage-stats-status",
        serde_json::to_vec(&json!({"service_available": true, "opted_in": false,
            "total_events": events.len(), "collection_active": true}))
        .expect("json"),
    );
    size
}

fn start(dir: &Path, standin: &Standin) -> App {
    let url = standin.url();
    App::spawn(
        dir,
        None,
        &[
            ("PRINTERNIZER_STATS__PRINTERNIZER__URL", url.as_str()),
            ("PRINTERNIZER_STATS__PRINTERNIZER__ENABLED", "true"),
            ("PRINTERNIZER_STATS__PRINTERNIZER__POLL_INTERVAL_S", "1"),
            ("PRINTERNIZER_STATS__RETENTION__DAYS", "3650"),
            ("PRINTERNIZER_STATS__MQTT__ENABLED", "false"),
            ("PRINTERNIZER_STATS__LOG_LEVEL", "info"),
        ],
    )
}

fn one_more_poll(standin: &Standin) {
    let since = standin.hits("/api/v1/health");
    standin.wait_hits("/api/v1/health", since, 2, Duration::from_secs(60));
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Events from the log (the job list's job events and reachability's `app_shutdown` aside).
const FROM_LOG: &str = "SELECT count(*) FROM usage_events
    WHERE event_type NOT LIKE 'job_%' AND event_type != 'app_shutdown'";

#[test]
fn a_100k_event_log_streams_in_small_and_survives_sigkill() {
    let (events, stored) = big_log();
    let standin = Standin::start("18-rate-limit-429");
    let size = serve(&standin, &events);

    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let mut app = start(dir.path(), &standin);
    app.wait_log(
        "read Printernizer's usage-statistics log",
        1,
        Duration::from_secs(300),
    );
    let elapsed = started.elapsed();
    let pid = app.pid().expect("pid");
    let peak = peak_rss_kib(pid);
    assert_eq!(app.count(FROM_LOG), stored, "{}", app.log());
    eprintln!(
        "bridge ingest: {EVENTS} log entries ({} MB) → {stored} events in {:.1} s ({:.0} entries/s), peak RSS {} KiB",
        size / 1_000_000,
        elapsed.as_secs_f64(),
        EVENTS as f64 / elapsed.as_secs_f64(),
        peak
    );
    assert!(peak > 0 && peak < RSS_LIMIT_KIB, "peak RSS {peak} KiB");
    assert!(app.stop());

    // SIGKILL half-way through a fresh ingest, then start again.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut app = start(dir.path(), &standin);
    app.wait_log("printernizer-stats started", 1, Duration::from_secs(30));
    child::poll_until(
        Duration::from_secs(300),
        Duration::from_millis(5),
        || app.count("SELECT count(*) FROM usage_events") > 10_000,
        || format!("never got going:\n{}", app.log()),
    );
    app.kill();
    let after_kill = app.count(FROM_LOG);
    assert!(after_kill < stored, "killed before the end ({after_kill})");
    let mut again = start(dir.path(), &standin);
    again.wait_count(FROM_LOG, stored, Duration::from_secs(300));
    one_more_poll(&standin);
    assert_eq!(
        again.count(FROM_LOG),
        stored,
        "nothing lost, nothing doubled:\n{}",
        again.log()
    );
    assert_eq!(
        again.count("SELECT value FROM usage_counters WHERE name = 'events_total'"),
        again.count("SELECT count(*) FROM usage_events"),
        "the rollups agree with the rows"
    );
    assert!(again.stop());
}
