//! Benchmark instrument, not a user command: the floor of a server run. Sends the searches a
//! full `run --server` sends (the TARE search, then the patient searches, with the same
//! `server.concurrency`) and discards the pages. Prints resources, requests and seconds.
//!
//! With `--elements`, the Observation searches also ask for only the elements the job reads
//! (`_elements`), to measure whether asking for less pays (issue 12); the page size is the
//! config's `server.page_size` (`TMM_SERVER__PAGE_SIZE=1000` to try another).
//!
//!   cargo build --release --example fetch_only
//!   target/release/examples/fetch_only --server URL [--config FILE] [--elements]

use futures::stream::{self, TryStreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use tare_marker_monitor::config::Config;
use tare_marker_monitor::fhir::client::{FhirClient, FhirError};
use tare_marker_monitor::ingest::Ingestor;
use tare_marker_monitor::source::search;

fn main() {
    let mut server: Option<String> = None;
    let mut config_file: Option<std::path::PathBuf> = None;
    let mut elements = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--server" => server = args.next(),
            "--config" => config_file = args.next().map(Into::into),
            "--elements" => elements = true,
            other => {
                eprintln!("fetch_only: unknown argument {other:?}");
                std::process::exit(2);
            }
        }
    }
    let config = Config::load(config_file.as_deref(), std::env::vars()).unwrap_or_else(|e| {
        eprintln!("fetch_only: {e}");
        std::process::exit(2)
    });
    let Some(url) = server.or(config.server.base_url.clone()) else {
        eprintln!("fetch_only: --server URL is required");
        std::process::exit(2);
    };
    let workers =
        tare_marker_monitor::workers::Workers::new(config.ingest.threads).expect("worker threads");
    let client = FhirClient::new(&url, &config.server).unwrap_or_else(|e| {
        eprintln!("fetch_only: {e}");
        std::process::exit(2)
    });
    let ingestor = Ingestor::new(&config, chrono::Utc::now().date_naive());
    let started = std::time::Instant::now();
    let discarded = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let result: Result<(), FhirError> = workers.runtime.block_on(async {
        let mut searches = search::full_run_searches(&client, &ingestor, &config).await?;
        if elements {
            for planned in searches.iter_mut() {
                if planned.url.path().ends_with("/Observation") {
                    planned.url.query_pairs_mut().append_pair(
                        "_elements",
                        "id,meta,status,code,subject,effective,value,dataAbsentReason,referenceRange,note",
                    );
                }
            }
        }
        stream::iter(searches.into_iter().map(Ok))
            .try_for_each_concurrent(config.server.concurrency, |planned| {
                let (client, discarded, bytes) = (&client, &discarded, &bytes);
                async move {
                    client
                        .search_all(planned.url, |page| {
                            discarded.fetch_add(page.resources.len() as u64, Ordering::Relaxed);
                            let size: usize = page.resources.iter().map(|r| r.get().len()).sum();
                            bytes.fetch_add(size as u64, Ordering::Relaxed);
                        })
                        .await
                        .map(|_| ())
                }
            })
            .await
    });
    if let Err(e) = result {
        eprintln!(
            "fetch_only: {}",
            tare_marker_monitor::fhir::error::chain(&e)
        );
        std::process::exit(3);
    }
    let seconds = started.elapsed().as_secs_f64();
    let requests = client.requests_sent();
    println!(
        "fetch-only: {} resources discarded ({:.1} MB of resources), {requests} requests in {seconds:.3} s ({:.1} requests/s)",
        discarded.into_inner(),
        bytes.into_inner() as f64 / 1e6,
        requests as f64 / seconds
    );
}
