//! `printernizer-stats-aggregator` — the command-line edge of the aggregation server. Errors
//! become an exit code: 0 ok, 2 invalid usage or configuration, 1 runtime failure.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use printernizer_stats_aggregator::config::Settings;
use printernizer_stats_shared::process;

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
    process::init_tracing(
        &["printernizer_stats_aggregator"],
        settings.log_level.as_str(),
    );

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
        let shutdown = process::shutdown_on_signals();
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
