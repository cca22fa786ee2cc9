//! # printernizer-stats-aggregator
//!
//! The aggregation server (the maintainers' side, its own program since the add-on must not
//! ship it): receives the weekly reports of
//! every installation that opted in, validates, rate-limits and stores them, and answers the
//! maintainers' questions k-anonymously.
//!
//! A drop-in replacement for upstream's FastAPI service (same routes and responses, see
//! [`api`]), and stricter where upstream is weak:
//! * **idempotent** — an `Idempotency-Key` seen before, or the same installation and period,
//!   answers 200 with the original `submission_id` and stores nothing;
//! * **race-free** — the rate limit is one conditional upsert inside the submission's
//!   transaction ([`store`]), so it holds under concurrency and across replicas sharing one
//!   PostgreSQL database;
//! * **lossless** — job counts, error summary and feature flags are stored as received (after
//!   validation), not approximated;
//! * **private** — categorical strings are mapped onto the client's fixed vocabulary
//!   ([`submission`]); no IP address, header or raw body is stored or logged; submissions
//!   older than `retention_days` are deleted hourly.
//!
//! Storage is SQLite by default (one writer thread) or PostgreSQL (`postgres://…`), behind the
//! [`store::SubmissionStore`] trait; the handlers are generic over it.

pub mod analytics;
pub mod api;
pub mod config;
pub mod dashboard;
pub mod error;
mod problem;
pub mod reports;
pub mod store;
pub mod submission;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Duration;
use serde::Serialize;

pub use error::{Error, Result};
use printernizer_stats_shared::clock::{Clock, SystemClock};

use crate::config::AggregatorSettings;
use store::{DatabaseUrl, PgStore, RateLimit, SqliteStore, SubmissionStore};

/// How often the retention job runs.
pub const RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Request counters since start (shown by `/health`).
#[derive(Debug, Default)]
pub struct Metrics {
    accepted: AtomicU64,
    duplicates: AtomicU64,
    rate_limited: AtomicU64,
    rejected: AtomicU64,
}

/// A copy of [`Metrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MetricsSnapshot {
    /// Submissions stored.
    pub accepted: u64,
    /// Repeats answered with the original id.
    pub duplicates: u64,
    /// Answered 429.
    pub rate_limited: u64,
    /// Answered 4xx for their content (413, 422 …).
    pub rejected: u64,
}

impl Metrics {
    fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }
    fn duplicate(&self) {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
    }
    fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }
    fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// The current counts.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            accepted: self.accepted.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

/// Everything a request handler needs.
#[derive(Debug)]
pub struct App<S> {
    /// Where submissions live.
    pub store: S,
    /// "Now" for validation, rate limits and retention.
    pub clock: Arc<dyn Clock>,
    /// `sqlite` or `postgres` (shown by `/health`).
    pub backend: &'static str,
    api_keys: Vec<[u8; 32]>,
    rate_limit: RateLimit,
    max_body_bytes: usize,
    k_anonymity: u32,
    public_dashboard: bool,
    mailer: Option<Arc<reports::Mailer>>,
    retention: Duration,
    metrics: Metrics,
    /// The database's condition as requests saw it (one log line per change).
    outage: problem::Outage,
    /// Timeouts and the connection cap of the HTTP server.
    limits: printernizer_stats_shared::server::Limits,
}

impl<S: SubmissionStore> App<S> {
    /// The application over `store` with `settings`.
    pub fn new(
        store: S,
        backend: &'static str,
        settings: &AggregatorSettings,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            clock,
            backend,
            api_keys: settings
                .api_keys()
                .iter()
                .map(|k| api::key_digest(k))
                .collect(),
            // The bounds (≤ 1000, ≤ 16 MiB, ≤ 3650 days) make these conversions exact.
            rate_limit: RateLimit::per_hour(settings.rate_limit_per_hour.get() as u32),
            max_body_bytes: settings.max_body_bytes.get() as usize,
            k_anonymity: settings.k_anonymity.get() as u32,
            public_dashboard: settings.public_dashboard,
            mailer: match reports::Mailer::from_settings(&settings.email) {
                Ok(m) => m.map(Arc::new),
                Err(e) => {
                    tracing::warn!("aggregator: e-mail reports are off: {e}");
                    None
                }
            },
            retention: Duration::days(settings.retention_days.get() as i64),
            metrics: Metrics::default(),
            outage: problem::Outage::default(),
            limits: settings.limits(),
        })
    }

    /// Request counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Deletes submissions older than the retention period; returns how many.
    pub async fn prune_expired(&self) -> Result<u64> {
        let now = self.clock.now();
        self.store.prune(now - self.retention, now).await
    }

    /// Serves on `listener` until `shutdown` resolves, then finishes in-flight requests. Runs
    /// the retention job at start and every [`RETENTION_EVERY`].
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let retention = {
            let app = self.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(RETENTION_EVERY);
                loop {
                    every.tick().await;
                    match app.prune_expired().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(
                            "aggregator: retention deleted {n} submission(s) older than {} days",
                            app.retention.num_days()
                        ),
                        Err(e) => tracing::warn!("aggregator: retention job failed: {e}"),
                    }
                }
            })
        };
        let weekly = self
            .mailer
            .as_ref()
            .and_then(|m| m.weekly)
            .map(|(day, hour)| tokio::spawn(reports::schedule::run(self.clone(), day, hour)));
        let recovery = tokio::spawn(problem::Outage::watch(self.clone()));
        let limits = self.limits;
        let served = printernizer_stats_shared::server::serve(
            "aggregator",
            listener,
            api::router(self),
            limits,
            shutdown,
        )
        .await;
        retention.abort();
        recovery.abort();
        if let Some(task) = weekly {
            task.abort();
        }
        served.map_err(Error::Io)
    }
}

/// Opens the configured database and serves on `settings.bind` until `shutdown`.
pub async fn run(
    settings: &AggregatorSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addr: SocketAddr = settings.bind.parse().map_err(|_| {
        Error::Config(format!(
            "`aggregator.bind`: `{}` is not an address",
            settings.bind
        ))
    })?;
    let url = DatabaseUrl::parse(&settings.database_url)
        .map_err(|e| Error::Config(format!("`aggregator.database_url`: {e}")))?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr}: {e}"),
        ))
    })?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let keys = if settings.api_keys().is_empty() {
        "no API key required"
    } else {
        "X-API-Key required"
    };
    match url {
        DatabaseUrl::Sqlite(path) => {
            let store = SqliteStore::open(&path)?;
            tracing::info!(
                "aggregator listening on http://{addr} (SQLite {}, {keys})",
                path.display()
            );
            App::new(store, "sqlite", settings, clock)
                .serve(listener, shutdown)
                .await
        }
        DatabaseUrl::Postgres(url) => {
            let store = PgStore::connect(&url).await?;
            tracing::info!("aggregator listening on http://{addr} (PostgreSQL, {keys})");
            App::new(store, "postgres", settings, clock)
                .serve(listener, shutdown)
                .await
        }
    }
}
