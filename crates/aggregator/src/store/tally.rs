//! The analytics reads: every `/stats/*` number is one of these [`Tally`] queries, counted by
//! the database, so what the server holds in memory grows with the number of *answers* (days,
//! versions, error types), never with the number of installations or submissions.
//!
//! One SQL text per query, rendered for either backend by a [`Dialect`] (placeholders, the UTC
//! day of a timestamp, the key/value rows of a JSON map). Every query returns rows of the same
//! shape, [`TallyRow`] — two text keys and five integers — so each backend needs one generic
//! row reader and the meaning lives here, once.
//!
//! ## "Latest report"
//! Most distributions count each installation once, by its **latest report** (the highest id)
//! received in the window ([`latest_reports`]). Upstream joins on `max(submitted_at)`, which
//! counts an installation twice when two of its rows share a timestamp; an id cannot tie.
//!
//! ## Spans (what was true at the end of each day)
//! `/stats/version-migration` and `/stats/feature-trends` ask, for every day, what each
//! installation's latest report *up to that day* said. Instead of one query per day (upstream
//! runs 2 per day), [`Tally::Spans`] returns **deltas**: an installation's last report of a day
//! opens a span (`+1` for its value on that day) that its next report's day closes (`-1`).
//! Summing the deltas day by day ([`crate::analytics`]) replays the fleet; the rows are one
//! per (day, value), bounded by the retention period times the vocabulary.

use chrono::{DateTime, Utc};

use super::Dimension;

/// A read for the analytics, with its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tally {
    /// `(value, "", installations)` per value of a column, over latest reports since.
    Latest(Dimension, DateTime<Utc>),
    /// `("", "", installations, printers)` over latest reports since.
    FleetTotals(DateTime<Utc>),
    /// `(printer type, "", installations, printers)` over latest reports since.
    PrinterTypes(DateTime<Utc>),
    /// `(feature, "", installations reporting it, installations with it enabled)` over latest
    /// reports since.
    Features(DateTime<Utc>),
    /// `(error type, "", installations, errors)` over latest reports since (counts > 0 only).
    ErrorTypes(DateTime<Utc>),
    /// `("", "", installations with errors, errors)` over latest reports since.
    ErrorTotals(DateTime<Utc>),
    /// `("", "", installations, errors)` summed over **every** report in `[from, to)`.
    ErrorsBetween(DateTime<Utc>, DateTime<Utc>),
    /// `("", "", distinct installations, submissions)` received in `[from, to)`.
    ActivityBetween(DateTime<Utc>, DateTime<Utc>),
    /// Per UTC day or ISO week (`YYYY-MM-DD` of its first day) since:
    /// `(period, "", installations, submissions, jobs, completed, failed)`; completed and failed
    /// over reports that carry both.
    Periods(Period, DateTime<Utc>),
    /// `(day, "", installations)` by the day of each installation's first stored report.
    FirstSeen,
    /// `(day, value, delta)`: see the module docs.
    Spans(SpanKey),
}

/// The period of [`Tally::Periods`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// A UTC calendar day.
    Day,
    /// An ISO week (Monday to Sunday, UTC).
    Week,
}

/// What a span carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKey {
    /// The Printernizer version.
    Version,
    /// One span per feature enabled in the report.
    EnabledFeature,
}

/// One row of a [`Tally`]; unused numbers are 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TallyRow {
    /// First key (a value, a day, or empty).
    pub key: String,
    /// Second key (spans: the value; otherwise empty).
    pub key2: String,
    /// The numbers, in the order the query documents.
    pub n: [i64; 5],
}

impl TallyRow {
    /// The `i`-th number as a count (negative deltas stay signed in [`Self::n`]).
    pub fn count(&self, i: usize) -> u64 {
        self.n.get(i).copied().unwrap_or(0).max(0) as u64
    }
}

/// The SQL differences between the backends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dialect {
    /// `?` (SQLite) or `$` (PostgreSQL) before a parameter's number.
    pub(crate) param: char,
    /// Whether timestamps are `TIMESTAMPTZ` (PostgreSQL) or RFC 3339 text (SQLite).
    pub(crate) postgres: bool,
}

impl Dialect {
    pub(crate) const SQLITE: Dialect = Dialect {
        param: '?',
        postgres: false,
    };
    pub(crate) const POSTGRES: Dialect = Dialect {
        param: '$',
        postgres: true,
    };

    fn p(self, n: u8) -> String {
        format!("{}{n}", self.param)
    }

    /// `YYYY-MM-DD` (UTC) of a timestamp column.
    fn day(self, col: &str) -> String {
        if self.postgres {
            format!("to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD')")
        } else {
            format!("substr({col}, 1, 10)")
        }
    }

    /// `YYYY-MM-DD` of the Monday of a timestamp's ISO week (UTC).
    fn week(self, col: &str) -> String {
        if self.postgres {
            format!("to_char(date_trunc('week', {col} AT TIME ZONE 'UTC'), 'YYYY-MM-DD')")
        } else {
            // `weekday 0` moves to the next Sunday (or stays on one); six days back is Monday.
            format!("date(substr({col}, 1, 10), 'weekday 0', '-6 days')")
        }
    }

    /// The rows `j(key, value)` of a JSON map column, for a `FROM … , <this>` list.
    fn each(self, col: &str) -> String {
        if self.postgres {
            format!("jsonb_each_text({col}) j")
        } else {
            format!("json_each({col}) j")
        }
    }

    /// `j.value` as an integer.
    fn int_value(self) -> &'static str {
        if self.postgres {
            "CAST(j.value AS BIGINT)"
        } else {
            "CAST(j.value AS INTEGER)"
        }
    }

    /// Whether `j.value` is JSON `true`.
    fn is_true(self) -> &'static str {
        if self.postgres {
            "j.value = 'true'"
        } else {
            "j.type = 'true'"
        }
    }
}

/// A sum as a 64-bit integer on both backends (PostgreSQL's `sum(bigint)` is `numeric`).
fn sum(expr: &str) -> String {
    format!("CAST(coalesce(sum({expr}), 0) AS BIGINT)")
}

const NO_KEY: &str = "CAST('' AS TEXT)";
const ZERO: &str = "CAST(0 AS BIGINT)";

/// Pads a select list to the [`TallyRow`] shape: two keys, five numbers.
fn select(keys: [&str; 2], numbers: &[&str]) -> String {
    let mut cols: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    cols.extend(numbers.iter().map(|n| (*n).to_owned()));
    cols.extend((numbers.len()..5).map(|_| ZERO.to_owned()));
    format!("SELECT {}", cols.join(", "))
}

/// The subquery of each installation's latest report (highest id) received at or after the
/// parameter `param`: one row `id` per installation.
pub(crate) fn latest_reports(param: &str) -> String {
    format!(
        "(SELECT max(id) AS id FROM submissions WHERE received_at >= {param}
           GROUP BY installation_id)"
    )
}

impl Tally {
    /// The timestamps the SQL's parameters bind, in order.
    pub fn params(self) -> Vec<DateTime<Utc>> {
        match self {
            Tally::Latest(_, since)
            | Tally::FleetTotals(since)
            | Tally::PrinterTypes(since)
            | Tally::Features(since)
            | Tally::ErrorTypes(since)
            | Tally::ErrorTotals(since)
            | Tally::Periods(_, since) => vec![since],
            Tally::ErrorsBetween(from, to) | Tally::ActivityBetween(from, to) => vec![from, to],
            Tally::FirstSeen | Tally::Spans(_) => vec![],
        }
    }

    /// The query for `d`.
    pub(crate) fn sql(self, d: Dialect) -> String {
        let latest = || {
            format!(
                "FROM submissions s JOIN {} latest ON s.id = latest.id",
                latest_reports(&d.p(1))
            )
        };
        match self {
            Tally::Latest(dim, _) => {
                let col = format!("s.{}", dim.column());
                format!(
                    "{} {} GROUP BY {col}",
                    select([&col, NO_KEY], &["count(*)"]),
                    latest()
                )
            }
            Tally::FleetTotals(_) => format!(
                "{} {}",
                select([NO_KEY, NO_KEY], &["count(*)", &sum("s.printer_count")]),
                latest()
            ),
            Tally::PrinterTypes(_) => format!(
                "{} {}, {} GROUP BY j.key",
                select(["j.key", NO_KEY], &["count(*)", &sum(d.int_value())]),
                latest(),
                d.each("s.printer_type_counts")
            ),
            Tally::Features(_) => format!(
                "{} {}, {} GROUP BY j.key",
                select(
                    ["j.key", NO_KEY],
                    &[
                        "count(*)",
                        &sum(&format!("CASE WHEN {} THEN 1 ELSE 0 END", d.is_true()))
                    ]
                ),
                latest(),
                d.each("s.feature_usage")
            ),
            Tally::ErrorTypes(_) => format!(
                "{} {}, {} WHERE {v} > 0 GROUP BY j.key",
                select(["j.key", NO_KEY], &["count(*)", &sum(d.int_value())]),
                latest(),
                d.each("s.error_summary"),
                v = d.int_value()
            ),
            Tally::ErrorTotals(_) => format!(
                "{} {}, {} WHERE {v} > 0",
                select(
                    [NO_KEY, NO_KEY],
                    &["count(DISTINCT s.id)", &sum(d.int_value())]
                ),
                latest(),
                d.each("s.error_summary"),
                v = d.int_value()
            ),
            Tally::ErrorsBetween(..) => format!(
                "{} FROM submissions s, {} WHERE s.received_at >= {} AND s.received_at < {}
                   AND {v} > 0",
                select(
                    [NO_KEY, NO_KEY],
                    &["count(DISTINCT s.installation_id)", &sum(d.int_value())]
                ),
                d.each("s.error_summary"),
                d.p(1),
                d.p(2),
                v = d.int_value()
            ),
            Tally::ActivityBetween(..) => format!(
                "{} FROM submissions WHERE received_at >= {} AND received_at < {}",
                select(
                    [NO_KEY, NO_KEY],
                    &["count(DISTINCT installation_id)", "count(*)"]
                ),
                d.p(1),
                d.p(2)
            ),
            Tally::Periods(period, _) => {
                let bucket = match period {
                    Period::Day => d.day("received_at"),
                    Period::Week => d.week("received_at"),
                };
                let decided = "jobs_completed IS NOT NULL AND jobs_failed IS NOT NULL";
                format!(
                    "{} FROM submissions WHERE received_at >= {} GROUP BY {bucket}",
                    select(
                        [&bucket, NO_KEY],
                        &[
                            "count(DISTINCT installation_id)",
                            "count(*)",
                            &sum("job_count"),
                            &sum(&format!("CASE WHEN {decided} THEN jobs_completed END")),
                            &sum(&format!("CASE WHEN {decided} THEN jobs_failed END")),
                        ]
                    ),
                    d.p(1)
                )
            }
            Tally::FirstSeen => format!(
                "{} FROM (SELECT min({}) AS first_day FROM submissions GROUP BY installation_id) f
                  GROUP BY first_day",
                select(["first_day", NO_KEY], &["count(*)"]),
                d.day("received_at")
            ),
            Tally::Spans(key) => {
                let (value, extra, filter) = match key {
                    SpanKey::Version => ("s.app_version".to_owned(), String::new(), "1 = 1"),
                    SpanKey::EnabledFeature => (
                        "j.key".to_owned(),
                        format!(", {}", d.each("s.feature_usage")),
                        d.is_true(),
                    ),
                };
                let day = d.day("s.received_at");
                format!(
                    "WITH daily AS (
                        SELECT max(id) AS id FROM submissions
                         GROUP BY installation_id, {daily_day}
                     ), spans AS (
                        SELECT s.id, {day} AS day,
                               lead({day}) OVER (PARTITION BY s.installation_id ORDER BY s.id)
                                 AS until
                          FROM submissions s JOIN daily ON s.id = daily.id
                     ), keyed AS (
                        SELECT sp.day, sp.until, {value} AS v
                          FROM spans sp JOIN submissions s ON s.id = sp.id{extra}
                         WHERE {filter}
                     )
                     {open} FROM keyed GROUP BY day, v
                     UNION ALL
                     {close} FROM keyed WHERE until IS NOT NULL GROUP BY until, v",
                    daily_day = d.day("received_at"),
                    open = select(["day", "v"], &["count(*)"]),
                    close = select(["until", "v"], &["-count(*)"]),
                )
            }
        }
    }
}
