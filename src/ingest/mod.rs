//! FHIR R4 JSON -> domain records. Lean, borrowed read structs with explicit checks: a resource
//! that cannot be used is counted under its reason (docs/rules.md "What goes in") and the rest
//! goes on.

pub mod code_systems;
mod fhir_json;
pub mod prefilter;
pub mod quality;
pub mod time;
pub mod units;

use crate::config::{Code, Config};
use crate::domain::{Marker, MarkerValue, ResourceId, TareProcedure};
use chrono::{Duration, NaiveDate};
use chrono_tz::Tz;
pub use code_systems::{CodeSystems, SystemId};
use fhir_json::{
    CodeableConcept, ConditionIn, Header, Meta, ObservationIn, PatientIn, ProcedureIn, Reference,
};
pub use prefilter::PassedOver;
pub use quality::DataQuality;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::borrow::Cow;
use units::CodeFamily;

/// The resource types the job reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Patient,
    Condition,
    Procedure,
    Observation,
}

impl ResourceType {
    pub fn from_name(name: &str) -> Option<ResourceType> {
        ResourceType::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
    }

    pub const ALL: [ResourceType; 4] = [
        ResourceType::Patient,
        ResourceType::Condition,
        ResourceType::Procedure,
        ResourceType::Observation,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ResourceType::Patient => "Patient",
            ResourceType::Condition => "Condition",
            ResourceType::Procedure => "Procedure",
            ResourceType::Observation => "Observation",
        }
    }
}

/// Orders the copies of one resource id (docs/rules.md "One resource, one answer"): the newest
/// `meta.lastUpdated`, then the larger numeric `meta.versionId`, then a fingerprint of the
/// content, so the copy kept never depends on file order or thread count. Packed: an absent
/// `lastUpdated` or `versionId` sorts before any present one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CopyRank {
    last_updated_ns: i64,
    /// `versionId + 1`, 0 when absent or not a number.
    version: u64,
    content: u64,
}

impl CopyRank {
    pub fn new(last_updated_ns: Option<i64>, version_id: Option<u64>, content: u64) -> CopyRank {
        CopyRank {
            last_updated_ns: last_updated_ns.unwrap_or(i64::MIN),
            version: version_id.map_or(0, |v| v.saturating_add(1)),
            content,
        }
    }

    pub fn last_updated_ns(&self) -> Option<i64> {
        (self.last_updated_ns != i64::MIN).then_some(self.last_updated_ns)
    }
}

/// Which resource a copy is a copy of: its type and id, hashed. Two copies of one resource
/// have the same key whichever form they came in (parsed, or passed over unparsed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CopyKey(u64);

impl CopyKey {
    pub fn of(kind: ResourceType, id: &str) -> CopyKey {
        CopyKey::of_bytes(kind, id.as_bytes())
    }

    /// The key of an id read as bytes (the prefilter's, not checked as UTF-8): the same
    /// as `of` for the same text.
    pub fn of_bytes(kind: ResourceType, id: &[u8]) -> CopyKey {
        use std::hash::{Hash, Hasher};
        let mut hasher = rustc_hash::FxHasher::default();
        kind.hash(&mut hasher);
        hasher.write(id);
        // The end of the id, as `str`'s own hash marks it.
        hasher.write_u8(0xff);
        CopyKey(hasher.finish())
    }
}

/// A 64-bit fingerprint of a resource's text: the last tie-break between two copies.
pub fn content_fingerprint(json: &str) -> u64 {
    use std::hash::Hasher;
    let mut hasher = rustc_hash::FxHasher::default();
    hasher.write(json.as_bytes());
    hasher.finish()
}

/// What one resource contributes. The patient id borrows from the line where it can, so the
/// common case allocates nothing for it. `rank` orders copies of the same resource id.
#[derive(Debug, Clone, PartialEq)]
pub enum Record<'a> {
    Patient {
        patient_id: Cow<'a, str>,
        birth_date: Option<NaiveDate>,
        name: Option<String>,
        /// The MRN shown in the audit report (`[report] mrn_system`, else the first).
        mrn: Option<String>,
        rank: CopyRank,
    },
    /// A qualifying HCC diagnosis.
    HccCondition {
        patient_id: Cow<'a, str>,
        condition_id: ResourceId,
        rank: CopyRank,
    },
    Tare {
        patient_id: Cow<'a, str>,
        procedure: TareProcedure,
        rank: CopyRank,
    },
    Value {
        patient_id: Cow<'a, str>,
        value: MarkerValue,
        rank: CopyRank,
    },
}

impl Record<'_> {
    /// The same record, owning its patient id (to keep it past the line it was read from).
    pub fn into_owned(self) -> Record<'static> {
        let own = |id: Cow<'_, str>| Cow::Owned(id.into_owned());
        match self {
            Record::Patient {
                patient_id,
                birth_date,
                name,
                mrn,
                rank,
            } => Record::Patient {
                patient_id: own(patient_id),
                birth_date,
                name,
                mrn,
                rank,
            },
            Record::HccCondition {
                patient_id,
                condition_id,
                rank,
            } => Record::HccCondition {
                patient_id: own(patient_id),
                condition_id,
                rank,
            },
            Record::Tare {
                patient_id,
                procedure,
                rank,
            } => Record::Tare {
                patient_id: own(patient_id),
                procedure,
                rank,
            },
            Record::Value {
                patient_id,
                value,
                rank,
            } => Record::Value {
                patient_id: own(patient_id),
                value,
                rank,
            },
        }
    }

    pub fn patient_id(&self) -> &str {
        match self {
            Record::Patient { patient_id, .. }
            | Record::HccCondition { patient_id, .. }
            | Record::Tare { patient_id, .. }
            | Record::Value { patient_id, .. } => patient_id,
        }
    }
}

/// Why a resource was left out; each is its own counter in the run summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    InvalidJson,
    UnexpectedResourceType,
    NoId,
    /// An id, or a patient reference, that is not a FHIR id (`[A-Za-z0-9.-]{1,64}`): never
    /// used to build a URL or a file name.
    InvalidId,
    NoPatientReference,
    /// A configured code under a code system the job does not know by that name (or under
    /// no system): a site that codes this way needs an alias (`[code_systems.aliases]`).
    CodeUnderUnknownSystem,
    StatusNotAccepted,
    NoEffectiveTime,
    EffectiveTimeNotAFullDate,
    InvalidEffectiveTime,
    /// A date before `ingest.earliest_plausible_date` or too far after the as-of date.
    DateOutsidePlausibleRange,
    DataAbsentReason,
    NoValue,
    /// Negative, not finite, or above the marker's `plausible_max`.
    ImplausibleValue,
    ValueStringWithoutUnit,
    ValueStringNotANumber,
    UnknownComparator,
    UnknownUnit,
    /// Another Observation of the same marker at the same instant was kept.
    Duplicate,
    /// Another copy of the same resource id was kept (newer, or first in content order).
    SupersededCopy,
    ProcedureNotCompleted,
    ProcedureNoPerformedDate,
    /// A `performedDateTime` or `performedPeriod.start` that is no FHIR date.
    InvalidPerformedDate,
    ConditionRefutedOrEnteredInError,
    /// A line longer than `ingest.max_line_bytes`, skipped unread.
    LineTooLong,
    /// A server's answer to a search that the search did not ask for: a resource of another
    /// patient, another type or another id. Never read, evaluated or written.
    NotAskedFor,
}

impl SkipReason {
    pub fn key(self) -> &'static str {
        match self {
            SkipReason::InvalidJson => "invalid_json_or_structure",
            SkipReason::UnexpectedResourceType => "unexpected_resource_type",
            SkipReason::NoId => "no_id",
            SkipReason::InvalidId => "invalid_id",
            SkipReason::NoPatientReference => "no_patient_reference",
            SkipReason::CodeUnderUnknownSystem => "code_under_unknown_system",
            SkipReason::StatusNotAccepted => "status_not_accepted",
            SkipReason::NoEffectiveTime => "no_effective_time",
            SkipReason::EffectiveTimeNotAFullDate => "effective_time_not_a_full_date",
            SkipReason::InvalidEffectiveTime => "invalid_effective_time",
            SkipReason::DateOutsidePlausibleRange => "date_outside_plausible_range",
            SkipReason::DataAbsentReason => "data_absent_reason",
            SkipReason::NoValue => "no_value",
            SkipReason::ImplausibleValue => "implausible_value",
            SkipReason::ValueStringWithoutUnit => "value_string_without_unit",
            SkipReason::ValueStringNotANumber => "value_string_not_a_number",
            SkipReason::UnknownComparator => "unknown_comparator",
            SkipReason::UnknownUnit => "unknown_unit",
            SkipReason::Duplicate => "duplicate",
            SkipReason::SupersededCopy => "superseded_copy",
            SkipReason::ProcedureNotCompleted => "procedure_not_completed",
            SkipReason::ProcedureNoPerformedDate => "procedure_no_performed_date",
            SkipReason::InvalidPerformedDate => "invalid_performed_date",
            SkipReason::ConditionRefutedOrEnteredInError => "condition_refuted_or_entered_in_error",
            SkipReason::LineTooLong => "line_too_long",
            SkipReason::NotAskedFor => "not_asked_for",
        }
    }
}

/// A resource that was left out, with what a data manager needs to find it.
#[derive(Debug, Clone, PartialEq)]
pub struct Skip {
    pub reason: SkipReason,
    pub resource_id: Option<String>,
    /// The offending value where it helps (the unit, the status, the parse error).
    pub detail: Option<String>,
    /// Set when the resource is one the job follows (a monitored code) with a valid id: this
    /// copy then competes with the other copies of the same id, and only the kept copy's
    /// reason is counted.
    pub copy: Option<CopyRank>,
}

/// The outcome of reading one line.
#[derive(Debug, Clone, PartialEq)]
pub enum LineOutcome<'a> {
    Record(Record<'a>),
    Skipped(Skip),
    /// A resource that is valid but not one the job uses (another Procedure, another
    /// Condition), with its key when its id is a FHIR id: a newer copy of a resource the job
    /// follows that was re-coded still replaces the older copies (docs/rules.md §1.5).
    NotRelevant(Option<CopyKey>),
}

impl LineOutcome<'_> {
    pub fn into_owned(self) -> LineOutcome<'static> {
        match self {
            LineOutcome::Record(record) => LineOutcome::Record(record.into_owned()),
            LineOutcome::Skipped(skip) => LineOutcome::Skipped(skip),
            LineOutcome::NotRelevant(key) => LineOutcome::NotRelevant(key),
        }
    }

    /// The id and rank of a copy of a resource the job follows (a record, or a copy left out
    /// for a reason), but for Patients, whose copies are all of one patient.
    pub fn followed_copy(&self) -> Option<(&str, CopyRank)> {
        match self {
            LineOutcome::Record(record) => match record {
                Record::Patient { .. } => None,
                Record::HccCondition {
                    condition_id, rank, ..
                } => Some((condition_id, *rank)),
                Record::Tare {
                    procedure, rank, ..
                } => Some((&procedure.procedure_id, *rank)),
                Record::Value { value, rank, .. } => Some((&value.observation_id, *rank)),
            },
            LineOutcome::Skipped(skip) => Some((skip.resource_id.as_deref()?, skip.copy?)),
            LineOutcome::NotRelevant(_) => None,
        }
    }

    /// The key of a resource the job does not follow (another code, malformed, a near miss)
    /// that may still be a newer copy of one it follows; `None` for followed resources (they
    /// compete as records or skipped copies) and for those without a FHIR id.
    pub fn unfollowed_key(&self, kind: ResourceType) -> Option<CopyKey> {
        match self {
            LineOutcome::Record(_) => None,
            LineOutcome::NotRelevant(key) => *key,
            LineOutcome::Skipped(skip) => match skip.reason {
                _ if skip.copy.is_some() => None,
                // Another type's resource is not a copy of one of this type.
                SkipReason::UnexpectedResourceType => None,
                _ => skip.resource_id.as_deref().map(|id| CopyKey::of(kind, id)),
            },
        }
    }
}

/// The type, id and version of a resource, read without the rest of it.
pub struct ResourceHeader<'a> {
    /// `None` for a type the job does not read (an OperationOutcome entry, say).
    pub kind: Option<ResourceType>,
    pub id: Option<Cow<'a, str>>,
    /// Orders two versions of one resource: `meta.lastUpdated`, then a numeric
    /// `meta.versionId` (a version without them sorts first).
    pub version: (Option<i64>, Option<u64>),
}

fn version_of(meta: Option<&Meta<'_>>) -> (Option<i64>, Option<u64>) {
    match meta {
        Some(meta) => (
            meta.last_updated
                .as_deref()
                .and_then(time::parse_instant_ns),
            meta.version_id.as_deref().and_then(|v| v.parse().ok()),
        ),
        None => (None, None),
    }
}

/// The header of a resource; `None` for text that is not JSON.
pub fn resource_header(json: &str) -> Option<ResourceHeader<'_>> {
    let header: Header = serde_json::from_str(json).ok()?;
    let kind = header
        .resource_type
        .as_deref()
        .and_then(ResourceType::from_name);
    Some(ResourceHeader {
        kind,
        id: header.id.map(|text| text.0),
        version: version_of(header.meta.as_ref()),
    })
}

/// An Observation's notes as one text, or `None`.
#[allow(clippy::box_collection)] // see MarkerValue::note
fn note_text(notes: &[fhir_json::Annotation<'_>]) -> Option<Box<String>> {
    let texts: Vec<&str> = notes.iter().filter_map(|n| n.text.as_deref()).collect();
    (!texts.is_empty()).then(|| Box::new(texts.join(" / ")))
}

/// The patient a resource is about: a Patient's own id, else its `subject` (or `patient`)
/// reference. Read on its own, for resources the ingest did not turn into a record. Only a
/// valid FHIR id is returned.
pub fn patient_of_resource(json: &str) -> Option<Cow<'_, str>> {
    #[derive(serde::Deserialize)]
    struct About<'a> {
        #[serde(borrow, rename = "resourceType")]
        resource_type: Option<fhir_json::Text<'a>>,
        #[serde(borrow)]
        id: Option<fhir_json::Text<'a>>,
        #[serde(borrow)]
        subject: Option<fhir_json::Reference<'a>>,
        #[serde(borrow)]
        patient: Option<fhir_json::Reference<'a>>,
    }
    let about: About = serde_json::from_str(json).ok()?;
    if about.resource_type.as_deref() == Some("Patient") {
        return about.id.map(|id| id.0).filter(|id| is_fhir_id(id));
    }
    let reference = about.subject.or(about.patient)?.reference?;
    patient_id_of(&reference)
        .filter(|id| is_fhir_id(id))
        .map(|id| Cow::Owned(id.to_owned()))
}

/// `Patient/123`, `https://host/fhir/Patient/123` or `Patient/123/_history/2` -> `123`.
pub fn patient_id_of(reference: &str) -> Option<&str> {
    let path = reference.split("/_history/").next()?;
    let mut parts = path.rsplit('/');
    let id = parts.next()?;
    let kind = parts.next()?;
    (kind == "Patient" && !id.is_empty()).then_some(id)
}

/// A FHIR `id`: `[A-Za-z0-9\-\.]{1,64}`. Anything else is never put into a URL or a file name.
pub fn is_fhir_id(text: &str) -> bool {
    is_fhir_id_bytes(text.as_bytes())
}

/// `is_fhir_id` on bytes not yet known to be text.
pub fn is_fhir_id_bytes(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'.')
}

/// An id that is not a FHIR id, shown safely: escaped, and cut to 80 characters.
pub fn describe_bad_id(text: &str) -> String {
    let shown: String = text.chars().take(80).collect();
    let more = if text.chars().count() > 80 { "..." } else { "" };
    format!("{shown:?}{more}")
}

/// The patient id of a subject reference, borrowed from the line when the JSON had no escapes.
fn subject_patient_id<'a>(subject: Option<&Reference<'a>>) -> Option<Cow<'a, str>> {
    match &subject?.reference.as_ref()?.0 {
        Cow::Borrowed(reference) => patient_id_of(reference).map(Cow::Borrowed),
        Cow::Owned(reference) => patient_id_of(reference).map(|id| Cow::Owned(id.to_owned())),
    }
}

fn skip<'a>(reason: SkipReason, id: Option<&str>, detail: Option<String>) -> LineOutcome<'a> {
    LineOutcome::Skipped(Skip {
        reason,
        resource_id: id.map(|s| s.to_string()),
        detail,
        copy: None,
    })
}

/// A skip of a resource the job follows: it competes with the other copies of its id.
fn skip_copy<'a>(
    reason: SkipReason,
    id: &str,
    detail: Option<String>,
    rank: CopyRank,
) -> LineOutcome<'a> {
    LineOutcome::Skipped(Skip {
        reason,
        resource_id: Some(id.to_owned()),
        detail,
        copy: Some(rank),
    })
}

/// How a coded element relates to a value set.
enum CodeMatch<T> {
    Found(T),
    /// A configured code under a system the job does not know by that name (or no system).
    NearMiss(String),
    NotInSet,
}

/// Configured codes, by code, with the system each is configured under.
struct ValueSet<T> {
    by_code: FxHashMap<String, Vec<(SystemId, T)>>,
}

impl<T: Copy> ValueSet<T> {
    /// Every code of the set.
    fn codes(&self) -> Vec<&str> {
        self.by_code.keys().map(String::as_str).collect()
    }

    fn new<'c>(systems: &mut CodeSystems, codes: impl IntoIterator<Item = (&'c Code, T)>) -> Self {
        let mut by_code: FxHashMap<String, Vec<(SystemId, T)>> = FxHashMap::default();
        for (code, tag) in codes {
            // validate() refuses an empty system, the only name intern() turns down.
            if let Ok(system) = systems.intern(&code.system) {
                by_code
                    .entry(code.code.clone())
                    .or_default()
                    .push((system, tag));
            }
        }
        ValueSet { by_code }
    }

    /// The first coding whose code and system (by any of its names) are in the set; else the
    /// first configured code under an unknown system, as a near miss.
    fn classify(
        &self,
        systems: &CodeSystems,
        concept: Option<&CodeableConcept<'_>>,
    ) -> CodeMatch<T> {
        let Some(concept) = concept else {
            return CodeMatch::NotInSet;
        };
        let mut near_miss = None;
        for coding in &concept.coding {
            let Some(candidates) = coding.code.as_deref().and_then(|c| self.by_code.get(c)) else {
                continue;
            };
            match coding.system.as_deref() {
                None => {
                    near_miss.get_or_insert_with(|| "(no system)".to_owned());
                }
                Some(name) => match systems.identify(name) {
                    Some(system) => {
                        if let Some((_, tag)) = candidates.iter().find(|(s, _)| *s == system) {
                            return CodeMatch::Found(*tag);
                        }
                    }
                    None => {
                        near_miss.get_or_insert_with(|| name.to_owned());
                    }
                },
            }
        }
        match near_miss {
            Some(system) => CodeMatch::NearMiss(system),
            None => CodeMatch::NotInSet,
        }
    }
}

/// The calendar dates a procedure or result may plausibly carry.
#[derive(Debug, Clone, Copy)]
struct PlausibleDates {
    earliest: NaiveDate,
    latest: NaiveDate,
}

impl PlausibleDates {
    fn contain(&self, date: NaiveDate) -> bool {
        (self.earliest..=self.latest).contains(&date)
    }
}

/// Code lookups and limits built once from the config and the as-of date.
pub struct Ingestor {
    systems: CodeSystems,
    observation_codes: ValueSet<CodeFamily>,
    tare_codes: ValueSet<()>,
    hcc_codes: ValueSet<()>,
    accepted_statuses: Vec<String>,
    tz: Tz,
    config: crate::config::IngestConfig,
    dates: PlausibleDates,
    /// `markers.*.plausible_max`, in the canonical unit.
    plausible_max: FxHashMap<Marker, f64>,
    /// The `referenceRange.high` a marker's results may carry to be used: its default ULN
    /// times `markers.*.reference_high_band`; none for a marker without a ULN.
    plausible_reference_high: FxHashMap<Marker, Option<(f64, f64)>>,
    /// In a sharded run, only the resources of this shard's patients are read and counted.
    shard: Option<crate::cohort::Shard>,
    /// Lines that provably cannot matter (`ingest.pass_over_irrelevant_lines`).
    prefilter: Option<prefilter::Prefilter>,
    /// `[report] mrn_system`: which `Patient.identifier` is the MRN.
    mrn_system: Option<String>,
    /// The run's as-of date: an MRN whose period ended before it is retired.
    as_of: NaiveDate,
}

impl Ingestor {
    /// Dates are plausible from `ingest.earliest_plausible_date` to `as_of` plus
    /// `ingest.latest_plausible_days_after_as_of`.
    pub fn new(config: &Config, as_of: NaiveDate) -> Ingestor {
        // validate() has refused a configuration whose aliases conflict.
        let mut systems = config
            .code_systems()
            .unwrap_or_else(|_| CodeSystems::built_in());
        let codes = &config.codes;
        let observation_codes = ValueSet::new(
            &mut systems,
            [
                (&codes.pivka, CodeFamily::Pivka),
                (&codes.afp, CodeFamily::Afp),
                (&codes.afp_l3, CodeFamily::AfpL3),
                (&codes.albumin, CodeFamily::Albumin),
                (&codes.bilirubin, CodeFamily::Bilirubin),
            ]
            .into_iter()
            .flat_map(|(set, family)| set.iter().map(move |code| (code, family))),
        );
        let tare_codes = ValueSet::new(&mut systems, codes.tare_procedure.iter().map(|c| (c, ())));
        let hcc_codes = ValueSet::new(&mut systems, codes.hcc_condition.iter().map(|c| (c, ())));
        // Built from the same codes as the value sets: a line without any of them cannot
        // classify as Found or NearMiss.
        let prefilter = config.ingest.pass_over_irrelevant_lines.then(|| {
            prefilter::Prefilter::new(
                &hcc_codes.codes(),
                &tare_codes.codes(),
                &observation_codes.codes(),
            )
        });
        let latest = as_of
            .checked_add_signed(Duration::days(
                config.ingest.latest_plausible_days_after_as_of,
            ))
            .unwrap_or(NaiveDate::MAX);
        Ingestor {
            systems,
            observation_codes,
            tare_codes,
            hcc_codes,
            accepted_statuses: config.ingest.accepted_statuses.clone(),
            tz: config.time_zone(),
            config: config.ingest.clone(),
            dates: PlausibleDates {
                earliest: config.ingest.earliest_plausible_date,
                latest,
            },
            plausible_max: Marker::ALL
                .into_iter()
                .map(|m| (m, config.markers.get(m).plausible_max))
                .collect(),
            plausible_reference_high: Marker::ALL
                .into_iter()
                .map(|m| {
                    let limit = config.markers.get(m);
                    let [low, high] = limit.reference_high_band;
                    (m, limit.uln.map(|uln| (uln * low, uln * high)))
                })
                .collect(),
            shard: None,
            prefilter,
            mrn_system: config.report.mrn_system.clone(),
            as_of,
        }
    }

    /// Whether a Bulk Data line of a `kind` file provably holds nothing the job uses (see
    /// `prefilter`): then it is counted as not relevant without being parsed, and its key
    /// kept in case it is a newer copy of a resource that is read.
    pub fn passes_over(&self, kind: ResourceType, line: &[u8]) -> Option<PassedOver> {
        self.prefilter.as_ref()?.pass_over(kind, line)
    }

    /// `passes_over` for a line whose backslashes were looked for with its end: `false` when
    /// it holds none.
    pub fn passes_over_scanned(
        &self,
        kind: ResourceType,
        line: &[u8],
        may_hold_escapes: bool,
    ) -> Option<PassedOver> {
        self.prefilter
            .as_ref()?
            .pass_over_scanned(kind, line, may_hold_escapes)
    }

    /// The keys of a line the job does not follow (passed over, another code, malformed, a
    /// near miss), as the first read kept them; none for a followed resource.
    pub fn unfollowed_keys(&self, kind: ResourceType, line: &str) -> SmallVec<[CopyKey; 2]> {
        match self.passes_over(kind, line.as_bytes()) {
            Some(passed) => passed.keys,
            None => self
                .read_line(kind, line)
                .unfollowed_key(kind)
                .into_iter()
                .collect(),
        }
    }

    /// The id and copy rank of a line of a `kind` file that was not followed, read again to
    /// rank it against the copies of a resource that was; `None` when its header cannot be
    /// read (then it cannot be ranked, and is no copy of anything).
    pub fn copy_rank(&self, kind: ResourceType, line: &str) -> Option<(String, CopyRank)> {
        let header = resource_header(line)?;
        let id = header.id.filter(|id| is_fhir_id(id))?;
        if header.kind != Some(kind) {
            return None;
        }
        let (last_updated, version_id) = header.version;
        let rank = CopyRank::new(last_updated, version_id, content_fingerprint(line));
        Some((id.into_owned(), rank))
    }

    /// An ingestor that keeps only the resources of one shard's patients.
    pub fn for_shard(mut self, shard: Option<crate::cohort::Shard>) -> Ingestor {
        self.shard = shard;
        self
    }

    /// Whether a resource read as `outcome` belongs to this run's shard: by its patient, or,
    /// when no patient can be told (a line that is not JSON) or none matters (a resource of
    /// no monitored code), to shard 0 only, so that the counts of all shards add up to those
    /// of one unsharded run.
    pub fn in_shard(&self, outcome: &LineOutcome<'_>, json: &str) -> bool {
        let Some(shard) = self.shard else { return true };
        let patient = match outcome {
            LineOutcome::Record(record) => Some(Cow::Borrowed(record.patient_id())),
            // Not relevant: counted by shard 0, as the lines passed over unparsed are.
            LineOutcome::NotRelevant(_) => None,
            _ => patient_of_resource(json),
        };
        match patient {
            Some(id) => shard.contains(&id),
            None => shard.index == 0,
        }
    }

    /// `ingest.max_line_bytes`: a longer line is skipped unread.
    pub fn max_line_bytes(&self) -> usize {
        self.config.max_line_bytes
    }

    /// `ingest.max_read_minutes`: reading a folder ends with an error after this long.
    pub fn max_read_minutes(&self) -> f64 {
        self.config.max_read_minutes
    }

    /// Whether this run's shard counts what cannot be tied to a patient (a line that is not
    /// text, a line too long to read).
    pub fn counts_unattributable(&self) -> bool {
        self.shard.is_none_or(|shard| shard.index == 0)
    }

    /// Reads one NDJSON line expected to hold a resource of `expected`.
    pub fn read_line<'a>(&self, expected: ResourceType, line: &'a str) -> LineOutcome<'a> {
        let parsed = match expected {
            ResourceType::Observation => {
                serde_json::from_str::<ObservationIn>(line).map(|o| self.observation(o, line))
            }
            ResourceType::Patient => {
                serde_json::from_str::<PatientIn>(line).map(|p| self.patient(p, line))
            }
            ResourceType::Procedure => {
                serde_json::from_str::<ProcedureIn>(line).map(|p| self.procedure(p, line))
            }
            ResourceType::Condition => {
                serde_json::from_str::<ConditionIn>(line).map(|c| self.condition(c, line))
            }
        };
        match parsed {
            Ok(outcome) => outcome,
            Err(error) => {
                // Recover the id where the JSON itself is sound, so the data manager can find it.
                let id = resource_header(line)
                    .and_then(|h| h.id.map(Cow::into_owned))
                    .filter(|id| is_fhir_id(id));
                LineOutcome::Skipped(Skip {
                    reason: SkipReason::InvalidJson,
                    resource_id: id,
                    detail: Some(error.to_string()),
                    copy: None,
                })
            }
        }
    }

    fn rank(meta: Option<&Meta<'_>>, line: &str) -> CopyRank {
        let (last_updated, version_id) = version_of(meta);
        CopyRank::new(last_updated, version_id, content_fingerprint(line))
    }

    fn check_type(
        expected: ResourceType,
        found: Option<&str>,
        id: Option<&str>,
    ) -> Option<LineOutcome<'static>> {
        match found {
            Some(t) if t == expected.name() => None,
            other => Some(skip(
                SkipReason::UnexpectedResourceType,
                id.filter(|id| is_fhir_id(id)),
                Some(format!(
                    "expected {}, found {}",
                    expected.name(),
                    other
                        .map(describe_bad_id)
                        .unwrap_or_else(|| "no resourceType".into())
                )),
            )),
        }
    }

    /// The resource's own id, when it is a FHIR id; else why it is left out.
    fn own_id(id: Option<&str>) -> Result<&str, Skip> {
        let left_out = |reason, detail| Skip {
            reason,
            resource_id: None,
            detail,
            copy: None,
        };
        match id {
            None => Err(left_out(SkipReason::NoId, None)),
            Some(id) if !is_fhir_id(id) => Err(left_out(
                SkipReason::InvalidId,
                Some(format!("id {}", describe_bad_id(id))),
            )),
            Some(id) => Ok(id),
        }
    }

    /// The subject's patient id, when it is a FHIR id; else why the resource is left out.
    fn subject<'a>(
        subject: Option<&Reference<'a>>,
        id: &str,
        rank: CopyRank,
    ) -> Result<Cow<'a, str>, Skip> {
        let left_out = |reason, detail| Skip {
            reason,
            resource_id: Some(id.to_owned()),
            detail,
            copy: Some(rank),
        };
        match subject_patient_id(subject) {
            None => Err(left_out(SkipReason::NoPatientReference, None)),
            Some(patient) if !is_fhir_id(&patient) => Err(left_out(
                SkipReason::InvalidId,
                Some(format!("subject Patient/{}", describe_bad_id(&patient))),
            )),
            Some(patient) => Ok(patient),
        }
    }

    fn not_relevant<'a>(kind: ResourceType, id: Option<&str>) -> LineOutcome<'a> {
        LineOutcome::NotRelevant(
            id.filter(|id| is_fhir_id(id))
                .map(|id| CopyKey::of(kind, id)),
        )
    }

    fn near_miss<'a>(id: Option<&str>, system: String) -> LineOutcome<'a> {
        skip(
            SkipReason::CodeUnderUnknownSystem,
            id.filter(|id| is_fhir_id(id)),
            Some(system),
        )
    }

    fn observation<'a>(&self, o: ObservationIn<'a>, line: &str) -> LineOutcome<'a> {
        let id = o.id.as_deref();
        if let Some(wrong) =
            Self::check_type(ResourceType::Observation, o.resource_type.as_deref(), id)
        {
            return wrong;
        }
        let family = match self
            .observation_codes
            .classify(&self.systems, o.code.as_ref())
        {
            CodeMatch::Found(family) => family,
            CodeMatch::NearMiss(system) => return Self::near_miss(id, system),
            CodeMatch::NotInSet => return Self::not_relevant(ResourceType::Observation, id),
        };
        let observation_id = match Self::own_id(id) {
            Ok(id) => id,
            Err(skip) => return LineOutcome::Skipped(skip),
        };
        let rank = Self::rank(o.meta.as_ref(), line);
        let left_out =
            |reason, detail: Option<String>| skip_copy(reason, observation_id, detail, rank);
        let patient_id = match Self::subject(o.subject.as_ref(), observation_id, rank) {
            Ok(patient) => patient,
            Err(skip) => return LineOutcome::Skipped(skip),
        };
        let status = o.status.as_deref().unwrap_or("");
        if !self.accepted_statuses.iter().any(|s| s == status) {
            return left_out(SkipReason::StatusNotAccepted, Some(status.to_owned()));
        }
        if o.data_absent_reason.is_some() {
            return left_out(SkipReason::DataAbsentReason, None);
        }
        let time_text = o
            .effective_date_time
            .as_deref()
            .or(o.effective_period.as_ref().and_then(|p| p.start.as_deref()))
            .or(o.effective_instant.as_deref());
        let Some(time_text) = time_text else {
            return left_out(SkipReason::NoEffectiveTime, None);
        };
        let moment = match time::parse_moment(time_text, self.tz) {
            Ok(m) => m,
            Err(time::TimeError::NotAFullDate) => {
                return left_out(
                    SkipReason::EffectiveTimeNotAFullDate,
                    Some(time_text.to_owned()),
                )
            }
            Err(time::TimeError::Invalid) => {
                return left_out(SkipReason::InvalidEffectiveTime, Some(time_text.to_owned()))
            }
        };
        if !self.dates.contain(moment.date) {
            return left_out(
                SkipReason::DateOutsidePlausibleRange,
                Some(time_text.to_owned()),
            );
        }
        // The number, its censoring and its unit, from valueQuantity or valueString.
        let (number, censoring, ucum, printed) = if let Some(q) = &o.value_quantity {
            let Some(number) = q.value else {
                return left_out(SkipReason::NoValue, None);
            };
            let Some(censoring) = units::censoring_of(q.comparator.as_deref()) else {
                return left_out(
                    SkipReason::UnknownComparator,
                    q.comparator.as_deref().map(str::to_owned),
                );
            };
            // `code` is a UCUM code only under UCUM (by any of its names) or no system.
            let ucum = q
                .code
                .as_deref()
                .filter(|_| self.systems.is_ucum(q.system.as_deref()));
            (number, censoring, ucum, q.unit.as_deref())
        } else if let Some(text) = o.value_string.as_deref() {
            match units::parse_value_string(text) {
                Ok(p) => (p.number, p.censoring, None, Some(p.unit)),
                Err(units::ValueStringError::NoUnit) => {
                    return left_out(SkipReason::ValueStringWithoutUnit, Some(text.to_owned()))
                }
                Err(units::ValueStringError::NotANumber) => {
                    return left_out(SkipReason::ValueStringNotANumber, Some(text.to_owned()))
                }
            }
        } else {
            return left_out(SkipReason::NoValue, None);
        };
        if !number.is_finite() || number < 0.0 {
            return left_out(SkipReason::ImplausibleValue, Some(number.to_string()));
        }
        let Some((marker, factor)) = units::resolve_unit(family, ucum, printed, &self.config)
        else {
            let unit = ucum.or(printed).unwrap_or("(none)");
            return left_out(SkipReason::UnknownUnit, Some(unit.to_owned()));
        };
        let value = units::in_canonical_unit(number, factor);
        let plausible_max = self.plausible_max[&marker];
        if value > plausible_max {
            return left_out(
                SkipReason::ImplausibleValue,
                Some(format!(
                    "{} {} is above the plausible maximum of {} (markers.{}.plausible_max)",
                    value,
                    marker.canonical_unit(),
                    plausible_max,
                    marker.key()
                )),
            );
        }
        // referenceRange.high counts only when it converts into the same marker.
        let reference_high = o.reference_range.iter().find_map(|range| {
            let high = range.high.as_ref()?;
            // A negative high is kept here to be counted as implausible below.
            let value = high.value.filter(|v| v.is_finite())?;
            let (range_marker, range_factor) = units::resolve_unit(
                family,
                high.code.as_deref().or(ucum),
                high.unit.as_deref().or(printed),
                &self.config,
            )?;
            (range_marker == marker).then(|| units::in_canonical_unit(value, range_factor))
        });
        let reference_high_implausible = reference_high.is_some_and(|high| {
            self.plausible_reference_high[&marker]
                .is_some_and(|(low, top)| !(low..=top).contains(&high))
        });
        LineOutcome::Record(Record::Value {
            patient_id,
            value: MarkerValue {
                marker,
                value,
                censoring,
                date: moment.date,
                instant_ms: moment.instant_ms,
                observation_id: observation_id.into(),
                reference_high: reference_high.into(),
                reference_high_implausible,
                note: note_text(&o.note),
            },
            rank,
        })
    }

    fn patient<'a>(&self, p: PatientIn<'a>, line: &str) -> LineOutcome<'a> {
        let id = p.id.as_deref();
        if let Some(wrong) = Self::check_type(ResourceType::Patient, p.resource_type.as_deref(), id)
        {
            return wrong;
        }
        let patient_id = match Self::own_id(id) {
            Ok(id) => id,
            Err(skip) => return LineOutcome::Skipped(skip),
        };
        // A partial, invalid or implausible birth date is kept as unknown (evaluated and
        // noted).
        let birth_date = p
            .birth_date
            .as_deref()
            .and_then(time::parse_date)
            .filter(|d| *d >= self.dates.earliest && *d <= self.dates.latest);
        let name = chosen_name(&p.name);
        let mrn = self.chosen_mrn(&p.identifier);
        LineOutcome::Record(Record::Patient {
            patient_id: Cow::Owned(patient_id.to_owned()),
            birth_date,
            name,
            mrn,
            rank: Self::rank(p.meta.as_ref(), line),
        })
    }

    /// The MRN: an identifier of the configured system, else any; of those, the one in use
    /// (`official`, then `usual`, then one without a `use`, then `temp` or `secondary`), never a
    /// retired one (`old`, or a `period` that ended before the as-of date) while another
    /// has a value; the first of equals. Its value without surrounding white space (a padded
    /// MRN is the same MRN).
    fn chosen_mrn(&self, identifiers: &[fhir_json::IdentifierIn<'_>]) -> Option<String> {
        let value_of = |i: &fhir_json::IdentifierIn<'_>| {
            i.value
                .as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let ended = |i: &fhir_json::IdentifierIn<'_>| {
            i.period
                .as_ref()
                .and_then(|p| p.end.as_deref())
                .and_then(|end| time::parse_date(end.get(..10).unwrap_or(end)))
                .is_some_and(|end| end < self.as_of)
        };
        let rank = |i: &fhir_json::IdentifierIn<'_>| match i.identifier_use.as_deref() {
            _ if ended(i) => 4,
            Some("official") => 0,
            Some("usual") => 1,
            None => 2,
            Some("old") => 4,
            Some(_) => 3,
        };
        let best = |candidates: &mut dyn Iterator<Item = &fhir_json::IdentifierIn<'_>>| {
            candidates
                .filter_map(|i| Some((rank(i), value_of(i)?)))
                .min_by_key(|(rank, _)| *rank)
                .map(|(_, value)| value)
        };
        self.mrn_system
            .as_deref()
            .and_then(|system| {
                best(
                    &mut identifiers
                        .iter()
                        .filter(|i| i.system.as_deref() == Some(system)),
                )
            })
            .or_else(|| best(&mut identifiers.iter()))
    }

    fn procedure<'a>(&self, p: ProcedureIn<'a>, line: &str) -> LineOutcome<'a> {
        let id = p.id.as_deref();
        if let Some(wrong) =
            Self::check_type(ResourceType::Procedure, p.resource_type.as_deref(), id)
        {
            return wrong;
        }
        match self.tare_codes.classify(&self.systems, p.code.as_ref()) {
            CodeMatch::Found(()) => {}
            CodeMatch::NearMiss(system) => return Self::near_miss(id, system),
            CodeMatch::NotInSet => return Self::not_relevant(ResourceType::Procedure, id),
        }
        let procedure_id = match Self::own_id(id) {
            Ok(id) => id,
            Err(skip) => return LineOutcome::Skipped(skip),
        };
        let rank = Self::rank(p.meta.as_ref(), line);
        let left_out =
            |reason, detail: Option<String>| skip_copy(reason, procedure_id, detail, rank);
        let patient_id = match Self::subject(p.subject.as_ref(), procedure_id, rank) {
            Ok(patient) => patient,
            Err(skip) => return LineOutcome::Skipped(skip),
        };
        let status = p.status.as_deref().unwrap_or("");
        if status != "completed" {
            return left_out(SkipReason::ProcedureNotCompleted, Some(status.to_owned()));
        }
        let performed = p.performed_date_time.as_deref().or(p
            .performed_period
            .as_ref()
            .and_then(|pp| pp.start.as_deref()));
        let Some(performed) = performed else {
            return left_out(SkipReason::ProcedureNoPerformedDate, None);
        };
        match time::parse_moment(performed, self.tz) {
            Ok(moment) if !self.dates.contain(moment.date) => left_out(
                SkipReason::DateOutsidePlausibleRange,
                Some(performed.to_owned()),
            ),
            Ok(moment) => LineOutcome::Record(Record::Tare {
                patient_id,
                procedure: TareProcedure {
                    procedure_id: procedure_id.to_owned(),
                    date: moment.date,
                },
                rank,
            }),
            Err(_) => left_out(SkipReason::InvalidPerformedDate, Some(performed.to_owned())),
        }
    }

    fn condition<'a>(&self, c: ConditionIn<'a>, line: &str) -> LineOutcome<'a> {
        let id = c.id.as_deref();
        if let Some(wrong) =
            Self::check_type(ResourceType::Condition, c.resource_type.as_deref(), id)
        {
            return wrong;
        }
        match self.hcc_codes.classify(&self.systems, c.code.as_ref()) {
            CodeMatch::Found(()) => {}
            CodeMatch::NearMiss(system) => return Self::near_miss(id, system),
            CodeMatch::NotInSet => return Self::not_relevant(ResourceType::Condition, id),
        }
        let condition_id = match Self::own_id(id) {
            Ok(id) => id,
            Err(skip) => return LineOutcome::Skipped(skip),
        };
        let rank = Self::rank(c.meta.as_ref(), line);
        let patient_id = match Self::subject(c.subject.as_ref(), condition_id, rank) {
            Ok(patient) => patient,
            Err(skip) => return LineOutcome::Skipped(skip),
        };
        let refuted = c.verification_status.as_ref().is_some_and(|v| {
            v.coding.iter().any(|coding| {
                matches!(
                    coding.code.as_deref(),
                    Some("refuted") | Some("entered-in-error")
                )
            })
        });
        if refuted {
            return skip_copy(
                SkipReason::ConditionRefutedOrEnteredInError,
                condition_id,
                None,
                rank,
            );
        }
        LineOutcome::Record(Record::HccCondition {
            patient_id,
            condition_id: condition_id.into(),
            rank,
        })
    }
}

/// The name the report shows: the first `official` name, else `usual`, else one without a
/// `use`, else any other (nickname, maiden, ...), and an `old` name only when no other has any
/// text. A name reads as its `text`, else its given names and family name.
fn chosen_name(names: &[fhir_json::HumanName<'_>]) -> Option<String> {
    let rank = |n: &fhir_json::HumanName<'_>| match n.name_use.as_deref() {
        Some("official") => 0,
        Some("usual") => 1,
        None => 2,
        Some("old") => 4,
        Some(_) => 3,
    };
    let words = |n: &fhir_json::HumanName<'_>| {
        let text = match n.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            Some(text) => text.to_owned(),
            None => n
                .given
                .iter()
                .map(|g| g.as_ref())
                .chain(n.family.as_deref())
                .map(str::trim)
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
        };
        (!text.is_empty()).then_some(text)
    };
    names
        .iter()
        .filter_map(|n| Some((rank(n), words(n)?)))
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, text)| text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Censoring;

    fn name_of(names: &str) -> Option<String> {
        let json = format!("{{\"resourceType\":\"Patient\",\"name\":{names}}}");
        let patient: fhir_json::PatientIn<'_> = serde_json::from_str(&json).unwrap();
        chosen_name(&patient.name)
    }

    fn mrn_of(identifiers: &str, mrn_system: Option<&str>) -> Option<String> {
        let mut config = Config::default();
        config.report.mrn_system = mrn_system.map(str::to_owned);
        let ingestor = Ingestor::new(&config, NaiveDate::from_ymd_opt(2026, 11, 1).unwrap());
        let json = format!("{{\"resourceType\":\"Patient\",\"identifier\":{identifiers}}}");
        let patient: fhir_json::PatientIn<'_> = serde_json::from_str(&json).unwrap();
        ingestor.chosen_mrn(&patient.identifier)
    }

    #[test]
    fn a_retired_mrn_is_never_shown_while_one_in_use_has_a_value() {
        let old = r#"[{"use":"old","system":"urn:mrn","value":"OLD-1"},{"system":"urn:mrn","value":"NEW-1"}]"#;
        assert_eq!(mrn_of(old, Some("urn:mrn")).as_deref(), Some("NEW-1"));
        assert_eq!(mrn_of(old, None).as_deref(), Some("NEW-1"));
        let ended = r#"[{"system":"urn:mrn","value":"EXP-2","period":{"end":"2020-01-01"}},{"system":"urn:mrn","value":"CUR-2"}]"#;
        assert_eq!(mrn_of(ended, Some("urn:mrn")).as_deref(), Some("CUR-2"));
        // A period ending after the as-of date is still in use; official comes first.
        let ranked = r#"[{"system":"urn:mrn","value":"A","period":{"end":"2027-01-01"}},{"use":"official","system":"urn:mrn","value":"B"}]"#;
        assert_eq!(mrn_of(ranked, Some("urn:mrn")).as_deref(), Some("B"));
        // Only a retired one: shown rather than none.
        let only_old = r#"[{"use":"old","system":"urn:mrn","value":"OLD-3"}]"#;
        assert_eq!(mrn_of(only_old, None).as_deref(), Some("OLD-3"));
    }

    #[test]
    fn the_official_name_comes_before_usual_unmarked_and_old_ones() {
        let names = r#"[{"use":"old","text":"Old Name"},{"text":"Plain Name"},
            {"use":"usual","text":"Usual Name"},{"use":"official","given":["Ann"],"family":"Official"}]"#;
        assert_eq!(name_of(names).as_deref(), Some("Ann Official"));
        let names = r#"[{"use":"old","text":"Old Name"},{"text":"Plain Name"},{"use":"usual","text":"Usual Name"}]"#;
        assert_eq!(name_of(names).as_deref(), Some("Usual Name"));
        let names = r#"[{"use":"old","text":"Old Name"},{"use":"nickname","text":"Nick"},{"text":"Plain Name"}]"#;
        assert_eq!(name_of(names).as_deref(), Some("Plain Name"));
    }

    #[test]
    fn an_old_name_is_shown_only_when_no_other_name_has_text() {
        let names = r#"[{"use":"old","text":"Old Name"},{"use":"nickname","text":"Nick"}]"#;
        assert_eq!(name_of(names).as_deref(), Some("Nick"));
        let names = r#"[{"use":"official","text":"  "},{"use":"old","family":"Older"}]"#;
        assert_eq!(name_of(names).as_deref(), Some("Older"));
        assert_eq!(name_of("[]"), None);
    }

    #[test]
    fn patient_reference_forms() {
        assert_eq!(patient_id_of("Patient/123"), Some("123"));
        assert_eq!(patient_id_of("https://h/fhir/Patient/a-1"), Some("a-1"));
        assert_eq!(patient_id_of("Patient/9/_history/2"), Some("9"));
        assert_eq!(patient_id_of("Group/9"), None);
        assert_eq!(patient_id_of("123"), None);
    }

    #[test]
    fn censoring_is_exact_without_comparator() {
        assert_eq!(units::censoring_of(None), Some(Censoring::Exact));
    }

    #[test]
    fn copy_rank_orders_last_updated_then_version_then_content() {
        let rank = CopyRank::new;
        assert!(rank(None, Some(9), 9) < rank(Some(0), None, 0));
        assert!(rank(Some(5), None, 9) < rank(Some(5), Some(0), 0));
        assert!(rank(Some(5), Some(1), 9) < rank(Some(5), Some(2), 0));
        assert!(rank(Some(5), Some(2), 1) < rank(Some(5), Some(2), 2));
        assert_eq!(rank(Some(7), None, 0).last_updated_ns(), Some(7));
        assert_eq!(rank(None, None, 0).last_updated_ns(), None);
    }

    #[test]
    fn fhir_ids_are_checked_by_their_grammar() {
        assert!(is_fhir_id("demo-01.a"));
        assert!(is_fhir_id(&"a".repeat(64)));
        assert!(!is_fhir_id(&"a".repeat(65)));
        for bad in ["", "é1", "a/b", "a b", "a\u{0}"] {
            assert!(!is_fhir_id(bad), "{bad:?}");
        }
        assert_eq!(describe_bad_id("a\u{0}b"), "\"a\\0b\"");
    }
}
