//! `[printernizer]`: the bridge to Printernizer's REST API.

use serde::{Deserialize, Serialize};

use super::{Invalid, in_range, non_blank};

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
    pub poll_interval_s: u64,
    /// Request timeout in seconds (1–120); for the export, the longest silence while reading.
    pub timeout_s: u64,
}

impl Default for PrinternizerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            url: None,
            poll_interval_s: 30,
            timeout_s: 10,
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
    pub(super) fn check(&self) -> Result<(), Invalid> {
        if let Some(url) = self.url()
            && let Err(e) = check_printernizer_url(url)
        {
            return Err(Invalid::new("printernizer.url", e));
        }
        in_range(
            "printernizer.poll_interval_s",
            self.poll_interval_s,
            1..=3600,
        )?;
        in_range("printernizer.timeout_s", self.timeout_s, 1..=120)
    }
}
