//! Output files and folders. A command's outputs are published as one set: written into a
//! fresh run folder beside `--out`, then shown at `--out` by one rename of a symbolic link.
//! So `--out` shows either the previous run's complete set or the new one, never a mix,
//! whatever stops a run (SIGTERM, SIGKILL, a full disk):
//!
//! ```text
//! out/demo -> .demo.runs/RUN-ID              the published set (a relative link)
//! out/.demo.runs/RUN-ID/                     its files
//! out/.demo.runs/previous -> OLDER-RUN-ID    the set before it, kept for one rollback
//! out/.demo.runs/.tare-marker-monitor.lock   the lock a run holds for its whole life
//! ```
//!
//! Older run folders and the folders of runs that never published (killed) are removed. Every
//! file is written whole or not at all (a uniquely named temporary file, fsync, rename, fsync
//! of the folder), readable by its owner only (reports carry patient data), and hashed
//! (SHA-256) while it is written, so a set's summary lists each file with its size and hash.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is in use by another run ({holder}): nothing was touched; wait for it to end, or use another folder")]
    Locked { path: String, holder: String },
    #[error("interrupted: {path} was not written")]
    Interrupted { path: String },
    /// A file of a set could not be written (a full disk): the set is not published.
    #[error("cannot write {path}: {source}; nothing was published: {shown} shows the previous outputs as they were")]
    NotPublished {
        path: String,
        shown: String,
        #[source]
        source: std::io::Error,
    },
    /// `--out` holds something this job did not write (exit code 2: the request is wrong).
    #[error("{path} {what}: nothing was touched; give --out a new or empty folder, or one this job wrote")]
    NotOurs { path: String, what: String },
}

fn write_error(path: &Path) -> impl Fn(std::io::Error) -> OutputError + '_ {
    move |source| OutputError::Write {
        path: path.display().to_string(),
        source,
    }
}

/// Creates a folder (and its parents) if missing.
pub fn create_folder(dir: &Path) -> Result<(), OutputError> {
    std::fs::create_dir_all(dir).map_err(write_error(dir))
}

/// One file of a set, as its summary lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutputFile {
    /// The path within the set (`markers.csv`, `transactions/index.csv`).
    pub name: String,
    pub bytes: u64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
}

/// A run folder not yet published: where it will be shown, and the files written into it so
/// far.
struct Unpublished {
    folder: PathBuf,
    link: PathBuf,
    files: Vec<OutputFile>,
}

/// The run folders not yet published. A registry rather than a value passed along: the
/// dry-run Bundles are written by the write-back sink, which knows only their folder.
static UNPUBLISHED: Mutex<Vec<Unpublished>> = Mutex::new(Vec::new());

fn unpublished() -> MutexGuard<'static, Vec<Unpublished>> {
    UNPUBLISHED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where the set that `path` belongs to will be shown, if it belongs to an unpublished one.
fn shown_at(path: &Path) -> Option<PathBuf> {
    unpublished()
        .iter()
        .find(|set| path.starts_with(&set.folder))
        .map(|set| set.link.clone())
}

/// Notes a file written into an unpublished run folder (anything else is not part of a set).
fn record(path: &Path, bytes: u64, sha256: String) {
    let mut sets = unpublished();
    let Some(set) = sets.iter_mut().find(|set| path.starts_with(&set.folder)) else {
        return;
    };
    let (folder, files) = (&set.folder, &mut set.files);
    let name = path
        .strip_prefix(folder)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
    files.retain(|f| f.name != name);
    files.push(OutputFile {
        name,
        bytes,
        sha256,
    });
}

/// A writer that counts and hashes what passes through it.
struct Hashing<W> {
    inner: W,
    sha: Sha256,
    bytes: u64,
    /// A stop asked for ends the writing at the next buffer, not at the end of the file (a
    /// large set ends within a second of SIGTERM).
    heed_stop: bool,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.heed_stop && crate::interrupt::requested() {
            // Not `ErrorKind::Interrupted`: `write_all` would try again.
            return Err(std::io::Error::other("stopped (SIGINT/SIGTERM)"));
        }
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `path` whole or not at all. The temporary file has a unique name (two runs never
/// share one) and is removed whatever happens before the rename: an error, a panic, or a stop
/// asked for by SIGINT/SIGTERM. A file written into a run folder is noted, with its size and
/// hash, for the set's summary.
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), OutputError> {
    write_whole(path, fill, true)
}

/// `write_atomically`, even after a stop was asked for: for the metrics of a run that ends
/// by SIGINT/SIGTERM (a file outside any output set, which says how the run ended).
pub fn write_atomically_when_stopped(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), OutputError> {
    write_whole(path, fill, false)
}

fn write_whole(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    heed_stop: bool,
) -> Result<(), OutputError> {
    let shown = shown_at(path);
    let fail = |source: std::io::Error| match &shown {
        Some(link) => OutputError::NotPublished {
            path: path.display().to_string(),
            shown: link.display().to_string(),
            source,
        },
        None => write_error(path)(source),
    };
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".partial");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o600));
    }
    let mut temp = builder.tempfile_in(folder).map_err(&fail)?;
    let stopped = || OutputError::Interrupted {
        path: path.display().to_string(),
    };
    let hashed = {
        let mut writer = std::io::BufWriter::new(Hashing {
            inner: temp.as_file_mut(),
            sha: Sha256::new(),
            bytes: 0,
            heed_stop,
        });
        let written = fill(&mut writer).and_then(|()| writer.flush());
        if heed_stop && crate::interrupt::requested() {
            // Dropping `temp` removes it; the previous file, if any, stays as it was.
            return Err(stopped());
        }
        written.map_err(&fail)?;
        writer.into_inner().map_err(|e| fail(e.into_error()))?
    };
    let (bytes, sha256) = (hashed.bytes, format!("{:x}", hashed.sha.finalize()));
    temp.as_file().sync_all().map_err(&fail)?;
    if heed_stop && crate::interrupt::requested() {
        return Err(stopped());
    }
    temp.persist(path).map_err(|e| fail(e.error))?;
    // The rename itself survives a crash only once the folder is synced too.
    sync_folder(folder);
    record(path, bytes, sha256);
    Ok(())
}

fn sync_folder(folder: &Path) {
    // Some file systems cannot sync a folder; the rename is made all the same.
    if let Ok(folder) = File::open(folder) {
        let _ = folder.sync_all();
    }
}

/// An exclusive lock held for the life of a run.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    pub path: PathBuf,
}

/// Takes the lock file `path` for this run, or says who holds it. The file keeps the holder's
/// process id and start time, for the message another run prints.
pub fn lock(path: &Path) -> Result<RunLock, OutputError> {
    let fail = write_error(path);
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(&fail)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(OutputError::Locked {
                path: path.display().to_string(),
                holder: if holder.is_empty() {
                    "a process that has not said which".into()
                } else {
                    holder.to_owned()
                },
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(fail(e)),
    }
    file.set_len(0).map_err(&fail)?;
    let started = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    write!(file, "process {} since {started}", std::process::id()).map_err(&fail)?;
    file.flush().map_err(&fail)?;
    Ok(RunLock {
        _file: file,
        path: path.to_owned(),
    })
}

/// The lock of a state file: `state.json.lock` beside it.
pub fn lock_beside(file: &Path) -> Result<RunLock, OutputError> {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_folder(parent)?;
    }
    lock(&file.with_file_name(name))
}

const LOCK_FILE: &str = ".tare-marker-monitor.lock";
const PREVIOUS: &str = "previous";

/// A run's id: when it started (UTC, to the millisecond) and 32 random bits, so two runs never
/// share one; ids of one output sort in the order their runs started.
pub fn new_run_id(started: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "{}-{:08x}",
        started.format("%Y%m%dT%H%M%S%.3fZ"),
        rand::random::<u32>()
    )
}

/// The name of a path's last component.
fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// `out/.demo.runs` for `out/demo`.
fn store_of(link: &Path) -> PathBuf {
    parent_of(link).join(format!(".{}.runs", name_of(link)))
}

/// The run id a link of ours points to (`.demo.runs/RUN-ID`); `None` for anything else.
fn target_of(link: &Path) -> Option<String> {
    let target = std::fs::read_link(link).ok()?;
    let store = format!(".{}.runs", name_of(link));
    match target.components().collect::<Vec<_>>().as_slice() {
        [Component::Normal(first), Component::Normal(id)] if *first == store.as_str() => {
            Some(id.to_string_lossy().into_owned())
        }
        _ => None,
    }
}

/// The run id `store/previous` points to.
fn previous_in(store: &Path) -> Option<String> {
    let target = std::fs::read_link(store.join(PREVIOUS)).ok()?;
    match target.components().collect::<Vec<_>>().as_slice() {
        [Component::Normal(id)] => Some(id.to_string_lossy().into_owned()),
        _ => None,
    }
}

/// Where `--out` is published: `.` or `..` become the folder they name, and a symbolic link
/// this job did not make (a site that keeps its outputs on another volume) is followed.
fn published_path(out: &Path) -> Result<PathBuf, OutputError> {
    let not_ours = |what: &str| OutputError::NotOurs {
        path: out.display().to_string(),
        what: what.to_owned(),
    };
    // Rebuilt from its components: `out/demo/` would name the folder a link points to.
    let mut path: PathBuf = out.components().collect();
    if path.file_name().is_none() {
        path = path.canonicalize().map_err(write_error(out))?;
    }
    let is_link = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
    if is_link && target_of(&path).is_none() {
        path = path
            .canonicalize()
            .map_err(|_| not_ours("is a symbolic link to a place that does not exist"))?;
    }
    if path.file_name().is_none() {
        return Err(not_ours("is the root folder"));
    }
    Ok(path)
}

/// Where a set given `--out` is published (`published_path`): for `merge`, which must not
/// publish over one of its parts.
pub fn published_at(out: &Path) -> Result<PathBuf, OutputError> {
    published_path(out)
}

/// What is at the place a set is published.
enum Found {
    Nothing,
    /// A link of ours, to a run folder.
    Set,
    /// A real folder (the layout of older versions).
    Folder,
}

/// The file that marks the set of each command: a `report` into the set of a `run` (or the
/// reverse) would replace it, and the other command's outputs would vanish from `--out`.
const SET_MARKERS: [(&str, &str); 2] = [
    ("run-summary.json", "run"),
    ("report-manifest.json", "report"),
];

fn another_commands_set(link: &Path, names: &[&str]) -> Result<(), OutputError> {
    for (marker, command) in SET_MARKERS {
        if !names.contains(&marker) && link.join(marker).is_file() {
            return Err(OutputError::NotOurs {
                path: link.display().to_string(),
                what: format!(
                    "holds the outputs of `{command}` ({marker}), which this command would replace"
                ),
            });
        }
    }
    Ok(())
}

fn look_at(link: &Path) -> Result<Found, OutputError> {
    let not_ours = |what: &str| OutputError::NotOurs {
        path: link.display().to_string(),
        what: what.to_owned(),
    };
    match std::fs::symlink_metadata(link) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Found::Nothing),
        Err(e) => Err(write_error(link)(e)),
        Ok(meta) if meta.file_type().is_symlink() => target_of(link)
            .map(|_| Found::Set)
            .ok_or_else(|| not_ours("is a symbolic link this job did not make")),
        Ok(meta) if meta.is_dir() => Ok(Found::Folder),
        Ok(_) => Err(not_ours("is a file, not a folder")),
    }
}

/// Makes (or replaces) the symbolic link `at` pointing to `target`, by one rename of a new
/// link made in `store`.
fn point(at: &Path, target: &Path, store: &Path) -> Result<(), OutputError> {
    let fail = write_error(at);
    let temporary = store.join(format!(".link.{:016x}.new", rand::random::<u64>()));
    std::os::unix::fs::symlink(target, &temporary).map_err(&fail)?;
    if let Err(e) = std::fs::rename(&temporary, at) {
        let _ = std::fs::remove_file(&temporary);
        return Err(fail(e));
    }
    sync_folder(parent_of(at));
    Ok(())
}

/// Makes `folder` owner-only and new (an existing one is an error: ids are unique).
fn make_private_folder(folder: &Path) -> Result<(), OutputError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(folder)
        .map_err(write_error(folder))
}

/// Removes everything in the store but the lock, the `previous` link and the run folders
/// named in `keep`: older sets, and folders of runs that never published (killed).
fn prune(store: &Path, keep: &[Option<&str>]) {
    let Ok(entries) = std::fs::read_dir(store) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == LOCK_FILE || name == PREVIOUS || keep.contains(&Some(name.as_str())) {
            continue;
        }
        let path = entry.path();
        let removed = match entry.file_type() {
            Ok(kind) if kind.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        match removed {
            Ok(()) => tracing::info!(path = %path.display(), "earlier output removed"),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove an earlier output")
            }
        }
    }
}

/// Whether `name` is what a run of an older version left besides its outputs: its lock file
/// (one per shard) or a temporary file of an interrupted write.
fn is_leftover(name: &str) -> bool {
    (name.starts_with(".tare-marker-monitor") && name.ends_with(".lock"))
        || (name.starts_with('.') && name.ends_with(".partial"))
}

/// The published set of one command: its run folder, written first, then shown at `--out`.
/// Dropped unpublished (an error, a stop), its run folder is removed; after SIGKILL the next
/// run of this output removes it.
#[derive(Debug)]
pub struct OutputSet {
    link: PathBuf,
    store: PathBuf,
    run_id: String,
    folder: PathBuf,
    published: bool,
    _lock: RunLock,
}

/// Takes the lock of the outputs published at `out`, as a run does for its whole life.
pub fn lock_output(out: &Path) -> Result<RunLock, OutputError> {
    let link = published_path(out)?;
    lock_store(&link)
}

fn lock_store(link: &Path) -> Result<RunLock, OutputError> {
    let store = store_of(link);
    create_folder(parent_of(link))?;
    if !store.is_dir() {
        make_private_folder(&store)?;
    }
    lock(&store.join(LOCK_FILE)).map_err(|e| match e {
        OutputError::Locked { holder, .. } => OutputError::Locked {
            path: link.display().to_string(),
            holder,
        },
        other => other,
    })
}

/// A refused `--out` is left as it was: the store this run made for it (its lock) goes.
fn forget_new_store(error: OutputError, new_store: Option<&Path>, lock: RunLock) -> OutputError {
    drop(lock);
    if let Some(store) = new_store {
        let _ = std::fs::remove_file(store.join(LOCK_FILE));
        let _ = std::fs::remove_dir(store);
    }
    error
}

impl OutputSet {
    /// Opens the set published at `out`. `names` are the outputs an older version wrote into
    /// a real folder there: a folder holding only those is taken into the store once (it
    /// stays published until this run publishes), an empty one is replaced, and one with
    /// anything else is refused untouched.
    pub fn open(out: &Path, names: &[&str], run_id: &str) -> Result<OutputSet, OutputError> {
        OutputSet::open_checked(out, names, run_id, |_| Ok(()))
    }

    /// `open`, with `check` run on the published path under the lock, before anything there
    /// changes: what it reads cannot change under it (another run publishing), and its
    /// refusal leaves `out` as it was.
    pub fn open_checked(
        out: &Path,
        names: &[&str],
        run_id: &str,
        check: impl FnOnce(&Path) -> Result<(), OutputError>,
    ) -> Result<OutputSet, OutputError> {
        let link = published_path(out)?;
        let store = store_of(&link);
        let new_store = !store.is_dir();
        let lock = lock_store(&link)?;
        let adopted = check(&link).and_then(|()| match look_at(&link) {
            Ok(Found::Folder) => adopt_folder(&link, &store, names, run_id),
            Ok(Found::Set) => another_commands_set(&link, names),
            Ok(Found::Nothing) => Ok(()),
            Err(e) => Err(e),
        });
        match adopted {
            Ok(()) => OutputSet::start(link, store, lock, run_id),
            Err(e) => Err(forget_new_store(e, new_store.then_some(&store), lock)),
        }
    }

    /// Opens the set of one shard, published at `OUT/NAME` (`OUT/shard-0-of-4`): `out` stays a
    /// real folder that the shards of a run share. The part files an older version wrote
    /// into `out` itself (`names`) are taken into this shard's store once.
    pub fn open_shard(
        out: &Path,
        name: &str,
        names: &[&str],
        run_id: &str,
    ) -> Result<OutputSet, OutputError> {
        let out = published_path(out)?;
        if target_of(&out).is_some() {
            return Err(OutputError::NotOurs {
                path: out.display().to_string(),
                what: "holds the outputs of a run without shards".into(),
            });
        }
        let link = out.join(name);
        let store = store_of(&link);
        let new_store = !store.is_dir();
        let lock = lock_store(&link)?;
        let adopted = match look_at(&link) {
            Ok(Found::Folder) => adopt_folder(&link, &store, names, run_id),
            Ok(Found::Nothing) => adopt_parts(&out, &link, &store, names, run_id),
            Ok(Found::Set) => Ok(()),
            Err(e) => Err(e),
        };
        match adopted {
            Ok(()) => OutputSet::start(link, store, lock, run_id),
            Err(e) => Err(forget_new_store(e, new_store.then_some(&store), lock)),
        }
    }

    fn start(
        link: PathBuf,
        store: PathBuf,
        lock: RunLock,
        run_id: &str,
    ) -> Result<OutputSet, OutputError> {
        let current = target_of(&link);
        prune(
            &store,
            &[current.as_deref(), previous_in(&store).as_deref()],
        );
        let folder = store.join(run_id);
        make_private_folder(&folder)?;
        unpublished().push(Unpublished {
            folder: folder.clone(),
            link: link.clone(),
            files: Vec::new(),
        });
        Ok(OutputSet {
            link,
            store,
            run_id: run_id.to_owned(),
            folder,
            published: false,
            _lock: lock,
        })
    }

    /// The run folder the outputs are written into.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Where the set is published (`--out`, or `OUT/shard-I-of-N`).
    pub fn link(&self) -> &Path {
        &self.link
    }

    /// The files written so far, by name, each with its size and hash.
    pub fn files(&self) -> Vec<OutputFile> {
        let mut files = unpublished()
            .iter()
            .find(|set| set.folder == self.folder)
            .map(|set| set.files.clone())
            .unwrap_or_default();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        files
    }

    /// Shows the set at its place: the run folder synced, then one rename of a link. The set
    /// shown before stays as `previous`; older ones go. Nothing is shown when a stop was asked
    /// for.
    pub fn publish(&mut self) -> Result<(), OutputError> {
        if self.published {
            return Ok(());
        }
        if crate::interrupt::requested() {
            return Err(OutputError::Interrupted {
                path: self.link.display().to_string(),
            });
        }
        sync_folder(&self.folder);
        sync_folder(&self.store);
        let shown = target_of(&self.link);
        let previous_before = previous_in(&self.store);
        if let Some(shown) = &shown {
            point(&self.store.join(PREVIOUS), Path::new(shown), &self.store)?;
        }
        let target = Path::new(&format!(".{}.runs", name_of(&self.link))).join(&self.run_id);
        if let Err(error) = point(&self.link, &target, &self.store) {
            // The set shown stays; so does the rollback it had.
            if let Some(before) = previous_before {
                let _ = point(&self.store.join(PREVIOUS), Path::new(&before), &self.store);
            }
            return Err(match error {
                OutputError::Write { path, source } => OutputError::NotPublished {
                    path,
                    shown: self.link.display().to_string(),
                    source,
                },
                other => other,
            });
        }
        self.published = true;
        let previous = shown.or_else(|| previous_in(&self.store));
        prune(&self.store, &[Some(&self.run_id), previous.as_deref()]);
        Ok(())
    }
}

impl Drop for OutputSet {
    fn drop(&mut self) {
        unpublished().retain(|set| set.folder != self.folder);
        if !self.published {
            let _ = std::fs::remove_dir_all(&self.folder);
        }
    }
}

/// A folder an older version wrote at `link`, taken into the store as the set shown now:
/// `previous` first points to where it goes, so a crash halfway keeps it. An empty folder is
/// removed; a folder with other files is refused untouched.
fn adopt_folder(
    link: &Path,
    store: &Path,
    names: &[&str],
    run_id: &str,
) -> Result<(), OutputError> {
    let entries: Vec<String> = std::fs::read_dir(link)
        .map_err(write_error(link))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut others: Vec<&str> = entries
        .iter()
        .map(String::as_str)
        .filter(|name| !names.contains(name) && !is_leftover(name))
        .collect();
    if !others.is_empty() {
        others.sort_unstable();
        let listed = others
            .iter()
            .take(5)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        let more = match others.len() {
            n if n > 5 => format!(" and {} more", n - 5),
            _ => String::new(),
        };
        return Err(OutputError::NotOurs {
            path: link.display().to_string(),
            what: format!("is a folder with other files than this job's outputs: {listed}{more}"),
        });
    }
    for name in entries.iter().filter(|name| is_leftover(name)) {
        std::fs::remove_file(link.join(name)).map_err(write_error(link))?;
    }
    if entries.iter().all(|name| is_leftover(name)) {
        return std::fs::remove_dir(link).map_err(write_error(link));
    }
    let id = format!("{run_id}.adopted");
    point(&store.join(PREVIOUS), Path::new(&id), store)?;
    std::fs::rename(link, store.join(&id)).map_err(write_error(link))?;
    let target = Path::new(&format!(".{}.runs", name_of(link))).join(&id);
    point(link, &target, store)?;
    tracing::info!(path = %link.display(), "output folder of an earlier version taken into {}", store.display());
    Ok(())
}

/// The part files an older version wrote into the shards' shared folder, taken into this
/// shard's store as its set shown now.
fn adopt_parts(
    out: &Path,
    link: &Path,
    store: &Path,
    names: &[&str],
    run_id: &str,
) -> Result<(), OutputError> {
    let shard = name_of(link);
    if let Ok(entries) = std::fs::read_dir(out) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = names
                .iter()
                .any(|part| name.starts_with(&format!(".{part}.")) && name.ends_with(".partial"))
                || name == format!(".tare-marker-monitor.{shard}.lock");
            if ours {
                std::fs::remove_file(entry.path()).map_err(write_error(&entry.path()))?;
            }
        }
    }
    let present: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| out.join(name).is_file())
        .collect();
    if present.is_empty() {
        return Ok(());
    }
    let id = format!("{run_id}.adopted");
    let folder = store.join(&id);
    point(&store.join(PREVIOUS), Path::new(&id), store)?;
    make_private_folder(&folder)?;
    for name in present {
        std::fs::rename(out.join(name), folder.join(name)).map_err(write_error(&out.join(name)))?;
    }
    sync_folder(&folder);
    sync_folder(out);
    let target = Path::new(&format!(".{shard}.runs")).join(&id);
    point(link, &target, store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_fill_leaves_neither_the_file_nor_a_temporary_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("markers.csv");
        std::fs::write(&path, "previous").unwrap();
        let result = write_atomically(&path, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(result.is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "previous");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("markers.csv")]);
    }

    #[test]
    fn a_written_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flags.csv");
        write_atomically(&path, |w| w.write_all(b"x")).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_second_lock_on_an_output_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let held = lock_output(&out).unwrap();
        let error = lock_output(&out).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains(&format!("process {} since", std::process::id())),
            "{text}"
        );
        drop(held);
        lock_output(&out).unwrap();
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Opens, writes `text` as `a.txt` and publishes a set at `out`.
    fn publish(out: &Path, id: &str, text: &str) -> Vec<OutputFile> {
        let mut set = OutputSet::open(out, &["a.txt"], id).unwrap();
        write_atomically(&set.folder().join("a.txt"), |w| {
            w.write_all(text.as_bytes())
        })
        .unwrap();
        let files = set.files();
        set.publish().unwrap();
        files
    }

    #[test]
    fn a_published_set_is_a_link_to_its_run_folder_with_the_previous_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let files = publish(&out, "r1", "one");
        assert_eq!(
            files,
            [OutputFile {
                name: "a.txt".into(),
                bytes: 3,
                sha256: format!("{:x}", Sha256::digest(b"one")),
            }]
        );
        assert_eq!(std::fs::read_to_string(out.join("a.txt")).unwrap(), "one");
        assert_eq!(std::fs::read_link(&out).unwrap(), Path::new(".out.runs/r1"));
        publish(&out, "r2", "two");
        publish(&out, "r3", "three");
        assert_eq!(std::fs::read_to_string(out.join("a.txt")).unwrap(), "three");
        let store = dir.path().join(".out.runs");
        assert_eq!(names_in(&store), [LOCK_FILE, "previous", "r2", "r3"]);
        assert_eq!(
            std::fs::read_link(store.join("previous")).unwrap(),
            Path::new("r2")
        );
    }

    #[test]
    fn an_out_path_with_a_trailing_slash_names_the_link_not_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        publish(&out, "r1", "one");
        let with_slash = PathBuf::from(format!("{}/", out.display()));
        publish(&with_slash, "r2", "two");
        assert_eq!(std::fs::read_link(&out).unwrap(), Path::new(".out.runs/r2"));
        assert_eq!(
            names_in(&dir.path().join(".out.runs")),
            [LOCK_FILE, "previous", "r1", "r2"]
        );
    }

    #[test]
    fn a_set_dropped_unpublished_leaves_the_shown_set_and_no_run_folder() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        publish(&out, "r1", "one");
        let set = OutputSet::open(&out, &["a.txt"], "r2").unwrap();
        write_atomically(&set.folder().join("a.txt"), |w| w.write_all(b"half")).unwrap();
        drop(set);
        assert_eq!(std::fs::read_to_string(out.join("a.txt")).unwrap(), "one");
        assert_eq!(names_in(&dir.path().join(".out.runs")), [LOCK_FILE, "r1"]);
    }

    #[test]
    fn the_folder_of_a_killed_run_is_removed_by_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        publish(&out, "r1", "one");
        let store = dir.path().join(".out.runs");
        // What SIGKILL leaves: a run folder never published, a link never renamed.
        std::fs::create_dir(store.join("r2")).unwrap();
        std::fs::write(store.join("r2/a.txt"), "half").unwrap();
        std::os::unix::fs::symlink("x", store.join(".link.0.new")).unwrap();
        let set = OutputSet::open(&out, &["a.txt"], "r3").unwrap();
        assert_eq!(names_in(&store), [LOCK_FILE, "r1", "r3"]);
        drop(set);
    }

    #[test]
    fn an_older_versions_folder_is_taken_into_the_store_and_stays_shown_until_published() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("a.txt"), "old").unwrap();
        std::fs::write(out.join(LOCK_FILE), "").unwrap();
        std::fs::write(out.join(".a.txt.x1.partial"), "").unwrap();
        let mut set = OutputSet::open(&out, &["a.txt"], "r1").unwrap();
        assert_eq!(std::fs::read_to_string(out.join("a.txt")).unwrap(), "old");
        assert_eq!(names_in(&out), ["a.txt"]);
        write_atomically(&set.folder().join("a.txt"), |w| w.write_all(b"new")).unwrap();
        set.publish().unwrap();
        assert_eq!(std::fs::read_to_string(out.join("a.txt")).unwrap(), "new");
        let store = dir.path().join(".out.runs");
        assert_eq!(
            std::fs::read_to_string(store.join("previous/a.txt")).unwrap(),
            "old"
        );
    }

    #[test]
    fn a_folder_with_other_files_is_refused_untouched_and_an_empty_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("a.txt"), "old").unwrap();
        std::fs::write(out.join("notes.txt"), "mine").unwrap();
        let error = OutputSet::open(&out, &["a.txt"], "r1").unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{} is a folder with other files than this job's outputs: notes.txt: nothing was touched; give --out a new or empty folder, or one this job wrote",
                out.display()
            )
        );
        assert_eq!(names_in(&out), ["a.txt", "notes.txt"]);
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        publish(&empty, "r1", "one");
        assert!(std::fs::symlink_metadata(&empty)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn a_link_the_job_did_not_make_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("volume/out");
        std::fs::create_dir_all(&elsewhere).unwrap();
        let out = dir.path().join("out");
        std::os::unix::fs::symlink(&elsewhere, &out).unwrap();
        publish(&out, "r1", "one");
        assert_eq!(std::fs::read_to_string(out.join("a.txt")).unwrap(), "one");
        assert!(dir.path().join("volume/.out.runs/r1").is_dir());
    }

    #[test]
    fn shards_publish_beside_each_other_and_take_their_old_part_files() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("a.shard-0-of-2.txt"), "old 0").unwrap();
        std::fs::write(out.join("a.shard-1-of-2.txt"), "old 1").unwrap();
        std::fs::write(out.join(".tare-marker-monitor.shard-0-of-2.lock"), "").unwrap();
        let mut set =
            OutputSet::open_shard(&out, "shard-0-of-2", &["a.shard-0-of-2.txt"], "r1").unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("shard-0-of-2/a.shard-0-of-2.txt")).unwrap(),
            "old 0"
        );
        write_atomically(&set.folder().join("a.shard-0-of-2.txt"), |w| {
            w.write_all(b"new 0")
        })
        .unwrap();
        set.publish().unwrap();
        assert_eq!(
            names_in(&out),
            [".shard-0-of-2.runs", "a.shard-1-of-2.txt", "shard-0-of-2"]
        );
        assert_eq!(
            std::fs::read_to_string(out.join("shard-0-of-2/a.shard-0-of-2.txt")).unwrap(),
            "new 0"
        );
    }
}
