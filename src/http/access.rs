//! Access control, before any handler runs.
//!
//! 1. **Who connects.** In add-on mode only Home Assistant's ingress proxy (`172.30.32.2`) and
//!    loopback may connect; anyone else gets 403. (The add-on's port is not published; this
//!    holds even if a user maps it.)
//! 2. **What changes state.** Only `POST` and `DELETE` do (no `GET` has side effects). Such a
//!    request must
//!    * carry JSON or no body (a cross-site HTML form can only send form or text bodies) — 415;
//!    * not come from another site: `Sec-Fetch-Site` must be `same-origin` or `none` when
//!      present; without it, an `Origin` must match the `Host` (or `X-Forwarded-Host`) — 403;
//!    * carry `Authorization: Bearer <http.token>` when a token is configured — 401.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

use super::HttpState;
use super::api::error;

/// Home Assistant's ingress proxy.
pub const INGRESS_PROXY: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 30, 32, 2));

/// The rules for one server.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Add-on mode: only the ingress proxy and loopback connect.
    pub ingress_only: bool,
    /// SHA-256 of the bearer token state changes need, if any.
    token: Option<[u8; 32]>,
}

impl Policy {
    /// The policy for the mode and token.
    pub fn new(ingress_only: bool, token: Option<&str>) -> Self {
        Self {
            ingress_only,
            token: token.map(|t| Sha256::digest(t.as_bytes()).into()),
        }
    }

    fn peer_allowed(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        !self.ingress_only || peer == INGRESS_PROXY || peer.is_loopback()
    }
}

fn same_site(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return matches!(site, "same-origin" | "none");
    }
    let Some(origin) = text("origin") else {
        // Not a browser's cross-origin request (curl, scripts).
        return true;
    };
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    [text("x-forwarded-host"), text("host")]
        .into_iter()
        .flatten()
        .any(|host| host.eq_ignore_ascii_case(origin_host))
}

fn json_or_empty(headers: &HeaderMap) -> bool {
    let has_body = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|n| n.trim() != "0")
        || headers.contains_key(header::TRANSFER_ENCODING);
    if !has_body {
        return true;
    }
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let mime = ct.split(';').next().unwrap_or_default().trim();
            mime.eq_ignore_ascii_case("application/json")
        })
}

fn bearer_ok(headers: &HeaderMap, want: &[u8; 32]) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| <[u8; 32]>::from(Sha256::digest(t.trim().as_bytes())) == *want)
}

/// The middleware.
pub async fn check(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let policy = &state.access;
    if !policy.peer_allowed(peer.ip()) {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only Home Assistant's ingress may open this page",
        );
    }
    let changes_state = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if changes_state {
        let headers = request.headers();
        if !same_site(headers) {
            return error(
                StatusCode::FORBIDDEN,
                "cross_site",
                "state-changing requests from another site are refused",
            );
        }
        if !json_or_empty(headers) {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send JSON (Content-Type: application/json) or no body",
            );
        }
        if let Some(want) = &policy.token
            && !bearer_ok(headers, want)
        {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this call needs `Authorization: Bearer <http.token>`",
            );
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn peers() {
        let addon = Policy::new(true, None);
        assert!(addon.peer_allowed(INGRESS_PROXY));
        assert!(addon.peer_allowed("127.0.0.1".parse().expect("ip")));
        assert!(addon.peer_allowed("::ffff:172.30.32.2".parse().expect("ip")));
        assert!(!addon.peer_allowed("172.30.32.1".parse().expect("ip")));
        assert!(!addon.peer_allowed("192.168.1.20".parse().expect("ip")));
        assert!(Policy::new(false, None).peer_allowed("192.168.1.20".parse().expect("ip")));
    }

    #[test]
    fn sites_and_bodies() {
        assert!(same_site(&headers(&[])));
        assert!(same_site(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!same_site(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(same_site(&headers(&[
            ("origin", "http://ha.local:8123"),
            ("host", "ha.local:8123")
        ])));
        assert!(!same_site(&headers(&[
            ("origin", "https://evil.example"),
            ("host", "ha.local:8123")
        ])));
        assert!(json_or_empty(&headers(&[])));
        assert!(json_or_empty(&headers(&[("content-length", "0")])));
        assert!(!json_or_empty(&headers(&[
            ("content-length", "5"),
            ("content-type", "application/x-www-form-urlencoded")
        ])));
        assert!(json_or_empty(&headers(&[
            ("content-length", "2"),
            ("content-type", "application/json; charset=utf-8")
        ])));
    }
}
