//! The programme at a glance: the figures a TARE programme's audit reviews, over every
//! evaluated patient (not only the flagged): the best change from baseline per episode and
//! marker (a waterfall), surveillance adherence per scheduled window, days from TARE to nadir,
//! flags per month. Drawn in the report as inline SVG and written as CSV beside it.

use super::ReportOptions;
use crate::config::Config;
use crate::domain::{Censoring, Marker, PatientFindings, PatientTimeline, Response};
use chrono::{Datelike, NaiveDate};
use std::collections::BTreeMap;

/// One bar of the waterfall: an episode's series with a baseline above 0 and a nadir.
#[derive(Debug, Clone, PartialEq)]
pub struct WaterfallBar {
    pub patient_id: String,
    pub marker: Marker,
    pub index_date: NaiveDate,
    pub baseline: f64,
    pub nadir: f64,
    /// A baseline or nadir reported as `<` or `>` a limit: the change is a bound, not a figure.
    pub baseline_censoring: Censoring,
    pub nadir_censoring: Censoring,
    /// (nadir - baseline) / baseline x 100: the best change, the nadir being the smallest
    /// value after TARE.
    pub best_pct_change: f64,
    pub response: Response,
}

/// One scheduled window of the surveillance schedule (docs/rules.md §2.10), in days after TARE.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowAdherence {
    pub from_day: i64,
    pub to_day: i64,
    /// Patients whose latest episode's window had ended by the as-of date (and before the next
    /// episode's index date) ...
    pub due: usize,
    /// ... of them, with a tumor-marker result dated in the window.
    pub with_result: usize,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Programme {
    pub waterfall: Vec<WaterfallBar>,
    pub surveillance: Vec<WindowAdherence>,
    /// (marker, days from TARE to nadir), one per episode series with a nadir.
    pub nadir_days: Vec<(Marker, i64)>,
    /// (month "YYYY-MM", flag code, severity) -> flags identified that month, in the range.
    pub flags_per_month: BTreeMap<(String, &'static str, &'static str), usize>,
}

/// The width of a bin of days from TARE to nadir; a bin's last day is its first + 29.
pub const NADIR_BIN_DAYS: i64 = 30;

/// The surveillance windows: every `due_interval_early_days` up to `due_early_period_days`,
/// then every `due_interval_late_days` up to `overdue_max_days`. A last window shorter than
/// its interval is left out: the schedule asks for no result in it (days 361-365 would read
/// as poor adherence).
pub fn windows(config: &Config) -> Vec<(i64, i64)> {
    let r = &config.rules;
    let mut windows = Vec::new();
    let mut from = 0;
    while from < r.overdue_max_days {
        let step = if from < r.due_early_period_days {
            r.due_interval_early_days
        } else {
            r.due_interval_late_days
        };
        if step <= 0 {
            break;
        }
        let to = from + step;
        if to > r.overdue_max_days {
            break;
        }
        windows.push((from + 1, to));
        from = to;
    }
    windows
}

impl Programme {
    /// One patient's share of the figures.
    pub fn of_patient(
        timeline: &PatientTimeline,
        findings: &PatientFindings,
        options: &ReportOptions,
        config: &Config,
    ) -> Programme {
        let mut programme = Programme::default();
        for episode in &findings.episodes {
            for course in &episode.courses {
                if let Some(nadir) = &course.nadir {
                    programme
                        .nadir_days
                        .push((course.marker, (nadir.date - episode.index_date).num_days()));
                    if let Some(baseline) = course.baseline.as_ref().filter(|b| b.value > 0.0) {
                        programme.waterfall.push(WaterfallBar {
                            patient_id: findings.patient_id.clone(),
                            marker: course.marker,
                            index_date: episode.index_date,
                            baseline: baseline.value,
                            nadir: nadir.value,
                            baseline_censoring: baseline.censoring,
                            nadir_censoring: nadir.censoring,
                            best_pct_change: (nadir.value - baseline.value) / baseline.value
                                * 100.0,
                            response: course.response,
                        });
                    }
                }
            }
            for flag in &episode.flags {
                let d = super::flag_day(flag, episode, config);
                if options.in_range(d) {
                    *programme
                        .flags_per_month
                        .entry((
                            format!("{:04}-{:02}", d.year(), d.month()),
                            flag.code.code(),
                            flag.severity.code(),
                        ))
                        .or_default() += 1;
                }
            }
        }
        if let Some(episode) = findings.episodes.last() {
            let index = episode.index_date;
            // The next episode's index date (docs/rules.md §1.6), not a staged TARE of this
            // episode: a second lobe treated on day 40 does not end the surveillance.
            let next_tare =
                crate::evaluate::episodes(&timeline.procedures, config.episodes.merge_days)
                    .into_iter()
                    .map(|e| e.index_date)
                    .find(|d| *d > index);
            let dates: Vec<NaiveDate> = Marker::TUMOR
                .into_iter()
                .flat_map(|m| timeline.series(m).iter().map(|v| v.date))
                .filter(|d| *d <= options.as_of)
                .collect();
            for (from, to) in windows(config) {
                let end = index + chrono::Duration::days(to);
                let due = end <= options.as_of && next_tare.is_none_or(|next| end < next);
                let with_result = due
                    && dates.iter().any(|d| {
                        let day = (*d - index).num_days();
                        day >= from && day <= to
                    });
                programme.surveillance.push(WindowAdherence {
                    from_day: from,
                    to_day: to,
                    due: usize::from(due),
                    with_result: usize::from(with_result),
                });
            }
        }
        programme
    }

    /// Adds another's figures to these.
    pub fn merge(&mut self, other: Programme) {
        self.waterfall.extend(other.waterfall);
        self.nadir_days.extend(other.nadir_days);
        for (key, count) in other.flags_per_month {
            *self.flags_per_month.entry(key).or_default() += count;
        }
        if self.surveillance.is_empty() {
            self.surveillance = other.surveillance;
        } else {
            for (mine, theirs) in self.surveillance.iter_mut().zip(other.surveillance) {
                mine.due += theirs.due;
                mine.with_result += theirs.with_result;
            }
        }
    }

    /// The waterfall's order: per marker, the largest rise first, down to the deepest fall.
    pub fn sort(&mut self) {
        self.waterfall.sort_by(|a, b| {
            a.marker
                .cmp(&b.marker)
                .then(b.best_pct_change.total_cmp(&a.best_pct_change))
                .then_with(|| a.patient_id.cmp(&b.patient_id))
                .then(a.index_date.cmp(&b.index_date))
        });
    }

    /// Every month of the report's range, "YYYY-MM", months without a flag included: from
    /// `--from` (else the first month with a flag) to `--to` (else the as-of date).
    pub fn flag_months(&self, options: &ReportOptions) -> Vec<String> {
        let first_flagged = self
            .flags_per_month
            .keys()
            .next()
            .map(|(m, _, _)| m.clone());
        let month = |d: NaiveDate| format!("{:04}-{:02}", d.year(), d.month());
        let Some(start) = options.from.map(month).or(first_flagged) else {
            return Vec::new();
        };
        let end = month(options.to.unwrap_or(options.as_of));
        let parse = |m: &str| -> Option<(i32, u32)> {
            let (y, m) = m.split_once('-')?;
            Some((y.parse().ok()?, m.parse().ok()?))
        };
        let (Some((mut year, mut mon)), Some(last)) = (parse(&start), parse(&end)) else {
            return Vec::new();
        };
        let mut months = Vec::new();
        while (year, mon) <= last {
            months.push(format!("{year:04}-{mon:02}"));
            (year, mon) = if mon == 12 {
                (year + 1, 1)
            } else {
                (year, mon + 1)
            };
        }
        months
    }

    /// Days from TARE to nadir in 30-day bins: (marker, first day of the bin, count). Post
    /// values start the day after TARE, so the bins are days 1-30, 31-60..., the same as the
    /// surveillance windows.
    pub fn nadir_histogram(&self) -> BTreeMap<(Marker, i64), usize> {
        let mut bins = BTreeMap::new();
        for (marker, days) in &self.nadir_days {
            let first_day = (days - 1).max(0).div_euclid(NADIR_BIN_DAYS) * NADIR_BIN_DAYS + 1;
            *bins.entry((*marker, first_day)).or_default() += 1;
        }
        bins
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nadir_bins_are_days_1_to_30_then_31_to_60_like_the_surveillance_windows() {
        let programme = Programme {
            nadir_days: [1, 30, 31, 60, 61]
                .into_iter()
                .map(|days| (Marker::Pivka2, days))
                .collect(),
            ..Programme::default()
        };
        assert_eq!(
            programme.nadir_histogram().into_iter().collect::<Vec<_>>(),
            [
                ((Marker::Pivka2, 1), 2),
                ((Marker::Pivka2, 31), 2),
                ((Marker::Pivka2, 61), 1)
            ]
        );
    }
}
