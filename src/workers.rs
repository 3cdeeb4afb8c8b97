//! The worker threads of one command, built once and passed down: a rayon pool that reads and
//! evaluates on every core (or `ingest.threads`), and one tokio runtime for the FHIR client.

/// Why the workers could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkersError {
    #[error("cannot start the worker threads")]
    Pool(#[from] rayon::ThreadPoolBuildError),
    #[error("cannot start the runtime of the FHIR client")]
    Runtime(#[source] std::io::Error),
}

pub struct Workers {
    pub pool: rayon::ThreadPool,
    pub runtime: tokio::runtime::Runtime,
}

impl Workers {
    /// `threads` workers; 0: one per core.
    pub fn new(threads: usize) -> Result<Workers, WorkersError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(pool.current_num_threads().max(1))
            .enable_all()
            .build()
            .map_err(WorkersError::Runtime)?;
        Ok(Workers { pool, runtime })
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }
}
