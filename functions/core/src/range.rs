//! The copy's time window: absolute or relative ranges, retention, and the slack that
//! file-name timestamps need (a file is delivered minutes after the events it holds).

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp, ToSpan};

use crate::error::{CopyError, Result};

/// Files are named by delivery time, a few minutes after their events: a file named up to
/// this long after the window's end can still hold events inside it.
pub const DELIVERY_SLACK: SignedDuration = SignedDuration::from_mins(60);
/// Clock skew allowance before the window's start.
pub const START_SLACK: SignedDuration = SignedDuration::from_mins(15);
pub const DEFAULT_RETENTION_DAYS: u32 = 2557;

/// The resolved window: events with `effective_start <= eventTime < end` are copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
    pub retention_cutoff: Timestamp,
}

impl Window {
    pub fn effective_start(&self) -> Timestamp {
        self.start.max(self.retention_cutoff)
    }

    pub fn contains(&self, t: Timestamp) -> bool {
        t >= self.effective_start() && t < self.end
    }

    pub fn is_empty(&self) -> bool {
        self.effective_start() >= self.end
    }

    /// Can a file delivered at `t` hold events in the window?
    pub fn file_in_scope(&self, delivered: Timestamp) -> bool {
        !self.is_empty()
            && delivered >= self.effective_start().saturating_sub(START_SLACK).unwrap_or(Timestamp::MIN)
            && delivered < self.end.saturating_add(DELIVERY_SLACK).unwrap_or(Timestamp::MAX)
    }

    /// First and last UTC day whose folder can hold files in scope.
    pub fn day_span(&self) -> (Date, Date) {
        let first = self.effective_start().saturating_sub(START_SLACK).unwrap_or(Timestamp::MIN);
        let last = self.end.saturating_add(DELIVERY_SLACK).unwrap_or(Timestamp::MAX);
        let utc = |t: Timestamp| t.to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
        (utc(first), utc(last))
    }
}

/// Parses `--start`/`--end`: RFC 3339 (`2020-10-01T00:00:00Z`) or a date (`2020-10-01`, midnight UTC).
pub fn parse_instant(field: &'static str, text: &str) -> Result<Timestamp> {
    let text = text.trim();
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    // Only a bare date is midnight UTC: jiff's Date also reads a date-time and drops its time.
    if text.len() == "2020-10-01".len()
        && let Ok(d) = text.parse::<Date>()
        && let Ok(z) = d.to_zoned_datetime(jiff::tz::TimeZone::UTC)
    {
        return Ok(z.timestamp());
    }
    if text.parse::<jiff::civil::DateTime>().is_ok() {
        // Not silently UTC: a local time read as UTC shifts the range by the zone's offset.
        return Err(CopyError::invalid(
            field,
            format!("`{text}` has no time zone: add Z for UTC or an offset (`{text}Z`, `{text}+02:00`)"),
        ));
    }
    Err(CopyError::invalid(
        field,
        format!("`{text}` is not an RFC 3339 time (2020-10-01T00:00:00Z) or a date (2020-10-01)"),
    ))
}

/// Parses `--last`: 5m, 30m, 1h, 6h, 90m, 36h, 7d, 2w, or ISO-8601 like PT90M, P1D, P1DT12H.
/// Days are 24 hours; months and years are refused (their length is ambiguous).
pub fn parse_duration(field: &'static str, text: &str) -> Result<SignedDuration> {
    let text = text.trim();
    let bad = |why: &str| {
        CopyError::invalid(field, format!("`{text}` {why}; use e.g. 5m, 30m, 1h, 6h, 90m, 36h, 7d or ISO-8601 PT90M"))
    };
    let span: jiff::Span = text.parse().map_err(|_| bad("is not a duration"))?;
    if span.get_years() != 0 || span.get_months() != 0 {
        return Err(bad("uses months or years"));
    }
    let weeks_days = span.get_weeks() as i64 * 7 + span.get_days() as i64;
    let rest = span.weeks(0).days(0);
    let d = SignedDuration::try_from(rest)
        .map_err(|_| bad("is out of range"))?
        .checked_add(SignedDuration::from_hours(weeks_days * 24))
        .ok_or_else(|| bad("is out of range"))?;
    if d <= SignedDuration::ZERO {
        return Err(bad("must be positive"));
    }
    if d > SignedDuration::from_hours(24 * 365 * 100) {
        return Err(bad("is longer than 100 years"));
    }
    let _ = 1.hour(); // ToSpan keeps span units readable in this module
    Ok(d)
}

/// Resolves the request's range once, at plan time, so a retry copies exactly the same window.
/// An end after `now` is cut to `now` (nothing later can have been delivered); a range wholly in
/// the future is refused.
pub fn resolve_window(
    start: Option<&str>,
    end: Option<&str>,
    last: Option<&str>,
    retention_days: u32,
    now: Timestamp,
) -> Result<Window> {
    resolve_window_asked(start, end, last, retention_days, now).map(|(w, _)| w)
}

/// [`resolve_window`], with the end as asked (before it was cut to `now`).
pub fn resolve_window_asked(
    start: Option<&str>,
    end: Option<&str>,
    last: Option<&str>,
    retention_days: u32,
    now: Timestamp,
) -> Result<(Window, Timestamp)> {
    if retention_days == 0 {
        return Err(CopyError::invalid("retentionDays", "must be at least 1"));
    }
    let (start, end) = match (start, end, last) {
        (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            return Err(CopyError::invalid("last", "give either --last or --start/--end, not both"));
        }
        (None, None, Some(last)) => {
            let d = parse_duration("last", last)?;
            (now.saturating_sub(d).map_err(|_| CopyError::invalid("last", "out of range"))?, now)
        }
        (Some(s), Some(e), None) => (parse_instant("start", s)?, parse_instant("end", e)?),
        (Some(_), None, None) => return Err(CopyError::invalid("end", "--start needs --end")),
        (None, Some(_), None) => return Err(CopyError::invalid("start", "--end needs --start")),
        (None, None, None) => {
            return Err(CopyError::invalid("start", "give a range: --start and --end, or --last"));
        }
    };
    if end <= start {
        return Err(CopyError::invalid("end", format!("{end} is not after --start {start}")));
    }
    let (start, asked_end) = (start, end);
    let end = clip_to_now(start, end, now)?;
    let keep = SignedDuration::from_hours(24 * i64::from(retention_days));
    let retention_cutoff = now.saturating_sub(keep).unwrap_or(Timestamp::MIN);
    if end <= retention_cutoff {
        return Err(CopyError::invalid(
            "retentionDays",
            format!(
                "the range ends at {end}, before the retention cutoff {retention_cutoff} (now minus {retention_days} \
                 day{}): every event in it is past retention; raise --retention-days to copy it",
                if retention_days == 1 { "" } else { "s" }
            ),
        ));
    }
    Ok((Window { start, end, retention_cutoff }, asked_end))
}

/// The effective end of `[start, end)` planned at `now`: `end`, cut to `now`. A range that starts
/// at or after `now` is refused: nothing in it can have been delivered, and copying it would
/// claim (and lock) a range nothing has been copied from.
pub fn clip_to_now(start: Timestamp, end: Timestamp, now: Timestamp) -> Result<Timestamp> {
    if start >= now {
        return Err(CopyError::invalid(
            "start",
            format!("{start} is in the future (now {now}): a range wholly in the future has nothing to copy"),
        ));
    }
    Ok(end.min(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_time_needs_a_zone_and_a_date_is_midnight_utc() {
        assert_eq!(parse_instant("start", "2026-11-01").unwrap(), ts("2026-11-01T00:00:00Z"));
        assert_eq!(parse_instant("start", "2026-11-01T12:00:00+02:00").unwrap(), ts("2026-11-01T10:00:00Z"));
        for text in ["2026-11-01T12:00:00", "2026-11-01T12:00", "2026-11-01 12:00:00"] {
            let e = parse_instant("start", text).unwrap_err().to_string();
            assert!(e.contains("no time zone"), "{text}: {e}");
        }
        assert!(parse_instant("start", "yesterday").unwrap_err().to_string().contains("not an RFC 3339"));
    }

    #[test]
    fn a_range_wholly_past_retention_is_refused() {
        let now = ts("2026-11-10T00:00:00Z");
        let e = resolve_window(Some("2026-11-01"), Some("2026-11-03"), None, 1, now).unwrap_err();
        assert!(matches!(e, CopyError::InvalidRequest { field: "retentionDays", .. }), "{e}");
        // Partly inside retention: copied from the cutoff on.
        let w = resolve_window(Some("2026-11-01"), Some("2026-11-10"), None, 2, now).unwrap();
        assert_eq!(w.retention_cutoff, ts("2026-11-08T00:00:00Z"));
    }

    #[test]
    fn durations() {
        for (t, mins) in [
            ("5m", 5),
            ("30m", 30),
            ("1h", 60),
            ("6h", 360),
            ("90m", 90),
            ("36h", 2160),
            ("7d", 10080),
            ("PT90M", 90),
            ("P1D", 1440),
            ("P1DT12H", 2160),
        ] {
            assert_eq!(parse_duration("last", t).unwrap(), SignedDuration::from_mins(mins), "{t}");
        }
        for t in ["", "abc", "0m", "-5m", "P1M", "1y"] {
            assert!(parse_duration("last", t).is_err(), "{t}");
        }
    }

    #[test]
    fn instants() {
        assert_eq!(parse_instant("start", "2020-10-01").unwrap(), ts("2020-10-01T00:00:00Z"));
        assert_eq!(parse_instant("start", "2020-10-01T01:02:03+01:00").unwrap(), ts("2020-10-01T00:02:03Z"));
        let e = parse_instant("end", "yesterday").unwrap_err().to_string();
        assert!(e.contains("invalid end"), "{e}");
    }

    #[test]
    fn relative_range_ends_now() {
        let now = ts("2026-11-24T12:00:00Z");
        let w = resolve_window(None, None, Some("1h"), 2557, now).unwrap();
        assert_eq!((w.start, w.end), (ts("2026-11-24T11:00:00Z"), now));
    }

    #[test]
    fn range_errors_name_the_flag() {
        let now = ts("2026-11-24T12:00:00Z");
        let err = |s, e, l| resolve_window(s, e, l, 2557, now).unwrap_err().to_string();
        assert!(err(Some("2020-10-02"), Some("2020-10-01"), None).starts_with("invalid end"));
        assert!(err(Some("2020-10-02"), None, None).starts_with("invalid end"));
        assert!(err(None, Some("2020-10-02"), None).starts_with("invalid start"));
        assert!(err(Some("2020-10-01"), Some("2020-10-02"), Some("1h")).starts_with("invalid last"));
        assert!(err(None, None, None).starts_with("invalid start"));
        assert!(resolve_window(None, None, Some("1h"), 0, now).is_err());
    }

    #[test]
    fn ends_are_clipped_to_now_and_future_ranges_refused() {
        let now = ts("2026-11-24T12:00:00Z");
        for (start, end, got) in [
            ("2026-11-24T10:00:00Z", "2026-11-24T11:00:00Z", Some("2026-11-24T11:00:00Z")),
            ("2026-11-24T10:00:00Z", "2026-11-24T12:00:00Z", Some("2026-11-24T12:00:00Z")),
            ("2026-11-24T10:00:00Z", "2099-01-01T00:00:00Z", Some("2026-11-24T12:00:00Z")),
            ("2026-11-24T11:59:59Z", "2026-11-24T12:00:01Z", Some("2026-11-24T12:00:00Z")),
            ("2026-11-24T12:00:00Z", "2026-11-24T13:00:00Z", None),
            ("2027-01-01T00:00:00Z", "2027-02-01T00:00:00Z", None),
        ] {
            let r = clip_to_now(ts(start), ts(end), now);
            match got {
                Some(e) => assert_eq!(r.unwrap(), ts(e), "{start} .. {end}"),
                None => assert!(r.unwrap_err().to_string().contains("in the future"), "{start} .. {end}"),
            }
        }
        let (w, asked) = resolve_window_asked(Some("2026-11-01"), Some("2099-01-01"), None, 2557, now).unwrap();
        assert_eq!((w.end, asked), (now, ts("2099-01-01T00:00:00Z")));
    }

    #[test]
    fn retention_cuts_the_start() {
        let now = ts("2026-11-24T00:00:00Z");
        let w = resolve_window(Some("2026-11-01"), Some("2026-11-20"), None, 10, now).unwrap();
        assert_eq!(w.effective_start(), ts("2026-11-14T00:00:00Z"));
        assert!(!w.contains(ts("2026-11-13T23:59:59Z")));
        assert!(w.contains(ts("2026-11-14T00:00:00Z")));
        assert!(!w.contains(ts("2026-11-20T00:00:00Z")), "end is exclusive");
        // Wholly past retention: refused (issue 32), not an empty copy.
        assert!(resolve_window(Some("2010-01-01"), Some("2010-01-02"), None, 2557, now).is_err());
    }

    #[test]
    fn file_and_day_scope() {
        let now = ts("2026-11-24T00:00:00Z");
        let w = resolve_window(Some("2020-10-01T00:00:00Z"), Some("2020-10-02T00:00:00Z"), None, 2557, now).unwrap();
        assert!(w.file_in_scope(ts("2020-10-02T00:30:00Z")), "delivered after the end");
        assert!(!w.file_in_scope(ts("2020-10-02T01:00:00Z")));
        assert!(w.file_in_scope(ts("2020-09-30T23:50:00Z")), "clock skew");
        assert!(!w.file_in_scope(ts("2020-09-30T23:40:00Z")));
        assert_eq!(w.day_span(), (Date::constant(2020, 9, 30), Date::constant(2020, 10, 2)));
    }
}
