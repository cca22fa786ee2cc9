//! E-mail reports: the weekly summary and the monthly report of the k-anonymous figures the
//! dashboard shows ([`content`]), sent with lettre over SMTP — on request (`POST /reports/…`)
//! and, when `aggregator.email.weekly` is on, every week by itself ([`schedule`]).
//!
//! | route | |
//! |---|---|
//! | `GET /reports/email-status` | upstream's `{enabled, configured, host, from_email, recipients_count, use_tls, use_ssl}` plus the schedule |
//! | `POST /reports/test-email`, `/reports/weekly`, `/reports/monthly` | 200 `{"status":"success","message","recipients"}`; 503 not configured; 502 the SMTP server refused or did not answer; 422 a `recipients` list with an address that is not in `aggregator.email.to` |
//!
//! Unlike upstream, a request cannot name new recipients: the routes would otherwise relay
//! mail for anyone with a client's key. The SMTP URL's credentials are never logged or shown
//! (the status names the host only). Sending has a 30-second timeout and never blocks the
//! runtime (lettre's async transport).

mod content;
pub mod schedule;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Weekday;
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;
use serde_json::json;

pub use content::Mail;

use crate::analytics::Ask;
use crate::config::EmailSettings;
use crate::problem::detail;
use crate::store::SubmissionStore;
use crate::{App, Error, Result};

/// How long one SMTP conversation may take.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Which report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The weekly summary (one week of activity).
    Weekly,
    /// The monthly report (five weeks of activity, more distributions).
    Monthly,
}

/// The configured SMTP transport, sender and recipients.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    host: String,
    use_ssl: bool,
    use_tls: bool,
    /// The schedule, when `weekly` is on.
    pub(crate) weekly: Option<(Weekday, u32)>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("host", &self.host)
            .field("recipients", &self.to.len())
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// The mailer of `e`; `None` when e-mail is not configured at all. A partial or invalid
    /// configuration is an error naming the key (credentials are never part of it).
    pub fn from_settings(e: &EmailSettings) -> Result<Option<Self>> {
        let Some(t) = e.target()? else {
            return Ok(None);
        };
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(t.smtp_url.expose())
            .map_err(|e| Error::Config(format!("`aggregator.email.smtp_url`: {e}")))?
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        Ok(Some(Self {
            transport,
            from: t.from,
            to: t.to,
            host: t.host,
            use_ssl: t.use_ssl,
            use_tls: t.use_tls,
            weekly: t.weekly,
        }))
    }

    /// Sends `mail` to `to` (text and HTML alternatives).
    pub async fn send(&self, mail: &Mail, to: &[Mailbox]) -> std::result::Result<(), String> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(mail.subject.clone());
        for t in to {
            builder = builder.to(t.clone());
        }
        let message = builder
            .multipart(MultiPart::alternative_plain_html(
                mail.text.clone(),
                mail.html.clone(),
            ))
            .map_err(|e| format!("could not build the message: {e}"))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| format!("SMTP error: {e}"))
    }

    /// The configured recipients.
    pub fn recipients(&self) -> &[Mailbox] {
        &self.to
    }
}

/// Composes `kind` from the current figures.
pub async fn compose<S: SubmissionStore>(app: &App<S>, kind: Kind) -> Result<Mail> {
    let now = app.clock.now();
    let ask = Ask::new(&app.store, now, app.k_anonymity);
    Ok(match kind {
        Kind::Weekly => content::weekly(&ask.overview(1).await?, now),
        Kind::Monthly => content::monthly(&ask.overview(5).await?, now),
    })
}

/// The optional body of the `POST /reports/*` routes (upstream's `EmailRequest`).
#[derive(Debug, Default, Deserialize)]
struct EmailRequest {
    recipients: Option<Vec<String>>,
}

/// A `recipients` the server will not send to: answered 422.
fn unprocessable(msg: &str) -> Response {
    let detail = json!([{"loc": ["body", "recipients"], "msg": msg, "type": "value_error"}]);
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({ "detail": detail })),
    )
        .into_response()
}

/// The recipients of a request: the configured ones, or a subset of them; `Err` says why not.
fn recipients(mailer: &Mailer, body: &Bytes) -> std::result::Result<Vec<Mailbox>, &'static str> {
    let request: EmailRequest = if body.iter().all(u8::is_ascii_whitespace) {
        EmailRequest::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|_| "the body must be {\"recipients\": [...] | null}")?
    };
    let Some(asked) = request.recipients else {
        return Ok(mailer.to.clone());
    };
    let mut out = Vec::new();
    for a in asked {
        match mailer
            .to
            .iter()
            .find(|m| m.email.to_string().eq_ignore_ascii_case(a.trim()))
        {
            Some(m) => out.push(m.clone()),
            None => {
                return Err(
                    "every recipient must be one of aggregator.email.to (this server relays no mail)",
                );
            }
        }
    }
    if out.is_empty() {
        return Err("at least one recipient");
    }
    Ok(out)
}

async fn send_route<S: SubmissionStore>(
    app: Arc<App<S>>,
    body: Bytes,
    kind: Option<Kind>,
) -> Response {
    let Some(mailer) = app.mailer.as_ref() else {
        return detail(
            StatusCode::SERVICE_UNAVAILABLE,
            "E-mail is not configured: set aggregator.email.smtp_url, from and to",
        );
    };
    let to = match recipients(mailer, &body) {
        Ok(to) => to,
        Err(why) => return unprocessable(why),
    };
    let (mail, what) = match kind {
        None => (content::test(app.clock.now()), "Test email"),
        Some(kind) => match compose(&app, kind).await {
            Ok(m) => (
                m,
                if kind == Kind::Weekly {
                    "Weekly report"
                } else {
                    "Monthly report"
                },
            ),
            Err(e) => return crate::problem::unavailable(&app.outage, "composing a report", &e),
        },
    };
    match mailer.send(&mail, &to).await {
        Ok(()) => {
            tracing::info!("aggregator: {what} mailed to {} recipient(s)", to.len());
            Json(json!({
                "status": "success",
                "message": format!("{what} sent successfully"),
                "recipients": to.iter().map(|m| m.email.to_string()).collect::<Vec<_>>(),
            }))
            .into_response()
        }
        Err(e) => {
            tracing::warn!("aggregator: {what} not sent: {e}");
            detail(StatusCode::BAD_GATEWAY, e)
        }
    }
}

/// `POST /reports/weekly`.
pub(crate) async fn weekly<S: SubmissionStore>(
    State(app): State<Arc<App<S>>>,
    body: Bytes,
) -> Response {
    send_route(app, body, Some(Kind::Weekly)).await
}

/// `POST /reports/monthly`.
pub(crate) async fn monthly<S: SubmissionStore>(
    State(app): State<Arc<App<S>>>,
    body: Bytes,
) -> Response {
    send_route(app, body, Some(Kind::Monthly)).await
}

/// `POST /reports/test-email`.
pub(crate) async fn test_email<S: SubmissionStore>(
    State(app): State<Arc<App<S>>>,
    body: Bytes,
) -> Response {
    send_route(app, body, None).await
}

/// `GET /reports/email-status`.
pub(crate) async fn status<S: SubmissionStore>(State(app): State<Arc<App<S>>>) -> Response {
    let m = app.mailer.as_deref();
    let next = m
        .and_then(|m| m.weekly)
        .map(|(day, hour)| schedule::next_run(app.clock.now(), day, hour));
    Json(json!({
        "enabled": m.is_some(),
        "configured": m.is_some(),
        "host": m.map(|m| m.host.clone()),
        "from_email": m.map(|m| m.from.email.to_string()),
        "recipients_count": m.map_or(0, |m| m.to.len()),
        "use_tls": m.is_some_and(|m| m.use_tls),
        "use_ssl": m.is_some_and(|m| m.use_ssl),
        "weekly_schedule": {
            "enabled": next.is_some(),
            "next_at": next.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        },
    }))
    .into_response()
}
