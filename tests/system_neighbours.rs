//! `run` and its neighbours, with real processes (issue #17): a second `run` on the same
//! database, the CLI writing beside `run` (also during an ingest burst), and requests whose
//! body is broken. Figures go to docs/RELIABILITY.md.

use printernizer_stats_test_support::mqtt as support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{App, Broker, start_online};

const T: Duration = Duration::from_secs(30);

fn run_cli(dir: &Path, db: &Path, args: &[&str]) -> std::process::Output {
    Command::new(assert_cmd::cargo::cargo_bin("printernizer-stats"))
        .args(args)
        .current_dir(dir)
        .env("PRINTERNIZER_STATS__DATABASE__PATH", db)
        .env("PRINTERNIZER_STATS_OPTIONS", dir.join("no-options.json"))
        .env("PRINTERNIZER_STATS__HTTP__BIND", "127.0.0.1:0")
        .env_remove("SUPERVISOR_TOKEN")
        .env_remove("DO_NOT_TRACK")
        .env_remove("RUST_LOG")
        .output()
        .expect("runs")
}

fn opt_in_status(app: &App) -> String {
    app.query(
        "SELECT value FROM usage_settings WHERE key = 'opt_in_status'",
        |c, sql| c.query_row(sql, [], |r| r.get(0)).expect("status"),
    )
}

/// Point 2: a second `run` on one database exits with code 1 and one line naming the first
/// one's PID and the lock; the first keeps its MQTT session and keeps storing; the CLI works
/// beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_exits_and_leaves_the_first_alone() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut first, watcher) = start_online(dir.path(), broker.port, &[]).await;
    let first_pid = first.pid().expect("pid");

    let mut second = App::start(dir.path(), broker.port, &[]);
    assert_eq!(second.wait_exit(T), Some(1), "{}", second.log());
    let log = second.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {log}");
    assert!(lines[0].contains(&format!("PID {first_pid}")), "{log}");
    assert!(lines[0].contains("stats.db.lock"), "{log}");

    // The first never went offline, and still stores.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let availability: Vec<String> = watcher
        .messages("printernizer_stats/availability")
        .iter()
        .map(support::Msg::text)
        .collect();
    assert!(
        !availability.iter().any(|m| m == "offline"),
        "{availability:?}"
    );
    assert!(first.is_running());
    watcher
        .publish(
            "printernizer/events/job_completed",
            json!({"status": "completed"}).to_string(),
        )
        .await;
    first.wait_count("SELECT count(*) FROM usage_events", 1, T);
    assert!(
        !first.log().contains("session taken over"),
        "{}",
        first.log()
    );

    let status = run_cli(dir.path(), &first.db, &["status"]);
    assert!(status.status.success(), "{status:?}");
    assert!(first.stop(), "clean exit");
    // The lock went with the process: a new run starts.
    let (mut again, _w) = start_online(dir.path(), broker.port, &[]).await;
    assert!(again.stop());
}

/// Point 3: `opt-in`, `opt-out` and `delete-all` on the command line show up in Home Assistant
/// within seconds (switch and state), without a reconnect; and CLI writes during an ingest
/// burst wait for the writer instead of failing it (no `database is locked`, no reconnect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_beside_run_is_seen_and_never_breaks_it() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut app, client) = start_online(dir.path(), broker.port, &[]).await;
    let ha = support::Client::connect(
        broker.port,
        &[
            "printernizer_stats/opt_in/state",
            "printernizer_stats/state",
        ],
    )
    .await;
    ha.wait_for("printernizer_stats/opt_in/state", T, |m| m.text() == "OFF")
        .await;

    let started = Instant::now();
    let out = run_cli(dir.path(), &app.db, &["opt-in"]);
    assert!(out.status.success(), "{out:?}");
    ha.wait_for("printernizer_stats/opt_in/state", T, |m| m.text() == "ON")
        .await;
    let seen_after = started.elapsed();
    assert!(seen_after < Duration::from_secs(10), "{seen_after:?}");

    let out = run_cli(dir.path(), &app.db, &["opt-out"]);
    assert!(out.status.success(), "{out:?}");
    ha.wait_for("printernizer_stats/opt_in/state", T, |m| m.text() == "OFF")
        .await;

    // An event recorded on the command line reaches the sensors.
    let out = run_cli(
        dir.path(),
        &app.db,
        &[
            "events",
            "record",
            "job_completed",
            "--metadata",
            "{\"status\":\"completed\"}",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    ha.wait_for("printernizer_stats/state", T, |m| {
        m.json()["events_total"] == json!(1)
    })
    .await;

    // A burst over MQTT, with the CLI writing all the while.
    let burst = 3_000;
    let publisher = {
        let client_port = broker.port;
        tokio::spawn(async move {
            let c = support::Client::connect(client_port, &[]).await;
            for i in 0..burst {
                c.publish(
                    "printernizer/events/job_completed",
                    json!({"status": if i % 4 == 0 { "failed" } else { "completed" }}).to_string(),
                )
                .await;
            }
            c
        })
    };
    let mut cli_failures = Vec::new();
    for i in 0..12 {
        let cmd = if i % 2 == 0 { "opt-in" } else { "opt-out" };
        let out = run_cli(dir.path(), &app.db, &[cmd]);
        if !out.status.success() {
            cli_failures.push(String::from_utf8_lossy(&out.stderr).into_owned());
        }
    }
    let _publisher = publisher.await.expect("publisher");
    app.wait_count("SELECT count(*) FROM usage_events", 1 + burst, T);
    assert!(cli_failures.is_empty(), "{cli_failures:?}");
    let log = app.log();
    assert!(!log.contains("database is locked"), "{log}");
    assert!(!log.contains("cannot store events"), "{log}");
    let online = client
        .messages("printernizer_stats/availability")
        .iter()
        .filter(|m| m.text() == "offline")
        .count();
    assert_eq!(online, 0, "no reconnect: {log}");

    // delete-all on the command line: the sensors drop to 0.
    let out = run_cli(dir.path(), &app.db, &["delete-all", "--yes"]);
    assert!(out.status.success(), "{out:?}");
    ha.wait_for("printernizer_stats/state", T, |m| {
        m.json()["events_total"] == json!(0)
    })
    .await;
    assert!(app.stop());
}

/// Point 6: a body that is not JSON, or a chunked body that breaks off, is a 400 with
/// `{"error": …}` and changes nothing; no body and `{}` still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_body_opts_nobody_in() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut app, _client) = start_online(dir.path(), broker.port, &[]).await;
    let base = app.http_base();
    let http = reqwest::Client::new();
    let url = format!("{base}api/v1/usage-stats/opt-in");

    for body in ["{not json", "opt in please", "{\"a\": 1"] {
        let resp = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), reqwest::StatusCode::BAD_REQUEST, "{body}");
        let v: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(v["error"], "invalid_body", "{v}");
        assert_eq!(opt_in_status(&app), "disabled");
    }

    // A chunked body with a broken chunk size.
    let addr = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut tcp = std::net::TcpStream::connect(&addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    tcp.write_all(
        b"POST /api/v1/usage-stats/opt-in HTTP/1.1\r\nHost: x\r\n\
          Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n\
          2\r\n{}\r\nZZ\r\n",
    )
    .expect("write");
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 400"),
        "a broken chunk is a 400: {answer:?}"
    );
    assert_eq!(opt_in_status(&app), "disabled");

    // A body cut off mid-way: the connection closes, nothing changes.
    let mut tcp = std::net::TcpStream::connect(&addr).expect("connect");
    tcp.write_all(
        b"POST /api/v1/usage-stats/opt-in HTTP/1.1\r\nHost: x\r\n\
          Content-Length: 100\r\nContent-Type: application/json\r\n\r\n{\"a\":",
    )
    .expect("write");
    drop(tcp);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(opt_in_status(&app), "disabled");

    for body in ["", "{}", "  "] {
        let resp = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), reqwest::StatusCode::OK, "{body:?}");
        assert_eq!(opt_in_status(&app), "enabled");
        let out = http
            .post(format!("{base}api/v1/usage-stats/opt-out"))
            .send()
            .await
            .expect("send");
        assert_eq!(out.status(), reqwest::StatusCode::OK);
    }
    assert!(app.stop());
}
