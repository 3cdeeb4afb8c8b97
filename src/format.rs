//! Number and date formatting shared by the CSV files and the sentences for clinicians.

use crate::domain::{Censoring, Marker};
use chrono::NaiveDate;
use std::borrow::Cow;

/// A number for a CSV cell: `.` decimal point, no thousands separator, at most `decimals`
/// decimals with trailing zeros trimmed (`6088`, `12.1`, `0.5`).
pub fn csv_number(value: f64, decimals: usize) -> String {
    let rounded = round_half_away(value, decimals);
    let mut text = format!("{rounded:.decimals$}");
    if text.contains('.') {
        while text.ends_with('0') {
            text.pop();
        }
        if text.ends_with('.') {
            text.pop();
        }
    }
    if text == "-0" {
        text = "0".into();
    }
    text
}

/// A percentage rounded to exactly one decimal (`-93.1`, `40.0`).
pub fn csv_percent(value: f64) -> String {
    let text = format!("{:.1}", round_half_away(value, 1));
    if text == "-0.0" {
        "0.0".into()
    } else {
        text
    }
}

/// A percentage for people: one decimal as in the CSV, thousands grouped (`1,604.5`).
pub fn human_percent(value: f64) -> String {
    group_thousands(&csv_percent(value))
}

/// Exactly `decimals` decimals, rounded as `round_half_away` does (ALBI: `-2.47`).
pub fn fixed(value: f64, decimals: usize) -> String {
    format!("{:.decimals$}", round_half_away(value, decimals))
}

/// Rounds half away from zero, as a person does: `93.05` -> `93.1`, although 93.05 is stored as
/// 93.04999... A nudge of a few units in the last place absorbs that representation noise and
/// nothing more: a relative nudge of 1e-12 turned 1e9 into 1000000000.001 at three decimals.
pub fn round_half_away(value: f64, decimals: usize) -> f64 {
    let scale = 10f64.powi(decimals as i32);
    let scaled = value * scale;
    (scaled + scaled * 8.0 * f64::EPSILON).round() / scale
}

/// A measured value (or a limit) as the source gave it, in its working unit: the shortest
/// decimal that is the number, never rounded (`1210.0847`, `88000`, `0.0001`), so the
/// sentence, the CSV, the worklist and the chart show one figure (docs/rules.md §4).
pub fn exact_number(value: f64) -> String {
    // f64's Display is the shortest round-trip decimal, never in exponent form.
    let text = value.to_string();
    if text == "-0" {
        "0".into()
    } else {
        text
    }
}

/// `exact_number` for people: thousands grouped (`1,210.0847`).
pub fn human_exact(value: f64) -> String {
    group_thousands(&exact_number(value))
}

/// A number for a sentence: thousands separated, at most two decimals (`88,000`, `6,088`,
/// `12.1`).
pub fn human_number(value: f64) -> String {
    group_thousands(&csv_number(value, 2))
}

/// `-1234567.5` -> `-1,234,567.5`.
fn group_thousands(text: &str) -> String {
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text),
    };
    let (integer, fraction) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let mut grouped = String::new();
    for (i, c) in integer.chars().enumerate() {
        if i > 0 && (integer.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match fraction {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

/// `<2 ng/mL`, `88,000 mAU/mL`, `1,210.0847 mAU/mL`: the value as the source gave it.
pub fn human_value(value: f64, censoring: Censoring, marker: Marker) -> String {
    format!(
        "{}{} {}",
        censoring.prefix(),
        human_exact(value),
        marker.canonical_unit()
    )
}

/// `YYYY-MM-DD`, without chrono's format-string machinery (called for every CSV date).
pub fn date(d: NaiveDate) -> String {
    use chrono::Datelike;
    format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

/// A text cell a spreadsheet will not run, and without control or bidirectional characters
/// (`text::printable`): one whose first character past any leading white space is `=`, `+`,
/// `-` or `@` gets a leading `'` (OWASP's advice against CSV formula injection), unless it is
/// a plain number (`-93.1` stays a number).
pub fn csv_text(text: &str) -> Cow<'_, str> {
    let text = crate::text::printable(text);
    let risky = text.trim_start().starts_with(['=', '+', '-', '@']);
    if risky && text.trim().parse::<f64>().is_err() {
        Cow::Owned(format!("'{text}"))
    } else {
        text
    }
}

/// A CSV writer whose every cell goes through `csv_text`: one guard for every CSV the job
/// writes, so no cell (ids, details, names, server-supplied dates) can reach a spreadsheet as
/// a formula.
pub struct GuardedCsv<W: std::io::Write> {
    inner: csv::Writer<W>,
}

impl<W: std::io::Write> GuardedCsv<W> {
    pub fn new(out: W) -> Self {
        GuardedCsv {
            inner: csv::Writer::from_writer(out),
        }
    }

    /// Writes one row, each cell guarded.
    pub fn row<I, T>(&mut self, cells: I) -> csv::Result<()>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        for cell in cells {
            self.inner.write_field(csv_text(cell.as_ref()).as_bytes())?;
        }
        self.inner.write_record(None::<&[u8]>)
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_case_percentage_rounds_to_one_decimal() {
        assert_eq!(csv_percent((6088.0 - 88000.0) / 88000.0 * 100.0), "-93.1");
    }

    #[test]
    fn csv_numbers_have_no_separator_and_no_noise() {
        assert_eq!(csv_number(88000.0, 3), "88000");
        assert_eq!(csv_number(10.0 * 1.21, 3), "12.1");
        assert_eq!(csv_number(-2.345, 2), "-2.35");
        assert_eq!(csv_percent(40.0), "40.0");
    }

    #[test]
    fn large_numbers_carry_no_rounding_noise() {
        assert_eq!(csv_number(1e9, 3), "1000000000");
        assert_eq!(csv_number(123456789012.5, 3), "123456789012.5");
        assert_eq!(human_number(1e9), "1,000,000,000");
        assert_eq!(csv_percent(1e9), "1000000000.0");
        // Half-way cases still round away from zero, small and large.
        assert_eq!(csv_number(93.05, 1), "93.1");
        assert_eq!(csv_number(0.125, 2), "0.13");
        assert_eq!(csv_number(1000000.0005, 3), "1000000.001");
    }

    #[test]
    fn formula_like_text_is_neutralised_and_numbers_stay_numbers() {
        for (cell, expected) in [
            ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
            ("+cmd", "'+cmd"),
            ("-A1", "'-A1"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", " x"),
            ("\r=x", "' =x"),
            (" =1+1", "' =1+1"),
            ("\u{a0}@SUM(A1)", "'\u{a0}@SUM(A1)"),
            ("a\u{0}b\u{1b}[31m", "ab[31m"),
            ("line one\nline two", "line one line two"),
            ("\u{202e}=1+1", "'=1+1"),
            ("mAU\u{202e}/mL\u{2066}", "mAU/mL"),
            (" -93.1", " -93.1"),
            ("-93.1", "-93.1"),
            ("+40", "+40"),
            ("demo-01", "demo-01"),
            ("PIVKA-II rose 140%", "PIVKA-II rose 140%"),
        ] {
            assert_eq!(csv_text(cell), expected, "{cell:?}");
        }
    }

    #[test]
    fn the_guarded_writer_guards_every_cell_of_a_row() {
        let mut out = Vec::new();
        {
            let mut writer = GuardedCsv::new(&mut out);
            // A server-supplied date and annotation, an id, a number.
            writer
                .row(["=1+1", " @cmd", "demo-01", "-93.1", "a\u{7}b"])
                .unwrap();
            writer.flush().unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "'=1+1,' @cmd,demo-01,-93.1,ab\n"
        );
    }

    #[test]
    fn values_are_written_as_sent_and_grouped_for_people() {
        assert_eq!(exact_number(1210.0847), "1210.0847");
        assert_eq!(human_exact(1210.0847), "1,210.0847");
        assert_eq!(human_exact(1e8), "100,000,000");
        assert_eq!(exact_number(0.0001), "0.0001");
        assert_eq!(exact_number(-0.0), "0");
        assert_eq!(human_percent(1604.49), "1,604.5");
        assert_eq!(human_percent(-93.08), "-93.1");
    }

    #[test]
    fn human_numbers_group_thousands() {
        assert_eq!(human_number(88000.0), "88,000");
        assert_eq!(human_number(1234567.891), "1,234,567.89");
        assert_eq!(human_number(40.0), "40");
        assert_eq!(human_number(-1020.5), "-1,020.5");
    }
}
