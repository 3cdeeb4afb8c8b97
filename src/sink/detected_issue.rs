//! DetectedIssue, Provenance and Device resources for the flags that are written back
//! (docs/rules.md §4), built with fhir-sdk in `crates/fhir-resources`.

use crate::config::Config;
use crate::domain::{FlagCode, Marker, PatientFindings};
use crate::format::date;
use chrono::NaiveDate;
use fhir_resources::{DetectedIssueSpec, DeviceSpec, IssueStatus, ProvenanceSpec};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::io::Write;

/// The job's Device id: one Device authors every DetectedIssue.
pub const DEVICE_ID: &str = "tare-marker-monitor";

/// 32 hex digits of the SHA-256 of `key`: the stable ids of what the job writes (DetectedIssue
/// identifiers, Provenance ids), the same for the same content on every run.
pub fn stable_id(key: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    Sha256::digest(key.as_bytes())[..16]
        .iter()
        .flat_map(|b| {
            [
                HEX[usize::from(b >> 4)] as char,
                HEX[usize::from(b & 0xf)] as char,
            ]
        })
        .collect()
}

/// A stable identifier of (patient, episode index date, flag code, marker): the same flag in
/// the same episode is always the same resource.
pub fn flag_identifier(
    patient_id: &str,
    index_date: NaiveDate,
    code: FlagCode,
    marker: Option<Marker>,
) -> String {
    let key = format!(
        "{patient_id}\n{}\n{}\n{}",
        date(index_date),
        code.code(),
        marker.map_or("", |m| m.key())
    );
    stable_id(&key)
}

/// Writes, one NDJSON line each, the resources that would be written for these findings: the
/// Device first, then a DetectedIssue and its Provenance per flag at or above the configured
/// severity. Patients are built in parallel (on the current rayon pool) a chunk at a time and
/// written in order, so memory holds one chunk. Returns the number of DetectedIssues.
pub fn write_ndjson(
    out: &mut dyn Write,
    patients: &[PatientFindings],
    config: &Config,
    recorded: &str,
) -> std::io::Result<usize> {
    let build_error = |e: fhir_resources::BuildError| {
        std::io::Error::other(format!("cannot build a FHIR resource: {e}"))
    };
    let device = fhir_resources::device(&DeviceSpec {
        id: DEVICE_ID,
        identifier_system: &config.output.device_identifier_system,
        identifier_value: DEVICE_ID,
        name: "tare-marker-monitor",
        version: env!("CARGO_PKG_VERSION"),
    })
    .map_err(build_error)?;
    out.write_all(device.as_bytes())?;
    out.write_all(b"\n")?;
    let mut written = 0;
    for chunk in patients.chunks(1024) {
        let parts: Vec<Result<(String, usize), fhir_resources::BuildError>> = chunk
            .par_iter()
            .map(|patient| patient_lines(patient, config, recorded))
            .collect();
        for part in parts {
            let (lines, issues) = part.map_err(build_error)?;
            out.write_all(lines.as_bytes())?;
            written += issues;
        }
    }
    Ok(written)
}

/// A DetectedIssue the findings call for.
pub struct PlannedIssue {
    /// The stable identifier value (docs/rules.md §4).
    pub identifier: String,
    /// The DetectedIssue as JSON text.
    pub resource: String,
    /// `Procedure/..` and `Observation/..` references behind it: `implicated` and the
    /// Provenance entities.
    pub sources: Vec<String>,
}

/// The DetectedIssues of one patient's written flags. With `with_id`, each carries its
/// identifier as its id (files); without, the server names it (creates).
pub fn planned_issues(
    patient: &PatientFindings,
    config: &Config,
    device_reference: &str,
    with_id: bool,
) -> Result<Vec<PlannedIssue>, fhir_resources::BuildError> {
    let patient_reference = format!("Patient/{}", patient.patient_id);
    let mut planned = Vec::new();
    for episode in &patient.episodes {
        for flag in &episode.flags {
            if flag.severity < config.output.min_severity_written {
                continue;
            }
            let identifier = flag_identifier(
                &patient.patient_id,
                episode.index_date,
                flag.code,
                flag.marker,
            );
            let sources: Vec<String> = episode
                .procedure_ids
                .iter()
                .map(|id| format!("Procedure/{id}"))
                .chain(
                    flag.evidence_observation_ids
                        .iter()
                        .map(|id| format!("Observation/{id}")),
                )
                .collect();
            let resource = fhir_resources::detected_issue(&DetectedIssueSpec {
                id: with_id.then_some(identifier.as_str()),
                identifier_system: &config.output.identifier_system,
                identifier_value: &identifier,
                status: IssueStatus::Preliminary,
                code_system: &config.output.flag_code_system,
                code: flag.code.code(),
                code_display: flag.code.display(),
                severity: flag.severity.code(),
                patient_reference: &patient_reference,
                identified_date: &date(flag.identified_date),
                author_reference: device_reference,
                implicated_references: &sources,
                detail: &flag.detail,
                reference_url: config.output.rules_url.as_deref(),
            })?;
            planned.push(PlannedIssue {
                identifier,
                resource,
                sources,
            });
        }
    }
    Ok(planned)
}

/// The DetectedIssue and Provenance lines of one patient, and how many DetectedIssues.
fn patient_lines(
    patient: &PatientFindings,
    config: &Config,
    recorded: &str,
) -> Result<(String, usize), fhir_resources::BuildError> {
    let device_reference = format!("Device/{DEVICE_ID}");
    let planned = planned_issues(patient, config, &device_reference, true)?;
    let mut lines = String::new();
    for issue in &planned {
        lines.push_str(&issue.resource);
        lines.push('\n');
        lines.push_str(&fhir_resources::provenance(&ProvenanceSpec {
            id: &format!("{}-provenance", issue.identifier),
            target_reference: &format!("DetectedIssue/{}", issue.identifier),
            recorded,
            agent_reference: &device_reference,
            source_references: &issue.sources,
        })?);
        lines.push('\n');
    }
    Ok((lines, planned.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifier_is_stable_and_distinguishes_markers() {
        let d = NaiveDate::from_ymd_opt(2025, 11, 2).unwrap();
        let a = flag_identifier("p1", d, FlagCode::MarkerRise, Some(Marker::Pivka2));
        assert_eq!(
            a,
            flag_identifier("p1", d, FlagCode::MarkerRise, Some(Marker::Pivka2))
        );
        assert_ne!(
            a,
            flag_identifier("p1", d, FlagCode::MarkerRise, Some(Marker::Afp))
        );
        assert_eq!(a.len(), 32);
    }
}
