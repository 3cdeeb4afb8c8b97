//! The binary: parse the command line, set up logging, run the command, and map its error to
//! the documented exit code, printed once, with its causes, on one line (`CommandError::lines`).

use clap::Parser;
use std::process::ExitCode;
use tare_marker_monitor::commands::{exit, Cli, LogFormat};

// mimalloc: faster than glibc malloc for the many small records of a large run, and it returns
// memory to the OS instead of keeping per-thread arenas (measured in benches/).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    use std::io::IsTerminal;
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match cli.log_format {
        // One JSON object per line, for a log collector; never colours.
        LogFormat::Json => logs.json().with_current_span(false).init(),
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    tare_marker_monitor::isolation::install_panic_hook();
    if let Err(e) = tare_marker_monitor::interrupt::install() {
        eprintln!("error: cannot install the SIGINT/SIGTERM handlers: {e}");
        return ExitCode::from(exit::FAILURE);
    }
    match cli.command.execute() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            for line in error.lines() {
                eprintln!("{line}");
            }
            ExitCode::from(error.exit_code())
        }
    }
}
