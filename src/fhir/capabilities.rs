//! What a server says it can do (its CapabilityStatement, `GET [base]/metadata`), read before
//! the first search, so a run against the wrong server fails at once and says why: a server
//! that is not FHIR R4 (4.0.x) is refused, naming its version; one that does not declare a
//! search or interaction the run needs is refused with the list of what is missing.
//!
//! A statement that declares no REST resources at all is taken at its word as saying
//! nothing (some servers publish a minimal one): a warning, and the run goes on. A search
//! parameter is only missing when the resource lists its search parameters and that one is
//! not among them (nor among the server-wide ones); a resource that lists none is taken to
//! search by the parameters FHIR defines for it.

use super::client::{FhirClient, FhirError};
use serde_json::Value;

/// What a run will ask of the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Writes DetectedIssues back (not a dry run).
    pub writes: bool,
    /// Reads through Bulk Data `$export`.
    pub bulk: bool,
    /// Asks for what changed since the last run (`_lastUpdated`).
    pub incremental: bool,
}

/// One thing the job needs: an interaction on a resource type (`search-type`, `create`,
/// `update`), with the search parameters it uses; or a system-level interaction or operation
/// (`resource` empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub resource: &'static str,
    pub interaction: &'static str,
    pub params: Vec<&'static str>,
}

impl Need {
    fn new(resource: &'static str, interaction: &'static str, params: &[&'static str]) -> Need {
        Need {
            resource,
            interaction,
            params: params.to_vec(),
        }
    }

    /// "Observation search by code, patient", "DetectedIssue update", "transaction".
    pub fn describe(&self) -> String {
        let action = match self.interaction {
            "search-type" => "search".to_owned(),
            other => other.to_owned(),
        };
        let mut text = match self.resource {
            "" => action,
            resource => format!("{resource} {action}"),
        };
        if !self.params.is_empty() {
            text.push_str(" by ");
            text.push_str(&self.params.join(", "));
        }
        text
    }
}

/// Everything a run with these needs asks of the server. Reading: the TARE Procedures (with
/// their Patients), Patients by id and identifier, HCC Conditions and marker Observations by
/// patient and code, everything by `_lastUpdated` when incremental. Writing back: one
/// transaction per patient, DetectedIssues searched by identifier and patient, created and
/// updated, Provenances put under ids of their own, and the job's Device.
pub fn needed(needs: Needs) -> Vec<Need> {
    let changed: &[&str] = match needs.incremental {
        true => &["code", "_lastUpdated"],
        false => &["code"],
    };
    let with = |base: &[&'static str]| {
        let mut params = base.to_vec();
        params.extend(changed.iter().skip(1));
        params
    };
    let mut list = vec![
        Need {
            params: with(&["code", "patient"]),
            ..Need::new("Procedure", "search-type", &[])
        },
        Need::new("Patient", "search-type", &["_id", "identifier"]),
        Need {
            params: with(&["code", "patient"]),
            ..Need::new("Condition", "search-type", &[])
        },
        Need {
            params: with(&["code", "patient"]),
            ..Need::new("Observation", "search-type", &[])
        },
    ];
    if needs.writes {
        list.extend([
            Need::new("", "transaction", &[]),
            Need::new("DetectedIssue", "search-type", &["identifier", "patient"]),
            Need::new("DetectedIssue", "create", &[]),
            Need::new("DetectedIssue", "update", &[]),
            Need::new("Provenance", "update", &[]),
            Need::new("Device", "search-type", &["identifier"]),
            Need::new("Device", "create", &[]),
        ]);
    }
    if needs.bulk {
        list.push(Need::new("", "$export", &[]));
    }
    list
}

/// What the statement says about the job's needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Everything needed is declared.
    Declared,
    /// The statement declares no REST resources: nothing can be told from it.
    Silent,
    /// These needs are not declared.
    Missing(Vec<Need>),
}

/// Why a server's statement refuses the run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    #[error("the answer to /metadata is a {found}, not a CapabilityStatement")]
    NotAStatement { found: String },
    #[error("it is FHIR {version}, not R4 (4.0.x): this job reads and writes FHIR R4 only")]
    NotR4 { version: String },
}

fn names<'a>(list: &'a Value, key: &str) -> impl Iterator<Item = &'a str> {
    let key = key.to_owned();
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(move |item| item[key.as_str()].as_str())
}

/// Checks a CapabilityStatement (as JSON): FHIR R4, and every need declared.
pub fn judge(statement: &Value, needs: &[Need]) -> Result<Judgement, CapabilityError> {
    let kind = statement["resourceType"].as_str().unwrap_or("non-resource");
    if kind != "CapabilityStatement" {
        return Err(CapabilityError::NotAStatement {
            found: crate::text::shown(kind).chars().take(60).collect(),
        });
    }
    let version = statement["fhirVersion"].as_str().unwrap_or("(none given)");
    if !version.starts_with("4.0.") {
        return Err(CapabilityError::NotR4 {
            version: crate::text::shown(version).chars().take(40).collect(),
        });
    }
    let servers: Vec<&Value> = statement["rest"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|rest| rest["mode"].as_str() != Some("client"))
        .collect();
    let declares_resources = servers
        .iter()
        .any(|rest| rest["resource"].as_array().is_some_and(|r| !r.is_empty()));
    if !declares_resources {
        return Ok(Judgement::Silent);
    }
    let missing: Vec<Need> = needs
        .iter()
        .filter_map(|need| missing_part(&servers, need))
        .collect();
    Ok(match missing.is_empty() {
        true => Judgement::Declared,
        false => Judgement::Missing(missing),
    })
}

/// The part of `need` the server does not declare (the whole need, or the search parameters
/// it lacks), if any.
fn missing_part(servers: &[&Value], need: &Need) -> Option<Need> {
    if need.resource.is_empty() {
        let declared = servers.iter().any(|rest| match need.interaction {
            operation if operation.starts_with('$') => {
                let name = &operation[1..];
                names(&rest["operation"], "name").any(|n| n == name)
                    || rest["resource"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|r| names(&r["operation"], "name").any(|n| n == name))
            }
            interaction => names(&rest["interaction"], "code").any(|c| c == interaction),
        });
        return (!declared).then(|| need.clone());
    }
    let resource = servers.iter().find_map(|rest| {
        rest["resource"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["type"].as_str() == Some(need.resource))
            .map(|r| (*rest, r))
    });
    let Some((rest, resource)) = resource else {
        return Some(Need::new(need.resource, need.interaction, &[]));
    };
    if !names(&resource["interaction"], "code").any(|c| c == need.interaction) {
        return Some(Need::new(need.resource, need.interaction, &[]));
    }
    let listed: Vec<&str> = names(&resource["searchParam"], "name")
        .chain(names(&rest["searchParam"], "name"))
        .collect();
    if resource["searchParam"]
        .as_array()
        .is_none_or(|list| list.is_empty())
    {
        return None;
    }
    let absent: Vec<&'static str> = need
        .params
        .iter()
        .copied()
        .filter(|p| !listed.contains(p))
        .collect();
    (!absent.is_empty()).then(|| Need {
        params: absent,
        ..need.clone()
    })
}

/// Reads the server's CapabilityStatement.
pub async fn read(client: &FhirClient) -> Result<Value, FhirError> {
    let url = client
        .base()
        .join("metadata")
        .expect("a valid relative path");
    client.read(url.as_str()).await
}

/// Reads the statement and refuses a server that is not R4 or does not declare what `needs`
/// asks (warning, and going on, when it declares no resources at all).
pub async fn require(client: &FhirClient, needs: Needs) -> Result<(), FhirError> {
    let statement = read(client).await?;
    let host = client.base().host_str().unwrap_or("?").to_owned();
    match judge(&statement, &needed(needs)) {
        Err(refusal) => Err(FhirError::Capability { host, refusal }),
        Ok(Judgement::Declared) => Ok(()),
        Ok(Judgement::Silent) => {
            tracing::warn!(
                "the FHIR server at {host} declares no resources in its CapabilityStatement; \
                 going on without knowing what it supports"
            );
            Ok(())
        }
        Ok(Judgement::Missing(missing)) => Err(FhirError::Undeclared {
            host,
            missing: missing
                .iter()
                .map(Need::describe)
                .collect::<Vec<_>>()
                .join("; "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn statement(version: &str, resources: Value) -> Value {
        json!({"resourceType": "CapabilityStatement", "fhirVersion": version,
            "rest": [{"mode": "server", "resource": resources,
                "interaction": [{"code": "transaction"}]}]})
    }

    fn searchable(kind: &str, params: &[&str], interactions: &[&str]) -> Value {
        json!({"type": kind,
            "interaction": interactions.iter().map(|c| json!({"code": c})).collect::<Vec<_>>(),
            "searchParam": params.iter().map(|n| json!({"name": n, "type": "token"})).collect::<Vec<_>>()})
    }

    fn readable() -> Vec<Value> {
        vec![
            searchable("Procedure", &["code", "patient"], &["search-type"]),
            searchable("Patient", &["_id", "identifier"], &["search-type"]),
            searchable("Condition", &["code", "patient"], &["search-type"]),
            searchable("Observation", &["code", "patient"], &["search-type"]),
        ]
    }

    #[test]
    fn a_server_that_is_not_r4_is_refused_naming_its_version() {
        for version in ["3.0.2", "4.3.0", "5.0.0"] {
            assert_eq!(
                judge(
                    &statement(version, json!(readable())),
                    &needed(Needs::default())
                ),
                Err(CapabilityError::NotR4 {
                    version: version.into()
                })
            );
        }
        let dstu2 = json!({"resourceType": "Conformance", "fhirVersion": "1.0.2"});
        assert_eq!(
            judge(&dstu2, &needed(Needs::default())),
            Err(CapabilityError::NotAStatement {
                found: "Conformance".into()
            })
        );
    }

    #[test]
    fn a_reading_run_needs_only_the_four_searches() {
        assert_eq!(
            judge(
                &statement("4.0.1", json!(readable())),
                &needed(Needs::default())
            ),
            Ok(Judgement::Declared)
        );
    }

    #[test]
    fn missing_searches_parameters_and_writes_are_each_named() {
        let needs = Needs {
            writes: true,
            bulk: false,
            incremental: true,
        };
        let judged = judge(&statement("4.0.1", json!(readable())), &needed(needs)).unwrap();
        let Judgement::Missing(missing) = judged else {
            panic!("{judged:?}")
        };
        let described: Vec<String> = missing.iter().map(Need::describe).collect();
        assert_eq!(
            described,
            [
                "Procedure search by _lastUpdated",
                "Condition search by _lastUpdated",
                "Observation search by _lastUpdated",
                "DetectedIssue search",
                "DetectedIssue create",
                "DetectedIssue update",
                "Provenance update",
                "Device search",
                "Device create",
            ]
        );
    }

    #[test]
    fn bulk_needs_export_declared_at_the_system_or_on_a_resource() {
        let needs = needed(Needs {
            bulk: true,
            ..Needs::default()
        });
        let without = judge(&statement("4.0.1", json!(readable())), &needs).unwrap();
        assert_eq!(
            without,
            Judgement::Missing(vec![Need::new("", "$export", &[])])
        );
        let mut with = statement("4.0.1", json!(readable()));
        with["rest"][0]["operation"] = json!([{"name": "export", "definition": "x"}]);
        assert_eq!(judge(&with, &needs), Ok(Judgement::Declared));
    }

    #[test]
    fn a_statement_without_resources_says_nothing_and_one_without_parameters_lists_none() {
        assert_eq!(
            judge(&statement("4.0.1", json!([])), &needed(Needs::default())),
            Ok(Judgement::Silent)
        );
        let bare: Vec<Value> = ["Procedure", "Patient", "Condition", "Observation"]
            .iter()
            .map(|kind| json!({"type": kind, "interaction": [{"code": "search-type"}]}))
            .collect();
        assert_eq!(
            judge(&statement("4.0.1", json!(bare)), &needed(Needs::default())),
            Ok(Judgement::Declared)
        );
    }
}
