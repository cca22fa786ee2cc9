//! Versioned schema migrations, tracked in `PRAGMA user_version`.
//!
//! Each migration has an `up` and a `down` step; both run in one transaction together with the
//! version bump, so a failed step leaves the previous version intact. `tests/store.rs` runs
//! every migration down and up again on a file database and compares the schema.
//!
//! Version 1 is the seed's schema with three deliberate changes, all for aggregation speed:
//! * `usage_events` gains `printer_hash` (the salted printer hash lives in a column, so that
//!   metadata stays pure vocabulary), and the seed's type/timestamp indexes are composite
//!   (`event_type, timestamp` and `timestamp, event_type`) so range counts are index-only;
//! * `usage_aggregates` holds one row per (UTC hour, metric) instead of one JSON blob per
//!   period: sums are SQL, never JSON parsing (see [`super::rollup`]);
//! * `usage_fleet` (printers seen per hour) and `usage_counters` (running totals) are new.

use printernizer_stats_shared::sqlite_schema::{self, MigrationError};
use rusqlite::Connection;

use crate::{Error, Result};

pub use printernizer_stats_shared::sqlite_schema::{Migration, current_version, schema_dump};

/// All migrations; migration `i` brings the schema to version `i + 1`.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "usage statistics tables (seed schema, hourly rollups, fleet, counters)",
        up: r#"
        CREATE TABLE usage_events (
            id            TEXT PRIMARY KEY,
            event_type    TEXT NOT NULL,
            timestamp     TEXT NOT NULL,
            metadata      TEXT,
            submitted     INTEGER NOT NULL DEFAULT 0,
            created_at    TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
            printer_hash  TEXT
        );
        CREATE INDEX idx_usage_events_type ON usage_events(event_type, timestamp);
        CREATE INDEX idx_usage_events_timestamp ON usage_events(timestamp, event_type);
        CREATE INDEX idx_usage_events_submitted ON usage_events(submitted);

        CREATE TABLE usage_settings (
            key         TEXT PRIMARY KEY,
            value       TEXT NOT NULL,
            updated_at  TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
        );

        CREATE TABLE usage_aggregates (
            period_start  TEXT NOT NULL,
            period_end    TEXT NOT NULL,
            metric        TEXT NOT NULL,
            value         INTEGER NOT NULL,
            last_at       TEXT,
            computed_at   TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
            PRIMARY KEY (period_start, metric)
        ) WITHOUT ROWID;
        CREATE INDEX idx_usage_aggregates_metric ON usage_aggregates(metric, period_start);

        CREATE TABLE usage_fleet (
            period_start  TEXT NOT NULL,
            printer_hash  TEXT NOT NULL,
            printer_type  TEXT,
            first_at      TEXT NOT NULL,
            last_at       TEXT NOT NULL,
            PRIMARY KEY (period_start, printer_hash)
        ) WITHOUT ROWID;
        CREATE INDEX idx_usage_fleet_printer ON usage_fleet(printer_hash, period_start);

        CREATE TABLE usage_counters (
            name   TEXT PRIMARY KEY,
            value  INTEGER NOT NULL
        ) WITHOUT ROWID;
    "#,
        down: r#"
        DROP TABLE usage_counters;
        DROP TABLE usage_fleet;
        DROP TABLE usage_aggregates;
        DROP TABLE usage_settings;
        DROP TABLE usage_events;
    "#,
    },
    Migration {
        name: "submission queue (pending reports and deletion requests)",
        up: r#"
        CREATE TABLE usage_submissions (
            id                   INTEGER PRIMARY KEY,
            kind                 TEXT NOT NULL CHECK (kind IN ('report', 'deletion')),
            idempotency_key      TEXT NOT NULL UNIQUE,
            url                  TEXT NOT NULL,
            body                 TEXT,
            period_start         TEXT,
            period_end           TEXT,
            attempts             INTEGER NOT NULL DEFAULT 0,
            next_attempt_at      TEXT NOT NULL,
            last_error           TEXT,
            blocked_fingerprint  TEXT,
            created_at           TEXT NOT NULL
        );
    "#,
        down: r#"
        DROP TABLE usage_submissions;
    "#,
    },
    Migration {
        name: "submission history (the last attempts, for the web page)",
        up: r#"
        CREATE TABLE usage_submission_log (
            id            INTEGER PRIMARY KEY,
            attempted_at  TEXT NOT NULL,
            period_start  TEXT,
            period_end    TEXT,
            http_status   INTEGER,
            outcome       TEXT NOT NULL,
            detail        TEXT
        );
    "#,
        down: r#"
        DROP TABLE usage_submission_log;
    "#,
    },
    Migration {
        name: "Printernizer bridge: tracked jobs and the export cursor",
        // Owned by `crate::bridge::state`. Keys are keyed hashes of Printernizer's job and
        // printer ids (never the ids); nothing else of a job is kept.
        up: r#"
        CREATE TABLE bridge_jobs (
            job_key        TEXT PRIMARY KEY,
            event_key      TEXT NOT NULL,
            printer_key    TEXT,
            printer_type   TEXT,
            started_at     TEXT,
            last_active_at TEXT,
            printing_seen_at TEXT,
            progressed     INTEGER NOT NULL DEFAULT 0,
            vanished       INTEGER NOT NULL DEFAULT 0,
            closed_at      TEXT,
            outcome        TEXT,
            updated_at     TEXT NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX idx_bridge_jobs_open ON bridge_jobs(closed_at, printer_key);

        CREATE TABLE bridge_state (
            key    TEXT PRIMARY KEY,
            value  TEXT NOT NULL
        ) WITHOUT ROWID;
    "#,
        down: r#"
        DROP TABLE bridge_state;
        DROP TABLE bridge_jobs;
    "#,
    },
];

/// The schema version this program writes.
pub fn latest_version() -> u32 {
    MIGRATIONS.len() as u32
}

/// Migrates up or down to `target`, one transaction per step (the shared runner).
pub fn migrate_to(conn: &mut Connection, target: u32) -> Result<()> {
    sqlite_schema::migrate_to(conn, MIGRATIONS, target).map_err(|e| match e {
        MigrationError::Sqlite(e) => Error::Database(e),
        other => Error::Schema(other.to_string()),
    })
}
