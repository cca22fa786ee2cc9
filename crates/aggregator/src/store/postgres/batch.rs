//! Group commit on PostgreSQL: the submissions that arrive while a transaction runs are stored
//! together, by one statement, in the next one.
//!
//! One submission per transaction costs a durable commit (a WAL flush) and five round trips;
//! at 64 concurrent clients that was 2.6k submissions/s, a twentieth of what parsing alone
//! allows. Here [`COMMITTERS`] tasks take whatever is queued (up to [`MAX_BATCH`]) and run
//! one transaction for it:
//!
//! 1. one statement (`BATCH_SQL`): the rows come in as arrays (`unnest`); each looks for its
//!    original (same `Idempotency-Key`, or same installation and period); the others pass the
//!    rate limit — the same conditional upsert on `rate_limits` as before, now for all rows at
//!    once — and those admitted are inserted with `ON CONFLICT DO NOTHING`;
//! 2. only when a row was refused, or lost a race to a duplicate committed meanwhile by another
//!    replica: one more statement gives back that row's rate-limit unit (its row lock is still
//!    ours) and one looks up originals and windows;
//! 3. commit, then every request gets its answer.
//!
//! What keeps it exact across replicas is unchanged: the upsert locks each installation's
//! `rate_limits` row until the commit, so other transactions (here or on another replica)
//! queue on it and re-evaluate the condition on the committed count. A batch holds each
//! installation and each `Idempotency-Key` once (a second request for either waits for the
//! next batch: one row cannot be upserted twice by one statement), rows are locked in
//! installation order, and a deadlock that two replicas could still build is retried.
//!
//! A batch that fails (the database went away) fails every request in it: nothing of it is
//! stored, none is acknowledged.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use serde_json::value::{RawValue, to_raw_value};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{Json, ToSql};
use uuid::Uuid;

use super::count;
use crate::store::{RateLimit, SubmitOutcome};
use crate::submission::Submission;
use crate::{Error, Result};

/// Tasks that each run one batch at a time. One is fastest: measured with
/// `scripts/bench-aggregator` at 64 clients, 1 committer stored 16.6k submissions/s, 2 14.9k,
/// 4 10.4k, 8 8.7k — more committers make smaller batches, and a batch's cost is mostly per
/// statement (two round trips and a WAL flush), not per row (≈ 20 µs). The code takes any
/// number, so a database with more cores than this machine's 2 can be given more.
pub(super) const COMMITTERS: usize = 1;
/// Most submissions in one transaction.
pub(super) const MAX_BATCH: usize = 256;
/// Requests waiting for a committer; a full queue makes handlers wait.
pub(super) const QUEUE: usize = 4096;
/// Attempts of a batch that PostgreSQL aborted to break a deadlock.
const DEADLOCK_ATTEMPTS: usize = 5;

/// One request waiting for its batch.
pub(super) struct Job {
    pub(super) submission: Submission,
    /// The three JSON maps, serialized by the request's task (not the committer's).
    pub(super) maps: Maps,
    pub(super) now: DateTime<Utc>,
    pub(super) limit: RateLimit,
    pub(super) reply: oneshot::Sender<Result<SubmitOutcome>>,
}

/// `printer_type_counts`, `feature_usage`, `error_summary` as JSON text.
pub(super) struct Maps([Box<RawValue>; 3]);

impl Maps {
    pub(super) fn of(s: &Submission) -> Result<Self> {
        Ok(Self([
            to_raw_value(&s.printer_type_counts)?,
            to_raw_value(&s.feature_usage)?,
            to_raw_value(&s.error_summary)?,
        ]))
    }
}

/// Starts the committers; they end when every sender is dropped.
pub(super) fn start(pool: Pool) -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..COMMITTERS {
        tokio::spawn(committer(pool.clone(), Arc::clone(&rx)));
    }
    tx
}

async fn committer(pool: Pool, queue: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut carried: Vec<Job> = Vec::new();
    loop {
        let mut batch = std::mem::take(&mut carried);
        if batch.is_empty() {
            let mut rx = queue.lock().await;
            match rx.recv().await {
                Some(job) => batch.push(job),
                None => return,
            }
            drain(&mut rx, &mut batch);
        } else if let Ok(mut rx) = queue.try_lock() {
            // Jobs carried over must not wait behind a committer that waits for new ones.
            drain(&mut rx, &mut batch);
        }
        let (now, later) = split(batch);
        carried = later;
        run(&pool, now).await;
    }
}

/// Adds what is queued to `batch`, up to [`MAX_BATCH`].
fn drain(rx: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// The jobs one statement can take (distinct installations and keys, one rate limit), and
/// the rest for the next batch, in arrival order.
fn split(batch: Vec<Job>) -> (Vec<Job>, Vec<Job>) {
    let limit = batch.first().map(|j| j.limit);
    let mut ids = HashSet::with_capacity(batch.len());
    let mut keys = HashSet::new();
    let (mut now, mut later) = (Vec::with_capacity(batch.len()), Vec::new());
    for job in batch {
        let s = &job.submission;
        let fits = Some(job.limit) == limit
            && !ids.contains(&s.installation_id)
            && s.idempotency_key.as_ref().is_none_or(|k| !keys.contains(k));
        if fits {
            ids.insert(s.installation_id);
            if let Some(k) = &s.idempotency_key {
                keys.insert(k.clone());
            }
            now.push(job);
        } else {
            later.push(job);
        }
    }
    (now, later)
}

async fn run(pool: &Pool, mut jobs: Vec<Job>) {
    // Rows are locked in installation order, so two batches wait for each other in one order.
    jobs.sort_by_key(|j| j.submission.installation_id);
    let mut attempt = 1;
    let result = loop {
        match store(pool, &jobs).await {
            Err(Error::Postgres(e))
                if e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
                    && attempt < DEADLOCK_ATTEMPTS =>
            {
                attempt += 1;
                tracing::debug!("a submission batch met a deadlock; retrying it");
            }
            other => break other,
        }
    };
    match result {
        Ok(outcomes) => {
            for (job, outcome) in jobs.into_iter().zip(outcomes) {
                let _ = job.reply.send(outcome);
            }
        }
        Err(e) => {
            let msg = e.to_string();
            let mut jobs = jobs.into_iter();
            if let Some(first) = jobs.next() {
                let _ = first.reply.send(Err(e));
            }
            for job in jobs {
                let _ = job.reply.send(Err(Error::Write(msg.clone())));
            }
        }
    }
}

const BATCH_SQL: &str = "
WITH input AS (
    SELECT * FROM unnest(
        $1::int4[], $2::uuid[], $3::text[], $4::timestamptz[], $5::text[], $6::timestamptz[],
        $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::int8[], $11::text[],
        $12::text[], $13::text[], $14::text[], $15::text[], $16::int8[], $17::jsonb[],
        $18::int8[], $19::int8[], $20::int8[], $21::int8[], $22::int8[], $23::int8[],
        $24::jsonb[], $25::jsonb[])
    AS t(ord, installation_id, idempotency_key, received_at, schema_version,
         submission_timestamp, first_seen, period_start, period_end, duration_days,
         app_version, python_version, platform, deployment_mode, country_code, printer_count,
         printer_type_counts, job_count, jobs_completed, jobs_failed, file_count, upload_count,
         uptime_hours, feature_usage, error_summary)
),
seen AS (
    SELECT i.*, LEAST(
        (SELECT s.id FROM submissions s WHERE s.idempotency_key = i.idempotency_key),
        (SELECT s.id FROM submissions s
          WHERE s.installation_id = i.installation_id
            AND s.period_start = i.period_start AND s.period_end = i.period_end)) AS original
    FROM input i
),
admitted AS (
    INSERT INTO rate_limits AS r (installation_id, window_start, count)
    SELECT installation_id, received_at, 1 FROM seen WHERE original IS NULL
     ORDER BY installation_id
    ON CONFLICT (installation_id) DO UPDATE SET
        window_start = CASE WHEN r.window_start <= excluded.window_start - $26::text::interval
                            THEN excluded.window_start ELSE r.window_start END,
        count = CASE WHEN r.window_start <= excluded.window_start - $26::text::interval
                     THEN 1 ELSE r.count + 1 END
    WHERE r.window_start <= excluded.window_start - $26::text::interval OR r.count < $27::int8
    RETURNING installation_id
),
stored AS (
    INSERT INTO submissions (
        installation_id, idempotency_key, received_at, schema_version, submission_timestamp,
        first_seen, period_start, period_end, duration_days, app_version, python_version,
        platform, deployment_mode, country_code, printer_count, printer_type_counts, job_count,
        jobs_completed, jobs_failed, file_count, upload_count, uptime_hours, feature_usage,
        error_summary)
    SELECT s.installation_id, s.idempotency_key, s.received_at, s.schema_version,
           s.submission_timestamp, s.first_seen, s.period_start, s.period_end, s.duration_days,
           s.app_version, s.python_version, s.platform, s.deployment_mode, s.country_code,
           s.printer_count, s.printer_type_counts, s.job_count, s.jobs_completed, s.jobs_failed,
           s.file_count, s.upload_count, s.uptime_hours, s.feature_usage, s.error_summary
      FROM seen s JOIN admitted a USING (installation_id)
     ORDER BY s.installation_id
    ON CONFLICT DO NOTHING
    RETURNING id, installation_id
)
SELECT s.ord, s.original, a.installation_id IS NOT NULL, st.id
  FROM seen s
  LEFT JOIN admitted a USING (installation_id)
  LEFT JOIN stored st USING (installation_id)
";

/// Originals and rate-limit windows of the rows that were refused or lost a race.
const LOOKUP_SQL: &str = "
SELECT i.ord,
       LEAST(
        (SELECT s.id FROM submissions s WHERE s.idempotency_key = i.idempotency_key),
        (SELECT s.id FROM submissions s
          WHERE s.installation_id = i.installation_id
            AND s.period_start = i.period_start AND s.period_end = i.period_end)),
       (SELECT r.window_start FROM rate_limits r WHERE r.installation_id = i.installation_id)
  FROM unnest($1::int4[], $2::uuid[], $3::text[], $4::timestamptz[], $5::timestamptz[])
    AS i(ord, installation_id, idempotency_key, period_start, period_end)
";

/// Gives back the rate-limit unit of rows that were admitted but lost to a duplicate.
const GIVE_BACK_SQL: &str = "
UPDATE rate_limits SET count = greatest(count - 1, 0) WHERE installation_id = ANY($1::uuid[])
";

/// The columns of `jobs`, one array each.
#[derive(Default)]
struct Columns<'a> {
    ord: Vec<i32>,
    installation_id: Vec<Uuid>,
    idempotency_key: Vec<Option<String>>,
    received_at: Vec<DateTime<Utc>>,
    schema_version: Vec<String>,
    submission_timestamp: Vec<DateTime<Utc>>,
    first_seen: Vec<DateTime<Utc>>,
    period_start: Vec<DateTime<Utc>>,
    period_end: Vec<DateTime<Utc>>,
    duration_days: Vec<i64>,
    app_version: Vec<String>,
    python_version: Vec<String>,
    platform: Vec<String>,
    deployment_mode: Vec<String>,
    country_code: Vec<String>,
    printer_count: Vec<i64>,
    printer_type_counts: Vec<Json<&'a RawValue>>,
    job_count: Vec<i64>,
    jobs_completed: Vec<Option<i64>>,
    jobs_failed: Vec<Option<i64>>,
    file_count: Vec<i64>,
    upload_count: Vec<i64>,
    uptime_hours: Vec<i64>,
    feature_usage: Vec<Json<&'a RawValue>>,
    error_summary: Vec<Json<&'a RawValue>>,
}

impl<'a> Columns<'a> {
    fn of(jobs: &'a [Job]) -> Self {
        let mut c = Columns::default();
        for (i, job) in jobs.iter().enumerate() {
            let s = &job.submission;
            c.ord.push(i32::try_from(i).unwrap_or(i32::MAX));
            c.installation_id.push(s.installation_id);
            c.idempotency_key.push(s.idempotency_key.clone());
            c.received_at.push(job.now);
            c.schema_version.push(s.schema_version.clone());
            c.submission_timestamp.push(s.submission_timestamp);
            c.first_seen.push(s.first_seen);
            c.period_start.push(s.period_start);
            c.period_end.push(s.period_end);
            c.duration_days.push(s.duration_days);
            c.app_version.push(s.app_version.clone());
            c.python_version.push(s.python_version.clone());
            c.platform.push(s.platform.clone());
            c.deployment_mode.push(s.deployment_mode.clone());
            c.country_code.push(s.country_code.clone());
            c.printer_count.push(count(s.printer_count));
            let [printers, features, errors] = &job.maps.0;
            c.printer_type_counts.push(Json(printers));
            c.job_count.push(count(s.job_count));
            c.jobs_completed.push(s.jobs_completed.map(count));
            c.jobs_failed.push(s.jobs_failed.map(count));
            c.file_count.push(count(s.file_count));
            c.upload_count.push(count(s.upload_count));
            c.uptime_hours.push(count(s.uptime_hours));
            c.feature_usage.push(Json(features));
            c.error_summary.push(Json(errors));
        }
        c
    }
}

/// What the batch statement said about one row.
enum First {
    Done(SubmitOutcome),
    /// Over the limit, unless its twin committed while it waited.
    Refused,
    /// Admitted, but a duplicate committed meanwhile took its place.
    LostRace,
}

/// Stores `jobs` in one transaction; the outcomes in the order of `jobs`.
///
/// `BEGIN` travels with the batch statement (tokio-postgres pipelines requests sent together),
/// so a batch costs two round trips and one WAL flush. A transaction that fails is rolled
/// back; a connection that cannot even do that is dropped, never returned to the pool
/// mid-transaction.
async fn store(pool: &Pool, jobs: &[Job]) -> Result<Vec<Result<SubmitOutcome>>> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(BATCH_SQL).await?;
    match in_transaction(&client, &stmt, jobs).await {
        Ok(outcomes) => match client.batch_execute("COMMIT").await {
            Ok(()) => Ok(outcomes),
            Err(e) => {
                let _ = deadpool_postgres::Object::take(client);
                Err(e.into())
            }
        },
        Err(e) => {
            if client.batch_execute("ROLLBACK").await.is_err() {
                let _ = deadpool_postgres::Object::take(client);
            }
            Err(e)
        }
    }
}

/// `BEGIN`, the batch statement and what it leaves unsettled; the caller commits.
async fn in_transaction(
    tx: &deadpool_postgres::Client,
    stmt: &tokio_postgres::Statement,
    jobs: &[Job],
) -> Result<Vec<Result<SubmitOutcome>>> {
    let Some(limit) = jobs.first().map(|j| j.limit) else {
        return Ok(Vec::new());
    };
    let c = Columns::of(jobs);
    let window = pg_interval(limit.window);
    let max = i64::from(limit.max);
    let params: [&(dyn ToSql + Sync); 27] = [
        &c.ord,
        &c.installation_id,
        &c.idempotency_key,
        &c.received_at,
        &c.schema_version,
        &c.submission_timestamp,
        &c.first_seen,
        &c.period_start,
        &c.period_end,
        &c.duration_days,
        &c.app_version,
        &c.python_version,
        &c.platform,
        &c.deployment_mode,
        &c.country_code,
        &c.printer_count,
        &c.printer_type_counts,
        &c.job_count,
        &c.jobs_completed,
        &c.jobs_failed,
        &c.file_count,
        &c.upload_count,
        &c.uptime_hours,
        &c.feature_usage,
        &c.error_summary,
        &window,
        &max,
    ];
    let (_, rows) = tokio::try_join!(
        biased;
        tx.batch_execute("BEGIN"),
        tx.query(stmt, &params)
    )?;
    let mut first: Vec<Option<First>> = (0..jobs.len()).map(|_| None).collect();
    for row in &rows {
        let ord = usize::try_from(row.get::<_, i32>(0)).unwrap_or(usize::MAX);
        let original: Option<i64> = row.get(1);
        let admitted: bool = row.get(2);
        let stored: Option<i64> = row.get(3);
        let verdict = match (original, admitted, stored) {
            (Some(id), _, _) => First::Done(SubmitOutcome::Duplicate(id)),
            (None, true, Some(id)) => First::Done(SubmitOutcome::Created(id)),
            (None, true, None) => First::LostRace,
            (None, false, _) => First::Refused,
        };
        if let Some(slot) = first.get_mut(ord) {
            *slot = Some(verdict);
        }
    }

    let lost: Vec<Uuid> = first
        .iter()
        .zip(jobs)
        .filter(|(f, _)| matches!(f, Some(First::LostRace)))
        .map(|(_, j)| j.submission.installation_id)
        .collect();
    if !lost.is_empty() {
        tx.execute(GIVE_BACK_SQL, &[&lost]).await?;
    }
    let unsettled: Vec<usize> = first
        .iter()
        .enumerate()
        .filter(|(_, f)| matches!(f, Some(First::Refused | First::LostRace)))
        .map(|(i, _)| i)
        .collect();
    let mut looked_up = vec![None; jobs.len()];
    if !unsettled.is_empty() {
        let ords: Vec<i32> = unsettled
            .iter()
            .map(|&i| i32::try_from(i).unwrap_or(i32::MAX))
            .collect();
        let subs: Vec<&Submission> = unsettled.iter().map(|&i| &jobs[i].submission).collect();
        let ids: Vec<Uuid> = subs.iter().map(|s| s.installation_id).collect();
        let keys: Vec<Option<&str>> = subs.iter().map(|s| s.idempotency_key.as_deref()).collect();
        let starts: Vec<DateTime<Utc>> = subs.iter().map(|s| s.period_start).collect();
        let ends: Vec<DateTime<Utc>> = subs.iter().map(|s| s.period_end).collect();
        for row in tx
            .query(LOOKUP_SQL, &[&ords, &ids, &keys, &starts, &ends])
            .await?
        {
            let ord = usize::try_from(row.get::<_, i32>(0)).unwrap_or(usize::MAX);
            let found: (Option<i64>, Option<DateTime<Utc>>) = (row.get(1), row.get(2));
            if let Some(slot) = looked_up.get_mut(ord) {
                *slot = Some(found);
            }
        }
    }
    Ok(first
        .into_iter()
        .zip(looked_up)
        .zip(jobs)
        .map(|((verdict, found), job)| match verdict {
            Some(First::Done(outcome)) => Ok(outcome),
            Some(First::Refused | First::LostRace) => match found {
                Some((Some(id), _)) => Ok(SubmitOutcome::Duplicate(id)),
                Some((None, Some(start))) if matches!(verdict, Some(First::Refused)) => {
                    Ok(SubmitOutcome::RateLimited {
                        retry_after_s: job.limit.retry_after(start, job.now),
                    })
                }
                _ => Err(Error::Write(
                    "a submission conflicted with a row that is gone".into(),
                )),
            },
            None => Err(Error::Write("the batch statement skipped a row".into())),
        })
        .collect())
}

/// `d` as a PostgreSQL interval literal the server parses (`3600000000 microseconds`).
fn pg_interval(d: chrono::Duration) -> String {
    format!("{} microseconds", d.num_microseconds().unwrap_or(i64::MAX))
}
