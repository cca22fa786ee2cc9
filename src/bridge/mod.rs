//! The Printernizer bridge: events from an unmodified Printernizer, read over its REST API.
//!
//! Printernizer 2.42 publishes nothing on MQTT, but it keeps its own usage-statistics log and
//! serves it, with its health, printers and jobs, without authentication. A task inside `run`
//! polls it every `printernizer.poll_interval_s` and feeds the **same** sanitizer and writer
//! path as MQTT ingest; "ack after commit" becomes "the cursor advances after commit".
//!
//! One poll ([`Bridge::cycle`]):
//! 1. `GET /health` — its reachability is Printernizer's availability, exactly like the MQTT
//!    `printernizer/status` topic. Going down records `app_shutdown`, dated to the last time it
//!    answered (the last evidence it ran); coming back records `app_start` only when its own log
//!    did not supply a new one, so each start counts once (also a restart while we were down).
//! 2. `GET /usage-stats/status` — `opted_in` (Printernizer shares its own statistics: then this
//!    service submits nothing, or the installation would be counted twice) and `total_events`.
//! 3. `GET /usage-stats/export` when `total_events` changed since the last complete ingest (and
//!    on start), streamed ([`export`]); each event stored under Printernizer's own UUID.
//! 4. `GET /printers` — each printer counted for the fleet by a salted hash of its id with its
//!    real type; nothing else of the answer is kept.
//! 5. `GET /jobs` (all pages) when the log changed, a printer changed state, on start, or every
//!    [`JOBS_SWEEP`] (cancellations are not logged) — see [`jobs`] for how jobs are counted.
//!
//! Idle (nothing new), a poll is three small requests: `/health`, `/status`, `/printers`.
//! Failures — refused, timeouts, 5xx, HTML, invalid JSON, a full disk — are logged once per
//! change of condition and back off (doubling, up to [`MAX_BACKOFF`]); a 429 waits what
//! `Retry-After` asks. Nothing stored is lost and nothing is counted twice: ids are stable.
//! See `docs/bridge.md`.

pub mod client;
pub mod export;
pub mod jobs;
pub mod locate;
pub(crate) mod state;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::client::{Client, FetchError};
use self::export::{ExportError, Flow, Mapped, Skip};
use self::jobs::{Keys, PrinterActivity, PrinterNow};
use crate::Error;
use crate::backoff::Backoff;
use crate::event::EventType;
use crate::event::vocab::PrinterType;
use crate::metrics::Metrics;
use crate::service::StatsService;
use crate::store::{Inserted, PendingInsert, fmt_ts, rollup, settings};

/// Longest wait between polls while Printernizer fails.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The job list is read at least this often even when nothing hints at a change (a
/// cancellation is not logged and does not change a printer's state).
pub const JOBS_SWEEP: Duration = Duration::from_secs(300);
/// Inserts in flight while ingesting the export (the writer batches them).
const IN_FLIGHT: usize = 1024;

/// Why a poll did not complete.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// A request failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The export could not be parsed.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// Storing failed (disk full …): nothing is acknowledged, the next poll tries again.
    #[error("cannot store what Printernizer reported (is the disk full?): {0}")]
    Store(#[from] Error),
}

impl BridgeError {
    fn condition(&self) -> String {
        match self {
            BridgeError::Fetch(e) => e.condition(),
            BridgeError::Export(_) => "unreadable export".into(),
            BridgeError::Store(_) => "storage".into(),
        }
    }
}

/// Where Printernizer is: `printernizer.url`, else (add-on) through the Supervisor, else off;
/// always off with `printernizer.enabled = false`.
pub async fn resolve_url(
    service: &StatsService,
    supervisor: Option<&crate::deployment::Supervisor>,
) -> Option<String> {
    if !service.settings().printernizer.enabled {
        return None;
    }
    if let Some(url) = service.settings().printernizer.url() {
        return Some(url.to_owned());
    }
    let sv = supervisor?;
    let (url, how) = locate::printernizer_url(&sv.url, &sv.token).await;
    tracing::info!(%url, "Printernizer bridge: {how}");
    Some(url)
}

/// Starts the bridge task against `url`; it stops when `stop` is cancelled.
pub fn spawn(
    service: StatsService,
    url: &str,
    stop: CancellationToken,
) -> crate::Result<JoinHandle<()>> {
    let settings = &service.settings().printernizer;
    let client = Client::new(url, settings.timeout())
        .map_err(|e| Error::Config(format!("`printernizer.url`: {e}")))?;
    let interval = settings.poll_interval();
    tracing::info!(url = %client.base(), interval_s = interval.as_secs(), "reading Printernizer's REST API");
    let bridge = Bridge {
        service,
        client,
        interval,
        online: None,
        last_ok: None,
        pending_start: false,
        ingested_total: None,
        jobs_total: None,
        printer_activity: None,
        jobs_fetched_at: None,
        condition: None,
        failures: 0,
    };
    Ok(tokio::spawn(bridge.run(stop)))
}

/// What one export ingest did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    /// Events newly stored.
    pub stored: u64,
    /// Events that were stored before.
    pub duplicates: u64,
    /// Entries skipped (job entries, too old, unrecorded types, malformed).
    pub skipped: u64,
    /// Entries the sanitizer rejected.
    pub rejected: u64,
    /// New `app_start` events among the stored ones (Printernizer started).
    pub starts: u64,
}

struct Bridge {
    service: StatsService,
    client: Client,
    interval: Duration,
    online: Option<bool>,
    last_ok: Option<DateTime<Utc>>,
    /// Came back online; the start is recorded once the log was read.
    pending_start: bool,
    /// `total_events` at the last complete ingest in this process (`None`: ingest on start).
    ingested_total: Option<u64>,
    /// `total_events` when the job list was last read.
    jobs_total: Option<u64>,
    printer_activity: Option<HashMap<String, PrinterActivity>>,
    jobs_fetched_at: Option<Instant>,
    condition: Option<String>,
    failures: u32,
}

struct SaltKeys<'a>(&'a StatsService);

impl Keys for SaltKeys<'_> {
    fn job(&self, id: &str) -> String {
        self.0.keyed_hash(&format!("printernizer-job\0{id}"))
    }
    fn printer(&self, id: &str) -> String {
        self.0.keyed_hash(id.trim())
    }
}

impl Bridge {
    fn now(&self) -> DateTime<Utc> {
        self.service.store().clock().now()
    }

    fn cutoff(&self) -> DateTime<Utc> {
        self.now() - self.service.settings().retention.period()
    }

    async fn run(mut self, stop: CancellationToken) {
        let cutoff = self.cutoff();
        if let Err(e) = self
            .service
            .store()
            .write(move |tx, _| state::prune_jobs(tx, cutoff))
            .await
        {
            tracing::warn!(error = %e, "cannot prune the bridge's job records");
        }
        loop {
            let outcome = tokio::select! {
                outcome = self.cycle() => outcome,
                () = stop.cancelled() => return,
            };
            let delay = match outcome {
                Ok(()) => {
                    if self.condition.take().is_some() {
                        tracing::info!(
                            "Printernizer's API answers again; the bridge is reading it"
                        );
                    }
                    self.storage_works();
                    self.failures = 0;
                    self.interval
                }
                Err(e) => self.failed(&e),
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    /// Logs a failure once per change of condition; returns the delay before the next poll.
    fn failed(&mut self, e: &BridgeError) -> Duration {
        let metrics = self.service.metrics();
        Metrics::incr(&metrics.bridge_failures);
        self.failures = self.failures.saturating_add(1);
        let delay = match e {
            BridgeError::Fetch(f) if f.retry_after().is_some() => f
                .retry_after()
                .unwrap_or(self.interval)
                .max(Duration::from_secs(1)),
            _ => Backoff::new(self.interval, MAX_BACKOFF.max(self.interval))
                .delay(self.failures.saturating_sub(1)),
        };
        if let BridgeError::Store(_) = e
            && !metrics.storage_failing.swap(true, Ordering::Relaxed)
        {
            self.service.touched();
        }
        let condition = e.condition();
        if self.condition.as_deref() != Some(condition.as_str()) {
            tracing::warn!(error = %e, retry_in_s = delay.as_secs(), "Printernizer bridge: {condition}; what was stored stays, trying again");
            self.condition = Some(condition);
        } else {
            tracing::debug!(error = %e, retry_in_s = delay.as_secs(), "Printernizer bridge: still {condition}");
        }
        delay
    }

    fn storage_works(&self) {
        if self
            .service
            .metrics()
            .storage_failing
            .swap(false, Ordering::Relaxed)
        {
            tracing::info!("storing events works again");
            self.service.touched();
        }
    }

    /// One poll (see the module docs).
    async fn cycle(&mut self) -> Result<(), BridgeError> {
        Metrics::incr(&self.service.metrics().bridge_polls);
        // 1. Reachability.
        match self.client.health().await {
            Ok(health) => {
                if let Some(status) = health.status.filter(|s| s != "healthy") {
                    tracing::debug!(%status, "Printernizer answers, but does not call itself healthy");
                }
                if self.online != Some(true) {
                    self.pending_start = true;
                    self.online = Some(true);
                    self.service.set_printernizer_online(true);
                }
                self.last_ok = Some(self.now());
            }
            Err(e) if e.retry_after().is_some() => return Err(e.into()),
            Err(e) => {
                if self.online != Some(false) {
                    self.online = Some(false);
                    self.pending_start = false;
                    self.service
                        .printernizer_availability(false, self.last_ok)
                        .await?;
                }
                return Err(e.into());
            }
        }
        // 2. Its own sharing switch and the size of its log.
        let status = self.client.usage_status().await?;
        self.service
            .set_printernizer_sharing(status.opted_in)
            .await?;
        // 3. The log.
        if self.ingested_total != Some(status.total_events) {
            let first = self.ingested_total.is_none();
            let done = self.ingest_export().await?;
            self.ingested_total = Some(status.total_events);
            if done.starts > 0 && self.pending_start {
                // Its own log told the start (with its versions): that is the one start.
                self.pending_start = false;
            }
            if done.stored > 0 {
                // The first read after start at info; later ones (every new event) at debug.
                if first {
                    tracing::info!(
                        stored = done.stored,
                        already_stored = done.duplicates,
                        skipped = done.skipped,
                        "read Printernizer's usage-statistics log"
                    );
                } else {
                    tracing::debug!(
                        stored = done.stored,
                        already_stored = done.duplicates,
                        skipped = done.skipped,
                        "read Printernizer's usage-statistics log"
                    );
                }
                self.service.touched();
            }
        }
        if self.pending_start {
            // Its log's own `app_start` (with versions) came first; this records one only if
            // the log had none.
            self.service.printernizer_availability(true, None).await?;
            self.pending_start = false;
        }
        // 4. Printers.
        let listing = self.client.printers().await?;
        let keys = SaltKeys(&self.service);
        let printers: HashMap<String, PrinterNow> = listing
            .items
            .into_iter()
            .map(|p| {
                let typ = p
                    .printer_type
                    .as_deref()
                    .map(PrinterType::classify)
                    .filter(|t| *t != PrinterType::Unknown);
                (
                    keys.printer(&p.id.into_string()),
                    PrinterNow {
                        activity: PrinterActivity::classify(p.status.as_deref()),
                        printer_type: typ,
                    },
                )
            })
            .collect();
        let activity: HashMap<String, PrinterActivity> = printers
            .iter()
            .map(|(k, p)| (k.clone(), p.activity))
            .collect();
        // 5. Jobs.
        let fetch_jobs = self.jobs_total != Some(status.total_events)
            || self.printer_activity.as_ref() != Some(&activity)
            || self
                .jobs_fetched_at
                .is_none_or(|t| t.elapsed() >= JOBS_SWEEP);
        let jobs = if fetch_jobs {
            let jobs = self.client.jobs().await?;
            if jobs.skipped > 0 {
                tracing::debug!(
                    skipped = jobs.skipped,
                    "job entries without the expected shape skipped"
                );
            }
            Some(jobs)
        } else {
            None
        };
        self.apply_jobs(jobs.as_ref(), &printers).await?;
        if jobs.is_some() {
            self.jobs_fetched_at = Some(Instant::now());
            self.jobs_total = Some(status.total_events);
        }
        self.printer_activity = Some(activity);
        // The fleet, and the time of this successful poll, in one transaction.
        let sightings: Vec<(String, Option<&'static str>)> = printers
            .iter()
            .map(|(k, p)| (k.clone(), p.printer_type.map(PrinterType::as_str)))
            .collect();
        self.service
            .store()
            .write(move |tx, now| {
                rollup::record_sightings(tx, now, &sightings)?;
                settings::set(tx, settings::BRIDGE_LAST_SUCCESS, &fmt_ts(now), now)
            })
            .await?;
        Ok(())
    }

    /// Decides and stores the job events of this poll.
    async fn apply_jobs(
        &self,
        jobs: Option<&client::Listing<client::Job>>,
        printers: &HashMap<String, PrinterNow>,
    ) -> Result<(), BridgeError> {
        let known = self.service.store().read(state::load_jobs).await?;
        if jobs.is_none() && !known.values().any(|k| matches!(k, jobs::Known::Open(_))) {
            return Ok(());
        }
        let plan = jobs::plan(
            &known,
            jobs,
            Some(printers),
            self.now(),
            self.cutoff(),
            &SaltKeys(&self.service),
        );
        let mut pending = Vec::with_capacity(plan.events.len());
        for e in &plan.events {
            match self
                .service
                .enqueue_hashed(&e.raw, e.printer_hash.clone())
                .await
            {
                Ok((_, p)) => pending.push(p),
                Err(Error::Rejected(reason)) => {
                    tracing::warn!(%reason, "a job event was rejected")
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut stored = 0;
        for p in pending {
            if self.committed(p).await? == Inserted::New {
                stored += 1;
            }
        }
        if plan.open.is_empty() && plan.closed.is_empty() {
            return Ok(());
        }
        let (open, closed) = (plan.open, plan.closed);
        self.service
            .store()
            .write(move |tx, now| state::save_jobs(tx, &open, &closed, now))
            .await?;
        if stored > 0 {
            tracing::debug!(stored, "job events from Printernizer's job list stored");
            self.service.touched();
        }
        Ok(())
    }

    async fn committed(&self, pending: PendingInsert) -> Result<Inserted, BridgeError> {
        let outcome = pending.committed().await?;
        let metrics = self.service.metrics();
        match outcome {
            Inserted::New => Metrics::incr(&metrics.events_stored),
            Inserted::Duplicate => Metrics::incr(&metrics.events_duplicate),
        }
        Ok(outcome)
    }

    /// Reads the export from the top down to the cursor, stores what is new, then moves the
    /// cursor to the newest event — after every insert committed.
    async fn ingest_export(&self) -> Result<Ingested, BridgeError> {
        let store = self.service.store();
        let cursor = store.read(|c| state::get(c, state::EXPORT_CURSOR)).await?;
        let (_url, response) = self.client.export().await?;
        let cutoff = self.cutoff();
        let (tx, mut rx) = mpsc::channel::<Mapped>(IN_FLIGHT);
        let stream = response.bytes_stream().map_err(std::io::Error::other);
        let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
        let parser = tokio::task::spawn_blocking(move || {
            let reader = std::io::BufReader::with_capacity(64 * 1024, reader);
            let mut newest: Option<String> = None;
            let summary = export::for_each_event(reader, |event| {
                let id = event.id().map(str::to_owned);
                if id.is_some() && id == cursor {
                    return Flow::Stop;
                }
                if newest.is_none() {
                    newest.clone_from(&id);
                }
                if tx
                    .blocking_send(export::map_log_event(event, cutoff))
                    .is_err()
                {
                    return Flow::Stop;
                }
                Flow::Continue
            });
            summary.map(|s| (s, newest))
        });
        let mut done = Ingested::default();
        let mut in_flight: VecDeque<(bool, PendingInsert)> = VecDeque::with_capacity(IN_FLIGHT);
        while let Some(mapped) = rx.recv().await {
            match mapped {
                Mapped::Store(raw) => match self.service.enqueue(&raw).await {
                    Ok((event, p)) => {
                        in_flight.push_back((event.event_type == EventType::AppStart, p));
                        if in_flight.len() >= IN_FLIGHT
                            && let Some((start, p)) = in_flight.pop_front()
                        {
                            self.count(start, self.committed(p).await?, &mut done);
                        }
                    }
                    Err(Error::Rejected(_)) => done.rejected += 1,
                    Err(e) => return Err(e.into()),
                },
                Mapped::Skip(Skip::Job | Skip::TooOld | Skip::Unrecorded | Skip::Malformed) => {
                    done.skipped += 1;
                }
            }
        }
        let parsed = parser
            .await
            .map_err(|e| ExportError::new(format!("the reader stopped: {e}")));
        for (start, p) in in_flight {
            self.count(start, self.committed(p).await?, &mut done);
        }
        let (summary, newest) = parsed??;
        done.skipped += summary.malformed;
        if let Some(newest) = newest {
            store
                .write(move |tx, _| state::set(tx, state::EXPORT_CURSOR, &newest))
                .await?;
        }
        Ok(done)
    }

    fn count(&self, start: bool, outcome: Inserted, done: &mut Ingested) {
        match outcome {
            Inserted::New => {
                done.stored += 1;
                done.starts += u64::from(start);
            }
            Inserted::Duplicate => done.duplicates += 1,
        }
    }
}
