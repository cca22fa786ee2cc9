//! The database file under a running `run` (issue #17, point 1), with real processes: deleted
//! (a user cleaning up) or emptied (a restore gone wrong). Before: `run` kept writing into the
//! unlinked inode (or a now-corrupt file) and acknowledged every event to the broker — lost.
//! Now it stops acknowledging at the next commit — or, idle, as soon as the watch on the
//! directory sees the file change — says so in one line, starts over (same PID) with a new file
//! and the same MQTT session, and the broker delivers what it kept.

use printernizer_stats_test_support::mqtt as support;

use std::time::Duration;

use serde_json::json;
use support::{Broker, start_online};

const T: Duration = Duration::from_secs(60);

async fn publish(client: &support::Client, n: usize) {
    for i in 0..n {
        client
            .publish(
                "printernizer/events/job_completed",
                json!({"status": if i % 3 == 0 { "failed" } else { "completed" }}).to_string(),
            )
            .await;
    }
}

fn count_in(db: &std::path::Path) -> i64 {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return -1;
    };
    let _ = conn.busy_timeout(Duration::from_secs(5));
    conn.query_row("SELECT count(*) FROM usage_events", [], |r| r.get(0))
        .unwrap_or(-1)
}

fn wait_count(db: &std::path::Path, want: i64, log: impl Fn() -> String) {
    let deadline = std::time::Instant::now() + T;
    while count_in(db) != want {
        assert!(
            std::time::Instant::now() < deadline,
            "{} events in {}, wanted {want}\n{}",
            count_in(db),
            db.display(),
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `kind`: what happens to the file while `run` runs; `idle`: nothing arrives until `run` has
/// noticed (it must notice without a write: the watch on the database's directory).
async fn file_lost_under_run(kind: &str, idle: bool) {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut app, client) = start_online(dir.path(), broker.port, &[]).await;
    let pid = app.pid().expect("pid");
    let id_file = dir.path().join("stats.db.mqtt-id");
    let identity = std::fs::read_to_string(&id_file).expect("the MQTT id is recorded");

    publish(&client, 100).await;
    wait_count(&app.db, 100, || app.log());
    // Let the acknowledgements of those reach the broker.
    tokio::time::sleep(Duration::from_millis(500)).await;

    match kind {
        "deleted" => std::fs::remove_file(&app.db).expect("delete"),
        "emptied" => {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&app.db)
                .expect("open")
                .set_len(0)
                .expect("truncate");
        }
        other => unreachable!("{other}"),
    }
    if idle {
        app.wait_log(
            "while running: nothing more is stored or acknowledged",
            1,
            T,
        );
        app.wait_log("printernizer-stats started", 2, T);
    }
    publish(&client, 200).await;

    // One line says what happened; the same process (exec) starts over with a new file …
    app.wait_log(
        "while running: nothing more is stored or acknowledged",
        1,
        T,
    );
    app.wait_log("printernizer-stats started", 2, T);
    assert_eq!(app.pid(), Some(pid), "started over in place");
    assert!(app.is_running());
    // … with the same MQTT session, so the broker delivers exactly what was not acknowledged:
    // the 200 published after the loss, none of the 100 before.
    wait_count(&app.db, 200, || app.log());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count_in(&app.db), 200, "{}", app.log());
    assert_eq!(
        std::fs::read_to_string(&id_file).expect("id"),
        identity,
        "the session identity outlived the file"
    );
    let lost_lines = app
        .log()
        .matches("while running: nothing more is stored or acknowledged")
        .count();
    assert_eq!(lost_lines, 1, "one line per change: {}", app.log());

    // What was left of an emptied file is kept aside, not deleted.
    let aside: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".emptied-") || n.contains(".orphaned-"))
        .collect();
    if kind == "emptied" {
        // Kept as it was found: nothing was checkpointed into it on the way out (its WAL is
        // kept beside it).
        let file = aside
            .iter()
            .find(|n| {
                n.starts_with("stats.db.emptied-") && !n.ends_with("-wal") && !n.ends_with("-shm")
            })
            .unwrap_or_else(|| panic!("the emptied file is kept aside: {aside:?}"));
        let len = std::fs::metadata(dir.path().join(file))
            .expect("metadata")
            .len();
        assert_eq!(len, 0, "{file} was written to after it was emptied");
        assert!(aside.iter().any(|n| n.ends_with("-wal")), "{aside:?}");
    }
    assert!(app.stop(), "clean exit after starting over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_database_loses_no_acknowledged_event() {
    file_lost_under_run("deleted", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_deleted_under_an_idle_run_is_noticed_without_a_write() {
    file_lost_under_run("deleted", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_database_loses_no_acknowledged_event() {
    file_lost_under_run("emptied", false).await;
}

/// A backup moved over the database while `run` is idle (a restore): `run` starts over on the
/// restored file, whose content is the backup's plus what arrives afterwards — the old file's
/// WAL is not replayed into it (that would mix two databases' pages), and it stays intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_is_taken_as_it_is() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut app, client) = start_online(dir.path(), broker.port, &[]).await;
    let pid = app.pid().expect("pid");
    publish(&client, 100).await;
    wait_count(&app.db, 100, || app.log());
    let backup = dir.path().join("backup.db");
    {
        let conn = rusqlite::Connection::open(&app.db).expect("open");
        conn.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        conn.execute("VACUUM INTO ?1", [backup.to_string_lossy()])
            .expect("backup");
    }
    // 50 more, in the file that is about to be replaced (in its WAL, not yet checkpointed).
    publish(&client, 50).await;
    wait_count(&app.db, 150, || app.log());
    tokio::time::sleep(Duration::from_millis(500)).await;

    std::fs::rename(&backup, &app.db).expect("restore");
    app.wait_log(
        "while running: nothing more is stored or acknowledged",
        1,
        T,
    );
    app.wait_log("printernizer-stats started", 2, T);
    assert_eq!(app.pid(), Some(pid), "started over in place");
    publish(&client, 30).await;
    wait_count(&app.db, 130, || app.log());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count_in(&app.db), 130, "{}", app.log());
    assert!(app.stop(), "clean exit");
    let conn = rusqlite::Connection::open(&app.db).expect("open");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
}
