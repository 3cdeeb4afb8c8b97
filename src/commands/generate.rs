//! `generate`: a synthetic cohort in the Bulk Data layout, for the demo, tests and benchmarks.

use super::CommandError;
use crate::generate::{write_cohort, Plan};
use chrono::NaiveDate;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Output folder (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The demo cohort: one patient per clinical scenario, then random patients.
    #[arg(long, conflicts_with = "patients")]
    pub demo: bool,
    /// Number of random patients.
    #[arg(long, default_value_t = 1000)]
    pub patients: usize,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Date the synthetic histories lead up to.
    #[arg(long, value_name = "YYYY-MM-DD", default_value = "2026-11-01", value_parser = super::iso_date)]
    pub as_of: NaiveDate,
    /// Write `.ndjson.gz` files.
    #[arg(long)]
    pub gzip: bool,
    /// Surround the cohort with what a real hospital export carries: other Observations (19 for
    /// each tumour marker or liver lab), Encounters, MedicationRequests, DiagnosticReports, other
    /// Conditions and Procedures, and patients outside the cohort; Observations in files of a
    /// million lines.
    #[arg(long, conflicts_with = "demo")]
    pub realistic: bool,
}

pub fn execute(args: GenerateArgs) -> Result<(), CommandError> {
    let plan = if args.demo {
        Plan::demo()
    } else if args.realistic {
        Plan::realistic(args.patients, args.seed, args.as_of)
    } else {
        Plan::random(args.patients, args.seed, args.as_of)
    };
    write_cohort(&plan, &args.out, args.gzip).map_err(|source| CommandError::Generate {
        path: args.out.clone(),
        source,
    })?;
    println!(
        "{} patients written to {}",
        plan.patient_count(),
        args.out.display()
    );
    Ok(())
}
