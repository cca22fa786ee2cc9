//! The HTTP API, compatible with upstream's FastAPI service.
//!
//! | route | |
//! |---|---|
//! | `POST /submit` | validate → 422 field errors; > `max_body_bytes` → 413; duplicate → 200 with the original id; over the limit → 429 + `Retry-After` |
//! | `DELETE /installation/{id}` | every submission and the rate-limit row of `id`; `deleted_count` may be 0 (deletion is idempotent) |
//! | `GET /` | `{"service","status":"healthy","version"}` like upstream's; never needs a key |
//! | `GET /health` | `{"status":"healthy","database":"connected",…}`; 503 with `"database":"unreachable"` when the database does not answer (upstream never checks); never needs a key |
//! | `GET /stats/summary` | `{total_submissions, unique_installations, latest_submission_at, timestamp}` |
//! | `GET /stats/overview?weeks=` | upstream's overview plus platforms, errors and weekly activity (`weeks` 1–104, default 12) |
//! | `GET /stats/installations?days=` | totals, 7/30-day activity, growth, a per-day trend (`days` 1–366, default 30) |
//! | `GET /stats/deployment-modes`, `/stats/printers`, `/stats/features` `?days=` | over each installation's latest report (in the last `days`, 1–3650; default everything stored) |
//! | `GET /stats/versions?days=&limit=`, `/stats/geography?days=&limit=` | the same, `limit` 1–100 rows (default 10 and 20) |
//! | `GET /stats/version-migration?days=`, `/stats/feature-trends?days=` | per day (1–366, default 30) |
//! | `GET /stats/anomalies`, `/stats/errors`, `/stats/export` | upstream's checks; error types; every aggregate at once |
//!
//! Every `/stats/*` answer is k-anonymous ([`crate::analytics::anonymity`]) and holds no
//! installation id; a query parameter outside its range is a 422 naming it.
//!
//! | `GET /dashboard` | the maintainers' page ([`crate::dashboard`]); its data from `/dashboard/panels` |
//!
//! Errors are JSON `{"detail": …}` like FastAPI's. When API keys are configured, every route but
//! `/`, `/health` and the dashboard's shell needs a valid `X-API-Key` (the reads — `/stats/*`,
//! `/dashboard/panels` — not when `aggregator.public_dashboard` is on): 401 with `WWW-Authenticate` otherwise (upstream
//! answers 403 for a missing key and 401 for a wrong one; both are "not authenticated", which is
//! what 401 means — docs/aggregator.md lists the differences). Nothing here reads or logs the peer's
//! address, and request bodies are never logged.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tower_http::catch_panic::CatchPanicLayer;
use uuid::Uuid;

use crate::analytics::{Ask, DEFAULT_TREND_DAYS, MAX_TREND_DAYS};
use crate::problem::{detail, unavailable};
use crate::store::{SubmissionStore, SubmitOutcome};
use crate::submission;
use crate::{App, dashboard, reports};

/// Default `/stats/overview` window.
pub const DEFAULT_WEEKS: u32 = 12;
/// Longest `/stats/overview` window (the default retention).
pub const MAX_WEEKS: u32 = 104;

/// The API router over `app`.
pub fn router<S: SubmissionStore>(app: Arc<App<S>>) -> Router {
    // Writes, and whatever reaches outside: always behind a key (when keys are configured).
    let writes = Router::new()
        .route(
            "/submit",
            post(submit::<S>).layer(DefaultBodyLimit::max(app.max_body_bytes)),
        )
        .route(
            "/installation/{installation_id}",
            delete(delete_installation::<S>),
        )
        .route("/reports/email-status", get(reports::status::<S>))
        .route("/reports/test-email", post(reports::test_email::<S>))
        .route("/reports/weekly", post(reports::weekly::<S>))
        .route("/reports/monthly", post(reports::monthly::<S>))
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            require_key::<S>,
        ));
    // The k-anonymous reads: behind a key unless `public_dashboard`.
    let mut reads = Router::new()
        .route("/stats/summary", get(summary::<S>))
        .route("/dashboard/panels", get(dashboard::panels::<S>));
    for (path, what) in Stat::ALL {
        reads = reads.route(
            path,
            get(
                move |State(app): State<Arc<App<S>>>, Query(q): Query<StatsQuery>| {
                    stats(app, q, what)
                },
            ),
        );
    }
    let reads = reads.route_layer(middleware::from_fn_with_state(
        app.clone(),
        require_reader::<S>,
    ));
    Router::new()
        .route("/", get(root))
        .route("/health", get(health::<S>))
        .route("/dashboard", get(dashboard::page))
        .route("/dashboard/app.js", get(dashboard::script))
        .route("/dashboard/app.css", get(dashboard::style))
        .merge(writes)
        .merge(reads)
        .fallback(|| async { detail(StatusCode::NOT_FOUND, "Not Found") })
        .method_not_allowed_fallback(|| async {
            detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
        })
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("aggregator: a request handler panicked");
            detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
        }))
        .with_state(app)
}

/// SHA-256 of a key: keys are compared as digests, so comparison time does not depend on how
/// many leading characters of a guess are right.
pub(super) fn key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// [`require_key`], unless `aggregator.public_dashboard` opens the k-anonymous reads.
async fn require_reader<S: SubmissionStore>(
    State(app): State<Arc<App<S>>>,
    request: Request,
    next: Next,
) -> Response {
    if app.public_dashboard {
        return next.run(request).await;
    }
    require_key(State(app), request, next).await
}

async fn require_key<S: SubmissionStore>(
    State(app): State<Arc<App<S>>>,
    request: Request,
    next: Next,
) -> Response {
    if app.api_keys.is_empty() {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(key_digest);
    match given {
        Some(d) if app.api_keys.contains(&d) => next.run(request).await,
        Some(_) => unauthorized("Invalid API key"),
        None => unauthorized("Missing API key (X-API-Key header)"),
    }
}

/// 401 with the challenge RFC 9110 asks for: which header carries the key.
fn unauthorized(why: &str) -> Response {
    let mut response = detail(StatusCode::UNAUTHORIZED, why);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("ApiKey realm=\"printernizer-stats\", header=\"X-API-Key\""),
    );
    response
}

/// `GET /`: what the service is (upstream's shape).
async fn root() -> Response {
    Json(json!({
        "service": "Printernizer Usage Statistics Aggregation",
        "status": "healthy",
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

async fn submit<S: SubmissionStore>(
    State(app): State<Arc<App<S>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            app.metrics.rejected();
            return detail(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Request body is larger than {} bytes", app.max_body_bytes),
            );
        }
        Err(rejection) => {
            app.metrics.rejected();
            return detail(rejection.status(), rejection.body_text());
        }
    };
    let key = match headers.get("idempotency-key").map(HeaderValue::to_str) {
        None => None,
        Some(Ok(k)) => Some(k),
        Some(Err(_)) => {
            app.metrics.rejected();
            return detail(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!([{"loc": ["header", "Idempotency-Key"],
                        "msg": "must be visible ASCII", "type": "value_error"}]),
            );
        }
    };
    let now = app.clock.now();
    let s = match submission::parse(&body, key, now) {
        Ok(s) => s,
        Err(errors) => {
            app.metrics.rejected();
            tracing::debug!(
                "aggregator: submission rejected ({} field errors)",
                errors.len()
            );
            return detail(StatusCode::UNPROCESSABLE_ENTITY, json!(errors));
        }
    };
    match app.store.submit(s, now, app.rate_limit).await {
        Ok(SubmitOutcome::Created(id)) => {
            app.metrics.accepted();
            tracing::debug!("aggregator: stored submission {id}");
            Json(json!({
                "status": "success",
                "submission_id": id,
                "message": "Statistics received. Thank you for sharing!",
            }))
            .into_response()
        }
        Ok(SubmitOutcome::Duplicate(id)) => {
            app.metrics.duplicate();
            Json(json!({
                "status": "success",
                "submission_id": id,
                "message": "Statistics already received (duplicate ignored)",
            }))
            .into_response()
        }
        Ok(SubmitOutcome::RateLimited { retry_after_s }) => {
            app.metrics.rate_limited();
            let mut r = detail(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "Rate limit exceeded: at most {} submission(s) per installation per hour",
                    app.rate_limit.max
                ),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
            r
        }
        Err(e) => unavailable(&app.outage, "storing a submission", &e),
    }
}

async fn delete_installation<S: SubmissionStore>(
    State(app): State<Arc<App<S>>>,
    Path(installation_id): Path<String>,
) -> Response {
    let Ok(id) = Uuid::try_parse(&installation_id) else {
        return detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!([{"loc": ["path", "installation_id"],
                    "msg": "must be a UUID", "type": "value_error"}]),
        );
    };
    match app.store.delete_installation(id).await {
        Ok(n) => {
            tracing::info!("aggregator: deleted {n} submission(s) on an installation's request");
            Json(json!({
                "status": "success",
                "deleted_count": n,
                "message": format!("Deleted {n} submission(s) of this installation"),
            }))
            .into_response()
        }
        Err(e) => unavailable(&app.outage, "deleting an installation", &e),
    }
}

async fn health<S: SubmissionStore>(State(app): State<Arc<App<S>>>) -> Response {
    let timestamp = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    match app.store.health().await {
        Ok(()) => Json(json!({
            "status": "healthy",
            "database": "connected",
            "backend": app.backend,
            "version": env!("CARGO_PKG_VERSION"),
            "counters": app.metrics.snapshot(),
            "timestamp": timestamp,
        }))
        .into_response(),
        Err(e) => {
            tracing::warn!("aggregator: health check: database unreachable: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "status": "unhealthy",
                    "database": "unreachable",
                    "backend": app.backend,
                    "timestamp": timestamp,
                })),
            )
                .into_response()
        }
    }
}

async fn summary<S: SubmissionStore>(State(app): State<Arc<App<S>>>) -> Response {
    match app.store.summary().await {
        Ok(s) => Json(json!({
            "total_submissions": s.total_submissions,
            "unique_installations": s.unique_installations,
            "latest_submission_at": s.latest_submission_at
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        }))
        .into_response(),
        Err(e) => unavailable(&app.outage, "reading the summary", &e),
    }
}

/// The `/stats/*` analytics routes ([`crate::analytics`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stat {
    Overview,
    Installations,
    DeploymentModes,
    Versions,
    Geography,
    Printers,
    Features,
    VersionMigration,
    Anomalies,
    Export,
    FeatureTrends,
    Errors,
}

impl Stat {
    const ALL: [(&'static str, Stat); 12] = [
        ("/stats/overview", Stat::Overview),
        ("/stats/installations", Stat::Installations),
        ("/stats/deployment-modes", Stat::DeploymentModes),
        ("/stats/versions", Stat::Versions),
        ("/stats/geography", Stat::Geography),
        ("/stats/printers", Stat::Printers),
        ("/stats/features", Stat::Features),
        ("/stats/version-migration", Stat::VersionMigration),
        ("/stats/anomalies", Stat::Anomalies),
        ("/stats/export", Stat::Export),
        ("/stats/feature-trends", Stat::FeatureTrends),
        ("/stats/errors", Stat::Errors),
    ];
}

/// The query parameters of the `/stats/*` routes; which ones a route reads is in
/// docs/aggregator.md. Each is a whole number in a range, or the answer is 422 naming it.
#[derive(Debug, Default, Deserialize)]
struct StatsQuery {
    days: Option<String>,
    limit: Option<String>,
    weeks: Option<String>,
}

/// A query parameter outside `1..=max`: answered 422, naming it.
#[derive(Debug, Clone, Copy)]
struct BadParam {
    name: &'static str,
    max: u32,
}

impl IntoResponse for BadParam {
    fn into_response(self) -> Response {
        detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!([{"loc": ["query", self.name],
                    "msg": format!("must be a whole number from 1 to {}", self.max),
                    "type": "value_error"}]),
        )
    }
}

/// A query parameter from 1 to `max`, if given.
fn bounded_param(
    value: Option<&str>,
    name: &'static str,
    max: u32,
) -> Result<Option<u32>, BadParam> {
    match value.map(str::parse::<u32>) {
        None => Ok(None),
        Some(Ok(n)) if (1..=max).contains(&n) => Ok(Some(n)),
        Some(_) => Err(BadParam { name, max }),
    }
}

async fn stats<S: SubmissionStore>(app: Arc<App<S>>, q: StatsQuery, what: Stat) -> Response {
    match answer(&app, &q, what).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(bad)) => bad.into_response(),
        Err(e) => unavailable(&app.outage, "reading statistics", &e),
    }
}

/// The answer of a `/stats/*` route (the inner `Err` is a bad query parameter).
async fn answer<S: SubmissionStore>(
    app: &App<S>,
    q: &StatsQuery,
    what: Stat,
) -> crate::Result<Result<serde_json::Value, BadParam>> {
    let now = app.clock.now();
    let ask = Ask::new(&app.store, now, app.k_anonymity);
    let limit = |default: u32| {
        bounded_param(q.limit.as_deref(), "limit", 100).map(|l| l.unwrap_or(default) as usize)
    };
    // `?days=` of a distribution: the window (default: everything stored).
    let window = || {
        bounded_param(q.days.as_deref(), "days", 3650).map(|d| {
            d.map_or(DateTime::<Utc>::UNIX_EPOCH, |d| {
                now - Duration::days(i64::from(d))
            })
        })
    };
    // `?days=` of a per-day route: how many days.
    let trend_days = || {
        bounded_param(q.days.as_deref(), "days", MAX_TREND_DAYS)
            .map(|d| d.unwrap_or(DEFAULT_TREND_DAYS))
    };
    macro_rules! param {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(bad) => return Ok(Err(bad)),
            }
        };
    }
    let v = match what {
        Stat::Overview => {
            let weeks = param!(bounded_param(q.weeks.as_deref(), "weeks", MAX_WEEKS));
            ask.overview(weeks.unwrap_or(DEFAULT_WEEKS)).await?
        }
        Stat::Installations => ask.installations(param!(trend_days())).await?,
        Stat::DeploymentModes => ask.deployment_modes(param!(window())).await?,
        Stat::Versions => {
            let (since, limit) = (param!(window()), param!(limit(10)));
            ask.versions(since, limit).await?
        }
        Stat::Geography => {
            let (since, limit) = (param!(window()), param!(limit(20)));
            ask.geography(since, limit).await?
        }
        Stat::Printers => ask.printers(param!(window())).await?,
        Stat::Features => ask.features(param!(window())).await?,
        Stat::VersionMigration => ask.version_migration(param!(trend_days())).await?,
        Stat::Anomalies => ask.anomalies().await?,
        Stat::Export => ask.export().await?,
        Stat::FeatureTrends => ask.feature_trends(param!(trend_days())).await?,
        Stat::Errors => ask.errors().await?,
    };
    Ok(Ok(v))
}
