//! The local API over real HTTP: the router on a random port over a real SQLite file, a manual
//! clock, and — for "submit now" — the real aggregation server in the same process.

use printernizer_stats_test_support::aggregator as agg;
mod common;
use printernizer_stats_test_support::mqtt as mqtt_support;

use std::net::SocketAddr;
use std::time::Duration;

use chrono::Duration as Days;
use common::{TestService, open_with, record_at};
use printernizer_stats::http::{self, HttpState, access::Policy};
use printernizer_stats::service::Environment;
use printernizer_stats::submission::Submitter;
use reqwest::StatusCode;
use serde_json::{Value, json};

const NOW: &str = "2026-11-20T12:00:00Z";
const API: &str = "/api/v1/usage-stats";

struct Page {
    base: String,
    ts: TestService,
    _agg: Option<agg::Server>,
}

async fn serve(state: HttpState, bind: &str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(bind).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        http::serve(state, listener, std::future::pending())
            .await
            .expect("serve");
    });
    addr
}

/// The page over a fresh service; `endpoint` starts an aggregator and configures submission.
async fn page(env: Environment, with_server: bool, policy: Policy) -> Page {
    let server = if with_server {
        Some(agg::Server::start(agg::Kind::Sqlite, |_| {}).await)
    } else {
        None
    };
    let endpoint = server.as_ref().map(|s| s.url("/submit"));
    let ts = open_with(NOW, env, |s| s.submission.endpoint = endpoint);
    let submitter = with_server.then(|| Submitter::new(ts.service.clone()).expect("submitter"));
    let state = HttpState {
        service: ts.service.clone(),
        submitter,
        access: policy,
    };
    let addr = serve(state, "127.0.0.1:0").await;
    Page {
        base: format!("http://{addr}"),
        ts,
        _agg: server,
    }
}

impl Page {
    fn url(&self, path: &str) -> String {
        format!("{}{API}{path}", self.base)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = reqwest::get(self.url(path)).await.expect("get");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn send(&self, method: reqwest::Method, path: &str) -> reqwest::Response {
        reqwest::Client::new()
            .request(method, self.url(path))
            .send()
            .await
            .expect("send")
    }

    async fn post(&self, path: &str) -> (StatusCode, Value) {
        let r = self.send(reqwest::Method::POST, path).await;
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn events(&self) {
        let day = "2026-11-20";
        for (kind, at, meta) in [
            (
                "job_completed",
                "09:00",
                json!({"printer_id": "X1C-1", "printer_type": "bambu_lab"}),
            ),
            (
                "job_failed",
                "10:00",
                json!({"printer_id": "X1C-1", "outcome": "failed"}),
            ),
            (
                "file_downloaded",
                "10:30",
                json!({"file": "/home/alice/benchy.3mf"}),
            ),
            (
                "error_occurred",
                "11:00",
                json!({"error_type": "connection_timeout"}),
            ),
        ] {
            record_at(&self.ts, kind, &format!("{day}T{at}:00Z"), meta).await;
        }
    }
}

fn open() -> Policy {
    Policy::new(false, None)
}

#[tokio::test]
async fn local_preview_and_health() {
    let p = page(Environment::default(), false, open()).await;
    p.events().await;
    let (s, local) = p.get("/local").await;
    assert_eq!(s, StatusCode::OK);
    for key in [
        "installation_id",
        "first_seen",
        "opt_in_status",
        "total_events",
        "last_submission",
    ] {
        assert!(local.get(key).is_some(), "{key} missing: {local}");
    }
    assert_eq!(local["opt_in_status"], "disabled");
    assert_eq!(local["total_events"], 4);
    assert_eq!(local["this_week"]["job_count"], 2);
    assert_eq!(local["this_week"]["file_count"], 1);
    assert_eq!(local["this_week"]["error_count"], 1);
    assert_eq!(local["this_week"]["event_counts"]["job_completed"], 1);
    assert_eq!(local["sharing_active"], false);
    assert_eq!(local["submission_problem"], false);
    assert!(local["next_submission"].is_null());

    // The preview is, byte for byte, what `report` prints.
    let r = reqwest::get(p.url("/preview")).await.expect("preview");
    assert_eq!(r.headers()["content-type"], "application/json");
    let text = r.text().await.expect("text");
    let report = p.ts.service.report(None, None).await.expect("report");
    assert_eq!(text, http::api::report_text(&report).expect("text"));
    assert!(!text.contains("alice") && !text.contains("X1C"), "{text}");

    let (s, h) = p.get("/health").await;
    assert_eq!((s, h["status"].as_str()), (StatusCode::OK, Some("ok")));
}

#[tokio::test]
async fn opt_in_and_out_and_do_not_track() {
    let p = page(Environment::default(), false, open()).await;
    let (s, v) = p.post("/opt-in").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["success"], true);
    let id = v["installation_id"].as_str().expect("id").to_owned();
    assert!(v["message"].is_string());
    assert_eq!(p.get("/local").await.1["sharing_active"], true);
    let (s, v) = p.post("/opt-out").await;
    assert_eq!((s, v["success"].as_bool()), (StatusCode::OK, Some(true)));
    let local = p.get("/local").await.1;
    assert_eq!(local["opt_in_status"], "disabled");
    assert_ne!(local["installation_id"], id, "the id rotates on opt-out");

    let dnt = page(
        Environment {
            do_not_track: true,
            ..Environment::default()
        },
        false,
        open(),
    )
    .await;
    let (s, v) = dnt.post("/opt-in").await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(v["success"], false);
    assert!(
        v["detail"]
            .as_str()
            .is_some_and(|d| d.contains("DO_NOT_TRACK")),
        "{v}"
    );
    assert_eq!(dnt.get("/local").await.1["do_not_track"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_now_respects_the_hourly_limit_and_shows_history() {
    let none = page(Environment::default(), false, open()).await;
    assert_eq!(none.post("/submit").await.0, StatusCode::CONFLICT);

    let p = page(Environment::default(), true, open()).await;
    assert_eq!(p.post("/opt-in").await.0, StatusCode::OK);
    p.ts.clock.advance(Days::minutes(5));
    p.events().await;
    p.ts.clock.advance(Days::hours(1));
    let (s, v) = p.post("/submit").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["outcome"], "accepted");
    p.ts.clock.advance(Days::minutes(10));
    let r = p.send(reqwest::Method::POST, "/submit").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "3000");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"], "too_soon");
    assert!(v["next_possible_at"].is_string());

    let local = p.get("/local").await.1;
    assert_eq!(local["submission_count"], 1);
    assert!(local["next_submission"].is_string());
    assert!(local["pending_report"].is_null());
    let (s, h) = p.get("/history?days=30").await;
    assert_eq!(s, StatusCode::OK);
    let days = h["days"].as_array().expect("days");
    assert_eq!(days.len(), 30);
    assert_eq!(days.last().expect("today")["date"], "2026-11-20");
    assert_eq!(days.last().expect("today")["counts"]["job_completed"], 1);
    assert_eq!(
        days.last().expect("today")["counts"]
            .as_object()
            .expect("map")
            .len(),
        12
    );
    let attempts = h["submissions"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["outcome"], "accepted");
    assert_eq!(attempts[0]["http_status"], 200);
    for bad in ["0", "366", "x"] {
        let (s, v) = p.get(&format!("/history?days={bad}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(v["error"], "invalid_input");
    }
}

#[tokio::test]
async fn export_streams_a_download_and_delete_all_empties_the_store() {
    let p = page(Environment::default(), false, open()).await;
    p.events().await;
    let r = reqwest::get(p.url("/export")).await.expect("export");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=usage-statistics-export.json"
    );
    let export: Value = r.json().await.expect("export is JSON");
    assert_eq!(export["events"].as_array().map(Vec::len), Some(4));

    let r = p.send(reqwest::Method::DELETE, "/delete-all").await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.expect("json");
    assert_eq!(
        (v["success"].as_bool(), v["deleted_events"].as_u64()),
        (Some(true), Some(4))
    );
    assert!(v["message"].is_string());
    p.events().await;
    // Upstream's spelling: DELETE /api/v1/usage-stats.
    let r = p.send(reqwest::Method::DELETE, "").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.expect("json")["deleted_events"], 4);
    assert_eq!(p.get("/local").await.1["total_events"], 0);
}

#[tokio::test]
async fn errors_are_json_and_gets_change_nothing() {
    let p = page(Environment::default(), false, open()).await;
    let (s, v) = p.get("/nope").await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (s, v) = p.get("/opt-in").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(v["error"], "method_not_allowed");
    assert_eq!(p.get("/local").await.1["opt_in_status"], "disabled");
    assert_eq!(
        p.send(reqwest::Method::GET, "/delete-all").await.status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn cross_site_form_posts_and_missing_tokens_are_refused() {
    let p = page(Environment::default(), false, open()).await;
    let client = reqwest::Client::new();
    let r = client
        .post(p.url("/opt-in"))
        .header("Sec-Fetch-Site", "cross-site")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = client
        .post(p.url("/opt-in"))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = client
        .post(p.url("/opt-in"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("a=1")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = client
        .post(p.url("/opt-in"))
        .header("Sec-Fetch-Site", "same-origin")
        .json(&json!({}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);

    let guarded = page(
        Environment::default(),
        false,
        Policy::new(false, Some("s3cret")),
    )
    .await;
    assert_eq!(guarded.post("/opt-in").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        guarded.get("/local").await.0,
        StatusCode::OK,
        "reading needs no token"
    );
    let r = client
        .post(guarded.url("/opt-in"))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
}

/// This machine's address on a non-loopback interface (the route to a public address; no
/// packet is sent).
fn non_loopback_ip() -> std::net::IpAddr {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp");
    s.connect("192.0.2.123:9").expect("route");
    let ip = s.local_addr().expect("addr").ip();
    assert!(
        !ip.is_loopback() && !ip.is_unspecified(),
        "no non-loopback address: {ip}"
    );
    ip
}

#[tokio::test]
async fn add_on_mode_admits_only_ingress_and_loopback() {
    let ts = open_with(NOW, Environment::default(), |_| {});
    let state = HttpState {
        service: ts.service.clone(),
        submitter: None,
        access: Policy::new(true, None),
    };
    let addr = serve(state, "0.0.0.0:0").await;
    let from_lan = format!("http://{}:{}{API}/local", non_loopback_ip(), addr.port());
    let r = reqwest::get(&from_lan).await.expect("get");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.json::<Value>().await.expect("json")["error"], "forbidden");
    let page = reqwest::get(format!("http://{}:{}/", non_loopback_ip(), addr.port()))
        .await
        .expect("get");
    assert_eq!(page.status(), StatusCode::FORBIDDEN, "the page too");
    let local = reqwest::get(format!("http://127.0.0.1:{}{API}/local", addr.port()))
        .await
        .expect("get");
    assert_eq!(local.status(), StatusCode::OK);
}

#[test]
fn run_refuses_a_public_bind_without_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = assert_cmd::Command::cargo_bin("printernizer-stats")
        .expect("bin")
        .arg("run")
        .current_dir(dir.path())
        .env(
            "PRINTERNIZER_STATS__DATABASE__PATH",
            dir.path().join("s.db"),
        )
        .env("PRINTERNIZER_STATS_OPTIONS", dir.path().join("none.json"))
        .env("PRINTERNIZER_STATS__MQTT__ENABLED", "false")
        .env("PRINTERNIZER_STATS__HTTP__BIND", "0.0.0.0:0")
        .env_remove("SUPERVISOR_TOKEN")
        .timeout(Duration::from_secs(30))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http.token"), "{err}");
}

/// The page and the Home Assistant switch are one setting: opting in on the page turns the
/// switch on (through the real `run` process and a private broker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opting_in_on_the_page_turns_the_home_assistant_switch_on() {
    use mqtt_support::{App, Broker, Client};
    let t = Duration::from_secs(30);
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let app = App::start(dir.path(), broker.port, &[]);
    let client = Client::connect(broker.port, &["printernizer_stats/#"]).await;
    client
        .wait_for("printernizer_stats/opt_in/state", t, |m| m.text() == "OFF")
        .await;
    let base = app.http_base();
    let r = reqwest::Client::new()
        .post(format!("{}api/v1/usage-stats/opt-in", base))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::OK);
    client
        .wait_for("printernizer_stats/opt_in/state", t, |m| m.text() == "ON")
        .await;
    // And the page itself is served, in the configured language.
    let html = reqwest::get(&base)
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(html.contains("Share anonymous usage statistics"));
}
