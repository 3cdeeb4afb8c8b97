//! Write-back to the FHIR server: per patient, one transaction Bundle that brings the
//! server's DetectedIssues (those with our identifier system) in line with the findings.
//!
//! - new flag: conditional create (`ifNoneExist` on the identifier), so a rerun after a crash
//!   never makes a second one;
//! - changed content: update guarded by `If-Match` on the version read, keeping everything a
//!   person added (a `mitigation`, notes): only the elements the job owns are replaced;
//! - unchanged: nothing is sent (no new version);
//! - a flag that no longer holds: status `cancelled`;
//! - each create or update gets a Provenance with an id derived from the content written, so
//!   a retried transaction does not add a second one.
//!
//! A patient whose transaction fails is reported with the server's OperationOutcome text, and
//! the others go on.

use super::detected_issue::{planned_issues, stable_id, PlannedIssue};
use crate::cohort::Scope;
use crate::config::Config;
use crate::domain::PatientFindings;
use crate::fhir::client::{outcome_text, Answer, FhirClient, FhirError};
use crate::progress::Progress;
use fhir_resources::{DeviceSpec, ProvenanceSpec};
use futures::stream::{self, StreamExt};
use reqwest::StatusCode;
use rustc_hash::FxHashMap;
use serde::Serialize;
use serde_json::{json, Value};
use std::path::Path;

/// The elements of a DetectedIssue the job owns; anything else on the server is kept.
const OWNED_ELEMENTS: [&str; 9] = [
    "status",
    "code",
    "severity",
    "patient",
    "identifiedDateTime",
    "author",
    "implicated",
    "detail",
    "reference",
];

#[derive(Debug, thiserror::Error)]
pub enum WriteBackError {
    #[error(transparent)]
    Fhir(#[from] FhirError),
    /// A dry run's transaction Bundle could not be saved.
    #[error("cannot write {path}: {source}")]
    Save {
        path: String,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct WriteReport {
    pub dry_run: bool,
    pub device: String,
    pub created: usize,
    pub updated: usize,
    pub cancelled: usize,
    pub unchanged: usize,
    /// Patients whose transaction was sent (or, in a dry run, saved).
    pub transactions: usize,
    pub failed: Vec<PatientFailure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PatientFailure {
    pub patient_id: String,
    pub message: String,
}

/// A DetectedIssue of ours already on the server.
struct Existing {
    id: String,
    version: Option<String>,
    resource: Value,
}

fn owned_part(resource: &Value) -> Value {
    Value::Object(
        OWNED_ELEMENTS
            .iter()
            .filter_map(|k| resource.get(*k).map(|v| ((*k).to_owned(), v.clone())))
            .collect(),
    )
}

/// The job's Device: found by identifier, or created by conditional create. In a dry run it
/// is only looked up.
async fn ensure_device(
    client: &FhirClient,
    config: &Config,
    dry_run: bool,
) -> Result<String, FhirError> {
    let system = &config.output.device_identifier_system;
    let value = super::detected_issue::DEVICE_ID;
    let search = client.search_url("Device", &[("identifier", format!("{system}|{value}"))]);
    let page = client.page(search.as_str()).await?;
    if let Some(id) = page
        .resources
        .first()
        .and_then(|r| serde_json::from_str::<Value>(r.get()).ok())
        .and_then(|r| r["id"].as_str().map(str::to_owned))
    {
        return Ok(format!("Device/{id}"));
    }
    if dry_run {
        return Ok(format!("Device/{value}"));
    }
    let device = fhir_resources::device(&DeviceSpec {
        id: value,
        identifier_system: system,
        identifier_value: value,
        name: "tare-marker-monitor",
        version: env!("CARGO_PKG_VERSION"),
    })
    .map_err(|e| FhirError::Unexpected {
        url: client.base().to_string(),
        message: e.to_string(),
    })?;
    let mut device: Value = serde_json::from_str(&device).expect("built JSON parses");
    device.as_object_mut().expect("an object").remove("id");
    let url = client
        .base()
        .join("Device")
        .expect("valid path")
        .to_string();
    let body = device.to_string();
    let if_none_exist = format!("identifier={system}|{value}");
    let Answer { status, body, .. } = client
        .send(&url, true, |http| {
            http.post(url.as_str())
                .header("Content-Type", "application/fhir+json")
                .header("If-None-Exist", if_none_exist.as_str())
                .body(body.clone())
        })
        .await?;
    if !status.is_success() {
        return Err(FhirError::Status {
            url,
            status: status.as_u16(),
            outcome: outcome_text(&body),
        });
    }
    let created: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match created["id"].as_str() {
        Some(id) => Ok(format!("Device/{id}")),
        None => Err(FhirError::Unexpected {
            url,
            message: "the Device create answered without the Device".into(),
        }),
    }
}

/// Our DetectedIssues (those with our identifier system) as JSON: of these patients, or with
/// `None` of everyone (one search over all of them). Also the audit report's flag trail.
pub async fn our_detected_issues(
    client: &FhirClient,
    patient_ids: Option<&[&str]>,
    config: &Config,
) -> Result<Vec<Value>, FhirError> {
    let system = &config.output.identifier_system;
    let identifier = ("identifier", format!("{system}|"));
    let count = ("_count", config.server.page_size.to_string());
    let searches: Vec<reqwest::Url> = match patient_ids {
        None => vec![client.search_url("DetectedIssue", &[identifier, count])],
        Some(ids) => ids
            .chunks(config.server.patient_batch)
            .map(|batch| {
                client.search_url(
                    "DetectedIssue",
                    &[
                        ("patient", batch.join(",")),
                        identifier.clone(),
                        count.clone(),
                    ],
                )
            })
            .collect(),
    };
    let mut found = Vec::new();
    for url in searches {
        client
            .search_all(url, |page| {
                found.extend(
                    page.resources
                        .iter()
                        .filter_map(|raw| serde_json::from_str::<Value>(raw.get()).ok()),
                )
            })
            .await?;
    }
    Ok(found)
}

/// The value of a resource's identifier in `system`.
pub fn identifier_in<'a>(resource: &'a Value, system: &str) -> Option<&'a str> {
    resource["identifier"]
        .as_array()?
        .iter()
        .find(|i| i["system"].as_str() == Some(system))?["value"]
        .as_str()
}

/// Our DetectedIssues, by identifier value.
async fn existing_issues(
    client: &FhirClient,
    patient_ids: Option<&[&str]>,
    config: &Config,
) -> Result<FxHashMap<String, Existing>, FhirError> {
    let system = &config.output.identifier_system;
    let mut found = FxHashMap::default();
    for resource in our_detected_issues(client, patient_ids, config).await? {
        let identifier = identifier_in(&resource, system).map(str::to_owned);
        if let (Some(identifier), Some(id)) = (identifier, resource["id"].as_str()) {
            found.insert(
                identifier,
                Existing {
                    id: id.to_owned(),
                    version: resource["meta"]["versionId"].as_str().map(str::to_owned),
                    resource,
                },
            );
        }
    }
    Ok(found)
}

#[derive(Default)]
struct Plan {
    entries: Vec<Value>,
    created: usize,
    updated: usize,
    cancelled: usize,
    unchanged: usize,
}

fn provenance_entry(
    target: &str,
    content: &Value,
    sources: &[String],
    device: &str,
    recorded: &str,
) -> Result<Value, fhir_resources::BuildError> {
    let id = stable_id(&format!("{target}\n{content}"));
    let text = fhir_resources::provenance(&ProvenanceSpec {
        id: &id,
        target_reference: target,
        recorded,
        agent_reference: device,
        source_references: sources,
    })?;
    let resource: Value = serde_json::from_str(&text).expect("built JSON parses");
    Ok(json!({
        "fullUrl": format!("urn:uuid:{}", uuid_from_hex(&id)),
        "resource": resource,
        "request": {"method": "PUT", "url": format!("Provenance/{id}")}
    }))
}

/// A UUID-shaped string from 32 hex digits, for `urn:uuid:` full URLs.
fn uuid_from_hex(hex: &str) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A PUT of `resource` over an existing DetectedIssue, guarded by `If-Match` on the version
/// read, and its Provenance.
fn update_entries(
    current: &Existing,
    resource: Value,
    sources: &[String],
    device: &str,
    recorded: &str,
) -> Result<[Value; 2], fhir_resources::BuildError> {
    let target = format!("DetectedIssue/{}", current.id);
    let mut request = json!({"method": "PUT", "url": target});
    if let Some(version) = &current.version {
        request["ifMatch"] = json!(format!("W/\"{version}\""));
    }
    let provenance = provenance_entry(&target, &owned_part(&resource), sources, device, recorded)?;
    Ok([
        json!({"resource": resource, "request": request}),
        provenance,
    ])
}

/// The entries that bring one patient's DetectedIssues in line with the findings.
fn plan_patient(
    planned: Vec<PlannedIssue>,
    existing: &FxHashMap<String, Existing>,
    ours_for_patient: Vec<String>,
    config: &Config,
    device: &str,
    recorded: &str,
) -> Result<Plan, fhir_resources::BuildError> {
    let system = &config.output.identifier_system;
    let mut plan = Plan::default();
    let mut wanted = rustc_hash::FxHashSet::default();
    for issue in planned {
        wanted.insert(issue.identifier.clone());
        let desired: Value = serde_json::from_str(&issue.resource).expect("built JSON parses");
        match existing.get(&issue.identifier) {
            None => {
                let full_url = format!("urn:uuid:{}", uuid_from_hex(&issue.identifier));
                plan.entries.push(json!({
                    "fullUrl": full_url,
                    "resource": desired,
                    "request": {
                        "method": "POST",
                        "url": "DetectedIssue",
                        "ifNoneExist": format!("identifier={system}|{}", issue.identifier)
                    }
                }));
                plan.entries.push(provenance_entry(
                    &full_url,
                    &owned_part(&desired),
                    &issue.sources,
                    device,
                    recorded,
                )?);
                plan.created += 1;
            }
            Some(current) if owned_part(&current.resource) == owned_part(&desired) => {
                plan.unchanged += 1;
            }
            Some(current) => {
                let mut updated = current.resource.clone();
                for key in OWNED_ELEMENTS {
                    match desired.get(key) {
                        Some(value) => updated[key] = value.clone(),
                        None => {
                            updated.as_object_mut().expect("an object").remove(key);
                        }
                    }
                }
                plan.entries.extend(update_entries(
                    current,
                    updated,
                    &issue.sources,
                    device,
                    recorded,
                )?);
                plan.updated += 1;
            }
        }
    }
    for identifier in ours_for_patient {
        if wanted.contains(&identifier) {
            continue;
        }
        let Some(current) = existing.get(&identifier) else {
            continue;
        };
        if current.resource["status"] == "cancelled" {
            continue;
        }
        let mut cancelled = current.resource.clone();
        cancelled["status"] = json!("cancelled");
        let sources: Vec<String> = current.resource["implicated"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["reference"].as_str().map(str::to_owned))
            .collect();
        plan.entries.extend(update_entries(
            current, cancelled, &sources, device, recorded,
        )?);
        plan.cancelled += 1;
    }
    Ok(plan)
}

/// Brings the server in line with the findings. With `dry_run_dir`, nothing is written: each
/// patient's transaction Bundle is saved there instead.
pub async fn write_back(
    client: &FhirClient,
    patients: &[PatientFindings],
    config: &Config,
    recorded: &str,
    scope: &Scope,
    dry_run_dir: Option<&Path>,
) -> Result<WriteReport, WriteBackError> {
    let dry_run = dry_run_dir.is_some();
    let device = ensure_device(client, config, dry_run).await?;
    // Everyone: all our DetectedIssues, so those of a patient who no longer has a TARE (one
    // entered in error) are cancelled too. A cohort: those of its patients only.
    let requested = scope.requested();
    let existing = match &requested {
        None => existing_issues(client, None, config).await?,
        Some(ids) => {
            let mut patient_ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            patient_ids.extend(patients.iter().map(|p| p.patient_id.as_str()));
            patient_ids.sort_unstable();
            patient_ids.dedup();
            existing_issues(client, Some(&patient_ids), config).await?
        }
    };
    // Which of our identifiers belong to which patient (of this shard).
    let mut by_patient: FxHashMap<String, Vec<String>> = FxHashMap::default();
    for (identifier, issue) in &existing {
        if let Some(reference) = issue.resource["patient"]["reference"].as_str() {
            let patient = reference.rsplit('/').next().unwrap_or(reference).to_owned();
            if scope.in_shard(&patient) {
                by_patient
                    .entry(patient)
                    .or_default()
                    .push(identifier.clone());
            }
        }
    }
    let mut report = WriteReport {
        dry_run,
        device: device.clone(),
        ..WriteReport::default()
    };
    let mut bundles = Vec::new();
    let mut plans: Vec<(String, Result<Plan, fhir_resources::BuildError>)> = patients
        .iter()
        .map(|patient| {
            let plan = planned_issues(patient, config, &device, false).and_then(|planned| {
                let mut ours = by_patient.remove(&patient.patient_id).unwrap_or_default();
                ours.sort();
                plan_patient(planned, &existing, ours, config, &device, recorded)
            });
            (patient.patient_id.clone(), plan)
        })
        .collect();
    // Patients with DetectedIssues of ours but no findings any more: each is cancelled.
    let mut without_findings: Vec<(String, Vec<String>)> = by_patient.into_iter().collect();
    without_findings.sort();
    for (patient_id, mut ours) in without_findings {
        ours.sort();
        let plan = plan_patient(Vec::new(), &existing, ours, config, &device, recorded);
        plans.push((patient_id, plan));
    }
    for (patient_id, plan) in plans {
        let plan = match plan {
            Ok(plan) => plan,
            Err(e) => {
                report.failed.push(PatientFailure {
                    patient_id,
                    message: e.to_string(),
                });
                continue;
            }
        };
        report.unchanged += plan.unchanged;
        if plan.entries.is_empty() {
            continue;
        }
        bundles.push((patient_id, plan));
    }
    if let Some(dir) = dry_run_dir {
        let save_error = |path: &Path| {
            let path = path.display().to_string();
            move |source| WriteBackError::Save { path, source }
        };
        std::fs::create_dir_all(dir).map_err(save_error(dir))?;
        for (patient_id, plan) in bundles {
            let bundle =
                json!({"resourceType": "Bundle", "type": "transaction", "entry": plan.entries});
            let path = dir.join(format!("{}.json", sanitize(&patient_id)));
            std::fs::write(&path, serde_json::to_string_pretty(&bundle).expect("JSON"))
                .map_err(save_error(&path))?;
            report.transactions += 1;
            report.created += plan.created;
            report.updated += plan.updated;
            report.cancelled += plan.cancelled;
        }
        return Ok(report);
    }
    let url = client.base().to_string();
    let progress = Progress::start("writing", bundles.len() as u64);
    let results: Vec<(String, Plan, Result<(), String>)> = stream::iter(bundles)
        .map(|(patient_id, mut plan)| {
            let url = url.clone();
            let progress = &progress;
            async move {
                let entries = std::mem::take(&mut plan.entries);
                let bundle =
                    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
                        .to_string();
                let sent = client
                    .send(&url, true, |http| {
                        http.post(url.as_str())
                            .header("Content-Type", "application/fhir+json")
                            .body(bundle.clone())
                    })
                    .await;
                let result = match sent {
                    Ok(answer) if answer.status == StatusCode::OK => Ok(()),
                    Ok(answer) => Err(format!(
                        "HTTP {}: {}",
                        answer.status.as_u16(),
                        outcome_text(&answer.body)
                    )),
                    Err(e) => Err(e.to_string()),
                };
                progress.advance(1);
                (patient_id, plan, result)
            }
        })
        .buffer_unordered(config.server.write_concurrency)
        .collect()
        .await;
    progress.finish();
    for (patient_id, plan, result) in results {
        match result {
            Ok(()) => {
                report.transactions += 1;
                report.created += plan.created;
                report.updated += plan.updated;
                report.cancelled += plan.cancelled;
            }
            Err(message) => {
                tracing::warn!(patient_failures = 1, "a patient's write-back failed");
                report.failed.push(PatientFailure {
                    patient_id,
                    message,
                })
            }
        }
    }
    report
        .failed
        .sort_by(|a, b| a.patient_id.cmp(&b.patient_id));
    Ok(report)
}

/// A file name from a patient id (ids are `[A-Za-z0-9-.]{1,64}` in FHIR, but be safe).
fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
