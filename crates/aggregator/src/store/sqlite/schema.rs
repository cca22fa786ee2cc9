//! The aggregator's SQLite schema, as numbered migrations (`PRAGMA user_version`).

use rusqlite::Connection;

use crate::{Error, Result};

pub(super) const MIGRATIONS: &[&str] = &[
    r#"
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
    // 2: fewer pages written per commit. No AUTOINCREMENT (its counter row in `sqlite_sequence` was
    // rewritten by every commit); ids still only grow, except that the ids of the newest rows can
    // come back after `DELETE /installation` removed them. The idempotency key is indexed only
    // where a client sent one.
    r#"
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
];

pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(Error::Schema(format!(
            "the aggregator database has schema version {version}, newer than this program's \
             {known}: use a newer printernizer-stats"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
