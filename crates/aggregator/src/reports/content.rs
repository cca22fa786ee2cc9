//! What the e-mail reports say: the dashboard's k-anonymous figures ([`crate::analytics`]) as
//! text and as HTML. Every value is escaped in the HTML (upstream interpolates client strings
//! unescaped) and read from the overview's real keys (upstream's template reads keys the
//! overview does not have, so its cards always show 0).

use std::fmt::Write;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::Value;

use crate::dashboard::esc;

/// One e-mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The subject line.
    pub subject: String,
    /// The plain-text part.
    pub text: String,
    /// The HTML part.
    pub html: String,
}

/// A report's sections: a title and rows of (label, value).
type Sections = Vec<(String, Vec<(String, String)>)>;

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "withheld".into(),
        other => other.to_string(),
    }
}

fn rows_of(
    list: &Value,
    label: &str,
    value: impl Fn(&Value) -> String,
    n: usize,
) -> Vec<(String, String)> {
    list.as_array()
        .into_iter()
        .flatten()
        .take(n)
        .map(|r| (text_of(&r[label]), value(r)))
        .collect()
}

fn map_rows(map: &Value) -> Vec<(String, String)> {
    let mut rows: Vec<(String, u64)> = map
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
        .collect();
    rows.sort_by(|a, b| (a.0 == "other").cmp(&(b.0 == "other")).then(b.1.cmp(&a.1)));
    rows.into_iter().map(|(k, v)| (k, v.to_string())).collect()
}

fn sections(o: &Value, monthly: bool) -> Sections {
    let inst = &o["installations"];
    let jobs = &o["activity"]["jobs"];
    let mut s: Sections = vec![(
        "Key figures".into(),
        vec![
            ("Installations".into(), text_of(&inst["total"])),
            ("Active (7 days)".into(), text_of(&inst["active_7d"])),
            ("Active (30 days)".into(), text_of(&inst["active_30d"])),
            (
                "Growth (7 days)".into(),
                format!(
                    "{:+.1} %",
                    inst["growth_7d_percent"].as_f64().unwrap_or(0.0)
                ),
            ),
            ("Print jobs".into(), text_of(&jobs["total"])),
            (
                "Job success rate".into(),
                jobs["success_rate"]
                    .as_f64()
                    .map_or("–".into(), |r| format!("{r:.1} %")),
            ),
        ],
    )];
    let alerts: Vec<(String, String)> = o["anomalies"]["anomalies"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| (text_of(&a["severity"]), text_of(&a["message"])))
        .collect();
    s.push((
        "Alerts".into(),
        if alerts.is_empty() {
            vec![("ok".into(), "All metrics are within normal ranges".into())]
        } else {
            alerts
        },
    ));
    s.push((
        "Top versions".into(),
        rows_of(
            &o["versions"]["versions"],
            "version",
            |r| format!("{} ({} %)", text_of(&r["count"]), text_of(&r["percentage"])),
            5,
        ),
    ));
    s.push((
        "Countries".into(),
        rows_of(
            &o["geography"]["countries"],
            "name",
            |r| format!("{} ({} %)", text_of(&r["count"]), text_of(&r["percentage"])),
            10,
        ),
    ));
    if monthly {
        s.push((
            "Deployment".into(),
            map_rows(&o["deployment_modes"]["breakdown"]),
        ));
        s.push((
            "Features switched on".into(),
            rows_of(
                &o["features"]["features"],
                "feature",
                |r| format!("{} %", text_of(&r["enabled_percent"])),
                20,
            ),
        ));
        s.push((
            "Printer types (installations)".into(),
            map_rows(&o["printers"]["type_installations"]),
        ));
    }
    s.push(("Error types".into(), map_rows(&o["errors"]["error_types"])));
    s
}

fn render(title: &str, period: &str, s: &Sections, k: u64, now: DateTime<Utc>) -> (String, String) {
    let rule = format!(
        "Buckets under {k} installations are folded into \"other\"; figures from fewer than {k} are withheld."
    );
    let generated = format!(
        "Generated {}",
        now.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    let mut text = format!("{title}\n{period}\n\n");
    let mut html = format!(
        "<!doctype html><html><body style=\"font-family:system-ui,sans-serif;color:#1d1d20\">\
         <h1 style=\"font-size:20px\">{}</h1><p style=\"color:#5f6068\">{}</p>",
        esc(title),
        esc(period)
    );
    for (name, rows) in s {
        let _ = writeln!(text, "{}", name.to_uppercase());
        let _ = write!(
            html,
            "<h2 style=\"font-size:16px;margin-top:20px\">{}</h2><table style=\"border-collapse:collapse\">",
            esc(name)
        );
        if rows.is_empty() {
            text.push_str("  nothing to show\n");
            html.push_str("<tr><td style=\"color:#5f6068\">nothing to show</td></tr>");
        }
        for (label, value) in rows {
            let _ = writeln!(text, "  {label}: {value}");
            let _ = write!(
                html,
                "<tr><td style=\"padding:2px 16px 2px 0\">{}</td><td style=\"padding:2px 0;font-weight:600\">{}</td></tr>",
                esc(label),
                esc(value)
            );
        }
        text.push('\n');
        html.push_str("</table>");
    }
    let _ = write!(text, "{rule}\n{generated}\n");
    let _ = write!(
        html,
        "<p style=\"color:#5f6068;font-size:13px;margin-top:20px\">{}<br>{}</p></body></html>",
        esc(&rule),
        esc(&generated)
    );
    (text, html)
}

/// The weekly summary of an overview.
pub(super) fn weekly(o: &Value, now: DateTime<Utc>) -> Mail {
    let k = o["k_anonymity"].as_u64().unwrap_or(1);
    let period = format!(
        "{} – {} (UTC)",
        (now - Duration::days(7)).format("%b %d, %Y"),
        now.format("%b %d, %Y")
    );
    let (text, html) = render(
        "Printernizer weekly summary",
        &period,
        &sections(o, false),
        k,
        now,
    );
    Mail {
        subject: format!(
            "Printernizer Weekly Stats Summary - {}",
            now.format("%b %d, %Y")
        ),
        text,
        html,
    }
}

/// The monthly report of an overview.
pub(super) fn monthly(o: &Value, now: DateTime<Utc>) -> Mail {
    let k = o["k_anonymity"].as_u64().unwrap_or(1);
    let month = now.format("%B %Y").to_string();
    let (text, html) = render(
        "Printernizer monthly report",
        &month,
        &sections(o, true),
        k,
        now,
    );
    Mail {
        subject: format!("Printernizer Monthly Report - {month}"),
        text,
        html,
    }
}

/// The test e-mail.
pub(super) fn test(now: DateTime<Utc>) -> Mail {
    let line = format!(
        "The aggregation server can send e-mail. {}",
        now.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    Mail {
        subject: "Printernizer Stats - Test Email".into(),
        html: format!(
            "<!doctype html><html><body><p>{}</p></body></html>",
            esc(&line)
        ),
        text: line,
    }
}
