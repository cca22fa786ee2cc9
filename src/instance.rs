//! One `run` per database, and an MQTT identity that outlives the database file.
//!
//! * **The run lock.** `run` takes an exclusive lock (`flock`, through `std::fs::File::try_lock`)
//!   on `<database>.lock` beside the database before it opens anything, and writes its PID
//!   into it. A second `run` on the same database finds the lock taken and stops with exit
//!   code 1 and one line naming the PID and the lock file; the first one is not touched. Two
//!   `run`s would otherwise take the broker session from each other forever (measured: 41–81
//!   takeovers in 30 s). The lock goes with the process — also on SIGKILL — so a stale file
//!   never blocks a restart. CLI commands (`opt-in`, `status`, `events record` …) take no lock:
//!   they work beside `run`, which notices what they change (`service::external`).
//! * **The MQTT identity.** The client id is derived from a secret inside the database; a
//!   database file that is deleted or replaced would bring a new id and orphan the broker's
//!   persistent session with everything queued in it. So the id is also written to
//!   `<database>.mqtt-id` the first time, and read from there afterwards: a new database file
//!   resumes the old session, and the broker delivers what it kept.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The held run lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the run lock of the database at `db`, or says who holds it.
    pub fn acquire(db: &Path) -> Result<Self> {
        let path = sibling(db, "lock");
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::Storage(format!(
                    "cannot create the data directory {}: {e}: make sure it is writable \
                     (in the add-on: /data)",
                    dir.display()
                ))
            })?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                Error::Storage(format!(
                    "cannot create the run lock {}: {e}: make sure the directory exists and is \
                     writable (in the add-on: /data)",
                    path.display()
                ))
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                let who = if pid.is_empty() {
                    "another printernizer-stats run".to_owned()
                } else {
                    format!("another printernizer-stats run (PID {pid})")
                };
                return Err(Error::Storage(format!(
                    "{who} is already using {}: it holds {}. Stop it first; \
                     CLI commands work beside it",
                    db.display(),
                    path.display()
                )));
            }
            Err(TryLockError::Error(e)) => {
                return Err(Error::Storage(format!(
                    "cannot lock {}: {e}",
                    path.display()
                )));
            }
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `<db>.<suffix>` (`stats.db` → `stats.db.lock`).
fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    db.with_file_name(name)
}

/// The MQTT client id of the database at `db`: the one recorded beside it, else `derived`
/// (from the database's secret), which is then recorded. A file that cannot be written only
/// logs: the derived id still works while the database lives.
pub fn mqtt_client_id(db: &Path, derived: String) -> String {
    let path = sibling(db, "mqtt-id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim();
        let valid = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            if id != derived {
                tracing::info!(
                    file = %path.display(),
                    "keeping the MQTT session of an earlier database file (its broker queue is delivered here)"
                );
            }
            return id.to_owned();
        }
        tracing::warn!(file = %path.display(), "ignoring an invalid MQTT id file; writing it anew");
    }
    if let Err(e) = std::fs::write(&path, format!("{derived}\n")) {
        tracing::warn!(error = %e, file = %path.display(), "cannot record the MQTT client id");
    }
    derived
}

/// After `run` stopped because the database file at `db` was lost: moves what is left of it
/// aside (an emptied or damaged file with its `-wal`/`-shm` as `<name>.<kind>-<UTC time>`,
/// kept for inspection; the `-wal`/`-shm` of a deleted or replaced file likewise, since SQLite
/// would replay a stale WAL into the new or restored file — the writer's checkpoint on close
/// does not remove it, most likely because SQLite refuses to write to a database file moved
/// since it was opened, `SQLITE_READONLY_DBMOVED`; a test saw it replayed), so that the next
/// start creates a new database or takes the restored one as it is.
pub fn set_aside(db: &Path, loss: crate::store::FileLoss) {
    use crate::store::FileLoss;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let kind = match loss {
        FileLoss::Deleted => "orphaned",
        FileLoss::Replaced => "replaced",
        FileLoss::Emptied => "emptied",
        FileLoss::Damaged => "damaged",
    };
    let name = db
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let mut parts = vec![("-wal", "-wal"), ("-shm", "-shm")];
    if matches!(loss, FileLoss::Emptied | FileLoss::Damaged) {
        parts.insert(0, ("", ""));
    }
    for (suffix, kept) in parts {
        let from = db.with_file_name(format!("{name}{suffix}"));
        if !from.exists() {
            continue;
        }
        let to = db.with_file_name(format!("{name}.{kind}-{stamp}{kept}"));
        match std::fs::rename(&from, &to) {
            Ok(()) => tracing::warn!(from = %from.display(), to = %to.display(), "set aside"),
            Err(e) => tracing::error!(error = %e, file = %from.display(), "cannot set aside"),
        }
    }
}

/// Replaces this process with a new `printernizer-stats` with the same arguments (same PID,
/// so a supervisor sees no exit). Returns only if that fails.
pub fn start_over() -> std::io::Error {
    use std::os::unix::process::CommandExt;
    match std::env::current_exe() {
        Ok(exe) => std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .exec(),
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_first_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("stats.db");
        let first = RunLock::acquire(&db).expect("first");
        assert_eq!(first.path(), dir.path().join("stats.db.lock"));
        let err = RunLock::acquire(&db).expect_err("second").to_string();
        assert!(
            err.contains(&format!("PID {}", std::process::id())),
            "{err}"
        );
        drop(first);
        RunLock::acquire(&db).expect("free again");
    }

    #[test]
    fn the_mqtt_id_outlives_the_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("stats.db");
        assert_eq!(mqtt_client_id(&db, "ps-aaa".into()), "ps-aaa");
        assert_eq!(mqtt_client_id(&db, "ps-bbb".into()), "ps-aaa");
        std::fs::write(dir.path().join("stats.db.mqtt-id"), "bad id\n").expect("write");
        assert_eq!(mqtt_client_id(&db, "ps-ccc".into()), "ps-ccc");
    }
}
