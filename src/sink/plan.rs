//! Planning a write-back: per patient, the transaction entries that bring the server's
//! DetectedIssues (ours, by identifier system) in line with the findings. Pure: what the server
//! holds comes in as `Existing`, the entries go out as JSON.

use super::detected_issue::{planned_issues, stable_id, PlannedIssue};
use crate::config::Config;
use crate::domain::PatientFindings;
use fhir_resources::ProvenanceSpec;
use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::{json, Value};

/// The elements of a DetectedIssue the job owns; anything else on the server is kept.
pub const OWNED_ELEMENTS: [&str; 9] = [
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

/// A DetectedIssue of ours already on the server.
pub struct Existing {
    pub id: String,
    pub version: Option<String>,
    pub resource: Value,
}

pub fn owned_part(resource: &Value) -> Value {
    Value::Object(
        OWNED_ELEMENTS
            .iter()
            .filter_map(|k| resource.get(*k).map(|v| ((*k).to_owned(), v.clone())))
            .collect(),
    )
}

/// One patient's transaction: its entries and what they do.
#[derive(Default)]
pub struct Plan {
    pub entries: Vec<Value>,
    pub created: usize,
    pub updated: usize,
    pub cancelled: usize,
    pub unchanged: usize,
    /// DetectedIssues a person set to `entered-in-error`, left as they are.
    pub kept_entered_in_error: usize,
    /// The references the cancelled DetectedIssues implicate (checked for deleted targets).
    pub cancelled_references: Vec<String>,
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

/// Why one patient's entries could not be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Build(#[from] fhir_resources::BuildError),
    /// Without a version there is no `If-Match`: a person's concurrent edit could be lost.
    #[error("DetectedIssue/{0} has no meta.versionId on the server, so it cannot be updated safely (If-Match); it was left as it is")]
    NoVersion(String),
}

/// What planning every patient's entries shares.
pub struct Planner<'a> {
    pub existing: &'a FxHashMap<String, Existing>,
    pub config: &'a Config,
    /// `Device/ID`: the author and the Provenance agent.
    pub device: &'a str,
    /// `Provenance.recorded`.
    pub recorded: &'a str,
    /// The server's base, ending in `/`: the `fullUrl` of an entry that updates a resource.
    pub base: &'a str,
    /// References (`Type/id`) whose targets are gone from the server: a cancellation drops
    /// them, since servers that check references on write (HAPI by default) refuse a resource
    /// that refers to a deleted one.
    pub vanished: FxHashSet<String>,
}

impl Planner<'_> {
    /// A Provenance of `content` written to `target`, with an id derived from both (a retried
    /// transaction writes the same one again, not a second).
    fn provenance_entry(
        &self,
        target: &str,
        content: &Value,
        sources: &[String],
    ) -> Result<Value, fhir_resources::BuildError> {
        let id = stable_id(&format!("{target}\n{content}"));
        let text = fhir_resources::provenance(&ProvenanceSpec {
            id: &id,
            target_reference: target,
            recorded: self.recorded,
            agent_reference: self.device,
            source_references: sources,
        })?;
        let resource: Value = serde_json::from_str(&text).expect("built JSON parses");
        Ok(json!({
            "fullUrl": format!("urn:uuid:{}", uuid_from_hex(&id)),
            "resource": resource,
            "request": {"method": "PUT", "url": format!("Provenance/{id}")}
        }))
    }

    /// A PUT of `resource` over an existing DetectedIssue, guarded by `If-Match` on the version
    /// read, and its Provenance. The entry's `fullUrl` is the resource's own URL: relative
    /// references inside a Bundle resolve against it (HAPI's validator rejects an entry
    /// without one).
    fn update_entries(
        &self,
        current: &Existing,
        resource: Value,
        sources: &[String],
    ) -> Result<[Value; 2], PlanError> {
        let Some(version) = &current.version else {
            return Err(PlanError::NoVersion(current.id.clone()));
        };
        let target = format!("DetectedIssue/{}", current.id);
        let request =
            json!({"method": "PUT", "url": target, "ifMatch": format!("W/\"{version}\"")});
        let provenance = self.provenance_entry(&target, &owned_part(&resource), sources)?;
        Ok([
            json!({"fullUrl": format!("{}{target}", self.base), "resource": resource, "request": request}),
            provenance,
        ])
    }

    /// The entries that bring one patient's DetectedIssues in line with the findings.
    fn plan_patient(
        &self,
        planned: Vec<PlannedIssue>,
        ours_for_patient: Vec<String>,
    ) -> Result<Plan, PlanError> {
        let system = &self.config.output.identifier_system;
        let mut plan = Plan::default();
        let mut wanted = rustc_hash::FxHashSet::default();
        for issue in planned {
            wanted.insert(issue.identifier.clone());
            let desired: Value = serde_json::from_str(&issue.resource).expect("built JSON parses");
            match self.existing.get(&issue.identifier) {
                // A person's word on this flag: no update, and no second one while it stands.
                Some(current) if is_entered_in_error(&current.resource) => {
                    plan.kept_entered_in_error += 1;
                }
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
                    plan.entries.push(self.provenance_entry(
                        &full_url,
                        &owned_part(&desired),
                        &issue.sources,
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
                    plan.entries
                        .extend(self.update_entries(current, updated, &issue.sources)?);
                    plan.updated += 1;
                }
            }
        }
        for identifier in ours_for_patient {
            if wanted.contains(&identifier) {
                continue;
            }
            let Some(current) = self.existing.get(&identifier) else {
                continue;
            };
            if is_entered_in_error(&current.resource) {
                plan.kept_entered_in_error += 1;
                continue;
            }
            if current.resource["status"] == "cancelled" {
                continue;
            }
            let mut cancelled = current.resource.clone();
            cancelled["status"] = json!("cancelled");
            let implicated = implicated_references(&current.resource);
            if implicated.iter().any(|r| self.vanished.contains(r)) {
                let kept: Vec<Value> = cancelled["implicated"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|r| {
                        !r["reference"]
                            .as_str()
                            .is_some_and(|r| self.vanished.contains(r))
                    })
                    .cloned()
                    .collect();
                let object = cancelled.as_object_mut().expect("an object");
                match kept.is_empty() {
                    true => object.remove("implicated"),
                    false => object.insert("implicated".to_owned(), Value::Array(kept)),
                };
            }
            let sources: Vec<String> = implicated
                .iter()
                .filter(|r| !self.vanished.contains(*r))
                .cloned()
                .collect();
            plan.entries
                .extend(self.update_entries(current, cancelled, &sources)?);
            plan.cancelled_references.extend(implicated);
            plan.cancelled += 1;
        }
        Ok(plan)
    }
}

/// Whether a person set this DetectedIssue to `entered-in-error` (the job never does): then it
/// stays as it is.
pub fn is_entered_in_error(resource: &Value) -> bool {
    resource["status"] == "entered-in-error"
}

/// The references (`Type/id`) a DetectedIssue implicates.
fn implicated_references(resource: &Value) -> Vec<String> {
    resource["implicated"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["reference"].as_str().map(str::to_owned))
        .collect()
}

/// Every patient's plan: those with findings (less the untouchable ones: their evaluation
/// failed, or they are outside the run's scope), then those with DetectedIssues of ours but no
/// findings any more, each of which is cancelled. `ours` maps a patient (of the scope) to the
/// identifiers of its DetectedIssues, sorted.
pub fn plan_everyone(
    planner: &Planner,
    patients: &[PatientFindings],
    untouchable: &FxHashSet<&str>,
    ours: &FxHashMap<String, Vec<String>>,
) -> Vec<(String, Result<Plan, PlanError>)> {
    let mut plans: Vec<(String, Result<Plan, PlanError>)> = patients
        .iter()
        .filter(|patient| !untouchable.contains(patient.patient_id.as_str()))
        .map(|patient| {
            let plan = planned_issues(patient, planner.config, planner.device, false)
                .map_err(PlanError::from)
                .and_then(|planned| {
                    let mine = ours.get(&patient.patient_id).cloned().unwrap_or_default();
                    planner.plan_patient(planned, mine)
                });
            (patient.patient_id.clone(), plan)
        })
        .collect();
    let with_findings: FxHashSet<&str> = patients.iter().map(|p| p.patient_id.as_str()).collect();
    let mut without_findings: Vec<(&String, &Vec<String>)> = ours
        .iter()
        .filter(|(patient, _)| !with_findings.contains(patient.as_str()))
        .collect();
    without_findings.sort();
    for (patient_id, mine) in without_findings {
        plans.push((
            patient_id.clone(),
            planner.plan_patient(Vec::new(), mine.clone()),
        ));
    }
    plans
}

pub fn transaction(entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn existing_issue() -> FxHashMap<String, Existing> {
        let resource = json!({
            "resourceType": "DetectedIssue", "id": "di-1", "status": "preliminary",
            "meta": {"versionId": "3"},
            "patient": {"reference": "Patient/p1"},
            "implicated": [{"reference": "Procedure/tare-1"}, {"reference": "Observation/o-1"}],
            "mitigation": [{"action": {"text": "CT booked"}}]
        });
        FxHashMap::from_iter([(
            "flag-1".to_owned(),
            Existing {
                id: "di-1".into(),
                version: Some("3".into()),
                resource,
            },
        )])
    }

    fn cancel_with(vanished: &[&str]) -> Plan {
        plan_with(existing_issue(), vanished, Vec::new())
    }

    fn plan_with(
        existing: FxHashMap<String, Existing>,
        vanished: &[&str],
        planned: Vec<PlannedIssue>,
    ) -> Plan {
        let config = Config::default();
        let planner = Planner {
            existing: &existing,
            config: &config,
            device: "Device/tmm",
            recorded: "2026-11-01T02:00:00Z",
            base: "https://fhir.example.org/",
            vanished: vanished.iter().map(|r| (*r).to_owned()).collect(),
        };
        planner
            .plan_patient(planned, vec!["flag-1".into()])
            .unwrap()
    }

    fn entered_in_error() -> FxHashMap<String, Existing> {
        let mut existing = existing_issue();
        let issue = existing.get_mut("flag-1").unwrap();
        issue.resource["status"] = json!("entered-in-error");
        existing
    }

    #[test]
    fn a_flag_a_person_set_to_entered_in_error_is_neither_cancelled_nor_written_again() {
        // The flag no longer holds: not cancelled.
        let plan = plan_with(entered_in_error(), &[], Vec::new());
        assert!(plan.entries.is_empty());
        assert_eq!((plan.cancelled, plan.kept_entered_in_error), (0, 1));

        // The flag still holds (with new numbers): no update, no second one.
        let still = PlannedIssue {
            identifier: "flag-1".into(),
            resource: json!({"resourceType": "DetectedIssue", "status": "preliminary",
                             "patient": {"reference": "Patient/p1"}, "detail": "new numbers"})
            .to_string(),
            sources: vec!["Observation/o-2".into()],
        };
        let plan = plan_with(entered_in_error(), &[], vec![still]);
        assert!(plan.entries.is_empty());
        assert_eq!(
            (plan.created, plan.updated, plan.kept_entered_in_error),
            (0, 0, 1)
        );
    }

    fn references(value: &Value) -> Vec<&str> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r["reference"]
                    .as_str()
                    .or(r["what"]["reference"].as_str())
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn a_cancellation_keeps_the_references_of_resources_still_on_the_server() {
        let plan = cancel_with(&[]);
        assert_eq!(plan.cancelled, 1);
        let issue = &plan.entries[0];
        assert_eq!(issue["resource"]["status"], "cancelled");
        assert_eq!(issue["request"]["ifMatch"], "W/\"3\"");
        assert_eq!(
            references(&issue["resource"]["implicated"]),
            ["Procedure/tare-1", "Observation/o-1"]
        );
        assert_eq!(
            plan.cancelled_references,
            ["Procedure/tare-1", "Observation/o-1"]
        );
    }

    #[test]
    fn a_cancellation_drops_references_to_deleted_resources_and_keeps_the_rest() {
        let plan = cancel_with(&["Procedure/tare-1"]);
        let issue = &plan.entries[0]["resource"];
        assert_eq!(issue["status"], "cancelled");
        assert_eq!(references(&issue["implicated"]), ["Observation/o-1"]);
        // What a person added stays.
        assert_eq!(issue["mitigation"][0]["action"]["text"], "CT booked");
        let provenance = &plan.entries[1]["resource"];
        assert_eq!(references(&provenance["entity"]), ["Observation/o-1"]);

        // Nothing left to implicate: the element goes (an empty list is not valid FHIR).
        let plan = cancel_with(&["Procedure/tare-1", "Observation/o-1"]);
        let issue = &plan.entries[0]["resource"];
        assert!(issue.get("implicated").is_none(), "{issue}");
        assert!(plan.entries[1]["resource"].get("entity").is_none());
    }
}
