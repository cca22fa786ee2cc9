//! Aggregation-server benchmark (run: `scripts/bench-aggregator`, or
//! `cargo bench -p printernizer-stats-aggregator --bench aggregator`; `BENCH_SECONDS` sets each phase's length).
//!
//! In one run, on 127.0.0.1, with distinct installations (so every request is a real insert):
//! * baseline: an axum handler that parses and validates the same JSON (the server's own
//!   `submission::parse`) and stores nothing;
//! * ours: `printernizer-stats-aggregator`'s router over SQLite, and over PostgreSQL when one
//!   answers at `PRINTERNIZER_STATS_TEST_PG` (default `postgres://postgres@127.0.0.1:5432/postgres`).
//!
//! Each at concurrency 16 and 64, in `BENCH_ROUNDS` (default 3) interleaved rounds of
//! baseline, SQLite, PostgreSQL (the machine's speed drifts by tens of percent between runs, so
//! every phase is compared with the baseline phase of its round); `BENCH_TARGETS=sqlite` or
//! `postgres` loads one backend only. Prints submissions/s, p50 and p99 latency, the ratio to
//! the baseline, and the medians over the rounds. docs/PERFORMANCE.md records the figures.
//!
//! Every request carries a new installation id, stamped into a pre-built body (a 36-byte copy),
//! so the stores insert a new row each time and the client's cost stays the same everywhere.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use printernizer_stats_aggregator::App;
use printernizer_stats_aggregator::config::AggregatorSettings;
use printernizer_stats_aggregator::store::{PgStore, SqliteStore};
use printernizer_stats_aggregator::submission;
use printernizer_stats_shared::clock::SystemClock;
use serde_json::json;

/// Placeholder id in [`body`], replaced per request.
const ID_MARK: &str = "00000000-0000-4000-8000-000000000000";

fn body(i: usize) -> Vec<u8> {
    let now = chrono::Utc::now();
    let end = now - chrono::Duration::hours(1);
    let start = end - chrono::Duration::days(7);
    let ts =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mode = ["homeassistant", "docker", "pi"][i % 3];
    serde_json::to_vec(&json!({
        "schema_version": "1.0",
        "submission_timestamp": ts(now),
        "installation": {
            "installation_id": ID_MARK,
            "first_seen": "2026-01-01T00:00:00Z",
            "app_version": "2.7.0", "python_version": "3.11.7", "platform": "linux",
            "deployment_mode": mode, "country_code": "DE"
        },
        "period": {"start": ts(start), "end": ts(end), "duration_days": 7},
        "printer_fleet": {"printer_count": 3, "printer_types": ["bambu_lab", "prusa"],
                          "printer_type_counts": {"bambu_lab": 2, "prusa": 1}},
        "usage_stats": {"job_count": 12, "jobs_completed": 10, "jobs_failed": 2, "file_count": 4,
                        "upload_count": 3, "uptime_hours": 150,
                        "feature_usage": {"library_enabled": true, "timelapse_enabled": false}},
        "error_summary": {"connection_timeout": 3, "disk_full": 1}
    }))
    .expect("json")
}

/// The baseline: same parsing and validation, same response shape, nothing stored.
async fn parse_only(body: Bytes) -> (StatusCode, axum::Json<serde_json::Value>) {
    match submission::parse(&body, None, chrono::Utc::now()) {
        Ok(_) => (
            StatusCode::OK,
            axum::Json(json!({"status": "success", "submission_id": 0, "message": "ok"})),
        ),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({"detail": e})),
        ),
    }
}

/// CPU seconds (user + system) this process has used so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

struct Result {
    cpu_pct: f64,
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Body templates with the offset of their installation id.
struct Bodies {
    templates: Vec<(Vec<u8>, usize)>,
    /// High half of every id this run sends; the low half counts requests.
    run: u64,
    sent: std::sync::atomic::AtomicU64,
}

impl Bodies {
    fn new() -> Self {
        let templates = (0..3)
            .map(|i| {
                let b = body(i);
                let at = b
                    .windows(ID_MARK.len())
                    .position(|w| w == ID_MARK.as_bytes())
                    .expect("id placeholder");
                (b, at)
            })
            .collect();
        Self {
            templates,
            run: rand::random(),
            sent: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The next body, with an installation id no other request of this run had.
    fn next(&self) -> Bytes {
        let n = self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (template, at) = &self.templates[n as usize % self.templates.len()];
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.run.to_be_bytes());
        bytes[8..].copy_from_slice(&n.to_be_bytes());
        let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
        let mut b = template.clone();
        id.as_hyphenated()
            .encode_lower(&mut b[*at..*at + ID_MARK.len()]);
        Bytes::from(b)
    }
}

/// Sends bodies with new installation ids from `concurrency` workers for `secs`.
async fn load(url: &str, concurrency: usize, secs: f64, bodies: Arc<Bodies>) -> Result {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let cpu0 = cpu_seconds();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, url, bodies) = (client.clone(), url.to_owned(), bodies.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let b = bodies.next();
                let t = Instant::now();
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(b)
                    .send()
                    .await
                    .expect("send");
                assert_eq!(resp.status(), StatusCode::OK, "every request is accepted");
                let _ = resp.bytes().await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for w in workers {
        lat.extend(w.await.expect("worker"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    lat.sort();
    let pct =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
    Result {
        cpu_pct: cpu / elapsed * 100.0,
        per_s: lat.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}

/// One round: the baseline, then each backend against it.
struct Round {
    base: Result,
    sqlite: Option<Result>,
    postgres: Option<Result>,
}

/// `BENCH_TARGETS=sqlite`, `postgres` or `sqlite,postgres` (the default): the backends to load.
struct Targets {
    sqlite: bool,
    postgres: bool,
}

impl Targets {
    fn from_env() -> Self {
        let v = std::env::var("BENCH_TARGETS").unwrap_or_else(|_| "sqlite,postgres".into());
        Self {
            sqlite: v.contains("sqlite"),
            postgres: v.contains("postgres"),
        }
    }
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/submit", listener.local_addr().expect("addr"));
    // The servers' own accept loop (timeouts, connection cap), for the baseline too.
    tokio::spawn(async move {
        printernizer_stats_shared::server::serve(
            "bench",
            listener,
            router,
            AggregatorSettings::default().limits(),
            std::future::pending(),
        )
        .await
        .expect("serve")
    });
    url
}

fn main() {
    let secs: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(3);
    let targets = Targets::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = AggregatorSettings::default();
        let baseline = serve(Router::new().route("/submit", post(parse_only))).await;
        let sqlite = SqliteStore::open(&dir.path().join("agg.db")).expect("sqlite");
        let ours = serve(printernizer_stats_aggregator::api::router(App::new(
            sqlite.clone(),
            "sqlite",
            &settings,
            Arc::new(SystemClock),
        )))
        .await;
        let pg_url = std::env::var("PRINTERNIZER_STATS_TEST_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let pg = match tokio_postgres::connect(&pg_url, tokio_postgres::NoTls).await {
            _ if !targets.postgres => None,
            Ok((admin, conn)) => {
                tokio::spawn(conn);
                let db = format!("printernizer_stats_bench_{}", std::process::id());
                for sql in [
                    format!("DROP DATABASE IF EXISTS {db}"),
                    format!("CREATE DATABASE {db}"),
                ] {
                    admin
                        .batch_execute(&sql)
                        .await
                        .expect("create bench database");
                }
                let url = format!("{}/{db}", pg_url.rsplit_once('/').expect("url").0);
                let store = PgStore::connect(&url).await.expect("postgres");
                let router = printernizer_stats_aggregator::api::router(App::new(
                    store,
                    "postgres",
                    &settings,
                    Arc::new(SystemClock),
                ));
                Some((serve(router).await, admin, db))
            }
            Err(e) => {
                println!("PostgreSQL not reachable ({e}): its rows are skipped");
                None
            }
        };

        let bodies = Arc::new(Bodies::new());
        println!(
            "aggregator benchmark: {secs} s per phase, {rounds} rounds, new installation per \
             request, 2 worker threads"
        );
        println!(
            "{:<28} {:>5} {:>12} {:>9} {:>9} {:>8} {:>6}",
            "target", "conc", "subs/s", "p50 ms", "p99 ms", "ratio", "CPU%"
        );
        let mut summary = Vec::new();
        for concurrency in [16, 64] {
            let row = |name: &str, r: &Result, base: &Result| {
                println!(
                    "{name:<28} {concurrency:>5} {:>12.0} {:>9.2} {:>9.2} {:>7.2}× {:>5.0}",
                    r.per_s,
                    r.p50_ms,
                    r.p99_ms,
                    r.per_s / base.per_s,
                    r.cpu_pct
                )
            };
            let _ = load(&baseline, concurrency, 0.5, bodies.clone()).await;
            let mut rounds_seen = Vec::new();
            for _ in 0..rounds {
                let base = load(&baseline, concurrency, secs, bodies.clone()).await;
                row("baseline (parse only)", &base, &base);
                let mut round = Round {
                    base,
                    sqlite: None,
                    postgres: None,
                };
                if targets.sqlite {
                    let s = load(&ours, concurrency, secs, bodies.clone()).await;
                    row("aggregator, SQLite", &s, &round.base);
                    round.sqlite = Some(s);
                }
                if let Some((url, _, _)) = &pg {
                    let p = load(url, concurrency, secs, bodies.clone()).await;
                    row("aggregator, PostgreSQL", &p, &round.base);
                    round.postgres = Some(p);
                }
                rounds_seen.push(round);
            }
            summary.push((concurrency, rounds_seen));
        }
        println!("\nmedians over {rounds} rounds (each ratio against the baseline of its round)");
        println!(
            "{:<10} {:>5} {:>12} {:>9} {:>9}",
            "backend", "conc", "subs/s", "p99 ms", "ratio"
        );
        for (concurrency, seen) in &summary {
            let median = |f: &dyn Fn(&Round) -> Option<f64>| {
                let mut v: Vec<f64> = seen.iter().filter_map(f).collect();
                v.sort_by(f64::total_cmp);
                v.get(v.len() / 2).copied()
            };
            let line = |name: &str, pick: &dyn Fn(&Round) -> Option<&Result>| {
                if let (Some(per_s), Some(p99), Some(ratio)) = (
                    median(&|r| pick(r).map(|x| x.per_s)),
                    median(&|r| pick(r).map(|x| x.p99_ms)),
                    median(&|r| pick(r).map(|x| x.per_s / r.base.per_s)),
                ) {
                    println!("{name:<10} {concurrency:>5} {per_s:>12.0} {p99:>9.2} {ratio:>8.2}×");
                }
            };
            line("baseline", &|r| Some(&r.base));
            line("SQLite", &|r| r.sqlite.as_ref());
            line("PostgreSQL", &|r| r.postgres.as_ref());
        }
        use printernizer_stats_aggregator::store::SubmissionStore;
        if let Ok(summary) = sqlite.summary().await {
            println!(
                "the SQLite file held {} submissions at the end",
                summary.total_submissions
            );
        }
        if let Some((_, admin, db)) = pg {
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .await;
        }
    });
}
