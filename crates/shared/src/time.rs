//! Time on disk, on the wire and from producers.
//!
//! * **Stored** ([`fmt_ts`], [`parse_ts`]): fixed-width RFC 3339 with microseconds and `Z`, so
//!   that text order is time order in SQLite's indexes.
//! * **Sent** ([`rfc3339_secs`]): whole seconds and `Z` (`2026-11-20T12:00:00Z`), the report's
//!   format since the first version.
//! * **Accepted** ([`parse_lenient`]): what producers really write — RFC 3339, or a naive ISO
//!   8601 time read as UTC, with `T` or a space between date and time (Python's
//!   `datetime.utcnow().isoformat()` and `str(datetime)`). One rule for MQTT events, the
//!   Printernizer bridge and the aggregation server.
//! * **Hours** ([`hour_floor`], [`hour_ceil`]): rollups are hourly.

use chrono::{DateTime, Duration, NaiveDateTime, SecondsFormat, Utc};

/// Longest timestamp text even looked at (a real one has at most 35 characters).
pub const MAX_TIMESTAMP_LEN: usize = 40;

/// Formats a timestamp the way the stores keep it.
pub fn fmt_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses a stored timestamp.
pub fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Parses a producer's timestamp: RFC 3339, or naive ISO 8601 (`T` or a space) read as UTC.
/// Surrounding blanks are ignored; text longer than [`MAX_TIMESTAMP_LEN`] is never a time.
pub fn parse_lenient(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if s.len() > MAX_TIMESTAMP_LEN {
        return None;
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .map(|n| n.and_utc())
}

/// The start of the UTC hour containing `t`.
pub fn hour_floor(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = t.timestamp();
    DateTime::from_timestamp(secs - secs.rem_euclid(3600), 0).unwrap_or(t)
}

/// The first whole hour at or after `t`.
pub fn hour_ceil(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = hour_floor(t);
    if floor == t {
        t
    } else {
        floor + Duration::hours(1)
    }
}

/// Serde for report timestamps: written as RFC 3339 with whole seconds and `Z`, read with
/// [`parse_lenient`] (so the server accepts what upstream's Python clients send).
pub mod rfc3339_secs {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes as `2026-11-20T12:00:00Z`.
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true))
    }

    /// Parses any time [`super::parse_lenient`] accepts.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        super::parse_lenient(&s)
            .ok_or_else(|| serde::de::Error::custom("not an RFC 3339 date-time"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("RFC 3339")
    }

    #[test]
    fn stored_timestamps_sort_as_text() {
        let a = fmt_ts(t("2026-11-20T09:00:00Z"));
        let b = fmt_ts(t("2026-11-20T10:00:00.5Z"));
        assert_eq!(a, "2026-11-20T09:00:00.000000Z");
        assert!(a < b);
        assert_eq!(parse_ts(&b), Some(t("2026-11-20T10:00:00.5Z")));
    }

    #[test]
    fn producers_may_write_naive_times() {
        let want = Some(t("2026-11-20T12:00:00Z"));
        for s in [
            "2026-11-20T12:00:00Z",
            "2026-11-20T13:00:00+01:00",
            "2026-11-20T12:00:00",
            "2026-11-20 12:00:00",
            " 2026-11-20T12:00:00.000 ",
        ] {
            assert_eq!(parse_lenient(s), want, "{s}");
        }
        for bad in ["", "yesterday", "2026-11-20", &"2".repeat(41)] {
            assert_eq!(parse_lenient(bad), None, "{bad}");
        }
    }

    #[test]
    fn hours() {
        assert_eq!(
            hour_floor(t("2026-11-20T12:34:56Z")),
            t("2026-11-20T12:00:00Z")
        );
        assert_eq!(
            hour_ceil(t("2026-11-20T12:34:56Z")),
            t("2026-11-20T13:00:00Z")
        );
        assert_eq!(
            hour_ceil(t("2026-11-20T12:00:00Z")),
            t("2026-11-20T12:00:00Z")
        );
    }
}
