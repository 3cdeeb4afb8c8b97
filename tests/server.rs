//! Against a real FHIR server: the Helios FHIR Server that `.ci/run` installs and starts, named
//! by TMM_TEST_FHIR_URL. Outside CI, without that variable, these tests say so and stop; in CI
//! (CI=true) a missing server is a failure.

use assert_cmd::Command;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn server_url() -> Option<String> {
    match std::env::var("TMM_TEST_FHIR_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("TMM_TEST_FHIR_URL is not set: .ci/run must start the FHIR server")
        }
        _ => {
            eprintln!(
                "TMM_TEST_FHIR_URL not set: skipping the FHIR server test (run bash .ci/run)"
            );
            None
        }
    }
}

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo")
}

/// Every demo resource that is valid JSON of its file's type.
fn demo_resources() -> Vec<Value> {
    let mut resources = Vec::new();
    for kind in ["Patient", "Condition", "Procedure", "Observation"] {
        let text = std::fs::read_to_string(demo().join(format!("{kind}.ndjson"))).unwrap();
        for line in text.lines() {
            if let Ok(resource) = serde_json::from_str::<Value>(line) {
                if resource["resourceType"] == kind {
                    resources.push(resource);
                }
            }
        }
    }
    resources
}

/// Loads the resources with `batch` Bundles of PUTs; returns the ones the server accepted (its
/// validator rejects a few of the deliberately broken demo resources).
async fn seed(base: &str, resources: Vec<Value>) -> Vec<Value> {
    let http = reqwest::Client::new();
    let mut accepted = Vec::new();
    for chunk in resources.chunks(100) {
        let entries: Vec<Value> = chunk
            .iter()
            .map(|r| {
                let url = format!(
                    "{}/{}",
                    r["resourceType"].as_str().unwrap(),
                    r["id"].as_str().unwrap()
                );
                json!({"resource": r, "request": {"method": "PUT", "url": url}})
            })
            .collect();
        let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": entries});
        let response = http
            .post(base)
            .header("Content-Type", "application/fhir+json")
            .header("Accept", "application/fhir+json")
            .body(bundle.to_string())
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "batch: HTTP {}",
            response.status()
        );
        let reply: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        for (resource, entry) in chunk.iter().zip(reply["entry"].as_array().unwrap()) {
            let status = entry["response"]["status"].as_str().unwrap_or("");
            if status.starts_with('2') {
                accepted.push(resource.clone());
            }
        }
    }
    accepted
}

fn write_folder(resources: &[Value]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for kind in ["Patient", "Condition", "Procedure", "Observation"] {
        let lines: String = resources
            .iter()
            .filter(|r| r["resourceType"] == kind)
            .map(|r| format!("{r}\n"))
            .collect();
        std::fs::write(dir.path().join(format!("{kind}.ndjson")), lines).unwrap();
    }
    dir
}

fn run(source: &[&str]) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let output = Command::cargo_bin("tare-marker-monitor")
        .unwrap()
        .arg("run")
        .args(source)
        .args(["--as-of", "2026-11-01", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn server_source_gives_the_same_findings_as_the_same_resources_in_files() {
    let Some(base) = server_url() else { return };
    let accepted = seed(&base, demo_resources()).await;
    // The three the validator rejects: a non-date effective time, an unknown comparator and
    // an Observation without its required code.
    assert_eq!(accepted.len(), demo_resources().len() - 3);
    let folder = write_folder(&accepted);
    let from_files = run(&["--source-dir", folder.path().to_str().unwrap()]);
    let from_server = run(&["--server", &base]);
    assert_eq!(
        read(from_server.path(), "markers.csv"),
        read(from_files.path(), "markers.csv")
    );
    assert_eq!(
        read(from_server.path(), "flags.csv"),
        read(from_files.path(), "flags.csv")
    );
    let summary: Value =
        serde_json::from_str(&read(from_server.path(), "run-summary.json")).unwrap();
    assert_eq!(summary["patients"]["evaluated"], 51);
    let searches = summary["inputs"].as_array().unwrap();
    assert!(searches
        .iter()
        .any(|s| s.as_str().unwrap().starts_with("Procedure?code=")));
}

#[test]
fn unreachable_server_exits_3_naming_it() {
    let out = tempfile::tempdir().unwrap();
    let output = Command::cargo_bin("tare-marker-monitor")
        .unwrap()
        .args([
            "run",
            "--server",
            "http://127.0.0.1:9/fhir",
            "--as-of",
            "2026-11-01",
            "--out",
        ])
        .arg(out.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("http://127.0.0.1:9/fhir/Procedure?"),
        "{stderr}"
    );
    assert!(!out.path().join("markers.csv").exists());
}
