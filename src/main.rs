//! Thin binary: parse the CLI, set up logging, call the library, map errors to exit codes.

use anyhow::Context;
use clap::Parser;
use std::process::ExitCode;
use tare_marker_monitor::cli::{Cli, Command, Common, LogFormat};
use tare_marker_monitor::cohort::Shard;
use tare_marker_monitor::config::Config;
use tare_marker_monitor::fhir::client::FhirError;
use tare_marker_monitor::run::{self, RunError, RunOptions, Source};
use tare_marker_monitor::{explain, generate, source};

// mimalloc: faster than glibc malloc for the many small records of a large run, and it returns
// memory to the OS instead of keeping per-thread arenas (measured in benches/).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Documented exit codes (README "Exit codes").
const EXIT_FAILURE: u8 = 1;
const EXIT_CONFIG: u8 = 2;
const EXIT_SOURCE: u8 = 3;
const EXIT_PATIENTS_FAILED: u8 = 4;
const EXIT_EVALUATION_FAILED: u8 = 5;
const EXIT_MASS_CANCEL: u8 = 6;
const EXIT_LOCKED: u8 = 7;
const EXIT_INTERRUPTED: u8 = 130;

fn load_config(common: &Common) -> Result<Config, u8> {
    let mut config = match &common.config {
        Some(path) => Config::from_file(path).map_err(|e| {
            eprintln!("error: {e}");
            EXIT_CONFIG
        })?,
        None => Config::default(),
    };
    if let Some(threads) = common.threads {
        config.ingest.threads = threads;
    }
    Ok(config)
}

fn source_of(common: &Common, config: &Config) -> Result<Source, u8> {
    match (&common.source_dir, &common.server, &config.server.base_url) {
        (Some(dir), _, _) => Ok(Source::Folder(dir.clone())),
        (None, Some(url), _) | (None, None, Some(url)) => Ok(Source::Server(url.clone())),
        (None, None, None) => {
            eprintln!(
                "error: give --source-dir DIR or --server URL (or server.base_url in the config)"
            );
            Err(EXIT_CONFIG)
        }
    }
}

fn as_of(common: &Common, config: &Config) -> Result<chrono::NaiveDate, u8> {
    let date = common.as_of.unwrap_or_else(|| {
        chrono::Utc::now()
            .with_timezone(&config.time_zone())
            .date_naive()
    });
    let latest = chrono::NaiveDate::from_ymd_opt(9000, 12, 31).expect("a date");
    if date < config.ingest.earliest_plausible_date || date > latest {
        eprintln!(
            "error: --as-of {date} lies outside {} .. {latest}",
            config.ingest.earliest_plausible_date
        );
        return Err(EXIT_CONFIG);
    }
    Ok(date)
}

fn exit_code_of(error: &RunError) -> u8 {
    use tare_marker_monitor::output::OutputError;
    use tare_marker_monitor::source::ndjson::SourceError;
    // A stop asked for ends whatever was under way with its own code.
    if tare_marker_monitor::interrupt::requested() {
        return EXIT_INTERRUPTED;
    }
    match error {
        RunError::Output(OutputError::Locked { .. }) => EXIT_LOCKED,
        RunError::Interrupted
        | RunError::Output(OutputError::Interrupted { .. })
        | RunError::Source(SourceError::Interrupted) => EXIT_INTERRUPTED,
        RunError::Server(FhirError::Credentials(_)) | RunError::Cohort(_) | RunError::State(_) => {
            EXIT_CONFIG
        }
        RunError::Source(_) | RunError::Server(_) => EXIT_SOURCE,
        _ => EXIT_FAILURE,
    }
}

fn main() -> ExitCode {
    use std::io::IsTerminal;
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match cli.log_format {
        // One JSON object per line, for a log collector; never colours.
        LogFormat::Json => logs.json().with_current_span(false).init(),
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    tare_marker_monitor::isolation::install_panic_hook();
    if let Err(e) = tare_marker_monitor::interrupt::install() {
        eprintln!("error: cannot install the SIGINT/SIGTERM handlers: {e}");
        return ExitCode::from(EXIT_FAILURE);
    }
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => ExitCode::from(code),
    }
}

fn dispatch(command: Command) -> Result<(), u8> {
    match command {
        Command::Run {
            common,
            out,
            dry_run,
            fetch_only,
            patient,
            cohort,
            group,
            shard,
            full,
            export,
            export_group,
            allow_mass_cancel,
        } => {
            let mut config = load_config(&common)?;
            if export {
                config.server.read_with = tare_marker_monitor::config::ReadWith::Export;
            }
            if export_group.is_some() {
                config.server.export_group = export_group;
            }
            if fetch_only {
                let Source::Server(url) = source_of(&common, &config)? else {
                    eprintln!("error: --fetch-only needs a server source (--server URL)");
                    return Err(EXIT_CONFIG);
                };
                let measured = run::fetch_only(&url, &config).map_err(|e| {
                    eprintln!("error: {e}");
                    exit_code_of(&e)
                })?;
                println!(
                    "fetch-only: {} resources discarded, {} requests in {:.3} s ({:.1} requests/s)",
                    measured.resources_discarded,
                    measured.requests,
                    measured.seconds,
                    measured.requests as f64 / measured.seconds
                );
                return Ok(());
            }
            let Some(out) = out else {
                eprintln!("error: --out DIR is required");
                return Err(EXIT_CONFIG);
            };
            let shard = match shard {
                Some(shard) => Some(shard),
                None => Shard::from_job_index(
                    std::env::var("JOB_COMPLETION_INDEX").ok().as_deref(),
                    config.schedule.shard_count,
                )
                .map_err(|e| {
                    eprintln!("error: {e}");
                    EXIT_CONFIG
                })?,
            };
            let options = RunOptions {
                source: source_of(&common, &config)?,
                dry_run,
                as_of: as_of(&common, &config)?,
                out_dir: out,
                cohort: run::CohortRequest {
                    patients: patient,
                    cohort_files: cohort,
                    groups: group,
                },
                shard,
                full,
                allow_mass_cancel,
            };
            let outcome = run::run(&options, &config).map_err(|e| {
                eprintln!("error: {e}");
                exit_code_of(&e)
            })?;
            let s = &outcome.summary;
            if let Some(cohort) = &s.cohort {
                for unknown in &cohort.unknown {
                    eprintln!("warning: not found: {unknown}");
                }
            }
            let observations = s.resources.by_type.get("Observation");
            println!(
                "as of {}: {} patients seen, {} evaluated, {} left out; {} observations accepted, {} left out; {} flags ({} to write as DetectedIssues); outputs in {}",
                s.as_of,
                s.patients.seen,
                s.patients.evaluated,
                s.patients.left_out.values().sum::<usize>(),
                observations.map_or(0, |o| o.accepted),
                observations.map_or(0, |o| o.left_out.values().map(|r| r.count).sum::<u64>()),
                s.flags.total,
                s.flags.written_as_detected_issues,
                                options.out_dir.display()
            );
            if let Some(report) = &s.write_back {
                println!(
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
            let failed = &s.patients.evaluation_failed;
            if !failed.is_empty() {
                eprintln!(
                    "error: the evaluation of {} patients failed (listed with the reason under patients.evaluation_failed in run-summary.json); their DetectedIssues were left as they were",
                    failed.len()
                );
                return Err(EXIT_EVALUATION_FAILED);
            }
            if let Some(report) = &s.write_back {
                if let Some(valve) = &report.mass_cancel {
                    eprintln!("error: {valve}");
                    if !report.dry_run {
                        return Err(EXIT_MASS_CANCEL);
                    }
                }
                if !report.failed.is_empty() {
                    for failure in &report.failed {
                        eprintln!("error: patient {}: {}", failure.patient_id, failure.message);
                    }
                    return Err(EXIT_PATIENTS_FAILED);
                }
            }
            Ok(())
        }
        Command::Report {
            common,
            out,
            from,
            to,
        } => {
            let config = load_config(&common)?;
            let options = tare_marker_monitor::report::ReportOptions {
                source: source_of(&common, &config)?,
                as_of: as_of(&common, &config)?,
                from,
                to,
                out_dir: out,
            };
            let fail = |e: RunError| {
                eprintln!("error: {e}");
                exit_code_of(&e)
            };
            let report = tare_marker_monitor::report::build(&options, &config).map_err(fail)?;
            let written = tare_marker_monitor::report::write(&report, &config).map_err(fail)?;
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
        Command::Merge { parts, out } => {
            let merged = tare_marker_monitor::merge::merge(&parts, &out).map_err(|e| {
                eprintln!("error: {e}");
                EXIT_FAILURE
            })?;
            println!(
                "{} shards merged into {}: {} markers rows, {} flags, {} DetectedIssues",
                merged.shards,
                out.display(),
                merged.marker_rows,
                merged.flag_rows,
                merged.detected_issues
            );
            Ok(())
        }
        Command::Explain { common, patient } => {
            let config = load_config(&common)?;
            let date = as_of(&common, &config)?;
            let source = source_of(&common, &config)?;
            match explain::explain(&source, &patient, date, &config) {
                Ok(text) => {
                    print!("{text}");
                    Ok(())
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    Err(match e.downcast_ref::<RunError>() {
                        Some(run_error) => exit_code_of(run_error),
                        None => EXIT_FAILURE,
                    })
                }
            }
        }
        Command::Generate {
            out,
            demo,
            patients,
            seed,
            as_of,
            gzip,
        } => {
            let plan = if demo {
                generate::Plan::demo()
            } else {
                generate::Plan::random(patients, seed, as_of)
            };
            generate::write_cohort(&plan, &out, gzip)
                .with_context(|| format!("writing the cohort to {}", out.display()))
                .map_err(|e| {
                    eprintln!("error: {e:#}");
                    EXIT_FAILURE
                })?;
            println!(
                "{} patients written to {}",
                plan.patient_count(),
                out.display()
            );
            Ok(())
        }
        Command::ParseFloor {
            source_dir,
            lean,
            threads,
        } => {
            let mut config = Config::default();
            config.ingest.threads = threads.unwrap_or(0);
            let pool = run::thread_pool(&config).map_err(|e| {
                eprintln!("error: {e}");
                EXIT_FAILURE
            })?;
            let started = std::time::Instant::now();
            let lines = pool
                .install(|| {
                    let ingestor = tare_marker_monitor::ingest::Ingestor::new(
                        &config,
                        chrono::Utc::now().date_naive(),
                    );
                    source::ndjson::parse_floor(&source_dir, lean.then_some(&ingestor))
                })
                .map_err(|e| {
                    eprintln!("error: {e}");
                    EXIT_SOURCE
                })?;
            println!(
                "{lines} lines parsed in {:.3} s on {} threads",
                started.elapsed().as_secs_f64(),
                pool.current_num_threads()
            );
            Ok(())
        }
    }
}
