//! Records -> one timeline per patient: values grouped and de-duplicated (RULES.md §1
//! "Duplicates"), procedures and diagnoses attached.

use crate::domain::{MarkerValue, PatientTimeline};
use crate::ingest::{DataQuality, Record, ResourceType, Skip, SkipReason};
use rayon::prelude::*;
use rustc_hash::FxHashMap;

/// Collects records in any order; `finish` gives the same timelines whatever that order was.
#[derive(Default)]
pub struct CohortBuilder {
    // FxHash: patient ids are not attacker-chosen here, and SipHash showed in profiles.
    patients: FxHashMap<String, PatientTimeline>,
}

impl CohortBuilder {
    /// The patient's timeline; the id is copied only the first time a patient is seen.
    fn entry(&mut self, patient_id: &str) -> &mut PatientTimeline {
        if !self.patients.contains_key(patient_id) {
            self.patients.insert(
                patient_id.to_owned(),
                PatientTimeline {
                    patient_id: patient_id.to_owned(),
                    ..PatientTimeline::default()
                },
            );
        }
        self.patients.get_mut(patient_id).expect("inserted above")
    }

    pub fn add(&mut self, record: Record<'_>) {
        match record {
            Record::Patient {
                patient_id,
                birth_date,
                name,
            } => {
                let timeline = self.entry(&patient_id);
                timeline.has_patient_resource = true;
                if name.is_some() {
                    timeline.name = name;
                }
                // Two copies of a Patient: keep a known birth date over an unknown one.
                timeline.birth_date = timeline.birth_date.max(birth_date);
            }
            Record::HccCondition { patient_id } => self.entry(&patient_id).has_hcc = true,
            Record::Tare {
                patient_id,
                procedure,
            } => self.entry(&patient_id).procedures.push(procedure),
            Record::Value { patient_id, value } => self.entry(&patient_id).values.push(value),
        }
    }

    /// The patients with at least one TARE procedure read so far.
    pub fn patients_with_procedures(&self) -> Vec<String> {
        self.patients
            .values()
            .filter(|t| !t.procedures.is_empty())
            .map(|t| t.patient_id.clone())
            .collect()
    }

    /// Keeps only the patients for whom `keep` holds (a shard, a requested cohort).
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.patients.retain(|id, _| keep(id));
    }

    /// Adds what another builder collected (another worker's share of the files).
    pub fn merge(&mut self, other: CohortBuilder) {
        if self.patients.len() < other.patients.len() {
            let mine = std::mem::replace(self, other);
            return self.merge(mine);
        }
        for (patient_id, theirs) in other.patients {
            match self.patients.get_mut(&patient_id) {
                None => {
                    self.patients.insert(patient_id, theirs);
                }
                Some(ours) => {
                    ours.has_patient_resource |= theirs.has_patient_resource;
                    ours.birth_date = ours.birth_date.max(theirs.birth_date);
                    ours.name = ours.name.take().or(theirs.name);
                    ours.has_hcc |= theirs.has_hcc;
                    ours.procedures.extend(theirs.procedures);
                    ours.values.extend(theirs.values);
                }
            }
        }
    }

    /// Sorts and de-duplicates (on the current rayon pool); duplicates and accepted counts go to
    /// `quality`. Timelines come back sorted by patient id.
    pub fn finish(self, quality: &mut DataQuality) -> Vec<PatientTimeline> {
        let mut timelines: Vec<PatientTimeline> = self.patients.into_values().collect();
        timelines.par_sort_unstable_by(|a, b| a.patient_id.cmp(&b.patient_id));
        let duplicates: Vec<Vec<String>> = timelines
            .par_iter_mut()
            .map(|timeline| {
                timeline
                    .procedures
                    .sort_by(|a, b| (a.date, &a.procedure_id).cmp(&(b.date, &b.procedure_id)));
                timeline
                    .procedures
                    .dedup_by(|a, b| a.procedure_id == b.procedure_id);
                deduplicate(&mut timeline.values)
            })
            .collect();
        let accepted: usize = timelines.iter().map(|t| t.values.len()).sum();
        quality.count_accepted(ResourceType::Observation, accepted as u64);
        for observation_id in duplicates.into_iter().flatten() {
            quality.count_skip(
                ResourceType::Observation,
                Skip {
                    reason: SkipReason::Duplicate,
                    resource_id: Some(observation_id),
                    detail: None,
                },
                String::new,
            );
        }
        timelines
    }
}

/// Same marker and effective instant: the latest `meta.lastUpdated` wins, then the larger id.
/// Leaves `values` sorted by (marker, instant) and returns the ids dropped.
pub fn deduplicate(values: &mut Vec<MarkerValue>) -> Vec<String> {
    values.sort_by(|a, b| {
        (a.marker, a.instant_ms)
            .cmp(&(b.marker, b.instant_ms))
            // Winner first: later lastUpdated (None is oldest), then larger id.
            .then_with(|| b.last_updated_ms.cmp(&a.last_updated_ms))
            .then_with(|| b.observation_id.cmp(&a.observation_id))
    });
    let mut dropped = Vec::new();
    let mut kept: Vec<MarkerValue> = Vec::with_capacity(values.len());
    for value in values.drain(..) {
        match kept.last() {
            Some(last) if last.marker == value.marker && last.instant_ms == value.instant_ms => {
                // The same resource read twice is not a duplicate result.
                if last.observation_id != value.observation_id {
                    dropped.push(value.observation_id.to_string());
                }
            }
            _ => kept.push(value),
        }
    }
    *values = kept;
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Censoring, Marker};
    use chrono::NaiveDate;

    fn value(id: &str, instant_ms: i64, last_updated_ms: Option<i64>, v: f64) -> MarkerValue {
        MarkerValue {
            marker: Marker::Pivka2,
            value: v,
            censoring: Censoring::Exact,
            date: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            instant_ms,
            observation_id: id.into(),
            reference_high: None,
            last_updated_ms,
            note: None,
        }
    }

    #[test]
    fn duplicate_resolved_by_latest_last_updated() {
        let mut values = vec![
            value("b", 10, Some(200), 1.0),
            value("a", 10, Some(300), 2.0),
            value("c", 20, None, 3.0),
        ];
        let dropped = deduplicate(&mut values);
        assert_eq!(dropped, vec!["b".to_string()]);
        assert_eq!(
            values.iter().map(|v| v.value).collect::<Vec<_>>(),
            vec![2.0, 3.0]
        );
    }

    #[test]
    fn duplicate_tie_on_last_updated_keeps_larger_id() {
        let mut values = vec![value("a", 10, Some(1), 1.0), value("b", 10, Some(1), 2.0)];
        assert_eq!(deduplicate(&mut values), vec!["a".to_string()]);
        assert_eq!(&*values[0].observation_id, "b");
    }
}
