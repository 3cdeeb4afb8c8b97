//! Typed configuration. Built-in defaults are exactly docs/rules.md; a TOML file overrides any key
//! (`config/default.toml` documents every key with its docs/rules.md source). Validated once at start.

use crate::domain::{Marker, Severity};
use crate::ingest::CodeSystems;
use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// A `system` + `code` pair of a value set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Code {
    pub system: String,
    pub code: String,
}

impl Code {
    fn new(system: &str, code: &str) -> Self {
        Code {
            system: system.to_owned(),
            code: code.to_owned(),
        }
    }
}

const LOINC: &str = "http://loinc.org";

fn loinc(codes: &[&str]) -> Vec<Code> {
    codes.iter().map(|c| Code::new(LOINC, c)).collect()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub ingest: IngestConfig,
    pub code_systems: CodeSystemsConfig,
    pub codes: CodeSets,
    pub markers: MarkerLimits,
    pub episodes: EpisodeRules,
    pub eligibility: EligibilityRules,
    pub rules: FlagRules,
    pub output: OutputConfig,
    pub server: ServerConfig,
    pub schedule: ScheduleConfig,
    pub metrics: MetricsConfig,
    pub report: ReportConfig,
}

/// Where else `metrics.prom` goes (README "Logs and metrics"). Not clinical numbers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// A copy of each run's `metrics.prom` here (node_exporter's textfile collector reads
    /// `*.prom` in its `--collector.textfile.directory`), written whatever the run's outcome
    /// (a stop by SIGINT/SIGTERM included). A shard writes `NAME.shard-I-of-N.prom` beside
    /// it instead; `merge` writes this path.
    pub textfile_path: Option<std::path::PathBuf>,
}

/// The most worker threads `ingest.threads` (or `--threads`) may ask for.
pub const MAX_THREADS: usize = 256;

/// docs/rules.md §1.4 and "Conversions".
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// IANA time zone in which calendar dates are taken.
    pub time_zone: String,
    pub accepted_statuses: Vec<String>,
    /// AFP 1 IU/mL = 1.21 ng/mL (WHO 72/225).
    pub afp_ng_per_iu: f64,
    /// Albumin g/dL x 10 = g/L.
    pub albumin_g_l_per_g_dl: f64,
    /// Bilirubin mg/dL x 17.1 = umol/L.
    pub bilirubin_umol_l_per_mg_dl: f64,
    /// Worker threads for parsing and evaluation; 0 means one per core; at most
    /// `MAX_THREADS`.
    pub threads: usize,
    /// Procedures and results dated before this are left out (implausible).
    #[serde(deserialize_with = "strict_date::deserialize")]
    pub earliest_plausible_date: NaiveDate,
    /// ... and so are those dated more than this many days after the as-of date.
    pub latest_plausible_days_after_as_of: i64,
    /// A Bulk Data line longer than this is skipped unread and counted (file and line).
    pub max_line_bytes: usize,
    /// Reading a Bulk Data folder (opening and reading its files) stops with an error after
    /// this long: a file or a file system that does not answer never holds a run forever.
    pub max_read_minutes: f64,
    /// Pass over Bulk Data lines that provably hold no monitored code, without parsing them
    /// (docs/rules.md "Lines the job does not parse"); false parses every line in full.
    pub pass_over_irrelevant_lines: bool,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            time_zone: "UTC".into(),
            accepted_statuses: vec!["final".into(), "amended".into(), "corrected".into()],
            afp_ng_per_iu: 1.21,
            albumin_g_l_per_g_dl: 10.0,
            bilirubin_umol_l_per_mg_dl: 17.1,
            threads: 0,
            earliest_plausible_date: NaiveDate::from_ymd_opt(1900, 1, 1).expect("a date"),
            latest_plausible_days_after_as_of: 365,
            max_line_bytes: 16 << 20,
            max_read_minutes: 60.0,
            pass_over_irrelevant_lines: true,
        }
    }
}

/// Every date key of the configuration (`#[serde(deserialize_with =
/// "strict_date::deserialize")]`): `YYYY-MM-DD` exactly, as on the command line
/// (`commands::iso_date`), so `"2026-6-1"` or `"+2026-06-01"` is refused, never guessed at. A
/// TOML date (`key = 2026-06-01`, unquoted; TOML writes it `YYYY-MM-DD` too) reaches it as
/// that text, so it is read the same way; a date with a time is refused.
mod strict_date {
    use chrono::NaiveDate;
    use serde::de::{Error, Visitor};
    use serde::Deserializer;

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<NaiveDate, D::Error> {
        deserializer.deserialize_any(DateVisitor)
    }

    struct DateVisitor;

    impl<'de> Visitor<'de> for DateVisitor {
        type Value = NaiveDate;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a date written YYYY-MM-DD")
        }

        fn visit_str<E: Error>(self, text: &str) -> Result<NaiveDate, E> {
            crate::commands::iso_date(text).map_err(E::custom)
        }
    }
}

/// Code systems by every name (docs/rules.md "Code systems"): names a site adds to the
/// built-in table. A key naming a built-in system (by any of its names) adds aliases to it;
/// any other key is a new system with those aliases.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CodeSystemsConfig {
    pub aliases: BTreeMap<String, Vec<String>>,
}

/// docs/rules.md §1.1, "Patients and episodes" and "Eligibility".
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CodeSets {
    /// PIVKA-II / DCP: the unit decides between `pivka2` (arbitrary units) and `dcp` (mass).
    pub pivka: Vec<Code>,
    pub afp: Vec<Code>,
    pub afp_l3: Vec<Code>,
    pub albumin: Vec<Code>,
    pub bilirubin: Vec<Code>,
    pub tare_procedure: Vec<Code>,
    pub hcc_condition: Vec<Code>,
}

impl CodeSets {
    /// Every value set with its config key.
    pub fn named(&self) -> [(&'static str, &Vec<Code>); 7] {
        [
            ("codes.pivka", &self.pivka),
            ("codes.afp", &self.afp),
            ("codes.afp_l3", &self.afp_l3),
            ("codes.albumin", &self.albumin),
            ("codes.bilirubin", &self.bilirubin),
            ("codes.tare_procedure", &self.tare_procedure),
            ("codes.hcc_condition", &self.hcc_condition),
        ]
    }
}

impl Default for CodeSets {
    fn default() -> Self {
        CodeSets {
            pivka: loinc(&["34444-0", "50942-2"]),
            afp: loinc(&[
                "1834-1", "53962-7", "83073-7", "19176-7", "53961-9", "83072-9",
            ]),
            afp_l3: loinc(&["42332-7"]),
            albumin: loinc(&["1751-7"]),
            bilirubin: loinc(&["1975-2"]),
            tare_procedure: vec![
                Code::new("http://www.ama-assn.org/go/cpt", "79445"),
                Code::new(
                    "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
                    "S2095",
                ),
            ],
            hcc_condition: vec![
                Code::new("http://hl7.org/fhir/sid/icd-10-cm", "C22.0"),
                Code::new("http://snomed.info/sct", "109841003"),
                Code::new("http://snomed.info/sct", "25370001"),
            ],
        }
    }
}

/// Per-marker limits (docs/rules.md §1.1, §3 `marker-plateau` level).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkerLimit {
    /// Default upper limit of normal, in the canonical unit; none for albumin.
    pub uln: Option<f64>,
    /// `marker-plateau` level in the canonical unit; none disables the flag for the marker.
    #[serde(default)]
    pub plateau_level: Option<f64>,
    /// A value above this (canonical unit) is not a measurement: left out and counted.
    pub plausible_max: f64,
    /// A `referenceRange.high` is used as the ULN only between these multiples of `uln`
    /// (docs/rules.md §2.5): a laboratory's own limit differs from the default by a little,
    /// not by orders of magnitude (1e9 mAU/mL would silence every flag).
    #[serde(default = "default_reference_high_band")]
    pub reference_high_band: [f64; 2],
}

fn default_reference_high_band() -> [f64; 2] {
    [0.2, 10.0]
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarkerLimits {
    pub pivka2: MarkerLimit,
    pub dcp: MarkerLimit,
    pub afp: MarkerLimit,
    pub afp_l3: MarkerLimit,
    pub albumin: MarkerLimit,
    pub bilirubin: MarkerLimit,
}

impl Default for MarkerLimits {
    fn default() -> Self {
        let limit =
            |uln: Option<f64>, plateau_level: Option<f64>, plausible_max: f64| MarkerLimit {
                uln,
                plateau_level,
                plausible_max,
                reference_high_band: default_reference_high_band(),
            };
        // Plausible maxima: far above the highest values reported in the literature (PIVKA-II
        // and AFP run into the millions in advanced HCC), low enough to stop 1e308.
        MarkerLimits {
            pivka2: limit(Some(40.0), Some(1000.0), 1e8),
            dcp: limit(Some(7.5), None, 1e7),
            afp: limit(Some(20.0), None, 1e8),
            afp_l3: limit(Some(10.0), None, 100.0),
            albumin: limit(None, None, 100.0),
            bilirubin: limit(Some(21.0), None, 2000.0),
        }
    }
}

impl MarkerLimits {
    pub fn get(&self, marker: Marker) -> &MarkerLimit {
        match marker {
            Marker::Pivka2 => &self.pivka2,
            Marker::Dcp => &self.dcp,
            Marker::Afp => &self.afp,
            Marker::AfpL3 => &self.afp_l3,
            Marker::Albumin => &self.albumin,
            Marker::Bilirubin => &self.bilirubin,
        }
    }
}

/// docs/rules.md §1.6 and §2 "baseline".
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EpisodeRules {
    /// A later TARE within this many days of the episode's index date joins the episode.
    pub merge_days: i64,
    /// Baseline: the last value dated within [index - baseline_days, index].
    pub baseline_days: i64,
}

impl Default for EpisodeRules {
    fn default() -> Self {
        EpisodeRules {
            merge_days: 90,
            baseline_days: 60,
        }
    }
}

/// docs/rules.md §1.6.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EligibilityRules {
    pub min_age_years: u32,
    pub require_hcc: bool,
}

impl Default for EligibilityRules {
    fn default() -> Self {
        EligibilityRules {
            min_age_years: 18,
            require_hcc: true,
        }
    }
}

/// docs/rules.md §2 (response, next due date) and §3 (flags), §4 (ALBI matching).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlagRules {
    /// `PR`: latest <= this fraction of baseline; `no-response`: every post value > it.
    pub response_fraction: f64,
    /// `marker-rise`: latest >= reference nadir x (1 + rise_pct / 100).
    pub rise_pct: f64,
    /// `marker-plateau`: the latest differs from the one before by at most this % of that one.
    pub plateau_change_pct: f64,
    pub plateau_min_days_apart: i64,
    /// `no-response`: a post value dated >= index + this many days must exist.
    pub no_response_min_day: i64,
    /// next_due_date: + due_interval_early_days while within due_early_period_days of index,
    /// else + due_interval_late_days.
    pub due_interval_early_days: i64,
    pub due_early_period_days: i64,
    pub due_interval_late_days: i64,
    /// `surveillance-overdue`: as-of > next due + grace, and as-of <= index + max days.
    pub overdue_grace_days: i64,
    pub overdue_max_days: i64,
    /// `possible-reild` window, days after index (inclusive).
    pub reild_from_day: i64,
    pub reild_to_day: i64,
    /// `possible-reild`: bilirubin >= this (umol/L; 3 mg/dL) ...
    pub reild_bilirubin_umol_l: f64,
    /// ... or >= this multiple of the bilirubin baseline and above the bilirubin ULN.
    pub reild_baseline_multiple: f64,
    /// ALBI inputs must lie at most this many days from the row's date.
    pub albi_max_days: i64,
}

impl Default for FlagRules {
    fn default() -> Self {
        FlagRules {
            response_fraction: 0.5,
            rise_pct: 40.0,
            plateau_change_pct: 20.0,
            plateau_min_days_apart: 28,
            no_response_min_day: 76,
            due_interval_early_days: 30,
            due_early_period_days: 90,
            due_interval_late_days: 90,
            overdue_grace_days: 14,
            overdue_max_days: 365,
            reild_from_day: 14,
            reild_to_day: 120,
            reild_bilirubin_umol_l: 51.3,
            reild_baseline_multiple: 2.0,
            albi_max_days: 30,
        }
    }
}

/// docs/rules.md §4.3.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Flags at or above this severity become DetectedIssues.
    pub min_severity_written: Severity,
    pub identifier_system: String,
    pub flag_code_system: String,
    /// `DetectedIssue.reference`: where the site publishes docs/rules.md. None by default: a
    /// placeholder must never reach a clinician, so without it the reference is left out.
    pub rules_url: Option<String>,
    pub device_identifier_system: String,
    /// The write-back safety valve: a run that would cancel more than this share of the job's
    /// active DetectedIssues (or any, when it read no TARE patient) writes nothing unless
    /// `--allow-mass-cancel` is given.
    pub max_cancel_fraction: f64,
    /// ... but a run that cancels at most this many is never stopped by the share alone (a
    /// small cohort's ordinary night: 2 of 7 flags ending is not a mass cancellation).
    pub mass_cancel_min_count: usize,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            min_severity_written: Severity::Moderate,
            identifier_system: "https://tare-marker-monitor.example.org/fhir/NamingSystem/flag-id"
                .into(),
            flag_code_system: "https://tare-marker-monitor.example.org/fhir/CodeSystem/flag".into(),
            rules_url: None,
            device_identifier_system:
                "https://tare-marker-monitor.example.org/fhir/NamingSystem/device".into(),
            max_cancel_fraction: 0.25,
            mass_cancel_min_count: 10,
        }
    }
}

/// The audit report (`report`): who is who, and where the rules are read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportConfig {
    /// The `Patient.identifier` system whose value is shown as the MRN; without it (or when a
    /// patient has none of it) the first identifier is shown.
    pub mrn_system: Option<String>,
    /// Where readers find the rules; without it the report carries docs/rules.md itself.
    pub rules_url: Option<String>,
    /// `--deidentify`: the environment variable holding the pseudonym key ...
    pub pseudonym_secret_env: Option<String>,
    /// ... or a file holding it (the environment variable wins when both are set).
    pub pseudonym_secret_file: Option<std::path::PathBuf>,
}

/// A FHIR server as source (`run --server URL` or `base_url` here). Not clinical numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// FHIR base URL; `--server` overrides it.
    pub base_url: Option<String>,
    /// `_count` of every search.
    pub page_size: u32,
    /// Patients per Condition/Observation search (`patient=a,b,c`).
    pub patient_batch: usize,
    /// Searches in flight at once.
    pub concurrency: usize,
    /// Write-back transactions in flight at once. 1 by default: HFS (SQLite) answers 503 with
    /// `Retry-After: 5` to concurrent transactions; a server that takes parallel writes can
    /// have more.
    pub write_concurrency: usize,
    /// A connection not made within this long is given up (and retried).
    pub connect_timeout_secs: u64,
    /// No byte of an answer within this long (the first, or the next): the request is given
    /// up and not retried, so a server that never answers ends the run within two minutes.
    pub first_byte_timeout_secs: u64,
    /// One request in all, its body included (a Bulk Data file download has an hour).
    pub request_timeout_secs: u64,
    /// Send `Prefer: handling=strict`, so a server rejects a search parameter it does not know
    /// instead of silently ignoring it (and returning everything).
    pub strict_search: bool,
    /// How a full run reads: `search` (paged searches) or `export` (Bulk Data `$export`).
    pub read_with: ReadWith,
    /// With `export`: export the members of this Group (`Group/ID/$export`) instead of the
    /// whole system.
    pub export_group: Option<String>,
    /// With `export`: status polls wait this long when the server gives no `Retry-After`...
    pub export_poll_secs: u64,
    /// ... and at most this long whatever `Retry-After` says (HFS asks for 120 s even for an
    /// export that is ready in one) ...
    pub export_max_poll_interval_secs: u64,
    /// ... and the export is abandoned (and deleted) when not ready after this long.
    pub export_max_wait_secs: u64,
    /// A response body larger than this is refused with an error (a search page of 200
    /// Observations is well under a megabyte). Bulk Data files stream to disk and are not
    /// bound by it ...
    pub max_response_bytes: u64,
    /// ... but by this: a Bulk Data file that holds more once decompressed (a gzip-encoded
    /// download, or a `.ndjson.gz` file) is refused with an error.
    pub max_download_bytes: u64,
    /// A search that runs to more pages than this stops with an error.
    pub max_pages_per_search: usize,
    /// Reading from the server (searches, or an export) stops with an error after this long;
    /// 0: no limit.
    pub max_read_minutes: f64,
    /// Retries of one request stop once this long has passed since its first attempt.
    pub max_retry_secs: u64,
    /// An internal certificate authority (PEM) trusted besides the operating system's store
    /// and the bundled web roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// Mutual TLS: the client certificate chain (PEM) and its private key (PEM).
    pub client_cert_file: Option<std::path::PathBuf>,
    pub client_key_file: Option<std::path::PathBuf>,
    /// `http://` is refused for any host but loopback unless this is set.
    pub allow_insecure_http: bool,
    pub auth: AuthConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadWith {
    #[default]
    Search,
    Export,
}

/// Unattended runs: the incremental state and sharding. Not clinical numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// Incremental runs: the state file (watermark and known cohort). Without it every run is
    /// a full run.
    pub state_file: Option<std::path::PathBuf>,
    /// An incremental run asks for what changed since the previous run's start minus this
    /// overlap (clock skew between us and the server, transactions that commit late).
    pub overlap_minutes: u32,
    /// Shards in all, when the shard index comes from `JOB_COMPLETION_INDEX` (a Kubernetes
    /// Indexed Job); `--shard I/N` overrides both.
    pub shard_count: u32,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            state_file: None,
            overlap_minutes: 15,
            shard_count: 1,
        }
    }
}

/// How the job authenticates to the FHIR server. Secrets come from the environment or files,
/// never from the command line, and never reach a log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    #[default]
    None,
    /// A static bearer token from `token_env` or `token_file`.
    Bearer,
    /// SMART Backend Services: client credentials with a signed JWT assertion.
    SmartBackend,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub method: AuthMethod,
    /// bearer: name of the environment variable holding the token.
    pub token_env: Option<String>,
    /// bearer: file holding the token (read at start; surrounding white space ignored).
    pub token_file: Option<std::path::PathBuf>,
    /// smart-backend: the client id registered with the authorization server.
    pub client_id: Option<String>,
    /// smart-backend: the private key that signs the client assertion: PKCS#8 PEM, or a JWK Set
    /// (or one JWK) in JSON, from which the key of `key_id` (or the only one for the algorithm)
    /// is used.
    pub private_key_file: Option<std::path::PathBuf>,
    /// smart-backend: `kid` of that key in the JWKS the authorization server knows.
    pub key_id: Option<String>,
    /// smart-backend: RS384 or ES384.
    pub algorithm: String,
    /// smart-backend: token endpoint; default: from `[base]/.well-known/smart-configuration`.
    pub token_endpoint: Option<String>,
    /// smart-backend: the scopes asked for.
    pub scope: String,
}

impl AuthConfig {
    /// A token source that cannot apply to the method: both `token_env` and `token_file` for
    /// `bearer` (one of them would be silently ignored), or either with a method that sends no
    /// static token. The first key refused and why, naming every key concerned.
    fn keys_that_cannot_apply(&self) -> Option<(&'static str, String)> {
        let set: Vec<&'static str> = [
            ("server.auth.token_env", self.token_env.is_some()),
            ("server.auth.token_file", self.token_file.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect();
        let first = *set.first()?;
        match self.method {
            AuthMethod::Bearer if set.len() == 2 => Some((
                first,
                "server.auth.token_file is set too: a bearer token comes from one of them; unset \
                 the other"
                    .into(),
            )),
            AuthMethod::Bearer => None,
            AuthMethod::None | AuthMethod::SmartBackend => {
                let (method, why) = match self.method {
                    AuthMethod::None => ("none", "which sends no token"),
                    _ => ("smart-backend", "whose token comes from the token endpoint"),
                };
                let also = match set.get(1) {
                    Some(other) => format!(" ({other} too)"),
                    None => String::new(),
                };
                Some((
                    first,
                    format!(
                        "set{also} with server.auth.method = \"{method}\", {why}: a token \
                         from a variable or a file is sent with method = \"bearer\" only; set \
                         that method, or unset {}",
                        if set.len() == 2 { "both" } else { "it" }
                    ),
                ))
            }
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            method: AuthMethod::None,
            token_env: None,
            token_file: None,
            client_id: None,
            private_key_file: None,
            key_id: None,
            algorithm: "RS384".into(),
            token_endpoint: None,
            scope: "system/Patient.read system/Procedure.read system/Condition.read system/Observation.read system/DetectedIssue.read system/DetectedIssue.write system/Provenance.write system/Device.read system/Device.write".into(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            base_url: None,
            page_size: 1000,
            patient_batch: 50,
            concurrency: 4,
            write_concurrency: 1,
            connect_timeout_secs: 10,
            first_byte_timeout_secs: 60,
            request_timeout_secs: 120,
            strict_search: true,
            read_with: ReadWith::Search,
            export_group: None,
            export_poll_secs: 10,
            export_max_poll_interval_secs: 300,
            export_max_wait_secs: 3600,
            max_response_bytes: 256 << 20,
            max_download_bytes: 16 << 30,
            max_pages_per_search: 100_000,
            max_read_minutes: 720.0,
            max_retry_secs: 600,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            allow_insecure_http: false,
            auth: AuthConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `message` in one line (`toml_error_line`): the binary prints an error as one line.
    #[error("config file {} is not valid: {message}", path.display())]
    Parse {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("environment variable {variable} is not a valid setting: {message}")]
    Environment { variable: String, message: String },
    #[error("config value {key} is not valid: {message}")]
    Invalid { key: &'static str, message: String },
}

/// A TOML error in one line: `line 2, column 16: invalid string; expected ...` when it points
/// into `text`, else its message and the key it is about (`unknown field ...; in `rules``).
/// toml writes several lines, with the text around the place; an error is printed as one.
fn toml_error_line(error: &toml::de::Error, text: &str) -> String {
    let one_line = |text: &str| {
        text.lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    };
    match error.span().and_then(|span| text.get(..span.start)) {
        Some(before) => {
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            format!(
                "line {line}, column {column}: {}",
                one_line(error.message())
            )
        }
        None => one_line(&error.to_string()),
    }
}

/// The prefix of the environment variables that set a key: `TMM_SERVER__BASE_URL` sets
/// `server.base_url` (`__` between the levels, any case).
pub const ENV_PREFIX: &str = "TMM_";

/// The log filter: a variable with the prefix that is no key, and that a near miss
/// (`TMM_LOGS`, `TMM_LOG_LEVEL`) is told about.
const ENV_LOG: &str = "TMM_LOG";
/// The prefix of the test suite's own variables.
const ENV_TEST_PREFIX: &str = "TMM_TEST_";

/// Every key as its environment variable (`TMM_SERVER__BASE_URL`), from the shipped
/// `config/default.toml`, which lists each key (optional ones commented out).
fn environment_keys() -> Vec<String> {
    let mut section = String::new();
    let mut keys = Vec::new();
    for line in include_str!("../config/default.toml").lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.replace('.', "__");
            continue;
        }
        let line = line.strip_prefix('#').map_or(line, str::trim_start);
        let Some((key, _)) = line.split_once(" = ") else {
            continue;
        };
        if !section.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            keys.push(format!("{ENV_PREFIX}{section}__{key}").to_uppercase());
        }
    }
    keys
}

/// Where the metrics textfile goes when the configuration itself is refused: the
/// `TMM_METRICS__TEXTFILE_PATH` variable (the key in any case), else `[metrics]
/// textfile_path` of the file if that much of it reads. A run refused for its configuration
/// still writes its exit code there, so the alert on a failed run fires the same night.
pub fn textfile_path_despite_errors(
    file: Option<&Path>,
    environment: impl IntoIterator<Item = (String, String)>,
) -> Option<std::path::PathBuf> {
    let variable = format!("{ENV_PREFIX}METRICS__TEXTFILE_PATH");
    let from_environment = environment.into_iter().find_map(|(name, value)| {
        (name.starts_with(ENV_PREFIX) && name.eq_ignore_ascii_case(&variable)).then_some(value)
    });
    if let Some(path) = from_environment.filter(|p| !p.is_empty()) {
        return Some(path.into());
    }
    let table: toml::Table = toml::from_str(&std::fs::read_to_string(file?).ok()?).ok()?;
    let path = table.get("metrics")?.get("textfile_path")?.as_str()?;
    (!path.is_empty()).then(|| path.into())
}

/// `TMM_` variables that set no key (one underscore where two belong, a misspelling), each
/// with the nearest key's variable: they would otherwise be ignored without a word. Variables
/// the configuration names (`server.auth.token_env`, `report.pseudonym_secret_env`), `TMM_LOG`
/// and `TMM_TEST_*` are not keys.
pub fn unknown_variables<'a>(
    names: impl IntoIterator<Item = &'a str>,
    config: &Config,
) -> Vec<(String, String)> {
    let mut keys = environment_keys();
    keys.push(ENV_LOG.to_owned());
    let named = [
        config.server.auth.token_env.as_deref(),
        config.report.pseudonym_secret_env.as_deref(),
    ];
    names
        .into_iter()
        .filter(|name| !named.contains(&Some(name)))
        .filter_map(|name| {
            let upper = name.to_uppercase();
            if !upper.starts_with(ENV_PREFIX) || upper.starts_with(ENV_TEST_PREFIX) {
                return None;
            }
            // Only `TMM_` in capitals is read: `tmm_server__base_url` sets nothing either.
            let read_as_key = name.starts_with(ENV_PREFIX) && name.contains("__");
            if read_as_key || name == ENV_LOG {
                return None;
            }
            if upper.starts_with(ENV_LOG) && !upper.contains("__") {
                return Some((name.to_owned(), ENV_LOG.to_owned()));
            }
            Some((name.to_owned(), nearest_key(&upper, &keys)?.clone()))
        })
        .collect()
}

/// The words of a variable or key after the prefix (`TMM_SERVER__BASE_URL`: server, base,
/// url), in upper case.
fn words_of(name: &str) -> Vec<&str> {
    name.get(ENV_PREFIX.len()..)
        .unwrap_or_default()
        .split('_')
        .filter(|w| !w.is_empty())
        .collect()
}

/// How far a word of a variable is from a word of a key, from 0 (the same) to 1; `None` when
/// it is not taken for it: a word one is the start of (`STATE`, `STATEFILE`; three letters at
/// least) is near, a misspelling within a third of its letters nearer the more alike.
fn word_distance(word: &str, key_word: &str) -> Option<f64> {
    if word == key_word {
        return Some(0.0);
    }
    let starts = |a: &str, b: &str| b.len() >= 3 && a.starts_with(b);
    if word.len() >= 3 && (starts(key_word, word) || starts(word, key_word)) {
        return Some(0.25);
    }
    let longest = word.len().max(key_word.len()) as f64;
    let distance = strsim::levenshtein(word, key_word) as f64 / longest;
    (distance <= 0.34).then_some(distance)
}

/// Where `word` (two letters at least) is the initials of consecutive words of a key (`TZ`:
/// TIME, ZONE).
fn initials_at(word: &str, key_words: &[&str]) -> Option<usize> {
    if word.len() < 2 || word.len() > key_words.len() {
        return None;
    }
    (0..=key_words.len() - word.len()).find(|&at| {
        key_words[at..at + word.len()]
            .iter()
            .map(|w| w.as_bytes().first())
            .eq(word.as_bytes().iter().map(Some))
    })
}

/// The key a variable that sets none most likely meant, word by word (`TMM_STATE` is
/// `TMM_SCHEDULE__STATE_FILE`, `TMM_URL` `TMM_SERVER__BASE_URL`, `TMM_TZ`
/// `TMM_INGEST__TIME_ZONE`): the key that matches most
/// of its words, then the nearest, then the one with fewest words left over, then the
/// nearest whole. A variable none of whose words is near a key's word gets the key nearest
/// as a whole (or without its section).
fn nearest_key<'k>(variable: &str, keys: &'k [String]) -> Option<&'k String> {
    let words = words_of(variable);
    let score = |key: &String| {
        let key_words = words_of(key);
        let mut used = vec![false; key_words.len()];
        let (mut matched, mut distance) = (0usize, 0.0f64);
        for word in &words {
            let best = key_words
                .iter()
                .enumerate()
                .filter_map(|(i, key_word)| Some((word_distance(word, key_word)?, i)))
                .min_by(|a, b| a.0.total_cmp(&b.0));
            if let Some((d, i)) = best {
                matched += 1;
                distance += d;
                used[i] = true;
            } else if let Some(at) = initials_at(word, &key_words) {
                // `TZ` for TIME_ZONE: the initials of consecutive words.
                matched += 1;
                distance += 0.25;
                used[at..at + word.len()].iter_mut().for_each(|u| *u = true);
            }
        }
        let left_over = used.iter().filter(|u| !**u).count();
        let whole = strsim::levenshtein(variable, key);
        (matched, distance, left_over, whole)
    };
    let best = keys
        .iter()
        .map(|key| (score(key), key))
        .min_by(|(a, _), (b, _)| {
            b.0.cmp(&a.0)
                .then(a.1.total_cmp(&b.1))
                .then(a.2.cmp(&b.2))
                .then(a.3.cmp(&b.3))
        })?;
    if best.0 .0 > 0 {
        return Some(best.1);
    }
    // Against the whole variable, and against the key without its section (a variable that
    // left the section out).
    keys.iter().min_by_key(|key| {
        let bare = key.rsplit("__").next().unwrap_or(key);
        let whole = strsim::levenshtein(variable, key);
        whole.min(strsim::levenshtein(
            variable,
            &format!("{ENV_PREFIX}{bare}"),
        ))
    })
}

/// The built-in defaults as a TOML table, the bottom layer of every configuration. (They
/// always serialize: a unit test reads them back from `config/default.toml`.)
fn defaults_table() -> toml::Table {
    toml::Table::try_from(Config::default()).unwrap_or_default()
}

/// One environment variable as a layer: `TMM_SERVER__CONCURRENCY=8` is `[server]
/// concurrency = 8`.
fn environment_layer(variable: &str, value: &str) -> toml::Table {
    let path: Vec<String> = variable[ENV_PREFIX.len()..]
        .split("__")
        .map(str::to_lowercase)
        .collect();
    let parsed = toml::from_str::<toml::Table>(&format!("value = {value}"))
        .ok()
        .and_then(|mut t| t.remove("value"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let mut layer = toml::Table::new();
    let mut current = &mut layer;
    for (i, key) in path.iter().enumerate() {
        if i + 1 == path.len() {
            current.insert(key.clone(), parsed.clone());
        } else {
            current = current
                .entry(key.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .expect("inserted as a table");
        }
    }
    layer
}

/// The keys of `set` whose values differ from `default`'s, as `prefix.key` (nested tables by
/// their keys).
fn differing_keys(prefix: &str, set: &toml::Table, default: &toml::Table, keys: &mut Vec<String>) {
    for (key, value) in set {
        match (value, default.get(key)) {
            (toml::Value::Table(inner), Some(toml::Value::Table(default_inner))) => {
                differing_keys(&format!("{prefix}.{key}"), inner, default_inner, keys)
            }
            (value, Some(default_value)) if value == default_value => {}
            _ => keys.push(format!("{prefix}.{key}")),
        }
    }
}

/// The longest span, in days, any day-count setting may have: a century.
const MAX_DAYS: i64 = 36_525;

fn merge(base: &mut toml::Table, overrides: toml::Table) {
    for (key, value) in overrides {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_table)), toml::Value::Table(override_table)) => {
                merge(base_table, override_table)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

impl Config {
    /// Reads a TOML file over the built-in defaults and validates the result.
    /// Reads a TOML file over the built-in defaults and validates the result.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        Config::load(Some(path), std::iter::empty())
    }

    /// The configuration in its layers, each laid over the one before key by key: the built-in
    /// defaults (docs/rules.md), the TOML file if any, then every environment variable
    /// `TMM_SECTION__KEY` (twelve-factor: a Kubernetes Secret or a systemd unit sets a key
    /// without a file). A variable's value is read as a TOML value (`8`, `true`,
    /// `["final"]`), else as text. Validated once, at the end.
    pub fn load(
        file: Option<&Path>,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut layers = defaults_table();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let parse_error = |error| ConfigError::Parse {
                path: path.to_owned(),
                message: toml_error_line(&error, &text),
            };
            let overrides: toml::Table = toml::from_str(&text).map_err(parse_error)?;
            merge(&mut layers, overrides);
            Config::deserialize(layers.clone()).map_err(parse_error)?;
        }
        let environment: Vec<(String, String)> = environment.into_iter().collect();
        let mut variables: Vec<(String, String)> = environment
            .iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX) && name.contains("__"))
            .cloned()
            .collect();
        variables.sort();
        for (variable, value) in variables {
            merge(&mut layers, environment_layer(&variable, &value));
            Config::deserialize(layers.clone()).map_err(|error| ConfigError::Environment {
                variable,
                message: toml_error_line(&error, ""),
            })?;
        }
        let config = Config::deserialize(layers).map_err(|error| ConfigError::Parse {
            path: file.map(Path::to_owned).unwrap_or_default(),
            message: toml_error_line(&error, ""),
        })?;
        config.validate()?;
        for (variable, nearest) in
            unknown_variables(environment.iter().map(|(n, _)| n.as_str()), &config)
        {
            tracing::warn!("environment variable {variable} sets no configuration key and is ignored; did you mean {nearest}?");
        }
        Ok(config)
    }

    /// The `[server]` keys set to other than their defaults (`server.base_url`,
    /// `server.auth.method`), from the file or a `TMM_SERVER__*` variable: settings a folder
    /// source would ignore.
    pub fn server_keys_set(&self) -> Vec<String> {
        let set = toml::Table::try_from(&self.server).unwrap_or_default();
        let default = toml::Table::try_from(ServerConfig::default()).unwrap_or_default();
        let mut keys = Vec::new();
        differing_keys("server", &set, &default, &mut keys);
        keys
    }

    /// Overlays a TOML text on the defaults key by key: `[markers.pivka2] uln = 35` keeps the
    /// default plateau level. Lists (code sets, statuses) are replaced whole.
    pub fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        let overrides: toml::Table = toml::from_str(text)?;
        let mut merged = defaults_table();
        merge(&mut merged, overrides);
        Config::deserialize(merged)
    }

    fn deserialize(table: toml::Table) -> Result<Config, toml::de::Error> {
        table.try_into()
    }

    /// The code systems: the built-in table with the site's aliases.
    pub fn code_systems(
        &self,
    ) -> Result<CodeSystems, crate::ingest::code_systems::CodeSystemError> {
        CodeSystems::new(&self.code_systems.aliases)
    }

    pub fn time_zone(&self) -> chrono_tz::Tz {
        // validate() has checked it parses.
        self.ingest.time_zone.parse().unwrap_or(chrono_tz::UTC)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        // Each worker is a thread of the reading pool and one of the FHIR client's runtime:
        // a typo of a few zeros must not start a hundred thousand of them.
        if self.ingest.threads > MAX_THREADS {
            return invalid(
                "ingest.threads",
                format!(
                    "{} is more than {MAX_THREADS} worker threads; 0 means one per core",
                    self.ingest.threads
                ),
            );
        }
        // A link a clinician follows: an absolute http(s) URL, never empty or a script.
        for (key, url) in [
            ("report.rules_url", &self.report.rules_url),
            ("output.rules_url", &self.output.rules_url),
        ] {
            if let Some(url) = url {
                let web = url::Url::parse(url)
                    .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.has_host());
                if !web {
                    return invalid(
                        key,
                        format!(
                            "{:?} is not an http(s) URL; leave the key out to {}",
                            crate::text::shown(url),
                            match key {
                                "report.rules_url" => "ship the rules inside the report",
                                _ => "write DetectedIssues without a reference",
                            }
                        ),
                    );
                }
            }
        }
        if self.ingest.time_zone.parse::<chrono_tz::Tz>().is_err() {
            return invalid(
                "ingest.time_zone",
                format!("{:?} is not an IANA time zone", self.ingest.time_zone),
            );
        }
        let positive = [
            ("ingest.afp_ng_per_iu", self.ingest.afp_ng_per_iu),
            (
                "ingest.albumin_g_l_per_g_dl",
                self.ingest.albumin_g_l_per_g_dl,
            ),
            (
                "ingest.bilirubin_umol_l_per_mg_dl",
                self.ingest.bilirubin_umol_l_per_mg_dl,
            ),
            ("rules.response_fraction", self.rules.response_fraction),
            (
                "rules.reild_bilirubin_umol_l",
                self.rules.reild_bilirubin_umol_l,
            ),
            (
                "rules.reild_baseline_multiple",
                self.rules.reild_baseline_multiple,
            ),
        ];
        for (key, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                return invalid(key, format!("{value} must be a positive number"));
            }
        }
        if !(0.0..1.0).contains(&self.rules.response_fraction) {
            return invalid(
                "rules.response_fraction",
                format!("{} must lie between 0 and 1", self.rules.response_fraction),
            );
        }
        // Day counts are bounded by a century, so no date arithmetic can leave the calendar.
        let rules = &self.rules;
        for (key, days) in [
            ("episodes.merge_days", self.episodes.merge_days),
            ("episodes.baseline_days", self.episodes.baseline_days),
            ("rules.plateau_min_days_apart", rules.plateau_min_days_apart),
            ("rules.no_response_min_day", rules.no_response_min_day),
            (
                "rules.due_interval_early_days",
                rules.due_interval_early_days,
            ),
            ("rules.due_early_period_days", rules.due_early_period_days),
            ("rules.due_interval_late_days", rules.due_interval_late_days),
            ("rules.overdue_grace_days", rules.overdue_grace_days),
            ("rules.overdue_max_days", rules.overdue_max_days),
            ("rules.reild_from_day", rules.reild_from_day),
            ("rules.reild_to_day", rules.reild_to_day),
            ("rules.albi_max_days", rules.albi_max_days),
            (
                "ingest.latest_plausible_days_after_as_of",
                self.ingest.latest_plausible_days_after_as_of,
            ),
        ] {
            if !(0..=MAX_DAYS).contains(&days) {
                return invalid(key, format!("{days} must lie between 0 and {MAX_DAYS}"));
            }
        }
        if self.rules.reild_from_day > self.rules.reild_to_day {
            return invalid(
                "rules.reild_from_day",
                "must not be after rules.reild_to_day".into(),
            );
        }
        for (key, value, max) in [
            ("server.page_size", self.server.page_size as u64, 1000),
            (
                "server.patient_batch",
                self.server.patient_batch as u64,
                1000,
            ),
            ("server.concurrency", self.server.concurrency as u64, 64),
            (
                "server.write_concurrency",
                self.server.write_concurrency as u64,
                64,
            ),
            (
                "server.max_pages_per_search",
                self.server.max_pages_per_search as u64,
                10_000_000,
            ),
            (
                "server.max_response_bytes",
                self.server.max_response_bytes,
                1 << 40,
            ),
            (
                "server.max_download_bytes",
                self.server.max_download_bytes,
                1 << 50,
            ),
            (
                "server.connect_timeout_secs",
                self.server.connect_timeout_secs,
                3600,
            ),
            (
                "server.first_byte_timeout_secs",
                self.server.first_byte_timeout_secs,
                86_400,
            ),
            (
                "server.request_timeout_secs",
                self.server.request_timeout_secs,
                86_400,
            ),
            (
                "schedule.shard_count",
                u64::from(self.schedule.shard_count),
                10_000,
            ),
            (
                "ingest.max_line_bytes",
                self.ingest.max_line_bytes as u64,
                1 << 32,
            ),
        ] {
            if !(1..=max).contains(&value) {
                return invalid(key, format!("{value} must lie between 1 and {max}"));
            }
        }
        if self.ingest.threads > 1024 {
            return invalid(
                "ingest.threads",
                format!(
                    "{} must lie between 0 (one per core) and 1024",
                    self.ingest.threads
                ),
            );
        }
        if self.ingest.earliest_plausible_date.year() < 1 {
            return invalid(
                "ingest.earliest_plausible_date",
                "must be in year 1 or later".into(),
            );
        }
        if !(self.ingest.max_read_minutes.is_finite() && self.ingest.max_read_minutes > 0.0) {
            return invalid(
                "ingest.max_read_minutes",
                format!(
                    "{} must be more than 0 (every read has a deadline)",
                    self.ingest.max_read_minutes
                ),
            );
        }
        if !(self.server.max_read_minutes.is_finite() && self.server.max_read_minutes >= 0.0) {
            return invalid(
                "server.max_read_minutes",
                format!(
                    "{} must be 0 (no limit) or more",
                    self.server.max_read_minutes
                ),
            );
        }
        if !(self.output.max_cancel_fraction.is_finite()
            && (0.0..=1.0).contains(&self.output.max_cancel_fraction))
        {
            return invalid(
                "output.max_cancel_fraction",
                format!(
                    "{} must lie between 0 and 1",
                    self.output.max_cancel_fraction
                ),
            );
        }
        if let Some((key, message)) = self.server.auth.keys_that_cannot_apply() {
            return invalid(key, message);
        }
        if let Err(e) = self.code_systems() {
            return invalid("code_systems.aliases", e.to_string());
        }
        for (set, codes) in self.codes.named() {
            if let Some(code) = codes
                .iter()
                .find(|c| c.system.trim().is_empty() || c.code.trim().is_empty())
            {
                return invalid(
                    "codes",
                    format!("{set}: {code:?} needs both a system and a code"),
                );
            }
        }
        if self.ingest.accepted_statuses.is_empty() {
            return invalid("ingest.accepted_statuses", "must not be empty".into());
        }
        for marker in Marker::ALL {
            let limit = self.markers.get(marker);
            if let Some(uln) = limit.uln {
                if !(uln.is_finite() && uln >= 0.0) {
                    return invalid("markers.*.uln", format!("{}: {uln}", marker.key()));
                }
            }
            if !(limit.plausible_max.is_finite() && limit.plausible_max > 0.0)
                || limit.uln.is_some_and(|uln| uln >= limit.plausible_max)
            {
                return invalid(
                    "markers.*.plausible_max",
                    format!(
                        "{}: {} must be a positive number above the ULN",
                        marker.key(),
                        limit.plausible_max
                    ),
                );
            }
            if marker.is_tumor_marker() && limit.uln.is_none() {
                return invalid(
                    "markers.*.uln",
                    format!("{} needs an upper limit of normal", marker.key()),
                );
            }
            let [low, high] = limit.reference_high_band;
            if !(low.is_finite() && high.is_finite() && low > 0.0 && low <= 1.0 && high >= 1.0) {
                return invalid(
                    "markers.*.reference_high_band",
                    format!(
                        "{}: [{low}, {high}] must be two multiples of the ULN, the first \
                         between 0 and 1, the second 1 or more",
                        marker.key()
                    ),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_worker_threads_than_the_limit_are_refused() {
        let mut config = Config::default();
        config.ingest.threads = MAX_THREADS;
        assert!(config.validate().is_ok());
        config.ingest.threads = 100_000;
        match config.validate() {
            Err(ConfigError::Invalid { key, message }) => {
                assert_eq!(key, "ingest.threads");
                assert_eq!(
                    message,
                    "100000 is more than 256 worker threads; 0 means one per core"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_variable_with_one_underscore_names_the_nearest_key() {
        let config = Config::default();
        let unknown = unknown_variables(
            [
                "TMM_SERVER_BASE_URL",
                "TMM_LOG",
                "TMM_TEST_HAPI_URL",
                "TMM_SERVER__BASE_URL",
                "HOME",
            ],
            &config,
        );
        assert_eq!(
            unknown,
            [(
                "TMM_SERVER_BASE_URL".to_owned(),
                "TMM_SERVER__BASE_URL".to_owned()
            )]
        );
    }

    #[test]
    fn a_rules_url_must_be_an_http_link_a_clinician_can_follow() {
        for (url, valid) in [
            ("https://intranet.example/hepatology/rules", true),
            ("http://intranet/rules.html", true),
            ("", false),
            ("not a url", false),
            ("javascript:alert(document.domain)", false),
            ("file:///etc/passwd", false),
        ] {
            let mut report = Config::default();
            report.report.rules_url = Some(url.into());
            let mut output = Config::default();
            output.output.rules_url = Some(url.into());
            for (config, key) in [(report, "report.rules_url"), (output, "output.rules_url")] {
                match config.validate() {
                    Ok(()) => assert!(valid, "{key} = {url:?} was accepted"),
                    Err(ConfigError::Invalid {
                        key: refused,
                        message,
                    }) => {
                        assert!(!valid, "{key} = {url:?} was refused: {message}");
                        assert_eq!(refused, key);
                        assert!(message.contains("is not an http(s) URL"), "{message}");
                    }
                    Err(other) => panic!("{other}"),
                }
            }
        }
    }

    #[test]
    fn a_variable_whose_prefix_is_not_in_capitals_is_named_with_the_key_it_meant() {
        assert_eq!(
            unknown_variables(
                ["tmm_server__base_url", "Tmm_Log", "tmm_test_x"],
                &Config::default()
            ),
            [
                (
                    "tmm_server__base_url".to_owned(),
                    "TMM_SERVER__BASE_URL".to_owned()
                ),
                ("Tmm_Log".to_owned(), "TMM_LOG".to_owned()),
            ]
        );
    }

    #[test]
    fn a_short_variable_is_matched_to_a_key_word_by_word() {
        for (variable, meant) in [
            ("TMM_STATE", "TMM_SCHEDULE__STATE_FILE"),
            ("TMM_URL", "TMM_SERVER__BASE_URL"),
            ("TMM_BASE_URL", "TMM_SERVER__BASE_URL"),
            ("TMM_SHARDS", "TMM_SCHEDULE__SHARD_COUNT"),
            ("TMM_TOKEN", "TMM_SERVER__AUTH__TOKEN_ENV"),
            ("TMM_CA", "TMM_SERVER__CA_FILE"),
            ("TMM_CERT", "TMM_SERVER__CLIENT_CERT_FILE"),
            ("TMM_CONCURENCY", "TMM_SERVER__CONCURRENCY"),
            ("TMM_THREADS", "TMM_INGEST__THREADS"),
            ("TMM_TZ", "TMM_INGEST__TIME_ZONE"),
        ] {
            assert_eq!(
                unknown_variables([variable], &Config::default()),
                [(variable.to_owned(), meant.to_owned())],
                "{variable}"
            );
        }
    }

    #[test]
    fn the_variable_the_token_comes_from_is_not_an_unknown_key() {
        let mut config = Config::default();
        config.server.auth.token_env = Some("TMM_FHIR_TOKEN".into());
        assert!(unknown_variables(["TMM_FHIR_TOKEN"], &config).is_empty());
        assert!(unknown_variables(["TMM_LOG", "TMM_TEST_HAPI_URL"], &config).is_empty());
        assert_eq!(
            unknown_variables(["TMM_LOGS", "TMM_LOG_LEVEL"], &config),
            [
                ("TMM_LOGS".to_owned(), "TMM_LOG".to_owned()),
                ("TMM_LOG_LEVEL".to_owned(), "TMM_LOG".to_owned())
            ]
        );
        config.report.pseudonym_secret_env = Some("TMM_PSEUDONYM_SECRET".into());
        assert!(unknown_variables(["TMM_PSEUDONYM_SECRET"], &config).is_empty());
        assert_eq!(
            unknown_variables(["TMM_STATE_FILE"], &Config::default()),
            [(
                "TMM_STATE_FILE".to_owned(),
                "TMM_SCHEDULE__STATE_FILE".to_owned()
            )]
        );
    }

    #[test]
    fn the_server_keys_set_are_those_off_their_defaults() {
        assert!(Config::default().server_keys_set().is_empty());
        let config = Config::load(
            None,
            [
                ("TMM_SERVER__BASE_URL", "https://fhir.example.org/R4"),
                ("TMM_SERVER__AUTH__METHOD", "\"bearer\""),
                ("TMM_SERVER__AUTH__TOKEN_ENV", "TMM_FHIR_TOKEN"),
                ("TMM_SERVER__CONCURRENCY", "7"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
        .unwrap();
        assert_eq!(
            config.server_keys_set(),
            [
                "server.auth.method",
                "server.auth.token_env",
                "server.base_url",
                "server.concurrency"
            ]
        );
    }

    #[test]
    fn defaults_are_valid_and_match_rules() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.markers.pivka2.uln, Some(40.0));
        assert_eq!(c.markers.dcp.uln, Some(7.5));
        assert_eq!(c.markers.afp.uln, Some(20.0));
        assert_eq!(c.markers.afp_l3.uln, Some(10.0));
        assert_eq!(c.markers.bilirubin.uln, Some(21.0));
    }

    #[test]
    fn the_shipped_default_config_lists_every_key_at_its_default() {
        let shipped: toml::Table = toml::from_str(include_str!("../config/default.toml")).unwrap();
        let built_in = toml::Table::try_from(Config::default()).unwrap();
        assert_eq!(shipped, built_in);
    }

    #[test]
    fn zero_or_absurd_concurrency_is_rejected() {
        for (text, key) in [
            ("[server]\nconcurrency = 0\n", "server.concurrency"),
            (
                "[server]\nwrite_concurrency = 0\n",
                "server.write_concurrency",
            ),
            ("[server]\nconcurrency = 100000\n", "server.concurrency"),
            ("[server]\npage_size = 0\n", "server.page_size"),
            ("[ingest]\nthreads = 100000\n", "ingest.threads"),
            ("[ingest]\nmax_line_bytes = 0\n", "ingest.max_line_bytes"),
            (
                "[ingest]\nmax_read_minutes = 0.0\n",
                "ingest.max_read_minutes",
            ),
            ("[episodes]\nmerge_days = 99999999\n", "episodes.merge_days"),
        ] {
            let error = Config::from_toml(text).unwrap().validate().unwrap_err();
            assert!(error.to_string().contains(key), "{text}: {error}");
        }
    }

    #[test]
    fn environment_variables_override_the_file_key_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("site.toml");
        std::fs::write(&file, "[server]\nconcurrency = 2\npage_size = 50\n").unwrap();
        let env = [
            ("TMM_SERVER__BASE_URL", "https://fhir.example.org/R4"),
            ("TMM_SERVER__CONCURRENCY", "8"),
            ("TMM_INGEST__ACCEPTED_STATUSES", "[\"final\"]"),
            ("TMM_MARKERS__PIVKA2__ULN", "35.5"),
            // Not settings: no `__`, or another prefix.
            ("TMM_FHIR_TOKEN", "secret"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let config = Config::load(Some(&file), env).unwrap();
        assert_eq!(
            config.server.base_url.as_deref(),
            Some("https://fhir.example.org/R4")
        );
        assert_eq!(config.server.concurrency, 8);
        assert_eq!(config.server.page_size, 50);
        assert_eq!(config.ingest.accepted_statuses, ["final"]);
        assert_eq!(config.markers.pivka2.uln, Some(35.5));
        assert_eq!(config.markers.pivka2.plateau_level, Some(1000.0));
    }

    #[test]
    fn a_bad_environment_variable_is_named_and_validated_like_the_file() {
        let env = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
        let error = Config::load(None, env("TMM_SERVER__BSE_URL", "x")).unwrap_err();
        assert!(
            matches!(&error, ConfigError::Environment { variable, .. } if variable == "TMM_SERVER__BSE_URL"),
            "{error}"
        );
        let error = Config::load(None, env("TMM_SERVER__CONCURRENCY", "0")).unwrap_err();
        assert!(error.to_string().contains("server.concurrency"), "{error}");
    }

    #[test]
    fn a_config_error_is_one_line_that_says_where_and_what() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("site.toml");
        std::fs::write(&file, "[rules]\nrise_pct = = 3\n").unwrap();
        let error = Config::load(Some(&file), Vec::new()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "config file {} is not valid: line 2, column 12: invalid string; expected `\"`, `'`",
                file.display()
            )
        );
        std::fs::write(&file, "[rules]\nrise_percent = 30\n").unwrap();
        let error = Config::load(Some(&file), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(!error.contains('\n'), "{error}");
        assert!(error.contains("unknown field `rise_percent`"), "{error}");
        assert!(error.ends_with("; in `rules`"), "{error}");
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name() {
        let e = Config::from_toml("[rules]\nrise_percent = 30\n").unwrap_err();
        assert!(e.to_string().contains("rise_percent"), "{e}");
    }

    #[test]
    fn overriding_one_key_of_a_marker_keeps_the_others() {
        let c = Config::from_toml("[markers.pivka2]\nuln = 35.0\n").unwrap();
        assert_eq!(c.markers.pivka2.uln, Some(35.0));
        assert_eq!(c.markers.pivka2.plateau_level, Some(1000.0));
        assert_eq!(c.markers.afp.uln, Some(20.0));
    }

    #[test]
    fn wrong_type_is_rejected_with_its_key() {
        let e = Config::from_toml("[episodes]\nmerge_days = \"ninety\"\n").unwrap_err();
        assert!(e.to_string().contains("merge_days"), "{e}");
    }

    #[test]
    fn a_config_date_not_written_yyyy_mm_dd_is_refused_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("site.toml");
        let key = "in `ingest.earliest_plausible_date`";
        for (value, refusal) in [
            (
                "\"2026-6-1\"",
                format!("\"2026-6-1\" is not a date written YYYY-MM-DD (four-digit year, two-digit month and day); {key}"),
            ),
            (
                "\"+2026-06-01\"",
                format!("\"+2026-06-01\" is not a date written YYYY-MM-DD (four-digit year, two-digit month and day); {key}"),
            ),
            (
                "\"2026-06-01T00:00:00\"",
                format!("\"2026-06-01T00:00:00\" is not a date written YYYY-MM-DD (four-digit year, two-digit month and day); {key}"),
            ),
            (
                "2026-06-01T08:00:00",
                format!("\"2026-06-01T08:00:00\" is not a date written YYYY-MM-DD (four-digit year, two-digit month and day); {key}"),
            ),
            (
                "\"2026-13-01\"",
                format!("2026-13-01: input is out of range; {key}"),
            ),
        ] {
            std::fs::write(&file, format!("[ingest]\nearliest_plausible_date = {value}\n"))
                .unwrap();
            let error = Config::load(Some(&file), Vec::new()).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("config file {} is not valid: {refusal}", file.display()),
                "{value}"
            );
        }
        // `YYYY-MM-DD`, quoted or as a TOML date, is the date it says.
        for value in ["\"2026-06-01\"", "2026-06-01"] {
            std::fs::write(
                &file,
                format!("[ingest]\nearliest_plausible_date = {value}\n"),
            )
            .unwrap();
            let config = Config::load(Some(&file), Vec::new()).unwrap();
            assert_eq!(
                config.ingest.earliest_plausible_date,
                NaiveDate::from_ymd_opt(2026, 6, 1).unwrap()
            );
        }
        // A variable is read the same way.
        let variable = "TMM_INGEST__EARLIEST_PLAUSIBLE_DATE";
        for value in ["2026-6-1", "+2026-06-01"] {
            let error =
                Config::load(None, vec![(variable.to_owned(), value.to_owned())]).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("environment variable {variable} is not a valid setting: \"{value}\" is not a date written YYYY-MM-DD (four-digit year, two-digit month and day); {key}")
            );
        }
        let config =
            Config::load(None, vec![(variable.to_owned(), "2026-06-01".to_owned())]).unwrap();
        assert_eq!(
            config.ingest.earliest_plausible_date,
            NaiveDate::from_ymd_opt(2026, 6, 1).unwrap()
        );
    }

    #[test]
    fn a_token_source_that_cannot_apply_to_the_auth_method_is_refused_naming_the_keys() {
        let load = |variables: &[(&str, &str)]| {
            Config::load(
                None,
                variables
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<Vec<_>>(),
            )
        };
        let (method, env, file) = (
            "TMM_SERVER__AUTH__METHOD",
            ("TMM_SERVER__AUTH__TOKEN_ENV", "TMM_FHIR_TOKEN"),
            ("TMM_SERVER__AUTH__TOKEN_FILE", "/run/secrets/fhir-token"),
        );
        for (variables, refusal) in [
            (
                vec![(method, "bearer"), env, file],
                "config value server.auth.token_env is not valid: server.auth.token_file is set too: a bearer token comes from one of them; unset the other",
            ),
            (
                vec![env],
                "config value server.auth.token_env is not valid: set with server.auth.method = \"none\", which sends no token: a token from a variable or a file is sent with method = \"bearer\" only; set that method, or unset it",
            ),
            (
                vec![(method, "none"), file],
                "config value server.auth.token_file is not valid: set with server.auth.method = \"none\", which sends no token: a token from a variable or a file is sent with method = \"bearer\" only; set that method, or unset it",
            ),
            (
                vec![env, file],
                "config value server.auth.token_env is not valid: set (server.auth.token_file too) with server.auth.method = \"none\", which sends no token: a token from a variable or a file is sent with method = \"bearer\" only; set that method, or unset both",
            ),
            (
                vec![(method, "smart-backend"), env],
                "config value server.auth.token_env is not valid: set with server.auth.method = \"smart-backend\", whose token comes from the token endpoint: a token from a variable or a file is sent with method = \"bearer\" only; set that method, or unset it",
            ),
        ] {
            let error = load(&variables).unwrap_err();
            assert_eq!(error.to_string(), refusal, "{variables:?}");
        }
        for variables in [
            vec![(method, "bearer"), env],
            vec![(method, "bearer"), file],
        ] {
            load(&variables).unwrap();
        }
    }

    #[test]
    fn bad_time_zone_is_rejected() {
        let mut c = Config::default();
        c.ingest.time_zone = "Mars/Olympus".into();
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("ingest.time_zone"), "{e}");
    }
}
