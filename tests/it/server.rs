//! Reading from and writing back to a real FHIR server, on each server of `servers`: the
//! server as a source gives what files give, write-back is idempotent and survives SIGKILL, a
//! clinician's annotation is kept, a flag that ends is cancelled. And an independent judge of
//! what the job writes: HAPI's `$validate`.

use crate::helpers::{demo, generated, job, job_ok, read, write_folder};
use crate::servers::{get_json, on_each_server, our_issues, patient_of, seed, try_put, TestServer};

use serde_json::{json, Value};
use std::path::Path;

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

fn run(source: &[&str]) -> crate::helpers::OutDir {
    job_ok("run", source)
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

on_each_server!(server_read_and_write_back_lifecycle);

/// A PIVKA-II value for demo-04 below its nadir: it ends the unconfirmed rise, so the next run
/// cancels that DetectedIssue.
fn demo_04_lower_pivka() -> Value {
    json!({
        "resourceType": "Observation", "id": "demo-04-new-low", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "34444-0"}]},
        "subject": {"reference": "Patient/demo-04-pivka-unconfirmed-rise"},
        "effectiveDateTime": "2026-09-29T10:00:00Z",
        "valueQuantity": {"value": 100, "unit": "mAU/mL", "system": "http://unitsofmeasure.org", "code": "[arb'U]/L"}
    })
}

/// One test, in steps, each building on the server the previous one left.
async fn server_read_and_write_back_lifecycle(server: TestServer) {
    let base = server.base.clone();
    let demo = demo_resources();
    let accepted = seed(&base, &demo).await;
    // Every validator refuses the demo's three broken resources (a non-date effective time, an
    // unknown comparator, an Observation without its code); a server that enforces referential
    // integrity on write (HAPI) also refuses what refers to a Patient that does not exist.
    let broken = [
        "demo-24-data-quality-obs17",
        "demo-24-data-quality-obs24",
        "demo-24-data-quality-broken",
    ];
    let patients: Vec<String> = demo
        .iter()
        .filter(|r| r["resourceType"] == "Patient")
        .map(|r| format!("Patient/{}", r["id"].as_str().unwrap()))
        .collect();
    let refused: Vec<&Value> = demo.iter().filter(|r| !accepted.contains(r)).collect();
    for id in broken {
        assert!(refused.iter().any(|r| r["id"] == id), "{id} was accepted");
    }
    for resource in &refused {
        let id = resource["id"].as_str().unwrap();
        let subject = resource["subject"]["reference"].as_str().unwrap_or("");
        assert!(
            broken.contains(&id) || !patients.iter().any(|p| p == subject),
            "{id} was refused"
        );
    }

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
                    patient_of(r).to_owned(),
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
    assert!(try_put(&base, &annotated).await);

    // ... and a new, lower PIVKA-II value ends the rise: the job cancels the DetectedIssue and
    // keeps the annotation.
    let observation = demo_04_lower_pivka();
    assert!(try_put(&base, &observation).await);
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
    assert_eq!(seed(&base, &generated).await.len(), total);
    let binary = assert_cmd::cargo::cargo_bin("tare-marker-monitor");
    // Each round kills the job as soon as the server shows that its write-back has begun
    // (one more of our DetectedIssues than before), so the kill lands mid-write.
    let mut partial_rounds = 0;
    for _ in 0..3 {
        let before = our_issues(&base).await.len();
        let out = crate::helpers::out_dir();
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
    // One line naming the request kind, the host and the cause; the URL at debug level only.
    assert_eq!(
        stderr.lines().last(),
        Some("error: CapabilityStatement on 127.0.0.1: connection refused"),
        "{stderr}"
    );
    assert!(!stderr.contains("http://"), "{stderr}");
    assert!(!out.path().join("markers.csv").exists());
}

/// POSTs `resource` to HAPI's `$validate` for its type (against the R4 base definitions); the
/// error-level findings, each with where it is.
async fn validation_errors(base: &str, resource: &Value) -> Vec<String> {
    let url = format!(
        "{base}/{}/$validate",
        resource["resourceType"].as_str().unwrap()
    );
    let response = reqwest::Client::new()
        .post(&url)
        .header("Content-Type", "application/fhir+json")
        .header("Accept", "application/fhir+json")
        .body(resource.to_string())
        .send()
        .await
        .unwrap();
    // 200 with the findings, or 412 when there are errors: either way an OperationOutcome.
    let outcome: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(
        outcome["resourceType"], "OperationOutcome",
        "{url}: {outcome}"
    );
    outcome["issue"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["severity"] == "error" || i["severity"] == "fatal")
        .map(|i| format!("{} at {}", i["diagnostics"], i["expression"]))
        .collect()
}

/// The transaction Bundles a dry run saved.
fn saved_transactions(out: &Path) -> Vec<Value> {
    let mut bundles = Vec::new();
    for entry in std::fs::read_dir(out.join("transactions")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            bundles.push(serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap());
        }
    }
    bundles
}

/// An independent judge: HAPI's `$validate` finds no error in any kind of resource the job
/// writes (Device, DetectedIssue, Provenance) nor in its transaction Bundles, those that create
/// and those that update and cancel.
#[tokio::test(flavor = "multi_thread")]
async fn hapi_validate_finds_no_error_in_anything_the_job_writes() {
    let Some(server) = TestServer::start(crate::servers::Kind::Hapi).await else {
        return;
    };
    let base = server.base.clone();
    seed(&base, &demo_resources()).await;
    let creating = run(&["--server", &base, "--dry-run"]);
    run(&["--server", &base]);
    // A lower PIVKA-II value ends demo-04's rise: the next run would cancel and update.
    let observation = demo_04_lower_pivka();
    assert!(try_put(&base, &observation).await);
    let updating = run(&["--server", &base, "--dry-run"]);

    let written = read(creating.path(), "detected-issues.ndjson");
    let mut resources: Vec<Value> = written
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let creates = saved_transactions(creating.path());
    let updates = saved_transactions(updating.path());
    // Conditional creates in the first; a cancellation (an update guarded by If-Match) in the
    // second.
    let entries = |bundles: &[Value]| -> Vec<Value> {
        bundles
            .iter()
            .flat_map(|b| b["entry"].as_array().unwrap().clone())
            .collect()
    };
    assert!(entries(&creates)
        .iter()
        .any(|e| e["request"]["ifNoneExist"].is_string()));
    assert!(entries(&updates)
        .iter()
        .any(|e| e["request"]["ifMatch"].is_string() && e["resource"]["status"] == "cancelled"));
    resources.extend(creates);
    resources.extend(updates);
    let kinds: std::collections::BTreeSet<&str> = resources
        .iter()
        .map(|r| r["resourceType"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["Bundle", "DetectedIssue", "Device", "Provenance"].into()
    );
    // The judge is awake: a DetectedIssue with an unknown status has an error.
    let broken = json!({"resourceType": "DetectedIssue", "status": "bogus"});
    assert!(!validation_errors(&base, &broken).await.is_empty());
    for resource in &resources {
        let errors = validation_errors(&base, resource).await;
        assert!(
            errors.is_empty(),
            "{} {}: {errors:?}",
            resource["resourceType"],
            resource["id"]
        );
    }
}
