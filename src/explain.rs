//! `explain`: one patient's course in plain text for a clinician — each value with its date,
//! day since TARE, marker, value and unit, and each finding with the numbers behind it.

use crate::cohort::Scope;
use crate::config::Config;
use crate::domain::{Marker, MarkerCourse, PatientFindings, PatientTimeline};
use crate::evaluate::evaluate_patient;
use crate::format::{csv_number, date, fixed, human_percent, human_value};
use crate::source::{ReadError, Reader};
use crate::workers::Workers;
use chrono::{Duration, NaiveDate};
use std::fmt::Write;

/// Why one patient cannot be explained.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The source holds nothing of this patient: read, but nothing usable (exit 8).
    #[error("{read_from}: read, but nothing usable: no resource refers to patient {patient_id:?} (explain takes a Patient.id of the source)")]
    UnknownPatient {
        read_from: String,
        patient_id: String,
    },
    #[error("the evaluation of patient {patient_id} failed: {message}")]
    EvaluationFailed { patient_id: String, message: String },
}

pub fn explain(
    reader: &Reader,
    patient_id: &str,
    as_of: NaiveDate,
    config: &Config,
    workers: &Workers,
) -> Result<String, ExplainError> {
    let loaded = reader.load(config, as_of, &Scope::EVERYONE, workers)?;
    let timeline = loaded
        .timelines
        .iter()
        .find(|t| t.patient_id == patient_id)
        .ok_or_else(|| ExplainError::UnknownPatient {
            read_from: reader.source().to_string(),
            patient_id: patient_id.to_owned(),
        })?;
    let findings = crate::isolation::isolated(|| evaluate_patient(timeline, config, as_of))
        .map_err(|message| ExplainError::EvaluationFailed {
            patient_id: patient_id.to_owned(),
            message,
        })?;
    Ok(render(timeline, &findings, as_of, config))
}

fn point(p: &Option<crate::domain::ValuePoint>, marker: Marker) -> String {
    match p {
        Some(p) => format!(
            "{} ({})",
            human_value(p.value, p.censoring, marker),
            date(p.date)
        ),
        None => "-".into(),
    }
}

/// What a value is in its marker's course: baseline, nadir, reference nadir, latest.
fn roles(courses: &[MarkerCourse], value: &crate::domain::MarkerValue) -> String {
    let Some(course) = courses.iter().find(|c| c.marker == value.marker) else {
        return String::new();
    };
    let is = |p: &Option<crate::domain::ValuePoint>| {
        p.as_ref()
            .is_some_and(|p| p.observation_id == value.observation_id)
    };
    let mut roles = Vec::new();
    if is(&course.baseline) {
        roles.push("baseline");
    }
    if is(&course.nadir) {
        roles.push("nadir");
    }
    // The figure the rise is measured from; it may be the baseline or the nadir as well.
    if is(&course.reference_nadir) {
        roles.push("reference nadir");
    }
    if is(&course.latest) {
        roles.push("latest");
    }
    roles.join(", ")
}

fn course_line(course: &MarkerCourse) -> String {
    let pct = |v: Option<f64>| v.map_or("-".into(), |p| format!("{}%", human_percent(p)));
    format!(
        "  {}: baseline {}; nadir {}; latest {}; {} post values; change from baseline {}; reference nadir {}; rise from reference nadir {}; ULN {}; response {}; half-life {}; next due {}; ALBI {} -> {}",
        course.marker.display_name(),
        point(&course.baseline, course.marker),
        point(&course.nadir, course.marker),
        point(&course.latest, course.marker),
        course.n_post,
        pct(course.pct_change),
        point(&course.reference_nadir, course.marker),
        pct(course.rise_from_nadir_pct),
        human_value(course.uln, crate::domain::Censoring::Exact, course.marker),
        course.response.code(),
        course.halflife_days.map_or("-".into(), |d| format!("{} days", csv_number(d, 1))),
        date(course.next_due_date),
        course.albi_baseline.map_or("-".into(), |a| fixed(a, 2)),
        course.albi_latest.map_or("-".into(), |a| fixed(a, 2)),
    )
}

pub fn render(
    timeline: &PatientTimeline,
    findings: &PatientFindings,
    as_of: NaiveDate,
    config: &Config,
) -> String {
    let mut out = String::new();
    let birth = timeline
        .birth_date
        .map_or("birth date unknown (age not checked)".into(), |b| {
            format!("born {}", date(b))
        });
    let _ = writeln!(
        out,
        "Patient {} ({birth}; HCC diagnosis on record: {}) as of {}",
        timeline.patient_id,
        if timeline.has_hcc { "yes" } else { "no" },
        date(as_of)
    );
    let tares: Vec<String> = timeline
        .procedures
        .iter()
        .map(|p| format!("{} ({})", date(p.date), p.procedure_id))
        .collect();
    let _ = writeln!(
        out,
        "TARE procedures: {}",
        if tares.is_empty() {
            "none".into()
        } else {
            tares.join(", ")
        }
    );
    if let Some(reason) = findings.left_out {
        let _ = writeln!(out, "Not evaluated: {}", reason.key().replace('_', " "));
        return out;
    }
    for (n, episode) in findings.episodes.iter().enumerate() {
        let _ = writeln!(
            out,
            "\nEpisode {}: TARE on {} (procedures {}){}; post window to {}",
            n + 1,
            date(episode.index_date),
            episode.procedure_ids.join(", "),
            episode
                .age_years
                .map_or(String::new(), |a| format!(", age {a}")),
            date(episode.post_window_last_date)
        );
        let _ = writeln!(
            out,
            "  {:<10}  {:>5}  {:<9}  {:>18}  {:<24}  observation",
            "date", "day", "marker", "value", "role"
        );
        let from = episode.index_date - Duration::days(config.episodes.baseline_days);
        let mut values: Vec<_> = timeline
            .values
            .iter()
            .filter(|v| v.date >= from && v.date <= episode.post_window_last_date)
            .collect();
        values.sort_by_key(|v| (v.instant_ms, v.marker));
        for v in values {
            let _ = writeln!(
                out,
                "  {:<10}  {:>5}  {:<9}  {:>18}  {:<24}  {}",
                date(v.date),
                (v.date - episode.index_date).num_days(),
                v.marker.display_name(),
                human_value(v.value, v.censoring, v.marker),
                roles(&episode.courses, v),
                v.observation_id
            );
        }
        let _ = writeln!(out, "Courses:");
        for course in &episode.courses {
            let _ = writeln!(out, "{}", course_line(course));
        }
        if episode.flags.is_empty() {
            let _ = writeln!(out, "Flags: none");
        } else {
            let _ = writeln!(out, "Flags:");
            for flag in &episode.flags {
                let written = if flag.severity >= config.output.min_severity_written {
                    "DetectedIssue"
                } else {
                    "report only"
                };
                let _ = writeln!(
                    out,
                    "  - {} [{}{}; {}] {}",
                    flag.code.code(),
                    flag.severity.code(),
                    flag.marker
                        .map_or(String::new(), |m| format!(", {}", m.display_name())),
                    written,
                    flag.detail
                );
            }
        }
    }
    out
}
