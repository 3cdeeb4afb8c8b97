//! FHIR R4 JSON -> domain records. Lean, borrowed read structs with explicit checks: a resource
//! that cannot be used is counted under its reason (RULES.md §1) and the rest goes on.

mod fhir_json;
pub mod quality;
pub mod time;
pub mod units;

use crate::config::{Code, Config};
use crate::domain::{MarkerValue, TareProcedure};
use chrono::NaiveDate;
use chrono_tz::Tz;
use fhir_json::{
    CodeableConcept, ConditionIn, Header, ObservationIn, PatientIn, ProcedureIn, Reference,
};
pub use quality::DataQuality;
use rustc_hash::FxHashMap;
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

/// What one resource contributes. The patient id borrows from the line where it can, so the
/// common case allocates nothing for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Record<'a> {
    Patient {
        patient_id: Cow<'a, str>,
        birth_date: Option<NaiveDate>,
        name: Option<String>,
    },
    /// A qualifying HCC diagnosis.
    HccCondition { patient_id: Cow<'a, str> },
    Tare {
        patient_id: Cow<'a, str>,
        procedure: TareProcedure,
    },
    Value {
        patient_id: Cow<'a, str>,
        value: MarkerValue,
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
            } => Record::Patient {
                patient_id: own(patient_id),
                birth_date,
                name,
            },
            Record::HccCondition { patient_id } => Record::HccCondition {
                patient_id: own(patient_id),
            },
            Record::Tare {
                patient_id,
                procedure,
            } => Record::Tare {
                patient_id: own(patient_id),
                procedure,
            },
            Record::Value { patient_id, value } => Record::Value {
                patient_id: own(patient_id),
                value,
            },
        }
    }

    pub fn patient_id(&self) -> &str {
        match self {
            Record::Patient { patient_id, .. }
            | Record::HccCondition { patient_id }
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
    NoPatientReference,
    /// Not a code of any monitored value set: not an error, counted for completeness.
    NotMonitoredCode,
    StatusNotAccepted,
    NoEffectiveTime,
    EffectiveTimeNotAFullDate,
    InvalidEffectiveTime,
    DataAbsentReason,
    NoValue,
    ValueStringWithoutUnit,
    ValueStringNotANumber,
    UnknownComparator,
    UnknownUnit,
    Duplicate,
    ProcedureNotCompleted,
    ProcedureNoPerformedDate,
    ConditionRefutedOrEnteredInError,
    BirthDateInvalid,
}

impl SkipReason {
    pub fn key(self) -> &'static str {
        match self {
            SkipReason::InvalidJson => "invalid_json_or_structure",
            SkipReason::UnexpectedResourceType => "unexpected_resource_type",
            SkipReason::NoId => "no_id",
            SkipReason::NoPatientReference => "no_patient_reference",
            SkipReason::NotMonitoredCode => "not_a_monitored_code",
            SkipReason::StatusNotAccepted => "status_not_accepted",
            SkipReason::NoEffectiveTime => "no_effective_time",
            SkipReason::EffectiveTimeNotAFullDate => "effective_time_not_a_full_date",
            SkipReason::InvalidEffectiveTime => "invalid_effective_time",
            SkipReason::DataAbsentReason => "data_absent_reason",
            SkipReason::NoValue => "no_value",
            SkipReason::ValueStringWithoutUnit => "value_string_without_unit",
            SkipReason::ValueStringNotANumber => "value_string_not_a_number",
            SkipReason::UnknownComparator => "unknown_comparator",
            SkipReason::UnknownUnit => "unknown_unit",
            SkipReason::Duplicate => "duplicate",
            SkipReason::ProcedureNotCompleted => "procedure_not_completed",
            SkipReason::ProcedureNoPerformedDate => "procedure_no_performed_date",
            SkipReason::ConditionRefutedOrEnteredInError => "condition_refuted_or_entered_in_error",
            SkipReason::BirthDateInvalid => "birth_date_not_a_full_date",
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
}

/// The outcome of reading one line.
#[derive(Debug, Clone, PartialEq)]
pub enum LineOutcome<'a> {
    Record(Record<'a>),
    Skipped(Skip),
    /// A resource that is valid but not one the job uses (another Procedure, another Condition).
    NotRelevant,
}

impl LineOutcome<'_> {
    pub fn into_owned(self) -> LineOutcome<'static> {
        match self {
            LineOutcome::Record(record) => LineOutcome::Record(record.into_owned()),
            LineOutcome::Skipped(skip) => LineOutcome::Skipped(skip),
            LineOutcome::NotRelevant => LineOutcome::NotRelevant,
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

/// The header of a resource; `None` for text that is not JSON.
pub fn resource_header(json: &str) -> Option<ResourceHeader<'_>> {
    let header: Header = serde_json::from_str(json).ok()?;
    let kind = header
        .resource_type
        .as_deref()
        .and_then(ResourceType::from_name);
    let (last_updated, version_id) = match &header.meta {
        Some(meta) => (
            meta.last_updated
                .as_deref()
                .and_then(time::parse_instant_ms),
            meta.version_id.as_deref().and_then(|v| v.parse().ok()),
        ),
        None => (None, None),
    };
    Some(ResourceHeader {
        kind,
        id: header.id,
        version: (last_updated, version_id),
    })
}

/// An Observation's notes as one text, or `None`.
fn note_text(notes: &[fhir_json::Annotation<'_>]) -> Option<Box<str>> {
    let texts: Vec<&str> = notes.iter().filter_map(|n| n.text.as_deref()).collect();
    (!texts.is_empty()).then(|| texts.join(" / ").into_boxed_str())
}

/// Code lookups built once from the config.
pub struct Ingestor {
    observation_codes: FxHashMap<String, Vec<(String, CodeFamily)>>,
    tare_codes: Vec<Code>,
    hcc_codes: Vec<Code>,
    accepted_statuses: Vec<String>,
    tz: Tz,
    config: crate::config::IngestConfig,
    /// In a sharded run, only the resources of this shard's patients are read and counted.
    shard: Option<crate::cohort::Shard>,
}

/// The patient a resource is about: a Patient's own id, else its `subject` (or `patient`)
/// reference. Read on its own, for resources the ingest did not turn into a record.
pub fn patient_of_resource(json: &str) -> Option<Cow<'_, str>> {
    #[derive(serde::Deserialize)]
    struct Reference<'a> {
        #[serde(borrow)]
        reference: Option<Cow<'a, str>>,
    }
    #[derive(serde::Deserialize)]
    struct About<'a> {
        #[serde(borrow, rename = "resourceType")]
        resource_type: Option<Cow<'a, str>>,
        #[serde(borrow)]
        id: Option<Cow<'a, str>>,
        #[serde(borrow)]
        subject: Option<Reference<'a>>,
        #[serde(borrow)]
        patient: Option<Reference<'a>>,
    }
    let about: About = serde_json::from_str(json).ok()?;
    if about.resource_type.as_deref() == Some("Patient") {
        return about.id;
    }
    let reference = about.subject.or(about.patient)?.reference?;
    patient_id_of(&reference).map(|id| Cow::Owned(id.to_owned()))
}

/// `Patient/123`, `https://host/fhir/Patient/123` or `Patient/123/_history/2` -> `123`.
pub fn patient_id_of(reference: &str) -> Option<&str> {
    let path = reference.split("/_history/").next()?;
    let mut parts = path.rsplit('/');
    let id = parts.next()?;
    let kind = parts.next()?;
    (kind == "Patient" && !id.is_empty()).then_some(id)
}

/// The patient id of a subject reference, borrowed from the line when the JSON had no escapes.
fn subject_patient_id<'a>(subject: Option<&Reference<'a>>) -> Option<Cow<'a, str>> {
    match subject?.reference.as_ref()? {
        Cow::Borrowed(reference) => patient_id_of(reference).map(Cow::Borrowed),
        Cow::Owned(reference) => patient_id_of(reference).map(|id| Cow::Owned(id.to_owned())),
    }
}

fn skip<'a>(
    reason: SkipReason,
    id: Option<&Cow<'_, str>>,
    detail: Option<String>,
) -> LineOutcome<'a> {
    LineOutcome::Skipped(Skip {
        reason,
        resource_id: id.map(|s| s.to_string()),
        detail,
    })
}

fn codes_match(concept: Option<&CodeableConcept<'_>>, set: &[Code]) -> bool {
    concept.is_some_and(|c| {
        c.coding.iter().any(|coding| {
            set.iter().any(|code| {
                coding.system.as_deref() == Some(code.system.as_str())
                    && coding.code.as_deref() == Some(code.code.as_str())
            })
        })
    })
}

impl Ingestor {
    pub fn new(config: &Config) -> Ingestor {
        let mut observation_codes: FxHashMap<String, Vec<(String, CodeFamily)>> =
            FxHashMap::default();
        let families = [
            (&config.codes.pivka, CodeFamily::Pivka),
            (&config.codes.afp, CodeFamily::Afp),
            (&config.codes.afp_l3, CodeFamily::AfpL3),
            (&config.codes.albumin, CodeFamily::Albumin),
            (&config.codes.bilirubin, CodeFamily::Bilirubin),
        ];
        for (codes, family) in families {
            for code in codes {
                observation_codes
                    .entry(code.code.clone())
                    .or_default()
                    .push((code.system.clone(), family));
            }
        }
        Ingestor {
            observation_codes,
            tare_codes: config.codes.tare_procedure.clone(),
            hcc_codes: config.codes.hcc_condition.clone(),
            accepted_statuses: config.ingest.accepted_statuses.clone(),
            tz: config.time_zone(),
            config: config.ingest.clone(),
            shard: None,
        }
    }

    /// An ingestor that keeps only the resources of one shard's patients.
    pub fn for_shard(mut self, shard: Option<crate::cohort::Shard>) -> Ingestor {
        self.shard = shard;
        self
    }

    /// Whether a resource read as `outcome` belongs to this run's shard: by its patient, or,
    /// when no patient can be told (a line that is not JSON), to shard 0 only, so that the
    /// counts of all shards add up to those of one unsharded run.
    pub fn in_shard(&self, outcome: &LineOutcome<'_>, json: &str) -> bool {
        let Some(shard) = self.shard else { return true };
        let patient = match outcome {
            LineOutcome::Record(record) => Some(Cow::Borrowed(record.patient_id())),
            _ => patient_of_resource(json),
        };
        match patient {
            Some(id) => shard.contains(&id),
            None => shard.index == 0,
        }
    }

    /// Reads one NDJSON line expected to hold a resource of `expected`.
    pub fn read_line<'a>(&self, expected: ResourceType, line: &'a str) -> LineOutcome<'a> {
        let parsed = match expected {
            ResourceType::Observation => {
                serde_json::from_str::<ObservationIn>(line).map(|o| self.observation(o))
            }
            ResourceType::Patient => {
                serde_json::from_str::<PatientIn>(line).map(|p| self.patient(p))
            }
            ResourceType::Procedure => {
                serde_json::from_str::<ProcedureIn>(line).map(|p| self.procedure(p))
            }
            ResourceType::Condition => {
                serde_json::from_str::<ConditionIn>(line).map(|c| self.condition(c))
            }
        };
        match parsed {
            Ok(outcome) => outcome,
            Err(error) => {
                // Recover the id where the JSON itself is sound, so the data manager can find it.
                let id = resource_header(line).and_then(|h| h.id.map(Cow::into_owned));
                LineOutcome::Skipped(Skip {
                    reason: SkipReason::InvalidJson,
                    resource_id: id,
                    detail: Some(error.to_string()),
                })
            }
        }
    }

    fn check_type(
        expected: ResourceType,
        found: Option<&Cow<'_, str>>,
        id: Option<&Cow<'_, str>>,
    ) -> Option<LineOutcome<'static>> {
        match found {
            Some(t) if t == expected.name() => None,
            other => Some(skip(
                SkipReason::UnexpectedResourceType,
                id,
                Some(format!(
                    "expected {}, found {}",
                    expected.name(),
                    other.map(|s| s.as_ref()).unwrap_or("no resourceType")
                )),
            )),
        }
    }

    fn observation_family(&self, code: Option<&CodeableConcept<'_>>) -> Option<CodeFamily> {
        code?.coding.iter().find_map(|coding| {
            let candidates = self.observation_codes.get(coding.code.as_deref()?)?;
            candidates
                .iter()
                .find(|(system, _)| coding.system.as_deref() == Some(system.as_str()))
                .map(|(_, family)| *family)
        })
    }

    fn observation<'a>(&self, o: ObservationIn<'a>) -> LineOutcome<'a> {
        let id = o.id.as_ref();
        if let Some(wrong) =
            Self::check_type(ResourceType::Observation, o.resource_type.as_ref(), id)
        {
            return wrong;
        }
        let Some(family) = self.observation_family(o.code.as_ref()) else {
            return skip(SkipReason::NotMonitoredCode, id, None);
        };
        let Some(observation_id) = id else {
            return skip(SkipReason::NoId, None, None);
        };
        let Some(patient_id) = subject_patient_id(o.subject.as_ref()) else {
            return skip(SkipReason::NoPatientReference, id, None);
        };
        let status = o.status.as_deref().unwrap_or("");
        if !self.accepted_statuses.iter().any(|s| s == status) {
            return skip(SkipReason::StatusNotAccepted, id, Some(status.to_owned()));
        }
        if o.data_absent_reason.is_some() {
            return skip(SkipReason::DataAbsentReason, id, None);
        }
        let time_text = o
            .effective_date_time
            .as_deref()
            .or(o.effective_period.as_ref().and_then(|p| p.start.as_deref()))
            .or(o.effective_instant.as_deref());
        let Some(time_text) = time_text else {
            return skip(SkipReason::NoEffectiveTime, id, None);
        };
        let moment = match time::parse_moment(time_text, self.tz) {
            Ok(m) => m,
            Err(time::TimeError::NotAFullDate) => {
                return skip(
                    SkipReason::EffectiveTimeNotAFullDate,
                    id,
                    Some(time_text.to_owned()),
                )
            }
            Err(time::TimeError::Invalid) => {
                return skip(
                    SkipReason::InvalidEffectiveTime,
                    id,
                    Some(time_text.to_owned()),
                )
            }
        };
        // The number, its censoring and its unit, from valueQuantity or valueString.
        let (number, censoring, ucum, printed) = if let Some(q) = &o.value_quantity {
            let Some(number) = q.value else {
                return skip(SkipReason::NoValue, id, None);
            };
            let Some(censoring) = units::censoring_of(q.comparator.as_deref()) else {
                return skip(
                    SkipReason::UnknownComparator,
                    id,
                    q.comparator.as_deref().map(str::to_owned),
                );
            };
            (number, censoring, q.code.as_deref(), q.unit.as_deref())
        } else if let Some(text) = o.value_string.as_deref() {
            match units::parse_value_string(text) {
                Ok(p) => (p.number, p.censoring, None, Some(p.unit)),
                Err(units::ValueStringError::NoUnit) => {
                    return skip(
                        SkipReason::ValueStringWithoutUnit,
                        id,
                        Some(text.to_owned()),
                    )
                }
                Err(units::ValueStringError::NotANumber) => {
                    return skip(SkipReason::ValueStringNotANumber, id, Some(text.to_owned()))
                }
            }
        } else {
            return skip(SkipReason::NoValue, id, None);
        };
        if !number.is_finite() {
            return skip(SkipReason::NoValue, id, Some(number.to_string()));
        }
        let Some((marker, factor)) = units::resolve_unit(family, ucum, printed, &self.config)
        else {
            let unit = ucum.or(printed).unwrap_or("(none)");
            return skip(SkipReason::UnknownUnit, id, Some(unit.to_owned()));
        };
        // referenceRange.high counts only when it converts into the same marker.
        let reference_high = o.reference_range.iter().find_map(|range| {
            let high = range.high.as_ref()?;
            let value = high.value?;
            let (range_marker, range_factor) = units::resolve_unit(
                family,
                high.code.as_deref().or(ucum),
                high.unit.as_deref().or(printed),
                &self.config,
            )?;
            (range_marker == marker).then_some(value * range_factor)
        });
        let last_updated_ms = o
            .meta
            .as_ref()
            .and_then(|m| m.last_updated.as_deref())
            .and_then(time::parse_instant_ms);
        LineOutcome::Record(Record::Value {
            patient_id,
            value: MarkerValue {
                marker,
                value: number * factor,
                censoring,
                date: moment.date,
                instant_ms: moment.instant_ms,
                observation_id: observation_id.as_ref().into(),
                reference_high,
                last_updated_ms,
                note: note_text(&o.note),
            },
        })
    }

    fn patient<'a>(&self, p: PatientIn<'a>) -> LineOutcome<'a> {
        let id = p.id.as_ref();
        if let Some(wrong) = Self::check_type(ResourceType::Patient, p.resource_type.as_ref(), id) {
            return wrong;
        }
        let Some(patient_id) = id else {
            return skip(SkipReason::NoId, None, None);
        };
        let birth_date = p.birth_date.as_deref().and_then(time::parse_date);
        // A partial or invalid birth date is kept as unknown (evaluated and noted).
        // The first name as text, or given names and family name.
        let name = p.name.first().and_then(|n| match &n.text {
            Some(text) => Some(text.to_string()),
            None => {
                let parts: Vec<&str> = n
                    .given
                    .iter()
                    .map(|g| g.as_ref())
                    .chain(n.family.as_deref())
                    .collect();
                (!parts.is_empty()).then(|| parts.join(" "))
            }
        });
        LineOutcome::Record(Record::Patient {
            patient_id: Cow::Owned(patient_id.to_string()),
            birth_date,
            name,
        })
    }

    fn procedure<'a>(&self, p: ProcedureIn<'a>) -> LineOutcome<'a> {
        let id = p.id.as_ref();
        if let Some(wrong) = Self::check_type(ResourceType::Procedure, p.resource_type.as_ref(), id)
        {
            return wrong;
        }
        if !codes_match(p.code.as_ref(), &self.tare_codes) {
            return LineOutcome::NotRelevant;
        }
        let Some(procedure_id) = id else {
            return skip(SkipReason::NoId, None, None);
        };
        let Some(patient_id) = subject_patient_id(p.subject.as_ref()) else {
            return skip(SkipReason::NoPatientReference, id, None);
        };
        let status = p.status.as_deref().unwrap_or("");
        if status != "completed" {
            return skip(
                SkipReason::ProcedureNotCompleted,
                id,
                Some(status.to_owned()),
            );
        }
        let performed = p.performed_date_time.as_deref().or(p
            .performed_period
            .as_ref()
            .and_then(|pp| pp.start.as_deref()));
        let Some(performed) = performed else {
            return skip(SkipReason::ProcedureNoPerformedDate, id, None);
        };
        match time::parse_moment(performed, self.tz) {
            Ok(moment) => LineOutcome::Record(Record::Tare {
                patient_id,
                procedure: TareProcedure {
                    procedure_id: procedure_id.to_string(),
                    date: moment.date,
                },
            }),
            Err(_) => skip(
                SkipReason::ProcedureNoPerformedDate,
                id,
                Some(performed.to_owned()),
            ),
        }
    }

    fn condition<'a>(&self, c: ConditionIn<'a>) -> LineOutcome<'a> {
        let id = c.id.as_ref();
        if let Some(wrong) = Self::check_type(ResourceType::Condition, c.resource_type.as_ref(), id)
        {
            return wrong;
        }
        if !codes_match(c.code.as_ref(), &self.hcc_codes) {
            return LineOutcome::NotRelevant;
        }
        let Some(patient_id) = subject_patient_id(c.subject.as_ref()) else {
            return skip(SkipReason::NoPatientReference, id, None);
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
            return skip(SkipReason::ConditionRefutedOrEnteredInError, id, None);
        }
        LineOutcome::Record(Record::HccCondition { patient_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Censoring;

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
}
