//! The binary: parse the command line, set up logging, run the command, and map its error to
//! the documented exit code, printed once, with its causes, on one line (`CommandError::lines`).

use clap::Parser;
use std::ffi::OsString;
use std::process::ExitCode;
use tare_marker_monitor::commands::{exit, Cli, LogFormat};

// mimalloc: faster than glibc malloc for the many small records of a large run, and it returns
// memory to the OS instead of keeping per-thread arenas (measured in benches/).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Transparent huge pages off for this process: each first touch of a region mimalloc
    // grows into (a Vec doubling while a large folder is read) would otherwise zero 2 MiB at
    // once; with them, the kernel's page zeroing took a sixth of a realistic run's CPU
    // (benches/read_scaling.sh, README "Performance"). Best effort: a kernel without the
    // setting runs as before.
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return refused_command_line(error),
    };
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
                    true => tracing::error!(
                        target: "tare_marker_monitor::exit",
                        exit_code = code,
                        "{}",
                        &line["error: ".len()..]
                    ),
                    false => eprintln!("{line}"),
                }
            }
            ExitCode::from(code)
        }
    }
}

/// Whether the command line asks for a JSON log (`--log-format json` or `--log-format=json`,
/// anywhere: the option is global), read before clap has parsed it.
fn json_log_asked(args: &[OsString]) -> bool {
    args.iter().enumerate().any(|(i, arg)| {
        arg == "--log-format=json"
            || (arg == "--log-format" && args.get(i + 1).is_some_and(|next| next == "json"))
    })
}

/// A command line clap refuses (exit 2), or `--help` and `--version` (exit 0): as clap prints
/// them, except that with a JSON log a refusal is one JSON object on stderr like every other
/// line there (the first paragraph of clap's text as the message, the rest as `usage`).
/// A `run` whose command line was refused (a date not written YYYY-MM-DD, an unknown option)
/// still writes its exit code to the metrics textfile, when one can be found (`--config`'s
/// `[metrics] textfile_path` or `TMM_METRICS__TEXTFILE_PATH`): a scheduler's edited command
/// line fails loudly the same night.
fn publish_refused_run(args: &[OsString], exit_code: u8) {
    if args
        .get(1..)
        .is_none_or(|rest| !rest.iter().any(|a| a == "run"))
    {
        return;
    }
    let config = args
        .iter()
        .position(|a| a == "--config")
        .and_then(|at| args.get(at + 1))
        .map(std::path::PathBuf::from)
        .or_else(|| {
            args.iter().find_map(|a| {
                let text = a.to_str()?;
                text.strip_prefix("--config=").map(std::path::PathBuf::from)
            })
        });
    if let Some(path) = tare_marker_monitor::config::textfile_path_despite_errors(
        config.as_deref(),
        std::env::vars(),
    ) {
        tare_marker_monitor::metrics::publish_textfile(&path, None, None, exit_code, 0.0);
    }
}

fn refused_command_line(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let args: Vec<OsString> = std::env::args_os().collect();
    let shown = matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    );
    if !shown {
        publish_refused_run(
            &args,
            u8::try_from(error.exit_code()).unwrap_or(exit::CONFIG),
        );
    }
    if shown || !json_log_asked(&args) {
        error.exit()
    }
    let code = u8::try_from(error.exit_code()).unwrap_or(exit::CONFIG);
    let text = error.render().to_string();
    let (message, usage) = match error.kind() {
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => (
            "a command is missing (run, merge, report, explain, generate or check)".to_owned(),
            "For more information, try '--help'.".to_owned(),
        ),
        _ => {
            // The first paragraph says what is wrong (with the missing arguments under it).
            let words = |paragraph: &str| {
                paragraph
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let (first, rest) = text.split_once("\n\n").unwrap_or((&text, ""));
            let first = words(first);
            (
                first.strip_prefix("error: ").unwrap_or(&first).to_owned(),
                words(rest),
            )
        }
    };
    tare_marker_monitor::logging::init(LogFormat::Json, 0);
    tracing::error!(exit_code = code, usage = %usage, "{message}");
    ExitCode::from(code)
}
