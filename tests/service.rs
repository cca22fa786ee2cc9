//! The service's policy and the report's figures, end to end on a real SQLite file.

mod common;

use chrono::Duration;
use common::{open_at, open_with, record_at, settings_in, t};
use printernizer_stats::event::RawEvent;
use printernizer_stats::installation::Probe;
use printernizer_stats::service::{Environment, StatsService};
use serde_json::json;

#[tokio::test]
async fn the_report_has_the_seed_shape_and_exact_figures() {
    let ts = open_with(
        "2026-11-20T12:00:00Z",
        Environment {
            do_not_track: false,
            probe: Probe {
                dockerenv: true,
                ..Probe::default()
            },
            ..Environment::default()
        },
        |s| s.installation.country_code = Some("de".into()),
    );
    let day = "2026-11-19";
    record_at(&ts, "app_start", &format!("{day}T08:00:00Z"),
        json!({"app_version": "2.42.1", "python_version": "3.11.7", "platform": "linux", "deployment_mode": "homeassistant"})).await;
    for (i, (kind, printer, typ)) in [
        ("job_completed", "A1", Some("bambu_lab")),
        ("job_completed", "A1", None),
        ("job_failed", "P1", Some("prusa")),
        ("job_created", "P2", Some("prusa")),
        ("file_downloaded", "A1", None),
        ("file_uploaded", "", None),
    ]
    .into_iter()
    .enumerate()
    {
        let mut meta = json!({"printer_id": printer});
        if let Some(typ) = typ {
            meta["printer_type"] = json!(typ);
        }
        record_at(&ts, kind, &format!("{day}T09:{i:02}:00Z"), meta).await;
    }
    record_at(
        &ts,
        "error_occurred",
        &format!("{day}T10:00:00Z"),
        json!({"error_type": "connection_timeout"}),
    )
    .await;
    record_at(
        &ts,
        "error_occurred",
        &format!("{day}T10:01:00Z"),
        json!({"error_type": "Connection-Timeout"}),
    )
    .await;
    record_at(
        &ts,
        "error_occurred",
        &format!("{day}T10:02:00Z"),
        json!({"error_type": "my printer exploded"}),
    )
    .await;
    record_at(
        &ts,
        "feature_enabled",
        &format!("{day}T10:03:00Z"),
        json!({"feature": "timelapse_enabled"}),
    )
    .await;
    record_at(&ts, "app_shutdown", &format!("{day}T18:00:00Z"), json!({})).await;

    let report = ts
        .service
        .report(
            Some(t("2026-11-19T00:00:00Z")),
            Some(t("2026-11-20T00:00:00Z")),
        )
        .await
        .expect("report");
    let v = serde_json::to_value(&report).expect("json");
    assert_eq!(v["schema_version"], "1.0");
    assert_eq!(v["installation"]["app_version"], "2.42.1");
    assert_eq!(v["installation"]["python_version"], "3.11.7");
    assert_eq!(v["installation"]["platform"], "linux");
    assert_eq!(
        v["installation"]["deployment_mode"], "docker",
        "detected, not taken from Printernizer"
    );
    assert_eq!(v["installation"]["country_code"], "DE");
    assert_eq!(
        v["installation"]["installation_id"].as_str().map(str::len),
        Some(36)
    );
    assert_eq!(
        v["period"],
        json!({"start": "2026-11-19T00:00:00Z", "end": "2026-11-20T00:00:00Z", "duration_days": 1})
    );
    assert_eq!(
        v["printer_fleet"],
        json!({
            "printer_count": 3,
            "printer_types": ["bambu_lab", "prusa"],
            "printer_type_counts": {"bambu_lab": 1, "prusa": 2}
        })
    );
    assert_eq!(
        v["usage_stats"],
        json!({
            "job_count": 2 + 1,
            "jobs_completed": 2,
            "jobs_failed": 1,
            "file_count": 1,
            "upload_count": 1,
            "uptime_hours": 10,
            "feature_usage": {"timelapse_enabled": true}
        })
    );
    assert_eq!(
        v["error_summary"],
        json!({"connection_timeout": 2, "other": 1})
    );
}

#[tokio::test]
async fn the_first_report_after_opting_in_is_the_preview_the_user_saw() {
    let ts = open_at("2026-11-20T12:00:00Z");
    record_at(&ts, "job_completed", "2026-11-20T10:00:00Z", json!({})).await;

    let preview = ts.service.report(None, None).await.expect("preview");
    assert_eq!(preview.period.start, t("2026-11-13T12:00:00Z"));
    assert_eq!(preview.period.end, t("2026-11-20T12:00:00Z"));
    assert_eq!(preview.usage_stats.job_count, 1);

    ts.service.opt_in().await.expect("opt in");
    let first = ts.service.report(None, None).await.expect("report");
    assert_eq!(
        (
            first.period.start,
            first.period.end,
            first.usage_stats.job_count
        ),
        (preview.period.start, preview.period.end, 1),
        "sent at once, it is exactly the preview"
    );
    ts.clock.advance(Duration::hours(30));
    record_at(&ts, "job_completed", "2026-11-21T09:00:00Z", json!({})).await;
    let later = ts.service.report(None, None).await.expect("report");
    assert_eq!(
        later.period.start,
        t("2026-11-14T18:00:00Z"),
        "the last interval up to its submission, like the preview"
    );
    assert_eq!(later.period.end, t("2026-11-21T18:00:00Z"));
    assert_eq!(
        later.usage_stats.job_count, 2,
        "the job before consent is in it"
    );
    // Due a full interval after opting in.
    assert_eq!(
        ts.service.report_due().await.expect("due"),
        t("2026-11-27T12:00:00Z")
    );

    // Opting in again does not move the due time.
    ts.service.opt_in().await.expect("opt in again");
    assert_eq!(
        ts.service.report_due().await.expect("due"),
        t("2026-11-27T12:00:00Z")
    );
    let status = ts.service.status().await.expect("status");
    assert_eq!(status.privacy_policy_version.as_deref(), Some("1.0"));
    assert!(
        status
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("no aggregation server is configured")),
        "opted in without an endpoint says so: {:?}",
        status.reason
    );
}

#[tokio::test]
async fn do_not_track_refuses_opt_in_and_says_why() {
    let ts = open_with(
        "2026-11-20T12:00:00Z",
        Environment {
            do_not_track: true,
            ..Environment::default()
        },
        |_| {},
    );
    let err = ts.service.opt_in().await.expect_err("refused");
    assert_eq!(err.exit_code(), 3);
    assert!(!ts.service.is_opted_in().await.expect("state"));
    let status = ts.service.status().await.expect("status");
    assert!(status.do_not_track);
    assert!(
        status
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("DO_NOT_TRACK"))
    );
}

#[tokio::test]
async fn retention_prunes_by_the_configured_days() {
    let ts = open_with("2026-11-20T12:00:00Z", Environment::default(), |s| {
        s.retention.days = 10.try_into().expect("in range")
    });
    record_at(&ts, "job_completed", "2026-11-11T12:00:00Z", json!({})).await;
    record_at(&ts, "job_completed", "2026-11-19T12:00:00Z", json!({})).await;
    ts.clock.advance(Duration::days(2));
    assert_eq!(ts.service.prune_expired().await.expect("prune"), 1);
    assert_eq!(
        ts.service.local_stats().await.expect("local").total_events,
        1
    );
}

#[tokio::test]
async fn rejected_events_are_counted_and_store_nothing() {
    let ts = open_at("2026-11-20T12:00:00Z");
    for raw in [
        RawEvent::new("job_exploded", json!({})),
        RawEvent::new("job_completed", json!("a string")),
    ] {
        let err = ts.service.record(&raw).await.expect_err("rejected");
        assert_eq!(err.exit_code(), 2);
    }
    let m = ts.service.metrics();
    assert_eq!(
        printernizer_stats::metrics::Metrics::get(&m.rejected_messages),
        2
    );
    assert_eq!(
        ts.service.local_stats().await.expect("local").total_events,
        0
    );
    // The sensor is `total_increasing`: a restart continues the count.
    ts.service.close().await.expect("closed");
    let settings = settings_in(&ts.dir);
    let again = StatsService::open(
        settings,
        std::sync::Arc::new(ts.clock.clone()),
        Environment::default(),
    )
    .expect("reopens");
    let m = again.metrics();
    assert_eq!(
        printernizer_stats::metrics::Metrics::get(&m.rejected_messages),
        2
    );
    again.delete_all().await.expect("deleted");
    assert_eq!(
        printernizer_stats::metrics::Metrics::get(&m.rejected_messages),
        0,
        "delete-all resets it with the data"
    );
    again.close().await.expect("closed");
}

#[tokio::test]
async fn an_older_consent_pauses_sharing_until_the_user_opts_in_again() {
    let ts = open_at("2026-11-20T12:00:00Z");
    ts.service.opt_in().await.expect("opt in");
    assert!(ts.service.sharing_active().await.expect("state"));
    // As if the user had consented to an older schema than this release sends.
    ts.service
        .store()
        .write(|tx, now| {
            printernizer_stats::store::settings::set(tx, "privacy_policy_version", "0.9", now)
        })
        .await
        .expect("write");
    assert!(!ts.service.sharing_active().await.expect("state"));
    let status = ts.service.status().await.expect("status");
    assert!(
        status
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("consent needed for schema 1.0"))
    );
    ts.service.opt_in().await.expect("opt in again");
    assert!(ts.service.sharing_active().await.expect("state"));
}
