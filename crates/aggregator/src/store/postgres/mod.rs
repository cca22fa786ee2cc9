//! The PostgreSQL backend, for several server replicas behind a load balancer.
//!
//! tokio-postgres with a deadpool pool (all I/O async, nothing blocks the runtime). The rules
//! are the SQLite backend's (see the parent module); what makes them hold across processes:
//! * submissions are stored in batches ([`batch`]: group commit, one statement for every
//!   submission that arrived while the previous transaction ran);
//! * the rate-limit upsert locks each installation's `rate_limits` row, so concurrent submits
//!   (here or on another replica) queue there and each re-evaluates the condition on the
//!   committed row;
//! * a duplicate that raced past the lookup meets a unique index (`ON CONFLICT DO NOTHING`):
//!   its rate-limit unit is given back in the same transaction and the winner's id returned;
//! * migrations run under a transaction-scoped advisory lock, so replicas starting together
//!   migrate once.
//!
//! Connections are unencrypted (`NoTls`): run the database on the same host or a private
//! network.

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

mod batch;

use super::{Dialect, RateLimit, SubmissionStore, SubmitOutcome, Summary, Tally, TallyRow};
use crate::submission::Submission;
use crate::{Error, Result};

/// Arbitrary, fixed key of the advisory lock that serializes migrations.
const MIGRATION_LOCK: i64 = 0x7072_6e7a_7374_6174;
/// Most pooled connections per server process.
const POOL_SIZE: usize = 16;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE submissions (
    id                   BIGSERIAL   PRIMARY KEY,
    installation_id      UUID        NOT NULL,
    idempotency_key      TEXT        UNIQUE,
    received_at          TIMESTAMPTZ NOT NULL,
    schema_version       TEXT        NOT NULL,
    submission_timestamp TIMESTAMPTZ NOT NULL,
    first_seen           TIMESTAMPTZ NOT NULL,
    period_start         TIMESTAMPTZ NOT NULL,
    period_end           TIMESTAMPTZ NOT NULL,
    duration_days        BIGINT      NOT NULL,
    app_version          TEXT        NOT NULL,
    python_version       TEXT        NOT NULL,
    platform             TEXT        NOT NULL,
    deployment_mode      TEXT        NOT NULL,
    country_code         TEXT        NOT NULL,
    printer_count        BIGINT      NOT NULL,
    printer_type_counts  JSONB       NOT NULL,
    job_count            BIGINT      NOT NULL,
    jobs_completed       BIGINT,
    jobs_failed          BIGINT,
    file_count           BIGINT      NOT NULL,
    upload_count         BIGINT      NOT NULL,
    uptime_hours         BIGINT      NOT NULL,
    feature_usage        JSONB       NOT NULL,
    error_summary        JSONB       NOT NULL,
    UNIQUE (installation_id, period_start, period_end)
);
CREATE INDEX submissions_received_at ON submissions (received_at);
CREATE TABLE rate_limits (
    installation_id UUID        PRIMARY KEY,
    window_start    TIMESTAMPTZ NOT NULL,
    count           BIGINT      NOT NULL
);
"#,
    r#"
CREATE TABLE report_mailings (
    kind    TEXT        NOT NULL,
    period  TEXT        NOT NULL,
    sent_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (kind, period)
);
"#,
];

/// PostgreSQL-backed [`SubmissionStore`].
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// Submissions on their way to a committer ([`batch`]).
    batches: mpsc::Sender<batch::Job>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects, checks the server answers, and migrates.
    pub async fn connect(url: &str) -> Result<Self> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| Error::Config(format!("`aggregator.database_url`: {e}")))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager).max_size(POOL_SIZE).build()?;
        migrate(&pool).await?;
        let batches = batch::start(pool.clone());
        Ok(Self { pool, batches })
    }
}

async fn migrate(pool: &Pool) -> Result<()> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
                version    INTEGER     PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await?;
    let applied: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    let known = MIGRATIONS.len() as i32;
    if applied > known {
        return Err(Error::Schema(format!(
            "the aggregator database has schema version {applied}, newer than this \
                 program's {known}: use a newer printernizer-stats"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl SubmissionStore for PgStore {
    async fn submit(
        &self,
        submission: Submission,
        now: DateTime<Utc>,
        limit: RateLimit,
    ) -> Result<SubmitOutcome> {
        let (reply, answer) = oneshot::channel();
        let job = batch::Job {
            maps: batch::Maps::of(&submission)?,
            submission,
            now,
            limit,
            reply,
        };
        self.batches
            .send(job)
            .await
            .map_err(|_| Error::Write("the submission committers have stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Write("a submission committer stopped".into()))?
    }

    async fn delete_installation(&self, id: Uuid) -> Result<u64> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let n = tx
            .execute("DELETE FROM submissions WHERE installation_id = $1", &[&id])
            .await?;
        tx.execute("DELETE FROM rate_limits WHERE installation_id = $1", &[&id])
            .await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn prune(&self, before: DateTime<Utc>, now: DateTime<Utc>) -> Result<u64> {
        let client = self.pool.get().await?;
        let n = client
            .execute("DELETE FROM submissions WHERE received_at < $1", &[&before])
            .await?;
        client
            .execute(
                "DELETE FROM rate_limits WHERE window_start < $1",
                &[&(now - chrono::Duration::days(1))],
            )
            .await?;
        Ok(n)
    }

    async fn claim_mailing(
        &self,
        kind: &'static str,
        period: String,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "INSERT INTO report_mailings (kind, period, sent_at) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&kind, &period, &at],
            )
            .await?;
        Ok(n == 1)
    }

    async fn summary(&self) -> Result<Summary> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT count(*), count(DISTINCT installation_id), max(received_at)
                   FROM submissions",
                &[],
            )
            .await?;
        Ok(Summary {
            total_submissions: row.get::<_, i64>(0).max(0) as u64,
            unique_installations: row.get::<_, i64>(1).max(0) as u64,
            latest_submission_at: row.get(2),
        })
    }

    async fn tally(&self, query: Tally) -> Result<Vec<TallyRow>> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(&query.sql(Dialect::POSTGRES)).await?;
        let params = query.params();
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let rows = client.query(&stmt, &refs).await?;
        Ok(rows
            .iter()
            .map(|r| TallyRow {
                key: r.get::<_, Option<String>>(0).unwrap_or_default(),
                key2: r.get::<_, Option<String>>(1).unwrap_or_default(),
                n: [r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)],
            })
            .collect())
    }

    async fn health(&self) -> Result<()> {
        let client = self.pool.get().await?;
        client.query_one("SELECT 1", &[]).await?;
        Ok(())
    }
}
