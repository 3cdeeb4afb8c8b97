//! No wait without a deadline: an input that would block (a FIFO put in place of a listed
//! file, a file system that stops answering) ends the run promptly with exit code 3 and the
//! file's name, or at `ingest.max_read_minutes`; SIGTERM while a read blocks ends it with 130.

use crate::helpers::{binary, demo, out_dir};
use std::path::Path;
use std::process::Command;
#[cfg(debug_assertions)]
use std::process::Stdio;
use std::time::Duration;
use tare_marker_monitor::source::ndjson::{discover, BlockReader, BufferPool, SourceError};

fn mkfifo(path: &Path) {
    let made = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(made.success());
}

#[test]
fn a_fifo_put_in_place_of_a_listed_file_is_refused_without_waiting_for_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["Observation.ndjson", "Patient.ndjson"] {
        std::fs::copy(demo().join(name), dir.path().join(name)).unwrap();
    }
    let listed = discover(dir.path()).unwrap();
    // After the listing, the Observation file becomes a FIFO nobody writes to.
    let fifo = dir.path().join("Observation.ndjson");
    std::fs::remove_file(&fifo).unwrap();
    mkfifo(&fifo);
    let (sender, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let pool = BufferPool::default();
        let errors: Vec<String> = BlockReader::new(&listed.files, &pool, 1 << 20)
            .filter_map(Result::err)
            .map(|e: SourceError| e.to_string())
            .collect();
        let _ = sender.send(errors);
    });
    // A guard against a hang only, never an assertion on time.
    let errors = answer
        .recv_timeout(Duration::from_secs(120))
        .expect("the reader waited for the FIFO");
    assert_eq!(
        errors,
        [format!(
            "cannot read {} after line 0: not a regular file any more (a FIFO, device or socket put in its place after the folder was listed): not read",
            fifo.display()
        )]
    );
}

#[test]
fn a_fifo_listed_as_the_observation_file_is_not_read_and_the_run_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["Condition.ndjson", "Patient.ndjson", "Procedure.ndjson"] {
        std::fs::copy(demo().join(name), dir.path().join(name)).unwrap();
    }
    mkfifo(&dir.path().join("Observation.ndjson"));
    let out = out_dir();
    let output = binary()
        .args(["run", "--as-of", "2026-11-01", "--source-dir"])
        .arg(dir.path())
        .arg("--out")
        .arg(out.path())
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).contains(&format!(
        "source folder {} holds no Observation data",
        dir.path().display()
    )));
}

/// A run on the demo whose read of Observation.ndjson never returns (the debug builds' test
/// hook: a network mount that stopped answering); waits until it says so.
#[cfg(debug_assertions)]
fn run_with_a_stalled_read() -> (std::process::Child, crate::helpers::OutDir) {
    let out = out_dir();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("tare-marker-monitor"))
        .args(["run", "--as-of", "2026-11-01", "--source-dir"])
        .arg(demo())
        .arg("--out")
        .arg(out.path())
        .env("TMM_TEST_STALL_READING", "Observation.ndjson")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 && !line.contains("stalls") {
        line.clear();
    }
    assert!(line.contains("Observation.ndjson stalls"), "{line}");
    // The rest of stderr, read on a thread so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        eprint!("{rest}");
    });
    (child, out)
}

/// Waits for the child, with a guard against a hang (never an assertion on time).
#[cfg(debug_assertions)]
fn exit_code(mut child: std::process::Child) -> Option<i32> {
    let guard = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if std::time::Instant::now() > guard {
            let _ = child.kill();
            panic!("the run did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(debug_assertions)]
#[test]
fn sigterm_while_a_read_blocks_ends_the_run_with_130() {
    let (child, _out) = run_with_a_stalled_read();
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    assert_eq!(exit_code(child), Some(130));
}

#[cfg(debug_assertions)]
#[test]
fn a_read_past_ingest_max_read_minutes_exits_3_naming_the_file() {
    let out = out_dir();
    let output = binary()
        .args(["run", "--as-of", "2026-11-01", "--source-dir"])
        .arg(demo())
        .arg("--out")
        .arg(out.path())
        .env("TMM_TEST_STALL_READING", "Observation.ndjson")
        .env("TMM_INGEST__MAX_READ_MINUTES", "0.01")
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "error: reading {} did not end within 0.01 minutes (ingest.max_read_minutes): the file, or the file system it is on, does not answer",
            demo().join("Observation.ndjson").display()
        )),
        "{stderr}"
    );
}
