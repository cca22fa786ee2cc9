//! MQTT ingest benchmark (run: `cargo bench --bench ingest`; `BENCH_MESSAGES` sets the count).
//!
//! Against a private mosquitto, in one run:
//! * baseline: mosquitto's own QoS 1 relay rate — a publisher to a QoS 1 subscriber;
//! * ours: events/s from QoS 1 publish to committed row, through the real path (rumqttc with
//!   manual acks → mapping → sanitizer → writer thread → ack after commit).
//!
//! Prints the figures and their ratio; docs/PERFORMANCE.md records them.

use printernizer_stats_test_support::mqtt as support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use printernizer_stats::clock::SystemClock;
use printernizer_stats::config::Settings;
use printernizer_stats::service::{Environment, StatsService};
use printernizer_stats::store::rollup::{counter, counters};
use rumqttc::QoS;
use serde_json::json;
use support::{Broker, Client};

fn payload(i: u64) -> String {
    json!({
        // Random v4 ids, as producers send them (the worst case for the primary-key index).
        "id": uuid::Uuid::new_v4().to_string(),
        "metadata": {"printer_id": format!("SIM{:08}", i % 8), "printer_type": "prusa",
                     "status": "completed", "duration_seconds": 3600, "job_name": "benchy.3mf"}
    })
    .to_string()
}

async fn publish_all(client: &Client, topic: &str, n: u64) {
    for i in 0..n {
        client
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload(i))
            .await
            .expect("publish");
    }
}

async fn relay_rate(broker: &Broker, n: u64) -> f64 {
    let subscriber = Client::connect(broker.port, &["bench/relay"]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let publisher = Client::connect(broker.port, &[]).await;
    let started = Instant::now();
    publish_all(&publisher, "bench/relay", n).await;
    while (subscriber.messages("bench/relay").len() as u64) < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn service_rate(broker: &Broker, n: u64) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = Settings::defaults(false);
    settings.database.path = dir.path().join("stats.db");
    settings.mqtt.host = Some("127.0.0.1".into());
    settings.mqtt.port = Some(broker.port);
    let service = StatsService::open(
        settings.clone(),
        Arc::new(SystemClock),
        Environment::default(),
    )
    .expect("service");
    let watcher = Client::connect(broker.port, &["printernizer_stats/availability"]).await;
    let broker_cfg =
        printernizer_stats::mqtt::resolve_broker(&settings.mqtt, None, "bench-ingest".into())
            .await
            .expect("broker");
    let mqtt = printernizer_stats::mqtt::spawn(service.clone(), &settings, &broker_cfg, None, None);
    watcher
        .wait_for(
            "printernizer_stats/availability",
            Duration::from_secs(20),
            |m| m.text() == "online",
        )
        .await;
    let publisher = Client::connect(broker.port, &[]).await;
    let started = Instant::now();
    publish_all(&publisher, "printernizer/events/job_completed", n).await;
    loop {
        let stored = service
            .store()
            .read(|c| counter(c, counters::EVENTS_TOTAL))
            .await
            .expect("count");
        if stored >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    mqtt.shutdown().await;
    service.close().await.expect("close");
    rate
}

fn main() {
    let n: u64 = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let broker = Broker::start();
        // Interleave two rounds of each to even out noise; report the best of each.
        let (mut relay, mut ours) = (0.0f64, 0.0f64);
        for _ in 0..2 {
            relay = relay.max(relay_rate(&broker, n).await);
            ours = ours.max(service_rate(&broker, n).await);
        }
        println!(
            "MQTT ingest, {n} QoS 1 messages, {} cores",
            std::thread::available_parallelism().map_or(0, |p| p.get())
        );
        println!("mosquitto QoS 1 relay (publisher → subscriber): {relay:.0} msg/s");
        println!("publish → committed row through printernizer-stats: {ours:.0} events/s");
        println!("ratio: {:.2}x", ours / relay);
    });
}
