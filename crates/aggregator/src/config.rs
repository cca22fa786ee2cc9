//! The aggregation server's configuration: the `[aggregator]` section and `log_level`.
//!
//! The keys are the ones `printernizer-stats aggregator` read before the server became its own
//! program, so existing files and environments keep working. Layers, later wins:
//! 1. built-in defaults ([`AggregatorSettings::default`]);
//! 2. `--config FILE` (TOML or JSON, by extension; TOML when unsure) — the file may be shared
//!    with the add-on: its other sections are ignored here;
//! 3. environment variables `PRINTERNIZER_STATS__AGGREGATOR__<KEY>` and
//!    `PRINTERNIZER_STATS__LOG_LEVEL`;
//! 4. the command line (`--bind`, `--database-url`), applied by the binary.
//!
//! Unknown keys inside `[aggregator]` and invalid values are errors that name the key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::Weekday;
use config::{Config, Environment};
use lettre::message::Mailbox;
use printernizer_stats_shared::bounded::Bounded;
use printernizer_stats_shared::log_level::LogLevel;
use printernizer_stats_shared::secret::Secret;
use serde::{Deserialize, Serialize};

use crate::store::DatabaseUrl;
use crate::{Error, Result};

/// Environment variable prefix (`PRINTERNIZER_STATS__AGGREGATOR__KEY`), the add-on's.
pub const ENV_PREFIX: &str = "PRINTERNIZER_STATS";

/// What the server reads from a (possibly shared) configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Log verbosity (the same top-level key as the add-on's).
    pub log_level: LogLevel,
    /// `[aggregator]`.
    pub aggregator: AggregatorSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            log_level: LogLevel::Info,
            aggregator: AggregatorSettings::default(),
        }
    }
}

/// `[aggregator]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregatorSettings {
    /// Listen address.
    pub bind: String,
    /// `sqlite://relative/path.db`, `sqlite:///absolute/path.db` or `postgres://…`.
    pub database_url: String,
    /// Accepted `X-API-Key` values; empty = no key required. As an environment variable:
    /// comma-separated (`PRINTERNIZER_STATS__AGGREGATOR__API_KEYS=k1,k2`). Never logged.
    #[serde(skip_serializing)]
    pub api_keys: Vec<Secret>,
    /// Accepted submissions per installation and hour (1–1000).
    pub rate_limit_per_hour: Bounded<1, 1000>,
    /// Largest accepted request body (1 KiB – 16 MiB).
    pub max_body_bytes: Bounded<1024, { 16 * 1024 * 1024 }>,
    /// Submissions older than this many days are deleted (1–3650).
    pub retention_days: Bounded<1, 3650>,
    /// Every `/stats/*` answer folds buckets with fewer installations into `other`, and withholds
    /// what stays under it ([`crate::analytics::anonymity`], 1–1000).
    pub k_anonymity: Bounded<1, 1000>,
    /// `true`: `/dashboard` and the k-anonymous `/stats/*` answer without a key (like Home
    /// Assistant's public analytics). `/submit`, `DELETE` and `/reports/*` always need one.
    pub public_dashboard: bool,
    /// Open connections at most (8–100000); at the limit a new connection takes the place of
    /// one that has not sent a request (`printernizer_stats_shared::server`).
    pub max_connections: Bounded<8, 100_000>,
    /// Seconds a connection may take to send a request's headers, and may stay idle between
    /// requests (1–300).
    pub header_timeout_s: Bounded<1, 300>,
    /// Seconds a request may take until its answer starts (1–3600); then 408.
    pub request_timeout_s: Bounded<1, 3600>,
    /// `[aggregator.email]`: the e-mail reports.
    pub email: EmailSettings,
}

/// `[aggregator.email]`: where the weekly and monthly reports go ([`crate::reports`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailSettings {
    /// `smtp://host[:port]` (plain, or `?tls=required` for STARTTLS) or `smtps://host[:port]`,
    /// credentials allowed (`smtps://user:password@host`). Never logged, never shown.
    #[serde(skip_serializing)]
    pub smtp_url: Option<Secret>,
    /// The sender (`Stats <stats@example.org>` or `stats@example.org`).
    pub from: String,
    /// The recipients; as an environment variable comma-separated.
    pub to: Vec<String>,
    /// Send the weekly report by itself (off by default).
    pub weekly: bool,
    /// Its day (`monday` … `sunday`, or `mon` …).
    pub weekly_day: String,
    /// Its hour (UTC, 0–23).
    pub weekly_hour: Bounded<0, 23>,
}

/// A complete and checked `[aggregator.email]` ([`EmailSettings::target`]).
#[derive(Debug, Clone)]
pub struct EmailTarget {
    /// The SMTP URL (credentials included: never logged).
    pub smtp_url: Secret,
    /// The sender.
    pub from: Mailbox,
    /// The recipients (at least one).
    pub to: Vec<Mailbox>,
    /// The SMTP server's host name.
    pub host: String,
    /// `smtps://` (TLS from the start).
    pub use_ssl: bool,
    /// `smtp://…?tls=required|opportunistic` (STARTTLS).
    pub use_tls: bool,
    /// The weekly schedule (day, hour UTC), when on.
    pub weekly: Option<(Weekday, u32)>,
}

impl EmailSettings {
    /// The checked settings; `None` when e-mail is not configured at all. A partial or invalid
    /// configuration is an error naming the key (never showing credentials).
    pub fn target(&self) -> Result<Option<EmailTarget>> {
        let bad =
            |key: &str, msg: String| Error::Config(format!("`aggregator.email.{key}`: {msg}"));
        let url = self.smtp_url.as_ref().and_then(|u| u.non_blank());
        let to: Vec<&str> = self
            .to
            .iter()
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
            .collect();
        if url.is_none() && self.from.trim().is_empty() && to.is_empty() {
            if self.weekly {
                return Err(bad("weekly", "needs `smtp_url`, `from` and `to`".into()));
            }
            return Ok(None);
        }
        let url =
            url.ok_or_else(|| bad("smtp_url", "is needed when `from` or `to` is set".into()))?;
        if to.is_empty() {
            return Err(bad("to", "needs at least one address".into()));
        }
        let parsed = url::Url::parse(url).map_err(|_| {
            bad(
                "smtp_url",
                "is not a URL like smtps://user:password@host:465".into(),
            )
        })?;
        let tls = parsed
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let (use_ssl, use_tls) = match (parsed.scheme(), tls.as_deref()) {
            ("smtps", _) => (true, false),
            ("smtp", None) => (false, false),
            ("smtp", Some("required" | "opportunistic")) => (false, true),
            _ => {
                return Err(bad(
                    "smtp_url",
                    "must be smtp://host[:port] (optionally ?tls=required) or smtps://host[:port]"
                        .into(),
                ));
            }
        };
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("smtp_url", "names no host".into()))?
            .to_owned();
        let from: Mailbox = self
            .from
            .trim()
            .parse()
            .map_err(|_| bad("from", format!("`{}` is not an e-mail address", self.from)))?;
        let to = to
            .iter()
            .map(|t| {
                t.parse::<Mailbox>()
                    .map_err(|_| bad("to", format!("`{t}` is not an e-mail address")))
            })
            .collect::<Result<Vec<_>>>()?;
        let weekly = if self.weekly {
            let day = self.weekly_day.parse::<Weekday>().map_err(|_| {
                bad(
                    "weekly_day",
                    format!("`{}` is not a weekday", self.weekly_day),
                )
            })?;
            Some((day, self.weekly_hour.get() as u32))
        } else {
            None
        };
        Ok(Some(EmailTarget {
            smtp_url: url.into(),
            from,
            to,
            host,
            use_ssl,
            use_tls,
            weekly,
        }))
    }
}

impl Default for EmailSettings {
    fn default() -> Self {
        Self {
            smtp_url: None,
            from: String::new(),
            to: Vec::new(),
            weekly: false,
            weekly_day: "monday".into(),
            weekly_hour: Bounded::of(7),
        }
    }
}

impl Default for AggregatorSettings {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            database_url: "sqlite://aggregator.db".into(),
            api_keys: Vec::new(),
            rate_limit_per_hour: Bounded::of(1),
            max_body_bytes: Bounded::of(64 * 1024),
            retention_days: Bounded::of(730),
            k_anonymity: Bounded::of(5),
            public_dashboard: false,
            max_connections: Bounded::of(512),
            header_timeout_s: Bounded::of(10),
            request_timeout_s: Bounded::of(30),
            email: EmailSettings::default(),
        }
    }
}

impl AggregatorSettings {
    /// The HTTP server's limits.
    pub fn limits(&self) -> printernizer_stats_shared::server::Limits {
        printernizer_stats_shared::server::Limits {
            header_read: std::time::Duration::from_secs(self.header_timeout_s.get()),
            request: std::time::Duration::from_secs(self.request_timeout_s.get()),
            max_connections: self.max_connections.get() as usize,
        }
    }

    /// The configured API keys without blanks (an empty environment value means "none").
    pub fn api_keys(&self) -> Vec<&str> {
        self.api_keys.iter().filter_map(Secret::non_blank).collect()
    }

    /// Checks what the types cannot (the address, the database URL); the error names the key.
    /// Numbers are [`Bounded`]: out of range, they fail to load, naming the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, msg: String| Err(Error::Config(format!("`{key}`: {msg}")));
        if self.bind.parse::<std::net::SocketAddr>().is_err() {
            return bad(
                "aggregator.bind",
                format!("`{}` is not an address like 127.0.0.1:8080", self.bind),
            );
        }
        if let Err(e) = DatabaseUrl::parse(&self.database_url) {
            return bad("aggregator.database_url", e);
        }
        self.email.target()?;
        Ok(())
    }
}

/// Builds [`Settings`] from explicit inputs (the environment is a map, so tests need not touch
/// the process environment).
#[derive(Debug, Clone, Default)]
pub struct Loader {
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
    /// The environment variables to read.
    pub env: HashMap<String, String>,
}

impl Settings {
    /// Loads the configuration from `config_file` and the process environment.
    pub fn load(config_file: Option<&Path>) -> Result<Self> {
        Loader {
            config_file: config_file.map(Path::to_path_buf),
            env: std::env::vars().collect(),
        }
        .load()
    }
}

impl Loader {
    /// Merges the layers and deserializes; [`AggregatorSettings::validate`] is left to the
    /// caller, which may still apply command-line overrides.
    pub fn load(&self) -> Result<Settings> {
        let defaults =
            Config::try_from(&Settings::default()).map_err(|e| Error::Config(e.to_string()))?;
        let mut builder = Config::builder().add_source(defaults);
        if let Some(path) = &self.config_file {
            builder = builder.add_source(
                printernizer_stats_shared::process::config_file(path).map_err(Error::Config)?,
            );
        }
        builder = builder.add_source(
            Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("aggregator.api_keys")
                .with_list_parse_key("aggregator.email.to")
                .source(Some(self.env.clone().into_iter().collect())),
        );
        builder
            .build()
            .and_then(Config::try_deserialize)
            .map_err(|e| Error::Config(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loader(env: &[(&str, &str)]) -> Loader {
        Loader {
            config_file: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn load(env: &[(&str, &str)]) -> Result<Settings> {
        let s = loader(env).load()?;
        s.aggregator.validate()?;
        Ok(s)
    }

    #[test]
    fn aggregator_keys_from_the_environment() {
        let s = load(&[
            ("PRINTERNIZER_STATS__AGGREGATOR__API_KEYS", "k1,k2"),
            ("PRINTERNIZER_STATS__AGGREGATOR__RATE_LIMIT_PER_HOUR", "3"),
            (
                "PRINTERNIZER_STATS__AGGREGATOR__DATABASE_URL",
                "postgres://u@127.0.0.1/agg",
            ),
        ])
        .expect("loads");
        assert_eq!(s.aggregator.api_keys(), ["k1", "k2"]);
        assert_eq!(s.aggregator.rate_limit_per_hour, 3);
        let s = load(&[("PRINTERNIZER_STATS__AGGREGATOR__API_KEYS", "")]).expect("loads");
        assert!(s.aggregator.api_keys().is_empty());
        let err = |env: &[(&str, &str)]| load(env).expect_err("must fail").to_string();
        assert!(
            err(&[("PRINTERNIZER_STATS__AGGREGATOR__DATABASE_URL", "mysql://x")])
                .contains("aggregator.database_url")
        );
        assert!(
            err(&[("PRINTERNIZER_STATS__AGGREGATOR__BIND", "localhost")])
                .contains("aggregator.bind")
        );
        assert!(
            err(&[("PRINTERNIZER_STATS__AGGREGATOR__K_ANONYMITY", "0")])
                .contains("aggregator.k_anonymity")
        );
        assert!(
            err(&[("PRINTERNIZER_STATS__AGGREGATOR__RATE_LIMT", "3")]).contains("rate_limt"),
            "a misspelt key inside [aggregator] is an error"
        );
    }

    #[test]
    fn email_settings_are_whole_or_absent() {
        let s = load(&[
            (
                "PRINTERNIZER_STATS__AGGREGATOR__EMAIL__SMTP_URL",
                "smtps://u:pw@mail.example.org",
            ),
            (
                "PRINTERNIZER_STATS__AGGREGATOR__EMAIL__FROM",
                "stats@example.org",
            ),
            (
                "PRINTERNIZER_STATS__AGGREGATOR__EMAIL__TO",
                "a@example.org,b@example.org",
            ),
        ])
        .expect("loads");
        assert_eq!(s.aggregator.email.to.len(), 2);
        let err = load(&[(
            "PRINTERNIZER_STATS__AGGREGATOR__EMAIL__FROM",
            "stats@example.org",
        )])
        .expect_err("no smtp_url");
        assert!(
            err.to_string().contains("aggregator.email.smtp_url"),
            "{err}"
        );
        let err = load(&[
            (
                "PRINTERNIZER_STATS__AGGREGATOR__EMAIL__SMTP_URL",
                "smtps://u:pw@h",
            ),
            (
                "PRINTERNIZER_STATS__AGGREGATOR__EMAIL__FROM",
                "not an address",
            ),
            ("PRINTERNIZER_STATS__AGGREGATOR__EMAIL__TO", "a@example.org"),
        ])
        .expect_err("bad from");
        assert!(err.to_string().contains("aggregator.email.from"), "{err}");
        assert!(!err.to_string().contains("pw"), "{err}");
        let err = load(&[("PRINTERNIZER_STATS__AGGREGATOR__EMAIL__WEEKLY", "true")])
            .expect_err("weekly without a server");
        assert!(err.to_string().contains("aggregator.email.weekly"), "{err}");
    }

    #[test]
    fn a_file_shared_with_the_add_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("shared.toml");
        std::fs::write(
            &file,
            "log_level = \"debug\"\n[retention]\ndays = 30\n[aggregator]\nk_anonymity = 3\n",
        )
        .expect("write");
        let mut l = loader(&[("PRINTERNIZER_STATS__DATABASE__PATH", "/tmp/x.db")]);
        l.config_file = Some(file);
        let s = l.load().expect("the add-on's sections are ignored");
        assert_eq!(s.log_level, LogLevel::Debug);
        assert_eq!(s.aggregator.k_anonymity, 3);
        assert_eq!(s.aggregator.bind, "127.0.0.1:8080");
    }
}
