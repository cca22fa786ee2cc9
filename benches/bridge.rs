//! Bridge ingest benchmark (run: `cargo bench --bench bridge`; `BENCH_EVENTS` sets the size).
//!
//! One run, interleaved rounds, each on a fresh database:
//! * baseline: the same log's events handed straight to the service (`StatsService::enqueue`
//!   with 1024 in flight: sanitizer → writer → rollups, ack after commit) — the store path every
//!   source shares;
//! * ours: the bridge reading the log as Printernizer serves it — an HTTP server on 127.0.0.1
//!   answering `/usage-stats/export` with the pretty-printed JSON — streamed, mapped, sanitized
//!   and stored, until the cursor moved.
//!
//! Prints events/s and the ratio; docs/PERFORMANCE.md records them beside the MQTT figure of
//! `cargo bench --bench ingest`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use printernizer_stats::clock::SystemClock;
use printernizer_stats::config::Settings;
use printernizer_stats::event::RawEvent;
use printernizer_stats::service::{Environment, StatsService};
use printernizer_stats::store::rollup::{counter, counters};
use serde_json::{Value, json};

fn log(n: usize) -> Vec<Value> {
    let now = chrono::Utc::now();
    (0..n)
        .map(|i| {
            let at = (now - chrono::Duration::seconds(i as i64 * 20)).naive_utc();
            let (kind, metadata) = match i % 4 {
                0 => ("file_downloaded", json!({"file_size_mb": 0.03})),
                1 => ("file_uploaded", json!({"file_size_mb": 1.5, "is_business": true})),
                2 => ("printer_connected", json!({"printer_type": "unknown"})),
                _ => ("app_start", json!({"app_version": "2.42.0", "python_version": "3.11.7", "platform": "linux"})),
            };
            json!({"id": uuid::Uuid::new_v4().to_string(), "event_type": kind,
                "timestamp": at.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
                "metadata": metadata, "submitted": 0,
                "created_at": at.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()})
        })
        .collect()
}

fn service(dir: &tempfile::TempDir, url: Option<String>) -> StatsService {
    let mut settings = Settings::defaults(false);
    settings.database.path = dir.path().join("bench.db");
    settings.retention.days = 3650.try_into().expect("in range");
    settings.mqtt.enabled = false;
    settings.printernizer.url = url;
    settings.printernizer.poll_interval_s = 3600.try_into().expect("in range");
    StatsService::open(settings, Arc::new(SystemClock), Environment::default()).expect("opens")
}

async fn total(s: &StatsService) -> u64 {
    s.store()
        .read(|c| counter(c, counters::EVENTS_TOTAL))
        .await
        .expect("counter")
}

async fn baseline(events: &[Value]) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = service(&dir, None);
    let started = Instant::now();
    let mut in_flight = std::collections::VecDeque::new();
    for e in events {
        let raw = RawEvent {
            event_type: e["event_type"].as_str().unwrap_or_default().to_owned(),
            id: e["id"].as_str().map(str::to_owned),
            timestamp: e["timestamp"].as_str().map(str::to_owned),
            metadata: e["metadata"].clone(),
        };
        let (_, p) = s.enqueue(&raw).await.expect("queued");
        in_flight.push_back(p);
        if in_flight.len() >= 1024
            && let Some(p) = in_flight.pop_front()
        {
            p.committed().await.expect("stored");
        }
    }
    for p in in_flight {
        p.committed().await.expect("stored");
    }
    let rate = events.len() as f64 / started.elapsed().as_secs_f64();
    assert_eq!(total(&s).await, events.len() as u64);
    s.close().await.expect("closed");
    rate
}

async fn bridge(url: &str, n: u64) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = service(&dir, Some(url.to_owned()));
    let stop = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let task = printernizer_stats::bridge::spawn(s.clone(), url, stop.clone()).expect("bridge");
    while total(&s).await < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    stop.cancel();
    let _ = task.await;
    s.close().await.expect("closed");
    rate
}

fn main() {
    let n: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let events = log(n);
        let body = serde_json::to_vec_pretty(&json!({"events": events, "settings": {},
            "exported_at": "2026-12-01T20:39:09", "export_version": "1.0"}))
        .expect("json");
        let mb = body.len() as f64 / 1e6;
        let body = Arc::new(body);
        let status = json!({"service_available": true, "opted_in": false, "total_events": n}).to_string();
        let app = axum::Router::new()
            .route("/api/v1/health", get(|| async { axum::Json(json!({"status": "healthy"})) }))
            .route("/api/v1/usage-stats/status", get(move || {
                let status = status.clone();
                async move { ([("content-type", "application/json")], status) }
            }))
            .route("/api/v1/usage-stats/export", get(move || {
                let body = body.clone();
                async move { ([("content-type", "application/json")], body.as_ref().clone()) }
            }))
            .route("/api/v1/printers", get(|| async { axum::Json(json!({"printers": []})) }))
            .route("/api/v1/jobs", get(|| async { axum::Json(json!({"jobs": [], "pagination": {"total_pages": 1}})) }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });

        println!("bridge ingest: {n} log events, {mb:.1} MB pretty-printed export");
        let mut ratios = Vec::new();
        for round in 1..=3 {
            let base = baseline(&events).await;
            let ours = bridge(&url, n as u64).await;
            let ratio = ours / base;
            println!(
                "round {round}: service enqueue (baseline) {base:.0} events/s · bridge from HTTP export {ours:.0} events/s · ratio {ratio:.2}×"
            );
            ratios.push(ratio);
        }
        ratios.sort_by(f64::total_cmp);
        println!("median ratio bridge / service enqueue: {:.2}×", ratios[1]);
    });
}
