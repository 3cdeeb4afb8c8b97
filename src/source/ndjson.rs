//! A folder in the FHIR Bulk Data layout: `<Type>*.ndjson` (or `.ndjson.gz`) per resource type.
//! Files are read in blocks of whole lines; blocks are parsed on all worker threads and merged
//! into one cohort as they finish, so memory holds compact records, not the files.

use super::{Collected, Loaded};
use crate::ingest::{Ingestor, LineOutcome, ResourceType};
use rayon::iter::{ParallelBridge, ParallelIterator};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const BLOCK_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read source folder {path}: {source}")]
    Folder {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "source folder {0} holds no Patient, Condition, Procedure or Observation .ndjson files"
    )]
    NoFiles(String),
    #[error("cannot read {path} after line {line}: {source}")]
    File {
        path: String,
        line: u64,
        source: std::io::Error,
    },
}

/// One input file and the resource type its name declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: PathBuf,
    pub kind: ResourceType,
    pub gzip: bool,
}

/// The files of a Bulk Data folder, sorted by name, and the names it ignored.
#[derive(Debug, Clone, Default)]
pub struct Discovered {
    pub files: Vec<SourceFile>,
    pub ignored: Vec<String>,
}

/// `Observation.ndjson`, `Observation-2.ndjson.gz`, `Observation.000.ndjson`: the type is the
/// name's leading word, which must not run on into a longer word (`ObservationDefinition`).
fn classify(name: &str) -> Option<(ResourceType, bool)> {
    let (stem, gzip) = if let Some(stem) = name.strip_suffix(".ndjson.gz") {
        (stem, true)
    } else {
        (name.strip_suffix(".ndjson")?, false)
    };
    ResourceType::ALL.into_iter().find_map(|kind| {
        let rest = stem.strip_prefix(kind.name())?;
        (!rest.starts_with(|c: char| c.is_ascii_alphabetic())).then_some((kind, gzip))
    })
}

pub fn discover(dir: &Path) -> Result<Discovered, SourceError> {
    let folder_error = |source| SourceError::Folder {
        path: dir.display().to_string(),
        source,
    };
    let mut discovered = Discovered::default();
    for entry in std::fs::read_dir(dir).map_err(folder_error)? {
        let entry = entry.map_err(folder_error)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type().map_err(folder_error)?.is_file() {
            continue;
        }
        match classify(&name) {
            Some((kind, gzip)) => discovered.files.push(SourceFile {
                path: entry.path(),
                kind,
                gzip,
            }),
            None => discovered.ignored.push(name),
        }
    }
    if discovered.files.is_empty() {
        return Err(SourceError::NoFiles(dir.display().to_string()));
    }
    discovered.files.sort_by(|a, b| a.path.cmp(&b.path));
    discovered.ignored.sort();
    Ok(discovered)
}

/// Whole lines of one file, and where they start.
pub struct Block {
    pub file_index: usize,
    pub kind: ResourceType,
    /// 1-based number of the block's first line in its file.
    pub first_line: u64,
    pub bytes: Vec<u8>,
}

/// Block buffers handed back after parsing, so a large run reuses a few megabytes instead of
/// asking the kernel for fresh zeroed pages for every block.
#[derive(Default)]
pub struct BufferPool(Mutex<Vec<Vec<u8>>>);

impl BufferPool {
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default()
    }

    pub fn give_back(&self, mut buffer: Vec<u8>) {
        buffer.clear();
        let mut free = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < 16 {
            free.push(buffer);
        }
    }
}

/// Reads the files one after another as blocks of whole lines.
pub struct BlockReader<'a> {
    files: &'a [SourceFile],
    pool: &'a BufferPool,
    file_index: usize,
    reader: Option<Box<dyn Read + Send>>,
    carry: Vec<u8>,
    next_line: u64,
    failed: bool,
}

impl<'a> BlockReader<'a> {
    pub fn new(files: &'a [SourceFile], pool: &'a BufferPool) -> Self {
        BlockReader {
            files,
            pool,
            file_index: 0,
            reader: None,
            carry: Vec::new(),
            next_line: 1,
            failed: false,
        }
    }

    fn open(file: &SourceFile) -> std::io::Result<Box<dyn Read + Send>> {
        let file_handle = File::open(&file.path)?;
        Ok(if file.gzip {
            Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(
                file_handle,
            )))
        } else {
            // Blocks are large reads already: a BufReader would only add a copy.
            Box::new(file_handle)
        })
    }

    fn error(&mut self, source: std::io::Error) -> Option<Result<Block, SourceError>> {
        self.failed = true;
        Some(Err(SourceError::File {
            path: self.files[self.file_index].path.display().to_string(),
            line: self.next_line.saturating_sub(1),
            source,
        }))
    }
}

impl Iterator for BlockReader<'_> {
    type Item = Result<Block, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed || self.file_index >= self.files.len() {
                return None;
            }
            if self.reader.is_none() {
                match Self::open(&self.files[self.file_index]) {
                    Ok(r) => self.reader = Some(r),
                    Err(e) => return self.error(e),
                }
            }
            let mut bytes = self.pool.take();
            bytes.extend_from_slice(&self.carry);
            self.carry.clear();
            bytes.reserve(BLOCK_BYTES);
            let reader = self.reader.as_mut().expect("opened above");
            let read = match reader
                .as_mut()
                .take(BLOCK_BYTES as u64)
                .read_to_end(&mut bytes)
            {
                Ok(n) => n,
                Err(e) => return self.error(e),
            };
            let at_end = read == 0;
            if !at_end {
                // Keep the partial last line for the next block.
                match memchr::memrchr(b'\n', &bytes) {
                    Some(pos) => {
                        self.carry.extend_from_slice(&bytes[pos + 1..]);
                        bytes.truncate(pos + 1);
                    }
                    None => {
                        self.carry = bytes;
                        continue;
                    }
                }
            }
            let block = Block {
                file_index: self.file_index,
                kind: self.files[self.file_index].kind,
                first_line: self.next_line,
                bytes,
            };
            self.next_line += memchr::memchr_iter(b'\n', &block.bytes).count() as u64;
            if at_end {
                self.reader = None;
                self.file_index += 1;
                self.next_line = 1;
                if block.bytes.is_empty() {
                    self.pool.give_back(block.bytes);
                    continue;
                }
            }
            return Some(Ok(block));
        }
    }
}

/// The non-blank lines of a block with their 1-based line numbers.
pub fn lines(block: &Block) -> impl Iterator<Item = (u64, &[u8])> {
    let bytes = &block.bytes[..];
    let ends = memchr::memchr_iter(b'\n', bytes).chain(std::iter::once(bytes.len()));
    let mut start = 0;
    ends.enumerate()
        .map(move |(i, end)| {
            let line = &bytes[start.min(end)..end];
            start = end + 1;
            (block.first_line + i as u64, line.trim_ascii())
        })
        .filter(|(_, line)| !line.is_empty())
}

fn read_block(block: &Block, files: &[SourceFile], ingestor: &Ingestor, into: &mut Collected) {
    for (line_no, line) in lines(block) {
        let location = || {
            format!(
                "line {line_no} of {}",
                files[block.file_index]
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            )
        };
        match std::str::from_utf8(line) {
            Ok(text) => into.add_resource(ingestor, block.kind, text, location),
            // Not text: no patient can be told, so it is shard 0's to count.
            Err(_) if !ingestor.in_shard(&LineOutcome::NotRelevant, "") => {}
            Err(e) => {
                into.quality.count_read(block.kind, 1);
                into.quality.count_skip(
                    block.kind,
                    crate::ingest::Skip {
                        reason: crate::ingest::SkipReason::InvalidJson,
                        resource_id: None,
                        detail: Some(format!("not UTF-8: {e}")),
                    },
                    location,
                )
            }
        }
    }
}

/// Reads every file of the folder on the current rayon pool into patient timelines.
pub fn load(dir: &Path, ingestor: &Ingestor) -> Result<Loaded, SourceError> {
    let discovered = discover(dir)?;
    let files = discovered.files;
    let pool = BufferPool::default();
    // Each worker collects its own share; they merge at the end, so no lock is held while
    // parsing.
    let (collected, error) = BlockReader::new(&files, &pool)
        .par_bridge()
        .fold(
            || (Collected::default(), None),
            |(mut collected, error): (Collected, Option<SourceError>), block| match block {
                Ok(block) => {
                    read_block(&block, &files, ingestor, &mut collected);
                    pool.give_back(block.bytes);
                    (collected, error)
                }
                Err(e) => (collected, error.or(Some(e))),
            },
        )
        .reduce(
            || (Collected::default(), None),
            |(a, error_a), (b, error_b)| (a.merge(b), error_a.or(error_b)),
        );
    if let Some(error) = error {
        return Err(error);
    }
    Ok(collected.finish(
        files.iter().map(|f| f.path.display().to_string()).collect(),
        discovered.ignored,
    ))
}

/// The floor for any JSON job: parse every line of the folder as `IgnoredAny`, with the same
/// reader and threads as `load`. With an `Ingestor`, each line goes through our read structs
/// and checks instead (records discarded): the benchmark's middle figure, which separates the
/// cost of reading typed fields from the cost of grouping, evaluating and writing.
/// Returns the number of lines parsed (or, with an `Ingestor`, turned into records).
pub fn parse_floor(dir: &Path, lean: Option<&Ingestor>) -> Result<u64, SourceError> {
    let files = discover(dir)?.files;
    let first_error: Mutex<Option<SourceError>> = Mutex::new(None);
    let pool = BufferPool::default();
    let parsed = BlockReader::new(&files, &pool)
        .par_bridge()
        .map(|block| match block {
            Ok(block) => {
                let parsed = lines(&block)
                    .filter(|(_, line)| match lean {
                        None => serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok(),
                        Some(ingestor) => std::str::from_utf8(line).is_ok_and(|text| {
                            matches!(ingestor.read_line(block.kind, text), LineOutcome::Record(_))
                        }),
                    })
                    .count() as u64;
                pool.give_back(block.bytes);
                parsed
            }
            Err(e) => {
                first_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(e);
                0
            }
        })
        .sum();
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(parsed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_declare_their_type() {
        assert_eq!(
            classify("Observation.ndjson"),
            Some((ResourceType::Observation, false))
        );
        assert_eq!(
            classify("Observation-002.ndjson.gz"),
            Some((ResourceType::Observation, true))
        );
        assert_eq!(classify("ObservationDefinition.ndjson"), None);
        assert_eq!(classify("Patient.json"), None);
        assert_eq!(classify("Encounter.ndjson"), None);
    }
}
