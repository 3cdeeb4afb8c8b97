//! `generate`: a synthetic cohort in the Bulk Data layout, for the demo, tests and benchmarks.

use super::CommandError;
use crate::generate::{write_cohort, Plan};
use chrono::NaiveDate;
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Output folder: a new or empty one (a folder holding files is refused, so an export is
    /// never overwritten with synthetic data). The files appear there together, once complete.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The demo cohort: one patient per clinical scenario, then random patients (its seed and
    /// date are fixed).
    #[arg(long, conflicts_with_all = ["patients", "seed", "as_of"])]
    pub demo: bool,
    /// Number of random patients (at least 1).
    #[arg(long, default_value_t = 1000, value_parser = at_least_one)]
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

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("a cohort needs at least one patient".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{text:?} is not a number of patients: {e}")),
    }
}

pub fn execute(args: GenerateArgs) -> Result<(), CommandError> {
    if let Some(name) = first_entry(&args.out) {
        return Err(CommandError::NotApplicable(format!(
            "--out {} already holds {name}: generate writes only into a new or empty folder (remove the folder to generate it again)",
            args.out.display()
        )));
    }
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
    say!(
        "{} patients written to {}",
        plan.patient_count(),
        args.out.display()
    );
    Ok(())
}

/// The name of one entry of `dir`, if it is a folder holding anything (or not a folder at all).
fn first_entry(dir: &Path) -> Option<String> {
    if !dir.exists() {
        return None;
    }
    let Ok(mut entries) = std::fs::read_dir(dir) else {
        return Some("something that is not a readable folder".into());
    };
    entries.next().map(|entry| match entry {
        Ok(entry) => format!("{:?}", entry.file_name()),
        Err(_) => "an unreadable entry".into(),
    })
}
