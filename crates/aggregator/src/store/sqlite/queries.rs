//! [`SubmissionStore`] for SQLite: writes go to the writer thread, reads run on pooled
//! read-only connections on blocking threads.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::SqliteStore;
use super::writer::{Command, Row};
use crate::Result;
use crate::overview::Bucket;
use crate::overview::{OverviewBuilder, ReportRow};
use crate::store::{
    Dimension, Fleet, RateLimit, SubmissionStore, SubmitOutcome, Summary, fleet_totals_sql, fmt_ts,
    latest_reports,
};
use crate::submission::Submission;

fn json_map<V: serde::de::DeserializeOwned>(text: &str) -> BTreeMap<String, V> {
    serde_json::from_str(text).unwrap_or_default()
}

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

    async fn distribution(
        &self,
        dimension: Dimension,
        since: DateTime<Utc>,
    ) -> Result<BTreeMap<String, u64>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&dimension.sql("?1"))?;
            let rows = stmt.query_map([fmt_ts(since)], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
            })?;
            Ok(rows.collect::<rusqlite::Result<BTreeMap<_, _>>>()?)
        })
        .await
    }

    async fn fleet(&self, since: DateTime<Utc>) -> Result<Fleet> {
        self.read(move |conn| {
            let since = fmt_ts(since);
            let (installations, printers): (i64, i64) = conn
                .prepare_cached(&fleet_totals_sql("?1"))?
                .query_row([&since], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT j.key, count(*), CAST(sum(j.value) AS INTEGER)
                   FROM submissions s JOIN {} latest ON s.id = latest.id,
                        json_each(s.printer_type_counts) j
                  GROUP BY j.key",
                latest_reports("?1")
            ))?;
            let types = stmt
                .query_map([&since], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        Bucket {
                            installations: r.get::<_, i64>(1)?.max(0) as u64,
                            total: r.get::<_, i64>(2)?.max(0) as u64,
                        },
                    ))
                })?
                .collect::<rusqlite::Result<BTreeMap<_, _>>>()?;
            Ok(Fleet {
                installations: installations.max(0) as u64,
                printers: printers.max(0) as u64,
                types,
            })
        })
        .await
    }

    async fn overview(
        &self,
        since: DateTime<Utc>,
        mut builder: OverviewBuilder,
    ) -> Result<OverviewBuilder> {
        self.read(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT installation_id, received_at, app_version, platform, deployment_mode,
                        country_code, printer_count, printer_type_counts, feature_usage,
                        job_count, jobs_completed, jobs_failed, error_summary
                   FROM submissions WHERE received_at >= ?1 ORDER BY received_at, id",
            )?;
            let mut rows = stmt.query([fmt_ts(since)])?;
            while let Some(r) = rows.next()? {
                let id: String = r.get(0)?;
                let received: String = r.get(1)?;
                let (Ok(installation_id), Some(received_at)) = (
                    Uuid::parse_str(&id),
                    printernizer_stats_shared::time::parse_ts(&received),
                ) else {
                    continue;
                };
                builder.add(ReportRow {
                    installation_id,
                    received_at,
                    app_version: r.get(2)?,
                    platform: r.get(3)?,
                    deployment_mode: r.get(4)?,
                    country_code: r.get(5)?,
                    printer_count: r.get::<_, i64>(6)?.max(0) as u64,
                    printer_type_counts: json_map(&r.get::<_, String>(7)?),
                    feature_usage: json_map(&r.get::<_, String>(8)?),
                    job_count: r.get::<_, i64>(9)?.max(0) as u64,
                    jobs_completed: r.get::<_, Option<i64>>(10)?.map(|n| n.max(0) as u64),
                    jobs_failed: r.get::<_, Option<i64>>(11)?.map(|n| n.max(0) as u64),
                    error_summary: json_map(&r.get::<_, String>(12)?),
                });
            }
            Ok(builder)
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
