//! Scenario 5: hostile input at volume. Generated MQTT payloads (random bytes, wrong types, deep
//! nesting, 1 MiB strings, planted personal data in every field) go through a broker into `run`,
//! and hostile requests go to the aggregation server. Nothing panics, and none of the planted
//! strings reaches the database file (WAL included), the report, or the server's tables.
//! `PRINTERNIZER_STATS_SYSTEM_HOSTILE` sets the MQTT count (default 20000; 100000 for the long
//! version); the server gets a tenth of it.

use printernizer_stats_test_support::aggregator as agg;
use printernizer_stats_test_support::mqtt as support;

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::{Broker, start_online};

const PLANTED: [&str; 7] = [
    "/home/alice/secret-benchy.3mf",
    "C:\\Users\\alice\\Desktop",
    "10.11.12.13",
    "alice@example.com",
    "01S00A9ZZ1234",
    "kitchen-printer.local",
    "Pässwort🙂geheim",
];

const EVENTS: [&str; 12] = [
    "job_completed",
    "job_created",
    "job_started",
    "printer_connected",
    "printer_disconnected",
    "file_download_complete",
    "file_upload_complete",
    "file_download_failed",
    "printer_connection_progress",
    "feature_enabled",
    "error_occurred",
    "no_such_event",
];

const KEYS: [&str; 16] = [
    "printer_id",
    "printer_type",
    "type",
    "name",
    "job_name",
    "filename",
    "file",
    "error",
    "error_type",
    "message",
    "status",
    "feature",
    "component",
    "app_version",
    "platform",
    "duration_seconds",
];

fn planted(rng: &mut StdRng) -> &'static str {
    PLANTED[rng.random_range(0..PLANTED.len())]
}

/// One hostile payload.
fn payload(rng: &mut StdRng, i: usize) -> Vec<u8> {
    match rng.random_range(0..6) {
        0 => (0..rng.random_range(0..300)).map(|_| rng.random()).collect(),
        1 => json!({"id": rng.random::<u32>(), "timestamp": [planted(rng)], "metadata": planted(rng)})
            .to_string()
            .into_bytes(),
        2 => {
            let depth = rng.random_range(100..20_000);
            format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
        }
        3 if i.is_multiple_of(500) => json!({"metadata": {"job_name": "x".repeat(1 << 20), "printer_id": planted(rng)}})
            .to_string()
            .into_bytes(),
        _ => {
            let mut meta = serde_json::Map::new();
            for k in KEYS {
                let v: Value = match rng.random_range(0..4) {
                    0 => json!(planted(rng)),
                    1 => json!(format!("{} {}", planted(rng), planted(rng))),
                    2 => json!([planted(rng), {"nested": planted(rng)}]),
                    _ => json!(rng.random::<i64>()),
                };
                meta.insert(k.to_owned(), v);
            }
            meta.insert(planted(rng).to_owned(), json!(planted(rng)));
            json!({
                "id": uuid::Uuid::new_v4().to_string(),
                "timestamp": if rng.random() { json!(planted(rng)) } else { json!(chrono::Utc::now().to_rfc3339()) },
                "metadata": meta,
            })
            .to_string()
            .into_bytes()
        }
    }
}

fn assert_clean(what: &str, bytes: &[u8]) {
    for p in PLANTED {
        let needle = p.as_bytes();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{p:?} reached {what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_at_volume_leaks_nothing_and_breaks_nothing() {
    let n: usize = std::env::var("PRINTERNIZER_STATS_SYSTEM_HOSTILE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut rng = StdRng::seed_from_u64(5);
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut app, client) = start_online(dir.path(), broker.port, &[]).await;
    for i in 0..n {
        let name = if i.is_multiple_of(97) {
            planted(&mut rng).replace(['/', '#', '+'], "_")
        } else {
            EVENTS[rng.random_range(0..EVENTS.len())].to_owned()
        };
        let body = payload(&mut rng, i);
        client
            .publish(&format!("printernizer/events/{name}"), body)
            .await;
    }
    // Processing is in order: once this sentinel is stored, everything before it was handled.
    let sentinel = uuid::Uuid::new_v4().to_string();
    client
        .publish(
            "printernizer/events/job_created",
            json!({"id": sentinel, "metadata": {}}).to_string(),
        )
        .await;
    app.wait_count(
        &format!("SELECT count(*) FROM usage_events WHERE id = '{sentinel}'"),
        1,
        Duration::from_secs(300),
    );
    assert!(app.is_running(), "run survived:\n{}", app.log());
    assert!(!app.log().contains("panicked"), "{}", app.log());

    // The report and the raw database files.
    let base = app.http_base();
    let preview = reqwest::get(format!("{base}api/v1/usage-stats/preview"))
        .await
        .expect("preview")
        .bytes()
        .await
        .expect("bytes");
    assert_clean("the report", &preview);
    let export = reqwest::get(format!("{base}api/v1/usage-stats/export"))
        .await
        .expect("export")
        .bytes()
        .await
        .expect("bytes");
    assert_clean("the export", &export);
    let stored = app.count("SELECT count(*) FROM usage_events");
    assert!(app.stop());
    for suffix in ["", "-wal"] {
        let path = format!("{}{suffix}", app.db.display());
        if let Ok(bytes) = std::fs::read(&path) {
            assert_clean(&path, &bytes);
        }
    }

    // The aggregation server, with a tenth as many hostile submissions.
    let server = agg::Server::start(agg::Kind::Sqlite, |s| {
        s.rate_limit_per_hour = 1000.try_into().expect("in range")
    })
    .await;
    let http = reqwest::Client::new();
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..n / 10 {
        let mut body = agg::report(
            &agg::new_id(),
            "2026-11-20T00:00:00Z",
            "2026-11-27T00:00:00Z",
        );
        let target = rng.random_range(0..8);
        let p = planted(&mut rng);
        match target {
            0 => body["installation"]["app_version"] = json!(p),
            1 => body["installation"]["platform"] = json!(p),
            2 => body["installation"]["deployment_mode"] = json!(p),
            3 => body["printer_fleet"]["printer_type_counts"] = json!({p: 1}),
            4 => body["usage_stats"]["feature_usage"] = json!({p: true}),
            5 => body["error_summary"] = json!({p: 2}),
            6 => body["installation"]["country_code"] = json!(p),
            _ => body[p] = json!(p),
        }
        let mut req = http.post(server.url("/submit"));
        req = if i.is_multiple_of(7) {
            req.body(payload(&mut rng, i + 1))
        } else {
            req.json(&body)
        };
        let status = req.send().await.expect("send").status();
        assert!(status.as_u16() < 500, "server error {status}");
        if status.is_success() {
            accepted += 1;
        } else {
            refused += 1;
        }
    }
    assert_eq!(
        reqwest::get(server.url("/health"))
            .await
            .expect("health")
            .status(),
        200
    );
    assert_clean("the aggregator's tables", server.db.dump().await.as_bytes());
    eprintln!(
        "hostile: {n} MQTT payloads → {stored} events stored, none with a planted string; \
         {} server requests → {accepted} accepted, {refused} refused, none stored a planted string",
        n / 10
    );
}
