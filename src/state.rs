//! The state of nightly incremental runs: the watermark (when the last fully successful run
//! started) and the known cohort (every patient with a TARE, and until when their findings can
//! change with no new data). Written atomically, and only after a run that fully succeeded,
//! so a killed or failed run is simply done again.

use crate::config::Config;
use crate::domain::PatientTimeline;
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
    /// Patient id -> the last as-of date on which their findings can still change with no new
    /// data (surveillance windows, values or TAREs dated in the future).
    pub patients: BTreeMap<String, NaiveDate>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read the state file {path}: {message}")]
    Read { path: String, message: String },
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
        let failed = |message: String| StateError::Read {
            path: path.display().to_string(),
            message,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(failed(e.to_string())),
        };
        let state: RunState = serde_json::from_str(&text).map_err(|e| failed(e.to_string()))?;
        if state.format != FORMAT {
            return Err(failed(format!(
                "format {} (this version reads {FORMAT})",
                state.format
            )));
        }
        Ok(Some(state))
    }

    pub fn new(source: String, shard: Option<String>, watermark: DateTime<Utc>) -> RunState {
        RunState {
            format: FORMAT,
            source,
            shard,
            watermark,
            as_of: NaiveDate::MIN,
            patients: BTreeMap::new(),
        }
    }

    /// `_lastUpdated=gt` of the next incremental search: the watermark minus the overlap.
    pub fn changed_since(&self, overlap_minutes: u32) -> String {
        (self.watermark - Duration::minutes(i64::from(overlap_minutes)))
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    }

    /// Known patients whose findings may change on `as_of` with no new data, sorted.
    pub fn time_dependent(&self, as_of: NaiveDate) -> Vec<String> {
        self.patients
            .iter()
            .filter(|(_, until)| **until >= as_of)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Records a re-evaluated patient: kept with their recheck date while they have a TARE,
    /// dropped otherwise.
    pub fn record(&mut self, timeline: &PatientTimeline, config: &Config) {
        match recheck_until(timeline, config) {
            Some(until) => self.patients.insert(timeline.patient_id.clone(), until),
            None => self.patients.remove(&timeline.patient_id),
        };
    }

    /// Drops a requested patient of whom the server had nothing.
    pub fn forget(&mut self, patient_id: &str) {
        self.patients.remove(patient_id);
    }
}

/// The last as-of date on which the patient's findings can change with no new data: the day
/// after the surveillance window of the latest TARE closes (RULES §3 `surveillance-overdue`,
/// as-of <= index + max days), or the latest date in the record when that is later (a value
/// or TARE dated after the as-of date counts only once the as-of date reaches it). `None` for a
/// patient without a TARE.
pub fn recheck_until(timeline: &PatientTimeline, config: &Config) -> Option<NaiveDate> {
    let latest_tare = timeline.procedures.iter().map(|p| p.date).max()?;
    let window_closes = latest_tare + Duration::days(config.rules.overdue_max_days + 1);
    let latest_value = timeline.values.iter().map(|v| v.date).max();
    Some(window_closes.max(latest_value.unwrap_or(NaiveDate::MIN)))
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

    #[test]
    fn recheck_runs_to_the_day_after_the_latest_surveillance_window() {
        let config = Config::default();
        // Latest TARE 2026-01-10; overdue holds up to index + 365 = 2027-01-10; on 2027-01-11
        // it stops holding, so that run must still re-evaluate.
        assert_eq!(
            recheck_until(&timeline(&["2025-06-01", "2026-01-10"]), &config),
            Some("2027-01-11".parse().unwrap())
        );
        assert_eq!(recheck_until(&timeline(&[]), &config), None);
    }

    #[test]
    fn time_dependent_patients_are_those_still_inside_their_window() {
        let mut state = RunState::new("http://x".into(), None, Utc::now());
        state
            .patients
            .insert("a".into(), "2026-11-27".parse().unwrap());
        state
            .patients
            .insert("b".into(), "2026-11-26".parse().unwrap());
        assert_eq!(state.time_dependent("2026-11-27".parse().unwrap()), ["a"]);
    }

    #[test]
    fn changed_since_subtracts_the_overlap() {
        let state = RunState::new(
            "http://x".into(),
            None,
            "2026-11-27T02:00:00Z".parse().unwrap(),
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
