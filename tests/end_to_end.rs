//! End to end with both programs as child processes: the add-on's `run` submits to the
//! aggregation server's binary over real HTTP, through a real mosquitto.

use std::time::Duration;

use printernizer_stats_test_support::aggregator::Process;
use printernizer_stats_test_support::mqtt as mqtt_support;
use serde_json::{Value, json};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// End to end with the real client: `run` (opted in from the MQTT switch) submits through
/// "Submit now" to the `printernizer-stats-aggregator` process, and `/stats/overview` shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_submits_to_the_aggregator_end_to_end() {
    use mqtt_support::{App, Broker, Client};
    let t = Duration::from_secs(30);
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let agg = Process::spawn(
        dir.path(),
        "sqlite://agg.db",
        &[("PRINTERNIZER_STATS__AGGREGATOR__K_ANONYMITY", "1")],
    );
    let endpoint = agg.url("/submit");
    let app = App::start(
        dir.path(),
        broker.port,
        &[
            (
                "PRINTERNIZER_STATS__SUBMISSION__ENDPOINT",
                endpoint.as_str(),
            ),
            ("PRINTERNIZER_STATS__INSTALLATION__DEPLOYMENT_MODE", "pi"),
            ("PRINTERNIZER_STATS__INSTALLATION__COUNTRY_CODE", "AT"),
        ],
    );
    let client = Client::connect(broker.port, &["printernizer_stats/#"]).await;
    client
        .wait_for("printernizer_stats/availability", t, |m| {
            m.text() == "online"
        })
        .await;
    client.publish("printernizer_stats/opt_in/set", "ON").await;
    app.wait_count(
        "SELECT count(*) FROM usage_settings WHERE key = 'opt_in_status' AND value = 'enabled'",
        1,
        t,
    );
    for status in ["completed", "completed", "completed", "failed"] {
        client
            .publish(
                "printernizer/events/job_completed",
                json!({"printer_id": "01S00A123456789", "printer_type": "bambu_lab", "status": status})
                    .to_string(),
            )
            .await;
    }
    app.wait_count("SELECT count(*) FROM usage_events", 4, t);
    client
        .publish("printernizer_stats/submit_now/press", "PRESS")
        .await;

    let deadline = std::time::Instant::now() + t;
    let overview = loop {
        let o: Value = http()
            .get(agg.url("/stats/overview"))
            .send()
            .await
            .expect("overview")
            .json()
            .await
            .expect("json");
        if o["installations"]["total"] == 1 {
            break o;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no submission arrived: {o}\n{}",
            app.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        overview["activity"]["jobs"],
        json!({"total": 4, "completed": 3, "failed": 1, "success_rate": 75.0,
               "reports_from_installations": 1})
    );
    assert_eq!(overview["deployment_modes"]["breakdown"], json!({"pi": 1}));
    assert_eq!(overview["geography"]["countries"][0]["code"], "AT");
    app.wait_count(
        "SELECT count(*) FROM usage_settings WHERE key = 'submission_count' AND value = '1'",
        1,
        t,
    );
}
