//! `printernizer-stats` — the command-line edge. Errors become `anyhow` here and an exit code:
//! 0 ok, 2 invalid usage/input/config, 3 refused by policy, 1 runtime failure.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use clap::{Parser, Subcommand};
use printernizer_stats::clock::SystemClock;
use printernizer_stats::config::Settings;
use printernizer_stats::event::{RawEvent, parse_metadata};
use printernizer_stats::http;
use printernizer_stats::mqtt::{self, supervisor};
use printernizer_stats::service::{Environment, StatsService};
use printernizer_stats::store::Inserted;
use printernizer_stats::submission::{self, Submitter};
use tracing_subscriber::EnvFilter;

/// Privacy-first, opt-in usage statistics for Printernizer.
#[derive(Debug, Parser)]
#[command(name = "printernizer-stats", version, about)]
struct Cli {
    /// Configuration file (TOML or JSON); see README for all keys.
    #[arg(long, global = false, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service until Ctrl-C / SIGTERM.
    Run,
    /// Print the exact JSON report the next submission would send (a preview when not opted in).
    Report {
        /// Period start (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        from: Option<DateTime<Utc>>,
        /// Period end (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        to: Option<DateTime<Utc>>,
    },
    /// Export all local data as JSON (streamed).
    Export {
        /// Write to FILE instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Record events by hand.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Delete all local events, rollups and pending reports.
    DeleteAll {
        /// Confirm the deletion.
        #[arg(long)]
        yes: bool,
    },
    /// Share anonymous usage statistics (refused while DO_NOT_TRACK is set).
    OptIn,
    /// Stop sharing usage statistics (local data stays).
    OptOut,
    /// Publish a realistic Printernizer event stream to the configured broker.
    Simulate {
        /// Number of printers.
        #[arg(long, default_value_t = 3)]
        printers: u32,
        /// Number of event messages.
        #[arg(long, default_value_t = 100)]
        events: u64,
        /// Messages per second (0 = as fast as possible).
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Random seed (the same seed gives the same stream).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Instead of publishing to MQTT, serve a live Printernizer REST API on
        /// 127.0.0.1:PORT (what the bridge reads; 0 = a free port) until Ctrl-C.
        #[arg(long, value_name = "PORT")]
        printernizer_api: Option<u16>,
    },
    /// Submit the pending or next report now (at most one accepted submission per hour).
    Submit,
    /// Run the aggregation server that receives the reports (SQLite or PostgreSQL).
    Aggregator {
        /// Listen address (overrides `aggregator.bind`).
        #[arg(long, value_name = "ADDR")]
        bind: Option<String>,
        /// `sqlite://path.db`, `sqlite:///abs/path.db` or `postgres://…` (overrides
        /// `aggregator.database_url`).
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
    },
    /// Show the opt-in state and what is stored.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Record one event through the same path MQTT uses.
    Record {
        /// One of the 12 event types (e.g. job_completed).
        event_type: String,
        /// Metadata as a JSON object.
        #[arg(long, value_name = "JSON")]
        metadata: Option<String>,
        /// When it happened (RFC 3339; default now).
        #[arg(long, value_parser = parse_time)]
        timestamp: Option<DateTime<Utc>>,
        /// Event id (a UUID; a repeated id is stored once).
        #[arg(long)]
        id: Option<String>,
    },
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("`{s}` is not an RFC 3339 time ({e}), e.g. 2026-11-20T12:00:00Z"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("printernizer-stats: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    init_tracing(&settings);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("printernizer-stats: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(execute(cli.command, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e
                .chain()
                .find_map(|c| c.downcast_ref::<printernizer_stats::Error>())
                .map_or(1, printernizer_stats::Error::exit_code);
            eprintln!("printernizer-stats: {}", error_line(&e));
            ExitCode::from(code)
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

/// One line from an error chain, skipping causes that the previous message already contains.
fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if !line.contains(&msg) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&msg);
        }
    }
    line
}

fn init_tracing(settings: &Settings) {
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "printernizer_stats={}",
            settings.log_level.as_str()
        ))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A closed log pipe must not end the service: tracing would report the failed write
        // with `eprintln!`, which panics when stderr itself is gone.
        .log_internal_errors(false)
        .try_init();
}

async fn execute(command: Command, mut settings: Settings) -> anyhow::Result<()> {
    install_signal_handlers();
    if let Command::Aggregator { bind, database_url } = command {
        // The server has its own database; the local statistics store is not opened.
        if let Some(bind) = bind {
            settings.aggregator.bind = bind;
        }
        if let Some(url) = database_url {
            settings.aggregator.database_url = url;
        }
        settings.validate()?;
        printernizer_stats::aggregator::run(&settings.aggregator, async {
            shutdown_signal().await;
            tracing::info!("aggregator: shutting down after in-flight requests");
        })
        .await
        .context("aggregator failed")?;
        return Ok(());
    }
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
            printernizer_stats::simulate::api::serve(opts, shutdown_signal()).await?;
            return Ok(());
        }
        // Needs only the broker, not the database.
        let broker = broker_for(
            &settings,
            format!("printernizer-stats-simulate-{}", std::process::id()),
        )
        .await?;
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
    let service = StatsService::open(settings, Arc::new(SystemClock), Environment::from_system())
        .context("cannot open the statistics database")?;
    let result = dispatch(&service, command).await;
    service.close().await?;
    result
}

/// In add-on mode, reads Home Assistant's country for reports (a failure only logs: the
/// configured `installation.country_code`, else `XX`, is used).
async fn apply_home_assistant_country(service: &StatsService) {
    let Ok(token) = std::env::var(printernizer_stats::config::SUPERVISOR_TOKEN_ENV) else {
        return;
    };
    if token.is_empty() {
        return;
    }
    let url = std::env::var(supervisor::SUPERVISOR_URL_ENV)
        .unwrap_or_else(|_| supervisor::DEFAULT_SUPERVISOR_URL.into());
    match supervisor::home_assistant_country(&url, &token).await {
        Ok(country) => service.set_home_assistant_country(country),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read Home Assistant's country; using installation.country_code")
        }
    }
}

async fn dispatch(service: &StatsService, command: Command) -> anyhow::Result<()> {
    if matches!(
        command,
        Command::Run | Command::Report { .. } | Command::Submit
    ) {
        apply_home_assistant_country(service).await;
    }
    match command {
        Command::Run => run(service).await,
        Command::Simulate { .. } | Command::Aggregator { .. } => {
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
            if service.settings().submission_endpoint().is_some() {
                // Sends the deletion request at once; `run` retries it if this fails.
                Submitter::new(service.clone())?.opt_out().await?;
            } else {
                service.opt_out().await?;
            }
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

/// The long-running service: MQTT ingest and discovery, daily pruning; stops cleanly on
/// Ctrl-C / SIGTERM.
async fn run(service: &StatsService) -> anyhow::Result<()> {
    let status = service.status().await?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        database = %status.database,
        opt_in = %status.opt_in_status,
        events = status.events_total,
        "printernizer-stats started"
    );
    let pruner = {
        let service = service.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::days(1).to_std().unwrap_or_default());
            loop {
                tick.tick().await;
                if let Err(e) = service.prune_expired().await {
                    tracing::warn!(error = %e, "retention pruning failed; will retry tomorrow");
                }
            }
        })
    };
    let settings = service.settings().clone();
    let addon_mode = std::env::var(printernizer_stats::config::SUPERVISOR_TOKEN_ENV)
        .is_ok_and(|t| !t.is_empty());
    let http_addr = if settings.http.enabled {
        Some(http::check(&settings, addon_mode)?)
    } else {
        None
    };
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let submitter = match settings.submission_endpoint() {
        Some(endpoint) => {
            tracing::info!(%endpoint, "submission configured (only ever used after opt-in)");
            let s = Submitter::new(service.clone())?;
            tokio::spawn(submission::run_scheduler(s.clone(), stop_rx.clone()));
            Some(s)
        }
        None => {
            tracing::info!("submission disabled: submission.endpoint is not set");
            None
        }
    };
    let mut page_addr: Option<std::net::SocketAddr> = None;
    if let Some(addr) = http_addr {
        let state = http::HttpState {
            service: service.clone(),
            submitter: submitter.clone(),
            access: http::access::Policy::new(addon_mode, settings.http.token()),
        };
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                let shown = listener.local_addr().unwrap_or(addr);
                page_addr = Some(shown);
                tracing::info!("web page and API on http://{shown}/");
                let mut stop_http = stop_rx.clone();
                tokio::spawn(async move {
                    let stopped = async move {
                        let _ = stop_http.changed().await;
                    };
                    if let Err(e) = http::serve(state, listener, stopped).await {
                        tracing::error!(error = %e, "the web page stopped");
                    }
                });
            }
            // Collecting events matters more than the page: keep running without it.
            Err(e) => tracing::error!(
                "cannot listen on {addr} for the web page ({e}); running without it — set http.bind to a free address"
            ),
        }
    }
    let supervisor_token = std::env::var(printernizer_stats::config::SUPERVISOR_TOKEN_ENV).ok();
    let supervisor_url = std::env::var(supervisor::SUPERVISOR_URL_ENV)
        .unwrap_or_else(|_| supervisor::DEFAULT_SUPERVISOR_URL.into());
    let bridge = match printernizer_stats::bridge::resolve_url(
        service,
        &supervisor_url,
        supervisor_token.as_deref(),
    )
    .await
    {
        Some(url) => Some(printernizer_stats::bridge::spawn(
            service.clone(),
            &url,
            stop_rx.clone(),
        )?),
        None => {
            if settings.printernizer.enabled {
                tracing::info!(
                    "Printernizer bridge off: printernizer.url is not set (events come only from MQTT)"
                );
            } else {
                tracing::info!("Printernizer bridge off (printernizer.enabled = false)");
            }
            None
        }
    };
    let mqtt = if settings.mqtt.enabled {
        let client_id = format!(
            "printernizer-stats-{}",
            service.stable_tag("mqtt-client-id")
        );
        let broker = tokio::select! {
            broker = broker_for(&settings, client_id) => broker?,
            () = shutdown_signal() => {
                tracing::info!("shutting down");
                pruner.abort();
                return Ok(());
            }
        };
        // The device's "Visit" link: the ingress panel in the add-on, the local page otherwise.
        let configuration_url = match supervisor_token.as_deref().filter(|t| !t.is_empty()) {
            Some(token) => match supervisor::ingress_page_url(&supervisor_url, token).await {
                Ok(url) => url,
                Err(e) => {
                    tracing::debug!(error = %e, "no ingress page URL from the Supervisor");
                    None
                }
            },
            None => page_addr
                .filter(|a| !a.ip().is_unspecified())
                .map(|a| format!("http://{a}/")),
        };
        Some(mqtt::spawn(
            service.clone(),
            &settings,
            &broker,
            submitter.clone(),
            configuration_url,
        ))
    } else {
        tracing::info!("MQTT disabled (mqtt.enabled = false)");
        None
    };
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop.send(true);
    if let Some(mqtt) = mqtt {
        mqtt.shutdown().await;
    }
    if let Some(bridge) = bridge
        && tokio::time::timeout(std::time::Duration::from_secs(5), bridge)
            .await
            .is_err()
    {
        tracing::warn!("the Printernizer bridge did not stop in time");
    }
    pruner.abort();
    Ok(())
}

/// The broker from the configuration (or, in add-on mode, the Supervisor).
async fn broker_for(
    settings: &Settings,
    client_id: String,
) -> printernizer_stats::Result<mqtt::BrokerConfig> {
    let token = std::env::var(printernizer_stats::config::SUPERVISOR_TOKEN_ENV).ok();
    let url = std::env::var(supervisor::SUPERVISOR_URL_ENV)
        .unwrap_or_else(|_| supervisor::DEFAULT_SUPERVISOR_URL.into());
    mqtt::resolve_broker(&settings.mqtt, token.as_deref(), &url, client_id).await
}

/// Set once SIGTERM or Ctrl-C arrived.
static SHUTDOWN: std::sync::OnceLock<tokio::sync::watch::Receiver<bool>> =
    std::sync::OnceLock::new();

/// Registers the SIGTERM/SIGINT handlers at once (a signal that arrives during start-up must
/// not kill the process with its default action) and remembers when one arrives.
fn install_signal_handlers() {
    let (tx, rx) = tokio::sync::watch::channel(false);
    if SHUTDOWN.set(rx).is_err() {
        return;
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        for kind in [SignalKind::terminate(), SignalKind::interrupt()] {
            match signal(kind) {
                Ok(mut s) => {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        if s.recv().await.is_some() {
                            let _ = tx.send(true);
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "cannot listen for a shutdown signal"),
            }
        }
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = tx.send(true);
        }
    });
}

/// Resolves once SIGTERM or Ctrl-C arrived (also if it arrived before the call).
async fn shutdown_signal() {
    let Some(rx) = SHUTDOWN.get() else {
        return std::future::pending().await;
    };
    let mut rx = rx.clone();
    if rx.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}
