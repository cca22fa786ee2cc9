//! The `usage_settings` key/value table: one source of truth for opt-in and installation state.
//!
//! Keys are the seed's plus [`PRINTER_SALT`]; [`is_secret`] keys never leave the machine (not in
//! exports, not in reports).

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::fmt_ts;
use crate::Result;

/// `"enabled"` or `"disabled"` ([`OptIn`]).
pub const OPT_IN_STATUS: &str = "opt_in_status";
/// Random UUID identifying this installation anonymously.
pub const INSTALLATION_ID: &str = "installation_id";
/// When the store was first created (RFC 3339).
pub const FIRST_RUN_DATE: &str = "first_run_date";
/// When the last report was accepted (RFC 3339).
pub const LAST_SUBMISSION_DATE: &str = "last_submission_date";
/// How many reports were accepted.
pub const SUBMISSION_COUNT: &str = "submission_count";
/// The report schema version the user consented to.
pub const PRIVACY_POLICY_VERSION: &str = "privacy_policy_version";
/// When the user opted in (start of the first report period).
pub const OPT_IN_DATE: &str = "opt_in_date";
/// End of the last accepted report (start of the next one).
pub const LAST_REPORT_END: &str = "last_report_end";
/// Prefix of the keys that remember which timestamp each Home Assistant timestamp sensor's
/// topic last carried (`ha_sent:last_submission` …), so that `None` is published only when it
/// replaces a timestamp (see `mqtt::handler`).
pub const HA_SENT_PREFIX: &str = "ha_sent:";
/// Random salt for printer-id hashes. Secret.
pub const PRINTER_SALT: &str = "printer_salt";
/// `"enabled"` while Printernizer itself shares its usage statistics (its `/usage-stats/status`
/// says `opted_in`): then this service submits nothing, or the installation would be counted
/// twice. Absent otherwise. Written by the bridge.
pub const PRINTERNIZER_SHARING: &str = "printernizer_sharing";
/// When the Printernizer bridge last completed a poll (RFC 3339). Written by the bridge.
pub const BRIDGE_LAST_SUCCESS: &str = "bridge_last_success";

/// Whether a settings key must never be exported or submitted.
pub fn is_secret(key: &str) -> bool {
    key == PRINTER_SALT
}

/// The user's choice (`opt_in_status`): the one source of truth the switch, the page and the
/// CLI show and change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OptIn {
    /// Sharing: reports are sent (when everything else allows it).
    Enabled,
    /// Not sharing (the default).
    #[default]
    Disabled,
}

impl OptIn {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            OptIn::Enabled => "enabled",
            OptIn::Disabled => "disabled",
        }
    }

    /// Anything but `enabled` — a missing row included — is `Disabled`.
    pub fn from_stored(value: Option<&str>) -> Self {
        if value == Some("enabled") {
            OptIn::Enabled
        } else {
            OptIn::Disabled
        }
    }
}

/// The stored opt-in.
pub fn opt_in(conn: &Connection) -> Result<OptIn> {
    Ok(OptIn::from_stored(get(conn, OPT_IN_STATUS)?.as_deref()))
}

/// Stores the opt-in.
pub fn set_opt_in(conn: &Connection, value: OptIn, now: DateTime<Utc>) -> Result<()> {
    set(conn, OPT_IN_STATUS, value.as_str(), now)
}

/// A flag: on while its row exists (`enabled`), off without it.
pub fn flag(conn: &Connection, key: &str) -> Result<bool> {
    Ok(get(conn, key)?.is_some())
}

/// Sets or clears a flag; returns whether it changed.
pub fn set_flag(conn: &Connection, key: &str, on: bool, now: DateTime<Utc>) -> Result<bool> {
    if flag(conn, key)? == on {
        return Ok(false);
    }
    if on {
        set(conn, key, "enabled", now)?;
    } else {
        conn.execute("DELETE FROM usage_settings WHERE key = ?1", [key])?;
    }
    Ok(true)
}

/// Reads one setting.
pub fn get(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT value FROM usage_settings WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

/// Writes one setting.
pub fn set(conn: &Connection, key: &str, value: &str, now: DateTime<Utc>) -> Result<()> {
    conn.execute(
        "INSERT INTO usage_settings (key, value, updated_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        params![key, value, fmt_ts(now)],
    )?;
    Ok(())
}

/// Writes a setting only if it is not set yet; returns the value in force.
pub fn set_default(
    conn: &Connection,
    key: &str,
    value: &str,
    now: DateTime<Utc>,
) -> Result<String> {
    conn.execute(
        "INSERT OR IGNORE INTO usage_settings (key, value, updated_at) VALUES (?1, ?2, ?3)",
        params![key, value, fmt_ts(now)],
    )?;
    Ok(get(conn, key)?.unwrap_or_else(|| value.to_owned()))
}

/// All settings that may be shown or exported (secrets left out), sorted by key.
pub fn all_public(conn: &Connection) -> Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare("SELECT key, value FROM usage_settings ORDER BY key")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (k, v) = row?;
        if !is_secret(&k) {
            out.push((k, v));
        }
    }
    Ok(out)
}
