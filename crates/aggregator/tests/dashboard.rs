//! `/dashboard` in a real headless Chromium: the key form, the key kept in the tab's session
//! (never in a URL), the server-rendered charts with the k-anonymity rule visible, and nothing
//! loaded from anywhere but the server. A screenshot is saved as
//! `target/browser/aggregator-dashboard.png`.

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use printernizer_stats_test_support::aggregator::{Kind, Server, new_id, report};
use printernizer_stats_test_support::browser::Browser;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn wait_text(c: &Client, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
            && ok(&t)
        {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "{css} never showed what was expected; page: {}",
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.expect("script")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_asks_for_a_key_and_draws_k_anonymous_charts() {
    let server = Server::start(Kind::Sqlite, |s| {
        s.api_keys = vec!["dashboard-key".into()];
        s.k_anonymity = 3u64.try_into().expect("in range");
    })
    .await;
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    // 6 in Germany on 2.7.0, 3 in Austria on 2.8.0, 1 in France on 2.9.0.
    for i in 0..10 {
        let id = new_id();
        let mut body = report(&id, "2026-11-20T00:00:00Z", "2026-11-27T00:00:00Z");
        let (country, version) = match i {
            0..6 => ("DE", "2.7.0"),
            6..9 => ("AT", "2.8.0"),
            _ => ("FR", "2.9.0"),
        };
        body["installation"]["country_code"] = json!(country);
        body["installation"]["app_version"] = json!(version);
        let r = http
            .post(server.url("/submit"))
            .header("X-API-Key", "dashboard-key")
            .json(&body)
            .send()
            .await
            .expect("submit");
        assert_eq!(r.status(), StatusCode::OK);
        ids.push(id);
    }

    let downloads = tempfile::tempdir().expect("tempdir");
    let browser = Browser::start(downloads.path(), 1200, 1800).await;
    let c = browser.client.clone();
    let page = server.url("/dashboard");
    c.goto(&page).await.expect("open");

    // No key yet: the form.
    wait_text(&c, "#key-form", |t| t.contains("API key")).await;
    let form = c.find(Locator::Css("#key")).await.expect("input");
    form.send_keys("wrong-key").await.expect("type");
    c.find(Locator::Css("#key-form button"))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
    wait_text(&c, "#key-error", |t| t.contains("not accepted")).await;

    let form = c.find(Locator::Css("#key")).await.expect("input");
    form.send_keys("dashboard-key").await.expect("type");
    c.find(Locator::Css("#key-form button"))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
    let rule = wait_text(&c, "#k-rule", |t| !t.is_empty()).await;
    assert!(
        rule.contains("Buckets under 3 installations are folded"),
        "{rule}"
    );
    assert_eq!(
        wait_text(&c, "#card-total .big", |t| !t.is_empty()).await,
        "10"
    );
    // One installation on 2.9.0 in France: folded (with the next smallest bucket, so that
    // `other` reaches k), never a bucket of its own.
    let versions = wait_text(&c, "#versions", |t| t.contains("2.7.0")).await;
    assert!(
        versions.contains("other") && !versions.contains("2.9.0"),
        "{versions}"
    );
    let countries = wait_text(&c, "#countries", |t| t.contains("Germany")).await;
    assert!(
        countries.contains("Other") && !countries.contains("France"),
        "{countries}"
    );
    for id in ["installations", "jobs", "printers", "features", "errors"] {
        let svg = js(
            &c,
            &format!("return document.querySelectorAll('#{id} svg').length"),
        )
        .await;
        assert_eq!(svg, json!(1), "#{id} has a chart");
    }

    // The key: in this tab's session storage, never in the address, never in a cookie.
    assert_eq!(
        js(
            &c,
            "return sessionStorage.getItem('printernizer-stats-key')"
        )
        .await,
        json!("dashboard-key")
    );
    let url = c.current_url().await.expect("url").to_string();
    assert!(!url.contains("dashboard-key"), "{url}");
    assert_eq!(js(&c, "return document.cookie").await, json!(""));
    // Everything came from this server.
    let origin = server.url("");
    let resources = js(
        &c,
        "return performance.getEntriesByType('resource').map(e => e.name)",
    )
    .await;
    for r in resources.as_array().expect("list") {
        let r = r.as_str().unwrap_or_default();
        assert!(r.starts_with(&origin), "{r} is not from the server");
    }
    // A reload keeps the session: the charts come back without the form.
    c.refresh().await.expect("reload");
    wait_text(&c, "#card-total .big", |t| t == "10").await;
    assert_eq!(
        js(&c, "return document.getElementById('key-form').hidden").await,
        json!(true)
    );
    let html = c.source().await.expect("source");
    for id in &ids {
        assert!(
            !html.contains(id.as_str()),
            "an installation id on the page"
        );
    }
    browser
        .screenshot(env!("CARGO_TARGET_TMPDIR"), "aggregator-dashboard")
        .await;
    c.close().await.expect("close");
}
