//! `simulate`: a realistic Printernizer event stream on the configured broker, for demos,
//! benchmarks and fault tests.
//!
//! It publishes what Printernizer's MQTT publisher will (see `docs/mqtt.md`): a retained
//! `online` on `<prefix>/status`, then event-bus messages — printers connecting, jobs that
//! complete, fail or are cancelled, downloads, uploads, errors, and the frequent
//! `printer_status_update` that is not recorded. Payloads are wrapped with a fresh UUID `id`
//! and carry the identifying fields Printernizer really sends (serials, job and file names) so
//! that the sanitizer has something to remove. The stream is deterministic for a given seed.

pub mod api;

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, Event, Incoming, QoS};
use serde_json::{Value, json};

use crate::mqtt::{BrokerConfig, mqtt_options, topics::Topics};
use crate::{Error, Result};

/// What to simulate.
#[derive(Debug, Clone, Copy)]
pub struct SimulateOptions {
    /// Number of printers.
    pub printers: u32,
    /// Number of event messages (after the printers' initial `printer_connected`).
    pub events: u64,
    /// Messages per second; 0 = as fast as the broker takes them.
    pub rate: f64,
    /// Random seed.
    pub seed: u64,
}

/// What was sent.
#[derive(Debug, Clone, Default)]
pub struct SimulateReport {
    /// Messages published and acknowledged by the broker (QoS 1).
    pub published: u64,
    /// Of those, messages that map to a stored event (all but `printer_status_update`).
    pub recordable: u64,
    /// Wall time.
    pub elapsed: Duration,
}

const PRINTER_TYPES: [&str; 3] = ["bambu_lab", "prusa", "prusa_core"];

fn uuid(rng: &mut StdRng) -> String {
    uuid::Builder::from_random_bytes(rng.random())
        .into_uuid()
        .to_string()
}

/// One message: (event name, bus payload).
fn next_event(rng: &mut StdRng, printers: &[(String, &str)]) -> (&'static str, Value) {
    let (serial, typ) = &printers[rng.random_range(0..printers.len())];
    let job = format!("benchy_{}.3mf", rng.random_range(1..999));
    match rng.random_range(0..100) {
        0..25 => (
            "job_started",
            json!({"job_id": rng.random_range(1..99_999), "printer_id": serial, "job_name": job}),
        ),
        25..43 => (
            "job_completed",
            json!({"printer_id": serial, "job_name": job, "status": "completed",
                                           "duration_seconds": rng.random_range(600..36_000)}),
        ),
        43..46 => (
            "job_completed",
            json!({"printer_id": serial, "job_name": job, "status": "failed"}),
        ),
        46..48 => (
            "job_completed",
            json!({"printer_id": serial, "job_name": job, "status": "cancelled"}),
        ),
        48..63 => (
            "file_download_complete",
            json!({"printer_id": serial, "filename": format!("/cache/{job}"),
                                                    "file_size": rng.random_range(100_000..50_000_000)}),
        ),
        63..73 => (
            "file_upload_complete",
            json!({"filename": format!("/library/{job}"),
                                                  "file_size": rng.random_range(100_000..50_000_000)}),
        ),
        73..75 => (
            "file_download_failed",
            json!({"printer_id": serial, "error": "Timeout talking to 192.168.1.23"}),
        ),
        75..77 => (
            "printer_connection_progress",
            json!({"printer_id": serial, "status": "failed",
                                                         "message": "connection refused"}),
        ),
        77..80 => (
            "printer_connected",
            json!({"printer_id": serial, "name": "Workshop", "type": typ}),
        ),
        _ => (
            "printer_status_update",
            json!({"printer_id": serial, "status": "printing",
                                             "progress": rng.random_range(0..100)}),
        ),
    }
}

/// Publishes the stream and waits until the broker acknowledged every message.
pub async fn run(
    broker: &BrokerConfig,
    topics: &Topics,
    opts: SimulateOptions,
) -> Result<SimulateReport> {
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let printers: Vec<(String, &str)> = (0..opts.printers.max(1))
        .map(|i| {
            (
                format!("SIM{:04}{:08}", opts.seed % 10_000, i),
                PRINTER_TYPES[i as usize % 3],
            )
        })
        .collect();

    let mut mqtt = mqtt_options(broker, topics);
    // A persistent session: QoS 1 messages the broker has not acknowledged are sent again after a
    // reconnect (rumqttc resends only when the broker kept the session), so a broker restart
    // in the middle of a run loses nothing.
    mqtt.set_clean_session(false)
        .set_manual_acks(false)
        .set_last_will(rumqttc::LastWill::new(
            topics.printernizer_status(),
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
    let (client, mut eventloop) = AsyncClient::new(mqtt, 1024);
    let (acked_tx, acked_rx) = tokio::sync::watch::channel(0u64);
    let poller = tokio::spawn(async move {
        let mut acked = 0u64;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::PubAck(_))) => {
                    acked += 1;
                    let _ = acked_tx.send(acked);
                }
                Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                    tracing::debug!(session_present = ack.session_present, "simulate: connected");
                }
                // Our own DISCONNECT went out: the broker closing the socket now is the end.
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "simulate: MQTT connection problem; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    let publish = |topic: String, payload: Vec<u8>, retain: bool| {
        let client = client.clone();
        async move {
            client
                .publish(topic, QoS::AtLeastOnce, retain, payload)
                .await
                .map_err(|e| Error::Mqtt(format!("publish: {e}")))
        }
    };

    let started = Instant::now();
    let mut report = SimulateReport::default();
    publish(topics.printernizer_status(), b"online".to_vec(), true).await?;
    report.published += 1;
    let mut messages: Vec<(&'static str, Value)> = printers
        .iter()
        .map(|(serial, typ)| {
            (
                "printer_connected",
                json!({"printer_id": serial, "name": "Workshop", "type": typ}),
            )
        })
        .collect();
    messages.extend((0..opts.events).map(|_| next_event(&mut rng, &printers)));
    for (i, (name, body)) in messages.into_iter().enumerate() {
        if opts.rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / opts.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let payload = json!({
            "id": uuid(&mut rng),
            "timestamp": chrono::Utc::now().to_rfc3339(),
            "metadata": body,
        });
        publish(
            format!("{}{name}", topics.events_prefix()),
            payload.to_string().into_bytes(),
            false,
        )
        .await?;
        report.published += 1;
        if name != "printer_status_update" {
            report.recordable += 1;
        }
    }
    let mut acked_rx = acked_rx;
    let wait = tokio::time::timeout(Duration::from_secs(60), async {
        while *acked_rx.borrow_and_update() < report.published {
            if acked_rx.changed().await.is_err() {
                break;
            }
        }
    })
    .await;
    let _ = client.disconnect().await;
    let poller_abort = poller.abort_handle();
    if tokio::time::timeout(Duration::from_secs(5), poller)
        .await
        .is_err()
    {
        poller_abort.abort();
    }
    if wait.is_err() {
        return Err(Error::Mqtt(format!(
            "the broker acknowledged {} of {} messages within 60 s",
            *acked_rx.borrow(),
            report.published
        )));
    }
    report.elapsed = started.elapsed();
    Ok(report)
}
