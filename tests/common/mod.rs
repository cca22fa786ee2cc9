//! Shared test helpers: a service on a temporary SQLite file with a manual clock.
#![allow(dead_code)]

use std::sync::Arc;

use chrono::{DateTime, Utc};
use printernizer_stats::clock::ManualClock;
use printernizer_stats::config::Settings;
use printernizer_stats::service::{Environment, StatsService};
use tempfile::TempDir;

/// A service on a throw-away database; keep the `TempDir` alive as long as the service.
pub(crate) struct TestService {
    pub(crate) service: StatsService,
    pub(crate) clock: ManualClock,
    pub(crate) dir: TempDir,
}

/// Records one event with a producer timestamp, waiting for the commit.
pub(crate) async fn record_at(ts: &TestService, kind: &str, at: &str, meta: serde_json::Value) {
    let mut raw = printernizer_stats::event::RawEvent::new(kind, meta);
    raw.timestamp = Some(at.into());
    ts.service.record(&raw).await.expect("stored");
}

impl TestService {
    /// The manual clock's time plus `by`, as RFC 3339.
    pub(crate) fn clock_now_plus(&self, by: chrono::Duration) -> String {
        use printernizer_stats::clock::Clock;
        (self.clock.now() + by).to_rfc3339()
    }
}

pub(crate) fn t(s: &str) -> DateTime<Utc> {
    s.parse().expect("valid RFC 3339 time")
}

pub(crate) fn settings_in(dir: &TempDir) -> Settings {
    let mut settings = Settings::defaults(false);
    settings.database.path = dir.path().join("stats.db");
    settings
}

pub(crate) fn open_at(now: &str) -> TestService {
    open_with(now, Environment::default(), |_| {})
}

pub(crate) fn open_with(
    now: &str,
    env: Environment,
    tweak: impl FnOnce(&mut Settings),
) -> TestService {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = settings_in(&dir);
    tweak(&mut settings);
    let clock = ManualClock::new(t(now));
    let service =
        StatsService::open(settings, Arc::new(clock.clone()), env).expect("service opens");
    TestService {
        service,
        clock,
        dir,
    }
}
