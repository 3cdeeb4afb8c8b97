//! The only place `fhir-sdk` is used. It builds the FHIR resources the monitor writes
//! (DetectedIssue, Provenance, Device) with fhir-sdk's typed builders, so a required element
//! cannot be forgotten.
//!
//! Every function here is non-generic and takes plain data: fhir-sdk's generic serde code is
//! compiled once, in this crate, and the main crate rebuilds fast. Resources come back as
//! serialized JSON text, ready to be written as an NDJSON line or a Bundle entry.
//!
//! fhir-sdk models FHIR R4B; every element used here is identical in R4 (checked against the R4
//! StructureDefinitions of DetectedIssue, Provenance and Device), so the output is valid R4.

use fhir_sdk::r4b::codes::{
    DetectedIssueSeverity, DeviceNameType, FHIRDeviceStatus, ObservationStatus,
    ProvenanceEntityRole,
};
use fhir_sdk::r4b::resources::{
    DetectedIssue, DetectedIssueIdentified, Device, DeviceDeviceName, DeviceVersion, Provenance,
    ProvenanceAgent, ProvenanceEntity,
};
use fhir_sdk::r4b::types::{CodeableConcept, Coding, Identifier, Reference};
use fhir_sdk::time::OffsetDateTime;
use fhir_sdk::{Date, DateTime, Instant};
use std::str::FromStr;

/// Why a resource could not be built. The message names the element and the offending value.
#[derive(Debug)]
pub struct BuildError(pub String);

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BuildError {}

fn err(context: &str, e: impl std::fmt::Display) -> BuildError {
    BuildError(format!("{context}: {e}"))
}

/// Status of a DetectedIssue written by the job (docs/rules.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueStatus {
    /// Algorithmic finding awaiting clinician review.
    Preliminary,
    /// A later run no longer finds the flag.
    Cancelled,
}

/// Everything a DetectedIssue carries, as plain data.
#[derive(Debug, Clone)]
pub struct DetectedIssueSpec<'a> {
    /// None for a resource the server names (a create).
    pub id: Option<&'a str>,
    pub identifier_system: &'a str,
    pub identifier_value: &'a str,
    pub status: IssueStatus,
    pub code_system: &'a str,
    pub code: &'a str,
    pub code_display: &'a str,
    /// `high`, `moderate` or `low`.
    pub severity: &'a str,
    /// A relative reference, `Patient/123`.
    pub patient_reference: &'a str,
    /// `YYYY-MM-DD`.
    pub identified_date: &'a str,
    pub author_reference: &'a str,
    /// Relative references to the Procedures and Observations behind the finding.
    pub implicated_references: &'a [String],
    pub detail: &'a str,
    /// `DetectedIssue.reference`, the rules document; left out when the site set none.
    pub reference_url: Option<&'a str>,
}

fn reference(target: &str) -> Result<Reference, BuildError> {
    Reference::builder()
        .reference(target.to_owned())
        .build()
        .map_err(|e| err("Reference", e))
}

fn to_json<T: serde::Serialize>(what: &str, resource: &T) -> Result<String, BuildError> {
    serde_json::to_string(resource).map_err(|e| err(what, e))
}

/// Builds a DetectedIssue.
pub fn detected_issue(spec: &DetectedIssueSpec<'_>) -> Result<String, BuildError> {
    let severity = DetectedIssueSeverity::from_str(spec.severity).map_err(|e| {
        err(
            "DetectedIssue.severity",
            format!("{:?}: {e:?}", spec.severity),
        )
    })?;
    let identified = DateTime::Date(
        Date::from_str(spec.identified_date)
            .map_err(|e| err("DetectedIssue.identifiedDateTime", e))?,
    );
    let coding = Coding::builder()
        .system(spec.code_system.to_owned())
        .code(spec.code.to_owned())
        .display(spec.code_display.to_owned())
        .build()
        .map_err(|e| err("DetectedIssue.code.coding", e))?;
    let code = CodeableConcept::builder()
        .coding(vec![Some(coding)])
        .text(spec.code_display.to_owned())
        .build()
        .map_err(|e| err("DetectedIssue.code", e))?;
    let identifier = Identifier::builder()
        .system(spec.identifier_system.to_owned())
        .value(spec.identifier_value.to_owned())
        .build()
        .map_err(|e| err("DetectedIssue.identifier", e))?;
    let implicated = spec
        .implicated_references
        .iter()
        .map(|r| reference(r).map(Some))
        .collect::<Result<Vec<_>, _>>()?;
    let status = match spec.status {
        IssueStatus::Preliminary => ObservationStatus::Preliminary,
        IssueStatus::Cancelled => ObservationStatus::Cancelled,
    };
    let mut issue = DetectedIssue::builder()
        .identifier(vec![Some(identifier)])
        .status(status)
        .code(code)
        .severity(severity)
        .patient(reference(spec.patient_reference)?)
        .identified(DetectedIssueIdentified::DateTime(identified))
        .author(reference(spec.author_reference)?)
        .implicated(implicated)
        .detail(spec.detail.to_owned())
        .build()
        .map_err(|e| err("DetectedIssue", e))?;
    issue.id = spec.id.map(str::to_owned);
    issue.reference = spec.reference_url.map(str::to_owned);
    to_json("DetectedIssue", &issue)
}

/// Everything a Provenance for one write carries.
#[derive(Debug, Clone)]
pub struct ProvenanceSpec<'a> {
    pub id: &'a str,
    /// The written resource, `DetectedIssue/abc`.
    pub target_reference: &'a str,
    /// RFC 3339 instant with offset, e.g. `2026-11-27T02:00:00Z`.
    pub recorded: &'a str,
    pub agent_reference: &'a str,
    /// The Observations and Procedures used.
    pub source_references: &'a [String],
}

/// Builds a Provenance whose entities are the sources of the finding.
pub fn provenance(spec: &ProvenanceSpec<'_>) -> Result<String, BuildError> {
    let recorded = OffsetDateTime::parse(
        spec.recorded,
        &fhir_sdk::time::format_description::well_known::Rfc3339,
    )
    .map_err(|e| err("Provenance.recorded", e))?;
    let agent = ProvenanceAgent::builder()
        .who(reference(spec.agent_reference)?)
        .build()
        .map_err(|e| err("Provenance.agent", e))?;
    let entities = spec
        .source_references
        .iter()
        .map(|r| {
            ProvenanceEntity::builder()
                .role(ProvenanceEntityRole::Source)
                .what(reference(r)?)
                .build()
                .map(Some)
                .map_err(|e| err("Provenance.entity", e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let provenance = Provenance::builder()
        .id(spec.id.to_owned())
        .target(vec![Some(reference(spec.target_reference)?)])
        .recorded(Instant(recorded))
        .agent(vec![Some(agent)])
        .entity(entities)
        .build()
        .map_err(|e| err("Provenance", e))?;
    to_json("Provenance", &provenance)
}

/// The job's own Device: the author of every DetectedIssue and agent of every Provenance.
#[derive(Debug, Clone)]
pub struct DeviceSpec<'a> {
    pub id: &'a str,
    pub identifier_system: &'a str,
    pub identifier_value: &'a str,
    pub name: &'a str,
    pub version: &'a str,
}

/// Builds the job's Device.
pub fn device(spec: &DeviceSpec<'_>) -> Result<String, BuildError> {
    let identifier = Identifier::builder()
        .system(spec.identifier_system.to_owned())
        .value(spec.identifier_value.to_owned())
        .build()
        .map_err(|e| err("Device.identifier", e))?;
    let name = DeviceDeviceName::builder()
        .name(spec.name.to_owned())
        .r#type(DeviceNameType::UserFriendlyName)
        .build()
        .map_err(|e| err("Device.deviceName", e))?;
    let version = DeviceVersion::builder()
        .value(spec.version.to_owned())
        .build()
        .map_err(|e| err("Device.version", e))?;
    let device = Device::builder()
        .id(spec.id.to_owned())
        .identifier(vec![Some(identifier)])
        .status(FHIRDeviceStatus::Active)
        .device_name(vec![Some(name)])
        .version(vec![Some(version)])
        .build()
        .map_err(|e| err("Device", e))?;
    to_json("Device", &device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detected_issue_carries_every_rules_element() {
        let implicated = vec!["Procedure/p1".to_owned(), "Observation/o2".to_owned()];
        let json: serde_json::Value = serde_json::from_str(
            &detected_issue(&DetectedIssueSpec {
                id: Some("abc"),
                identifier_system: "urn:sys",
                identifier_value: "abc",
                status: IssueStatus::Preliminary,
                code_system: "urn:cs",
                code: "marker-rise",
                code_display: "Tumor marker rise",
                severity: "high",
                patient_reference: "Patient/1",
                identified_date: "2026-05-02",
                author_reference: "Device/d",
                implicated_references: &implicated,
                detail: "PIVKA-II rose",
                reference_url: Some("https://example.org/rules"),
            })
            .unwrap(),
        )
        .unwrap();
        assert_eq!(json["reference"], "https://example.org/rules");
        assert_eq!(json["resourceType"], "DetectedIssue");
        assert_eq!(json["status"], "preliminary");
        assert_eq!(json["severity"], "high");
        assert_eq!(json["identifiedDateTime"], "2026-05-02");
        assert_eq!(json["code"]["coding"][0]["code"], "marker-rise");
        assert_eq!(json["implicated"][1]["reference"], "Observation/o2");
        assert_eq!(json["identifier"][0]["value"], "abc");
    }

    #[test]
    fn bad_severity_is_a_clear_error() {
        let e = detected_issue(&DetectedIssueSpec {
            id: None,
            identifier_system: "s",
            identifier_value: "a",
            status: IssueStatus::Cancelled,
            code_system: "c",
            code: "x",
            code_display: "x",
            severity: "urgent",
            patient_reference: "Patient/1",
            identified_date: "2026-05-02",
            author_reference: "Device/d",
            implicated_references: &[],
            detail: "d",
            reference_url: None,
        })
        .unwrap_err();
        assert!(e.0.contains("DetectedIssue.severity"), "{e}");
    }

    #[test]
    fn provenance_and_device_build() {
        let sources = vec!["Observation/o1".to_owned()];
        let p: serde_json::Value = serde_json::from_str(
            &provenance(&ProvenanceSpec {
                id: "p",
                target_reference: "DetectedIssue/abc",
                recorded: "2026-11-27T02:00:00Z",
                agent_reference: "Device/d",
                source_references: &sources,
            })
            .unwrap(),
        )
        .unwrap();
        assert_eq!(p["entity"][0]["role"], "source");
        assert_eq!(p["agent"][0]["who"]["reference"], "Device/d");
        let d: serde_json::Value = serde_json::from_str(
            &device(&DeviceSpec {
                id: "d",
                identifier_system: "urn:s",
                identifier_value: "tare-marker-monitor",
                name: "tare-marker-monitor",
                version: "0.1.0",
            })
            .unwrap(),
        )
        .unwrap();
        assert_eq!(d["deviceName"][0]["type"], "user-friendly-name");
    }
}
