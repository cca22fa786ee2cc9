//! # printernizer-stats-shared
//!
//! What the add-on (`printernizer-stats`) and the aggregation server
//! (`printernizer-stats-aggregator`) must agree on, and nothing else:
//!
//! * [`report`] — the anonymous report on the wire ([`report::AggregatedStats`]): the add-on
//!   serializes it, the server deserializes it. Defined once, so the two cannot drift.
//! * [`vocab`] — the fixed vocabulary every stored or submitted string is matched against: the
//!   add-on's sanitizer and the server's validation use the same words.
//! * [`time`] — how timestamps are written, read and accepted from producers.
//! * `sqlite_schema` (feature `sqlite`) — the one SQLite migration runner both programs use.
//! * `server` (feature `server`) — the accept loop both HTTP servers use: timeouts for slow
//!   and idle connections and for requests, and a cap on connections that keeps serving.
//! * `process` (feature `process`) — what both binaries do at their edge: logging, the
//!   shutdown token for SIGTERM/Ctrl-C, the config file layer.
//! * [`clock`] — "now" behind a trait, so tests move time instead of sleeping.
//! * [`bounded`] — integers that cannot leave their range (configuration values).
//! * [`log_level`] — the `log_level` setting both programs read from the same config keys.
//! * [`secret`] — a configured secret (password, API key, token) that never shows in a log.
//!
//! Without features the crate has no I/O and depends only on `chrono`, `serde` and `secrecy`, so neither program pulls the
//! other's dependencies through it.

pub mod bounded;
pub mod clock;
pub mod log_level;
#[cfg(feature = "process")]
pub mod process;
pub mod report;
pub mod secret;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "sqlite")]
pub mod sqlite_schema;
pub mod time;
pub mod vocab;
