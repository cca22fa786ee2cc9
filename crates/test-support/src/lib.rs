//! # printernizer-stats-test-support
//!
//! Real parts for the workspace's tests — never mocks:
//!
//! * [`child`] — a program as a child process with its stderr collected, free ports, polling;
//! * [`mqtt`] — a private mosquitto on a free port ([`mqtt::Broker`]), the add-on's `run` as a
//!   child process ([`mqtt::App`]) and a recording MQTT client ([`mqtt::Client`]);
//! * [`postgres`] — a fresh PostgreSQL database per test ([`postgres::PgDb`]);
//! * [`aggregator`] — the aggregation server in-process on a random port ([`aggregator::Server`])
//!   or as its binary ([`aggregator::Process`]);
//! * [`browser`] — a headless Chromium over WebDriver ([`browser::Browser`]);
//! * [`report`] — report bodies as a client sends them;
//! * [`smtp`] — a real SMTP server (aiosmtpd) that keeps what it receives ([`smtp::SmtpSink`]);
//! * [`printernizer`] — a Printernizer REST API stand-in serving responses recorded from a real
//!   Printernizer 2.42 (`fixtures/printernizer-api/`).
//!
//! Binaries are found beside the test executable (`target/<profile>/`), so a test of one
//! package can start another package's program once the workspace is built.

pub mod aggregator;
pub mod browser;
pub mod child;
pub mod mqtt;
pub mod postgres;
pub mod printernizer;
pub mod report;
pub mod smtp;
