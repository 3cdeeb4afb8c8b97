//! Where resources come from: a folder in the FHIR Bulk Data layout (`ndjson`) or a FHIR
//! server's search API (`search`). Both feed the same `Ingestor` checks and the same
//! `CohortBuilder`, so a resource counts the same way whichever way it arrived.

pub mod bulk;
pub mod ndjson;
pub mod search;

use crate::domain::PatientTimeline;
use crate::ingest::{DataQuality, Ingestor, LineOutcome, ResourceType};
use crate::timeline::CohortBuilder;

/// What a source read: one timeline per patient, and the counts of what was used and left out.
pub struct Loaded {
    pub timelines: Vec<PatientTimeline>,
    pub quality: DataQuality,
    /// Files read, or searches run (with their page counts).
    pub inputs: Vec<String>,
    /// Names in the folder that were not read, with the reason.
    pub ignored_inputs: Vec<ndjson::IgnoredInput>,
}

/// Records and counts collected by one worker.
#[derive(Default)]
pub(crate) struct Collected {
    pub(crate) cohort: CohortBuilder,
    pub(crate) quality: DataQuality,
}

impl Collected {
    /// Reads one resource's JSON text and files its record or its reason for being left out,
    /// counting it as read. `location` names it (file and line, or search) when it has no id.
    /// A resource of another shard's patient is neither filed nor counted.
    pub(crate) fn add_resource(
        &mut self,
        ingestor: &Ingestor,
        kind: ResourceType,
        json: &str,
        location: impl FnOnce() -> String,
    ) {
        let outcome = ingestor.read_line(kind, json);
        if !ingestor.in_shard(&outcome, json) {
            return;
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
            LineOutcome::NotRelevant => self.quality.count_not_relevant(kind),
        }
    }

    pub(crate) fn merge(mut self, other: Collected) -> Collected {
        self.cohort.merge(other.cohort);
        self.quality.merge(other.quality);
        self
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
        }
    }
}
