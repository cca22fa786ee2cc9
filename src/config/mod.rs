//! Typed, layered configuration.
//!
//! Layers, later wins:
//! 1. built-in defaults ([`Settings::defaults`]; add-on mode — `SUPERVISOR_TOKEN` set — puts the
//!    database under `/data`);
//! 2. `--config FILE` (TOML or JSON, by extension; TOML when unsure);
//! 3. the Home Assistant add-on options file `/data/options.json` if it exists (path overridable
//!    with `PRINTERNIZER_STATS_OPTIONS`);
//! 4. environment variables `PRINTERNIZER_STATS__<SECTION>__<KEY>`, e.g.
//!    `PRINTERNIZER_STATS__DATABASE__PATH` or `PRINTERNIZER_STATS__LOG_LEVEL`.
//!
//! Unknown keys and invalid values are errors that name the key ([`crate::Error::Config`]).
//! One file per section. Parse, don't validate: numbers with a range are `Bounded` (they fail
//! to load, the loader naming the key: "0 is out of range 1–3650 for key `retention.days`"),
//! secrets are `Secret` (never printed, never serialized); what a type cannot say — a URL, an
//! MQTT topic, a country code — each section checks in its `check`, and [`Settings::validate`]
//! runs them all.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use serde::{Deserialize, Serialize};

use crate::event::vocab::DeploymentMode;
use crate::{Error, Result};
use printernizer_stats_shared::bounded::Bounded;

mod addon_options;
mod http;
mod installation;
mod mqtt;
mod printernizer;
mod storage;
mod submission;

pub use addon_options::ADDON_OPTIONS;
pub use http::{HTTP_PORT, HttpSettings};
pub use installation::InstallationSettings;
pub use mqtt::MqttSettings;
pub use printernizer::{PrinternizerSettings, check_printernizer_url};
pub use storage::{DatabaseSettings, RetentionSettings};
pub use submission::{SubmissionSettings, server_base};

/// Environment variable prefix (`PRINTERNIZER_STATS__SECTION__KEY`).
pub const ENV_PREFIX: &str = "PRINTERNIZER_STATS";
/// Environment variable overriding the add-on options file path.
pub const OPTIONS_ENV: &str = "PRINTERNIZER_STATS_OPTIONS";
/// The Home Assistant add-on options file.
pub const ADDON_OPTIONS_PATH: &str = "/data/options.json";
/// Set by the Supervisor inside an add-on container.
pub const SUPERVISOR_TOKEN_ENV: &str = "SUPERVISOR_TOKEN";

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where the SQLite database lives.
    pub database: DatabaseSettings,
    /// Log verbosity.
    pub log_level: LogLevel,
    /// How long raw events are kept.
    pub retention: RetentionSettings,
    /// Overrides for the anonymous installation info.
    #[serde(default)]
    pub installation: InstallationSettings,
    /// Submission schedule.
    pub submission: SubmissionSettings,
    /// MQTT broker and topics.
    #[serde(default)]
    pub mqtt: MqttSettings,
    /// Language of Home Assistant entity names: `en` or `de`.
    #[serde(default)]
    pub language: Language,
    /// `[aggregator]`: read by the aggregation server (`printernizer-stats-aggregator`), which
    /// may share this file; accepted here and ignored.
    #[serde(default, skip_serializing)]
    pub aggregator: Option<serde_json::Value>,
    /// The local HTTP API and web page of `run`.
    #[serde(default)]
    pub http: HttpSettings,
    /// The bridge that reads Printernizer's REST API (its usage-statistics log, health,
    /// printers and jobs).
    #[serde(default)]
    pub printernizer: PrinternizerSettings,
}

/// `language`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// English.
    #[default]
    En,
    /// German.
    De,
}

/// `log_level` (shared with the aggregation server, which reads the same key).
pub use printernizer_stats_shared::log_level::LogLevel;

/// A value out of its range or form: which key, and why.
#[derive(Debug)]
struct Invalid {
    key: &'static str,
    msg: String,
}

impl Invalid {
    fn new(key: &'static str, msg: String) -> Self {
        Self { key, msg }
    }
}

/// A configured text without surrounding blanks; blank or unset means "not set" (the add-on's
/// UI and environment variables can only say "empty").
pub(crate) fn non_blank(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

impl Settings {
    /// Built-in defaults; `addon_mode` puts the database under `/data`.
    pub fn defaults(addon_mode: bool) -> Self {
        Self {
            database: DatabaseSettings {
                path: if addon_mode {
                    PathBuf::from("/data/printernizer-stats.db")
                } else {
                    PathBuf::from("data/printernizer-stats.db")
                },
                max_size_mb: None,
            },
            log_level: LogLevel::Info,
            retention: RetentionSettings {
                days: Bounded::of(365),
            },
            installation: InstallationSettings::default(),
            submission: SubmissionSettings {
                interval_days: Bounded::of(7),
                endpoint: None,
                api_key: None,
                timeout_s: submission::default_timeout_s(),
            },
            mqtt: MqttSettings::default(),
            language: Language::En,
            aggregator: None,
            http: HttpSettings::default(),
            printernizer: PrinternizerSettings::default(),
        }
    }

    /// Loads the configuration from the process environment.
    pub fn load(config_file: Option<&Path>) -> Result<Self> {
        Loader {
            config_file: config_file.map(Path::to_path_buf),
            env: std::env::vars().collect(),
        }
        .load()
    }

    /// The validated country-code override, upper-case.
    pub fn country_code(&self) -> Option<String> {
        self.installation.country_code()
    }

    /// The submission endpoint, if submission is configured.
    pub fn submission_endpoint(&self) -> Option<&str> {
        self.submission.endpoint()
    }

    /// The aggregation server's base URL, if submission is configured (deletion requests go
    /// to `<base>/installation/<id>`).
    pub fn submission_server_base(&self) -> Option<String> {
        self.submission_endpoint().map(server_base)
    }

    /// The validated deployment-mode override.
    pub fn deployment_mode(&self) -> Option<DeploymentMode> {
        self.installation.deployment_mode()
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<()> {
        self.database
            .check()
            .and_then(|()| self.submission.check())
            .and_then(|()| self.mqtt.check())
            .and_then(|()| self.http.check())
            .and_then(|()| self.printernizer.check())
            .and_then(|()| self.installation.check())
            .map_err(|Invalid { key, msg }| Error::Config(format!("`{key}`: {msg}")))
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

impl Loader {
    /// Whether this is the Home Assistant add-on (the Supervisor set a token).
    pub fn addon_mode(&self) -> bool {
        self.env
            .get(SUPERVISOR_TOKEN_ENV)
            .is_some_and(|t| !t.is_empty())
    }

    /// Merges all layers, deserializes and validates.
    pub fn load(&self) -> Result<Settings> {
        let defaults = Config::try_from(&Settings::defaults(self.addon_mode()))
            .map_err(|e| Error::Config(e.to_string()))?;
        let mut builder = Config::builder().add_source(defaults);

        if let Some(path) = &self.config_file {
            builder = builder.add_source(
                printernizer_stats_shared::process::config_file(path).map_err(Error::Config)?,
            );
        }

        let options = self
            .env
            .get(OPTIONS_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(ADDON_OPTIONS_PATH));
        if options.is_file() {
            let nested = addon_options::nested(&options)?;
            builder = builder.add_source(File::from_str(&nested, FileFormat::Json));
        }

        builder = builder.add_source(
            Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(self.env.clone().into_iter().collect())),
        );

        let settings: Settings = builder
            .build()
            .and_then(Config::try_deserialize)
            .map_err(|e| Error::Config(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loader(env: &[(&str, &str)]) -> Loader {
        let mut env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // Never read a real /data/options.json from the test machine.
        env.entry(OPTIONS_ENV.into())
            .or_insert_with(|| "/nonexistent/options.json".into());
        Loader {
            config_file: None,
            env,
        }
    }

    #[test]
    fn defaults_and_addon_mode() {
        let s = loader(&[]).load().expect("defaults load");
        assert_eq!(s, Settings::defaults(false));
        let s = loader(&[("SUPERVISOR_TOKEN", "x")]).load().expect("loads");
        assert_eq!(
            s.database.path,
            PathBuf::from("/data/printernizer-stats.db")
        );
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "log_level = \"debug\"\n[retention]\ndays = 30\n").expect("write");
        let opts = dir.path().join("options.json");
        std::fs::write(
            &opts,
            r#"{"retention": {"days": 40}, "installation": {"country_code": "de"}}"#,
        )
        .expect("write");
        let mut l = loader(&[
            (OPTIONS_ENV, opts.to_str().expect("utf8")),
            ("PRINTERNIZER_STATS__DATABASE__PATH", "/tmp/x.db"),
        ]);
        l.config_file = Some(file);
        let s = l.load().expect("loads");
        assert_eq!(s.log_level, LogLevel::Debug);
        assert_eq!(s.retention.days, 40);
        assert_eq!(s.country_code().as_deref(), Some("DE"));
        assert_eq!(s.database.path, PathBuf::from("/tmp/x.db"));

        let s = loader(&[("PRINTERNIZER_STATS__RETENTION__DAYS", "12")])
            .load()
            .expect("loads");
        assert_eq!(s.retention.days, 12);
    }

    #[test]
    fn errors_name_the_key() {
        let err = |env: &[(&str, &str)]| loader(env).load().expect_err("must fail").to_string();
        assert!(err(&[("PRINTERNIZER_STATS__RETENTION__DAYS", "0")]).contains("retention.days"));
        assert!(err(&[("PRINTERNIZER_STATS__RETENTION__DAYS", "abc")]).contains("retention.days"));
        assert!(err(&[("PRINTERNIZER_STATS__LOG_LEVEL", "loud")]).contains("log_level"));
        assert!(err(&[("PRINTERNIZER_STATS__RETENTION__DAYZ", "3")]).contains("dayz"));
        assert!(
            err(&[("PRINTERNIZER_STATS__INSTALLATION__COUNTRY_CODE", "Germany")])
                .contains("installation.country_code")
        );
        assert!(
            err(&[("PRINTERNIZER_STATS__INSTALLATION__DEPLOYMENT_MODE", "k8s")])
                .contains("installation.deployment_mode")
        );
    }

    #[test]
    fn printernizer_bridge_settings() {
        let s = loader(&[
            (
                "PRINTERNIZER_STATS__PRINTERNIZER__URL",
                "http://127.0.0.1:8000/",
            ),
            ("PRINTERNIZER_STATS__PRINTERNIZER__POLL_INTERVAL_S", "5"),
        ])
        .load()
        .expect("loads");
        assert_eq!(s.printernizer.url(), Some("http://127.0.0.1:8000"));
        assert_eq!(s.printernizer.poll_interval_s, 5);
        assert_eq!(s.printernizer.timeout_s, 10);
        assert_eq!(loader(&[]).load().expect("loads").printernizer.url(), None);
        let err = |env: &[(&str, &str)]| loader(env).load().expect_err("must fail").to_string();
        for bad in ["printernizer:8000", "ftp://host", "http://", "not a url"] {
            assert!(
                err(&[("PRINTERNIZER_STATS__PRINTERNIZER__URL", bad)]).contains("printernizer.url"),
                "{bad}"
            );
        }
        assert!(
            err(&[("PRINTERNIZER_STATS__PRINTERNIZER__POLL_INTERVAL_S", "0")])
                .contains("printernizer.poll_interval_s")
        );
        assert!(
            err(&[("PRINTERNIZER_STATS__PRINTERNIZER__TIMEOUT_S", "500")])
                .contains("printernizer.timeout_s")
        );
    }

    #[test]
    fn the_aggregator_section_is_left_to_the_aggregator() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("shared.toml");
        std::fs::write(
            &file,
            "[aggregator]\nbind = \"0.0.0.0:8080\"\ndatabase_url = \"postgres://u@db/agg\"\n",
        )
        .expect("write");
        let mut l = loader(&[("PRINTERNIZER_STATS__AGGREGATOR__API_KEYS", "k1,k2")]);
        l.config_file = Some(file);
        let s = l.load().expect("a file shared with the aggregator loads");
        assert_eq!(s.retention.days, 365);
    }

    #[test]
    fn addon_options_are_flat() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = dir.path().join("options.json");
        std::fs::write(
            &opts,
            r#"{"log_level": "debug", "language": "de", "retention_days": 90,
                "submission_interval_days": 14, "submission_endpoint": "https://stats.example/submit",
                "submission_api_key": "", "printernizer_prefix": "pz", "discovery_prefix": "ha",
                "mqtt_host": "core-mosquitto", "mqtt_port": 1884, "mqtt_username": null}"#,
        )
        .expect("write");
        let s = loader(&[(OPTIONS_ENV, opts.to_str().expect("utf8"))])
            .load()
            .expect("loads");
        assert_eq!(s.log_level, LogLevel::Debug);
        assert_eq!(s.language, Language::De);
        assert_eq!(s.retention.days, 90);
        assert_eq!(s.submission.interval_days, 14);
        assert_eq!(
            s.submission_endpoint(),
            Some("https://stats.example/submit")
        );
        assert_eq!(s.submission.api_key, None, "empty means unset");
        assert_eq!(s.mqtt.printernizer_prefix, "pz");
        assert_eq!(s.mqtt.discovery_prefix, "ha");
        assert_eq!(s.mqtt.host.as_deref(), Some("core-mosquitto"));
        assert_eq!(s.mqtt.port, Some(1884));
        assert_eq!(s.mqtt.username, None);

        std::fs::write(&opts, r#"{"retention_days": 5000}"#).expect("write");
        let err = loader(&[(OPTIONS_ENV, opts.to_str().expect("utf8"))])
            .load()
            .expect_err("out of range");
        assert!(err.to_string().contains("retention.days"), "{err}");
        std::fs::write(&opts, "{not json").expect("write");
        let err = loader(&[(OPTIONS_ENV, opts.to_str().expect("utf8"))])
            .load()
            .expect_err("bad file");
        assert!(err.to_string().contains("options.json"), "{err}");
    }
}
