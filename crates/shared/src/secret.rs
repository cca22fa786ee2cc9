//! A secret from the configuration — an MQTT password, the submission API key, the page's
//! token, the aggregator's API keys.
//!
//! [`Secret`] wraps `secrecy`'s `SecretString`: its `Debug` is `[redacted]` (so a settings
//! struct can be logged or printed by a test failure without leaking it), the memory is wiped
//! on drop, and the value is reached only through [`Secret::expose`], which makes every use
//! visible in the code. It has no `Serialize`: a secret is never written back out; fields that
//! hold one are `#[serde(skip_serializing)]`.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// A configured secret.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(SecretString);

impl Secret {
    /// The secret itself, for the one place that sends or compares it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The secret without surrounding blanks, or `None` when it is blank (the add-on's UI and
    /// environment variables can only say "empty" for "not set").
    pub fn non_blank(&self) -> Option<&str> {
        Some(self.expose().trim()).filter(|s| !s.is_empty())
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(SecretString::from(value))
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s: Secret = serde_json::from_str("\"hunter2\"").expect("a string");
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(Secret::from("  ").non_blank(), None);
        assert_eq!(Secret::from(" k ").non_blank(), Some("k"));
        assert_eq!(Secret::from("a"), Secret::from("a"));
    }
}
