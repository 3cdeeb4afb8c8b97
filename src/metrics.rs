//! `metrics.prom`: a run's figures in the Prometheus text exposition format, for
//! node_exporter's textfile collector. Written atomically (a collector never reads half a
//! file), into the run's output set and, with `[metrics] textfile_path`, where node_exporter
//! looks. Counts and timings only: no patient data.

use crate::sink::summary::RunSummary;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Retries of HTTP requests in this process (counted where they are waited for).
static RETRIES: AtomicU64 = AtomicU64::new(0);

pub fn count_retry() {
    RETRIES.fetch_add(1, Ordering::Relaxed);
}

pub fn retries() -> u64 {
    RETRIES.load(Ordering::Relaxed)
}

const PREFIX: &str = "tare_marker_monitor";
const LAST_SUCCESS: &str = "tare_marker_monitor_last_success_timestamp_seconds";

/// What one run's metrics say: its figures when it got as far as summarising, its exit code,
/// when it ended and how long it took.
pub struct RunMetrics<'a> {
    pub summary: Option<&'a RunSummary>,
    pub exit_code: u8,
    pub duration_secs: f64,
    /// Unix seconds when the run ended.
    pub ended_at: f64,
    /// Unix seconds of the last run that exited 0 before this one (from the previous file).
    pub previous_success: Option<f64>,
}

/// The last successful run's time in a metrics file written before, if any.
pub fn last_success_in(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(LAST_SUCCESS)?.trim().parse().ok())
}

/// One gauge family: its HELP and TYPE lines, then one sample per labelled value.
fn family(text: &mut String, name: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(text, "# HELP {PREFIX}_{name} {help}");
    let _ = writeln!(text, "# TYPE {PREFIX}_{name} gauge");
    for (labels, value) in samples {
        let _ = writeln!(text, "{PREFIX}_{name}{labels} {value}");
    }
}

/// `{key="value"}`; values are the job's own keys, escaped as the format asks all the same.
fn label(key: &str, value: &str) -> String {
    let escaped = value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("{{{key}=\"{escaped}\"}}")
}

impl RunMetrics<'_> {
    /// The file's text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let ms = |ms: u128| ms as f64 / 1000.0;
        let mut durations = vec![(label("step", "total"), self.duration_secs)];
        if let Some(s) = self.summary {
            durations.extend([
                (label("step", "read"), ms(s.timings.read_ms)),
                (label("step", "evaluate"), ms(s.timings.evaluate_ms)),
                (label("step", "write"), ms(s.timings.write_ms)),
            ]);
        }
        family(
            &mut text,
            "run_duration_seconds",
            "Duration of the last run, by step (write includes the write-back).",
            &durations,
        );
        if let Some(s) = self.summary {
            let mut patients = vec![(label("outcome", "evaluated"), s.patients.evaluated as f64)];
            patients.extend(
                s.patients
                    .left_out
                    .iter()
                    .map(|(reason, n)| (label("outcome", reason), *n as f64)),
            );
            family(
                &mut text,
                "patients",
                "Patients of the last run: evaluated, or left out by reason.",
                &patients,
            );
            let observations = s.resources.by_type.get("Observation");
            let mut by_reason = vec![
                (
                    label("reason", "accepted"),
                    observations.map_or(0, |o| o.accepted) as f64,
                ),
                (
                    label("reason", "other_code"),
                    observations.map_or(0, |o| o.not_relevant) as f64,
                ),
            ];
            if let Some(o) = observations {
                by_reason.extend(
                    o.left_out
                        .iter()
                        .map(|(reason, r)| (label("reason", reason), r.count as f64)),
                );
            }
            family(
                &mut text,
                "observations",
                "Observations of the last run: accepted, of other codes, or left out by reason.",
                &by_reason,
            );
            let flags: Vec<(String, f64)> = ["low", "moderate", "high"]
                .iter()
                .map(|severity| {
                    let n = s.flags.by_severity.get(severity).copied().unwrap_or(0);
                    (label("severity", severity), n as f64)
                })
                .collect();
            family(
                &mut text,
                "flags",
                "Flags raised by the last run, by severity.",
                &flags,
            );
            if let Some(requests) = s.server_requests {
                family(
                    &mut text,
                    "server_requests",
                    "HTTP requests the last run sent to the FHIR server, retries included.",
                    &[(String::new(), requests as f64)],
                );
                family(
                    &mut text,
                    "server_retries",
                    "HTTP requests of the last run that were retries.",
                    &[(String::new(), retries() as f64)],
                );
            }
        }
        family(
            &mut text,
            "exit_code",
            "Exit code of the last run (README \"Exit codes\").",
            &[(String::new(), f64::from(self.exit_code))],
        );
        family(
            &mut text,
            "last_run_timestamp_seconds",
            "When the last run ended (Unix time).",
            &[(String::new(), self.ended_at)],
        );
        let last_success = match self.exit_code {
            0 => Some(self.ended_at),
            _ => self.previous_success,
        };
        if let Some(at) = last_success {
            family(
                &mut text,
                "last_success_timestamp_seconds",
                "When the last run that exited 0 ended (Unix time).",
                &[(String::new(), at)],
            );
        }
        text
    }

    /// Writes the file atomically at `path`.
    pub fn write(&self, path: &Path) -> Result<(), crate::output::OutputError> {
        let text = self.render();
        crate::output::write_atomically(path, |w| w.write_all(text.as_bytes()))
    }
}

/// Unix seconds now.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_run_keeps_the_previous_success_time() {
        let failed = RunMetrics {
            summary: None,
            exit_code: 3,
            duration_secs: 1.5,
            ended_at: 2000.0,
            previous_success: Some(1000.0),
        };
        let text = failed.render();
        assert!(
            text.contains("\ntare_marker_monitor_exit_code 3\n"),
            "{text}"
        );
        assert!(
            text.contains("\ntare_marker_monitor_last_success_timestamp_seconds 1000\n"),
            "{text}"
        );
        assert!(
            text.contains("\ntare_marker_monitor_run_duration_seconds{step=\"total\"} 1.5\n"),
            "{text}"
        );
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("metrics.prom");
        failed.write(&path).expect("written");
        assert_eq!(last_success_in(&path), Some(1000.0));
    }
}
