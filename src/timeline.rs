//! Records -> one timeline per patient. Two steps, each independent of the order the records
//! came in (docs/rules.md "One resource, one answer" and "Duplicates"):
//! 1. copies of one resource id (a feed that re-sends, a file read twice, a resource updated
//!    between two exports) resolve to one: the newest `meta.lastUpdated`, then `versionId`,
//!    then content order; a copy left out for a reason (entered in error) competes like any
//!    other, so a newer cancelled copy removes an older value; so does a newer copy the job
//!    does not follow at all (re-coded to another test, malformed, a near miss: a
//!    *competitor*), which is counted where it was read and only removes older copies;
//! 2. values of one marker at one instant resolve to one (the latest `meta.lastUpdated`, then
//!    the larger id).
//!
//! Every copy or duplicate dropped is counted.

use crate::domain::{MarkerValue, PatientTimeline, ResourceId, TareProcedure};
use crate::ingest::{CopyKey, CopyRank, DataQuality, Record, ResourceType, Skip, SkipReason};
use chrono::NaiveDate;
use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};

/// One copy of a Patient resource.
struct PatientCopy {
    birth_date: Option<NaiveDate>,
    name: Option<String>,
    mrn: Option<String>,
    rank: CopyRank,
}

/// One patient's records as they are collected, every copy kept until `finish`.
#[derive(Default)]
struct PatientRecords {
    patient_copies: Vec<PatientCopy>,
    hcc_conditions: Vec<(ResourceId, CopyRank)>,
    procedures: Vec<(TareProcedure, CopyRank)>,
    /// The values, and at the same index each one's copy rank: apart, so the timeline takes
    /// the values as they are (no second copy of the largest part of a run's memory).
    values: Vec<MarkerValue>,
    value_ranks: Vec<CopyRank>,
}

impl PatientRecords {
    fn is_empty(&self) -> bool {
        self.patient_copies.is_empty()
            && self.hcc_conditions.is_empty()
            && self.procedures.is_empty()
            && self.values.is_empty()
    }

    fn extend(&mut self, other: PatientRecords) {
        self.patient_copies.extend(other.patient_copies);
        self.hcc_conditions.extend(other.hcc_conditions);
        self.procedures.extend(other.procedures);
        self.values.extend(other.values);
        self.value_ranks.extend(other.value_ranks);
    }
}

/// Collects records in any order; `finish` gives the same timelines whatever that order was.
#[derive(Default)]
pub struct CohortBuilder {
    // FxHash: patient ids are not attacker-chosen here, and SipHash showed in profiles.
    patients: FxHashMap<String, PatientRecords>,
    /// Left-out copies of resources the job follows, by type: each competes with the other
    /// copies of its id, and only the kept copy's reason is counted.
    skipped_copies: Vec<(ResourceType, Skip)>,
    /// Copies of followed resources that the job does not follow (re-coded, malformed):
    /// already counted where they were read; when newest, they remove the other copies.
    competitors: Vec<Competitor>,
}

/// A copy the job does not follow (or another shard's), ranked against the copies of its id.
struct Competitor {
    kind: ResourceType,
    id: ResourceId,
    rank: CopyRank,
}

impl CohortBuilder {
    /// The patient's records; the id is copied only the first time a patient is seen.
    fn entry(&mut self, patient_id: &str) -> &mut PatientRecords {
        if !self.patients.contains_key(patient_id) {
            self.patients
                .insert(patient_id.to_owned(), PatientRecords::default());
        }
        self.patients.get_mut(patient_id).expect("inserted above")
    }

    pub fn add(&mut self, record: Record<'_>) {
        match record {
            Record::Patient {
                patient_id,
                birth_date,
                name,
                mrn,
                rank,
            } => self.entry(&patient_id).patient_copies.push(PatientCopy {
                birth_date,
                name,
                mrn,
                rank,
            }),
            Record::HccCondition {
                patient_id,
                condition_id,
                rank,
            } => self
                .entry(&patient_id)
                .hcc_conditions
                .push((condition_id, rank)),
            Record::Tare {
                patient_id,
                procedure,
                rank,
            } => self.entry(&patient_id).procedures.push((procedure, rank)),
            Record::Value {
                patient_id,
                value,
                rank,
            } => {
                let records = self.entry(&patient_id);
                records.values.push(value);
                records.value_ranks.push(rank);
            }
        }
    }

    /// A left-out copy of a resource the job follows (`skip.copy` is set).
    pub fn add_skipped_copy(&mut self, kind: ResourceType, skip: Skip) {
        self.skipped_copies.push((kind, skip));
    }

    /// A copy the job does not follow (`Ingestor::copy_rank`), or one of another shard's
    /// patient, of a resource this read follows.
    pub fn add_competitor(&mut self, kind: ResourceType, id: ResourceId, rank: CopyRank) {
        self.competitors.push(Competitor { kind, id, rank });
    }

    /// The keys of every copy the job follows: records and skipped copies.
    pub fn followed_keys(&self) -> FxHashSet<CopyKey> {
        let mut keys = FxHashSet::default();
        for_each_copy(self, |key, _, _, _| {
            keys.insert(key);
        });
        keys
    }

    /// The patients with at least one TARE procedure read so far.
    pub fn patients_with_procedures(&self) -> Vec<String> {
        self.patients
            .iter()
            .filter(|(_, records)| !records.procedures.is_empty())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Adds what another builder collected (another worker's share of the files).
    pub fn merge(&mut self, other: CohortBuilder) {
        if self.patients.len() < other.patients.len() {
            let mine = std::mem::replace(self, other);
            return self.merge(mine);
        }
        self.skipped_copies.extend(other.skipped_copies);
        self.competitors.extend(other.competitors);
        for (patient_id, theirs) in other.patients {
            match self.patients.get_mut(&patient_id) {
                None => {
                    self.patients.insert(patient_id, theirs);
                }
                Some(ours) => ours.extend(theirs),
            }
        }
    }

    /// Resolves copies and duplicates (on the current rayon pool); what is dropped, what is
    /// left out and what is accepted is counted in `quality`. Timelines come back sorted by
    /// patient id.
    pub fn finish(self, quality: &mut DataQuality) -> Vec<PatientTimeline> {
        let mut patients: Vec<(String, PatientRecords)> = self.patients.into_iter().collect();
        patients.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut skipped = self.skipped_copies;
        let copies = Copies {
            patients: &patients,
            skipped: &skipped,
            competitors: &self.competitors,
        };
        let losers = copies.superseded();
        // A competitor that loses was counted where it was read; every other loser is a
        // superseded copy.
        let superseded: Vec<(ResourceType, String)> = losers
            .iter()
            .filter(|loser| loser.place() != Place::Competitor)
            .map(|loser| (copies.kind(loser), copies.id(loser).to_owned()))
            .collect();
        remove_losers(&mut patients, &mut skipped, losers);
        // A patient all of whose resources turned out to be older copies of another patient's
        // (a result moved to the right patient) has nothing left: not a patient of this read.
        patients.retain(|(_, records)| !records.is_empty());
        for (kind, skip) in skipped {
            quality.count_skip(kind, skip, String::new);
        }
        for (kind, id) in superseded {
            quality.count_skip(
                kind,
                Skip {
                    reason: SkipReason::SupersededCopy,
                    resource_id: Some(id),
                    detail: None,
                    copy: None,
                },
                String::new,
            );
        }
        let built: Vec<Built> = patients
            .into_par_iter()
            .map(|(patient_id, records)| timeline(patient_id, records))
            .collect();
        let mut timelines = Vec::with_capacity(built.len());
        for Built {
            timeline,
            duplicates,
            hcc_conditions,
        } in built
        {
            quality.count_accepted(
                ResourceType::Patient,
                u64::from(timeline.has_patient_resource),
            );
            quality.count_accepted(ResourceType::Condition, hcc_conditions);
            quality.count_accepted(ResourceType::Procedure, timeline.procedures.len() as u64);
            quality.count_accepted(ResourceType::Observation, timeline.values.len() as u64);
            for value in timeline
                .values
                .iter()
                .filter(|v| v.reference_high_implausible)
            {
                count_implausible_reference_high(quality, value);
            }
            for observation_id in duplicates {
                quality.count_skip(
                    ResourceType::Observation,
                    Skip {
                        reason: SkipReason::Duplicate,
                        resource_id: Some(observation_id),
                        detail: None,
                        copy: None,
                    },
                    String::new,
                );
            }
            timelines.push(timeline);
        }
        timelines
    }
}

/// A value kept with the default ULN, its `referenceRange.high` not used (docs/rules.md §2.5).
fn count_implausible_reference_high(quality: &mut DataQuality, value: &MarkerValue) {
    let high = value.reference_high.get().unwrap_or(f64::NAN);
    quality.count_element_not_used(
        ResourceType::Observation,
        "reference_high_implausible",
        &value.observation_id,
        format!(
            "referenceRange.high {} {} is outside the plausible band of the {} ULN \
             (markers.{}.reference_high_band)",
            // As it came (converted): rounding could show an accepted number.
            high,
            value.marker.canonical_unit(),
            value.marker.key(),
            value.marker.key()
        ),
    );
}

impl Skip {
    fn resource_id(&self) -> &str {
        self.resource_id.as_deref().unwrap_or("")
    }
}

/// Where a copy sits: in a patient's records, among the skipped copies, or among the
/// competitors. The order is the last tie-break between copies of equal rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    Patient,
    Condition,
    Procedure,
    Value,
    Skipped,
    Competitor,
}

impl Place {
    const ALL: [Place; 6] = [
        Place::Patient,
        Place::Condition,
        Place::Procedure,
        Place::Value,
        Place::Skipped,
        Place::Competitor,
    ];

    /// The type of a record at this place (skipped copies and competitors carry their own).
    fn record_kind(self) -> ResourceType {
        match self {
            Place::Patient => ResourceType::Patient,
            Place::Condition => ResourceType::Condition,
            Place::Procedure => ResourceType::Procedure,
            Place::Value | Place::Skipped | Place::Competitor => ResourceType::Observation,
        }
    }
}

impl PatientRecords {
    fn resource_id<'a>(&'a self, patient_id: &'a str, place: Place, item: usize) -> &'a str {
        match place {
            Place::Patient => patient_id,
            Place::Condition => &self.hcc_conditions[item].0,
            Place::Procedure => &self.procedures[item].0.procedure_id,
            Place::Value => &self.values[item].observation_id,
            Place::Skipped | Place::Competitor => "",
        }
    }

    fn rank(&self, place: Place, item: usize) -> CopyRank {
        match place {
            Place::Patient => self.patient_copies[item].rank,
            Place::Condition => self.hcc_conditions[item].1,
            Place::Procedure => self.procedures[item].1,
            Place::Value => self.value_ranks[item],
            Place::Skipped | Place::Competitor => CopyRank::default(),
        }
    }

    /// Calls `visit(key, place, item)` for every record.
    fn for_each_copy(&self, patient_id: &str, mut visit: impl FnMut(CopyKey, Place, usize)) {
        for i in 0..self.patient_copies.len() {
            visit(
                CopyKey::of(ResourceType::Patient, patient_id),
                Place::Patient,
                i,
            );
        }
        for (i, (id, _)) in self.hcc_conditions.iter().enumerate() {
            visit(
                CopyKey::of(ResourceType::Condition, id),
                Place::Condition,
                i,
            );
        }
        for (i, (procedure, _)) in self.procedures.iter().enumerate() {
            let key = CopyKey::of(ResourceType::Procedure, &procedure.procedure_id);
            visit(key, Place::Procedure, i);
        }
        for (i, value) in self.values.iter().enumerate() {
            let key = CopyKey::of(ResourceType::Observation, &value.observation_id);
            visit(key, Place::Value, i);
        }
    }
}

/// Calls `visit(key, place, patient, item)` for every followed copy the builder holds (the
/// patient index is that of the map's order: only the keys are meant).
fn for_each_copy(builder: &CohortBuilder, mut visit: impl FnMut(CopyKey, Place, usize, usize)) {
    for (patient, (patient_id, records)) in builder.patients.iter().enumerate() {
        records.for_each_copy(patient_id, |key, place, item| {
            visit(key, place, patient, item)
        });
    }
    for (i, (kind, skip)) in builder.skipped_copies.iter().enumerate() {
        visit(
            CopyKey::of(*kind, skip.resource_id()),
            Place::Skipped,
            usize::MAX,
            i,
        );
    }
}

/// One copy of a resource: a key (hash of type and id), and where it sits. 16 bytes, as there
/// is one per record of a run.
#[derive(Debug, Clone, Copy)]
struct CopyRef {
    key: CopyKey,
    /// Index of the patient (unused for skipped copies and competitors).
    patient: u32,
    /// The place in the top three bits, the index of the item below.
    slot: u32,
}

const ITEM_BITS: u32 = 29;

impl CopyRef {
    fn new(key: CopyKey, place: Place, patient: usize, item: usize) -> CopyRef {
        // A run holds far fewer than 2^32 patients and 2^29 records per patient.
        CopyRef {
            key,
            patient: u32::try_from(patient).unwrap_or(u32::MAX),
            slot: ((place as u32) << ITEM_BITS) | (item as u32 & ((1 << ITEM_BITS) - 1)),
        }
    }

    fn place(&self) -> Place {
        Place::ALL[(self.slot >> ITEM_BITS) as usize]
    }

    fn item(&self) -> usize {
        (self.slot & ((1 << ITEM_BITS) - 1)) as usize
    }

    fn patient(&self) -> usize {
        self.patient as usize
    }
}

/// Every copy of a run, to resolve them.
struct Copies<'a> {
    patients: &'a [(String, PatientRecords)],
    skipped: &'a [(ResourceType, Skip)],
    competitors: &'a [Competitor],
}

impl Copies<'_> {
    /// Calls `visit(key, place, patient, item)` for every copy.
    fn for_each(&self, mut visit: impl FnMut(CopyKey, Place, usize, usize)) {
        for (patient, (patient_id, records)) in self.patients.iter().enumerate() {
            records.for_each_copy(patient_id, |key, place, item| {
                visit(key, place, patient, item)
            });
        }
        for (i, (kind, skip)) in self.skipped.iter().enumerate() {
            visit(
                CopyKey::of(*kind, skip.resource_id()),
                Place::Skipped,
                usize::MAX,
                i,
            );
        }
        for (i, competitor) in self.competitors.iter().enumerate() {
            let key = CopyKey::of(competitor.kind, &competitor.id);
            visit(key, Place::Competitor, usize::MAX, i);
        }
    }

    fn id(&self, r: &CopyRef) -> &str {
        match r.place() {
            Place::Skipped => self.skipped[r.item()].1.resource_id(),
            Place::Competitor => &self.competitors[r.item()].id,
            place => {
                let (patient_id, records) = &self.patients[r.patient()];
                records.resource_id(patient_id, place, r.item())
            }
        }
    }

    fn kind(&self, r: &CopyRef) -> ResourceType {
        match r.place() {
            Place::Skipped => self.skipped[r.item()].0,
            Place::Competitor => self.competitors[r.item()].kind,
            place => place.record_kind(),
        }
    }

    fn rank(&self, r: &CopyRef) -> CopyRank {
        match r.place() {
            Place::Skipped => self.skipped[r.item()].1.copy.unwrap_or_default(),
            Place::Competitor => self.competitors[r.item()].rank,
            place => self.patients[r.patient()].1.rank(place, r.item()),
        }
    }

    /// Every copy that another copy of the same resource (type and id) outranks, in any
    /// patient.
    fn superseded(&self) -> Vec<CopyRef> {
        // First only the keys (8 bytes a record), to find those that repeat; then a reference
        // to each copy of those alone. Most resources come once, so the run's peak memory
        // stays low.
        let mut keys: Vec<CopyKey> = Vec::new();
        self.for_each(|key, _, _, _| keys.push(key));
        keys.par_sort_unstable();
        let repeated: FxHashSet<CopyKey> = keys
            .chunk_by(|a, b| a == b)
            .filter(|same| same.len() > 1)
            .map(|same| same[0])
            .collect();
        drop(keys);
        if repeated.is_empty() {
            return Vec::new();
        }
        let mut refs: Vec<CopyRef> = Vec::new();
        self.for_each(|key, place, patient, item| {
            if repeated.contains(&key) {
                refs.push(CopyRef::new(key, place, patient, item));
            }
        });
        refs.par_sort_unstable_by_key(|r| r.key);
        let mut losers = Vec::new();
        for group in refs.chunk_by_mut(|a, b| a.key == b.key) {
            // Same key: sort by type and id (a hash collision keeps them apart), newest first;
            // copies of equal rank are ordered by where they sit, so nothing depends on the
            // order the files were read in.
            group.sort_by(|a, b| {
                (self.kind(a), self.id(a))
                    .cmp(&(self.kind(b), self.id(b)))
                    .then_with(|| self.rank(b).cmp(&self.rank(a)))
                    .then_with(|| {
                        (a.place(), a.patient, a.item()).cmp(&(b.place(), b.patient, b.item()))
                    })
            });
            let same_resource =
                |a: &CopyRef, b: &CopyRef| self.kind(a) == self.kind(b) && self.id(a) == self.id(b);
            for same in group.chunk_by(same_resource) {
                losers.extend_from_slice(&same[1..]);
            }
        }
        losers
    }
}

/// Removes the superseded copies from the records and the skipped copies (competitors are
/// dropped whole after this).
fn remove_losers(
    patients: &mut [(String, PatientRecords)],
    skipped: &mut Vec<(ResourceType, Skip)>,
    losers: Vec<CopyRef>,
) {
    let mut skipped_losers: FxHashSet<usize> = FxHashSet::default();
    let mut by_patient: FxHashMap<usize, Vec<(Place, usize)>> = FxHashMap::default();
    for loser in losers {
        match loser.place() {
            Place::Competitor => {}
            Place::Skipped => {
                skipped_losers.insert(loser.item());
            }
            place => by_patient
                .entry(loser.patient())
                .or_default()
                .push((place, loser.item())),
        }
    }
    for (patient, places) in by_patient {
        let records = &mut patients[patient].1;
        let gone = |place: Place| -> FxHashSet<usize> {
            places
                .iter()
                .filter(|(p, _)| *p == place)
                .map(|(_, i)| *i)
                .collect()
        };
        retain_indexed(&mut records.patient_copies, &gone(Place::Patient));
        retain_indexed(&mut records.hcc_conditions, &gone(Place::Condition));
        retain_indexed(&mut records.procedures, &gone(Place::Procedure));
        let gone_values = gone(Place::Value);
        retain_indexed(&mut records.values, &gone_values);
        retain_indexed(&mut records.value_ranks, &gone_values);
    }
    if !skipped_losers.is_empty() {
        retain_indexed(skipped, &skipped_losers);
    }
}

fn retain_indexed<T>(items: &mut Vec<T>, gone: &FxHashSet<usize>) {
    if gone.is_empty() {
        return;
    }
    let mut index = 0;
    items.retain(|_| {
        let keep = !gone.contains(&index);
        index += 1;
        keep
    });
}

/// A patient's timeline and what building it dropped.
struct Built {
    timeline: PatientTimeline,
    /// Observations dropped as duplicates of another at the same instant.
    duplicates: Vec<String>,
    hcc_conditions: u64,
}

/// One patient's timeline from their resolved records: the newest Patient copy, the TAREs in
/// date order, the values de-duplicated by instant.
fn timeline(patient_id: String, records: PatientRecords) -> Built {
    let PatientRecords {
        patient_copies,
        hcc_conditions,
        mut procedures,
        values,
        value_ranks,
    } = records;
    // Copies were resolved before: at most one is left.
    let newest = patient_copies.into_iter().max_by_key(|copy| copy.rank);
    procedures.sort_by(|(a, _), (b, _)| (a.date, &a.procedure_id).cmp(&(b.date, &b.procedure_id)));
    let mut values = values;
    let duplicates = deduplicate(&mut values, |i| value_ranks[i].last_updated_ns());
    let hcc_count = hcc_conditions.len() as u64;
    let timeline = PatientTimeline {
        patient_id,
        has_patient_resource: newest.is_some(),
        birth_date: newest.as_ref().and_then(|copy| copy.birth_date),
        mrn: newest.as_ref().and_then(|copy| copy.mrn.clone()),
        name: newest.and_then(|copy| copy.name),
        has_hcc: !hcc_conditions.is_empty(),
        procedures: procedures.into_iter().map(|(p, _)| p).collect(),
        values,
    };
    Built {
        timeline,
        duplicates,
        hcc_conditions: hcc_count,
    }
}

/// Same marker and effective instant: the latest `meta.lastUpdated` (`last_updated(i)` is that
/// of `values[i]`) wins, then the larger id. Leaves `values` sorted by (marker, instant), in
/// place (no second copy), and returns the ids dropped.
pub fn deduplicate(
    values: &mut Vec<MarkerValue>,
    last_updated: impl Fn(usize) -> Option<i64>,
) -> Vec<String> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| {
        let (a, b) = (&values[i], &values[j]);
        (a.marker, a.instant_ms)
            .cmp(&(b.marker, b.instant_ms))
            // Winner first: later lastUpdated (None is oldest), then larger id.
            .then_with(|| last_updated(j).cmp(&last_updated(i)))
            .then_with(|| b.observation_id.cmp(&a.observation_id))
    });
    arrange(values, order);
    let mut dropped = Vec::new();
    // Keeps the first of each run of equal (marker, instant): the winner.
    values.dedup_by(|later, kept| {
        let same = later.marker == kept.marker && later.instant_ms == kept.instant_ms;
        if same {
            dropped.push(later.observation_id.to_string());
        }
        same
    });
    dropped
}

/// Puts `items[order[k]]` at place `k` for every `k`, by swaps along the permutation's cycles.
fn arrange<T>(items: &mut [T], mut order: Vec<usize>) {
    for start in 0..order.len() {
        let mut at = start;
        while order[at] != start {
            let from = order[at];
            items.swap(at, from);
            order[at] = at;
            at = from;
        }
        order[at] = at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Censoring, Marker};
    use std::borrow::Cow;

    fn value(id: &str, instant_ms: i64, v: f64) -> MarkerValue {
        MarkerValue {
            marker: Marker::Pivka2,
            value: v,
            censoring: Censoring::Exact,
            date: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            instant_ms,
            observation_id: id.into(),
            reference_high: crate::domain::OptionalNumber::NONE,
            reference_high_implausible: false,
            note: None,
        }
    }

    #[test]
    fn duplicate_resolved_by_latest_last_updated() {
        let mut values = vec![
            value("b", 10, 1.0),
            value("a", 10, 2.0),
            value("c", 20, 3.0),
        ];
        let dropped = deduplicate(&mut values, |i| [Some(200), Some(300), None][i]);
        assert_eq!(dropped, vec!["b".to_string()]);
        assert_eq!(
            values.iter().map(|v| v.value).collect::<Vec<_>>(),
            vec![2.0, 3.0]
        );
    }

    #[test]
    fn arrange_puts_each_item_where_its_order_says() {
        let mut items = vec!['a', 'b', 'c', 'd', 'e'];
        arrange(&mut items, vec![2, 0, 4, 1, 3]);
        assert_eq!(items, vec!['c', 'a', 'e', 'b', 'd']);
        let mut items = vec![1, 2, 3];
        arrange(&mut items, vec![0, 1, 2]);
        assert_eq!(items, vec![1, 2, 3]);
    }

    #[test]
    fn duplicate_tie_on_last_updated_keeps_larger_id() {
        let mut values = vec![value("a", 10, 1.0), value("b", 10, 2.0)];
        let dropped = deduplicate(&mut values, |_| Some(1));
        assert_eq!(dropped, vec!["a".to_string()]);
        assert_eq!(&*values[0].observation_id, "b");
    }

    fn record(patient: &str, id: &str, instant_ms: i64, rank: CopyRank) -> Record<'static> {
        Record::Value {
            patient_id: Cow::Owned(patient.to_owned()),
            value: value(id, instant_ms, instant_ms as f64),
            rank,
        }
    }

    #[test]
    fn copies_of_one_id_under_two_patients_resolve_to_the_newest() {
        let mut builder = CohortBuilder::default();
        builder.add(record("p1", "o1", 10, CopyRank::new(Some(1), None, 5)));
        builder.add(record("p2", "o1", 20, CopyRank::new(Some(2), None, 1)));
        let mut quality = DataQuality::default();
        let timelines = builder.finish(&mut quality);
        // p1 held nothing but the older copy: nothing of p1 is left to evaluate.
        assert!(timelines.iter().all(|t| t.patient_id != "p1"));
        let p2 = timelines.iter().find(|t| t.patient_id == "p2").unwrap();
        assert_eq!(p2.values[0].value, 20.0);
        assert_eq!(
            quality.left_out_count(ResourceType::Observation, SkipReason::SupersededCopy),
            1
        );
    }
}
