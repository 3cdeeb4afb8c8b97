//! `merge`: the part files of a sharded run combined into the files one run writes.

use super::CommandError;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Folders holding the part files (`markers.shard-I-of-N.csv`, ...).
    #[arg(required = true, value_name = "DIR")]
    pub parts: Vec<PathBuf>,
    /// Output folder (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

pub fn execute(args: MergeArgs) -> Result<(), CommandError> {
    let _lock = crate::output::lock_folder(&args.out, "")?;
    let merged = crate::merge::merge(&args.parts, &args.out)?;
    println!(
        "{} shards merged into {}: {} markers rows, {} flags, {} DetectedIssues",
        merged.shards,
        args.out.display(),
        merged.marker_rows,
        merged.flag_rows,
        merged.detected_issues
    );
    Ok(())
}
