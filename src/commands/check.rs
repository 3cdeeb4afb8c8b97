//! `check`: for setting up a new site, tries what a run will ask of the server, one line per
//! check ("ok" or "FAILED: why"): its CapabilityStatement (FHIR R4, and every search and
//! interaction declared), an access token (when auth is configured), one search of each kind
//! the job sends (`_count=1`), and `DetectedIssue/$validate` on one DetectedIssue as the job
//! writes it (or, on a server without `$validate`, a description of that DetectedIssue).
//! Nothing is written. Exit code 0 only when every check passed, 3 otherwise.

use super::CommandError;
use crate::config::{Config, ReadWith};
use crate::fhir::capabilities::{self, Judgement, Need, Needs};
use crate::fhir::client::{outcome_text, FhirClient, FhirError};
use crate::source::search::Codes;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// FHIR server base URL (default: the config's `server.base_url`).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// TOML file over the built-in defaults, as for `run`; TMM_SECTION__KEY variables
    /// override both.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// One check's result: ok (with a note), or failed (with why).
struct Line {
    name: String,
    result: Result<String, String>,
}

impl Line {
    fn print(&self) {
        let name = crate::text::shown(&self.name);
        match &self.result {
            Ok(note) if note.is_empty() => say!("{name}: ok"),
            Ok(note) => say!("{name}: ok ({})", crate::text::shown(note)),
            Err(why) => say!("{name}: FAILED: {}", crate::text::shown(why)),
        }
    }
}

fn failed(error: &FhirError) -> String {
    crate::fhir::error::chain(error)
}

/// The searches a run sends, each with `_count=1`: a name for the line and the URL.
fn searches(client: &FhirClient, config: &Config, patient: Option<&str>) -> Vec<(String, String)> {
    let codes = Codes::of(config);
    let one = ("_count", "1".to_owned());
    let mut list = vec![
        (
            "Procedure search by code (TARE)",
            client.search_url("Procedure", &[("code", codes.tare.clone()), one.clone()]),
        ),
        (
            "Patient search by identifier",
            client.search_url(
                "Patient",
                &[
                    ("identifier", "urn:example:tmm-check|none".into()),
                    one.clone(),
                ],
            ),
        ),
        (
            "DetectedIssue search by identifier (the job's own)",
            client.search_url(
                "DetectedIssue",
                &[
                    (
                        "identifier",
                        format!("{}|", config.output.identifier_system),
                    ),
                    one.clone(),
                ],
            ),
        ),
    ];
    // By patient, as the run searches: for a patient the TARE search found, else one that
    // does not exist (the search must still be accepted).
    let patient = patient.unwrap_or("tmm-check-no-such-patient").to_owned();
    list.push((
        "Condition search by patient and code (HCC)",
        client.search_url(
            "Condition",
            &[
                ("patient", patient.clone()),
                ("code", codes.hcc.clone()),
                one.clone(),
            ],
        ),
    ));
    list.push((
        "Observation search by patient and code (markers)",
        client.search_url(
            "Observation",
            &[
                ("patient", patient),
                ("code", codes.markers.clone()),
                one.clone(),
            ],
        ),
    ));
    if config.schedule.state_file.is_some() {
        list.push((
            "Observation search by _lastUpdated (incremental runs)",
            client.search_url(
                "Observation",
                &[
                    ("code", codes.markers),
                    ("_lastUpdated", "gt2000-01-01T00:00:00Z".into()),
                    one,
                ],
            ),
        ));
    }
    list.into_iter()
        .map(|(name, url)| (name.to_owned(), url.to_string()))
        .collect()
}

/// One DetectedIssue as the job writes it, for `patient` (with `procedure` implicated).
fn sample_issue(
    config: &Config,
    patient: &str,
    procedure: Option<&str>,
) -> Result<String, fhir_resources::BuildError> {
    let code = crate::domain::FlagCode::MarkerRise;
    let implicated: Vec<String> = procedure
        .map(|id| format!("Procedure/{id}"))
        .into_iter()
        .collect();
    fhir_resources::detected_issue(&fhir_resources::DetectedIssueSpec {
        id: None,
        identifier_system: &config.output.identifier_system,
        identifier_value: "tmm-check",
        status: fhir_resources::IssueStatus::Preliminary,
        code_system: &config.output.flag_code_system,
        code: code.code(),
        code_display: code.display(),
        severity: "moderate",
        patient_reference: &format!("Patient/{patient}"),
        identified_date: &chrono::Utc::now().date_naive().to_string(),
        author_reference: &format!("Device/{}", crate::sink::detected_issue::DEVICE_ID),
        implicated_references: &implicated,
        detail: "tare-marker-monitor check: a sample, not written",
        reference_url: config.output.rules_url.as_deref(),
    })
}

/// Whether an answer to `$validate` says the operation is not there.
fn unsupported(status: u16) -> bool {
    matches!(status, 404 | 405 | 501)
}

/// Runs every check on `client`, printing each line as it is known; how many failed.
/// The line that ends the checks early, and why.
fn not_tried(why: &str) -> Line {
    Line {
        name: "the other checks".into(),
        result: Err(format!("not tried: {why}")),
    }
}

/// (checks failed, checks in all).
fn tally(lines: &[Line]) -> (usize, usize) {
    let failures = lines.iter().filter(|l| l.result.is_err()).count();
    (failures, lines.len())
}

async fn run_checks(client: &FhirClient, config: &Config) -> (usize, usize) {
    let mut lines: Vec<Line> = Vec::new();
    let record = |line: Line, lines: &mut Vec<Line>| {
        line.print();
        lines.push(line);
    };

    // The access token first: every request carries it, so without one nothing else is
    // tried (each would ask the token endpoint again with the same refused credentials).
    if config.server.auth.method != crate::config::AuthMethod::None {
        let token = match client.check_authorization().await {
            Ok(note) => Ok(note.to_owned()),
            Err(error) => Err(failed(&error)),
        };
        let refused = token.is_err();
        record(
            Line {
                name: "access token".into(),
                result: token,
            },
            &mut lines,
        );
        if refused {
            record(not_tried("no access token"), &mut lines);
            return tally(&lines);
        }
    }

    // The CapabilityStatement: without an answer, nothing else is tried.
    let needs = Needs {
        writes: true,
        bulk: config.server.read_with == ReadWith::Export,
        incremental: config.schedule.state_file.is_some(),
    };
    let statement = capabilities::read(client).await;
    let reachable = !matches!(&statement, Err(FhirError::Transport { .. }));
    let judged = match statement {
        Err(error) => Err(failed(&error)),
        Ok(statement) => match capabilities::judge(&statement, &capabilities::needed(needs)) {
            Err(refusal) => Err(refusal.to_string()),
            Ok(Judgement::Declared) => Ok(format!(
                "FHIR {}; declares every search and interaction a run needs",
                statement["fhirVersion"].as_str().unwrap_or("?")
            )),
            Ok(Judgement::Silent) => Ok("declares no resources: nothing to compare".into()),
            Ok(Judgement::Missing(missing)) => Err(format!(
                "does not declare {}",
                missing
                    .iter()
                    .map(Need::describe)
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
        },
    };
    record(
        Line {
            name: "CapabilityStatement".into(),
            result: judged,
        },
        &mut lines,
    );
    if !reachable {
        record(not_tried("the server did not answer"), &mut lines);
        return tally(&lines);
    }

    // The TARE search first: its first Procedure's patient serves the searches by patient
    // and the sample DetectedIssue.
    let mut patient: Option<String> = None;
    let mut procedure: Option<String> = None;
    let planned = searches(client, config, None);
    let (tare_name, tare_url) = &planned[0];
    let tare = client.page(tare_url).await;
    if let Ok(page) = &tare {
        if let Some(first) = page.resources.first() {
            let json: serde_json::Value = serde_json::from_str(first.get()).unwrap_or_default();
            procedure = json["id"].as_str().map(str::to_owned);
            patient = json["subject"]["reference"]
                .as_str()
                .and_then(|r| r.strip_prefix("Patient/"))
                .map(str::to_owned);
        }
    }
    record(
        Line {
            name: tare_name.clone(),
            result: match tare {
                Ok(page) if page.resources.is_empty() => Ok("no TARE Procedure found".into()),
                Ok(_) => Ok(String::new()),
                Err(error) => Err(failed(&error)),
            },
        },
        &mut lines,
    );
    for (name, url) in searches(client, config, patient.as_deref())
        .into_iter()
        .skip(1)
    {
        let result = match client.page(&url).await {
            Ok(_) => Ok(String::new()),
            Err(error) => Err(failed(&error)),
        };
        record(Line { name, result }, &mut lines);
    }

    // $validate, or a description of what would be written.
    let patient = patient.unwrap_or_else(|| "example".into());
    let validated = match sample_issue(config, &patient, procedure.as_deref()) {
        Err(error) => Err(format!("cannot build a DetectedIssue: {error}")),
        Ok(issue) => validate(client, config, issue, &patient).await,
    };
    record(
        Line {
            name: "DetectedIssue $validate".into(),
            result: validated,
        },
        &mut lines,
    );
    tally(&lines)
}

async fn validate(
    client: &FhirClient,
    config: &Config,
    issue: String,
    patient: &str,
) -> Result<String, String> {
    let url = client
        .base()
        .join("DetectedIssue/$validate")
        .expect("a valid relative path")
        .to_string();
    let answer = client
        .send(&url, |http| {
            http.post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/fhir+json")
                .body(issue.clone())
        })
        .await
        .map_err(|e| failed(&e))?;
    let status = answer.status.as_u16();
    if unsupported(status) {
        return Ok(format!(
            "the server has no $validate (HTTP {status}); dry run: a run would POST in a \
             transaction DetectedIssues like this one: status preliminary, code {}|{}, \
             severity moderate, patient Patient/{patient}, author Device/{}, identifier {}|..., \
             each with a Provenance",
            config.output.flag_code_system,
            crate::domain::FlagCode::MarkerRise.code(),
            crate::sink::detected_issue::DEVICE_ID,
            config.output.identifier_system
        ));
    }
    validation_verdict(status, &answer.body).map(|()| String::new())
}

/// A `$validate` passed: a 2xx answer that is an OperationOutcome without an error. Any other
/// 2xx answer is no validation (a server that created the DetectedIssue instead, say).
fn validation_verdict(status: u16, body: &[u8]) -> Result<(), String> {
    let is_outcome = serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|v| v["resourceType"] == "OperationOutcome");
    match (200..300).contains(&status) {
        true if !is_outcome => Err(format!(
            "HTTP {status}, but the answer is not an OperationOutcome: nothing was validated \
             (see whether the server stored the DetectedIssue instead)"
        )),
        true if !has_errors(body) => Ok(()),
        _ => Err(format!("HTTP {status}: {}", outcome_text(body))),
    }
}

/// Whether an OperationOutcome holds an error or a fatal issue.
fn has_errors(body: &[u8]) -> bool {
    let outcome: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    outcome["resourceType"] == "OperationOutcome"
        && outcome["issue"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|issue| matches!(issue["severity"].as_str(), Some("error" | "fatal")))
}

pub fn execute(args: CheckArgs) -> Result<(), CommandError> {
    let config = Config::load(args.config.as_deref(), std::env::vars())?;
    let base = args
        .server
        .or_else(|| config.server.base_url.clone())
        .ok_or(CommandError::NoServer)?;
    let client = FhirClient::new(&base, &config.server)?;
    let workers = crate::workers::Workers::new(1)?;
    let (failures, checks) = workers.runtime.block_on(run_checks(&client, &config));
    if crate::interrupt::requested() {
        return Err(CommandError::Server(FhirError::Interrupted { url: base }));
    }
    match failures {
        0 => Ok(()),
        _ => Err(CommandError::ChecksFailed { failures, checks }),
    }
}

#[cfg(test)]
mod tests {
    use super::validation_verdict;

    #[test]
    fn a_validate_passes_only_on_an_operation_outcome_without_errors() {
        let ok = br#"{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"informational"}]}"#;
        assert_eq!(validation_verdict(200, ok), Ok(()));
        let stored = br#"{"resourceType":"DetectedIssue","id":"x","status":"preliminary"}"#;
        assert!(validation_verdict(201, stored)
            .unwrap_err()
            .starts_with("HTTP 201, but the answer is not an OperationOutcome"));
        let error = br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":"bad"}]}"#;
        assert!(validation_verdict(200, error)
            .unwrap_err()
            .starts_with("HTTP 200: "));
    }
}
