//! Which patients a run covers: everyone with a TARE, or exactly a requested cohort; and, to
//! spread a run over machines, one shard of them by a stable hash of the patient id.

use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// A cohort or a shard that cannot be used as asked: the request is wrong (exit code 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CohortError {
    #[error("{0:?}: write the shard as I/N, e.g. 0/4")]
    ShardFormat(String),
    #[error("shard {index}/{count}: the index counts from 0 and must be below the count")]
    ShardOutOfRange { index: u32, count: u32 },
    #[error("JOB_COMPLETION_INDEX {0:?} is not a number")]
    JobIndex(String),
    #[error("{file} line {line}: {text:?} needs both a system and a value (system|value)")]
    HalfIdentifier {
        file: String,
        line: usize,
        text: String,
    },
    #[error(
        "{file} line {line}: {text:?} is neither a FHIR id ([A-Za-z0-9.-], up to 64) nor system|value"
    )]
    NotAnIdOrIdentifier {
        file: String,
        line: usize,
        text: String,
    },
    #[error("--{option} {id:?} is not a FHIR id ([A-Za-z0-9.-], up to 64 characters)")]
    NotAnId { option: &'static str, id: String },
    #[error("identifiers (system|value) and --group are resolved on a FHIR server: use --server")]
    NeedsServer,
}

/// The patients a run evaluates and writes for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every patient with a TARE Procedure.
    Everyone,
    /// Exactly these patients (ids), whether or not they turn out to have a TARE.
    Patients(Vec<String>),
}

/// A selection, narrowed to one shard when the run is sharded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub selection: Selection,
    pub shard: Option<Shard>,
}

impl Scope {
    pub const EVERYONE: Scope = Scope {
        selection: Selection::Everyone,
        shard: None,
    };

    /// Whether the shard (if any) holds this patient; the selection is not consulted.
    pub fn in_shard(&self, patient_id: &str) -> bool {
        self.shard.is_none_or(|shard| shard.contains(patient_id))
    }

    /// The requested patients of this shard, sorted and without repeats; `None` for everyone.
    pub fn requested(&self) -> Option<Vec<String>> {
        match &self.selection {
            Selection::Everyone => None,
            Selection::Patients(ids) => {
                let mut ids: Vec<String> =
                    ids.iter().filter(|id| self.in_shard(id)).cloned().collect();
                ids.sort();
                ids.dedup();
                Some(ids)
            }
        }
    }
}

/// One of `count` disjoint parts of the cohort (`index` counts from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Whether the patient belongs to this shard: the first 8 bytes of SHA-256 of the id,
    /// modulo the count. Stable across runs, machines and versions (never `Hash`, which is
    /// seeded per process).
    pub fn contains(&self, patient_id: &str) -> bool {
        let digest = Sha256::digest(patient_id.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first) % u64::from(self.count) == u64::from(self.index)
    }

    /// `.shard-2-of-4`, appended to output file names so shards never overwrite each other.
    pub fn file_suffix(&self) -> String {
        format!(".shard-{}-of-{}", self.index, self.count)
    }

    /// The shard of a Kubernetes Indexed Job: the index from `JOB_COMPLETION_INDEX`, the count
    /// from the config. `None` when the variable is not set.
    pub fn from_job_index(value: Option<&str>, count: u32) -> Result<Option<Shard>, CohortError> {
        let Some(value) = value else { return Ok(None) };
        let index: u32 = value
            .trim()
            .parse()
            .map_err(|_| CohortError::JobIndex(value.to_owned()))?;
        Shard::new(index, count).map(Some)
    }

    pub fn new(index: u32, count: u32) -> Result<Shard, CohortError> {
        if count == 0 || index >= count {
            return Err(CohortError::ShardOutOfRange { index, count });
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = CohortError;

    /// `I/N`, as in `--shard 2/4`.
    fn from_str(text: &str) -> Result<Shard, CohortError> {
        let format = || CohortError::ShardFormat(text.to_owned());
        let (index, count) = text.split_once('/').ok_or_else(format)?;
        let number = |part: &str| part.trim().parse::<u32>().map_err(|_| format());
        Shard::new(number(index)?, number(count)?)
    }
}

/// A line of a cohort file: a patient id, or a business identifier to resolve through
/// `Patient?identifier=system|value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CohortEntry {
    PatientId(String),
    Identifier { system: String, value: String },
}

impl fmt::Display for CohortEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CohortEntry::PatientId(id) => f.write_str(id),
            CohortEntry::Identifier { system, value } => write!(f, "{system}|{value}"),
        }
    }
}

/// Reads a cohort file: one patient id or `system|value` per line; blank lines and `#`
/// comments (whole-line, or trailing after white space) are ignored. A malformed line is an error naming it.
pub fn parse_cohort_file(text: &str, file: &str) -> Result<Vec<CohortEntry>, CohortError> {
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = strip_comment(line).trim();
        if line.is_empty() {
            continue;
        }
        let entry = match line.split_once('|') {
            Some((system, value)) if !system.is_empty() && !value.is_empty() => {
                CohortEntry::Identifier {
                    system: system.to_owned(),
                    value: value.to_owned(),
                }
            }
            Some(_) => {
                return Err(CohortError::HalfIdentifier {
                    file: file.to_owned(),
                    line: n + 1,
                    text: line.to_owned(),
                })
            }
            None if is_fhir_id(line) => CohortEntry::PatientId(line.to_owned()),
            None => {
                return Err(CohortError::NotAnIdOrIdentifier {
                    file: file.to_owned(),
                    line: n + 1,
                    text: line.to_owned(),
                })
            }
        };
        entries.push(entry);
    }
    Ok(entries)
}

/// The line without its `#` comment: a `#` at the start or after white space (a `#` inside a
/// system URL is kept).
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    let start = (0..bytes.len())
        .find(|&i| bytes[i] == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()));
    &line[..start.unwrap_or(line.len())]
}

pub use crate::ingest::is_fhir_id;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_patients_stably() {
        let ids: Vec<String> = (0..1000).map(|n| format!("p{n}")).collect();
        let shards: Vec<Shard> = (0..4).map(|i| Shard::new(i, 4).unwrap()).collect();
        for id in &ids {
            let owners = shards.iter().filter(|s| s.contains(id)).count();
            assert_eq!(owners, 1, "{id}");
        }
        // Pinned, so a change of hash (which would move patients between shards) is noticed.
        let first: Vec<u32> = ["p0", "p1", "p2", "p3", "seed-88000"]
            .iter()
            .map(|id| shards.iter().find(|s| s.contains(id)).unwrap().index)
            .collect();
        assert_eq!(first, PINNED);
    }

    // Checked with Python: int.from_bytes(sha256(id).digest()[:8], "big") % 4.
    const PINNED: [u32; 5] = [0, 3, 0, 1, 3];

    #[test]
    fn shard_parses_i_of_n_and_rejects_an_index_out_of_range() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        assert_eq!(
            "4/4".parse::<Shard>().unwrap_err().to_string(),
            "shard 4/4: the index counts from 0 and must be below the count"
        );
        assert!("two".parse::<Shard>().is_err());
        assert_eq!(
            Shard::from_job_index(Some("3"), 5),
            Ok(Some(Shard { index: 3, count: 5 }))
        );
        assert_eq!(Shard::from_job_index(None, 5), Ok(None));
    }

    #[test]
    fn cohort_file_takes_ids_identifiers_comments_and_blank_lines() {
        let text = "# TARE review, 2026-11\np-1\n\n  http://hospital.example/mrn|12345  # Mrs K\np-2 # trailing\n";
        assert_eq!(
            parse_cohort_file(text, "c.txt"),
            Ok(vec![
                CohortEntry::PatientId("p-1".into()),
                CohortEntry::Identifier {
                    system: "http://hospital.example/mrn".into(),
                    value: "12345".into()
                },
                CohortEntry::PatientId("p-2".into()),
            ])
        );
    }

    #[test]
    fn cohort_file_names_the_line_of_a_malformed_entry() {
        assert_eq!(
            parse_cohort_file("p-1\nPatient/p 2\n", "c.txt")
                .unwrap_err()
                .to_string(),
            "c.txt line 2: \"Patient/p 2\" is neither a FHIR id ([A-Za-z0-9.-], up to 64) nor system|value"
        );
        assert_eq!(
            parse_cohort_file("|123\n", "c.txt")
                .unwrap_err()
                .to_string(),
            "c.txt line 1: \"|123\" needs both a system and a value (system|value)"
        );
    }
}
