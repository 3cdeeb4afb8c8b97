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
//! A patient whose transaction is refused (a 4xx about its Bundle) is reported with the
//! server's OperationOutcome text, and the others go on; a server that refuses the
//! credentials, fails (429, 5xx after the retries) or does not answer ends the write-back.

use super::detected_issue::stable_id;
use super::plan::{is_entered_in_error, plan_everyone, transaction, Existing, Plan, Planner};
use crate::cohort::Scope;
use crate::config::Config;
use crate::domain::PatientFindings;
use crate::fhir::client::{outcome_text, Answer, FhirClient, FhirError};
use crate::progress::Progress;
use fhir_resources::DeviceSpec;
use futures::stream::{self, StreamExt};
use reqwest::StatusCode;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
use serde_json::Value;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum WriteBackError {
    #[error(transparent)]
    Fhir(#[from] FhirError),
    /// A dry run's transaction Bundle could not be saved.
    #[error(transparent)]
    Save(#[from] crate::output::OutputError),
    #[error("interrupted before the write-back finished; what was sent is complete per patient")]
    Interrupted,
    /// The job's own Device could not be built (a defect, never the data).
    #[error("cannot build the job's Device")]
    Device(#[from] fhir_resources::BuildError),
}

/// Why the safety valve stopped a write-back, with the numbers an operator checks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MassCancel {
    /// DetectedIssues the run would cancel.
    pub would_cancel: usize,
    /// The job's active (not cancelled, not entered-in-error) DetectedIssues in the run's scope.
    pub active: usize,
    /// `output.max_cancel_fraction`.
    pub max_fraction: f64,
    /// The run read no patient with a TARE at all.
    pub no_tare_patient_read: bool,
}

impl MassCancel {
    /// Whether the valve stops the run: any cancellation when no TARE patient was read; else
    /// more than `min_count` cancellations that are also more than the share allowed.
    pub fn trips(&self, min_count: usize) -> bool {
        self.would_cancel > 0
            && (self.no_tare_patient_read
                || (self.would_cancel > min_count
                    && self.would_cancel as f64 > self.max_fraction * self.active as f64))
    }
}

impl std::fmt::Display for MassCancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = if self.no_tare_patient_read {
            "it read no patient with a TARE procedure at all (a changed code list, a permission \
             change, or a server answering empty?)"
                .to_owned()
        } else {
            format!(
                "that is more than {}% of them (output.max_cancel_fraction) and more than \
                 output.mass_cancel_min_count",
                crate::format::human_number(self.max_fraction * 100.0)
            )
        };
        write!(
            f,
            "safety valve: this run would cancel {} of the job's {} active DetectedIssues, and {why}; \
             nothing was written. Check the source; if the cancellations are meant, run again \
             with --allow-mass-cancel",
            self.would_cancel, self.active
        )
    }
}

/// How one write-back goes.
pub struct WriteBackOptions<'a> {
    /// `Provenance.recorded` of what is written.
    pub recorded: &'a str,
    pub scope: &'a Scope,
    /// A dry run: nothing is sent, each patient's transaction Bundle is saved here.
    pub dry_run_dir: Option<&'a Path>,
    /// Patients with a TARE Procedure the run read (the safety valve trips on any
    /// cancellation when there are none).
    pub tare_patients_read: usize,
    /// `--allow-mass-cancel`: the operator means it.
    pub allow_mass_cancel: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct WriteReport {
    pub dry_run: bool,
    pub device: String,
    pub created: usize,
    pub updated: usize,
    pub cancelled: usize,
    pub unchanged: usize,
    /// DetectedIssues of ours in this run's scope that a person set to `entered-in-error`:
    /// left as they are, and their flags not written again while they stand.
    pub kept_entered_in_error: usize,
    /// Patients whose transaction was sent (or, in a dry run, saved).
    pub transactions: usize,
    pub failed: Vec<PatientFailure>,
    /// The safety valve tripped: nothing was sent (in a dry run, the Bundles were saved for
    /// review all the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mass_cancel: Option<MassCancel>,
}

pub use super::summary::PatientFailure;

/// The job's Device: found by identifier, or created by conditional create. In a dry run it
/// is only looked up.
async fn ensure_device(
    client: &FhirClient,
    config: &Config,
    dry_run: bool,
) -> Result<String, WriteBackError> {
    let system = &config.output.device_identifier_system;
    let value = super::detected_issue::DEVICE_ID;
    let search = client.search_url("Device", &[("identifier", format!("{system}|{value}"))]);
    let page = client.page(search.as_str()).await?;
    // Only a Device with our identifier is ours, whatever else the search answers with.
    let ours = page
        .resources
        .iter()
        .filter_map(|r| serde_json::from_str::<Value>(r.get()).ok())
        .find(|r| r["resourceType"] == "Device" && identifier_in(r, system) == Some(value));
    if let Some(id) = ours
        .as_ref()
        .and_then(|r| r["id"].as_str())
        .filter(|id| crate::ingest::is_fhir_id(id))
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
        .send(&url, |http| {
            http.post(url.as_str())
                .header("Content-Type", "application/fhir+json")
                .header("If-None-Exist", if_none_exist.as_str())
                .body(body.clone())
        })
        .await?;
    if !status.is_success() {
        return Err(FhirError::Status {
            method: reqwest::Method::POST,
            url,
            status: status.as_u16(),
            outcome: outcome_text(&body),
        }
        .into());
    }
    let created: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match created["id"].as_str() {
        Some(id) => Ok(format!("Device/{id}")),
        None => Err(FhirError::NoResourceInAnswer { url }.into()),
    }
}

/// Our DetectedIssues (those with our identifier system) as JSON: of these patients, or with
/// `None` of everyone (one search over all of them). Also the audit report's flag trail.
/// Whatever else a server answers with (another type, another identifier system, another
/// patient than those searched for) is dropped here.
pub async fn our_detected_issues(
    client: &FhirClient,
    patient_ids: Option<&[&str]>,
    config: &Config,
) -> Result<Vec<Value>, FhirError> {
    let system = &config.output.identifier_system;
    let identifier = ("identifier", format!("{system}|"));
    let count = ("_count", config.server.page_size.to_string());
    // Each search, with the patients it asks for (`None`: anyone's).
    let searches: Vec<(reqwest::Url, Option<FxHashSet<&str>>)> = match patient_ids {
        None => vec![(
            client.search_url("DetectedIssue", &[identifier, count]),
            None,
        )],
        Some(ids) => ids
            .chunks(config.server.patient_batch)
            .map(|batch| {
                let url = client.search_url(
                    "DetectedIssue",
                    &[
                        ("patient", batch.join(",")),
                        identifier.clone(),
                        count.clone(),
                    ],
                );
                (url, Some(batch.iter().copied().collect()))
            })
            .collect(),
    };
    let mut found = Vec::new();
    for (url, asked) in searches {
        client
            .search_all(url, |page| {
                found.extend(
                    page.resources
                        .iter()
                        .filter_map(|raw| serde_json::from_str::<Value>(raw.get()).ok())
                        .filter(|issue| {
                            issue["resourceType"] == "DetectedIssue"
                                && identifier_in(issue, system).is_some()
                                && asked.as_ref().is_none_or(|asked| {
                                    patient_of_issue(issue).is_some_and(|p| asked.contains(p))
                                })
                        }),
                )
            })
            .await?;
    }
    Ok(found)
}

/// The patient id a DetectedIssue is about, when it is a FHIR id (anything else is never put
/// into a URL, and such an issue is left alone).
fn patient_of_issue(issue: &Value) -> Option<&str> {
    issue["patient"]["reference"]
        .as_str()
        .and_then(crate::ingest::patient_id_of)
        .filter(|id| crate::ingest::is_fhir_id(id))
}

/// The value of a resource's identifier in `system`.
pub fn identifier_in<'a>(resource: &'a Value, system: &str) -> Option<&'a str> {
    resource["identifier"]
        .as_array()?
        .iter()
        .find(|i| i["system"].as_str() == Some(system))?["value"]
        .as_str()
}

/// Of these references (`Type/id`), those whose target the server no longer has: one `_id`
/// search per type and batch of ids.
async fn vanished_references(
    client: &FhirClient,
    config: &Config,
    references: &[&str],
) -> Result<FxHashSet<String>, FhirError> {
    let mut by_type: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for reference in references {
        if let Some((kind, id)) = reference.split_once('/') {
            if crate::ingest::is_fhir_id(id) && kind.chars().all(|c| c.is_ascii_alphabetic()) {
                by_type.entry(kind).or_default().push(id);
            }
        }
    }
    let mut vanished = FxHashSet::default();
    for (kind, mut ids) in by_type {
        ids.sort_unstable();
        ids.dedup();
        for batch in ids.chunks(config.server.patient_batch) {
            let url = client.search_url(
                kind,
                &[
                    ("_id", batch.join(",")),
                    ("_count", batch.len().to_string()),
                ],
            );
            let mut present = FxHashSet::default();
            client
                .search_all(url, |page| {
                    for raw in &page.resources {
                        // Only a resource of the type searched for shows its target is there.
                        let Some(header) = crate::ingest::resource_header(raw.get()) else {
                            continue;
                        };
                        if let (Some(found), Some(id)) = (header.kind, header.id) {
                            if found.name() == kind {
                                present.insert(id.into_owned());
                            }
                        }
                    }
                })
                .await?;
            vanished.extend(
                batch
                    .iter()
                    .filter(|id| !present.contains(**id))
                    .map(|id| format!("{kind}/{id}")),
            );
        }
    }
    Ok(vanished)
}

/// Our DetectedIssues, by identifier value. Should the server hold two for one identifier, one
/// a person set to `entered-in-error` stands for it: the flag is then not written again.
async fn existing_issues(
    client: &FhirClient,
    patient_ids: Option<&[&str]>,
    config: &Config,
) -> Result<FxHashMap<String, Existing>, FhirError> {
    let system = &config.output.identifier_system;
    let mut found: FxHashMap<String, Existing> = FxHashMap::default();
    for resource in our_detected_issues(client, patient_ids, config).await? {
        let identifier = identifier_in(&resource, system).map(str::to_owned);
        let (Some(identifier), Some(id)) = (identifier, resource["id"].as_str()) else {
            continue;
        };
        let issue = Existing {
            id: id.to_owned(),
            version: resource["meta"]["versionId"].as_str().map(str::to_owned),
            resource,
        };
        match found.get(&identifier) {
            Some(known) if is_entered_in_error(&known.resource) => {}
            _ => {
                found.insert(identifier, issue);
            }
        }
    }
    Ok(found)
}

/// Whether a DetectedIssue counts as active for the safety valve.
fn is_active(issue: &Existing) -> bool {
    !matches!(
        issue.resource["status"].as_str(),
        Some("cancelled") | Some("entered-in-error")
    )
}

/// Brings the server in line with the findings. Patients whose evaluation failed are left
/// alone (their DetectedIssues are neither updated nor cancelled). With a dry-run folder,
/// nothing is written: each patient's transaction Bundle is saved there instead.
pub async fn write_back(
    client: &FhirClient,
    patients: &[PatientFindings],
    config: &Config,
    options: &WriteBackOptions<'_>,
) -> Result<WriteReport, WriteBackError> {
    let (recorded, scope) = (options.recorded, options.scope);
    let dry_run = options.dry_run_dir.is_some();
    let device = ensure_device(client, config, dry_run).await?;
    // Everyone: all our DetectedIssues, so those of a patient who no longer has a TARE (one
    // entered in error) are cancelled too. A cohort (or an incremental run): those of its
    // patients only.
    let requested = scope.requested();
    let existing = match &requested {
        None => existing_issues(client, None, config).await?,
        Some(ids) => {
            let patient_ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            existing_issues(client, Some(&patient_ids), config).await?
        }
    };
    // Only this run's patients are ever written for: those of its shard and, for a cohort,
    // those it asked for (the sources read nothing else; this holds whatever they return).
    let in_scope = |patient: &str| {
        scope.in_shard(patient)
            && requested
                .as_ref()
                .is_none_or(|ids| ids.binary_search_by(|id| id.as_str().cmp(patient)).is_ok())
    };
    // Patients whose evaluation failed, and any outside the scope, are left alone.
    let untouchable: FxHashSet<&str> = patients
        .iter()
        .filter(|p| p.evaluation_error.is_some() || !in_scope(&p.patient_id))
        .map(|p| p.patient_id.as_str())
        .collect();
    // Which of our identifiers belong to which patient of the scope; an issue whose patient
    // reference is not a FHIR id is left alone (never put into a URL).
    let mut by_patient: FxHashMap<String, Vec<String>> = FxHashMap::default();
    let mut active = 0;
    for (identifier, issue) in &existing {
        let Some(patient) = patient_of_issue(&issue.resource) else {
            continue;
        };
        if in_scope(patient) && !untouchable.contains(patient) {
            active += usize::from(is_active(issue));
            by_patient
                .entry(patient.to_owned())
                .or_default()
                .push(identifier.clone());
        }
    }
    let mut report = WriteReport {
        dry_run,
        device: device.clone(),
        ..WriteReport::default()
    };
    for ours in by_patient.values_mut() {
        ours.sort();
    }
    let base = client.base().to_string();
    let mut planner = Planner {
        existing: &existing,
        config,
        device: &device,
        recorded,
        base: &base,
        vanished: FxHashSet::default(),
    };
    let mut plans = plan_everyone(&planner, patients, &untouchable, &by_patient);
    // A cancellation that implicates a resource since deleted would be refused by a server
    // that checks references on write: planned again without those references.
    let implicated: Vec<&str> = plans
        .iter()
        .filter_map(|(_, plan)| plan.as_ref().ok())
        .flat_map(|plan| plan.cancelled_references.iter().map(String::as_str))
        .collect();
    if !implicated.is_empty() {
        planner.vanished = vanished_references(client, config, &implicated).await?;
        if !planner.vanished.is_empty() {
            tracing::info!(
                references = planner.vanished.len(),
                "cancellations drop references to resources deleted from the server"
            );
            plans = plan_everyone(&planner, patients, &untouchable, &by_patient);
        }
    }
    let mut bundles = Vec::new();
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
        report.kept_entered_in_error += plan.kept_entered_in_error;
        if plan.entries.is_empty() {
            continue;
        }
        bundles.push((patient_id, plan));
    }
    // The safety valve, before anything is sent.
    let would_cancel: usize = bundles.iter().map(|(_, plan)| plan.cancelled).sum();
    let valve = MassCancel {
        would_cancel,
        active,
        max_fraction: config.output.max_cancel_fraction,
        no_tare_patient_read: options.tare_patients_read == 0,
    };
    if valve.trips(config.output.mass_cancel_min_count) && !options.allow_mass_cancel {
        report.mass_cancel = Some(valve);
        if !dry_run {
            return Ok(report);
        }
    }
    if let Some(dir) = options.dry_run_dir {
        save_bundles(dir, bundles, &mut report)?;
    } else {
        send_bundles(client, config, bundles, &mut report).await?;
    }
    report
        .failed
        .sort_by(|a, b| a.patient_id.cmp(&b.patient_id));
    Ok(report)
}

/// A dry run: each patient's Bundle saved whole (0600) under a name that cannot collide (the
/// id, which is a FHIR id, and a hash of it, so file systems that ignore case keep them apart)
/// nor exceed a file-name limit, and `index.csv` from patient id to file.
fn save_bundles(
    dir: &Path,
    bundles: Vec<(String, Plan)>,
    report: &mut WriteReport,
) -> Result<(), WriteBackError> {
    crate::output::create_folder(dir)?;
    let mut index = Vec::new();
    for (patient_id, plan) in bundles {
        if crate::interrupt::requested() {
            return Err(WriteBackError::Interrupted);
        }
        let name = bundle_file_name(&patient_id);
        let bundle = transaction(plan.entries);
        crate::output::write_atomically(&dir.join(&name), |w| {
            serde_json::to_writer_pretty(&mut *w, &bundle)?;
            w.write_all(b"\n")
        })?;
        index.push((patient_id, name));
        report.transactions += 1;
        report.created += plan.created;
        report.updated += plan.updated;
        report.cancelled += plan.cancelled;
    }
    crate::output::write_atomically(&dir.join("index.csv"), |w| {
        let mut writer = crate::format::GuardedCsv::new(w);
        writer
            .row(["patient_id", "file"])
            .map_err(std::io::Error::other)?;
        for (patient_id, name) in &index {
            writer
                .row([patient_id, name])
                .map_err(std::io::Error::other)?;
        }
        writer.flush()
    })?;
    Ok(())
}

/// The dry-run file of a patient: `ID.HASH.json`, at most 64 + 1 + 12 + 5 characters.
pub fn bundle_file_name(patient_id: &str) -> String {
    let hash = &stable_id(patient_id)[..12];
    let readable: String = patient_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .take(64)
        .collect();
    format!("{readable}.{hash}.json")
}

/// Whether an answer to a transaction says the server, not the patient's Bundle, is the
/// problem (after the retries `send` already made): credentials refused, or the server
/// overloaded or failing. Sending the other patients' Bundles would only wait and fail again.
fn halts_the_write_back(status: StatusCode) -> bool {
    matches!(status.as_u16(), 401 | 403 | 429) || status.is_server_error()
}

/// Sends each patient's Bundle; a stop asked for by SIGINT/SIGTERM lets the transactions in
/// flight finish and sends no more. So does a server that stops answering (no answer within
/// its timeouts, a connection refused after the retries) or refuses the credentials or
/// fails (401, 403, 429, 5xx after the retries): the write-back ends with that error (exit 2
/// for credentials, else 3) instead of waiting for every patient in turn; what was written
/// stays written, and the next run, from the same state, completes it.
async fn send_bundles(
    client: &FhirClient,
    config: &Config,
    bundles: Vec<(String, Plan)>,
    report: &mut WriteReport,
) -> Result<(), WriteBackError> {
    let url = client.base().to_string();
    let progress = Progress::start("writing", bundles.len() as u64);
    // The first answer that halted the write-back.
    let halted: std::sync::Mutex<Option<FhirError>> = std::sync::Mutex::new(None);
    let halt = |error: FhirError| {
        let mut first = halted.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(error);
    };
    let is_halted = || halted.lock().unwrap_or_else(|p| p.into_inner()).is_some();
    // Per patient: the plan, and the answer (none when it was not sent, or a stop cut its
    // answer off, or its answer halted the write-back).
    type Sent = (String, Plan, Option<Result<(), String>>);
    let results: Vec<Sent> = stream::iter(bundles)
        .map(|(patient_id, mut plan)| {
            let url = url.clone();
            let progress = &progress;
            let (halt, is_halted) = (&halt, &is_halted);
            async move {
                if crate::interrupt::requested() || is_halted() {
                    return (patient_id, plan, None);
                }
                let bundle = transaction(std::mem::take(&mut plan.entries)).to_string();
                let sent = client
                    .send(&url, |http| {
                        http.post(url.as_str())
                            .header("Content-Type", "application/fhir+json")
                            .body(bundle.clone())
                    })
                    .await;
                let result = match sent {
                    // Cut off by the stop: not a failure of this patient's (the next run,
                    // from the same state, finds what the server kept).
                    Err(FhirError::Interrupted { .. }) => None,
                    Ok(answer) if answer.status == StatusCode::OK => Some(Ok(())),
                    Ok(answer) if halts_the_write_back(answer.status) => {
                        halt(FhirError::Status {
                            method: reqwest::Method::POST,
                            url: url.clone(),
                            status: answer.status.as_u16(),
                            outcome: outcome_text(&answer.body),
                        });
                        None
                    }
                    Ok(answer) => Some(Err(format!(
                        "HTTP {}: {}",
                        answer.status.as_u16(),
                        outcome_text(&answer.body)
                    ))),
                    Err(e @ FhirError::Transport { .. }) => {
                        halt(e);
                        None
                    }
                    Err(e) => Some(Err(e.to_string())),
                };
                progress.advance(1);
                (patient_id, plan, result)
            }
        })
        .buffer_unordered(config.server.write_concurrency)
        .collect()
        .await;
    progress.finish();
    let mut not_sent = 0;
    for (patient_id, plan, result) in results {
        match result {
            None => not_sent += 1,
            Some(Ok(())) => {
                report.transactions += 1;
                report.created += plan.created;
                report.updated += plan.updated;
                report.cancelled += plan.cancelled;
            }
            Some(Err(message)) => {
                tracing::warn!(patient_failures = 1, "a patient's write-back failed");
                report.failed.push(PatientFailure {
                    patient_id,
                    message,
                })
            }
        }
    }
    if let Some(error) = halted.into_inner().unwrap_or_else(|p| p.into_inner()) {
        tracing::warn!(
            transactions_written = report.transactions as u64,
            patients_not_written = (not_sent + report.failed.len()) as u64,
            "write-back stopped: the server refused or did not answer a transaction; what was written stays, the next run completes it"
        );
        return Err(WriteBackError::Fhir(error));
    }
    if not_sent > 0 {
        return Err(WriteBackError::Interrupted);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valve(would_cancel: usize, active: usize, no_tare_patient_read: bool) -> MassCancel {
        MassCancel {
            would_cancel,
            active,
            max_fraction: 0.25,
            no_tare_patient_read,
        }
    }

    #[test]
    fn the_valve_trips_on_a_large_share_past_the_floor_or_any_cancel_without_tare_patients() {
        // 11 of 40 is 27.5 %, past the floor of 10: stopped; 10 of 40 is not.
        assert!(valve(11, 40, false).trips(10));
        assert!(!valve(10, 40, false).trips(10));
        // A small cohort's ordinary night: 2 of 7.
        assert!(!valve(2, 7, false).trips(10));
        // 25 % exactly is allowed; more is not.
        assert!(!valve(25, 100, false).trips(10));
        assert!(valve(26, 100, false).trips(10));
        // No TARE patient read: any cancellation stops it, none does not.
        assert!(valve(1, 500, true).trips(10));
        assert!(!valve(0, 500, true).trips(10));
    }
}
