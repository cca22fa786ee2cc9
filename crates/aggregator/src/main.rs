//! `printernizer-stats-aggregator` — the command-line edge of the aggregation server. Errors
//! become an exit code: 0 ok, 2 invalid usage or configuration, 1 runtime failure.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use printernizer_stats_aggregator::config::Settings;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// The aggregation server that receives printernizer-stats reports (SQLite or PostgreSQL).
#[derive(Debug, Parser)]
#[command(name = "printernizer-stats-aggregator", version, about)]
struct Cli {
    /// Configuration file (TOML or JSON): `log_level` and the `[aggregator]` section.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address (overrides `aggregator.bind`).
    #[arg(long, value_name = "ADDR")]
    bind: Option<String>,
    /// `sqlite://path.db`, `sqlite:///abs/path.db` or `postgres://…` (overrides
    /// `aggregator.database_url`).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

const NAME: &str = "printernizer-stats-aggregator";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{NAME}: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    if let Some(bind) = cli.bind {
        settings.aggregator.bind = bind;
    }
    if let Some(url) = cli.database_url {
        settings.aggregator.database_url = url;
    }
    if let Err(e) = settings.aggregator.validate() {
        eprintln!("{NAME}: {e}");
        return ExitCode::from(e.exit_code());
    }
    init_tracing(&settings);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{NAME}: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        listen_for_signals(shutdown.clone());
        printernizer_stats_aggregator::run(&settings.aggregator, async move {
            shutdown.cancelled().await;
            tracing::info!("aggregator: shutting down after in-flight requests");
        })
        .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{NAME}: aggregator failed: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn init_tracing(settings: &Settings) {
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| {
        // The shared crate's HTTP server logs too (connection cap, accept errors).
        let level = settings.log_level.as_str();
        EnvFilter::new(format!(
            "printernizer_stats_aggregator={level},printernizer_stats_shared={level}"
        ))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A closed log pipe must not end the server (tracing would `eprintln!` the failure).
        .log_internal_errors(false)
        .try_init();
}

/// Cancels `shutdown` on SIGTERM or Ctrl-C. Registered before serving, so a signal that
/// arrives during start-up is not lost.
fn listen_for_signals(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        for kind in [SignalKind::terminate(), SignalKind::interrupt()] {
            match signal(kind) {
                Ok(mut s) => {
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        if s.recv().await.is_some() {
                            shutdown.cancel();
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
            shutdown.cancel();
        }
    });
}
