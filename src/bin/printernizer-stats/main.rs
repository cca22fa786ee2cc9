//! `printernizer-stats` — the command-line edge. Errors become `anyhow` here and an exit code:
//! 0 ok, 2 invalid usage/input/config, 3 refused by policy, 1 runtime failure.
//!
//! `cli` is the command line, `commands` what each subcommand does; the service itself is the
//! library's `app::run`.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;
use printernizer_stats::config::Settings;
use printernizer_stats::deployment::Deployment;
use printernizer_stats_shared::process;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let deployment = Deployment::from_env();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("printernizer-stats: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    process::init_tracing(&["printernizer_stats"], settings.log_level.as_str());

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
    let db = settings.database.path.clone();
    let result = runtime.block_on(async {
        let shutdown = process::shutdown_on_signals();
        commands::execute(cli.command, settings, deployment, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let lost = e.chain().find_map(|c| match c.downcast_ref() {
                Some(printernizer_stats::Error::FileLost { loss, .. }) => Some(*loss),
                _ => None,
            });
            if let Some(loss) = lost {
                // Every connection is closed by now: set the remains aside and start over.
                drop(runtime);
                eprintln!("printernizer-stats: {}; starting over", error_line(&e));
                printernizer_stats::instance::set_aside(&db, loss);
                let err = printernizer_stats::instance::start_over();
                eprintln!("printernizer-stats: cannot start over: {err}");
                return ExitCode::from(1);
            }
            let code = e
                .chain()
                .find_map(|c| c.downcast_ref::<printernizer_stats::Error>())
                .map_or(1, printernizer_stats::Error::exit_code);
            eprintln!("printernizer-stats: {}", error_line(&e));
            ExitCode::from(code)
        }
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
