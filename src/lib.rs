//! # printernizer-stats
//!
//! Privacy-first, opt-in usage statistics for [Printernizer](https://github.com/schmacka/printernizer).
//!
//! Data flows one way:
//!
//! ```text
//! MQTT / Printernizer API / CLI ──► event::sanitize ──► store (writer thread, SQLite + hourly rollups)
//!                                                        │
//!                                                        ▼
//!                                                   aggregate ──► report / sensors / submission / API
//! ```
//!
//! * [`config`] — typed, layered configuration (defaults < file < add-on options < env).
//! * [`event`] — the 12 event types, the fixed vocabulary and the allowlist sanitizer.
//! * [`store`] — SQLite schema, migrations, the single writer thread and read queries.
//! * [`aggregate`] — `AggregatedStats` (the submission payload) and local statistics.
//! * [`bridge`] — reads an unmodified Printernizer's REST API (its log, printers, jobs).
//! * [`service`] — the façade the CLI, MQTT and HTTP use: record, opt-in, report, export.
//! * [`app`] — `printernizer-stats run`: starts every task and stops them all on shutdown;
//!   [`deployment`] says once whether it runs as the add-on.
//!
//! The aggregation server that receives the reports is its own program
//! (`crates/aggregator`, binary `printernizer-stats-aggregator`); what both must agree on — the
//! report's wire types, the vocabulary, time and the clock — is `printernizer-stats-shared`.
//!
//! See `docs/ARCHITECTURE.md` for the module map.

pub mod aggregate;
pub mod app;
pub mod backoff;
pub mod bridge;
/// The clock lives in the shared crate (the aggregation server uses it too).
pub use printernizer_stats_shared::clock;
pub mod config;
pub mod deployment;
pub mod error;
pub mod event;
pub mod export;
pub mod history;
pub mod http;
pub mod i18n;
pub mod installation;
pub mod instance;
pub mod metrics;
pub mod mqtt;
pub mod service;
pub mod simulate;
pub mod store;
pub mod submission;

pub use error::{Error, Result};
