//! One run: source folder -> timelines -> evaluation -> output files.

use crate::config::Config;
use crate::domain::{PatientFindings, PatientTimeline};
use crate::evaluate::evaluate_patient;
use crate::fhir::client::{FhirClient, FhirError};
use crate::ingest::Ingestor;
use crate::sink::summary::{RunSummary, Timings};
use crate::sink::{csv as csv_sink, detected_issue, server};
use crate::source::{ndjson, search, Loaded};
use chrono::NaiveDate;
use rayon::prelude::*;
use std::io::Write;
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
    pool: &rayon::ThreadPool,
) -> Result<Loaded, RunError> {
    let client = server_client(source, config)?;
    load_from(source, client.as_ref(), config, pool)
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
    pool: &rayon::ThreadPool,
) -> Result<Loaded, RunError> {
    let ingestor = Ingestor::new(config);
    let read_server = |client: &FhirClient| -> Result<Loaded, RunError> {
        let runtime = runtime(pool.current_num_threads())?;
        Ok(pool.install(|| runtime.block_on(search::load(client, &ingestor, config)))?)
    };
    match (source, client) {
        (Source::Folder(dir), _) => Ok(pool.install(|| ndjson::load(dir, &ingestor))?),
        (Source::Server(_), Some(client)) => read_server(client),
        (Source::Server(url), None) => read_server(&FhirClient::new(url, &config.server)?),
    }
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
    let ingestor = Ingestor::new(config);
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

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub source: Source,
    /// With a server source: send no writes, save the transaction Bundles under `out`.
    pub dry_run: bool,
    pub as_of: NaiveDate,
    pub out_dir: PathBuf,
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
        .map(|t| evaluate_patient(t, config, as_of))
        .collect()
}

/// A rayon pool with the configured number of threads (0: one per core).
pub fn thread_pool(config: &Config) -> Result<rayon::ThreadPool, RunError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(config.ingest.threads)
        .build()
        .map_err(|e| RunError::Threads(e.to_string()))
}

/// Writes a file whole or not at all: a temp file beside it, then a rename.
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<(), RunError> {
    let write_error = |source| RunError::Write {
        path: path.display().to_string(),
        source,
    };
    let temp = path.with_extension("partial");
    let file = std::fs::File::create(&temp).map_err(write_error)?;
    let mut writer = std::io::BufWriter::new(file);
    fill(&mut writer).map_err(write_error)?;
    let file = writer
        .into_inner()
        .map_err(|e| write_error(e.into_error()))?;
    file.sync_all().map_err(write_error)?;
    std::fs::rename(&temp, path).map_err(write_error)
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, RunError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| RunError::Threads(e.to_string()))
}

fn csv_io(e: csv::Error) -> std::io::Error {
    std::io::Error::other(e)
}

pub fn run(options: &RunOptions, config: &Config) -> Result<RunOutcome, RunError> {
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let pool = thread_pool(config)?;
    let client = server_client(&options.source, config)?;
    let loaded = load_from(&options.source, client.as_ref(), config, &pool)?;
    let read_ms = started.elapsed().as_millis();
    tracing::info!(
        patients = loaded.timelines.len(),
        inputs = loaded.inputs.len(),
        read_ms,
        "source read"
    );

    let evaluate_started = Instant::now();
    // Each timeline is dropped as soon as it is evaluated.
    let findings: Vec<PatientFindings> = pool.install(|| {
        loaded
            .timelines
            .into_par_iter()
            .map(|t| evaluate_patient(&t, config, options.as_of))
            .collect()
    });
    let evaluate_ms = evaluate_started.elapsed().as_millis();

    let write_started = Instant::now();
    std::fs::create_dir_all(&options.out_dir).map_err(|source| RunError::Write {
        path: options.out_dir.display().to_string(),
        source,
    })?;
    let out = |name: &str| options.out_dir.join(name);
    // The CSV files and the FHIR resources are independent: write them side by side.
    let (tables, resources) = pool.install(|| {
        rayon::join(
            || -> Result<(), RunError> {
                write_atomically(&out("markers.csv"), |w| {
                    csv_sink::write_markers(w, &findings).map_err(csv_io)
                })?;
                write_atomically(&out("flags.csv"), |w| {
                    csv_sink::write_flags(w, &findings, config).map_err(csv_io)
                })
            },
            || {
                write_atomically(&out("detected-issues.ndjson"), |w| {
                    detected_issue::write_ndjson(w, &findings, config, &started_at).map(|_| ())
                })
            },
        )
    });
    tables?;
    resources?;
    let write_back = match &client {
        Some(client) => {
            let dry_run_dir = options.dry_run.then(|| out("transactions"));
            let report = runtime(pool.current_num_threads())?
                .block_on(server::write_back(
                    client,
                    &findings,
                    config,
                    &started_at,
                    dry_run_dir.as_deref(),
                ))
                .map_err(|e| match e {
                    server::WriteBackError::Fhir(e) => RunError::Server(e),
                    server::WriteBackError::Save { path, source } => {
                        RunError::Write { path, source }
                    }
                })?;
            Some(report)
        }
        None => None,
    };
    let write_ms = write_started.elapsed().as_millis();

    let (patients, responses, flags) = RunSummary::count(&findings, config);
    let summary = RunSummary {
        tool_version: env!("CARGO_PKG_VERSION"),
        as_of: options.as_of.to_string(),
        started_at,
        source: options.source.to_string(),
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
            total_ms: started.elapsed().as_millis(),
        },
    };
    write_atomically(&out("run-summary.json"), |w| {
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
