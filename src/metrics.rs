//! In-process counters (rejected messages, duplicates …).
//!
//! They are cheap atomics shared by every part of the service; the MQTT sensors publish them.
//! They reset when the process restarts (they describe this run, not the data) — except
//! `rejected_messages`, which continues from the value the service saved
//! (`StatsService::persist_counters`, with every state publish and at shutdown).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counters of this process's life.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Events accepted and committed.
    pub events_stored: AtomicU64,
    /// Events that were already stored (same producer id) and were not stored again.
    pub events_duplicate: AtomicU64,
    /// Messages or events rejected (unknown type, malformed, oversized …), counted on from the
    /// value saved by the previous run.
    pub rejected_messages: AtomicU64,
    /// The value of `rejected_messages` last saved to the database.
    pub rejected_persisted: AtomicU64,
    /// MQTT event messages with a name we do not record (acknowledged, not stored).
    pub ignored_messages: AtomicU64,
    /// Event writes that failed (disk full, I/O error); the events stay with the broker.
    pub write_failures: AtomicU64,
    /// Polls of Printernizer's REST API started (the bridge).
    pub bridge_polls: AtomicU64,
    /// Polls of Printernizer's REST API that failed.
    pub bridge_failures: AtomicU64,
    /// The last event write failed and none has succeeded since.
    pub storage_failing: AtomicBool,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
