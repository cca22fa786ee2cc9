//! Library error types.
//!
//! Every error says which kind of failure it is, so that the binary can map it onto an exit
//! code (see [`Error::exit_code`]): invalid input or configuration (2), refused by policy (3),
//! everything else is a runtime failure (1).

use thiserror::Error;

use crate::event::RejectReason;

/// Result alias of the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the library.
#[derive(Debug, Error)]
pub enum Error {
    /// The configuration is invalid: names the key and the problem.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// An event was rejected by validation or sanitization; nothing was stored.
    #[error("event rejected: {0}")]
    Rejected(#[from] RejectReason),

    /// Invalid user input that is not an event (e.g. a malformed time range).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// The request was understood but is refused by policy (e.g. opt-in with `DO_NOT_TRACK`).
    #[error("refused: {0}")]
    Policy(String),

    /// The SQLite store failed.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),

    /// PostgreSQL (the aggregation server's shared database) failed or is unreachable.
    #[error("PostgreSQL: {0}")]
    Postgres(String),

    /// The database file cannot be used (damaged, read-only, disk full); says what to do.
    #[error("{0}")]
    Storage(String),

    /// The database schema is newer than this program understands, or a migration failed.
    #[error("database schema: {0}")]
    Schema(String),

    /// The database file was deleted, replaced, emptied or damaged under a running `run`:
    /// nothing more was acknowledged; the binary starts over with a new file.
    #[error("{message}")]
    FileLost {
        /// What happened to the file.
        loss: crate::store::FileLoss,
        /// The line that says so.
        message: String,
    },

    /// A write batch failed and was rolled back (e.g. disk full); nothing of it is stored.
    #[error("write failed: {0}")]
    Write(String),

    /// The writer thread is gone (the store was shut down or crashed).
    #[error("the store's writer thread is not running")]
    WriterGone,

    /// MQTT connection setup failed (broker lookup, TLS files …).
    #[error("MQTT: {0}")]
    Mqtt(String),

    /// Building or sending a report failed.
    #[error("submission: {0}")]
    Submission(String),

    /// Reading or writing a file or stream failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// JSON (de)serialization failed.
    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// The process exit code this error maps to: 2 invalid input/config, 3 policy, 1 runtime.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Rejected(_) | Error::InvalidInput(_) => 2,
            Error::Policy(_) => 3,
            _ => 1,
        }
    }
}
