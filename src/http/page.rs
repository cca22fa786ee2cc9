//! The web page: one HTML document, a stylesheet, a script and a server-rendered SVG chart,
//! all compiled into the binary (the add-on may be offline; nothing is fetched from elsewhere).
//! Every URL is relative, so the page works under Home Assistant's ingress prefix.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::HttpState;
use super::api::error;
use crate::config::Language;
use crate::event::EventType;
use crate::history::History;
use crate::i18n::Catalog;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// Chart colours per event type (readable on white and in dark mode).
const COLOURS: [&str; 12] = [
    "#1b6ac9", "#2e9e44", "#d1495b", "#edae49", "#66a182", "#8d6cab", "#00798c", "#b5651d",
    "#6c757d", "#e07a5f", "#3d405b", "#81b29a",
];

/// The page routes.
pub fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route(
            "/app.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    SCRIPT,
                )
            }),
        )
        .route(
            "/style.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE) }),
        )
        .route("/chart.svg", get(chart))
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Fills `{{key}}` with the catalog's `web.key` (escaped), `{{lang}}` and `{{strings}}` (all
/// `web.*` strings as JSON for the script).
pub fn render(language: Language) -> String {
    let catalog = Catalog::new(language);
    let strings = catalog.with_prefix("web.");
    let mut html = INDEX.replace(
        "{{lang}}",
        match language {
            Language::En => "en",
            Language::De => "de",
        },
    );
    // `</` cannot occur in the JSON of our own strings, but never allow it to end the script.
    let json = serde_json::to_string(&strings)
        .unwrap_or_else(|_| "{}".into())
        .replace("</", "<\\/");
    html = html.replace("{{strings}}", &json);
    for (key, value) in &strings {
        html = html.replace(&format!("{{{{{key}}}}}"), &escape(value));
    }
    html
}

async fn index(State(s): State<Arc<HttpState>>) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Html(render(s.service.settings().language)),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct ChartQuery {
    days: Option<u32>,
}

async fn chart(State(s): State<Arc<HttpState>>, Query(q): Query<ChartQuery>) -> Response {
    let days = q.days.unwrap_or(30).clamp(1, crate::history::MAX_DAYS);
    match s.service.history(days).await {
        Ok(h) => (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            svg(&h),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "web page: chart failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "chart failed",
            )
        }
    }
}

/// A stacked bar chart of events per day and type, with a legend.
pub fn svg(history: &History) -> String {
    let (w, h, left, top, bottom) = (720.0_f64, 260.0_f64, 40.0_f64, 10.0_f64, 70.0_f64);
    let plot_h = h - top - bottom;
    let max = history
        .days
        .iter()
        .map(|d| d.counts.values().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let n = history.days.len().max(1) as f64;
    let slot = (w - left - 10.0) / n;
    let bar = (slot * 0.8).max(1.0);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" role="img" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        out,
        r##"<line x1="{left}" y1="{y}" x2="{x2}" y2="{y}" stroke="#888"/><text x="{tx}" y="{ty}" text-anchor="end" fill="#555">{max}</text><text x="{tx}" y="{y}" text-anchor="end" fill="#555">0</text>"##,
        y = top + plot_h,
        x2 = w - 10.0,
        tx = left - 4.0,
        ty = top + 10.0,
        max = max as u64,
    );
    let colour: BTreeMap<&str, &str> = EventType::ALL
        .iter()
        .zip(COLOURS)
        .map(|(t, c)| (t.as_str(), c))
        .collect();
    for (i, day) in history.days.iter().enumerate() {
        let x = left + slot * i as f64 + (slot - bar) / 2.0;
        let mut y = top + plot_h;
        for t in EventType::ALL {
            let v = day.counts.get(t.as_str()).copied().unwrap_or(0);
            if v == 0 {
                continue;
            }
            let bh = plot_h * v as f64 / max;
            y -= bh;
            let _ = write!(
                out,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{bh:.1}" fill="{c}"><title>{d} {t}: {v}</title></rect>"#,
                c = colour.get(t.as_str()).copied().unwrap_or("#999"),
                d = day.date,
                t = t.as_str(),
            );
        }
    }
    if let (Some(first), Some(last)) = (history.days.first(), history.days.last()) {
        let _ = write!(
            out,
            r##"<text x="{left}" y="{y}" fill="#555">{first}</text><text x="{x}" y="{y}" text-anchor="end" fill="#555">{last}</text>"##,
            y = top + plot_h + 14.0,
            x = w - 10.0,
            first = first.date,
            last = last.date,
        );
    }
    for (i, t) in EventType::ALL.iter().enumerate() {
        let (col, row) = (i % 4, i / 4);
        let x = left + col as f64 * 170.0;
        let y = top + plot_h + 30.0 + row as f64 * 14.0;
        let _ = write!(
            out,
            r##"<rect x="{x}" y="{ry}" width="10" height="10" fill="{c}"/><text x="{tx}" y="{y}" fill="#333">{name}</text>"##,
            ry = y - 9.0,
            tx = x + 14.0,
            c = colour.get(t.as_str()).copied().unwrap_or("#999"),
            name = t.as_str(),
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_filled_in_both_languages() {
        for lang in [Language::En, Language::De] {
            let html = render(lang);
            assert!(!html.contains("{{"), "unfilled placeholder in {lang:?}");
            assert!(
                !html.contains("http://") && !html.contains("https://"),
                "no absolute URLs"
            );
            assert!(
                !html.contains("src=\"/") && !html.contains("href=\"/"),
                "relative URLs only"
            );
        }
        assert!(render(Language::De).contains("Anonyme Nutzungsstatistik teilen"));
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
