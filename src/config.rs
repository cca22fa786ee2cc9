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

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use serde::{Deserialize, Serialize};

use crate::event::vocab::DeploymentMode;
use crate::{Error, Result};

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
    /// The aggregation server (`printernizer-stats aggregator`).
    #[serde(default)]
    pub aggregator: AggregatorSettings,
    /// The local HTTP API and web page of `run`.
    #[serde(default)]
    pub http: HttpSettings,
    /// The bridge that reads Printernizer's REST API (its usage-statistics log, health,
    /// printers and jobs).
    #[serde(default)]
    pub printernizer: PrinternizerSettings,
}

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
        self.url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| u.trim_end_matches('/'))
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
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
        let text = match self
            .bind
            .as_deref()
            .map(str::trim)
            .filter(|b| !b.is_empty())
        {
            Some(b) => b.to_owned(),
            None if addon_mode => format!("0.0.0.0:{HTTP_PORT}"),
            None => format!("127.0.0.1:{HTTP_PORT}"),
        };
        text.parse()
            .map_err(|_| format!("`{text}` is not an address like 127.0.0.1:8099"))
    }

    /// The configured token, if not blank.
    pub fn token(&self) -> Option<&str> {
        self.token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }
}

/// `[aggregator]` — only read by `printernizer-stats aggregator`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregatorSettings {
    /// Listen address.
    pub bind: String,
    /// `sqlite://relative/path.db`, `sqlite:///absolute/path.db` or `postgres://…`.
    pub database_url: String,
    /// Accepted `X-API-Key` values; empty = no key required. As an environment variable:
    /// comma-separated (`PRINTERNIZER_STATS__AGGREGATOR__API_KEYS=k1,k2`).
    pub api_keys: Vec<String>,
    /// Accepted submissions per installation and hour (1–1000).
    pub rate_limit_per_hour: u32,
    /// Largest accepted request body (1 KiB – 16 MiB).
    pub max_body_bytes: usize,
    /// Submissions older than this many days are deleted (1–3650).
    pub retention_days: u32,
    /// `/stats/overview` folds every bucket with fewer installations into `other` (1–1000).
    pub k_anonymity: u32,
}

impl Default for AggregatorSettings {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            database_url: "sqlite://aggregator.db".into(),
            api_keys: Vec::new(),
            rate_limit_per_hour: 1,
            max_body_bytes: 64 * 1024,
            retention_days: 730,
            k_anonymity: 5,
        }
    }
}

impl AggregatorSettings {
    /// The configured API keys without blanks (an empty environment value means "none").
    pub fn api_keys(&self) -> Vec<String> {
        self.api_keys
            .iter()
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect()
    }
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

/// `[mqtt]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSettings {
    /// Broker host. Unset in add-on mode: taken from the Supervisor's MQTT service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Broker port (default 1883, or 8883 with TLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Broker user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Broker password (never logged or exported).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Connect with TLS.
    pub tls: bool,
    /// PEM CA bundle for TLS (default: the system's roots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// MQTT client id (default `printernizer-stats-<short installation hash>`); must stay
    /// stable, the broker keeps the persistent session under it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Home Assistant discovery prefix.
    pub discovery_prefix: String,
    /// Our topics live under this prefix.
    pub base_topic: String,
    /// Printernizer publishes under this prefix.
    pub printernizer_prefix: String,
    /// Largest random delay (seconds) before republishing after Home Assistant's birth message.
    pub birth_delay_max_s: u64,
    /// Connect to MQTT at all (`run` without a broker only stores CLI events).
    pub enabled: bool,
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            host: None,
            port: None,
            username: None,
            password: None,
            tls: false,
            ca_file: None,
            client_id: None,
            discovery_prefix: "homeassistant".into(),
            base_topic: "printernizer_stats".into(),
            printernizer_prefix: "printernizer".into(),
            birth_delay_max_s: 5,
            enabled: true,
        }
    }
}

/// `[database]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// SQLite file (created with its directory when missing).
    pub path: PathBuf,
    /// Largest size of the database file in MiB (1–1000000); beyond it, storing fails as on a
    /// full disk and events wait at the MQTT broker. Unset: only the disk limits it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size_mb: Option<u32>,
}

/// `log_level`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// The `tracing` filter directive.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// `[retention]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Raw events older than this many days are pruned daily (rollups stay). 1–3650.
    pub days: u32,
}

/// `[installation]`
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallationSettings {
    /// ISO 3166-1 alpha-2 country code to report (never derived from an IP address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country_code: Option<String>,
    /// Overrides the detected deployment mode: homeassistant, docker, standalone, pi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_mode: Option<String>,
}

/// `[submission]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmissionSettings {
    /// Days between reports (1–30); also the length of the preview before consent.
    pub interval_days: u32,
    /// URL of the aggregation server's `/submit`; empty = submission disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Sent as `X-API-Key` when set (never logged or exported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Request timeout in seconds (5–60).
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
}

fn default_timeout_s() -> u64 {
    10
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
            retention: RetentionSettings { days: 365 },
            installation: InstallationSettings::default(),
            submission: SubmissionSettings {
                interval_days: 7,
                endpoint: None,
                api_key: None,
                timeout_s: default_timeout_s(),
            },
            mqtt: MqttSettings::default(),
            language: Language::En,
            aggregator: AggregatorSettings::default(),
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
        self.installation
            .country_code
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_ascii_uppercase)
    }

    /// The submission endpoint, if submission is configured.
    pub fn submission_endpoint(&self) -> Option<&str> {
        self.submission
            .endpoint
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
    }

    /// The validated deployment-mode override.
    pub fn deployment_mode(&self) -> Option<DeploymentMode> {
        self.installation
            .deployment_mode
            .as_deref()
            .filter(|m| !m.trim().is_empty())
            .and_then(DeploymentMode::from_word)
    }

    /// Checks every value's range; the error names the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, msg: String| Err(Error::Config(format!("`{key}`: {msg}")));
        if self.database.path.as_os_str().is_empty() {
            return bad("database.path", "must not be empty".into());
        }
        if let Some(mb) = self.database.max_size_mb
            && !(1..=1_000_000).contains(&mb)
        {
            return bad(
                "database.max_size_mb",
                format!("{mb} is out of range 1–1000000"),
            );
        }
        if !(1..=3650).contains(&self.retention.days) {
            return bad(
                "retention.days",
                format!("{} is out of range 1–3650", self.retention.days),
            );
        }
        if !(1..=30).contains(&self.submission.interval_days) {
            return bad(
                "submission.interval_days",
                format!("{} is out of range 1–30", self.submission.interval_days),
            );
        }
        if !(5..=60).contains(&self.submission.timeout_s) {
            return bad(
                "submission.timeout_s",
                format!("{} is out of range 5–60", self.submission.timeout_s),
            );
        }
        if let Some(url) = self.submission_endpoint()
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return bad(
                "submission.endpoint",
                format!("`{url}` is not an http(s) URL"),
            );
        }
        for (key, topic) in [
            ("mqtt.discovery_prefix", &self.mqtt.discovery_prefix),
            ("mqtt.base_topic", &self.mqtt.base_topic),
            ("mqtt.printernizer_prefix", &self.mqtt.printernizer_prefix),
        ] {
            if topic.is_empty() || topic.contains(['+', '#']) || topic.ends_with('/') {
                return bad(
                    key,
                    format!(
                        "`{topic}` must be a non-empty topic without wildcards or trailing `/`"
                    ),
                );
            }
        }
        if !(1..=60).contains(&self.mqtt.birth_delay_max_s) {
            return bad(
                "mqtt.birth_delay_max_s",
                format!("{} is out of range 1–60", self.mqtt.birth_delay_max_s),
            );
        }
        if let Err(e) = self.http.bind_addr(false) {
            return bad("http.bind", e);
        }
        if let Some(url) = self.printernizer.url()
            && let Err(e) = check_printernizer_url(url)
        {
            return bad("printernizer.url", e);
        }
        if !(1..=3600).contains(&self.printernizer.poll_interval_s) {
            return bad(
                "printernizer.poll_interval_s",
                format!(
                    "{} is out of range 1–3600",
                    self.printernizer.poll_interval_s
                ),
            );
        }
        if !(1..=120).contains(&self.printernizer.timeout_s) {
            return bad(
                "printernizer.timeout_s",
                format!("{} is out of range 1–120", self.printernizer.timeout_s),
            );
        }
        let agg = &self.aggregator;
        if agg.bind.parse::<std::net::SocketAddr>().is_err() {
            return bad(
                "aggregator.bind",
                format!("`{}` is not an address like 127.0.0.1:8080", agg.bind),
            );
        }
        if let Err(e) = crate::aggregator::store::DatabaseUrl::parse(&agg.database_url) {
            return bad("aggregator.database_url", e);
        }
        for (key, value, range) in [
            (
                "aggregator.rate_limit_per_hour",
                agg.rate_limit_per_hour as usize,
                1..=1000,
            ),
            (
                "aggregator.max_body_bytes",
                agg.max_body_bytes,
                1024..=16 * 1024 * 1024,
            ),
            (
                "aggregator.retention_days",
                agg.retention_days as usize,
                1..=3650,
            ),
            ("aggregator.k_anonymity", agg.k_anonymity as usize, 1..=1000),
        ] {
            if !range.contains(&value) {
                return bad(
                    key,
                    format!("{value} is out of range {}–{}", range.start(), range.end()),
                );
            }
        }
        if let Some(cc) = self.country_code()
            && (cc.len() != 2 || !cc.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return bad(
                "installation.country_code",
                format!("`{cc}` is not a two-letter ISO 3166-1 code"),
            );
        }
        if let Some(mode) = self.installation.deployment_mode.as_deref()
            && !mode.trim().is_empty()
            && matches!(
                DeploymentMode::from_word(mode),
                None | Some(DeploymentMode::Other)
            )
        {
            return bad(
                "installation.deployment_mode",
                format!("`{mode}` is not one of homeassistant, docker, standalone, pi"),
            );
        }
        Ok(())
    }
}

/// The add-on's flat options (`addon/config.yaml`) and the configuration keys they set.
pub const ADDON_OPTIONS: &[(&str, &str)] = &[
    ("log_level", "log_level"),
    ("language", "language"),
    ("submission_endpoint", "submission.endpoint"),
    ("submission_api_key", "submission.api_key"),
    ("submission_interval_days", "submission.interval_days"),
    ("retention_days", "retention.days"),
    ("printernizer_prefix", "mqtt.printernizer_prefix"),
    ("discovery_prefix", "mqtt.discovery_prefix"),
    ("mqtt_host", "mqtt.host"),
    ("mqtt_port", "mqtt.port"),
    ("mqtt_username", "mqtt.username"),
    ("mqtt_password", "mqtt.password"),
    ("printernizer_url", "printernizer.url"),
];

/// Reads `/data/options.json` and maps the add-on's flat options onto configuration keys
/// (`retention_days` → `retention.days`); other keys pass through as they are (so a nested
/// file works too). Empty and `null` values mean "not set". Returns the nested JSON.
fn addon_options(path: &Path) -> Result<String> {
    let bad = |msg: String| Error::Config(format!("{}: {msg}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON ({e})")))?;
    let serde_json::Value::Object(flat) = value else {
        return Err(bad("not a JSON object".into()));
    };
    let mut nested = serde_json::Map::new();
    for (key, value) in flat {
        if value.is_null() || value.as_str().is_some_and(|s| s.trim().is_empty()) {
            continue;
        }
        let target = ADDON_OPTIONS
            .iter()
            .find(|(option, _)| *option == key)
            .map_or(key.as_str(), |(_, target)| target);
        match target.split_once('.') {
            Some((section, leaf)) => {
                let entry = nested
                    .entry(section.to_owned())
                    .or_insert_with(|| serde_json::Value::Object(Default::default()));
                if let serde_json::Value::Object(map) = entry {
                    map.insert(leaf.to_owned(), value);
                }
            }
            None => {
                nested.insert(target.to_owned(), value);
            }
        }
    }
    Ok(serde_json::Value::Object(nested).to_string())
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
            if !path.is_file() {
                return Err(Error::Config(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            let format = match path.extension().and_then(|e| e.to_str()) {
                Some("json") => FileFormat::Json,
                _ => FileFormat::Toml,
            };
            builder = builder.add_source(File::from(path.as_path()).format(format));
        }

        let options = self
            .env
            .get(OPTIONS_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(ADDON_OPTIONS_PATH));
        if options.is_file() {
            let nested = addon_options(&options)?;
            builder = builder.add_source(File::from_str(&nested, FileFormat::Json));
        }

        builder = builder.add_source(
            Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("aggregator.api_keys")
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
    fn aggregator_keys_from_the_environment() {
        let s = loader(&[
            ("PRINTERNIZER_STATS__AGGREGATOR__API_KEYS", "k1,k2"),
            ("PRINTERNIZER_STATS__AGGREGATOR__RATE_LIMIT_PER_HOUR", "3"),
            (
                "PRINTERNIZER_STATS__AGGREGATOR__DATABASE_URL",
                "postgres://u@127.0.0.1/agg",
            ),
        ])
        .load()
        .expect("loads");
        assert_eq!(s.aggregator.api_keys(), ["k1", "k2"]);
        assert_eq!(s.aggregator.rate_limit_per_hour, 3);
        let s = loader(&[("PRINTERNIZER_STATS__AGGREGATOR__API_KEYS", "")])
            .load()
            .expect("loads");
        assert!(s.aggregator.api_keys().is_empty());
        let err = |env: &[(&str, &str)]| loader(env).load().expect_err("must fail").to_string();
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
