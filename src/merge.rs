//! `merge`: the part files of a sharded run (`markers.shard-I-of-N.csv`, ...) combined into
//! the files one unsharded run writes. Each patient is in exactly one shard and each part
//! lists its patients in id order, so a stable sort by patient id of all rows gives the
//! unsharded order; the run summaries' counts add up (each resource is counted by one shard).
//! The parts are found in the folders given and in their `shard-I-of-N` sets (where the shards
//! publish them); a part whose files are not the ones its shard's summary lists is refused.

use crate::output::{write_atomically, OutputSet};
use crate::progress::Progress;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{name} is there twice: {} and {}", first.display(), second.display())]
    Twice {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error(
        "no part files (NAME.shard-I-of-N.EXT) found in the folders or their shard-I-of-N sets"
    )]
    NoParts,
    /// A part file that is not the one its shard's summary lists (parts of two runs mixed).
    #[error("{} is not the file its shard's run-summary lists ({summary}): the parts come from different runs", path.display())]
    NotOfItsRun { path: PathBuf, summary: PathBuf },
    /// The shard count is part of a run's identity: parts of a 2-shard and a 3-shard run
    /// are parts of two runs.
    #[error(
        "parts of runs with different shard counts (part of a run's identity): {}",
        .0.iter()
            .map(|(count, path)| format!("{count} shards in {}", path.display()))
            .collect::<Vec<_>>()
            .join(", ")
    )]
    ShardCounts(Vec<(u32, PathBuf)>),
    #[error("shard {index}/{count} is incomplete: missing {}", missing.join(", "))]
    Incomplete {
        index: u32,
        count: u32,
        missing: Vec<String>,
    },
    #[error("{}: a {kind} before any DetectedIssue", path.display())]
    Orphan { path: PathBuf, kind: String },
    #[error("{} has other columns than the first part", path.display())]
    Columns { path: PathBuf },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {} as CSV", path.display())]
    Csv {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },
    #[error("cannot read {} as JSON", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Write(#[from] crate::output::OutputError),
    /// Parts whose run identities differ: they come from different runs.
    #[error("the parts come from different runs: their {field} differs: {}", values.join(", "))]
    Differs {
        field: &'static str,
        /// `path: value` per part.
        values: Vec<String>,
    },
    /// A part whose summary says it is another shard than its file names (a shard twice).
    #[error("{} holds shard {said}, not {named} as its name says: shard {said} is there twice and {named} missing", path.display())]
    NotItsShard {
        path: PathBuf,
        said: String,
        named: String,
    },
    /// `--out` is one of the parts: publishing there would replace a shard's set (or the
    /// folder the parts were found in) with the merge's.
    #[error("--out {} resolves to {}, one of the parts being merged: publishing there would replace it; give --out a place of its own (not a folder given, nor a shard-I-of-N set in one, nor a link to either)", out.display(), part.display())]
    OutIsAPart { out: PathBuf, part: PathBuf },
    /// Two parts whose summaries carry one run id: one shard run there twice (a copy under
    /// another shard's name, its `shard` edited).
    #[error("{} and {} carry the same run_id {run_id}: they are one shard run, there twice (a copy under another shard's name); merge each shard's own part once", first.display(), second.display())]
    SameRun {
        run_id: String,
        first: PathBuf,
        second: PathBuf,
    },
    /// A part without a run identity (written before the identity existed, or edited).
    #[error("{} has no run identity (identity: as-of, configuration digest, version, shard, source); merge parts of one run of this version", path.display())]
    NoIdentity { path: PathBuf },
}

pub struct Merged {
    pub shards: u32,
    pub marker_rows: usize,
    pub flag_rows: usize,
    pub detected_issues: usize,
    /// The merged `run-summary.json` (the figures of the merge's metrics).
    pub summary: Value,
}

/// What the merge's own `metrics.prom` needs beside the merged figures: when the merge
/// started (its duration) and the last success in the metrics it replaces.
pub struct MergeClock {
    pub started: std::time::Instant,
    pub previous_success: Option<f64>,
}

/// The merged summary as the merge's metrics count it: the parts' figures added up, without
/// the shards' step timings (the merge's own duration is its total).
pub fn metrics_figures(summary: &Value) -> Value {
    let mut figures = summary.clone();
    if let Some(object) = figures.as_object_mut() {
        object.remove("timings");
    }
    figures
}

/// The four part files of one shard, by output stem.
type Part = BTreeMap<&'static str, PathBuf>;

const OUTPUTS: [(&str, &str); 4] = [
    ("markers", "csv"),
    ("flags", "csv"),
    ("detected-issues", "ndjson"),
    ("run-summary", "json"),
];

/// The names a merge writes into its output folder.
pub const OUTPUT_NAMES: [&str; 5] = [
    "markers.csv",
    "flags.csv",
    "detected-issues.ndjson",
    "run-summary.json",
    "metrics.prom",
];

/// `shard-I-of-N`: the name under which a shard publishes its set.
fn is_shard_set(name: &str) -> bool {
    name.strip_prefix("shard-")
        .and_then(|rest| rest.split_once("-of-"))
        .is_some_and(|(index, count)| index.parse::<u32>().is_ok() && count.parse::<u32>().is_ok())
}

/// The folders given, and the shard sets published in them.
fn folders_with_parts(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, MergeError> {
    let mut folders = Vec::new();
    for dir in dirs {
        folders.push(dir.clone());
        let entries = std::fs::read_dir(dir).map_err(|source| MergeError::Read {
            path: dir.clone(),
            source,
        })?;
        let mut sets: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| is_shard_set(&e.file_name().to_string_lossy()) && e.path().is_dir())
            .map(|e| e.path())
            .collect();
        sets.sort();
        folders.extend(sets);
    }
    Ok(folders)
}

/// Finds the part files in the folders: every shard of one count, each exactly once, each
/// with all four files; in shard order.
fn find_parts(dirs: &[PathBuf]) -> Result<(u32, Vec<Part>), MergeError> {
    let mut found: BTreeMap<(u32, u32), BTreeMap<&'static str, PathBuf>> = BTreeMap::new();
    for dir in &folders_with_parts(dirs)? {
        let entries = std::fs::read_dir(dir).map_err(|source| MergeError::Read {
            path: dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            for (stem, extension) in OUTPUTS {
                let Some(middle) = name
                    .strip_prefix(&format!("{stem}.shard-"))
                    .and_then(|rest| rest.strip_suffix(&format!(".{extension}")))
                else {
                    continue;
                };
                let Some((index, count)) = middle.split_once("-of-") else {
                    continue;
                };
                let (Ok(index), Ok(count)) = (index.parse::<u32>(), count.parse::<u32>()) else {
                    continue;
                };
                let previous = found
                    .entry((count, index))
                    .or_default()
                    .insert(stem, entry.path());
                if let Some(previous) = previous {
                    return Err(MergeError::Twice {
                        name,
                        first: previous,
                        second: entry.path(),
                    });
                }
            }
        }
    }
    let counts: std::collections::BTreeSet<u32> = found.keys().map(|(count, _)| *count).collect();
    let count = match counts.iter().collect::<Vec<_>>().as_slice() {
        [count] => **count,
        [] => return Err(MergeError::NoParts),
        _ => {
            // One part of each count, named: the operator sees which sets do not belong.
            let named = counts
                .into_iter()
                .filter_map(|count| {
                    let (_, files) = found.range((count, 0)..=(count, u32::MAX)).next()?;
                    Some((count, files.values().next()?.clone()))
                })
                .collect();
            return Err(MergeError::ShardCounts(named));
        }
    };
    let mut parts = Vec::new();
    for index in 0..count {
        let files = found.remove(&(count, index)).unwrap_or_default();
        let missing: Vec<String> = OUTPUTS
            .iter()
            .filter(|(stem, _)| !files.contains_key(stem))
            .map(|(stem, extension)| format!("{stem}.shard-{index}-of-{count}.{extension}"))
            .collect();
        if !missing.is_empty() {
            return Err(MergeError::Incomplete {
                index,
                count,
                missing,
            });
        }
        parts.push(files);
    }
    Ok((count, parts))
}

/// Checks each part file against the list in its shard's summary (size and SHA-256), when the
/// summary has one (older versions wrote none).
fn check_part(files: &Part) -> Result<(), MergeError> {
    let summary_path = &files["run-summary"];
    let summary = read_json(summary_path)?;
    let Some(listed) = summary["files"].as_array() else {
        return Ok(());
    };
    for (stem, path) in files {
        if *stem == "run-summary" {
            continue;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = std::fs::read(path).map_err(|source| MergeError::Read {
            path: path.clone(),
            source,
        })?;
        let sha256 = format!("{:x}", Sha256::digest(&bytes));
        let matches = listed.iter().any(|file| {
            file["name"] == name.as_str()
                && file["bytes"] == bytes.len() as u64
                && file["sha256"] == sha256.as_str()
        });
        if !matches {
            return Err(MergeError::NotOfItsRun {
                path: path.clone(),
                summary: summary_path.clone(),
            });
        }
    }
    Ok(())
}

/// A part's JSON file (its run summary), parsed.
fn read_json(path: &Path) -> Result<Value, MergeError> {
    serde_json::from_str(&read(path)?).map_err(|source| MergeError::Json {
        path: path.to_owned(),
        source,
    })
}

fn read(path: &Path) -> Result<String, MergeError> {
    std::fs::read_to_string(path).map_err(|source| MergeError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The rows of all parts' CSV files under one header, stably sorted by the first column
/// (`patient_id`).
fn merge_csv(paths: &[&Path], out: &Path, progress: &Progress) -> Result<usize, MergeError> {
    let mut header: Option<csv::StringRecord> = None;
    let mut rows: Vec<csv::StringRecord> = Vec::new();
    for path in paths {
        let bad = |source: csv::Error| MergeError::Csv {
            path: path.to_path_buf(),
            source,
        };
        let mut reader = csv::Reader::from_path(path).map_err(bad)?;
        let this_header = reader.headers().map_err(bad)?.clone();
        match &header {
            None => header = Some(this_header),
            Some(first) if *first != this_header => {
                return Err(MergeError::Columns {
                    path: path.to_path_buf(),
                })
            }
            Some(_) => {}
        }
        for row in reader.records() {
            rows.push(row.map_err(bad)?);
        }
    }
    rows.sort_by(|a, b| a.get(0).cmp(&b.get(0)));
    let header = header.unwrap_or_default();
    write_atomically(out, |w| {
        let mut writer = crate::format::GuardedCsv::new(progress.counting(w));
        writer.row(&header).map_err(std::io::Error::other)?;
        for row in &rows {
            writer.row(row).map_err(std::io::Error::other)?;
        }
        writer.flush()
    })?;
    Ok(rows.len())
}

/// The Device line once, then every DetectedIssue with the Provenance lines after it, stably
/// sorted by patient.
fn merge_ndjson(paths: &[&Path], out: &Path, progress: &Progress) -> Result<usize, MergeError> {
    let mut device: Option<String> = None;
    let mut units: Vec<(String, String)> = Vec::new();
    for path in paths {
        let text = read(path)?;
        let mut lines = text.lines();
        let first = lines.next().unwrap_or_default();
        device.get_or_insert_with(|| first.to_owned());
        for line in lines {
            let resource: Value =
                serde_json::from_str(line).map_err(|source| MergeError::Json {
                    path: path.to_path_buf(),
                    source,
                })?;
            if resource["resourceType"] == "DetectedIssue" {
                let patient = resource["patient"]["reference"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                units.push((patient, String::new()));
            }
            match units.last_mut() {
                Some((_, unit)) => {
                    unit.push_str(line);
                    unit.push('\n');
                }
                None => {
                    return Err(MergeError::Orphan {
                        path: path.to_path_buf(),
                        kind: resource["resourceType"].to_string(),
                    })
                }
            }
        }
    }
    units.sort_by(|a, b| a.0.cmp(&b.0));
    write_atomically(out, |w| {
        use std::io::Write as _;
        let mut w = progress.counting(w);
        if let Some(device) = &device {
            writeln!(w, "{device}")?;
        }
        for (_, unit) in &units {
            w.write_all(unit.as_bytes())?;
        }
        Ok(())
    })?;
    Ok(units.len())
}

/// Adds `other` into `into`: numbers add up, lists are joined, objects merge key by key; for
/// anything else the first part's value stays.
fn add_json(into: &mut Value, other: Value) {
    match (into, other) {
        (Value::Number(a), Value::Number(b)) => {
            *a = match (a.as_u64(), b.as_u64()) {
                (Some(x), Some(y)) => (x + y).into(),
                _ => serde_json::Number::from_f64(
                    a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0),
                )
                .unwrap_or_else(|| 0.into()),
            }
        }
        (Value::Array(a), Value::Array(b)) => a.extend(b),
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in b {
                match a.get_mut(&key) {
                    Some(mine) => add_json(mine, value),
                    None => {
                        a.insert(key, value);
                    }
                }
            }
        }
        _ => {}
    }
}

/// Run summaries added up. Examples stay at most five per reason (those of the first shards);
/// timings are the slowest shard's (the shards ran side by side). The merge is a run of its
/// own: its id, the shards' run ids, and the files of its set.
fn merge_summaries(
    paths: &[&Path],
    count: u32,
    set: &OutputSet,
    out: &Path,
    clock: &MergeClock,
) -> Result<Value, MergeError> {
    let mut merged: Option<Value> = None;
    let mut slowest = serde_json::Map::new();
    let mut shard_runs = Vec::new();
    for path in paths {
        let mut summary = read_json(path)?;
        if let Some(object) = summary.as_object_mut() {
            shard_runs.push(object.remove("run_id").unwrap_or(Value::Null));
            object.remove("files");
        }
        if let Some(Value::Object(timings)) =
            summary.as_object_mut().and_then(|s| s.remove("timings"))
        {
            for (key, value) in timings {
                let ms = value.as_u64().unwrap_or(0);
                let entry = slowest.entry(key).or_insert(0.into());
                if entry.as_u64().unwrap_or(0) < ms {
                    *entry = ms.into();
                }
            }
        }
        match &mut merged {
            None => merged = Some(summary),
            Some(into) => add_json(into, summary),
        }
    }
    let mut merged = merged.unwrap_or(Value::Null);
    trim_examples(&mut merged);
    // Every shard of a folder run lists the same files.
    for key in ["inputs", "inputs_ignored"] {
        if let Some(Value::Array(list)) = merged.get_mut(key) {
            list.sort_by_key(|v| v.to_string());
            list.dedup();
        }
    }
    merged["shard"] = format!("merged from {count} shards").into();
    merged["identity"]["shard"] = Value::Null;
    merged["timings"] = Value::Object(slowest);
    merged["run_id"] = set.run_id().into();
    merged["merged_from"] = Value::Array(shard_runs);
    // The merge's metrics, in its set (listed in its summary like a run's).
    crate::metrics::RunMetrics {
        summary: Some(&metrics_figures(&merged)),
        shard: None,
        exit_code: crate::commands::exit::SUCCESS,
        duration_secs: crate::sink::summary::Timings::secs(clock.started.elapsed().as_millis()),
        ended_at: crate::metrics::now(),
        previous_success: clock.previous_success,
    }
    .write(&set.folder().join("metrics.prom"))?;
    merged["files"] = serde_json::to_value(set.files()).map_err(|source| MergeError::Json {
        path: out.to_path_buf(),
        source,
    })?;
    write_atomically(out, |w| {
        serde_json::to_writer_pretty(&mut *w, &merged)?;
        w.write_all(b"\n")
    })?;
    Ok(merged)
}

fn trim_examples(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                match child {
                    Value::Array(list) if key == "examples" => list.truncate(5),
                    _ => trim_examples(child),
                }
            }
        }
        Value::Array(list) => list.iter_mut().for_each(trim_examples),
        _ => {}
    }
}

/// The parts of one sharded run, found and checked: every shard once, each whole.
pub struct Parts {
    count: u32,
    parts: Vec<Part>,
}

/// Refuses an `--out` that is one of the parts: a folder given, or a shard's set found in one
/// (`DIR/shard-0-of-2`, the run folder it shows, or a link to either), however spelled.
/// Checked before anything is written.
pub fn refuse_out_among_parts(out: &Path, dirs: &[PathBuf]) -> Result<(), MergeError> {
    // A place the output layer refuses (a dangling link...) is refused there, in its words.
    let Ok(link) = crate::output::published_at(out) else {
        return Ok(());
    };
    // The place itself, its folder resolved (`DIR/./shard-0-of-2` is `DIR/shard-0-of-2`) ...
    let place = |path: &Path| -> Option<PathBuf> {
        let name = path.file_name()?;
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Some(parent.canonicalize().ok()?.join(name))
    };
    // ... and the folder it shows (a shard's link resolved to its run folder).
    let shown = |path: &Path| path.canonicalize().ok();
    let same = |a: &Option<PathBuf>, b: Option<PathBuf>| a.is_some() && *a == b;
    let (out_place, out_shown) = (place(&link), shown(&link));
    for folder in folders_with_parts(dirs)? {
        if same(&out_place, place(&folder)) || same(&out_shown, shown(&folder)) {
            return Err(MergeError::OutIsAPart {
                out: out.to_owned(),
                part: folder,
            });
        }
    }
    Ok(())
}

/// Finds the parts in `dirs` (and their shard sets) and checks each against its summary,
/// before anything is written.
pub fn find(dirs: &[PathBuf]) -> Result<Parts, MergeError> {
    let (count, parts) = find_parts(dirs)?;
    // The identities first: a shard twice or parts of two runs are named as such.
    check_identities(&parts, count)?;
    for part in &parts {
        check_part(part)?;
    }
    Ok(Parts { count, parts })
}

/// Every part of one run: the same as-of, configuration, version and source, each its own
/// shard (the one its names say).
fn check_identities(parts: &[Part], count: u32) -> Result<(), MergeError> {
    use crate::sink::summary::RunIdentity;
    let mut identities = Vec::new();
    let mut run_ids: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (index, files) in parts.iter().enumerate() {
        let path = &files["run-summary"];
        let summary = read_json(path)?;
        let identity: RunIdentity = serde_json::from_value(summary["identity"].clone())
            .map_err(|_| MergeError::NoIdentity { path: path.clone() })?;
        let named = format!("{index}/{count}");
        if identity.shard.as_deref() != Some(named.as_str()) {
            return Err(MergeError::NotItsShard {
                path: path.clone(),
                said: identity
                    .shard
                    .unwrap_or_else(|| "none (an unsharded run)".into()),
                named,
            });
        }
        // A copy of another shard's part with its `shard` edited still carries that run's id.
        if let Some(run_id) = summary["run_id"].as_str() {
            if let Some(first) = run_ids.insert(run_id.to_owned(), path.clone()) {
                return Err(MergeError::SameRun {
                    run_id: crate::text::shown(run_id).into_owned(),
                    first,
                    second: path.clone(),
                });
            }
        }
        identities.push((path, identity));
    }
    type Field = (&'static str, fn(&RunIdentity) -> &str);
    let fields: [Field; 4] = [
        ("as-of date", |i| &i.as_of),
        ("configuration (config_sha256)", |i| &i.config_sha256),
        ("tool version", |i| &i.tool_version),
        ("source", |i| &i.source),
    ];
    for (field, value) in fields {
        let first = identities.first().map(|(_, i)| value(i));
        if identities.iter().any(|(_, i)| Some(value(i)) != first) {
            return Err(MergeError::Differs {
                field,
                values: identities
                    .iter()
                    .map(|(path, i)| {
                        format!("{} in {}", crate::text::shown(value(i)), path.display())
                    })
                    .collect(),
            });
        }
    }
    Ok(())
}

/// Merges the parts into the run folder of `set` (published by the caller).
pub fn merge(found: &Parts, set: &OutputSet, clock: &MergeClock) -> Result<Merged, MergeError> {
    let (count, parts) = (found.count, &found.parts);
    let out = set.folder();
    let files =
        |stem: &str| -> Vec<&Path> { parts.iter().map(|files| files[stem].as_path()).collect() };
    // On a terminal: the bytes written, counted a mebibyte at a time.
    let progress = Progress::bytes_written("writing");
    let marker_rows = merge_csv(&files("markers"), &out.join("markers.csv"), &progress)?;
    let flag_rows = merge_csv(&files("flags"), &out.join("flags.csv"), &progress)?;
    let detected_issues = merge_ndjson(
        &files("detected-issues"),
        &out.join("detected-issues.ndjson"),
        &progress,
    )?;
    progress.finish();
    let summary = merge_summaries(
        &files("run-summary"),
        count,
        set,
        &out.join("run-summary.json"),
        clock,
    )?;
    Ok(Merged {
        shards: count,
        marker_rows,
        flag_rows,
        detected_issues,
        summary,
    })
}
