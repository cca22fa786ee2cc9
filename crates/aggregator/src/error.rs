//! The aggregation server's errors. Each keeps its source, so a log line can say what failed
//! underneath; the binary maps them onto exit codes ([`Error::exit_code`]).

use thiserror::Error;

/// Result alias of the aggregation server.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the aggregation server.
#[derive(Debug, Error)]
pub enum Error {
    /// The configuration is invalid: names the key and the problem.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The SQLite database failed.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),

    /// PostgreSQL failed or is unreachable.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),

    /// No PostgreSQL connection could be had from the pool.
    #[error("PostgreSQL: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),

    /// The PostgreSQL pool could not be built.
    #[error("PostgreSQL: {0}")]
    PoolBuild(#[from] deadpool_postgres::BuildError),

    /// The database schema is newer than this program understands, or a migration failed.
    #[error("database schema: {0}")]
    Schema(String),

    /// A write batch failed and was rolled back; nothing of it is stored.
    #[error("write failed: {0}")]
    Write(String),

    /// The SQLite writer thread is gone (shut down or crashed).
    #[error("the store's writer thread is not running")]
    WriterGone,

    /// JSON (de)serialization of a stored map failed.
    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),

    /// Listening, or a blocking task, failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The process exit code: 2 for invalid configuration, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => 2,
            _ => 1,
        }
    }
}
