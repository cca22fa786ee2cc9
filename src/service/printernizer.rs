//! What the service knows about Printernizer itself: whether it answers, and whether it
//! shares its own usage statistics (then this service submits nothing).

use super::*;

impl StatsService {
    /// Records a Printernizer availability transition (its MQTT `status` topic, or the
    /// bridge's `/health` reachability) as `app_start`/`app_shutdown`, so that uptime is
    /// measured from it. Repeated `online` (retained messages after every reconnect) records
    /// nothing, and neither does `online` after an `app_start` that Printernizer's own log
    /// already supplied: each start counts once. `at` is when it happened (default now; the
    /// bridge dates a shutdown to the last time Printernizer answered).
    pub async fn printernizer_availability(
        &self,
        online: bool,
        at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        self.set_printernizer_online(online);
        let last: Option<String> = self
            .store
            .read(|c| {
                use rusqlite::OptionalExtension;
                Ok(c.query_row(
                    "SELECT event_type FROM usage_events WHERE event_type IN ('app_start', 'app_shutdown')
                     ORDER BY timestamp DESC LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()?)
            })
            .await?;
        let up = last.as_deref() == Some("app_start");
        if online != up {
            let kind = if online { "app_start" } else { "app_shutdown" };
            let mut raw = RawEvent::new(kind, serde_json::Value::Null);
            raw.timestamp = at.map(|t| t.to_rfc3339());
            self.record(&raw).await?;
            tracing::info!(online, "Printernizer availability changed");
        }
        Ok(())
    }

    /// Sets Printernizer's availability as shown (the binary sensor) without recording
    /// anything: the bridge records the start itself once it has read the log.
    pub fn set_printernizer_online(&self, online: bool) {
        let previous = self
            .printernizer_online
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(online);
        if previous != Some(online) {
            self.touched();
        }
    }

    /// Printernizer's availability as last reported (MQTT status or the bridge); `None` until
    /// either said anything in this process.
    pub fn printernizer_online(&self) -> Option<bool> {
        *self
            .printernizer_online
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Records whether Printernizer itself shares its usage statistics; a change is logged
    /// once and shown everywhere (the switch's `reason`, `status`, the page).
    pub async fn set_printernizer_sharing(&self, sharing: bool) -> Result<()> {
        let changed = self
            .store
            .write(move |tx, now| {
                settings::set_flag(tx, settings::PRINTERNIZER_SHARING, sharing, now)
            })
            .await?;
        if changed {
            if sharing {
                tracing::warn!("{PRINTERNIZER_SHARES_REASON}");
            } else {
                tracing::info!(
                    "Printernizer no longer shares its own usage statistics; submission follows this service's opt-in again"
                );
            }
            self.changed();
        }
        Ok(())
    }

    /// Whether Printernizer itself shares its usage statistics (as the bridge last saw it).
    pub async fn printernizer_sharing(&self) -> Result<bool> {
        self.store
            .read(|c| settings::flag(c, settings::PRINTERNIZER_SHARING))
            .await
    }

    /// The event sources this configuration uses.
    pub fn sources(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.settings.mqtt.enabled {
            out.push("mqtt".to_owned());
        }
        let bridge = &self.settings.printernizer;
        if bridge.enabled && (bridge.url().is_some() || self.env.addon_mode) {
            out.push("printernizer api".to_owned());
        }
        out
    }

    /// Whether the user opted in to the current report schema (and `DO_NOT_TRACK` is unset):
    /// what the Home Assistant switch shows.
    pub async fn sharing_active(&self) -> Result<bool> {
        if self.env.do_not_track {
            return Ok(false);
        }
        self.store
            .read(|c| {
                Ok(settings::opt_in(c)? == settings::OptIn::Enabled
                    && settings::get(c, settings::PRIVACY_POLICY_VERSION)?.as_deref()
                        == Some(SCHEMA_VERSION))
            })
            .await
    }
}
