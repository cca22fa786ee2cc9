//! Jobs: from `/api/v1/jobs` and `/api/v1/printers`, each job counted once, ever.
//!
//! Printernizer's log misses most prints (an auto-created job stays `running` for ever; a
//! cancellation is not logged; a user's status change is logged without a job id), and a
//! Printernizer restart deletes every job. So the bridge keeps its own small record per job
//! (`bridge_jobs`, keyed by a salted hash of the job id — never the id) and decides:
//!
//! * a job id seen for the first time → one `job_created` (at the job's `created_at`);
//! * its status `completed` / `failed` / `cancelled` → one `job_completed` / `job_failed`
//!   (outcome `cancelled` for cancellations), at `end_time`, with its real duration
//!   (`end_time − start_time`, else `actual_duration` seconds);
//! * a job still `running` is finished by its printer: when the printer is seen `printing` or
//!   `paused` and then `online` (→ completed) or `error` (→ failed), or is seen idle first but
//!   the job made progress (it was a real print that ended between our polls). It is dated to
//!   the last evidence it ran — the last poll that saw the printer printing, or the job's own
//!   last update — never later. A job that never printed is left to the user's status;
//! * **a job that vanishes** (Printernizer restarted: every job is deleted) stays tracked: the
//!   printer rule above still finishes it. A new job that then appears on the same printer with
//!   a start time within [`SAME_PRINT_WINDOW`] of the vanished one is the same print, re-created
//!   by Printernizer: it is not counted again. A vanished job whose printer is gone, or idle
//!   without the job ever printing, is closed as `abandoned`, without an event.
//!
//! Event ids are derived from the keyed job hash (`created` and `finished`), so whatever tells
//! a job's end first — its status, its printer — and whatever the user marks later, the writer
//! stores one `finished` event: the second is a duplicate of the first.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::client::{Job, Listing};
use super::export::parse_time;
use crate::event::vocab::PrinterType;
use crate::event::{MAX_DURATION_SECONDS, RawEvent};

/// How close the start times of a vanished job and a new job on the same printer must be for
/// the new one to be the same print (Printernizer re-creates a running print's job after a
/// restart, with a start time computed from the printer's own clock).
pub(crate) const SAME_PRINT_WINDOW: Duration = Duration::minutes(5);

/// What the printer is doing, as far as a job's end is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrinterActivity {
    /// `printing`, `paused`.
    Printing,
    /// `online`, `idle`, `ready`, `operational`: connected and not printing.
    Idle,
    /// `error`.
    Error,
    /// `offline`, `unknown`, anything else: says nothing about the print.
    Unknown,
}

impl PrinterActivity {
    /// Classifies Printernizer's printer `status`.
    pub(crate) fn classify(status: Option<&str>) -> Self {
        match status.map(str::to_ascii_lowercase).as_deref() {
            Some("printing" | "paused" | "busy") => PrinterActivity::Printing,
            Some("online" | "idle" | "ready" | "operational" | "available" | "finished") => {
                PrinterActivity::Idle
            }
            Some("error") => PrinterActivity::Error,
            _ => PrinterActivity::Unknown,
        }
    }
}

/// A printer as the last `/printers` poll showed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PrinterNow {
    /// Its activity.
    pub(crate) activity: PrinterActivity,
    /// Its type, when known (`unknown` is `None`).
    pub(crate) printer_type: Option<PrinterType>,
}

/// One tracked job (a row of `bridge_jobs`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tracked {
    /// Keyed hash of the job id.
    pub(crate) job_key: String,
    /// The key its events are derived from (the job's own, or the vanished job it continues).
    pub(crate) event_key: String,
    /// Keyed hash of its printer id.
    pub(crate) printer_key: Option<String>,
    /// Its printer's type (vocabulary word).
    pub(crate) printer_type: Option<PrinterType>,
    /// `start_time`.
    pub(crate) started_at: Option<DateTime<Utc>>,
    /// The job's last `updated_at`.
    pub(crate) last_active_at: Option<DateTime<Utc>>,
    /// The last poll that saw its printer printing while the job was open.
    pub(crate) printing_seen_at: Option<DateTime<Utc>>,
    /// Its progress was ever above 0.
    pub(crate) progressed: bool,
    /// It is no longer in Printernizer's job list.
    pub(crate) vanished: bool,
}

/// A row of `bridge_jobs`: still open, or closed (counted and done).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Known {
    /// Open.
    Open(Tracked),
    /// Closed.
    Closed,
}

/// How a tracked job was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closing {
    /// Finished with this outcome (an event was emitted).
    Finished(&'static str),
    /// Dropped without an event (`abandoned`, `merged` into a re-created job, `old`).
    Dropped(&'static str),
}

impl Closing {
    /// The word stored in `bridge_jobs.outcome`.
    pub(crate) fn word(self) -> &'static str {
        match self {
            Closing::Finished(w) | Closing::Dropped(w) => w,
        }
    }
}

/// An event the plan emits, with the keyed printer hash it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobEvent {
    /// The event (sanitized on the way in, like every other).
    pub(crate) raw: RawEvent,
    /// The printer's keyed hash (`usage_events.printer_hash`).
    pub(crate) printer_hash: Option<String>,
}

/// What one poll decides.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Plan {
    /// Events to store (ids derived from the job: storing one twice stores it once).
    pub(crate) events: Vec<JobEvent>,
    /// Rows to keep open (upserted).
    pub(crate) open: Vec<Tracked>,
    /// Rows to close.
    pub(crate) closed: Vec<(Tracked, Closing)>,
}

/// The keyed hashes the plan needs (the sanitizer's salt; injected so tests can see them).
pub(crate) trait Keys {
    /// Keyed hash of a Printernizer job id.
    fn job(&self, id: &str) -> String;
    /// Keyed hash of a printer id — the same as `usage_events.printer_hash`.
    fn printer(&self, id: &str) -> String;
}

/// The event id of a job's `created` or `finished` event.
pub(crate) fn event_id(event_key: &str, which: &str) -> Uuid {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"printernizer-stats bridge job event\0")
        .chain_update(event_key.as_bytes())
        .chain_update([0u8])
        .chain_update(which.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

fn seconds_between(start: Option<DateTime<Utc>>, end: DateTime<Utc>) -> Option<u64> {
    let secs = (end - start?).num_seconds();
    (0..=MAX_DURATION_SECONDS as i64)
        .contains(&secs)
        .then_some(secs as u64)
}

fn event(kind: &str, key: &str, which: &str, at: DateTime<Utc>, row: &Tracked) -> JobEvent {
    let mut m = Map::new();
    if let Some(t) = row.printer_type {
        m.insert("printer_type".into(), json!(t.as_str()));
    }
    JobEvent {
        raw: RawEvent {
            event_type: kind.to_owned(),
            id: Some(event_id(key, which).to_string()),
            timestamp: Some(at.to_rfc3339()),
            metadata: Value::Object(m),
        },
        printer_hash: row.printer_key.clone(),
    }
}

fn finished(
    row: &Tracked,
    outcome: &'static str,
    at: DateTime<Utc>,
    secs: Option<u64>,
) -> JobEvent {
    let kind = if outcome == "completed" {
        "job_completed"
    } else {
        "job_failed"
    };
    let mut e = event(kind, &row.event_key, "finished", at, row);
    if let Value::Object(m) = &mut e.raw.metadata {
        if let Some(secs) = secs {
            m.insert("duration_seconds".into(), json!(secs));
        }
        if outcome != "completed" {
            m.insert("outcome".into(), json!(outcome));
        }
    }
    e
}

/// The outcome word of a terminal job status.
fn terminal(status: Option<&str>) -> Option<&'static str> {
    match status.map(str::to_ascii_lowercase).as_deref() {
        Some("completed" | "complete" | "finished" | "done") => Some("completed"),
        Some("failed" | "error") => Some("failed"),
        Some("cancelled" | "canceled" | "aborted") => Some("cancelled"),
        _ => None,
    }
}

/// Decides one poll: `known` is every row of `bridge_jobs`; `jobs` the job list when it was
/// fetched this poll; `printers` the printer list when it was (keyed by printer hash).
/// `cutoff`: jobs created before it are past retention and are not counted.
pub(crate) fn plan(
    known: &HashMap<String, Known>,
    jobs: Option<&Listing<Job>>,
    printers: Option<&HashMap<String, PrinterNow>>,
    now: DateTime<Utc>,
    cutoff: DateTime<Utc>,
    keys: &dyn Keys,
) -> Plan {
    let mut plan = Plan::default();
    let mut open: HashMap<String, Tracked> = known
        .iter()
        .filter_map(|(k, v)| match v {
            Known::Open(t) => Some((k.clone(), t.clone())),
            Known::Closed => None,
        })
        .collect();
    let printer_type = |key: Option<&String>| {
        key.and_then(|k| printers.and_then(|p| p.get(k)))
            .and_then(|p| p.printer_type)
    };

    if let Some(listing) = jobs {
        let mut listed = HashSet::new();
        for job in &listing.items {
            let id = job.id.clone().into_string();
            let key = keys.job(&id);
            if !listed.insert(key.clone()) || matches!(known.get(&key), Some(Known::Closed)) {
                continue;
            }
            let printer_key = job
                .printer_id
                .clone()
                .map(|p| keys.printer(&p.into_string()));
            let typ = printer_type(printer_key.as_ref()).or_else(|| {
                job.printer_type
                    .as_deref()
                    .map(PrinterType::classify)
                    .filter(|t| *t != PrinterType::Unknown)
            });
            let started = job.start_time.as_deref().and_then(parse_time);
            let updated = job.updated_at.as_deref().and_then(parse_time);
            let progressed = job.progress.is_some_and(|p| p > 0.0);
            let mut row = match open.remove(&key) {
                Some(mut row) => {
                    row.printer_type = typ.or(row.printer_type);
                    row.printer_key = printer_key.or(row.printer_key);
                    row.started_at = started.or(row.started_at);
                    row.last_active_at = updated.or(row.last_active_at);
                    row.progressed |= progressed;
                    row.vanished = false;
                    row
                }
                None => {
                    let created = job
                        .created_at
                        .as_deref()
                        .and_then(parse_time)
                        .or(started)
                        .unwrap_or(now)
                        .min(now);
                    let fresh = Tracked {
                        job_key: key.clone(),
                        event_key: key.clone(),
                        printer_key,
                        printer_type: typ,
                        started_at: started,
                        last_active_at: updated,
                        printing_seen_at: None,
                        progressed,
                        vanished: false,
                    };
                    if created < cutoff {
                        plan.closed.push((fresh, Closing::Dropped("old")));
                        continue;
                    }
                    // The same print, re-created by Printernizer after a restart?
                    let same = open
                        .values()
                        .find(|r| {
                            r.vanished
                                && r.printer_key.is_some()
                                && r.printer_key == fresh.printer_key
                                && matches!((r.started_at, fresh.started_at),
                                    (Some(a), Some(b)) if (a - b).abs() <= SAME_PRINT_WINDOW)
                        })
                        .map(|r| r.job_key.clone());
                    match same.and_then(|k| open.remove(&k)) {
                        Some(old) => {
                            let continued = Tracked {
                                event_key: old.event_key.clone(),
                                started_at: old.started_at.or(fresh.started_at),
                                printing_seen_at: old.printing_seen_at,
                                progressed: old.progressed || fresh.progressed,
                                ..fresh
                            };
                            plan.closed.push((old, Closing::Dropped("merged")));
                            continued
                        }
                        None => {
                            plan.events.push(event(
                                "job_created",
                                &key,
                                "created",
                                created,
                                &fresh,
                            ));
                            fresh
                        }
                    }
                }
            };
            if let Some(outcome) = terminal(job.status.as_deref()) {
                let at = job
                    .end_time
                    .as_deref()
                    .and_then(parse_time)
                    .or(updated)
                    .unwrap_or(now)
                    .min(now);
                let secs = seconds_between(row.started_at, at).or_else(|| {
                    job.actual_duration
                        .filter(|d| {
                            d.is_finite() && (0.0..=MAX_DURATION_SECONDS as f64).contains(d)
                        })
                        .map(|d| d.round() as u64)
                });
                plan.events.push(finished(&row, outcome, at, secs));
                plan.closed.push((row, Closing::Finished(outcome)));
            } else {
                row.vanished = false;
                open.insert(key, row);
            }
        }
        if listing.complete {
            for row in open.values_mut() {
                if !listed.contains(&row.job_key) {
                    row.vanished = true;
                }
            }
        }
    }

    let mut rows: Vec<Tracked> = open.into_values().collect();
    rows.sort_by(|a, b| a.job_key.cmp(&b.job_key));
    for mut row in rows {
        let Some(printers) = printers else {
            plan.open.push(row);
            continue;
        };
        let printer = row.printer_key.as_ref().and_then(|k| printers.get(k));
        match printer.map(|p| p.activity) {
            Some(PrinterActivity::Printing) => {
                row.printing_seen_at = Some(now);
                plan.open.push(row);
            }
            Some(activity @ (PrinterActivity::Idle | PrinterActivity::Error))
                if row.printing_seen_at.is_some() || row.progressed =>
            {
                let evidence = [row.printing_seen_at, row.last_active_at]
                    .into_iter()
                    .flatten()
                    .max();
                let at = evidence
                    .unwrap_or(now)
                    .min(now)
                    .max(row.started_at.unwrap_or(DateTime::<Utc>::MIN_UTC));
                let outcome = if activity == PrinterActivity::Error {
                    "failed"
                } else {
                    "completed"
                };
                let secs = seconds_between(row.started_at, at);
                plan.events.push(finished(&row, outcome, at, secs));
                plan.closed.push((row, Closing::Finished(outcome)));
            }
            Some(PrinterActivity::Idle | PrinterActivity::Error) | None if row.vanished => {
                plan.closed.push((row, Closing::Dropped("abandoned")));
            }
            _ => plan.open.push(row),
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::client::Id;

    struct Plain;
    impl Keys for Plain {
        fn job(&self, id: &str) -> String {
            format!("J{id}")
        }
        fn printer(&self, id: &str) -> String {
            format!("P{id}")
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    fn job(id: &str, printer: &str, status: &str, progress: f64) -> Job {
        Job {
            id: Id::Text(id.into()),
            printer_id: Some(Id::Text(printer.into())),
            printer_type: Some("unknown".into()),
            status: Some(status.into()),
            start_time: Some("2026-12-01T10:00:00".into()),
            end_time: (status == "completed").then(|| "2026-12-01T10:30:00".into()),
            actual_duration: None,
            progress: Some(progress),
            created_at: Some("2026-12-01T10:00:05".into()),
            updated_at: Some("2026-12-01T10:20:00".into()),
        }
    }

    fn listing(jobs: Vec<Job>) -> Listing<Job> {
        Listing {
            items: jobs,
            skipped: 0,
            complete: true,
        }
    }

    fn printers(activity: PrinterActivity) -> HashMap<String, PrinterNow> {
        [(
            "Pp1".to_owned(),
            PrinterNow {
                activity,
                printer_type: Some(PrinterType::PrusaCore),
            },
        )]
        .into()
    }

    fn apply(known: &mut HashMap<String, Known>, plan: &Plan) {
        for row in &plan.open {
            known.insert(row.job_key.clone(), Known::Open(row.clone()));
        }
        for (row, _) in &plan.closed {
            known.insert(row.job_key.clone(), Known::Closed);
        }
    }

    const CUTOFF: &str = "2026-01-01T00:00:00Z";

    #[test]
    fn an_auto_job_is_finished_by_its_printer_once() {
        let mut known = HashMap::new();
        let running = listing(vec![job("a", "p1", "running", 10.0)]);
        let now = t("2026-12-01T10:10:00Z");
        let p = plan(
            &known,
            Some(&running),
            Some(&printers(PrinterActivity::Printing)),
            now,
            t(CUTOFF),
            &Plain,
        );
        assert_eq!(p.events.len(), 1);
        assert_eq!(p.events[0].raw.event_type, "job_created");
        assert_eq!(
            p.events[0].raw.metadata,
            json!({"printer_type": "prusa_core"}),
            "the printer's type, not the job's unknown"
        );
        assert_eq!(p.events[0].printer_hash.as_deref(), Some("Pp1"));
        apply(&mut known, &p);

        let later = t("2026-12-01T10:40:00Z");
        let p = plan(
            &known,
            Some(&running),
            Some(&printers(PrinterActivity::Idle)),
            later,
            t(CUTOFF),
            &Plain,
        );
        assert_eq!(p.events.len(), 1);
        assert_eq!(p.events[0].raw.event_type, "job_completed");
        // Dated to the last evidence: the poll that saw it printing (10:10).
        assert_eq!(
            p.events[0].raw.timestamp.as_deref(),
            Some("2026-12-01T10:20:00+00:00")
        );
        assert_eq!(p.events[0].raw.metadata["duration_seconds"], json!(1200));
        apply(&mut known, &p);

        // The user marks it failed later: nothing more is counted.
        let marked = listing(vec![job("a", "p1", "failed", 10.0)]);
        let p = plan(
            &known,
            Some(&marked),
            Some(&printers(PrinterActivity::Idle)),
            later,
            t(CUTOFF),
            &Plain,
        );
        assert!(p.events.is_empty(), "{p:?}");
    }

    #[test]
    fn manual_jobs_follow_their_status_and_ids_are_stable() {
        let known = HashMap::new();
        let now = t("2026-12-01T11:00:00Z");
        let done = listing(vec![
            job("m", "p1", "completed", 0.0),
            job("c", "p1", "cancelled", 0.0),
        ]);
        let p = plan(
            &known,
            Some(&done),
            Some(&printers(PrinterActivity::Idle)),
            now,
            t(CUTOFF),
            &Plain,
        );
        let kinds: Vec<_> = p.events.iter().map(|e| e.raw.event_type.as_str()).collect();
        assert_eq!(
            kinds,
            ["job_created", "job_completed", "job_created", "job_failed"]
        );
        assert_eq!(p.events[1].raw.metadata["duration_seconds"], json!(1800));
        assert_eq!(p.events[3].raw.metadata["outcome"], json!("cancelled"));
        let again = plan(
            &known,
            Some(&done),
            Some(&printers(PrinterActivity::Idle)),
            now,
            t(CUTOFF),
            &Plain,
        );
        assert_eq!(p.events, again.events, "the same ids every time");

        // A pending job on an idle printer is left alone.
        let pending = listing(vec![job("q", "p1", "pending", 0.0)]);
        let p = plan(
            &known,
            Some(&pending),
            Some(&printers(PrinterActivity::Idle)),
            now,
            t(CUTOFF),
            &Plain,
        );
        assert_eq!(p.events.len(), 1);
        assert_eq!(p.open.len(), 1);
    }

    #[test]
    fn a_print_recreated_after_a_restart_is_one_job() {
        let mut known = HashMap::new();
        let now = t("2026-12-01T10:10:00Z");
        let p = plan(
            &known,
            Some(&listing(vec![job("a", "p1", "running", 10.0)])),
            Some(&printers(PrinterActivity::Printing)),
            now,
            t(CUTOFF),
            &Plain,
        );
        apply(&mut known, &p);
        // Printernizer restarted: the job list is empty, the printer still prints.
        let p = plan(
            &known,
            Some(&listing(vec![])),
            Some(&printers(PrinterActivity::Printing)),
            now,
            t(CUTOFF),
            &Plain,
        );
        assert!(p.events.is_empty());
        assert!(p.open[0].vanished);
        apply(&mut known, &p);
        // It re-creates the running print's job under a new id.
        let mut again = job("b", "p1", "running", 50.0);
        again.start_time = Some("2026-12-01T10:01:00".into());
        let p = plan(
            &known,
            Some(&listing(vec![again])),
            Some(&printers(PrinterActivity::Printing)),
            now,
            t(CUTOFF),
            &Plain,
        );
        assert!(p.events.is_empty(), "not created twice: {p:?}");
        apply(&mut known, &p);
        let p = plan(
            &known,
            Some(&listing(vec![])),
            Some(&printers(PrinterActivity::Idle)),
            t("2026-12-01T11:00:00Z"),
            t(CUTOFF),
            &Plain,
        );
        assert_eq!(p.events.len(), 1);
        assert_eq!(
            p.events[0].raw.id,
            Some(event_id("Ja", "finished").to_string())
        );
    }

    #[test]
    fn vanished_jobs_that_never_printed_are_dropped_and_old_jobs_not_counted() {
        let mut known = HashMap::new();
        let now = t("2026-12-01T10:10:00Z");
        let p = plan(
            &known,
            Some(&listing(vec![job("q", "p1", "pending", 0.0)])),
            Some(&printers(PrinterActivity::Idle)),
            now,
            t(CUTOFF),
            &Plain,
        );
        apply(&mut known, &p);
        let p = plan(
            &known,
            Some(&listing(vec![])),
            Some(&printers(PrinterActivity::Idle)),
            now,
            t(CUTOFF),
            &Plain,
        );
        assert!(p.events.is_empty());
        assert_eq!(p.closed[0].1, Closing::Dropped("abandoned"));

        let p = plan(
            &HashMap::new(),
            Some(&listing(vec![job("x", "p1", "completed", 0.0)])),
            None,
            now,
            t("2026-12-01T11:00:00Z"),
            &Plain,
        );
        assert!(p.events.is_empty());
        assert_eq!(p.closed[0].1, Closing::Dropped("old"));
    }
}
