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

/// The merge, then its metrics for node_exporter's textfile collector (`[metrics]
/// textfile_path`, the whole run's figures, without a shard label), whatever its outcome.
pub fn execute(args: MergeArgs) -> Result<(), CommandError> {
    let started = std::time::Instant::now();
    let textfile = crate::config::Config::load(args.config.as_deref(), std::env::vars())
        .map(|config| config.metrics.textfile_path)?;
    let mut summary = None;
    let result = merge(&args, started, &mut summary);
    if let Some(path) = textfile {
        let exit_code = match &result {
            Ok(()) => super::exit::SUCCESS,
            Err(error) => error.exit_code(),
        };
        let figures = summary.as_ref().map(crate::merge::metrics_figures);
        crate::metrics::publish_textfile(
            &path,
            figures.as_ref(),
            None,
            exit_code,
            crate::sink::summary::Timings::secs(started.elapsed().as_millis()),
        );
    }
    result
}

fn merge(
    args: &MergeArgs,
    started: std::time::Instant,
    summary: &mut Option<serde_json::Value>,
) -> Result<(), CommandError> {
    // Parts that cannot be merged, or an --out among them, touch nothing.
    crate::merge::refuse_out_among_parts(&args.out, &args.parts)?;
    let parts = crate::merge::find(&args.parts)?;
    let run_id = crate::output::new_run_id(chrono::Utc::now());
    let mut set = crate::output::OutputSet::open(&args.out, &crate::merge::OUTPUT_NAMES, &run_id)?;
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
    *summary = Some(merged.summary);
    Ok(())
}
