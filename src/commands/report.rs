//! `report`: the audit report (report.html and its CSV twins).

use super::{CommandError, SourceArgs};
use crate::report::{self, ReportOptions};
use chrono::NaiveDate;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Output folder (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Flags and trail entries identified on or after this date.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub from: Option<NaiveDate>,
    /// Flags and trail entries identified on or before this date.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub to: Option<NaiveDate>,
}

pub fn execute(args: ReportArgs) -> Result<(), CommandError> {
    let opened = args.source.open()?;
    let _lock = crate::output::lock_folder(&args.out, "")?;
    let options = ReportOptions {
        source: opened.reader.source(),
        as_of: opened.as_of,
        from: args.from,
        to: args.to,
        out_dir: args.out,
    };
    let report = report::build(&options, &opened.config, &opened.reader, &opened.workers)?;
    let written = report::write(&report, &opened.config)?;
    println!(
        "report as of {}: {} flagged patients, {} trail entries; written: {}",
        options.as_of,
        report.flagged.len(),
        report.trail.as_ref().map_or(0, Vec::len),
        written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
