//! Where resources come from: a folder in the FHIR Bulk Data layout (`ndjson`), a FHIR
//! server's search API (`search`) or its Bulk Data `$export` (`bulk`). All feed the same
//! `Ingestor` checks and the same `CohortBuilder`, so a resource counts the same way whichever
//! way it arrived. A command opens its source once, as a `Reader`.

pub mod bulk;
pub mod ndjson;
pub mod search;

use crate::cohort::Scope;
use crate::config::{Config, ReadWith};
use crate::domain::PatientTimeline;
use crate::fhir::client::{FhirClient, FhirError};
use crate::ingest::{CopyKey, DataQuality, Ingestor, LineOutcome, ResourceType};
use crate::timeline::CohortBuilder;
use crate::workers::Workers;
use chrono::NaiveDate;
use rustc_hash::FxHashSet;
use std::path::PathBuf;

/// Where the resources come from, as the command line or the config names it.
#[derive(Debug, Clone)]
pub enum Source {
    /// A folder in the Bulk Data layout.
    Folder(PathBuf),
    /// A FHIR server's base URL.
    Server(String),
}

impl Source {
    /// `folder` or `server`, for the logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Folder(_) => "folder",
            Source::Server(_) => "server",
        }
    }

    /// The source in one spelling, for the run's identity (what `merge` compares): a folder
    /// as its canonical absolute path (`./dir`, `dir/` and a link to it are one folder), a
    /// server's base URL with its scheme and host in lower case, without a default port, a
    /// trailing slash, a query or a fragment.
    pub fn identity(&self) -> String {
        match self {
            Source::Folder(path) => std::fs::canonicalize(path)
                .or_else(|_| std::path::absolute(path))
                .unwrap_or_else(|_| path.clone())
                .display()
                .to_string(),
            Source::Server(text) => match url::Url::parse(text.trim()) {
                Ok(mut url) => {
                    url.set_query(None);
                    url.set_fragment(None);
                    let path = url.path().trim_end_matches('/').to_owned();
                    url.set_path(&path);
                    url.as_str().trim_end_matches('/').to_owned()
                }
                Err(_) => text.clone(),
            },
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Folder(path) => write!(f, "{}", path.display()),
            Source::Server(url) => f.write_str(url),
        }
    }
}

/// Why a source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Folder(#[from] ndjson::SourceError),
    #[error(transparent)]
    Server(#[from] FhirError),
    #[error("cannot make a private folder for the export's files")]
    ExportFolder(#[source] std::io::Error),
}

/// A source opened once per command: a folder, or a server with its one client (so one token
/// serves every request of the command).
pub enum Reader {
    Folder(PathBuf),
    Server {
        url: String,
        client: Box<FhirClient>,
    },
}

impl Reader {
    pub fn open(source: &Source, config: &Config) -> Result<Reader, FhirError> {
        Ok(match source {
            Source::Folder(dir) => Reader::Folder(dir.clone()),
            Source::Server(url) => Reader::Server {
                url: url.clone(),
                client: Box::new(FhirClient::new(url, &config.server)?),
            },
        })
    }

    /// The server's client; `None` for a folder.
    pub fn client(&self) -> Option<&FhirClient> {
        match self {
            Reader::Folder(_) => None,
            Reader::Server { client, .. } => Some(client),
        }
    }

    pub fn source(&self) -> Source {
        match self {
            Reader::Folder(dir) => Source::Folder(dir.clone()),
            Reader::Server { url, .. } => Source::Server(url.clone()),
        }
    }

    /// Reads the patients of `scope` (a folder is read whole, and counted whole; a cohort
    /// then picks its patients from it), as of `as_of` (the end of the plausible dates).
    pub fn load(
        &self,
        config: &Config,
        as_of: NaiveDate,
        scope: &Scope,
        workers: &Workers,
    ) -> Result<Loaded, ReadError> {
        let ingestor = Ingestor::new(config, as_of).for_shard(scope.shard);
        let loaded = match self {
            Reader::Folder(dir) => {
                let mut loaded = workers.pool.install(|| ndjson::load(dir, &ingestor))?;
                if let Some(requested) = scope.requested() {
                    let requested: FxHashSet<String> = requested.into_iter().collect();
                    loaded
                        .timelines
                        .retain(|t| requested.contains(&t.patient_id));
                }
                loaded
            }
            Reader::Server { client, .. }
                if config.server.read_with == ReadWith::Export && scope.requested().is_none() =>
            {
                bulk::read_everyone(client, config, &ingestor, workers)?
            }
            Reader::Server { client, .. } => workers.pool.install(|| {
                workers
                    .runtime
                    .block_on(search::load(client, &ingestor, config, scope))
            })?,
        };
        warn_about_near_misses(&loaded.quality);
        warn_about_malformed(&loaded.quality);
        Ok(loaded)
    }
}

/// One warning per code system and resource type under which configured codes were found but
/// which the job does not know by that name: a site that codes this way loses patients until
/// it adds an alias.
fn warn_about_near_misses(quality: &DataQuality) {
    for (kind, system, count) in quality.near_misses() {
        tracing::warn!(
            "{count} {kind} resources carry a configured code under the code system \"{system}\", \
             which this job does not know by that name, and were left out; if it is another \
             name of a known system, add it under [code_systems.aliases] in the config \
             (e.g. \"http://loinc.org\" = [\"{system}\"]), or add the codes under that system to \
             [codes]"
        );
    }
}

/// One warning per resource type with malformed resources (docs/rules.md §1.4b): a feed that
/// writes one element in a form FHIR JSON does not allow loses every result it sends, and
/// the summary alone would not say so on the night it starts. The warning names a folder line
/// but never a resource id, and gives the parser's reason without the value it quoted: both
/// can be patient data, which stays in run-summary.json.
fn warn_about_malformed(quality: &DataQuality) {
    let key = crate::ingest::SkipReason::InvalidJson.key();
    for (kind, counts) in &quality.by_type {
        let Some(malformed) = counts.left_out.get(key) else {
            continue;
        };
        let example = malformed.examples.first().map_or(String::new(), |e| {
            let place = if e.resource.starts_with("line ") {
                format!("{}: ", e.resource)
            } else {
                String::new()
            };
            let reason = e
                .detail
                .as_deref()
                .map(without_quoted_values)
                .unwrap_or_default();
            format!(", e.g. {place}{reason}")
        });
        tracing::warn!(
            "{} {kind} resources are not FHIR JSON (an element of the wrong JSON type, null, \
             or not JSON at all) and were left out{example}; see run-summary.json \
             (invalid_json_or_structure)",
            malformed.count,
        );
    }
}

/// A parser's message without the values it quotes (`invalid type: string "6,088", expected
/// f64` becomes `invalid type: string, expected f64`): a quoted value may be a result or a name.
pub(crate) fn without_quoted_values(detail: &str) -> String {
    let quotes_values = ["invalid type", "invalid value", "unknown variant"]
        .iter()
        .any(|p| detail.starts_with(p));
    let mut out = String::with_capacity(detail.len());
    let mut chars = detail.chars().peekable();
    while let Some(c) = chars.next() {
        let closing = match c {
            '"' => '"',
            '`' if quotes_values => '`',
            _ => {
                out.push(c);
                continue;
            }
        };
        // Skip the quoted span (a backslash escapes the next character) and the space before it.
        if out.ends_with(' ') {
            out.pop();
        }
        while let Some(q) = chars.next() {
            if q == '\\' {
                chars.next();
            } else if q == closing {
                break;
            }
        }
    }
    out
}

/// What a source read: one timeline per patient, and the counts of what was used and left out.
pub struct Loaded {
    pub timelines: Vec<PatientTimeline>,
    pub quality: DataQuality,
    /// Files read, or searches run (with their page counts).
    pub inputs: Vec<String>,
    /// Names in the folder that were not read, with the reason.
    pub ignored_inputs: Vec<ndjson::IgnoredInput>,
    /// Non-blank Observation lines of a folder, whichever shard they belong to.
    pub observation_lines: u64,
}

/// Records and counts collected by one worker.
#[derive(Default)]
pub(crate) struct Collected {
    pub(crate) cohort: CohortBuilder,
    pub(crate) quality: DataQuality,
    /// The keys of the lines read but not followed (another code, malformed, passed over),
    /// by the index of their file: a line whose key a followed resource shares is read again
    /// to rank it against that resource's copies.
    pub(crate) unfollowed: Vec<(usize, Vec<CopyKey>)>,
    /// Non-blank Observation lines seen, in every shard: whether there was anything to read.
    pub(crate) observation_lines: u64,
}

impl Collected {
    /// Reads one resource's JSON text and files its record or its reason for being left out,
    /// counting it as read. `location` names it (file and line, or search) when it has no id.
    /// A resource of another shard's patient is neither filed nor counted. Returns the key of
    /// a resource the job does not follow (`LineOutcome::unfollowed_key`), in any shard: it
    /// may be a newer copy of one this shard follows.
    pub(crate) fn add_resource(
        &mut self,
        ingestor: &Ingestor,
        kind: ResourceType,
        json: &str,
        location: impl FnOnce() -> String,
    ) -> Option<CopyKey> {
        let outcome = ingestor.read_line(kind, json);
        let unfollowed = outcome.unfollowed_key(kind);
        if !ingestor.in_shard(&outcome, json) {
            // Another shard's resource, not counted here; but a copy of it here, older or
            // newer, must lose or win against it as in one unsharded run (a result moved to
            // the right patient, who is in another shard).
            if let Some((id, rank)) = outcome.followed_copy() {
                self.cohort.add_competitor(kind, id.into(), rank);
            }
            return unfollowed;
        }
        self.quality.count_read(kind, 1);
        match outcome {
            // Records are counted as accepted once copies and duplicates are resolved.
            LineOutcome::Record(record) => self.cohort.add(record),
            // A copy of a resource the job follows competes with the other copies of its id.
            LineOutcome::Skipped(skip) if skip.copy.is_some() => {
                self.cohort.add_skipped_copy(kind, skip)
            }
            LineOutcome::Skipped(skip) => self.quality.count_skip(kind, skip, location),
            LineOutcome::NotRelevant(_) => self.quality.count_not_relevant(kind),
        }
        unfollowed
    }

    pub(crate) fn merge(mut self, other: Collected) -> Collected {
        self.cohort.merge(other.cohort);
        self.quality.merge(other.quality);
        self.unfollowed.extend(other.unfollowed);
        self.observation_lines += other.observation_lines;
        self
    }

    /// This worker's list of unfollowed keys of the file `file_index`.
    pub(crate) fn unfollowed_of(&mut self, file_index: usize) -> &mut Vec<CopyKey> {
        // A worker reads the blocks of one file after another: the last list is nearly
        // always the one.
        match self
            .unfollowed
            .iter()
            .rposition(|(file, _)| *file == file_index)
        {
            Some(at) => &mut self.unfollowed[at].1,
            None => {
                self.unfollowed.push((file_index, Vec::new()));
                &mut self.unfollowed.last_mut().expect("pushed above").1
            }
        }
    }

    /// The unfollowed keys that a followed resource shares, by file index; the keys are
    /// dropped.
    pub(crate) fn take_shared_keys(
        &mut self,
    ) -> std::collections::BTreeMap<usize, FxHashSet<CopyKey>> {
        if self.unfollowed.is_empty() {
            return Default::default();
        }
        let followed = self.cohort.followed_keys();
        let mut shared: std::collections::BTreeMap<usize, FxHashSet<CopyKey>> = Default::default();
        for (file, keys) in std::mem::take(&mut self.unfollowed) {
            for key in keys.iter().filter(|key| followed.contains(key)) {
                shared.entry(file).or_default().insert(*key);
            }
        }
        shared
    }

    /// Sorts, de-duplicates and counts (on the current rayon pool).
    pub(crate) fn finish(
        self,
        inputs: Vec<String>,
        ignored_inputs: Vec<ndjson::IgnoredInput>,
    ) -> Loaded {
        let mut quality = self.quality;
        let timelines = self.cohort.finish(&mut quality);
        Loaded {
            timelines,
            quality,
            inputs,
            ignored_inputs,
            observation_lines: self.observation_lines,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{without_quoted_values, Source};
    use std::path::PathBuf;

    #[test]
    fn a_source_has_one_spelling_in_the_run_identity() {
        let server = |text: &str| Source::Server(text.into()).identity();
        for spelling in [
            "https://fhir.example.org/R4",
            "https://fhir.example.org/R4/",
            "HTTPS://FHIR.Example.ORG:443/R4/",
            "https://fhir.example.org/R4?x=1",
        ] {
            assert_eq!(
                server(spelling),
                "https://fhir.example.org/R4",
                "{spelling}"
            );
        }
        assert_eq!(
            server("https://fhir.example.org/"),
            "https://fhir.example.org"
        );
        assert_ne!(
            server("https://fhir.example.org/r4"),
            server("https://fhir.example.org/R4")
        );
        let dir = tempfile::tempdir().expect("a temporary folder");
        std::fs::create_dir(dir.path().join("export")).expect("a folder");
        let folder = |path: PathBuf| Source::Folder(path).identity();
        let canonical = folder(dir.path().join("export"));
        assert_eq!(folder(dir.path().join("export/")), canonical);
        assert_eq!(folder(dir.path().join("./export/.")), canonical);
        assert_eq!(folder(dir.path().join("export/../export")), canonical);
        assert_ne!(folder(dir.path().to_path_buf()), canonical);
    }

    #[test]
    fn a_parser_message_loses_the_values_it_quotes_and_keeps_its_position() {
        assert_eq!(
            without_quoted_values(
                r#"invalid type: string "6,088 \"x\" mAU/mL", expected f64 at line 1 column 241"#
            ),
            "invalid type: string, expected f64 at line 1 column 241"
        );
        assert_eq!(
            without_quoted_values("invalid value: integer `-5`, expected u32 at line 1 column 9"),
            "invalid value: integer, expected u32 at line 1 column 9"
        );
        // Grammar tokens of a syntax error are not values.
        assert_eq!(
            without_quoted_values("expected `,` or `}` at line 1 column 72"),
            "expected `,` or `}` at line 1 column 72"
        );
    }
}
