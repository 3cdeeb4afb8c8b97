//! FHIR `date`/`dateTime`/`instant` strings -> the calendar date in the configured time zone
//! (all windows compare calendar dates, docs/rules.md §1.4) and an instant for ordering.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone};
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

/// Parses a FHIR date or dateTime and places it in `tz`.
pub fn parse_moment(text: &str, tz: Tz) -> Result<Moment, TimeError> {
    let text = text.trim();
    if !text.contains('T') {
        return match text.len() {
            4 | 7 if text.bytes().all(|b| b.is_ascii_digit() || b == b'-') => {
                Err(TimeError::NotAFullDate)
            }
            _ => {
                let date =
                    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| TimeError::Invalid)?;
                Ok(Moment {
                    date,
                    instant_ms: start_of_date_ms(date, tz),
                })
            }
        };
    }
    if let Some(instant_ms) = parse_rfc3339_ms(text) {
        let utc = DateTime::from_timestamp_millis(instant_ms).ok_or(TimeError::Invalid)?;
        return Ok(Moment {
            date: utc.with_timezone(&tz).date_naive(),
            instant_ms,
        });
    }
    // FHIR requires an offset when a time is given; a local time is read in the configured zone.
    let local = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .map_err(|_| TimeError::Invalid)?;
    let instant_ms = tz
        .from_local_datetime(&local)
        .earliest()
        .map(|t| t.timestamp_millis())
        .unwrap_or_else(|| local.and_utc().timestamp_millis());
    Ok(Moment {
        date: local.date(),
        instant_ms,
    })
}

/// Parses a FHIR `date` (birthDate). Partial dates give `None`.
pub fn parse_date(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").ok()
}

/// Unix milliseconds of an instant such as `meta.lastUpdated`.
pub fn parse_instant_ms(text: &str) -> Option<i64> {
    parse_rfc3339_ms(text.trim())
}

/// Unix milliseconds of an RFC 3339 date-time with offset. The fixed layout FHIR servers write
/// (`2026-03-01T10:00:00Z`, `...T10:00:00.123+01:00`) is read directly: this runs twice per
/// Observation, and chrono's general parser was a measurable share of a large run. Anything
/// else goes to chrono.
fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    fast_rfc3339_ms(text.as_bytes()).or_else(|| {
        DateTime::<FixedOffset>::parse_from_rfc3339(text)
            .ok()
            .filter(|t| t.offset().local_minus_utc().abs() <= MAX_OFFSET_SECONDS)
            .map(|t| t.timestamp_millis())
    })
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

fn fast_rfc3339_ms(b: &[u8]) -> Option<i64> {
    fn digits(b: &[u8]) -> Option<u32> {
        b.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    }
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(
        digits(&b[0..4])? as i32,
        digits(&b[5..7])?,
        digits(&b[8..10])?,
    )?;
    let time = date.and_hms_opt(
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    )?;
    let mut i = 19;
    let mut millis = 0i64;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let fraction = &b[start..i.min(start + 3)];
        millis = i64::from(digits(fraction)?) * 10i64.pow(3 - fraction.len() as u32);
    }
    let offset_seconds = match b.get(i..)? {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let seconds = offset_seconds(digits(&[*h1, *h2])?, digits(&[*m1, *m2])?)?;
            if *sign == b'+' {
                seconds
            } else {
                -seconds
            }
        }
        _ => return None,
    };
    Some(time.and_utc().timestamp_millis() + millis - offset_seconds * 1000)
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
    fn fast_path_agrees_with_chrono() {
        for text in [
            "2026-03-05T10:11:12Z",
            "2026-03-05T10:11:12.345Z",
            "2026-03-05T10:11:12.3+01:00",
            "2026-01-01T23:30:00-05:00",
            "1999-12-31T23:59:59.999999-09:30",
            "2024-02-29T00:00:00+14:00",
        ] {
            let chrono = DateTime::<FixedOffset>::parse_from_rfc3339(text)
                .unwrap()
                .timestamp_millis();
            assert_eq!(fast_rfc3339_ms(text.as_bytes()), Some(chrono), "{text}");
        }
        for text in [
            "2026-02-30T10:00:00Z",
            "2026-03-05T25:00:00Z",
            "2026-03-05T10:11:12",
            "2026-03-05T10:11:12.Z",
        ] {
            assert_eq!(fast_rfc3339_ms(text.as_bytes()), None, "{text}");
        }
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
            // Through chrono (a space for the T): the same limit.
            "2026-01-01 10:00:00+23:59",
            "2026-01-01t10:00:00-14:30",
        ] {
            assert_eq!(
                parse_moment(text, chrono_tz::UTC),
                Err(TimeError::Invalid),
                "{text}"
            );
            assert_eq!(parse_instant_ms(text), None, "{text}");
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
