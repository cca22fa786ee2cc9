//! What each subcommand does. Library errors become `anyhow` here, with context; `main` maps
//! them onto exit codes.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use printernizer_stats::app;
use printernizer_stats::clock::SystemClock;
use printernizer_stats::config::Settings;
use printernizer_stats::deployment::Deployment;
use printernizer_stats::event::{RawEvent, parse_metadata};
use printernizer_stats::http;
use printernizer_stats::mqtt;
use printernizer_stats::service::{Environment, StatsService};
use printernizer_stats::store::Inserted;
use printernizer_stats::submission::{self, Submitter};
use tokio_util::sync::CancellationToken;

use crate::cli::{Command, EventsCommand};

/// Runs `command`; `shutdown` is cancelled by SIGTERM/Ctrl-C.
pub(crate) async fn execute(
    command: Command,
    settings: Settings,
    deployment: Deployment,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if let Command::Simulate {
        printers,
        events,
        rate,
        seed,
        printernizer_api,
    } = command
    {
        if let Some(port) = printernizer_api {
            let opts = printernizer_stats::simulate::api::ApiOptions {
                port,
                printers,
                events,
                rate,
                seed,
            };
            printernizer_stats::simulate::api::serve(opts, shutdown.cancelled_owned()).await?;
            return Ok(());
        }
        // Needs only the broker, not the database.
        let client_id = format!("printernizer-stats-simulate-{}", std::process::id());
        let broker = app::broker(&settings, &deployment, client_id).await?;
        let topics = mqtt::Topics::new(&settings.mqtt);
        let opts = printernizer_stats::simulate::SimulateOptions {
            printers,
            events,
            rate,
            seed,
        };
        let report = printernizer_stats::simulate::run(&broker, &topics, opts).await?;
        println!(
            "published {} messages ({} recordable events) to {}:{} in {:.1}s",
            report.published,
            report.recordable,
            broker.host,
            broker.port,
            report.elapsed.as_secs_f64()
        );
        return Ok(());
    }
    // One `run` per database; taken before anything is opened, held until `run` returns.
    let _run_lock = match command {
        Command::Run => Some(printernizer_stats::instance::RunLock::acquire(
            &settings.database.path,
        )?),
        _ => None,
    };
    let env = Environment::new(&deployment);
    // Opening migrates the database: blocking work, kept off the async workers.
    let service = tokio::task::spawn_blocking(move || {
        StatsService::open(settings, Arc::new(SystemClock), env)
    })
    .await
    .context("the database could not be opened")?
    .context("cannot open the statistics database")?;
    let result = dispatch(&service, &deployment, command, shutdown).await;
    service.close().await?;
    result
}

async fn dispatch(
    service: &StatsService,
    deployment: &Deployment,
    command: Command,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if matches!(
        command,
        Command::Run | Command::Report { .. } | Command::Submit
    ) {
        app::apply_home_assistant_country(service, deployment).await;
    }
    match command {
        Command::Run => Ok(app::run(service, deployment, shutdown).await?),
        Command::Simulate { .. } => {
            unreachable!("handled before the store is opened")
        }
        Command::Report { from, to } => {
            let report = service.report(from, to).await?;
            // The same bytes as the web page's preview.
            print!("{}", http::api::report_text(&report)?);
            Ok(())
        }
        Command::Export { output } => {
            let n = match &output {
                Some(path) => {
                    let file = std::fs::File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    service.export(file).await?
                }
                None => service.export(std::io::stdout()).await?,
            };
            if let Some(path) = output {
                eprintln!("exported {n} events to {}", path.display());
            }
            Ok(())
        }
        Command::Events {
            command:
                EventsCommand::Record {
                    event_type,
                    metadata,
                    timestamp,
                    id,
                },
        } => {
            let metadata = match metadata {
                Some(text) => parse_metadata(text.as_bytes())
                    .map_err(printernizer_stats::Error::Rejected)
                    .context("--metadata")?,
                None => serde_json::Value::Null,
            };
            let raw = RawEvent {
                event_type,
                id,
                timestamp: timestamp.map(|t| t.to_rfc3339()),
                metadata,
            };
            let (event, outcome) = service.record(&raw).await?;
            let verb = match outcome {
                Inserted::New => "recorded",
                Inserted::Duplicate => "already stored",
            };
            println!("{verb} {} {}", event.event_type, event.id);
            Ok(())
        }
        Command::DeleteAll { yes } => {
            if !yes {
                return Err(printernizer_stats::Error::InvalidInput(
                    "delete-all needs --yes to confirm".into(),
                )
                .into());
            }
            let n = service.delete_all().await?;
            println!("deleted {n} events");
            Ok(())
        }
        Command::OptIn => {
            let id = service.opt_in().await?;
            println!("opted in (installation id {id})");
            Ok(())
        }
        Command::OptOut => {
            // Sends the deletion request at once; `run` retries it if this fails.
            let submitter = Submitter::configured(service)?;
            submission::opt_out(service, submitter.as_ref()).await?;
            println!("opted out; local data stays until you run `delete-all --yes`");
            Ok(())
        }
        Command::Submit => {
            if service.settings().submission_endpoint().is_none() {
                return Err(printernizer_stats::Error::InvalidInput(
                    "submission is not configured: set submission.endpoint".into(),
                )
                .into());
            }
            let outcome = Submitter::new(service.clone())?.submit_now().await?;
            println!("{}", describe(&outcome));
            if let submission::TickOutcome::Disabled(why) = outcome {
                return Err(printernizer_stats::Error::Policy(why).into());
            }
            Ok(())
        }
        Command::Status { json } => {
            let s = service.status().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                let mut out = std::io::stdout().lock();
                writeln!(out, "opt-in:          {}", s.opt_in_status)?;
                if let Some(reason) = &s.reason {
                    writeln!(out, "submission:      {reason}")?;
                }
                writeln!(out, "installation id: {}", s.installation_id)?;
                writeln!(
                    out,
                    "first seen:      {}",
                    s.first_seen.as_deref().unwrap_or("-")
                )?;
                writeln!(
                    out,
                    "last submission: {}",
                    s.last_submission.as_deref().unwrap_or("never")
                )?;
                writeln!(out, "submissions:     {}", s.submission_count)?;
                writeln!(
                    out,
                    "events stored:   {} ({} not yet reported)",
                    s.events_total, s.events_pending
                )?;
                writeln!(out, "database:        {}", s.database)?;
                writeln!(
                    out,
                    "sources:         {}",
                    if s.sources.is_empty() {
                        "none (MQTT disabled, printernizer.url not set)".to_owned()
                    } else {
                        s.sources.join(", ")
                    }
                )?;
                if s.sources.iter().any(|x| x == "printernizer api") {
                    writeln!(
                        out,
                        "bridge:          last read {}",
                        s.bridge_last_success.as_deref().unwrap_or("never")
                    )?;
                }
            }
            Ok(())
        }
    }
}

/// A sentence for a submission outcome.
fn describe(outcome: &submission::TickOutcome) -> String {
    use submission::TickOutcome::*;
    let at = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    match outcome {
        Disabled(why) => format!("not submitted: {why}"),
        NotDue(t) => format!(
            "not submitted: the next submission is possible at {}",
            at(t)
        ),
        Waiting(t) => format!("a report is waiting for its next attempt at {}", at(t)),
        Accepted => "report accepted by the aggregation server".into(),
        Retry(t, why) => format!("not delivered ({why}); retried at {}", at(t)),
        Blocked(why) => format!("refused by the server ({why}); fix the configuration"),
    }
}
