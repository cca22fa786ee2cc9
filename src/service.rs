//! The service façade: what the CLI, MQTT and HTTP front ends call.
//!
//! It owns the [`Store`], the [`Sanitizer`] (with the installation's salt) and the policy
//! decisions: opt-in/out (one source of truth, `usage_settings.opt_in_status`), `DO_NOT_TRACK`,
//! the report period, retention.

use std::io::Write;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::aggregate::{self, AggregatedStats, InstallationContext, LocalStats, SCHEMA_VERSION};
use crate::clock::Clock;
use crate::config::Settings;
use crate::event::{RawEvent, Sanitizer, UsageEvent};
use crate::installation::Probe;
use crate::metrics::Metrics;
use crate::store::rollup::{self, counters};
use crate::store::{Inserted, PendingInsert, Store, fmt_ts, parse_ts, settings};
use crate::{Error, Result};

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
    /// Reads the real process environment.
    pub fn from_system() -> Self {
        Self {
            do_not_track: std::env::var("DO_NOT_TRACK")
                .map(|v| is_truthy(&v))
                .unwrap_or(false),
            probe: Probe::from_system(),
            addon_mode: std::env::var(crate::config::SUPERVISOR_TOKEN_ENV)
                .is_ok_and(|t| !t.is_empty()),
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
            settings.database.max_size_mb,
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
            sanitizer: Sanitizer::new(salt, settings.retention.days),
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

    /// Records a Printernizer availability transition (its MQTT `status` topic, or the
    /// bridge's `/health` reachability) as `app_start`/`app_shutdown`, so that uptime is
    /// measured from it. Repeated `online` (retained messages after every reconnect) records
    /// nothing, and neither does `online` after an `app_start` that Printernizer's own log
    /// already supplied: each start counts once. `at` is when it happened (default now; the
    /// bridge dates a shutdown to the last time Printernizer answered).
    pub async fn printernizer_availability(
        &self,
        online: bool,
        at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        self.set_printernizer_online(online);
        let last: Option<String> = self
            .store
            .read(|c| {
                use rusqlite::OptionalExtension;
                Ok(c.query_row(
                    "SELECT event_type FROM usage_events WHERE event_type IN ('app_start', 'app_shutdown')
                     ORDER BY timestamp DESC LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()?)
            })
            .await?;
        let up = last.as_deref() == Some("app_start");
        if online != up {
            let kind = if online { "app_start" } else { "app_shutdown" };
            let mut raw = RawEvent::new(kind, serde_json::Value::Null);
            raw.timestamp = at.map(|t| t.to_rfc3339());
            self.record(&raw).await?;
            tracing::info!(online, "Printernizer availability changed");
        }
        Ok(())
    }

    /// Sets Printernizer's availability as shown (the binary sensor) without recording
    /// anything: the bridge records the start itself once it has read the log.
    pub fn set_printernizer_online(&self, online: bool) {
        let previous = self
            .printernizer_online
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(online);
        if previous != Some(online) {
            self.touched();
        }
    }

    /// Printernizer's availability as last reported (MQTT status or the bridge); `None` until
    /// either said anything in this process.
    pub fn printernizer_online(&self) -> Option<bool> {
        *self
            .printernizer_online
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Records whether Printernizer itself shares its usage statistics; a change is logged
    /// once and shown everywhere (the switch's `reason`, `status`, the page).
    pub async fn set_printernizer_sharing(&self, sharing: bool) -> Result<()> {
        let changed = self
            .store
            .write(move |tx, now| {
                let was = settings::get(tx, settings::PRINTERNIZER_SHARING)?.is_some();
                if was == sharing {
                    return Ok(false);
                }
                if sharing {
                    settings::set(tx, settings::PRINTERNIZER_SHARING, "enabled", now)?;
                } else {
                    tx.execute(
                        "DELETE FROM usage_settings WHERE key = ?1",
                        [settings::PRINTERNIZER_SHARING],
                    )?;
                }
                Ok(true)
            })
            .await?;
        if changed {
            if sharing {
                tracing::warn!("{PRINTERNIZER_SHARES_REASON}");
            } else {
                tracing::info!(
                    "Printernizer no longer shares its own usage statistics; submission follows this service's opt-in again"
                );
            }
            self.changed();
        }
        Ok(())
    }

    /// Whether Printernizer itself shares its usage statistics (as the bridge last saw it).
    pub async fn printernizer_sharing(&self) -> Result<bool> {
        Ok(self
            .store
            .read(|c| settings::get(c, settings::PRINTERNIZER_SHARING))
            .await?
            .is_some())
    }

    /// The event sources this configuration uses.
    pub fn sources(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.settings.mqtt.enabled {
            out.push("mqtt".to_owned());
        }
        let bridge = &self.settings.printernizer;
        if bridge.enabled && (bridge.url().is_some() || self.env.addon_mode) {
            out.push("printernizer api".to_owned());
        }
        out
    }

    /// Whether the user opted in to the current report schema (and `DO_NOT_TRACK` is unset):
    /// what the Home Assistant switch shows.
    pub async fn sharing_active(&self) -> Result<bool> {
        if self.env.do_not_track {
            return Ok(false);
        }
        self.store
            .read(|c| {
                Ok(
                    settings::get(c, settings::OPT_IN_STATUS)?.as_deref() == Some("enabled")
                        && settings::get(c, settings::PRIVACY_POLICY_VERSION)?.as_deref()
                            == Some(SCHEMA_VERSION),
                )
            })
            .await
    }

    /// Whether the user opted in.
    pub async fn is_opted_in(&self) -> Result<bool> {
        Ok(self
            .store
            .read(|c| settings::get(c, settings::OPT_IN_STATUS))
            .await?
            .as_deref()
            == Some("enabled"))
    }

    /// Opts in; refused (policy) while `DO_NOT_TRACK` is set. Records the consented schema
    /// version and, on the first opt-in, the start of the first report period.
    pub async fn opt_in(&self) -> Result<String> {
        if self.env.do_not_track {
            tracing::warn!("opt-in refused: DO_NOT_TRACK is set in the environment");
            return Err(Error::Policy(
                "DO_NOT_TRACK is set, so usage statistics cannot be enabled".into(),
            ));
        }
        let id = self
            .store
            .write(|tx, now| {
                let was = settings::get(tx, settings::OPT_IN_STATUS)?;
                if was.as_deref() != Some("enabled") {
                    settings::set(tx, settings::OPT_IN_STATUS, "enabled", now)?;
                    settings::set(tx, OPT_IN_DATE, &fmt_ts(now), now)?;
                }
                settings::set(tx, settings::PRIVACY_POLICY_VERSION, SCHEMA_VERSION, now)?;
                Ok(settings::get(tx, settings::INSTALLATION_ID)?.unwrap_or_default())
            })
            .await?;
        tracing::info!("opted in to anonymous usage statistics");
        self.changed();
        Ok(id)
    }

    /// Opts out. Local data stays until the user deletes it.
    ///
    /// Leaving an opted-in state also, in one transaction: drops the pending report, queues
    /// **one** deletion request for the server (`DELETE <server base>/installation/<id>`, when
    /// an endpoint is configured; [`crate::submission::Submitter`] sends it) and rotates the
    /// installation id, so that a later opt-in is a new anonymous installation.
    pub async fn opt_out(&self) -> Result<()> {
        let base = self
            .settings
            .submission_endpoint()
            .map(crate::submission::server_base);
        let rotated = self
            .store
            .write(move |tx, now| {
                let was = settings::get(tx, settings::OPT_IN_STATUS)?;
                settings::set(tx, settings::OPT_IN_STATUS, "disabled", now)?;
                if was.as_deref() != Some("enabled") {
                    return Ok(false);
                }
                tx.execute("DELETE FROM usage_submissions WHERE kind = 'report'", [])?;
                let old_id = settings::get(tx, settings::INSTALLATION_ID)?.unwrap_or_default();
                if let Some(base) = base {
                    tx.execute(
                        "INSERT INTO usage_submissions
                            (kind, idempotency_key, url, next_attempt_at, created_at)
                         VALUES ('deletion', ?1, ?2, ?3, ?3)",
                        rusqlite::params![
                            Uuid::new_v4().to_string(),
                            format!("{base}/installation/{old_id}"),
                            fmt_ts(now)
                        ],
                    )?;
                }
                settings::set(
                    tx,
                    settings::INSTALLATION_ID,
                    &Uuid::new_v4().to_string(),
                    now,
                )?;
                tx.execute(
                    "DELETE FROM usage_settings WHERE key IN (?1, ?2)",
                    [OPT_IN_DATE, LAST_REPORT_END],
                )?;
                Ok(true)
            })
            .await?;
        self.changed();
        if rotated {
            tracing::info!(
                "opted out: pending report dropped, deletion requested, installation id rotated; local data stays until deleted"
            );
        } else {
            tracing::info!("opted out of usage statistics; local data stays until deleted");
        }
        Ok(())
    }

    /// Current state for `status`.
    pub async fn status(&self) -> Result<Status> {
        let dnt = self.env.do_not_track;
        let database = self.settings.database.path.display().to_string();
        let sources = self.sources();
        let endpoint = self.settings.submission_endpoint().is_some();
        self.store
            .read(move |c| {
                let opt_in =
                    settings::get(c, settings::OPT_IN_STATUS)?.unwrap_or_else(|| "disabled".into());
                let consented = settings::get(c, settings::PRIVACY_POLICY_VERSION)?;
                let printernizer_sharing =
                    settings::get(c, settings::PRINTERNIZER_SHARING)?.is_some();
                let reason = if dnt {
                    Some("DO_NOT_TRACK is set: nothing is submitted".to_owned())
                } else if opt_in != "enabled" {
                    Some("not opted in: nothing is submitted".to_owned())
                } else if consented.as_deref() != Some(SCHEMA_VERSION) {
                    Some(format!(
                        "consent needed for schema {SCHEMA_VERSION}: opt in again to resume"
                    ))
                } else if printernizer_sharing {
                    Some(PRINTERNIZER_SHARES_REASON.to_owned())
                } else if !endpoint {
                    Some(NO_ENDPOINT_REASON.to_owned())
                } else {
                    None
                };
                Ok(Status {
                    opt_in_status: opt_in,
                    do_not_track: dnt,
                    reason,
                    installation_id: settings::get(c, settings::INSTALLATION_ID)?
                        .unwrap_or_default(),
                    first_seen: settings::get(c, settings::FIRST_RUN_DATE)?,
                    privacy_policy_version: settings::get(c, settings::PRIVACY_POLICY_VERSION)?,
                    last_submission: settings::get(c, settings::LAST_SUBMISSION_DATE)?,
                    submission_count: settings::get(c, settings::SUBMISSION_COUNT)?
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                    events_total: rollup::counter(c, counters::EVENTS_TOTAL)?,
                    events_pending: rollup::counter(c, counters::EVENTS_PENDING)?,
                    database,
                    sources,
                    bridge_last_success: settings::get(c, settings::BRIDGE_LAST_SUCCESS)?,
                    printernizer_sharing,
                })
            })
            .await
    }

    /// Sets the country Home Assistant is configured for (add-on mode); it takes precedence
    /// over `installation.country_code`. Never derived from an IP address.
    pub fn set_home_assistant_country(&self, country: Option<String>) {
        *self.ha_country.lock().unwrap_or_else(|e| e.into_inner()) = country;
    }

    fn context(&self) -> InstallationContext {
        let ha = self
            .ha_country
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        InstallationContext {
            country_code: ha
                .or_else(|| self.settings.country_code())
                .unwrap_or_else(|| "XX".into()),
            deployment_mode: self
                .settings
                .deployment_mode()
                .unwrap_or_else(|| self.env.probe.deployment_mode()),
        }
    }

    /// The period the next report covers at `now`.
    ///
    /// The first report after opting in is the report the user saw: the preview's period, the
    /// last `submission.interval_days` up to its submission, with the same figures. Later ones
    /// start at the end of the last accepted report — consecutive reports are contiguous. Not
    /// opted in: the last `submission.interval_days` up to now (the preview).
    pub async fn next_period(&self) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
        let end = self.now();
        let interval = Duration::days(i64::from(self.settings.submission.interval_days));
        let (opted, last_end) = self
            .store
            .read(|c| {
                Ok((
                    settings::get(c, settings::OPT_IN_STATUS)?.as_deref() == Some("enabled"),
                    settings::get(c, LAST_REPORT_END)?,
                ))
            })
            .await?;
        if !opted || self.env.do_not_track {
            return Ok((end - interval, end));
        }
        let start = last_end
            .as_deref()
            .and_then(parse_ts)
            .unwrap_or(end - interval);
        Ok((start.min(end), end))
    }

    /// When the next report is due: `submission.interval_days` after the end of the last
    /// accepted report, or after opting in for the first.
    pub async fn report_due(&self) -> Result<DateTime<Utc>> {
        let now = self.now();
        let interval = Duration::days(i64::from(self.settings.submission.interval_days));
        let (last_end, opt_in_date) = self
            .store
            .read(|c| {
                Ok((
                    settings::get(c, LAST_REPORT_END)?,
                    settings::get(c, OPT_IN_DATE)?,
                ))
            })
            .await?;
        let since = last_end
            .or(opt_in_date)
            .as_deref()
            .and_then(parse_ts)
            .unwrap_or(now);
        Ok(since + interval)
    }

    /// The report for `[from, to)`, or for [`Self::next_period`] when either is missing.
    pub async fn report(
        &self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<AggregatedStats> {
        let (start, end) = match (from, to) {
            (None, None) => self.next_period().await?,
            (from, to) => {
                let end = to.unwrap_or_else(|| self.now());
                let start = from.unwrap_or(
                    end - Duration::days(i64::from(self.settings.submission.interval_days)),
                );
                (start, end)
            }
        };
        if start > end {
            return Err(Error::InvalidInput(format!(
                "--from ({}) is after --to ({})",
                fmt_ts(start),
                fmt_ts(end)
            )));
        }
        let ctx = self.context();
        let now = self.now();
        self.store
            .read(move |c| aggregate::aggregate(c, &ctx, start, end, now))
            .await
    }

    /// Local summary.
    pub async fn local_stats(&self) -> Result<LocalStats> {
        let now = self.now();
        self.store
            .read(move |c| aggregate::local_stats(c, now))
            .await
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
        let cutoff = self.now() - Duration::days(i64::from(self.settings.retention.days));
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

    fn changed(&self) {
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
