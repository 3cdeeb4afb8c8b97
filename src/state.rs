//! The state of nightly incremental runs: the watermark (when the last fully successful run
//! started) and the known cohort (every patient with a TARE, and until when their findings can
//! change with no new data). Written atomically, and only after a run that fully succeeded,
//! so a killed or failed run is simply done again.

use crate::config::Config;
use crate::domain::{PatientFindings, PatientTimeline};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub format: u32,
    /// The FHIR base URL the state belongs to; another server means a full run.
    pub source: String,
    /// `I/N` of a sharded run; each shard keeps its own state.
    pub shard: Option<String>,
    /// When the last fully successful run started (RFC 3339, UTC).
    pub watermark: DateTime<Utc>,
    pub as_of: NaiveDate,
    /// A hash of the configuration that decides the findings (codes, rules, limits, outputs):
    /// another one means a full run, since every finding may change.
    pub config_fingerprint: String,
    /// The known cohort: every patient with a TARE -> the first as-of date on which their
    /// findings change with no new data (`null`: never).
    pub patients: BTreeMap<String, Option<NaiveDate>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read the state file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the state file {} is not a state this job wrote", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the state file {} has format {found} (this version reads {FORMAT})", path.display())]
    Format { path: PathBuf, found: u32 },
}

/// The state file of this shard: `state.json` or `state.shard-0-of-4.json`.
pub fn shard_path(path: &Path, shard_suffix: Option<&str>) -> PathBuf {
    match shard_suffix {
        None => path.to_owned(),
        Some(suffix) => {
            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
            let name = match path.extension() {
                Some(ext) => format!("{stem}{suffix}.{}", ext.to_string_lossy()),
                None => format!("{stem}{suffix}"),
            };
            path.with_file_name(name)
        }
    }
}

impl RunState {
    /// The state, or `None` when there is no file yet (the first run is a full run).
    pub fn read(path: &Path) -> Result<Option<RunState>, StateError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let state: RunState = serde_json::from_str(&text).map_err(|source| StateError::Json {
            path: path.to_owned(),
            source,
        })?;
        if state.format != FORMAT {
            return Err(StateError::Format {
                path: path.to_owned(),
                found: state.format,
            });
        }
        Ok(Some(state))
    }

    pub fn new(
        source: String,
        shard: Option<String>,
        watermark: DateTime<Utc>,
        config: &Config,
    ) -> RunState {
        RunState {
            format: FORMAT,
            source,
            shard,
            watermark,
            as_of: NaiveDate::MIN,
            config_fingerprint: config_fingerprint(config),
            patients: BTreeMap::new(),
        }
    }

    /// `_lastUpdated=gt` of the next incremental search: the watermark minus the overlap.
    pub fn changed_since(&self, overlap_minutes: u32) -> String {
        (self.watermark - Duration::minutes(i64::from(overlap_minutes)))
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    }

    /// Known patients whose findings change by `as_of` with no new data, sorted.
    pub fn time_dependent(&self, as_of: NaiveDate) -> Vec<String> {
        self.patients
            .iter()
            .filter(|(_, on)| on.is_some_and(|on| on <= as_of))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Records a re-evaluated patient: kept, with their recheck date, while they have a TARE;
    /// dropped otherwise.
    pub fn record(&mut self, patient_id: &str, recheck: Option<Option<NaiveDate>>) {
        match recheck {
            Some(on) => self.patients.insert(patient_id.to_owned(), on),
            None => self.patients.remove(patient_id),
        };
    }
}

/// The configuration that decides findings, hashed: codes, units, episodes, eligibility,
/// rules and outputs (not the server or schedule settings).
pub fn config_fingerprint(config: &Config) -> String {
    let decisive = serde_json::json!({
        "ingest": config.ingest, "codes": config.codes, "markers": config.markers,
        "episodes": config.episodes, "eligibility": config.eligibility,
        "rules": config.rules, "output": config.output,
    });
    crate::sink::detected_issue::stable_id(&decisive.to_string())
}

/// For a patient with a TARE, the first as-of date after `as_of` on which the findings change
/// with no new data: `Some(None)` when there is none; `None` for a patient without a TARE (not
/// in the known cohort). Findings depend on the as-of date in two ways only (docs/rules.md §1-§3):
/// - values and TAREs dated after it count once it reaches them;
/// - `surveillance-overdue` (latest episode, markers with a baseline) holds from next due +
///   grace + 1 to index + max days, and while it holds its text counts the days overdue, so
///   such a patient is re-evaluated every day until it ends.
pub fn recheck_on(
    timeline: &PatientTimeline,
    findings: &PatientFindings,
    config: &Config,
    as_of: NaiveDate,
) -> Option<Option<NaiveDate>> {
    if timeline.procedures.is_empty() {
        return None;
    }
    let dated_later = timeline
        .procedures
        .iter()
        .map(|p| p.date)
        .chain(timeline.values.iter().map(|v| v.date))
        .filter(|date| *date > as_of);
    let mut overdue_changes = Vec::new();
    if let Some(latest) = findings.episodes.last() {
        let ends = latest.index_date + Duration::days(config.rules.overdue_max_days + 1);
        for course in latest.courses.iter().filter(|c| c.baseline.is_some()) {
            let starts = course.next_due_date + Duration::days(config.rules.overdue_grace_days + 1);
            if as_of < starts && starts < ends {
                overdue_changes.push(starts);
            } else if starts <= as_of && as_of < ends {
                overdue_changes.push(as_of + Duration::days(1));
            }
        }
    }
    Some(dated_later.chain(overdue_changes).min())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TareProcedure;

    fn timeline(tares: &[&str]) -> PatientTimeline {
        PatientTimeline {
            patient_id: "p1".into(),
            procedures: tares
                .iter()
                .map(|d| TareProcedure {
                    procedure_id: format!("t-{d}"),
                    date: d.parse().unwrap(),
                })
                .collect(),
            ..PatientTimeline::default()
        }
    }

    /// One PIVKA-II course in an episode on 2026-01-10 whose next value was due `next_due`.
    fn findings(next_due: &str) -> PatientFindings {
        use crate::domain::*;
        let point = ValuePoint {
            value: 900.0,
            date: "2026-01-05".parse().unwrap(),
            observation_id: "o".into(),
            censoring: Censoring::Exact,
        };
        PatientFindings {
            patient_id: "p1".into(),
            episodes: vec![EpisodeFindings {
                index_date: "2026-01-10".parse().unwrap(),
                procedure_ids: vec![],
                post_window_last_date: "2026-11-01".parse().unwrap(),
                age_years: None,
                courses: vec![MarkerCourse {
                    marker: Marker::Pivka2,
                    baseline: Some(point.clone()),
                    nadir: None,
                    latest: None,
                    reference_nadir: None,
                    n_post: 0,
                    pct_change: None,
                    rise_from_nadir_pct: None,
                    uln: 40.0,
                    response: Response::NotEvaluable,
                    halflife_days: None,
                    next_due_date: next_due.parse().unwrap(),
                    albi_baseline: None,
                    albi_latest: None,
                }],
                flags: vec![],
            }],
            ..PatientFindings::default()
        }
    }

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[test]
    fn recheck_on_the_day_surveillance_overdue_starts() {
        // Due 2026-06-01, grace 14 days: the flag holds from 2026-06-16.
        let on = recheck_on(
            &timeline(&["2026-01-10"]),
            &findings("2026-06-01"),
            &Config::default(),
            day("2026-05-20"),
        );
        assert_eq!(on, Some(Some(day("2026-06-16"))));
    }

    #[test]
    fn recheck_daily_while_overdue_and_not_after_the_window() {
        let config = Config::default();
        // Holding (its text counts the days): the next day.
        let on = recheck_on(
            &timeline(&["2026-01-10"]),
            &findings("2026-06-01"),
            &config,
            day("2026-08-01"),
        );
        assert_eq!(on, Some(Some(day("2026-08-02"))));
        // The last day it holds is index + 365 = 2027-01-10: rechecked on 2027-01-11, then never.
        let on = recheck_on(
            &timeline(&["2026-01-10"]),
            &findings("2026-06-01"),
            &config,
            day("2027-01-10"),
        );
        assert_eq!(on, Some(Some(day("2027-01-11"))));
        let on = recheck_on(
            &timeline(&["2026-01-10"]),
            &findings("2026-06-01"),
            &config,
            day("2027-01-11"),
        );
        assert_eq!(on, Some(None));
    }

    #[test]
    fn a_tare_dated_after_the_as_of_date_is_a_recheck_date_and_no_tare_is_no_cohort() {
        let on = recheck_on(
            &timeline(&["2025-01-10", "2027-03-01"]),
            &PatientFindings::default(),
            &Config::default(),
            day("2026-11-01"),
        );
        assert_eq!(on, Some(Some(day("2027-03-01"))));
        assert_eq!(
            recheck_on(
                &timeline(&[]),
                &PatientFindings::default(),
                &Config::default(),
                day("2026-11-01")
            ),
            None
        );
    }

    #[test]
    fn time_dependent_patients_are_those_whose_recheck_date_has_come() {
        let mut state = RunState::new("http://x".into(), None, Utc::now(), &Config::default());
        state.patients.insert("a".into(), Some(day("2026-11-27")));
        state.patients.insert("b".into(), Some(day("2026-11-28")));
        state.patients.insert("c".into(), None);
        assert_eq!(state.time_dependent(day("2026-11-27")), ["a"]);
    }

    #[test]
    fn changed_since_subtracts_the_overlap() {
        let state = RunState::new(
            "http://x".into(),
            None,
            "2026-11-27T02:00:00Z".parse().unwrap(),
            &Config::default(),
        );
        assert_eq!(state.changed_since(15), "2026-11-27T01:45:00Z");
    }

    #[test]
    fn each_shard_has_its_own_state_file() {
        assert_eq!(
            shard_path(Path::new("/var/lib/tmm/state.json"), Some(".shard-1-of-4")),
            PathBuf::from("/var/lib/tmm/state.shard-1-of-4.json")
        );
        assert_eq!(
            shard_path(Path::new("/var/lib/tmm/state.json"), None),
            PathBuf::from("/var/lib/tmm/state.json")
        );
    }
}
