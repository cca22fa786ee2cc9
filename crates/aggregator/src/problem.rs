//! The JSON error answers every route shares: FastAPI's `{"detail": …}` shape.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// `status` with `{"detail": detail}`.
pub(crate) fn detail(status: StatusCode, detail: impl Into<serde_json::Value>) -> Response {
    (status, Json(json!({ "detail": detail.into() }))).into_response()
}

/// A store failure: logged once, answered with 503 (clients retry later).
pub(crate) fn unavailable(what: &str, e: &crate::Error) -> Response {
    tracing::error!("aggregator: {what} failed: {e}");
    detail(
        StatusCode::SERVICE_UNAVAILABLE,
        "The statistics database is unavailable; try again later",
    )
}
