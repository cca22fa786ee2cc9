//! Weekly submission: built once, persisted, retried until the server has it, counted once.
//!
//! The scheduler calls [`Submitter::tick`] (hourly, and shortly after start); every decision
//! reads "now" from the service's clock, so tests walk through weeks without sleeping.
//!
//! * Nothing is sent unless the user opted in, `DO_NOT_TRACK` is not set, the consented schema
//!   version is the current one and `submission.endpoint` is set.
//! * Periods are contiguous: `[end of the last accepted report (or the opt-in), now)`.
//! * The report is persisted in `usage_submissions` with a UUID `Idempotency-Key` **before**
//!   the first attempt; every retry — also after a restart — sends the same body and key.
//! * 2xx: events of the period are marked submitted, `last_submission_date`,
//!   `submission_count` and the next period's start are updated in one transaction.
//!   429: `Retry-After`. 5xx, timeouts, connection errors: backoff 1 min doubling to 6 h with
//!   jitter. 400/401/403/413/422: unrecoverable for this body — kept, reported as a problem, and
//!   retried only after the endpoint or API key changed.
//! * At most one accepted submission per hour.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

use crate::aggregate::SCHEMA_VERSION;
use crate::backoff::Backoff;
use crate::service::StatsService;
use crate::store::queue::{self, Attempt, QueuedReport as Pending};
use crate::store::{fmt_ts, parse_ts, settings};
use crate::{Error, Result};
use printernizer_stats_shared::secret::Secret;

/// Largest report body sent.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;
/// Minimum time between two accepted submissions.
pub const MIN_SUBMISSION_GAP: Duration = Duration::hours(1);
/// First retry delay after a transient failure.
pub const BACKOFF_START: Duration = Duration::minutes(1);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::hours(6);
/// [`BACKOFF_START`] doubling to [`BACKOFF_MAX`], as the shared backoff.
const DELIVERY_BACKOFF: Backoff = Backoff::new(
    StdDuration::from_secs(BACKOFF_START.num_seconds() as u64),
    StdDuration::from_secs(BACKOFF_MAX.num_seconds() as u64),
);
/// Delivery attempts kept in `usage_submission_log`.
pub use crate::store::queue::LOG_KEEP;

/// The server's base URL (moved to the configuration, which owns the endpoint).
pub use crate::config::server_base;

/// Runs the scheduler until `stop`: one check shortly after start, then every hour at this
/// installation's own minute (an offset derived from its secret salt, so it is stable across
/// restarts and a fleet does not submit at the same minute). Overdue reports go out at the
/// next check.
pub async fn run_scheduler(submitter: Submitter, stop: tokio_util::sync::CancellationToken) {
    let offset_s = u64::from_str_radix(&submitter.service.stable_tag("submission-offset"), 16)
        .unwrap_or(0)
        % 3600;
    let mut delay = StdDuration::from_secs(30 + offset_s % 60);
    loop {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return,
        }
        match submitter.tick().await {
            Ok(outcome) => tracing::debug!(?outcome, "submission check"),
            Err(e) => tracing::warn!(error = %e, "submission check failed; will retry next hour"),
        }
        let now = chrono::Utc::now().timestamp().rem_euclid(3600) as u64;
        delay =
            StdDuration::from_secs((offset_s + 3600 - now) % 3600).max(StdDuration::from_secs(60));
    }
}

/// Opts out from any front end (the HA switch, the web page, the CLI): see
/// [`StatsService::opt_out`]; with a submitter, the deletion request it queued is sent at
/// once (the scheduler retries it if this fails).
pub async fn opt_out(service: &StatsService, submitter: Option<&Submitter>) -> Result<()> {
    match submitter {
        Some(s) => s.opt_out().await,
        None => service.opt_out().await,
    }
}

/// What a tick did.
#[derive(Debug, Clone, PartialEq)]
pub enum TickOutcome {
    /// Submission is off; why.
    Disabled(String),
    /// Nothing due before this time.
    NotDue(DateTime<Utc>),
    /// A pending report waits for its next attempt.
    Waiting(DateTime<Utc>),
    /// The server accepted the report.
    Accepted,
    /// The attempt failed; retried at this time.
    Retry(DateTime<Utc>, String),
    /// The server refused this report; waits for a configuration change.
    Blocked(String),
}

/// A queued report, as the web page shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PendingReport {
    /// Period start.
    pub period_start: String,
    /// Period end.
    pub period_end: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When it is tried next.
    pub next_attempt_at: String,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Refused by the server: waits for a configuration change.
    pub blocked: bool,
}

/// The submission scheduler's worker.
#[derive(Debug, Clone)]
pub struct Submitter {
    service: StatsService,
    client: reqwest::Client,
}

impl Submitter {
    /// A submitter when submission is configured (`submission.endpoint` set), else `None`.
    pub fn configured(service: &StatsService) -> Result<Option<Self>> {
        match service.settings().submission_endpoint() {
            Some(_) => Self::new(service.clone()).map(Some),
            None => Ok(None),
        }
    }

    /// A submitter for the service's configuration.
    pub fn new(service: StatsService) -> Result<Self> {
        let timeout = service.settings().submission.timeout();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("printernizer-stats/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Submission(format!("HTTP client: {e}")))?;
        Ok(Self { service, client })
    }

    /// When the last report was accepted.
    async fn last_accepted(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(self
            .service
            .store()
            .read(|c| settings::get(c, settings::LAST_SUBMISSION_DATE))
            .await?
            .as_deref()
            .and_then(parse_ts))
    }

    /// Adds `X-API-Key` when one is configured.
    fn with_api_key(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self
            .service
            .settings()
            .submission
            .api_key
            .as_ref()
            .map(Secret::expose)
        {
            Some(key) if !key.is_empty() => request.header("X-API-Key", key),
            _ => request,
        }
    }

    /// Endpoint and API key, hashed: a blocked report is retried only when this changes.
    fn fingerprint(&self) -> String {
        let s = &self.service.settings().submission;
        let mut h = Sha256::new();
        h.update(s.endpoint.as_deref().unwrap_or("").as_bytes());
        h.update([0]);
        h.update(s.api_key.as_ref().map_or("", Secret::expose).as_bytes());
        h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Why nothing may be sent now, if so.
    async fn disabled_reason(&self) -> Result<Option<String>> {
        if self.service.settings().submission_endpoint().is_none() {
            return Ok(Some("submission.endpoint is not set".into()));
        }
        if self.service.do_not_track() {
            return Ok(Some("DO_NOT_TRACK is set".into()));
        }
        if !self.service.is_opted_in().await? {
            return Ok(Some("not opted in".into()));
        }
        let consented = self
            .service
            .store()
            .read(|c| settings::get(c, settings::PRIVACY_POLICY_VERSION))
            .await?;
        if consented.as_deref() != Some(SCHEMA_VERSION) {
            return Ok(Some(format!("consent needed for schema {SCHEMA_VERSION}")));
        }
        if self.service.printernizer_sharing().await? {
            return Ok(Some(crate::service::PRINTERNIZER_SHARES_REASON.into()));
        }
        Ok(None)
    }

    /// One scheduler step.
    pub async fn tick(&self) -> Result<TickOutcome> {
        self.step(false).await
    }

    /// "Submit now": like a tick, but a report waiting in backoff is sent at once.
    pub async fn submit_now(&self) -> Result<TickOutcome> {
        self.step(true).await
    }

    /// Sends queued deletion requests that are due (all of them when `force`); a 2xx or 404
    /// answer removes the request, anything else is retried with backoff. Returns how many
    /// were confirmed.
    pub async fn flush_deletions(&self, force: bool) -> Result<usize> {
        let now = self.service.store().clock().now();
        let due = self.service.store().read(queue::deletions).await?;
        let mut confirmed = 0;
        for queue::QueuedDeletion {
            id,
            url,
            attempts,
            next_attempt_at,
        } in due
        {
            if !force && now < next_attempt_at {
                continue;
            }
            let result = self.with_api_key(self.client.delete(&url)).send().await;
            let done =
                matches!(&result, Ok(r) if r.status().is_success() || r.status().as_u16() == 404);
            if done {
                self.service
                    .store()
                    .write(move |tx, _| queue::remove(tx, id))
                    .await?;
                tracing::info!("deletion request confirmed by the aggregation server");
                confirmed += 1;
            } else {
                let why = match result {
                    Ok(r) => format!("HTTP {}", r.status().as_u16()),
                    Err(e) => e.to_string(),
                };
                let next = now + self.backoff(attempts);
                self.service
                    .store()
                    .write(move |tx, _| queue::record_failure(tx, id, next, &why, None))
                    .await?;
                tracing::warn!(retry_at = %fmt_ts(next), "deletion request not confirmed yet; will retry");
            }
        }
        Ok(confirmed)
    }

    /// Opts out (see [`StatsService::opt_out`]) and sends the deletion request at once.
    pub async fn opt_out(&self) -> Result<()> {
        self.service.opt_out().await?;
        self.flush_deletions(true).await?;
        Ok(())
    }

    async fn step(&self, now_pressed: bool) -> Result<TickOutcome> {
        self.flush_deletions(false).await?;
        if let Some(reason) = self.disabled_reason().await? {
            return Ok(TickOutcome::Disabled(reason));
        }
        let now = self.service.store().clock().now();
        let last_accept = self.last_accepted().await?;
        if let Some(last) = last_accept
            && now < last + MIN_SUBMISSION_GAP
        {
            return Ok(TickOutcome::NotDue(last + MIN_SUBMISSION_GAP));
        }
        let pending = match self.pending().await? {
            Some(p) => p,
            None => {
                let due = self.service.report_due().await?;
                if now < due && !now_pressed {
                    return Ok(TickOutcome::NotDue(due));
                }
                self.enqueue_report().await?
            }
        };
        if let Some(blocked) = &pending.blocked_fingerprint
            && *blocked == self.fingerprint()
        {
            return Ok(TickOutcome::Blocked(
                pending.last_error.clone().unwrap_or_default(),
            ));
        }
        if now < pending.next_attempt_at && !now_pressed {
            return Ok(TickOutcome::Waiting(pending.next_attempt_at));
        }
        let mut pending = pending;
        if now_pressed && pending.attempts > 0 {
            // A press sends the same report at once and starts the backoff afresh.
            let id = pending.id;
            self.service
                .store()
                .write(move |tx, _| queue::reset_attempts(tx, id))
                .await?;
            pending.attempts = 0;
        }
        self.send(pending, now).await
    }

    async fn pending(&self) -> Result<Option<Pending>> {
        self.service.store().read(queue::pending_report).await
    }

    /// Builds the report for the next period and persists it before any attempt.
    async fn enqueue_report(&self) -> Result<Pending> {
        let report = self.service.report(None, None).await?;
        let body = serde_json::to_string(&report)?;
        if body.len() > MAX_PAYLOAD_BYTES {
            return Err(Error::Submission(format!(
                "report of {} bytes exceeds {MAX_PAYLOAD_BYTES} bytes",
                body.len()
            )));
        }
        let url = self
            .service
            .settings()
            .submission_endpoint()
            .unwrap_or_default()
            .to_owned();
        let period = (report.period.start, report.period.end);
        let pending = self
            .service
            .store()
            .write(move |tx, now| queue::enqueue_report(tx, &url, &body, period, now))
            .await?;
        tracing::info!(period_start = %fmt_ts(period.0), period_end = %fmt_ts(period.1), "report built and queued");
        Ok(pending)
    }

    async fn send(&self, pending: Pending, now: DateTime<Utc>) -> Result<TickOutcome> {
        let request = self.with_api_key(
            self.client
                .post(&pending.url)
                .header("Content-Type", "application/json")
                .header("Idempotency-Key", &pending.key)
                .body(pending.body.clone()),
        );
        let (delay, reason, blocked): (Duration, String, bool) = match request.send().await {
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<i64>().ok());
                if status.is_success() {
                    self.accepted(&pending, now).await?;
                    self.log_attempt(&pending, now, Some(status.as_u16()), "accepted", None)
                        .await;
                    tracing::info!(
                        status = status.as_u16(),
                        "report accepted by the aggregation server"
                    );
                    return Ok(TickOutcome::Accepted);
                }
                match status.as_u16() {
                    429 => (
                        Duration::seconds(retry_after.unwrap_or(3600).clamp(1, 86_400)),
                        "HTTP 429 rate limited".to_owned(),
                        false,
                    ),
                    400 | 401 | 403 | 413 | 422 => {
                        let text = response.text().await.unwrap_or_default();
                        let excerpt: String = text.chars().take(200).collect();
                        (
                            Duration::zero(),
                            format!("HTTP {}: {excerpt}", status.as_u16()),
                            true,
                        )
                    }
                    code => (
                        self.backoff(pending.attempts),
                        format!("HTTP {code}"),
                        false,
                    ),
                }
            }
            Err(e) => {
                let why = if e.is_timeout() {
                    "timeout".to_owned()
                } else {
                    format!("connection error: {e}")
                };
                (self.backoff(pending.attempts), why, false)
            }
        };
        let next = now + delay;
        let http_status = reason
            .strip_prefix("HTTP ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok());
        let outcome = if blocked { "refused" } else { "retry" };
        self.log_attempt(&pending, now, http_status, outcome, Some(&reason))
            .await;
        let fingerprint = blocked.then(|| self.fingerprint());
        let (id, reason2) = (pending.id, reason.clone());
        self.service
            .store()
            .write(move |tx, _| {
                queue::record_failure(tx, id, next, &reason2, fingerprint.as_deref())
            })
            .await?;
        if blocked {
            tracing::error!(%reason, "the aggregation server refused the report; fix submission.endpoint / submission.api_key — it is retried after the configuration changes");
            Ok(TickOutcome::Blocked(reason))
        } else {
            tracing::warn!(%reason, retry_at = %fmt_ts(next), "report not delivered; will retry");
            Ok(TickOutcome::Retry(next, reason))
        }
    }

    /// Records one delivery attempt in the history the web page shows (the newest
    /// [`LOG_KEEP`] are kept). A failure to record only logs: it must not stop a delivery.
    async fn log_attempt(
        &self,
        pending: &Pending,
        now: DateTime<Utc>,
        http_status: Option<u16>,
        outcome: &'static str,
        detail: Option<&str>,
    ) {
        let (period, detail) = ((pending.start, pending.end), detail.map(str::to_owned));
        let written = self
            .service
            .store()
            .write(move |tx, _| {
                let attempt = Attempt {
                    at: now,
                    period,
                    http_status,
                    outcome,
                    detail: detail.as_deref(),
                };
                queue::log_attempt(tx, &attempt)
            })
            .await;
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot record the submission attempt in the history");
        }
    }

    /// Exponential backoff with jitter: 1 min doubling to 6 h, then a random 50–100 % of it.
    fn backoff(&self, attempts: u32) -> Duration {
        Duration::from_std(DELIVERY_BACKOFF.jittered(attempts)).unwrap_or(BACKOFF_MAX)
    }

    async fn accepted(&self, pending: &Pending, now: DateTime<Utc>) -> Result<()> {
        let (id, end) = (pending.id, pending.end);
        self.service
            .store()
            .write(move |tx, _| queue::accept(tx, id, end, now))
            .await
    }

    /// The report waiting for delivery, if any (for the web page).
    pub async fn pending_report(&self) -> Result<Option<PendingReport>> {
        Ok(self.pending().await?.map(|p| PendingReport {
            period_start: fmt_ts(p.start),
            period_end: fmt_ts(p.end),
            attempts: p.attempts,
            next_attempt_at: fmt_ts(p.next_attempt_at),
            last_error: p.last_error,
            blocked: p.blocked_fingerprint.is_some(),
        }))
    }

    /// When the next report is planned (for the `next_submission` sensor); `None` when
    /// submission is off or blocked.
    pub async fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        if self.disabled_reason().await?.is_some() {
            return Ok(None);
        }
        if let Some(p) = self.pending().await? {
            let blocked = p
                .blocked_fingerprint
                .is_some_and(|f| f == self.fingerprint());
            return Ok((!blocked).then_some(p.next_attempt_at));
        }
        let due = self.service.report_due().await?;
        let last = self.last_accepted().await?;
        Ok(Some(last.map_or(due, |l| due.max(l + MIN_SUBMISSION_GAP))))
    }

    /// Whether a queued report is blocked by the server under the current configuration.
    pub async fn has_problem(&self) -> Result<bool> {
        Ok(self
            .pending()
            .await?
            .and_then(|p| p.blocked_fingerprint)
            .is_some_and(|f| f == self.fingerprint()))
    }
}
