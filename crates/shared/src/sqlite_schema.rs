//! One migration runner for both programs' SQLite databases (feature `sqlite`): numbered steps
//! tracked in `PRAGMA user_version`, each with an `up` and a `down`, each run in one
//! transaction together with the version bump — a failed step leaves the previous version
//! intact. A database newer than the program is refused, never touched.
//!
//! Each step reads the version inside its own `BEGIN IMMEDIATE` transaction, so two processes
//! opening the same fresh file at once (a CLI command beside a starting `run`) take turns: the
//! second sees the steps the first made and does not run them again.
//!
//! The add-on's store and the aggregation server's SQLite backend each own their list of
//! [`Migration`]s; PostgreSQL, with its own client, has its own runner in the aggregator.

use rusqlite::{Connection, Transaction};

/// One schema step.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// What the step does.
    pub name: &'static str,
    /// SQL that moves from version `n-1` to `n`.
    pub up: &'static str,
    /// SQL that moves from version `n` back to `n-1`.
    pub down: &'static str,
}

/// Why a migration did not happen.
#[derive(Debug)]
pub enum MigrationError {
    /// The database is newer than this program (it was written by a later version).
    Newer {
        /// Its version.
        found: u32,
        /// The newest this program knows.
        known: u32,
    },
    /// A target beyond the newest known version was asked for.
    UnknownTarget {
        /// The target.
        target: u32,
        /// The newest this program knows.
        known: u32,
    },
    /// A step's SQL failed (rolled back).
    Step {
        /// The step's name.
        name: &'static str,
        /// `up` or `down`.
        direction: &'static str,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// Reading or writing the version failed.
    Sqlite(rusqlite::Error),
}

impl std::fmt::Display for MigrationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Newer { found, known } => write!(
                f,
                "database schema version {found} is newer than this program understands \
                 ({known}); upgrade printernizer-stats"
            ),
            Self::UnknownTarget { target, known } => write!(
                f,
                "target version {target} is newer than this program's {known}"
            ),
            Self::Step {
                name,
                direction,
                source,
            } => write!(f, "migration `{name}` ({direction}) failed: {source}"),
            Self::Sqlite(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for MigrationError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Step { source, .. } | Self::Sqlite(source) => Some(source),
            _ => None,
        }
    }
}

impl From<rusqlite::Error> for MigrationError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

/// The database's current schema version.
pub fn current_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.pragma_query_value(None, "user_version", |r| r.get::<_, u32>(0))
}

/// Migrates up or down to `target` (at most `migrations.len()`), one transaction per step.
pub fn migrate_to(
    conn: &mut Connection,
    migrations: &[Migration],
    target: u32,
) -> Result<(), MigrationError> {
    let known = migrations.len() as u32;
    if target > known {
        return Err(MigrationError::UnknownTarget { target, known });
    }
    loop {
        // Read under the write lock: another process may have migrated meanwhile.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version = current_version(&tx)?;
        if version > known {
            return Err(MigrationError::Newer {
                found: version,
                known,
            });
        }
        if version == target {
            return Ok(());
        }
        if version < target {
            step(&tx, &migrations[version as usize], true, version + 1)?;
        } else {
            step(&tx, &migrations[version as usize - 1], false, version - 1)?;
        }
        tx.commit()?;
    }
}

fn step(
    tx: &Transaction<'_>,
    m: &Migration,
    up: bool,
    new_version: u32,
) -> Result<(), MigrationError> {
    let direction = if up { "up" } else { "down" };
    tx.execute_batch(if up { m.up } else { m.down })
        .map_err(|source| MigrationError::Step {
            name: m.name,
            direction,
            source,
        })?;
    tx.pragma_update(None, "user_version", new_version)?;
    Ok(())
}

/// The schema as text (sorted `sqlite_master` entries), for comparing migrations.
pub fn schema_dump(conn: &Connection) -> rusqlite::Result<String> {
    let mut stmt = conn.prepare(
        "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master \
         WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(format!(
            "{} {} {} {}",
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?
        ))
    })?;
    let mut out = String::new();
    for row in rows {
        out.push_str(&row?);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: &[Migration] = &[
        Migration {
            name: "a",
            up: "CREATE TABLE a (x INTEGER);",
            down: "DROP TABLE a;",
        },
        Migration {
            name: "b",
            up: "CREATE TABLE b (y INTEGER);",
            down: "DROP TABLE b;",
        },
    ];

    #[test]
    fn up_down_and_refusals() {
        let mut conn = Connection::open_in_memory().expect("sqlite");
        migrate_to(&mut conn, STEPS, 2).expect("up");
        assert_eq!(current_version(&conn).expect("version"), 2);
        let both = schema_dump(&conn).expect("dump");
        migrate_to(&mut conn, STEPS, 0).expect("down");
        assert_eq!(schema_dump(&conn).expect("dump"), "");
        migrate_to(&mut conn, STEPS, 2).expect("up again");
        assert_eq!(schema_dump(&conn).expect("dump"), both);
        assert!(matches!(
            migrate_to(&mut conn, STEPS, 3),
            Err(MigrationError::UnknownTarget { .. })
        ));
        conn.pragma_update(None, "user_version", 9).expect("bump");
        let newer = migrate_to(&mut conn, STEPS, 2).expect_err("newer");
        assert!(
            newer.to_string().contains("newer than this program"),
            "{newer}"
        );
        let broken = [Migration {
            name: "broken",
            up: "CREATE TABLE c (z INTEGER); SELECT nonsense FROM nowhere;",
            down: "",
        }];
        let mut conn = Connection::open_in_memory().expect("sqlite");
        let e = migrate_to(&mut conn, &broken, 1).expect_err("fails");
        assert!(e.to_string().contains("migration `broken` (up)"), "{e}");
        assert_eq!(schema_dump(&conn).expect("dump"), "", "rolled back");
    }

    /// Two connections migrating one fresh file at once both succeed. (Reading the version
    /// before the transaction let both run step 1; the second failed with "table already
    /// exists" in most rounds.)
    #[test]
    fn two_processes_migrating_one_file_take_turns() {
        let steps: Vec<Migration> = (0..30)
            .map(|i| Migration {
                name: "t",
                up: Box::leak(format!("CREATE TABLE t{i} (x INTEGER);").into_boxed_str()),
                down: Box::leak(format!("DROP TABLE t{i};").into_boxed_str()),
            })
            .collect();
        let steps: &'static [Migration] = Box::leak(steps.into_boxed_slice());
        let dir = tempfile::tempdir().expect("tempdir");
        for round in 0..20 {
            let path = dir.path().join(format!("race-{round}.db"));
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let (path, barrier) = (path.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        let mut conn = Connection::open(&path).expect("open");
                        conn.busy_timeout(std::time::Duration::from_secs(10))
                            .expect("busy timeout");
                        barrier.wait();
                        migrate_to(&mut conn, steps, 30).map_err(|e| e.to_string())
                    })
                })
                .collect();
            for w in workers {
                w.join().expect("thread").expect("migrated");
            }
            let conn = Connection::open(&path).expect("open");
            assert_eq!(current_version(&conn).expect("version"), 30);
        }
    }
}
