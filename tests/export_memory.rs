//! `export` streams: one million events are exported with a flat, small memory footprint.
//! (Alone in its own test binary so that the child's peak RSS is the only one measured.)

use std::process::Command;
use std::sync::Arc;

use printernizer_stats::clock::SystemClock;
use printernizer_stats::store::Store;
use rusqlite::{Connection, params};

const EVENTS: usize = 1_000_000;
const RSS_LIMIT_KIB: u64 = 30 * 1024;

/// Waits for `child`, sampling its `VmHWM` (the peak RSS of the program image, which —
/// unlike `wait4`'s `ru_maxrss` — does not inherit the parent's size from before `exec`).
/// Returns whether it succeeded and the peak in KiB.
fn wait_with_peak_rss(mut child: std::process::Child) -> (bool, u64) {
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            let hwm = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
            peak = peak.max(hwm.unwrap_or(0));
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            return (status.success(), peak);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_of_a_million_events_stays_under_30_mib() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("stats.db");
    let store = Store::open(&db, Arc::new(SystemClock)).expect("schema created");
    store.close().await.expect("closed");

    let started = std::time::Instant::now();
    let mut conn = Connection::open(&db).expect("open");
    conn.pragma_update(None, "cache_size", -65_536)
        .expect("cache");
    let tx = conn.transaction().expect("tx");
    {
        let mut stmt = tx
            .prepare(
                "INSERT INTO usage_events (id, event_type, timestamp, metadata, submitted, created_at, printer_hash)
                 VALUES (?1, 'job_completed', ?2, '{\"printer_type\":\"bambu_lab\",\"duration_seconds\":3600}', 0, ?2, ?3)",
            )
            .expect("prepare");
        for i in 0..EVENTS {
            let ts = format!(
                "2026-11-{:02}T{:02}:{:02}:{:02}.000000Z",
                1 + i / 86_400,
                (i / 3600) % 24,
                (i / 60) % 60,
                i % 60
            );
            stmt.execute(params![
                format!("00000000-0000-4000-8000-{i:012}"),
                ts,
                format!("{:032x}", i % 7)
            ])
            .expect("insert");
        }
    }
    tx.commit().expect("commit");
    drop(conn);
    eprintln!("inserted {EVENTS} rows in {:?}", started.elapsed());
    let started = std::time::Instant::now();

    let out = dir.path().join("export.json");
    let child = Command::new(assert_cmd::cargo::cargo_bin("printernizer-stats"))
        .env("PRINTERNIZER_STATS__DATABASE__PATH", &db)
        .env("PRINTERNIZER_STATS_OPTIONS", dir.path().join("none.json"))
        .env_remove("SUPERVISOR_TOKEN")
        .args(["export", "--output"])
        .arg(&out)
        .spawn()
        .expect("export runs");
    let (status, peak) = wait_with_peak_rss(child);
    assert!(status, "export failed");
    assert!(peak > 0, "no memory samples taken");
    eprintln!("exported in {:?}", started.elapsed());
    eprintln!("export of {EVENTS} events: peak RSS {} KiB", peak);
    assert!(
        peak < RSS_LIMIT_KIB,
        "peak RSS {peak} KiB exceeds {RSS_LIMIT_KIB} KiB"
    );

    // The file is one valid JSON document with one line per event.
    let text = std::fs::read_to_string(&out).expect("export file");
    serde_json::from_str::<serde::de::IgnoredAny>(&text).expect("valid JSON");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("{\"id\"")).count(),
        EVENTS
    );
    drop(text);

    // The web page's download streams the same way: `run` serving `GET /export`.
    let mut run = Command::new(assert_cmd::cargo::cargo_bin("printernizer-stats"))
        .arg("run")
        .current_dir(dir.path())
        .env("PRINTERNIZER_STATS__DATABASE__PATH", &db)
        .env("PRINTERNIZER_STATS_OPTIONS", dir.path().join("none.json"))
        .env("PRINTERNIZER_STATS__MQTT__ENABLED", "false")
        .env("PRINTERNIZER_STATS__HTTP__BIND", "127.0.0.1:0")
        .env_remove("SUPERVISOR_TOKEN")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run starts");
    let stderr = run.stderr.take().expect("stderr");
    let base = {
        use std::io::BufRead;
        let needle = "web page and API on ";
        let mut lines = std::io::BufReader::new(stderr).lines();
        let base = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.split(needle).nth(1).map(|u| u.trim().to_owned()))
            .expect("run logs its address");
        // Keep reading, so the process never writes into a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        base
    };
    let started = std::time::Instant::now();
    let mut resp = reqwest::get(format!("{base}api/v1/usage-stats/export"))
        .await
        .expect("download starts");
    assert!(resp.status().is_success());
    let (mut bytes, mut lines) = (0usize, 0usize);
    // The last 5 bytes of the previous chunk: a marker may straddle two chunks.
    let mut tail: Vec<u8> = Vec::new();
    while let Some(chunk) = resp.chunk().await.expect("chunk") {
        bytes += chunk.len();
        tail.extend_from_slice(&chunk);
        lines += tail.windows(6).filter(|w| w == b"{\"id\":").count();
        tail.drain(..tail.len().saturating_sub(5));
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", run.id())).expect("status");
    let peak: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    let _ = run.kill();
    let _ = run.wait();
    eprintln!(
        "HTTP export of {EVENTS} events ({bytes} bytes) in {:?}: run's peak RSS {peak} KiB",
        started.elapsed()
    );
    assert_eq!(lines, EVENTS, "every event downloaded");
    assert!(
        peak < RSS_LIMIT_KIB,
        "run's peak RSS {peak} KiB exceeds {RSS_LIMIT_KIB} KiB"
    );
}
