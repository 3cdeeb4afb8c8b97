//! One run: source folder -> timelines -> evaluation -> output files.

use crate::cohort::{parse_cohort_file, CohortEntry, Scope, Selection, Shard};
use crate::config::{Config, ReadWith};
use crate::domain::{PatientFindings, PatientTimeline};
use crate::evaluate::evaluate_patient;
use crate::fhir::client::{FhirClient, FhirError};
use crate::ingest::Ingestor;
use crate::isolation::isolated;
use crate::output::{self, write_atomically};
use crate::sink::summary::{CohortReport, Watermark};
use crate::sink::summary::{RunSummary, Timings};
use crate::sink::{csv as csv_sink, detected_issue, server};
use crate::source::{bulk, ndjson, search, Loaded};
use crate::state::{self, RunState, StateError};
use chrono::NaiveDate;
use rayon::prelude::*;
use rustc_hash::FxHashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Source(#[from] ndjson::SourceError),
    #[error(transparent)]
    Server(#[from] FhirError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot start worker threads: {0}")]
    Threads(String),
    /// A cohort that cannot be read or resolved (exit code 2: the request is wrong).
    #[error("{0}")]
    Cohort(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    /// SIGINT or SIGTERM: the run stopped between two steps.
    #[error("interrupted: the run stopped before it finished; outputs and state are as they were")]
    Interrupted,
}

/// Where the resources come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A folder in the Bulk Data layout.
    Folder(PathBuf),
    /// A FHIR server's base URL.
    Server(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Folder(path) => write!(f, "{}", path.display()),
            Source::Server(url) => f.write_str(url),
        }
    }
}

/// Reads the cohort from either source.
pub fn load(
    source: &Source,
    config: &Config,
    as_of: NaiveDate,
    pool: &rayon::ThreadPool,
) -> Result<Loaded, RunError> {
    let client = server_client(source, config)?;
    load_from(
        source,
        client.as_ref(),
        config,
        as_of,
        &Scope::EVERYONE,
        pool,
    )
}

/// The client of a server source (one per run, so its request count covers the run).
fn server_client(source: &Source, config: &Config) -> Result<Option<FhirClient>, RunError> {
    match source {
        Source::Folder(_) => Ok(None),
        Source::Server(url) => Ok(Some(FhirClient::new(url, &config.server)?)),
    }
}

fn load_from(
    source: &Source,
    client: Option<&FhirClient>,
    config: &Config,
    as_of: NaiveDate,
    scope: &Scope,
    pool: &rayon::ThreadPool,
) -> Result<Loaded, RunError> {
    let ingestor = Ingestor::new(config, as_of).for_shard(scope.shard);
    let read_server = |client: &FhirClient| -> Result<Loaded, RunError> {
        let runtime = runtime(pool.current_num_threads())?;
        Ok(pool.install(|| runtime.block_on(search::load(client, &ingestor, config, scope)))?)
    };
    let loaded = match (source, client) {
        (Source::Folder(dir), _) => {
            let mut loaded = pool.install(|| ndjson::load(dir, &ingestor))?;
            // A folder is read whole (and counted whole); a cohort picks its patients from it.
            if let Some(requested) = scope.requested() {
                let requested: FxHashSet<String> = requested.into_iter().collect();
                loaded
                    .timelines
                    .retain(|t| requested.contains(&t.patient_id));
            }
            Ok(loaded)
        }
        (Source::Server(_), Some(client))
            if config.server.read_with == ReadWith::Export && scope.requested().is_none() =>
        {
            read_export(client, config, &ingestor, pool)
        }
        (Source::Server(_), Some(client)) => read_server(client),
        (Source::Server(url), None) => read_server(&FhirClient::new(url, &config.server)?),
    }?;
    warn_about_near_misses(&loaded.quality);
    Ok(loaded)
}

/// One warning per code system and resource type under which configured codes were found but
/// which the job does not know by that name: a site that codes this way loses patients until
/// it adds an alias.
pub fn warn_about_near_misses(quality: &crate::ingest::DataQuality) {
    for (kind, system, count) in quality.near_misses() {
        tracing::warn!(
            "{count} {kind} resources carry a configured code under the code system {system:?}, \
             which this job does not know by that name, and were left out; if it is another \
             name of a known system, add it under [code_systems.aliases] in the config \
             (e.g. \"http://loinc.org\" = [{system:?}]), or add the codes under that system to \
             [codes]"
        );
    }
}

/// A private temporary folder for Bulk Data files (readable by us only; removed on drop).
fn export_folder() -> Result<tempfile::TempDir, RunError> {
    tempfile::Builder::new()
        .prefix("tare-export-")
        .tempdir()
        .map_err(|source| RunError::Write {
            path: std::env::temp_dir().display().to_string(),
            source,
        })
}

/// Everyone, by Bulk Data `$export`: the files are downloaded, then read like a folder.
fn read_export(
    client: &FhirClient,
    config: &Config,
    ingestor: &Ingestor,
    pool: &rayon::ThreadPool,
) -> Result<Loaded, RunError> {
    let folder = export_folder()?;
    let runtime = runtime(pool.current_num_threads())?;
    let exported = runtime.block_on(bulk::export(
        client,
        config,
        &["Patient", "Procedure", "Condition", "Observation"],
        None,
        folder.path(),
    ))?;
    tracing::info!(
        files = exported.files.len(),
        bytes = exported.bytes,
        error_files = exported.error_files,
        "export downloaded"
    );
    let mut loaded = pool.install(|| ndjson::load_export(folder.path(), ingestor))?;
    loaded.inputs = vec![format!(
        "$export ({} files, {} bytes, transactionTime {}{})",
        exported.files.len(),
        exported.bytes,
        exported.transaction_time,
        match exported.error_files {
            0 => String::new(),
            n => format!(", {n} error files"),
        }
    )];
    Ok(loaded)
}

/// What `--fetch-only` measured.
pub struct FetchOnly {
    pub resources_discarded: u64,
    pub requests: u64,
    pub seconds: f64,
}

/// The benchmark floor of a server run: the same searches with the same concurrency, pages
/// discarded. Writes nothing.
pub fn fetch_only(url: &str, config: &Config) -> Result<FetchOnly, RunError> {
    let pool = thread_pool(config)?;
    let client = FhirClient::new(url, &config.server)?;
    let today = chrono::Utc::now()
        .with_timezone(&config.time_zone())
        .date_naive();
    let ingestor = Ingestor::new(config, today);
    let started = Instant::now();
    let runtime = runtime(pool.current_num_threads())?;
    let discarded =
        pool.install(|| runtime.block_on(search::fetch_only(&client, &ingestor, config)))?;
    Ok(FetchOnly {
        resources_discarded: discarded,
        requests: client.requests_sent(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// An on-demand cohort: patient ids, cohort files and FHIR Groups (empty: everyone).
#[derive(Debug, Clone, Default)]
pub struct CohortRequest {
    pub patients: Vec<String>,
    pub cohort_files: Vec<PathBuf>,
    pub groups: Vec<String>,
}

impl CohortRequest {
    pub fn is_empty(&self) -> bool {
        self.patients.is_empty() && self.cohort_files.is_empty() && self.groups.is_empty()
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
}

pub struct RunOutcome {
    pub summary: RunSummary,
    pub findings: Vec<PatientFindings>,
}

/// Evaluates every timeline on the current rayon pool; the order of the result is the order of
/// the timelines.
pub fn evaluate_cohort(
    timelines: &[PatientTimeline],
    config: &Config,
    as_of: NaiveDate,
) -> Vec<PatientFindings> {
    timelines
        .par_iter()
        .map(|t| evaluate_isolated(t, config, as_of))
        .collect()
}

/// Evaluates one patient, isolated: a failure leaves that patient out (counted, with its
/// message) and never stops the others.
pub fn evaluate_isolated(
    timeline: &PatientTimeline,
    config: &Config,
    as_of: NaiveDate,
) -> PatientFindings {
    isolated(|| evaluate_patient(timeline, config, as_of))
        .unwrap_or_else(|message| PatientFindings::failed(&timeline.patient_id, message))
}

/// A rayon pool with the configured number of threads (0: one per core).
pub fn thread_pool(config: &Config) -> Result<rayon::ThreadPool, RunError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(config.ingest.threads)
        .build()
        .map_err(|e| RunError::Threads(e.to_string()))
}

/// A tokio runtime with `threads` workers, for the FHIR client.
pub(crate) fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, RunError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| RunError::Threads(e.to_string()))
}

fn csv_io(e: csv::Error) -> std::io::Error {
    std::io::Error::other(e)
}

/// How this run chose its patients.
enum Mode {
    /// Everyone with a TARE; with a state file, the state is (re)written afterwards.
    Full { state_path: Option<PathBuf> },
    /// Those changed since the previous run, plus those whose findings change with time.
    Incremental {
        state_path: PathBuf,
        previous: RunState,
        since: String,
    },
    /// An on-demand cohort: the state is neither read nor written.
    Cohort,
}

impl Mode {
    /// The state file this run reads or writes.
    fn state_path(&self) -> Option<&Path> {
        match self {
            Mode::Full { state_path } => state_path.as_deref(),
            Mode::Incremental { state_path, .. } => Some(state_path),
            Mode::Cohort => None,
        }
    }

    /// The `_lastUpdated` bound of an incremental run.
    fn since(&self) -> Option<&str> {
        match self {
            Mode::Incremental { since, .. } => Some(since),
            _ => None,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Mode::Full { .. } => "full",
            Mode::Incremental { .. } => "incremental",
            Mode::Cohort => "cohort",
        }
    }
}

/// The patient ids of an on-demand cohort, and the entries that matched no patient.
fn resolve_cohort(
    request: &CohortRequest,
    client: Option<&FhirClient>,
    runtime: &tokio::runtime::Runtime,
) -> Result<(Vec<String>, Vec<String>), RunError> {
    let mut ids = request.patients.clone();
    if let Some(bad) = ids.iter().find(|id| !crate::cohort::is_fhir_id(id)) {
        return Err(RunError::Cohort(format!(
            "--patient {bad:?} is not a FHIR id ([A-Za-z0-9.-], up to 64 characters)"
        )));
    }
    let mut identifiers = Vec::new();
    for file in &request.cohort_files {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(file)
            .map_err(|e| RunError::Cohort(format!("cannot read the cohort file {name}: {e}")))?;
        for entry in parse_cohort_file(&text, &name).map_err(RunError::Cohort)? {
            match entry {
                CohortEntry::PatientId(id) => ids.push(id),
                CohortEntry::Identifier { system, value } => identifiers.push((system, value)),
            }
        }
    }
    let mut unknown = Vec::new();
    if identifiers.is_empty() && request.groups.is_empty() {
        return Ok((ids, unknown));
    }
    let Some(client) = client else {
        return Err(RunError::Cohort(
            "identifiers (system|value) and --group are resolved on a FHIR server: use --server"
                .into(),
        ));
    };
    let (found, not_found) = runtime.block_on(search::resolve_identifiers(client, &identifiers))?;
    ids.extend(found);
    unknown.extend(not_found);
    for group in &request.groups {
        let members = runtime.block_on(search::group_members(client, group))?;
        if members.is_empty() {
            unknown.push(format!("Group/{group} (no Patient members)"));
        }
        ids.extend(members);
    }
    Ok((ids, unknown))
}

/// Full, incremental or cohort, and the scope that follows.
fn choose_mode(
    options: &RunOptions,
    config: &Config,
    client: Option<&FhirClient>,
    runtime: &tokio::runtime::Runtime,
    cohort: &mut CohortReport,
) -> Result<(Mode, Scope), RunError> {
    let scope = |selection| Scope {
        selection,
        shard: options.shard,
    };
    if !options.cohort.is_empty() {
        let (ids, unknown) = resolve_cohort(&options.cohort, client, runtime)?;
        cohort.requested = ids.len();
        cohort.unknown = unknown;
        return Ok((Mode::Cohort, scope(Selection::Patients(ids))));
    }
    let (Some(state_path), Some(client)) = (state_path_of(options, config), client) else {
        return Ok((Mode::Full { state_path: None }, scope(Selection::Everyone)));
    };
    let previous = match options.full {
        true => None,
        false => RunState::read(&state_path)?,
    };
    let shard = options.shard.map(|s| s.to_string());
    let matching = |p: &RunState| {
        p.source == options.source.to_string()
            && p.shard == shard
            && p.config_fingerprint == state::config_fingerprint(config)
    };
    let previous = match previous {
        Some(p) if matching(&p) => p,
        stale => {
            if stale.is_some() {
                tracing::warn!(
                    "the state file is for another server, shard or configuration: full run"
                );
            }
            let mode = Mode::Full {
                state_path: Some(state_path),
            };
            return Ok((mode, scope(Selection::Everyone)));
        }
    };
    let since = previous.changed_since(config.schedule.overlap_minutes);
    let mut ids = match config.server.read_with {
        ReadWith::Search => runtime.block_on(search::changed_patients(client, config, &since))?,
        ReadWith::Export => {
            let folder = export_folder()?;
            runtime.block_on(bulk::changed_patients(
                client,
                config,
                &since,
                folder.path(),
            ))?
        }
    };
    let changed = ids.len();
    ids.extend(previous.time_dependent(options.as_of));
    ids.sort();
    ids.dedup();
    tracing::info!(
        changed,
        time_dependent = ids.len() - changed.min(ids.len()),
        "incremental run"
    );
    Ok((
        Mode::Incremental {
            state_path,
            previous,
            since,
        },
        scope(Selection::Patients(ids)),
    ))
}

/// The state after a fully successful run: the previous one (or a new one) with this run's
/// start as the watermark and the re-evaluated patients recorded; a requested patient of whom
/// the source had nothing leaves the known cohort.
fn next_state(
    mode: &Mode,
    options: &RunOptions,
    config: &Config,
    started: chrono::DateTime<chrono::Utc>,
    rechecks: &[(String, Option<Option<NaiveDate>>)],
    scope: &Scope,
) -> RunState {
    let mut state = match mode {
        Mode::Incremental { previous, .. } => previous.clone(),
        _ => RunState::new(
            options.source.to_string(),
            options.shard.map(|s| s.to_string()),
            started,
            config,
        ),
    };
    state.watermark = started;
    state.as_of = options.as_of;
    for (patient_id, recheck) in rechecks {
        state.record(patient_id, *recheck);
    }
    if let Some(requested) = scope.requested() {
        let evaluated: FxHashSet<&str> = rechecks.iter().map(|(id, _)| id.as_str()).collect();
        for id in requested
            .iter()
            .filter(|id| !evaluated.contains(id.as_str()))
        {
            state.record(id, None);
        }
    }
    state
}

/// `markers.csv`, or `markers.shard-0-of-4.csv` in a sharded run.
pub fn output_name(stem: &str, extension: &str, shard: Option<Shard>) -> String {
    match shard {
        None => format!("{stem}.{extension}"),
        Some(shard) => format!("{stem}{}.{extension}", shard.file_suffix()),
    }
}

/// What the steps of one run share.
struct RunContext<'a> {
    options: &'a RunOptions,
    config: &'a Config,
    started: Started,
    pool: rayon::ThreadPool,
    /// The server's client, for a server source (one per run, one token).
    client: Option<FhirClient>,
    runtime: tokio::runtime::Runtime,
}

/// When a run started: the monotonic clock for timings, and the instant (to the millisecond,
/// as servers keep `meta.lastUpdated`) that becomes the next watermark.
struct Started {
    clock: Instant,
    utc: chrono::DateTime<chrono::Utc>,
    /// RFC 3339, whole seconds: `Provenance.recorded` and the summary.
    text: String,
}

impl Started {
    fn now() -> Started {
        let utc = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 3);
        Started {
            clock: Instant::now(),
            utc,
            text: utc.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }
}

/// Stops between two steps when SIGINT or SIGTERM asked for it.
fn check_interrupted() -> Result<(), RunError> {
    match crate::interrupt::requested() {
        true => Err(RunError::Interrupted),
        false => Ok(()),
    }
}

/// The state file of this run's shard, if the schedule keeps one.
fn state_path_of(options: &RunOptions, config: &Config) -> Option<PathBuf> {
    let file = config.schedule.state_file.as_ref()?;
    let suffix = options.shard.map(|s| s.file_suffix());
    Some(state::shard_path(file, suffix.as_deref()))
}

/// The locks a run holds from start to end: its output folder and, with a schedule, its
/// state file. A second run into either stops here, before anything is read or written.
fn lock_outputs(options: &RunOptions, config: &Config) -> Result<Vec<output::RunLock>, RunError> {
    let suffix = options.shard.map(|s| s.file_suffix()).unwrap_or_default();
    let mut locks = vec![output::lock_folder(&options.out_dir, &suffix)?];
    if let Some(state) = state_path_of(options, config) {
        locks.push(output::lock_beside(&state)?);
    }
    Ok(locks)
}

/// Evaluates every patient, each isolated; a stateful run keeps each patient's recheck date.
fn evaluate_all(
    timelines: Vec<PatientTimeline>,
    config: &Config,
    as_of: NaiveDate,
    keeps_state: bool,
    pool: &rayon::ThreadPool,
) -> (Vec<PatientFindings>, Vec<Recheck>) {
    // Each timeline is dropped as soon as it is evaluated.
    pool.install(|| {
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
                (findings, (t.patient_id, recheck))
            })
            .unzip()
    })
}

/// A patient id and the first as-of date on which their findings change with no new data.
type Recheck = (String, Option<Option<NaiveDate>>);

/// markers.csv, flags.csv and detected-issues.ndjson (side by side: they are independent).
fn write_files(
    options: &RunOptions,
    config: &Config,
    findings: &[PatientFindings],
    recorded: &str,
    pool: &rayon::ThreadPool,
) -> Result<(), RunError> {
    let out = |stem: &str, extension: &str| {
        options
            .out_dir
            .join(output_name(stem, extension, options.shard))
    };
    let (tables, resources) = pool.install(|| {
        rayon::join(
            || -> Result<(), RunError> {
                write_atomically(&out("markers", "csv"), |w| {
                    csv_sink::write_markers(w, findings).map_err(csv_io)
                })?;
                Ok(write_atomically(&out("flags", "csv"), |w| {
                    csv_sink::write_flags(w, findings, config).map_err(csv_io)
                })?)
            },
            || {
                write_atomically(&out("detected-issues", "ndjson"), |w| {
                    detected_issue::write_ndjson(w, findings, config, recorded).map(|_| ())
                })
            },
        )
    });
    tables?;
    Ok(resources?)
}

/// Brings the server's DetectedIssues in line (server source only).
fn write_back(
    context: &RunContext<'_>,
    findings: &[PatientFindings],
    scope: &Scope,
    tare_patients_read: usize,
) -> Result<Option<server::WriteReport>, RunError> {
    let (options, config) = (context.options, context.config);
    let Some(client) = &context.client else {
        return Ok(None);
    };
    let dry_run_dir = options
        .dry_run
        .then(|| options.out_dir.join("transactions"));
    let write_options = server::WriteBackOptions {
        recorded: &context.started.text,
        scope,
        dry_run_dir: dry_run_dir.as_deref(),
        tare_patients_read,
        allow_mass_cancel: options.allow_mass_cancel,
    };
    let report = context
        .runtime
        .block_on(server::write_back(client, findings, config, &write_options))
        .map_err(|e| match e {
            server::WriteBackError::Fhir(e) => RunError::Server(e),
            server::WriteBackError::Save(e) => RunError::Output(e),
            server::WriteBackError::Interrupted => RunError::Interrupted,
        })?;
    Ok(Some(report))
}

/// Saves the state for the next run, only after a run that fully succeeded and wrote for
/// real; returns the summary's watermark.
#[allow(clippy::too_many_arguments)]
fn save_state(
    mode: &Mode,
    options: &RunOptions,
    config: &Config,
    started: &Started,
    rechecks: &[Recheck],
    scope: &Scope,
    fully_succeeded: bool,
) -> Result<Option<Watermark>, RunError> {
    let Some(path) = mode.state_path() else {
        return Ok(None);
    };
    if fully_succeeded {
        check_interrupted()?;
        let next_state = next_state(mode, options, config, started.utc, rechecks, scope);
        write_atomically(path, |w| {
            serde_json::to_writer_pretty(&mut *w, &next_state)?;
            w.write_all(b"\n")
        })?;
    }
    Ok(Some(Watermark {
        state_file: path.display().to_string(),
        used: mode.since().map(str::to_owned),
        next: fully_succeeded.then_some(started.utc),
    }))
}

/// The ids of a cohort's requested patients that the source had no Patient for.
fn requested_without_patient(scope: &Scope, timelines: &[PatientTimeline]) -> Vec<String> {
    let Some(requested) = scope.requested() else {
        return Vec::new();
    };
    let found: FxHashSet<&str> = timelines
        .iter()
        .filter(|t| t.has_patient_resource)
        .map(|t| t.patient_id.as_str())
        .collect();
    requested
        .iter()
        .filter(|id| !found.contains(id.as_str()))
        .map(|id| format!("{id} (no Patient)"))
        .collect()
}

/// One run, as its steps: lock, select, load, evaluate, write files, write back, save state,
/// summarise. A stop asked for by SIGINT/SIGTERM ends it between two steps.
pub fn run(options: &RunOptions, config: &Config) -> Result<RunOutcome, RunError> {
    let started = Started::now();
    let _locks = lock_outputs(options, config)?;
    let pool = thread_pool(config)?;
    let context = RunContext {
        options,
        config,
        started,
        client: server_client(&options.source, config)?,
        runtime: runtime(pool.current_num_threads())?,
        pool,
    };
    let (started, pool, client) = (&context.started, &context.pool, &context.client);

    let mut cohort = CohortReport::default();
    let (mode, scope) = choose_mode(
        options,
        config,
        client.as_ref(),
        &context.runtime,
        &mut cohort,
    )?;
    check_interrupted()?;

    let loaded = load_from(
        &options.source,
        client.as_ref(),
        config,
        options.as_of,
        &scope,
        pool,
    )?;
    let read_ms = started.clock.elapsed().as_millis();
    tracing::info!(
        mode = mode.name(),
        patients = loaded.timelines.len(),
        inputs = loaded.inputs.len(),
        read_ms,
        "source read"
    );
    if matches!(mode, Mode::Cohort) {
        cohort
            .unknown
            .extend(requested_without_patient(&scope, &loaded.timelines));
    }
    let tare_patients_read = loaded
        .timelines
        .iter()
        .filter(|t| !t.procedures.is_empty())
        .count();
    check_interrupted()?;

    let evaluate_started = Instant::now();
    let keeps_state = !matches!(mode, Mode::Cohort | Mode::Full { state_path: None });
    let (findings, rechecks) =
        evaluate_all(loaded.timelines, config, options.as_of, keeps_state, pool);
    let evaluate_ms = evaluate_started.elapsed().as_millis();
    check_interrupted()?;

    let write_started = Instant::now();
    write_files(options, config, &findings, &started.text, pool)?;
    let write_back = write_back(&context, &findings, &scope, tare_patients_read)?;
    let write_ms = write_started.elapsed().as_millis();

    let (patients, responses, flags) = RunSummary::count(&findings, config);
    // The state moves on only after a run that fully succeeded and wrote for real.
    let fully_succeeded = !options.dry_run
        && patients.evaluation_failed.is_empty()
        && write_back
            .as_ref()
            .is_none_or(|report| report.failed.is_empty() && report.mass_cancel.is_none());
    let watermark = save_state(
        &mode,
        options,
        config,
        started,
        &rechecks,
        &scope,
        fully_succeeded,
    )?;

    let summary = RunSummary {
        tool_version: env!("CARGO_PKG_VERSION"),
        mode: mode.name(),
        as_of: options.as_of.to_string(),
        started_at: started.text.clone(),
        source: options.source.to_string(),
        shard: options.shard.map(|s| s.to_string()),
        cohort: matches!(mode, Mode::Cohort).then_some(cohort),
        watermark,
        inputs: loaded.inputs,
        inputs_ignored: loaded.ignored_inputs,
        threads: pool.current_num_threads(),
        patients,
        responses,
        flags,
        resources: loaded.quality,
        write_back,
        server_requests: client.as_ref().map(FhirClient::requests_sent),
        timings: Timings {
            read_ms,
            evaluate_ms,
            write_ms,
            total_ms: started.clock.elapsed().as_millis(),
        },
    };
    let summary_path = options
        .out_dir
        .join(output_name("run-summary", "json", options.shard));
    write_atomically(&summary_path, |w| {
        serde_json::to_writer_pretty(&mut *w, &summary)?;
        w.write_all(b"\n")
    })?;
    tracing::info!(
        evaluated = summary.patients.evaluated,
        flags = summary.flags.total,
        total_ms = summary.timings.total_ms,
        "run finished"
    );
    Ok(RunOutcome { summary, findings })
}
