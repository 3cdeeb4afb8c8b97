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
}

pub fn execute(args: MergeArgs) -> Result<(), CommandError> {
    // Parts that cannot be merged touch nothing.
    let parts = crate::merge::find(&args.parts)?;
    let run_id = crate::output::new_run_id(chrono::Utc::now());
    let mut set = crate::output::OutputSet::open(&args.out, &crate::merge::OUTPUT_NAMES, &run_id)?;
    let merged = crate::merge::merge(&parts, &set)?;
    set.publish()?;
    println!(
        "{} shards merged into {} (run {run_id}): {} markers rows, {} flags, {} DetectedIssues",
        merged.shards,
        args.out.display(),
        merged.marker_rows,
        merged.flag_rows,
        merged.detected_issues
    );
    Ok(())
}
