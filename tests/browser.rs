//! The ingress page in a real headless Chromium (Debian's `chromium` + `chromium-driver`,
//! installed by `.ci/run`), driven over WebDriver with fantoccini.
//!
//! The page is served in add-on mode behind a small stand-in for Home Assistant's ingress
//! proxy: it answers under `/api/hassio_ingress/<token>/`, strips that prefix, sets
//! `X-Ingress-Path` and forwards to the service from 127.0.0.1 — so every URL the page uses
//! must be relative. A screenshot is saved as `target/browser/ingress-page.png`.

mod common;

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use common::{open_with, record_at};
use fantoccini::{Client, Locator};
use printernizer_stats::http::{self, HttpState, access::Policy};
use printernizer_stats::service::Environment;
use printernizer_stats_test_support::browser::Browser;
use serde_json::{Value, json};

const INGRESS: &str = "/api/hassio_ingress/Xq3vYk2Tz";

/// Home Assistant's ingress, reduced to what the page relies on.
async fn ingress(State(upstream): State<String>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().strip_prefix(INGRESS).unwrap_or("/");
    let path = if path.is_empty() { "/" } else { path };
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let mut req = reqwest::Client::new()
        .request(parts.method.clone(), format!("{upstream}{path}{query}"))
        .header("X-Ingress-Path", INGRESS)
        .body(body);
    for name in ["content-type", "origin", "sec-fetch-site", "accept"] {
        if let Some(v) = parts.headers.get(name) {
            req = req.header(name, v);
        }
    }
    let Ok(resp) = req.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = resp.status();
    let mut headers = HeaderMap::new();
    for (k, v) in resp.headers() {
        if k != "content-length" && k != "transfer-encoding" {
            headers.insert(k.clone(), v.clone());
        }
    }
    let bytes: Bytes = resp.bytes().await.unwrap_or_default();
    (status, headers, bytes).into_response()
}

async fn text_of(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn wait_text(c: &Client, css: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let t = text_of(c, css).await;
        if pred(&t) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "{css} never matched; last text: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingress_page_works_in_chromium() {
    // The service, in add-on mode, with a few events.
    let ts = open_with("2026-11-20T12:00:00Z", Environment::default(), |_| {});
    for (kind, at, meta) in [
        (
            "job_completed",
            "09:00",
            json!({"printer_id": "X1C-1", "printer_type": "bambu_lab"}),
        ),
        ("job_completed", "09:30", json!({"printer_id": "X1C-1"})),
        ("job_failed", "10:00", json!({"printer_id": "X1C-1"})),
        (
            "error_occurred",
            "11:00",
            json!({"error_type": "connection_timeout"}),
        ),
    ] {
        record_at(&ts, kind, &format!("2026-11-20T{at}:00Z"), meta).await;
    }
    let state = HttpState {
        service: ts.service.clone(),
        submitter: None,
        access: Policy::new(true, None),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        http::serve(state, listener, std::future::pending())
            .await
            .expect("serve");
    });
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let proxy_addr = proxy.local_addr().expect("addr");
    let app = axum::Router::new()
        .route(&format!("{INGRESS}/"), any(ingress))
        .route(&format!("{INGRESS}/{{*rest}}"), any(ingress))
        .with_state(upstream);
    tokio::spawn(async move { axum::serve(proxy, app).await.expect("proxy") });

    let downloads = tempfile::tempdir().expect("tempdir");
    let browser = Browser::start(downloads.path(), 1000, 2200).await;
    let c = browser.client.clone();

    let page = format!("http://{proxy_addr}{INGRESS}/");
    c.goto(&page).await.expect("open the page");
    wait_text(&c, "#opt-in-state", |t| t.starts_with("Off")).await;
    wait_text(&c, "#week", |t| t.contains("Print jobs") && t.contains('3')).await;

    // The preview, readable and raw.
    let raw = c
        .execute(
            "return document.getElementById('preview-raw').textContent",
            vec![],
        )
        .await
        .expect("script");
    let raw = raw.as_str().expect("text");
    let preview: Value = serde_json::from_str(raw).expect("the raw preview is the JSON report");
    assert_eq!(preview["usage_stats"]["job_count"], 3);
    assert!(!raw.contains("X1C"), "no printer id in the preview");

    // Opt in with the switch.
    c.find(Locator::Css("#opt-in"))
        .await
        .expect("switch")
        .click()
        .await
        .expect("click");
    wait_text(&c, "#opt-in-state", |t| t.starts_with("On")).await;
    assert!(ts.service.sharing_active().await.expect("state"));

    // The chart rendered (an image from our own server, under the prefix). The page reloads it
    // after every change, so wait for the current one.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let loaded = c
            .execute(
                "const i = document.getElementById('chart'); return i.complete && i.naturalWidth > 0",
                vec![],
            )
            .await
            .expect("script");
        if loaded == Value::Bool(true) {
            break;
        }
        assert!(Instant::now() < deadline, "the chart image never loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    browser
        .screenshot(env!("CARGO_TARGET_TMPDIR"), "ingress-page")
        .await;

    // Export downloads the JSON file.
    c.find(Locator::Css("#export"))
        .await
        .expect("link")
        .click()
        .await
        .expect("click");
    let file = downloads.path().join("usage-statistics-export.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !file.exists() {
        assert!(
            Instant::now() < deadline,
            "no download in {}",
            downloads.path().display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let export: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("export is JSON");
    assert_eq!(export["events"].as_array().map(Vec::len), Some(4));

    // Delete, with the confirmation step: cancel first, then confirm.
    c.find(Locator::Css("#delete"))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
    c.find(Locator::Css("#delete-cancel"))
        .await
        .expect("cancel")
        .click()
        .await
        .expect("click");
    assert_eq!(
        ts.service.local_stats().await.expect("stats").total_events,
        4
    );
    c.find(Locator::Css("#delete"))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
    c.find(Locator::Css("#delete-yes"))
        .await
        .expect("yes")
        .click()
        .await
        .expect("click");
    wait_text(&c, "#notice", |t| t.contains("Deleted 4 events")).await;
    assert_eq!(
        ts.service.local_stats().await.expect("stats").total_events,
        0
    );

    c.close().await.expect("close");
}
