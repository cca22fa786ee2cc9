//! Home Assistant MQTT discovery: typed payloads, one file per entity kind.
//!
//! Per-entity discovery (`<prefix>/<component>/printernizer_stats/<object_id>/config`, retained,
//! QoS 1) works on every Home Assistant version. Every entity has `unique_id`
//! `printernizer_stats_<object_id>`, `default_entity_id` `<component>.printernizer_stats_<object_id>`
//! and, for Home Assistant before 2025.10 (which ignores `default_entity_id`), `object_id`
//! `printernizer_stats_<object_id>` — the same entity ids on old and new versions,
//! the shared [`Device`], an [`Origin`] and availability on `<base>/availability`.
//! Removing an entity = an empty retained payload on its config topic ([`removal`]).

pub mod binary_sensor;
pub mod button;
pub mod sensor;
pub mod switch;

use serde::Serialize;

use super::topics::Topics;
use crate::i18n::Catalog;

/// Where the add-on lives (discovery `origin.support_url`; `url` in `addon/config.yaml`).
pub const SUPPORT_URL: &str = "https://github.com/schmacka/printernizer-stats";

/// A discovery message to publish retained.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryMessage {
    /// Config topic.
    pub topic: String,
    /// JSON payload.
    pub payload: String,
}

/// The one device all entities belong to.
#[derive(Debug, Clone, Serialize)]
pub struct Device {
    /// `["printernizer_stats"]`.
    pub identifiers: Vec<String>,
    /// Device name.
    pub name: String,
    /// Manufacturer.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// This program's version.
    pub sw_version: String,
    /// The statistics page (the ingress panel in the add-on, the local page standalone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configuration_url: Option<String>,
}

/// Who created the entities.
#[derive(Debug, Clone, Serialize)]
pub struct Origin {
    /// Program name.
    pub name: String,
    /// Program version.
    #[serde(rename = "sw_version")]
    pub sw_version: String,
    /// Project URL.
    pub support_url: String,
}

/// `entity_category`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntityCategory {
    /// A setting (switches, buttons only — never sensors).
    Config,
    /// Read-only technical detail.
    Diagnostic,
}

/// Keys every entity has.
#[derive(Debug, Clone, Serialize)]
pub struct Common {
    /// `printernizer_stats_<object_id>`.
    pub unique_id: String,
    /// `<component>.printernizer_stats_<object_id>` (HA ≥ 2025.10).
    pub default_entity_id: String,
    /// `printernizer_stats_<object_id>`: the same entity id on Home Assistant before 2025.10,
    /// which ignores `default_entity_id` and would otherwise build the id from the (translated)
    /// name. 2025.10 deprecated it in favour of `default_entity_id` (whether it also warns when
    /// both are sent is not verified); from 2026.4 it is dropped silently.
    pub object_id: String,
    /// Translated entity name.
    pub name: String,
    /// Shared device.
    pub device: Device,
    /// Origin.
    pub origin: Origin,
    /// `<base>/availability`.
    pub availability_topic: String,
    /// Category, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_category: Option<EntityCategory>,
    /// Material Design icon.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icon: Option<&'static str>,
}

/// What entity builders need.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Topic names.
    pub topics: &'a Topics,
    /// Entity names.
    pub catalog: &'a Catalog,
    /// The device's `configuration_url`, when there is a page to open.
    pub configuration_url: Option<&'a str>,
}

impl Context<'_> {
    /// The common keys for one entity.
    pub fn common(
        &self,
        component: &str,
        object_id: &str,
        entity_category: Option<EntityCategory>,
        icon: Option<&'static str>,
    ) -> Common {
        let version = env!("CARGO_PKG_VERSION").to_owned();
        Common {
            unique_id: format!("printernizer_stats_{object_id}"),
            default_entity_id: format!("{component}.printernizer_stats_{object_id}"),
            object_id: format!("printernizer_stats_{object_id}"),
            name: self.catalog.get(object_id).to_owned(),
            device: Device {
                identifiers: vec!["printernizer_stats".into()],
                name: self.catalog.get("device_name").to_owned(),
                manufacturer: "Printernizer".into(),
                model: self.catalog.get("device_model").to_owned(),
                sw_version: version.clone(),
                configuration_url: self.configuration_url.map(str::to_owned),
            },
            origin: Origin {
                name: "printernizer-stats".into(),
                sw_version: version,
                support_url: SUPPORT_URL.into(),
            },
            availability_topic: self.topics.availability(),
            entity_category,
            icon,
        }
    }

    /// The common keys for an entity whose entity id is `<component>.printernizer_stats_<short>`
    /// instead of its `key` (which stays its `unique_id`, name and state key), so that the id
    /// stays under 50 characters.
    pub fn common_short(
        &self,
        component: &str,
        key: &str,
        short: &str,
        entity_category: Option<EntityCategory>,
        icon: Option<&'static str>,
    ) -> Common {
        Common {
            default_entity_id: format!("{component}.printernizer_stats_{short}"),
            object_id: format!("printernizer_stats_{short}"),
            ..self.common(component, key, entity_category, icon)
        }
    }

    /// Serializes one entity's payload to its config topic.
    pub fn message<T: Serialize>(
        &self,
        component: &str,
        object_id: &str,
        payload: &T,
    ) -> DiscoveryMessage {
        DiscoveryMessage {
            topic: self.topics.discovery(component, object_id),
            // Serializing these plain structs cannot fail.
            payload: serde_json::to_string(payload).unwrap_or_default(),
        }
    }
}

/// `{{ value_json.<key> }}`.
pub fn json_template(key: &str) -> String {
    format!("{{{{ value_json.{key} }}}}")
}

/// Every entity's discovery message, in publishing order.
pub fn all(ctx: Context<'_>) -> Vec<DiscoveryMessage> {
    let mut out = vec![switch::opt_in(ctx), button::submit_now(ctx)];
    out.extend(sensor::all(ctx));
    out.extend(binary_sensor::all(ctx));
    out
}

/// The message that removes an entity (empty retained payload).
pub fn removal(topics: &Topics, component: &str, object_id: &str) -> DiscoveryMessage {
    DiscoveryMessage {
        topic: topics.discovery(component, object_id),
        payload: String::new(),
    }
}
