//! The commands, one file each with its own arguments. `main.rs` parses the command line,
//! sets up logging, calls `Command::execute`, and maps the one error type here to the
//! documented exit codes (README "Exit codes"); an error is printed once, there.

/// A line on stdout, written through `write_stdout`: every line a command prints goes through
/// it (`println!` would panic, exit 101, on a closed or full stdout).
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::commands::write_stdout(&format!("{}\n", format_args!($($arg)*)))
    };
}

pub mod check;
pub mod exit;
pub mod explain;
pub mod generate;
pub mod merge;
pub mod report;
pub mod run;

use crate::config::{Config, ConfigError};
use crate::fhir::error::FhirError;
use crate::source::{ReadError, Reader, Source};
use crate::workers::{Workers, WorkersError};
use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "tare-marker-monitor",
    version,
    about = "Evaluates PIVKA-II / AFP courses after TARE and flags cases for clinician review",
    after_help = exit::help()
)]
pub struct Cli {
    /// Log lines on stderr as text, or as one JSON object per line (for log collectors).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// More log lines (-v: debug, -vv: trace); TMM_LOG, a tracing filter, overrides both.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Fewer log lines (-q: warnings and errors, -qq: errors only).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub quiet: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Evaluate every patient and write markers.csv, flags.csv, detected-issues.ndjson and
    /// run-summary.json to --out; with a server, write the DetectedIssues back to it.
    Run(run::RunArgs),
    /// Combine the part files of a sharded run into one markers.csv, flags.csv,
    /// detected-issues.ndjson and run-summary.json.
    Merge(merge::MergeArgs),
    /// Write the audit report: report.html (self-contained: cohort summary, flagged patients,
    /// a chart per flagged patient, the flag trail from the server, data quality) and its CSV
    /// twins.
    Report(report::ReportArgs),
    /// Print one patient's course and findings for a clinician.
    Explain(explain::ExplainArgs),
    /// Write a synthetic cohort in the Bulk Data layout (deterministic for a seed).
    Generate(generate::GenerateArgs),
    /// Try what a run asks of the FHIR server (CapabilityStatement, token, one search of each
    /// kind, DetectedIssue $validate), one line per check; writes nothing. Exit code 0 when
    /// every check passed, 3 otherwise.
    Check(check::CheckArgs),
}

impl Cli {
    /// `-v` count less `-q` count.
    pub fn verbosity(&self) -> i8 {
        let clamp = |n: u8| i8::try_from(n).unwrap_or(i8::MAX);
        clamp(self.verbose).saturating_sub(clamp(self.quiet))
    }
}

impl Command {
    pub fn execute(self) -> Result<(), CommandError> {
        match self {
            Command::Run(args) => run::execute(args),
            Command::Merge(args) => merge::execute(args),
            Command::Report(args) => report::execute(args),
            Command::Explain(args) => explain::execute(args),
            Command::Generate(args) => generate::execute(args),
            Command::Check(args) => check::execute(args),
        }
    }
}

/// Writes `text` to stdout as it is: what a command prints once its work is done (a run's
/// summary line, `explain`'s course, `check`'s lines). A stdout closed early (`| head -2`) or
/// full (`>/dev/full`) is no failure of the command: its outputs are published by then, so the
/// error is ignored (a debug line says so) and the exit code stays what it would have been.
pub fn write_stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(error) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        tracing::debug!(%error, "stdout not written (closed or full); ignored");
    }
}

/// A date as `YYYY-MM-DD` exactly: `2026-11-1` is refused rather than read as a guess.
pub fn iso_date(text: &str) -> Result<NaiveDate, String> {
    let shaped = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    if !shaped {
        return Err(format!(
            "{:?} is not a date written YYYY-MM-DD (four-digit year, two-digit month and day)",
            crate::text::shown(text)
        ));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|e| format!("{text}: {e}"))
}

/// Where to read, as of when, with which configuration: shared by run, report and explain.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// Folder in the FHIR Bulk Data layout (`Patient*.ndjson`, `Observation*.ndjson.gz`, ...).
    #[arg(long, value_name = "DIR", conflicts_with = "server")]
    pub source_dir: Option<PathBuf>,
    /// FHIR server base URL to read from (default: the config's `server.base_url`).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Evaluate as of this date (YYYY-MM-DD); default: today in the configured time zone.
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = iso_date)]
    pub as_of: Option<NaiveDate>,
    /// TOML file over the built-in defaults (docs/rules.md); see config/default.toml.
    /// Environment variables TMM_SECTION__KEY override both.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Worker threads (default: the config's `ingest.threads`, 0 = one per core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

impl SourceArgs {
    /// The configuration: defaults, the file, the environment, then `--threads`.
    pub fn config(&self) -> Result<Config, CommandError> {
        let mut config = Config::load(self.config.as_deref(), std::env::vars())?;
        if let Some(threads) = self.threads {
            config.ingest.threads = threads;
            // Checked like the value it replaces.
            config.validate()?;
        }
        Ok(config)
    }

    pub fn source(&self, config: &Config) -> Result<Source, CommandError> {
        match (&self.source_dir, &self.server, &config.server.base_url) {
            (Some(dir), _, _) => {
                // Server settings a folder read would ignore: refused, as every option that
                // cannot apply.
                let set = config.server_keys_set();
                if !set.is_empty() {
                    return Err(CommandError::NotApplicable(format!(
                        "{} set (in the config file or a TMM_SERVER__ variable) {} a server source; --source-dir reads a folder and would ignore {}: unset {} for folder runs, or read with --server",
                        set.join(", "),
                        if set.len() == 1 { "applies to" } else { "apply to" },
                        if set.len() == 1 { "it" } else { "them" },
                        if set.len() == 1 { "it" } else { "them" },
                    )));
                }
                Ok(Source::Folder(dir.clone()))
            }
            (None, Some(url), _) | (None, None, Some(url)) => Ok(Source::Server(url.clone())),
            (None, None, None) => Err(CommandError::NoSource),
        }
    }

    /// `--as-of`, or today in the configured time zone; within the plausible dates.
    pub fn as_of(&self, config: &Config) -> Result<NaiveDate, CommandError> {
        let date = self.as_of.unwrap_or_else(|| {
            chrono::Utc::now()
                .with_timezone(&config.time_zone())
                .date_naive()
        });
        let latest = NaiveDate::from_ymd_opt(9000, 12, 31).unwrap_or(NaiveDate::MAX);
        let earliest = config.ingest.earliest_plausible_date;
        if date < earliest || date > latest {
            return Err(CommandError::AsOf {
                date,
                earliest,
                latest,
            });
        }
        Ok(date)
    }

    /// The config, the as-of date, the source opened once and the workers: what run, report
    /// and explain start from.
    pub fn open(&self) -> Result<Opened, CommandError> {
        let config = self.config()?;
        let as_of = self.as_of(&config)?;
        self.open_with(config, as_of)
    }

    /// `open`, with the config and the as-of date already read (a command that logs its start
    /// line once it knows them, before the source is opened).
    pub fn open_with(&self, config: Config, as_of: NaiveDate) -> Result<Opened, CommandError> {
        let reader = Reader::open(&self.source(&config)?, &config)?;
        let workers = Workers::new(config.ingest.threads)?;
        // Before the first search: a server that cannot serve these reads says so now.
        if let Some(client) = reader.client() {
            let needs = crate::fhir::capabilities::Needs {
                bulk: config.server.read_with == crate::config::ReadWith::Export,
                ..Default::default()
            };
            workers
                .runtime
                .block_on(crate::fhir::capabilities::require(client, needs))?;
        }
        Ok(Opened {
            config,
            as_of,
            reader,
            workers,
        })
    }
}

pub struct Opened {
    pub config: Config,
    pub as_of: NaiveDate,
    pub reader: Reader,
    pub workers: Workers,
}

/// The one error type of the commands, and the documented exit code of each kind.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An option that cannot apply to the chosen source or mode: refused, never ignored.
    #[error("{0}")]
    NotApplicable(String),
    #[error("give --source-dir DIR or --server URL (or server.base_url in the config)")]
    NoSource,
    #[error("give --server URL (or server.base_url in the config)")]
    NoServer,
    /// `check`: some checks failed (each printed with why).
    #[error("{failures} of {checks} checks failed")]
    ChecksFailed { failures: usize, checks: usize },
    #[error("--as-of {date} lies outside {earliest} .. {latest}")]
    AsOf {
        date: NaiveDate,
        earliest: NaiveDate,
        latest: NaiveDate,
    },
    #[error(transparent)]
    Shard(#[from] crate::cohort::CohortError),
    #[error(transparent)]
    Run(#[from] crate::run::RunError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Server(#[from] FhirError),
    #[error(transparent)]
    Workers(#[from] WorkersError),
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
    #[error(transparent)]
    Deidentify(#[from] crate::report::SecretError),
    #[error(transparent)]
    Explain(#[from] crate::explain::ExplainError),
    #[error(transparent)]
    Merge(#[from] crate::merge::MergeError),
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    #[error("cannot write the cohort to {}", path.display())]
    Generate {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Some patients could not be evaluated; everyone else was.
    #[error(
        "the evaluation of {0} patients failed (listed with the reason under patients.evaluation_failed in run-summary.json); their DetectedIssues were left as they were"
    )]
    EvaluationFailed(usize),
    /// The safety valve stopped the write-back.
    #[error("{0}")]
    MassCancel(crate::sink::server::MassCancel),
    /// Some patients' write-back failed; the others were written. How many, not who: the
    /// patients are listed in run-summary.json (and at debug level).
    #[error(
        "the write-back of {} failed (listed with the server's answer under write_back.failed in run-summary.json); the others were written",
        match .0.len() {
            1 => "1 patient".to_owned(),
            n => format!("{n} patients"),
        }
    )]
    WriteBackFailed(Vec<crate::sink::summary::PatientFailure>),
}

impl CommandError {
    /// What the binary prints: one `error:` line, the whole chain of causes, with every
    /// control and bidirectional character escaped (`text::shown`), so no text inside can
    /// start a line of its own.
    pub fn lines(&self) -> Vec<String> {
        vec![format!(
            "error: {}",
            crate::text::shown(&crate::fhir::error::chain(self))
        )]
    }
}

impl CommandError {
    pub fn exit_code(&self) -> u8 {
        use crate::output::OutputError;
        use crate::run::RunError;
        // A stop asked for ends whatever was under way with its own code.
        if crate::interrupt::requested() {
            return exit::INTERRUPTED;
        }
        let fhir = |e: &FhirError| match e {
            // Credentials missing, unreadable or refused: one code, the operator's to fix.
            FhirError::Credentials(_)
            | FhirError::Status {
                status: 401 | 403, ..
            } => exit::CONFIG,
            FhirError::Token { source, .. } => match source {
                // An authorization server down or overloaded is a source unavailable, not
                // credentials to fix.
                crate::fhir::error::TokenError::NoAnswer { .. } => exit::SOURCE,
                crate::fhir::error::TokenError::Status { status, .. }
                    if *status == 429 || *status >= 500 =>
                {
                    exit::SOURCE
                }
                _ => exit::CONFIG,
            },
            FhirError::BaseUrl { .. } | FhirError::Refused { .. } | FhirError::Client(_) => {
                exit::CONFIG
            }
            _ => exit::SOURCE,
        };
        match self {
            CommandError::Config(_)
            | CommandError::NotApplicable(_)
            | CommandError::NoSource
            | CommandError::NoServer
            | CommandError::AsOf { .. }
            | CommandError::Deidentify(_)
            | CommandError::Shard(_) => exit::CONFIG,
            CommandError::Run(run) => match run {
                RunError::Cohort(_) | RunError::CohortFile { .. } | RunError::State(_) => {
                    exit::CONFIG
                }
                RunError::Server(e) | RunError::Read(ReadError::Server(e)) => fhir(e),
                RunError::Read(_) => exit::SOURCE,
                RunError::Output(OutputError::Locked { .. }) => exit::LOCKED,
                RunError::NothingUsable { .. } => exit::NOTHING_USABLE,
                RunError::Output(OutputError::NotOurs { .. }) => exit::CONFIG,
                RunError::Output(OutputError::Interrupted { .. }) | RunError::Interrupted => {
                    exit::INTERRUPTED
                }
                _ => exit::FAILURE,
            },
            CommandError::Read(ReadError::Server(e))
            | CommandError::Server(e)
            | CommandError::Report(crate::report::ReportError::Trail(e))
            | CommandError::Report(crate::report::ReportError::Read(ReadError::Server(e)))
            | CommandError::Explain(crate::explain::ExplainError::Read(ReadError::Server(e))) => {
                fhir(e)
            }
            CommandError::Explain(crate::explain::ExplainError::UnknownPatient { .. }) => {
                exit::NOTHING_USABLE
            }
            CommandError::Read(_)
            | CommandError::Report(_)
            | CommandError::Explain(crate::explain::ExplainError::Read(_)) => exit::SOURCE,
            CommandError::Output(OutputError::Locked { .. }) => exit::LOCKED,
            CommandError::Output(OutputError::NotOurs { .. }) => exit::CONFIG,
            CommandError::Merge(
                crate::merge::MergeError::Differs { .. }
                | crate::merge::MergeError::NotItsShard { .. }
                | crate::merge::MergeError::Twice { .. }
                | crate::merge::MergeError::SameRun { .. }
                | crate::merge::MergeError::OutIsAPart { .. }
                | crate::merge::MergeError::ShardCounts(_)
                | crate::merge::MergeError::NoIdentity { .. },
            ) => exit::CONFIG,
            CommandError::ChecksFailed { .. } => exit::SOURCE,
            CommandError::EvaluationFailed(_) => exit::EVALUATION_FAILED,
            CommandError::MassCancel(_) => exit::MASS_CANCEL,
            CommandError::WriteBackFailed(_) => exit::PATIENTS_FAILED,
            _ => exit::FAILURE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::summary::PatientFailure;

    #[test]
    fn failed_evaluations_exit_5_and_a_write_back_failure_4() {
        // The CLI cannot be made to fail an evaluation (ingest keeps every date it could not
        // compute with out); the code is the table's.
        assert_eq!(
            CommandError::EvaluationFailed(1).exit_code(),
            exit::EVALUATION_FAILED
        );
        assert_eq!(exit::EVALUATION_FAILED, 5);
        assert_eq!(CommandError::WriteBackFailed(vec![]).exit_code(), 4);
    }

    #[test]
    fn a_token_endpoint_down_is_a_source_unavailable_and_a_refusal_is_credentials() {
        let token = |status: u16| {
            CommandError::Server(FhirError::Token {
                url: "https://idp.example.org/token".into(),
                source: crate::fhir::error::TokenError::Status {
                    status,
                    oauth_error: String::new(),
                    description: String::new(),
                },
            })
            .exit_code()
        };
        assert_eq!(token(503), exit::SOURCE);
        assert_eq!(token(500), exit::SOURCE);
        assert_eq!(token(429), exit::SOURCE);
        assert_eq!(token(400), exit::CONFIG);
        assert_eq!(token(401), exit::CONFIG);
    }

    #[test]
    fn a_write_back_failure_is_one_error_line_with_the_count_and_no_patient_data() {
        let failure = |id: &str, message: &str| PatientFailure {
            patient_id: id.into(),
            message: message.into(),
        };
        let failed = CommandError::WriteBackFailed(vec![
            failure("p1", "HTTP 412: changed\nerror: patient p9: forged"),
            failure("p2", "HTTP 500: \u{1b}[2J\u{202e}"),
        ]);
        assert_eq!(
            failed.lines(),
            ["error: the write-back of 2 patients failed (listed with the server's answer under write_back.failed in run-summary.json); the others were written"]
        );
        assert_eq!(
            CommandError::WriteBackFailed(vec![failure("p1", "HTTP 422")]).lines(),
            ["error: the write-back of 1 patient failed (listed with the server's answer under write_back.failed in run-summary.json); the others were written"]
        );
    }

    #[test]
    fn an_error_prints_as_one_escaped_line() {
        let config = CommandError::Config(ConfigError::Invalid {
            key: "server.base_url",
            message: "a\nb".into(),
        });
        assert_eq!(
            config.lines(),
            ["error: config value server.base_url is not valid: a\\u{a}b"]
        );
    }
}
