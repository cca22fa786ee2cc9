//! The weekly report by itself: at `weekly_day` `weekly_hour`:00 UTC, every week. Each week is
//! claimed in the database first (`report_mailings`, ISO week as the period), so a restart
//! right after a send, or a second server on the same PostgreSQL database, never mails it
//! twice. A failed send is logged (with the route that sends it by hand); the week stays
//! claimed — a retry could mail it twice if the SMTP server had accepted it after all.

use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, NaiveTime, Utc, Weekday};

use super::{Kind, compose};
use crate::App;
use crate::store::SubmissionStore;

/// The first `day` at `hour`:00 UTC strictly after `now`.
pub fn next_run(now: DateTime<Utc>, day: Weekday, hour: u32) -> DateTime<Utc> {
    let time = NaiveTime::from_hms_opt(hour.min(23), 0, 0).unwrap_or(NaiveTime::MIN);
    let today = now.date_naive();
    let ahead = (7 + i64::from(day.num_days_from_monday())
        - i64::from(today.weekday().num_days_from_monday()))
        % 7;
    let candidate = (today + Duration::days(ahead)).and_time(time).and_utc();
    if candidate > now {
        candidate
    } else {
        candidate + Duration::weeks(1)
    }
}

/// The ISO week of `t`, as the period of a weekly mailing (`2026-W49`).
pub fn week_key(t: DateTime<Utc>) -> String {
    let w = t.iso_week();
    format!("{}-W{:02}", w.year(), w.week())
}

/// Sends the weekly report at every scheduled time until the task is aborted.
pub async fn run<S: SubmissionStore>(app: Arc<App<S>>, day: Weekday, hour: u32) {
    loop {
        let now = app.clock.now();
        let at = next_run(now, day, hour);
        let wait = (at - now).to_std().unwrap_or_default();
        tracing::info!("aggregator: next weekly report at {at}");
        tokio::time::sleep(wait).await;
        send_once(&app, at).await;
    }
}

/// Sends the weekly report due at `at`, unless it was sent already.
pub async fn send_once<S: SubmissionStore>(app: &App<S>, at: DateTime<Utc>) -> bool {
    let Some(mailer) = app.mailer.as_deref() else {
        return false;
    };
    let week = week_key(at);
    match app
        .store
        .claim_mailing("weekly", week.clone(), app.clock.now())
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!("aggregator: the weekly report of {week} was sent already");
            return false;
        }
        Err(e) => {
            tracing::warn!("aggregator: weekly report of {week} not sent: database: {e}");
            return false;
        }
    }
    let sent = match compose(app, Kind::Weekly).await {
        Ok(mail) => mailer.send(&mail, mailer.recipients()).await,
        Err(e) => Err(e.to_string()),
    };
    match sent {
        Ok(()) => {
            tracing::info!(
                "aggregator: weekly report of {week} mailed to {} recipient(s)",
                mailer.recipients().len()
            );
            true
        }
        Err(e) => {
            tracing::warn!(
                "aggregator: weekly report of {week} not sent: {e}; send it with POST /reports/weekly"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    #[test]
    fn next_run_is_the_next_weekday_and_hour() {
        // 2026-11-28 is a Saturday.
        assert_eq!(
            next_run(t("2026-11-28T12:00:00Z"), Weekday::Mon, 7),
            t("2026-11-30T07:00:00Z")
        );
        assert_eq!(
            next_run(t("2026-11-30T06:59:59Z"), Weekday::Mon, 7),
            t("2026-11-30T07:00:00Z")
        );
        assert_eq!(
            next_run(t("2026-11-30T07:00:00Z"), Weekday::Mon, 7),
            t("2026-12-07T07:00:00Z"),
            "strictly after now"
        );
        assert_eq!(week_key(t("2026-11-30T07:00:00Z")), "2026-W49");
        assert_eq!(week_key(t("2027-01-01T07:00:00Z")), "2026-W53");
    }
}
