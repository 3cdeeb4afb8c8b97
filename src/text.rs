//! Text that came from a server or a file (diagnostics, ids, names, notes, units, statuses,
//! file names), made safe to show. Such text could forge a log line (an embedded newline),
//! move a terminal's cursor or recolour it (an ESC sequence), or reorder what a reader sees
//! (U+202E RIGHT-TO-LEFT OVERRIDE and the other bidirectional controls). Two ways:
//!
//! - `shown`, for logs, messages and the run summary: each such character written as
//!   `\u{..}`, so the reader sees that it was there;
//! - `printable`, for the CSV files and the HTML report, which a person reads as a table:
//!   line breaks become a space, the rest is removed.

use std::borrow::Cow;
use std::fmt::Write;

/// The bidirectional controls: ALM, LRM, RLM, the embeddings and overrides (LRE, RLE, PDF,
/// LRO, RLO) and the isolates (LRI, RLI, FSI, PDI).
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// The line and paragraph separators, which some viewers break a line at.
fn is_line_separator(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}')
}

/// A character that is never shown as it is: the C0 controls (newline, ESC, ...), DEL, the C1
/// controls, the bidirectional controls and the Unicode line separators.
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || is_bidi_control(c) || is_line_separator(c)
}

/// The text with every unsafe character written as `\u{..}` (`a\u{a}b`, `\u{202e}`), as
/// Rust's `{:?}` writes them; anything else, a backslash included, stays as it is, so showing
/// a shown text again changes nothing.
pub fn shown(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Text for a cell a person reads: line breaks and tabs become a space, every other unsafe
/// character (NUL, ESC, the C1 range, U+202E, ...) is removed. For every text in a CSV file or
/// the HTML report, whatever the source put in it.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .filter_map(|c| match c {
                '\n' | '\r' | '\t' => Some(' '),
                c if is_line_separator(c) => Some(' '),
                c if is_unsafe(c) => None,
                c => Some(c),
            })
            .collect(),
    )
}

/// Whether a person sees anything of `text`: some character that is neither white space nor
/// invisible (a control, a bidirectional mark, a zero-width space or joiner, a soft hyphen,
/// a byte-order mark, a variation selector, a Hangul filler). A name made only of these reads
/// as no name (the report shows the patient's id instead).
pub fn has_visible(text: &str) -> bool {
    text.chars().any(|c| {
        !(c.is_whitespace()
            || c.is_control()
            || is_unsafe(c)
            || matches!(
                c,
                '\u{00AD}'
                    | '\u{034F}'
                    | '\u{061C}'
                    | '\u{115F}'
                    | '\u{1160}'
                    | '\u{17B4}'
                    | '\u{17B5}'
                    | '\u{180B}'..='\u{180F}'
                    | '\u{200B}'..='\u{200F}'
                    | '\u{2060}'..='\u{206F}'
                    | '\u{3164}'
                    | '\u{FE00}'..='\u{FE0F}'
                    | '\u{FEFF}'
                    | '\u{FFA0}'
            ))
    })
}

/// `text` cut to at most `max_chars` characters, the last of them "…" when it was cut.
pub fn shortened(text: Cow<'_, str>, max_chars: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        None => text,
        Some(_) => {
            let keep: String = text.chars().take(max_chars.saturating_sub(1)).collect();
            Cow::Owned(keep + "…")
        }
    }
}

/// One line of JSON with every unsafe character written as a JSON escape (`\u202e`), except
/// the line's final newline. serde_json escapes the C0 controls in strings but writes DEL, C1
/// and the bidirectional controls as they are; the value a JSON reader gets is unchanged.
pub fn json_line_escaped(line: &str) -> Cow<'_, str> {
    let (body, end) = match line.strip_suffix('\n') {
        Some(body) => (body, "\n"),
        None => (line, ""),
    };
    if !body.chars().any(is_unsafe) {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 8);
    for c in body.chars() {
        if is_unsafe(c) {
            // Every unsafe character lies in the Basic Multilingual Plane: one \uXXXX each.
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out.push_str(end);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_text_is_cut_to_its_limit_with_an_ellipsis() {
        assert_eq!(shortened(Cow::Borrowed("abcdef"), 6), "abcdef");
        assert_eq!(shortened(Cow::Borrowed("abcdefg"), 6), "abcde…");
        assert_eq!(shortened(Cow::Borrowed("ééééééé"), 3), "éé…");
    }

    #[test]
    fn a_name_of_invisible_characters_only_has_nothing_visible() {
        for invisible in [
            "\u{200B}\u{200B}",
            "\u{00AD}",
            "\u{FEFF} \u{2060}",
            "\u{202E}",
            " ",
        ] {
            assert!(!has_visible(invisible), "{invisible:?}");
        }
        for visible in ["Ann", "\u{200B}A", "José", "李"] {
            assert!(has_visible(visible), "{visible:?}");
        }
    }

    /// Every character the module guards against, one of each kind.
    const HOSTILE: &str = "a\nb\rc\td\u{1b}[2Je\u{7}f\u{7f}g\u{85}h\u{9b}i\u{202e}j\u{202d}k\u{202a}l\u{202c}m\u{2066}n\u{2069}o\u{200e}p\u{200f}q\u{61c}r\u{2028}s";

    #[test]
    fn shown_escapes_controls_and_bidi_controls_as_debug_does() {
        assert_eq!(
            shown(HOSTILE),
            "a\\u{a}b\\u{d}c\\u{9}d\\u{1b}[2Je\\u{7}f\\u{7f}g\\u{85}h\\u{9b}i\\u{202e}j\\u{202d}k\\u{202a}l\\u{202c}m\\u{2066}n\\u{2069}o\\u{200e}p\\u{200f}q\\u{61c}r\\u{2028}s"
        );
        // The same notation as `{:?}`, without its quotes.
        let debug = format!("{HOSTILE:?}");
        let debug_unsafe = debug.replace("\\n", "\\u{a}").replace("\\r", "\\u{d}");
        let debug_unsafe = debug_unsafe.replace("\\t", "\\u{9}");
        assert_eq!(format!("\"{}\"", shown(HOSTILE)), debug_unsafe);
    }

    #[test]
    fn shown_leaves_ordinary_text_borrowed_and_is_idempotent() {
        for text in [
            "demo-01",
            "PIVKA-II 6,088 mAU/mL",
            "µmol/L",
            "שלום",
            "a\\b",
            "",
        ] {
            assert!(
                matches!(shown(text), Cow::Borrowed(t) if t == text),
                "{text}"
            );
        }
        let once = shown(HOSTILE).into_owned();
        assert_eq!(shown(&once), once);
        assert!(!once.chars().any(is_unsafe));
    }

    #[test]
    fn printable_spaces_line_breaks_and_removes_the_rest() {
        assert_eq!(printable(HOSTILE), "a b c d[2Jefghijklmnopqr s");
        assert_eq!(printable("\u{202e}lmth.exe"), "lmth.exe");
        assert!(matches!(printable("Müller"), Cow::Borrowed("Müller")));
    }

    #[test]
    fn json_lines_keep_their_final_newline_and_their_value() {
        let value = serde_json::json!({ "message": HOSTILE });
        let line = format!("{value}\n");
        let escaped = json_line_escaped(&line);
        assert!(escaped.ends_with("}\n"));
        let body = escaped.strip_suffix('\n').unwrap();
        assert!(!body.chars().any(is_unsafe), "{body}");
        let back: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(back, value);
        assert!(matches!(
            json_line_escaped("{\"a\":1}\n"),
            Cow::Borrowed("{\"a\":1}\n")
        ));
    }
}
