//! The service façade: what the CLI, MQTT and HTTP front ends call.
//!
//! It owns the [`Store`], the [`Sanitizer`] (with the installation's salt) and the policy
//! decisions: opt-in/out (one source of truth, `usage_settings.opt_in_status`), `DO_NOT_TRACK`,
//! the report period, retention.

use std::io::Write;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::aggregate::{self, AggregatedStats, InstallationContext, LocalStats, SCHEMA_VERSION};
use crate::clock::Clock;
use crate::config::Settings;
use crate::deployment::Deployment;
use crate::event::{RawEvent, Sanitizer, UsageEvent};
use crate::installation::Probe;
use crate::metrics::Metrics;
use crate::store::rollup::{self, counters};
use crate::store::{Inserted, PendingInsert, Store, fmt_ts, parse_ts, queue, settings};
use crate::{Error, Result};

mod consent;
pub mod external;
mod printernizer;
mod report;

pub use crate::store::settings::{LAST_REPORT_END, OPT_IN_DATE};

/// Facts about the process environment that policy depends on.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// `DO_NOT_TRACK` is set to a true value (`1`, `true`, `yes`, `on`).
    pub do_not_track: bool,
    /// Deployment detection input.
    pub probe: Probe,
    /// Running as the Home Assistant add-on (the Supervisor set `SUPERVISOR_TOKEN`).
    pub addon_mode: bool,
}

impl Environment {
    /// Reads `DO_NOT_TRACK` and this machine, for `deployment`.
    pub fn new(deployment: &Deployment) -> Self {
        Self {
            do_not_track: std::env::var("DO_NOT_TRACK")
                .map(|v| is_truthy(&v))
                .unwrap_or(false),
            probe: Probe::from_system(deployment.is_addon()),
            addon_mode: deployment.is_addon(),
        }
    }
}

/// Whether an environment value means "yes".
pub fn is_truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// Opt-in state and bookkeeping, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// `enabled` or `disabled`.
    pub opt_in_status: String,
    /// Whether `DO_NOT_TRACK` forbids opting in.
    pub do_not_track: bool,
    /// Why nothing is or would be submitted, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Random installation id.
    pub installation_id: String,
    /// First run.
    pub first_seen: Option<String>,
    /// The report schema version consented to.
    pub privacy_policy_version: Option<String>,
    /// Last accepted report.
    pub last_submission: Option<String>,
    /// Reports accepted.
    pub submission_count: u64,
    /// Events stored.
    pub events_total: u64,
    /// Events not yet reported.
    pub events_pending: u64,
    /// Database file.
    pub database: String,
    /// Where events come from: `mqtt`, `printernizer api` (the bridge), or both.
    pub sources: Vec<String>,
    /// When the Printernizer bridge last completed a poll, if ever.
    pub bridge_last_success: Option<String>,
    /// Whether Printernizer itself shares its usage statistics (then nothing is submitted here).
    pub printernizer_sharing: bool,
}

/// The reason shown while opted in without an aggregation server to send to.
pub const NO_ENDPOINT_REASON: &str = "opted in, but no aggregation server is configured: nothing can be sent until submission.endpoint (add-on option submission_endpoint) is set";

/// The reason shown while Printernizer shares its own statistics.
pub const PRINTERNIZER_SHARES_REASON: &str = "Printernizer shares its own usage statistics: this service submits nothing, so the installation is not counted twice";

/// The usage-statistics service.
#[derive(Debug, Clone)]
pub struct StatsService {
    store: Store,
    settings: Arc<Settings>,
    sanitizer: Sanitizer,
    metrics: Arc<Metrics>,
    env: Arc<Environment>,
    ha_country: Arc<std::sync::Mutex<Option<String>>>,
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    activity: Arc<tokio::sync::watch::Sender<u64>>,
    printernizer_online: Arc<std::sync::Mutex<Option<bool>>>,
}

impl StatsService {
    /// Opens the store and prepares the sanitizer.
    pub fn open(settings: Settings, clock: Arc<dyn Clock>, env: Environment) -> Result<Self> {
        let store = Store::open_capped(
            &settings.database.path,
            clock,
            settings.database.max_size_mib(),
        )?;
        let salt = store
            .read_blocking(|c| settings::get(c, settings::PRINTER_SALT))?
            .ok_or_else(|| Error::Schema("printer salt missing from usage_settings".into()))?;
        let rejected = store.read_blocking(|c| rollup::counter(c, counters::REJECTED_MESSAGES))?;
        let metrics = Metrics::default();
        metrics
            .rejected_messages
            .store(rejected, std::sync::atomic::Ordering::Relaxed);
        metrics
            .rejected_persisted
            .store(rejected, std::sync::atomic::Ordering::Relaxed);
        Ok(Self {
            sanitizer: Sanitizer::new(salt, settings.retention.period()),
            store,
            settings: Arc::new(settings),
            metrics: Arc::new(metrics),
            env: Arc::new(env),
            ha_country: Arc::default(),
            changes: Arc::new(tokio::sync::watch::Sender::new(0)),
            activity: Arc::new(tokio::sync::watch::Sender::new(0)),
            printernizer_online: Arc::default(),
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The configuration.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Process counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn now(&self) -> DateTime<Utc> {
        self.store.clock().now()
    }

    /// Sanitizes an event and queues it; the handle resolves after commit. Rejections are
    /// counted and logged at debug.
    pub async fn enqueue(&self, raw: &RawEvent) -> Result<(UsageEvent, PendingInsert)> {
        self.enqueue_hashed(raw, None).await
    }

    /// [`Self::enqueue`] for an event whose printer is already known by its keyed hash (the
    /// bridge's job events: a job tracked across a Printernizer restart has no printer id
    /// left, only its hash).
    pub(crate) async fn enqueue_hashed(
        &self,
        raw: &RawEvent,
        printer_hash: Option<String>,
    ) -> Result<(UsageEvent, PendingInsert)> {
        let mut event = self.sanitize(raw)?;
        if printer_hash.is_some() {
            event.printer_hash = printer_hash;
        }
        let pending = self.store.enqueue(event.clone()).await?;
        Ok((event, pending))
    }

    /// The installation's keyed hash of `input` (salted SHA-256; the same as a printer hash).
    pub(crate) fn keyed_hash(&self, input: &str) -> String {
        self.sanitizer.keyed_hash(input)
    }

    /// Sanitizes and stores one event, waiting for the commit.
    pub async fn record(&self, raw: &RawEvent) -> Result<(UsageEvent, Inserted)> {
        let (event, pending) = self.enqueue(raw).await?;
        let outcome = pending.committed().await?;
        match outcome {
            Inserted::New => Metrics::incr(&self.metrics.events_stored),
            Inserted::Duplicate => Metrics::incr(&self.metrics.events_duplicate),
        }
        Ok((event, outcome))
    }

    fn sanitize(&self, raw: &RawEvent) -> Result<UsageEvent> {
        self.sanitizer.sanitize(raw, self.now()).map_err(|reason| {
            Metrics::incr(&self.metrics.rejected_messages);
            tracing::debug!(%reason, "event rejected");
            Error::Rejected(reason)
        })
    }

    /// Whether `DO_NOT_TRACK` is set.
    pub fn do_not_track(&self) -> bool {
        self.env.do_not_track
    }

    /// A stable, anonymous 8-hex-digit tag for this installation (keyed by the secret salt,
    /// so it reveals nothing and survives installation-id rotation); used in the MQTT client id.
    pub fn stable_tag(&self, purpose: &str) -> String {
        self.sanitizer.keyed_hash(purpose)[..8].to_owned()
    }

    /// Streams the export to `out` on a blocking thread; returns the number of events.
    pub async fn export<W: Write + Send + 'static>(&self, out: W) -> Result<u64> {
        let now = self.now();
        self.store
            .read(move |c| crate::export::write_export(c, now, out))
            .await
    }

    /// Deletes all local events, rollups and pending reports.
    pub async fn delete_all(&self) -> Result<u64> {
        let n = self.store.delete_all().await?;
        // The counters went with the data: the sensor reads it as a meter reset.
        self.metrics
            .rejected_messages
            .store(0, std::sync::atomic::Ordering::Relaxed);
        self.metrics
            .rejected_persisted
            .store(0, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(deleted_events = n, "all local usage statistics deleted");
        self.changed();
        Ok(n)
    }

    /// Prunes events older than `retention.days`.
    pub async fn prune_expired(&self) -> Result<u64> {
        let cutoff = self.now() - self.settings.retention.period();
        let n = self.store.prune(cutoff).await?;
        if n > 0 {
            tracing::info!(pruned_events = n, cutoff = %fmt_ts(cutoff), "pruned events past retention");
        }
        Ok(n)
    }

    /// Notified after opt-in, opt-out and delete-all, whoever made the change (MQTT switch,
    /// web page, CLI in this process), so every view republishes.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub(crate) fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Notified when new data was stored or Printernizer's availability changed outside the
    /// MQTT handler (the bridge), so the Home Assistant state is republished.
    pub fn activity(&self) -> tokio::sync::watch::Receiver<u64> {
        self.activity.subscribe()
    }

    /// Signals [`Self::activity`].
    pub fn touched(&self) {
        self.activity.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Events per day and type for the last `days` days, and the last submission attempts.
    pub async fn history(&self, days: u32) -> Result<crate::history::History> {
        let now = self.now();
        self.store
            .read(move |c| crate::history::history(c, now, days))
            .await
    }

    /// Saves the counters that outlive the process (`rejected_messages`) when they changed.
    pub async fn persist_counters(&self) -> Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = Metrics::get(&self.metrics.rejected_messages);
        let before = self.metrics.rejected_persisted.load(Relaxed);
        if now == before {
            return Ok(());
        }
        self.store
            .write(move |tx, _| {
                rollup::add_counter(tx, counters::REJECTED_MESSAGES, now as i64 - before as i64)
            })
            .await?;
        self.metrics.rejected_persisted.store(now, Relaxed);
        Ok(())
    }

    /// Stops the store after pending writes are committed (saving the lasting counters first).
    pub async fn close(&self) -> Result<()> {
        if let Err(e) = self.persist_counters().await {
            tracing::warn!(error = %e, "cannot save the rejected-messages counter");
        }
        self.store.close().await
    }
}
