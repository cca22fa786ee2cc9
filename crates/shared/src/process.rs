//! What both binaries do at their edge (feature `process`): logging to stderr, a shutdown
//! token for SIGTERM and Ctrl-C, and a configuration file as a `config` layer. One place, so
//! the add-on and the aggregation server behave alike where an operator sees them.

use std::path::Path;

use config::{File, FileFormat, FileSourceFile};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Logs to stderr at `level` for `crates` (and this crate, whose HTTP server logs too), or as
/// `RUST_LOG` says. A closed log pipe must not end the process: tracing would report the
/// failed write with `eprintln!`, which panics when stderr itself is gone — so it is told not
/// to.
pub fn init_tracing(crates: &[&str], level: &str) {
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| {
        let directives: Vec<String> = crates
            .iter()
            .chain(&["printernizer_stats_shared"])
            .map(|c| format!("{c}={level}"))
            .collect();
        EnvFilter::new(directives.join(","))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .log_internal_errors(false)
        .try_init();
}

/// A token cancelled on SIGTERM or Ctrl-C. The handlers are registered at once (call it on
/// the runtime, before starting anything): a signal that arrives during start-up must not
/// kill the process with its default action, and is not lost.
pub fn shutdown_on_signals() -> CancellationToken {
    let shutdown = CancellationToken::new();
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
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                shutdown.cancel();
            }
        });
    }
    shutdown
}

/// The configuration file at `path` as a `config` layer: JSON for `.json`, else TOML. A
/// missing file is an error (the message says which), not an empty layer.
pub fn config_file(path: &Path) -> Result<File<FileSourceFile, FileFormat>, String> {
    if !path.is_file() {
        return Err(format!("config file {} does not exist", path.display()));
    }
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => FileFormat::Json,
        _ => FileFormat::Toml,
    };
    Ok(File::from(path).format(format))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_config_file_is_named() {
        let e = config_file(Path::new("/nonexistent/stats.toml")).expect_err("missing");
        assert_eq!(e, "config file /nonexistent/stats.toml does not exist");
    }
}
