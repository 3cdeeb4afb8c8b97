//! Terminal and log safety: text from a server or a file (diagnostics, ids, units, statuses,
//! code systems, names, notes, file names) reaches stderr, the run summary, the CSV files and
//! the report without a raw control or bidirectional character, in both log formats; and a
//! malformed UTC offset makes a date invalid.

use crate::helpers::{assert_success, binary, read, write_folder};
use serde_json::{json, Value};
use std::path::Path;
use wiremock::{Mock, MockServer, Respond, ResponseTemplate};

/// What no reader may get raw: the C0 and C1 controls, DEL, the bidirectional controls and the
/// Unicode line separators.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
        )
        || matches!(c, '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

/// A newline that would forge a log line of its own, an ESC sequence that clears the screen,
/// and a right-to-left override.
const HOSTILE: &str = "\n2026-01-01T00:00:00Z  WARN forged\u{1b}[2J\u{202e}";

/// The lines of a text, each without a raw unsafe character.
fn assert_safe_lines(what: &str, text: &str) {
    for line in text.lines() {
        assert!(!line.chars().any(is_unsafe), "{what}: {line:?}");
    }
}

/// Every string in a JSON value, none holding an unsafe character once decoded.
fn assert_safe_strings(what: &str, value: &Value) {
    match value {
        Value::String(s) => assert!(!s.chars().any(is_unsafe), "{what}: {s:?}"),
        Value::Array(items) => items.iter().for_each(|v| assert_safe_strings(what, v)),
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            assert!(!k.chars().any(is_unsafe), "{what}: key {k:?}");
            assert_safe_strings(what, v)
        }),
        _ => {}
    }
}

fn observation(id: &str, effective: &str, value: f64) -> Value {
    json!({
        "resourceType": "Observation", "id": id, "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "34444-0"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": effective,
        "valueQuantity": {"value": value, "code": "mAU/mL"}
    })
}

/// The seed case (a flag, so the patient is in the report) with the hostile text in its
/// name and a note, in a left-out status, unit, id and code system, and dated with three
/// malformed offsets; a file beside them with the hostile text in its name.
fn hostile_folder() -> tempfile::TempDir {
    let mut noted = observation("o2", "2026-07-01", 6088.0);
    noted["note"] = json!([{ "text": format!("repeat{HOSTILE}") }]);
    let mut status = observation("o3", "2026-07-02", 6000.0);
    status["status"] = json!(format!("final{HOSTILE}"));
    let mut unit = observation("o4", "2026-07-03", 6000.0);
    unit["valueQuantity"]["code"] = json!(format!("mAU/mL{HOSTILE}"));
    let bad_id = observation(&format!("o5{HOSTILE}"), "2026-07-04", 6000.0);
    let mut system = observation("o6", "2026-07-05", 6000.0);
    system["code"]["coding"][0]["system"] = json!(format!("http://loinc.org{HOSTILE}"));
    let mut resources = vec![
        json!({"resourceType": "Patient", "id": "p1", "birthDate": "1950-01-01",
               "name": [{"family": format!("Doe{HOSTILE}"), "given": ["Ann\u{202d}"]}]}),
        json!({"resourceType": "Condition", "id": "c1",
               "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C22.0"}]},
               "subject": {"reference": "Patient/p1"}}),
        json!({"resourceType": "Procedure", "id": "t1", "status": "completed",
               "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "79445"}]},
               "subject": {"reference": "Patient/p1"}, "performedDateTime": "2026-03-01"}),
        observation("o1", "2026-02-27", 88000.0),
        noted,
        status,
        unit,
        bad_id,
        system,
    ];
    for (i, offset) in ["+99:99", "+24:00", "-12:60"].iter().enumerate() {
        let effective = format!("2026-07-1{i}T10:00:00{offset}");
        resources.push(observation(&format!("t{i}"), &effective, 6000.0));
    }
    let folder = write_folder(&resources);
    std::fs::write(folder.path().join(format!("notes{HOSTILE}.txt")), "").unwrap();
    folder
}

/// `command` on the folder in `log_format`, with the output folder; it must succeed.
fn on_folder(command: &str, folder: &Path, log_format: &str) -> (tempfile::TempDir, String) {
    let out = tempfile::tempdir().unwrap();
    let output = binary()
        .args([
            command,
            "-q",
            "--log-format",
            log_format,
            "--as-of",
            "2026-11-01",
        ])
        .arg("--source-dir")
        .arg(folder)
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert_success(&output);
    (out, String::from_utf8(output.stderr).unwrap())
}

#[test]
fn hostile_text_in_a_bulk_folder_is_one_escaped_log_line_per_warning_in_text_and_json() {
    let folder = hostile_folder();
    for log_format in ["text", "json"] {
        let (_, stderr) = on_folder("run", folder.path(), log_format);
        // Two warnings: the file not read, the configured code under an unknown system; each
        // one line, the forged line inside it.
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 2, "{log_format}: {stderr}");
        assert_safe_lines(log_format, &stderr);
        assert!(
            lines.iter().all(|l| l.contains("WARN forged")),
            "{log_format}: {stderr}"
        );
        if log_format == "json" {
            for line in &lines {
                serde_json::from_str::<Value>(line).unwrap();
            }
        }
    }
}

#[test]
fn hostile_text_in_a_bulk_folder_reaches_the_summary_and_the_csv_files_escaped() {
    let folder = hostile_folder();
    let (out, _) = on_folder("run", folder.path(), "text");
    let summary_text = read(out.path(), "run-summary.json");
    assert_safe_lines("run-summary.json", &summary_text);
    let summary: Value = serde_json::from_str(&summary_text).unwrap();
    assert_safe_strings("run-summary.json", &summary);
    let left_out = &summary["resources"]["by_type"]["Observation"]["left_out"];
    assert_eq!(
        left_out["unknown_unit"]["by_value"],
        json!({"mAU/mL\\u{a}2026-01-01T00:00:00Z  WARN forged\\u{1b}[2J\\u{202e}": 1})
    );
    assert_eq!(
        left_out["status_not_accepted"]["by_value"],
        json!({"final\\u{a}2026-01-01T00:00:00Z  WARN forged\\u{1b}[2J\\u{202e}": 1})
    );
    assert_eq!(left_out["invalid_id"]["count"], 1);
    assert_eq!(left_out["code_under_unknown_system"]["count"], 1);
    assert_eq!(
        summary["inputs_ignored"][0]["name"],
        "notes\\u{a}2026-01-01T00:00:00Z  WARN forged\\u{1b}[2J\\u{202e}.txt"
    );
    for file in ["markers.csv", "flags.csv", "detected-issues.ndjson"] {
        assert_safe_lines(file, &read(out.path(), file));
    }
}

#[test]
fn hostile_names_and_notes_reach_the_report_without_control_or_bidi_characters() {
    let folder = hostile_folder();
    let (out, _) = on_folder("report", folder.path(), "text");
    for file in [
        "report.html",
        "report-cohort.csv",
        "report-flagged-patients.csv",
        "report-flag-trail.csv",
        "report-data-quality.csv",
        "report-waterfall.csv",
        "report-surveillance.csv",
        "report-nadir-days.csv",
        "report-flags-per-month.csv",
    ] {
        assert_safe_lines(file, &read(out.path(), file));
    }
    let flagged = read(out.path(), "report-flagged-patients.csv");
    assert!(
        flagged.contains("p1,Ann Doe 2026-01-01T00:00:00Z  WARN forged[2J,"),
        "{flagged}"
    );
    let html = read(out.path(), "report.html");
    assert!(html.contains("Ann Doe 2026-01-01T00:00:00Z  WARN forged[2J"));
    assert!(html.contains("repeat 2026-01-01T00:00:00Z  WARN forged[2J"));
}

#[test]
fn utc_offsets_beyond_fourteen_hours_or_sixty_minutes_are_invalid_effective_times() {
    let folder = hostile_folder();
    let (out, _) = on_folder("run", folder.path(), "text");
    let summary: Value = serde_json::from_str(&read(out.path(), "run-summary.json")).unwrap();
    let invalid =
        &summary["resources"]["by_type"]["Observation"]["left_out"]["invalid_effective_time"];
    assert_eq!(invalid["count"], 3);
    let examples: Vec<&str> = invalid["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert_eq!(
        examples,
        [
            "2026-07-10T10:00:00+99:99",
            "2026-07-11T10:00:00+24:00",
            "2026-07-12T10:00:00-12:60"
        ]
    );
}

/// Serves p1's TARE and values; every Condition search answers 400 with an OperationOutcome
/// whose diagnostics hold the hostile text.
struct RefusingConditions;

impl Respond for RefusingConditions {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let resources = match request.url.path() {
            "/Condition" => {
                let outcome = json!({"resourceType": "OperationOutcome", "issue": [{
                    "severity": "error", "code": "invalid",
                    "diagnostics": format!("bad parameter{HOSTILE}")}]});
                return ResponseTemplate::new(400)
                    .set_body_raw(outcome.to_string(), "application/fhir+json");
            }
            "/Procedure" => vec![
                json!({"resourceType": "Procedure", "id": "t1", "status": "completed",
                       "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "79445"}]},
                       "subject": {"reference": "Patient/p1"}, "performedDateTime": "2026-03-01"}),
                json!({"resourceType": "Patient", "id": "p1", "birthDate": "1950-01-01"}),
            ],
            "/Observation" => vec![observation("o1", "2026-02-27", 88000.0)],
            _ => vec![],
        };
        let bundle = json!({"resourceType": "Bundle", "type": "searchset",
            "entry": resources.iter().map(|r| json!({"resource": r})).collect::<Vec<_>>()});
        ResponseTemplate::new(200).set_body_raw(bundle.to_string(), "application/fhir+json")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_diagnostic_with_an_escape_and_a_newline_is_one_escaped_error_line() {
    let server = MockServer::start().await;
    crate::helpers::declares_everything(&server).await;
    Mock::given(wiremock::matchers::method("GET"))
        .respond_with(RefusingConditions)
        .mount(&server)
        .await;
    for log_format in ["text", "json"] {
        let out = tempfile::tempdir().unwrap();
        let base = server.uri();
        let args: Vec<String> = vec![
            "run".into(),
            "-q".into(),
            "--log-format".into(),
            log_format.into(),
            "--server".into(),
            base.clone(),
            "--as-of".into(),
            "2026-07-10".into(),
            "--dry-run".into(),
            "--out".into(),
            out.path().display().to_string(),
        ];
        let output = tokio::task::spawn_blocking(move || binary().args(args).output().unwrap())
            .await
            .unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(3), "{log_format}: {stderr}");
        // Named by kind and host: the query holds patient ids.
        let search = "Condition search on 127.0.0.1: ";
        assert_eq!(stderr.lines().count(), 1, "{log_format}: {stderr}");
        // In JSON the error is an object like every other line; its message is the text's.
        let error = match log_format {
            "json" => {
                let line: Value = serde_json::from_str(stderr.trim_end()).unwrap();
                assert_eq!(line["level"], "ERROR", "{stderr}");
                format!("error: {}", line["fields"]["message"].as_str().unwrap())
            }
            _ => stderr.trim_end().to_owned(),
        };
        assert!(error.starts_with(&format!("error: {search}")), "{error}");
        assert!(
            error.ends_with(
                ": HTTP 400: error invalid: bad parameter\\u{a}2026-01-01T00:00:00Z  WARN forged\\u{1b}[2J\\u{202e}"
            ),
            "{log_format}: {error}"
        );
    }
}
