//! Where this process runs, decided once at start: inside the Home Assistant add-on (the
//! Supervisor set `SUPERVISOR_TOKEN`) or standalone.
//!
//! Every add-on-only behaviour asks this value — the database under `/data`, the web page on
//! all interfaces behind ingress, the broker, country and ingress URL from the Supervisor,
//! Printernizer found through the Supervisor — instead of reading the environment again.

use crate::config::SUPERVISOR_TOKEN_ENV;

/// Environment variable overriding the Supervisor's base URL (tests serve JSON locally).
pub const SUPERVISOR_URL_ENV: &str = "PRINTERNIZER_STATS_SUPERVISOR_URL";
/// The Supervisor's base URL inside an add-on.
pub const DEFAULT_SUPERVISOR_URL: &str = "http://supervisor";

/// The Supervisor's API as the add-on reaches it.
#[derive(Clone, PartialEq, Eq)]
pub struct Supervisor {
    /// Base URL (`http://supervisor`; tests point it at a local stand-in).
    pub url: String,
    /// The add-on's token (never logged).
    pub token: String,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// The add-on or standalone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deployment {
    supervisor: Option<Supervisor>,
}

impl Deployment {
    /// Reads `SUPERVISOR_TOKEN` (and `PRINTERNIZER_STATS_SUPERVISOR_URL`) from the process
    /// environment.
    pub fn from_env() -> Self {
        Self::from_vars(
            std::env::var(SUPERVISOR_TOKEN_ENV).ok(),
            std::env::var(SUPERVISOR_URL_ENV).ok(),
        )
    }

    /// From explicit values: a non-empty token means the add-on.
    pub fn from_vars(token: Option<String>, url: Option<String>) -> Self {
        let supervisor = token.filter(|t| !t.is_empty()).map(|token| Supervisor {
            url: url
                .filter(|u| !u.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_SUPERVISOR_URL.into()),
            token,
        });
        Self { supervisor }
    }

    /// Not the add-on.
    pub fn standalone() -> Self {
        Self::default()
    }

    /// Running as the Home Assistant add-on.
    pub fn is_addon(&self) -> bool {
        self.supervisor.is_some()
    }

    /// The Supervisor, in the add-on.
    pub fn supervisor(&self) -> Option<&Supervisor> {
        self.supervisor.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_makes_the_add_on() {
        assert!(!Deployment::from_vars(None, None).is_addon());
        assert!(!Deployment::from_vars(Some(String::new()), None).is_addon());
        let d = Deployment::from_vars(Some("t".into()), None);
        assert_eq!(
            d.supervisor().map(|s| s.url.as_str()),
            Some("http://supervisor")
        );
        let d = Deployment::from_vars(Some("t".into()), Some("http://127.0.0.1:9".into()));
        assert_eq!(
            d.supervisor().map(|s| s.url.as_str()),
            Some("http://127.0.0.1:9")
        );
        assert!(
            !format!("{d:?}").contains("\"t\""),
            "the token is never printed"
        );
    }
}
