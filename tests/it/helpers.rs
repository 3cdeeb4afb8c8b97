//! Helpers of the integration tests, in one place: the binary and the demo folder, hand-built
//! patient timelines for the rule tests (dates are days relative to the TARE), generated
//! cohorts and runs for the server tests (the servers themselves are in `servers`).

use assert_cmd::Command;
use chrono::{Duration, NaiveDate};
use serde_json::Value;
use std::path::{Path, PathBuf};
use tare_marker_monitor::config::Config;
use tare_marker_monitor::domain::{
    Censoring, EpisodeFindings, Flag, FlagCode, Marker, MarkerCourse, MarkerValue, PatientFindings,
    PatientTimeline, TareProcedure,
};
use tare_marker_monitor::evaluate::evaluate_patient;

// ---- the binary and the demo folder ----

pub fn binary() -> Command {
    Command::cargo_bin("tare-marker-monitor").unwrap()
}

/// The bundled demo cohort.
pub fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo")
}

pub fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A new place for a command's outputs: `out` in a temporary folder, so that the published
/// link and its store of run folders beside it (`.out.runs`) go with the temporary folder.
pub struct OutDir {
    _work: tempfile::TempDir,
    path: PathBuf,
}

impl OutDir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store of run folders beside the published link.
    pub fn store(&self) -> PathBuf {
        self.path.with_file_name(".out.runs")
    }
}

pub fn out_dir() -> OutDir {
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("out");
    OutDir { _work: work, path }
}

/// Runs the binary with `command` (`run`, `report`...), `--as-of 2026-11-01`, a new output
/// place, then `args`; returns the place and what the process did.
pub fn job(command: &str, args: &[&str]) -> (OutDir, std::process::Output) {
    let out = out_dir();
    let output = binary()
        .arg(command)
        .args(["--as-of", "2026-11-01", "--out"])
        .arg(out.path())
        .args(args)
        .output()
        .unwrap();
    (out, output)
}

/// Panics with the process's stderr unless it exited 0.
pub fn assert_success(output: &std::process::Output) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `job`, which must succeed; returns the output folder.
pub fn job_ok(command: &str, args: &[&str]) -> OutDir {
    let (out, output) = job(command, args);
    assert_success(&output);
    out
}

/// The run summary in `out`.
/// A Bulk Data folder (one `.ndjson` file per type the job reads) holding `resources`.
pub fn write_folder(resources: &[Value]) -> tempfile::TempDir {
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

pub fn summary_of(out: &Path) -> Value {
    serde_json::from_str(&read(out, "run-summary.json")).unwrap()
}

// ---- hand-built timelines ----

pub fn date(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

/// The TARE date of every hand-built case.
pub fn index() -> NaiveDate {
    date("2026-01-10")
}

pub struct Case {
    pub timeline: PatientTimeline,
    next_id: usize,
}

impl Case {
    /// An eligible adult with an HCC diagnosis and one TARE on `index()`.
    pub fn new() -> Case {
        Case {
            timeline: PatientTimeline {
                patient_id: "p1".into(),
                has_patient_resource: true,
                birth_date: Some(date("1960-01-01")),
                name: None,
                mrn: None,
                has_hcc: true,
                procedures: vec![TareProcedure {
                    procedure_id: "tare-1".into(),
                    date: index(),
                }],
                values: Vec::new(),
            },
            next_id: 0,
        }
    }

    pub fn tare(mut self, day: i64) -> Case {
        self.timeline.procedures.push(TareProcedure {
            procedure_id: format!("tare-{}", self.timeline.procedures.len() + 1),
            date: index() + Duration::days(day),
        });
        self.timeline.procedures.sort_by_key(|p| p.date);
        self
    }

    pub fn value_with(
        mut self,
        marker: Marker,
        day: i64,
        value: f64,
        censoring: Censoring,
        reference_high: Option<f64>,
    ) -> Case {
        self.next_id += 1;
        let d = index() + Duration::days(day);
        self.timeline.values.push(MarkerValue {
            marker,
            value,
            censoring,
            date: d,
            instant_ms: d.and_hms_opt(9, 0, 0).unwrap().and_utc().timestamp_millis(),
            observation_id: format!("obs-{:03}", self.next_id).into(),
            reference_high: reference_high.into(),
            reference_high_implausible: false,
            note: None,
        });
        self.timeline
            .values
            .sort_by_key(|v| (v.marker, v.instant_ms));
        self
    }

    pub fn value(self, marker: Marker, day: i64, value: f64) -> Case {
        self.value_with(marker, day, value, Censoring::Exact, None)
    }

    pub fn pivka(self, day: i64, value: f64) -> Case {
        self.value(Marker::Pivka2, day, value)
    }

    pub fn afp(self, day: i64, value: f64) -> Case {
        self.value(Marker::Afp, day, value)
    }

    pub fn bilirubin(self, day: i64, value: f64) -> Case {
        self.value(Marker::Bilirubin, day, value)
    }

    pub fn albumin(self, day: i64, value: f64) -> Case {
        self.value(Marker::Albumin, day, value)
    }

    /// Evaluates as of `index() + day` with the default config.
    pub fn as_of_day(&self, day: i64) -> PatientFindings {
        self.evaluate(day, &Config::default())
    }

    pub fn evaluate(&self, day: i64, config: &Config) -> PatientFindings {
        evaluate_patient(&self.timeline, config, index() + Duration::days(day))
    }
}

pub fn only_episode(findings: &PatientFindings) -> &EpisodeFindings {
    assert_eq!(findings.left_out, None, "patient was left out");
    assert_eq!(findings.episodes.len(), 1, "expected one episode");
    &findings.episodes[0]
}

pub fn course(findings: &PatientFindings, marker: Marker) -> &MarkerCourse {
    only_episode(findings)
        .courses
        .iter()
        .find(|c| c.marker == marker)
        .unwrap_or_else(|| panic!("no {} course", marker.key()))
}

pub fn flag(findings: &PatientFindings, code: FlagCode) -> Option<&Flag> {
    only_episode(findings).flags.iter().find(|f| f.code == code)
}

pub fn flag_codes(findings: &PatientFindings) -> Vec<&'static str> {
    only_episode(findings)
        .flags
        .iter()
        .map(|f| f.code.code())
        .collect()
}

// ---- generated cohorts and runs against servers ----

/// A generated cohort's resources (Patient, Condition, Procedure, Observation order).
pub fn generated(patients: usize, seed: u64) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    binary()
        .args(["generate", "--patients", &patients.to_string()])
        .args([
            "--seed",
            &seed.to_string(),
            "--as-of",
            "2026-11-01",
            "--out",
        ])
        .arg(dir.path())
        .assert()
        .success();
    let mut resources = Vec::new();
    for kind in ["Patient", "Condition", "Procedure", "Observation"] {
        let text = std::fs::read_to_string(dir.path().join(format!("{kind}.ndjson"))).unwrap();
        resources.extend(
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    resources
}

/// Runs the binary as a user would, as of 2026-11-01; panics with its stderr unless it exits
/// 0. Returns the run summary.
pub fn run_ok(args: &[&str], out: &Path) -> Value {
    run_ok_as_of(args, out, "2026-11-01")
}

pub fn run_ok_as_of(args: &[&str], out: &Path, as_of: &str) -> Value {
    let output = binary()
        .arg("run")
        .args(args)
        .args(["--as-of", as_of, "--out"])
        .arg(out)
        .output()
        .unwrap();
    assert_success(&output);
    // A shard publishes its set as OUT/shard-I-of-N.
    let set = match args.iter().position(|a| *a == "--shard") {
        Some(i) => out.join(format!("shard-{}", args[i + 1].replace('/', "-of-"))),
        None => out.to_owned(),
    };
    let summary = std::fs::read_dir(set)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("run-summary")
        })
        .unwrap();
    serde_json::from_str(&std::fs::read_to_string(summary).unwrap()).unwrap()
}

/// (created, updated, cancelled) of a run summary's write-back; no patient may have failed.
pub fn changes(summary: &Value) -> (u64, u64, u64) {
    let w = &summary["write_back"];
    assert_eq!(w["failed"].as_array().unwrap().len(), 0, "{w}");
    (
        w["created"].as_u64().unwrap(),
        w["updated"].as_u64().unwrap(),
        w["cancelled"].as_u64().unwrap(),
    )
}

pub fn config_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Mounts, ahead of any other answer, a CapabilityStatement that declares everything a run
/// can need (FHIR 4.0.1, every resource's searches and writes, transaction, `$export`), for
/// the tests of a mock server that is about something else.
pub async fn declares_everything(server: &wiremock::MockServer) {
    let interactions =
        ["read", "search-type", "create", "update"].map(|code| serde_json::json!({"code": code}));
    let resources: Vec<Value> = [
        "Patient",
        "Procedure",
        "Condition",
        "Observation",
        "DetectedIssue",
        "Provenance",
        "Device",
        "Group",
    ]
    .iter()
    .map(|kind| serde_json::json!({"type": kind, "interaction": interactions}))
    .collect();
    let statement = serde_json::json!({"resourceType": "CapabilityStatement",
        "fhirVersion": "4.0.1", "rest": [{"mode": "server", "resource": resources,
            "interaction": [{"code": "transaction"}],
            "operation": [{"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}]}]});
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .and(wiremock::matchers::path("/metadata"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(statement))
        .with_priority(1)
        .mount(server)
        .await;
}
