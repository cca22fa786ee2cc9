//! Every MQTT topic the service uses, derived from the configured prefixes.

use crate::config::MqttSettings;

/// The topic names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// `mqtt.base_topic`, e.g. `printernizer_stats`.
    pub base: String,
    /// `mqtt.discovery_prefix`, e.g. `homeassistant`.
    pub discovery_prefix: String,
    /// `mqtt.printernizer_prefix`, e.g. `printernizer`.
    pub printernizer: String,
}

impl Topics {
    /// Topics for the given settings.
    pub fn new(mqtt: &MqttSettings) -> Self {
        Self {
            base: mqtt.base_topic.clone(),
            discovery_prefix: mqtt.discovery_prefix.clone(),
            printernizer: mqtt.printernizer_prefix.clone(),
        }
    }

    /// `<base>/availability`: `online`/`offline`, retained; our LWT.
    pub fn availability(&self) -> String {
        format!("{}/availability", self.base)
    }
    /// `<base>/state`: the sensors' JSON, retained.
    pub fn state(&self) -> String {
        format!("{}/state", self.base)
    }
    /// `<base>/<key>`: one timestamp sensor's own state (RFC 3339, or `None` once when it
    /// stops having one), retained.
    pub fn timestamp_state(&self, key: &str) -> String {
        format!("{}/{key}", self.base)
    }
    /// `<base>/opt_in/set`: `ON`/`OFF` from Home Assistant.
    pub fn opt_in_set(&self) -> String {
        format!("{}/opt_in/set", self.base)
    }
    /// `<base>/opt_in/state`: `ON`/`OFF`, retained.
    pub fn opt_in_state(&self) -> String {
        format!("{}/opt_in/state", self.base)
    }
    /// `<base>/opt_in/attributes`: `{"reason": …}` why sharing is off (or null), retained.
    pub fn opt_in_attributes(&self) -> String {
        format!("{}/opt_in/attributes", self.base)
    }
    /// `<base>/submit_now/press`.
    pub fn submit_now(&self) -> String {
        format!("{}/submit_now/press", self.base)
    }
    /// `<printernizer>/events/+`.
    pub fn events_filter(&self) -> String {
        format!("{}/events/+", self.printernizer)
    }
    /// `<printernizer>/events/` (prefix of event topics).
    pub fn events_prefix(&self) -> String {
        format!("{}/events/", self.printernizer)
    }
    /// `<printernizer>/status`: Printernizer's `online`/`offline` (its LWT).
    pub fn printernizer_status(&self) -> String {
        format!("{}/status", self.printernizer)
    }
    /// `<discovery>/status`: Home Assistant's birth/will.
    pub fn ha_status(&self) -> String {
        format!("{}/status", self.discovery_prefix)
    }
    /// `<discovery>/<component>/printernizer_stats/<object_id>/config`.
    pub fn discovery(&self, component: &str, object_id: &str) -> String {
        format!(
            "{}/{component}/printernizer_stats/{object_id}/config",
            self.discovery_prefix
        )
    }
}
