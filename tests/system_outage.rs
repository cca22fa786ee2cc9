//! Whole-system submission faults over real HTTP: the service's submitter (with a manual clock,
//! so weeks pass in seconds) → a fault-injecting, request-recording proxy → the real aggregation
//! server on SQLite. Scenario 2 (server outage) and 6 (privacy on the wire) of
//! docs/RELIABILITY.md.

use printernizer_stats_test_support::aggregator as agg;
mod common;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Duration;
use common::{TestService, open_with, record_at};
use printernizer_stats::clock::Clock;
use printernizer_stats::service::Environment;
use printernizer_stats::submission::{Submitter, TickOutcome};
use serde_json::{Value, json};

const FORWARD: u8 = 0;
const DOWN: u8 = 1;
const LIMITED: u8 = 2;
const BROKEN: u8 = 3;

#[derive(Clone)]
struct Proxy {
    upstream: String,
    mode: Arc<AtomicU8>,
    seen: Arc<Mutex<Vec<String>>>,
}

/// Catches every request (any method, any path), records it, and forwards it or fails it.
async fn catch_all(State(p): State<Proxy>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    p.seen
        .lock()
        .expect("lock")
        .push(format!("{} {}", parts.method, parts.uri.path()));
    match p.mode.load(Ordering::SeqCst) {
        DOWN => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        LIMITED => {
            return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "3600")]).into_response();
        }
        BROKEN => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        _ => {}
    }
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let mut req = reqwest::Client::new()
        .request(
            parts.method.clone(),
            format!("{}{}", p.upstream, parts.uri.path()),
        )
        .body(body);
    for name in ["content-type", "idempotency-key", "x-api-key"] {
        if let Some(v) = parts.headers.get(name) {
            req = req.header(name, v);
        }
    }
    match req.send().await {
        Ok(r) => {
            let status = r.status();
            let retry = r.headers().get("retry-after").cloned();
            let bytes = r.bytes().await.unwrap_or_default();
            let mut resp = (status, bytes).into_response();
            if let Some(v) = retry {
                resp.headers_mut().insert("retry-after", v);
            }
            resp
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

async fn proxy(upstream: String) -> (String, Proxy) {
    let p = Proxy {
        upstream,
        mode: Arc::new(AtomicU8::new(FORWARD)),
        seen: Arc::default(),
    };
    let app = axum::Router::new()
        .fallback(catch_all)
        .with_state(p.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("proxy") });
    (base, p)
}

fn service(endpoint: &str) -> (TestService, Submitter) {
    let endpoint = format!("{endpoint}/submit");
    let ts = open_with("2026-11-02T00:00:00Z", Environment::default(), move |s| {
        s.submission.endpoint = Some(endpoint);
        s.submission.timeout_s = 5.try_into().expect("in range");
    });
    let submitter = Submitter::new(ts.service.clone()).expect("submitter");
    (ts, submitter)
}

/// Events recorded by [`activity`], per type.
#[derive(Default, Debug)]
struct Tally {
    jobs: u64,
    files: u64,
    uploads: u64,
    errors: u64,
}

/// A little activity "now" (a minute ago), remembered with its time.
async fn activity(ts: &TestService, log: &mut Vec<(chrono::DateTime<chrono::Utc>, &'static str)>) {
    let at = ts.clock.now() - Duration::minutes(1);
    for kind in [
        "job_completed",
        "job_failed",
        "file_downloaded",
        "file_uploaded",
        "error_occurred",
    ] {
        let meta = if kind == "error_occurred" {
            json!({"error_type": "connection_timeout"})
        } else {
            json!({"printer_id": "X1C-1", "printer_type": "bambu_lab"})
        };
        record_at(ts, kind, &at.to_rfc3339(), meta).await;
        log.push((at, kind));
    }
}

/// Scenario 2: the server is down for days, then answers 429 and 500 before it recovers.
/// Afterwards it holds each weekly report exactly once, the periods are contiguous, and the
/// per-type sums over all accepted reports equal the events stored in those periods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_outage_then_429_and_500_loses_and_doubles_nothing() {
    let server = agg::Server::start(agg::Kind::Sqlite, |_| {}).await;
    let (base, p) = proxy(server.base.clone()).await;
    let (ts, submitter) = service(&base);
    ts.service.opt_in().await.expect("opt in");
    let mut events = Vec::new();
    let mut outcomes = Vec::new();
    for hour in 0..(5 * 7 * 24) {
        let day = hour / 24;
        p.mode.store(
            match day {
                6..=8 => DOWN,
                9 => LIMITED,
                10 => BROKEN,
                _ => FORWARD,
            },
            Ordering::SeqCst,
        );
        if hour % 6 == 3 {
            activity(&ts, &mut events).await;
        }
        ts.clock.advance(Duration::hours(1));
        server.clock.advance(Duration::hours(1));
        outcomes.push(submitter.tick().await.expect("tick"));
    }
    let accepted = outcomes
        .iter()
        .filter(|o| **o == TickOutcome::Accepted)
        .count();
    assert!(accepted >= 4, "{accepted} reports accepted: {outcomes:?}");
    let failures = p.seen.lock().expect("lock").len() - accepted;
    assert!(
        failures >= 3,
        "the outage was seen ({failures} failed attempts)"
    );

    // What the server holds.
    let summary: Value = reqwest::get(server.url("/stats/summary"))
        .await
        .expect("summary")
        .json()
        .await
        .expect("json");
    assert_eq!(
        summary["total_submissions"], accepted as u64,
        "each report exactly once"
    );
    let agg::Db::Sqlite(dir) = &server.db else {
        unreachable!("sqlite")
    };
    let conn = rusqlite::Connection::open(dir.path().join("agg.db")).expect("open");
    let mut stmt = conn
        .prepare(
            "SELECT period_start, period_end, job_count, file_count, upload_count, error_summary
               FROM submissions ORDER BY period_start",
        )
        .expect("prepare");
    let rows: Vec<(String, String, i64, i64, i64, String)> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .expect("query")
        .map(|r| r.expect("row"))
        .collect();
    assert_eq!(rows.len(), accepted);
    for pair in rows.windows(2) {
        assert_eq!(pair[0].1, pair[1].0, "periods are contiguous");
    }
    let end: chrono::DateTime<chrono::Utc> = rows.last().expect("rows").1.parse().expect("end");
    let mut want = Tally::default();
    for (_, kind) in events.iter().filter(|(at, _)| *at < end) {
        match *kind {
            "job_completed" | "job_failed" => want.jobs += 1,
            "file_downloaded" => want.files += 1,
            "file_uploaded" => want.uploads += 1,
            _ => want.errors += 1,
        }
    }
    let mut got = Tally::default();
    for (_, _, jobs, files, uploads, errors) in &rows {
        got.jobs += *jobs as u64;
        got.files += *files as u64;
        got.uploads += *uploads as u64;
        let errors: std::collections::BTreeMap<String, u64> =
            serde_json::from_str(errors).expect("json");
        got.errors += errors.values().sum::<u64>();
    }
    assert_eq!(
        (got.jobs, got.files, got.uploads, got.errors),
        (want.jobs, want.files, want.uploads, want.errors),
        "sums over accepted reports = stored events of their periods"
    );
    eprintln!(
        "outage: {accepted} weekly reports accepted once each after {failures} failed attempts; \
         sums {got:?}"
    );
}

/// Scenario 6: an installation that opted out sends exactly one request in a month — the
/// deletion — and one that never opted in sends none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opted_out_month_sends_only_the_deletion_request() {
    let server = agg::Server::start(agg::Kind::Sqlite, |_| {}).await;
    let (base, p) = proxy(server.base.clone()).await;
    let (ts, submitter) = service(&base);
    ts.service.opt_in().await.expect("opt in");
    let mut events = Vec::new();
    for hour in 0..(8 * 24) {
        if hour % 12 == 0 {
            activity(&ts, &mut events).await;
        }
        ts.clock.advance(Duration::hours(1));
        server.clock.advance(Duration::hours(1));
        submitter.tick().await.expect("tick");
    }
    let id = ts.service.status().await.expect("status").installation_id;
    assert_eq!(p.seen.lock().expect("lock").as_slice(), ["POST /submit"]);
    submitter.opt_out().await.expect("opt out");
    for hour in 0..(30 * 24) {
        if hour % 12 == 0 {
            activity(&ts, &mut events).await;
        }
        ts.clock.advance(Duration::hours(1));
        server.clock.advance(Duration::hours(1));
        submitter.tick().await.expect("tick");
    }
    assert_eq!(
        p.seen.lock().expect("lock").as_slice(),
        [
            "POST /submit".to_owned(),
            format!("DELETE /installation/{id}")
        ],
        "a month opted out: one deletion request, nothing else"
    );
    let summary: Value = reqwest::get(server.url("/stats/summary"))
        .await
        .expect("summary")
        .json()
        .await
        .expect("json");
    assert_eq!(
        summary["total_submissions"], 0,
        "the server deleted the installation's data"
    );

    // Never opted in: silence.
    let (base, quiet) = proxy(server.base.clone()).await;
    let (ts, submitter) = service(&base);
    for hour in 0..(30 * 24) {
        if hour % 12 == 0 {
            activity(&ts, &mut Vec::new()).await;
        }
        ts.clock.advance(Duration::hours(1));
        submitter.tick().await.expect("tick");
    }
    assert!(quiet.seen.lock().expect("lock").is_empty());
}

/// A TCP proxy in front of PostgreSQL that can cut every connection and refuse new ones.
struct PgProxy {
    port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl PgProxy {
    async fn start(upstream: String) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicU64};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(AtomicU64::new(0));
        let (u, g) = (up.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if !u.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let (u, g) = (u.clone(), g.clone());
                let born = g.load(Ordering::SeqCst);
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let cut = async {
                        while u.load(Ordering::SeqCst) && g.load(Ordering::SeqCst) == born {
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = cut => {}
                    }
                });
            }
        });
        Self {
            port,
            up,
            generation,
        }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Issue #17, point 7: a PostgreSQL outage under load is one `ERROR` line when it starts and
/// one line when it ends, with the count of failed requests — not one line per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_is_two_log_lines_not_one_per_request() {
    let pg = printernizer_stats_test_support::postgres::PgDb::create().await;
    let (host_port, rest) = pg
        .url
        .split_once('@')
        .map(|(_, r)| r.split_once('/').expect("db"))
        .expect("url");
    let proxy = PgProxy::start(host_port.to_owned()).await;
    let url = format!(
        "{}@127.0.0.1:{}/{rest}",
        pg.url.split_once('@').expect("url").0,
        proxy.port
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let server = agg::Process::spawn(
        dir.path(),
        &url,
        &[("PRINTERNIZER_STATS__AGGREGATOR__RATE_LIMIT_PER_HOUR", "100")],
    );
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("client");
    let submit = |n: u32| {
        let body = agg::report(
            &agg::new_id(),
            "2026-11-20T00:00:00Z",
            "2026-11-27T00:00:00Z",
        );
        let (http, url) = (http.clone(), server.url("/submit"));
        async move {
            let _ = n;
            http.post(url)
                .json(&body)
                .send()
                .await
                .expect("send")
                .status()
        }
    };
    assert_eq!(submit(0).await, StatusCode::OK);

    proxy.down();
    // The proxy cuts open connections within 20 ms.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut failed = 0;
    for i in 0..40 {
        let s = submit(i).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        failed += 1;
    }
    proxy.restore();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !server.log().contains("available again") {
        assert!(std::time::Instant::now() < deadline, "{}", server.log());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(submit(99).await, StatusCode::OK);
    let log = server.log();
    let errors = log.lines().filter(|l| l.contains("ERROR")).count();
    assert_eq!(errors, 1, "one ERROR line for the outage:\n{log}");
    assert!(
        log.contains(&format!("{failed} request(s) failed meanwhile")),
        "{log}"
    );
}
