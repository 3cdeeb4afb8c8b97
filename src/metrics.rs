//! `metrics.prom`: a run's figures in the Prometheus text exposition format, for
//! node_exporter's textfile collector. Written atomically (a collector never reads half a
//! file), into the run's output set and, with `[metrics] textfile_path`, where node_exporter
//! looks. Counts and timings only: no patient data.

use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Retries of HTTP requests in this process (counted where they are waited for).
static RETRIES: AtomicU64 = AtomicU64::new(0);

/// HTTP requests this process sent (every attempt), for the metrics of a run that ended
/// before its summary: a run a 503 storm ended is the one whose retries an operator wants.
static REQUESTS: AtomicU64 = AtomicU64::new(0);

pub fn count_request() {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
}

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
    /// The run's summary as `run-summary.json` holds it (a merge's: the parts added up).
    pub summary: Option<&'a Value>,
    /// `I/N` of a shard: a `shard` label on every sample, so that the shards' files, side by
    /// side in one textfile folder, hold distinct series.
    pub shard: Option<&'a str>,
    pub exit_code: u8,
    pub duration_secs: f64,
    /// Unix seconds when the run ended.
    pub ended_at: f64,
    /// Unix seconds of the last run that exited 0 before this one (from the previous file).
    pub previous_success: Option<f64>,
}

/// The last successful run's time in a metrics file written before, if any (with or without
/// labels).
pub fn last_success_in(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(LAST_SUCCESS)?;
        let value = match rest.strip_prefix('{') {
            Some(labelled) => labelled.split_once('}')?.1,
            None => rest,
        };
        value.trim().parse().ok()
    })
}

/// Where a shard's copy for the textfile collector goes: `tare_marker_monitor.prom` becomes
/// `tare_marker_monitor.shard-1-of-4.prom` beside it, so shards never replace each other's.
pub fn textfile_of_shard(path: &Path, shard: Option<crate::cohort::Shard>) -> PathBuf {
    let Some(shard) = shard else {
        return path.to_owned();
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let named = match name.rsplit_once('.') {
        Some((stem, extension)) if !stem.is_empty() => {
            format!("{stem}{}.{extension}", shard.file_suffix())
        }
        _ => format!("{name}{}", shard.file_suffix()),
    };
    path.with_file_name(named)
}

/// One gauge family: its HELP and TYPE lines, then one sample per labelled value.
fn family(text: &mut String, name: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(text, "# HELP {PREFIX}_{name} {help}");
    let _ = writeln!(text, "# TYPE {PREFIX}_{name} gauge");
    for (labels, value) in samples {
        let _ = writeln!(text, "{PREFIX}_{name}{labels} {value}");
    }
}

/// A label value escaped as the format asks (values are the job's own keys all the same).
fn escaped(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl RunMetrics<'_> {
    /// `{shard="1/4",key="value"}`, `{key="value"}`, or nothing.
    fn labels(&self, pair: Option<(&str, &str)>) -> String {
        let mut labels: Vec<String> = Vec::new();
        if let Some(shard) = self.shard {
            labels.push(format!("shard=\"{}\"", escaped(shard)));
        }
        if let Some((key, value)) = pair {
            labels.push(format!("{key}=\"{}\"", escaped(value)));
        }
        match labels.is_empty() {
            true => String::new(),
            false => format!("{{{}}}", labels.join(",")),
        }
    }

    fn label(&self, key: &str, value: &str) -> String {
        self.labels(Some((key, value)))
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let number = |value: &Value| value.as_f64().unwrap_or(0.0);
        let mut durations = vec![(self.label("step", "total"), self.duration_secs)];
        if let Some(timings) = self.summary.and_then(|s| s.get("timings")) {
            for step in ["read", "evaluate", "write"] {
                if let Some(ms) = timings.get(format!("{step}_ms")) {
                    durations.push((self.label("step", step), number(ms) / 1000.0));
                }
            }
        }
        family(
            &mut text,
            "run_duration_seconds",
            "Duration of the last run, by step (write includes the write-back).",
            &durations,
        );
        if let Some(s) = self.summary {
            let by_key = |object: &Value, key_label: &str| -> Vec<(String, f64)> {
                object.as_object().map_or(Vec::new(), |map| {
                    map.iter()
                        .map(|(key, value)| {
                            let n = value.get("count").unwrap_or(value);
                            (self.label(key_label, key), number(n))
                        })
                        .collect()
                })
            };
            let patients = &s["patients"];
            let mut by_outcome = vec![(
                self.label("outcome", "evaluated"),
                number(&patients["evaluated"]),
            )];
            by_outcome.extend(by_key(&patients["left_out"], "outcome"));
            family(
                &mut text,
                "patients",
                "Patients of the last run: evaluated, or left out by reason.",
                &by_outcome,
            );
            let observations = &s["resources"]["by_type"]["Observation"];
            let mut by_reason = vec![
                (
                    self.label("reason", "accepted"),
                    number(&observations["accepted"]),
                ),
                (
                    self.label("reason", "other_code"),
                    number(&observations["not_relevant"]),
                ),
            ];
            by_reason.extend(by_key(&observations["left_out"], "reason"));
            family(
                &mut text,
                "observations",
                "Observations of the last run: accepted, of other codes, or left out by reason.",
                &by_reason,
            );
            let flags: Vec<(String, f64)> = ["low", "moderate", "high"]
                .iter()
                .map(|severity| {
                    let n = number(&s["flags"]["by_severity"][severity]);
                    (self.label("severity", severity), n)
                })
                .collect();
            family(
                &mut text,
                "flags",
                "Flags raised by the last run, by severity.",
                &flags,
            );
        }
        // The summary's figures, else (a run that ended before its summary) this process's.
        let server = match self.summary {
            Some(s) => s
                .get("server_requests")
                .filter(|v| !v.is_null())
                .map(|requests| (number(requests), number(&s["server_retries"]))),
            None => {
                let requests = REQUESTS.load(Ordering::Relaxed);
                (requests > 0).then(|| (requests as f64, retries() as f64))
            }
        };
        if let Some((requests, retries)) = server {
            family(
                &mut text,
                "server_requests",
                "HTTP requests the last run sent to the FHIR server, retries included.",
                &[(self.labels(None), requests)],
            );
            family(
                &mut text,
                "server_retries",
                "HTTP requests of the last run that were retries.",
                &[(self.labels(None), retries)],
            );
        }
        family(
            &mut text,
            "exit_code",
            "Exit code of the last run (README \"Exit codes\").",
            &[(self.labels(None), f64::from(self.exit_code))],
        );
        family(
            &mut text,
            "last_run_timestamp_seconds",
            "When the last run ended (Unix time).",
            &[(self.labels(None), self.ended_at)],
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
                &[(self.labels(None), at)],
            );
        }
        text
    }

    /// Writes the file atomically at `path` (into a run's output set).
    pub fn write(&self, path: &Path) -> Result<(), crate::output::OutputError> {
        let text = self.render();
        crate::output::write_atomically(path, |w| w.write_all(text.as_bytes()))
    }

    /// Writes the copy for node_exporter's textfile collector at `path`, mode 0644 (the
    /// collector runs as its own user; the file holds no patient data), whatever the run's
    /// outcome: a run stopped by SIGINT/SIGTERM says so here too.
    pub fn write_textfile(&self, path: &Path) -> Result<(), crate::output::OutputError> {
        use std::os::unix::fs::PermissionsExt;
        let text = self.render();
        crate::output::write_atomically_when_stopped(path, |w| w.write_all(text.as_bytes()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(|source| {
            crate::output::OutputError::Write {
                path: path.display().to_string(),
                source,
            }
        })
    }
}

/// Writes the textfile copy of a command that ended now, at `path` (its last success read
/// from the file there before); a failure to write it is a warning, never the run's error.
pub fn publish_textfile(
    path: &Path,
    summary: Option<&Value>,
    shard: Option<&str>,
    exit_code: u8,
    duration_secs: f64,
) {
    let metrics = RunMetrics {
        summary,
        shard,
        exit_code,
        duration_secs,
        ended_at: now(),
        previous_success: last_success_in(path),
    };
    if let Err(error) = metrics.write_textfile(path) {
        tracing::warn!(
            "metrics for the textfile collector not written: {}",
            crate::fhir::error::chain(&error)
        );
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
            shard: None,
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

    #[test]
    fn a_shard_labels_every_sample_and_keeps_its_own_textfile() {
        let summary = serde_json::json!({
            "patients": {"evaluated": 5, "left_out": {"no_hcc_condition": 2}},
            "resources": {"by_type": {"Observation": {"accepted": 40, "not_relevant": 1,
                "left_out": {"duplicate": {"count": 3, "examples": []}}}}},
            "flags": {"by_severity": {"high": 1}},
            "timings": {"read_ms": 1500, "evaluate_ms": 20, "write_ms": 30, "total_ms": 1600},
        });
        let text = RunMetrics {
            summary: Some(&summary),
            shard: Some("1/4"),
            exit_code: 0,
            duration_secs: 1.6,
            ended_at: 2000.0,
            previous_success: None,
        }
        .render();
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "tare_marker_monitor_run_duration_seconds{shard=\"1/4\",step=\"total\"} 1.6",
                "tare_marker_monitor_run_duration_seconds{shard=\"1/4\",step=\"read\"} 1.5",
                "tare_marker_monitor_run_duration_seconds{shard=\"1/4\",step=\"evaluate\"} 0.02",
                "tare_marker_monitor_run_duration_seconds{shard=\"1/4\",step=\"write\"} 0.03",
                "tare_marker_monitor_patients{shard=\"1/4\",outcome=\"evaluated\"} 5",
                "tare_marker_monitor_patients{shard=\"1/4\",outcome=\"no_hcc_condition\"} 2",
                "tare_marker_monitor_observations{shard=\"1/4\",reason=\"accepted\"} 40",
                "tare_marker_monitor_observations{shard=\"1/4\",reason=\"other_code\"} 1",
                "tare_marker_monitor_observations{shard=\"1/4\",reason=\"duplicate\"} 3",
                "tare_marker_monitor_flags{shard=\"1/4\",severity=\"low\"} 0",
                "tare_marker_monitor_flags{shard=\"1/4\",severity=\"moderate\"} 0",
                "tare_marker_monitor_flags{shard=\"1/4\",severity=\"high\"} 1",
                "tare_marker_monitor_exit_code{shard=\"1/4\"} 0",
                "tare_marker_monitor_last_run_timestamp_seconds{shard=\"1/4\"} 2000",
                "tare_marker_monitor_last_success_timestamp_seconds{shard=\"1/4\"} 2000",
            ]
        );
        let dir = tempfile::tempdir().expect("a temporary folder");
        let shard: crate::cohort::Shard = "1/4".parse().expect("a shard");
        let path = textfile_of_shard(&dir.path().join("tmm.prom"), Some(shard));
        assert_eq!(path, dir.path().join("tmm.shard-1-of-4.prom"));
        assert_eq!(
            textfile_of_shard(&dir.path().join("tmm.prom"), None),
            dir.path().join("tmm.prom")
        );
        std::fs::write(&path, &text).expect("written");
        assert_eq!(last_success_in(&path), Some(2000.0));
    }
}
