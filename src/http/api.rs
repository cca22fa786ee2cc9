//! The REST endpoints under `/api/v1/usage-stats` (the seed's, plus history and health).
//!
//! | route | |
//! |---|---|
//! | `GET /local` | the seed's local summary + weekly per-type counts, next submission, pending report, submission problem |
//! | `GET /preview` | the exact JSON the next submission would send (byte-identical to `printernizer-stats report`) |
//! | `POST /opt-in`, `POST /opt-out` | `{success, installation_id?, message}`; opt-in under `DO_NOT_TRACK` → 409 |
//! | `POST /submit` | "submit now"; within an hour of the last accepted report → 429 with when |
//! | `GET /export` | streamed JSON download, constant memory |
//! | `DELETE /delete-all`, `DELETE /api/v1/usage-stats` | `{success, deleted_events, message}` |
//! | `GET /history?days=30` | events per day per type, and the last 20 delivery attempts |
//! | `GET /health` | `{"status": "ok", …}` |
//!
//! The `POST` and `DELETE` routes take no parameters: no body, or any JSON; anything else is a
//! 400 `{"error": "invalid_body"}` that changes nothing ([`NoParams`]).

use std::io::Write;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;

use super::HttpState;
use crate::Error;
use crate::aggregate::LocalStats;
use crate::history::MAX_DAYS;
use crate::submission::{PendingReport, TickOutcome};

/// Where the API lives.
pub const PREFIX: &str = "/api/v1/usage-stats";

type AppState = State<Arc<HttpState>>;

/// A JSON error: `{"error": code, "detail": detail}`.
pub fn error(status: StatusCode, code: &str, detail: impl Into<serde_json::Value>) -> Response {
    (
        status,
        Json(json!({ "error": code, "detail": detail.into() })),
    )
        .into_response()
}

/// A library error as a response: invalid input 400, policy 409, anything else 500 (logged).
fn failure(what: &str, e: &Error) -> Response {
    match e {
        Error::InvalidInput(_) | Error::Rejected(_) => {
            error(StatusCode::BAD_REQUEST, "invalid_input", e.to_string())
        }
        Error::Policy(_) => error(StatusCode::CONFLICT, "refused", e.to_string()),
        _ => {
            tracing::error!(error = %e, "web API: {what} failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("{what} failed; see the add-on log"),
            )
        }
    }
}

/// The body of a `POST`/`DELETE` that takes no parameters: nothing, or any valid JSON (which is
/// ignored). A body that is not JSON, or that cannot be read to its end (a broken chunked
/// transfer), is a 400 `{"error": "invalid_body"}` and the handler never runs — a request
/// that was cut off must not opt anybody in.
pub struct NoParams;

impl<S: Send + Sync> FromRequest<S> for NoParams {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        let body = Bytes::from_request(req, state).await.map_err(|r| {
            let status = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            error(
                status,
                "invalid_body",
                format!("the request body could not be read: {r}"),
            )
        })?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(NoParams);
        }
        serde_json::from_slice::<serde::de::IgnoredAny>(&body)
            .map(|_| NoParams)
            .map_err(|e| {
                error(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    format!("the request body is not valid JSON: {e}; send no body, or {{}}"),
                )
            })
    }
}

/// The API routes.
pub fn routes() -> Router<Arc<HttpState>> {
    let api = Router::new()
        .route("/local", get(local))
        .route("/preview", get(preview))
        .route("/opt-in", post(opt_in))
        .route("/opt-out", post(opt_out))
        .route("/submit", post(submit))
        .route("/export", get(export))
        .route("/delete-all", delete(delete_all))
        .route("/history", get(history))
        .route("/health", get(health));
    Router::new()
        .nest(PREFIX, api)
        // `DELETE /api/v1/usage-stats` (upstream's spelling, without the slash).
        .route(PREFIX, delete(delete_all))
}

/// `GET /local`.
#[derive(Debug, Serialize)]
pub struct LocalView {
    /// The seed's fields and the weekly figures.
    #[serde(flatten)]
    pub stats: LocalStats,
    /// Whether reports are being sent (opted in to the current schema, no `DO_NOT_TRACK`).
    pub sharing_active: bool,
    /// Why nothing is sent, if so.
    pub reason: Option<String>,
    /// `DO_NOT_TRACK` is set.
    pub do_not_track: bool,
    /// Submission is configured (`submission.endpoint`).
    pub submission_configured: bool,
    /// When the next report is planned.
    pub next_submission: Option<String>,
    /// The report waiting for delivery.
    pub pending_report: Option<PendingReport>,
    /// The server refused a report: fix the configuration.
    pub submission_problem: bool,
    /// Events cannot be stored right now (disk full …); they wait at the MQTT broker.
    pub storage_problem: bool,
    /// Where events come from: `mqtt`, `printernizer api`.
    pub sources: Vec<String>,
    /// When the Printernizer bridge last completed a poll.
    pub bridge_last_success: Option<String>,
    /// Printernizer shares its own statistics (so nothing is submitted from here).
    pub printernizer_sharing: bool,
    /// Printernizer's availability (`null` until MQTT or the bridge said anything).
    pub printernizer_online: Option<bool>,
}

async fn local(State(s): AppState) -> Response {
    let result = async {
        let stats = s.service.local_stats().await?;
        let status = s.service.status().await?;
        let sharing_active = s.service.sharing_active().await?;
        let (next, pending, problem) = match &s.submitter {
            Some(sub) => (
                sub.next_due().await?,
                sub.pending_report().await?,
                sub.has_problem().await?,
            ),
            // Opted in without an aggregation server: nothing can ever be sent.
            None => (None, None, sharing_active),
        };
        Ok::<_, Error>(LocalView {
            stats,
            sharing_active,
            reason: status.reason,
            do_not_track: status.do_not_track,
            submission_configured: s.submitter.is_some(),
            next_submission: next.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            pending_report: pending,
            submission_problem: problem,
            storage_problem: s
                .service
                .metrics()
                .storage_failing
                .load(std::sync::atomic::Ordering::Relaxed),
            sources: status.sources,
            bridge_last_success: status.bridge_last_success,
            printernizer_sharing: status.printernizer_sharing,
            printernizer_online: s.service.printernizer_online(),
        })
    }
    .await;
    match result {
        Ok(view) => Json(view).into_response(),
        Err(e) => failure("reading the local statistics", &e),
    }
}

/// The report as `printernizer-stats report` prints it (pretty JSON and a newline).
pub fn report_text(report: &crate::aggregate::AggregatedStats) -> serde_json::Result<String> {
    Ok(format!("{}\n", serde_json::to_string_pretty(report)?))
}

async fn preview(State(s): AppState) -> Response {
    match s.service.report(None, None).await {
        Ok(report) => match report_text(&report) {
            Ok(text) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
            Err(e) => failure("building the preview", &e.into()),
        },
        Err(e) => failure("building the preview", &e),
    }
}

async fn opt_in(State(s): AppState, _: NoParams) -> Response {
    match s.service.opt_in().await {
        Ok(id) => Json(json!({
            "success": true,
            "installation_id": id,
            "message": "Usage statistics enabled. Thank you! Only the anonymous weekly report shown in the preview is sent.",
        }))
        .into_response(),
        Err(Error::Policy(reason)) => (
            StatusCode::CONFLICT,
            Json(json!({
                "success": false,
                "error": "do_not_track",
                "detail": reason,
                "message": reason,
            })),
        )
            .into_response(),
        Err(e) => failure("opting in", &e),
    }
}

async fn opt_out(State(s): AppState, _: NoParams) -> Response {
    let result = crate::submission::opt_out(&s.service, s.submitter.as_ref()).await;
    match result {
        Ok(()) => Json(json!({
            "success": true,
            "message": "Usage statistics disabled. Local data stays until you delete it.",
        }))
        .into_response(),
        Err(e) => failure("opting out", &e),
    }
}

async fn submit(State(s): AppState, _: NoParams) -> Response {
    let Some(sub) = &s.submitter else {
        return error(
            StatusCode::CONFLICT,
            "not_configured",
            "submission is not configured (set submission.endpoint)",
        );
    };
    let at = |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    match sub.submit_now().await {
        Ok(TickOutcome::Accepted) => Json(json!({
            "success": true, "outcome": "accepted",
            "message": "The report was accepted by the aggregation server.",
        }))
        .into_response(),
        Ok(TickOutcome::NotDue(t)) => {
            let wait = (t - s.service.store().clock().now()).num_seconds().max(1);
            let mut r = (
                StatusCode::TOO_MANY_REQUESTS,
                Json(json!({
                    "error": "too_soon",
                    "detail": format!("at most one report per hour; the next is possible at {}", at(&t)),
                    "next_possible_at": at(&t),
                })),
            )
                .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait as u64));
            r
        }
        Ok(TickOutcome::Disabled(why)) => error(StatusCode::CONFLICT, "disabled", why),
        Ok(TickOutcome::Retry(t, why)) => (
            StatusCode::BAD_GATEWAY,
            Json(json!({"error": "not_delivered", "detail": why, "retry_at": at(&t)})),
        )
            .into_response(),
        Ok(TickOutcome::Blocked(why)) => error(StatusCode::BAD_GATEWAY, "refused_by_server", why),
        Ok(TickOutcome::Waiting(t)) => (
            StatusCode::ACCEPTED,
            Json(json!({"success": true, "outcome": "waiting", "retry_at": at(&t)})),
        )
            .into_response(),
        Err(e) => failure("submitting", &e),
    }
}

/// A `Write` that hands 64 KiB chunks to the response body; blocks (on its blocking thread)
/// while the client is slower than the database, so memory stays constant.
struct ChunkWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 64 * 1024;

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "download cancelled"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

impl Drop for ChunkWriter {
    fn drop(&mut self) {
        let _ = self.send();
    }
}

/// Exports streaming at once; more are answered 503 with `Retry-After` (each holds a read
/// connection and its buffers: 20 parallel 1M-event exports peaked at 97 MiB).
pub const MAX_EXPORTS: usize = 2;
static EXPORTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_EXPORTS);

async fn export(State(s): AppState) -> Response {
    let Ok(permit) = EXPORTS.try_acquire() else {
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("{MAX_EXPORTS} exports are running; try again in a few seconds"),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return r;
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let service = s.service.clone();
    let errors = tx.clone();
    tokio::spawn(async move {
        // Held until the export's last byte is handed over.
        let _permit = permit;
        let writer = ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        if let Err(e) = service.export(writer).await {
            tracing::warn!(error = %e, "export download ended early");
            let _ = errors.send(Err(std::io::Error::other(e.to_string()))).await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=usage-statistics-export.json",
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn delete_all(State(s): AppState, _: NoParams) -> Response {
    match s.service.delete_all().await {
        Ok(n) => Json(json!({
            "success": true,
            "deleted_events": n,
            "message": format!("Deleted {n} events and all local statistics."),
        }))
        .into_response(),
        Err(e) => failure("deleting", &e),
    }
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    days: Option<String>,
}

async fn history(State(s): AppState, Query(q): Query<HistoryQuery>) -> Response {
    let days = match q.days.as_deref().map(str::parse::<u32>) {
        None => 30,
        Some(Ok(d)) if (1..=MAX_DAYS).contains(&d) => d,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_input",
                format!("`days` must be a whole number from 1 to {MAX_DAYS}"),
            );
        }
    };
    match s.service.history(days).await {
        Ok(h) => Json(h).into_response(),
        Err(e) => failure("reading the history", &e),
    }
}

async fn health() -> Response {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")})).into_response()
}
