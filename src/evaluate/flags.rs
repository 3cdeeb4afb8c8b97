//! The seven flags of docs/rules.md §3, each a small function returning the flag with a sentence a
//! clinician can check against the numbers.

use super::compare::{at_least, at_most, exceeds};
use super::course::{percent_change, EpisodeSeries, Rise, Window};
use crate::config::Config;
use crate::domain::{Flag, FlagCode, Marker, MarkerCourse, MarkerValue, Response, Severity};
use crate::format::{date, human_number, human_percent, human_value};
use chrono::{Duration, NaiveDate};

/// A value with its unit and date: `6,088 mAU/mL (2026-10-20)`.
fn show(v: &MarkerValue) -> String {
    format!(
        "{} ({})",
        human_value(v.value, v.censoring, v.marker),
        date(v.date)
    )
}

/// Where a value lies against the TARE.
fn against_tare(v: &MarkerValue, window: Window) -> &'static str {
    match window.days_since_index(v.date) {
        days if days < 0 => "before TARE",
        0 => "on the day of TARE",
        _ => "after TARE",
    }
}

/// A value with its unit, where it lies against the TARE, and its date, as the CSV and the
/// chart place it: `88,000 mAU/mL before TARE (2026-06-15)`, `1,020 mAU/mL after TARE
/// (2026-03-01)`.
fn placed(v: &MarkerValue, window: Window) -> String {
    format!(
        "{} {} ({})",
        human_value(v.value, v.censoring, v.marker),
        against_tare(v, window),
        date(v.date)
    )
}

/// The reference nadir, which is the baseline when no value after TARE was lower: `30 mAU/mL
/// at baseline before TARE (2026-04-10)`.
fn placed_reference_nadir(v: &MarkerValue, window: Window) -> String {
    match window.days_since_index(v.date) {
        days if days <= 0 => format!(
            "{} at baseline {} ({})",
            human_value(v.value, v.censoring, v.marker),
            against_tare(v, window),
            date(v.date)
        ),
        _ => placed(v, window),
    }
}

/// `the upper limit of normal of 40 mAU/mL`.
fn upper_limit(uln: f64, marker: Marker) -> String {
    format!(
        "the upper limit of normal of {}",
        human_value(uln, crate::domain::Censoring::Exact, marker)
    )
}

fn ids(values: &[&MarkerValue]) -> Vec<crate::domain::ResourceId> {
    values.iter().map(|v| v.observation_id.clone()).collect()
}

fn tare_on(window: Window) -> String {
    format!("TARE on {}", date(window.index_date))
}

/// `marker-rise`, in the words of the CSV: the rise (`rise_from_nadir_pct`) is measured from
/// the reference nadir, the lowest value so far, which may be the baseline before TARE.
pub fn marker_rise(rise: &Rise<'_>, uln: f64, window: Window) -> Flag {
    let marker = rise.latest.marker;
    // No percentage from a reference nadir of 0 (rise_from_nadir_pct is empty too): the
    // sentence then gives the two values only.
    let pct = percent_change(rise.reference_nadir.value, rise.latest.value)
        .map(|p| format!(" {}%", human_percent(p)))
        .unwrap_or_default();
    let confirmation = match rise.confirmed_by {
        Some(previous) => format!(
            ", confirmed by the value before it, {}",
            placed(previous, window)
        ),
        None => ", not yet confirmed by a second raised value".into(),
    };
    let mut evidence = vec![rise.reference_nadir];
    evidence.extend(rise.confirmed_by);
    evidence.push(rise.latest);
    Flag {
        code: FlagCode::MarkerRise,
        marker: Some(marker),
        severity: if rise.confirmed_by.is_some() {
            Severity::High
        } else {
            Severity::Moderate
        },
        identified_date: rise.latest.date,
        detail: format!(
            "{} rose{} from its lowest value so far (reference nadir), {}, to {}{}, above {}; {}. Confirm with contrast CT/MRI.",
            marker.display_name(),
            pct,
            placed_reference_nadir(rise.reference_nadir, window),
            placed(rise.latest, window),
            confirmation,
            upper_limit(uln, marker),
            tare_on(window)
        ),
        evidence_observation_ids: ids(&evidence),
    }
}

pub fn marker_plateau(series: &EpisodeSeries<'_>, window: Window, config: &Config) -> Option<Flag> {
    let level = config.markers.get(series.marker).plateau_level?;
    let (previous, latest) = (series.previous()?, series.latest()?);
    let change_limit = previous.value * config.rules.plateau_change_pct / 100.0;
    let holds = exceeds(previous.value, level)
        && exceeds(latest.value, level)
        && at_most((latest.value - previous.value).abs(), change_limit)
        && (latest.date - previous.date).num_days() >= config.rules.plateau_min_days_apart;
    if !holds {
        return None;
    }
    let change = percent_change(previous.value, latest.value).unwrap_or(0.0);
    Some(Flag {
        code: FlagCode::MarkerPlateau,
        marker: Some(series.marker),
        severity: Severity::Moderate,
        identified_date: latest.date,
        detail: format!(
            "{} has plateaued above {}: {} then {}, a change of {}%; {}. Consider imaging.",
            series.marker.display_name(),
            human_value(level, crate::domain::Censoring::Exact, series.marker),
            placed(previous, window),
            placed(latest, window),
            human_percent(change),
            tare_on(window)
        ),
        evidence_observation_ids: ids(&[previous, latest]),
    })
}

pub fn no_response(
    series: &EpisodeSeries<'_>,
    uln: f64,
    window: Window,
    config: &Config,
) -> Option<Flag> {
    let baseline = series.baseline?;
    let latest = series.latest()?;
    let assessed_from = window.index_date + Duration::days(config.rules.no_response_min_day);
    let limit = baseline.value * config.rules.response_fraction;
    let holds = exceeds(baseline.value, uln)
        && series.post.iter().any(|v| v.date >= assessed_from)
        && series.post.iter().all(|v| exceeds(v.value, limit));
    if !holds {
        return None;
    }
    let lowest = series.nadir()?;
    Some(Flag {
        code: FlagCode::NoResponse,
        marker: Some(series.marker),
        severity: Severity::Moderate,
        identified_date: latest.date,
        detail: format!(
            "{} has not fallen to {}% of its baseline, {}, by day {} after TARE: nadir {}, latest {}; {}.",
            series.marker.display_name(),
            human_number(config.rules.response_fraction * 100.0),
            placed(baseline, window),
            window.days_since_index(latest.date),
            placed(lowest, window),
            placed(latest, window),
            tare_on(window)
        ),
        evidence_observation_ids: ids(&[baseline, latest]),
    })
}

pub fn incomplete_response(
    series: &EpisodeSeries<'_>,
    course: &MarkerCourse,
    window: Window,
) -> Option<Flag> {
    let (baseline, latest) = (series.baseline?, series.latest()?);
    if course.response != Response::Partial || !exceeds(latest.value, course.uln) {
        return None;
    }
    let fall = percent_change(baseline.value, latest.value).map_or(0.0, |p| -p);
    Some(Flag {
        code: FlagCode::IncompleteResponse,
        marker: Some(series.marker),
        severity: Severity::Low,
        identified_date: latest.date,
        detail: format!(
            "{} fell {}% from its baseline, {}, to {}, but remains above {}; {}.",
            series.marker.display_name(),
            human_percent(fall),
            placed(baseline, window),
            placed(latest, window),
            upper_limit(course.uln, series.marker),
            tare_on(window)
        ),
        evidence_observation_ids: ids(&[baseline, latest]),
    })
}

/// The first day a course is overdue: its next due date plus `[rules] overdue_grace_days`, plus
/// one (the flag holds once the as-of date is past the grace). The report dates a
/// `surveillance-overdue` flag by it.
pub fn overdue_from(course: &MarkerCourse, config: &Config) -> NaiveDate {
    course.next_due_date + Duration::days(config.rules.overdue_grace_days + 1)
}

pub fn surveillance_overdue(
    series: &EpisodeSeries<'_>,
    course: &MarkerCourse,
    window: Window,
    as_of: NaiveDate,
    config: &Config,
) -> Option<Flag> {
    let baseline = series.baseline?;
    let overdue_after = overdue_from(course, config) - Duration::days(1);
    let surveillance_ends = window.index_date + Duration::days(config.rules.overdue_max_days);
    if !(as_of > overdue_after && as_of <= surveillance_ends) {
        return None;
    }
    let last = series.latest().unwrap_or(baseline);
    Some(Flag {
        code: FlagCode::SurveillanceOverdue,
        marker: Some(series.marker),
        severity: Severity::Low,
        identified_date: last.date,
        detail: format!(
            "{} was due on {} (latest value {}) and is {} days overdue as of {}; {}.",
            series.marker.display_name(),
            date(course.next_due_date),
            placed(last, window),
            (as_of - course.next_due_date).num_days(),
            date(as_of),
            tare_on(window)
        ),
        evidence_observation_ids: ids(&[last]),
    })
}

/// `possible-reild`: the first bilirubin value in days 14-120 of the post window that is at
/// least 51.3 umol/L, or at least 2 x the bilirubin baseline and above the bilirubin ULN;
/// and, when a later value of the window is higher, the highest too (the worst is what a
/// clinician acts on).
pub fn possible_reild(
    bilirubin: &EpisodeSeries<'_>,
    window: Window,
    config: &Config,
) -> Option<Flag> {
    let rules = &config.rules;
    let from = window.index_date + Duration::days(rules.reild_from_day);
    let to = window.index_date + Duration::days(rules.reild_to_day);
    let bilirubin_uln = config.markers.bilirubin.uln.unwrap_or(f64::INFINITY);
    let baseline = bilirubin.baseline;
    let above_limit = |v: &MarkerValue| at_least(v.value, rules.reild_bilirubin_umol_l);
    let raised = |v: &MarkerValue| {
        above_limit(v)
            || baseline.is_some_and(|b| {
                at_least(v.value, b.value * rules.reild_baseline_multiple)
                    && exceeds(v.value, bilirubin_uln)
            })
    };
    let mut raised_values = bilirubin
        .post
        .iter()
        .copied()
        .filter(|v| v.date >= from && v.date <= to && raised(v));
    let value = raised_values.next()?;
    // The highest after it (the earliest of equals), when higher than the first.
    let highest = raised_values
        .filter(|v| v.value > value.value)
        .reduce(|best, v| if v.value > best.value { v } else { best });
    let bilirubin_value =
        |umol_l: f64| human_value(umol_l, crate::domain::Censoring::Exact, Marker::Bilirubin);
    // Which limit a value crossed, in plain words: the absolute limit, else twice the
    // baseline above the ULN (`raised` holds without the absolute limit only against a
    // baseline).
    let crossed = |v: &MarkerValue| match baseline {
        _ if above_limit(v) => Some(format!(
            "at or above the REILD limit of {}",
            bilirubin_value(rules.reild_bilirubin_umol_l)
        )),
        Some(b) => Some(format!(
            "at least {} times its baseline of {} (so at least {}) and above {}",
            human_number(rules.reild_baseline_multiple),
            placed(b, window),
            // The exact decimal product: 1.5 x 15.3 is 22.95, not 22.950000000000003.
            bilirubin_value(crate::ingest::units::in_canonical_unit(
                b.value,
                rules.reild_baseline_multiple
            )),
            upper_limit(bilirubin_uln, Marker::Bilirubin)
        )),
        None => None,
    };
    let first_crossed = crossed(value)?;
    let baseline_named = |v: &MarkerValue| !above_limit(v);
    let baseline_note = match baseline {
        Some(_) if baseline_named(value) || highest.is_some_and(baseline_named) => String::new(),
        Some(b) => format!("; baseline {}", placed(b, window)),
        None => "; no baseline bilirubin".into(),
    };
    let highest_note = highest
        .and_then(|h| {
            Some(format!(
                "; the highest since, {} on day {}, is {}",
                show(h),
                window.days_since_index(h.date),
                crossed(h)?
            ))
        })
        .unwrap_or_default();
    // The baseline first: the report's chart draws its REILD limit from it.
    let mut evidence: Vec<&MarkerValue> = baseline.into_iter().collect();
    evidence.push(value);
    evidence.extend(highest);
    Some(Flag {
        code: FlagCode::PossibleReild,
        marker: None,
        severity: Severity::High,
        identified_date: value.date,
        detail: format!(
            "Bilirubin {} on day {} after TARE: {}{}{}; {}. Assess for radioembolization-induced liver disease.",
            show(value),
            window.days_since_index(value.date),
            first_crossed,
            highest_note,
            baseline_note,
            tare_on(window)
        ),
        evidence_observation_ids: ids(&evidence),
    })
}

/// `marker-discordance`: one marker progresses while another responds.
pub fn marker_discordance(courses: &[MarkerCourse], window: Window) -> Option<Flag> {
    let progressing: Vec<&MarkerCourse> = courses
        .iter()
        .filter(|c| c.response == Response::Progression)
        .collect();
    let responding: Vec<&MarkerCourse> = courses
        .iter()
        .filter(|c| matches!(c.response, Response::Complete | Response::Partial))
        .collect();
    if progressing.is_empty() || responding.is_empty() {
        return None;
    }
    let describe = |list: &[&MarkerCourse]| {
        list.iter()
            .map(|c| {
                let latest = c.latest.as_ref().map(|l| {
                    format!(
                        ", latest {} ({})",
                        human_value(l.value, l.censoring, c.marker),
                        date(l.date)
                    )
                });
                format!(
                    "{} ({}{})",
                    c.marker.display_name(),
                    c.response.code(),
                    latest.unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let identified_date = progressing
        .iter()
        .filter_map(|c| c.latest.as_ref().map(|l| l.date))
        .max()?;
    let evidence = progressing
        .iter()
        .chain(responding.iter())
        .filter_map(|c| c.latest.as_ref().map(|l| l.observation_id.clone()))
        .collect();
    Some(Flag {
        code: FlagCode::MarkerDiscordance,
        marker: None,
        severity: Severity::Low,
        identified_date,
        detail: format!(
            "Markers disagree: {} progressing while {} responding; {}. Review with imaging.",
            describe(&progressing),
            describe(&responding),
            tare_on(window)
        ),
        evidence_observation_ids: evidence,
    })
}
