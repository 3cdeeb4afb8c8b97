//! FHIR `date`/`dateTime`/`instant` strings -> the calendar date in the configured time zone
//! (all windows compare calendar dates, docs/rules.md §1.4) and an instant for ordering.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Tz;

/// A point in time as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    pub date: NaiveDate,
    /// Unix milliseconds; a date-only value is the start of its date in the configured zone.
    pub instant_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeError {
    /// `YYYY` or `YYYY-MM`: not a calendar date, so no window can place it.
    NotAFullDate,
    Invalid,
}

/// Parses a FHIR date or dateTime and places it in `tz`. Only the FHIR forms: `YYYY-MM-DD`, or
/// `YYYY-MM-DDThh:mm:ss[.fraction](Z|+hh:mm|-hh:mm)` with an offset of at most 14:00 (no sign
/// before the year, an upper-case `T` and `Z`). A time without an offset, which FHIR does not
/// allow either, is read in the configured zone rather than lost (docs/rules.md §1.4).
pub fn parse_moment(text: &str, tz: Tz) -> Result<Moment, TimeError> {
    let b = text.trim().as_bytes();
    if !b.contains(&b'T') {
        let partial =
            matches!(b.len(), 4 | 7) && b.iter().all(|c| c.is_ascii_digit() || *c == b'-');
        if partial {
            return Err(TimeError::NotAFullDate);
        }
        let date = full_date(b).ok_or(TimeError::Invalid)?;
        return Ok(Moment {
            date,
            instant_ms: start_of_date_ms(date, tz),
        });
    }
    let parts = date_time_parts(b).ok_or(TimeError::Invalid)?;
    let millis = i64::from(parts.nanos / 1_000_000);
    match parts.offset_seconds {
        Some(offset) => {
            let instant_ms = parts.local.and_utc().timestamp_millis() + millis - offset * 1000;
            let utc = DateTime::from_timestamp_millis(instant_ms).ok_or(TimeError::Invalid)?;
            Ok(Moment {
                date: utc.with_timezone(&tz).date_naive(),
                instant_ms,
            })
        }
        None => {
            let local = parts.local;
            let instant_ms = tz
                .from_local_datetime(&local)
                .earliest()
                .map(|t| t.timestamp_millis())
                .unwrap_or_else(|| local.and_utc().timestamp_millis())
                + millis;
            Ok(Moment {
                date: local.date(),
                instant_ms,
            })
        }
    }
}

/// Parses a FHIR `date` (birthDate). Partial dates give `None`.
pub fn parse_date(text: &str) -> Option<NaiveDate> {
    full_date(text.trim().as_bytes())
}

/// Unix nanoseconds of an instant such as `meta.lastUpdated` (an offset is required), to order
/// copies that a server stamped within one millisecond; outside the years 1678-2261 the
/// nearest end of that range.
pub fn parse_instant_ns(text: &str) -> Option<i64> {
    let parts = date_time_parts(text.trim().as_bytes())?;
    let seconds = parts.local.and_utc().timestamp() - parts.offset_seconds?;
    let nanos = i128::from(seconds) * 1_000_000_000 + i128::from(parts.nanos);
    Some(nanos.clamp(i128::from(i64::MIN + 1), i128::from(i64::MAX)) as i64)
}

/// The largest UTC offset FHIR allows (`(Z|(+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))`): any
/// larger one (`+24:00`, chrono accepts up to `+23:59`) is no time anywhere, so the value is
/// not a valid date.
const MAX_OFFSET_SECONDS: i32 = 14 * 3600;

/// An offset's seconds east of UTC from its `HH` and `MM`, when FHIR allows it: minutes below
/// 60, at most 14:00.
fn offset_seconds(hours: u32, minutes: u32) -> Option<i64> {
    let seconds = hours * 3600 + minutes * 60;
    (minutes < 60 && seconds <= MAX_OFFSET_SECONDS as u32).then_some(i64::from(seconds))
}

/// Decimal digits as a number; `None` if any byte is not a digit.
fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
    })
}

/// `YYYY-MM-DD`, exactly: ten bytes, digits where digits go.
fn full_date(b: &[u8]) -> Option<NaiveDate> {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    NaiveDate::from_ymd_opt(
        digits(&b[0..4])? as i32,
        digits(&b[5..7])?,
        digits(&b[8..10])?,
    )
}

/// A FHIR dateTime with a time, taken apart; `offset_seconds` is `None` when it has none.
struct DateTimeParts {
    local: NaiveDateTime,
    /// The fraction of a second, to the nanosecond (further digits are dropped).
    nanos: u32,
    offset_seconds: Option<i64>,
}

/// `YYYY-MM-DDThh:mm:ss[.fraction][Z|+hh:mm|-hh:mm]`, read directly: this runs twice per
/// Observation, and chrono's general parser was a measurable share of a large run.
fn date_time_parts(b: &[u8]) -> Option<DateTimeParts> {
    if b.len() < 19 || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let local = full_date(&b[..10])?.and_hms_opt(
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    )?;
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let fraction = &b[start..i.min(start + 9)];
        nanos = digits(fraction)? * 10u32.pow(9 - fraction.len() as u32);
    }
    let offset_seconds = match &b[i..] {
        [] => None,
        [b'Z'] => Some(0),
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let seconds = offset_seconds(digits(&[*h1, *h2])?, digits(&[*m1, *m2])?)?;
            Some(if *sign == b'+' { seconds } else { -seconds })
        }
        _ => return None,
    };
    Some(DateTimeParts {
        local,
        nanos,
        offset_seconds,
    })
}

fn start_of_date_ms(date: NaiveDate, tz: Tz) -> i64 {
    let midnight = date.and_hms_opt(0, 0, 0).expect("midnight exists");
    tz.from_local_datetime(&midnight)
        .earliest()
        .map(|t| t.timestamp_millis())
        // A zone whose midnight is skipped by a DST change: the UTC midnight keeps the order.
        .unwrap_or_else(|| midnight.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn negative_offset_late_evening_falls_on_next_utc_date() {
        let m = parse_moment("2026-01-01T23:30:00-05:00", chrono_tz::UTC).unwrap();
        assert_eq!(m.date, d("2026-01-02"));
    }

    #[test]
    fn same_time_in_new_york_zone_stays_on_its_local_date() {
        let m = parse_moment("2026-01-01T23:30:00-05:00", chrono_tz::America::New_York).unwrap();
        assert_eq!(m.date, d("2026-01-01"));
    }

    #[test]
    fn date_only_is_its_date_at_the_start() {
        let m = parse_moment("2026-03-05", chrono_tz::UTC).unwrap();
        assert_eq!(m.date, d("2026-03-05"));
        let t = parse_moment("2026-03-05T00:00:00Z", chrono_tz::UTC).unwrap();
        assert_eq!(m.instant_ms, t.instant_ms);
    }

    #[test]
    fn partial_dates_are_not_full_dates() {
        assert_eq!(
            parse_moment("2026-03", chrono_tz::UTC),
            Err(TimeError::NotAFullDate)
        );
        assert_eq!(
            parse_moment("2026", chrono_tz::UTC),
            Err(TimeError::NotAFullDate)
        );
        assert_eq!(
            parse_moment("yesterday", chrono_tz::UTC),
            Err(TimeError::Invalid)
        );
    }

    #[test]
    fn instants_agree_with_chrono() {
        for text in [
            "2026-03-05T10:11:12Z",
            "2026-03-05T10:11:12.345Z",
            "2026-03-05T10:11:12.3+01:00",
            "2026-01-01T23:30:00-05:00",
            "1999-12-31T23:59:59.999999-09:30",
            "2024-02-29T00:00:00+14:00",
            "2026-03-05T10:11:12.123456789012Z",
        ] {
            let chrono = DateTime::<FixedOffset>::parse_from_rfc3339(text).unwrap();
            assert_eq!(
                parse_instant_ns(text),
                chrono.timestamp_nanos_opt(),
                "{text}"
            );
        }
        for text in [
            "2026-02-30T10:00:00Z",
            "2026-03-05T25:00:00Z",
            "2026-03-05T10:11:12",
            "2026-03-05T10:11:12.Z",
        ] {
            assert_eq!(parse_instant_ns(text), None, "{text}");
        }
    }

    #[test]
    fn forms_fhir_does_not_allow_are_invalid() {
        for text in [
            "+2026-10-20",
            "2026-10-20T12:00:00z",
            "2026-10-20t12:00:00Z",
            "2026-10-20 12:00:00Z",
            "2026-10-20T12:00Z",
            "2026-1-20",
            "20261020",
            " 2026-10-20x",
        ] {
            assert_eq!(
                parse_moment(text, chrono_tz::UTC),
                Err(TimeError::Invalid),
                "{text}"
            );
        }
        assert_eq!(parse_date("+2026-10-20"), None);
    }

    #[test]
    fn instants_within_one_millisecond_keep_their_order() {
        let (a, b) = (
            parse_instant_ns("2026-11-01T00:00:00Z").unwrap(),
            parse_instant_ns("2026-11-01T00:00:00.000999Z").unwrap(),
        );
        assert_eq!(b - a, 999_000);
    }

    #[test]
    fn an_offset_beyond_fourteen_hours_or_sixty_minutes_is_invalid() {
        for text in [
            "2026-01-01T10:00:00+99:99",
            "2026-01-01T10:00:00+24:00",
            "2026-01-01T10:00:00-12:60",
            "2026-01-01T10:00:00+14:01",
            "2026-01-01T10:00:00-15:00",
            "2026-01-01T10:00:00.5+23:59",
            // A space for the T: not FHIR, whatever the offset.
            "2026-01-01 10:00:00+23:59",
            "2026-01-01t10:00:00-14:30",
        ] {
            assert_eq!(
                parse_moment(text, chrono_tz::UTC),
                Err(TimeError::Invalid),
                "{text}"
            );
            assert_eq!(parse_instant_ns(text), None, "{text}");
        }
        for text in [
            "2026-01-01T10:00:00+14:00",
            "2026-01-01T10:00:00-14:00",
            "2026-01-01T10:00:00+13:59",
            "2026-01-01T10:00:00-00:00",
        ] {
            assert!(parse_moment(text, chrono_tz::UTC).is_ok(), "{text}");
        }
    }

    #[test]
    fn fractional_seconds_and_zulu_parse() {
        let m = parse_moment("2026-03-05T10:11:12.345Z", chrono_tz::UTC).unwrap();
        assert_eq!(m.instant_ms % 1000, 345);
    }
}
