//! The "Send report now" button.

use serde::Serialize;

use super::{Common, Context, DiscoveryMessage, EntityCategory};

/// An MQTT button.
#[derive(Debug, Clone, Serialize)]
pub struct Button {
    /// Common keys.
    #[serde(flatten)]
    pub common: Common,
    /// Where presses arrive.
    pub command_topic: String,
    /// `PRESS`.
    pub payload_press: &'static str,
}

/// `button.printernizer_stats_submit_now`.
pub fn submit_now(ctx: Context<'_>) -> DiscoveryMessage {
    let button = Button {
        common: ctx.common(
            "button",
            "submit_now",
            Some(EntityCategory::Config),
            Some("mdi:send"),
        ),
        command_topic: ctx.topics.submit_now(),
        payload_press: "PRESS",
    };
    ctx.message("button", "submit_now", &button)
}
