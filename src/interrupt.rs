//! SIGINT and SIGTERM stop a run cleanly and at once. The first sets a flag that the long
//! loops (reading blocks, search pages, write-back transactions) check between two steps, and
//! cancels a token that every request to a server, every retry back-off, every rate-limit wait
//! and every Bulk Data poll races (`or_stop`): whatever was waiting on the network is dropped,
//! its connection closed. The wait for a file's next block checks the flag several times a
//! second (a read that blocks is left behind). So nothing is left half-written or published,
//! temporary files are removed and the state does not move on; the run ends with exit code
//! 130 within a second or two. A second signal ends the process at once (exit code 130), for
//! an operator who means it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use tokio_util::sync::CancellationToken;

static REQUESTED: LazyLock<Arc<AtomicBool>> = LazyLock::new(|| Arc::new(AtomicBool::new(false)));

/// Cancelled by the first SIGINT/SIGTERM (from the signal thread: a signal handler itself
/// may only set a flag).
static STOP: LazyLock<CancellationToken> = LazyLock::new(CancellationToken::new);

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
    // signal-hook's iterator wakes this thread through a self-pipe; it cancels the token.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                STOP.cancel();
            }
        })?;
    Ok(())
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed) || STOP.is_cancelled()
}

/// Runs `work` unless and until a stop is asked for: `None` when it was (`work` is dropped
/// where it stood, with every request it had in flight).
pub async fn or_stop<F: Future>(work: F) -> Option<F::Output> {
    if requested() {
        return None;
    }
    tokio::select! {
        biased;
        () = STOP.cancelled() => None,
        output = work => Some(output),
    }
}

/// Sleeps for `wait`, or less when a stop is asked for; `false` then.
pub async fn sleep_or_stop(wait: std::time::Duration) -> bool {
    or_stop(tokio::time::sleep(wait)).await.is_some()
}
