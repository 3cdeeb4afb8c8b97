//! A FHIR server as the source: TARE Procedures by code (with their Patients through
//! `_include`), then the HCC Conditions and the marker Observations of those patients, searched
//! in patient batches with bounded concurrency. Every resource goes through the same checks as
//! a Bulk Data line; one seen twice is read once: across the pages of a search in its newest
//! version (`meta.lastUpdated`, then `meta.versionId`), across searches the first time.

use super::{Collected, Loaded};
use crate::cohort::Scope;
use crate::config::{Code, Config};
use crate::fhir::client::{FhirClient, FhirError};
use crate::ingest::{
    is_fhir_id, patient_id_of, patient_of_resource, resource_header, CodeSystems, DataQuality,
    Ingestor, ResourceType, Skip, SkipReason,
};
use crate::progress::Progress;
use futures::stream::{self, TryStreamExt};
use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::sync::{Arc, Mutex};

/// `system|code,system|code`, the token list of a `code=` search: each code under every name
/// its system goes by (docs/rules.md "Code systems"), so a server that stores the OID form
/// finds it as well as one that stores the canonical URI.
fn token_list(systems: &CodeSystems, codes: &[&Code]) -> String {
    let mut tokens: Vec<String> = Vec::new();
    for code in codes {
        let names = match systems.identify(&code.system) {
            Some(id) => systems.names(id).to_vec(),
            None => vec![code.system.clone()],
        };
        for name in names {
            let token = format!("{name}|{}", code.code);
            if !tokens.contains(&token) {
                tokens.push(token);
            }
        }
    }
    tokens.join(",")
}

/// What one search asked the server for. Every resource it answers with is checked against
/// it: one of another type, of a patient not searched for, or (by `_id`) of an id not searched
/// for is counted under `not_asked_for`, never read.
#[derive(Clone)]
pub struct Asked {
    /// The type searched for.
    kind: ResourceType,
    /// Patients come along too (`_include=Procedure:subject`).
    includes_patients: bool,
    /// A `patient=` search: these patients' resources only.
    patients: Option<Arc<FxHashSet<String>>>,
    /// An `_id` search: these ids only.
    ids: Option<Arc<FxHashSet<String>>>,
}

impl Asked {
    fn of(kind: ResourceType) -> Asked {
        Asked {
            kind,
            includes_patients: false,
            patients: None,
            ids: None,
        }
    }

    /// Why a resource this search answered with was not asked for (a category, with no
    /// patient data), or `None` when it was. `kind` is `None` for a type the job does not read.
    fn refusal(
        &self,
        kind: Option<ResourceType>,
        id: Option<&str>,
        raw: &str,
    ) -> Option<&'static str> {
        let kind = match kind {
            Some(kind) if kind == self.kind => kind,
            Some(ResourceType::Patient) if self.includes_patients => return None,
            _ => return Some("another resource type"),
        };
        if let (Some(ids), Some(id)) = (&self.ids, id) {
            if !ids.contains(id) {
                return Some("another id");
            }
        }
        if let Some(patients) = &self.patients {
            // A resource without a usable patient reference is left to the ingest, which
            // leaves it out under its own reason.
            let patient = match kind {
                ResourceType::Patient => id.map(Cow::Borrowed),
                _ => patient_of_resource(raw),
            };
            if patient.is_some_and(|p| !patients.contains(p.as_ref())) {
                return Some("another patient");
            }
        }
        None
    }
}

/// The state shared by the searches of one load.
struct Shared<'a> {
    ingestor: &'a Ingestor,
    collected: Mutex<Collected>,
    /// `Type/id` of every resource read, so a repeat in another search is skipped.
    seen: Mutex<FxHashSet<String>>,
    /// `Type/id` of every resource counted as not asked for, so a server that answers every
    /// batch with the same stray resource has it counted once.
    not_asked_for: Mutex<FxHashSet<String>>,
    inputs: Mutex<Vec<String>>,
}

/// The resources of one search, gathered over its pages: one per `Type/id`, the newest version
/// (a resource updated while we paged can come back on a later page), then read at the end.
struct SearchResult {
    asked: Asked,
    latest: FxHashMap<String, (Version, ResourceType, Box<RawValue>)>,
    /// Resources without an id cannot be recognised again: each is read.
    without_id: Vec<(ResourceType, Box<RawValue>)>,
    /// What the search did not ask for: `Type/id` (when the id is a FHIR id) and why.
    not_asked_for: Vec<(Option<String>, &'static str)>,
}

type Version = (Option<i64>, Option<u64>);

/// The `resourceType` of a resource the job does not read.
fn type_name(json: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Typed {
        #[serde(rename = "resourceType")]
        resource_type: Option<String>,
    }
    serde_json::from_str::<Typed>(json).ok()?.resource_type
}

impl SearchResult {
    fn new(asked: Asked) -> SearchResult {
        SearchResult {
            asked,
            latest: FxHashMap::default(),
            without_id: Vec::new(),
            not_asked_for: Vec::new(),
        }
    }

    fn add_page(&mut self, resources: Vec<Box<RawValue>>) {
        for raw in resources {
            let Some(header) = resource_header(raw.get()) else {
                continue;
            };
            let type_name = match header.kind {
                Some(kind) => Some(kind.name().to_owned()),
                None => type_name(raw.get()),
            };
            // An OperationOutcome entry (search mode `outcome`) is not data.
            if type_name.as_deref() == Some("OperationOutcome") {
                continue;
            }
            let id = header.id.as_deref();
            if let Some(why) = self.asked.refusal(header.kind, id, raw.get()) {
                let key = match (type_name, id) {
                    (Some(kind), Some(id)) if is_fhir_id(id) && is_fhir_id(&kind) => {
                        Some(format!("{kind}/{id}"))
                    }
                    _ => None,
                };
                self.not_asked_for.push((key, why));
                continue;
            }
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
    /// What the search did not ask for is counted (once per resource over the whole load)
    /// under the type it asked for.
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
        {
            let mut counted = self.not_asked_for.lock().unwrap_or_else(|p| p.into_inner());
            for (key, why) in result.not_asked_for {
                if key.as_ref().is_some_and(|key| !counted.insert(key.clone())) {
                    continue;
                }
                let skip = Skip {
                    reason: SkipReason::NotAskedFor,
                    resource_id: key,
                    detail: Some(why.to_owned()),
                    copy: None,
                };
                local.quality.count_read(result.asked.kind, 1);
                local
                    .quality
                    .count_skip(result.asked.kind, skip, || format!("an entry of {search}"));
            }
        }
        for (kind, raw) in &fresh {
            local.add_resource(self.ingestor, *kind, raw.get(), || {
                format!("an entry of {search}")
            });
        }
        let mut collected = self.collected.lock().unwrap_or_else(|p| p.into_inner());
        let merged = std::mem::take(&mut *collected).merge(local);
        *collected = merged;
    }

    async fn search(&self, client: &FhirClient, search: PlannedSearch) -> Result<(), FhirError> {
        let mut result = SearchResult::new(search.asked);
        let pages = client
            .search_all(search.url, |page| result.add_page(page.resources))
            .await?;
        self.add_result(result, &search.label);
        self.inputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{} ({pages} pages)", search.label));
        Ok(())
    }
}

/// The code lists of the searches (`system|code,...`), also used by the Bulk Data export.
pub(crate) struct Codes {
    pub(crate) tare: String,
    pub(crate) hcc: String,
    pub(crate) markers: String,
}

impl Codes {
    pub(crate) fn of(config: &Config) -> Codes {
        // validate() has refused a configuration whose aliases conflict.
        let systems = config
            .code_systems()
            .unwrap_or_else(|_| CodeSystems::built_in());
        let codes = &config.codes;
        let markers: Vec<&Code> = [
            &codes.pivka,
            &codes.afp,
            &codes.afp_l3,
            &codes.albumin,
            &codes.bilirubin,
        ]
        .into_iter()
        .flatten()
        .collect();
        Codes {
            tare: token_list(&systems, &codes.tare_procedure.iter().collect::<Vec<_>>()),
            hcc: token_list(&systems, &codes.hcc_condition.iter().collect::<Vec<_>>()),
            markers: token_list(&systems, &markers),
        }
    }
}

/// One search of a load: its first page, a label for the summary (no patient ids), and how
/// many patients it completes (for the progress bar).
pub struct PlannedSearch {
    pub url: reqwest::Url,
    pub label: String,
    pub completes_patients: u64,
    pub asked: Asked,
}

/// The TARE search: every TARE Procedure, with its Patient through `_include`.
fn tare_search(client: &FhirClient, config: &Config, codes: &Codes) -> PlannedSearch {
    PlannedSearch {
        url: client.search_url(
            "Procedure",
            &[
                ("code", codes.tare.clone()),
                ("_include", "Procedure:subject".into()),
                ("_count", config.server.page_size.to_string()),
            ],
        ),
        label: "Procedure?code=<TARE codes>&_include=Procedure:subject".into(),
        completes_patients: 0,
        asked: Asked {
            includes_patients: true,
            ..Asked::of(ResourceType::Procedure)
        },
    }
}

/// The searches that read everything of these patients, in batches (`patient=a,b,c`): their
/// HCC Conditions and marker Observations, and for a cohort also their TAREs and Patients
/// (everyone's come with the TARE search).
pub fn patient_searches(
    client: &FhirClient,
    config: &Config,
    patient_ids: &[String],
    cohort: bool,
) -> Vec<PlannedSearch> {
    let codes = Codes::of(config);
    let count = config.server.page_size.to_string();
    let mut searches = Vec::new();
    for (n, batch) in patient_ids.chunks(config.server.patient_batch).enumerate() {
        let patients = batch.join(",");
        let asked: Arc<FxHashSet<String>> = Arc::new(batch.iter().cloned().collect());
        let by_patient =
            |kind: ResourceType, code: &str, label: String, completes_patients| PlannedSearch {
                url: client.search_url(
                    kind.name(),
                    &[
                        ("patient", patients.clone()),
                        ("code", code.to_owned()),
                        ("_count", count.clone()),
                    ],
                ),
                label,
                completes_patients,
                asked: Asked {
                    patients: Some(asked.clone()),
                    ..Asked::of(kind)
                },
            };
        if cohort {
            searches.push(by_patient(
                ResourceType::Procedure,
                &codes.tare,
                format!("Procedure?patient=<batch {n}>&code=<TARE codes>"),
                0,
            ));
            searches.push(PlannedSearch {
                url: client.search_url(
                    "Patient",
                    &[("_id", patients.clone()), ("_count", count.clone())],
                ),
                label: format!("Patient?_id=<batch {n}>"),
                completes_patients: 0,
                asked: Asked {
                    ids: Some(asked.clone()),
                    ..Asked::of(ResourceType::Patient)
                },
            });
        }
        searches.push(by_patient(
            ResourceType::Condition,
            &codes.hcc,
            format!("Condition?patient=<batch {n}>&code=<HCC codes>"),
            0,
        ));
        searches.push(by_patient(
            ResourceType::Observation,
            &codes.markers,
            format!("Observation?patient=<batch {n}>&code=<marker codes>"),
            batch.len() as u64,
        ));
    }
    searches
}

impl<'a> Shared<'a> {
    fn new(ingestor: &'a Ingestor) -> Shared<'a> {
        Shared {
            ingestor,
            collected: Mutex::new(Collected::default()),
            seen: Mutex::new(FxHashSet::default()),
            not_asked_for: Mutex::new(FxHashSet::default()),
            inputs: Mutex::new(Vec::new()),
        }
    }

    /// Runs the TARE search and returns the patients it found (of this run's shard), sorted.
    async fn patients_with_tare(
        &self,
        client: &FhirClient,
        config: &Config,
        scope: &Scope,
    ) -> Result<Vec<String>, FhirError> {
        self.search(client, tare_search(client, config, &Codes::of(config)))
            .await?;
        let mut ids = self
            .collected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cohort
            .patients_with_procedures();
        ids.retain(|id| scope.in_shard(id));
        ids.sort();
        Ok(ids)
    }
}

/// Reads the patients of `scope` from the server: for everyone, the TARE search first (which
/// decides the patients), then every patient search, `server.concurrency` at a time.
pub async fn load(
    client: &FhirClient,
    ingestor: &Ingestor,
    config: &Config,
    scope: &Scope,
) -> Result<Loaded, FhirError> {
    let shared = Shared::new(ingestor);
    let requested = scope.requested();
    let patient_ids = match &requested {
        Some(ids) => ids.clone(),
        None => shared.patients_with_tare(client, config, scope).await?,
    };
    let searches = patient_searches(client, config, &patient_ids, requested.is_some());
    let progress = Progress::start("reading", patient_ids.len() as u64);
    stream::iter(searches.into_iter().map(Ok::<_, FhirError>))
        .try_for_each_concurrent(config.server.concurrency, |search| {
            let (progress, shared) = (&progress, &shared);
            async move {
                let completes = search.completes_patients;
                shared.search(client, search).await?;
                progress.advance(completes);
                Ok(())
            }
        })
        .await?;
    progress.finish();
    // The ingestor has kept only this shard's patients.
    let collected = shared
        .collected
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let mut inputs = shared
        .inputs
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    inputs.sort();
    let loaded = collected.finish(inputs, Vec::new());
    warn_about_unasked(&loaded.quality);
    Ok(loaded)
}

/// One warning, with the count, when the server answered the searches with resources they did
/// not ask for (a server that ignores a search parameter, say).
fn warn_about_unasked(quality: &DataQuality) {
    let count: u64 = ResourceType::ALL
        .into_iter()
        .map(|kind| quality.left_out_count(kind, SkipReason::NotAskedFor))
        .sum();
    if count > 0 {
        tracing::warn!(
            "the server answered the searches with {count} resources they did not ask for (of \
             other patients, of another type or of another id); they were left out, neither \
             evaluated nor written (run-summary.json: not_asked_for)"
        );
    }
}

/// The searches a full run sends after its TARE search (which this runs and reads): for the
/// server benchmark, which sends them itself and discards the pages.
pub async fn full_run_searches(
    client: &FhirClient,
    ingestor: &Ingestor,
    config: &Config,
) -> Result<Vec<PlannedSearch>, FhirError> {
    let shared = Shared::new(ingestor);
    let patient_ids = shared
        .patients_with_tare(client, config, &Scope::EVERYONE)
        .await?;
    Ok(patient_searches(client, config, &patient_ids, false))
}

/// The patients whose TARE Procedures, HCC Conditions or marker Observations changed after
/// `since` (`_lastUpdated=gt`), sorted. A status change (entered-in-error, corrected) is a
/// change like any other.
pub async fn changed_patients(
    client: &FhirClient,
    config: &Config,
    since: &str,
) -> Result<Vec<String>, FhirError> {
    let codes = Codes::of(config);
    let count = config.server.page_size.to_string();
    let searches = [
        (ResourceType::Procedure, codes.tare),
        (ResourceType::Condition, codes.hcc),
        (ResourceType::Observation, codes.markers),
    ];
    let patients = Mutex::new(FxHashSet::default());
    stream::iter(searches.into_iter().map(Ok))
        .try_for_each_concurrent(config.server.concurrency, |(kind, code)| {
            let url = client.search_url(
                kind.name(),
                &[
                    ("code", code),
                    ("_lastUpdated", format!("gt{since}")),
                    ("_count", count.clone()),
                ],
            );
            let patients = &patients;
            async move {
                client
                    .search_all(url, |page| {
                        let mut patients = patients.lock().unwrap_or_else(|p| p.into_inner());
                        // Only the type searched for tells of a changed patient.
                        let asked = page.resources.iter().filter(|raw| {
                            resource_header(raw.get()).is_some_and(|h| h.kind == Some(kind))
                        });
                        for raw in asked {
                            if let Some(id) = patient_of_resource(raw.get()) {
                                patients.insert(id.into_owned());
                            }
                        }
                    })
                    .await
                    .map(|_| ())
            }
        })
        .await?;
    let mut ids: Vec<String> = patients
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .collect();
    ids.sort();
    Ok(ids)
}

/// Resolves `system|value` identifiers through `Patient?identifier=`: the patient ids found,
/// and the identifiers that matched no Patient (or more than one, which is reported too).
pub async fn resolve_identifiers(
    client: &FhirClient,
    identifiers: &[(String, String)],
) -> Result<(Vec<String>, Vec<String>), FhirError> {
    let mut found = Vec::new();
    let mut unknown = Vec::new();
    for (system, value) in identifiers {
        let url = client.search_url("Patient", &[("identifier", format!("{system}|{value}"))]);
        let mut ids = Vec::new();
        client
            .search_all(url, |page| {
                ids.extend(page.resources.iter().filter_map(|raw| {
                    resource_header(raw.get())
                        .filter(|h| h.kind == Some(ResourceType::Patient))
                        .and_then(|h| h.id.map(|id| id.into_owned()))
                }))
            })
            .await?;
        ids.sort();
        ids.dedup();
        match ids.as_slice() {
            [id] => found.push(id.clone()),
            [] => unknown.push(format!("{system}|{value} (no Patient)")),
            _ => unknown.push(format!("{system}|{value} ({} Patients)", ids.len())),
        }
    }
    Ok((found, unknown))
}

/// The patient ids of a FHIR Group's members (`member.entity` references to Patients).
pub async fn group_members(client: &FhirClient, group_id: &str) -> Result<Vec<String>, FhirError> {
    // Group ids are FHIR ids (checked with the cohort request): a valid path.
    let url = client
        .base()
        .join(&format!("Group/{group_id}"))
        .map_err(|source| FhirError::BaseUrl {
            url: group_id.to_owned(),
            source,
        })?;
    let answer = client.read(url.as_str()).await?;
    let members = answer["member"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["inactive"].as_bool() != Some(true))
        .filter_map(|m| m["entity"]["reference"].as_str())
        .filter_map(patient_id_of)
        .map(str::to_owned)
        .collect();
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_send_every_name_of_a_code_system() {
        let codes = Codes::of(&Config::default());
        assert_eq!(
            codes.tare,
            "http://www.ama-assn.org/go/cpt|79445,urn:oid:2.16.840.1.113883.6.12|79445,\
             https://www.ama-assn.org/go/cpt|79445,\
             https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets|S2095,\
             http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets|S2095,\
             urn:oid:2.16.840.1.113883.6.285|S2095,urn:oid:2.16.840.1.113883.6.14|S2095"
        );
        let local = Config::from_toml(
            "[codes]\ntare_procedure = [{ system = \"http://hospital.example/proc\", code = \"TARE\" }]\n",
        )
        .unwrap();
        assert_eq!(Codes::of(&local).tare, "http://hospital.example/proc|TARE");
    }
}
