//! A progress bar on stderr, with patients per second and the time left, only when stderr is
//! a terminal and the log is text: a scheduler's log, or a JSON log (every line one object),
//! gets nothing of it.

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

impl Progress {
    /// A bar for `total` patients, or nothing when stderr is not a terminal.
    pub fn start(stage: &'static str, total: u64) -> Progress {
        if !shown() {
            return Progress::default();
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{msg:>8} [{bar:30}] {pos}/{len} patients, {rate} patients/s, {eta} left",
        )
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

    pub fn advance(&self, patients: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(patients);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
