//! `run-summary.json`: what was read, evaluated, left out (by reason) and flagged, and how long
//! each stage took. Counts and ids only: the summary may be attached to a ticket.

use crate::config::Config;
use crate::domain::{PatientFindings, Response};
use crate::ingest::DataQuality;
use crate::source::ndjson::IgnoredInput;
use crate::text::shown;
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;

// File names and messages come from the source: written as `text::shown` writes them, like
// the examples of left-out resources (`ingest::DataQuality`), so that no control or
// bidirectional character reaches a reader of the summary.

fn shown_text<S: Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&shown(text))
}

fn shown_texts<S: Serializer>(texts: &[String], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(texts.iter().map(|text| shown(text)))
}

fn shown_ignored<S: Serializer>(
    ignored: &[IgnoredInput],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(ignored.iter().map(|input| IgnoredInput {
        name: shown(&input.name).into_owned(),
        reason: shown(&input.reason).into_owned(),
    }))
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PatientCounts {
    /// Patients referenced by any resource read.
    pub seen: usize,
    pub evaluated: usize,
    /// Evaluated patients with at least one flag.
    pub flagged: usize,
    pub left_out: BTreeMap<&'static str, usize>,
    /// Evaluated with an unknown birth date (age not checked), docs/rules.md §1.
    pub birth_date_unknown: usize,
    pub episodes_evaluated: usize,
    pub episodes_under_minimum_age: usize,
    pub episodes_after_as_of: usize,
    /// Patients whose evaluation failed, with the message (also counted in `left_out`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evaluation_failed: Vec<PatientFailure>,
}

/// A patient something failed for, and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatientFailure {
    pub patient_id: String,
    /// May quote a server's answer.
    #[serde(serialize_with = "shown_text")]
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FlagCounts {
    pub total: usize,
    /// Flags at or above the configured severity: one DetectedIssue each.
    pub written_as_detected_issues: usize,
    pub by_severity: BTreeMap<&'static str, usize>,
    /// flag code -> severity -> count.
    pub by_code: BTreeMap<&'static str, BTreeMap<&'static str, usize>>,
}

impl FlagCounts {
    /// Counts one more flag.
    pub fn add(&mut self, flag: &crate::domain::Flag, config: &Config) {
        self.total += 1;
        if flag.severity >= config.output.min_severity_written {
            self.written_as_detected_issues += 1;
        }
        *self.by_severity.entry(flag.severity.code()).or_default() += 1;
        *self
            .by_code
            .entry(flag.code.code())
            .or_default()
            .entry(flag.severity.code())
            .or_default() += 1;
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub read_ms: u128,
    pub evaluate_ms: u128,
    pub write_ms: u128,
    pub total_ms: u128,
}

impl Timings {
    /// Seconds of a duration kept in whole milliseconds: `2.034`, as the summary says it.
    pub fn secs(ms: u128) -> f64 {
        ms as f64 / 1000.0
    }

    pub fn total_secs(&self) -> f64 {
        Timings::secs(self.total_ms)
    }
}

/// An on-demand cohort: how many patients were asked for, and what matched no patient.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CohortReport {
    pub requested: usize,
    /// Ids without a Patient resource, identifiers without exactly one Patient, empty Groups.
    #[serde(serialize_with = "shown_texts")]
    pub unknown: Vec<String>,
}

/// The incremental watermark: what this run asked for, and where the next run starts.
#[derive(Debug, Clone, Serialize)]
pub struct Watermark {
    pub state_file: String,
    /// `_lastUpdated=gt` of this run (the previous run's start minus the overlap); `null` in a
    /// full run.
    pub used: Option<String>,
    /// This run's start, saved for the next run (written as in the state file); `null` when
    /// the run did not fully succeed (or was a dry run) and the state was left as it was.
    pub next: Option<chrono::DateTime<chrono::Utc>>,
}

/// What makes the parts of one sharded run parts of one run: `merge` refuses parts whose
/// identities differ in any field but `shard`, and a shard twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RunIdentity {
    pub as_of: String,
    /// SHA-256 of the configuration in effect (its JSON form; the thread count, which
    /// changes no result, left out).
    pub config_sha256: String,
    pub tool_version: String,
    /// `I/N` of a sharded run.
    pub shard: Option<String>,
    /// The folder or the server's base URL.
    #[serde(serialize_with = "shown_text")]
    pub source: String,
}

impl RunIdentity {
    pub fn config_digest(config: &Config) -> String {
        use sha2::{Digest, Sha256};
        let mut config = config.clone();
        config.ingest.threads = 0;
        let json = serde_json::to_vec(&config).unwrap_or_default();
        Sha256::digest(&json)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub identity: RunIdentity,
    pub tool_version: &'static str,
    /// `full`, `incremental` or `cohort`.
    pub mode: &'static str,
    pub as_of: String,
    pub started_at: String,
    pub source: String,
    /// `I/N` of a sharded run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cohort: Option<CohortReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watermark: Option<Watermark>,
    /// Files read, or searches run with their page counts.
    #[serde(serialize_with = "shown_texts")]
    pub inputs: Vec<String>,
    /// Names in the source folder that were not read, each with the reason.
    #[serde(serialize_with = "shown_ignored")]
    pub inputs_ignored: Vec<IgnoredInput>,
    pub threads: usize,
    pub patients: PatientCounts,
    /// marker -> response code -> number of episode rows.
    pub responses: BTreeMap<&'static str, BTreeMap<&'static str, usize>>,
    pub flags: FlagCounts,
    /// Per resource type: read, accepted, left out by reason with examples.
    pub resources: DataQuality,
    /// What was written to the FHIR server (server source only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_back: Option<crate::sink::server::WriteReport>,
    /// HTTP requests sent to the FHIR server, retries included (server source only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_requests: Option<u64>,
    /// Of those, how many were retries (server source only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_retries: Option<u64>,
    pub timings: Timings,
}

impl RunSummary {
    pub fn count(
        patients: &[PatientFindings],
        config: &Config,
    ) -> (
        PatientCounts,
        BTreeMap<&'static str, BTreeMap<&'static str, usize>>,
        FlagCounts,
    ) {
        let mut counts = PatientCounts {
            seen: patients.len(),
            ..PatientCounts::default()
        };
        let mut responses: BTreeMap<&'static str, BTreeMap<&'static str, usize>> = BTreeMap::new();
        let mut flags = FlagCounts::default();
        for patient in patients {
            counts.episodes_under_minimum_age += patient.episodes_under_minimum_age;
            counts.episodes_after_as_of += patient.episodes_after_as_of;
            if let Some(reason) = patient.left_out {
                *counts.left_out.entry(reason.key()).or_default() += 1;
                if let Some(message) = &patient.evaluation_error {
                    counts.evaluation_failed.push(PatientFailure {
                        patient_id: patient.patient_id.clone(),
                        message: message.clone(),
                    });
                }
                continue;
            }
            counts.evaluated += 1;
            counts.birth_date_unknown += usize::from(patient.birth_date_unknown);
            counts.episodes_evaluated += patient.episodes.len();
            counts.flagged += usize::from(patient.episodes.iter().any(|e| !e.flags.is_empty()));
            for episode in &patient.episodes {
                for course in &episode.courses {
                    let by_response = responses
                        .entry(course.marker.key())
                        .or_insert_with(|| Response::ALL.iter().map(|r| (r.code(), 0)).collect());
                    *by_response.entry(course.response.code()).or_default() += 1;
                }
                for flag in &episode.flags {
                    flags.add(flag, config);
                }
            }
        }
        (counts, responses, flags)
    }
}
