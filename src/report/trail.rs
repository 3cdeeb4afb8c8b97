//! The flag trail: every DetectedIssue the job wrote (our identifier system) whose
//! `identifiedDateTime` lies in the report's range, with its status today and what a
//! clinician added to it.

use super::ReportOptions;
use crate::config::Config;
use crate::fhir::client::{FhirClient, FhirError};
use crate::sink::server::{identifier_in, our_detected_issues};
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrailEntry {
    pub identifier: String,
    pub resource_id: String,
    pub patient_id: String,
    pub code: String,
    pub severity: String,
    /// `preliminary`, `final`, `cancelled`, `entered-in-error`, ...
    pub status: String,
    pub identified: String,
    pub last_updated: String,
    /// What a clinician added: the mitigation actions (or notes), as text.
    pub annotation: Option<String>,
    /// When: the latest mitigation date, else the resource's last update.
    pub annotated_on: Option<String>,
    pub detail: String,
    /// `implicated` references: the TARE and the Observations behind the figures.
    pub evidence: Vec<String>,
}

impl TrailEntry {
    /// `annotated` when a clinician added something and it is not cancelled; else the status.
    pub fn status_today(&self) -> &str {
        match (&self.annotation, self.status.as_str()) {
            (Some(_), "preliminary" | "final" | "amended") => "annotated",
            (_, status) => status,
        }
    }

    fn from_resource(resource: &Value, system: &str) -> Option<TrailEntry> {
        let text = |v: &Value| v.as_str().map(str::to_owned);
        let identifier = identifier_in(resource, system)?.to_owned();
        let mitigations: Vec<&Value> = resource["mitigation"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        let mut annotations: Vec<String> = mitigations
            .iter()
            .filter_map(|m| {
                text(&m["action"]["text"]).or_else(|| text(&m["action"]["coding"][0]["display"]))
            })
            .collect();
        // Notes are not a DetectedIssue element in R4, but an extension or a server may add
        // them; only `mitigation` is read.
        let mitigation_date = mitigations
            .iter()
            .filter_map(|m| m["date"].as_str())
            .max()
            .map(str::to_owned);
        let last_updated = text(&resource["meta"]["lastUpdated"]).unwrap_or_default();
        let annotated = !annotations.is_empty() || !mitigations.is_empty();
        if annotated && annotations.is_empty() {
            annotations.push("mitigation recorded".into());
        }
        Some(TrailEntry {
            identifier,
            resource_id: text(&resource["id"]).unwrap_or_default(),
            patient_id: resource["patient"]["reference"]
                .as_str()
                .and_then(crate::ingest::patient_id_of)
                .unwrap_or_default()
                .to_owned(),
            code: text(&resource["code"]["coding"][0]["code"]).unwrap_or_default(),
            severity: text(&resource["severity"]).unwrap_or_default(),
            status: text(&resource["status"]).unwrap_or_default(),
            identified: text(&resource["identifiedDateTime"]).unwrap_or_default(),
            annotation: annotated.then(|| annotations.join("; ")),
            annotated_on: annotated.then(|| mitigation_date.unwrap_or(last_updated.clone())),
            last_updated,
            detail: text(&resource["detail"]).unwrap_or_default(),
            evidence: resource["implicated"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| text(&r["reference"]))
                .collect(),
        })
    }
}

/// Our DetectedIssues identified in the range, most recent first.
pub fn fetch(
    client: &FhirClient,
    options: &ReportOptions,
    config: &Config,
    runtime: &tokio::runtime::Runtime,
) -> Result<Vec<TrailEntry>, FhirError> {
    let system = &config.output.identifier_system;
    let resources = runtime.block_on(our_detected_issues(client, None, config))?;
    let mut entries: Vec<TrailEntry> = resources
        .iter()
        .filter_map(|r| TrailEntry::from_resource(r, system))
        .collect();
    entries.retain(|e| {
        crate::ingest::time::parse_date(e.identified.get(..10).unwrap_or(""))
            .is_some_and(|d| options.in_range(d))
    });
    entries.sort_by(|a, b| {
        (&b.identified, &a.patient_id, &a.identifier).cmp(&(
            &a.identified,
            &b.patient_id,
            &b.identifier,
        ))
    });
    Ok(entries)
}
