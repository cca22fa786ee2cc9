//! Reports: the installation facts, the next period, the report itself and the local summary.

use super::*;

impl StatsService {
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
        let interval = self.settings.submission.interval();
        let (opted, last_end) = self
            .store
            .read(|c| {
                Ok((
                    settings::opt_in(c)? == settings::OptIn::Enabled,
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
        let interval = self.settings.submission.interval();
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
                let start = from.unwrap_or(end - self.settings.submission.interval());
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
}
