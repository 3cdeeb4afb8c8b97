//! FHIR `date`/`dateTime`/`instant` strings -> the calendar date in the configured time zone
//! (all windows compare calendar dates, RULES.md §1 "Time") and an instant for ordering.

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
    if let Ok(with_offset) = DateTime::<FixedOffset>::parse_from_rfc3339(text) {
        return Ok(Moment {
            date: with_offset.with_timezone(&tz).date_naive(),
            instant_ms: with_offset.timestamp_millis(),
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
    DateTime::<FixedOffset>::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.timestamp_millis())
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
    fn fractional_seconds_and_zulu_parse() {
        let m = parse_moment("2026-03-05T10:11:12.345Z", chrono_tz::UTC).unwrap();
        assert_eq!(m.instant_ms % 1000, 345);
    }
}
