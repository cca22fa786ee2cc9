//! `[printernizer]`: the bridge to Printernizer's REST API.

use printernizer_stats_shared::bounded::Bounded;
use serde::{Deserialize, Serialize};

use super::{Invalid, non_blank};

/// `[printernizer]` — the bridge to Printernizer's REST API (see `docs/bridge.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrinternizerSettings {
    /// Read Printernizer's API at all (`false` turns the bridge off, also in the add-on).
    pub enabled: bool,
    /// Printernizer's base URL (`http://host:8000`). Unset: the bridge is off outside the
    /// add-on; in the add-on it is found through the Supervisor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Seconds between polls (1–3600).
    pub poll_interval_s: Bounded<1, 3600>,
    /// Request timeout in seconds (1–120); for the export, the longest silence while reading.
    pub timeout_s: Bounded<1, 120>,
}

impl Default for PrinternizerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            url: None,
            poll_interval_s: Bounded::of(30),
            timeout_s: Bounded::of(10),
        }
    }
}

impl PrinternizerSettings {
    /// The configured URL, without blanks and trailing `/`.
    pub fn url(&self) -> Option<&str> {
        non_blank(self.url.as_deref()).map(|u| u.trim_end_matches('/'))
    }
}

/// Checks a Printernizer base URL: `http(s)://host[:port][/path]`.
pub fn check_printernizer_url(url: &str) -> std::result::Result<(), String> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("`{url}` is not a URL like http://192.168.1.20:8000 ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("`{url}` must start with http:// or https://"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{url}` has no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("`{url}` must not have a query or fragment"));
    }
    Ok(())
}

impl PrinternizerSettings {
    /// Time between polls.
    pub fn poll_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.poll_interval_s.get())
    }

    /// The request timeout.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout_s.get())
    }

    pub(super) fn check(&self) -> Result<(), Invalid> {
        if let Some(url) = self.url()
            && let Err(e) = check_printernizer_url(url)
        {
            return Err(Invalid::new("printernizer.url", e));
        }
        Ok(())
    }
}
