//! Data-quality counts: how many resources of each type were read, accepted, and left out under
//! each reason, with a few example ids (the smallest, so the report is the same whatever the
//! thread schedule) and, for categorical reasons, counts per offending value (unit, status).

use super::{ResourceType, Skip, SkipReason};
use serde::Serialize;
use std::collections::BTreeMap;

const MAX_EXAMPLES: usize = 5;
const MAX_DISTINCT_DETAILS: usize = 50;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReasonCount {
    pub count: u64,
    /// Up to five examples: resource id (or `line N of FILE` without one) and what was wrong.
    pub examples: Vec<Example>,
    /// Counts per offending value, for reasons where the value is a category (unit, status).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_value: BTreeMap<String, u64>,
}

impl ReasonCount {
    /// One more, with its example: the smallest examples are kept, the same one once (copies
    /// of one id), as `merge` does, so the list never depends on how the lines were shared
    /// among threads.
    fn count(&mut self, example: Example) {
        self.count += 1;
        if self.examples.contains(&example) {
            return;
        }
        if self.examples.len() < MAX_EXAMPLES || Some(&example) < self.examples.last() {
            self.examples.push(example);
            self.examples.sort();
            self.examples.truncate(MAX_EXAMPLES);
        }
    }

    /// Adds `n` to the count of one offending value; past 50 distinct values, new ones are
    /// not listed (the total still counts them).
    fn count_value(&mut self, value: &str, n: u64) {
        if let Some(existing) = self.by_value.get_mut(value) {
            *existing += n;
        } else if self.by_value.len() < MAX_DISTINCT_DETAILS {
            self.by_value.insert(value.to_owned(), n);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Example {
    pub resource: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TypeCounts {
    /// Non-blank lines read.
    pub read: u64,
    /// Records used by the evaluation (after duplicates are removed, for Observations).
    pub accepted: u64,
    /// Valid resources the job does not use (other codes): not a data-quality problem.
    pub not_relevant: u64,
    pub left_out: BTreeMap<&'static str, ReasonCount>,
    /// Elements of accepted resources that were not used, by reason (a
    /// `referenceRange.high` outside the marker's plausible band): the resource itself counts.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub elements_not_used: BTreeMap<&'static str, ReasonCount>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DataQuality {
    pub by_type: BTreeMap<&'static str, TypeCounts>,
}

/// `text::shown`, without a copy when there is nothing to escape.
fn shown_owned(text: String) -> String {
    match crate::text::shown(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(escaped) => escaped,
    }
}

fn categorical(reason: SkipReason) -> bool {
    matches!(
        reason,
        SkipReason::StatusNotAccepted
            | SkipReason::UnknownUnit
            | SkipReason::UnknownComparator
            | SkipReason::ProcedureNotCompleted
            | SkipReason::UnexpectedResourceType
            | SkipReason::CodeUnderUnknownSystem
            | SkipReason::NotAskedFor
    )
}

impl DataQuality {
    fn counts(&mut self, kind: ResourceType) -> &mut TypeCounts {
        self.by_type.entry(kind.name()).or_default()
    }

    pub fn count_read(&mut self, kind: ResourceType, n: u64) {
        self.counts(kind).read += n;
    }

    pub fn count_accepted(&mut self, kind: ResourceType, n: u64) {
        self.counts(kind).accepted += n;
    }

    pub fn count_not_relevant(&mut self, kind: ResourceType) {
        self.count_not_relevant_n(kind, 1);
    }

    pub fn count_not_relevant_n(&mut self, kind: ResourceType, n: u64) {
        self.counts(kind).not_relevant += n;
    }

    /// Counts a left-out resource. `location` names it when it has no id. The offending values
    /// and the location (a file name) come from the source: they are kept as `text::shown`
    /// writes them, for the summary, the warnings and the report.
    pub fn count_skip(
        &mut self,
        kind: ResourceType,
        skip: Skip,
        location: impl FnOnce() -> String,
    ) {
        let entry = self
            .counts(kind)
            .left_out
            .entry(skip.reason.key())
            .or_default();
        let detail = skip.detail.map(shown_owned);
        let value = categorical(skip.reason)
            .then_some(detail.as_deref())
            .flatten();
        if let Some(value) = value {
            entry.count_value(value, 1);
        }
        entry.count(Example {
            resource: shown_owned(skip.resource_id.unwrap_or_else(location)),
            detail,
        });
    }

    /// Counts an element of an accepted resource that was not used (`reason`: the key in
    /// the summary).
    pub fn count_element_not_used(
        &mut self,
        kind: ResourceType,
        reason: &'static str,
        resource_id: &str,
        detail: String,
    ) {
        self.counts(kind)
            .elements_not_used
            .entry(reason)
            .or_default()
            .count(Example {
                resource: shown_owned(resource_id.to_owned()),
                detail: Some(detail),
            });
    }

    /// Configured codes found under code systems the job does not know by that name:
    /// (resource type, system, count), for the warnings a site reads on its first run.
    pub fn near_misses(&self) -> Vec<(&'static str, &str, u64)> {
        let key = SkipReason::CodeUnderUnknownSystem.key();
        self.by_type
            .iter()
            .filter_map(|(kind, counts)| Some((*kind, counts.left_out.get(key)?)))
            .flat_map(|(kind, reason)| {
                reason
                    .by_value
                    .iter()
                    .map(move |(system, n)| (kind, system.as_str(), *n))
            })
            .collect()
    }

    /// Resources of a type read (non-blank lines, search entries).
    pub fn read_of(&self, kind: ResourceType) -> u64 {
        self.by_type.get(kind.name()).map_or(0, |t| t.read)
    }

    pub fn left_out_count(&self, kind: ResourceType, reason: SkipReason) -> u64 {
        self.by_type
            .get(kind.name())
            .and_then(|t| t.left_out.get(reason.key()))
            .map_or(0, |r| r.count)
    }

    /// Adds another partial count (from another thread or file).
    pub fn merge(&mut self, other: DataQuality) {
        for (kind, theirs) in other.by_type {
            let ours = self.by_type.entry(kind).or_default();
            ours.read += theirs.read;
            ours.accepted += theirs.accepted;
            ours.not_relevant += theirs.not_relevant;
            let reasons = theirs.left_out.into_iter().map(|r| (r, false));
            let elements = theirs.elements_not_used.into_iter().map(|r| (r, true));
            for ((reason, count), element) in reasons.chain(elements) {
                let entry = match element {
                    false => ours.left_out.entry(reason).or_default(),
                    true => ours.elements_not_used.entry(reason).or_default(),
                };
                entry.count += count.count;
                for (value, n) in count.by_value {
                    entry.count_value(&value, n);
                }
                entry.examples.extend(count.examples);
                entry.examples.sort();
                entry.examples.dedup();
                entry.examples.truncate(MAX_EXAMPLES);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offending_values_and_file_names_are_kept_escaped() {
        let mut quality = DataQuality::default();
        let skip = |reason, detail: &str| Skip {
            reason,
            resource_id: None,
            detail: Some(detail.to_owned()),
            copy: None,
        };
        quality.count_skip(
            ResourceType::Observation,
            skip(SkipReason::UnknownUnit, "mAU\u{202e}/mL\n\u{1b}[2J"),
            || "line 3 of Observation\u{202e}.ndjson".to_owned(),
        );
        let unit = &quality.by_type["Observation"].left_out["unknown_unit"];
        assert_eq!(
            unit.by_value.keys().collect::<Vec<_>>(),
            ["mAU\\u{202e}/mL\\u{a}\\u{1b}[2J"]
        );
        assert_eq!(
            unit.examples,
            [Example {
                resource: "line 3 of Observation\\u{202e}.ndjson".into(),
                detail: Some("mAU\\u{202e}/mL\\u{a}\\u{1b}[2J".into()),
            }]
        );
    }
}
