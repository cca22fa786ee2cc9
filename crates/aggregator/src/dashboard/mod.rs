//! `GET /dashboard`: one page for the maintainers — installations over time, versions,
//! countries, printer types, features, jobs and success rate per week, error types — as SVG
//! charts rendered here from the k-anonymous overview ([`crate::analytics`]), light and dark.
//!
//! * `/dashboard`, `/dashboard/app.js`, `/dashboard/app.css` — the shell, embedded in the
//!   binary; it holds no data, so it never needs a key. A strict Content-Security-Policy allows
//!   nothing but this server (no inline script, no external resource).
//! * `/dashboard/panels` — the charts as an HTML fragment, guarded like `/stats/*`: the page
//!   asks for a key in a form, keeps it in `sessionStorage` (this tab only, never in a URL or
//!   a cookie) and sends it as `X-API-Key`. With `aggregator.public_dashboard = true` it
//!   answers without a key.
//!
//! Every string in the fragment is escaped ([`svg::esc`]), although all of them come from the
//! vocabulary or are numbers.

mod svg;

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::App;
use crate::analytics::Ask;
use crate::store::SubmissionStore;
pub(crate) use svg::esc;
use svg::{Bar, columns, hbars};

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// Weeks of activity the dashboard shows.
pub const WEEKS: u32 = 12;

/// Nothing but this server: no inline script or style, no external resource, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// `GET /dashboard`.
pub(crate) async fn page() -> Response {
    asset(PAGE, "text/html; charset=utf-8")
}

/// `GET /dashboard/app.js`.
pub(crate) async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /dashboard/app.css`.
pub(crate) async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

/// `GET /dashboard/panels`.
pub(crate) async fn panels<S: SubmissionStore>(State(app): State<Arc<App<S>>>) -> Response {
    let ask = Ask::new(&app.store, app.clock.now(), app.k_anonymity);
    match ask.overview(WEEKS).await {
        Ok(o) => {
            let mut r = asset_owned(render(&o), "text/html; charset=utf-8");
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => crate::problem::unavailable(&app.outage, "rendering the dashboard", &e),
    }
}

fn asset_owned(body: String, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "–".into(),
        other => other.to_string(),
    }
}

/// Bars from an object `{name: count}`, largest first, `other` last.
fn bars_of(map: &Value, suffix: &str) -> Vec<Bar> {
    let mut bars: Vec<Bar> = map
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| Bar {
            label: k.clone(),
            value: num(v),
            text: format!("{}{suffix}", text(v)),
        })
        .collect();
    bars.sort_by(|a, b| {
        (a.label == "other")
            .cmp(&(b.label == "other"))
            .then(b.value.total_cmp(&a.value))
            .then(a.label.cmp(&b.label))
    });
    bars
}

fn panel(out: &mut String, id: &str, title: &str, chart: Option<String>, note: &str) {
    let _ = write!(
        out,
        r#"<section class="panel" id="{id}"><h2>{}</h2>{}"#,
        esc(title),
        chart.unwrap_or_else(|| r#"<p class="empty">Nothing to show yet.</p>"#.into())
    );
    if !note.is_empty() {
        let _ = write!(out, r#"<p class="note">{}</p>"#, esc(note));
    }
    out.push_str("</section>");
}

/// The charts of an overview ([`Ask::overview`]) as an HTML fragment.
pub fn render(o: &Value) -> String {
    let k = o["k_anonymity"].as_u64().unwrap_or(1);
    let inst = &o["installations"];
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<p class="rule" id="k-rule">Buckets under {k} installations are folded into “other”; what stays under {k} is withheld.</p><div class="cards">"#
    );
    for (id, label, value) in [
        ("total", "Installations", text(&inst["total"])),
        ("active-7d", "Active (7 days)", text(&inst["active_7d"])),
        ("active-30d", "Active (30 days)", text(&inst["active_30d"])),
        (
            "growth",
            "Growth (7 days)",
            format!("{:+.1} %", num(&inst["growth_7d_percent"])),
        ),
    ] {
        let _ = write!(
            out,
            r#"<div class="card" id="card-{id}"><span class="big">{}</span><span>{}</span></div>"#,
            esc(&value),
            esc(label)
        );
    }
    out.push_str("</div>");

    let anomalies = o["anomalies"]["anomalies"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    out.push_str(r#"<section class="panel wide" id="anomalies"><h2>Alerts</h2>"#);
    if anomalies.is_empty() {
        out.push_str(r#"<p class="empty">All metrics are within normal ranges.</p>"#);
    } else {
        out.push_str("<ul>");
        for a in &anomalies {
            let _ = write!(
                out,
                r#"<li class="sev-{}">{}</li>"#,
                esc(&text(&a["severity"])),
                esc(&text(&a["message"]))
            );
        }
        out.push_str("</ul>");
    }
    out.push_str("</section>");

    let weeks = o["activity"]["weeks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let week_label = |w: &Value| text(&w["week_start"]).get(5..).unwrap_or("").to_owned();
    let active: Vec<Bar> = weeks
        .iter()
        .map(|w| Bar {
            label: week_label(w),
            value: num(&w["active_installations"]),
            text: text(&w["active_installations"]),
        })
        .collect();
    panel(
        &mut out,
        "installations",
        "Active installations per week",
        columns("Active installations per week", &active, &[]),
        "",
    );
    let jobs: Vec<Bar> = weeks
        .iter()
        .map(|w| Bar {
            label: week_label(w),
            value: num(&w["jobs"]),
            text: text(&w["jobs"]),
        })
        .collect();
    let rate: Vec<Option<f64>> = weeks.iter().map(|w| w["success_rate"].as_f64()).collect();
    let j = &o["activity"]["jobs"];
    panel(
        &mut out,
        "jobs",
        "Print jobs and success rate per week",
        columns("Print jobs per week", &jobs, &rate),
        &format!(
            "{} jobs in {WEEKS} weeks, {} % successful (the line). A week with fewer than {k} reporting installations is withheld.",
            text(&j["total"]),
            text(&j["success_rate"])
        ),
    );
    let versions: Vec<Bar> = o["versions"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| Bar {
            label: text(&v["version"]),
            value: num(&v["count"]),
            text: format!("{} ({} %)", text(&v["count"]), text(&v["percentage"])),
        })
        .collect();
    panel(
        &mut out,
        "versions",
        "Printernizer versions",
        hbars("Printernizer versions", &versions),
        "",
    );
    let countries: Vec<Bar> = o["geography"]["countries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| Bar {
            label: text(&c["name"]),
            value: num(&c["count"]),
            text: format!("{} ({} %)", text(&c["count"]), text(&c["percentage"])),
        })
        .collect();
    panel(
        &mut out,
        "countries",
        "Countries",
        hbars("Countries", &countries),
        "",
    );
    panel(
        &mut out,
        "printers",
        "Printer types (installations)",
        hbars(
            "Printer types",
            &bars_of(&o["printers"]["type_installations"], ""),
        ),
        &format!("{} printers in all", text(&o["printers"]["total_printers"])),
    );
    let features: Vec<Bar> = o["features"]["features"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| Bar {
            label: text(&f["feature"]).trim_end_matches("_enabled").to_owned(),
            value: num(&f["enabled_percent"]),
            text: format!("{} %", text(&f["enabled_percent"])),
        })
        .collect();
    panel(
        &mut out,
        "features",
        "Features switched on",
        hbars("Features switched on", &features),
        "",
    );
    panel(
        &mut out,
        "errors",
        "Error types",
        hbars("Error types", &bars_of(&o["errors"]["error_types"], "")),
        "Errors in each installation's latest report.",
    );
    let _ = write!(
        out,
        r#"<p class="updated">Updated {}</p>"#,
        esc(&text(&o["last_updated"]))
    );
    out
}
