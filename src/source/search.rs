//! A FHIR server as the source: TARE Procedures by code (with their Patients through
//! `_include`), then the HCC Conditions and the marker Observations of those patients, searched
//! in patient batches with bounded concurrency. Every resource goes through the same checks as
//! a Bulk Data line; one seen twice is read once: across the pages of a search in its newest
//! version (`meta.lastUpdated`, then `meta.versionId`), across searches the first time.

use super::{Collected, Loaded};
use crate::config::{Code, Config};
use crate::fhir::client::{FhirClient, FhirError};
use crate::ingest::{resource_header, Ingestor, ResourceType};
use futures::stream::{self, TryStreamExt};
use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// `system|code,system|code`, the token list of a `code=` search.
fn token_list(codes: &[&Code]) -> String {
    codes
        .iter()
        .map(|c| format!("{}|{}", c.system, c.code))
        .collect::<Vec<_>>()
        .join(",")
}

/// The state shared by the searches of one load.
struct Shared<'a> {
    ingestor: &'a Ingestor,
    collected: Mutex<Collected>,
    /// `Type/id` of every resource read, so a repeat in another search is skipped.
    seen: Mutex<FxHashSet<String>>,
    inputs: Mutex<Vec<String>>,
    /// Fetch-only: pages of the patient searches are counted and discarded.
    discard: bool,
    discarded: AtomicU64,
}

/// The resources of one search, gathered over its pages: one per `Type/id`, the newest version
/// (a resource updated while we paged can come back on a later page), then read at the end.
#[derive(Default)]
struct SearchResult {
    latest: FxHashMap<String, (Version, ResourceType, Box<RawValue>)>,
    /// Resources without an id cannot be recognised again: each is read.
    without_id: Vec<(ResourceType, Box<RawValue>)>,
}

type Version = (Option<i64>, Option<u64>);

impl SearchResult {
    fn add_page(&mut self, resources: Vec<Box<RawValue>>) {
        for raw in resources {
            // An OperationOutcome entry (search mode `outcome`) or another type: not data.
            let Some(header) = resource_header(raw.get()) else {
                continue;
            };
            let Some(kind) = header.kind else { continue };
            let Some(id) = header.id else {
                self.without_id.push((kind, raw));
                continue;
            };
            let key = format!("{}/{id}", kind.name());
            let version = header.version;
            match self.latest.get(&key) {
                Some((known, _, _)) if *known >= version => {}
                _ => {
                    self.latest.insert(key, (version, kind, raw));
                }
            }
        }
    }
}

impl Shared<'_> {
    /// Reads what one search gathered; resources another search already gave are skipped.
    fn add_result(&self, result: SearchResult, search: &str) {
        let mut fresh: Vec<(ResourceType, Box<RawValue>)> = result.without_id;
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            for (key, (_, kind, raw)) in result.latest {
                if seen.insert(key) {
                    fresh.push((kind, raw));
                }
            }
        }
        let mut local = Collected::default();
        for (kind, raw) in &fresh {
            local.quality.count_read(*kind, 1);
            local.add_resource(self.ingestor, *kind, raw.get(), || {
                format!("an entry of {search}")
            });
        }
        let mut collected = self.collected.lock().unwrap_or_else(|p| p.into_inner());
        let merged = std::mem::take(&mut *collected).merge(local);
        *collected = merged;
    }

    async fn search(
        &self,
        client: &FhirClient,
        url: reqwest::Url,
        label: String,
    ) -> Result<(), FhirError> {
        let mut result = SearchResult::default();
        let pages = client
            .search_all(url, |page| {
                if self.discard && !label.starts_with("Procedure") {
                    self.discarded
                        .fetch_add(page.resources.len() as u64, Ordering::Relaxed);
                } else {
                    result.add_page(page.resources);
                }
            })
            .await?;
        self.add_result(result, &label);
        self.inputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{label} ({pages} pages)"));
        Ok(())
    }
}

/// Reads the cohort from the server.
pub async fn load(
    client: &FhirClient,
    ingestor: &Ingestor,
    config: &Config,
) -> Result<Loaded, FhirError> {
    load_with(client, ingestor, config, false)
        .await
        .map(|(loaded, _)| loaded)
}

/// The benchmark's floor: the same searches, with the same concurrency, whose Condition and
/// Observation pages are discarded unread (the TARE search is read: it decides the batches).
/// Returns the number of resources discarded.
pub async fn fetch_only(
    client: &FhirClient,
    ingestor: &Ingestor,
    config: &Config,
) -> Result<u64, FhirError> {
    load_with(client, ingestor, config, true)
        .await
        .map(|(_, discarded)| discarded)
}

async fn load_with(
    client: &FhirClient,
    ingestor: &Ingestor,
    config: &Config,
    discard: bool,
) -> Result<(Loaded, u64), FhirError> {
    let server = &config.server;
    let shared = Shared {
        ingestor,
        collected: Mutex::new(Collected::default()),
        seen: Mutex::new(FxHashSet::default()),
        inputs: Mutex::new(Vec::new()),
        discard,
        discarded: AtomicU64::new(0),
    };
    let count = server.page_size.to_string();
    let tare_codes: Vec<&Code> = config.codes.tare_procedure.iter().collect();
    let tare_search = client.search_url(
        "Procedure",
        &[
            ("code", token_list(&tare_codes)),
            ("_include", "Procedure:subject".into()),
            ("_count", count.clone()),
        ],
    );
    shared
        .search(
            client,
            tare_search,
            "Procedure?code=<TARE codes>&_include=Procedure:subject".into(),
        )
        .await?;

    // The patients with a TARE, in a stable order, in batches.
    let mut patient_ids = shared
        .collected
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .cohort
        .patients_with_procedures();
    patient_ids.sort();
    let hcc_codes: Vec<&Code> = config.codes.hcc_condition.iter().collect();
    let marker_codes: Vec<&Code> = [
        &config.codes.pivka,
        &config.codes.afp,
        &config.codes.afp_l3,
        &config.codes.albumin,
        &config.codes.bilirubin,
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut searches = Vec::new();
    for (n, batch) in patient_ids.chunks(server.patient_batch).enumerate() {
        let patients = batch.join(",");
        searches.push((
            client.search_url(
                "Condition",
                &[
                    ("patient", patients.clone()),
                    ("code", token_list(&hcc_codes)),
                    ("_count", count.clone()),
                ],
            ),
            format!("Condition?patient=<batch {n}>&code=<HCC codes>"),
        ));
        searches.push((
            client.search_url(
                "Observation",
                &[
                    ("patient", patients),
                    ("code", token_list(&marker_codes)),
                    ("_count", count.clone()),
                ],
            ),
            format!("Observation?patient=<batch {n}>&code=<marker codes>"),
        ));
    }
    stream::iter(searches.into_iter().map(Ok))
        .try_for_each_concurrent(server.concurrency, |(url, label)| {
            shared.search(client, url, label)
        })
        .await?;

    let collected = shared
        .collected
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let mut inputs = shared
        .inputs
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    inputs.sort();
    let discarded = shared.discarded.into_inner();
    Ok((collected.finish(inputs, Vec::new()), discarded))
}
