//! The binary, as a user runs it: exit codes, messages, and the issue's acceptance commands.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

fn cli(dir: &TempDir) -> Command {
    let mut cmd = StdCommand::new(assert_cmd::cargo::cargo_bin("printernizer-stats"));
    configure(&mut cmd, dir.path());
    Command::from_std(cmd)
}

fn configure(cmd: &mut StdCommand, dir: &Path) {
    cmd.current_dir(dir)
        .env("PRINTERNIZER_STATS__DATABASE__PATH", dir.join("stats.db"))
        .env("PRINTERNIZER_STATS_OPTIONS", dir.join("no-options.json"))
        // The MQTT side has its own tests against a private broker; never touch a shared one.
        .env("PRINTERNIZER_STATS__MQTT__ENABLED", "false")
        .env("PRINTERNIZER_STATS__HTTP__BIND", "127.0.0.1:0")
        .env_remove("SUPERVISOR_TOKEN")
        .env_remove("DO_NOT_TRACK")
        .env_remove("RUST_LOG");
}

fn json_stdout(cmd: &mut Command) -> Value {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

#[test]
fn record_drops_unknown_keys_and_report_counts_the_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    cli(&dir)
        .args(["events", "record", "job_completed", "--metadata"])
        .arg(r#"{"duration_seconds":3600,"printer_type":"bambu_lab","file":"/home/u/benchy.3mf"}"#)
        .assert()
        .success();

    let export = json_stdout(cli(&dir).arg("export"));
    let events = export["events"].as_array().expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["metadata"],
        serde_json::json!({"duration_seconds": 3600, "printer_type": "bambu_lab"})
    );
    assert_eq!(export["export_version"], "1");
    assert!(
        export["settings"].get("printer_salt").is_none(),
        "the salt is secret"
    );

    let report = json_stdout(cli(&dir).arg("report"));
    assert_eq!(report["usage_stats"]["job_count"], 1);
    assert_eq!(report["schema_version"], "1.0");
    assert!(!report.to_string().contains("benchy"));
}

#[test]
fn an_unknown_event_type_exits_2_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = cli(&dir)
        .args(["events", "record", "not_a_type"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown event type `not_a_type`"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
    let status = json_stdout(cli(&dir).args(["status", "--json"]));
    assert_eq!(status["events_total"], 0);
}

#[test]
fn bad_metadata_and_bad_times_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    for args in [
        vec!["events", "record", "app_start", "--metadata", "[1]"],
        vec!["events", "record", "app_start", "--metadata", "{oops"],
        vec!["events", "record", "app_start", "--timestamp", "yesterday"],
        vec![
            "report",
            "--from",
            "2026-11-02T00:00:00Z",
            "--to",
            "2026-11-01T00:00:00Z",
        ],
        vec!["delete-all"],
        vec!["no-such-command"],
    ] {
        cli(&dir).args(&args).assert().code(2);
    }
}

#[test]
fn invalid_configuration_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (key, value, expect) in [
        ("PRINTERNIZER_STATS__RETENTION__DAYS", "0", "retention.days"),
        ("PRINTERNIZER_STATS__RETENTION__DAYZ", "3", "dayz"),
        ("PRINTERNIZER_STATS__LOG_LEVEL", "chatty", "log_level"),
        (
            "PRINTERNIZER_STATS__PRINTERNIZER__URL",
            "printernizer.local:8000",
            "printernizer.url",
        ),
        (
            "PRINTERNIZER_STATS__PRINTERNIZER__POLL_INTERVAL_S",
            "0",
            "printernizer.poll_interval_s",
        ),
    ] {
        let out = cli(&dir)
            .env(key, value)
            .arg("status")
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{key}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(expect),
            "{key}"
        );
    }
    std::fs::write(
        dir.path().join("c.toml"),
        "[database]\npath = \"x.db\"\nbogus = 1\n",
    )
    .expect("write");
    let out = cli(&dir)
        .args(["--config", "c.toml", "status"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));
}

#[test]
fn opt_in_is_refused_under_do_not_track_with_exit_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = cli(&dir)
        .env("DO_NOT_TRACK", "1")
        .arg("opt-in")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DO_NOT_TRACK"));
    let status = json_stdout(cli(&dir).args(["status", "--json"]));
    assert_eq!(status["opt_in_status"], "disabled");

    cli(&dir).arg("opt-in").assert().success();
    assert_eq!(
        json_stdout(cli(&dir).args(["status", "--json"]))["opt_in_status"],
        "enabled"
    );
    cli(&dir).arg("opt-out").assert().success();
    assert_eq!(
        json_stdout(cli(&dir).args(["status", "--json"]))["opt_in_status"],
        "disabled"
    );
}

#[test]
fn delete_all_leaves_zero_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    for _ in 0..3 {
        cli(&dir)
            .args(["events", "record", "file_uploaded"])
            .assert()
            .success();
    }
    cli(&dir)
        .args(["delete-all", "--yes"])
        .assert()
        .success()
        .stdout("deleted 3 events\n");
    assert_eq!(
        json_stdout(cli(&dir).args(["status", "--json"]))["events_total"],
        0
    );
    assert_eq!(
        json_stdout(cli(&dir).arg("export"))["events"],
        serde_json::json!([])
    );
}

#[test]
fn preview_report_covers_the_interval_and_an_explicit_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    cli(&dir)
        .args([
            "events",
            "record",
            "job_failed",
            "--timestamp",
            "2026-01-01T10:00:00Z",
        ])
        .env("PRINTERNIZER_STATS__RETENTION__DAYS", "3650")
        .assert()
        .success();
    let preview = json_stdout(cli(&dir).arg("report"));
    assert_eq!(preview["period"]["duration_days"], 7);
    let ranged = json_stdout(cli(&dir).args([
        "report",
        "--from",
        "2026-01-01T00:00:00Z",
        "--to",
        "2026-01-02T00:00:00Z",
    ]));
    assert_eq!(ranged["usage_stats"]["job_count"], 1);
    assert_eq!(ranged["period"]["duration_days"], 1);
}

#[test]
fn run_starts_logs_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = StdCommand::new(assert_cmd::cargo::cargo_bin("printernizer-stats"));
    configure(&mut cmd, dir.path());
    let mut child = cmd
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut started = false;
    while Instant::now() < deadline {
        match lines.next() {
            Some(Ok(line)) if line.contains("printernizer-stats started") => {
                started = true;
                break;
            }
            Some(Ok(_)) => continue,
            _ => break,
        }
    }
    assert!(started, "no startup line");
    let kill = StdCommand::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    let status = child.wait().expect("waits");
    assert!(status.success(), "exit status {status:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("shutting down")), "{rest:?}");
}

#[test]
fn addon_mode_reports_home_assistants_country() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let paths = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = paths.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]).to_string();
            seen.lock()
                .expect("lock")
                .push(request.lines().next().unwrap_or("").to_owned());
            let body = r#"{"country":"de","time_zone":"Europe/Berlin","language":"de"}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let report = json_stdout(
        cli(&dir)
            .arg("report")
            .env("SUPERVISOR_TOKEN", "t")
            .env("PRINTERNIZER_STATS_SUPERVISOR_URL", &url)
            .env("PRINTERNIZER_STATS__INSTALLATION__COUNTRY_CODE", "FR"),
    );
    assert_eq!(report["installation"]["country_code"], "DE");
    assert_eq!(report["installation"]["deployment_mode"], "homeassistant");
    assert!(
        paths
            .lock()
            .expect("lock")
            .iter()
            .any(|p| p.starts_with("GET /core/api/config "))
    );

    // Outside the add-on the configured code is used, and never anything from the network.
    let report = json_stdout(
        cli(&dir)
            .arg("report")
            .env("PRINTERNIZER_STATS__INSTALLATION__COUNTRY_CODE", "FR"),
    );
    assert_eq!(report["installation"]["country_code"], "FR");
}
