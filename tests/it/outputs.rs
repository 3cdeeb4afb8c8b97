//! The published output set: `--out` shows one run's complete set, the previous one or the new
//! one, never a mix, whatever stops a run (SIGKILL at any point, SIGTERM, a full disk); its
//! summary ties every file to the run (size and SHA-256); a later run removes what a killed
//! one left; an older version's folder is taken in, a folder with other files refused.

use crate::helpers::{assert_success, binary, demo, out_dir, read, OutDir};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUN_FILES: [&str; 4] = [
    "detected-issues.ndjson",
    "flags.csv",
    "markers.csv",
    "metrics.prom",
];

fn run_args(source: &Path, out: &Path) -> Vec<std::ffi::OsString> {
    // -q: warnings and errors only, which these tests read.
    let mut args: Vec<std::ffi::OsString> = vec!["run".into(), "-q".into(), "--source-dir".into()];
    args.push(source.into());
    args.extend(["--as-of".into(), "2026-11-01".into(), "--out".into()]);
    args.push(out.into());
    args
}

/// The set `out` shows, checked whole: its summary's run id names the run folder the link
/// points to, and every other file is there with the size and hash the summary lists. Returns
/// the run id.
fn shown_set(out: &Path) -> String {
    let summary: Value = serde_json::from_str(&read(out, "run-summary.json")).unwrap();
    let run_id = summary["run_id"].as_str().unwrap().to_owned();
    let target = std::fs::read_link(out).unwrap();
    assert_eq!(target.file_name().unwrap().to_string_lossy(), run_id);
    let listed: Vec<&str> = summary["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, RUN_FILES, "the set is complete");
    for file in summary["files"].as_array().unwrap() {
        let name = file["name"].as_str().unwrap();
        let bytes = std::fs::read(out.join(name)).unwrap();
        assert_eq!(file["bytes"], bytes.len() as u64, "{name} of run {run_id}");
        assert_eq!(
            file["sha256"],
            format!("{:x}", Sha256::digest(&bytes)),
            "{name} of run {run_id}"
        );
    }
    run_id
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// A generated cohort large enough that a debug build reads and writes for a few seconds.
fn large_cohort() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let output = binary()
        .args(["generate", "--patients", "1500", "--seed", "16", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_success(&output);
    dir
}

/// When to stop the run: what its run folder holds by then.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// The run folder is made (the run is reading).
    FolderMade,
    /// Its first output file is being written.
    WritingMarkers,
    /// detected-issues.ndjson is complete, the summary not yet.
    IssuesWritten,
    /// The summary is being written or done: the set is about to be published.
    SummaryStarted,
}

impl KillPoint {
    fn reached(self, folder: &Path) -> bool {
        let names = names_in(folder);
        let any = |prefix: &str| names.iter().any(|n| n.starts_with(prefix));
        match self {
            KillPoint::FolderMade => true,
            KillPoint::WritingMarkers => any(".markers.csv.") || any("markers.csv"),
            KillPoint::IssuesWritten => names.contains("detected-issues.ndjson"),
            KillPoint::SummaryStarted => any(".run-summary.json.") || any("run-summary.json"),
        }
    }
}

/// Starts a run into `out` and sends `signal` once its new run folder reached `point`, or
/// lets it finish if it gets there first. Returns the exit code (None when killed).
fn run_until(source: &Path, out: &OutDir, point: KillPoint, signal: &str) -> Option<i32> {
    let before = names_in(&out.store());
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("tare-marker-monitor"))
        .args(run_args(source, out.path()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // A guard against a hang only, never an assertion on time.
    let guard = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(
            Instant::now() < guard,
            "the run neither ended nor got there"
        );
        let new_folder: Option<PathBuf> = names_in(&out.store())
            .difference(&before)
            .map(|n| out.store().join(n))
            .find(|p| p.is_dir());
        if new_folder.is_some_and(|folder| point.reached(&folder)) {
            let sent = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .unwrap();
            assert!(sent.success());
            return child.wait().unwrap().code();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_run_killed_at_any_point_leaves_one_complete_set_and_the_next_run_removes_its_folder() {
    let cohort = large_cohort();
    let out = out_dir();
    let first = Command::new(assert_cmd::cargo::cargo_bin("tare-marker-monitor"))
        .args(run_args(cohort.path(), out.path()))
        .output()
        .unwrap();
    assert_success(&first);
    let mut published = vec![shown_set(out.path())];
    let mut killed_before_publishing = 0;
    for point in [
        KillPoint::FolderMade,
        KillPoint::WritingMarkers,
        KillPoint::IssuesWritten,
        KillPoint::SummaryStarted,
    ] {
        let code = run_until(cohort.path(), &out, point, "-KILL");
        // Whatever the moment: the set shown is one run's, whole.
        let shown = shown_set(out.path());
        if code.is_none() && shown == *published.last().unwrap() {
            killed_before_publishing += 1;
        } else if !published.contains(&shown) {
            published.push(shown);
        }
    }
    assert!(
        killed_before_publishing >= 1,
        "no kill landed before its run published"
    );
    // A run after the kills: its set, the one before it, and nothing the killed runs left.
    let output = Command::new(assert_cmd::cargo::cargo_bin("tare-marker-monitor"))
        .args(run_args(cohort.path(), out.path()))
        .output()
        .unwrap();
    assert_success(&output);
    let shown = shown_set(out.path());
    let previous = std::fs::read_link(out.store().join("previous")).unwrap();
    assert_eq!(
        previous.to_string_lossy(),
        *published.last().unwrap(),
        "the set shown before is kept"
    );
    assert_eq!(
        names_in(&out.store()),
        BTreeSet::from([
            ".tare-marker-monitor.lock".to_owned(),
            "previous".to_owned(),
            published.last().unwrap().clone(),
            shown,
        ])
    );
}

#[test]
fn sigterm_while_writing_leaves_the_previous_set_and_exits_130() {
    let cohort = large_cohort();
    let out = out_dir();
    let first = Command::new(assert_cmd::cargo::cargo_bin("tare-marker-monitor"))
        .args(run_args(cohort.path(), out.path()))
        .output()
        .unwrap();
    assert_success(&first);
    let before = shown_set(out.path());
    let code = run_until(cohort.path(), &out, KillPoint::WritingMarkers, "-TERM");
    assert_eq!(code, Some(130));
    assert_eq!(shown_set(out.path()), before);
    // Its run folder went with it.
    assert_eq!(
        names_in(&out.store()),
        BTreeSet::from([".tare-marker-monitor.lock".to_owned(), before])
    );
}

#[test]
fn a_full_disk_leaves_the_previous_set_and_exits_1_naming_the_file() {
    let out = out_dir();
    let first = binary()
        .args(run_args(&demo(), out.path()))
        .output()
        .unwrap();
    assert_success(&first);
    let before = shown_set(out.path());
    // RLIMIT_FSIZE: any write past 8 KiB fails with EFBIG, as on a full disk. The job handles
    // SIGXFSZ itself, so the write fails instead of the process being killed without a word.
    let output = Command::new("sh")
        .arg("-c")
        .arg("ulimit -f 16; exec \"$@\"")
        .arg("sh")
        .arg(assert_cmd::cargo::cargo_bin("tare-marker-monitor"))
        .args(run_args(&demo(), out.path()))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("File too large"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "nothing was published: {} shows the previous outputs as they were",
            out.path().display()
        )),
        "{stderr}"
    );
    assert_eq!(shown_set(out.path()), before);
    assert_eq!(
        names_in(&out.store()),
        BTreeSet::from([".tare-marker-monitor.lock".to_owned(), before])
    );
}

#[test]
fn a_folder_an_older_version_wrote_is_taken_in_once_and_kept_as_the_previous_set() {
    let out = out_dir();
    std::fs::create_dir(out.path()).unwrap();
    for name in [
        "markers.csv",
        "flags.csv",
        "detected-issues.ndjson",
        "run-summary.json",
    ] {
        std::fs::write(out.path().join(name), format!("old {name}\n")).unwrap();
    }
    std::fs::write(out.path().join(".tare-marker-monitor.lock"), "").unwrap();
    let output = binary()
        .args(run_args(&demo(), out.path()))
        .output()
        .unwrap();
    assert_success(&output);
    shown_set(out.path());
    let previous = out.store().join("previous");
    assert_eq!(read(&previous, "markers.csv"), "old markers.csv\n");
    assert_eq!(
        names_in(&previous),
        BTreeSet::from(
            [
                "markers.csv",
                "flags.csv",
                "detected-issues.ndjson",
                "run-summary.json"
            ]
            .map(str::to_owned)
        )
    );
}

#[test]
fn an_output_folder_with_other_files_is_refused_with_exit_2_and_left_untouched() {
    let out = out_dir();
    std::fs::create_dir(out.path()).unwrap();
    std::fs::write(out.path().join("markers.csv"), "old\n").unwrap();
    std::fs::write(out.path().join("notes.txt"), "mine\n").unwrap();
    let output = binary()
        .args(run_args(&demo(), out.path()))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "error: {} is a folder with other files than this job's outputs: notes.txt: nothing was touched; give --out a new or empty folder, or one this job wrote\n",
            out.path().display()
        )
    );
    assert_eq!(
        names_in(out.path()),
        BTreeSet::from(["markers.csv".to_owned(), "notes.txt".to_owned()])
    );
    assert_eq!(read(out.path(), "markers.csv"), "old\n");
    // Nothing beside it either: no store, no lock file.
    assert_eq!(
        names_in(out.path().parent().unwrap()),
        BTreeSet::from([out
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()])
    );
}
