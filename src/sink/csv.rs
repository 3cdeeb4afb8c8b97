//! `markers.csv` and `flags.csv`, columns and formats exactly as docs/rules.md §4.

use super::detected_issue::flag_identifier;
use crate::config::Config;
use crate::domain::{Flag, MarkerCourse, PatientFindings, ValuePoint};
use crate::format::{csv_number, csv_percent, date, exact_number, fixed, GuardedCsv};
use std::io::Write;

pub const MARKERS_HEADER: [&str; 26] = [
    "patient_id",
    "episode_index_date",
    "marker",
    "unit",
    "baseline_value",
    "baseline_date",
    "nadir_value",
    "nadir_date",
    "latest_value",
    "latest_date",
    "n_post",
    "pct_change",
    "rise_from_nadir_pct",
    "uln",
    "response",
    "halflife_days",
    "next_due_date",
    "albi_baseline",
    "albi_latest",
    "flags",
    "reference_nadir_value",
    "reference_nadir_date",
    // Censoring (docs/rules.md §1.4): `<` when the true value is at most the number, `>` at
    // least, empty when exact; the number alone is the value every rule used.
    "baseline_comparator",
    "nadir_comparator",
    "latest_comparator",
    "reference_nadir_comparator",
];

pub const FLAGS_HEADER: [&str; 7] = [
    "patient_id",
    "episode_index_date",
    "flag",
    "marker",
    "severity",
    "detail",
    "detected_issue_identifier",
];

fn value(point: &Option<ValuePoint>) -> (String, String) {
    match point {
        Some(p) => (exact_number(p.value), date(p.date)),
        None => (String::new(), String::new()),
    }
}

/// `<`, `>` or empty: the censoring of a figure's value.
fn comparator(point: &Option<ValuePoint>) -> String {
    point
        .as_ref()
        .map_or("", |p| p.censoring.prefix())
        .to_owned()
}

fn optional(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_default()
}

/// The `flags` cell: the codes of that marker's flags, `;`-joined in alphabetical order.
fn marker_flag_codes(course: &MarkerCourse, flags: &[Flag]) -> String {
    let mut codes: Vec<&str> = flags
        .iter()
        .filter(|f| f.marker == Some(course.marker))
        .map(|f| f.code.code())
        .collect();
    codes.sort_unstable();
    codes.dedup();
    codes.join(";")
}

pub fn write_markers<W: Write>(out: W, patients: &[PatientFindings]) -> csv::Result<()> {
    let mut writer = GuardedCsv::new(out);
    writer.row(MARKERS_HEADER)?;
    for patient in patients {
        for episode in &patient.episodes {
            for course in &episode.courses {
                let (baseline_value, baseline_date) = value(&course.baseline);
                let (nadir_value, nadir_date) = value(&course.nadir);
                let (latest_value, latest_date) = value(&course.latest);
                let (reference_nadir_value, reference_nadir_date) = value(&course.reference_nadir);
                writer.row([
                    patient.patient_id.clone(),
                    date(episode.index_date),
                    course.marker.key().to_owned(),
                    course.marker.canonical_unit().to_owned(),
                    baseline_value,
                    baseline_date,
                    nadir_value,
                    nadir_date,
                    latest_value,
                    latest_date,
                    course.n_post.to_string(),
                    optional(course.pct_change, csv_percent),
                    optional(course.rise_from_nadir_pct, csv_percent),
                    exact_number(course.uln),
                    course.response.code().to_owned(),
                    optional(course.halflife_days, |d| csv_number(d, 1)),
                    date(course.next_due_date),
                    optional(course.albi_baseline, |a| fixed(a, 2)),
                    optional(course.albi_latest, |a| fixed(a, 2)),
                    marker_flag_codes(course, &episode.flags),
                    reference_nadir_value,
                    reference_nadir_date,
                    comparator(&course.baseline),
                    comparator(&course.nadir),
                    comparator(&course.latest),
                    comparator(&course.reference_nadir),
                ])?;
            }
        }
    }
    writer.flush()?;
    Ok(())
}

pub fn write_flags<W: Write>(
    out: W,
    patients: &[PatientFindings],
    config: &Config,
) -> csv::Result<()> {
    let mut writer = GuardedCsv::new(out);
    writer.row(FLAGS_HEADER)?;
    for patient in patients {
        for episode in &patient.episodes {
            for flag in &episode.flags {
                let identifier = if flag.severity >= config.output.min_severity_written {
                    flag_identifier(
                        &patient.patient_id,
                        episode.index_date,
                        flag.code,
                        flag.marker,
                    )
                } else {
                    String::new()
                };
                let index_date = date(episode.index_date);
                writer.row([
                    patient.patient_id.as_str(),
                    &index_date,
                    flag.code.code(),
                    flag.marker.map(|m| m.key()).unwrap_or(""),
                    flag.severity.code(),
                    &flag.detail,
                    &identifier,
                ])?;
            }
        }
    }
    writer.flush()?;
    Ok(())
}
