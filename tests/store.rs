//! The SQLite store on real files: migrations, the writer, rollups against a naive recount,
//! retention and deletion.

mod common;

use std::collections::BTreeMap;

use chrono::Duration;
use common::{open_at, record_at, t};
use printernizer_stats::event::{EventType, RawEvent};
use printernizer_stats::store::migrations::{self, current_version, latest_version, schema_dump};
use printernizer_stats::store::rollup::{self, counters};
use printernizer_stats::store::{Inserted, fmt_ts};
use proptest::prelude::*;
use rusqlite::Connection;
use serde_json::json;

#[tokio::test]
async fn migration_down_then_up_leaves_an_identical_schema() {
    let ts = open_at("2026-11-20T12:00:00Z");
    let path = ts.service.store().path().to_path_buf();
    ts.service.close().await.expect("close");

    let mut conn = Connection::open(&path).expect("open");
    assert_eq!(current_version(&conn).expect("version"), latest_version());
    let before = schema_dump(&conn).expect("dump");
    assert!(before.contains("usage_events") && before.contains("usage_settings"));

    migrations::migrate_to(&mut conn, 0).expect("down");
    assert_eq!(current_version(&conn).expect("version"), 0);
    assert_eq!(schema_dump(&conn).expect("dump"), "");

    migrations::migrate_to(&mut conn, latest_version()).expect("up");
    assert_eq!(schema_dump(&conn).expect("dump"), before);
}

#[tokio::test]
async fn a_newer_schema_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("future.db");
    let conn = Connection::open(&path).expect("open");
    conn.pragma_update(None, "user_version", 99)
        .expect("set version");
    drop(conn);
    let clock = std::sync::Arc::new(printernizer_stats::clock::SystemClock);
    let err = printernizer_stats::store::Store::open(&path, clock).expect_err("must refuse");
    assert!(err.to_string().contains("newer than this program"), "{err}");
}

#[tokio::test]
async fn a_redelivered_event_is_stored_once() {
    let ts = open_at("2026-11-20T12:00:00Z");
    let mut raw = RawEvent::new("job_completed", json!({"duration_seconds": 60}));
    raw.id = Some("550e8400-e29b-41d4-a716-446655440000".into());
    let (_, first) = ts.service.record(&raw).await.expect("stored");
    let (_, second) = ts.service.record(&raw).await.expect("answered");
    assert_eq!((first, second), (Inserted::New, Inserted::Duplicate));
    let stats = ts.service.local_stats().await.expect("stats");
    assert_eq!(stats.total_events, 1);
    assert_eq!(stats.this_week.jobs_completed, 1);
}

#[tokio::test]
async fn concurrent_writers_are_all_committed_before_their_ack() {
    let ts = open_at("2026-11-20T12:00:00Z");
    let mut handles = Vec::new();
    for task in 0..8 {
        let service = ts.service.clone();
        handles.push(tokio::spawn(async move {
            let mut pending = Vec::new();
            for i in 0..500 {
                let raw = RawEvent::new(
                    if i % 2 == 0 {
                        "job_completed"
                    } else {
                        "file_downloaded"
                    },
                    json!({"printer_id": format!("p{task}")}),
                );
                pending.push(service.enqueue(&raw).await.expect("queued").1);
            }
            for p in pending {
                assert_eq!(p.committed().await.expect("committed"), Inserted::New);
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    let n: i64 = ts
        .service
        .store()
        .read(|c| Ok(c.query_row("SELECT count(*) FROM usage_events", [], |r| r.get(0))?))
        .await
        .expect("count");
    assert_eq!(n, 4000);
    let stats = ts.service.local_stats().await.expect("stats");
    assert_eq!(stats.total_events, 4000);
    assert_eq!(stats.this_week.job_count, 2000);
    assert_eq!(stats.this_week.printer_count, 8);
}

#[tokio::test]
async fn prune_deletes_old_events_but_keeps_rollups_and_the_latest_start() {
    let ts = open_at("2026-11-20T12:00:00Z");
    let svc = &ts.service;
    for (kind, at, meta) in [
        (
            "app_start",
            "2026-11-01T08:00:00Z",
            json!({"app_version": "2.40.0"}),
        ),
        ("job_completed", "2026-11-01T09:00:00Z", json!({})),
        ("job_completed", "2026-11-19T09:00:00Z", json!({})),
    ] {
        record_at(&ts, kind, at, meta).await;
    }
    let cutoff = t("2026-11-10T00:00:00Z");
    assert_eq!(svc.store().prune(cutoff).await.expect("prune"), 1);
    let report = svc
        .report(
            Some(t("2026-11-01T00:00:00Z")),
            Some(t("2026-11-20T00:00:00Z")),
        )
        .await
        .expect("report");
    assert_eq!(report.usage_stats.job_count, 2, "rollups survive pruning");
    assert_eq!(
        report.installation.app_version, "2.40.0",
        "latest app_start kept"
    );
    let stats = svc.local_stats().await.expect("stats");
    assert_eq!(stats.total_events, 2);
}

#[tokio::test]
async fn delete_all_leaves_nothing() {
    let ts = open_at("2026-11-20T12:00:00Z");
    for _ in 0..10 {
        ts.service
            .record(&RawEvent::new("job_completed", json!({"printer_id": "x"})))
            .await
            .expect("stored");
    }
    assert_eq!(ts.service.delete_all().await.expect("delete"), 10);
    let stats = ts.service.local_stats().await.expect("stats");
    assert_eq!((stats.total_events, stats.this_week.job_count), (0, 0));
    let rows: i64 = ts
        .service
        .store()
        .read(|c| {
            Ok(c.query_row(
                "SELECT (SELECT count(*) FROM usage_events) + (SELECT count(*) FROM usage_aggregates)
                      + (SELECT count(*) FROM usage_fleet)",
                [],
                |r| r.get(0),
            )?)
        })
        .await
        .expect("count");
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn uptime_is_measured_from_starts_and_shutdowns() {
    let ts = open_at("2026-11-20T12:00:00Z");
    let svc = &ts.service;
    // Run 1: 10:00–12:00 clean. Run 2: 13:00, crashed; last sign of life 14:30.
    // Run 3: 16:00, still up at the period end 18:00.
    for (kind, at) in [
        ("app_start", "2026-11-19T10:00:00Z"),
        ("app_shutdown", "2026-11-19T12:00:00Z"),
        ("app_start", "2026-11-19T13:00:00Z"),
        ("job_completed", "2026-11-19T14:30:00Z"),
        ("app_start", "2026-11-19T16:00:00Z"),
    ] {
        record_at(&ts, kind, at, json!({})).await;
    }
    let secs = svc
        .store()
        .read(|c| rollup::uptime_seconds(c, t("2026-11-19T00:00:00Z"), t("2026-11-19T18:00:00Z")))
        .await
        .expect("uptime");
    assert_eq!(secs, (2 * 3600) + (90 * 60) + (2 * 3600));
    // A window starting inside run 1 counts from the window start.
    let secs = svc
        .store()
        .read(|c| rollup::uptime_seconds(c, t("2026-11-19T11:00:00Z"), t("2026-11-19T12:30:00Z")))
        .await
        .expect("uptime");
    assert_eq!(secs, 3600);
}

#[tokio::test]
async fn features_report_their_last_state_as_of_the_period_end() {
    let ts = open_at("2026-11-20T12:00:00Z");
    let svc = &ts.service;
    for (kind, feature, at) in [
        ("feature_enabled", "timelapse", "2026-11-10T10:00:00Z"),
        ("feature_enabled", "library", "2026-11-18T10:00:00Z"),
        ("feature_disabled", "library", "2026-11-18T10:30:00Z"),
        ("feature_enabled", "library", "2026-11-19T10:10:00Z"),
    ] {
        record_at(&ts, kind, at, json!({"feature": feature})).await;
    }
    let at = |end: &str| {
        let end = t(end);
        async move {
            svc.report(Some(end - Duration::days(1)), Some(end))
                .await
                .expect("report")
                .usage_stats
                .feature_usage
        }
    };
    let expect = |pairs: &[(&str, bool)]| -> BTreeMap<String, bool> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    };
    assert_eq!(
        at("2026-11-18T10:45:00Z").await,
        expect(&[("library_enabled", false), ("timelapse_enabled", true)])
    );
    assert_eq!(
        at("2026-11-19T10:05:00Z").await,
        expect(&[("library_enabled", false), ("timelapse_enabled", true)])
    );
    assert_eq!(
        at("2026-11-19T10:15:00Z").await,
        expect(&[("library_enabled", true), ("timelapse_enabled", true)])
    );
    assert_eq!(at("2026-11-09T00:00:00Z").await, expect(&[]));
}

/// Recounts `[start, end)` straight from `usage_events` — the slow, obviously right way.
fn naive(
    c: &Connection,
    start: &str,
    end: &str,
) -> (BTreeMap<String, u64>, BTreeMap<String, u64>, usize) {
    let mut by_type = BTreeMap::new();
    let mut stmt = c
        .prepare("SELECT event_type, count(*) FROM usage_events WHERE timestamp >= ?1 AND timestamp < ?2 GROUP BY 1")
        .expect("prepare");
    let rows = stmt
        .query_map([start, end], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .expect("query");
    for row in rows {
        let (k, n) = row.expect("row");
        by_type.insert(k, n as u64);
    }
    let mut errors = BTreeMap::new();
    let mut stmt = c
        .prepare(
            "SELECT coalesce(json_extract(metadata, '$.error_type'), 'unknown'), count(*) FROM usage_events
             WHERE event_type = 'error_occurred' AND timestamp >= ?1 AND timestamp < ?2 GROUP BY 1",
        )
        .expect("prepare");
    let rows = stmt
        .query_map([start, end], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .expect("query");
    for row in rows {
        let (k, n) = row.expect("row");
        errors.insert(k, n as u64);
    }
    let printers: i64 = c
        .query_row(
            "SELECT count(DISTINCT printer_hash) FROM usage_events WHERE timestamp >= ?1 AND timestamp < ?2",
            [start, end],
            |r| r.get(0),
        )
        .expect("count");
    (by_type, errors, printers as usize)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, .. ProptestConfig::default() })]

    /// Rollups (whole hours) + edge scans (partial hours) equal a naive recount for any range.
    #[test]
    fn rollup_counts_equal_a_naive_recount(
        events in prop::collection::vec(
            (0usize..12, 0i64..(10 * 24 * 3600), prop::option::of(0u8..6), 0usize..4),
            1..300,
        ),
        ranges in prop::collection::vec((0i64..(10 * 24 * 3600), 0i64..(5 * 24 * 3600)), 1..6),
    ) {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let ts = open_at("2026-11-20T12:00:00Z");
            let base = t("2026-11-10T12:00:00Z");
            let errors = ["connection_timeout", "disk_full", "printer_error", "nonsense"];
            let mut pending = Vec::new();
            for (kind, offset, printer, err) in &events {
                let mut raw = RawEvent::new(
                    EventType::ALL[*kind].as_str(),
                    match printer {
                        Some(p) => json!({"printer_id": format!("printer-{p}"), "printer_type": "prusa", "error_type": errors[*err]}),
                        None => json!({"error_type": errors[*err]}),
                    },
                );
                raw.timestamp = Some(fmt_ts(base + Duration::seconds(*offset)));
                pending.push(ts.service.enqueue(&raw).await.expect("queued").1);
            }
            for p in pending {
                p.committed().await.expect("committed");
            }
            for (start, len) in &ranges {
                let (s, e) = (base + Duration::seconds(*start), base + Duration::seconds(start + len));
                let (fs, fe) = (fmt_ts(s), fmt_ts(e));
                let (counts, fleet, (by_type, errs, printers)) = ts
                    .service
                    .store()
                    .read(move |c| Ok((rollup::counts(c, s, e)?, rollup::fleet(c, s, e)?, naive(c, &fs, &fe))))
                    .await
                    .expect("read");
                let got: BTreeMap<String, u64> =
                    counts.by_type.iter().filter(|(_, n)| **n > 0).map(|(k, v)| (k.as_str().to_owned(), *v)).collect();
                assert_eq!(got, by_type);
                assert_eq!(counts.errors, errs);
                assert_eq!(fleet.len(), printers);
            }
            let total = ts.service.store().read(|c| rollup::counter(c, counters::EVENTS_TOTAL)).await.expect("counter");
            assert_eq!(total, events.len() as u64);
        });
    }
}

#[tokio::test]
async fn a_clean_close_checkpoints_and_removes_the_wal() {
    let ts = open_at("2026-11-20T12:00:00Z");
    ts.service
        .record(&RawEvent::new("job_completed", json!({})))
        .await
        .expect("stored");
    ts.service
        .status()
        .await
        .expect("a read leaves a pooled reader");
    let path = ts.service.store().path().to_path_buf();
    ts.service.close().await.expect("close");
    drop(ts.service);
    let wal = path.with_extension("db-wal");
    assert!(!wal.exists(), "{} left behind", wal.display());
    assert!(path.exists());
}

/// A database file deleted or replaced under an open store: every later write — a setting as
/// much as an event — is refused instead of going into the unlinked or foreign file, and the
/// loss is announced (`run` starts over on it).
#[tokio::test]
async fn writes_into_a_lost_file_are_refused() {
    use printernizer_stats::store::{FileLoss, Store, settings};
    let clock = std::sync::Arc::new(printernizer_stats::clock::SystemClock);
    for loss in [FileLoss::Deleted, FileLoss::Replaced] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stats.db");
        let store = Store::open(&path, clock.clone()).expect("open");
        let set = |value: &'static str| {
            let store = store.clone();
            async move {
                store
                    .write(move |tx, now| settings::set(tx, "test_key", value, now))
                    .await
            }
        };
        set("before").await.expect("a write while the file is ours");
        assert_eq!(store.check_file(), None);
        match loss {
            FileLoss::Deleted => std::fs::remove_file(&path).expect("delete"),
            _ => {
                let other = dir.path().join("other.db");
                std::fs::write(&other, b"").expect("other file");
                std::fs::rename(&other, &path).expect("replace");
            }
        }
        let refused = set("after").await.expect_err("a write into a lost file");
        assert!(refused.to_string().contains("while running"), "{refused}");
        assert_eq!(*store.file_lost().borrow(), Some(loss));
        assert_eq!(store.check_file(), Some(loss));
    }
}
