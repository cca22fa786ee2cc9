//! `log_level`: one key, read by both programs (the add-on's options and the aggregator's
//! config file use the same word).

use serde::{Deserialize, Serialize};

/// How much a program logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything, including per-message traces.
    Trace,
    /// Decisions and their inputs.
    Debug,
    /// Changes of condition (the default).
    Info,
    /// Problems the program works around.
    Warn,
    /// Problems it cannot.
    Error,
}

impl LogLevel {
    /// The `tracing` filter directive.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}
