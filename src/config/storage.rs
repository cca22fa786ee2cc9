//! `[database]` and `[retention]`: where events are kept, and for how long.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Invalid, in_range};

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

/// `[retention]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Raw events older than this many days are pruned daily (rollups stay). 1–3650.
    pub days: u32,
}

impl DatabaseSettings {
    pub(super) fn check(&self) -> Result<(), Invalid> {
        if self.path.as_os_str().is_empty() {
            return Err(Invalid::new("database.path", "must not be empty".into()));
        }
        match self.max_size_mb {
            Some(mb) => in_range("database.max_size_mb", mb, 1..=1_000_000),
            None => Ok(()),
        }
    }
}

impl RetentionSettings {
    pub(super) fn check(&self) -> Result<(), Invalid> {
        in_range("retention.days", self.days, 1..=3650)
    }
}
