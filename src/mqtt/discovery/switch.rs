//! The opt-in switch: the same setting as the CLI's `opt-in`/`opt-out` and the API.

use serde::Serialize;

use super::{Common, Context, DiscoveryMessage};

/// An MQTT switch.
#[derive(Debug, Clone, Serialize)]
pub struct Switch {
    /// Common keys.
    #[serde(flatten)]
    pub common: Common,
    /// `ON`/`OFF` commands.
    pub command_topic: String,
    /// Retained `ON`/`OFF` state.
    pub state_topic: String,
    /// `ON`.
    pub payload_on: &'static str,
    /// `OFF`.
    pub payload_off: &'static str,
    /// `{"reason": …}`: why sharing is off.
    pub json_attributes_topic: String,
}

/// `switch.printernizer_stats_opt_in` — a primary entity (no `entity_category`): toggling it
/// from a dashboard is its main use, and Home Assistant's generated dashboards hide `config`
/// entities.
pub fn opt_in(ctx: Context<'_>) -> DiscoveryMessage {
    let switch = Switch {
        common: ctx.common("switch", "opt_in", None, Some("mdi:chart-box-outline")),
        command_topic: ctx.topics.opt_in_set(),
        state_topic: ctx.topics.opt_in_state(),
        payload_on: "ON",
        payload_off: "OFF",
        json_attributes_topic: ctx.topics.opt_in_attributes(),
    };
    ctx.message("switch", "opt_in", &switch)
}
