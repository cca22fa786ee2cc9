//! `[mqtt]`: the broker and the topics.

use std::path::PathBuf;

use printernizer_stats_shared::bounded::Bounded;
use printernizer_stats_shared::secret::Secret;
use serde::{Deserialize, Serialize};

use super::Invalid;

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
    #[serde(skip_serializing)]
    pub password: Option<Secret>,
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
    pub birth_delay_max_s: Bounded<1, 60>,
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
            birth_delay_max_s: Bounded::of(5),
            enabled: true,
        }
    }
}

impl MqttSettings {
    /// The longest random delay before republishing after Home Assistant's birth message.
    pub fn birth_delay_max(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.birth_delay_max_s.get())
    }

    pub(super) fn check(&self) -> Result<(), Invalid> {
        for (key, topic) in [
            ("mqtt.discovery_prefix", &self.discovery_prefix),
            ("mqtt.base_topic", &self.base_topic),
            ("mqtt.printernizer_prefix", &self.printernizer_prefix),
        ] {
            if topic.is_empty() || topic.contains(['+', '#']) || topic.ends_with('/') {
                return Err(Invalid::new(
                    key,
                    format!(
                        "`{topic}` must be a non-empty topic without wildcards or trailing `/`"
                    ),
                ));
            }
        }
        Ok(())
    }
}
