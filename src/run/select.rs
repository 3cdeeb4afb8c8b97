//! Which patients a run covers, and how it leaves the state: a full run (everyone with a
//! TARE), an incremental one (those changed since the previous run, plus those whose findings
//! change with the date alone), or an on-demand cohort.

use super::{RunError, RunOptions};
use crate::cohort::{parse_cohort_file, CohortEntry, CohortError, Scope, Selection};
use crate::config::{Config, ReadWith};
use crate::domain::PatientTimeline;
use crate::fhir::client::FhirClient;
use crate::ingest::is_fhir_id;
use crate::sink::summary::CohortReport;
use crate::source::{bulk, search};
use crate::state::{self, RunState};
use chrono::NaiveDate;
use rustc_hash::FxHashSet;
use std::path::{Path, PathBuf};

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

/// How this run chose its patients.
pub(super) enum Mode {
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
    pub(super) fn state_path(&self) -> Option<&Path> {
        match self {
            Mode::Full { state_path } => state_path.as_deref(),
            Mode::Incremental { state_path, .. } => Some(state_path),
            Mode::Cohort => None,
        }
    }

    /// The `_lastUpdated` bound of an incremental run.
    pub(super) fn since(&self) -> Option<&str> {
        match self {
            Mode::Incremental { since, .. } => Some(since),
            _ => None,
        }
    }

    /// Whether the run keeps each patient's recheck date for the state file.
    pub(super) fn keeps_state(&self) -> bool {
        !matches!(self, Mode::Cohort | Mode::Full { state_path: None })
    }

    pub(super) fn name(&self) -> &'static str {
        match self {
            Mode::Full { .. } => "full",
            Mode::Incremental { .. } => "incremental",
            Mode::Cohort => "cohort",
        }
    }
}

/// The state file of this run's shard, if the schedule keeps one.
pub(super) fn state_path_of(options: &RunOptions, config: &Config) -> Option<PathBuf> {
    let file = config.schedule.state_file.as_ref()?;
    let suffix = options.shard.map(|s| s.file_suffix());
    Some(state::shard_path(file, suffix.as_deref()))
}

/// The patient ids of an on-demand cohort, and the entries that matched no patient.
fn resolve_cohort(
    request: &CohortRequest,
    client: Option<&FhirClient>,
    runtime: &tokio::runtime::Runtime,
) -> Result<(Vec<String>, Vec<String>), RunError> {
    let not_an_id = |option, id: &String| {
        (!is_fhir_id(id)).then(|| CohortError::NotAnId {
            option,
            id: id.clone(),
        })
    };
    if let Some(bad) = request
        .patients
        .iter()
        .find_map(|id| not_an_id("patient", id))
        .or_else(|| request.groups.iter().find_map(|id| not_an_id("group", id)))
    {
        return Err(bad.into());
    }
    let mut ids = request.patients.clone();
    let mut identifiers = Vec::new();
    for file in &request.cohort_files {
        let text = std::fs::read_to_string(file).map_err(|source| RunError::CohortFile {
            path: file.clone(),
            source,
        })?;
        for entry in parse_cohort_file(&text, &file.display().to_string())? {
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
        return Err(CohortError::NeedsServer.into());
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
pub(super) fn choose_mode(
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
            let folder = bulk::private_folder()?;
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

/// The ids of a cohort's requested patients that the source had no Patient for.
pub(super) fn requested_without_patient(
    scope: &Scope,
    timelines: &[PatientTimeline],
) -> Vec<String> {
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

/// A patient id and the first as-of date on which their findings change with no new data
/// (`None`: the patient leaves the known cohort).
pub(super) type Recheck = (String, Option<Option<NaiveDate>>);

/// The state after a fully successful run: the previous one (or a new one) with this run's
/// start as the watermark and the re-evaluated patients recorded; a requested patient of whom
/// the source had nothing leaves the known cohort.
pub(super) fn next_state(
    mode: &Mode,
    options: &RunOptions,
    config: &Config,
    started: chrono::DateTime<chrono::Utc>,
    rechecks: &[Recheck],
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
