//! A FHIR Bulk Data `$export` as the source: kick-off (system or `Group/ID` level, with
//! `_type`, a `_typeFilter` per type for our codes and `_since` for incremental runs), status
//! polls that honour `Retry-After` up to a maximum wait, streaming downloads with retries, and
//! the export job deleted at the end. The files land in a folder in the Bulk Data layout and
//! are read by the folder source, so every resource is filtered again here (a server may
//! ignore `_typeFilter`).

use crate::config::Config;
use crate::fhir::client::{outcome_text, Answer, FhirClient, FhirError};
use crate::fhir::error::ExportError;
use crate::ingest::ResourceType;
use futures::stream::{self, TryStreamExt};
use reqwest::StatusCode;
use reqwest::Url;
use serde::Deserialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The resource types the job reads.
const TYPES: [&str; 4] = ["Patient", "Procedure", "Condition", "Observation"];

/// The Bulk Data manifest (the complete-status answer). Every field the specification
/// requires must be there before anything is downloaded.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    transaction_time: String,
    #[allow(dead_code)] // required by the specification; checked, not used
    request: String,
    requires_access_token: bool,
    output: Vec<OutputFile>,
    error: Vec<OutputFile>,
}

#[derive(Deserialize)]
struct OutputFile {
    #[serde(rename = "type")]
    kind: String,
    url: String,
}

/// What an export gave.
pub struct Exported {
    /// The files, in the Bulk Data layout, in `dir`.
    pub files: Vec<PathBuf>,
    pub bytes: u64,
    /// The server's `transactionTime`: everything up to it is in the files.
    pub transaction_time: String,
    /// OperationOutcome files the server listed under `error`.
    pub error_files: usize,
}

/// `Type?code=...`, the query of one `_typeFilter` (its value percent-encoded).
fn type_filter(kind: &str, tokens: &str) -> String {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("code", tokens)
        .finish();
    format!("{kind}?{query}")
}

/// The kick-off URL: `_type`, one `_typeFilter` per coded type, and `_since`.
fn kickoff_url(
    client: &FhirClient,
    config: &Config,
    types: &[&str],
    since: Option<&str>,
) -> Result<reqwest::Url, FhirError> {
    let path = match &config.server.export_group {
        Some(group) => format!("Group/{group}/$export"),
        None => "$export".to_owned(),
    };
    // The group is a FHIR id (checked when the configuration is read): a valid path.
    let mut url = client
        .base()
        .join(&path)
        .map_err(|source| FhirError::BaseUrl {
            url: path.clone(),
            source,
        })?;
    let codes = super::search::Codes::of(config);
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("_outputFormat", "application/fhir+ndjson");
        query.append_pair("_type", &types.join(","));
        for kind in types {
            let filter = match *kind {
                "Procedure" => type_filter("Procedure", &codes.tare),
                "Condition" => type_filter("Condition", &codes.hcc),
                "Observation" => type_filter("Observation", &codes.markers),
                _ => continue,
            };
            query.append_pair("_typeFilter", &filter);
        }
        if let Some(since) = since {
            query.append_pair("_since", since);
        }
    }
    Ok(url)
}

fn unexpected(url: &str, answer: &Answer) -> FhirError {
    // Kick-off and status requests are GETs.
    FhirError::Status {
        method: reqwest::Method::GET,
        url: url.to_owned(),
        status: answer.status.as_u16(),
        outcome: outcome_text(&answer.body),
    }
}

/// Deletes the export job; a failure is logged, not fatal (the server expires jobs too).
async fn delete_job(client: &FhirClient, status_url: &str) {
    let deleted = client
        .send(status_url, |http| http.delete(status_url))
        .await;
    match deleted {
        Ok(answer) if answer.status.is_success() || answer.status == StatusCode::NOT_FOUND => {}
        Ok(answer) => tracing::warn!(
            status = answer.status.as_u16(),
            "cannot delete the export job"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot delete the export job"),
    }
}

/// The status URL a kick-off named, resolved against the base, unless it is a FHIR resource
/// URL of the server (`[base]/Patient/123`, `[base]/Observation`): polling such a URL with
/// the token, and later deleting it, could read or destroy clinical data.
fn status_url_of(client: &FhirClient, kickoff: &str, answer: &Answer) -> Result<Url, FhirError> {
    let location = answer
        .headers
        .get(reqwest::header::CONTENT_LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ExportError::NoStatusUrl {
            url: kickoff.to_owned(),
        })?;
    let url = client
        .base()
        .join(location)
        .map_err(|source| ExportError::BadStatusUrl {
            url: kickoff.to_owned(),
            location: location.to_owned(),
            source,
        })?;
    if is_resource_url(client.base(), &url) {
        return Err(ExportError::ResourceStatusUrl {
            url: kickoff.to_owned(),
            status_url: url.to_string(),
        }
        .into());
    }
    // Under the rules of every URL: neither polled nor deleted when it breaks them.
    client.judged(url.as_str())
}

/// Whether `url` is on the server's origin, under its base, and its first segment there is a
/// resource type (`Patient`, `Observation`...: FHIR type names start with a capital letter).
fn is_resource_url(base: &Url, url: &Url) -> bool {
    let same_origin = url.scheme() == base.scheme()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default();
    let Some(rest) = url.path().strip_prefix(base.path()) else {
        return false;
    };
    let first = rest.split('/').next().unwrap_or("");
    same_origin
        && first.starts_with(|c: char| c.is_ascii_uppercase())
        && first.chars().all(|c| c.is_ascii_alphanumeric())
}

/// What a status poll told.
enum Poll {
    Ready(Manifest),
    /// Not ready; wait this long.
    Wait(Duration),
}

/// One status poll. `Ok` only for an answer that is an export status (202, or 200 with a
/// valid manifest).
async fn poll(client: &FhirClient, status_url: &str, config: &Config) -> Result<Poll, FhirError> {
    let answer = client
        .send(status_url, |http| {
            http.get(status_url).header("Accept", "application/json")
        })
        .await?;
    match answer.status {
        StatusCode::OK => serde_json::from_slice(&answer.body)
            .map(Poll::Ready)
            .map_err(|source| {
                ExportError::NotAManifest {
                    url: status_url.to_owned(),
                    source,
                }
                .into()
            }),
        StatusCode::ACCEPTED => Ok(Poll::Wait(
            answer
                .headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs)
                .unwrap_or(Duration::from_secs(config.server.export_poll_secs))
                .min(Duration::from_secs(
                    config.server.export_max_poll_interval_secs,
                )),
        )),
        _ => Err(unexpected(status_url, &answer)),
    }
}

/// Runs an export of `types` into `dir` (created if missing); with `since`, only what changed
/// after it. The export job is deleted when done, whether or not the download worked, but
/// only once its status URL has answered as an export status endpoint.
pub async fn export(
    client: &FhirClient,
    config: &Config,
    types: &[&str],
    since: Option<&str>,
    dir: &Path,
) -> Result<Exported, FhirError> {
    let kickoff = kickoff_url(client, config, types, since)?;
    let kickoff_text = kickoff.to_string();
    let prefer = match config.server.strict_search {
        true => "respond-async, handling=strict",
        false => "respond-async",
    };
    let answer = client
        .send(&kickoff_text, |http| {
            http.get(kickoff.clone())
                .header("Accept", "application/fhir+json")
                .header("Prefer", prefer)
        })
        .await?;
    if answer.status != StatusCode::ACCEPTED {
        return Err(unexpected(&kickoff_text, &answer));
    }
    let status_url = status_url_of(client, &kickoff_text, &answer)?.to_string();
    let started = Instant::now();
    let max_wait = Duration::from_secs(config.server.export_max_wait_secs);
    let mut is_status_endpoint = false;
    let result = async {
        let manifest = loop {
            if crate::interrupt::requested() {
                return Err(FhirError::Interrupted {
                    url: status_url.clone(),
                });
            }
            client.past_read_budget(&status_url)?;
            match poll(client, &status_url, config).await? {
                Poll::Ready(manifest) => {
                    is_status_endpoint = true;
                    break manifest;
                }
                Poll::Wait(wait) => {
                    is_status_endpoint = true;
                    if started.elapsed() + wait > max_wait {
                        return Err(ExportError::NotReady {
                            url: status_url.clone(),
                            seconds: max_wait.as_secs(),
                        }
                        .into());
                    }
                    tracing::info!(wait_s = wait.as_secs(), "export in progress");
                    if !crate::interrupt::sleep_or_stop(wait).await {
                        return Err(FhirError::Interrupted {
                            url: status_url.clone(),
                        });
                    }
                }
            }
        };
        download_all(client, config, &manifest, types, dir).await
    }
    .await;
    if is_status_endpoint {
        delete_job(client, &status_url).await;
    }
    result
}

async fn download_all(
    client: &FhirClient,
    config: &Config,
    manifest: &Manifest,
    types: &[&str],
    dir: &Path,
) -> Result<Exported, FhirError> {
    std::fs::create_dir_all(dir).map_err(|source| ExportError::Folder {
        path: dir.to_owned(),
        source,
    })?;
    // Only the types asked for (a server may send more); each file named for the folder
    // source.
    let wanted: Vec<(usize, &OutputFile)> = manifest
        .output
        .iter()
        .filter(|o| types.contains(&o.kind.as_str()))
        .enumerate()
        .collect();
    let files: Vec<(PathBuf, u64)> = stream::iter(wanted.into_iter().map(Ok))
        .map_ok(|(n, output)| async move {
            let path = dir.join(format!("{}-{n:04}.ndjson", output.kind));
            let downloaded = client
                .download(&output.url, &path, manifest.requires_access_token)
                .await?;
            // A gzip file (a `.ndjson.gz` output) is named so, and read as one.
            if !downloaded.gzip {
                return Ok::<_, FhirError>((path, downloaded.bytes));
            }
            let gzip = dir.join(format!("{}-{n:04}.ndjson.gz", output.kind));
            std::fs::rename(&path, &gzip).map_err(|source| FhirError::Disk {
                path: gzip.clone(),
                source,
            })?;
            Ok((gzip, downloaded.bytes))
        })
        .try_buffer_unordered(config.server.concurrency)
        .try_collect()
        .await?;
    let mut paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
    paths.sort();
    if !manifest.error.is_empty() {
        tracing::warn!(
            files = manifest.error.len(),
            "the export lists OperationOutcome error files"
        );
    }
    Ok(Exported {
        files: paths,
        bytes: files.iter().map(|(_, b)| b).sum(),
        transaction_time: manifest.transaction_time.clone(),
        error_files: manifest.error.len(),
    })
}

/// The patients whose TARE Procedures, HCC Conditions or marker Observations changed after
/// `since`, by an export with `_since`, sorted.
pub async fn changed_patients(
    client: &FhirClient,
    config: &Config,
    since: &str,
    dir: &Path,
) -> Result<Vec<String>, FhirError> {
    let exported = export(
        client,
        config,
        &["Procedure", "Condition", "Observation"],
        Some(since),
        dir,
    )
    .await?;
    let mut ids = std::collections::BTreeSet::new();
    for path in &exported.files {
        let text = read_download(path).map_err(|source| ExportError::ReadDownload {
            path: path.clone(),
            source,
        })?;
        // Only a resource of its file's type tells of a changed patient.
        let kind = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.split('-').next())
            .and_then(ResourceType::from_name);
        for line in text.lines() {
            let header = crate::ingest::resource_header(line);
            if kind.is_none() || header.and_then(|h| h.kind) != kind {
                continue;
            }
            if let Some(id) = crate::ingest::patient_of_resource(line) {
                ids.insert(id.into_owned());
            }
        }
    }
    Ok(ids.into_iter().collect())
}

/// A downloaded file's text, expanded when it is a gzip file (already within
/// `server.max_download_bytes`).
fn read_download(path: &Path) -> std::io::Result<String> {
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    match path.extension().is_some_and(|e| e == "gz") {
        true => flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file))
            .read_to_string(&mut text)?,
        false => std::io::BufReader::new(file).read_to_string(&mut text)?,
    };
    Ok(text)
}

/// A private temporary folder for Bulk Data files (readable by us only; removed on drop).
pub fn private_folder() -> Result<tempfile::TempDir, super::ReadError> {
    tempfile::Builder::new()
        .prefix("tare-export-")
        .tempdir()
        .map_err(super::ReadError::ExportFolder)
}

/// Everyone, by Bulk Data `$export`: the files are downloaded, then read like a folder.
pub fn read_everyone(
    client: &FhirClient,
    config: &Config,
    ingestor: &crate::ingest::Ingestor,
    workers: &crate::workers::Workers,
) -> Result<super::Loaded, super::ReadError> {
    let folder = private_folder()?;
    let exported = workers
        .runtime
        .block_on(export(client, config, &TYPES, None, folder.path()))?;
    tracing::info!(
        files = exported.files.len(),
        bytes = exported.bytes,
        error_files = exported.error_files,
        "export downloaded"
    );
    let mut loaded = workers
        .pool
        .install(|| super::ndjson::load_export(folder.path(), ingestor))?;
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
