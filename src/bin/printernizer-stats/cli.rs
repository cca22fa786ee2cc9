//! The command line: what `printernizer-stats --help` shows.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

/// Privacy-first, opt-in usage statistics for Printernizer.
#[derive(Debug, Parser)]
#[command(name = "printernizer-stats", version, about)]
pub(crate) struct Cli {
    /// Configuration file (TOML or JSON); see README for all keys.
    #[arg(long, global = false, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
    /// Show the opt-in state and what is stored.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum EventsCommand {
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

pub(crate) fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("`{s}` is not an RFC 3339 time ({e}), e.g. 2026-11-20T12:00:00Z"))
}
