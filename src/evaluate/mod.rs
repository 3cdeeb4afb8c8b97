//! The pure evaluation core (docs/rules.md §1 episodes and eligibility, §2, §3). It takes one
//! patient's timeline, the config and the as-of date and returns findings: no I/O, no clock.

pub mod compare;
pub mod course;
pub mod flags;

use crate::config::Config;
use crate::domain::{
    EpisodeFindings, Flag, LeftOutReason, Marker, MarkerCourse, MarkerValue, PatientFindings,
    PatientTimeline, TareProcedure, ValuePoint,
};
use chrono::{Datelike, Duration, NaiveDate};
use course::{EpisodeSeries, Window};

/// TAREs grouped: a later TARE within `merge_days` of the episode's index date joins it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Episode {
    pub index_date: NaiveDate,
    pub procedure_ids: Vec<String>,
}

/// `procedures` must be sorted by date.
pub fn episodes(procedures: &[TareProcedure], merge_days: i64) -> Vec<Episode> {
    let mut episodes: Vec<Episode> = Vec::new();
    for procedure in procedures {
        match episodes.last_mut() {
            Some(current) if (procedure.date - current.index_date).num_days() <= merge_days => {
                current.procedure_ids.push(procedure.procedure_id.clone())
            }
            _ => episodes.push(Episode {
                index_date: procedure.date,
                procedure_ids: vec![procedure.procedure_id.clone()],
            }),
        }
    }
    episodes
}

/// Whole years from `birth` to `on`.
pub fn age_years(birth: NaiveDate, on: NaiveDate) -> u32 {
    let mut years = on.year() - birth.year();
    if (on.month(), on.day()) < (birth.month(), birth.day()) {
        years -= 1;
    }
    years.max(0) as u32
}

/// ALBI = 0.66 x log10(bilirubin umol/L) - 0.085 x albumin g/L, from the albumin and the
/// bilirubin value each nearest in date to `on` (at most `max_days` away, the earlier on a tie).
pub fn albi(
    albumin: &[MarkerValue],
    bilirubin: &[MarkerValue],
    on: NaiveDate,
    max_days: i64,
) -> Option<f64> {
    let nearest = |series: &[MarkerValue]| {
        series
            .iter()
            .map(|v| ((v.date - on).num_days().abs(), v))
            .filter(|(distance, _)| *distance <= max_days)
            // Series are in time order: keeping the first of equal distances keeps the earlier.
            .fold(
                None,
                |best: Option<(i64, &MarkerValue)>, (d, v)| match best {
                    Some((bd, _)) if bd <= d => best,
                    _ => Some((d, v)),
                },
            )
            .map(|(_, v)| v.value)
    };
    let (albumin, bilirubin) = (nearest(albumin)?, nearest(bilirubin)?);
    (bilirubin > 0.0).then(|| 0.66 * bilirubin.log10() - 0.085 * albumin)
}

fn cut_at(series: &[MarkerValue], as_of: NaiveDate) -> &[MarkerValue] {
    &series[..series.partition_point(|v| v.date <= as_of)]
}

/// Evaluates one patient, isolated: a failure (a defect, an input nobody foresaw) leaves that
/// patient out, counted with its message, and never stops the others.
pub fn evaluate_isolated(
    timeline: &PatientTimeline,
    config: &Config,
    as_of: NaiveDate,
) -> PatientFindings {
    crate::isolation::isolated(|| evaluate_patient(timeline, config, as_of))
        .unwrap_or_else(|message| PatientFindings::failed(&timeline.patient_id, message))
}

/// Evaluates every timeline, each isolated, on the current rayon pool; the order of the
/// result is the order of the timelines.
pub fn evaluate_cohort(
    timelines: &[PatientTimeline],
    config: &Config,
    as_of: NaiveDate,
) -> Vec<PatientFindings> {
    use rayon::prelude::*;
    timelines
        .par_iter()
        .map(|t| evaluate_isolated(t, config, as_of))
        .collect()
}

/// Evaluates one patient as of `as_of`.
pub fn evaluate_patient(
    timeline: &PatientTimeline,
    config: &Config,
    as_of: NaiveDate,
) -> PatientFindings {
    let mut findings = PatientFindings {
        patient_id: timeline.patient_id.clone(),
        left_out: None,
        birth_date_unknown: timeline.birth_date.is_none(),
        episodes: Vec::new(),
        episodes_under_minimum_age: 0,
        episodes_after_as_of: 0,
        evaluation_error: None,
    };
    if !timeline.has_patient_resource {
        findings.left_out = Some(LeftOutReason::NoPatientResource);
        return findings;
    }
    if timeline.procedures.is_empty() {
        findings.left_out = Some(LeftOutReason::NoTareProcedure);
        return findings;
    }
    let all_episodes = episodes(&timeline.procedures, config.episodes.merge_days);
    let (current, future): (Vec<Episode>, Vec<Episode>) = all_episodes
        .into_iter()
        .partition(|e| e.index_date <= as_of);
    findings.episodes_after_as_of = future.len();
    if current.is_empty() {
        findings.left_out = Some(LeftOutReason::AllEpisodesAfterAsOf);
        return findings;
    }
    if config.eligibility.require_hcc && !timeline.has_hcc {
        findings.left_out = Some(LeftOutReason::NoHccCondition);
        return findings;
    }
    let albumin = cut_at(timeline.series(Marker::Albumin), as_of);
    let bilirubin = cut_at(timeline.series(Marker::Bilirubin), as_of);
    for (i, episode) in current.iter().enumerate() {
        let age = timeline
            .birth_date
            .map(|b| age_years(b, episode.index_date));
        if age.is_some_and(|a| a < config.eligibility.min_age_years) {
            findings.episodes_under_minimum_age += 1;
            continue;
        }
        // The post window ends the day before the next episode (future ones included: a TARE
        // after as-of lies past as-of anyway) and never past as-of.
        let next_index = current.get(i + 1).map(|e| e.index_date);
        let post_last_date = next_index
            .map(|n| n - Duration::days(1))
            .map_or(as_of, |d| d.min(as_of));
        let window = Window {
            index_date: episode.index_date,
            post_last_date,
        };
        let is_latest_episode = i + 1 == current.len();
        let mut episode_findings = evaluate_episode(
            timeline,
            episode,
            window,
            is_latest_episode,
            as_of,
            config,
            albumin,
            bilirubin,
        );
        episode_findings.age_years = age;
        findings.episodes.push(episode_findings);
    }
    if findings.episodes.is_empty() {
        findings.left_out = Some(LeftOutReason::UnderMinimumAge);
    }
    findings
}

#[allow(clippy::too_many_arguments)]
fn evaluate_episode(
    timeline: &PatientTimeline,
    episode: &Episode,
    window: Window,
    is_latest_episode: bool,
    as_of: NaiveDate,
    config: &Config,
    albumin: &[MarkerValue],
    bilirubin: &[MarkerValue],
) -> EpisodeFindings {
    let mut courses = Vec::new();
    let mut flags: Vec<Flag> = Vec::new();
    for marker in Marker::TUMOR {
        let series = cut_at(timeline.series(marker), as_of);
        let episode_series =
            EpisodeSeries::new(marker, series, window, config.episodes.baseline_days);
        if episode_series.is_empty() {
            continue;
        }
        let uln = course::uln(&episode_series, config);
        let rise = course::rise(&episode_series, uln, config);
        let response = course::response(&episode_series, uln, rise.as_ref(), config);
        let baseline = episode_series.baseline;
        let latest = episode_series.latest();
        let reference_nadir = episode_series.reference_nadir();
        let albi_on = |v: Option<&MarkerValue>| {
            v.and_then(|v| albi(albumin, bilirubin, v.date, config.rules.albi_max_days))
        };
        let marker_course = MarkerCourse {
            marker,
            baseline: baseline.map(ValuePoint::from),
            nadir: episode_series.nadir().map(ValuePoint::from),
            latest: latest.map(ValuePoint::from),
            reference_nadir: reference_nadir.map(ValuePoint::from),
            n_post: episode_series.post.len(),
            pct_change: baseline
                .zip(latest)
                .and_then(|(b, l)| course::percent_change(b.value, l.value)),
            rise_from_nadir_pct: reference_nadir
                .zip(latest)
                .and_then(|(n, l)| course::percent_change(n.value, l.value)),
            uln,
            response,
            halflife_days: course::halflife_days(&episode_series, window),
            next_due_date: course::next_due_date(&episode_series, window, config),
            albi_baseline: albi_on(baseline),
            albi_latest: albi_on(latest),
        };
        if let Some(rise) = &rise {
            flags.push(flags::marker_rise(rise, uln, window));
        }
        flags.extend(flags::marker_plateau(&episode_series, window, config));
        flags.extend(flags::no_response(&episode_series, uln, window, config));
        flags.extend(flags::incomplete_response(
            &episode_series,
            &marker_course,
            window,
        ));
        if is_latest_episode {
            flags.extend(flags::surveillance_overdue(
                &episode_series,
                &marker_course,
                window,
                as_of,
                config,
            ));
        }
        courses.push(marker_course);
    }
    let bilirubin_series = EpisodeSeries::new(
        Marker::Bilirubin,
        bilirubin,
        window,
        config.episodes.baseline_days,
    );
    flags.extend(flags::possible_reild(&bilirubin_series, window, config));
    flags.extend(flags::marker_discordance(&courses, window));
    flags.sort_by_key(|a| (a.code, a.marker));
    EpisodeFindings {
        index_date: episode.index_date,
        procedure_ids: episode.procedure_ids.clone(),
        post_window_last_date: window.post_last_date,
        age_years: None,
        courses,
        flags,
    }
}
