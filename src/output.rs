//! Output files and folders. Every file is written whole or not at all (a uniquely named
//! temporary file beside it, fsync, rename, fsync of the folder), readable by its owner only
//! (reports carry patient data), and never half-written when the run is interrupted. A folder
//! (or a state file) a run writes to is locked for the run: a second run into the same place
//! stops at once, names the process that holds it, and touches nothing.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

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

/// Writes `path` whole or not at all. The temporary file has a unique name (two runs never
/// share one) and is removed whatever happens before the rename: an error, a panic, or a stop
/// asked for by SIGINT/SIGTERM.
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), OutputError> {
    let fail = write_error(path);
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
    {
        let mut writer = std::io::BufWriter::new(temp.as_file_mut());
        fill(&mut writer).map_err(&fail)?;
        writer.flush().map_err(&fail)?;
    }
    temp.as_file().sync_all().map_err(&fail)?;
    if crate::interrupt::requested() {
        // Dropping `temp` removes it; the previous file, if any, stays as it was.
        return Err(OutputError::Interrupted {
            path: path.display().to_string(),
        });
    }
    temp.persist(path).map_err(|e| fail(e.error))?;
    // The rename itself survives a crash only once the folder is synced too.
    if let Ok(folder) = File::open(folder) {
        let _ = folder.sync_all();
    }
    Ok(())
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

/// The lock of an output folder: `DIR/.tare-marker-monitor.lock`, or one per shard
/// (`.tare-marker-monitor.shard-0-of-4.lock`: the shards of one run share a folder).
pub fn lock_folder(dir: &Path, shard_suffix: &str) -> Result<RunLock, OutputError> {
    create_folder(dir)?;
    lock(&dir.join(format!(".tare-marker-monitor{shard_suffix}.lock")))
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
    fn a_second_lock_on_a_folder_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_folder(dir.path(), "").unwrap();
        let error = lock_folder(dir.path(), "").unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains(&format!("process {} since", std::process::id())),
            "{text}"
        );
        drop(held);
        lock_folder(dir.path(), "").unwrap();
    }
}
