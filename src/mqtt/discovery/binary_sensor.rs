//! Binary sensors, read from `<base>/state` like the sensors (`ON`/`OFF`).

use serde::Serialize;

use super::{Common, Context, DiscoveryMessage, EntityCategory, json_template};

/// An MQTT binary sensor.
#[derive(Debug, Clone, Serialize)]
pub struct BinarySensor {
    /// Common keys.
    #[serde(flatten)]
    pub common: Common,
    /// `<base>/state`.
    pub state_topic: String,
    /// `{{ value_json.<object_id> }}`.
    pub value_template: String,
    /// Device class.
    pub device_class: &'static str,
    /// `ON`.
    pub payload_on: &'static str,
    /// `OFF`.
    pub payload_off: &'static str,
}

/// (key — `unique_id`, state key, name; entity id suffix — under 50 characters in all; device
/// class; diagnostic)
const BINARY_SENSORS: &[(&str, &str, &str, bool)] = &[
    ("printernizer_online", "online", "connectivity", false),
    ("submission_problem", "submit_problem", "problem", true),
    ("storage_problem", "storage_problem", "problem", true),
];

/// Discovery messages for all binary sensors.
pub fn all(ctx: Context<'_>) -> Vec<DiscoveryMessage> {
    BINARY_SENSORS
        .iter()
        .map(|(object_id, short, device_class, diagnostic)| {
            let sensor = BinarySensor {
                common: ctx.common_short(
                    "binary_sensor",
                    object_id,
                    short,
                    diagnostic.then_some(EntityCategory::Diagnostic),
                    None,
                ),
                state_topic: ctx.topics.state(),
                value_template: json_template(object_id),
                device_class,
                payload_on: "ON",
                payload_off: "OFF",
            };
            ctx.message("binary_sensor", object_id, &sensor)
        })
        .collect()
}
