//! Benchmark instrument, not a user command: the floor for any JSON job on a Bulk Data folder.
//! Parses every line of every `.ndjson` / `.ndjson.gz` file of the folder (the types the job
//! reads and all others) as `serde::de::IgnoredAny` with the job's own block reader and
//! threads; with `--lean`, the lines of the job's own files through its read structs and
//! checks instead (records discarded). Prints the lines parsed and the seconds.
//!
//!   cargo build --release --example parse_floor
//!   target/release/examples/parse_floor --source-dir DIR [--lean] [--threads N]

use rayon::iter::{ParallelBridge, ParallelIterator};
use std::path::PathBuf;
use tare_marker_monitor::config::Config;
use tare_marker_monitor::ingest::{Ingestor, LineOutcome, ResourceType};
use tare_marker_monitor::source::ndjson::SourceError;
use tare_marker_monitor::source::ndjson::{discover, lines, BlockReader, BufferPool, SourceFile};

/// Every NDJSON file of the folder, sorted by name: those the job reads and those of the other
/// types, which `discover` lists as not read (any type will do for the floor, which reads none).
fn every_file(dir: &std::path::Path) -> Result<Vec<SourceFile>, SourceError> {
    let discovered = discover(dir)?;
    let mut files = discovered.files;
    files.extend(
        discovered
            .ignored
            .iter()
            .filter(|ignored| ignored.is_other_resource_type())
            .map(|ignored| SourceFile {
                path: dir.join(&ignored.name),
                kind: ResourceType::Observation,
                gzip: ignored.name.ends_with(".gz"),
            }),
    );
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn main() {
    let mut source_dir: Option<PathBuf> = None;
    let mut lean = false;
    let mut threads = 0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--source-dir" => source_dir = args.next().map(PathBuf::from),
            "--lean" => lean = true,
            "--threads" => threads = args.next().and_then(|n| n.parse().ok()).unwrap_or(0),
            other => {
                eprintln!("parse_floor: unknown argument {other:?}");
                std::process::exit(2);
            }
        }
    }
    let Some(dir) = source_dir else {
        eprintln!("parse_floor: --source-dir DIR is required");
        std::process::exit(2);
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("worker threads");
    let config = Config::default();
    let ingestor = Ingestor::new(&config, chrono::Utc::now().date_naive());
    // The floor parses everything in the folder; the lean read only what the job reads.
    let files = match lean {
        true => discover(&dir).map(|d| d.files).map_err(|e| e.to_string()),
        false => every_file(&dir).map_err(|e| e.to_string()),
    };
    let files = match files {
        Ok(files) => files,
        Err(e) => {
            eprintln!("parse_floor: {e}");
            std::process::exit(3);
        }
    };
    let started = std::time::Instant::now();
    let buffers = BufferPool::default();
    let parsed: u64 = pool.install(|| {
        BlockReader::new(&files, &buffers, usize::MAX)
            .par_bridge()
            .map(|block| {
                let block = block.expect("a readable file");
                let parsed = lines(&block)
                    .filter(|(_, line)| match lean {
                        false => serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok(),
                        true => std::str::from_utf8(line).is_ok_and(|text| {
                            matches!(ingestor.read_line(block.kind, text), LineOutcome::Record(_))
                        }),
                    })
                    .count() as u64;
                buffers.give_back(block.bytes);
                parsed
            })
            .sum()
    });
    println!(
        "{parsed} lines parsed in {:.3} s on {} threads",
        started.elapsed().as_secs_f64(),
        pool.current_num_threads()
    );
}
