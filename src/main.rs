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
    let cli = Cli::parse();
    let json = cli.log_format == LogFormat::Json;
    tare_marker_monitor::logging::init(cli.log_format, cli.verbosity());
    tare_marker_monitor::isolation::install_panic_hook();
    if let Err(e) = tare_marker_monitor::interrupt::install() {
        tracing::error!("cannot install the SIGINT/SIGTERM handlers: {e}");
        return ExitCode::from(exit::FAILURE);
    }
    match cli.command.execute() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let code = error.exit_code();
            for line in error.lines() {
                match json {
                    // Every stderr line one JSON object, the final error too.
                    true => tracing::error!(exit_code = code, "{}", &line["error: ".len()..]),
                    false => eprintln!("{line}"),
                }
            }
            ExitCode::from(code)
        }
    }
}
