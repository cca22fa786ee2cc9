//! Statistics sensors, all read from the one retained JSON state topic `<base>/state`.
//!
//! Timestamp sensors read their own topic, `<base>/<object_id>`, with no template: Home
//! Assistant before 2024.10 warns ("Invalid state message") for every `None` a timestamp sensor
//! gets, and a template cannot yield "unknown" silently there. So the service publishes a
//! timestamp when there is one and `None` only when it replaces one (see `mqtt::handler`): a
//! timestamp that was never set is never sent, and the sensor stays unknown without a word.
//!
//! `state_class`: `measurement` for rolling 7-day windows (they go up and down), and
//! `total_increasing` for lifetime counters that only grow (a drop — `delete-all` — reads as a
//! meter reset, which is what it is). Timestamps have no state class. Technical figures are
//! `diagnostic`; no sensor is ever `config`.

use serde::Serialize;

use super::{Common, Context, DiscoveryMessage, EntityCategory, json_template};

/// An MQTT sensor.
#[derive(Debug, Clone, Serialize)]
pub struct Sensor {
    /// Common keys.
    #[serde(flatten)]
    pub common: Common,
    /// `<base>/state`, or a timestamp sensor's own `<base>/<object_id>`.
    pub state_topic: String,
    /// `{{ value_json.<object_id> }}` on `<base>/state`; none on a timestamp's own topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_template: Option<String>,
    /// Device class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_class: Option<&'static str>,
    /// State class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_class: Option<&'static str>,
    /// Unit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_of_measurement: Option<&'static str>,
    /// `<base>/state` when the sensor has attributes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_attributes_topic: Option<String>,
    /// Picks the attributes out of the state JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_attributes_template: Option<String>,
    /// Decimals Home Assistant shows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggested_display_precision: Option<u8>,
    /// `false` for technical sensors a user can switch on (sent only when `false`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled_by_default: Option<bool>,
}

/// One sensor's definition.
#[derive(Debug, Clone, Copy)]
pub struct SensorDef {
    /// Object id = key in the state JSON = translation key.
    pub object_id: &'static str,
    /// Device class.
    pub device_class: Option<&'static str>,
    /// State class.
    pub state_class: Option<&'static str>,
    /// Unit.
    pub unit: Option<&'static str>,
    /// Diagnostic?
    pub diagnostic: bool,
    /// Icon.
    pub icon: Option<&'static str>,
    /// Keys of the state JSON shown as the sensor's attributes.
    pub attributes: &'static [&'static str],
    /// Decimals shown.
    pub precision: Option<u8>,
    /// Enabled when the entity is created.
    pub enabled: bool,
}

const fn rolling(object_id: &'static str, unit: &'static str, icon: &'static str) -> SensorDef {
    SensorDef {
        object_id,
        device_class: None,
        state_class: Some("measurement"),
        unit: Some(unit),
        diagnostic: false,
        icon: Some(icon),
        attributes: &[],
        precision: None,
        enabled: true,
    }
}

const fn counter(
    object_id: &'static str,
    unit: &'static str,
    diagnostic: bool,
    icon: &'static str,
) -> SensorDef {
    SensorDef {
        object_id,
        device_class: None,
        state_class: Some("total_increasing"),
        unit: Some(unit),
        diagnostic,
        icon: Some(icon),
        attributes: &[],
        precision: None,
        enabled: true,
    }
}

const fn timestamp(object_id: &'static str, icon: &'static str) -> SensorDef {
    SensorDef {
        object_id,
        device_class: Some("timestamp"),
        state_class: None,
        unit: None,
        diagnostic: false,
        icon: Some(icon),
        attributes: &[],
        precision: None,
        enabled: true,
    }
}

/// All sensors.
pub const SENSORS: &[SensorDef] = &[
    rolling("jobs_week", "jobs", "mdi:printer-3d"),
    rolling("jobs_completed_week", "jobs", "mdi:check-circle-outline"),
    rolling("jobs_failed_week", "jobs", "mdi:close-circle-outline"),
    rolling(
        "files_downloaded_week",
        "files",
        "mdi:file-download-outline",
    ),
    rolling("files_uploaded_week", "files", "mdi:file-upload-outline"),
    rolling("errors_week", "errors", "mdi:alert-circle-outline"),
    rolling("printers", "printers", "mdi:printer-3d-nozzle"),
    SensorDef {
        object_id: "uptime_week",
        device_class: Some("duration"),
        state_class: Some("measurement"),
        unit: Some("h"),
        diagnostic: false,
        icon: None,
        attributes: &[],
        precision: Some(1),
        enabled: true,
    },
    timestamp("last_submission", "mdi:upload"),
    timestamp("next_submission", "mdi:calendar-clock"),
    counter("events_total", "events", true, "mdi:database"),
    SensorDef {
        // Pending events go down when a report is accepted: a current value, not a meter.
        object_id: "events_pending",
        device_class: None,
        state_class: Some("measurement"),
        unit: Some("events"),
        diagnostic: true,
        icon: Some("mdi:database-clock"),
        attributes: &[],
        precision: None,
        enabled: true,
    },
    counter("submissions_total", "reports", false, "mdi:counter"),
    SensorDef {
        object_id: "installation_id",
        device_class: None,
        state_class: None,
        unit: None,
        diagnostic: true,
        icon: Some("mdi:identifier"),
        attributes: &[],
        precision: None,
        enabled: false,
    },
    SensorDef {
        // Technical: off until a user wants it.
        enabled: false,
        ..counter(
            "rejected_messages",
            "messages",
            true,
            "mdi:message-alert-outline",
        )
    },
    SensorDef {
        // `mqtt`, `printernizer api` or both; when the bridge last read Printernizer.
        object_id: "data_source",
        device_class: None,
        state_class: None,
        unit: None,
        diagnostic: true,
        icon: Some("mdi:database-import-outline"),
        attributes: &["bridge_last_success"],
        precision: None,
        enabled: true,
    },
];

/// `{{ {"a": value_json.a, …} | tojson }}`.
fn attributes_template(keys: &[&str]) -> String {
    let pairs: Vec<String> = keys
        .iter()
        .map(|k| format!("\"{k}\": value_json.{k}"))
        .collect();
    format!("{{{{ {{{}}} | tojson }}}}", pairs.join(", "))
}

/// Discovery messages for all sensors.
pub fn all(ctx: Context<'_>) -> Vec<DiscoveryMessage> {
    SENSORS
        .iter()
        .map(|def| {
            let own_topic = def.device_class == Some("timestamp");
            let sensor = Sensor {
                common: ctx.common(
                    "sensor",
                    def.object_id,
                    def.diagnostic.then_some(EntityCategory::Diagnostic),
                    def.icon,
                ),
                state_topic: if own_topic {
                    ctx.topics.timestamp_state(def.object_id)
                } else {
                    ctx.topics.state()
                },
                value_template: (!own_topic).then(|| json_template(def.object_id)),
                device_class: def.device_class,
                state_class: def.state_class,
                unit_of_measurement: def.unit,
                json_attributes_topic: (!def.attributes.is_empty()).then(|| ctx.topics.state()),
                json_attributes_template: (!def.attributes.is_empty())
                    .then(|| attributes_template(def.attributes)),
                suggested_display_precision: def.precision,
                enabled_by_default: (!def.enabled).then_some(false),
            };
            ctx.message("sensor", def.object_id, &sensor)
        })
        .collect()
}
