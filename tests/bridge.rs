//! The Printernizer bridge against a stand-in that serves the responses recorded from a real
//! Printernizer 2.42: the recorded scenario replayed step by step, restarts, outages,
//! failures, Printernizer's own sharing, and that nothing personal is stored.

use printernizer_stats_test_support::child;
use printernizer_stats_test_support::mqtt as support;
use printernizer_stats_test_support::printernizer;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use printernizer::{Mode, SECRETS, STEPS, Standin};
use serde_json::{Value, json};
use support::{App, Broker, Client};

const HEALTH: &str = "/api/v1/health";
const EXPORT: &str = "/api/v1/usage-stats/export";
const STATUS: &str = "/api/v1/usage-stats/status";
const PRINTERS: &str = "/api/v1/printers";
const JOBS: &str = "/api/v1/jobs";

/// `run` reading the stand-in every second, MQTT off unless `broker` is given.
fn start(dir: &Path, standin: &Standin, broker: Option<u16>, extra: &[(&str, &str)]) -> App {
    let url = standin.url();
    let mut env: Vec<(&str, &str)> = vec![
        ("PRINTERNIZER_STATS__PRINTERNIZER__URL", url.as_str()),
        ("PRINTERNIZER_STATS__PRINTERNIZER__ENABLED", "true"),
        ("PRINTERNIZER_STATS__PRINTERNIZER__POLL_INTERVAL_S", "1"),
        ("PRINTERNIZER_STATS__PRINTERNIZER__TIMEOUT_S", "2"),
        ("PRINTERNIZER_STATS__RETENTION__DAYS", "3650"),
    ];
    if broker.is_none() {
        env.push(("PRINTERNIZER_STATS__MQTT__ENABLED", "false"));
    }
    env.extend_from_slice(extra);
    let env: Vec<(&str, &str)> = env.into_iter().collect();
    match broker {
        Some(port) => App::start(dir, port, &env),
        None => App::spawn(dir, None, &env),
    }
}

/// Waits until a poll that started after now has completed.
fn one_full_poll(standin: &Standin) {
    let since = standin.hits(HEALTH);
    standin.wait_hits(HEALTH, since, 2, Duration::from_secs(30));
}

fn cli(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(assert_cmd::cargo::cargo_bin("printernizer-stats"))
        .args(args)
        .current_dir(dir)
        .env("PRINTERNIZER_STATS__DATABASE__PATH", dir.join("stats.db"))
        .env("PRINTERNIZER_STATS_OPTIONS", dir.join("no-options.json"))
        .env("PRINTERNIZER_STATS__RETENTION__DAYS", "3650")
        .env("PRINTERNIZER_STATS__MQTT__ENABLED", "false")
        .env_remove("SUPERVISOR_TOKEN")
        .env_remove("DO_NOT_TRACK")
        .output()
        .expect("cli runs")
}

fn report(dir: &Path) -> Value {
    let to = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let out = cli(
        dir,
        &["report", "--from", "2026-11-30T00:00:00Z", "--to", &to],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("report JSON")
}

/// Every file of the database (main, WAL, shared memory) as one byte string.
fn database_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for name in ["stats.db", "stats.db-wal", "stats.db-shm"] {
        if let Ok(bytes) = std::fs::read(dir.join(name)) {
            all.extend(bytes);
        }
    }
    all
}

/// Warning lines of `log` that contain `needle`.
fn warnings(log: &str, needle: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("WARN") && l.contains(needle))
        .count()
}

fn assert_no_secret(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} contains {secret:?}");
    }
}

#[test]
fn the_recorded_scenario_replayed_gives_the_report_its_jobs_and_log_hold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let standin = Standin::start(STEPS[0]);
    let mut app = start(dir.path(), &standin, None, &[]);
    one_full_poll(&standin);
    for step in &STEPS[1..] {
        standin.load_step(step);
        if *step == "19-sigterm" {
            app.wait_count(
                "SELECT count(*) FROM usage_events WHERE event_type = 'app_shutdown'",
                1,
                Duration::from_secs(30),
            );
        } else {
            one_full_poll(&standin);
        }
    }
    one_full_poll(&standin);
    assert!(app.is_running(), "{}", app.log());
    assert!(app.stop(), "stops cleanly:\n{}", app.log());

    let r = report(dir.path());
    let usage = &r["usage_stats"];
    // Jobs from /jobs: cube (auto, finished when its printer went idle), the manual completed,
    // failed and cancelled jobs, benchy (auto, through OctoPrint). The log's job entries do
    // not count on top.
    assert_eq!(usage["jobs_completed"], 3, "{r:#}");
    assert_eq!(usage["jobs_failed"], 2, "{r:#}");
    assert_eq!(usage["job_count"], 5, "{r:#}");
    assert_eq!(usage["file_count"], 1);
    assert_eq!(usage["upload_count"], 1);
    let fleet = &r["printer_fleet"];
    assert_eq!(fleet["printer_count"], 2, "{r:#}");
    assert_eq!(fleet["printer_type_counts"], json!({"prusa_core": 2}));
    assert_eq!(r["installation"]["app_version"], "2.42.0");
    assert_eq!(r["installation"]["python_version"], "3.11.7");
    assert_eq!(r["installation"]["platform"], "linux");

    let count = |sql: &str| app.count(sql);
    assert_eq!(
        count("SELECT count(*) FROM usage_events WHERE event_type = 'job_created'"),
        5
    );
    assert_eq!(
        count("SELECT count(*) FROM usage_events WHERE event_type = 'app_start'"),
        2,
        "two starts, each once"
    );
    assert_eq!(
        count("SELECT count(*) FROM usage_events WHERE event_type = 'app_shutdown'"),
        1
    );
    assert_eq!(
        count("SELECT count(*) FROM usage_events WHERE event_type = 'printer_connected'"),
        3
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM usage_events WHERE json_extract(metadata, '$.outcome') = 'cancelled'"
        ),
        1
    );
    // Printernizer's own UUIDs for its log's events.
    assert_eq!(
        count(
            "SELECT count(*) FROM usage_events WHERE id = '9ea0b734-277c-4d0b-b599-e5843f165f0a'"
        ),
        1
    );

    assert_no_secret("the database", &database_bytes(dir.path()));
    let export = cli(dir.path(), &["export"]);
    assert!(export.status.success());
    assert_no_secret("the export", &export.stdout);
    assert_no_secret("the report", r.to_string().as_bytes());
    assert_no_secret("the log", app.log().as_bytes());
}

/// The stand-in's final state, with `events` (newest first) as its log.
fn serve_log(standin: &Standin, events: &[Value], opted_in: bool) {
    let export = json!({"events": events, "settings": {"installation_id": SECRETS[24]},
        "exported_at": "2026-12-01T20:39:09", "export_version": "1.0"});
    standin.set_json(
        "usage-stats-export",
        serde_json::to_vec_pretty(&export).expect("json"),
    );
    standin.set_json(
        "usage-stats-status",
        serde_json::to_vec(&json!({"service_available": true, "opted_in": opted_in,
            "total_events": events.len(), "collection_active": true}))
        .expect("json"),
    );
}

fn log_event(kind: &str, at: chrono::DateTime<chrono::Utc>, metadata: Value) -> Value {
    json!({"id": uuid::Uuid::new_v4().to_string(), "event_type": kind,
        "timestamp": at.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
        "metadata": metadata, "submitted": 0, "created_at": "2026-12-01T20:34:22.988154"})
}

#[test]
fn a_restart_of_run_stores_nothing_twice_and_idle_polls_are_three_small_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let standin = Standin::start("18-rate-limit-429");
    let mut app = start(dir.path(), &standin, None, &[]);
    one_full_poll(&standin);
    one_full_poll(&standin);
    let events = app.count("SELECT count(*) FROM usage_events");
    let rows = app.count("SELECT count(*) FROM bridge_jobs");
    assert!(events > 0);
    // Idle: per poll /health, /status, /printers; the export once, the job list once.
    let (h, s, p, e, j) = (
        standin.hits(HEALTH),
        standin.hits(STATUS),
        standin.hits(PRINTERS),
        standin.hits(EXPORT),
        standin.hits(JOBS),
    );
    for _ in 0..4 {
        one_full_poll(&standin);
    }
    assert_eq!(standin.hits(EXPORT), e, "no export while nothing is new");
    assert_eq!(
        standin.hits(JOBS),
        j,
        "no job list while nothing hints at a change"
    );
    let polls = standin.hits(HEALTH) - h;
    assert!(polls >= 4);
    assert!((standin.hits(STATUS) - s).abs_diff(polls) <= 1);
    assert!((standin.hits(PRINTERS) - p).abs_diff(polls) <= 1);
    assert!(app.stop());

    let mut again = start(dir.path(), &standin, None, &[]);
    one_full_poll(&standin);
    one_full_poll(&standin);
    assert_eq!(
        again.count("SELECT count(*) FROM usage_events"),
        events,
        "{}",
        again.log()
    );
    assert_eq!(again.count("SELECT count(*) FROM bridge_jobs"), rows);
    assert_eq!(
        again.count("SELECT value FROM usage_counters WHERE name = 'events_total'"),
        events
    );
    assert!(again.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_shows_offline_and_each_start_counts_once() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let standin = Standin::start("18-rate-limit-429");
    let now = chrono::Utc::now();
    let mut log = vec![log_event(
        "app_start",
        now - chrono::Duration::minutes(10),
        json!({"app_version": "2.42.0", "python_version": "3.11.7", "platform": "linux"}),
    )];
    serve_log(&standin, &log, false);
    let client = Client::connect(broker.port, &["printernizer_stats/#"]).await;
    let mut app = start(dir.path(), &standin, Some(broker.port), &[]);
    let state_is =
        |key: &'static str, want: Value| move |m: &support::Msg| m.json().get(key) == Some(&want);
    let state = "printernizer_stats/state";
    client
        .wait_for(
            state,
            Duration::from_secs(30),
            state_is("printernizer_online", json!("ON")),
        )
        .await;
    client
        .wait_for(
            state,
            Duration::from_secs(30),
            state_is("data_source", json!("mqtt, printernizer api")),
        )
        .await;
    let starts = "SELECT count(*) FROM usage_events WHERE event_type = 'app_start'";
    assert_eq!(
        app.count(starts),
        1,
        "the log's start, not a second one for reachability"
    );

    standin.down();
    client
        .wait_for(
            state,
            Duration::from_secs(30),
            state_is("printernizer_online", json!("OFF")),
        )
        .await;
    assert_eq!(
        app.count("SELECT count(*) FROM usage_events WHERE event_type = 'app_shutdown'"),
        1
    );
    // It restarts: its log gets a new app_start.
    log.insert(
        0,
        log_event(
            "app_start",
            chrono::Utc::now(),
            json!({"app_version": "2.43.0"}),
        ),
    );
    serve_log(&standin, &log, false);
    standin.up();
    client
        .wait_for(
            state,
            Duration::from_secs(60),
            state_is("printernizer_online", json!("ON")),
        )
        .await;
    app.wait_count(starts, 2, Duration::from_secs(30));
    one_full_poll(&standin);
    assert_eq!(app.count(starts), 2, "one start per start");
    assert_eq!(
        warnings(&app.log(), "cannot reach Printernizer"),
        1,
        "{}",
        app.log()
    );
    assert!(app.stop());

    // A restart while we were down is one start too.
    log.insert(
        0,
        log_event(
            "app_start",
            chrono::Utc::now(),
            json!({"app_version": "2.43.0"}),
        ),
    );
    serve_log(&standin, &log, false);
    let mut again = start(dir.path(), &standin, Some(broker.port), &[]);
    again.wait_count(starts, 3, Duration::from_secs(30));
    one_full_poll(&standin);
    one_full_poll(&standin);
    assert_eq!(again.count(starts), 3, "{}", again.log());
    let status = cli(dir.path(), &["status", "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert!(status["bridge_last_success"].is_string(), "{status}");
    assert!(again.stop());
    // Nothing personal reached Home Assistant either.
    let published: String = client
        .messages("")
        .iter()
        .map(|m| format!("{} {}\n", m.topic, m.text()))
        .collect();
    assert!(published.contains("printernizer_stats/state"));
    assert_no_secret("the MQTT messages", published.as_bytes());
    assert_no_secret("the database", &database_bytes(dir.path()));
    drop(client);
}

#[test]
fn failures_are_logged_once_per_condition_and_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let standin = Standin::start("18-rate-limit-429");
    let mut app = start(dir.path(), &standin, None, &[]);
    one_full_poll(&standin);
    // Printernizer not answering is also its being down (app_shutdown / app_start): count the rest.
    let others =
        "SELECT count(*) FROM usage_events WHERE event_type NOT IN ('app_start', 'app_shutdown')";
    let stored = app.count(others);
    assert!(stored > 0);
    for (mode, says) in [
        (Mode::Status(500), "HTTP 500"),
        (Mode::Html, "instead of JSON"),
        (Mode::InvalidJson, "not Printernizer's API"),
        (
            Mode::Slow(Duration::from_secs(4)),
            "did not answer within 2 s",
        ),
        (Mode::RateLimited(2), "waiting 2 s as it asks"),
    ] {
        standin.set_mode(mode.clone());
        let since = standin.hits(HEALTH);
        standin.wait_hits(HEALTH, since, 3, Duration::from_secs(60));
        assert_eq!(warnings(&app.log(), says), 1, "{mode:?}:\n{}", app.log());
        assert_eq!(app.count(others), stored);
        assert!(app.is_running());
        standin.set_mode(Mode::Normal);
        one_full_poll(&standin);
    }
    // Printernizer answers again, with something new in its log.
    let mut log: Vec<Value> = standin.json("usage-stats-export")["events"]
        .as_array()
        .expect("events")
        .clone();
    log.insert(
        0,
        log_event(
            "file_downloaded",
            chrono::Utc::now(),
            json!({"file_size_mb": 2.5}),
        ),
    );
    serve_log(&standin, &log, false);
    standin.set_mode(Mode::Normal);
    app.wait_count(others, stored + 1, Duration::from_secs(60));
    assert_eq!(
        app.log()
            .matches("Printernizer's API answers again")
            .count(),
        5,
        "{}",
        app.log()
    );
    assert!(app.stop());
}

#[test]
fn while_printernizer_shares_its_own_statistics_nothing_is_submitted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let standin = Standin::start("18-rate-limit-429");
    let events = standin.json("usage-stats-export")["events"].clone();
    serve_log(&standin, events.as_array().expect("events"), true);
    let opt_in = cli(dir.path(), &["opt-in"]);
    assert!(opt_in.status.success());
    let mut app = start(dir.path(), &standin, None, &[]);
    app.wait_log(
        "Printernizer shares its own usage statistics",
        1,
        Duration::from_secs(30),
    );
    let status = cli(dir.path(), &["status", "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert!(
        status["reason"]
            .as_str()
            .is_some_and(|r| r.contains("Printernizer shares")),
        "{status}"
    );
    assert_eq!(status["printernizer_sharing"], true);
    // A submission attempt is refused by policy without sending anything.
    let submit = Command::new(assert_cmd::cargo::cargo_bin("printernizer-stats"))
        .arg("submit")
        .env(
            "PRINTERNIZER_STATS__DATABASE__PATH",
            dir.path().join("stats.db"),
        )
        .env(
            "PRINTERNIZER_STATS_OPTIONS",
            dir.path().join("no-options.json"),
        )
        .env(
            "PRINTERNIZER_STATS__SUBMISSION__ENDPOINT",
            "http://127.0.0.1:9/submit",
        )
        .env("PRINTERNIZER_STATS__MQTT__ENABLED", "false")
        .env_remove("SUPERVISOR_TOKEN")
        .env_remove("DO_NOT_TRACK")
        .output()
        .expect("submit runs");
    assert_eq!(
        submit.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&submit.stderr)
    );
    assert!(String::from_utf8_lossy(&submit.stdout).contains("Printernizer shares"));

    // It stops sharing: the reason clears.
    serve_log(&standin, events.as_array().expect("events"), false);
    app.wait_log(
        "no longer shares its own usage statistics",
        1,
        Duration::from_secs(30),
    );
    let status = cli(dir.path(), &["status", "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    // (No endpoint is configured in this test, so that is what the reason says now.)
    assert!(
        status["reason"].as_str().is_some_and(
            |r| !r.contains("Printernizer shares") && r.contains("no aggregation server")
        ),
        "{status}"
    );
    assert_eq!(status["printernizer_sharing"], false);
    assert!(app.stop());
}

#[test]
fn old_events_are_skipped_not_redated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let standin = Standin::start("18-rate-limit-429");
    let now = chrono::Utc::now();
    let log = vec![
        log_event(
            "file_uploaded",
            now - chrono::Duration::hours(1),
            json!({"file_size_mb": 1}),
        ),
        log_event(
            "file_uploaded",
            now - chrono::Duration::days(40),
            json!({"file_size_mb": 1}),
        ),
        log_event(
            "file_uploaded",
            now - chrono::Duration::days(400),
            json!({"file_size_mb": 1}),
        ),
    ];
    serve_log(&standin, &log, false);
    let mut app = start(
        dir.path(),
        &standin,
        None,
        &[("PRINTERNIZER_STATS__RETENTION__DAYS", "30")],
    );
    one_full_poll(&standin);
    one_full_poll(&standin);
    assert_eq!(
        app.count("SELECT count(*) FROM usage_events WHERE event_type = 'file_uploaded'"),
        1,
        "only the event inside retention"
    );
    assert!(app.stop());
}

#[tokio::test]
async fn in_the_addon_printernizer_is_found_through_the_supervisor() {
    use axum::routing::get;
    use printernizer_stats::bridge::locate;
    async fn serve(app: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }
    let info = |body: Value| {
        move |headers: axum::http::HeaderMap| {
            let body = body.clone();
            async move {
                if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer tok")
                {
                    return (
                        axum::http::StatusCode::UNAUTHORIZED,
                        axum::Json(json!({"result": "error"})),
                    );
                }
                (axum::http::StatusCode::OK, axum::Json(body))
            }
        }
    };
    // The store add-on: host network, so the host's address on the Supervisor network.
    let url = serve(axum::Router::new().route(
        "/addons/6f840855_printernizer/info",
        get(info(
            json!({"result": "ok", "data": {"state": "started", "host_network": true}}),
        )),
    ))
    .await;
    let (found, how) = locate::printernizer_url(&url, "tok").await;
    assert_eq!(found, "http://172.30.32.1:8000");
    assert!(
        how.contains("6f840855_printernizer") && how.contains("started"),
        "{how}"
    );
    // Only a local copy, on the add-on network: its host name.
    let url = serve(axum::Router::new().route(
        "/addons/local_printernizer/info",
        get(info(
            json!({"result": "ok", "data": {"state": "stopped", "host_network": false,
            "hostname": "local-printernizer"}}),
        )),
    ))
    .await;
    let (found, how) = locate::printernizer_url(&url, "tok").await;
    assert_eq!(found, "http://local-printernizer:8000");
    assert!(how.contains("stopped"), "{how}");
    // Neither: the default.
    let url = serve(axum::Router::new()).await;
    assert_eq!(
        locate::printernizer_url(&url, "tok").await.0,
        "http://172.30.32.1:8000"
    );
}

#[test]
fn simulate_serves_a_live_printernizer_api_that_the_bridge_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = child::free_port();
    let mut sim_cmd = Command::new(assert_cmd::cargo::cargo_bin("printernizer-stats"));
    sim_cmd
        .args([
            "simulate",
            "--printernizer-api",
            &port.to_string(),
            "--printers",
            "2",
        ])
        .args(["--events", "200", "--rate", "0", "--seed", "7"])
        .env(
            "PRINTERNIZER_STATS_OPTIONS",
            dir.path().join("no-options.json"),
        )
        .env_remove("SUPERVISOR_TOKEN");
    let mut sim = child::LoggedChild::spawn(&mut sim_cmd, "simulate");
    child::poll_until(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || sim.log().contains("simulated workshop done"),
        || format!("simulate never finished:\n{}", sim.log()),
    );
    let url = format!("http://127.0.0.1:{port}");
    let mut app = App::spawn(
        dir.path(),
        None,
        &[
            ("PRINTERNIZER_STATS__PRINTERNIZER__URL", url.as_str()),
            ("PRINTERNIZER_STATS__PRINTERNIZER__ENABLED", "true"),
            ("PRINTERNIZER_STATS__PRINTERNIZER__POLL_INTERVAL_S", "1"),
            ("PRINTERNIZER_STATS__MQTT__ENABLED", "false"),
        ],
    );
    app.wait_log(
        "read Printernizer's usage-statistics log",
        1,
        Duration::from_secs(30),
    );
    app.wait_log("reading Printernizer's REST API", 1, Duration::from_secs(5));
    child::poll_until(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || app.count("SELECT count(*) FROM usage_events WHERE event_type = 'job_created'") > 10,
        || app.log(),
    );
    let finished = app.count(
        "SELECT count(*) FROM usage_events WHERE event_type IN ('job_completed', 'job_failed')",
    );
    eprintln!("simulated: {finished} finished jobs");
    assert!(finished > 0);
    assert_eq!(
        app.count("SELECT count(DISTINCT printer_hash) FROM usage_fleet"),
        2
    );
    assert!(app.stop());
    let bytes = database_bytes(dir.path());
    let text = String::from_utf8_lossy(&bytes);
    for secret in [
        "SIMULATED-SECRET-KEY",
        "SIM-SN-",
        "Erika",
        "Mustermann",
        "192.168.1.",
        "kunde_",
    ] {
        assert!(!text.contains(secret), "the database contains {secret:?}");
    }
    assert!(
        sim.stop(),
        "simulate stops cleanly on SIGTERM:\n{}",
        sim.log()
    );
}
