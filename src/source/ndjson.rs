//! A folder in the FHIR Bulk Data layout: `<Type>*.ndjson` (or `.ndjson.gz`) per resource type.
//! Files are read in blocks of whole lines; blocks are parsed on all worker threads and merged
//! into one cohort as they finish, so memory holds compact records, not the files.

use super::{Collected, Loaded};
use crate::ingest::{Ingestor, ResourceType, Skip, SkipReason};
use rayon::iter::{ParallelBridge, ParallelIterator};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// Without Observations nothing can be evaluated: a wrong folder, an export that failed.
    #[error("source folder {0} holds no Observation data (no Observation*.ndjson file with a line in it)")]
    NoObservations(String),
    #[error("cannot read {path} after line {line}: {source}")]
    File {
        path: String,
        line: u64,
        source: std::io::Error,
    },
    /// SIGINT or SIGTERM: the read stopped between two blocks, or while one was awaited.
    #[error("interrupted")]
    Interrupted,
    /// The reading did not end in time: a file or its file system that does not answer.
    #[error("reading {path} did not end within {minutes} minutes (ingest.max_read_minutes): the file, or the file system it is on, does not answer")]
    TooSlow { path: String, minutes: f64 },
}

/// One input file and the resource type its name declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: PathBuf,
    pub kind: ResourceType,
    pub gzip: bool,
}

/// A name in the folder that is not read, and why (listed in the run summary).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct IgnoredInput {
    pub name: String,
    pub reason: String,
}

impl IgnoredInput {
    /// A Bulk Data file of a type the job does not read (`Encounter.ndjson`).
    pub fn is_other_resource_type(&self) -> bool {
        self.reason == OTHER_TYPE
            && (self.name.ends_with(".ndjson") || self.name.ends_with(".ndjson.gz"))
    }
}

const OTHER_TYPE: &str = "not a Bulk Data file of a type the job reads";

/// The files of a Bulk Data folder, sorted by name, and the names it ignored.
#[derive(Debug, Clone, Default)]
pub struct Discovered {
    pub files: Vec<SourceFile>,
    pub ignored: Vec<IgnoredInput>,
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

/// Why a Bulk Data name cannot be read as a file, following symbolic links (as Kubernetes
/// volumes and many export tools present files); `None` when it can.
fn unreadable(path: &Path) -> Option<String> {
    let link = std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false);
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => None,
        Ok(meta) if meta.is_dir() => Some("a folder, not a file".into()),
        Ok(_) => Some("not a regular file".into()),
        Err(e) if link && e.kind() == std::io::ErrorKind::NotFound => {
            Some("a symbolic link whose target is missing".into())
        }
        // ELOOP: the link leads back to itself.
        Err(e) if link && e.raw_os_error() == Some(40) => Some("a loop of symbolic links".into()),
        Err(e) => Some(format!("cannot be read: {e}")),
    }
}

/// The identity of the file a path leads to, so two names for one file are read once.
#[cfg(unix)]
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    let _ = path;
    None
}

pub fn discover(dir: &Path) -> Result<Discovered, SourceError> {
    let folder_error = |source| SourceError::Folder {
        path: dir.display().to_string(),
        source,
    };
    let mut discovered = Discovered::default();
    let mut names: Vec<(String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(folder_error)? {
        let entry = entry.map_err(folder_error)?;
        names.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    // Sorted first, so of two names for one file the first in name order is the one read.
    names.sort();
    let mut seen: rustc_hash::FxHashMap<(u64, u64), String> = Default::default();
    for (name, path) in names {
        let ignore = |reason: String| IgnoredInput {
            name: name.clone(),
            reason,
        };
        let Some((kind, gzip)) = classify(&name) else {
            let reason = match std::fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => "a folder: the job reads the files of one folder",
                _ => OTHER_TYPE,
            };
            discovered.ignored.push(ignore(reason.into()));
            continue;
        };
        if let Some(reason) = unreadable(&path) {
            discovered.ignored.push(ignore(reason));
            continue;
        }
        if let Some(identity) = file_identity(&path) {
            if let Some(first) = seen.get(&identity) {
                discovered
                    .ignored
                    .push(ignore(format!("the same file as {first}, which is read")));
                continue;
            }
            seen.insert(identity, name.clone());
        }
        discovered.files.push(SourceFile { path, kind, gzip });
    }
    if discovered.files.is_empty() {
        return Err(SourceError::NoFiles(dir.display().to_string()));
    }
    Ok(discovered)
}

/// Whole lines of one file, and where they start.
pub struct Block {
    pub file_index: usize,
    pub kind: ResourceType,
    /// 1-based number of the block's first line in its file.
    pub first_line: u64,
    pub bytes: Vec<u8>,
    /// Lines longer than the limit, skipped unread before this block's lines (numbers).
    pub too_long: Vec<u64>,
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

/// Reads the files one after another as blocks of whole lines. A line longer than
/// `max_line` is never held whole: it is read past and its number reported, so memory stays
/// within a few blocks and time grows linearly whatever the input (a gzip stream that expands
/// to gigabytes without a newline included).
///
/// The files are opened and read on a thread of their own, so that the thread waiting for the
/// next block can give up: at the deadline (`ingest.max_read_minutes`), or within a fraction of
/// a second of SIGINT/SIGTERM. A read that never returns (a stalled network mount) then only
/// leaves that thread behind, and the process ends all the same. A name that is no longer a
/// regular file when it is opened (a FIFO or a device put in its place after the folder was
/// listed) is refused without waiting for it.
pub struct BlockReader<'a> {
    files: &'a [SourceFile],
    pool: &'a BufferPool,
    max_line: usize,
    /// The reading must be over by then (`ingest.max_read_minutes`, in minutes).
    deadline: Option<(Instant, f64)>,
    thread: Option<ReadingThread>,
    ended: bool,
    /// On a terminal: the bytes of the files read so far, moved once per block.
    progress: Option<crate::progress::Progress>,
}

/// The thread that reads, seen from the one that waits: empty buffers go to it, blocks come
/// back (`None` at the end), and it says which file it is at.
struct ReadingThread {
    buffers: SyncSender<Vec<u8>>,
    blocks: Receiver<Option<Result<Block, SourceError>>>,
    at_file: Arc<AtomicUsize>,
    /// Bytes of the files read so far (compressed bytes for gzip).
    consumed: Arc<AtomicU64>,
    /// Buffers sent and not yet answered.
    asked: usize,
}

/// Blocks read ahead of the one being handed out: enough that the reading thread, which
/// shares the cores with the workers, is rarely what a worker waits for (8 MB).
const READ_AHEAD: usize = 8;

/// How often the waiting thread looks at the deadline and for a stop.
const WAIT_TICK: Duration = Duration::from_millis(100);

impl<'a> BlockReader<'a> {
    pub fn new(files: &'a [SourceFile], pool: &'a BufferPool, max_line: usize) -> Self {
        BlockReader {
            files,
            pool,
            max_line: max_line.max(1),
            deadline: None,
            thread: None,
            ended: false,
            progress: None,
        }
    }

    /// Shows, on a terminal, a bar of the bytes read out of the files' sizes (a gzip file by
    /// the compressed bytes consumed), moved once per block.
    pub fn with_progress(mut self, stage: &'static str) -> Self {
        let total = self
            .files
            .iter()
            .filter_map(|f| std::fs::metadata(&f.path).ok())
            .map(|m| m.len())
            .sum();
        self.progress = Some(crate::progress::Progress::bytes(stage, total));
        self
    }

    /// The reading ends with an error once it has taken longer than `minutes`.
    pub fn within_minutes(mut self, minutes: f64) -> Self {
        let limit = Duration::try_from_secs_f64(minutes * 60.0).unwrap_or(Duration::MAX);
        self.deadline = Instant::now()
            .checked_add(limit)
            .map(|deadline| (deadline, minutes));
        self
    }

    fn start(&mut self) -> &mut ReadingThread {
        self.thread.get_or_insert_with(|| {
            let (buffers, buffers_in) = std::sync::mpsc::sync_channel(READ_AHEAD);
            let (blocks_out, blocks) = std::sync::mpsc::sync_channel(READ_AHEAD);
            let at_file = Arc::new(AtomicUsize::new(0));
            let consumed = Arc::new(AtomicU64::new(0));
            let mut files = FileBlocks::new(
                self.files.to_vec(),
                self.max_line,
                at_file.clone(),
                consumed.clone(),
            );
            std::thread::Builder::new()
                .name("read-files".into())
                .spawn(move || {
                    while let Ok(buffer) = buffers_in.recv() {
                        let block = files.next_block(buffer);
                        let last = !matches!(block, Some(Ok(_)));
                        if blocks_out.send(block).is_err() || last {
                            return;
                        }
                    }
                })
                .map(|_| ())
                .unwrap_or_else(|e| {
                    // Without a thread the wait below ends on the closed channel.
                    tracing::error!(error = %e, "cannot start the thread that reads the files");
                });
            ReadingThread {
                buffers,
                blocks,
                at_file,
                consumed,
                asked: 0,
            }
        })
    }

    fn fail(&mut self, error: SourceError) -> Option<Result<Block, SourceError>> {
        self.finish_progress();
        self.ended = true;
        // Dropping the channels lets a thread that is not stuck end.
        self.thread = None;
        Some(Err(error))
    }
}

/// What the waiting thread got.
enum Waited {
    Block(Result<Block, SourceError>),
    End,
    /// The deadline passed while the thread was at this file.
    TooLate(usize),
    /// The reading thread is gone (it could not start, or panicked) while at this file.
    Gone(usize),
}

impl ReadingThread {
    /// Waits for the next block, looking every `WAIT_TICK` for a stop asked for and at the
    /// deadline.
    fn wait(&mut self, deadline: Option<Instant>) -> Waited {
        loop {
            match self.blocks.recv_timeout(WAIT_TICK) {
                Ok(block) => {
                    self.asked -= 1;
                    return block.map_or(Waited::End, Waited::Block);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if crate::interrupt::requested() {
                        return Waited::Block(Err(SourceError::Interrupted));
                    }
                    if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                        return Waited::TooLate(self.at_file.load(Ordering::Relaxed));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Waited::Gone(self.at_file.load(Ordering::Relaxed))
                }
            }
        }
    }
}

impl BlockReader<'_> {
    fn finish_progress(&mut self) {
        if let Some(progress) = self.progress.take() {
            progress.finish();
        }
    }
}

impl Drop for BlockReader<'_> {
    fn drop(&mut self) {
        self.finish_progress();
    }
}

impl Iterator for BlockReader<'_> {
    type Item = Result<Block, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended || self.files.is_empty() {
            return None;
        }
        let (pool, files) = (self.pool, self.files);
        let deadline = self.deadline.map(|(deadline, _)| deadline);
        let thread = self.start();
        while thread.asked < READ_AHEAD && thread.buffers.send(pool.take()).is_ok() {
            thread.asked += 1;
        }
        let path_of = |at: usize| files[at.min(files.len() - 1)].path.display().to_string();
        let waited = thread.wait(deadline);
        let consumed = thread.consumed.load(Ordering::Relaxed);
        if let Some(progress) = &self.progress {
            progress.set(consumed);
        }
        match waited {
            Waited::Block(Ok(block)) => Some(Ok(block)),
            Waited::Block(Err(error)) => self.fail(error),
            Waited::End => {
                self.finish_progress();
                self.ended = true;
                self.thread = None;
                None
            }
            Waited::TooLate(at) => {
                let error = SourceError::TooSlow {
                    path: path_of(at),
                    minutes: self.deadline.map_or(0.0, |(_, minutes)| minutes),
                };
                self.fail(error)
            }
            Waited::Gone(at) => {
                let error = SourceError::File {
                    path: path_of(at),
                    line: 0,
                    source: std::io::Error::other("the thread reading it stopped"),
                };
                self.fail(error)
            }
        }
    }
}

/// Opens a Bulk Data file for reading without waiting on it: opened non-blocking (opening a
/// FIFO with no writer would wait forever), refused unless it is a regular file, then read
/// blocking as usual.
fn open_regular_file(path: &Path) -> std::io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let file = File::from(fd);
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            NOT_REGULAR_ANY_MORE,
        ));
    }
    let flags = rustix::fs::fcntl_getfl(&file)?;
    rustix::fs::fcntl_setfl(&file, flags - OFlags::NONBLOCK)?;
    Ok(file)
}

const NOT_REGULAR_ANY_MORE: &str =
    "not a regular file any more (a FIFO, device or socket put in its place after the folder was listed): not read";

/// Debug builds only, for the tests: `TMM_TEST_STALL_READING=NAME` makes the reading thread
/// wait forever before opening the file NAME, as on a network mount that stopped answering.
#[cfg(debug_assertions)]
fn stall_if_asked(path: &Path) {
    let asked = std::env::var_os("TMM_TEST_STALL_READING");
    if asked.is_some() && path.file_name() == asked.as_deref() {
        eprintln!(
            "test: reading {} stalls (TMM_TEST_STALL_READING)",
            path.display()
        );
        loop {
            std::thread::park();
        }
    }
}

#[cfg(not(debug_assertions))]
fn stall_if_asked(_: &Path) {}

/// The reading itself, on the reading thread: the files one after another, in blocks of whole
/// lines.
struct FileBlocks {
    files: Vec<SourceFile>,
    max_line: usize,
    file_index: usize,
    /// Shared with the waiting thread, for its messages.
    at_file: Arc<AtomicUsize>,
    /// Shared with the waiting thread, for its progress bar: bytes read from the files.
    consumed: Arc<AtomicU64>,
    reader: Option<Box<dyn Read + Send>>,
    carry: Vec<u8>,
    next_line: u64,
}

/// A file that adds the bytes read from it to a shared count (one addition per read call: a
/// block, or a gzip decoder's buffer, never a line).
struct Counted {
    inner: File,
    consumed: Arc<AtomicU64>,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.consumed.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Appends up to `limit` bytes from `reader` to `bytes`; returns how many.
fn read_chunk(reader: &mut dyn Read, bytes: &mut Vec<u8>, limit: usize) -> std::io::Result<usize> {
    reader.take(limit as u64).read_to_end(bytes)
}

impl FileBlocks {
    fn new(
        files: Vec<SourceFile>,
        max_line: usize,
        at_file: Arc<AtomicUsize>,
        consumed: Arc<AtomicU64>,
    ) -> Self {
        FileBlocks {
            files,
            max_line,
            file_index: 0,
            at_file,
            consumed,
            reader: None,
            carry: Vec::new(),
            next_line: 1,
        }
    }

    fn open(file: &SourceFile, consumed: &Arc<AtomicU64>) -> std::io::Result<Box<dyn Read + Send>> {
        stall_if_asked(&file.path);
        let opened = open_regular_file(&file.path)?;
        Ok(if file.gzip {
            // Counted as read from the disk: a gzip file by its compressed bytes.
            let counted = Counted {
                inner: opened,
                consumed: consumed.clone(),
            };
            Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(counted)))
        } else {
            // The File itself, not a wrapper: its own `read_buf` reads into a block's spare
            // room without zeroing it first (a wrapper's default would clear every megabyte
            // before reading it). Blocks are large reads already: a BufReader would only add
            // a copy. Its bytes are counted per read in `next_block`.
            Box::new(opened)
        })
    }

    fn error(&self, source: std::io::Error) -> Option<Result<Block, SourceError>> {
        Some(Err(SourceError::File {
            path: self.files[self.file_index].path.display().to_string(),
            line: self.next_line.saturating_sub(1),
            source,
        }))
    }

    /// Reads past the rest of a line that is too long; returns what follows its newline
    /// (empty at the end of the file).
    fn skip_rest_of_line(reader: &mut dyn Read, scratch: &mut Vec<u8>) -> std::io::Result<()> {
        loop {
            scratch.clear();
            if read_chunk(reader, scratch, BLOCK_BYTES)? == 0 {
                return Ok(());
            }
            if let Some(pos) = memchr::memchr(b'\n', scratch) {
                scratch.drain(..=pos);
                return Ok(());
            }
        }
    }

    /// The next block, read into `bytes` (an empty buffer, reused); `None` after the last file.
    fn next_block(&mut self, mut bytes: Vec<u8>) -> Option<Result<Block, SourceError>> {
        loop {
            if self.file_index >= self.files.len() {
                return None;
            }
            if self.reader.is_none() {
                self.at_file.store(self.file_index, Ordering::Relaxed);
                match Self::open(&self.files[self.file_index], &self.consumed) {
                    Ok(r) => self.reader = Some(r),
                    Err(e) => return self.error(e),
                }
            }
            // With room for the partial line left by the previous block and a whole read, so
            // reading never grows it (growing asks for fresh zeroed pages).
            bytes.clear();
            bytes.reserve(self.carry.len() + BLOCK_BYTES + 1);
            bytes.extend_from_slice(&self.carry);
            self.carry.clear();
            let mut too_long = Vec::new();
            // Bytes already known to hold no newline: only new bytes are searched.
            let mut scanned = 0;
            let at_end = loop {
                let reader = self.reader.as_mut().expect("opened above");
                match read_chunk(reader.as_mut(), &mut bytes, BLOCK_BYTES) {
                    Ok(0) => break true,
                    Ok(n) if !self.files[self.file_index].gzip => {
                        self.consumed.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => return self.error(e),
                }
                if memchr::memchr(b'\n', &bytes[scanned..]).is_some() {
                    break false;
                }
                scanned = bytes.len();
                if bytes.len() > self.max_line {
                    // All of `bytes` is one unfinished line, already too long.
                    too_long.push(self.next_line);
                    self.next_line += 1;
                    if let Err(e) = Self::skip_rest_of_line(reader.as_mut(), &mut bytes) {
                        return self.error(e);
                    }
                    scanned = 0;
                    if memchr::memchr(b'\n', &bytes).is_some() {
                        break false;
                    }
                }
            };
            if !at_end {
                // Keep the partial last line for the next block.
                if let Some(pos) = memchr::memrchr(b'\n', &bytes) {
                    self.carry.extend_from_slice(&bytes[pos + 1..]);
                    bytes.truncate(pos + 1);
                }
            }
            let first_line = self.next_line;
            self.next_line += memchr::memchr_iter(b'\n', &bytes).count() as u64;
            let kind = self.files[self.file_index].kind;
            let file_index = self.file_index;
            if at_end {
                self.reader = None;
                self.file_index += 1;
                self.next_line = 1;
                if bytes.is_empty() && too_long.is_empty() {
                    continue;
                }
            }
            return Some(Ok(Block {
                file_index,
                kind,
                first_line,
                bytes,
                too_long,
            }));
        }
    }
}

/// The non-blank lines of a block with their 1-based line numbers, and whether each holds a
/// backslash: one pass finds both (the prefilter need not look for escapes again in the
/// lines that hold none, nearly all of an export).
fn lines_and_escapes(block: &Block) -> impl Iterator<Item = (u64, &[u8], bool)> {
    let bytes = &block.bytes[..];
    let mut found = memchr::memchr2_iter(b'\n', b'\\', bytes);
    let (mut start, mut number, mut done) = (0, block.first_line, false);
    std::iter::from_fn(move || {
        let mut escapes = false;
        loop {
            if done {
                return None;
            }
            let end = loop {
                match found.next() {
                    Some(at) if bytes[at] == b'\\' => escapes = true,
                    Some(at) => break at,
                    None => {
                        done = true;
                        break bytes.len();
                    }
                }
            };
            let line = bytes[start.min(end)..end].trim_ascii();
            let line_no = number;
            (start, number) = (end + 1, number + 1);
            if !line.is_empty() {
                return Some((line_no, line, escapes));
            }
            escapes = false;
        }
    })
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
    let file_name = || {
        files[block.file_index]
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    // What no patient can be told for is counted by one shard only.
    let count_unreadable = |into: &mut Collected, line_no: u64, reason, detail| {
        if ingestor.counts_unattributable() {
            into.quality.count_read(block.kind, 1);
            into.quality.count_skip(
                block.kind,
                Skip {
                    reason,
                    resource_id: None,
                    detail,
                    copy: None,
                },
                || format!("line {line_no} of {}", file_name()),
            )
        }
    };
    let max_line = ingestor.max_line_bytes();
    let too_long = |n| Some(format!("longer than {n} bytes (ingest.max_line_bytes)"));
    if block.kind == ResourceType::Observation {
        into.observation_lines += block.too_long.len() as u64;
    }
    for &line_no in &block.too_long {
        count_unreadable(into, line_no, SkipReason::LineTooLong, too_long(max_line));
    }
    // The keys of the lines not followed go into this worker's list for the file (taken out
    // while the lines are read, as reading them borrows `into`).
    let mut unfollowed = std::mem::take(into.unfollowed_of(block.file_index));
    let mut passed_over = 0;
    for (line_no, line, may_hold_escapes) in lines_and_escapes(block) {
        if block.kind == ResourceType::Observation {
            into.observation_lines += 1;
        }
        if line.len() > max_line {
            count_unreadable(into, line_no, SkipReason::LineTooLong, too_long(max_line));
            continue;
        }
        let line = without_byte_order_mark(line);
        if let Some(passed) = ingestor.passes_over_scanned(block.kind, line, may_hold_escapes) {
            unfollowed.extend(passed.keys);
            passed_over += 1;
            continue;
        }
        match std::str::from_utf8(line) {
            Ok(text) => unfollowed.extend(into.add_resource(ingestor, block.kind, text, || {
                format!("line {line_no} of {}", file_name())
            })),
            Err(e) => count_unreadable(
                into,
                line_no,
                SkipReason::InvalidJson,
                Some(format!("not UTF-8: {e}")),
            ),
        }
    }
    *into.unfollowed_of(block.file_index) = unfollowed;
    // Counted as parsed resources of no monitored code are: by shard 0.
    if passed_over > 0 && ingestor.counts_unattributable() {
        into.quality.count_read(block.kind, passed_over);
        into.quality.count_not_relevant_n(block.kind, passed_over);
    }
}

/// A byte-order mark some tools put before the first line is not part of the JSON.
fn without_byte_order_mark(line: &[u8]) -> &[u8] {
    line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line)
}

/// The second look at the lines that were not followed but share a key with a resource that
/// was (docs/rules.md §1.5): each is ranked against that resource's copies, so a newer copy
/// re-coded to another test, malformed, or a near miss replaces the older ones. Only the files
/// holding such a line are read again; an export without repeated ids reads nothing more.
fn rank_unfollowed_copies(
    files: &[SourceFile],
    ingestor: &Ingestor,
    collected: &mut Collected,
) -> Result<(), SourceError> {
    let shared = collected.take_shared_keys();
    for (file_index, keys) in shared {
        tracing::debug!(
            file = %files[file_index].path.display(),
            copies = keys.len(),
            "reading a file again for copies of resources it read under another form"
        );
        let pool = BufferPool::default();
        let file = &files[file_index..=file_index];
        for block in BlockReader::new(file, &pool, ingestor.max_line_bytes()) {
            if crate::interrupt::requested() {
                return Err(SourceError::Interrupted);
            }
            let block = block?;
            for (_, line) in lines(&block) {
                if line.len() > ingestor.max_line_bytes() {
                    continue;
                }
                let Ok(text) = std::str::from_utf8(without_byte_order_mark(line)) else {
                    continue;
                };
                let shares_a_key = ingestor
                    .unfollowed_keys(block.kind, text)
                    .iter()
                    .any(|key| keys.contains(key));
                if let Some((id, rank)) = shares_a_key
                    .then(|| ingestor.copy_rank(block.kind, text))
                    .flatten()
                {
                    collected.cohort.add_competitor(block.kind, id.into(), rank);
                }
            }
            pool.give_back(block.bytes);
        }
    }
    Ok(())
}

/// Reads every file of the folder on the current rayon pool into patient timelines. A folder
/// without Observation data is an error: nothing could be evaluated.
pub fn load(dir: &Path, ingestor: &Ingestor) -> Result<Loaded, SourceError> {
    let loaded = read_folder(dir, ingestor)?;
    // Lines of any shard: a shard none of whose patients has a result has read a folder
    // with Observations all the same.
    if loaded.observation_lines == 0 {
        return Err(SourceError::NoObservations(dir.display().to_string()));
    }
    Ok(loaded)
}

/// Reads the files of a Bulk Data export: an export with no files, or no Observations, is a
/// valid empty result (nothing changed, or nothing to export).
pub fn load_export(dir: &Path, ingestor: &Ingestor) -> Result<Loaded, SourceError> {
    match read_folder(dir, ingestor) {
        Err(SourceError::NoFiles(_)) => Ok(Collected::default().finish(Vec::new(), Vec::new())),
        other => other,
    }
}

fn read_folder(dir: &Path, ingestor: &Ingestor) -> Result<Loaded, SourceError> {
    let discovered = discover(dir)?;
    for ignored in &discovered.ignored {
        // Files of the other resource types are what every real export holds: no warning.
        if ignored.is_other_resource_type() {
            tracing::info!(file = %ignored.name, reason = %ignored.reason, "input not read");
        } else {
            tracing::warn!(file = %ignored.name, reason = %ignored.reason, "input not read");
        }
    }
    let files = discovered.files;
    let pool = BufferPool::default();
    // Each worker collects its own share; they merge at the end, so no lock is held while
    // parsing.
    let (collected, error) = BlockReader::new(&files, &pool, ingestor.max_line_bytes())
        .within_minutes(ingestor.max_read_minutes())
        .with_progress("reading")
        .par_bridge()
        .fold(
            || (Collected::default(), None),
            |(mut collected, error): (Collected, Option<SourceError>), block| {
                if crate::interrupt::requested() {
                    return (collected, error.or(Some(SourceError::Interrupted)));
                }
                match block {
                    Ok(block) => {
                        read_block(&block, &files, ingestor, &mut collected);
                        pool.give_back(block.bytes);
                        (collected, error)
                    }
                    Err(e) => (collected, error.or(Some(e))),
                }
            },
        )
        .reduce(
            || (Collected::default(), None),
            |(a, error_a), (b, error_b)| (a.merge(b), error_a.or(error_b)),
        );
    if let Some(error) = error {
        return Err(error);
    }
    let mut collected = collected;
    rank_unfollowed_copies(&files, ingestor, &mut collected)?;
    Ok(collected.finish(
        files.iter().map(|f| f.path.display().to_string()).collect(),
        discovered.ignored,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_finds_the_same_lines_as_lines_and_which_hold_a_backslash() {
        for text in [
            "a\\b\n\n  c \nd\\",
            "\n\n",
            "",
            "x",
            "{\"a\":\"\\u0041\"}\n{\"b\":1}\n",
            "\\\n\\\n",
        ] {
            let block = Block {
                file_index: 0,
                kind: ResourceType::Observation,
                first_line: 7,
                bytes: text.as_bytes().to_vec(),
                too_long: Vec::new(),
            };
            let fused: Vec<(u64, &[u8], bool)> = lines_and_escapes(&block).collect();
            let expected: Vec<(u64, &[u8], bool)> = lines(&block)
                .map(|(n, line)| (n, line, line.contains(&b'\\')))
                .collect();
            assert_eq!(fused, expected, "{text:?}");
        }
    }

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
