//! [`SubmissionStore`] for SQLite: writes go to the writer thread, reads run on pooled
//! read-only connections on blocking threads.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::SqliteStore;
use super::writer::{Command, Row};
use crate::Result;
use crate::store::{
    Dialect, RateLimit, SubmissionStore, SubmitOutcome, Summary, Tally, TallyRow, fmt_ts,
};
use crate::submission::Submission;

impl SubmissionStore for SqliteStore {
    async fn submit(
        &self,
        s: Submission,
        now: DateTime<Utc>,
        limit: RateLimit,
    ) -> Result<SubmitOutcome> {
        let row = Box::new(Row::new(s, now, limit)?);
        self.command(|reply| Command::Submit { row, reply }).await
    }

    async fn delete_installation(&self, id: Uuid) -> Result<u64> {
        self.command(|reply| Command::Delete { id, reply }).await
    }

    async fn prune(&self, before: DateTime<Utc>, now: DateTime<Utc>) -> Result<u64> {
        // Nothing else expires: the rate limit is counted from the submissions themselves.
        let _ = now;
        self.command(|reply| Command::Prune { before, reply }).await
    }

    async fn claim_mailing(
        &self,
        kind: &'static str,
        period: String,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let n = self
            .command(|reply| Command::Claim {
                kind,
                period,
                at,
                reply,
            })
            .await?;
        Ok(n == 1)
    }

    async fn summary(&self) -> Result<Summary> {
        self.read(|conn| {
            let (total, unique, latest): (i64, i64, Option<String>) = conn.query_row(
                "SELECT count(*), count(DISTINCT installation_id), max(received_at)
                   FROM submissions",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            Ok(Summary {
                total_submissions: total as u64,
                unique_installations: unique as u64,
                latest_submission_at: latest
                    .as_deref()
                    .and_then(printernizer_stats_shared::time::parse_ts),
            })
        })
        .await
    }

    async fn tally(&self, query: Tally) -> Result<Vec<TallyRow>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&query.sql(Dialect::SQLITE))?;
            let params: Vec<String> = query.params().into_iter().map(fmt_ts).collect();
            let rows = stmt.query_map(rusqlite::params_from_iter(params), |r| {
                Ok(TallyRow {
                    key: r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                    key2: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    n: [r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?],
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn health(&self) -> Result<()> {
        self.read(|conn| {
            conn.query_row(
                "SELECT count(*) FROM (SELECT 1 FROM submissions LIMIT 1)",
                [],
                |r| r.get::<_, i64>(0),
            )?;
            Ok(())
        })
        .await
    }
}
