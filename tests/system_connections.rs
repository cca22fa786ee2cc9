//! Connections that never finish (issue #17, point 5), against the real binaries: silent and
//! header-trickling connections, idle keep-alive connections, and more of them than the
//! connection cap — the aggregation server and `run`'s local page keep answering, close what
//! idles, and say once that the cap was reached. Figures go to docs/RELIABILITY.md.

use printernizer_stats_test_support::aggregator as agg;
use printernizer_stats_test_support::mqtt as support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{Broker, start_online};

/// Whether the server closed `s` within `within` (a read returns EOF or a reset).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a 408 or similar before closing
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

fn addr(base: &str) -> String {
    base.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aggregator_survives_silent_trickling_and_idle_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = agg::Process::spawn(
        dir.path(),
        "sqlite://agg.db",
        &[
            ("PRINTERNIZER_STATS__AGGREGATOR__MAX_CONNECTIONS", "64"),
            ("PRINTERNIZER_STATS__AGGREGATOR__HEADER_TIMEOUT_S", "2"),
            ("PRINTERNIZER_STATS__AGGREGATOR__RATE_LIMIT_PER_HOUR", "100"),
        ],
    );
    let target = addr(&server.base);

    // 300 silent connections and 20 that trickle a header byte by byte: far over the cap.
    let mut silent: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(&target).expect("connect"))
        .collect();
    let mut trickling: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(&target).expect("connect");
            s.write_all(b"GET /health HTTP/1.1\r\n").expect("write");
            s
        })
        .collect();
    let trickler = std::thread::spawn(move || {
        for _ in 0..8 {
            for s in &mut trickling {
                let _ = s.write_all(b"X");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        trickling
    });

    // Health checks and submissions still answer, promptly.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    for i in 0..10 {
        let started = Instant::now();
        let health = http
            .get(server.url("/health"))
            .send()
            .await
            .expect("health");
        assert_eq!(health.status(), reqwest::StatusCode::OK);
        let body = agg::report(
            &agg::new_id(),
            "2026-11-20T00:00:00Z",
            "2026-11-27T00:00:00Z",
        );
        let submit = http
            .post(server.url("/submit"))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("submission {i} at the cap: {e}\n{}", server.log()));
        assert_eq!(submit.status(), reqwest::StatusCode::OK);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
    let log = server.log();
    assert_eq!(
        log.matches("connections are open (the limit)").count(),
        1,
        "one line when the cap is reached:\n{log}"
    );

    // The header timeout closes what stays silent or trickles, and idle keep-alive ones.
    let mut open_silent = 0;
    for s in silent.iter_mut().rev().take(40) {
        if !closed_within(s, Duration::from_secs(5)) {
            open_silent += 1;
        }
    }
    assert_eq!(open_silent, 0, "silent connections are closed");
    let trickling = trickler.join().expect("trickler");
    let mut trickling = trickling;
    for s in &mut trickling {
        assert!(closed_within(s, Duration::from_secs(5)), "trickling closed");
    }
    let mut idle = TcpStream::connect(&target).expect("connect");
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).expect("an answer");
    assert_eq!(&first, b"HTTP/1.1 200");
    let started = Instant::now();
    assert!(closed_within(&mut idle, Duration::from_secs(6)));
    assert!(started.elapsed() >= Duration::from_millis(1500));

    // Below the cap again: one line says so, with how many were closed to make room.
    let health = http
        .get(server.url("/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), reqwest::StatusCode::OK);
    assert!(
        server.log().contains("below the connection limit again"),
        "{}",
        server.log()
    );
    assert!(server.stop(), "clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_page_closes_idle_connections_and_caps_exports() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut app, _client) = start_online(dir.path(), broker.port, &[]).await;
    let base = app.http_base();
    let target = addr(&base);

    // 100 silent connections (the page's cap is 64): the page still answers.
    let mut silent: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&target).expect("connect"))
        .collect();
    let health = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
        .get(format!("{base}api/v1/usage-stats/health"))
        .send()
        .await
        .expect("health at the cap");
    assert_eq!(health.status(), reqwest::StatusCode::OK);
    // … and closes them after its 10-second header timeout.
    let last = silent.last_mut().expect("one");
    assert!(closed_within(last, Duration::from_secs(15)));

    // Exports: at most two stream at once. Two that are not read hold their places.
    {
        let conn = rusqlite::Connection::open(&app.db).expect("db");
        conn.busy_timeout(Duration::from_secs(5)).expect("busy");
        conn.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60000)
             INSERT INTO usage_events (id, event_type, timestamp, metadata, submitted, created_at)
             SELECT printf('00000000-0000-4000-8000-%012d', i), 'job_completed',
                    '2026-11-20T12:00:00.000000Z', '{\"status\":\"completed\",\"duration_seconds\":3600}',
                    0, '2026-11-20T12:00:00.000000Z' FROM n;",
        )
        .expect("insert");
    }
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(&target).expect("connect");
        s.write_all(b"GET /api/v1/usage-stats/export HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let mut head = [0u8; 12];
        s.read_exact(&mut head).expect("head");
        assert_eq!(&head, b"HTTP/1.1 200");
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let third = reqwest::get(format!("{base}api/v1/usage-stats/export"))
        .await
        .expect("third");
    assert_eq!(third.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(third.headers()["retry-after"], "5");
    drop(stalled);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = reqwest::get(format!("{base}api/v1/usage-stats/export"))
        .await
        .expect("again");
    assert_eq!(again.status(), reqwest::StatusCode::OK);
    let body = again.bytes().await.expect("body");
    assert!(body.len() > 1_000_000);
    drop(silent);
    assert!(app.stop());
}
