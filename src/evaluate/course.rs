//! The figures of one marker in one episode (docs/rules.md §2): baseline, post values, nadir,
//! reference nadir, percentages, half-life, next due date and the biochemical response.

use super::compare::{at_least, at_most, exceeds};
use crate::config::Config;
use crate::domain::{Marker, MarkerValue, Response};
use chrono::{Duration, NaiveDate};

/// One episode's window on the calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub index_date: NaiveDate,
    /// Last date of the post window (inclusive): the day before the next episode, never past
    /// the as-of date.
    pub post_last_date: NaiveDate,
}

impl Window {
    pub fn days_since_index(&self, date: NaiveDate) -> i64 {
        (date - self.index_date).num_days()
    }
}

/// The values of a marker that matter for one episode, borrowed from the series.
#[derive(Debug, Clone)]
pub struct EpisodeSeries<'a> {
    pub marker: Marker,
    pub baseline: Option<&'a MarkerValue>,
    /// Values dated after the index date inside the post window, in time order.
    pub post: Vec<&'a MarkerValue>,
}

impl<'a> EpisodeSeries<'a> {
    /// `series` must be in time order and already cut at the as-of date.
    pub fn new(
        marker: Marker,
        series: &'a [MarkerValue],
        window: Window,
        baseline_days: i64,
    ) -> Self {
        let baseline_from = window.index_date - Duration::days(baseline_days);
        let baseline = series
            .iter()
            .rev()
            .find(|v| v.date >= baseline_from && v.date <= window.index_date);
        let post = series
            .iter()
            .filter(|v| v.date > window.index_date && v.date <= window.post_last_date)
            .collect();
        EpisodeSeries {
            marker,
            baseline,
            post,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.baseline.is_none() && self.post.is_empty()
    }

    pub fn latest(&self) -> Option<&'a MarkerValue> {
        self.post.last().copied()
    }

    /// The smallest post value, the earliest on a tie.
    pub fn nadir(&self) -> Option<&'a MarkerValue> {
        earliest_minimum(self.post.iter().copied())
    }

    /// The smallest of the baseline and the post values before the latest, earliest on a tie.
    pub fn reference_nadir(&self) -> Option<&'a MarkerValue> {
        let before_latest = &self.post[..self.post.len().saturating_sub(1)];
        earliest_minimum(
            self.baseline
                .into_iter()
                .chain(before_latest.iter().copied()),
        )
    }

    /// The post value just before the latest.
    pub fn previous(&self) -> Option<&'a MarkerValue> {
        self.post.len().checked_sub(2).map(|i| self.post[i])
    }
}

fn earliest_minimum<'a>(values: impl Iterator<Item = &'a MarkerValue>) -> Option<&'a MarkerValue> {
    values.fold(None, |best: Option<&MarkerValue>, v| match best {
        Some(b) if v.value >= b.value => Some(b),
        _ => Some(v),
    })
}

/// (to - from) / from x 100; none when `from` is 0.
pub fn percent_change(from: f64, to: f64) -> Option<f64> {
    (from != 0.0).then(|| (to - from) / from * 100.0)
}

/// The ULN of the latest value: its `referenceRange.high` when present and plausible, else the
/// default.
pub fn uln(series: &EpisodeSeries<'_>, config: &Config) -> f64 {
    let default = config
        .markers
        .get(series.marker)
        .uln
        .unwrap_or(f64::INFINITY);
    series
        .latest()
        .and_then(|v| v.usable_reference_high())
        .unwrap_or(default)
}

/// ln 2 / -s over the baseline and the post values up to and including the nadir.
pub fn halflife_days(series: &EpisodeSeries<'_>, window: Window) -> Option<f64> {
    let nadir = series.nadir()?;
    let points: Vec<(f64, f64)> = series
        .baseline
        .into_iter()
        .chain(
            series
                .post
                .iter()
                .copied()
                .filter(|v| v.instant_ms <= nadir.instant_ms),
        )
        .filter(|v| v.value > 0.0)
        .map(|v| (window.days_since_index(v.date) as f64, v.value.ln()))
        .collect();
    let first_x = points.first()?.0;
    if !points.iter().any(|(x, _)| *x != first_x) {
        return None;
    }
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let slope = sxy / sxx;
    (slope < 0.0).then(|| std::f64::consts::LN_2 / -slope)
}

/// The last value's date (the index date without post values) + 30 days while within 90 days of
/// the index date, else + 90 days.
pub fn next_due_date(series: &EpisodeSeries<'_>, window: Window, config: &Config) -> NaiveDate {
    let last = series.latest().map_or(window.index_date, |v| v.date);
    let interval = if window.days_since_index(last) <= config.rules.due_early_period_days {
        config.rules.due_interval_early_days
    } else {
        config.rules.due_interval_late_days
    };
    last + Duration::days(interval)
}

/// `marker-rise` (docs/rules.md §3) as found at the latest value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rise<'a> {
    pub reference_nadir: &'a MarkerValue,
    pub latest: &'a MarkerValue,
    /// The value before the latest, when it confirms the rise.
    pub confirmed_by: Option<&'a MarkerValue>,
}

fn rises_from(value: f64, nadir: f64, uln: f64, config: &Config) -> bool {
    exceeds(value, uln) && at_least(value, nadir * (1.0 + config.rules.rise_pct / 100.0))
}

pub fn rise<'a>(series: &EpisodeSeries<'a>, uln: f64, config: &Config) -> Option<Rise<'a>> {
    let latest = series.latest()?;
    let reference_nadir = series.reference_nadir()?;
    if !rises_from(latest.value, reference_nadir.value, uln, config) {
        return None;
    }
    let confirmed_by = series.previous().filter(|previous| {
        previous.instant_ms > reference_nadir.instant_ms
            && rises_from(previous.value, reference_nadir.value, uln, config)
    });
    Some(Rise {
        reference_nadir,
        latest,
        confirmed_by,
    })
}

/// The biochemical response at the latest value; precedence NE, PD, CR, PR, SD.
pub fn response(
    series: &EpisodeSeries<'_>,
    uln: f64,
    rise: Option<&Rise<'_>>,
    config: &Config,
) -> Response {
    let (Some(baseline), Some(latest)) = (series.baseline, series.latest()) else {
        return Response::NotEvaluable;
    };
    if !exceeds(baseline.value, uln) {
        return Response::NotEvaluable;
    }
    if rise.is_some_and(|r| r.confirmed_by.is_some()) {
        return Response::Progression;
    }
    if at_most(latest.value, uln) {
        return Response::Complete;
    }
    if at_most(
        latest.value,
        baseline.value * config.rules.response_fraction,
    ) {
        return Response::Partial;
    }
    Response::Stable
}
