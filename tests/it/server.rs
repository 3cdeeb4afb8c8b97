//! Against a real FHIR server: the Helios FHIR Server that `.ci/run` installs and starts, named
//! by TMM_TEST_FHIR_URL. Outside CI, without that variable, these tests say so and stop; in CI
//! (CI=true) a missing server is a failure.

use crate::helpers::{batch_of_puts, demo, generated, get_json, job, job_ok, read, FLAG_SYSTEM};

use serde_json::{json, Value};
use std::path::Path;

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
        let bundle = batch_of_puts(chunk);
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
    job_ok("run", source)
}

async fn put_json(url: &str, resource: &Value) {
    let response = reqwest::Client::new()
        .put(url)
        .header("Content-Type", "application/fhir+json")
        .body(resource.to_string())
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{url}: HTTP {}",
        response.status()
    );
}

/// Our DetectedIssues on the server, by identifier value.
async fn our_issues(base: &str) -> std::collections::BTreeMap<String, Value> {
    let mut found = std::collections::BTreeMap::new();
    let mut url = format!("{base}/DetectedIssue?identifier={FLAG_SYSTEM}|&_count=500");
    loop {
        let page = get_json(&url).await;
        for entry in page["entry"].as_array().into_iter().flatten() {
            let resource = entry["resource"].clone();
            let identifier = resource["identifier"][0]["value"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(
                found.insert(identifier, resource).is_none(),
                "duplicate DetectedIssue"
            );
        }
        match page["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
        {
            Some(next) => url = next["url"].as_str().unwrap().to_owned(),
            None => return found,
        }
    }
}

fn write_back_counts(out: &Path) -> (u64, u64, u64, u64) {
    let summary: Value = serde_json::from_str(&read(out, "run-summary.json")).unwrap();
    let w = &summary["write_back"];
    assert_eq!(w["failed"].as_array().unwrap().len(), 0, "{w}");
    (
        w["created"].as_u64().unwrap(),
        w["updated"].as_u64().unwrap(),
        w["cancelled"].as_u64().unwrap(),
        w["unchanged"].as_u64().unwrap(),
    )
}

/// One test, in steps, because every run reconciles every patient on the shared server.
#[tokio::test(flavor = "multi_thread")]
async fn server_read_and_write_back_lifecycle() {
    let Some(base) = server_url() else { return };
    let accepted = seed(&base, demo_resources()).await;
    // The three the validator rejects: a non-date effective time, an unknown comparator and
    // an Observation without its required code.
    assert_eq!(accepted.len(), demo_resources().len() - 3);

    // 1. The server as source gives what the same resources give from files.
    let folder = write_folder(&accepted);
    let from_files = run(&["--source-dir", folder.path().to_str().unwrap()]);
    let first = run(&["--server", &base]);
    assert_eq!(
        read(first.path(), "markers.csv"),
        read(from_files.path(), "markers.csv")
    );
    assert_eq!(
        read(first.path(), "flags.csv"),
        read(from_files.path(), "flags.csv")
    );

    // 2. The DetectedIssues on the server are the written flags: identifier, code, severity,
    // patient. (The server's validator, in enforce mode, accepted every one.)
    let flags = read(first.path(), "flags.csv");
    let mut expected = std::collections::BTreeMap::new();
    for row in csv::Reader::from_reader(flags.as_bytes()).records() {
        let row = row.unwrap();
        if !row[6].is_empty() {
            expected.insert(
                row[6].to_owned(),
                (row[0].to_owned(), row[2].to_owned(), row[4].to_owned()),
            );
        }
    }
    let (created, _, _, _) = write_back_counts(first.path());
    assert_eq!(created as usize, expected.len());
    let issues = our_issues(&base).await;
    let actual: std::collections::BTreeMap<String, (String, String, String)> = issues
        .iter()
        .map(|(identifier, r)| {
            (
                identifier.clone(),
                (
                    r["patient"]["reference"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches("Patient/")
                        .to_owned(),
                    r["code"]["coding"][0]["code"].as_str().unwrap().to_owned(),
                    r["severity"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect();
    assert_eq!(actual, expected);

    // 3. A second run writes nothing and makes no new versions.
    let second = run(&["--server", &base]);
    assert_eq!(
        write_back_counts(second.path()),
        (0, 0, 0, expected.len() as u64)
    );
    assert_eq!(our_issues(&base).await, issues);

    // 4. A clinician annotates the unconfirmed PIVKA-II rise of demo-04 ...
    let rise = issues
        .values()
        .find(|r| {
            r["patient"]["reference"] == "Patient/demo-04-pivka-unconfirmed-rise"
                && r["code"]["coding"][0]["code"] == "marker-rise"
        })
        .expect("demo-04 has a marker-rise DetectedIssue")
        .clone();
    let mut annotated = rise.clone();
    annotated["mitigation"] = json!([{"action": {"text": "CT booked"}, "date": "2026-10-01"}]);
    let issue_url = format!("{base}/DetectedIssue/{}", rise["id"].as_str().unwrap());
    put_json(&issue_url, &annotated).await;

    // ... and a new, lower PIVKA-II value ends the rise: the job cancels the DetectedIssue and
    // keeps the annotation.
    let observation = json!({
        "resourceType": "Observation", "id": "demo-04-new-low", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "34444-0"}]},
        "subject": {"reference": "Patient/demo-04-pivka-unconfirmed-rise"},
        "effectiveDateTime": "2026-09-29T10:00:00Z",
        "valueQuantity": {"value": 100, "unit": "mAU/mL", "system": "http://unitsofmeasure.org", "code": "mAU/mL"}
    });
    put_json(&format!("{base}/Observation/demo-04-new-low"), &observation).await;
    let third = run(&["--server", &base]);
    let (created, updated, cancelled, _) = write_back_counts(third.path());
    assert_eq!((created, cancelled), (0, 1));
    assert!(
        updated <= 1,
        "only demo-04's other flag may change: {updated}"
    );
    let after = get_json(&issue_url).await;
    assert_eq!(after["status"], "cancelled");
    assert_eq!(after["mitigation"][0]["action"]["text"], "CT booked");

    // 5. Killed (SIGKILL) at several points while writing for 80 new patients, then run to
    // the end: exactly one DetectedIssue per flag, the same as an uninterrupted run gives.
    let generated = generated(80, 9);
    let total = generated.len();
    assert_eq!(seed(&base, generated).await.len(), total);
    let binary = assert_cmd::cargo::cargo_bin("tare-marker-monitor");
    // Each round kills the job as soon as the server shows that its write-back has begun
    // (one more of our DetectedIssues than before), so the kill lands mid-write.
    let mut partial_rounds = 0;
    for _ in 0..3 {
        let before = our_issues(&base).await.len();
        let out = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(&binary)
            .args(["run", "--server", &base, "--as-of", "2026-11-01", "--out"])
            .arg(out.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            if child.try_wait().unwrap().is_some() {
                break; // finished before we saw it write: nothing left to interrupt
            }
            if our_issues(&base).await.len() > before {
                let _ = child.kill(); // SIGKILL
                partial_rounds += 1;
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the job neither wrote nor finished"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let _ = child.wait();
    }
    assert!(partial_rounds >= 1, "no kill landed during write-back");
    let complete = run(&["--server", &base]);
    let flags = read(complete.path(), "flags.csv");
    let wanted: std::collections::BTreeSet<String> = csv::Reader::from_reader(flags.as_bytes())
        .records()
        .map(|r| r.unwrap()[6].to_owned())
        .filter(|identifier| !identifier.is_empty())
        .collect();
    // our_issues fails on a duplicate identifier.
    let on_server = our_issues(&base).await;
    for identifier in &wanted {
        assert_eq!(
            on_server[identifier]["status"], "preliminary",
            "{identifier}"
        );
    }
    for (identifier, issue) in &on_server {
        if !wanted.contains(identifier) {
            assert_eq!(issue["status"], "cancelled", "{identifier}");
        }
    }
    // Converged: one more run changes nothing.
    let after_kills = run(&["--server", &base]);
    let (created, updated, cancelled, _) = write_back_counts(after_kills.path());
    assert_eq!((created, updated, cancelled), (0, 0, 0));
}

#[test]
fn unreachable_server_exits_3_naming_it() {
    let (out, output) = job("run", &["--server", "http://127.0.0.1:9/fhir"]);
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("http://127.0.0.1:9/fhir/Procedure?"),
        "{stderr}"
    );
    assert!(!out.path().join("markers.csv").exists());
}
