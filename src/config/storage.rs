//! `[database]` and `[retention]`: where events are kept, and for how long.

use std::path::PathBuf;

use printernizer_stats_shared::bounded::Bounded;
use serde::{Deserialize, Serialize};

use super::Invalid;

/// `[database]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// SQLite file (created with its directory when missing).
    pub path: PathBuf,
    /// Largest size of the database file in MiB (1–1000000); beyond it, storing fails as on a
    /// full disk and events wait at the MQTT broker. Unset: only the disk limits it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size_mb: Option<Bounded<1, 1_000_000>>,
}

/// `[retention]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Raw events older than this many days are pruned daily (rollups stay). 1–3650.
    pub days: Bounded<1, 3650>,
}

impl RetentionSettings {
    /// How long raw events are kept.
    pub fn period(&self) -> chrono::Duration {
        chrono::Duration::days(self.days.get() as i64)
    }
}

impl DatabaseSettings {
    /// The cap on the database file, in MiB.
    pub fn max_size_mib(&self) -> Option<u32> {
        self.max_size_mb
            .map(|mb| u32::try_from(mb.get()).unwrap_or(u32::MAX))
    }

    pub(super) fn check(&self) -> Result<(), Invalid> {
        if self.path.as_os_str().is_empty() {
            return Err(Invalid::new("database.path", "must not be empty".into()));
        }
        Ok(())
    }
}
