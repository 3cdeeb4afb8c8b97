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
    /// Names and identifiers replaced by stable pseudonyms (HMAC-SHA256 with the secret of
    /// `[report] pseudonym_secret_env` or `pseudonym_secret_file`); dates and values kept.
    #[arg(long)]
    pub deidentify: bool,
}

/// The report between its start line and its end line (at the default log level, with its
/// figures and exit code, as `run` logs its own), whatever its outcome.
pub fn execute(args: ReportArgs) -> Result<(), CommandError> {
    let started = std::time::Instant::now();
    let mut figures = None;
    let result = report(args, &mut figures);
    let exit_code = match &result {
        Ok(()) => super::exit::SUCCESS,
        Err(error) => error.exit_code(),
    };
    let duration_secs = crate::sink::summary::Timings::secs(started.elapsed().as_millis());
    log_end(figures.as_ref(), exit_code, duration_secs);
    result
}

/// What the end line says of a report written.
struct Figures {
    patients_evaluated: u64,
    patients_flagged: u64,
    flags_high: u64,
    flags_moderate: u64,
    flags_low: u64,
    trail_entries: u64,
    files_written: u64,
}

/// The end line: numbers as numbers (a JSON log keeps them so), the duration in seconds.
fn log_end(figures: Option<&Figures>, exit_code: u8, duration_secs: f64) {
    let Some(f) = figures else {
        tracing::info!(exit_code, duration_secs, "report ended");
        return;
    };
    tracing::info!(
        exit_code,
        duration_secs,
        patients_evaluated = f.patients_evaluated,
        patients_flagged = f.patients_flagged,
        flags_high = f.flags_high,
        flags_moderate = f.flags_moderate,
        flags_low = f.flags_low,
        trail_entries = f.trail_entries,
        files_written = f.files_written,
        "report ended"
    );
}

fn report(args: ReportArgs, figures: &mut Option<Figures>) -> Result<(), CommandError> {
    if let (Some(from), Some(to)) = (args.from, args.to) {
        if from > to {
            return Err(CommandError::NotApplicable(format!(
                "--from {from} is after --to {to}: the range holds no date"
            )));
        }
    }
    let config = args.source.config()?;
    let as_of = args.source.as_of(&config)?;
    if let Some(from) = args.from.filter(|from| *from > as_of) {
        return Err(CommandError::NotApplicable(format!(
            "--from {from} is after the as-of date {as_of}: no flag is identified after it"
        )));
    }
    // Nor before the earliest plausible date: no result is dated before it, and a range
    // from year 1 would list two thousand years of empty months.
    let earliest = config.ingest.earliest_plausible_date;
    if let Some(from) = args.from.filter(|from| *from < earliest) {
        return Err(CommandError::NotApplicable(format!(
            "--from {from} is before ingest.earliest_plausible_date {earliest}: no result is dated before it"
        )));
    }
    // Refused before anything is read or written: no secret, no report.
    let pseudonyms = match args.deidentify {
        true => Some(report::Pseudonyms::from_config(&config.report)?),
        false => None,
    };
    let source = args.source.source(&config)?;
    let run_id = crate::output::new_run_id(chrono::Utc::now());
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        command = "report",
        source_kind = source.kind(),
        as_of = %as_of,
        deidentified = pseudonyms.is_some(),
        run_id = %run_id,
        "report started"
    );
    let opened = args.source.open_with(config, as_of)?;
    // Nothing is evaluated after the as-of date: the range (and the months of the flags per
    // month) ends there.
    let to = args.to.map(|to| to.min(opened.as_of));
    // The manifest is read under the output's lock: another report publishing meanwhile
    // cannot slip an identified set in beside a de-identified one.
    let deidentified = pseudonyms.is_some();
    let mut set = crate::output::OutputSet::open_checked(
        &args.out,
        &report::OUTPUT_NAMES,
        &run_id,
        |shown| refuse_mixing_identified_and_deidentified(shown, deidentified),
    )?;
    let options = ReportOptions {
        source: opened.reader.source(),
        as_of: opened.as_of,
        from: args.from,
        to,
        out_dir: args.out,
        run_id,
        deidentified: pseudonyms.is_some(),
    };
    let mut report = report::build(&options, &opened.config, &opened.reader, &opened.workers)?;
    if let Some(pseudonyms) = &pseudonyms {
        pseudonyms.apply(&mut report);
    }
    let written = report::write(&report, &opened.config, &set)?;
    set.publish()?;
    let severity = |code: &str| report.flags.by_severity.get(code).copied().unwrap_or(0) as u64;
    *figures = Some(Figures {
        patients_evaluated: report.patients.evaluated as u64,
        patients_flagged: report.flagged.len() as u64,
        flags_high: severity("high"),
        flags_moderate: severity("moderate"),
        flags_low: severity("low"),
        trail_entries: report.trail.as_ref().map_or(0, Vec::len) as u64,
        files_written: written.len() as u64,
    });
    say!(
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

/// A de-identified report never joins the sets of identified ones in one `--out` (nor the
/// reverse): the store keeps the previous set beside the one shown, and an audit committee
/// given the folder would find the names in it.
fn refuse_mixing_identified_and_deidentified(
    out: &std::path::Path,
    deidentified: bool,
) -> Result<(), crate::output::OutputError> {
    let Ok(text) = std::fs::read_to_string(out.join("report-manifest.json")) else {
        return Ok(());
    };
    let shown: Option<bool> = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .map(|m| m["deidentified"].as_bool().unwrap_or(false));
    let with_article = |deidentified: bool| match deidentified {
        true => "a de-identified",
        false => "an identified",
    };
    match shown {
        Some(shown) if shown != deidentified => Err(crate::output::OutputError::NotOurs {
            path: out.display().to_string(),
            what: format!(
                "holds {} report; {} report gets an --out of its own, so that no identified \
                 report is kept beside a de-identified one",
                with_article(shown),
                with_article(deidentified),
            ),
        }),
        _ => Ok(()),
    }
}
