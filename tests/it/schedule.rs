//! Nightly and on-demand runs against a real FHIR server, on each server of `servers` (an empty
//! one per test, since full runs reconcile every patient on the server): incremental runs after
//! random changes leave the server as a full run would; a cohort run touches only its patients;
//! shards together write what one run writes; the report shows the flag trail; the safety valve
//! holds when a run reads no TARE patient.

use crate::helpers::*;
use crate::servers::{
    delete, get_json, on_each_server, our_issues, patient_of, put_all, TestServer, FLAG_SYSTEM,
};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const PIVKA: &str = "34444-0";
/// Servers answer export status polls with `Retry-After: 120` (HFS, even for an export that
/// is ready within a second) or more: the tests poll every second instead.
const POLL_FAST: &str = "export_max_poll_interval_secs = 1\n";
/// Every flag written, the time-dependent low `surveillance-overdue` included, so the server
/// shows whether an incremental run re-evaluated everyone whose findings moved with the date.
const ALL_FLAGS: &str = "[output]\nmin_severity_written = \"low\"\n";

fn observation(id: &str, patient: &str, day: &str, value: f64) -> Value {
    json!({
        "resourceType": "Observation", "id": id, "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": PIVKA}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": format!("{day}T09:00:00Z"),
        "valueQuantity": {"value": value, "unit": "mAU/mL", "system": "http://unitsofmeasure.org", "code": "[arb'U]/L"}
    })
}

fn tare(id: &str, patient: &str, day: &str) -> Value {
    json!({
        "resourceType": "Procedure", "id": id, "status": "completed",
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "79445"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "performedDateTime": day
    })
}

/// A new TARE patient whose PIVKA-II fell and then rose: a marker-rise DetectedIssue.
fn new_patient(id: &str) -> Vec<Value> {
    vec![
        json!({"resourceType": "Patient", "id": id, "birthDate": "1950-02-02"}),
        json!({"resourceType": "Condition", "id": format!("{id}-hcc"),
               "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C22.0"}]},
               "subject": {"reference": format!("Patient/{id}")}}),
        tare(&format!("{id}-tare"), id, "2026-05-01"),
        observation(&format!("{id}-o1"), id, "2026-04-30", 9000.0),
        observation(&format!("{id}-o2"), id, "2026-07-01", 800.0),
        observation(&format!("{id}-o3"), id, "2026-09-15", 2400.0),
    ]
}

/// One random change of the kinds a hospital's data sees between two nightly runs.
fn random_change(
    rng: &mut rand_chacha::ChaCha8Rng,
    data: &mut Vec<Value>,
    round: usize,
    n: usize,
) -> Vec<Value> {
    let patients: Vec<String> = data
        .iter()
        .filter(|r| r["resourceType"] == "Patient")
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let patient = patients.choose(rng).unwrap().clone();
    let id = format!("change-{round}-{n}");
    let changed = match rng.gen_range(0..7) {
        // A new high PIVKA-II value.
        0 => vec![observation(
            &id,
            &patient,
            "2026-10-20",
            rng.gen_range(3000.0..90000.0),
        )],
        // A new normal value.
        1 => vec![observation(&id, &patient, "2026-10-25", 12.0)],
        // An Observation entered in error, or corrected to another value.
        kind @ (2 | 3) => {
            let observations: Vec<&Value> = data
                .iter()
                .filter(|r| r["resourceType"] == "Observation" && r["status"] != "entered-in-error")
                .collect();
            let mut changed = (*observations.choose(rng).unwrap()).clone();
            if kind == 2 {
                changed["status"] = json!("entered-in-error");
            } else {
                changed["status"] = json!("corrected");
                let value = changed["valueQuantity"]["value"].as_f64().unwrap_or(100.0);
                changed["valueQuantity"]["value"] = json!((value * 3.0).round());
            }
            vec![changed]
        }
        // A new TARE for a known patient.
        4 => vec![tare(&id, &patient, "2026-08-01")],
        // A TARE entered in error.
        5 => {
            let procedures: Vec<&Value> = data
                .iter()
                .filter(|r| r["resourceType"] == "Procedure" && r["status"] == "completed")
                .collect();
            let mut changed = (*procedures.choose(rng).unwrap()).clone();
            changed["status"] = json!("entered-in-error");
            vec![changed]
        }
        // A new TARE patient.
        _ => new_patient(&format!("new-{round}-{n}")),
    };
    for resource in &changed {
        data.retain(|r| {
            !(r["resourceType"] == resource["resourceType"] && r["id"] == resource["id"])
        });
        data.push(resource.clone());
    }
    changed
}

on_each_server!(
    incremental_runs_after_random_changes_leave_the_server_as_a_full_run_would,
    incremental_runs_through_bulk_export_since_leave_the_server_as_a_full_run_would,
    a_cohort_run_evaluates_and_writes_for_exactly_its_patients,
    shards_on_the_server_together_write_what_one_run_writes,
    the_report_on_the_server_shows_the_flag_trail_with_status_and_annotations,
    a_run_that_reads_no_tare_patient_cancels_nothing_and_says_why,
    a_cohort_run_leaves_other_patients_and_what_a_person_entered_in_error_as_they_are,
);

async fn incremental_runs_after_random_changes_leave_the_server_as_a_full_run_would(
    server: TestServer,
) {
    incremental_runs_match_full_runs(server, "search").await;
}

async fn incremental_runs_through_bulk_export_since_leave_the_server_as_a_full_run_would(
    server: TestServer,
) {
    incremental_runs_match_full_runs(server, "export").await;
}

/// Random changes between runs; after each incremental run (reading with `read_with`), a
/// stateless full run by search finds nothing left to change.
async fn incremental_runs_match_full_runs(server: TestServer, read_with: &str) {
    let mut data = generated(40, 21);
    // Never changed after this: its PIVKA-II was next due 2026-12-14 (last value + 90 days), so
    // surveillance-overdue starts on 2026-12-29 with no new data (the third round's date).
    data.extend(new_patient("steady"));
    put_all(&server.base, &data).await;
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state.json");
    // No overlap: the changes of this test come seconds after each run.
    let config = config_file(
        work.path(),
        &format!(
            "[schedule]\nstate_file = {state:?}\noverlap_minutes = 0\n[server]\nread_with = {read_with:?}\n{POLL_FAST}{ALL_FLAGS}"
        ),
    );
    let stateless = work.path().join("stateless");
    std::fs::create_dir(&stateless).unwrap();
    let full_config = config_file(&stateless, ALL_FLAGS);
    let server_args = ["--server", &server.base, "--config"];

    let first = run_ok(
        &[&server_args[..], &[config.to_str().unwrap()]].concat(),
        &work.path().join("run-0"),
    );
    assert_eq!(first["mode"], "full");
    if read_with == "export" {
        assert!(
            first["inputs"][0]
                .as_str()
                .unwrap()
                .starts_with("$export ("),
            "{}",
            first["inputs"]
        );
    }
    assert_eq!(first["watermark"]["used"], Value::Null);
    assert_eq!(first["watermark"]["next"], first_state_watermark(&state));
    let everyone = first["patients"]["seen"].as_u64().unwrap();

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut incremental_changes = (0, 0, 0);
    for round in 1..=3 {
        let changes_now: Vec<Value> = (0..4)
            .flat_map(|n| random_change(&mut rng, &mut data, round, n))
            .collect();
        // Strictly after the previous run's start (the watermark), in the server's clock.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        put_all(&server.base, &changes_now).await;
        let before = first_state_watermark(&state);
        // Each night a few weeks later: surveillance-overdue flags start, count on and end.
        let as_of = (chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap()
            + chrono::Duration::days(25 * round as i64))
        .to_string();
        let summary = run_ok_as_of(
            &[&server_args[..], &[config.to_str().unwrap()]].concat(),
            &work.path().join(format!("run-{round}")),
            &as_of,
        );
        assert_eq!(summary["mode"], "incremental");
        assert_eq!(summary["watermark"]["used"], before);
        assert!(
            summary["patients"]["seen"].as_u64().unwrap() < everyone,
            "round {round}: an incremental run read everyone"
        );
        let (c, u, x) = changes(&summary);
        incremental_changes = (
            incremental_changes.0 + c,
            incremental_changes.1 + u,
            incremental_changes.2 + x,
        );

        // A full run (no state) now finds nothing to change: the server is as it would have it.
        let full = run_ok_as_of(
            &[
                &["--server", &server.base, "--config"][..],
                &[full_config.to_str().unwrap()],
            ]
            .concat(),
            &work.path().join(format!("full-{round}")),
            &as_of,
        );
        assert_eq!(full["mode"], "full");
        assert_eq!(changes(&full), (0, 0, 0), "round {round}");
    }
    // The changes did reach the server through the incremental runs.
    assert!(
        incremental_changes.0 > 0 && incremental_changes.2 > 0,
        "{incremental_changes:?}"
    );
}

fn first_state_watermark(state: &std::path::Path) -> Value {
    let state: Value = serde_json::from_str(&std::fs::read_to_string(state).unwrap()).unwrap();
    state["watermark"].clone()
}

async fn a_cohort_run_evaluates_and_writes_for_exactly_its_patients(server: TestServer) {
    let mut data = generated(12, 5);
    // Patient identifiers (MRNs), to be found by the cohort file.
    for resource in data.iter_mut().filter(|r| r["resourceType"] == "Patient") {
        let id = resource["id"].as_str().unwrap().to_owned();
        resource["identifier"] =
            json!([{"system": "urn:example:mrn", "value": format!("mrn-{id}")}]);
    }
    let ids: Vec<String> = data
        .iter()
        .filter(|r| r["resourceType"] == "Patient")
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    data.push(
        json!({"resourceType": "Group", "id": "tare-review", "type": "person", "actual": true,
        "member": [{"entity": {"reference": format!("Patient/{}", ids[2])}}]}),
    );
    put_all(&server.base, &data).await;
    let work = tempfile::tempdir().unwrap();
    let cohort = work.path().join("cohort.txt");
    std::fs::write(
        &cohort,
        format!("# review list\n\nurn:example:mrn|mrn-{}  # by MRN\nurn:example:mrn|mrn-nobody\nnot-a-patient\n", ids[1]),
    )
    .unwrap();
    let summary = run_ok(
        &[
            "--server",
            &server.base,
            "--patient",
            &ids[0],
            "--cohort",
            cohort.to_str().unwrap(),
            "--group",
            "tare-review",
        ],
        &work.path().join("cohort-run"),
    );
    assert_eq!(summary["mode"], "cohort");
    assert_eq!(summary["cohort"]["requested"], 4);
    assert_eq!(
        summary["cohort"]["unknown"],
        json!([
            "urn:example:mrn|mrn-nobody (no Patient)",
            "not-a-patient (no Patient)"
        ])
    );
    let chosen: std::collections::BTreeSet<&str> = ids[..3].iter().map(String::as_str).collect();
    let issues = our_issues(&server.base).await;
    assert!(!issues.is_empty());
    assert!(
        issues
            .values()
            .all(|issue| chosen.contains(patient_of(issue))),
        "{issues:?}"
    );
    let markers = std::fs::read_to_string(work.path().join("cohort-run/markers.csv")).unwrap();
    let rows: std::collections::BTreeSet<&str> = markers
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert!(rows.iter().all(|p| chosen.contains(p)), "{rows:?}");

    // A full run afterwards leaves the cohort's DetectedIssues alone and adds the others'.
    let full = run_ok(&["--server", &server.base], &work.path().join("full"));
    let (created, updated, cancelled) = changes(&full);
    assert_eq!((updated, cancelled), (0, 0));
    assert_eq!(
        created as usize + issues.len(),
        our_issues(&server.base).await.len()
    );
}

async fn shards_on_the_server_together_write_what_one_run_writes(server: TestServer) {
    put_all(&server.base, &generated(30, 8)).await;
    let work = tempfile::tempdir().unwrap();
    let mut parts = Vec::new();
    for shard in ["0/3", "1/3", "2/3"] {
        let dir = work.path().join(format!("part-{}", &shard[..1]));
        let summary = run_ok(&["--server", &server.base, "--shard", shard], &dir);
        assert_eq!(summary["shard"], shard);
        parts.push(dir);
    }
    let merged = work.path().join("merged");
    crate::helpers::binary()
        .arg("merge")
        .args(&parts)
        .arg("--out")
        .arg(&merged)
        .assert()
        .success();
    // One unsharded run finds everything written, and reports what the shards reported.
    let single = work.path().join("single");
    let full = run_ok(&["--server", &server.base], &single);
    assert_eq!(changes(&full), (0, 0, 0));
    for name in ["markers.csv", "flags.csv"] {
        assert_eq!(
            std::fs::read_to_string(merged.join(name)).unwrap(),
            std::fs::read_to_string(single.join(name)).unwrap(),
            "{name}"
        );
    }
    let merged_summary: Value =
        serde_json::from_str(&std::fs::read_to_string(merged.join("run-summary.json")).unwrap())
            .unwrap();
    for key in ["patients", "responses", "flags"] {
        assert_eq!(merged_summary[key], full[key], "{key}");
    }
}

async fn the_report_on_the_server_shows_the_flag_trail_with_status_and_annotations(
    server: TestServer,
) {
    let mut data = new_patient("trail-a");
    data.extend(new_patient("trail-b"));
    put_all(&server.base, &data).await;
    let work = tempfile::tempdir().unwrap();
    run_ok(&["--server", &server.base], &work.path().join("run-1"));
    let issues = our_issues(&server.base).await;
    assert_eq!(issues.len(), 2, "{issues:?}");
    // A clinician annotates trail-a's DetectedIssue ...
    let (identifier_a, _) = issues
        .iter()
        .find(|(_, issue)| patient_of(issue) == "trail-a")
        .unwrap();
    let search = get_json(&format!(
        "{}/DetectedIssue?identifier={FLAG_SYSTEM}%7C{identifier_a}",
        server.base
    ))
    .await;
    let mut annotated = search["entry"][0]["resource"].clone();
    annotated["mitigation"] =
        json!([{"action": {"text": "MRI booked <b>urgently</b>"}, "date": "2026-10-20"}]);
    let url = format!(
        "{}/DetectedIssue/{}",
        server.base,
        annotated["id"].as_str().unwrap()
    );
    put_all(&server.base, &[annotated]).await;
    let _ = url;
    // ... and trail-b's rise ends with a new low value: cancelled by the next run.
    put_all(
        &server.base,
        &[observation("trail-b-o4", "trail-b", "2026-10-01", 300.0)],
    )
    .await;
    run_ok(&["--server", &server.base], &work.path().join("run-2"));

    let out = job_ok(
        "report",
        &["--server", &server.base, "--from", "2026-09-01"],
    );
    let out = out.path();
    let trail: Vec<csv::StringRecord> = csv::Reader::from_path(out.join("report-flag-trail.csv"))
        .unwrap()
        .records()
        .map(Result::unwrap)
        .collect();
    let by_patient: std::collections::BTreeMap<&str, (&str, &str, &str)> = trail
        .iter()
        .map(|r| (&r[1], (&r[4], &r[7], &r[8])))
        .collect();
    assert_eq!(
        by_patient,
        std::collections::BTreeMap::from([
            (
                "trail-a",
                ("annotated", "MRI booked <b>urgently</b>", "2026-10-20")
            ),
            ("trail-b", ("cancelled", "", "")),
        ])
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("MRI booked &lt;b&gt;urgently&lt;/b&gt;"));
    // The worklist's review status: the annotated DetectedIssue's status and note.
    let flagged: Vec<csv::StringRecord> =
        csv::Reader::from_path(out.join("report-flagged-patients.csv"))
            .unwrap()
            .records()
            .map(Result::unwrap)
            .collect();
    let review = flagged
        .iter()
        .find(|r| &r[0] == "trail-a")
        .map(|r| (r[7].to_owned(), r[8].to_owned()));
    assert_eq!(
        review,
        Some((
            "annotated".to_owned(),
            "MRI booked <b>urgently</b>".to_owned()
        ))
    );
    // A range that ends before the flags were identified holds none of them.
    let early = job_ok("report", &["--server", &server.base, "--to", "2026-08-01"]);
    let rows = std::fs::read_to_string(early.path().join("report-flag-trail.csv")).unwrap();
    assert_eq!(rows.lines().count(), 1, "{rows}");
}

async fn a_run_that_reads_no_tare_patient_cancels_nothing_and_says_why(server: TestServer) {
    let data = generated(12, 7);
    put_all(&server.base, &data).await;
    let work = tempfile::tempdir().unwrap();
    let first = run_ok(&["--server", &server.base], &work.path().join("first"));
    let (created, _, _) = changes(&first);
    assert!(created > 0, "the cohort has flags to write");
    let before = our_issues(&server.base).await;

    // The TARE Procedures disappear (a changed code list, a permission change...).
    for procedure in data.iter().filter(|r| r["resourceType"] == "Procedure") {
        delete(&format!(
            "{}/Procedure/{}",
            server.base,
            procedure["id"].as_str().unwrap()
        ))
        .await;
    }
    // Read, but nothing usable: exit 8, nothing published, nothing sent.
    let output = crate::helpers::binary()
        .args([
            "run",
            "--server",
            &server.base,
            "--as-of",
            "2026-11-01",
            "--out",
        ])
        .arg(work.path().join("empty"))
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!work.path().join("empty").exists());
    assert_eq!(our_issues(&server.base).await, before);
    // Accepted as empty, the safety valve stops it.
    let out = work.path().join("second");
    let output = crate::helpers::binary()
        .args([
            "run",
            "--allow-empty",
            "--server",
            &server.base,
            "--as-of",
            "2026-11-01",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(6));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "error: safety valve: this run would cancel {} of the job's {} active DetectedIssues, and it read no patient with a TARE procedure at all",
            before.len(),
            before.len()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert!(stderr.contains("--allow-mass-cancel"), "{stderr}");
    // Nothing on the server moved.
    assert_eq!(our_issues(&server.base).await, before);
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run-summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["write_back"]["cancelled"], 0);
    assert_eq!(
        summary["write_back"]["mass_cancel"]["no_tare_patient_read"],
        true
    );

    // An operator who means it.
    let third = run_ok(
        &[
            "--server",
            &server.base,
            "--allow-empty",
            "--allow-mass-cancel",
        ],
        &work.path().join("third"),
    );
    assert_eq!(changes(&third), (0, 0, before.len() as u64));
}

/// Our DetectedIssue of `patient` (the one of them), as the server holds it.
async fn the_issue_of(base: &str, patient: &str) -> Value {
    let issues: Vec<Value> = our_issues(base)
        .await
        .into_values()
        .filter(|issue| patient_of(issue) == patient)
        .collect();
    assert_eq!(issues.len(), 1, "{issues:?}");
    issues.into_iter().next().unwrap()
}

async fn a_cohort_run_leaves_other_patients_and_what_a_person_entered_in_error_as_they_are(
    server: TestServer,
) {
    let mut data = new_patient("mine");
    data.extend(new_patient("other"));
    // A DetectedIssue of ours about the other patient, for a flag the job would not find.
    data.push(json!({
        "resourceType": "DetectedIssue", "id": "by-hand", "status": "preliminary",
        "identifier": [{"system": FLAG_SYSTEM, "value": "0123456789abcdef0123456789abcdef"}],
        "patient": {"reference": "Patient/other"}
    }));
    put_all(&server.base, &data).await;
    let work = tempfile::tempdir().unwrap();
    let before = the_issue_of(&server.base, "other").await;

    let first = run_ok(
        &["--server", &server.base, "--patient", "mine"],
        &work.path().join("first"),
    );
    assert_eq!(changes(&first), (1, 0, 0));
    // The other patient's DetectedIssue is as it was.
    assert_eq!(the_issue_of(&server.base, "other").await, before);

    // A person sets the job's DetectedIssue of "mine" to entered-in-error.
    let mut theirs = the_issue_of(&server.base, "mine").await;
    theirs["status"] = json!("entered-in-error");
    put_all(&server.base, &[theirs]).await;
    let entered = the_issue_of(&server.base, "mine").await;
    assert_eq!(entered["status"], "entered-in-error");

    // The flag still holds: it stays as the person left it, and no second one is made.
    let second = run_ok(
        &["--server", &server.base, "--patient", "mine"],
        &work.path().join("second"),
    );
    assert_eq!(changes(&second), (0, 0, 0));
    assert_eq!(second["write_back"]["kept_entered_in_error"], 1);
    assert_eq!(the_issue_of(&server.base, "mine").await, entered);

    // The flag no longer holds (a new low value): still not cancelled over the person's word.
    put_all(
        &server.base,
        &[observation("mine-o4", "mine", "2026-10-01", 300.0)],
    )
    .await;
    let third = run_ok(
        &["--server", &server.base, "--patient", "mine"],
        &work.path().join("third"),
    );
    assert_eq!(changes(&third), (0, 0, 0));
    assert_eq!(third["write_back"]["kept_entered_in_error"], 1);
    assert_eq!(the_issue_of(&server.base, "mine").await, entered);
    assert_eq!(the_issue_of(&server.base, "other").await, before);
}
