//! The CLI contract, end to end on the bundled demo cohort, exactly as a user runs it.

use crate::helpers::{assert_success, binary, demo, job, out_dir, read, summary_of, OutDir};

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

fn run_demo(extra: &[&str]) -> (OutDir, std::process::Output) {
    let demo = demo();
    let mut args = vec!["--source-dir", demo.to_str().unwrap()];
    args.extend(extra);
    job("run", &args)
}

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    csv::Reader::from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

#[test]
fn run_on_demo_writes_markers_csv_with_the_seed_row() {
    let (out, output) = run_demo(&[]);
    assert_success(&output);
    let markers = read(out.path(), "markers.csv");
    let mut lines = markers.lines();
    assert_eq!(
        lines.next().unwrap(),
        "patient_id,episode_index_date,marker,unit,baseline_value,baseline_date,nadir_value,nadir_date,latest_value,latest_date,n_post,pct_change,rise_from_nadir_pct,uln,response,halflife_days,next_due_date,albi_baseline,albi_latest,flags,reference_nadir_value,reference_nadir_date,baseline_comparator,nadir_comparator,latest_comparator,reference_nadir_comparator"
    );
    // 88,000 -> 6,088 mAU/mL four months after TARE: -93.1%, above 40: PR, incomplete-response.
    // ALBI: 0.66 x log10(14) - 0.085 x 38 = -2.47; 0.66 x log10(16) - 0.085 x 36 = -2.27.
    // The rise of -33.1% is from the reference nadir, 9,100 mAU/mL on 2026-09-20: the lowest
    // of the baseline and the values before the latest, named in the last two columns.
    assert!(markers.lines().any(|l| l
        == "demo-01-seed-partial-response,2026-06-20,pivka2,mAU/mL,88000,2026-06-15,6088,2026-10-20,6088,2026-10-20,4,-93.1,-33.1,40,PR,31.8,2027-01-18,-2.47,-2.27,incomplete-response,9100,2026-09-20,,,,"));
}

#[test]
fn markers_csv_keeps_the_censoring_of_each_value_in_its_comparator_column() {
    let (out, output) = run_demo(&[]);
    assert_success(&output);
    // demo-24's AFP fell to "<2.0 ng/mL" (valueString), its nadir and reference nadir: the
    // number 2 with `<`; the baseline and the latest were exact.
    assert!(
        read(out.path(), "markers.csv").lines().any(|l| l
            == "demo-24-data-quality,2026-06-05,afp,ng/mL,45,2026-06-02,2,2026-07-05,4,2026-08-04,2,-91.1,100.0,20,CR,7.3,2026-09-03,-2.22,,surveillance-overdue,2,2026-07-05,,<,,<"),
        "{}",
        read(out.path(), "markers.csv")
    );
}

#[test]
fn demo_shows_every_response_flag_and_severity() {
    let (out, output) = run_demo(&[]);
    assert!(output.status.success());
    let markers = csv_rows(&read(out.path(), "markers.csv"));
    let responses: BTreeSet<&str> = markers.iter().map(|r| r[14].as_str()).collect();
    assert_eq!(responses, BTreeSet::from(["CR", "NE", "PD", "PR", "SD"]));
    let markers_seen: BTreeSet<&str> = markers.iter().map(|r| r[2].as_str()).collect();
    assert_eq!(
        markers_seen,
        BTreeSet::from(["afp", "afp_l3", "dcp", "pivka2"])
    );
    let flags = csv_rows(&read(out.path(), "flags.csv"));
    let codes: BTreeSet<&str> = flags.iter().map(|r| r[2].as_str()).collect();
    assert_eq!(
        codes,
        BTreeSet::from([
            "incomplete-response",
            "marker-discordance",
            "marker-plateau",
            "marker-rise",
            "no-response",
            "possible-reild",
            "surveillance-overdue"
        ])
    );
    // Written flags (moderate, high) carry an identifier; low ones do not.
    for row in &flags {
        assert_eq!(row[4] == "low", row[6].is_empty(), "{row:?}");
    }
}

#[test]
fn demo_summary_counts_every_left_out_reason() {
    let (out, _) = run_demo(&[]);
    let summary: Value = serde_json::from_str(&read(out.path(), "run-summary.json")).unwrap();
    let patients = &summary["patients"];
    assert_eq!(patients["seen"], 58);
    for reason in [
        "no_patient_resource",
        "no_tare_procedure",
        "all_episodes_after_as_of",
        "under_minimum_age",
        "no_hcc_condition",
    ] {
        assert!(
            patients["left_out"][reason].as_u64().unwrap() >= 1,
            "{reason}"
        );
    }
    assert_eq!(patients["birth_date_unknown"], 1);
    let observations = &summary["resources"]["by_type"]["Observation"]["left_out"];
    for reason in [
        "status_not_accepted",
        "no_effective_time",
        "effective_time_not_a_full_date",
        "invalid_effective_time",
        "data_absent_reason",
        "no_value",
        "value_string_without_unit",
        "value_string_not_a_number",
        "unknown_comparator",
        "unknown_unit",
        "duplicate",
        "invalid_json_or_structure",
        "unexpected_resource_type",
        "no_patient_reference",
    ] {
        assert!(
            observations[reason]["count"].as_u64().unwrap() >= 1,
            "{reason}"
        );
    }
    assert_eq!(observations["unknown_unit"]["by_value"]["mmol/L"], 1);
    // Of no configured code: the haemoglobin, and the one without a code whose value is not a
    // number (passed over unparsed: docs/rules.md 1.4a).
    assert_eq!(
        summary["resources"]["by_type"]["Observation"]["not_relevant"],
        2
    );
    assert_eq!(
        observations["status_not_accepted"]["by_value"]["preliminary"],
        1
    );
    let procedures = &summary["resources"]["by_type"]["Procedure"]["left_out"];
    assert_eq!(procedures["procedure_not_completed"]["count"], 1);
    assert_eq!(procedures["procedure_no_performed_date"]["count"], 1);
    assert!(summary["timings"]["total_ms"].is_u64());
}

#[test]
fn detected_issues_file_holds_device_then_issue_and_provenance_per_written_flag() {
    let (out, _) = run_demo(&[]);
    let resources: Vec<Value> = read(out.path(), "detected-issues.ndjson")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(resources[0]["resourceType"], "Device");
    let issues: Vec<&Value> = resources
        .iter()
        .filter(|r| r["resourceType"] == "DetectedIssue")
        .collect();
    let summary: Value = serde_json::from_str(&read(out.path(), "run-summary.json")).unwrap();
    assert_eq!(
        issues.len() as u64,
        summary["flags"]["written_as_detected_issues"]
            .as_u64()
            .unwrap()
    );
    for pair in resources[1..].chunks(2) {
        let (issue, provenance) = (&pair[0], &pair[1]);
        assert_eq!(issue["resourceType"], "DetectedIssue");
        assert_eq!(issue["status"], "preliminary");
        assert!(matches!(
            issue["severity"].as_str(),
            Some("moderate" | "high")
        ));
        assert_eq!(issue["author"]["reference"], "Device/tare-marker-monitor");
        assert_eq!(provenance["resourceType"], "Provenance");
        assert_eq!(
            provenance["target"][0]["reference"].as_str().unwrap(),
            format!("DetectedIssue/{}", issue["id"].as_str().unwrap())
        );
        assert_eq!(
            provenance["entity"].as_array().unwrap().len(),
            issue["implicated"].as_array().unwrap().len()
        );
    }
    // Identifiers are unique: one resource per flag.
    let ids: BTreeSet<&str> = issues
        .iter()
        .map(|i| i["identifier"][0]["value"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), issues.len());
}

#[test]
fn rerun_into_the_same_folder_gives_the_same_files() {
    let (out, _) = run_demo(&[]);
    let first = read(out.path(), "markers.csv");
    let first_flags = read(out.path(), "flags.csv");
    let output = binary()
        .args(["run", "--source-dir"])
        .arg(demo())
        .args(["--as-of", "2026-11-01", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(read(out.path(), "markers.csv"), first);
    assert_eq!(read(out.path(), "flags.csv"), first_flags);
    let leftovers: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn run_without_as_of_uses_today() {
    let out = out_dir();
    binary()
        .args(["run", "--source-dir"])
        .arg(demo())
        .arg("--out")
        .arg(out.path())
        .assert()
        .success();
    let summary: Value = serde_json::from_str(&read(out.path(), "run-summary.json")).unwrap();
    assert_eq!(
        summary["as_of"],
        chrono::Utc::now().date_naive().to_string()
    );
}

#[test]
fn config_file_overrides_a_default() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strict.toml");
    std::fs::write(&config, "[output]\nmin_severity_written = \"high\"\n").unwrap();
    let (out, output) = run_demo(&["--config", config.to_str().unwrap()]);
    assert!(output.status.success());
    let resources = read(out.path(), "detected-issues.ndjson");
    assert!(resources.contains("\"severity\":\"high\""));
    assert!(!resources.contains("\"severity\":\"moderate\""));
}

#[test]
fn shipped_default_config_equals_the_built_in_defaults() {
    let (with_file, output) = run_demo(&[
        "--config",
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml"),
    ]);
    assert_success(&output);
    let (built_in, _) = run_demo(&[]);
    assert_eq!(
        read(with_file.path(), "markers.csv"),
        read(built_in.path(), "markers.csv")
    );
    assert_eq!(
        read(with_file.path(), "flags.csv"),
        read(built_in.path(), "flags.csv")
    );
}

#[test]
fn invalid_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[rules]\nrise_percent = 30\n").unwrap();
    let (_, output) = run_demo(&["--config", config.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("rise_percent"), "{stderr}");
}

#[test]
fn missing_source_folder_exits_3_with_its_path() {
    let out = out_dir();
    let output = binary()
        .args([
            "run",
            "--source-dir",
            "/nonexistent/bulk",
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
        stderr.contains("cannot read source folder /nonexistent/bulk"),
        "{stderr}"
    );
    assert!(!out.path().join("markers.csv").exists());
}

#[test]
fn explain_prints_values_with_days_since_tare_and_the_finding() {
    let output = binary()
        .args(["explain", "--source-dir"])
        .arg(demo())
        .args([
            "--patient",
            "demo-01-seed-partial-response",
            "--as-of",
            "2026-11-01",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("Episode 1: TARE on 2026-06-20"), "{text}");
    assert!(
        text.lines().any(|l| l.contains("2026-06-15")
            && l.contains("-5")
            && l.contains("PIVKA-II")
            && l.contains("88,000 mAU/mL")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("2026-10-20") && l.contains("122") && l.contains("6,088 mAU/mL")),
        "{text}"
    );
    assert!(text.contains("response PR"), "{text}");
    assert!(text.contains("incomplete-response [low, PIVKA-II; report only] PIVKA-II fell 93.1% from its baseline, 88,000 mAU/mL before TARE (2026-06-15), to 6,088 mAU/mL after TARE (2026-10-20), but remains above the upper limit of normal of 40 mAU/mL; TARE on 2026-06-20."), "{text}");
}

#[test]
fn explain_unknown_patient_is_a_clear_error() {
    let output = binary()
        .args(["explain", "--source-dir"])
        .arg(demo())
        .args(["--patient", "nobody", "--as-of", "2026-11-01"])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(tare_marker_monitor::commands::exit::NOTHING_USABLE.into())
    );
    assert_eq!(
        stderr_of(&output).lines().last(),
        Some(
            format!(
                "error: {}: read, but nothing usable: no resource refers to patient \"nobody\" (explain takes a Patient.id of the source)",
                demo().display()
            )
            .as_str()
        )
    );
}

#[test]
fn a_usage_error_in_a_json_log_is_one_json_object_on_stderr_with_exit_2() {
    for args in [
        vec!["--log-format", "json", "run", "--bogus"],
        vec!["run", "--bogus", "--log-format=json"],
    ] {
        let output = binary().args(&args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = stderr_of(&output);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        let event: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(event["level"], "ERROR", "{event}");
        assert_eq!(event["fields"]["exit_code"], 2, "{event}");
        assert_eq!(
            event["fields"]["message"], "unexpected argument '--bogus' found",
            "{event}"
        );
    }
    // A text log keeps clap's own words.
    let output = binary().args(["run", "--bogus"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output).starts_with("error: unexpected argument '--bogus' found\n"),
        "{}",
        stderr_of(&output)
    );
}

#[test]
fn demo_fixture_is_what_the_generator_writes() {
    let dir = tempfile::tempdir().unwrap();
    binary()
        .args(["generate", "--demo", "--out"])
        .arg(dir.path())
        .assert()
        .success();
    for name in [
        "Patient.ndjson",
        "Condition.ndjson",
        "Procedure.ndjson",
        "Observation.ndjson",
    ] {
        assert_eq!(
            read(dir.path(), name),
            read(&demo(), name),
            "{name} differs: regenerate fixtures/demo"
        );
    }
}

#[test]
fn generator_is_deterministic_for_a_seed() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for dir in [&a, &b] {
        binary()
            .args(["generate", "--patients", "20", "--seed", "7", "--out"])
            .arg(dir.path())
            .assert()
            .success();
    }
    assert_eq!(
        read(a.path(), "Observation.ndjson"),
        read(b.path(), "Observation.ndjson")
    );
    assert_eq!(
        read(a.path(), "Observation.ndjson").lines().count(),
        20 * 13 * 4
    );
}

#[test]
fn generate_refuses_a_folder_that_holds_files_and_leaves_it_as_it_was() {
    let out = out_dir();
    std::fs::create_dir(out.path()).unwrap();
    std::fs::write(out.path().join("Observation.ndjson"), "a real export\n").unwrap();
    let output = binary()
        .args(["generate", "--patients", "3", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr_of(&output),
        format!(
            "error: --out {} already holds \"Observation.ndjson\": generate writes only into a new or empty folder (remove the folder to generate it again)\n",
            out.path().display()
        )
    );
    assert_eq!(read(out.path(), "Observation.ndjson"), "a real export\n");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 1);
}

#[test]
fn generate_fills_an_empty_folder_and_leaves_no_staging_folder_beside_it() {
    let out = out_dir();
    std::fs::create_dir(out.path()).unwrap();
    binary()
        .args(["generate", "--patients", "2", "--out"])
        .arg(out.path())
        .assert()
        .success();
    assert_eq!(read(out.path(), "Patient.ndjson").lines().count(), 2);
    let parent = out.path().parent().unwrap();
    let beside: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, [std::ffi::OsString::from("out")]);
}

#[test]
fn generate_refuses_seed_or_date_with_the_demo_and_an_empty_cohort() {
    for args in [
        vec!["--demo", "--seed", "3"],
        vec!["--demo", "--as-of", "2026-01-01"],
        vec!["--patients", "0"],
    ] {
        let out = out_dir();
        let output = binary()
            .arg("generate")
            .args(&args)
            .arg("--out")
            .arg(out.path())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(!out.path().exists(), "{args:?}");
    }
}

#[test]
fn sigterm_stops_generate_with_130_and_leaves_nothing_behind() {
    let out = out_dir();
    let parent = out.path().parent().unwrap().to_owned();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("tare-marker-monitor"))
        .args(["generate", "--realistic", "--patients", "100000", "--out"])
        .arg(out.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Signalled once its Observations are being written into the staging folder.
    let writing = || {
        std::fs::read_dir(&parent).unwrap().any(|entry| {
            let path = entry.unwrap().path();
            std::fs::metadata(path.join("Observation.000.ndjson")).is_ok_and(|m| m.len() > 0)
        })
    };
    let started = std::time::Instant::now();
    while !writing() {
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(!out.path().exists());
    assert_eq!(std::fs::read_dir(&parent).unwrap().count(), 0);
}

/// The DetectedIssue file without its `recorded` times (they differ between runs).
fn without_recorded(text: &str) -> String {
    text.lines()
        .map(|line| {
            let mut resource: Value = serde_json::from_str(line).unwrap();
            if let Some(object) = resource.as_object_mut() {
                object.remove("recorded");
            }
            resource.to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `merge PARTS --out OUT`; panics unless it succeeds.
fn merge_ok(parts: &[&Path], out: &Path) {
    let output = binary()
        .args(["-q", "merge"])
        .args(parts)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert_success(&output);
}

#[test]
fn shards_of_a_folder_merge_into_exactly_the_unsharded_outputs() {
    let (single, output) = run_demo(&[]);
    assert!(output.status.success());
    // The shards share one output folder, each publishing its set as `shard-I-of-3` there.
    let shared = out_dir();
    let plain = tempfile::tempdir().unwrap();
    for shard in 0..3 {
        let output = binary()
            .args(["run", "--source-dir"])
            .arg(demo())
            .args([
                "--as-of",
                "2026-11-01",
                "--shard",
                &format!("{shard}/3"),
                "--out",
            ])
            .arg(shared.path())
            .output()
            .unwrap();
        assert_success(&output);
        let set = shared.path().join(format!("shard-{shard}-of-3"));
        for entry in std::fs::read_dir(&set).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(name.contains(&format!(".shard-{shard}-of-3.")), "{name}");
            std::fs::copy(entry.path(), plain.path().join(name)).unwrap();
        }
    }
    let mut names: Vec<String> = std::fs::read_dir(shared.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ".shard-0-of-3.runs",
            ".shard-1-of-3.runs",
            ".shard-2-of-3.runs",
            "shard-0-of-3",
            "shard-1-of-3",
            "shard-2-of-3"
        ]
    );
    // Merged from the shards' sets, and from copies of their part files in a plain folder.
    let merged = out_dir();
    merge_ok(&[shared.path()], merged.path());
    let from_copies = out_dir();
    merge_ok(&[plain.path()], from_copies.path());
    for name in ["markers.csv", "flags.csv"] {
        assert_eq!(
            read(merged.path(), name),
            read(single.path(), name),
            "{name}"
        );
        assert_eq!(read(from_copies.path(), name), read(single.path(), name));
    }
    assert_eq!(
        without_recorded(&read(merged.path(), "detected-issues.ndjson")),
        without_recorded(&read(single.path(), "detected-issues.ndjson"))
    );
    let merged: Value = serde_json::from_str(&read(merged.path(), "run-summary.json")).unwrap();
    let single: Value = serde_json::from_str(&read(single.path(), "run-summary.json")).unwrap();
    // Each resource is counted by exactly one shard: the counts add up to one run's.
    for key in ["patients", "responses", "flags"] {
        assert_eq!(merged[key], single[key], "{key}");
    }
    for (kind, counts) in single["resources"]["by_type"].as_object().unwrap() {
        let theirs = &merged["resources"]["by_type"][kind];
        assert_eq!(theirs["read"], counts["read"], "{kind}");
        assert_eq!(theirs["accepted"], counts["accepted"], "{kind}");
        for (reason, count) in counts["left_out"].as_object().unwrap() {
            assert_eq!(
                theirs["left_out"][reason]["count"], count["count"],
                "{kind} {reason}"
            );
        }
    }
    assert_eq!(merged["shard"], "merged from 3 shards");
    // The merge is a run of its own, tied to the shard runs it read.
    assert_eq!(merged["merged_from"].as_array().unwrap().len(), 3);
    assert_ne!(merged["run_id"], merged["merged_from"][0]);
    let files: Vec<&str> = merged["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "detected-issues.ndjson",
            "flags.csv",
            "markers.csv",
            "metrics.prom"
        ]
    );
}

#[test]
fn merge_refuses_part_files_of_two_runs_mixed() {
    let shared = out_dir();
    for (shard, as_of) in [
        ("0/2", "2026-11-01"),
        ("1/2", "2026-11-01"),
        ("0/2", "2026-10-01"),
    ] {
        let output = binary()
            .args(["run", "--source-dir"])
            .arg(demo())
            .args(["--as-of", as_of, "--shard", shard, "--out"])
            .arg(shared.path())
            .output()
            .unwrap();
        assert_success(&output);
    }
    // Shard 0's markers of its second run beside the summary of its first.
    let plain = tempfile::tempdir().unwrap();
    for (set, name) in [
        ("shard-0-of-2", "markers.shard-0-of-2.csv"),
        ("shard-0-of-2", "flags.shard-0-of-2.csv"),
        ("shard-0-of-2", "detected-issues.shard-0-of-2.ndjson"),
        ("shard-1-of-2", "markers.shard-1-of-2.csv"),
        ("shard-1-of-2", "flags.shard-1-of-2.csv"),
        ("shard-1-of-2", "detected-issues.shard-1-of-2.ndjson"),
        ("shard-1-of-2", "run-summary.shard-1-of-2.json"),
    ] {
        std::fs::copy(shared.path().join(set).join(name), plain.path().join(name)).unwrap();
    }
    let store = shared.path().join(".shard-0-of-2.runs");
    std::fs::copy(
        store.join("previous/run-summary.shard-0-of-2.json"),
        plain.path().join("run-summary.shard-0-of-2.json"),
    )
    .unwrap();
    let merged = out_dir();
    let output = binary()
        .args(["-q", "merge"])
        .arg(plain.path())
        .arg("--out")
        .arg(merged.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{} is not the file its shard's run-summary lists",
            plain
                .path()
                .join("detected-issues.shard-0-of-2.ndjson")
                .display()
        )),
        "{stderr}"
    );
    assert!(!merged.path().exists());
    assert!(!merged.store().exists());
}

#[test]
fn merge_names_a_missing_shard() {
    let (part, output) = run_demo(&["--shard", "0/2"]);
    assert!(output.status.success());
    let merged = out_dir();
    let output = binary()
        .args(["-q", "merge"])
        .arg(part.path())
        .arg("--out")
        .arg(merged.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "error: shard 1/2 is incomplete: missing markers.shard-1-of-2.csv, flags.shard-1-of-2.csv, detected-issues.shard-1-of-2.ndjson, run-summary.shard-1-of-2.json\n"
    );
    // Nothing was touched: no set, no store beside it.
    assert!(!merged.path().exists());
    assert!(!merged.store().exists());
}

#[test]
fn merge_refuses_parts_of_different_shard_counts_with_exit_2_naming_a_part_of_each() {
    let (of_two, output) = run_demo(&["--shard", "0/2"]);
    assert!(output.status.success());
    let (of_three, output) = run_demo(&["--shard", "1/3"]);
    assert!(output.status.success());
    let merged = out_dir();
    let output = binary()
        .args(["-q", "merge"])
        .arg(of_two.path())
        .arg(of_three.path())
        .arg("--out")
        .arg(merged.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(
            "error: parts of runs with different shard counts (part of a run's identity): 2 shards in "
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("shard-0-of-2") && stderr.contains(", 3 shards in "),
        "{stderr}"
    );
    assert!(!merged.path().exists());
}

#[test]
fn a_shard_outside_its_count_exits_2() {
    let (_, output) = run_demo(&["--shard", "3/3"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("shard 3/3: the index counts from 0 and must be below the count"));
}

#[test]
fn a_cohort_on_a_folder_reports_only_its_patients() {
    let dir = tempfile::tempdir().unwrap();
    let cohort = dir.path().join("cohort.txt");
    std::fs::write(
        &cohort,
        "# two of the demo\ndemo-01-seed-partial-response\n\nnobody-here\n",
    )
    .unwrap();
    let (out, output) = run_demo(&[
        "--cohort",
        cohort.to_str().unwrap(),
        "--patient",
        "demo-04-pivka-unconfirmed-rise",
    ]);
    assert_success(&output);
    // The demo's cut line is warned about by the reader; the rest is the cohort's word.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let cohort_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(" WARN ") && !l.contains("are not FHIR JSON"))
        .collect();
    // How many were not found, and where they are listed; never who (patient data).
    assert_eq!(cohort_lines.len(), 1, "{stderr}");
    assert!(
        cohort_lines[0].ends_with(
            " WARN tare_marker_monitor::commands::run: 1 requested patient was not found (an id without a Patient, an identifier without exactly one Patient, a Group without members): listed under cohort.unknown in run-summary.json not_found=1"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("nobody-here"), "{stderr}");
    let patients: BTreeSet<String> = csv_rows(&read(out.path(), "markers.csv"))
        .into_iter()
        .map(|row| row[0].clone())
        .collect();
    assert_eq!(
        patients,
        BTreeSet::from([
            "demo-01-seed-partial-response".to_owned(),
            "demo-04-pivka-unconfirmed-rise".to_owned()
        ])
    );
    let summary: Value = serde_json::from_str(&read(out.path(), "run-summary.json")).unwrap();
    assert_eq!(summary["mode"], "cohort");
    assert_eq!(summary["cohort"]["requested"], 3);
    assert_eq!(
        summary["cohort"]["unknown"],
        serde_json::json!(["nobody-here (no Patient)"])
    );
    // The identifier itself at debug level only (-v).
    let (_, output) = run_demo(&[
        "-v",
        "--cohort",
        cohort.to_str().unwrap(),
        "--patient",
        "demo-04-pivka-unconfirmed-rise",
    ]);
    assert_success(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let named: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("nobody-here"))
        .collect();
    assert_eq!(named.len(), 1, "{stderr}");
    assert!(
        named[0].contains(" DEBUG ") && named[0].ends_with("not found: nobody-here (no Patient)"),
        "{stderr}"
    );
}

#[test]
fn identifiers_in_a_cohort_need_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let cohort = dir.path().join("cohort.txt");
    std::fs::write(&cohort, "urn:example:mrn|12345\n").unwrap();
    let (_, output) = run_demo(&["--cohort", cohort.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr_of(&output).lines().last(),
        Some("error: identifiers (system|value) and --group are resolved on a FHIR server: use --server")
    );
}

#[test]
fn json_logs_are_one_object_per_line_without_patient_data() {
    let out = out_dir();
    let output = binary()
        .args(["--log-format", "json", "run", "--source-dir"])
        .arg(demo())
        .args(["--as-of", "2026-11-01", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    // At the default level: a start line and an end line with the run's figures, as numbers.
    let started = &lines[0]["fields"];
    assert_eq!(started["message"], "run started");
    assert_eq!(started["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(started["command"], "run");
    assert_eq!(started["source_kind"], "folder");
    assert_eq!(started["as_of"], "2026-11-01");
    assert!(started["run_id"].is_string());
    let ended = &lines.last().unwrap()["fields"];
    assert_eq!(ended["message"], "run ended");
    assert_eq!(ended["exit_code"], 0);
    assert_eq!(ended["patients_evaluated"], 51);
    assert_eq!(ended["patients_flagged"], 43);
    assert_eq!(ended["observations_accepted"], 984);
    assert_eq!(ended["observations_left_out"], 15);
    assert_eq!(ended["flags_high"], 14);
    assert_eq!(ended["flags_moderate"], 21);
    assert_eq!(ended["flags_low"], 57);
    assert!(ended["duration_secs"].as_f64().unwrap() > 0.0, "{ended}");
    for line in &lines {
        for (key, value) in line["fields"].as_object().unwrap() {
            if key.ends_with("_secs") {
                assert!(value.is_f64(), "{key} is not a number in seconds: {line}");
            }
        }
    }
    // Info lines, and one warning: the demo's cut Observation line.
    let warnings: Vec<&Value> = lines.iter().filter(|l| l["level"] != "INFO").collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert_eq!(warnings[0]["level"], "WARN");
    assert!(warnings[0]["fields"]["message"]
        .as_str()
        .unwrap()
        .starts_with("1 Observation resources are not FHIR JSON"));
    assert!(
        !stderr.contains("demo-"),
        "patient ids in the log: {stderr}"
    );
}

#[test]
fn outputs_are_owner_only_and_formula_like_ids_are_neutralised_in_csv() {
    // The seed patient under an id a spreadsheet would read as a formula (`-` + text).
    let folder = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(demo()).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        std::fs::write(
            folder.path().join(entry.file_name()),
            text.replace("demo-01-seed-partial-response", "-01-seed"),
        )
        .unwrap();
    }
    let out = out_dir();
    let output = binary()
        .args(["run", "--source-dir"])
        .arg(folder.path())
        .args(["--as-of", "2026-11-01", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert_success(&output);
    let markers = read(out.path(), "markers.csv");
    // The id is neutralised; the negative percentages stay numbers.
    assert!(markers.lines().any(|l| l.starts_with(
        "'-01-seed,2026-06-20,pivka2,mAU/mL,88000,2026-06-15,6088,2026-10-20,6088,2026-10-20,4,-93.1,-33.1,"
    )), "{markers}");
    assert!(read(out.path(), "flags.csv")
        .lines()
        .any(|l| l.starts_with("'-01-seed,")));
    #[cfg(unix)]
    for name in [
        "markers.csv",
        "flags.csv",
        "detected-issues.ndjson",
        "run-summary.json",
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
}

/// The demo folder copied, with extra lines appended to some of its files.
fn demo_with(extra: &[(&str, Vec<String>)]) -> tempfile::TempDir {
    let folder = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(demo()).unwrap().flatten() {
        std::fs::copy(entry.path(), folder.path().join(entry.file_name())).unwrap();
    }
    for (name, lines) in extra {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(folder.path().join(name))
            .unwrap();
        for line in lines {
            writeln!(file, "{line}").unwrap();
        }
    }
    folder
}

fn run_folder(folder: &Path, out: &Path) -> std::process::Output {
    binary()
        .args(["run", "--source-dir"])
        .arg(folder)
        .args(["--as-of", "2026-11-01", "--out"])
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn a_code_under_an_unknown_system_warns_once_per_system_and_type_with_the_fix() {
    let procedure = |n: usize, system: &str| {
        serde_json::json!({"resourceType": "Procedure", "id": format!("near-{n}"), "status": "completed",
            "code": {"coding": [{"system": system, "code": "S2095"}]},
            "subject": {"reference": format!("Patient/near-{n}")}, "performedDateTime": "2026-05-01"})
        .to_string()
    };
    let folder = demo_with(&[(
        "Procedure.ndjson",
        vec![
            procedure(1, "http://hospital.example/hcpcs"),
            procedure(2, "http://hospital.example/hcpcs"),
            procedure(3, "HCPCS"),
        ],
    )]);
    let out = out_dir();
    let output = run_folder(folder.path(), out.path());
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("code system"))
        .collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert!(warnings.iter().any(|w| w.contains(
        "2 Procedure resources carry a configured code under the code system \"http://hospital.example/hcpcs\", which this job does not know by that name"
    )), "{stderr}");
    assert!(warnings
        .iter()
        .all(|w| w.contains("[code_systems.aliases]")));
    let near = &summary_of(out.path())["resources"]["by_type"]["Procedure"]["left_out"]
        ["code_under_unknown_system"];
    assert_eq!(near["count"], 3);
    assert_eq!(near["by_value"]["http://hospital.example/hcpcs"], 2);
    assert_eq!(near["by_value"]["HCPCS"], 1);
}

#[test]
fn a_procedure_dated_in_year_minus_262143_is_left_out_and_the_run_goes_on() {
    let folder = demo_with(&[
        (
            "Patient.ndjson",
            vec![serde_json::json!({"resourceType": "Patient", "id": "no-birth-date"}).to_string()],
        ),
        (
            "Procedure.ndjson",
            vec![serde_json::json!({"resourceType": "Procedure", "id": "ancient", "status": "completed",
                "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "79445"}]},
                "subject": {"reference": "Patient/no-birth-date"},
                "performedDateTime": "-262143-01-01"})
            .to_string()],
        ),
    ]);
    let out = out_dir();
    let output = run_folder(folder.path(), out.path());
    assert_success(&output);
    let summary = summary_of(out.path());
    let left_out = &summary["resources"]["by_type"]["Procedure"]["left_out"];
    // A sign before the year is no FHIR date.
    assert_eq!(left_out["invalid_performed_date"]["count"], 1);
    assert_eq!(
        left_out["invalid_performed_date"]["examples"][0]["detail"],
        "-262143-01-01"
    );
    // The demo's own patients are all evaluated as before.
    assert!(read(out.path(), "markers.csv").contains("demo-01-seed-partial-response,"));
}

#[test]
fn a_run_into_a_folder_another_run_holds_exits_7_and_touches_nothing() {
    let out = out_dir();
    assert_success(&run_folder(&demo(), out.path()));
    let shown = std::fs::read_link(out.path()).unwrap();
    let stored = names_in(&out.store());
    let held = tare_marker_monitor::output::lock_output(out.path()).unwrap();
    let output = run_folder(&demo(), out.path());
    assert_eq!(output.status.code(), Some(7));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{} is in use by another run (process {} since",
            out.path().display(),
            std::process::id()
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::read_link(out.path()).unwrap(), shown);
    assert_eq!(names_in(&out.store()), stored);
    drop(held);
    assert!(run_folder(&demo(), out.path()).status.success());
}

/// The names in a folder, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_folder_without_observations_exits_3_naming_it() {
    let folder = tempfile::tempdir().unwrap();
    std::fs::copy(
        demo().join("Patient.ndjson"),
        folder.path().join("Patient.ndjson"),
    )
    .unwrap();
    let out = out_dir();
    let output = run_folder(folder.path(), out.path());
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).contains(&format!(
        "source folder {} holds no Observation data",
        folder.path().display()
    )));
}

/// demo-03 (a confirmed PIVKA-II rise), its latest value carrying `referenceRange.high`.
fn confirmed_rise_with_reference_high(high: f64) -> Vec<Value> {
    let scenario = tare_marker_monitor::generate::demo_scenarios()
        .into_iter()
        .find(|p| p.patients[0]["id"] == "demo-03-pivka-confirmed-rise")
        .unwrap();
    let mut observations = scenario.observations.clone();
    let latest = observations
        .iter_mut()
        .filter(|o| o["code"].to_string().contains("34444-0"))
        .max_by_key(|o| o["effectiveDateTime"].as_str().unwrap().to_owned())
        .unwrap();
    latest["referenceRange"] = serde_json::json!([{"high": {"value": high, "unit": "mAU/mL", "system": "http://unitsofmeasure.org", "code": "[arb'U]/L"}}]);
    [
        scenario.patients,
        scenario.conditions,
        scenario.procedures,
        observations,
    ]
    .concat()
}

/// (uln, response, flags) of the PIVKA-II row, and the summary.
fn pivka_row_with_reference_high(high: f64) -> ((String, String, String), Value) {
    let folder = crate::helpers::write_folder(&confirmed_rise_with_reference_high(high));
    let (out, output) = job("run", &["--source-dir", folder.path().to_str().unwrap()]);
    assert_success(&output);
    let rows = csv_rows(&read(out.path(), "markers.csv"));
    let row = rows.iter().find(|r| r[2] == "pivka2").unwrap();
    (
        (row[13].clone(), row[14].clone(), row[19].clone()),
        summary_of(out.path()),
    )
}

#[test]
fn an_implausible_reference_high_is_not_used_and_the_rise_stays_flagged() {
    let ((uln, response, flags), summary) = pivka_row_with_reference_high(1e9);
    assert_eq!(
        (uln.as_str(), response.as_str(), flags.as_str()),
        ("40", "PD", "marker-rise")
    );
    let not_used = &summary["resources"]["by_type"]["Observation"]["elements_not_used"]
        ["reference_high_implausible"];
    assert_eq!(not_used["count"], 1);
    assert_eq!(
        not_used["examples"][0]["detail"],
        "referenceRange.high 1000000000 mAU/mL is outside the plausible band of the pivka2 ULN \
         (markers.pivka2.reference_high_band)"
    );
    // Just past the band, or below zero: not used, and shown as it came, not rounded into it.
    for (high, shown) in [(400.0000001, "400.0000001"), (-5.0, "-5")] {
        let ((uln, _, _), summary) = pivka_row_with_reference_high(high);
        assert_eq!(uln, "40", "{high}");
        let not_used = &summary["resources"]["by_type"]["Observation"]["elements_not_used"]
            ["reference_high_implausible"];
        assert!(
            not_used["examples"][0]["detail"]
                .as_str()
                .unwrap()
                .starts_with(&format!("referenceRange.high {shown} mAU/mL is outside")),
            "{not_used}"
        );
    }
    // Within the band (0.2x to 10x the default 40 mAU/mL), a laboratory's own limit is used.
    let ((uln, _, _), summary) = pivka_row_with_reference_high(400.0);
    assert_eq!(uln, "400");
    assert!(summary["resources"]["by_type"]["Observation"]
        .get("elements_not_used")
        .is_none());
}

// ---- exit codes (README "Exit codes", src/commands/exit.rs) and options refused ----

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn help_ends_with_every_exit_code_of_the_table() {
    let output = binary().arg("--help").output().unwrap();
    assert_success(&output);
    let help = String::from_utf8_lossy(&output.stdout);
    let table = &help[help.find("Exit codes").expect("an exit-code table")..];
    for doc in &tare_marker_monitor::commands::exit::TABLE {
        let line = format!("{:>3}  {}", doc.code, doc.summary);
        assert!(table.contains(&line), "{line:?} missing from:\n{table}");
    }
}

#[test]
fn a_successful_run_exits_0() {
    let (_out, output) = run_demo(&[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
}

#[test]
fn a_date_not_written_yyyy_mm_dd_exits_2_naming_the_form() {
    let demo = demo();
    let demo = demo.to_str().unwrap();
    for (command, args) in [
        ("run", vec!["--source-dir", demo, "--as-of", "2026-11-1"]),
        ("report", vec!["--source-dir", demo, "--from", "26-11-01"]),
        ("generate", vec!["--as-of", "2026-1-01"]),
    ] {
        let out = out_dir();
        let output = binary()
            .arg(command)
            .arg("--out")
            .arg(out.path())
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{command}: {}",
            stderr_of(&output)
        );
        assert!(
            stderr_of(&output).contains("is not a date written YYYY-MM-DD"),
            "{}",
            stderr_of(&output)
        );
    }
}

#[test]
fn a_config_date_not_written_yyyy_mm_dd_exits_2_naming_the_key_and_writes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("site.toml");
    let key = "in `ingest.earliest_plausible_date`";
    let form = "is not a date written YYYY-MM-DD (four-digit year, two-digit month and day)";
    for value in ["2026-6-1", "+2026-06-01"] {
        std::fs::write(
            &file,
            format!("[ingest]\nearliest_plausible_date = \"{value}\"\n"),
        )
        .unwrap();
        let (out, output) = run_demo(&["--config", file.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
        // The run's end line, then the error.
        assert_eq!(
            stderr_of(&output).lines().last().unwrap(),
            format!(
                "error: config file {} is not valid: \"{value}\" {form}; {key}",
                file.display()
            )
        );
        assert!(!out.path().exists());
        let out = out_dir();
        let output = binary()
            .args(["run", "--as-of", "2026-11-01", "--source-dir"])
            .arg(demo())
            .arg("--out")
            .arg(out.path())
            .env("TMM_INGEST__EARLIEST_PLAUSIBLE_DATE", value)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
        assert_eq!(
            stderr_of(&output).lines().last().unwrap(),
            format!("error: environment variable TMM_INGEST__EARLIEST_PLAUSIBLE_DATE is not a valid setting: \"{value}\" {form}; {key}")
        );
        assert!(!out.path().exists());
    }
}

#[test]
fn a_server_setting_with_a_folder_exits_2_naming_it_and_writes_nothing() {
    for command in ["run", "explain"] {
        let out = out_dir();
        let mut call = binary();
        call.args([command, "--source-dir"])
            .arg(demo())
            .args(["--as-of", "2026-11-01"])
            .env("TMM_SERVER__BASE_URL", "https://fhir.example.org/R4");
        match command {
            "run" => call.arg("--out").arg(out.path()),
            _ => call.args(["--patient", "demo-01-seed-partial-response"]),
        };
        let output = call.output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{command}: {}",
            stderr_of(&output)
        );
        assert_eq!(
            stderr_of(&output).lines().last(),
            Some("error: server.base_url set (in the config file or a TMM_SERVER__ variable) applies to a server source; --source-dir reads a folder and would ignore it: unset it for folder runs, or read with --server"),
            "{command}"
        );
        assert!(!out.path().exists(), "{command} wrote {:?}", out.path());
    }
}

#[test]
fn options_that_cannot_apply_to_a_folder_exit_2_with_a_sentence_and_write_nothing() {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        "[schedule]\nstate_file = \"/nonexistent/state.json\"\n",
    )
    .unwrap();
    let config = config.path().to_str().unwrap().to_owned();
    for (args, says) in [
        (vec!["--dry-run"], "--dry-run applies to a server source"),
        (
            vec!["--export"],
            "--export and --export-group read a server",
        ),
        (
            vec!["--allow-mass-cancel"],
            "--allow-mass-cancel governs the write-back",
        ),
        (vec!["--full"], "schedule.state_file is not set"),
        (
            vec!["--config", &config],
            "schedule.state_file keeps the watermark",
        ),
    ] {
        let (out, output) = run_demo(&args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr_of(&output)
        );
        let stderr = stderr_of(&output);
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("error: "), "{args:?}: {stderr}");
        assert!(last.contains(says), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("run started"),
            "refused before the run: {stderr}"
        );
        assert!(
            !out.path().exists(),
            "{args:?}: a refused run wrote {:?}",
            out.path()
        );
    }
}

#[test]
fn export_with_a_cohort_exits_2_with_a_sentence_before_asking_the_server_anything() {
    // Nothing listens on port 1: a run that got as far as the server would exit 3.
    let dir = tempfile::tempdir().unwrap();
    let cohort = dir.path().join("cohort.txt");
    std::fs::write(&cohort, "p1\n").unwrap();
    let cohort = cohort.to_str().unwrap();
    let server = ["--server", "http://127.0.0.1:1"];
    for cohort_args in [
        vec!["--patient", "p1"],
        vec!["--cohort", cohort],
        vec!["--group", "tare-review"],
    ] {
        for export in [vec!["--export"], vec!["--export", "--export-group", "all"]] {
            let args: Vec<&str> = [&server[..], &export, &cohort_args].concat();
            let (out, output) = job("run", &args);
            assert_eq!(
                output.status.code(),
                Some(2),
                "{args:?}: {}",
                stderr_of(&output)
            );
            assert_eq!(
                stderr_of(&output).lines().last(),
                Some("error: --export and --export-group read everyone through a Bulk Data $export; a run for --patient, --cohort or --group reads only those patients, by searches (this job does not export a cohort): leave them out, or run without the cohort"),
                "{args:?}"
            );
            assert!(!stderr_of(&output).contains("run started"));
            assert!(!out.path().exists());
        }
    }
}

#[test]
fn a_token_source_the_auth_method_cannot_use_exits_2_naming_the_keys() {
    for (variables, says) in [
        (
            vec![
                ("TMM_SERVER__AUTH__METHOD", "bearer"),
                ("TMM_SERVER__AUTH__TOKEN_ENV", "TMM_FHIR_TOKEN"),
                ("TMM_SERVER__AUTH__TOKEN_FILE", "/run/secrets/fhir-token"),
            ],
            "error: config value server.auth.token_env is not valid: server.auth.token_file is set too: a bearer token comes from one of them; unset the other",
        ),
        (
            vec![("TMM_SERVER__AUTH__TOKEN_FILE", "/run/secrets/fhir-token")],
            "error: config value server.auth.token_file is not valid: set with server.auth.method = \"none\", which sends no token: a token from a variable or a file is sent with method = \"bearer\" only; set that method, or unset it",
        ),
    ] {
        let output = binary()
            .args(["check", "--server", "http://127.0.0.1:1"])
            .envs(variables.iter().copied())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
        assert_eq!(stderr_of(&output), format!("{says}\n"));
        assert!(output.stdout.is_empty(), "no check was tried");
    }
}

#[test]
fn a_tmm_variable_that_sets_no_key_warns_naming_the_nearest_key() {
    let out = out_dir();
    let output = binary()
        .args(["run", "--source-dir", demo().to_str().unwrap()])
        .args(["--as-of", "2026-11-01", "--out"])
        .arg(out.path())
        .env("TMM_SERVER_BASE_URL", "https://fhir.example.org/R4")
        .output()
        .unwrap();
    assert_success(&output);
    let stderr = stderr_of(&output);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("environment variable"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].ends_with(
        "environment variable TMM_SERVER_BASE_URL sets no configuration key and is ignored; did you mean TMM_SERVER__BASE_URL?"
    ), "{stderr}");
    assert!(
        !stderr.contains("fhir.example.org"),
        "the value is not logged: {stderr}"
    );
}

#[test]
fn a_folder_with_no_accepted_observation_exits_8_unless_allow_empty() {
    // Every PIVKA-II coded under a system the job does not know: read, and all left out.
    let patient =
        serde_json::json!({"resourceType": "Patient", "id": "p1", "birthDate": "1950-01-01"});
    let observation = |n: usize| {
        serde_json::json!({"resourceType": "Observation", "id": format!("o{n}"), "status": "final",
            "code": {"coding": [{"system": "http://lab.example/codes", "code": "PIVKA"}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2026-06-01",
            "valueQuantity": {"value": 100.0, "unit": "mAU/mL"}})
    };
    let folder =
        crate::helpers::write_folder(&[patient, observation(1), observation(2), observation(3)]);
    let out = out_dir();
    let output = run_folder(folder.path(), out.path());
    assert_eq!(output.status.code(), Some(8), "{}", stderr_of(&output));
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("read, but nothing usable: no Observation accepted (3 read, 3 of codes the configuration does not list, 0 left out)"),
        "{stderr}"
    );
    assert!(!out.path().exists(), "nothing is published");

    let output = binary()
        .args(["run", "--allow-empty", "--source-dir"])
        .arg(folder.path())
        .args(["--as-of", "2026-11-01", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert_success(&output);
    assert_eq!(summary_of(out.path())["patients"]["evaluated"], 0);
}

#[test]
fn a_folder_with_no_patient_at_all_exits_8() {
    let observation = serde_json::json!({"resourceType": "Observation", "id": "o1", "status": "final",
        "code": {"coding": [{"system": "http://lab.example/codes", "code": "PIVKA"}]},
        "effectiveDateTime": "2026-06-01", "valueQuantity": {"value": 100.0, "unit": "mAU/mL"}});
    let folder = crate::helpers::write_folder(&[observation]);
    let out = out_dir();
    let output = run_folder(folder.path(), out.path());
    assert_eq!(output.status.code(), Some(8), "{}", stderr_of(&output));
    assert!(
        stderr_of(&output).contains("read, but nothing usable: no patient at all"),
        "{}",
        stderr_of(&output)
    );
}

#[tokio::test]
async fn a_server_refusing_the_credentials_exits_2_with_401_and_403() {
    use wiremock::{matchers::any, Mock, MockServer, ResponseTemplate};
    for status in [401, 403] {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(status))
            .mount(&server)
            .await;
        let base = server.uri();
        let output = tokio::task::spawn_blocking(move || {
            let out = out_dir();
            binary()
                .args(["run", "--server", &base, "--as-of", "2026-11-01", "--out"])
                .arg(out.path())
                .env("TMM_SERVER__MAX_RETRY_SECS", "1")
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "HTTP {status}: {}",
            stderr_of(&output)
        );
        assert!(
            stderr_of(&output).contains(&format!("HTTP {status}")),
            "{}",
            stderr_of(&output)
        );
    }
}

#[test]
fn a_json_log_ends_a_failed_run_with_the_error_as_json() {
    let out = out_dir();
    let output = binary()
        .args([
            "--log-format",
            "json",
            "run",
            "--source-dir",
            "/nonexistent/tmm-folder",
        ])
        .args(["--as-of", "2026-11-01", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let stderr = stderr_of(&output);
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let last = lines.last().unwrap();
    assert_eq!(last["level"], "ERROR");
    assert_eq!(last["fields"]["exit_code"], 3);
    assert!(last["fields"]["message"]
        .as_str()
        .unwrap()
        .starts_with("cannot read source folder /nonexistent/tmm-folder"));
    let ended = &lines[lines.len() - 2]["fields"];
    assert_eq!(ended["message"], "run ended");
    assert_eq!(ended["exit_code"], 3);
}

#[test]
fn quiet_leaves_out_the_info_lines_and_tmm_log_overrides_it() {
    let (_out, output) = run_demo(&["-q"]);
    assert_success(&output);
    let stderr = stderr_of(&output);
    assert!(!stderr.contains(" INFO "), "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.contains(" WARN ")).count(),
        1,
        "{stderr}"
    );

    let out = out_dir();
    let output = binary()
        .args(["-q", "run", "--source-dir", demo().to_str().unwrap()])
        .args(["--as-of", "2026-11-01", "--out"])
        .arg(out.path())
        .env("TMM_LOG", "error")
        .output()
        .unwrap();
    assert_success(&output);
    assert_eq!(stderr_of(&output), "");
}

/// The samples of a Prometheus text file by name and labels, checking each family has its
/// HELP and TYPE lines before its samples.
fn prometheus_samples(text: &str) -> std::collections::BTreeMap<String, f64> {
    let mut declared = BTreeSet::new();
    let mut samples = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert_eq!(kind, "gauge", "{line}");
            declared.insert(name.to_owned());
        } else if !line.starts_with("# HELP ") {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
            let name = series.split('{').next().unwrap();
            assert!(
                declared.contains(name),
                "{name} sampled before its TYPE line"
            );
            let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
            samples.insert(series.to_owned(), value);
        }
    }
    samples
}

/// `promtool check metrics` (Debian's `prometheus`) on a file: CI installs it and sets CI=1,
/// where its absence fails the test.
fn promtool_accepts(path: &Path) {
    let Ok(promtool) = which_promtool() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("1"),
            "promtool is not installed (apt-get install prometheus); CI needs it"
        );
        eprintln!("promtool not installed: metrics.prom not checked by it");
        return;
    };
    let output = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(path).unwrap())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&output.stdout),
        stderr_of(&output)
    );
}

fn which_promtool() -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("promtool"))
        .find(|candidate| candidate.is_file())
        .ok_or(())
}

#[test]
fn a_run_writes_metrics_prom_with_its_figures_in_its_set() {
    let (out, output) = run_demo(&[]);
    assert_success(&output);
    let path = out.path().join("metrics.prom");
    let samples = prometheus_samples(&read(out.path(), "metrics.prom"));
    let m = |series: &str| {
        samples
            .get(&format!("tare_marker_monitor_{series}"))
            .copied()
    };
    assert_eq!(m("patients{outcome=\"evaluated\"}"), Some(51.0));
    assert_eq!(m("patients{outcome=\"no_hcc_condition\"}"), Some(3.0));
    assert_eq!(m("observations{reason=\"accepted\"}"), Some(984.0));
    assert_eq!(m("observations{reason=\"duplicate\"}"), Some(1.0));
    assert_eq!(m("flags{severity=\"high\"}"), Some(14.0));
    assert_eq!(m("flags{severity=\"moderate\"}"), Some(21.0));
    assert_eq!(m("flags{severity=\"low\"}"), Some(57.0));
    assert_eq!(m("exit_code"), Some(0.0));
    for step in ["total", "read", "evaluate", "write"] {
        assert!(
            m(&format!("run_duration_seconds{{step=\"{step}\"}}")).is_some(),
            "{step}"
        );
    }
    assert_eq!(
        m("last_success_timestamp_seconds"),
        m("last_run_timestamp_seconds")
    );
    let listed = summary_of(out.path())["files"].to_string();
    assert!(listed.contains("metrics.prom"), "{listed}");
    promtool_accepts(&path);
}

#[test]
fn the_textfile_copy_of_a_failed_run_keeps_the_last_success_time() {
    let work = tempfile::tempdir().unwrap();
    let textfile = work.path().join("tmm.prom");
    let run = |source: &Path| {
        let out = out_dir();
        let output = binary()
            .args(["run", "--source-dir"])
            .arg(source)
            .args(["--as-of", "2026-11-01", "--out"])
            .arg(out.path())
            .env("TMM_METRICS__TEXTFILE_PATH", &textfile)
            .output()
            .unwrap();
        (
            output.status.code(),
            prometheus_samples(&std::fs::read_to_string(&textfile).unwrap()),
        )
    };
    let (code, succeeded) = run(&demo());
    assert_eq!(code, Some(0));
    let success = succeeded["tare_marker_monitor_last_success_timestamp_seconds"];
    let (code, failed) = run(Path::new("/nonexistent/tmm-folder"));
    assert_eq!(code, Some(3));
    assert_eq!(failed["tare_marker_monitor_exit_code"], 3.0);
    assert_eq!(
        failed["tare_marker_monitor_last_success_timestamp_seconds"],
        success
    );
    assert!(failed["tare_marker_monitor_last_run_timestamp_seconds"] > success);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&textfile).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "node_exporter must be able to read it");
    promtool_accepts(&textfile);
}

#[test]
fn the_end_line_the_summary_and_the_metrics_give_the_same_durations() {
    let out = out_dir();
    let output = binary()
        .args(["--log-format", "json", "run", "--source-dir"])
        .arg(demo())
        .args(["--as-of", "2026-11-01", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert_success(&output);
    let ended: Value = stderr_of(&output)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|l| l["fields"]["message"] == "run ended")
        .expect("an end line");
    let timings = &summary_of(out.path())["timings"];
    let samples = prometheus_samples(&read(out.path(), "metrics.prom"));
    for (field, ms, step) in [
        ("duration_secs", "total_ms", "total"),
        ("read_secs", "read_ms", "read"),
        ("evaluate_secs", "evaluate_ms", "evaluate"),
        ("write_secs", "write_ms", "write"),
    ] {
        let summary_secs = timings[ms].as_u64().unwrap() as f64 / 1000.0;
        assert_eq!(
            ended["fields"][field].as_f64(),
            Some(summary_secs),
            "{field}"
        );
        assert_eq!(
            samples[&format!("tare_marker_monitor_run_duration_seconds{{step=\"{step}\"}}")],
            summary_secs,
            "{step}"
        );
    }
}

#[test]
fn shards_label_their_metrics_and_keep_their_own_textfile_and_merge_writes_its_own() {
    let shared = out_dir();
    let work = tempfile::tempdir().unwrap();
    let textfile = work.path().join("tmm.prom");
    let variable = textfile.display().to_string();
    let env = [("TMM_METRICS__TEXTFILE_PATH", variable.as_str())];
    run_shard(shared.path(), "0/2", "2026-11-01", &env);
    run_shard(shared.path(), "1/2", "2026-11-01", &env);
    assert!(!textfile.exists(), "no shard writes the unsharded name");
    let mut evaluated = 0.0;
    for shard in ["0/2", "1/2"] {
        let path = work
            .path()
            .join(format!("tmm.shard-{}.prom", shard.replace('/', "-of-")));
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                line.contains(&format!("{{shard=\"{shard}\"")),
                "{line} has no shard label"
            );
        }
        let samples = prometheus_samples(&text);
        assert_eq!(
            samples[&format!("tare_marker_monitor_exit_code{{shard=\"{shard}\"}}")],
            0.0
        );
        evaluated += samples
            [&format!("tare_marker_monitor_patients{{shard=\"{shard}\",outcome=\"evaluated\"}}")];
        promtool_accepts(&path);
    }
    assert_eq!(
        evaluated, 51.0,
        "the shards evaluate the demo's 51 patients"
    );
    let merged = out_dir();
    let output = binary()
        .args(["-q", "merge"])
        .arg(shared.path())
        .arg("--out")
        .arg(merged.path())
        .envs(env)
        .output()
        .unwrap();
    assert_success(&output);
    for path in [textfile.clone(), merged.path().join("metrics.prom")] {
        let samples = prometheus_samples(&std::fs::read_to_string(&path).unwrap());
        assert_eq!(
            samples["tare_marker_monitor_patients{outcome=\"evaluated\"}"],
            51.0,
            "{}",
            path.display()
        );
        assert_eq!(samples["tare_marker_monitor_exit_code"], 0.0);
        assert_eq!(
            samples["tare_marker_monitor_last_success_timestamp_seconds"],
            samples["tare_marker_monitor_last_run_timestamp_seconds"]
        );
        promtool_accepts(&path);
    }
    let listed = summary_of(merged.path())["files"].to_string();
    assert!(listed.contains("metrics.prom"), "{listed}");
}

/// Runs shard `shard` of the demo as of `as_of` into `shared`, with `env` set.
fn run_shard(shared: &Path, shard: &str, as_of: &str, env: &[(&str, &str)]) {
    let output = binary()
        .args(["run", "-q", "--source-dir"])
        .arg(demo())
        .args(["--as-of", as_of, "--shard", shard, "--out"])
        .arg(shared)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert_success(&output);
}

fn merge_of(parts: &Path) -> (OutDir, std::process::Output) {
    let merged = out_dir();
    let output = binary()
        .args(["-q", "merge"])
        .arg(parts)
        .arg("--out")
        .arg(merged.path())
        .output()
        .unwrap();
    (merged, output)
}

#[test]
fn merge_refuses_shards_of_different_as_of_dates_naming_the_field_and_the_parts() {
    let shared = out_dir();
    run_shard(shared.path(), "0/2", "2026-11-01", &[]);
    run_shard(shared.path(), "1/2", "2026-10-01", &[]);
    let (merged, output) = merge_of(shared.path());
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
    let summary = |i: u32| {
        shared
            .path()
            .join(format!("shard-{i}-of-2/run-summary.shard-{i}-of-2.json"))
            .display()
            .to_string()
    };
    assert_eq!(
        stderr_of(&output),
        format!(
            "error: the parts come from different runs: their as-of date differs: 2026-11-01 in {}, 2026-10-01 in {}\n",
            summary(0),
            summary(1)
        )
    );
    assert!(!merged.path().exists());
}

#[test]
fn merge_refuses_shards_run_with_different_configurations() {
    let shared = out_dir();
    run_shard(shared.path(), "0/2", "2026-11-01", &[]);
    run_shard(
        shared.path(),
        "1/2",
        "2026-11-01",
        &[("TMM_MARKERS__PIVKA2__ULN", "35")],
    );
    let (_, output) = merge_of(shared.path());
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
    assert!(
        stderr_of(&output)
            .starts_with("error: the parts come from different runs: their configuration (config_sha256) differs: "),
        "{}",
        stderr_of(&output)
    );
}

#[test]
fn merge_refuses_one_shard_twice_under_two_names() {
    let shared = out_dir();
    run_shard(shared.path(), "0/2", "2026-11-01", &[]);
    // Shard 0's set copied in as shard 1.
    let plain = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(shared.path().join("shard-0-of-2"))
        .unwrap()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        std::fs::copy(entry.path(), plain.path().join(&name)).unwrap();
        std::fs::copy(
            entry.path(),
            plain
                .path()
                .join(name.replace("shard-0-of-2", "shard-1-of-2")),
        )
        .unwrap();
    }
    let (_, output) = merge_of(plain.path());
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
    assert_eq!(
        stderr_of(&output),
        format!(
            "error: {} holds shard 0/2, not 1/2 as its name says: shard 0/2 is there twice and 1/2 missing\n",
            plain.path().join("run-summary.shard-1-of-2.json").display()
        )
    );
}

/// What `generate` draws on a terminal (`script` gives it one), in `log_format`.
fn generate_on_a_terminal(log_format: &str) -> Option<String> {
    let out = out_dir();
    let command = format!(
        "{} --log-format {log_format} generate --patients 2000 --out {}",
        assert_cmd::cargo::cargo_bin("tare-marker-monitor").display(),
        out.path().display()
    );
    let output = std::process::Command::new("script")
        .args(["-qc", &command, "/dev/null"])
        .output()
        .ok()?;
    assert_success(&output);
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn generate_shows_progress_on_a_terminal_and_none_in_a_json_log() {
    let Some(text) = generate_on_a_terminal("text") else {
        eprintln!("no `script` (util-linux): progress on a terminal not checked");
        return;
    };
    assert!(text.contains("writing ["), "{text}");
    let json = generate_on_a_terminal("json").unwrap();
    assert!(!json.contains("writing ["), "{json}");
}

#[test]
fn merge_takes_one_folder_however_the_shards_spelled_it_and_refuses_another() {
    let shared = out_dir();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (shard, spelling) in [("0/2", "fixtures/demo/"), ("1/2", "./fixtures//demo")] {
        let output = binary()
            .current_dir(root)
            .args(["run", "-q", "--source-dir", spelling])
            .args(["--as-of", "2026-11-01", "--shard", shard, "--out"])
            .arg(shared.path())
            .output()
            .unwrap();
        assert_success(&output);
    }
    let (_, output) = merge_of(shared.path());
    assert_success(&output);
    // A copy of the folder elsewhere is another source.
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(demo()).unwrap().flatten() {
        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
    }
    let other = out_dir();
    run_shard(other.path(), "0/2", "2026-11-01", &[]);
    let output = binary()
        .args(["run", "-q", "--source-dir"])
        .arg(copy.path())
        .args(["--as-of", "2026-11-01", "--shard", "1/2", "--out"])
        .arg(other.path())
        .output()
        .unwrap();
    assert_success(&output);
    let (_, output) = merge_of(other.path());
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
    assert!(
        stderr_of(&output)
            .starts_with("error: the parts come from different runs: their source differs: "),
        "{}",
        stderr_of(&output)
    );
}

/// What `run` over `folder` draws on a terminal (`script` gives it one), in `log_format`.
fn run_on_a_terminal(folder: &Path, log_format: &str) -> Option<String> {
    let out = out_dir();
    let command = format!(
        "{} --log-format {log_format} run -q --source-dir {} --as-of 2026-11-01 --out {}",
        assert_cmd::cargo::cargo_bin("tare-marker-monitor").display(),
        folder.display(),
        out.path().display()
    );
    let output = std::process::Command::new("script")
        .args(["-qc", &command, "/dev/null"])
        .output()
        .ok()?;
    assert_success(&output);
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn a_folder_read_and_its_writing_show_progress_in_bytes_on_a_terminal_only() {
    let folder = tempfile::tempdir().unwrap();
    binary()
        .args(["generate", "--patients", "1000", "--gzip", "--out"])
        .arg(folder.path())
        .assert()
        .success();
    // The bar's total: the files' sizes on disk, compressed.
    let total: u64 = std::fs::read_dir(folder.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ndjson.gz"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    let Some(text) = run_on_a_terminal(folder.path(), "text") else {
        eprintln!("no `script` (util-linux): progress on a terminal not checked");
        return;
    };
    let of_total = format!("/{}, ", indicatif::HumanBytes(total));
    assert!(
        text.lines()
            .any(|l| l.contains("reading [") && l.contains(&of_total)),
        "no reading bar of {of_total}: {text}"
    );
    assert!(
        text.contains("writing ") && text.contains(" written, "),
        "{text}"
    );
    let json = run_on_a_terminal(folder.path(), "json").unwrap();
    assert!(!json.contains("reading ["), "{json}");
    assert!(!json.contains(" written, "), "{json}");
    // Not a terminal: nothing of it.
    let out = out_dir();
    let output = binary()
        .args(["run", "-q", "--source-dir"])
        .arg(folder.path())
        .args(["--as-of", "2026-11-01", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert_success(&output);
    assert_eq!(stderr_of(&output), "");
}

#[test]
fn report_shows_the_bytes_it_writes_on_a_terminal() {
    let folder = tempfile::tempdir().unwrap();
    binary()
        .args(["generate", "--patients", "1000", "--out"])
        .arg(folder.path())
        .assert()
        .success();
    let out = out_dir();
    let command = format!(
        "{} report -q --source-dir {} --as-of 2026-11-01 --out {}",
        assert_cmd::cargo::cargo_bin("tare-marker-monitor").display(),
        folder.path().display(),
        out.path().display()
    );
    let Ok(output) = std::process::Command::new("script")
        .args(["-qc", &command, "/dev/null"])
        .output()
    else {
        eprintln!("no `script` (util-linux): progress on a terminal not checked");
        return;
    };
    assert_success(&output);
    let text = String::from_utf8_lossy(&output.stdout);
    // Counted as written: more than the first mebibyte of report.html.
    assert!(
        text.lines()
            .any(|l| l.contains("writing ") && l.contains(" MiB written")),
        "{text}"
    );
}

#[test]
fn merge_refuses_the_same_shard_given_in_two_parts_with_exit_2() {
    let shared = out_dir();
    run_shard(shared.path(), "0/2", "2026-11-01", &[]);
    run_shard(shared.path(), "1/2", "2026-11-01", &[]);
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(shared.path().join("shard-0-of-2"))
        .unwrap()
        .flatten()
    {
        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
    }
    let merged = out_dir();
    let output = binary()
        .args(["-q", "merge"])
        .arg(shared.path())
        .arg(copy.path())
        .arg("--out")
        .arg(merged.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
    assert!(
        stderr_of(&output).contains("is there twice"),
        "{}",
        stderr_of(&output)
    );
}

/// The `reference` of every DetectedIssue a run on the demo writes, with `env` set.
fn issue_references(env: &[(&str, &str)]) -> Vec<Value> {
    let out = out_dir();
    let mut command = binary();
    command
        .args(["run", "--source-dir"])
        .arg(demo())
        .args(["--as-of", "2026-11-01", "--out"])
        .arg(out.path());
    for (key, value) in env {
        command.env(key, value);
    }
    assert_success(&command.output().unwrap());
    let issues: Vec<Value> = read(out.path(), "detected-issues.ndjson")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["resourceType"] == "DetectedIssue")
        .map(|r| r["reference"].clone())
        .collect();
    assert!(!issues.is_empty());
    issues
}

#[test]
fn a_detected_issue_names_the_rules_only_at_the_url_the_site_set() {
    // Unset (the default): no reference at all, never a placeholder.
    assert!(issue_references(&[]).iter().all(Value::is_null));
    let url = "https://intranet.hospital.test/tare/rules.html";
    assert!(issue_references(&[("TMM_OUTPUT__RULES_URL", url)])
        .iter()
        .all(|r| r == url));
}

#[test]
fn more_worker_threads_than_256_are_refused_with_exit_2_before_any_thread_starts() {
    let (out, output) = crate::helpers::job(
        "run",
        &[
            "--source-dir",
            crate::helpers::demo().to_str().unwrap(),
            "--threads",
            "100000",
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(
            "config value ingest.threads is not valid: 100000 is more than 256 worker threads"
        ),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!out.path().join("markers.csv").exists());
}

#[test]
fn an_empty_tmm_log_is_the_default_level_and_off_still_prints_the_final_error() {
    let run = |level: &str| {
        let out = crate::helpers::out_dir();
        crate::helpers::binary()
            .args(["--log-format", "json", "run", "--as-of", "2026-11-01"])
            .args(["--source-dir", "/nonexistent-tmm-folder", "--out"])
            .arg(out.path())
            .env("TMM_LOG", level)
            .output()
            .unwrap()
    };
    let lines = |output: &std::process::Output| -> Vec<serde_json::Value> {
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    };
    let empty = run("");
    assert_eq!(empty.status.code(), Some(3));
    let empty = lines(&empty);
    assert_eq!(empty[0]["fields"]["message"], "run started");
    assert_eq!(empty.last().unwrap()["level"], "ERROR");
    let off = run("off");
    assert_eq!(off.status.code(), Some(3));
    let off = lines(&off);
    assert_eq!(off.len(), 1, "{off:?}");
    assert_eq!(
        off[0]["fields"]["message"],
        "cannot read source folder /nonexistent-tmm-folder: No such file or directory (os error 2)"
    );
    assert_eq!(off[0]["fields"]["exit_code"], 3);
}

#[test]
fn a_password_in_the_server_url_is_refused_and_never_printed() {
    let out = out_dir();
    let output = binary()
        .args([
            "-q",
            "run",
            "--server",
            "https://user:s3cretpw@fhir.example.org/r4",
            "--as-of",
            "2026-11-01",
            "--out",
        ])
        .arg(out.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert_eq!(
        stderr,
        "error: https://fhir.example.org/r4: a user name or password in the URL is not used: credentials belong in [server.auth] (a token file, a variable or SMART keys), never in a URL\n"
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains("s3cret"));
    assert!(!out.path().exists());
}

#[test]
fn a_run_refused_for_its_configuration_or_command_line_writes_exit_code_2_to_the_textfile() {
    for (variable, value, extra) in [
        ("TMM_INGEST__THREADS", "abc", "2026-11-01"),
        ("TMM_LOG", "error", "2026-1-1"),
    ] {
        let work = tempfile::tempdir().unwrap();
        let textfile = work.path().join("tmm.prom");
        let output = binary()
            .env("TMM_METRICS__TEXTFILE_PATH", &textfile)
            .env(variable, value)
            .args([
                "run",
                "--source-dir",
                demo().to_str().unwrap(),
                "--as-of",
                extra,
            ])
            .arg("--out")
            .arg(work.path().join("out"))
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{variable}");
        let text = std::fs::read_to_string(&textfile).unwrap();
        assert!(
            text.lines()
                .any(|line| line == "tare_marker_monitor_exit_code 2"),
            "{variable}: {text}"
        );
    }
}

// ---- stdout closed or full ----

/// Where a command's stdout goes in `stdout_refusing_every_write`.
#[derive(Clone, Copy, Debug)]
enum DeadStdout {
    /// A pipe whose reader is gone before the command writes (`| head -0`): EPIPE.
    Closed,
    /// `>/dev/full`: ENOSPC.
    Full,
}

/// The binary with `args`, its stdout refusing every write.
fn stdout_refusing_every_write(args: &[&str], stdout: DeadStdout) -> std::process::Output {
    use std::process::{Command, Stdio};
    let mut command = Command::new(assert_cmd::cargo::cargo_bin("tare-marker-monitor"));
    command.args(args).stderr(Stdio::piped());
    match stdout {
        DeadStdout::Closed => command.stdout(Stdio::piped()),
        DeadStdout::Full => command.stdout(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        ),
    };
    let mut child = command.spawn().unwrap();
    // The reading end closed at once: the command has not written yet (it reads the demo
    // first), so each of its writes meets a pipe without a reader.
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn a_closed_or_full_stdout_is_ignored_and_the_exit_code_stays_the_commands_own() {
    let demo = demo();
    let demo = demo.to_str().unwrap();
    for dead in [DeadStdout::Closed, DeadStdout::Full] {
        let out = out_dir();
        let place = out.path().to_str().unwrap();
        let generated = out_dir();
        let cohort = generated.path().to_str().unwrap();
        let report = out_dir();
        let report = report.path().to_str().unwrap();
        let shared = out_dir();
        let shared = shared.path().to_str().unwrap();
        let merged = out_dir();
        let merged = merged.path().to_str().unwrap();
        let as_of = ["--as-of", "2026-11-01"];
        for (args, code) in [
            (vec!["run", "--source-dir", demo, "--out", place], 0),
            (
                vec![
                    "run",
                    "--source-dir",
                    demo,
                    "--shard",
                    "0/1",
                    "--out",
                    shared,
                ],
                0,
            ),
            (vec!["merge", shared, "--out", merged], 0),
            (vec!["report", "--source-dir", demo, "--out", report], 0),
            (
                vec![
                    "explain",
                    "--source-dir",
                    demo,
                    "--patient",
                    "demo-01-seed-partial-response",
                ],
                0,
            ),
            (vec!["generate", "--patients", "2", "--out", cohort], 0),
            // A check that failed still exits 3, its lines unread.
            (vec!["check", "--server", "http://127.0.0.1:1"], 3),
        ] {
            let mut args = args.clone();
            if !matches!(args[0], "merge" | "generate" | "check") {
                args.extend(as_of);
            }
            let output = stdout_refusing_every_write(&args, dead);
            assert_eq!(
                output.status.code(),
                Some(code),
                "{dead:?} {args:?}: {}",
                stderr_of(&output)
            );
            assert!(
                !stderr_of(&output).contains("panicked"),
                "{dead:?} {args:?}: {}",
                stderr_of(&output)
            );
        }
        // The outputs were published all the same.
        assert!(out.path().join("markers.csv").is_file(), "{dead:?}");
        assert!(Path::new(merged).join("markers.csv").is_file(), "{dead:?}");
        assert!(Path::new(report).join("report.html").is_file(), "{dead:?}");
        assert!(
            Path::new(cohort).join("Patient.ndjson").is_file(),
            "{dead:?}"
        );
    }
}

// ---- merge: an --out among the parts, one shard run there twice ----

/// The run folder `link` (a published set) shows.
fn shown_by(link: &Path) -> std::path::PathBuf {
    std::fs::canonicalize(link).unwrap()
}

#[test]
fn merge_refuses_an_out_that_is_one_of_its_parts_with_exit_2_and_leaves_it_as_it_was() {
    let shared = out_dir();
    run_shard(shared.path(), "0/2", "2026-11-01", &[]);
    run_shard(shared.path(), "1/2", "2026-11-01", &[]);
    let set = shared.path().join("shard-0-of-2");
    let before = shown_by(&set);
    let other = shared.path().join("shard-1-of-2");
    // A link of the site's own to shard 0's set, and the same set spelled another way.
    let work = tempfile::tempdir().unwrap();
    let link = work.path().join("latest");
    std::os::unix::fs::symlink(&set, &link).unwrap();
    let spelled = shared.path().join(".").join("shard-0-of-2");
    for (parts, out, part) in [
        (vec![shared.path()], set.clone(), set.clone()),
        (vec![shared.path()], spelled.clone(), set.clone()),
        (vec![shared.path()], link.clone(), set.clone()),
        (vec![shared.path()], before.clone(), set.clone()),
        (
            vec![shared.path()],
            shared.path().to_owned(),
            shared.path().to_owned(),
        ),
        (
            vec![set.as_path(), other.as_path()],
            other.clone(),
            other.clone(),
        ),
    ] {
        let output = binary()
            .args(["-q", "merge"])
            .args(&parts)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{}: {}",
            out.display(),
            stderr_of(&output)
        );
        assert_eq!(
            stderr_of(&output),
            format!(
                "error: --out {} resolves to {}, one of the parts being merged: publishing there would replace it; give --out a place of its own (not a folder given, nor a shard-I-of-N set in one, nor a link to either)\n",
                out.display(),
                part.display()
            )
        );
    }
    // Shard 0's set is shown as before, and nothing was published beside the parts.
    assert_eq!(shown_by(&set), before);
    assert!(std::fs::read_link(&set).is_ok());
    let mut names: Vec<String> = std::fs::read_dir(shared.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ".shard-0-of-2.runs",
            ".shard-1-of-2.runs",
            "shard-0-of-2",
            "shard-1-of-2"
        ]
    );
    let (_, output) = merge_of(shared.path());
    assert_success(&output);
}

#[test]
fn merge_refuses_two_parts_carrying_one_run_id_naming_both_with_exit_2() {
    let shared = out_dir();
    run_shard(shared.path(), "0/2", "2026-11-01", &[]);
    // Shard 0's part copied in as shard 1, every trace of its name edited: file names, the
    // summary's `shard` and the files it lists. Only its run id is left.
    let plain = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(shared.path().join("shard-0-of-2"))
        .unwrap()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(entry.path()).unwrap();
        std::fs::write(plain.path().join(&name), &text).unwrap();
        let copy = match name.starts_with("run-summary.") {
            true => text
                .replace("shard-0-of-2", "shard-1-of-2")
                .replace("\"0/2\"", "\"1/2\""),
            false => text,
        };
        std::fs::write(
            plain
                .path()
                .join(name.replace("shard-0-of-2", "shard-1-of-2")),
            copy,
        )
        .unwrap();
    }
    let first = plain.path().join("run-summary.shard-0-of-2.json");
    let second = plain.path().join("run-summary.shard-1-of-2.json");
    let run_id = summary_of_part(&first)["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(summary_of_part(&second)["run_id"], run_id.as_str());
    assert_eq!(summary_of_part(&second)["identity"]["shard"], "1/2");
    let (merged, output) = merge_of(plain.path());
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
    assert_eq!(
        stderr_of(&output),
        format!(
            "error: {} and {} carry the same run_id {run_id}: they are one shard run, there twice (a copy under another shard's name); merge each shard's own part once\n",
            first.display(),
            second.display()
        )
    );
    assert!(!merged.path().exists());
}

fn summary_of_part(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

// ---- merge and report: start and end lines ----

/// The JSON log lines on stderr, parsed.
fn json_lines(output: &std::process::Output) -> Vec<Value> {
    stderr_of(output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// The fields of the one INFO line whose message is `message`.
fn info_line(lines: &[Value], message: &str) -> Value {
    let found: Vec<&Value> = lines
        .iter()
        .filter(|l| l["level"] == "INFO" && l["fields"]["message"] == message)
        .collect();
    assert_eq!(found.len(), 1, "{message}: {lines:?}");
    found[0]["fields"].clone()
}

#[test]
fn merge_and_report_log_a_start_and_an_end_line_with_their_figures_as_numbers() {
    let shared = out_dir();
    run_shard(shared.path(), "0/2", "2026-11-01", &[]);
    run_shard(shared.path(), "1/2", "2026-11-01", &[]);
    let merged = out_dir();
    let output = binary()
        .args(["--log-format", "json", "merge"])
        .arg(shared.path())
        .arg("--out")
        .arg(merged.path())
        .output()
        .unwrap();
    assert_success(&output);
    let lines = json_lines(&output);
    assert_eq!(lines[0]["fields"]["message"], "merge started", "{lines:?}");
    let started = info_line(&lines, "merge started");
    assert_eq!(started["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(started["command"], "merge");
    assert_eq!(started["parts"], 1);
    assert_eq!(started["run_id"], summary_of(merged.path())["run_id"]);
    assert_eq!(lines.last().unwrap()["fields"]["message"], "merge ended");
    let mut ended = info_line(&lines, "merge ended");
    assert!(ended["duration_secs"].as_f64().unwrap() > 0.0, "{ended}");
    ended.as_object_mut().unwrap().remove("duration_secs");
    // The demo's figures, as one unsharded run counts them (its end line above).
    assert_eq!(
        ended,
        serde_json::json!({
            "message": "merge ended", "exit_code": 0, "shards": 2, "marker_rows": 89,
            "flag_rows": 92, "detected_issues": 35, "patients_evaluated": 51,
            "patients_flagged": 43, "patients_left_out": 7, "observations_accepted": 984,
            "observations_left_out": 15, "flags_high": 14, "flags_moderate": 21, "flags_low": 57
        })
    );
    // A merge that failed ends with its exit code and duration.
    let incomplete = out_dir();
    run_shard(incomplete.path(), "0/2", "2026-11-01", &[]);
    let nowhere = out_dir();
    let output = binary()
        .args(["--log-format", "json", "merge"])
        .arg(incomplete.path())
        .arg("--out")
        .arg(nowhere.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let lines = json_lines(&output);
    info_line(&lines, "merge started");
    let ended = info_line(&lines, "merge ended");
    assert_eq!(ended["exit_code"], 1);
    assert!(ended["duration_secs"].is_f64(), "{ended}");
    assert_eq!(ended.as_object().unwrap().len(), 3, "{ended}");

    let report = out_dir();
    let output = binary()
        .args(["--log-format", "json", "report", "--source-dir"])
        .arg(demo())
        .args(["--as-of", "2026-11-01", "--out"])
        .arg(report.path())
        .output()
        .unwrap();
    assert_success(&output);
    let lines = json_lines(&output);
    assert_eq!(lines[0]["fields"]["message"], "report started", "{lines:?}");
    let started = info_line(&lines, "report started");
    let manifest: Value =
        serde_json::from_str(&read(report.path(), "report-manifest.json")).unwrap();
    assert_eq!(started["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(started["command"], "report");
    assert_eq!(started["source_kind"], "folder");
    assert_eq!(started["as_of"], "2026-11-01");
    assert_eq!(started["deidentified"], false);
    assert_eq!(started["run_id"], manifest["run_id"]);
    assert_eq!(lines.last().unwrap()["fields"]["message"], "report ended");
    let mut ended = info_line(&lines, "report ended");
    assert!(ended["duration_secs"].as_f64().unwrap() > 0.0, "{ended}");
    ended.as_object_mut().unwrap().remove("duration_secs");
    assert_eq!(
        ended,
        serde_json::json!({
            "message": "report ended", "exit_code": 0, "patients_evaluated": 51,
            "patients_flagged": 43, "flags_high": 14, "flags_moderate": 21, "flags_low": 57,
            "trail_entries": 0, "files_written": 10
        })
    );
    // In text, at the default level: the same two lines.
    let output = binary()
        .args(["report", "--source-dir"])
        .arg(demo())
        .args(["--as-of", "2026-11-01", "--out"])
        .arg(report.path())
        .output()
        .unwrap();
    assert_success(&output);
    let info: Vec<String> = stderr_of(&output)
        .lines()
        .filter(|l| l.contains(" INFO "))
        .map(|l| l.split_once(" INFO ").unwrap().1.to_owned())
        .collect();
    assert_eq!(info.len(), 2, "{info:?}");
    assert!(
        info[0].starts_with(&format!(
            "tare_marker_monitor::commands::report: report started version=\"{}\" command=\"report\" source_kind=\"folder\" as_of=2026-11-01 deidentified=false run_id=",
            env!("CARGO_PKG_VERSION")
        )),
        "{info:?}"
    );
    assert!(
        info[1].starts_with(
            "tare_marker_monitor::commands::report: report ended exit_code=0 duration_secs="
        ),
        "{info:?}"
    );
    assert!(
        info[1].ends_with(" patients_evaluated=51 patients_flagged=43 flags_high=14 flags_moderate=21 flags_low=57 trail_entries=0 files_written=10"),
        "{info:?}"
    );
}
