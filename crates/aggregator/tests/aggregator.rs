//! The aggregation server over real HTTP, on both backends: a SQLite file and a fresh
//! PostgreSQL database per test. Every scenario below runs twice (`sqlite::…`, `postgres::…`).

use printernizer_stats_test_support::aggregator as support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use printernizer_stats_test_support::smtp::SmtpSink;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Db, Kind, NOW, PgDb, Process, Server, new_id, report};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

async fn post(server: &Server, body: &Value, key: Option<&str>) -> (StatusCode, Value) {
    let mut req = http().post(server.url("/submit")).json(body);
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get(server: &Server, path: &str) -> (StatusCode, Value) {
    let resp = http().get(server.url(path)).send().await.expect("send");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Postgres).await
                }
            )*
        }
    };
}

on_both_backends!(
    submit_stores_what_was_sent_and_summarizes,
    idempotent_retries_return_the_original_id,
    rate_limit_answers_429_with_retry_after,
    concurrent_submits_accept_exactly_the_limit,
    a_concurrent_mix_gets_one_consistent_answer_each,
    api_keys_guard_everything_but_health,
    hostile_input_gets_4xx_and_stores_nothing,
    delete_installation_removes_everything_of_that_id,
    overview_folds_small_buckets,
    retention_deletes_old_submissions,
    unknown_routes_and_methods_answer_json,
    distributions_count_latest_reports_k_anonymously,
    trends_errors_anomalies_and_export,
    public_dashboard_opens_reads_never_writes,
    email_reports_reach_a_real_smtp_server,
);

const A: &str = "2026-11-20T00:00:00Z";
const B: &str = "2026-11-27T00:00:00Z";

async fn submit_stores_what_was_sent_and_summarizes(kind: Kind) {
    let server = Server::start(kind, |_| {}).await;
    let (status, health) = get(&server, "/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["database"], "connected", "upstream's word");
    let (status, root) = get(&server, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(root["status"], "healthy");
    assert!(
        root["service"].is_string() && root["version"].is_string(),
        "{root}"
    );

    let id = new_id();
    let (status, body) = post(&server, &report(&id, A, B), Some("k-1")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "success");
    assert!(body["submission_id"].as_i64().is_some_and(|n| n > 0));
    assert!(body["message"].is_string());

    let (_, summary) = get(&server, "/stats/summary").await;
    assert_eq!(summary["total_submissions"], 1);
    assert_eq!(summary["unique_installations"], 1);
    assert_eq!(summary["latest_submission_at"], NOW);
    assert!(summary["timestamp"].is_string());

    // Stored as received: outcomes are not invented, errors and features kept per type.
    let dump = server.db.dump().await;
    for expected in [
        "connection_timeout",
        "disk_full",
        "library_enabled",
        "bambu_lab",
    ] {
        assert!(dump.contains(expected), "{expected} not stored:\n{dump}");
    }
    let (_, o) = get(&server, "/stats/overview").await;
    // k = 5 by default: one installation's jobs are withheld, but it is counted.
    assert_eq!(o["installations"]["total"], 1);
    assert_eq!(o["activity"]["jobs"]["total"], 0);
    assert_eq!(o["activity"]["weeks"][11]["jobs"], Value::Null);
    assert_eq!(o["activity"]["weeks"][11]["submissions"], 1);
}

async fn idempotent_retries_return_the_original_id(kind: Kind) {
    let server = Server::start(kind, |s| {
        s.rate_limit_per_hour = 1.try_into().expect("in range")
    })
    .await;
    let id = new_id();
    let body = report(&id, A, B);
    // An SQL-shaped key is just a key.
    let key = "'; DROP TABLE submissions; --";
    let (s1, first) = post(&server, &body, Some(key)).await;
    assert_eq!(s1, StatusCode::OK);
    let original = first["submission_id"].clone();

    // Same key (even with a changed body), then same period without a key: the original id,
    // and the rate limit (1/hour) is not consumed by either.
    let mut changed = body.clone();
    changed["usage_stats"]["file_count"] = json!(99);
    for (b, k) in [
        (&changed, Some(key)),
        (&body, None),
        (&body, Some("other-key")),
    ] {
        let (s, again) = post(&server, b, k).await;
        assert_eq!(s, StatusCode::OK, "{again}");
        assert_eq!(again["submission_id"], original);
        assert!(
            again["message"]
                .as_str()
                .is_some_and(|m| m.contains("already"))
        );
    }
    assert_eq!(server.total().await, 1);

    // A genuinely new period is over the limit now.
    let (s, _) = post(&server, &report(&id, B, "2026-11-28T00:00:00Z"), None).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(server.total().await, 1);
}

async fn rate_limit_answers_429_with_retry_after(kind: Kind) {
    let server = Server::start(kind, |s| {
        s.rate_limit_per_hour = 2.try_into().expect("in range")
    })
    .await;
    let id = new_id();
    let periods = [
        ("2026-11-01T00:00:00Z", "2026-11-08T00:00:00Z"),
        ("2026-11-08T00:00:00Z", "2026-11-15T00:00:00Z"),
        ("2026-11-15T00:00:00Z", "2026-11-22T00:00:00Z"),
    ];
    for (start, end) in &periods[..2] {
        assert_eq!(
            post(&server, &report(&id, start, end), None).await.0,
            StatusCode::OK
        );
    }
    server.clock.advance(chrono::Duration::minutes(20));
    let resp = http()
        .post(server.url("/submit"))
        .json(&report(&id, periods[2].0, periods[2].1))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert_eq!(retry, 40 * 60);
    let body: Value = resp.json().await.expect("json");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("Rate limit"))
    );
    // Another installation is not affected.
    assert_eq!(
        post(&server, &report(&new_id(), A, B), None).await.0,
        StatusCode::OK
    );
    // After the window, the same installation is accepted again.
    server.clock.advance(chrono::Duration::minutes(41));
    assert_eq!(
        post(&server, &report(&id, periods[2].0, periods[2].1), None)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(server.total().await, 4);
}

/// `n` distinct one-hour periods of one installation, all sent at once to `bases` in turn.
async fn burst(bases: &[String], id: &str, n: usize) -> (usize, usize) {
    let now: DateTime<Utc> = NOW.parse().expect("now");
    let client = http();
    let mut tasks = Vec::new();
    for i in 0..n {
        let start = now - chrono::Duration::hours(300) + chrono::Duration::hours(i as i64);
        let end = start + chrono::Duration::hours(1);
        let mut body = report(
            id,
            &start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            &end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        body["usage_stats"]["uptime_hours"] = json!(1);
        let url = format!("{}/submit", bases[i % bases.len()]);
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .json(&body)
                .send()
                .await
                .expect("send")
                .status()
        }));
    }
    let (mut ok, mut limited) = (0, 0);
    for t in tasks {
        match t.await.expect("task") {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    (ok, limited)
}

async fn concurrent_submits_accept_exactly_the_limit(kind: Kind) {
    for limit in [1u32, 3] {
        let server = Server::start(kind, |s| {
            s.rate_limit_per_hour = u64::from(limit).try_into().expect("in range")
        })
        .await;
        let (ok, limited) = burst(std::slice::from_ref(&server.base), &new_id(), 100).await;
        assert_eq!((ok, limited), (limit as usize, 100 - limit as usize));
        assert_eq!(server.total().await, u64::from(limit));
    }
}

/// Everything at once — the way a batch of group commit sees it: 20 installations each send
/// three periods (limit 2) and repeat their first twice, and 10 new installations share one
/// `Idempotency-Key`. Every request of one installation and period gets the same id, exactly
/// two periods of each are stored, a refused period is never stored, one key stores one row.
async fn a_concurrent_mix_gets_one_consistent_answer_each(kind: Kind) {
    let server = Server::start(kind, |s| {
        s.rate_limit_per_hour = 2.try_into().expect("in range")
    })
    .await;
    let periods = [
        ("2026-11-01T00:00:00Z", "2026-11-08T00:00:00Z"),
        ("2026-11-08T00:00:00Z", "2026-11-15T00:00:00Z"),
        ("2026-11-15T00:00:00Z", "2026-11-22T00:00:00Z"),
    ];
    let installations: Vec<String> = (0..20).map(|_| new_id()).collect();
    let mut requests: Vec<(String, usize, Option<&str>)> = Vec::new();
    for id in &installations {
        for p in [0, 1, 2, 0, 0] {
            requests.push((id.clone(), p, None));
        }
    }
    let shared_key = "one-key-for-ten";
    for _ in 0..10 {
        requests.push((new_id(), 0, Some(shared_key)));
    }
    let client = http();
    let tasks: Vec<_> = requests
        .iter()
        .map(|(id, p, key)| {
            let mut req =
                client
                    .post(server.url("/submit"))
                    .json(&report(id, periods[*p].0, periods[*p].1));
            if let Some(k) = key {
                req = req.header("Idempotency-Key", *k);
            }
            tokio::spawn(async move {
                let resp = req.send().await.expect("send");
                let status = resp.status();
                let v: Value = resp.json().await.expect("json");
                (status, v["submission_id"].as_i64())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("task"));
    }

    use std::collections::{BTreeMap, BTreeSet};
    let mut stored: BTreeMap<(&str, usize), BTreeSet<i64>> = BTreeMap::new();
    let mut refused: BTreeSet<(&str, usize)> = BTreeSet::new();
    let mut keyed = BTreeSet::new();
    for ((id, p, key), (status, sid)) in requests.iter().zip(&answers) {
        match (*status, key) {
            (StatusCode::OK, Some(_)) => {
                keyed.insert(sid.expect("id"));
            }
            (StatusCode::OK, None) => {
                stored
                    .entry((id.as_str(), *p))
                    .or_default()
                    .insert(sid.expect("id"));
            }
            (StatusCode::TOO_MANY_REQUESTS, None) => {
                refused.insert((id.as_str(), *p));
            }
            (other, _) => panic!("unexpected {other} for {id} period {p}"),
        }
    }
    assert_eq!(keyed.len(), 1, "one key, one row: {keyed:?}");
    for (k, ids) in &stored {
        assert_eq!(ids.len(), 1, "{k:?} answered with several ids: {ids:?}");
        assert!(!refused.contains(k), "{k:?} was both stored and refused");
    }
    for id in &installations {
        let n = stored.keys().filter(|(i, _)| *i == id.as_str()).count();
        assert_eq!(n, 2, "installation {id}: {stored:?}");
    }
    let all: BTreeSet<i64> = stored.values().flatten().copied().collect();
    assert_eq!(all.len(), 40, "distinct rows, distinct ids");
    assert_eq!(server.total().await, 41);
}

async fn api_keys_guard_everything_but_health(kind: Kind) {
    let server = Server::start(kind, |s| s.api_keys = vec!["k1".into(), "k2".into()]).await;
    let body = report(&new_id(), A, B);
    let send = |key: Option<&'static str>| {
        let mut req = http().post(server.url("/submit")).json(&body);
        if let Some(k) = key {
            req = req.header("X-API-Key", k);
        }
        req.send()
    };
    let missing = send(None).await.expect("send");
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    let challenge = missing
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        challenge.contains("X-API-Key"),
        "401 names the header: {challenge:?}"
    );
    let detail: Value = missing.json().await.expect("json");
    assert!(detail["detail"].is_string());
    assert_eq!(
        send(Some("k3")).await.expect("send").status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(Some("k2")).await.expect("send").status(),
        StatusCode::OK
    );
    for path in [
        "/stats/summary",
        "/stats/overview",
        "/stats/export",
        "/stats/errors",
        "/dashboard/panels",
    ] {
        assert_eq!(
            get(&server, path).await.0,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
    // The dashboard's shell holds no data: it asks for the key itself.
    let shell = http()
        .get(server.url("/dashboard"))
        .send()
        .await
        .expect("send");
    assert_eq!(shell.status(), StatusCode::OK);
    let csp = shell
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let del = http()
        .delete(server.url(&format!("/installation/{}", new_id())))
        .send()
        .await
        .expect("send");
    assert_eq!(del.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(get(&server, "/health").await.0, StatusCode::OK);
    assert_eq!(get(&server, "/").await.0, StatusCode::OK, "/ needs no key");
    let summary: Value = http()
        .get(server.url("/stats/summary"))
        .header("X-API-Key", "k1")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(summary["total_submissions"], 1);
}

/// `public_dashboard = true`: the dashboard and the k-anonymous `/stats/*` answer without a
/// key; `/submit` and `DELETE` still need one.
async fn public_dashboard_opens_reads_never_writes(kind: Kind) {
    let server = Server::start(kind, |s| {
        s.api_keys = vec!["k1".into()];
        s.public_dashboard = true;
    })
    .await;
    for path in [
        "/stats/summary",
        "/stats/overview",
        "/stats/versions",
        "/stats/export",
        "/dashboard",
        "/dashboard/panels",
    ] {
        let resp = http().get(server.url(path)).send().await.expect("send");
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
    }
    let panels = http()
        .get(server.url("/dashboard/panels"))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    assert!(
        panels.contains("Buckets under 5 installations are folded"),
        "{panels}"
    );
    let submit = http()
        .post(server.url("/submit"))
        .json(&report(&new_id(), A, B))
        .send()
        .await
        .expect("send");
    assert_eq!(submit.status(), StatusCode::UNAUTHORIZED);
    let del = http()
        .delete(server.url(&format!("/installation/{}", new_id())))
        .send()
        .await
        .expect("send");
    assert_eq!(del.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(server.total().await, 0, "nothing stored without a key");
}

async fn post_report(server: &Server, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = http().post(server.url(path)).header("X-API-Key", "k1");
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The e-mail reports over a real SMTP server (aiosmtpd): what arrives, to whom, k-anonymous,
/// never to an address the request names; and the clear answers when mail cannot go.
async fn email_reports_reach_a_real_smtp_server(kind: Kind) {
    let sink = SmtpSink::start();
    let server = Server::start(kind, |s| {
        s.api_keys = vec!["k1".into()];
        s.k_anonymity = 3u64.try_into().expect("in range");
        s.email.smtp_url = Some(sink.url().as_str().into());
        s.email.from = "Printernizer Stats <stats@example.org>".into();
        s.email.to = vec!["ops@example.org".into(), "lead@example.org".into()];
    })
    .await;
    let mut ids = Vec::new();
    // 5 in Germany, 3 in Austria, 1 in France.
    for i in 0..9 {
        let id = new_id();
        let mut body = report(&id, A, B);
        body["installation"]["country_code"] = json!(match i {
            0..5 => "DE",
            5..8 => "AT",
            _ => "FR",
        });
        let resp = http()
            .post(server.url("/submit"))
            .header("X-API-Key", "k1")
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), StatusCode::OK);
        ids.push(id);
    }
    let status: Value = http()
        .get(server.url("/reports/email-status"))
        .header("X-API-Key", "k1")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(status["configured"], true);
    assert_eq!(status["host"], "127.0.0.1");
    assert_eq!(status["recipients_count"], 2);
    assert_eq!(status["from_email"], "stats@example.org");
    assert_eq!(status["weekly_schedule"]["enabled"], false);

    let (s, v) = post_report(&server, "/reports/test-email", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["recipients"],
        json!(["ops@example.org", "lead@example.org"])
    );
    let (s, v) = post_report(
        &server,
        "/reports/weekly",
        Some(json!({"recipients": null})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["message"], "Weekly report sent successfully");
    let (s, v) = post_report(
        &server,
        "/reports/monthly",
        Some(json!({"recipients": ["lead@example.org"]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["recipients"], json!(["lead@example.org"]));
    // Not a relay: an address that is not configured is refused, nothing is sent.
    let (s, v) = post_report(
        &server,
        "/reports/weekly",
        Some(json!({"recipients": ["someone@elsewhere.example"]})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let no_key = http()
        .post(server.url("/reports/weekly"))
        .send()
        .await
        .expect("send");
    assert_eq!(no_key.status(), StatusCode::UNAUTHORIZED);

    let mails = sink.wait_for(3);
    assert_eq!(mails.len(), 3, "{mails:?}");
    let (test, weekly, monthly) = (&mails[0], &mails[1], &mails[2]);
    assert_eq!(test["subject"], "Printernizer Stats - Test Email");
    assert_eq!(
        weekly["rcpt_tos"],
        json!(["ops@example.org", "lead@example.org"])
    );
    assert_eq!(weekly["mail_from"], "stats@example.org");
    assert_eq!(weekly["content_type"], "multipart/alternative");
    assert!(
        weekly["subject"]
            .as_str()
            .is_some_and(|s| s.starts_with("Printernizer Weekly Stats Summary - Nov 28, 2026")),
        "{weekly}"
    );
    let text = weekly["text"].as_str().expect("a text part");
    let html = weekly["html"].as_str().expect("an HTML part");
    assert!(text.contains("Installations: 9"), "{text}");
    assert!(
        html.contains("Buckets under 3 installations are folded"),
        "{html}"
    );
    // FR (1) is under k: it folds into other, with AT (the smallest) so that other reaches k.
    assert!(
        text.contains("Germany: 5 (") && text.contains("Other: 4 ("),
        "{text}"
    );
    assert!(
        !text.contains("France") && !html.contains("France"),
        "{text}"
    );
    assert_eq!(monthly["rcpt_tos"], json!(["lead@example.org"]));
    assert!(
        monthly["text"]
            .as_str()
            .is_some_and(|t| t.contains("DEPLOYMENT")),
        "{monthly}"
    );
    for m in &mails {
        let all = m.to_string();
        for id in &ids {
            assert!(!all.contains(id.as_str()), "an installation id in a mail");
        }
    }

    // Mail that cannot go: not configured (503), the SMTP server gone (502).
    let plain = Server::start(kind, |_| {}).await;
    let resp = http()
        .post(plain.url("/reports/weekly"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let status: Value = get(&plain, "/reports/email-status").await.1;
    assert_eq!(status["configured"], false);
    let closed = format!("smtp://127.0.0.1:{}", support::free_port());
    let broken = Server::start(kind, |s| {
        s.email.smtp_url = Some(closed.as_str().into());
        s.email.from = "stats@example.org".into();
        s.email.to = vec!["ops@example.org".into()];
    })
    .await;
    let resp = http()
        .post(broken.url("/reports/test-email"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    // Credentials in the URL are never shown.
    let secret = Server::start(kind, |s| {
        s.email.smtp_url = Some("smtps://mailer:s3cret-pw@mail.example.org:465".into());
        s.email.from = "stats@example.org".into();
        s.email.to = vec!["ops@example.org".into()];
    })
    .await;
    let (_, status) = get(&secret, "/reports/email-status").await;
    assert_eq!(status["host"], "mail.example.org");
    assert_eq!(status["use_ssl"], true);
    assert!(!status.to_string().contains("s3cret"), "{status}");
}

async fn hostile_input_gets_4xx_and_stores_nothing(kind: Kind) {
    let server = Server::start(kind, |s| {
        s.rate_limit_per_hour = 1000.try_into().expect("in range")
    })
    .await;
    let id = new_id();
    let good = report(&id, A, B);
    let with = |path: &[&str], v: Value| {
        let mut b = good.clone();
        let mut at = &mut b;
        for p in &path[..path.len() - 1] {
            at = &mut at[*p];
        }
        at[path[path.len() - 1]] = v;
        b
    };
    let sql = "'); DROP TABLE submissions; --";
    let cases: Vec<(&str, Vec<u8>, StatusCode)> = vec![
        (
            "not json",
            b"{\"schema_version\": ".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("empty", Vec::new(), StatusCode::UNPROCESSABLE_ENTITY),
        (
            "array",
            b"[1,2,3]".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "nesting beyond serde's limit",
            format!("{}{}", "[".repeat(5_000), "]".repeat(5_000)).into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "deep nesting over the cap",
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "string count",
            with(&["usage_stats", "job_count"], json!("12"))
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "negative",
            with(&["usage_stats", "file_count"], json!(-5))
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "huge",
            with(&["usage_stats", "job_count"], json!(1e30))
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "u64 max",
            with(&["usage_stats", "upload_count"], json!(u64::MAX))
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "bad uuid",
            with(&["installation", "installation_id"], json!(sql))
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "bad country",
            with(&["installation", "country_code"], json!(sql))
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "unicode country",
            with(&["installation", "country_code"], json!("ÄÖ"))
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "schema",
            with(&["schema_version"], json!("9.9"))
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "period backwards",
            with(&["period", "end"], json!("2026-11-01T00:00:00Z"))
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "1 MiB",
            with(&["installation", "app_version"], json!("x".repeat(1 << 20)))
                .to_string()
                .into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (name, body, want) in cases {
        let resp = http()
            .post(server.url("/submit"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), want, "{name}");
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(!v["detail"].is_null(), "{name}: {v}");
        if want == StatusCode::UNPROCESSABLE_ENTITY {
            let loc = v["detail"][0]["loc"].as_array().expect("field errors");
            assert_eq!(loc[0], "body", "{name}: {v}");
        }
    }
    assert_eq!(server.total().await, 0, "nothing stored");

    // Strings that are not in the vocabulary are accepted but never stored as sent.
    let planted = [
        "/home/alice/benchy.3mf",
        "192.168.1.20",
        "alice@example.com",
        "01S00A123456789",
        "printer-kitchen.local",
        "Grüße 🙂",
    ];
    let mut body = good.clone();
    body["installation"]["app_version"] = json!(planted[1]);
    body["installation"]["python_version"] = json!(planted[3]);
    body["installation"]["platform"] = json!(planted[0]);
    body["installation"]["deployment_mode"] = json!(planted[4]);
    body["printer_fleet"]["printer_types"] = json!([planted[3], "prusa"]);
    body["printer_fleet"]["printer_type_counts"] = json!({planted[3]: 2, "prusa": 1});
    body["usage_stats"]["feature_usage"] = json!({planted[2]: true, "library_enabled": true});
    body["error_summary"] = json!({planted[0]: 1, planted[5]: 2, sql: 3, "disk_full": 4});
    body["unexpected_field"] = json!(planted[2]);
    let (status, v) = post(&server, &body, Some("hostile-1")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let dump = server.db.dump().await;
    for p in planted.iter().chain([&sql]) {
        assert!(!dump.contains(p), "{p} reached the database:\n{dump}");
    }
    assert!(
        dump.contains("\"other\""),
        "unknown words are counted as other:\n{dump}"
    );
    let (_, o) = get(&server, "/stats/overview?weeks=4").await;
    assert_eq!(o["installations"]["total"], 1);
    assert_eq!(
        get(&server, "/health").await.0,
        StatusCode::OK,
        "still serving"
    );
}

async fn delete_installation_removes_everything_of_that_id(kind: Kind) {
    let server = Server::start(kind, |s| {
        s.rate_limit_per_hour = 1.try_into().expect("in range")
    })
    .await;
    let (gone, kept) = (new_id(), new_id());
    assert_eq!(
        post(&server, &report(&gone, A, B), None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        post(&server, &report(&kept, A, B), None).await.0,
        StatusCode::OK
    );
    server.clock.advance(chrono::Duration::hours(2));
    assert_eq!(
        post(&server, &report(&gone, B, "2026-11-28T00:00:00Z"), None)
            .await
            .0,
        StatusCode::OK
    );
    let del = |id: String| {
        http()
            .delete(server.url(&format!("/installation/{id}")))
            .send()
    };
    let resp = del(gone.clone()).await.expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["status"], "success");
    assert_eq!(v["deleted_count"], 2);
    assert!(v["message"].is_string());
    assert_eq!(server.total().await, 1);
    let dump = server.db.dump().await;
    assert!(!dump.contains(&gone), "no row of the deleted id is left");
    assert!(dump.contains(&kept));
    // Deleting again is done already.
    let v: Value = del(gone.clone())
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(v["deleted_count"], 0);
    // The rate-limit row went too: the id may submit again at once.
    assert_eq!(
        post(&server, &report(&gone, A, B), None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        del("not-a-uuid".into()).await.expect("send").status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

async fn overview_folds_small_buckets(kind: Kind) {
    let server = Server::start(kind, |s| s.k_anonymity = 3.try_into().expect("in range")).await;
    // 4 German installations on linux, 1 in France on windows with a klipper printer.
    let mut ids = Vec::new();
    for i in 0..5 {
        let id = new_id();
        let mut body = report(&id, A, B);
        if i == 4 {
            body["installation"]["country_code"] = json!("FR");
            body["installation"]["platform"] = json!("windows");
            body["printer_fleet"]["printer_types"] = json!(["klipper"]);
            body["printer_fleet"]["printer_type_counts"] = json!({"klipper": 1});
            body["printer_fleet"]["printer_count"] = json!(1);
        }
        assert_eq!(post(&server, &body, None).await.0, StatusCode::OK);
        ids.push(id);
    }
    let (status, o) = get(&server, "/stats/overview?weeks=2").await;
    assert_eq!(status, StatusCode::OK, "{o}");
    // Upstream's keys, so its admin page renders ours.
    for key in [
        "installations",
        "deployment_modes",
        "versions",
        "geography",
        "printers",
        "features",
        "anomalies",
        "last_updated",
    ] {
        assert!(o.get(key).is_some(), "{key} missing: {o}");
    }
    assert_eq!(o["installations"]["total"], 5);
    assert_eq!(o["k_anonymity"], 3);
    assert_eq!(
        o["activity"]["weeks"],
        json!([
            {"week_start": "2026-11-16", "active_installations": 0, "submissions": 0,
             "jobs": 0, "jobs_completed": 0, "jobs_failed": 0, "success_rate": null},
            {"week_start": "2026-11-23", "active_installations": 5, "submissions": 5,
             "jobs": 60, "jobs_completed": 50, "jobs_failed": 10, "success_rate": 83.3}
        ])
    );
    // FR (1) alone is below k: it and then the smallest kept bucket (DE, 4) fold into other.
    assert_eq!(
        o["geography"]["countries"],
        json!([{"code": "other", "name": "Other", "count": 5, "percentage": 100.0}])
    );
    assert_eq!(o["versions"]["versions"][0]["version"], "2.7.0");
    // klipper (1) folds; `other` (1) < k takes the smallest kept bucket (bambu_lab, 4 of them
    // with 8 printers) as well.
    assert_eq!(o["printers"]["types"], json!({"prusa": 4, "other": 9}));
    assert_eq!(o["platforms"]["breakdown"], json!({"other": 5}));
    assert_eq!(
        o["features"]["features"],
        json!([
            {"feature": "library_enabled", "enabled": 5, "disabled": 0,
             "enabled_percent": 100.0, "total_reporting": 5},
            {"feature": "timelapse_enabled", "enabled": 0, "disabled": 5,
             "enabled_percent": 0.0, "total_reporting": 5}
        ])
    );
    assert_eq!(o["errors"]["error_types"]["connection_timeout"], 15);
    let text = o.to_string();
    assert!(ids.iter().all(|id| !text.contains(id.as_str())), "{text}");
    for bad in ["0", "105", "abc", "-1"] {
        assert_eq!(
            get(&server, &format!("/stats/overview?weeks={bad}"))
                .await
                .0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
}

/// The per-day routes, errors, anomalies and export over a fleet that changes over three
/// days: each day replays what the installations' latest reports said by then, k-anonymously.
async fn trends_errors_anomalies_and_export(kind: Kind) {
    let server = Server::start(kind, |s| {
        s.k_anonymity = 3u64.try_into().expect("in range");
    })
    .await;
    let ids: Vec<String> = (0..6).map(|_| new_id()).collect();
    for id in &ids {
        let (s, v) = post(&server, &report(id, A, B), None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    // Two days later four of them are on 2.8.0 and a newcomer on 2.9.0 with timelapse on.
    server.clock.advance(chrono::Duration::days(2));
    for id in &ids[..4] {
        let mut body = report(id, B, "2026-11-30T00:00:00Z");
        body["installation"]["app_version"] = json!("2.8.0");
        assert_eq!(post(&server, &body, None).await.0, StatusCode::OK);
    }
    let newcomer = new_id();
    let mut body = report(&newcomer, B, "2026-11-30T00:00:00Z");
    body["installation"]["app_version"] = json!("2.9.0");
    body["usage_stats"]["feature_usage"] =
        json!({"library_enabled": true, "timelapse_enabled": true});
    body["error_summary"] = json!({"disk_full": 2});
    assert_eq!(post(&server, &body, None).await.0, StatusCode::OK);

    let (s, inst) = get(&server, "/stats/installations?days=3").await;
    assert_eq!(s, StatusCode::OK, "{inst}");
    assert_eq!(inst["total"], 7);
    assert_eq!(inst["active_7d"], 7);
    assert_eq!(inst["growth_7d_percent"], 0.0);
    assert_eq!(
        inst["trend"],
        json!([
            {"date": "2026-11-28", "total": 6, "active": 6},
            {"date": "2026-11-29", "total": 6, "active": 0},
            {"date": "2026-11-30", "total": 7, "active": 5}
        ])
    );

    let (s, mig) = get(&server, "/stats/version-migration?days=3").await;
    assert_eq!(s, StatusCode::OK, "{mig}");
    assert_eq!(mig["migration"][0]["versions"], json!({"2.7.0": 6}));
    assert_eq!(mig["migration"][1]["versions"], json!({"2.7.0": 6}));
    // 2.7.0 (2) and 2.9.0 (1) are under k: folded into other (3).
    assert_eq!(
        mig["migration"][2]["versions"],
        json!({"2.8.0": 4, "other": 3})
    );
    assert_eq!(mig["all_versions"], json!(["2.8.0", "2.7.0", "other"]));

    let (s, ft) = get(&server, "/stats/feature-trends?days=3").await;
    assert_eq!(s, StatusCode::OK, "{ft}");
    assert_eq!(
        ft["all_features"],
        json!(["library_enabled", "timelapse_enabled"])
    );
    assert_eq!(
        ft["trends"][0]["features"]["timelapse_enabled"],
        json!({"enabled": 0, "percent": 0.0})
    );
    assert_eq!(ft["trends"][2]["total_installations"], 7);
    assert_eq!(
        ft["trends"][2]["features"]["library_enabled"],
        json!({"enabled": 7, "percent": 100.0})
    );
    assert_eq!(
        ft["trends"][2]["features"]["timelapse_enabled"],
        Value::Null,
        "one installation with timelapse on is under k"
    );

    let (_, features) = get(&server, "/stats/features").await;
    assert_eq!(features["withheld_features"], 1, "{features}");
    assert_eq!(features["total_installations"], 7);

    let (s, errors) = get(&server, "/stats/errors").await;
    assert_eq!(s, StatusCode::OK, "{errors}");
    assert_eq!(
        errors["error_types"],
        json!({"connection_timeout": 18, "disk_full": 8})
    );
    assert_eq!(errors["installations_with_errors"], 7);
    assert_eq!(errors["total_errors"], 26);
    // Every report of the last 7 days: 6×4 + 4×4 + 2.
    assert_eq!(errors["this_week_errors"], 42);
    assert_eq!(errors["last_week_errors"], 0);
    assert_eq!(errors["has_spike"], false);

    // A week later, only the newcomer and two others report, with many more errors.
    server
        .clock
        .advance(chrono::Duration::days(7) + chrono::Duration::hours(1));
    for id in [&ids[0], &ids[1], &newcomer] {
        let mut body = report(id, "2026-12-05T00:00:00Z", "2026-12-06T00:00:00Z");
        body["error_summary"] = json!({"connection_timeout": 40});
        assert_eq!(post(&server, &body, None).await.0, StatusCode::OK);
    }
    let (s, an) = get(&server, "/stats/anomalies").await;
    assert_eq!(s, StatusCode::OK, "{an}");
    assert_eq!(an["checks_performed"].as_array().map(Vec::len), Some(4));
    let types: Vec<&str> = an["anomalies"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|a| a["type"].as_str())
        .collect();
    // 3 active this week against 7 the week before; 3 reports today against 0.5 a day;
    // errors 120 against 42; all 7 have errors in their latest report.
    assert_eq!(
        types,
        [
            "active_users_drop",
            "submission_spike",
            "error_spike",
            "high_error_rate"
        ],
        "{an}"
    );
    assert_eq!(an["anomalies"][0]["severity"], "high");

    let (s, export) = get(&server, "/stats/export").await;
    assert_eq!(s, StatusCode::OK, "{export}");
    for key in [
        "exported_at",
        "installations",
        "deployment_modes",
        "versions",
        "geography",
        "printers",
        "features",
        "anomalies",
        "errors",
    ] {
        assert!(export.get(key).is_some(), "{key} missing");
    }
    let every = [inst, mig, ft, features, errors, an, export].map(|v| v.to_string());
    for text in &every {
        for id in ids.iter().chain([&newcomer]) {
            assert!(!text.contains(id.as_str()), "an installation id in {text}");
        }
    }
    for bad in [
        "/stats/installations?days=0",
        "/stats/version-migration?days=367",
        "/stats/feature-trends?days=x",
    ] {
        assert_eq!(
            get(&server, bad).await.0,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}"
        );
    }
}

async fn retention_deletes_old_submissions(kind: Kind) {
    let server = Server::start(kind, |s| {
        s.retention_days = 730.try_into().expect("in range")
    })
    .await;
    let old = new_id();
    assert_eq!(
        post(&server, &report(&old, A, B), None).await.0,
        StatusCode::OK
    );
    server.clock.advance(chrono::Duration::days(400));
    assert_eq!(
        post(
            &server,
            &report(&new_id(), "2027-12-20T00:00:00Z", "2027-12-27T00:00:00Z"),
            None
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!((server.prune)().await.expect("prune"), 0);
    server.clock.advance(chrono::Duration::days(331));
    assert_eq!((server.prune)().await.expect("prune"), 1);
    assert_eq!(server.total().await, 1);
    assert!(!server.db.dump().await.contains(&old));
}

async fn unknown_routes_and_methods_answer_json(kind: Kind) {
    let server = Server::start(kind, |_| {}).await;
    let (s, v) = get(&server, "/nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["detail"], "Not Found");
    let (s, v) = get(&server, "/submit").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert!(v["detail"].is_string());
}

/// A fresh PostgreSQL database and two server processes on it, started together (limit 2/h).
async fn two_replicas() -> (PgDb, tempfile::TempDir, Process, Process) {
    let pg = PgDb::create().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [("PRINTERNIZER_STATS__AGGREGATOR__RATE_LIMIT_PER_HOUR", "2")];
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Process::spawn(dir.path(), &pg.url, &env));
        let b = s.spawn(|| Process::spawn(dir.path(), &pg.url, &env));
        (a.join().expect("a"), b.join().expect("b"))
    });
    (pg, dir, a, b)
}

/// Two server processes on one PostgreSQL database: migrations race once, and the rate limit
/// holds across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_postgres_rate_limit() {
    let (pg, _dir, mut a, mut b) = two_replicas().await;
    let id = new_id();
    let (ok, limited) = burst(&[a.base.clone(), b.base.clone()], &id, 100).await;
    assert_eq!((ok, limited), (2, 98));
    let rows = pg
        .query_text(&format!(
            "SELECT count(*) FROM submissions WHERE installation_id = '{id}'"
        ))
        .await;
    assert_eq!(rows, ["2"]);
    assert_eq!(
        pg.query_text("SELECT count(*) FROM schema_migrations")
            .await,
        ["2"]
    );
    assert!(a.stop(), "SIGTERM ends the server cleanly");
    assert!(b.stop());
}

/// One report sent 60 times at once, split over two server processes on one PostgreSQL
/// database: one row, every answer names it, and the rate limit is used once — a request that
/// lost the race to its twin on the other replica gives its unit back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_store_a_repeated_report_once() {
    let (pg, _dir, mut a, mut b) = two_replicas().await;
    let id = new_id();
    let body = report(&id, A, B);
    let client = http();
    let mut tasks = Vec::new();
    for i in 0..60 {
        let url = if i % 2 == 0 {
            a.url("/submit")
        } else {
            b.url("/submit")
        };
        let (client, body) = (client.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let resp = client.post(url).json(&body).send().await.expect("send");
            let status = resp.status();
            let v: Value = resp.json().await.expect("json");
            (status, v["submission_id"].as_i64())
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for t in tasks {
        let (status, sid) = t.await.expect("task");
        assert_eq!(status, StatusCode::OK);
        ids.insert(sid.expect("an id"));
    }
    assert_eq!(
        ids.len(),
        1,
        "every answer names the one stored row: {ids:?}"
    );
    let count = |sql: String| {
        let pg = &pg;
        async move { pg.query_text(&sql).await }
    };
    assert_eq!(
        count(format!(
            "SELECT count(*) FROM submissions WHERE installation_id = '{id}'"
        ))
        .await,
        ["1"]
    );
    assert_eq!(
        count(format!(
            "SELECT count FROM rate_limits WHERE installation_id = '{id}'"
        ))
        .await,
        ["1"],
        "duplicates use no rate limit"
    );
    // So exactly one more period fits in this hour.
    let next = |start: &str, end: &str| {
        let body = report(&id, start, end);
        let (client, url) = (client.clone(), b.url("/submit"));
        async move {
            client
                .post(url)
                .json(&body)
                .send()
                .await
                .expect("send")
                .status()
        }
    };
    assert_eq!(next(B, "2026-11-28T00:00:00Z").await, StatusCode::OK);
    assert_eq!(
        next("2026-11-28T00:00:00Z", "2026-11-29T00:00:00Z").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert!(a.stop());
    assert!(b.stop());
}

/// The binary on SQLite: starts, serves, stops on SIGTERM, and a bad database URL is one clear
/// line with exit code 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_sqlite_and_explains_bad_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = Process::spawn(dir.path(), "sqlite://agg/stats.db", &[]);
    let resp = http().get(p.url("/health")).send().await.expect("health");
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["backend"], "sqlite");
    assert!(
        dir.path().join("agg/stats.db").exists(),
        "relative to the working directory"
    );
    assert!(p.stop());

    let out = assert_cmd::Command::cargo_bin("printernizer-stats-aggregator")
        .expect("bin")
        .args(["--database-url", "mysql://x/y"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("aggregator.database_url"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// A database that disappears under a running server: 503 with a JSON detail, no panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_503_not_a_panic() {
    let server = Server::start(Kind::Postgres, |_| {}).await;
    assert_eq!(
        post(&server, &report(&new_id(), A, B), None).await.0,
        StatusCode::OK
    );
    if let Db::Postgres(pg) = &server.db {
        pg.drop_now().await;
    }
    let (s, v) = post(&server, &report(&new_id(), A, B), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v["detail"].is_string());
    let (s, v) = get(&server, "/health").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["database"], "unreachable");
}

/// `/stats/deployment-modes`, `/stats/versions`, `/stats/geography`: each installation counted
/// once, by its latest report; buckets under k folded into `other`; no installation id.
async fn distributions_count_latest_reports_k_anonymously(kind: Kind) {
    let server = Server::start(kind, |s| {
        s.k_anonymity = 3u64.try_into().expect("in range");
        s.rate_limit_per_hour = 10u64.try_into().expect("in range");
    })
    .await;
    let fleet: &[(&str, &str, &str, u32)] = &[
        ("docker", "DE", "2.7.0", 6),
        ("homeassistant", "AT", "2.8.0", 4),
        ("pi", "DE", "2.7.0", 2),
        ("standalone", "CH", "2.6.0", 1),
    ];
    let mut ids = Vec::new();
    for (mode, country, version, n) in fleet {
        for _ in 0..*n {
            let id = new_id();
            let mut body = report(&id, A, B);
            body["installation"]["deployment_mode"] = json!(mode);
            body["installation"]["country_code"] = json!(country);
            body["installation"]["app_version"] = json!(version);
            let (s, v) = post(&server, &body, None).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            ids.push(id);
        }
    }
    // One docker installation moves to Home Assistant: only its latest report counts.
    let mut body = report(&ids[0], B, "2026-11-28T00:00:00Z");
    body["installation"]["deployment_mode"] = json!("homeassistant");
    body["installation"]["country_code"] = json!("AT");
    body["installation"]["app_version"] = json!("2.8.0");
    body["printer_fleet"] = json!({"printer_count": 1, "printer_types": ["klipper"],
                                   "printer_type_counts": {"klipper": 1}});
    assert_eq!(post(&server, &body, None).await.0, StatusCode::OK);

    let (s, modes) = get(&server, "/stats/deployment-modes").await;
    assert_eq!(s, StatusCode::OK, "{modes}");
    assert_eq!(
        modes["breakdown"],
        json!({"docker": 5, "homeassistant": 5, "other": 3}),
        "pi (2) and standalone (1) folded"
    );
    assert_eq!(modes["total"], 13);
    assert_eq!(modes["k_anonymity"], 3);
    let (_, versions) = get(&server, "/stats/versions").await;
    // 2.6.0 (1) alone would be an `other` under k: the smallest kept bucket (2.8.0) joins it.
    assert_eq!(
        versions["versions"],
        json!([
            {"version": "2.7.0", "count": 7, "percentage": 53.8},
            {"version": "other", "count": 6, "percentage": 46.2}
        ])
    );
    assert_eq!(versions["latest_version"], "2.7.0");
    let (_, geo) = get(&server, "/stats/geography?limit=5").await;
    for c in geo["countries"].as_array().expect("countries") {
        assert!(c["count"].as_u64().expect("count") >= 3, "{geo}");
    }
    // Printers: 12 installations report 3 (2 bambu_lab, 1 prusa), the moved one 1 klipper.
    let (s, printers) = get(&server, "/stats/printers").await;
    assert_eq!(s, StatusCode::OK, "{printers}");
    assert_eq!(printers["total_installations"], 13);
    assert_eq!(printers["total_printers"], 37);
    assert_eq!(printers["average_per_installation"], 2.8);
    let types = printers["types"].as_object().expect("types");
    assert!(
        !types.contains_key("klipper"),
        "one installation's type is folded: {printers}"
    );
    assert_eq!(types.values().filter_map(Value::as_u64).sum::<u64>(), 37);
    for n in printers["type_installations"]
        .as_object()
        .expect("obj")
        .values()
    {
        assert!(n.as_u64().expect("count") >= 3, "{printers}");
    }
    for answer in [&modes, &versions, &geo, &printers] {
        let text = answer.to_string();
        assert!(ids.iter().all(|id| !text.contains(id.as_str())), "{text}");
    }
    let (s, v) = get(&server, "/stats/versions?limit=0").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, _) = get(&server, "/stats/geography?days=1").await;
    assert_eq!(s, StatusCode::OK);
}
