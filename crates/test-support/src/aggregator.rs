//! The aggregation server for tests: in-process on a random port over a real SQLite file or a
//! fresh PostgreSQL database ([`Server`]), or its binary as a child process ([`Process`]).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use printernizer_stats_aggregator::App;
use printernizer_stats_aggregator::config::AggregatorSettings;
use printernizer_stats_aggregator::store::{PgStore, SqliteStore, SubmissionStore};
use printernizer_stats_shared::clock::ManualClock;
use serde_json::Value;
use tempfile::TempDir;

pub use crate::postgres::{PgDb, pg_admin_url};
pub use crate::report::{new_id, report};

/// The server's "now" in tests.
pub const NOW: &str = "2026-11-28T12:00:00Z";

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

pub use crate::child::free_port;
use crate::child::{LoggedChild, poll_until};

/// `printernizer-stats-aggregator` as a child process.
pub struct Process {
    child: LoggedChild,
    pub base: String,
}

/// The aggregation server's binary (built by `cargo test --workspace`, or by
/// `cargo build -p printernizer-stats-aggregator` before a single package's tests).
pub fn aggregator_bin() -> std::path::PathBuf {
    let bin = assert_cmd::cargo::cargo_bin("printernizer-stats-aggregator");
    assert!(
        bin.exists(),
        "{} is not built: run the workspace's tests (`cargo test --workspace`) or \
         `cargo build -p printernizer-stats-aggregator` first",
        bin.display()
    );
    bin
}

impl Process {
    pub fn spawn(dir: &Path, database_url: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut cmd = Command::new(aggregator_bin());
        cmd.args([
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--database-url",
            database_url,
        ])
        .current_dir(dir)
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
