//! Plain domain types shared along the data flow: markers, values, a patient's timeline, and the
//! findings the evaluation returns. No I/O and no FHIR JSON here.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// A FHIR resource id. Shared, so findings can cite a value without copying its id.
/// An id as the source gave it: up to 24 bytes inline (most ids), so a million values need no
/// million small allocations.
pub type ResourceId = compact_str::CompactString;

/// A laboratory series the job follows (docs/rules.md §1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Marker {
    Pivka2,
    Dcp,
    Afp,
    AfpL3,
    Albumin,
    Bilirubin,
}

impl Marker {
    pub const ALL: [Marker; 6] = [
        Marker::Pivka2,
        Marker::Dcp,
        Marker::Afp,
        Marker::AfpL3,
        Marker::Albumin,
        Marker::Bilirubin,
    ];
    /// The markers that get rows, responses and marker flags (docs/rules.md §2).
    pub const TUMOR: [Marker; 4] = [Marker::Pivka2, Marker::Dcp, Marker::Afp, Marker::AfpL3];

    pub fn key(self) -> &'static str {
        match self {
            Marker::Pivka2 => "pivka2",
            Marker::Dcp => "dcp",
            Marker::Afp => "afp",
            Marker::AfpL3 => "afp_l3",
            Marker::Albumin => "albumin",
            Marker::Bilirubin => "bilirubin",
        }
    }

    pub fn from_key(key: &str) -> Option<Marker> {
        Marker::ALL.into_iter().find(|m| m.key() == key)
    }

    /// How a clinician names it in a sentence.
    pub fn display_name(self) -> &'static str {
        match self {
            Marker::Pivka2 => "PIVKA-II",
            Marker::Dcp => "DCP",
            Marker::Afp => "AFP",
            Marker::AfpL3 => "AFP-L3",
            Marker::Albumin => "Albumin",
            Marker::Bilirubin => "Bilirubin",
        }
    }

    pub fn canonical_unit(self) -> &'static str {
        match self {
            Marker::Pivka2 => "mAU/mL",
            Marker::Dcp | Marker::Afp => "ng/mL",
            Marker::AfpL3 => "%",
            Marker::Albumin => "g/L",
            Marker::Bilirubin => "umol/L",
        }
    }

    pub fn is_tumor_marker(self) -> bool {
        Marker::TUMOR.contains(&self)
    }
}

/// Whether a value is exact or a bound (docs/rules.md §1.4). Rules use the number it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Censoring {
    Exact,
    /// `<` or `<=`: the true value is at most the number.
    Low,
    /// `>` or `>=`: the true value is at least the number.
    High,
}

impl Censoring {
    pub fn prefix(self) -> &'static str {
        match self {
            Censoring::Exact => "",
            Censoring::Low => "<",
            Censoring::High => ">",
        }
    }
}

/// One accepted laboratory value, converted to its marker's canonical unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarkerValue {
    pub marker: Marker,
    pub value: f64,
    pub censoring: Censoring,
    /// Calendar date in the configured time zone; all windows compare these.
    pub date: NaiveDate,
    /// Effective instant in Unix milliseconds (a date-only value: the start of its date): the
    /// order of the series and the key for duplicates.
    pub instant_ms: i64,
    pub observation_id: ResourceId,
    /// `referenceRange.high`, converted, when it was in the marker's unit family.
    pub reference_high: OptionalNumber,
    /// The high lies outside the marker's plausible band (`markers.*.reference_high_band`):
    /// kept to be reported, never used as the ULN (docs/rules.md §2.5).
    #[serde(default)]
    pub reference_high_implausible: bool,
    /// The Observation's notes (`note.text`, joined), shown in the audit report. Rare, so
    /// behind one thin pointer: a run holds a million values, and this keeps each 8 bytes
    /// smaller than `Option<Box<str>>` would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(clippy::box_collection)]
    pub note: Option<Box<String>>,
}

impl MarkerValue {
    /// The `referenceRange.high` the ULN may come from: present and plausible.
    pub fn usable_reference_high(&self) -> Option<f64> {
        self.reference_high
            .get()
            .filter(|_| !self.reference_high_implausible)
    }
}

/// An optional number in 8 bytes instead of `Option<f64>`'s 16 (a run holds a million
/// values): NaN stands for none, and no number the job keeps is NaN.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(from = "Option<f64>", into = "Option<f64>")]
pub struct OptionalNumber(f64);

impl OptionalNumber {
    pub const NONE: OptionalNumber = OptionalNumber(f64::NAN);

    pub fn get(self) -> Option<f64> {
        (!self.0.is_nan()).then_some(self.0)
    }
}

impl From<Option<f64>> for OptionalNumber {
    fn from(value: Option<f64>) -> Self {
        OptionalNumber(value.filter(|v| !v.is_nan()).unwrap_or(f64::NAN))
    }
}

impl From<OptionalNumber> for Option<f64> {
    fn from(value: OptionalNumber) -> Self {
        value.get()
    }
}

impl PartialEq for OptionalNumber {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// A completed TARE procedure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TareProcedure {
    pub procedure_id: String,
    pub date: NaiveDate,
}

/// Everything the evaluation needs of one patient.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatientTimeline {
    pub patient_id: String,
    /// False when no `Patient` resource was found: the patient is left out (docs/rules.md §1).
    pub has_patient_resource: bool,
    pub birth_date: Option<NaiveDate>,
    /// `Patient.name` as text, shown in the audit report.
    pub name: Option<String>,
    /// The MRN shown in the audit report: `Patient.identifier` of `[report] mrn_system`, else
    /// the first.
    pub mrn: Option<String>,
    pub has_hcc: bool,
    pub procedures: Vec<TareProcedure>,
    /// All accepted values of all markers, de-duplicated, sorted by (marker, instant).
    pub values: Vec<MarkerValue>,
}

impl PatientTimeline {
    /// The values of one marker, in time order.
    pub fn series(&self, marker: Marker) -> &[MarkerValue] {
        let start = self.values.partition_point(|v| v.marker < marker);
        let end = self.values.partition_point(|v| v.marker <= marker);
        &self.values[start..end]
    }
}

/// Biochemical response at the latest value (docs/rules.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Response {
    #[serde(rename = "CR")]
    Complete,
    #[serde(rename = "PR")]
    Partial,
    #[serde(rename = "SD")]
    Stable,
    #[serde(rename = "PD")]
    Progression,
    #[serde(rename = "NE")]
    NotEvaluable,
}

impl Response {
    pub const ALL: [Response; 5] = [
        Response::Complete,
        Response::Partial,
        Response::Stable,
        Response::Progression,
        Response::NotEvaluable,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Response::Complete => "CR",
            Response::Partial => "PR",
            Response::Stable => "SD",
            Response::Progression => "PD",
            Response::NotEvaluable => "NE",
        }
    }
}

/// Flag severity; ordered low < moderate < high.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Moderate,
    High,
}

impl Severity {
    pub fn code(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Moderate => "moderate",
            Severity::High => "high",
        }
    }
}

/// The seven flags of docs/rules.md §3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlagCode {
    IncompleteResponse,
    MarkerDiscordance,
    MarkerPlateau,
    MarkerRise,
    NoResponse,
    PossibleReild,
    SurveillanceOverdue,
}

impl FlagCode {
    pub const ALL: [FlagCode; 7] = [
        FlagCode::IncompleteResponse,
        FlagCode::MarkerDiscordance,
        FlagCode::MarkerPlateau,
        FlagCode::MarkerRise,
        FlagCode::NoResponse,
        FlagCode::PossibleReild,
        FlagCode::SurveillanceOverdue,
    ];

    pub fn code(self) -> &'static str {
        match self {
            FlagCode::IncompleteResponse => "incomplete-response",
            FlagCode::MarkerDiscordance => "marker-discordance",
            FlagCode::MarkerPlateau => "marker-plateau",
            FlagCode::MarkerRise => "marker-rise",
            FlagCode::NoResponse => "no-response",
            FlagCode::PossibleReild => "possible-reild",
            FlagCode::SurveillanceOverdue => "surveillance-overdue",
        }
    }

    /// The display text of the code in the project's CodeSystem.
    pub fn display(self) -> &'static str {
        match self {
            FlagCode::IncompleteResponse => "Incomplete biochemical response after TARE",
            FlagCode::MarkerDiscordance => "Discordant tumor marker responses after TARE",
            FlagCode::MarkerPlateau => "Tumor marker plateau at a high level after TARE",
            FlagCode::MarkerRise => "Tumor marker rise from nadir after TARE",
            FlagCode::NoResponse => "No biochemical response after TARE",
            FlagCode::PossibleReild => "Possible radioembolization-induced liver disease",
            FlagCode::SurveillanceOverdue => "Tumor marker surveillance overdue after TARE",
        }
    }
}

/// One flag for one patient and episode (and marker, for marker flags).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flag {
    pub code: FlagCode,
    pub marker: Option<Marker>,
    pub severity: Severity,
    /// The date of the value that raised the flag.
    pub identified_date: NaiveDate,
    /// One readable sentence with the numbers.
    pub detail: String,
    /// Observations behind the figures, in time order.
    pub evidence_observation_ids: Vec<ResourceId>,
}

/// A value as it appears in a row: enough to print and to cite.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValuePoint {
    pub value: f64,
    pub censoring: Censoring,
    pub date: NaiveDate,
    pub observation_id: ResourceId,
}

impl From<&MarkerValue> for ValuePoint {
    fn from(v: &MarkerValue) -> Self {
        ValuePoint {
            value: v.value,
            censoring: v.censoring,
            date: v.date,
            observation_id: v.observation_id.clone(),
        }
    }
}

/// One row of `markers.csv`: one patient, episode and tumor marker (docs/rules.md §2, §4).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MarkerCourse {
    pub marker: Marker,
    pub baseline: Option<ValuePoint>,
    pub nadir: Option<ValuePoint>,
    pub latest: Option<ValuePoint>,
    pub reference_nadir: Option<ValuePoint>,
    pub n_post: usize,
    pub pct_change: Option<f64>,
    pub rise_from_nadir_pct: Option<f64>,
    pub uln: f64,
    pub response: Response,
    pub halflife_days: Option<f64>,
    pub next_due_date: NaiveDate,
    pub albi_baseline: Option<f64>,
    pub albi_latest: Option<f64>,
}

/// One TARE episode of one patient, evaluated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpisodeFindings {
    pub index_date: NaiveDate,
    pub procedure_ids: Vec<String>,
    /// The last date inside the post window (inclusive).
    pub post_window_last_date: NaiveDate,
    pub age_years: Option<u32>,
    pub courses: Vec<MarkerCourse>,
    pub flags: Vec<Flag>,
}

/// Why a patient was not evaluated (docs/rules.md §1), each its own counter in the run summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeftOutReason {
    NoPatientResource,
    NoTareProcedure,
    AllEpisodesAfterAsOf,
    UnderMinimumAge,
    NoHccCondition,
    /// The evaluation itself failed (a defect, or an input nobody foresaw): the patient is
    /// listed with the message, and nothing of theirs on the server is touched.
    EvaluationFailed,
}

impl LeftOutReason {
    pub const ALL: [LeftOutReason; 6] = [
        LeftOutReason::NoPatientResource,
        LeftOutReason::NoTareProcedure,
        LeftOutReason::AllEpisodesAfterAsOf,
        LeftOutReason::UnderMinimumAge,
        LeftOutReason::NoHccCondition,
        LeftOutReason::EvaluationFailed,
    ];

    /// The reason in words, for the report's readers.
    pub fn label(self) -> &'static str {
        match self {
            LeftOutReason::NoPatientResource => "no Patient record",
            LeftOutReason::NoTareProcedure => "no TARE procedure",
            LeftOutReason::AllEpisodesAfterAsOf => "every TARE after the as-of date",
            LeftOutReason::UnderMinimumAge => "under the minimum age",
            LeftOutReason::NoHccCondition => "no HCC diagnosis",
            LeftOutReason::EvaluationFailed => "evaluation failed",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            LeftOutReason::NoPatientResource => "no_patient_resource",
            LeftOutReason::NoTareProcedure => "no_tare_procedure",
            LeftOutReason::AllEpisodesAfterAsOf => "all_episodes_after_as_of",
            LeftOutReason::UnderMinimumAge => "under_minimum_age",
            LeftOutReason::NoHccCondition => "no_hcc_condition",
            LeftOutReason::EvaluationFailed => "evaluation_failed",
        }
    }
}

/// The evaluation of one patient.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PatientFindings {
    pub patient_id: String,
    pub left_out: Option<LeftOutReason>,
    pub birth_date_unknown: bool,
    /// Episodes evaluated (an episode under the minimum age is skipped and counted).
    pub episodes: Vec<EpisodeFindings>,
    pub episodes_under_minimum_age: usize,
    pub episodes_after_as_of: usize,
    /// Why the evaluation failed (`left_out` is `EvaluationFailed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluation_error: Option<String>,
}

impl PatientFindings {
    /// A patient whose evaluation failed.
    pub fn failed(patient_id: &str, message: String) -> PatientFindings {
        PatientFindings {
            patient_id: patient_id.to_owned(),
            left_out: Some(LeftOutReason::EvaluationFailed),
            evaluation_error: Some(message),
            ..PatientFindings::default()
        }
    }
}
