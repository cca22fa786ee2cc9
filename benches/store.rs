//! Store benchmarks (run: `cargo bench --bench store`; set `BENCH_EVENTS` to change the 1M).
//!
//! (a) ingest: events/s through the real path (sanitize → channel → writer batches → rollups,
//!     acknowledged after commit) next to a raw rusqlite baseline measured in the same run:
//!     the same rows, same schema and pragmas, prepared statement, 1000 rows per transaction.
//! (b) `aggregate` (the report) over a 7-day window with 1M stored events — all of them inside
//!     the window, the worst case — hour-aligned and with partial-hour edges.
//! (c) `local_stats` at 1M events.
//!
//! Prints one line per figure; no thresholds (those live in docs/PERFORMANCE.md, by hand).

use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};
use printernizer_stats::clock::ManualClock;
use printernizer_stats::config::Settings;
use printernizer_stats::event::{RawEvent, Sanitizer};
use printernizer_stats::service::{Environment, StatsService};
use printernizer_stats::store::{Store, fmt_ts};
use rusqlite::{Connection, params};
use serde_json::json;

const KINDS: [(&str, usize); 8] = [
    ("job_created", 20),
    ("job_completed", 16),
    ("job_failed", 4),
    ("file_downloaded", 15),
    ("file_uploaded", 10),
    ("printer_connected", 5),
    ("error_occurred", 5),
    ("feature_enabled", 1),
];

/// A deterministic, realistic event mix spread evenly over `[start, start + span)`.
fn raw_events(n: usize, start: DateTime<Utc>, span: Duration) -> Vec<RawEvent> {
    let total: usize = KINDS.iter().map(|k| k.1).sum();
    let step = span.num_milliseconds() as f64 / n as f64;
    (0..n)
        .map(|i| {
            let mut pick = (i * 7919) % total;
            let kind = KINDS
                .iter()
                .find(|(_, w)| {
                    if pick < *w {
                        true
                    } else {
                        pick -= w;
                        false
                    }
                })
                .map_or("job_created", |k| k.0);
            let mut raw = RawEvent::new(
                kind,
                json!({
                    "printer_id": format!("printer-{}", i % 12),
                    "printer_type": (["bambu_lab", "prusa", "prusa_core"][i % 3]),
                    "duration_seconds": 3600 + (i % 600),
                    "error_type": "connection_timeout",
                    "component": "printer_service",
                    "feature": "timelapse",
                    "job_name": "benchy_final_v3.3mf",
                }),
            );
            raw.timestamp = Some(fmt_ts(
                start + Duration::milliseconds((i as f64 * step) as i64),
            ));
            raw
        })
        .collect()
}

/// Feeds `events` through the service with up to 8192 writes in flight, then waits for all.
async fn ingest_all(service: &StatsService, events: &[RawEvent]) {
    let mut pending = std::collections::VecDeque::new();
    for raw in events {
        pending.push_back(service.enqueue(raw).await.expect("queued").1);
        if pending.len() >= 8192
            && let Some(p) = pending.pop_front()
        {
            p.committed().await.expect("committed");
        }
    }
    for p in pending {
        p.committed().await.expect("committed");
    }
}

fn ingest_ours(n: usize, rt: &tokio::runtime::Runtime) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let now: DateTime<Utc> = "2026-11-20T12:00:00Z".parse().expect("time");
    let service = open(&dir, now);
    let events = raw_events(n, now - Duration::days(7), Duration::days(7));
    let started = Instant::now();
    rt.block_on(async {
        ingest_all(&service, &events).await;
    });
    let rate = n as f64 / started.elapsed().as_secs_f64();
    rt.block_on(service.close()).expect("close");
    rate
}

fn ingest_baseline(n: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raw.db");
    let now: DateTime<Utc> = "2026-11-20T12:00:00Z".parse().expect("time");
    // Same schema and pragmas as the real store.
    let clock = Arc::new(ManualClock::new(now));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(Store::open(&path, clock).expect("schema").close())
        .expect("close");
    let sanitizer = Sanitizer::new("salt", Duration::days(365));
    let events: Vec<_> = raw_events(n, now - Duration::days(7), Duration::days(7))
        .iter()
        .map(|r| sanitizer.sanitize(r, now).expect("valid"))
        .collect();
    let mut conn = Connection::open(&path).expect("open");
    conn.pragma_update(None, "synchronous", "NORMAL")
        .expect("pragma");
    conn.pragma_update(
        None,
        "cache_size",
        -printernizer_stats::store::WRITER_CACHE_KIB,
    )
    .expect("pragma");
    let started = Instant::now();
    for chunk in events.chunks(1000) {
        let tx = conn.transaction().expect("tx");
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO usage_events (id, event_type, timestamp, metadata, submitted, created_at, printer_hash)
                     VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6)",
                )
                .expect("prepare");
            for e in chunk {
                stmt.execute(params![
                    e.id.to_string(),
                    e.event_type.as_str(),
                    fmt_ts(e.timestamp),
                    serde_json::to_string(&e.metadata).expect("json"),
                    fmt_ts(now),
                    e.printer_hash
                ])
                .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn open(dir: &tempfile::TempDir, now: DateTime<Utc>) -> StatsService {
    let mut settings = Settings::defaults(false);
    settings.database.path = dir.path().join("stats.db");
    StatsService::open(
        settings,
        Arc::new(ManualClock::new(now)),
        Environment::default(),
    )
    .expect("service")
}

/// Median and max of `iters` runs of `f`.
fn time<F: FnMut()>(iters: usize, mut f: F) -> (StdDuration, StdDuration) {
    f(); // warm caches
    let mut samples: Vec<StdDuration> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() - 1])
}

fn main() {
    let n: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "printernizer-stats store benchmark, {n} events, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // (a) ingest, ours vs raw baseline, twice each interleaved to even out disk noise.
    let ingest_n = n.min(200_000);
    let mut ours = Vec::new();
    let mut base = Vec::new();
    for _ in 0..2 {
        base.push(ingest_baseline(ingest_n));
        ours.push(ingest_ours(ingest_n, &rt));
    }
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let (ours, base) = (best(&ours), best(&base));
    println!(
        "ingest ({ingest_n} events): service {ours:.0}/s, raw rusqlite baseline {base:.0}/s, ratio {:.2}x",
        ours / base
    );

    // (b) + (c) with n events inside the last 7 days.
    let dir = tempfile::tempdir().expect("tempdir");
    let now: DateTime<Utc> = "2026-11-20T12:34:56Z".parse().expect("time");
    let service = open(&dir, now);
    let fill = Instant::now();
    rt.block_on(async {
        let events = raw_events(n, now - Duration::days(7), Duration::days(7));
        ingest_all(&service, &events).await;
    });
    println!("filled {n} events in {:.1}s", fill.elapsed().as_secs_f64());

    let aligned_end: DateTime<Utc> = "2026-11-20T12:00:00Z".parse().expect("time");
    let (med, max) = time(50, || {
        let r = rt
            .block_on(service.report(Some(aligned_end - Duration::days(7)), Some(aligned_end)))
            .expect("report");
        assert!(r.usage_stats.job_count > 0);
    });
    println!(
        "aggregate 7 days, hour-aligned: median {:.2} ms, max {:.2} ms",
        ms(med),
        ms(max)
    );
    let (med, max) = time(50, || {
        let r = rt
            .block_on(service.report(Some(now - Duration::days(7)), Some(now)))
            .expect("report");
        assert!(r.usage_stats.job_count > 0);
    });
    println!(
        "aggregate 7 days, partial-hour edges (report preview): median {:.2} ms, max {:.2} ms",
        ms(med),
        ms(max)
    );
    let (med, max) = time(50, || {
        let s = rt.block_on(service.local_stats()).expect("local");
        assert_eq!(s.total_events, n as u64);
    });
    println!(
        "local_stats: median {:.2} ms, max {:.2} ms",
        ms(med),
        ms(max)
    );

    // Reference: what a naive scan of the same week costs.
    let (med, _) = time(5, || {
        let c: i64 = rt
            .block_on(service.store().read(move |c| {
                Ok(c.query_row(
                    "SELECT count(*) FROM usage_events WHERE timestamp >= ?1 AND event_type IN ('job_completed','job_failed')",
                    [fmt_ts(now - Duration::days(7))],
                    |r| r.get(0),
                )?)
            }))
            .expect("count");
        assert!(c > 0);
    });
    println!(
        "reference: naive COUNT over the week's events: median {:.2} ms",
        ms(med)
    );
    rt.block_on(service.close()).expect("close");
}

fn ms(d: StdDuration) -> f64 {
    d.as_secs_f64() * 1000.0
}
