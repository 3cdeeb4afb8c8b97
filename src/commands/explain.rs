//! `explain`: one patient's course in plain text for a clinician.

use super::{CommandError, SourceArgs};
use clap::Args;

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Patient id (the `Patient.id` of the source).
    #[arg(long, value_name = "ID")]
    pub patient: String,
}

pub fn execute(args: ExplainArgs) -> Result<(), CommandError> {
    let opened = args.source.open()?;
    let text = crate::explain::explain(
        &opened.reader,
        &args.patient,
        opened.as_of,
        &opened.config,
        &opened.workers,
    )?;
    super::write_stdout(&text);
    Ok(())
}
