//! Consent: opt-in and opt-out (one source of truth, `usage_settings.opt_in_status`), and the
//! status every front end shows.

use super::*;
use crate::store::settings::OptIn;

impl StatsService {
    /// Whether the user opted in.
    pub async fn is_opted_in(&self) -> Result<bool> {
        Ok(self.store.read(settings::opt_in).await? == OptIn::Enabled)
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
                if settings::opt_in(tx)? != OptIn::Enabled {
                    settings::set_opt_in(tx, OptIn::Enabled, now)?;
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
        let base = self.settings.submission_server_base();
        let rotated = self
            .store
            .write(move |tx, now| {
                let was = settings::opt_in(tx)?;
                settings::set_opt_in(tx, OptIn::Disabled, now)?;
                if was != OptIn::Enabled {
                    return Ok(false);
                }
                queue::drop_reports(tx)?;
                let old_id = settings::get(tx, settings::INSTALLATION_ID)?.unwrap_or_default();
                if let Some(base) = base {
                    queue::enqueue_deletion(tx, &format!("{base}/installation/{old_id}"), now)?;
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
                let opt_in = settings::opt_in(c)?;
                let consented = settings::get(c, settings::PRIVACY_POLICY_VERSION)?;
                let printernizer_sharing = settings::flag(c, settings::PRINTERNIZER_SHARING)?;
                let reason = if dnt {
                    Some("DO_NOT_TRACK is set: nothing is submitted".to_owned())
                } else if opt_in != OptIn::Enabled {
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
                    opt_in_status: opt_in.as_str().to_owned(),
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
}
