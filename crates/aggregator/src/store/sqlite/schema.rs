//! The aggregator's SQLite schema, as numbered migrations (`PRAGMA user_version`).

use printernizer_stats_shared::sqlite_schema::{self, Migration, MigrationError};
use rusqlite::Connection;

use crate::{Error, Result};

pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "submissions",
        up: r#"
CREATE TABLE submissions (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    installation_id      TEXT    NOT NULL,
    idempotency_key      TEXT    UNIQUE,
    received_at          TEXT    NOT NULL,
    schema_version       TEXT    NOT NULL,
    submission_timestamp TEXT    NOT NULL,
    first_seen           TEXT    NOT NULL,
    period_start         TEXT    NOT NULL,
    period_end           TEXT    NOT NULL,
    duration_days        INTEGER NOT NULL,
    app_version          TEXT    NOT NULL,
    python_version       TEXT    NOT NULL,
    platform             TEXT    NOT NULL,
    deployment_mode      TEXT    NOT NULL,
    country_code         TEXT    NOT NULL,
    printer_count        INTEGER NOT NULL,
    printer_type_counts  TEXT    NOT NULL,
    job_count            INTEGER NOT NULL,
    jobs_completed       INTEGER,
    jobs_failed          INTEGER,
    file_count           INTEGER NOT NULL,
    upload_count         INTEGER NOT NULL,
    uptime_hours         INTEGER NOT NULL,
    feature_usage        TEXT    NOT NULL,
    error_summary        TEXT    NOT NULL,
    UNIQUE (installation_id, period_start, period_end)
);
CREATE INDEX submissions_received_at ON submissions (received_at);
"#,
        down: "DROP TABLE submissions;",
    },
    // 2: fewer pages written per commit. No AUTOINCREMENT (its counter row in `sqlite_sequence` was
    // rewritten by every commit); ids still only grow, except that the ids of the newest rows can
    // come back after `DELETE /installation` removed them. The idempotency key is indexed only
    // where a client sent one.
    Migration {
        name: "submissions without AUTOINCREMENT, partial idempotency index",
        up: r#"
CREATE TABLE submissions_v2 (
    id                   INTEGER PRIMARY KEY,
    installation_id      TEXT    NOT NULL,
    idempotency_key      TEXT,
    received_at          TEXT    NOT NULL,
    schema_version       TEXT    NOT NULL,
    submission_timestamp TEXT    NOT NULL,
    first_seen           TEXT    NOT NULL,
    period_start         TEXT    NOT NULL,
    period_end           TEXT    NOT NULL,
    duration_days        INTEGER NOT NULL,
    app_version          TEXT    NOT NULL,
    python_version       TEXT    NOT NULL,
    platform             TEXT    NOT NULL,
    deployment_mode      TEXT    NOT NULL,
    country_code         TEXT    NOT NULL,
    printer_count        INTEGER NOT NULL,
    printer_type_counts  TEXT    NOT NULL,
    job_count            INTEGER NOT NULL,
    jobs_completed       INTEGER,
    jobs_failed          INTEGER,
    file_count           INTEGER NOT NULL,
    upload_count         INTEGER NOT NULL,
    uptime_hours         INTEGER NOT NULL,
    feature_usage        TEXT    NOT NULL,
    error_summary        TEXT    NOT NULL,
    UNIQUE (installation_id, period_start, period_end)
);
INSERT INTO submissions_v2 SELECT * FROM submissions;
DROP TABLE submissions;
ALTER TABLE submissions_v2 RENAME TO submissions;
CREATE UNIQUE INDEX submissions_idempotency_key ON submissions (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX submissions_received_at ON submissions (received_at);
"#,
        // Back to version 1's table, ids kept (the AUTOINCREMENT counter starts above them).
        down: r#"
CREATE TABLE submissions_v1 (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    installation_id      TEXT    NOT NULL,
    idempotency_key      TEXT    UNIQUE,
    received_at          TEXT    NOT NULL,
    schema_version       TEXT    NOT NULL,
    submission_timestamp TEXT    NOT NULL,
    first_seen           TEXT    NOT NULL,
    period_start         TEXT    NOT NULL,
    period_end           TEXT    NOT NULL,
    duration_days        INTEGER NOT NULL,
    app_version          TEXT    NOT NULL,
    python_version       TEXT    NOT NULL,
    platform             TEXT    NOT NULL,
    deployment_mode      TEXT    NOT NULL,
    country_code         TEXT    NOT NULL,
    printer_count        INTEGER NOT NULL,
    printer_type_counts  TEXT    NOT NULL,
    job_count            INTEGER NOT NULL,
    jobs_completed       INTEGER,
    jobs_failed          INTEGER,
    file_count           INTEGER NOT NULL,
    upload_count         INTEGER NOT NULL,
    uptime_hours         INTEGER NOT NULL,
    feature_usage        TEXT    NOT NULL,
    error_summary        TEXT    NOT NULL,
    UNIQUE (installation_id, period_start, period_end)
);
INSERT INTO submissions_v1 SELECT * FROM submissions;
DROP TABLE submissions;
ALTER TABLE submissions_v1 RENAME TO submissions;
CREATE INDEX submissions_received_at ON submissions (received_at);
"#,
    },
    // 3: which scheduled e-mail report went out for which period, so that a restart (or a
    // second server) never sends one twice.
    Migration {
        name: "report mailings",
        up: r#"
CREATE TABLE report_mailings (
    kind    TEXT NOT NULL,
    period  TEXT NOT NULL,
    sent_at TEXT NOT NULL,
    PRIMARY KEY (kind, period)
);
"#,
        down: "DROP TABLE report_mailings;",
    },
];

/// Brings the database to the newest schema (the shared runner); a newer database is refused.
pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    sqlite_schema::migrate_to(conn, MIGRATIONS, MIGRATIONS.len() as u32).map_err(|e| match e {
        MigrationError::Sqlite(e) => Error::Database(e),
        other => Error::Schema(other.to_string()),
    })
}
