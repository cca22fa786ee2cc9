//! Real parts for aggregation-server tests: the server on a random port over a real SQLite file
//! or a fresh PostgreSQL database, the binary as a child process, and report bodies.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use printernizer_stats::aggregator::App;
use printernizer_stats::aggregator::store::{PgStore, SqliteStore, SubmissionStore};
use printernizer_stats::clock::ManualClock;
use printernizer_stats::config::AggregatorSettings;
use serde_json::{Value, json};
use tempfile::TempDir;

/// The server's "now" in tests.
pub const NOW: &str = "2026-11-28T12:00:00Z";

/// Where a PostgreSQL superuser can create databases. `.ci/run` makes sure one answers there.
pub fn pg_admin_url() -> String {
    std::env::var("PRINTERNIZER_STATS_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn with_db_name(url: &str, name: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("URL with a database");
    format!("{base}/{name}")
}

async fn admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&pg_admin_url(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is needed for these tests and does not answer at {} ({e}); \
                 run .ci/run or set PRINTERNIZER_STATS_TEST_PG",
                pg_admin_url()
            )
        });
    tokio::spawn(conn);
    client
}

const PREFIX: &str = "printernizer_stats_test_";

/// A fresh PostgreSQL database, dropped (with its connections) on drop.
pub struct PgDb {
    pub name: String,
    pub url: String,
}

impl PgDb {
    pub async fn create() -> Self {
        static CLEANED: AtomicBool = AtomicBool::new(false);
        static N: AtomicU32 = AtomicU32::new(0);
        let admin = admin().await;
        let mine = format!("{PREFIX}{}_", std::process::id());
        if !CLEANED.swap(true, Ordering::SeqCst) {
            // Left behind by an earlier, aborted run (never one of this process's own).
            let rows = admin
                .query(
                    "SELECT datname FROM pg_database WHERE datname LIKE $1",
                    &[&format!("{PREFIX}%")],
                )
                .await
                .expect("list databases");
            for r in rows {
                let name: String = r.get(0);
                if name.starts_with(&mine) {
                    continue;
                }
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await;
            }
        }
        let name = format!(
            "{PREFIX}{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create database");
        Self {
            url: with_db_name(&pg_admin_url(), &name),
            name,
        }
    }

    /// Runs one query in this database and returns the first column of each row as text.
    pub async fn query_text(&self, sql: &str) -> Vec<String> {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
            .simple_query(sql)
            .await
            .expect("query")
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some(r.get(0).unwrap_or_default().to_owned())
                }
                _ => None,
            })
            .collect()
    }

    /// Drops the database now (terminating its connections).
    pub async fn drop_now(&self) {
        let _ = admin()
            .await
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&pg_admin_url(), tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// The database a [`Server`] uses.
pub enum Db {
    Sqlite(TempDir),
    Postgres(PgDb),
}

impl Db {
    pub async fn new(kind: Kind) -> Self {
        match kind {
            Kind::Sqlite => Db::Sqlite(tempfile::tempdir().expect("tempdir")),
            Kind::Postgres => Db::Postgres(PgDb::create().await),
        }
    }

    /// `aggregator.database_url` for this database.
    pub fn url(&self) -> String {
        match self {
            Db::Sqlite(dir) => format!("sqlite://{}", dir.path().join("agg.db").display()),
            Db::Postgres(pg) => pg.url.clone(),
        }
    }

    /// Every text value in every user table, for privacy scans.
    pub async fn dump(&self) -> String {
        match self {
            Db::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(dir.path().join("agg.db")).expect("open");
                let mut out = String::new();
                for table in ["submissions"] {
                    let mut stmt = conn
                        .prepare(&format!("SELECT * FROM {table}"))
                        .expect("prepare");
                    let cols = stmt.column_count();
                    let mut rows = stmt.query([]).expect("query");
                    while let Some(r) = rows.next().expect("row") {
                        for i in 0..cols {
                            let v: rusqlite::types::Value = r.get(i).expect("value");
                            out.push_str(&format!("{v:?}\n"));
                        }
                    }
                }
                out
            }
            Db::Postgres(pg) => {
                let mut out = pg
                    .query_text("SELECT row_to_json(s)::text FROM submissions s")
                    .await
                    .join("\n");
                out.push_str(
                    &pg.query_text("SELECT row_to_json(r)::text FROM rate_limits r")
                        .await
                        .join("\n"),
                );
                out
            }
        }
    }
}

/// The server, in this process, on a random port, with a manual clock.
pub struct Server {
    pub base: String,
    pub clock: ManualClock,
    pub db: Db,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    pub prune: Prune,
}

/// Runs the retention job once.
pub type Prune = Arc<dyn Fn() -> tokio::task::JoinHandle<u64> + Send + Sync>;

fn launch<S: SubmissionStore>(
    app: Arc<App<S>>,
    listener: tokio::net::TcpListener,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
    Prune,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let pruner = app.clone();
    let prune = Arc::new(move || {
        let app = pruner.clone();
        tokio::spawn(async move { app.prune_expired().await.expect("prune") })
    });
    let task = tokio::spawn(async move {
        app.serve(listener, async {
            let _ = stopped.await;
        })
        .await
        .expect("serve");
    });
    (stop, task, prune)
}

pub fn settings(tweak: impl FnOnce(&mut AggregatorSettings)) -> AggregatorSettings {
    let mut s = AggregatorSettings::default();
    tweak(&mut s);
    s
}

impl Server {
    pub async fn start(kind: Kind, tweak: impl FnOnce(&mut AggregatorSettings)) -> Self {
        let db = Db::new(kind).await;
        Self::start_on(db, tweak).await
    }

    pub async fn start_on(db: Db, tweak: impl FnOnce(&mut AggregatorSettings)) -> Self {
        let settings = settings(tweak);
        let clock = ManualClock::new(NOW.parse::<DateTime<Utc>>().expect("now"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, task, prune) = match &db {
            Db::Sqlite(dir) => {
                let store = SqliteStore::open(&dir.path().join("agg.db")).expect("sqlite");
                launch(
                    App::new(store, "sqlite", &settings, Arc::new(clock.clone())),
                    listener,
                )
            }
            Db::Postgres(pg) => {
                let store = PgStore::connect(&pg.url).await.expect("postgres");
                launch(
                    App::new(store, "postgres", &settings, Arc::new(clock.clone())),
                    listener,
                )
            }
        };
        Self {
            base,
            clock,
            db,
            stop: Some(stop),
            task: Some(task),
            prune,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops serving (in-flight requests finish) and returns the database.
    pub async fn shutdown(mut self) -> Db {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        std::mem::replace(&mut self.db, Db::Sqlite(tempfile::tempdir().expect("tmp")))
    }

    pub async fn total(&self) -> u64 {
        let v: Value = reqwest::get(self.url("/stats/summary"))
            .await
            .expect("summary")
            .json()
            .await
            .expect("json");
        v["total_submissions"].as_u64().expect("total")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A valid report of `installation` for `[start, end)`.
pub fn report(installation: &str, start: &str, end: &str) -> Value {
    let s: DateTime<Utc> = start.parse().expect("start");
    let e: DateTime<Utc> = end.parse().expect("end");
    let days = ((e - s).num_seconds() as f64 / 86_400.0).round() as i64;
    json!({
        "schema_version": "1.0",
        "submission_timestamp": end,
        "installation": {
            "installation_id": installation,
            "first_seen": "2026-01-01T00:00:00Z",
            "app_version": "2.7.0",
            "python_version": "3.11.7",
            "platform": "linux",
            "deployment_mode": "homeassistant",
            "country_code": "DE"
        },
        "period": {"start": start, "end": end, "duration_days": days},
        "printer_fleet": {
            "printer_count": 3,
            "printer_types": ["bambu_lab", "prusa"],
            "printer_type_counts": {"bambu_lab": 2, "prusa": 1}
        },
        "usage_stats": {
            "job_count": 12, "jobs_completed": 10, "jobs_failed": 2,
            "file_count": 4, "upload_count": 3, "uptime_hours": 20,
            "feature_usage": {"library_enabled": true, "timelapse_enabled": false}
        },
        "error_summary": {"connection_timeout": 3, "disk_full": 1}
    })
}

/// A new random installation id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub use crate::child::free_port;
use crate::child::{LoggedChild, poll_until};

/// `printernizer-stats aggregator` as a child process.
pub struct Process {
    child: LoggedChild,
    pub base: String,
}

impl Process {
    pub fn spawn(dir: &Path, database_url: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("printernizer-stats"));
        cmd.args([
            "aggregator",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--database-url",
            database_url,
        ])
        .current_dir(dir)
        .env("PRINTERNIZER_STATS_OPTIONS", dir.join("no-options.json"))
        .env("PRINTERNIZER_STATS__LOG_LEVEL", "debug")
        .env_remove("SUPERVISOR_TOKEN")
        .env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let p = Self {
            child: LoggedChild::spawn(&mut cmd, "aggregator"),
            base: format!("http://127.0.0.1:{port}"),
        };
        poll_until(
            Duration::from_secs(30),
            Duration::from_millis(50),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            || format!("aggregator did not start:\n{}", p.log()),
        );
        p
    }

    pub fn log(&self) -> String {
        self.child.log()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM and wait; returns whether it exited 0.
    pub fn stop(&mut self) -> bool {
        self.child.stop()
    }
}
