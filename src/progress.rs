//! A progress bar on stderr, with patients (or bytes) per second and the time left, only when
//! stderr is a terminal and the log is text: a scheduler's log, or a JSON log (every line one
//! object), gets nothing of it. Bars are moved per block or per mebibyte, never per line.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by `logging::init` for `--log-format json`.
static HIDDEN: AtomicBool = AtomicBool::new(false);

/// No bar at all from now on (a JSON log).
pub fn hide() {
    HIDDEN.store(true, Ordering::Relaxed);
}

fn shown() -> bool {
    !HIDDEN.load(Ordering::Relaxed) && std::io::stderr().is_terminal()
}

#[derive(Clone, Default)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

/// A bar drawn on stderr with `template`, `total` long (a spinner without a total), or
/// nothing when stderr is not a terminal or the log is JSON.
fn bar(stage: &'static str, total: Option<u64>, template: &str) -> Progress {
    if !shown() {
        return Progress::default();
    }
    // A bar dropped unfinished (an error ended the step) is cleared too: the error line
    // that follows starts on a clean line.
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr())
        .with_finish(indicatif::ProgressFinish::AndClear);
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1}", state.per_sec());
            },
        )
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(stage);
    Progress { bar: Some(bar) }
}

impl Progress {
    /// A bar for `total` patients, or nothing when stderr is not a terminal.
    pub fn start(stage: &'static str, total: u64) -> Progress {
        bar(
            stage,
            Some(total),
            "{msg:>8} [{bar:30}] {pos}/{len} patients, {rate} patients/s, {eta} left",
        )
    }

    /// A bar for `total` bytes (files read: their size on disk, compressed for gzip).
    pub fn bytes(stage: &'static str, total: u64) -> Progress {
        bar(
            stage,
            Some(total),
            "{msg:>8} [{bar:30}] {bytes}/{total_bytes}, {binary_bytes_per_sec}, {eta} left",
        )
    }

    /// Bytes written so far, when their total is not known in advance.
    pub fn bytes_written(stage: &'static str) -> Progress {
        bar(
            stage,
            None,
            "{msg:>8} {spinner} {bytes} written, {binary_bytes_per_sec}",
        )
    }

    pub fn advance(&self, patients: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(patients);
        }
    }

    /// Sets the position (bytes read so far).
    pub fn set(&self, position: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// `out`, counting what passes through it into this bar a mebibyte at a time (the bar
    /// is not touched per line or per record).
    pub fn counting<W: std::io::Write>(&self, out: W) -> Counting<'_, W> {
        Counting {
            out,
            progress: self,
            pending: 0,
        }
    }
}

/// A writer that adds the bytes written through it to a bar, in steps of `STEP` bytes.
pub struct Counting<'a, W: std::io::Write> {
    out: W,
    progress: &'a Progress,
    pending: u64,
}

const STEP: u64 = 1 << 20;

impl<W: std::io::Write> std::io::Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.pending += n as u64;
        if self.pending >= STEP {
            self.progress.advance(std::mem::take(&mut self.pending));
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl<W: std::io::Write> Drop for Counting<'_, W> {
    fn drop(&mut self) {
        self.progress.advance(self.pending);
    }
}
