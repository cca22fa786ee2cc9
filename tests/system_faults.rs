//! Whole-system faults with real processes: mosquitto, `printernizer-stats run`, `simulate`.
//! Sizes are small by default; `PRINTERNIZER_STATS_SYSTEM_EVENTS` sets the storm's event count
//! for the long version (e.g. 200000). Figures go to docs/RELIABILITY.md.

use printernizer_stats_test_support::mqtt as support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::{App, Broker, Client, start_online};

/// `VmRSS` (or another `/proc/<pid>/status` field) in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Samples a process's `VmRSS` on a thread, keeping the peak, until [`PeakRss::stop`]. The pid
/// may change while it runs (a restarted `run`).
struct PeakRss {
    pid: Arc<AtomicU32>,
    peak: Arc<AtomicU64>,
    on: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl PeakRss {
    fn start(pid: u32, every: Duration) -> Self {
        let pid = Arc::new(AtomicU32::new(pid));
        let peak = Arc::new(AtomicU64::new(0));
        let on = Arc::new(AtomicBool::new(true));
        let thread = {
            let (pid, peak, on) = (pid.clone(), peak.clone(), on.clone());
            std::thread::spawn(move || {
                while on.load(Ordering::Relaxed) {
                    if let Some(kib) = status_kib(pid.load(Ordering::Relaxed), "VmRSS:") {
                        peak.fetch_max(kib, Ordering::Relaxed);
                    }
                    std::thread::sleep(every);
                }
            })
        };
        Self {
            pid,
            peak,
            on,
            thread,
        }
    }

    /// Samples this process from now on.
    fn follow(&self, pid: u32) {
        self.pid.store(pid, Ordering::Relaxed);
    }

    /// Stops sampling; the peak in KiB.
    fn stop(self) -> u64 {
        self.on.store(false, Ordering::Relaxed);
        self.thread.join().expect("sampler");
        self.peak.load(Ordering::Relaxed)
    }
}

/// User + system CPU time of `pid` in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

fn run_cli(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("printernizer-stats"));
    cmd.args(args)
        .current_dir(dir)
        .env("PRINTERNIZER_STATS_OPTIONS", dir.join("no-options.json"))
        .env("PRINTERNIZER_STATS__HTTP__BIND", "127.0.0.1:0")
        .env_remove("SUPERVISOR_TOKEN")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("runs")
}

/// Scenario 1 (+7): a publisher's burst while the broker is restarted twice and `run` is
/// SIGKILLed twice. Every event is stored exactly once, the database is intact, and `run`'s
/// memory stays small throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_and_restart_storm_loses_and_duplicates_nothing() {
    let events: u64 = std::env::var("PRINTERNIZER_STATS_SYSTEM_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rate = 2_000u64;
    let mut broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut app, _watcher) = start_online(dir.path(), broker.port, &[]).await;

    // Sample run's RSS (whichever process is current) every 50 ms.
    let rss = PeakRss::start(app.pid().expect("pid"), Duration::from_millis(50));

    let port = broker.port.to_string();
    let publisher = {
        let dir = dir.path().to_path_buf();
        let (events, rate) = (events.to_string(), rate.to_string());
        std::thread::spawn(move || {
            run_cli(
                &dir,
                &[
                    "simulate",
                    "--events",
                    &events,
                    "--rate",
                    &rate,
                    "--printers",
                    "6",
                    "--seed",
                    "11",
                ],
                &[
                    ("PRINTERNIZER_STATS__MQTT__HOST", "127.0.0.1"),
                    ("PRINTERNIZER_STATS__MQTT__PORT", port.as_str()),
                ],
            )
        })
    };
    let span = Duration::from_millis(events * 1000 / rate);
    let step = span / 5;
    std::thread::sleep(step);
    broker.restart();
    std::thread::sleep(step);
    app.kill();
    app = App::start(dir.path(), broker.port, &[]);
    rss.follow(app.pid().expect("pid"));
    std::thread::sleep(step);
    broker.restart();
    std::thread::sleep(step);
    app.kill();
    app = App::start(dir.path(), broker.port, &[]);
    rss.follow(app.pid().expect("pid"));

    let out = publisher.join().expect("publisher");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "simulate failed: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "published N messages (M recordable events) …"
    let recordable: i64 = said
        .split('(')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read simulate's summary: {said}"));
    // simulate's events; `app_start`/`app_shutdown` come from Printernizer's availability
    // (its will fires when the broker drops it) and are not part of the stream.
    let streamed =
        "SELECT count(*) FROM usage_events WHERE event_type NOT IN ('app_start', 'app_shutdown')";
    app.wait_count(streamed, recordable, Duration::from_secs(180));
    // Give late redeliveries a moment: the count must not move (no duplicates).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(app.count(streamed), recordable);
    assert_eq!(
        app.count("SELECT count(*) - count(DISTINCT id) FROM usage_events"),
        0
    );
    let peak = rss.stop();
    assert!(app.stop(), "run stops cleanly");
    let conn = rusqlite::Connection::open(&app.db).expect("open");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
    eprintln!(
        "storm: {recordable} recordable events of {events}, 2 broker restarts, 2 SIGKILLs: \
         all stored once; integrity ok; peak RSS of run {peak} KiB"
    );
    assert!(
        peak <= 30 * 1024,
        "run's RSS peaked at {peak} KiB (limit 30 MiB)"
    );
}

/// Scenario 7 (idle part): an idle `run` uses no CPU (no busy polling) and little memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_run_sleeps() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut app, _watcher) = start_online(dir.path(), broker.port, &[]).await;
    let pid = app.pid().expect("pid");
    std::thread::sleep(Duration::from_secs(3));
    let (cpu0, t0) = (cpu_ticks(pid), Instant::now());
    let switches = |pid: u32| status_kib(pid, "voluntary_ctxt_switches:").unwrap_or(0);
    let wake0 = switches(pid);
    std::thread::sleep(Duration::from_secs(30));
    let cpu = cpu_ticks(pid) - cpu0;
    let wakeups = switches(pid) - wake0;
    let secs = t0.elapsed().as_secs_f64();
    let rss = status_kib(pid, "VmRSS:").expect("rss");
    let anon = status_kib(pid, "RssAnon:").expect("anon");
    eprintln!(
        "idle {secs:.0} s: CPU {} ms, {wakeups} voluntary wake-ups, RSS {rss} KiB (anonymous {anon} KiB)",
        cpu * 10
    );
    assert!(
        cpu <= 5,
        "idle run used {} ms of CPU in {secs:.0} s",
        cpu * 10
    );
    assert!(
        wakeups <= 60,
        "{wakeups} wake-ups in {secs:.0} s: something polls"
    );
    assert!(
        anon <= 10 * 1024,
        "idle private memory {anon} KiB exceeds 10 MiB"
    );
    assert!(app.stop());
}

/// Scenario 4: a damaged database or a read-only data directory stops `run` with exit code 1 and
/// one line that says what to do; the user's file is never changed.
#[test]
fn bad_files_stop_run_with_one_clear_line_and_touch_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = |db: &Path| {
        vec![
            (
                "PRINTERNIZER_STATS__DATABASE__PATH".to_owned(),
                db.display().to_string(),
            ),
            (
                "PRINTERNIZER_STATS__MQTT__ENABLED".to_owned(),
                "false".to_owned(),
            ),
        ]
    };
    let run = |db: &Path| {
        let env = env(db);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let out = run_cli(dir.path(), &["run"], &env);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        )
    };

    // Random bytes, and a file with SQLite's header and nothing valid after it.
    let garbage = dir.path().join("garbage.db");
    let bytes: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&garbage, &bytes).expect("write");
    let mut header = b"SQLite format 3\0".to_vec();
    header.extend(std::iter::repeat_n(0xA5u8, 8192));
    let damaged = dir.path().join("damaged.db");
    std::fs::write(&damaged, &header).expect("write");
    for (db, content) in [(&garbage, &bytes), (&damaged, &header)] {
        let (code, err) = run(db);
        assert_eq!(code, Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(
            err.contains("left untouched") && err.contains("move it away"),
            "{err}"
        );
        assert_eq!(
            &std::fs::read(db).expect("still there"),
            content,
            "the file is unchanged"
        );
        let name = db.file_name().expect("name").to_string_lossy().to_string();
        assert!(
            !dir.path().join(format!("{name}-wal")).exists()
                || std::fs::metadata(dir.path().join(format!("{name}-wal")))
                    .map(|m| m.len() == 0)
                    .unwrap_or(true),
            "no WAL written next to a damaged file"
        );
    }

    // A data directory nobody may write to — not even root: immutable.
    let ro = dir.path().join("readonly");
    std::fs::create_dir(&ro).expect("dir");
    let locked = Command::new("chattr").arg("+i").arg(&ro).status();
    assert!(
        locked.is_ok_and(|s| s.success()),
        "chattr +i is needed to make a directory read-only for root"
    );
    let (code, err) = run(&ro.join("stats.db"));
    let _ = Command::new("chattr").arg("-i").arg(&ro).status();
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("writable"), "{err}");
}

/// Scenario 3: the database cannot grow (`database.max_size_mb`, which fails writes exactly as
/// a full disk does). `run` stays up, reports the problem, acknowledges nothing it has not
/// stored — the broker keeps those events — and catches up once space is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_keeps_events_at_the_broker_and_catches_up() {
    let t = Duration::from_secs(90);
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut app = App::start(
        dir.path(),
        broker.port,
        &[("PRINTERNIZER_STATS__DATABASE__MAX_SIZE_MB", "1")],
    );
    let client = Client::connect(broker.port, &["printernizer_stats/#"]).await;
    client
        .wait_for("printernizer_stats/availability", t, |m| {
            m.text() == "online"
        })
        .await;
    // 1 MiB holds about 2,600 such events: after deleting those, the rest fits.
    let n = 4_000;
    for i in 0..n {
        client
            .publish(
                "printernizer/events/job_completed",
                serde_json::json!({
                    "id": uuid::Uuid::new_v4().to_string(),
                    "metadata": {"printer_id": format!("P{}", i % 5), "printer_type": "prusa",
                                 "status": "completed", "duration_seconds": 600}
                })
                .to_string(),
            )
            .await;
    }
    app.wait_log("cannot store events", 1, t);
    client
        .wait_for("printernizer_stats/state", t, |m| {
            m.json()["storage_problem"] == "ON"
        })
        .await;
    assert!(app.is_running(), "run stays up");
    let stuck = app.count("SELECT count(*) FROM usage_events");
    assert!(
        stuck > 0 && stuck < n,
        "{stuck} stored before the disk filled"
    );

    // Free space: delete what is stored.
    let base = app.http_base();
    let deleted: serde_json::Value = reqwest::Client::new()
        .delete(format!("{base}api/v1/usage-stats/delete-all"))
        .send()
        .await
        .expect("delete")
        .json()
        .await
        .expect("json");
    let deleted = deleted["deleted_events"].as_i64().expect("count");
    // Every event not deleted arrives: the broker redelivers what was never acknowledged.
    app.wait_count("SELECT count(*) FROM usage_events", n - deleted, t);
    client
        .wait_for("printernizer_stats/state", t, |m| {
            m.json()["storage_problem"] == "OFF"
        })
        .await;
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(app.count("SELECT count(*) FROM usage_events"), n - deleted);
    assert!(app.stop());
    let conn = rusqlite::Connection::open(&app.db).expect("open");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
    eprintln!(
        "full disk: {stuck} of {n} stored when the 1 MiB cap was reached; after freeing \
         {deleted}, the other {} arrived from the broker; integrity ok",
        n - deleted
    );
}

/// A log pipe that closes (the reader went away) does not stop `run`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_log_pipe_does_not_stop_run() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("printernizer-stats"))
        .arg("run")
        .current_dir(dir.path())
        .env(
            "PRINTERNIZER_STATS__DATABASE__PATH",
            dir.path().join("s.db"),
        )
        .env("PRINTERNIZER_STATS_OPTIONS", dir.path().join("none.json"))
        .env("PRINTERNIZER_STATS__MQTT__ENABLED", "false")
        .env("PRINTERNIZER_STATS__LOG_LEVEL", "debug")
        .env(
            "PRINTERNIZER_STATS__HTTP__BIND",
            format!("127.0.0.1:{port}"),
        )
        .env_remove("SUPERVISOR_TOKEN")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    while let Some(Ok(line)) = lines.next() {
        if line.contains("web page and API on") {
            break;
        }
    }
    drop(lines);
    // Every request logs (debug); the writes now fail with EPIPE.
    let url = format!("http://127.0.0.1:{port}/api/v1/usage-stats/opt-in");
    for _ in 0..5 {
        let r = reqwest::Client::new()
            .post(&url)
            .send()
            .await
            .expect("answers");
        assert!(r.status().is_success());
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "run is still running"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("exit");
    assert!(status.success(), "{status}");
}

/// Issue #17, point 4: a QoS 0 flood. Before, `run` queued every message it read between the
/// MQTT loop and the writer (≈ 260 B each: 1M messages grew it from 14 to 272 MiB, and the
/// memory stayed). Now that queue is bounded and the MQTT loop waits — TCP holds the broker
/// back — so `run` stays small however many arrive. QoS 0 is at most once: what the broker
/// drops while `run` is behind is not counted here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos0_flood_does_not_grow_run() {
    let messages: usize = std::env::var("PRINTERNIZER_STATS_SYSTEM_FLOOD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut app, _watcher) = start_online(dir.path(), broker.port, &[]).await;
    let pid = app.pid().expect("pid");
    std::thread::sleep(Duration::from_secs(1));
    let before = status_kib(pid, "VmRSS:").expect("rss");

    let rss = PeakRss::start(pid, Duration::from_millis(20));
    let publisher = Client::connect(broker.port, &[]).await;
    let payload = r#"{"status":"completed","printer_type":"bambu_lab"}"#;
    for _ in 0..messages {
        publisher
            .publish_at_most_once("printernizer/events/job_completed", payload)
            .await;
    }
    // Until run has taken in what the broker passed on.
    let mut last = -1;
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let now = app.count("SELECT count(*) FROM usage_events");
        if now == last {
            break;
        }
        last = now;
    }
    let peak = rss.stop().max(before);
    let stored = app.count("SELECT count(*) FROM usage_events");
    eprintln!(
        "QoS 0 flood: {messages} published, {stored} stored; run's RSS {before} KiB before, \
         peak {peak} KiB"
    );
    assert!(stored > 0, "{}", app.log());
    assert!(
        peak < before + 40 * 1024,
        "run grew from {before} to {peak} KiB under a QoS 0 flood"
    );
    assert!(app.is_running());
    assert!(app.stop());
}

/// Issue #17, point 4, the other half: with the queue bounded, the MQTT loop waits for the
/// router, so the router must never wait for the MQTT loop. A first version let the router
/// publish the switch's state after each command; under a flood of commands and events,
/// rumqttc's request channel filled while the loop waited for the router, and `run` hung
/// (seen once in CI). Here 2,000 switch commands arrive amid 20,000 QoS 0 events and 2,000
/// QoS 1 ones; `run` must take them all in, store the sentinel after them, and show the last
/// command's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_amid_a_flood_never_hang_run() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut app, _watcher) = start_online(dir.path(), broker.port, &[]).await;
    let client = Client::connect(broker.port, &["printernizer_stats/opt_in/state"]).await;
    let event = r#"{"status":"completed","printer_type":"bambu_lab"}"#;
    for i in 0..24_000 {
        if i % 12 == 0 {
            let command = if i % 24 == 0 { "ON" } else { "OFF" };
            client
                .publish_at_most_once("printernizer_stats/opt_in/set", command)
                .await;
        } else if i % 12 == 1 {
            client
                .publish("printernizer/events/job_completed", event)
                .await;
        } else {
            client
                .publish_at_most_once("printernizer/events/job_completed", event)
                .await;
        }
    }
    client.publish("printernizer_stats/opt_in/set", "ON").await;
    let sentinel = uuid::Uuid::new_v4().to_string();
    client
        .publish(
            "printernizer/events/job_created",
            format!(r#"{{"id":"{sentinel}","metadata":{{}}}}"#),
        )
        .await;
    app.wait_count(
        &format!("SELECT count(*) FROM usage_events WHERE id = '{sentinel}'"),
        1,
        Duration::from_secs(120),
    );
    client
        .wait_for(
            "printernizer_stats/opt_in/state",
            Duration::from_secs(30),
            |m| m.text() == "ON",
        )
        .await;
    app.wait_count(
        "SELECT count(*) FROM usage_settings WHERE key = 'opt_in_status' AND value = 'enabled'",
        1,
        Duration::from_secs(30),
    );
    assert!(app.is_running(), "{}", app.log());
    assert!(app.stop(), "clean stop:\n{}", app.log());
}
