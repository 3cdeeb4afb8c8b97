//! The report as one self-contained HTML page: inline styles and script, no external
//! resource. Every piece of text from the data goes through `escape`; the chart data is JSON
//! inside a `<script type="application/json">` with every `<` written as `\u003c`, so no value
//! can close the script or open a tag.

use super::{FlaggedPatient, Report};
use crate::config::Config;
use crate::format::{date, human_number};
use crate::text::printable;
use std::borrow::Cow;
use std::io::{self, Write};

const STYLE: &str = include_str!("assets/report.css");
/// Rows of the flagged-patients table written as HTML; the rest are added from the data on
/// request, so a report of thousands of patients opens quickly.
const TABLE_ROWS: usize = 500;
const SCRIPT: &str = include_str!("assets/report.js");

/// Text for HTML content and attribute values, without control or bidirectional characters.
pub fn escape(text: &str) -> String {
    let text = printable(text);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What the page's script needs of a flagged patient, compact: a report of 16,000 patients is
/// mostly this. Points are `[day, value, bits]` (`super::point`); dates are the index date
/// plus the day.
#[derive(serde::Serialize)]
struct PatientView<'a> {
    id: &'a str,
    name: Option<Cow<'a, str>>,
    worst: &'static str,
    latest: String,
    /// `[severity, code, marker, episode index date, identified date, detail]`.
    flags: Vec<[String; 6]>,
    index: &'a str,
    tares: &'a [i64],
    series: Vec<SeriesView<'a>>,
}

#[derive(serde::Serialize)]
struct SeriesView<'a> {
    m: &'static str,
    label: &'static str,
    unit: &'static str,
    uln: f64,
    points: Vec<(i64, f64, u8)>,
    /// `[point index, observation id, note]` for the points with a note.
    notes: Vec<(usize, &'a str, Cow<'a, str>)>,
}

impl<'a> PatientView<'a> {
    fn of(p: &'a FlaggedPatient) -> PatientView<'a> {
        PatientView {
            id: &p.patient_id,
            // Text from the source, as a person reads it: without control or bidirectional
            // characters.
            name: p.name.as_deref().map(printable),
            worst: p.worst.code(),
            latest: date(p.latest_identified),
            flags: p
                .flags
                .iter()
                .map(|(index, f)| {
                    [
                        f.severity.code().to_owned(),
                        f.code.code().to_owned(),
                        f.marker.map(|m| m.display_name()).unwrap_or("").to_owned(),
                        date(*index),
                        date(f.identified_date),
                        printable(&f.detail).into_owned(),
                    ]
                })
                .collect(),
            index: &p.chart.index_date,
            tares: &p.chart.tares,
            series: p
                .chart
                .series
                .iter()
                .map(|s| SeriesView {
                    m: s.marker,
                    label: s.label,
                    unit: s.unit,
                    uln: s.uln,
                    points: s
                        .points
                        .iter()
                        .map(|pt| (pt.day, pt.value, pt.bits))
                        .collect(),
                    notes: s
                        .points
                        .iter()
                        .enumerate()
                        .filter_map(|(i, pt)| {
                            pt.note
                                .as_deref()
                                .map(|n| (i, pt.observation.as_str(), printable(n)))
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// JSON safe inside a `<script>` element.
fn script_json<T: serde::Serialize>(value: &T) -> io::Result<String> {
    let json = serde_json::to_string(value)?;
    Ok(json
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026"))
}

/// A patient's anchor: ids are `[A-Za-z0-9.-]`, but escape anyway.
fn anchor(patient_id: &str) -> String {
    format!("p-{}", escape(patient_id))
}

fn severity(code: &str) -> String {
    format!("<span class=\"sev sev-{0}\">{0}</span>", escape(code))
}

pub fn write(out: &mut dyn Write, report: &Report, config: &Config) -> io::Result<()> {
    let o = &report.options;
    let range = match (o.from, o.to) {
        (None, None) => "all dates".to_owned(),
        (from, to) => format!(
            "{} to {}",
            from.map(date).unwrap_or_else(|| "the start".into()),
            to.map(date).unwrap_or_else(|| "the as-of date".into())
        ),
    };
    writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>TARE marker audit report, as of {as_of}</title><style>{STYLE}</style></head><body>",
        as_of = date(o.as_of)
    )?;
    writeln!(
        out,
        "<header><h1>Post-TARE tumor-marker audit</h1><p>As of {} &middot; flags identified {} &middot; \
         source {} &middot; generated {} (run {}) by tare-marker-monitor {} &middot; rules: {}</p></header>",
        date(o.as_of),
        escape(&range),
        escape(&o.source.to_string()),
        escape(&report.generated_at),
        escape(&o.run_id),
        env!("CARGO_PKG_VERSION"),
        escape(&config.output.rules_url)
    )?;
    writeln!(
        out,
        "<nav><a href=\"#summary\">Cohort</a><a href=\"#flagged\">Flagged patients ({})</a>\
         <a href=\"#charts\">Charts</a><a href=\"#trail\">Flag trail</a><a href=\"#quality\">Data quality</a></nav><main>",
        report.flagged.len()
    )?;
    summary(out, report)?;
    flagged_table(out, report)?;
    charts(out)?;
    trail(out, report)?;
    quality(out, report)?;
    let views: Vec<PatientView> = report.flagged.iter().map(PatientView::of).collect();
    writeln!(
        out,
        "</main><script id=\"chart-data\" type=\"application/json\">{}</script><script>{SCRIPT}</script></body></html>",
        script_json(&views)?
    )
}

fn summary(out: &mut dyn Write, r: &Report) -> io::Result<()> {
    let p = &r.patients;
    writeln!(
        out,
        "<h2 id=\"summary\">Cohort summary</h2><div class=\"grid\">"
    )?;
    writeln!(out, "<table><caption>Patients</caption><tbody>")?;
    for (label, count) in [
        ("seen", p.seen),
        ("evaluated", p.evaluated),
        ("evaluated with an unknown birth date", p.birth_date_unknown),
        ("episodes evaluated", p.episodes_evaluated),
    ] {
        writeln!(
            out,
            "<tr><td>{label}</td><td class=\"num\">{count}</td></tr>"
        )?;
    }
    for (reason, count) in &p.left_out {
        writeln!(
            out,
            "<tr><td>left out: {}</td><td class=\"num\">{count}</td></tr>",
            escape(&reason.replace('_', " "))
        )?;
    }
    writeln!(out, "</tbody></table>")?;
    let categories = ["CR", "PR", "SD", "PD", "NE"];
    writeln!(
        out,
        "<table><caption>Responses (episode rows)</caption><thead><tr><th>marker</th>{}</tr></thead><tbody>",
        categories
            .iter()
            .map(|c| format!("<th class=\"num\">{c}</th>"))
            .collect::<String>()
    )?;
    for (marker, by) in &r.responses {
        write!(out, "<tr><td>{}</td>", escape(marker))?;
        for c in categories {
            write!(
                out,
                "<td class=\"num\">{}</td>",
                by.get(c).copied().unwrap_or(0)
            )?;
        }
        writeln!(out, "</tr>")?;
    }
    writeln!(out, "</tbody></table>")?;
    let severities = ["high", "moderate", "low"];
    writeln!(
        out,
        "<table><caption>Flags ({} in all, {} written as DetectedIssues)</caption><thead><tr><th>flag</th>{}</tr></thead><tbody>",
        r.flags.total,
        r.flags.written_as_detected_issues,
        severities
            .iter()
            .map(|s| format!("<th class=\"num\">{s}</th>"))
            .collect::<String>()
    )?;
    for (code, by) in &r.flags.by_code {
        write!(out, "<tr><td>{}</td>", escape(code))?;
        for s in severities {
            write!(
                out,
                "<td class=\"num\">{}</td>",
                by.get(s).copied().unwrap_or(0)
            )?;
        }
        writeln!(out, "</tr>")?;
    }
    writeln!(out, "</tbody></table></div>")
}

fn patient_label(p: &FlaggedPatient) -> String {
    match &p.name {
        Some(name) => format!(
            "{} <span class=\"name\">{}</span>",
            escape(&p.patient_id),
            escape(name)
        ),
        None => escape(&p.patient_id),
    }
}

fn flagged_table(out: &mut dyn Write, r: &Report) -> io::Result<()> {
    writeln!(
        out,
        "<h2 id=\"flagged\">Flagged patients</h2><p class=\"muted\">Most severe first, then most recent. \
         Each links to the patient's chart.</p><table><thead><tr><th>patient</th><th>worst</th>\
         <th>latest flag</th><th>flags</th></tr></thead><tbody id=\"flagged-rows\">"
    )?;
    for p in r.flagged.iter().take(TABLE_ROWS) {
        let codes: Vec<String> = p
            .flags
            .iter()
            .map(|(_, f)| match f.marker {
                Some(m) => format!("{} ({})", f.code.code(), m.display_name()),
                None => f.code.code().to_owned(),
            })
            .collect();
        writeln!(
            out,
            "<tr><td><a href=\"#{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            anchor(&p.patient_id),
            patient_label(p),
            severity(p.worst.code()),
            date(p.latest_identified),
            escape(&codes.join(", "))
        )?;
    }
    writeln!(out, "</tbody></table>")?;
    if r.flagged.len() > TABLE_ROWS {
        writeln!(
            out,
            "<p><button id=\"more-rows\">Show all {} flagged patients</button></p>",
            r.flagged.len()
        )?;
    }
    Ok(())
}

fn charts(out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "<h2 id=\"charts\">Charts</h2><p class=\"legend muted\">Log scale; days since the TARE of the latest episode. \
         <span><i style=\"background:#1f5fa8\"></i>PIVKA-II (mAU/mL)</span><span><i style=\"background:#0f8a7e\"></i>DCP (ng/mL)</span>\
         <span><i style=\"background:#c2571a\"></i>AFP (ng/mL)</span><span><i style=\"background:#8a3fa0\"></i>AFP-L3 (%)</span> \
         Dashed purple: TARE; dotted: upper limit of normal; square: baseline; diamond: nadir; red ring: evidence of a flag; \
         open triangle: a censored value (&lt; or &gt;).</p>\
         <div id=\"patients\"></div><p><button id=\"more-patients\" hidden>Show the next patients</button></p>\
         <noscript><p>The charts need JavaScript; the tables and the CSV files do not.</p></noscript>"
    )?;
    Ok(())
}

fn trail(out: &mut dyn Write, r: &Report) -> io::Result<()> {
    writeln!(out, "<h2 id=\"trail\">Flag trail</h2>")?;
    let Some(trail) = &r.trail else {
        return writeln!(
            out,
            "<p class=\"muted\">Read from files: the flag trail (the DetectedIssues written, their status today \
             and clinicians' annotations) is read from the FHIR server: run the report with --server.</p>"
        );
    };
    writeln!(
        out,
        "<p class=\"muted\">{} DetectedIssues written by the job, identified in the range; most recent first.</p>\
         <table><thead><tr><th>identified</th><th>patient</th><th>flag</th><th>severity</th><th>status today</th>\
         <th>annotation</th><th>evidence</th></tr></thead><tbody>",
        trail.len()
    )?;
    for t in trail {
        let annotation = match (&t.annotation, &t.annotated_on) {
            (Some(text), Some(on)) => format!(
                "{} <span class=\"muted\">({})</span>",
                escape(text),
                escape(on)
            ),
            (Some(text), None) => escape(text),
            _ => String::new(),
        };
        writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}<div class=\"detail\">{}</div></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&t.identified),
            escape(&t.patient_id),
            escape(&t.code),
            escape(&t.detail),
            severity(&t.severity),
            escape(t.status_today()),
            annotation,
            escape(&t.evidence.join(", "))
        )?;
    }
    writeln!(out, "</tbody></table>")
}

fn quality(out: &mut dyn Write, r: &Report) -> io::Result<()> {
    writeln!(
        out,
        "<h2 id=\"quality\">Data quality</h2><p class=\"muted\">What was read, used and left out, per resource type \
         and reason, with example resource ids.</p><table><thead><tr><th>resource</th><th>reason</th>\
         <th class=\"num\">count</th><th>examples</th></tr></thead><tbody>"
    )?;
    for (kind, counts) in &r.quality.by_type {
        writeln!(
            out,
            "<tr><td>{kind}</td><td>read</td><td class=\"num\">{}</td><td></td></tr>\
             <tr><td>{kind}</td><td>accepted</td><td class=\"num\">{}</td><td></td></tr>",
            human_number(counts.read as f64),
            human_number(counts.accepted as f64)
        )?;
        for (reason, count) in &counts.left_out {
            let examples: Vec<String> = count
                .examples
                .iter()
                .map(|e| match &e.detail {
                    Some(detail) => format!("{} ({})", escape(&e.resource), escape(detail)),
                    None => escape(&e.resource),
                })
                .collect();
            writeln!(
                out,
                "<tr><td>{kind}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                escape(&reason.replace('_', " ")),
                human_number(count.count as f64),
                examples.join("<br>")
            )?;
        }
    }
    writeln!(out, "</tbody></table>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }

    #[test]
    fn escape_removes_control_characters() {
        assert_eq!(escape("a\u{0}b\u{1b}[1m\nc"), "ab[1m c");
    }

    #[test]
    fn escape_removes_bidirectional_controls() {
        assert_eq!(
            escape("Ann\u{202e}exe.fdp\u{202c} \u{2067}<b>\u{2069}\u{200f}"),
            "Annexe.fdp &lt;b&gt;"
        );
    }

    #[test]
    fn chart_json_cannot_close_its_script_element() {
        let json = script_json(&vec!["</script><script>alert(1)</script>"]).unwrap();
        assert!(!json.contains('<'), "{json}");
        let back: Vec<String> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ["</script><script>alert(1)</script>"]);
    }
}
