//! One run, as its steps: open its output set (locked), select the patients, load them,
//! evaluate them, write the files, write back to the server, summarise, publish the set, save
//! the state. A stop asked for by SIGINT/SIGTERM ends it between two steps.

mod select;

use crate::cohort::{CohortError, Scope, Shard};
use crate::config::Config;
use crate::domain::{PatientFindings, PatientTimeline};
use crate::evaluate::evaluate_patient;
use crate::fhir::capabilities;
use crate::fhir::client::{FhirClient, FhirError};
use crate::isolation::isolated;
use crate::output::{self, write_atomically, OutputError, OutputFile, OutputSet};
use crate::sink::summary::{CohortReport, RunIdentity, RunSummary, Timings, Watermark};
use crate::sink::{csv as csv_sink, detected_issue, server};
use crate::source::{ReadError, Reader, Source};
use crate::state::{self, StateError};
use crate::workers::{Workers, WorkersError};
use chrono::NaiveDate;
use rayon::prelude::*;
pub use select::CohortRequest;
use select::{Mode, Recheck};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Server(#[from] FhirError),
    #[error(transparent)]
    Workers(#[from] WorkersError),
    /// A cohort or shard that cannot be used as asked (exit code 2: the request is wrong).
    #[error(transparent)]
    Cohort(#[from] CohortError),
    #[error("cannot read the cohort file {}", path.display())]
    CohortFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("cannot build a FHIR resource")]
    Build(#[from] fhir_resources::BuildError),
    /// A full or cohort run that read its source but found nothing to evaluate.
    #[error("{origin}: read, but nothing usable: {what}; nothing was published (--allow-empty accepts an empty source)")]
    NothingUsable { origin: String, what: String },
    /// SIGINT or SIGTERM: the run stopped between two steps.
    #[error("interrupted: the run stopped before it finished; outputs and state are as they were")]
    Interrupted,
}

impl From<server::WriteBackError> for RunError {
    fn from(error: server::WriteBackError) -> RunError {
        match error {
            server::WriteBackError::Fhir(e) => RunError::Server(e),
            server::WriteBackError::Save(e) => RunError::Output(e),
            server::WriteBackError::Device(e) => RunError::Build(e),
            server::WriteBackError::Interrupted => RunError::Interrupted,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub source: Source,
    /// With a server source: send no writes, save the transaction Bundles under `out`.
    pub dry_run: bool,
    pub as_of: NaiveDate,
    pub out_dir: PathBuf,
    pub cohort: CohortRequest,
    pub shard: Option<Shard>,
    /// Ignore the incremental state: read everyone (the state is written afterwards).
    pub full: bool,
    /// Write back even when the safety valve would stop it (`--allow-mass-cancel`).
    pub allow_mass_cancel: bool,
    /// Go on when a full or cohort run finds no patient or no accepted Observation.
    pub allow_empty: bool,
    /// When the command started: the one clock of the run's durations (the summary's
    /// `timings.total_ms`, the end log line, the metrics).
    pub started: Instant,
}

pub struct RunOutcome {
    /// The run's id, in its summary and the name of its run folder.
    pub run_id: String,
    pub summary: RunSummary,
    pub findings: Vec<PatientFindings>,
}

/// What `run-summary.json` holds: the run's id, its summary, and every other file of its set
/// with its size and hash, so each output can be tied to the run that wrote it.
#[derive(serde::Serialize)]
struct PublishedSummary<'a> {
    run_id: &'a str,
    #[serde(flatten)]
    summary: &'a RunSummary,
    files: Vec<OutputFile>,
}

/// The names a run writes into its output folder (shard part names in a sharded run).
fn output_names(shard: Option<Shard>) -> Vec<String> {
    let mut names: Vec<String> = [
        ("markers", "csv"),
        ("flags", "csv"),
        ("detected-issues", "ndjson"),
        ("run-summary", "json"),
    ]
    .into_iter()
    .map(|(stem, extension)| output_name(stem, extension, shard))
    .collect();
    names.push(output_name("metrics", "prom", shard));
    names.push("transactions".into());
    names
}

/// `markers.csv`, or `markers.shard-0-of-4.csv` in a sharded run.
pub fn output_name(stem: &str, extension: &str, shard: Option<Shard>) -> String {
    match shard {
        None => format!("{stem}.{extension}"),
        Some(shard) => format!("{stem}{}.{extension}", shard.file_suffix()),
    }
}

/// When a run started: the monotonic clock for timings, and the instant (to the millisecond,
/// as servers keep `meta.lastUpdated`) that becomes the next watermark.
struct Started {
    clock: Instant,
    utc: chrono::DateTime<chrono::Utc>,
    /// RFC 3339, whole seconds: `Provenance.recorded` and the summary.
    text: String,
    /// The run's id: its start and something unique (`output::new_run_id`).
    run_id: String,
}

impl Started {
    fn now(clock: Instant) -> Started {
        let utc = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 3);
        Started {
            clock,
            utc,
            text: utc.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            run_id: output::new_run_id(utc),
        }
    }
}

/// What the steps of one run share: its options and config, its start, its workers and its
/// source, each made once.
struct Run<'a> {
    options: &'a RunOptions,
    config: &'a Config,
    started: Started,
    /// The run folder everything is written into, published at the end.
    set: OutputSet,
    workers: Workers,
    reader: Reader,
}

/// Stops between two steps when SIGINT or SIGTERM asked for it.
fn check_interrupted() -> Result<(), RunError> {
    match crate::interrupt::requested() {
        true => Err(RunError::Interrupted),
        false => Ok(()),
    }
}

/// What a run holds from start to end: its output set (locked) and, with a schedule, the
/// lock of its state file. A second run into either stops here, before anything is read or
/// written. A shard publishes at `OUT/shard-I-of-N`, beside the other shards.
fn open_outputs(
    options: &RunOptions,
    config: &Config,
    run_id: &str,
) -> Result<(OutputSet, Option<output::RunLock>), RunError> {
    let names = output_names(options.shard);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let set = match options.shard {
        None => OutputSet::open(&options.out_dir, &names, run_id)?,
        Some(shard) => {
            let name = shard.file_suffix();
            let name = name.trim_start_matches('.');
            OutputSet::open_shard(&options.out_dir, name, &names, run_id)?
        }
    };
    let state_lock = match select::state_path_of(options, config) {
        Some(state) => Some(output::lock_beside(&state)?),
        None => None,
    };
    Ok((set, state_lock))
}

fn csv_io(e: csv::Error) -> std::io::Error {
    std::io::Error::other(e)
}

impl Run<'_> {
    /// Evaluates every patient, each isolated; a stateful run keeps each patient's recheck
    /// date. Each timeline is dropped as soon as it is evaluated.
    fn evaluate(
        &self,
        timelines: Vec<PatientTimeline>,
        keeps_state: bool,
    ) -> (Vec<PatientFindings>, Vec<Recheck>) {
        let (config, as_of) = (self.config, self.options.as_of);
        let progress = crate::progress::Progress::start("evaluating", timelines.len() as u64);
        let evaluated = self.workers.pool.install(|| {
            timelines
                .into_par_iter()
                .map(|t| {
                    let evaluated = isolated(|| {
                        let findings = evaluate_patient(&t, config, as_of);
                        let recheck = keeps_state
                            .then(|| state::recheck_on(&t, &findings, config, as_of))
                            .flatten();
                        (findings, recheck)
                    });
                    let (findings, recheck) = evaluated.unwrap_or_else(|message| {
                        (PatientFindings::failed(&t.patient_id, message), None)
                    });
                    progress.advance(1);
                    (findings, (t.patient_id, recheck))
                })
                .unzip()
        });
        progress.finish();
        evaluated
    }

    fn out(&self, stem: &str, extension: &str) -> PathBuf {
        self.set
            .folder()
            .join(output_name(stem, extension, self.options.shard))
    }

    /// markers.csv, flags.csv and detected-issues.ndjson (side by side: they are independent),
    /// with the bytes written on a terminal's bar.
    fn write_files(&self, findings: &[PatientFindings]) -> Result<(), RunError> {
        let config = self.config;
        let progress = crate::progress::Progress::bytes_written("writing");
        let (tables, resources) = self.workers.pool.install(|| {
            rayon::join(
                || -> Result<(), RunError> {
                    write_atomically(&self.out("markers", "csv"), |w| {
                        csv_sink::write_markers(progress.counting(w), findings).map_err(csv_io)
                    })?;
                    Ok(write_atomically(&self.out("flags", "csv"), |w| {
                        csv_sink::write_flags(progress.counting(w), findings, config)
                            .map_err(csv_io)
                    })?)
                },
                || {
                    write_atomically(&self.out("detected-issues", "ndjson"), |w| {
                        detected_issue::write_ndjson(
                            &mut progress.counting(w),
                            findings,
                            config,
                            &self.started.text,
                        )
                        .map(|_| ())
                    })
                },
            )
        });
        progress.finish();
        tables?;
        Ok(resources?)
    }

    /// Brings the server's DetectedIssues in line (server source only).
    fn write_back(
        &self,
        findings: &[PatientFindings],
        scope: &Scope,
        tare_patients_read: usize,
    ) -> Result<Option<server::WriteReport>, RunError> {
        let Some(client) = self.reader.client() else {
            return Ok(None);
        };
        let dry_run_dir = self
            .options
            .dry_run
            .then(|| self.set.folder().join("transactions"));
        let write_options = server::WriteBackOptions {
            recorded: &self.started.text,
            scope,
            dry_run_dir: dry_run_dir.as_deref(),
            tare_patients_read,
            allow_mass_cancel: self.options.allow_mass_cancel,
        };
        let report = self.workers.runtime.block_on(server::write_back(
            client,
            findings,
            self.config,
            &write_options,
        ))?;
        Ok(Some(report))
    }

    /// The summary's watermark: the state's file, the bound this run used, and this run's
    /// start when it fully succeeded and wrote for real (the state saved after publishing).
    fn watermark(&self, mode: &Mode, fully_succeeded: bool) -> Option<Watermark> {
        let path = mode.state_path()?;
        Some(Watermark {
            state_file: path.display().to_string(),
            used: mode.since().map(str::to_owned),
            next: fully_succeeded.then_some(self.started.utc),
        })
    }

    /// Saves the state for the next run, only after a run that fully succeeded, wrote for real
    /// and published its outputs.
    fn save_state(
        &self,
        mode: &Mode,
        rechecks: &[Recheck],
        scope: &Scope,
        fully_succeeded: bool,
    ) -> Result<(), RunError> {
        let Some(path) = mode.state_path().filter(|_| fully_succeeded) else {
            return Ok(());
        };
        check_interrupted()?;
        let next = select::next_state(
            mode,
            self.options,
            self.config,
            self.started.utc,
            rechecks,
            scope,
        );
        write_atomically(path, |w| {
            serde_json::to_writer_pretty(&mut *w, &next)?;
            w.write_all(b"\n")
        })?;
        Ok(())
    }

    /// `run-summary.json`, last: it lists every other file of the set.
    fn write_summary(&self, summary: &RunSummary) -> Result<(), RunError> {
        let published = PublishedSummary {
            run_id: &self.started.run_id,
            summary,
            files: self.set.files(),
        };
        write_atomically(&self.out("run-summary", "json"), |w| {
            serde_json::to_writer_pretty(&mut *w, &published)?;
            w.write_all(b"\n")
        })?;
        Ok(())
    }
}

/// A full or cohort run must find patients and accepted Observations: an empty read means a
/// wrong folder, a wrong server or codes the configuration does not know, not a quiet night.
/// (An incremental run may find nothing changed; a shard may hold nobody.)
fn nothing_usable(options: &RunOptions, loaded: &crate::source::Loaded) -> Result<(), RunError> {
    let observations = loaded.quality.by_type.get("Observation");
    let what = if loaded.timelines.is_empty() {
        "no patient at all".to_owned()
    } else if observations.is_none_or(|o| o.accepted == 0) {
        let (read, left_out, other_codes) = observations.map_or((0, 0, 0), |o| {
            let left_out = o.left_out.values().map(|r| r.count).sum::<u64>();
            (o.read, left_out, o.not_relevant)
        });
        let most = observations
            .and_then(|o| o.left_out.iter().max_by_key(|(_, r)| r.count))
            .map_or(String::new(), |(reason, r)| {
                format!(", {} of them as {reason}", r.count)
            });
        format!(
            "no Observation accepted ({read} read, {other_codes} of codes the configuration does not list, {left_out} left out{most})"
        )
    } else {
        return Ok(());
    };
    Err(RunError::NothingUsable {
        origin: options.source.to_string(),
        what,
    })
}

/// One run, as its steps.
pub fn run(options: &RunOptions, config: &Config) -> Result<RunOutcome, RunError> {
    let started = Started::now(options.started);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        command = "run",
        source_kind = options.source.kind(),
        as_of = %options.as_of,
        shard = options.shard.map(|s| s.to_string()),
        run_id = %started.run_id,
        "run started"
    );
    let (set, _state_lock) = open_outputs(options, config, &started.run_id)?;
    let mut run = Run {
        options,
        config,
        started,
        set,
        workers: Workers::new(config.ingest.threads)?,
        reader: Reader::open(&options.source, config)?,
    };

    // Before the first search: a server that cannot serve this run says so now.
    if let Some(client) = run.reader.client() {
        let needs = capabilities::Needs {
            writes: !options.dry_run,
            bulk: config.server.read_with == crate::config::ReadWith::Export,
            incremental: select::state_path_of(options, config).is_some() && !options.full,
        };
        run.workers
            .runtime
            .block_on(capabilities::require(client, needs))?;
    }
    check_interrupted()?;

    // Select.
    let mut cohort = CohortReport::default();
    let (mode, scope) = select::choose_mode(
        options,
        config,
        run.reader.client(),
        &run.workers.runtime,
        &mut cohort,
    )?;
    check_interrupted()?;

    // Load.
    let loaded = run
        .reader
        .load(config, options.as_of, &scope, &run.workers)?;
    let read_ms = run.started.clock.elapsed().as_millis();
    tracing::info!(
        mode = mode.name(),
        patients = loaded.timelines.len(),
        inputs = loaded.inputs.len(),
        read_secs = read_ms as f64 / 1000.0,
        "source read"
    );
    if !options.allow_empty && options.shard.is_none() && !matches!(mode, Mode::Incremental { .. })
    {
        nothing_usable(options, &loaded)?;
    }
    if matches!(mode, Mode::Cohort) {
        cohort
            .unknown
            .extend(select::requested_without_patient(&scope, &loaded.timelines));
    }
    let tare_patients_read = loaded
        .timelines
        .iter()
        .filter(|t| !t.procedures.is_empty())
        .count();
    check_interrupted()?;

    // Evaluate.
    let evaluate_started = Instant::now();
    let (findings, rechecks) = run.evaluate(loaded.timelines, mode.keeps_state());
    let evaluate_ms = evaluate_started.elapsed().as_millis();
    check_interrupted()?;

    // Write files, then write back.
    let write_started = Instant::now();
    run.write_files(&findings)?;
    let write_back = run.write_back(&findings, &scope, tare_patients_read)?;
    let write_ms = write_started.elapsed().as_millis();

    // The state moves on only after a run that fully succeeded and wrote for real.
    let (patients, responses, flags) = RunSummary::count(&findings, config);
    let fully_succeeded = !options.dry_run
        && patients.evaluation_failed.is_empty()
        && write_back
            .as_ref()
            .is_none_or(|report| report.failed.is_empty() && report.mass_cancel.is_none());
    let watermark = run.watermark(&mode, fully_succeeded);

    // Summarise.
    let summary = RunSummary {
        identity: RunIdentity {
            as_of: options.as_of.to_string(),
            config_sha256: RunIdentity::config_digest(config),
            tool_version: env!("CARGO_PKG_VERSION").to_owned(),
            shard: options.shard.map(|s| s.to_string()),
            source: options.source.identity(),
        },
        tool_version: env!("CARGO_PKG_VERSION"),
        mode: mode.name(),
        as_of: options.as_of.to_string(),
        started_at: run.started.text.clone(),
        source: options.source.to_string(),
        shard: options.shard.map(|s| s.to_string()),
        cohort: matches!(mode, Mode::Cohort).then_some(cohort),
        watermark,
        inputs: loaded.inputs,
        inputs_ignored: loaded.ignored_inputs,
        threads: run.workers.threads(),
        patients,
        responses,
        flags,
        resources: loaded.quality,
        write_back,
        server_requests: run.reader.client().map(FhirClient::requests_sent),
        server_retries: run.reader.client().map(|_| crate::metrics::retries()),
        timings: Timings {
            read_ms,
            evaluate_ms,
            write_ms,
            total_ms: run.started.clock.elapsed().as_millis(),
        },
    };
    // The metrics of the run as it will exit, in its set (a failed step after this point
    // publishes nothing).
    let published = match options.shard {
        None => options.out_dir.clone(),
        Some(shard) => options
            .out_dir
            .join(shard.file_suffix().trim_start_matches('.')),
    };
    let previous = published.join(output_name("metrics", "prom", options.shard));
    let shard = options.shard.map(|s| s.to_string());
    crate::metrics::RunMetrics {
        summary: Some(&serde_json::to_value(&summary).unwrap_or_default()),
        shard: shard.as_deref(),
        exit_code: crate::commands::run::exit_code_of(&summary, options.dry_run),
        duration_secs: summary.timings.total_secs(),
        ended_at: crate::metrics::now(),
        previous_success: crate::metrics::last_success_in(&previous),
    }
    .write(&run.out("metrics", "prom"))?;
    run.write_summary(&summary)?;

    // Publish the set, then save the state: a run whose outputs were not published is done
    // again.
    run.set.publish()?;
    run.save_state(&mode, &rechecks, &scope, fully_succeeded)?;
    Ok(RunOutcome {
        run_id: run.started.run_id,
        summary,
        findings,
    })
}
