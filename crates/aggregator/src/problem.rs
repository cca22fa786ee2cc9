//! The JSON error answers every route shares: FastAPI's `{"detail": …}` shape; and the
//! [`Outage`] that turns a database outage into two log lines instead of one per request.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// `status` with `{"detail": detail}`.
pub(crate) fn detail(status: StatusCode, detail: impl Into<serde_json::Value>) -> Response {
    (status, Json(json!({ "detail": detail.into() }))).into_response()
}

/// A store failure: counted in `outage` (one log line when the outage starts), answered with
/// 503 (clients retry later).
pub(crate) fn unavailable(outage: &Outage, what: &str, e: &crate::Error) -> Response {
    outage.failed(what, e);
    detail(
        StatusCode::SERVICE_UNAVAILABLE,
        "The statistics database is unavailable; try again later",
    )
}

/// The database's condition as the requests saw it. During an outage every request fails
/// (measured before: one `ERROR … connection closed` line per request, thousands a minute);
/// now the first failure logs one line, the others only count, and the recovery — found by
/// [`Outage::watch`] asking the database every few seconds — logs one line with the count.
#[derive(Debug, Default)]
pub(crate) struct Outage {
    state: std::sync::Mutex<Option<Down>>,
}

#[derive(Debug)]
struct Down {
    since: std::time::Instant,
    failed: u64,
}

/// How often the database is asked whether it is back.
pub(crate) const RECOVERY_PROBE: std::time::Duration = std::time::Duration::from_secs(2);

impl Outage {
    /// A request failed on the database.
    pub(crate) fn failed(&self, what: &str, e: &crate::Error) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.as_mut() {
            Some(down) => {
                down.failed += 1;
                tracing::debug!("aggregator: {what} failed: {e}");
            }
            None => {
                tracing::error!(
                    "aggregator: the database is unavailable ({what} failed: {e}); answering 503 \
                     until it is back"
                );
                *state = Some(Down {
                    since: std::time::Instant::now(),
                    failed: 1,
                });
            }
        }
    }

    /// Whether an outage is going on.
    pub(crate) fn is_down(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// The database answered again.
    pub(crate) fn recovered(&self) {
        let down = self.state.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(down) = down {
            tracing::info!(
                "aggregator: the database is available again after {:.0} s; {} request(s) \
                 failed meanwhile",
                down.since.elapsed().as_secs_f64(),
                down.failed
            );
        }
    }

    /// While an outage goes on, asks the store every [`RECOVERY_PROBE`] whether it answers.
    pub(crate) async fn watch<S: crate::store::SubmissionStore>(
        app: std::sync::Arc<crate::App<S>>,
    ) {
        let mut every = tokio::time::interval(RECOVERY_PROBE);
        loop {
            every.tick().await;
            if app.outage.is_down() && app.store.health().await.is_ok() {
                app.outage.recovered();
            }
        }
    }
}
