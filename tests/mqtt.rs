//! `run` as a real MQTT citizen, against a private mosquitto: ingest, discovery, the opt-in
//! switch, reconnects, crashes, poison and garbage.

use printernizer_stats_test_support::mqtt as support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{App, Broker, Client};

const T: Duration = Duration::from_secs(20);

async fn started(broker: &Broker, dir: &tempfile::TempDir) -> (App, Client) {
    let client = Client::connect(broker.port, &["printernizer_stats/#", "homeassistant/#"]).await;
    let app = App::start(dir.path(), broker.port, &[]);
    client
        .wait_for("printernizer_stats/availability", T, |m| {
            m.text() == "online"
        })
        .await;
    app.wait_log("connected to MQTT broker", 1, T);
    (app, client)
}

fn state_is(key: &'static str, want: Value) -> impl Fn(&support::Msg) -> bool {
    move |m| m.json()[key] == want
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printernizer_events_are_mapped_stored_sanitized_and_shown_as_sensors() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, client) = started(&broker, &dir).await;

    let events: &[(&str, Value)] = &[
        (
            "printer_connected",
            json!({"printer_id": "01S00A123456789", "name": "Kitchen X1C", "type": "bambu_lab"}),
        ),
        (
            "job_started",
            json!({"job_id": 1, "printer_id": "01S00A123456789", "job_name": "benchy.3mf"}),
        ),
        (
            "job_completed",
            json!({"printer_id": "01S00A123456789", "status": "completed", "duration_seconds": 3600}),
        ),
        (
            "job_completed",
            json!({"printer_id": "01S00A123456789", "status": "failed"}),
        ),
        (
            "job_completed",
            json!({"printer_id": "01S00A123456789", "status": "cancelled"}),
        ),
        (
            "file_download_complete",
            json!({"printer_id": "01S00A123456789", "filename": "/home/u/x.3mf", "file_size": 1048576}),
        ),
        (
            "file_upload_complete",
            json!({"filename": "C:\\Users\\me\\y.gcode"}),
        ),
        (
            "file_download_failed",
            json!({"error": "No space left on /dev/sda1"}),
        ),
        (
            "printer_connection_progress",
            json!({"printer_id": "PRUSA-XL-1", "status": "failed", "message": "192.168.1.20 refused"}),
        ),
        (
            "printer_status_update",
            json!({"printer_id": "01S00A123456789", "progress": 40}),
        ),
        ("feature_enabled", json!({"feature": "timelapse"})),
    ];
    for (name, payload) in events {
        client
            .publish(&format!("printernizer/events/{name}"), payload.to_string())
            .await;
    }
    app.wait_count("SELECT count(*) FROM usage_events", 10, T);
    let types: Vec<String> = app.query(
        "SELECT event_type FROM usage_events ORDER BY rowid",
        |c, sql| {
            let mut s = c.prepare(sql).expect("prepare");
            s.query_map([], |r| r.get(0))
                .expect("query")
                .map(|r| r.expect("row"))
                .collect()
        },
    );
    assert_eq!(
        types,
        [
            "printer_connected",
            "job_created",
            "job_completed",
            "job_failed",
            "job_failed",
            "file_downloaded",
            "file_uploaded",
            "error_occurred",
            "error_occurred",
            "feature_enabled"
        ]
    );
    let dump: String = app.query(
        "SELECT group_concat(metadata, ' ') FROM usage_events",
        |c, sql| c.query_row(sql, [], |r| r.get(0)).expect("dump"),
    );
    for secret in [
        "01S00A", "Kitchen", "benchy", "/home", "Users", "sda1", "192.168", "PRUSA-XL",
    ] {
        assert!(!dump.contains(secret), "{secret} leaked into {dump}");
    }

    let state = client
        .wait_for(
            "printernizer_stats/state",
            T,
            state_is("jobs_week", json!(3)),
        )
        .await
        .json();
    assert_eq!(state["jobs_completed_week"], 1);
    assert_eq!(state["jobs_failed_week"], 2);
    assert_eq!(state["files_downloaded_week"], 1);
    assert_eq!(state["files_uploaded_week"], 1);
    assert_eq!(state["errors_week"], 2);
    assert_eq!(state["printers"], 2);
    assert_eq!(state["events_total"], 10);
    assert_eq!(state["submission_problem"], "OFF");
    assert!(
        app.log().contains("ignored"),
        "printer_status_update is ignored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_birth_message_and_the_opt_in_switch() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut app, client) = started(&broker, &dir).await;

    let deadline = std::time::Instant::now() + T;
    while client.messages("homeassistant/").len() < 21 {
        assert!(std::time::Instant::now() < deadline, "discovery incomplete");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        client.messages("homeassistant/").len(),
        21,
        "2 controls + 16 sensors + 3 binary sensors"
    );
    // A late subscriber (Home Assistant starting later) gets all of them, retained.
    let late = Client::connect(broker.port, &["homeassistant/#", "printernizer_stats/#"]).await;
    let deadline = std::time::Instant::now() + T;
    while late.messages("homeassistant/").len() < 21 {
        assert!(
            std::time::Instant::now() < deadline,
            "retained discovery incomplete"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let configs = late.messages("homeassistant/");
    for m in &configs {
        assert!(m.retain, "{} not retained", m.topic);
        let c = m.json();
        let parts: Vec<&str> = m.topic.split('/').collect();
        let (component, object_id) = (parts[1], parts[3]);
        assert_eq!(parts[2], "printernizer_stats");
        assert_eq!(c["unique_id"], format!("printernizer_stats_{object_id}"));
        // Two binary sensors have shorter entity ids: every id stays under 50 characters.
        let entity = match object_id {
            "printernizer_online" => "online",
            "submission_problem" => "submit_problem",
            id => id,
        };
        assert_eq!(
            c["default_entity_id"],
            format!("{component}.printernizer_stats_{entity}")
        );
        assert_eq!(c["device"]["identifiers"], json!(["printernizer_stats"]));
        assert_eq!(c["device"]["name"], "Printernizer Usage Statistics");
        assert!(
            c["device"]["configuration_url"]
                .as_str()
                .is_some_and(|u| u.starts_with("http://127.0.0.1:")),
            "the device links to the local page: {}",
            c["device"]
        );
        assert_eq!(c["origin"]["name"], "printernizer-stats");
        assert_eq!(c["availability_topic"], "printernizer_stats/availability");
        assert!(c["name"].as_str().is_some_and(|n| !n.is_empty()));
        if component == "sensor" || component == "binary_sensor" {
            assert_ne!(c["entity_category"], "config", "{object_id}");
            if c["device_class"] == "timestamp" {
                // Its own topic, no template: nothing to render as "None".
                assert_eq!(c["state_topic"], format!("printernizer_stats/{object_id}"));
                assert!(c.get("value_template").is_none(), "{object_id}");
            } else {
                assert_eq!(c["state_topic"], "printernizer_stats/state");
                assert_eq!(
                    c["value_template"],
                    format!("{{{{ value_json.{object_id} }}}}")
                );
            }
        }
    }
    let find = |id: &str| {
        configs
            .iter()
            .find(|m| m.topic.contains(&format!("/{id}/")))
            .expect(id)
            .json()
    };
    assert_eq!(find("jobs_week")["state_class"], "measurement");
    assert_eq!(find("events_total")["state_class"], "total_increasing");
    assert_eq!(find("uptime_week")["device_class"], "duration");
    assert_eq!(find("last_submission")["device_class"], "timestamp");
    assert_eq!(
        find("opt_in")["command_topic"],
        "printernizer_stats/opt_in/set"
    );
    assert_eq!(find("printernizer_online")["device_class"], "connectivity");
    assert_eq!(
        find("opt_in")["json_attributes_topic"],
        "printernizer_stats/opt_in/attributes"
    );
    late.wait_for("printernizer_stats/opt_in/attributes", T, |m| {
        m.json()["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not opted in"))
    })
    .await;
    for topic in [
        "printernizer_stats/availability",
        "printernizer_stats/state",
        "printernizer_stats/opt_in/state",
    ] {
        late.wait_for(topic, T, |m| m.retain).await;
    }

    // Home Assistant's birth message → everything again, after a short random delay.
    client.publish("homeassistant/status", "online").await;
    let deadline = std::time::Instant::now() + T;
    while client.messages("homeassistant/").len() < 38 {
        assert!(
            std::time::Instant::now() < deadline,
            "no republish after birth"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The switch is the stored opt-in.
    client.publish("printernizer_stats/opt_in/set", "ON").await;
    client
        .wait_for("printernizer_stats/opt_in/state", T, |m| m.text() == "ON")
        .await;
    app.wait_count(
        "SELECT count(*) FROM usage_settings WHERE key = 'opt_in_status' AND value = 'enabled'",
        1,
        T,
    );
    client.publish("printernizer_stats/opt_in/set", "OFF").await;
    client
        .wait_for("printernizer_stats/opt_in/state", T, |m| m.text() == "OFF")
        .await;
    app.wait_count(
        "SELECT count(*) FROM usage_settings WHERE key = 'opt_in_status' AND value = 'disabled'",
        1,
        T,
    );

    // A clean stop says offline.
    assert!(app.stop(), "clean exit");
    client
        .wait_for("printernizer_stats/availability", T, |m| {
            m.text() == "offline"
        })
        .await;
}

/// Home Assistant before 2024.10 logs "Invalid state message" for every `None` a timestamp
/// sensor receives. A timestamp that was never set is never sent; `None` goes out once, when it
/// replaces a timestamp, and not again on later state updates or after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_sensors_get_none_only_when_it_replaces_a_timestamp() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let client = Client::connect(broker.port, &["printernizer_stats/#"]).await;
    let env = [(
        "PRINTERNIZER_STATS__SUBMISSION__ENDPOINT",
        "http://127.0.0.1:9/submit",
    )];
    let mut app = App::start(dir.path(), broker.port, &env);
    let published = |n: usize| {
        let client = &client;
        async move {
            let deadline = std::time::Instant::now() + T;
            while client.messages("printernizer_stats/state").len() < n {
                assert!(std::time::Instant::now() < deadline, "no state publish");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    published(1).await;
    let timestamps = |key: &str| -> Vec<String> {
        client
            .messages(&format!("printernizer_stats/{key}"))
            .iter()
            .map(|m| m.text())
            .collect()
    };
    // Never opted in: neither timestamp topic carries anything.
    client
        .publish(
            "printernizer/events/job_completed",
            json!({"status": "completed"}).to_string(),
        )
        .await;
    client
        .wait_for(
            "printernizer_stats/state",
            T,
            state_is("events_total", json!(1)),
        )
        .await;
    assert_eq!(timestamps("next_submission"), Vec::<String>::new());
    assert_eq!(timestamps("last_submission"), Vec::<String>::new());

    // Opted in: the next report is planned.
    client.publish("printernizer_stats/opt_in/set", "ON").await;
    let planned = client
        .wait_for("printernizer_stats/next_submission", T, |m| {
            m.text() != "None"
        })
        .await;
    assert!(
        chrono::DateTime::parse_from_rfc3339(&planned.text()).is_ok(),
        "{}",
        planned.text()
    );

    // Opted out: `None` once …
    client.publish("printernizer_stats/opt_in/set", "OFF").await;
    client
        .wait_for("printernizer_stats/next_submission", T, |m| {
            m.text() == "None"
        })
        .await;
    // … and not on the next state updates, nor after a restart.
    let before = client.messages("printernizer_stats/state").len();
    client
        .publish(
            "printernizer/events/job_completed",
            json!({"status": "failed"}).to_string(),
        )
        .await;
    client
        .wait_for(
            "printernizer_stats/state",
            T,
            state_is("events_total", json!(2)),
        )
        .await;
    assert!(app.stop(), "clean exit");
    let mut app = App::start(dir.path(), broker.port, &env);
    published(before + 2).await;
    app.wait_log("connected to MQTT broker", 1, T);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let next = timestamps("next_submission");
    assert_eq!(
        next.iter().filter(|t| *t == "None").count(),
        1,
        "None once: {next:?}"
    );
    assert_eq!(timestamps("last_submission"), Vec::<String>::new());
    assert!(app.stop(), "clean exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printernizer_status_feeds_the_online_sensor_and_uptime() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, client) = started(&broker, &dir).await;
    client.publish("printernizer/status", "online").await;
    client
        .wait_for(
            "printernizer_stats/state",
            T,
            state_is("printernizer_online", json!("ON")),
        )
        .await;
    client.publish("printernizer/status", "online").await;
    client.publish("printernizer/status", "offline").await;
    client
        .wait_for(
            "printernizer_stats/state",
            T,
            state_is("printernizer_online", json!("OFF")),
        )
        .await;
    app.wait_count(
        "SELECT count(*) FROM usage_events WHERE event_type = 'app_start'",
        1,
        T,
    );
    app.wait_count(
        "SELECT count(*) FROM usage_events WHERE event_type = 'app_shutdown'",
        1,
        T,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_reconnects_resubscribes_and_stores_each_id_once() {
    let mut broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, client) = started(&broker, &dir).await;
    let ids: Vec<String> = (0..200).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    for id in &ids[..100] {
        client
            .publish(
                "printernizer/events/job_created",
                json!({"id": id, "metadata": {}}).to_string(),
            )
            .await;
    }
    broker.kill_and_restart();
    app.wait_log("connected to MQTT broker", 2, T);
    drop(client);
    // The producer retries everything it was not sure about, plus new events.
    let client = Client::connect(broker.port, &["printernizer_stats/#"]).await;
    client
        .wait_for("printernizer_stats/availability", T, |m| {
            m.text() == "online"
        })
        .await;
    for id in &ids {
        client
            .publish(
                "printernizer/events/job_created",
                json!({"id": id, "metadata": {}}).to_string(),
            )
            .await;
    }
    app.wait_count("SELECT count(*) FROM usage_events", 200, T);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.count("SELECT count(*) FROM usage_events"), 200);
    // It resubscribed: a command after the restart still works.
    client.publish("printernizer_stats/opt_in/set", "ON").await;
    client
        .wait_for("printernizer_stats/opt_in/state", T, |m| m.text() == "ON")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_10k_burst_loses_nothing() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut app, client) = started(&broker, &dir).await;
    let total = 10_000;
    let publisher = {
        let client = client.client.clone();
        tokio::spawn(async move {
            for i in 0..total {
                let id =
                    uuid::Uuid::from_u128(0x1000_0000_0000_4000_8000_0000_0000_0000 + i as u128);
                let payload = json!({"id": id.to_string(), "metadata": {"printer_type": "prusa"}})
                    .to_string();
                client
                    .publish(
                        "printernizer/events/file_uploaded",
                        rumqttc::QoS::AtLeastOnce,
                        false,
                        payload,
                    )
                    .await
                    .expect("publish");
            }
        })
    };
    // Kill it somewhere in the middle of the burst.
    let deadline = std::time::Instant::now() + T;
    while app.count("SELECT count(*) FROM usage_events") < 1000 {
        assert!(std::time::Instant::now() < deadline, "burst did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.kill();
    publisher.await.expect("publisher");
    let app = App::start(dir.path(), broker.port, &[]);
    app.wait_count(
        "SELECT count(*) FROM usage_events",
        total,
        Duration::from_secs(120),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.count("SELECT count(*) FROM usage_events"), total);
    assert_eq!(
        app.count("SELECT count(DISTINCT id) FROM usage_events"),
        total
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2_mib_poison_message_and_garbage_do_not_wedge_the_service() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut app, client) = started(&broker, &dir).await;

    client
        .publish("printernizer/events/job_completed", vec![b'x'; 2 << 20])
        .await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        (
            "printernizer/events/job_completed",
            vec![0xff, 0xfe, 0x00, 0x80],
        ),
        ("printernizer/events/job_completed", vec![b'a'; 1 << 20]),
        ("printernizer/events/job_created", deep.into_bytes()),
        ("printernizer/events/job_created", b"[1,2,3]".to_vec()),
        (
            "printernizer/events/job_completed",
            br#"{"duration_seconds":"long","printer_type":42}"#.to_vec(),
        ),
        (
            "printernizer/events/job_completed",
            br#"{"metadata": "nope"}"#.to_vec(),
        ),
        ("printernizer/events/a/b", b"{}".to_vec()),
        ("printernizer/status", b"maybe".to_vec()),
        ("printernizer_stats/opt_in/set", b"PLEASE".to_vec()),
    ];
    for (topic, payload) in garbage {
        client.publish(topic, payload).await;
    }
    for _ in 0..5 {
        client
            .publish(
                "printernizer/events/job_completed",
                json!({"duration_seconds": 60}).to_string(),
            )
            .await;
    }
    app.wait_count(
        "SELECT count(*) FROM usage_events WHERE event_type = 'job_completed'",
        6,
        Duration::from_secs(30),
    );
    assert!(
        app.log().contains("exceeds the packet limit"),
        "{}",
        app.log()
    );
    assert!(app.is_running());
    let state = client
        .wait_for("printernizer_stats/state", T, |m| {
            m.json()["rejected_messages"].as_u64() >= Some(6)
        })
        .await
        .json();
    assert_eq!(
        state["events_total"], 6,
        "only the valid job_completed messages (typed values dropped, event kept)"
    );
    assert!(app.stop(), "clean exit after all that");
}

/// A stand-in for the Supervisor's `GET /services/mqtt`: answers "not enabled" `failures`
/// times, then the broker (port as a string, as the real one may send it). Returns its URL and
/// the Authorization headers it saw.
fn fake_supervisor(
    broker_port: u16,
    failures: usize,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    std::thread::spawn(move || {
        let mut mqtt_requests = 0;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let len = stream.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..len]).to_string();
            let auth = request
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                .unwrap_or("")
                .to_owned();
            let first_line = request.lines().next().unwrap_or("").to_owned();
            sink.lock()
                .expect("lock")
                .push(format!("{first_line} {auth}"));
            let (status, body) = if first_line.starts_with("GET /core/api/config ") {
                ("200 OK", json!({"country": null, "time_zone": "UTC"}))
            } else if mqtt_requests < failures {
                mqtt_requests += 1;
                (
                    "400 Bad Request",
                    json!({"result": "error", "message": "Service not enabled"}),
                )
            } else {
                (
                    "200 OK",
                    json!({"result": "ok", "data": {"addon": "core_mosquitto", "host": "127.0.0.1",
                    "port": broker_port.to_string(), "ssl": false, "username": "addons", "password": "secret",
                    "protocol": "3.1.1"}}),
                )
            };
            let body = body.to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addon_mode_takes_the_broker_from_the_supervisor_and_retries_until_it_has_one() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, seen) = fake_supervisor(broker.port, 1);
    let client = Client::connect(broker.port, &["printernizer_stats/#"]).await;
    let app = App::spawn(
        dir.path(),
        None,
        &[
            ("SUPERVISOR_TOKEN", "test-token"),
            ("PRINTERNIZER_STATS_SUPERVISOR_URL", url.as_str()),
        ],
    );
    client
        .wait_for("printernizer_stats/availability", T, |m| {
            m.text() == "online"
        })
        .await;
    assert!(
        app.log()
            .contains("MQTT broker not available from the Supervisor yet"),
        "{}",
        app.log()
    );
    let seen = seen.lock().expect("lock").clone();
    let mqtt: Vec<&String> = seen
        .iter()
        .filter(|r| r.starts_with("GET /services/mqtt "))
        .collect();
    assert!(mqtt.len() >= 2, "{seen:?}");
    assert!(
        seen.iter().all(|r| r.contains("Bearer test-token")),
        "{seen:?}"
    );
    assert!(
        !app.log().contains("secret"),
        "the broker password is never logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_feeds_run_and_every_recordable_event_is_stored_once() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, _client) = started(&broker, &dir).await;
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("printernizer-stats"))
        .args([
            "simulate",
            "--printers",
            "4",
            "--events",
            "500",
            "--rate",
            "0",
            "--seed",
            "7",
        ])
        .env("PRINTERNIZER_STATS__MQTT__HOST", "127.0.0.1")
        .env("PRINTERNIZER_STATS__MQTT__PORT", broker.port.to_string())
        .env(
            "PRINTERNIZER_STATS__DATABASE__PATH",
            dir.path().join("unused.db"),
        )
        .env("PRINTERNIZER_STATS_OPTIONS", dir.path().join("none.json"))
        .env_remove("SUPERVISOR_TOKEN")
        .output()
        .expect("simulate runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let recordable: i64 = stdout
        .split_once('(')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {stdout}"));
    assert!(recordable > 300, "{stdout}");
    // Plus one app_start: Printernizer's `online` status.
    app.wait_count("SELECT count(*) FROM usage_events", recordable + 1, T);
    assert_eq!(
        app.count("SELECT count(DISTINCT printer_hash) FROM usage_events"),
        4
    );
    assert!(
        !std::path::Path::new(&dir.path().join("unused.db")).exists(),
        "simulate needs no database"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_simulate_and_a_clean_stop_warn_about_nothing() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut app, _client) = support::start_online(dir.path(), broker.port, &[]).await;
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("printernizer-stats"))
        .args(["simulate", "--events", "30", "--rate", "0"])
        .env(
            "PRINTERNIZER_STATS__DATABASE__PATH",
            dir.path().join("sim.db"),
        )
        .env(
            "PRINTERNIZER_STATS_OPTIONS",
            dir.path().join("no-options.json"),
        )
        .env("PRINTERNIZER_STATS__MQTT__HOST", "127.0.0.1")
        .env("PRINTERNIZER_STATS__MQTT__PORT", broker.port.to_string())
        .env_remove("SUPERVISOR_TOKEN")
        .output()
        .expect("simulate runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("WARN"), "simulate warned:\n{stderr}");
    // Let a state publish be pending (debounced) when the stop comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(app.stop());
    let log = app.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    assert!(
        warnings.is_empty(),
        "warnings on a clean run and stop: {warnings:?}"
    );
}
