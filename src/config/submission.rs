//! `[submission]`: where and how often reports go (only ever after opt-in).

use printernizer_stats_shared::bounded::Bounded;
use printernizer_stats_shared::secret::Secret;
use serde::{Deserialize, Serialize};

use super::{Invalid, non_blank};

/// `[submission]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmissionSettings {
    /// Days between reports (1–30); also the length of the preview before consent.
    pub interval_days: Bounded<1, 30>,
    /// URL of the aggregation server's `/submit`; empty = submission disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Sent as `X-API-Key` when set (never logged or exported).
    #[serde(default, skip_serializing)]
    pub api_key: Option<Secret>,
    /// Request timeout in seconds (5–60).
    #[serde(default = "default_timeout_s")]
    pub timeout_s: Bounded<5, 60>,
}

pub(super) fn default_timeout_s() -> Bounded<5, 60> {
    Bounded::of(10)
}

/// The server's base URL: the endpoint without its last path segment
/// (`https://stats.example/submit` → `https://stats.example`).
pub fn server_base(endpoint: &str) -> String {
    let trimmed = endpoint.trim().trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((base, _)) if base.contains("://") && !base.ends_with('/') => base.to_owned(),
        _ => trimmed.to_owned(),
    }
}

impl SubmissionSettings {
    /// Time between reports (also the preview's length).
    pub fn interval(&self) -> chrono::Duration {
        chrono::Duration::days(self.interval_days.get() as i64)
    }

    /// The request timeout.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout_s.get())
    }

    /// The endpoint, if submission is configured.
    pub fn endpoint(&self) -> Option<&str> {
        non_blank(self.endpoint.as_deref())
    }

    pub(super) fn check(&self) -> Result<(), Invalid> {
        if let Some(url) = self.endpoint()
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(Invalid::new(
                "submission.endpoint",
                format!("`{url}` is not an http(s) URL"),
            ));
        }
        Ok(())
    }
}
