//! SIGINT and SIGTERM stop a run cleanly: the first sets a flag that the long loops (reading
//! blocks, search pages, write-back transactions) check between two steps, and the wait for a
//! file's next block checks several times a second (a read that blocks is left behind), so
//! nothing is left half-written or published, temporary files are removed and the state does
//! not move on. A second signal
//! ends the process at once (exit code 130), for an operator who means it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

static REQUESTED: LazyLock<Arc<AtomicBool>> = LazyLock::new(|| Arc::new(AtomicBool::new(false)));

/// A write past the file-size limit (`ulimit -f`) would otherwise kill the process without a
/// word: with SIGXFSZ handled, the write fails with EFBIG instead, and the run says which file
/// it could not write and that nothing was published, as for a full disk.
static FILE_TOO_LARGE: LazyLock<Arc<AtomicBool>> =
    LazyLock::new(|| Arc::new(AtomicBool::new(false)));

/// Installs the handlers (once, at the start of the binary).
pub fn install() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGXFSZ};
    for signal in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag as the previous signal left it.
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&REQUESTED))?;
        signal_hook::flag::register(signal, Arc::clone(&REQUESTED))?;
    }
    signal_hook::flag::register(SIGXFSZ, Arc::clone(&FILE_TOO_LARGE))?;
    Ok(())
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}
