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
    /// Where the report is published, as `run` publishes its outputs.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Flags and trail entries identified on or after this date.
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = super::iso_date)]
    pub from: Option<NaiveDate>,
    /// Flags and trail entries identified on or before this date.
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = super::iso_date)]
    pub to: Option<NaiveDate>,
}

pub fn execute(args: ReportArgs) -> Result<(), CommandError> {
    let opened = args.source.open()?;
    let run_id = crate::output::new_run_id(chrono::Utc::now());
    let mut set = crate::output::OutputSet::open(&args.out, &report::OUTPUT_NAMES, &run_id)?;
    let options = ReportOptions {
        source: opened.reader.source(),
        as_of: opened.as_of,
        from: args.from,
        to: args.to,
        out_dir: args.out,
        run_id,
    };
    let report = report::build(&options, &opened.config, &opened.reader, &opened.workers)?;
    let written = report::write(&report, &opened.config, &set)?;
    set.publish()?;
    println!(
        "report as of {} (run {}): {} flagged patients, {} trail entries; written: {}",
        options.as_of,
        options.run_id,
        report.flagged.len(),
        report.trail.as_ref().map_or(0, Vec::len),
        written
            .iter()
            .map(|name| options.out_dir.join(name).display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
