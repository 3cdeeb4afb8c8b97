//! `report`: the audit report for hepatology teams. One self-contained HTML file (cohort
//! summary, flagged patients, a marker chart per flagged patient, the flag trail, data quality)
//! and its CSV twins, from files or from the server, as of a date and for a date range.

mod deidentify;
mod html;
mod programme;
mod trail;

use crate::cohort::Scope;
use crate::config::Config;
use crate::domain::{Censoring, Flag, Marker, PatientFindings, PatientTimeline, Severity};
use crate::evaluate::evaluate_isolated;
use crate::fhir::client::FhirError;
use crate::format::GuardedCsv;
use crate::ingest::DataQuality;
use crate::output::OutputError;
use crate::sink::summary::{FlagCounts, PatientCounts, RunSummary};
use crate::source::{ReadError, Reader, Source};
use crate::workers::Workers;
use chrono::NaiveDate;
use rayon::prelude::*;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

pub use deidentify::{Pseudonyms, SecretError};
pub use programme::Programme;
pub use trail::TrailEntry;

#[derive(Debug, Clone)]
pub struct ReportOptions {
    pub source: Source,
    pub as_of: NaiveDate,
    /// Flags and trail entries identified from this date (inclusive) ...
    pub from: Option<NaiveDate>,
    /// ... up to this one (inclusive).
    pub to: Option<NaiveDate>,
    /// Where the report is published.
    pub out_dir: PathBuf,
    /// The report run's id: its run folder's name, shown in the page and its manifest.
    pub run_id: String,
    /// `--deidentify`: names and identifiers replaced by keyed pseudonyms.
    pub deidentified: bool,
}

impl ReportOptions {
    fn in_range(&self, date: NaiveDate) -> bool {
        self.from.is_none_or(|from| date >= from) && self.to.is_none_or(|to| date <= to)
    }
}

/// The day a flag counts on in a report's range and its flags per month: the day its value
/// came (`identified_date`), except for `surveillance-overdue`, whose value is the last one
/// before the gap: it counts on the first day it was overdue (the next due date plus
/// `[rules] overdue_grace_days`, plus one), so a range finds the patients who fell overdue in it.
pub(crate) fn flag_day(
    flag: &Flag,
    episode: &crate::domain::EpisodeFindings,
    config: &Config,
) -> NaiveDate {
    if flag.code != crate::domain::FlagCode::SurveillanceOverdue {
        return flag.identified_date;
    }
    episode
        .courses
        .iter()
        .find(|c| Some(c.marker) == flag.marker)
        .map(|c| crate::evaluate::flags::overdue_from(c, config))
        .unwrap_or(flag.identified_date)
}

/// One point of a chart: days since the TARE, the value, and how to draw it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartPoint {
    pub day: i64,
    pub value: f64,
    /// `point::*` bits: censored `<` or `>`, evidence of a flag, baseline, nadir. The page's
    /// script reads the same bits.
    pub bits: u8,
    pub observation: String,
    pub note: Option<String>,
}

/// The bits of `ChartPoint::bits`.
pub mod point {
    pub const BELOW: u8 = 1;
    pub const ABOVE: u8 = 2;
    pub const FLAGGED: u8 = 4;
    pub const BASELINE: u8 = 8;
    pub const NADIR: u8 = 16;
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChartSeries {
    pub marker: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub uln: f64,
    /// Bilirubin of a possible REILD: `[rules] reild_baseline_multiple` x its baseline, the
    /// other limit the flag's value is held against (drawn beside the absolute one).
    pub baseline_limit: Option<f64>,
    pub points: Vec<ChartPoint>,
}

/// A tumor-marker chart: values against days since the index TARE of the latest episode.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub index_date: String,
    /// Every TARE, in days since the index date (earlier episodes are negative).
    pub tares: Vec<i64>,
    pub series: Vec<ChartSeries>,
}

/// The latest value of one series in the patient's latest episode, as the worklist shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestValue {
    pub marker: Marker,
    pub value: f64,
    pub censoring: Censoring,
    pub date: NaiveDate,
    /// The series' response (tumor markers only).
    pub response: Option<crate::domain::Response>,
}

/// Where the patient's flags stand on the server: the DetectedIssue's status today and what a
/// clinician added (`None` when the report read files).
#[derive(Debug, Clone, PartialEq)]
pub struct Review {
    pub status: String,
    pub note: Option<String>,
}

#[derive(Debug, Clone)]
pub struct FlaggedPatient {
    pub patient_id: String,
    pub name: Option<String>,
    pub mrn: Option<String>,
    pub birth_date: Option<NaiveDate>,
    /// Latest values of the latest episode: tumor markers, then albumin and bilirubin.
    pub latest_values: Vec<LatestValue>,
    pub review: Option<Review>,
    pub worst: Severity,
    pub latest_identified: NaiveDate,
    /// (episode index date, flag), most severe and most recent first.
    pub flags: Vec<(NaiveDate, Flag)>,
    pub chart: Chart,
}

pub struct Report {
    pub options: ReportOptions,
    pub generated_at: String,
    pub patients: PatientCounts,
    pub responses: BTreeMap<&'static str, BTreeMap<&'static str, usize>>,
    pub flags: FlagCounts,
    pub quality: DataQuality,
    pub flagged: Vec<FlaggedPatient>,
    /// From the server's DetectedIssues; `None` on a folder source.
    pub trail: Option<Vec<TrailEntry>>,
    pub programme: Programme,
}

const CHART_MARKERS: [Marker; 4] = [Marker::Pivka2, Marker::Dcp, Marker::Afp, Marker::AfpL3];

/// The bilirubin baseline a possible REILD flag of `episode` was held against: the first of
/// its evidence when dated before the TARE (`evaluate::flags::possible_reild` names the
/// baseline first; its other values are after the TARE).
fn reild_baseline(
    episode: &crate::domain::EpisodeFindings,
    timeline: &PatientTimeline,
) -> Option<f64> {
    let flag = episode
        .flags
        .iter()
        .find(|f| f.code == crate::domain::FlagCode::PossibleReild)?;
    let first = flag.evidence_observation_ids.first()?;
    timeline
        .series(Marker::Bilirubin)
        .iter()
        .find(|v| v.observation_id == *first)
        .filter(|v| v.date <= episode.index_date)
        .map(|v| v.value)
}

/// The chart of one patient, around the latest episode of their findings.
pub fn chart(
    timeline: &PatientTimeline,
    findings: &PatientFindings,
    as_of: NaiveDate,
    config: &Config,
) -> Option<Chart> {
    let episode = findings.episodes.last()?;
    let origin = episode.index_date;
    let evidence: HashSet<&str> = findings
        .episodes
        .iter()
        .flat_map(|e| &e.flags)
        .flat_map(|f| f.evidence_observation_ids.iter().map(|id| id.as_ref()))
        .collect();
    // The values behind the flags and figures: bilirubin for possible REILD, albumin and
    // bilirubin for ALBI.
    let reild = episode
        .flags
        .iter()
        .any(|f| f.code == crate::domain::FlagCode::PossibleReild);
    let albi = episode
        .courses
        .iter()
        .any(|c| c.albi_baseline.is_some() || c.albi_latest.is_some());
    let liver = [(albi, Marker::Albumin), (reild || albi, Marker::Bilirubin)]
        .into_iter()
        .filter_map(|(shown, marker)| shown.then_some(marker));
    let mut series = Vec::new();
    for marker in CHART_MARKERS.into_iter().chain(liver) {
        let values: Vec<_> = timeline
            .series(marker)
            .iter()
            .filter(|v| v.date <= as_of)
            .collect();
        if values.is_empty() {
            continue;
        }
        let course = episode.courses.iter().find(|c| c.marker == marker);
        let id_of = |p: &Option<crate::domain::ValuePoint>| {
            p.as_ref().map(|p| p.observation_id.to_string())
        };
        let baseline = course.and_then(|c| id_of(&c.baseline));
        let nadir = course.and_then(|c| id_of(&c.nadir));
        let uln = course
            .map(|c| c.uln)
            .or(config.markers.get(marker).uln)
            .unwrap_or(0.0);
        let points = values
            .into_iter()
            .map(|v| {
                let id: &str = v.observation_id.as_ref();
                let bit = |holds: bool, bit: u8| if holds { bit } else { 0 };
                ChartPoint {
                    day: (v.date - origin).num_days(),
                    value: v.value,
                    bits: bit(v.censoring == Censoring::Low, point::BELOW)
                        | bit(v.censoring == Censoring::High, point::ABOVE)
                        | bit(evidence.contains(id), point::FLAGGED)
                        | bit(baseline.as_deref() == Some(id), point::BASELINE)
                        | bit(nadir.as_deref() == Some(id), point::NADIR),
                    observation: id.to_owned(),
                    note: v.note.as_deref().cloned(),
                }
            })
            .collect();
        let baseline_limit = (marker == Marker::Bilirubin)
            .then(|| reild_baseline(episode, timeline))
            .flatten()
            .map(|b| {
                crate::ingest::units::in_canonical_unit(b, config.rules.reild_baseline_multiple)
            });
        series.push(ChartSeries {
            marker: marker.key(),
            label: marker.display_name(),
            unit: marker.canonical_unit(),
            uln,
            baseline_limit,
            points,
        });
    }
    Some(Chart {
        index_date: crate::format::date(origin),
        tares: timeline
            .procedures
            .iter()
            .filter(|p| p.date <= as_of)
            .map(|p| (p.date - origin).num_days())
            .collect(),
        series,
    })
}

/// Why the report could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The flag trail could not be read from the server.
    #[error(transparent)]
    Trail(#[from] FhirError),
}

/// Builds the report's content: reads the source, evaluates everyone, keeps the flagged ones
/// (flags identified in the range) with their charts, and the trail from the server.
pub fn build(
    options: &ReportOptions,
    config: &Config,
    reader: &Reader,
    workers: &Workers,
) -> Result<Report, ReportError> {
    let generated_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let loaded = reader.load(config, options.as_of, &Scope::EVERYONE, workers)?;
    let as_of = options.as_of;
    let evaluated: Vec<(PatientFindings, Option<FlaggedPatient>, Programme)> =
        workers.pool.install(|| {
            loaded
                .timelines
                .into_par_iter()
                .map(|timeline| {
                    let findings = evaluate_isolated(&timeline, config, as_of);
                    let flagged = flagged_patient(&timeline, &findings, options, config);
                    let programme = Programme::of_patient(&timeline, &findings, options, config);
                    (findings, flagged, programme)
                })
                .collect()
        });
    let mut programme = Programme::default();
    let mut findings = Vec::with_capacity(evaluated.len());
    let mut flagged = Vec::new();
    for (f, p, share) in evaluated {
        findings.push(f);
        flagged.push(p);
        programme.merge(share);
    }
    programme.sort();
    let mut flagged: Vec<FlaggedPatient> = flagged.into_iter().flatten().collect();
    // Most severe first, then the most recent.
    flagged.sort_by(|a, b| {
        (b.worst, b.latest_identified, &a.patient_id).cmp(&(
            a.worst,
            a.latest_identified,
            &b.patient_id,
        ))
    });
    let (patients, responses, mut flags) = RunSummary::count(&findings, config);
    if options.from.is_some() || options.to.is_some() {
        // The report's flag figures are the range's, as its header says.
        flags = flags_in_range(&findings, options, config);
    }
    // The flag trail comes from the server the report read, with the same client (and token).
    let trail = match reader.client() {
        None => None,
        Some(client) => Some(trail::fetch(client, options, config, &workers.runtime)?),
    };
    if let Some(trail) = &trail {
        // The most recent DetectedIssue of each patient (the trail is most recent first).
        let mut latest: std::collections::HashMap<&str, &TrailEntry> = Default::default();
        for entry in trail {
            latest.entry(entry.patient_id.as_str()).or_insert(entry);
        }
        for p in &mut flagged {
            p.review = Some(match latest.get(p.patient_id.as_str()) {
                Some(entry) => Review {
                    status: entry.status_today().to_owned(),
                    note: entry.annotation.clone(),
                },
                None => Review {
                    status: "not on the server".into(),
                    note: None,
                },
            });
        }
    }
    Ok(Report {
        options: options.clone(),
        generated_at,
        patients,
        responses,
        flags,
        quality: loaded.quality,
        flagged,
        trail,
        programme,
    })
}

/// The flags identified in the report's range (on their `flag_day`), counted as a run counts
/// them.
fn flags_in_range(
    findings: &[PatientFindings],
    options: &ReportOptions,
    config: &Config,
) -> FlagCounts {
    let mut flags = FlagCounts::default();
    let in_range = findings.iter().flat_map(|p| &p.episodes).flat_map(|e| {
        e.flags
            .iter()
            .filter(move |f| options.in_range(flag_day(f, e, config)))
    });
    for flag in in_range {
        flags.add(flag, config);
    }
    flags
}

fn flagged_patient(
    timeline: &PatientTimeline,
    findings: &PatientFindings,
    options: &ReportOptions,
    config: &Config,
) -> Option<FlaggedPatient> {
    let mut flags: Vec<(NaiveDate, Flag)> = findings
        .episodes
        .iter()
        .flat_map(|e| {
            e.flags
                .iter()
                .filter(|f| options.in_range(flag_day(f, e, config)))
                .map(move |f| (e.index_date, f.clone()))
        })
        .collect();
    if flags.is_empty() {
        return None;
    }
    flags.sort_by(|(_, a), (_, b)| {
        (b.severity, b.identified_date, a.code.code()).cmp(&(
            a.severity,
            a.identified_date,
            b.code.code(),
        ))
    });
    let episode = findings.episodes.last()?;
    let mut latest_values: Vec<LatestValue> = episode
        .courses
        .iter()
        .filter_map(|c| {
            let latest = c.latest.as_ref()?;
            Some(LatestValue {
                marker: c.marker,
                value: latest.value,
                censoring: latest.censoring,
                date: latest.date,
                response: Some(c.response),
            })
        })
        .collect();
    for marker in [Marker::Albumin, Marker::Bilirubin] {
        if let Some(v) = timeline
            .series(marker)
            .iter()
            .rfind(|v| v.date <= options.as_of && v.date > episode.index_date)
        {
            latest_values.push(LatestValue {
                marker,
                value: v.value,
                censoring: v.censoring,
                date: v.date,
                response: None,
            });
        }
    }
    Some(FlaggedPatient {
        patient_id: findings.patient_id.clone(),
        name: timeline.name.clone(),
        mrn: timeline.mrn.clone(),
        birth_date: timeline.birth_date,
        latest_values,
        review: None,
        worst: flags[0].1.severity,
        latest_identified: flags.iter().map(|(_, f)| f.identified_date).max()?,
        chart: chart(timeline, findings, options.as_of, config)?,
        flags,
    })
}

/// The names the report writes into its output folder.
pub const OUTPUT_NAMES: [&str; 10] = [
    "report.html",
    "report-cohort.csv",
    "report-flagged-patients.csv",
    "report-flag-trail.csv",
    "report-data-quality.csv",
    "report-waterfall.csv",
    "report-surveillance.csv",
    "report-nadir-days.csv",
    "report-flags-per-month.csv",
    "report-manifest.json",
];

/// `report-manifest.json`: the report run's id and every other file of its set, with its size
/// and hash.
#[derive(serde::Serialize)]
struct Manifest<'a> {
    run_id: &'a str,
    generated_at: &'a str,
    /// Names and identifiers pseudonymised (`--deidentify`).
    deidentified: bool,
    files: Vec<crate::output::OutputFile>,
}

/// Writes `report.html`, its CSV twins and the manifest into the run folder of `set`
/// (published by the caller); returns the names written.
pub fn write(
    report: &Report,
    config: &Config,
    set: &crate::output::OutputSet,
) -> Result<Vec<String>, OutputError> {
    let dir = set.folder();
    // On a terminal: the bytes written, counted a mebibyte at a time.
    let progress = crate::progress::Progress::bytes_written("writing");
    crate::output::write_atomically(&dir.join("report.html"), |w| {
        html::write(&mut progress.counting(w), report, config)
    })?;
    for (name, fill) in [
        ("report-cohort.csv", cohort_csv as CsvFiller),
        ("report-flagged-patients.csv", flagged_csv),
        ("report-flag-trail.csv", trail_csv),
        ("report-data-quality.csv", quality_csv),
        ("report-waterfall.csv", waterfall_csv),
        ("report-surveillance.csv", surveillance_csv),
        ("report-nadir-days.csv", nadir_days_csv),
        ("report-flags-per-month.csv", flags_per_month_csv),
    ] {
        crate::output::write_atomically(&dir.join(name), |w| {
            let mut counted = progress.counting(w);
            let mut writer = GuardedCsv::new(&mut counted as &mut dyn std::io::Write);
            fill(&mut writer, report).map_err(std::io::Error::other)?;
            writer.flush()
        })?;
    }
    progress.finish();
    let manifest = Manifest {
        run_id: &report.options.run_id,
        generated_at: &report.generated_at,
        deidentified: report.options.deidentified,
        files: set.files(),
    };
    crate::output::write_atomically(&dir.join("report-manifest.json"), |w| {
        serde_json::to_writer_pretty(&mut *w, &manifest)?;
        w.write_all(b"\n")
    })?;
    Ok(OUTPUT_NAMES.iter().map(|n| (*n).to_owned()).collect())
}

type CsvWriter<'a> = GuardedCsv<&'a mut dyn std::io::Write>;
type CsvFiller = fn(&mut CsvWriter<'_>, &Report) -> csv::Result<()>;

fn cohort_csv(w: &mut CsvWriter<'_>, r: &Report) -> csv::Result<()> {
    w.row(["section", "item", "detail", "count"])?;
    let p = &r.patients;
    for (item, count) in [
        ("seen", p.seen),
        ("evaluated", p.evaluated),
        ("birth_date_unknown", p.birth_date_unknown),
        ("episodes_evaluated", p.episodes_evaluated),
    ] {
        w.row(["patients", item, "", &count.to_string()])?;
    }
    for (reason, count) in &p.left_out {
        w.row(["patients_left_out", reason, "", &count.to_string()])?;
    }
    for (marker, by_response) in &r.responses {
        for (response, count) in by_response {
            w.row(["responses", marker, response, &count.to_string()])?;
        }
    }
    for (code, by_severity) in &r.flags.by_code {
        for (severity, count) in by_severity {
            w.row(["flags", code, severity, &count.to_string()])?;
        }
    }
    Ok(())
}

fn flagged_csv(w: &mut CsvWriter<'_>, r: &Report) -> csv::Result<()> {
    w.row([
        "patient_id",
        "name",
        "worst_severity",
        "latest_identified",
        "flags",
        "mrn",
        "birth_date",
        "review_status",
        "review_note",
    ])?;
    for p in &r.flagged {
        let codes: Vec<String> = p
            .flags
            .iter()
            .map(|(_, f)| match f.marker {
                Some(m) => format!("{} ({})", f.code.code(), m.key()),
                None => f.code.code().to_owned(),
            })
            .collect();
        // As the page says: a flag no one has marked on the server is "not reviewed".
        let status: &str = p.review.as_ref().map_or("not reviewed", |r| &r.status);
        w.row([
            &p.patient_id,
            p.name.as_deref().unwrap_or(""),
            p.worst.code(),
            &crate::format::date(p.latest_identified),
            &codes.join("; "),
            p.mrn.as_deref().unwrap_or(""),
            &p.birth_date.map(crate::format::date).unwrap_or_default(),
            status,
            p.review
                .as_ref()
                .and_then(|r| r.note.as_deref())
                .unwrap_or(""),
        ])?;
    }
    Ok(())
}

fn trail_csv(w: &mut CsvWriter<'_>, r: &Report) -> csv::Result<()> {
    w.row([
        "identifier",
        "patient_id",
        "flag",
        "severity",
        "status",
        "identified",
        "last_updated",
        "annotation",
        "annotated_on",
        "detail",
        "evidence",
    ])?;
    for t in r.trail.iter().flatten() {
        w.row([
            &t.identifier,
            &t.patient_id,
            &t.code,
            &t.severity,
            t.status_today(),
            &t.identified,
            &t.last_updated,
            t.annotation.as_deref().unwrap_or(""),
            t.annotated_on.as_deref().unwrap_or(""),
            &t.detail,
            &t.evidence.join(" "),
        ])?;
    }
    Ok(())
}

fn quality_csv(w: &mut CsvWriter<'_>, r: &Report) -> csv::Result<()> {
    w.row(["resource_type", "reason", "count", "examples"])?;
    for (kind, counts) in &r.quality.by_type {
        w.row([*kind, "read", &counts.read.to_string(), ""])?;
        w.row([*kind, "accepted", &counts.accepted.to_string(), ""])?;
        for (reason, count) in &counts.left_out {
            let examples: Vec<&str> = count.examples.iter().map(|e| e.resource.as_str()).collect();
            w.row([
                *kind,
                *reason,
                &count.count.to_string(),
                &examples.join(" "),
            ])?;
        }
    }
    Ok(())
}

fn waterfall_csv(w: &mut CsvWriter<'_>, r: &Report) -> csv::Result<()> {
    w.row([
        "patient_id",
        "marker",
        "index_date",
        "baseline",
        "nadir",
        "best_pct_change",
        "response",
        "baseline_comparator",
        "nadir_comparator",
    ])?;
    for bar in &r.programme.waterfall {
        w.row([
            bar.patient_id.as_str(),
            bar.marker.key(),
            &crate::format::date(bar.index_date),
            &crate::format::exact_number(bar.baseline),
            &crate::format::exact_number(bar.nadir),
            &crate::format::csv_percent(bar.best_pct_change),
            bar.response.code(),
            bar.baseline_censoring.prefix(),
            bar.nadir_censoring.prefix(),
        ])?;
    }
    Ok(())
}

fn surveillance_csv(w: &mut CsvWriter<'_>, r: &Report) -> csv::Result<()> {
    w.row([
        "from_day",
        "to_day",
        "patients_due",
        "patients_with_result",
        "share_pct",
    ])?;
    for window in &r.programme.surveillance {
        let share = match window.due {
            0 => String::new(),
            due => crate::format::csv_percent(window.with_result as f64 / due as f64 * 100.0),
        };
        w.row([
            window.from_day.to_string(),
            window.to_day.to_string(),
            window.due.to_string(),
            window.with_result.to_string(),
            share,
        ])?;
    }
    Ok(())
}

fn nadir_days_csv(w: &mut CsvWriter<'_>, r: &Report) -> csv::Result<()> {
    w.row(["marker", "from_day", "to_day", "series"])?;
    for ((marker, from), count) in r.programme.nadir_histogram() {
        w.row([
            marker.key().to_owned(),
            from.to_string(),
            (from + programme::NADIR_BIN_DAYS - 1).to_string(),
            count.to_string(),
        ])?;
    }
    Ok(())
}

/// Per month of the range, its flags by code and severity; a month without a flag is one row
/// with a count of 0, so a gap in the series reads as none, not as a month missing.
fn flags_per_month_csv(w: &mut CsvWriter<'_>, r: &Report) -> csv::Result<()> {
    w.row(["month", "flag", "severity", "count"])?;
    let counts = &r.programme.flags_per_month;
    for month in r.programme.flag_months(&r.options) {
        let mut any = false;
        for ((_, code, severity), count) in counts
            .range((month.clone(), "", "")..)
            .take_while(|((m, _, _), _)| *m == month)
        {
            any = true;
            w.row([month.as_str(), code, severity, &count.to_string()])?;
        }
        if !any {
            w.row([month.as_str(), "", "", "0"])?;
        }
    }
    Ok(())
}
