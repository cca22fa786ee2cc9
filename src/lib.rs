//! # printernizer-stats
//!
//! Privacy-first, opt-in usage statistics for [Printernizer](https://github.com/schmacka/printernizer).
//!
//! Data flows one way:
//!
//! ```text
//! MQTT / CLI ──► event::sanitize ──► store (writer thread, SQLite + hourly rollups)
//!                                       │
//!                                       ▼
//!                                  aggregate ──► report / sensors / submission / API
//! ```
//!
//! * [`config`] — typed, layered configuration (defaults < file < add-on options < env).
//! * [`event`] — the 12 event types, the fixed vocabulary and the allowlist sanitizer.
//! * [`store`] — SQLite schema, migrations, the single writer thread and read queries.
//! * [`aggregate`] — `AggregatedStats` (the submission payload) and local statistics.
//! * [`bridge`] — reads an unmodified Printernizer's REST API (its log, printers, jobs).
//! * [`service`] — the façade the CLI (and later MQTT and HTTP) use: record, opt-in, report, export.
//!
//! * [`aggregator`] — the aggregation server that receives the reports (SQLite or PostgreSQL).
//!
//! See `docs/ARCHITECTURE.md` for the module map.

pub mod aggregate;
pub mod aggregator;
pub mod bridge;
pub mod clock;
pub mod config;
pub mod error;
pub mod event;
pub mod export;
pub mod history;
pub mod http;
pub mod i18n;
pub mod installation;
pub mod metrics;
pub mod mqtt;
pub mod service;
pub mod simulate;
pub mod store;
pub mod submission;

pub use error::{Error, Result};
