//! Log lines on stderr, as text or as one JSON object per line, each event exactly one line
//! whatever its fields hold. Text from a server or a file is escaped where it enters a message
//! (`text::shown`); this is the last line of defence for anything that was not: a field
//! holding a newline, an ESC sequence or a bidirectional override cannot start a line of its
//! own, move the cursor, or reorder what a reader sees.

use crate::commands::LogFormat;
use crate::text;
use std::io;
use tracing::Subscriber;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::{FormatFields, MakeWriter};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The variable holding a log filter (`tracing_subscriber::EnvFilter` directives, such as
/// `info` or `warn,tare_marker_monitor::source=debug`); it overrides `-v`/`-q`.
pub const FILTER_VARIABLE: &str = "TMM_LOG";

/// The directive for the final error line of a JSON log (target `tare_marker_monitor::exit`),
/// which every filter lets through.
pub const FATAL_TARGET: &str = "tare_marker_monitor::exit=error";

/// The filter of `-v`/`-q` (`verbosity` is the count of `-v` less the count of `-q`): by
/// default the job's own info lines (a run's start and end) and everyone's warnings.
pub fn default_directives(verbosity: i8) -> &'static str {
    match verbosity {
        ..=-2 => "error",
        -1 => "warn",
        0 => "warn,tare_marker_monitor=info",
        1 => "info,tare_marker_monitor=debug",
        _ => "debug,tare_marker_monitor=trace",
    }
}

/// Sets up the logging of the binary: `TMM_LOG`, else the level of `-v`/`-q`, on stderr, in
/// `format`; colours only on a terminal, and never in JSON. A `TMM_LOG` that is not a filter
/// is said so, in the chosen format, and the default is used.
pub fn init(format: LogFormat, verbosity: i8) {
    use std::io::IsTerminal;
    // An empty value (a template's `TMM_LOG=${LEVEL}` with no level) is no filter.
    let directives = std::env::var(FILTER_VARIABLE)
        .ok()
        .filter(|value| !value.trim().is_empty());
    let parsed = directives.as_deref().map(EnvFilter::try_new);
    let filter = match &parsed {
        Some(Ok(_)) => parsed.and_then(Result::ok).unwrap_or_default(),
        _ => EnvFilter::new(default_directives(verbosity)),
    };
    // The line that says why a command failed is written whatever the filter (`off`
    // included): an operator must never get an exit code without its reason.
    let filter = match FATAL_TARGET.parse() {
        Ok(fatal) => filter.add_directive(fatal),
        Err(_) => filter,
    };
    if format == LogFormat::Json {
        crate::progress::hide();
    }
    subscriber(format, filter, io::stderr, io::stderr().is_terminal()).init();
    if let Some(Err(error)) = directives.as_deref().map(EnvFilter::try_new) {
        tracing::warn!("{FILTER_VARIABLE} is not a log filter ({error}); using the default level");
    }
}

/// The subscriber `init` installs, writing to `writer`.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => Box::new(
            logs.json()
                .with_current_span(false)
                .with_writer(SafeJsonLines(writer))
                .finish(),
        ),
        LogFormat::Text => Box::new(
            logs.fmt_fields(SafeFields::default())
                .with_ansi(ansi)
                .with_writer(writer)
                .finish(),
        ),
    }
}

/// The fields of a text log line (the message and every `key=value`) as the default format
/// writes them, then through `text::shown`: a newline inside an event is written `\u{a}`.
/// (The level, time and target around them are the job's own.)
#[derive(Debug, Default)]
pub struct SafeFields(DefaultFields);

impl<'writer> FormatFields<'writer> for SafeFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        let mut plain = String::new();
        self.0.format_fields(Writer::new(&mut plain), fields)?;
        writer.write_str(&text::shown(&plain))
    }
}

/// JSON log lines with DEL, the C1 controls and the bidirectional controls written as JSON
/// escapes (serde_json escapes only the C0 controls); the values a collector reads are the
/// same.
pub struct SafeJsonLines<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for SafeJsonLines<M> {
    type Writer = SafeJsonLine<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        SafeJsonLine(self.0.make_writer())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        SafeJsonLine(self.0.make_writer_for(meta))
    }
}

/// One event's writer. The formatter hands over each event's whole line in one `write_all`,
/// and `write` takes all of it, so each call holds whole lines of valid UTF-8.
pub struct SafeJsonLine<W>(W);

impl<W: io::Write> io::Write for SafeJsonLine<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let line = String::from_utf8_lossy(buf);
        self.0
            .write_all(text::json_line_escaped(&line).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    const HOSTILE: &str =
        "http://x\n2026-01-01T00:00:00Z  WARN forged\u{1b}[2J\u{9b}\u{7f}\u{202e}\u{2066}";

    /// What one warning with `HOSTILE` in its message and in a field writes.
    fn logged(format: LogFormat, ansi: bool) -> String {
        let out = Shared::default();
        let writer = out.clone();
        let subscriber = subscriber(format, EnvFilter::new("warn"), move || writer.clone(), ansi);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(file = %HOSTILE, "left out under {HOSTILE}");
        });
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    fn assert_one_safe_line(line: &str) {
        let body = line
            .strip_suffix('\n')
            .unwrap_or_else(|| panic!("{line:?}"));
        assert!(!body.chars().any(text::is_unsafe), "{line:?}");
    }

    #[test]
    fn a_text_log_event_is_one_line_without_control_or_bidi_characters() {
        let line = logged(LogFormat::Text, false);
        assert_one_safe_line(&line);
        assert!(
            line.contains("http://x\\u{a}2026-01-01T00:00:00Z  WARN forged"),
            "{line}"
        );
        assert!(line.contains("\\u{202e}\\u{2066}"), "{line}");
        assert!(line.contains("file=http://x\\u{a}"), "{line}");
    }

    #[test]
    fn a_coloured_text_log_keeps_its_colours_and_escapes_the_fields() {
        let line = logged(LogFormat::Text, true);
        // The level's colour is the formatter's own escape sequence ...
        assert!(line.contains("\u{1b}[33m WARN"), "{line:?}");
        // ... and the only one: none comes from the fields.
        let fields = &line[line.find("left out").unwrap()..];
        assert_one_safe_line(fields);
    }

    #[test]
    fn a_json_log_event_is_one_line_of_json_without_raw_c1_or_bidi_characters() {
        let line = logged(LogFormat::Json, false);
        assert_one_safe_line(&line);
        let event: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(
            event["fields"]["message"],
            format!("left out under {HOSTILE}")
        );
        assert_eq!(event["fields"]["file"], HOSTILE);
        assert!(line.contains("\\u202e\\u2066"), "{line}");
    }
}
