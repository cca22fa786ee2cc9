//! `[http]`: the local API and web page.

use printernizer_stats_shared::secret::Secret;
use serde::{Deserialize, Serialize};

use super::{Invalid, non_blank};

/// `[http]` — the local API and web page (the add-on's ingress panel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Serve at all.
    pub enabled: bool,
    /// Listen address; default `127.0.0.1:8099` (add-on: `0.0.0.0:8099`, reachable only
    /// through the ingress proxy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Bearer token required for state-changing calls; mandatory on a non-loopback bind
    /// outside the add-on (never logged or exported).
    #[serde(skip_serializing)]
    pub token: Option<Secret>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: None,
            token: None,
        }
    }
}

/// The ingress panel's port.
pub const HTTP_PORT: u16 = 8099;

impl HttpSettings {
    /// The listen address for the mode.
    pub fn bind_addr(&self, addon_mode: bool) -> std::result::Result<std::net::SocketAddr, String> {
        let text = match non_blank(self.bind.as_deref()) {
            Some(b) => b.to_owned(),
            None if addon_mode => format!("0.0.0.0:{HTTP_PORT}"),
            None => format!("127.0.0.1:{HTTP_PORT}"),
        };
        text.parse()
            .map_err(|_| format!("`{text}` is not an address like 127.0.0.1:8099"))
    }

    /// The configured token, if not blank.
    pub fn token(&self) -> Option<&str> {
        self.token.as_ref().and_then(Secret::non_blank)
    }
}

impl HttpSettings {
    pub(super) fn check(&self) -> Result<(), Invalid> {
        self.bind_addr(false)
            .map(|_| ())
            .map_err(|e| Invalid::new("http.bind", e))
    }
}
