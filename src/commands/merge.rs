//! `merge`: the part files of a sharded run combined into the files one run writes.

use super::CommandError;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Folders holding the part files (`markers.shard-I-of-N.csv`, ...), directly or in the
    /// `shard-I-of-N` sets the shards publish there.
    #[arg(required = true, value_name = "DIR")]
    pub parts: Vec<PathBuf>,
    /// Where the merged files are published, as `run` publishes its own.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// TOML file over the built-in defaults: merge reads `[metrics] textfile_path` (or
    /// TMM_METRICS__TEXTFILE_PATH) from it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The merge between its start line and its end line (at the default log level, with its
/// figures and exit code, as `run` logs its own), then its metrics for node_exporter's
/// textfile collector (`[metrics] textfile_path`, the whole run's figures, without a shard
/// label), whatever its outcome. The end line and the metrics give one duration.
pub fn execute(args: MergeArgs) -> Result<(), CommandError> {
    let started = std::time::Instant::now();
    let run_id = crate::output::new_run_id(chrono::Utc::now());
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        command = "merge",
        parts = args.parts.len() as u64,
        run_id = %run_id,
        "merge started"
    );
    let secs = || crate::sink::summary::Timings::secs(started.elapsed().as_millis());
    let textfile = match crate::config::Config::load(args.config.as_deref(), std::env::vars()) {
        Ok(config) => config.metrics.textfile_path,
        Err(error) => {
            let error = CommandError::from(error);
            log_end(None, error.exit_code(), secs());
            return Err(error);
        }
    };
    let mut merged = None;
    let result = merge(&args, &run_id, started, &mut merged);
    let exit_code = match &result {
        Ok(()) => super::exit::SUCCESS,
        Err(error) => error.exit_code(),
    };
    let duration_secs = secs();
    log_end(merged.as_ref(), exit_code, duration_secs);
    if let Some(path) = textfile {
        let figures = merged
            .as_ref()
            .map(|merged| crate::merge::metrics_figures(&merged.summary));
        crate::metrics::publish_textfile(&path, figures.as_ref(), None, exit_code, duration_secs);
    }
    result
}

/// The end line: the merge's exit code and duration, and the whole run's figures (the parts
/// added up) as numbers, named as in `run`'s end line.
fn log_end(merged: Option<&crate::merge::Merged>, exit_code: u8, duration_secs: f64) {
    use serde_json::Value;
    let Some(merged) = merged else {
        tracing::info!(exit_code, duration_secs, "merge ended");
        return;
    };
    let s = &merged.summary;
    let number = |v: &Value| v.as_u64().unwrap_or(0);
    // The values of an object added up (`count` of each, for the left-out reasons).
    let total = |v: &Value, field: Option<&str>| -> u64 {
        v.as_object().map_or(0, |o| {
            o.values().map(|x| number(field.map_or(x, |f| &x[f]))).sum()
        })
    };
    let observations = &s["resources"]["by_type"]["Observation"];
    let severity = |code: &str| number(&s["flags"]["by_severity"][code]);
    tracing::info!(
        exit_code,
        duration_secs,
        shards = u64::from(merged.shards),
        marker_rows = merged.marker_rows as u64,
        flag_rows = merged.flag_rows as u64,
        detected_issues = merged.detected_issues as u64,
        patients_evaluated = number(&s["patients"]["evaluated"]),
        patients_flagged = number(&s["patients"]["flagged"]),
        patients_left_out = total(&s["patients"]["left_out"], None),
        observations_accepted = number(&observations["accepted"]),
        observations_left_out = total(&observations["left_out"], Some("count")),
        flags_high = severity("high"),
        flags_moderate = severity("moderate"),
        flags_low = severity("low"),
        "merge ended"
    );
}

fn merge(
    args: &MergeArgs,
    run_id: &str,
    started: std::time::Instant,
    out: &mut Option<crate::merge::Merged>,
) -> Result<(), CommandError> {
    // Parts that cannot be merged, or an --out among them, touch nothing.
    crate::merge::refuse_out_among_parts(&args.out, &args.parts)?;
    let parts = crate::merge::find(&args.parts)?;
    let mut set = crate::output::OutputSet::open(&args.out, &crate::merge::OUTPUT_NAMES, run_id)?;
    let clock = crate::merge::MergeClock {
        started,
        previous_success: crate::metrics::last_success_in(&args.out.join("metrics.prom")),
    };
    let merged = crate::merge::merge(&parts, &set, &clock)?;
    set.publish()?;
    say!(
        "{} shards merged into {} (run {run_id}): {} markers rows, {} flags, {} DetectedIssues",
        merged.shards,
        args.out.display(),
        merged.marker_rows,
        merged.flag_rows,
        merged.detected_issues
    );
    *out = Some(merged);
    Ok(())
}
