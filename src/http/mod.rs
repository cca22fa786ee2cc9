//! The local HTTP API and web page of `run` (the add-on's ingress panel).
//!
//! * [`api`] — the seed's REST endpoints under `/api/v1/usage-stats` (JSON in, JSON out;
//!   errors are `{"error": …, "detail": …}`).
//! * [`page`] — one page with embedded assets (no CDN: the add-on may be offline), relative
//!   URLs only so it works under Home Assistant's `X-Ingress-Path` prefix, strings from
//!   `translations/`.
//! * [`access`] — who may connect and what they may change, checked before any handler:
//!   in add-on mode only the ingress proxy (`172.30.32.2`) and loopback connect; state changes
//!   need `POST`/`DELETE`, JSON or no body, no cross-site origin, and the bearer token when one
//!   is configured (mandatory on a non-loopback bind outside the add-on).

pub mod access;
pub mod api;
pub mod page;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;

use crate::config::Settings;
use crate::service::StatsService;
use crate::submission::Submitter;
use crate::{Error, Result};

/// Everything a handler needs.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// The service.
    pub service: StatsService,
    /// Submission, when configured.
    pub submitter: Option<Submitter>,
    /// Who may connect.
    pub access: access::Policy,
}

/// Checks the HTTP settings for the mode: the bind address parses, and a non-loopback bind
/// outside the add-on has a token.
pub fn check(settings: &Settings, addon_mode: bool) -> Result<SocketAddr> {
    let addr = settings
        .http
        .bind_addr(addon_mode)
        .map_err(|e| Error::Config(format!("`http.bind`: {e}")))?;
    if !addon_mode && !addr.ip().is_loopback() && settings.http.token().is_none() {
        return Err(Error::Config(format!(
            "`http.token`: the web page listens on {addr}, beyond this machine; set http.token \
             (sent as `Authorization: Bearer …` by state-changing calls) or bind to 127.0.0.1"
        )));
    }
    Ok(addr)
}

/// The router: API, page and access checks.
pub fn router(state: HttpState) -> Router {
    let state = Arc::new(state);
    Router::new()
        .merge(api::routes())
        .merge(page::routes())
        .fallback(|| async {
            api::error(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                "no such page",
            )
        })
        .method_not_allowed_fallback(|| async {
            api::error(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this method is not allowed here",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::check,
        ))
        .with_state(state)
}

/// Time for a request's headers, and idle time between requests on one connection.
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Time for a handler's answer to start (an export's body may stream longer).
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Open connections at most (the page is for one household).
pub const MAX_CONNECTIONS: usize = 64;

/// Serves on `listener` until `shutdown`, with the limits above
/// (`printernizer_stats_shared::server`).
pub async fn serve(
    state: HttpState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    printernizer_stats_shared::server::serve(
        "web page",
        listener,
        router(state),
        printernizer_stats_shared::server::Limits {
            header_read: HEADER_TIMEOUT,
            request: REQUEST_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        },
        shutdown,
    )
    .await
    .map_err(Error::Io)
}
