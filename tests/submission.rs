//! Submission against a real HTTP server on 127.0.0.1 that records requests and fails on
//! command; time is a manual clock, so weeks pass without sleeping.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use chrono::Duration;
use common::{TestService, open_with, record_at};
use printernizer_stats::service::Environment;
use printernizer_stats::submission::{Submitter, TickOutcome};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    key: Option<String>,
    api_key: Option<String>,
    body: String,
    /// What the server answered.
    status: u16,
}

#[derive(Debug, Clone, Copy)]
enum Reply {
    Status(u16),
    RetryAfter(u64),
    Hang(u64),
}

#[derive(Clone, Default)]
struct Server {
    requests: Arc<Mutex<Vec<Request>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
}

impl Server {
    async fn start() -> (Self, String) {
        let server = Server::default();
        let state = server.clone();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let reply = state.script.lock().expect("lock").pop_front().unwrap_or(Reply::Status(200));
                state.requests.lock().expect("lock").push(Request {
                    method: method.to_string(),
                    path: uri.path().to_owned(),
                    key: header("idempotency-key"),
                    api_key: header("x-api-key"),
                    body: String::from_utf8_lossy(&body).into_owned(),
                    status: match reply {
                        Reply::Status(code) => code,
                        Reply::RetryAfter(_) => 429,
                        Reply::Hang(_) => 0,
                    },
                });
                match reply {
                    Reply::Status(code) => (
                        StatusCode::from_u16(code).expect("status"),
                        axum::Json(json!({"status": if code == 200 { "success" } else { "error" }, "submission_id": 1})),
                    )
                        .into_response(),
                    Reply::RetryAfter(secs) => {
                        (StatusCode::TOO_MANY_REQUESTS, [("retry-after", secs.to_string())], "slow down").into_response()
                    }
                    Reply::Hang(secs) => {
                        tokio::time::sleep(StdDuration::from_secs(secs)).await;
                        StatusCode::OK.into_response()
                    }
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/submit", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        (server, url)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("lock").clone()
    }

    fn then(&self, replies: &[Reply]) {
        self.script
            .lock()
            .expect("lock")
            .extend(replies.iter().copied());
    }
}

async fn setup(env: Environment, url: &str, api_key: Option<&str>) -> (TestService, Submitter) {
    let (url, api_key) = (url.to_owned(), api_key.map(str::to_owned));
    let ts = open_with("2026-11-02T00:00:00Z", env, move |s| {
        s.submission.endpoint = Some(url);
        s.submission.api_key = api_key.as_deref().map(Into::into);
        s.submission.timeout_s = 5.try_into().expect("in range");
    });
    let submitter = Submitter::new(ts.service.clone()).expect("submitter");
    (ts, submitter)
}

/// Walks the clock forward hour by hour, ticking like the scheduler.
async fn hours(ts: &TestService, submitter: &Submitter, n: i64) -> Vec<TickOutcome> {
    let mut out = Vec::new();
    for _ in 0..n {
        ts.clock.advance(Duration::hours(1));
        out.push(submitter.tick().await.expect("tick"));
    }
    out
}

#[tokio::test]
async fn opted_out_sends_nothing_for_three_weeks() {
    let (server, url) = Server::start().await;
    let (ts, submitter) = setup(Environment::default(), &url, None).await;
    record_at(&ts, "job_completed", "2026-11-01T12:00:00Z", json!({})).await;
    hours(&ts, &submitter, 21 * 24).await;
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn do_not_track_refuses_opt_in_and_sends_nothing() {
    let (server, url) = Server::start().await;
    let env = Environment {
        do_not_track: true,
        ..Environment::default()
    };
    let (ts, submitter) = setup(env, &url, None).await;
    assert!(ts.service.opt_in().await.is_err());
    hours(&ts, &submitter, 14 * 24).await;
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn weekly_reports_are_exact_contiguous_and_mark_events_submitted() {
    let (server, url) = Server::start().await;
    let (ts, submitter) = setup(Environment::default(), &url, Some("k-123")).await;
    ts.service.opt_in().await.expect("opt in");
    record_at(&ts, "job_completed", "2026-11-02T10:00:00Z", json!({})).await;
    record_at(&ts, "job_failed", "2026-11-03T10:00:00Z", json!({})).await;
    record_at(&ts, "file_downloaded", "2026-11-04T10:00:00Z", json!({})).await;

    let outcomes = hours(&ts, &submitter, 7 * 24).await;
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == TickOutcome::Accepted)
            .count(),
        1
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let first = &requests[0];
    assert_eq!(
        (first.method.as_str(), first.path.as_str()),
        ("POST", "/submit")
    );
    assert_eq!(first.api_key.as_deref(), Some("k-123"));
    assert!(first.key.as_deref().is_some_and(|k| k.len() == 36));
    let body: Value = serde_json::from_str(&first.body).expect("json");
    assert_eq!(body["usage_stats"]["job_count"], 2);
    assert_eq!(body["usage_stats"]["file_count"], 1);
    assert_eq!(body["period"]["start"], "2026-11-02T00:00:00Z");
    let status = ts.service.status().await.expect("status");
    assert_eq!(status.submission_count, 1);
    assert_eq!(status.events_pending, 0);

    record_at(
        &ts,
        "job_completed",
        &ts.clock_now_plus(Duration::hours(2)),
        json!({}),
    )
    .await;
    hours(&ts, &submitter, 8 * 24).await;
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let second: Value = serde_json::from_str(&requests[1].body).expect("json");
    assert_eq!(
        second["period"]["start"], body["period"]["end"],
        "periods are contiguous"
    );
    assert_eq!(second["usage_stats"]["job_count"], 1);
    assert_ne!(requests[0].key, requests[1].key);
}

#[tokio::test]
async fn failures_retry_the_same_body_and_key_with_backoff_then_succeed_once() {
    let (server, url) = Server::start().await;
    let (ts, submitter) = setup(Environment::default(), &url, None).await;
    ts.service.opt_in().await.expect("opt in");
    record_at(&ts, "job_completed", "2026-11-02T10:00:00Z", json!({})).await;
    server.then(&[
        Reply::Status(500),
        Reply::Status(502),
        Reply::Status(503),
        Reply::Hang(7),
    ]);
    ts.clock.advance(Duration::days(7));
    let mut accepted = 0;
    let mut last_retry = None;
    for _ in 0..(3 * 24 * 60) {
        match submitter.tick().await.expect("tick") {
            TickOutcome::Accepted => accepted += 1,
            TickOutcome::Retry(at, _) => {
                // Backoff is respected: nothing is sent before `at`.
                let before = server.requests().len();
                ts.clock.set(at - Duration::seconds(1));
                assert!(matches!(
                    submitter.tick().await.expect("tick"),
                    TickOutcome::Waiting(_)
                ));
                assert_eq!(server.requests().len(), before);
                last_retry = Some(at);
                ts.clock.set(at);
                continue;
            }
            _ => {}
        }
        if accepted > 0 {
            break;
        }
        ts.clock.advance(Duration::minutes(1));
    }
    assert_eq!(accepted, 1);
    assert!(last_retry.is_some());
    let requests = server.requests();
    assert_eq!(requests.len(), 5, "3 × 5xx, 1 timeout, 1 success");
    assert!(
        requests
            .iter()
            .all(|r| r.key == requests[0].key && r.body == requests[0].body)
    );
    hours(&ts, &submitter, 24).await;
    assert_eq!(server.requests().len(), 5, "never twice");
}

#[tokio::test]
async fn a_pending_report_survives_a_restart_with_the_same_key() {
    let (server, url) = Server::start().await;
    let (ts, submitter) = setup(Environment::default(), &url, None).await;
    ts.service.opt_in().await.expect("opt in");
    server.then(&[Reply::Status(503)]);
    ts.clock.advance(Duration::days(7) + Duration::hours(1));
    assert!(matches!(
        submitter.tick().await.expect("tick"),
        TickOutcome::Retry(..)
    ));
    let first_key = server.requests()[0].key.clone();
    let settings = ts.service.settings().clone();
    ts.service.close().await.expect("close");
    drop(submitter);

    let service = printernizer_stats::service::StatsService::open(
        settings,
        Arc::new(ts.clock.clone()),
        Environment::default(),
    )
    .expect("reopen");
    let submitter = Submitter::new(service.clone()).expect("submitter");
    ts.clock.advance(Duration::hours(7));
    assert_eq!(submitter.tick().await.expect("tick"), TickOutcome::Accepted);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].key, first_key);
    assert_eq!(requests[1].body, requests[0].body);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let (server, url) = Server::start().await;
    let (ts, submitter) = setup(Environment::default(), &url, None).await;
    ts.service.opt_in().await.expect("opt in");
    server.then(&[Reply::RetryAfter(120)]);
    ts.clock.advance(Duration::days(7));
    assert!(matches!(
        submitter.tick().await.expect("tick"),
        TickOutcome::Retry(..)
    ));
    ts.clock.advance(Duration::seconds(119));
    assert!(matches!(
        submitter.tick().await.expect("tick"),
        TickOutcome::Waiting(_)
    ));
    assert_eq!(server.requests().len(), 1);
    ts.clock.advance(Duration::seconds(2));
    assert_eq!(submitter.tick().await.expect("tick"), TickOutcome::Accepted);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn unauthorized_blocks_until_the_api_key_changes() {
    let (server, url) = Server::start().await;
    let (ts, submitter) = setup(Environment::default(), &url, Some("wrong")).await;
    ts.service.opt_in().await.expect("opt in");
    server.then(&[Reply::Status(401)]);
    ts.clock.advance(Duration::days(7));
    assert!(matches!(
        submitter.tick().await.expect("tick"),
        TickOutcome::Blocked(_)
    ));
    assert!(submitter.has_problem().await.expect("problem"));
    hours(&ts, &submitter, 48).await;
    assert_eq!(server.requests().len(), 1, "no retry storm");

    let mut settings = ts.service.settings().clone();
    settings.submission.api_key = Some("right".into());
    ts.service.close().await.expect("close");
    let service = printernizer_stats::service::StatsService::open(
        settings,
        Arc::new(ts.clock.clone()),
        Environment::default(),
    )
    .expect("reopen");
    let submitter = Submitter::new(service).expect("submitter");
    assert!(!submitter.has_problem().await.expect("problem"));
    assert_eq!(submitter.tick().await.expect("tick"), TickOutcome::Accepted);
    let requests = server.requests();
    assert_eq!(requests[1].api_key.as_deref(), Some("right"));
    assert_eq!(requests[1].key, requests[0].key);
}

#[tokio::test]
async fn opt_out_sends_one_deletion_for_the_old_id_then_silence_and_a_new_id_on_opt_in() {
    let (server, url) = Server::start().await;
    let (ts, submitter) = setup(Environment::default(), &url, None).await;
    let old_id = ts.service.opt_in().await.expect("opt in");
    record_at(&ts, "job_completed", "2026-11-02T10:00:00Z", json!({})).await;
    hours(&ts, &submitter, 7 * 24 + 1).await;
    assert_eq!(server.requests().len(), 1, "one report");

    // The deletion fails once and is retried by the scheduler until confirmed.
    server.then(&[Reply::Status(503)]);
    submitter.opt_out().await.expect("opt out");
    hours(&ts, &submitter, 21 * 24).await;
    let requests = server.requests();
    let deletions: Vec<_> = requests.iter().filter(|r| r.method == "DELETE").collect();
    assert_eq!(deletions.len(), 2, "one failed attempt, one confirmed");
    assert!(
        deletions
            .iter()
            .all(|r| r.path == format!("/installation/{old_id}"))
    );
    assert_eq!(requests.len(), 3, "nothing else after the opt-out");
    assert_eq!(requests.last().map(|r| r.method.as_str()), Some("DELETE"));

    let new_id = ts.service.opt_in().await.expect("opt in again");
    assert_ne!(new_id, old_id);
    hours(&ts, &submitter, 7 * 24 + 1).await;
    let last: Value =
        serde_json::from_str(&server.requests().last().expect("report").body).expect("json");
    assert_eq!(last["installation"]["installation_id"], new_id.as_str());
}

#[test]
fn server_base_drops_the_last_path_segment() {
    use printernizer_stats::submission::server_base;
    assert_eq!(
        server_base("https://stats.printernizer.com/submit"),
        "https://stats.printernizer.com"
    );
    assert_eq!(
        server_base("http://127.0.0.1:8080/api/v1/submit/"),
        "http://127.0.0.1:8080/api/v1"
    );
    assert_eq!(
        server_base("http://127.0.0.1:8080"),
        "http://127.0.0.1:8080"
    );
}

mod sums {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 8, .. ProptestConfig::default() })]

        /// Whatever arrives when, the accepted reports together count every stored event once.
        #[test]
        fn accepted_reports_sum_to_the_stored_events(
            events in prop::collection::vec((0usize..5, 0i64..(21 * 24), 0i64..3600), 0..150),
            flaky in prop::collection::vec(prop::bool::weighted(0.2), 40),
        ) {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async {
                let (server, url) = Server::start().await;
                let (ts, submitter) = setup(Environment::default(), &url, None).await;
                ts.service.opt_in().await.expect("opt in");
                server.then(&flaky.iter().map(|f| if *f { Reply::Status(503) } else { Reply::Status(200) }).collect::<Vec<_>>());
                let kinds = ["job_completed", "job_failed", "file_downloaded", "file_uploaded", "error_occurred"];
                for hour in 0..(28 * 24) {
                    for (kind, _, second) in events.iter().filter(|e| e.1 == hour) {
                        let at = printernizer_stats::store::fmt_ts(
                            printernizer_stats::clock::Clock::now(&ts.clock) + Duration::seconds(*second - 3600),
                        );
                        record_at(&ts, kinds[*kind], &at, json!({"error_type": "disk_full"})).await;
                    }
                    ts.clock.advance(Duration::hours(1));
                    submitter.tick().await.expect("tick");
                }
                let accepted: Vec<Value> = server
                    .requests()
                    .iter()
                    .filter(|r| r.method == "POST" && r.status == 200)
                    .map(|r| serde_json::from_str(&r.body).expect("json"))
                    .collect();
                let mut sums = [0u64; 4];
                let mut periods = std::collections::HashSet::new();
                for body in &accepted {
                    assert!(periods.insert(body["period"]["start"].to_string()), "a period was accepted twice");
                    sums[0] += body["usage_stats"]["job_count"].as_u64().expect("n");
                    sums[1] += body["usage_stats"]["file_count"].as_u64().expect("n");
                    sums[2] += body["usage_stats"]["upload_count"].as_u64().expect("n");
                    sums[3] += body["error_summary"].as_object().map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
                }
                let until = ts
                    .service
                    .store()
                    .read(|c| printernizer_stats::store::settings::get(c, "last_report_end"))
                    .await
                    .expect("read")
                    .expect("at least one report was accepted");
                // Events from before the opt-in are never reported.
                let from = printernizer_stats::store::fmt_ts(common::t("2026-11-02T00:00:00Z"));
                let counts: Vec<u64> = ts
                    .service
                    .store()
                    .read(move |c| {
                        let mut out = Vec::new();
                        for kinds in ["'job_completed','job_failed'", "'file_downloaded'", "'file_uploaded'", "'error_occurred'"] {
                            let n: i64 = c.query_row(
                                &format!(
                                    "SELECT count(*) FROM usage_events
                                     WHERE event_type IN ({kinds}) AND timestamp >= ?2 AND timestamp < ?1"
                                ),
                                [&until, &from],
                                |r| r.get(0),
                            )?;
                            out.push(n as u64);
                        }
                        Ok(out)
                    })
                    .await
                    .expect("counts");
                assert_eq!(sums.to_vec(), counts);
                // And everything reported is marked submitted, nothing else.
                let unsubmitted_before: i64 = ts
                    .service
                    .store()
                    .read(|c| Ok(c.query_row(
                        "SELECT count(*) FROM usage_events WHERE submitted = 0 AND timestamp >= '2026-11-02'
                           AND timestamp < (SELECT value FROM usage_settings WHERE key = 'last_report_end')",
                        [],
                        |r| r.get(0),
                    )?))
                    .await
                    .expect("count");
                assert_eq!(unsubmitted_before, 0);
            });
        }
    }
}

#[tokio::test]
async fn submit_now_sends_the_pending_report_at_once_but_never_twice_an_hour() {
    let (server, url) = Server::start().await;
    let (ts, submitter) = setup(Environment::default(), &url, None).await;
    ts.service.opt_in().await.expect("opt in");
    // Too early for a weekly report, but a press builds and sends one.
    server.then(&[Reply::Status(503)]);
    ts.clock.advance(Duration::hours(5));
    assert!(matches!(
        submitter.submit_now().await.expect("press"),
        TickOutcome::Retry(..)
    ));
    assert!(matches!(
        submitter.tick().await.expect("tick"),
        TickOutcome::Waiting(_)
    ));
    assert_eq!(
        submitter.submit_now().await.expect("press"),
        TickOutcome::Accepted
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].key, requests[1].key, "the same pending report");
    // A press within the hour after an accepted submission says when the next one is possible.
    ts.clock.advance(Duration::minutes(10));
    assert!(matches!(
        submitter.submit_now().await.expect("press"),
        TickOutcome::NotDue(_)
    ));
    assert_eq!(server.requests().len(), 2);
    ts.clock.advance(Duration::minutes(51));
    assert_eq!(
        submitter.submit_now().await.expect("press"),
        TickOutcome::Accepted
    );
    let body: Value = serde_json::from_str(&server.requests()[2].body).expect("json");
    let first: Value = serde_json::from_str(&requests[0].body).expect("json");
    assert_eq!(body["period"]["start"], first["period"]["end"]);
}

#[tokio::test]
async fn submit_now_right_after_opting_in_sends_the_preview_and_nothing_old_stays_pending() {
    let (server, url) = Server::start().await;
    let (ts, submitter) = setup(Environment::default(), &url, None).await;
    // Older than any report will cover, then inside the preview's week.
    record_at(&ts, "job_completed", "2026-10-01T10:00:00Z", json!({})).await;
    record_at(&ts, "job_completed", "2026-10-30T10:00:00Z", json!({})).await;
    record_at(&ts, "file_downloaded", "2026-11-01T10:00:00Z", json!({})).await;
    let preview = ts.service.report(None, None).await.expect("preview");
    assert_eq!(ts.service.status().await.expect("status").events_pending, 3);

    ts.service.opt_in().await.expect("opt in");
    assert_eq!(
        submitter.submit_now().await.expect("sent"),
        TickOutcome::Accepted
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let sent: Value = serde_json::from_str(&requests[0].body).expect("json");
    assert_eq!(
        sent["period"]["start"],
        json!(
            preview
                .period
                .start
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    );
    assert_eq!(
        sent["period"]["end"],
        json!(
            preview
                .period
                .end
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    );
    assert_eq!(
        sent["usage_stats"]["job_count"], 1,
        "the figures the user saw"
    );
    assert_eq!(sent["usage_stats"]["file_count"], 1);
    assert_eq!(
        ts.service.status().await.expect("status").events_pending,
        0,
        "nothing stored before the report's end is pending"
    );
}
