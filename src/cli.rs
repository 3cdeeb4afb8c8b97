//! Command-line definitions only.

use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "tare-marker-monitor",
    version,
    about = "Evaluates PIVKA-II / AFP courses after TARE and flags cases for clinician review"
)]
pub struct Cli {
    /// Log lines on stderr as text, or as one JSON object per line (for log collectors).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct Common {
    /// Folder in the FHIR Bulk Data layout (`Patient*.ndjson`, `Observation*.ndjson.gz`, ...).
    #[arg(long, value_name = "DIR", conflicts_with = "server")]
    pub source_dir: Option<PathBuf>,
    /// FHIR server base URL to read from (default: the config's `server.base_url`).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Evaluate as of this date (YYYY-MM-DD); default: today in the configured time zone.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub as_of: Option<NaiveDate>,
    /// TOML file overriding the built-in defaults (RULES.md); see config/default.toml.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Worker threads (default: the config's `ingest.threads`, 0 = one per core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Evaluate every patient and write markers.csv, flags.csv, detected-issues.ndjson and
    /// run-summary.json to --out.
    Run {
        #[command(flatten)]
        common: Common,
        /// Output folder (created if missing).
        #[arg(long, value_name = "DIR", required_unless_present = "fetch_only")]
        out: Option<PathBuf>,
        /// With --server: send no writes; save each patient's transaction Bundle under
        /// OUT/transactions instead.
        #[arg(long)]
        dry_run: bool,
        /// Benchmark floor, with --server: run the same searches with the same concurrency and
        /// discard the pages; evaluate and write nothing. Prints requests and time.
        #[arg(long, conflicts_with = "dry_run")]
        fetch_only: bool,
        /// Evaluate and write for this patient only (repeatable); nothing else is touched.
        #[arg(long, value_name = "ID")]
        patient: Vec<String>,
        /// A file of patients: one id, or an identifier `system|value`, per line; blank lines
        /// and `#` comments allowed (repeatable).
        #[arg(long, value_name = "FILE")]
        cohort: Vec<PathBuf>,
        /// The members of this FHIR Group (repeatable).
        #[arg(long, value_name = "ID")]
        group: Vec<String>,
        /// Run shard I of N (from 0): the patients whose id hashes to I. Default: from
        /// JOB_COMPLETION_INDEX with schedule.shard_count, else unsharded.
        #[arg(long, value_name = "I/N")]
        shard: Option<crate::cohort::Shard>,
        /// With schedule.state_file: ignore the state and read everyone (the state is written
        /// afterwards, as after any fully successful run).
        #[arg(long)]
        full: bool,
        /// With --server: read through a Bulk Data `$export` instead of searches
        /// (server.read_with = "export").
        #[arg(long)]
        export: bool,
        /// With --export: export the members of this Group (`Group/ID/$export`).
        #[arg(long, value_name = "ID", requires = "export")]
        export_group: Option<String>,
        /// Write back even when the run would cancel more than output.max_cancel_fraction of
        /// the job's active DetectedIssues, or any when it read no TARE patient (the safety
        /// valve otherwise stops it, exit code 6).
        #[arg(long)]
        allow_mass_cancel: bool,
    },
    /// Combine the part files of a sharded run into one markers.csv, flags.csv,
    /// detected-issues.ndjson and run-summary.json.
    Merge {
        /// Folders holding the part files (`markers.shard-I-of-N.csv`, ...).
        #[arg(required = true, value_name = "DIR")]
        parts: Vec<PathBuf>,
        /// Output folder (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Write the audit report: report.html (self-contained: cohort summary, flagged patients,
    /// a chart per flagged patient, the flag trail from the server, data quality) and its CSV
    /// twins.
    Report {
        #[command(flatten)]
        common: Common,
        /// Output folder (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Flags and trail entries identified on or after this date.
        #[arg(long, value_name = "YYYY-MM-DD")]
        from: Option<NaiveDate>,
        /// Flags and trail entries identified on or before this date.
        #[arg(long, value_name = "YYYY-MM-DD")]
        to: Option<NaiveDate>,
    },
    /// Print one patient's course and findings for a clinician.
    Explain {
        #[command(flatten)]
        common: Common,
        /// Patient id (the `Patient.id` of the source).
        #[arg(long, value_name = "ID")]
        patient: String,
    },
    /// Write a synthetic cohort in the Bulk Data layout (deterministic for a seed).
    Generate {
        /// Output folder (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The demo cohort: one patient per clinical scenario, then random patients.
        #[arg(long, conflicts_with = "patients")]
        demo: bool,
        /// Number of random patients.
        #[arg(long, default_value_t = 1000)]
        patients: usize,
        /// Random seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Date the synthetic histories lead up to.
        #[arg(long, value_name = "YYYY-MM-DD", default_value = "2026-11-01")]
        as_of: NaiveDate,
        /// Write `.ndjson.gz` files.
        #[arg(long)]
        gzip: bool,
    },
    /// Benchmark floor: parse every line of the folder as JSON and discard it, with the same
    /// reader and threads as `run`. Prints lines and seconds.
    ParseFloor {
        #[arg(long, value_name = "DIR")]
        source_dir: PathBuf,
        /// Read each line with the job's own read structs and checks instead of `IgnoredAny`.
        #[arg(long)]
        lean: bool,
        #[arg(long, value_name = "N")]
        threads: Option<usize>,
    },
}
