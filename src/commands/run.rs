//! `run`: evaluate every patient (or a cohort, or a shard) and write the outputs; with a
//! server, write the DetectedIssues back.

use super::{CommandError, SourceArgs};
use crate::cohort::Shard;
use crate::run::{self as job, CohortRequest, RunOptions};
use crate::sink::summary::Timings;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Where the outputs are published: a link to this run's folder in `.NAME.runs` beside it
    /// (a shard publishes OUT/shard-I-of-N).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// With --server: send no writes; save each patient's transaction Bundle under
    /// OUT/transactions instead.
    #[arg(long)]
    pub dry_run: bool,
    /// Evaluate and write for this patient only (repeatable); nothing else is touched.
    #[arg(long, value_name = "ID")]
    pub patient: Vec<String>,
    /// A file of patients: one id, or an identifier `system|value`, per line; blank lines
    /// and `#` comments allowed (repeatable).
    #[arg(long, value_name = "FILE")]
    pub cohort: Vec<PathBuf>,
    /// The members of this FHIR Group (repeatable).
    #[arg(long, value_name = "ID")]
    pub group: Vec<String>,
    /// Run shard I of N (from 0): the patients whose id hashes to I. Default: from
    /// JOB_COMPLETION_INDEX with schedule.shard_count, else unsharded.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// With schedule.state_file: ignore the state and read everyone (the state is written
    /// afterwards, as after any fully successful run).
    #[arg(long)]
    pub full: bool,
    /// With --server: read through a Bulk Data `$export` instead of searches
    /// (server.read_with = "export").
    #[arg(long)]
    pub export: bool,
    /// With --export: export the members of this Group (`Group/ID/$export`).
    #[arg(long, value_name = "ID", requires = "export")]
    pub export_group: Option<String>,
    /// Write back even when the run would cancel more than output.max_cancel_fraction of
    /// the job's active DetectedIssues, or any when it read no TARE patient (the safety
    /// valve otherwise stops it, exit code 6).
    #[arg(long)]
    pub allow_mass_cancel: bool,
    /// Accept a full or cohort run that finds no patient or no accepted Observation (exit 0
    /// instead of 8).
    #[arg(long)]
    pub allow_empty: bool,
}

/// Options that cannot apply to the source or mode chosen: each is refused with a sentence,
/// never silently ignored.
fn refuse_what_cannot_apply(
    args: &RunArgs,
    source: &crate::source::Source,
    config: &crate::config::Config,
) -> Result<(), CommandError> {
    let folder = matches!(source, crate::source::Source::Folder(_));
    let cohort = !(args.patient.is_empty() && args.cohort.is_empty() && args.group.is_empty());
    let refusal = if folder && args.dry_run {
        Some("--dry-run applies to a server source (it keeps the write-back from sending); a run over --source-dir never writes to a server: leave it out")
    } else if folder && (args.export || args.export_group.is_some()) {
        Some("--export and --export-group read a server through Bulk Data $export; with --source-dir the folder already is an export: leave them out")
    } else if cohort && (args.export || args.export_group.is_some()) {
        Some("--export and --export-group read everyone through a Bulk Data $export; a run for --patient, --cohort or --group reads only those patients, by searches (this job does not export a cohort): leave them out, or run without the cohort")
    } else if folder && args.allow_mass_cancel {
        Some("--allow-mass-cancel governs the write-back to a server; a run over --source-dir writes nothing back: leave it out")
    } else if folder && config.schedule.state_file.is_some() {
        Some("schedule.state_file keeps the watermark of incremental server reads; a run over --source-dir always reads the whole folder: unset it (or TMM_SCHEDULE__STATE_FILE) for folder runs")
    } else if args.full && config.schedule.state_file.is_none() {
        Some("--full ignores the incremental state, and there is none: schedule.state_file is not set, so every run reads everyone already")
    } else if args.full && cohort {
        Some("--full ignores the incremental state, which a run for --patient, --cohort or --group never uses: leave it out")
    } else {
        None
    };
    match refusal {
        Some(sentence) => Err(CommandError::NotApplicable(sentence.to_owned())),
        None => Ok(()),
    }
}

/// The code a run that got as far as its summary exits with (README "Exit codes"): the
/// order in which `execute` reports what failed.
pub fn exit_code_of(summary: &crate::sink::summary::RunSummary, dry_run: bool) -> u8 {
    use super::exit;
    if !summary.patients.evaluation_failed.is_empty() {
        return exit::EVALUATION_FAILED;
    }
    match &summary.write_back {
        Some(report) if report.mass_cancel.is_some() && !dry_run => exit::MASS_CANCEL,
        Some(report) if !report.failed.is_empty() => exit::PATIENTS_FAILED,
        _ => exit::SUCCESS,
    }
}

/// The shard this run is: `--shard`, else `JOB_COMPLETION_INDEX` with
/// `schedule.shard_count`, else none.
fn shard_of(args: &RunArgs, config: &crate::config::Config) -> Result<Option<Shard>, CommandError> {
    match args.shard {
        Some(shard) => Ok(Some(shard)),
        None => Ok(Shard::from_job_index(
            std::env::var("JOB_COMPLETION_INDEX").ok().as_deref(),
            config.schedule.shard_count,
        )?),
    }
}

/// The run, then its end line (at the default log level, with its figures and exit code) and
/// the copy of its metrics for node_exporter, whatever its outcome (a stop by SIGINT/SIGTERM
/// included). Every duration comes from one clock, started here: the summary's timings, the
/// end line and the metrics say the same.
pub fn execute(args: RunArgs) -> Result<(), CommandError> {
    let started = std::time::Instant::now();
    let config = args.source.config();
    let shard = config
        .as_ref()
        .ok()
        .and_then(|config| shard_of(&args, config).ok().flatten());
    // A shard's copy beside the others', never over them.
    let textfile = match &config {
        Ok(config) => config.metrics.textfile_path.clone(),
        Err(_) => crate::config::textfile_path_despite_errors(
            args.source.config.as_deref(),
            std::env::vars(),
        ),
    }
    .map(|path| crate::metrics::textfile_of_shard(&path, shard));
    let mut summary = None;
    let result = config.and_then(|config| run(args, config, started, &mut summary));
    let exit_code = match &result {
        Ok(()) => super::exit::SUCCESS,
        Err(error) => error.exit_code(),
    };
    // Whole milliseconds: `2.034`, not `2.0338675999999998`; the summary's own total when
    // the run got as far as its summary.
    let duration_secs = summary.as_ref().map_or_else(
        || Timings::secs(started.elapsed().as_millis()),
        |s: &crate::sink::summary::RunSummary| s.timings.total_secs(),
    );
    log_end(summary.as_ref(), exit_code, duration_secs);
    if let Some(path) = textfile {
        let figures = summary
            .as_ref()
            .map(|s| serde_json::to_value(s).unwrap_or_default());
        let shard = shard.map(|s| s.to_string());
        crate::metrics::publish_textfile(
            &path,
            figures.as_ref(),
            shard.as_deref(),
            exit_code,
            duration_secs,
        );
    }
    result
}

/// The end line: numbers as numbers (a JSON log keeps them so), durations in seconds, each
/// the summary's own.
fn log_end(summary: Option<&crate::sink::summary::RunSummary>, exit_code: u8, duration_secs: f64) {
    let Some(s) = summary else {
        tracing::info!(exit_code, duration_secs, "run ended");
        return;
    };
    let observations = s.resources.by_type.get("Observation");
    let severity = |code: &str| s.flags.by_severity.get(code).copied().unwrap_or(0) as u64;
    tracing::info!(
        exit_code,
        duration_secs,
        patients_evaluated = s.patients.evaluated as u64,
        patients_flagged = s.patients.flagged as u64,
        patients_left_out = s.patients.left_out.values().sum::<usize>() as u64,
        observations_accepted = observations.map_or(0, |o| o.accepted),
        observations_left_out =
            observations.map_or(0, |o| o.left_out.values().map(|r| r.count).sum::<u64>()),
        flags_high = severity("high"),
        flags_moderate = severity("moderate"),
        flags_low = severity("low"),
        read_secs = Timings::secs(s.timings.read_ms),
        evaluate_secs = Timings::secs(s.timings.evaluate_ms),
        write_secs = Timings::secs(s.timings.write_ms),
        "run ended"
    );
}

/// The requested patients a cohort run did not find: how many, in one warning, and where they
/// are listed; the ids and identifiers themselves (patient data) at debug level only.
fn warn_not_found(unknown: &[String]) {
    if unknown.is_empty() {
        return;
    }
    for entry in unknown {
        tracing::debug!("not found: {}", crate::text::shown(entry));
    }
    let not_found = unknown.len() as u64;
    tracing::warn!(
        not_found,
        "{} not found (an id without a Patient, an identifier without exactly one Patient, a Group without members): listed under cohort.unknown in run-summary.json",
        match not_found {
            1 => "1 requested patient was".to_owned(),
            n => format!("{n} requested patients were"),
        }
    );
}

fn run(
    args: RunArgs,
    mut config: crate::config::Config,
    started: std::time::Instant,
    summary_out: &mut Option<crate::sink::summary::RunSummary>,
) -> Result<(), CommandError> {
    refuse_what_cannot_apply(&args, &args.source.source(&config)?, &config)?;
    if args.export {
        config.server.read_with = crate::config::ReadWith::Export;
    }
    if args.export_group.is_some() {
        config.server.export_group = args.export_group.clone();
        config.validate()?;
    }
    let shard = shard_of(&args, &config)?;
    let options = RunOptions {
        source: args.source.source(&config)?,
        dry_run: args.dry_run,
        as_of: args.source.as_of(&config)?,
        out_dir: args.out,
        cohort: CohortRequest {
            patients: args.patient,
            cohort_files: args.cohort,
            groups: args.group,
        },
        shard,
        full: args.full,
        allow_mass_cancel: args.allow_mass_cancel,
        allow_empty: args.allow_empty,
        started,
    };
    let outcome = job::run(&options, &config)?;
    let s = &*summary_out.insert(outcome.summary.clone());
    if let Some(cohort) = &s.cohort {
        warn_not_found(&cohort.unknown);
    }
    let observations = s.resources.by_type.get("Observation");
    say!(
        "as of {}: {} patients seen, {} evaluated, {} left out; {} observations accepted, {} left out; {} flags ({} to write as DetectedIssues); outputs in {} (run {})",
        s.as_of,
        s.patients.seen,
        s.patients.evaluated,
        s.patients.left_out.values().sum::<usize>(),
        observations.map_or(0, |o| o.accepted),
        observations.map_or(0, |o| o.left_out.values().map(|r| r.count).sum::<u64>()),
        s.flags.total,
        s.flags.written_as_detected_issues,
        options.out_dir.display(),
        outcome.run_id
    );
    let s = &outcome.summary;
    if let Some(report) = &s.write_back {
        say!(
            "{}write-back to {}: {} created, {} updated, {} cancelled, {} unchanged, {} patients failed",
            if report.dry_run { "dry run, nothing sent: " } else { "" },
            options.source,
            report.created,
            report.updated,
            report.cancelled,
            report.unchanged,
            report.failed.len()
        );
    }
    if !s.patients.evaluation_failed.is_empty() {
        return Err(CommandError::EvaluationFailed(
            s.patients.evaluation_failed.len(),
        ));
    }
    if let Some(report) = &s.write_back {
        if let Some(valve) = &report.mass_cancel {
            if !report.dry_run {
                return Err(CommandError::MassCancel(valve.clone()));
            }
            tracing::warn!("{valve}");
        }
        if !report.failed.is_empty() {
            // Who failed is patient data: at debug level only; run-summary.json lists them.
            for failure in &report.failed {
                tracing::debug!(
                    "write-back failed for patient {}: {}",
                    crate::text::shown(&failure.patient_id),
                    crate::text::shown(&failure.message)
                );
            }
            return Err(CommandError::WriteBackFailed(report.failed.clone()));
        }
    }
    Ok(())
}
