//! The report as one self-contained HTML page: inline styles and script, no external
//! resource. Every piece of text from the data goes through `escape`; the chart data is JSON
//! inside a `<script type="application/json">` with every `<` written as `\u003c`, so no value
//! can close the script or open a tag.

use super::{FlaggedPatient, Report};
use crate::config::Config;
use crate::domain::{FlagCode, Marker, Response};
use crate::format::{date, human_exact, human_number};
use crate::text::printable;
use chrono::NaiveDate;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, Write};

const STYLE: &str = include_str!("assets/report.css");
const SCRIPT: &str = include_str!("assets/report.js");
/// The rules, shipped inside the report unless `[report] rules_url` points elsewhere.
const RULES: &str = include_str!("../../docs/rules.md");
/// Nothing but the page's own inline style and script; no request leaves the page.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'";

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

/// What a worklist row needs of a flagged patient, parsed when the page loads. Codes stay codes
/// here; the page names them from `Labels`.
#[derive(serde::Serialize)]
struct RowView<'a> {
    id: &'a str,
    // Absent rather than null: 16,000 rows are parsed at load.
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mrn: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    birth: Option<String>,
    worst: &'static str,
    latest: String,
    /// `[code]` or `[code, marker key]`: what the flag filters and the Flags column need.
    flags: Vec<Vec<&'static str>>,
    /// `[marker key, value as written (with < or >), response or ""]`.
    values: Vec<[String; 3]>,
    /// `[status today, clinician's note]`; absent when the report read files.
    #[serde(skip_serializing_if = "Option::is_none")]
    review: Option<(Cow<'a, str>, Option<Cow<'a, str>>)>,
    index: &'a str,
    /// Where this patient's line of `#patient-details` lies: `[offset, length]` in UTF-16 code
    /// units, the indices of a JavaScript string.
    d: [usize; 2],
}

/// What the patient view and its print need, one JSON line per patient, parsed only when the
/// patient is opened or printed: most of a large report. Points are `[day, value, bits]`
/// (`super::point`); dates are the index date plus the day.
#[derive(serde::Serialize)]
struct DetailView<'a> {
    /// `[severity, code, marker key, episode index date, identified date, detail]`.
    flags: Vec<[String; 6]>,
    tares: &'a [i64],
    series: Vec<SeriesView<'a>>,
}

#[derive(serde::Serialize)]
struct SeriesView<'a> {
    m: &'static str,
    uln: f64,
    /// The REILD limit of twice the bilirubin baseline, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    rl: Option<f64>,
    points: Vec<(i64, f64, u8)>,
    /// `[point index, observation id, note]` for the points with a note.
    notes: Vec<(usize, &'a str, Cow<'a, str>)>,
}

/// A name or MRN longer than this is shown cut, with "…" (a 10,000-character name would make
/// its row thousands of pixels tall and its printed page several pages); the CSV keeps it whole.
const MAX_SHOWN_CHARS: usize = 200;

impl<'a> RowView<'a> {
    fn of(p: &'a FlaggedPatient, detail: [usize; 2]) -> RowView<'a> {
        RowView {
            id: &p.patient_id,
            // Text from the source, as a person reads it: without control or bidirectional
            // characters.
            name: p
                .name
                .as_deref()
                .map(printable)
                .filter(|name| crate::text::has_visible(name))
                .map(|name| crate::text::shortened(name, MAX_SHOWN_CHARS)),
            mrn: p
                .mrn
                .as_deref()
                .map(printable)
                .map(|mrn| crate::text::shortened(mrn, MAX_SHOWN_CHARS)),
            birth: p.birth_date.map(date),
            worst: p.worst.code(),
            latest: date(p.latest_identified),
            flags: p
                .flags
                .iter()
                .map(|(_, f)| {
                    std::iter::once(f.code.code())
                        .chain(f.marker.map(|m| m.key()))
                        .collect()
                })
                .collect(),
            values: p
                .latest_values
                .iter()
                .map(|v| {
                    [
                        v.marker.key().to_owned(),
                        // As the sentences write it: the source's number, never rounded.
                        format!("{}{}", v.censoring.prefix(), human_exact(v.value)),
                        v.response.map(|r| r.code()).unwrap_or("").to_owned(),
                    ]
                })
                .collect(),
            review: p
                .review
                .as_ref()
                .map(|r| (printable(&r.status), r.note.as_deref().map(printable))),
            index: &p.chart.index_date,
            d: detail,
        }
    }
}

impl<'a> DetailView<'a> {
    fn of(p: &'a FlaggedPatient) -> DetailView<'a> {
        DetailView {
            flags: p
                .flags
                .iter()
                .map(|(index, f)| {
                    [
                        f.severity.code().to_owned(),
                        f.code.code().to_owned(),
                        f.marker.map(|m| m.key()).unwrap_or("").to_owned(),
                        date(*index),
                        date(f.identified_date),
                        printable(&f.detail).into_owned(),
                    ]
                })
                .collect(),
            tares: &p.chart.tares,
            series: p
                .chart
                .series
                .iter()
                .map(|s| SeriesView {
                    m: s.marker,
                    uln: s.uln,
                    rl: s.baseline_limit,
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

/// Every flagged patient's detail line (script-safe JSON, one a line) and, per patient, where
/// the line lies in the text the page reads: UTF-16 offsets, as JavaScript indexes strings.
fn detail_lines(flagged: &[FlaggedPatient]) -> io::Result<(String, Vec<[usize; 2]>)> {
    let mut text = String::new();
    let mut at = Vec::with_capacity(flagged.len());
    let mut offset = 0;
    for p in flagged {
        let line = script_json(&DetailView::of(p))?;
        let length = line.encode_utf16().count();
        at.push([offset, length]);
        offset += length + 1;
        text.push_str(&line);
        text.push('\n');
    }
    Ok((text, at))
}

/// The words for the codes, once for the whole page, and the limits the charts draw.
#[derive(serde::Serialize)]
struct Labels {
    /// marker key -> [label, unit]
    markers: BTreeMap<&'static str, [&'static str; 2]>,
    /// flag code -> label
    flags: BTreeMap<&'static str, &'static str>,
    responses: BTreeMap<&'static str, &'static str>,
    /// `[rules] reild_bilirubin_umol_l`, drawn on the bilirubin chart of a possible REILD.
    reild_limit: f64,
    /// `[rules] reild_baseline_multiple`, the label of the limit drawn at that many times the
    /// bilirubin baseline.
    reild_multiple: f64,
    deidentified: bool,
    /// "YYYY-MM-DD", printed on every page of a print-out (a tumour board's copy says when
    /// its figures were true).
    as_of: String,
}

impl Labels {
    fn of(config: &Config, deidentified: bool, as_of: NaiveDate) -> Labels {
        Labels {
            markers: Marker::ALL
                .into_iter()
                .map(|m| (m.key(), [marker_label(m), m.canonical_unit()]))
                .collect(),
            flags: FlagCode::ALL
                .into_iter()
                .map(|f| (f.code(), flag_label(f)))
                .collect(),
            responses: Response::ALL
                .into_iter()
                .map(|r| (r.code(), response_label(r)))
                .collect(),
            reild_limit: config.rules.reild_bilirubin_umol_l,
            reild_multiple: config.rules.reild_baseline_multiple,
            deidentified,
            as_of: date(as_of),
        }
    }
}

/// Every marker's configured plateau level, with its unit ("PIVKA-II: 800 mAU/mL; AFP: 200
/// ng/mL"), or "none configured".
fn plateau_levels(config: &Config) -> String {
    let levels: Vec<String> = Marker::TUMOR
        .into_iter()
        .filter_map(|m| {
            let level = config.markers.get(m).plateau_level?;
            Some(format!(
                "{}: {} {}",
                marker_label(m),
                human_number(level),
                m.canonical_unit()
            ))
        })
        .collect();
    match levels.is_empty() {
        true => "none configured".into(),
        false => levels.join("; "),
    }
}

/// How the report names a series (AFP-L3 is a share, so "%" belongs to its name).
pub fn marker_label(marker: Marker) -> &'static str {
    match marker {
        Marker::AfpL3 => "AFP-L3 %",
        m => m.display_name(),
    }
}

/// A flag in the words of a worklist.
pub fn flag_label(flag: FlagCode) -> &'static str {
    match flag {
        FlagCode::IncompleteResponse => "Incomplete response",
        FlagCode::MarkerDiscordance => "Discordant markers",
        FlagCode::MarkerPlateau => "Marker plateau",
        FlagCode::MarkerRise => "Marker rise",
        FlagCode::NoResponse => "No response",
        FlagCode::PossibleReild => "Possible REILD",
        FlagCode::SurveillanceOverdue => "Surveillance overdue",
    }
}

pub fn response_label(response: Response) -> &'static str {
    match response {
        Response::Complete => "Complete response (CR)",
        Response::Partial => "Partial response (PR)",
        Response::Stable => "Stable disease (SD)",
        Response::Progression => "Progression (PD)",
        Response::NotEvaluable => "Not evaluable (NE)",
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
         <meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>TARE marker audit report, as of {as_of}</title><style>{STYLE}</style></head><body>",
        as_of = date(o.as_of)
    )?;
    let rules = match &config.report.rules_url {
        Some(url) => format!("<a href=\"{0}\">{0}</a>", escape(url)),
        None => "<a href=\"#rules\">in this report</a>".to_owned(),
    };
    writeln!(
        out,
        "<header><h1>Post-TARE tumour-marker audit</h1><p>As of {} &middot; flags identified {} &middot; \
         source {} &middot; generated {} (run {}) by tare-marker-monitor {} &middot; rules: {rules}{}</p></header>",
        date(o.as_of),
        escape(&range),
        // A folder's path or a server's address can name a patient or a ward: a de-identified
        // report says only which kind of source it read.
        if o.deidentified {
            format!("a {} (not shown: de-identified)", o.source.kind())
        } else {
            escape(&o.source.to_string())
        },
        escape(&report.generated_at),
        escape(&o.run_id),
        env!("CARGO_PKG_VERSION"),
        if o.deidentified {
            " &middot; <strong>de-identified</strong>: names and identifiers are pseudonyms"
        } else {
            ""
        }
    )?;
    writeln!(
        out,
        "<nav aria-label=\"Sections\"><a href=\"#worklist\">Worklist ({})</a><a href=\"#summary\">Programme</a>\
         <a href=\"#glossary\">Glossary</a><a href=\"#rules\">Rules</a><a href=\"#trail\">Flag trail</a>\
         <a href=\"#quality\">Data quality</a></nav><main>",
        report.flagged.len()
    )?;
    worklist(out, report)?;
    summary(out, report)?;
    programme(out, report)?;
    glossary(out, config)?;
    rules_section(out, config)?;
    trail(out, report)?;
    quality(out, report)?;
    let (details, at) = detail_lines(&report.flagged)?;
    let rows: Vec<RowView> = report
        .flagged
        .iter()
        .zip(at)
        .map(|(p, at)| RowView::of(p, at))
        .collect();
    // The details come after the script, so the worklist is usable while the parser reads
    // them (docs: README "Report benchmark").
    writeln!(
        out,
        "</main><div id=\"print-area\"></div>\
         <script id=\"labels\" type=\"application/json\">{}</script>\
         <script id=\"worklist-data\" type=\"application/json\">{}</script><script>{SCRIPT}</script>\
         <script id=\"patient-details\" type=\"application/json\">{details}</script></body></html>",
        script_json(&Labels::of(config, o.deidentified, o.as_of))?,
        script_json(&rows)?
    )
}

/// The worklist: the controls and an empty table the page's script fills a page at a time
/// from the data, and the patient view it opens.
fn worklist(out: &mut dyn Write, r: &Report) -> io::Result<()> {
    let options = |pairs: &[(&str, &str)]| -> String {
        pairs
            .iter()
            .map(|(value, label)| format!("<option value=\"{value}\">{}</option>", escape(label)))
            .collect()
    };
    let severities = options(&[("high", "High"), ("moderate", "Moderate"), ("low", "Low")]);
    let flags: Vec<(&str, &str)> = FlagCode::ALL
        .into_iter()
        .map(|f| (f.code(), flag_label(f)))
        .collect();
    let markers: Vec<(&str, &str)> = Marker::TUMOR
        .into_iter()
        .map(|m| (m.key(), marker_label(m)))
        .collect();
    let responses: Vec<(&str, &str)> = Response::ALL
        .into_iter()
        .map(|x| (x.code(), response_label(x)))
        .collect();
    let select = |id: &str, label: &str, any: &str, opts: &str| {
        format!(
            "<label for=\"f-{id}\">{label}<select id=\"f-{id}\" data-key=\"{id}\"><option value=\"\">{any}</option>{opts}</select></label>"
        )
    };
    writeln!(
        out,
        "<section id=\"worklist\" aria-labelledby=\"worklist-h\"><h2 id=\"worklist-h\">Worklist: flagged patients</h2>\
         <form id=\"filters\" class=\"filters\" role=\"search\">\
         <label for=\"f-q\">Search name, MRN or id<input id=\"f-q\" type=\"search\" data-key=\"q\" autocomplete=\"off\"></label>\
         {}{}{}{}\
         <label for=\"f-review\">Review<select id=\"f-review\" data-key=\"review\"><option value=\"\">any</option></select></label>\
         <label for=\"f-from\">TARE from<input id=\"f-from\" type=\"date\" data-key=\"from\"></label>\
         <label for=\"f-to\">TARE to<input id=\"f-to\" type=\"date\" data-key=\"to\"></label>\
         <button type=\"button\" id=\"clear-filters\">Clear</button>\
         <button type=\"button\" id=\"print-shown\">Print the patients shown</button></form>\
         <p id=\"count\" role=\"status\" aria-live=\"polite\"></p><p id=\"print-note\" role=\"status\"></p>\
         <table id=\"worklist-table\"><caption class=\"visually-hidden\">Flagged patients; sort with the column buttons</caption><thead><tr>\
         <th aria-sort=\"none\" data-sort=\"name\"><button type=\"button\">Patient</button></th>\
         <th aria-sort=\"none\" data-sort=\"mrn\"><button type=\"button\">MRN</button></th>\
         <th aria-sort=\"none\" data-sort=\"birth\"><button type=\"button\">Birth date</button></th>\
         <th aria-sort=\"none\" data-sort=\"worst\"><button type=\"button\">Worst</button></th>\
         <th>Flags</th><th>Latest values</th>\
         <th aria-sort=\"none\" data-sort=\"review\"><button type=\"button\">Review</button></th>\
         <th aria-sort=\"none\" data-sort=\"tare\"><button type=\"button\">TARE</button></th>\
         <th aria-sort=\"none\" data-sort=\"latest\"><button type=\"button\">Latest flag</button></th>\
         </tr></thead><tbody id=\"worklist-rows\"></tbody></table>\
         <p class=\"pager\"><button type=\"button\" id=\"prev-page\">Previous page</button> <span id=\"page-info\"></span> \
         <button type=\"button\" id=\"next-page\">Next page</button></p>\
         <noscript><p>The worklist and charts need JavaScript; report-flagged-patients.csv beside this file lists the same {} patients.</p></noscript>\
         </section><section id=\"patient-view\" hidden aria-live=\"polite\"></section>",
        select("sev", "Severity", "any", &severities),
        select("flag", "Flag", "any", &options(&flags)),
        select("marker", "Marker", "any", &options(&markers)),
        select("resp", "Response", "any", &options(&responses)),
        r.flagged.len()
    )
}

const RESPONSE_COLORS: [(Response, &str); 5] = [
    (Response::Complete, "#1a7f37"),
    (Response::Partial, "#4f8fd1"),
    (Response::Stable, "#8a8f98"),
    (Response::Progression, "#b3261e"),
    (Response::NotEvaluable, "#d7b46a"),
];

/// The programme figures as inline SVG (numbers only; labels are ours), beside their CSVs.
fn programme(out: &mut dyn Write, r: &Report) -> io::Result<()> {
    let g = &r.programme;
    writeln!(
        out,
        "<h3>Best change from baseline (waterfall)</h3><p class=\"muted\">One bar per episode and marker with a \
         baseline and a value after TARE: the nadir's change from the baseline, largest rise first, clipped at +100%; \
         coloured by the response at the latest value. report-waterfall.csv holds every bar.</p><p class=\"legend\">{}</p>",
        RESPONSE_COLORS
            .iter()
            .map(|(resp, color)| format!(
                "<span><i style=\"background:{color}\"></i>{}</span>",
                response_label(*resp)
            ))
            .collect::<String>()
    )?;
    let (w, h, l, t, b) = (720.0, 150.0, 48.0, 8.0, 8.0);
    let y = |pct: f64| t + (100.0 - pct.clamp(-100.0, 100.0)) / 200.0 * (h - t - b);
    for marker in Marker::TUMOR {
        let bars: Vec<_> = g.waterfall.iter().filter(|x| x.marker == marker).collect();
        if bars.is_empty() {
            continue;
        }
        // At most 24 px a bar: a small cohort's bars stay bars.
        let step = ((w - l - 8.0) / bars.len() as f64).min(24.0);
        let mut paths: BTreeMap<&str, String> = BTreeMap::new();
        for (i, bar) in bars.iter().enumerate() {
            let color = RESPONSE_COLORS
                .iter()
                .find(|(resp, _)| *resp == bar.response)
                .map_or("#333", |(_, c)| c);
            let x = l + (i as f64 + 0.5) * step;
            paths.entry(color).or_default().push_str(&format!(
                "M{x:.2} {:.1}V{:.1}",
                y(0.0),
                y(bar.best_pct_change)
            ));
        }
        write!(
            out,
            "<svg class=\"programme\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"Waterfall of {0}: {1} episodes\">\
             <text x=\"{l}\" y=\"14\" dx=\"6\">{0} ({1})</text>",
            marker_label(marker),
            bars.len()
        )?;
        for pct in [100.0, 50.0, 0.0, -50.0, -100.0] {
            write!(
                out,
                "<line class=\"grid\" x1=\"{l}\" x2=\"{x2}\" y1=\"{y0:.1}\" y2=\"{y0:.1}\"/><text x=\"{tx}\" y=\"{ty:.1}\" text-anchor=\"end\">{label}%</text>",
                label = if pct == 0.0 { "0".to_owned() } else { format!("{pct:+}") },
                x2 = w - 8.0,
                y0 = y(pct),
                tx = l - 4.0,
                ty = y(pct) + 4.0
            )?;
        }
        let width = (step * 0.85).max(0.3);
        for (color, path) in paths {
            write!(
                out,
                "<path d=\"{path}\" stroke=\"{color}\" stroke-width=\"{width:.2}\"/>"
            )?;
        }
        writeln!(out, "</svg>")?;
    }
    // Surveillance adherence per window, and flags per month, as bars.
    let windows: Vec<(String, f64, String)> = g
        .surveillance
        .iter()
        .map(|s| {
            let share = if s.due == 0 {
                0.0
            } else {
                s.with_result as f64 / s.due as f64 * 100.0
            };
            (
                format!("days {}-{}", s.from_day, s.to_day),
                share,
                // No window ended yet for anyone: no share to show, not 0 %.
                match s.due {
                    0 => "no patient due yet".to_owned(),
                    // One decimal, rounded as every percentage (the CSV's figure).
                    due => format!(
                        "{}% of {}",
                        crate::format::human_percent(share),
                        human_number(due as f64)
                    ),
                },
            )
        })
        .collect();
    writeln!(
        out,
        "<h3>Surveillance adherence</h3><p class=\"muted\">Per scheduled window of the surveillance schedule (docs/rules.md §2.10), \
         the share of patients whose latest episode's window had ended by the as-of date with a tumour-marker result in it \
         (report-surveillance.csv).</p>"
    )?;
    bars(out, "Surveillance adherence per window", &windows, 100.0)?;
    // Every month of the range, those without a flag at 0.
    let range = g.flag_months(&r.options);
    let mut months: BTreeMap<&str, usize> = range.iter().map(|m| (m.as_str(), 0)).collect();
    for ((month, _, _), count) in &g.flags_per_month {
        *months.entry(month.as_str()).or_default() += count;
    }
    let max = months.values().copied().max().unwrap_or(0) as f64;
    let month_bars: Vec<(String, f64, String)> = months
        .iter()
        .map(|(m, c)| ((*m).to_owned(), *c as f64, c.to_string()))
        .collect();
    writeln!(
        out,
        "<h3>Flags per month</h3><p class=\"muted\">Flags identified each month, in the report's range \
         (report-flags-per-month.csv, per flag and severity).</p>"
    )?;
    bars(out, "Flags per month", &month_bars, max)?;
    writeln!(
        out,
        "<h3>Days from TARE to nadir</h3><p class=\"muted\">Series with a value after TARE, per 30-day bin \
         (report-nadir-days.csv).</p><table><thead><tr><th>days after TARE</th>{}</tr></thead><tbody>",
        Marker::TUMOR
            .iter()
            .map(|m| format!("<th class=\"num\">{}</th>", marker_label(*m)))
            .collect::<String>()
    )?;
    let histogram = g.nadir_histogram();
    let starts: std::collections::BTreeSet<i64> = histogram.keys().map(|(_, s)| *s).collect();
    for start in starts {
        write!(
            out,
            "<tr><td>{}-{}</td>",
            start,
            start + super::programme::NADIR_BIN_DAYS - 1
        )?;
        for m in Marker::TUMOR {
            write!(
                out,
                "<td class=\"num\">{}</td>",
                histogram.get(&(m, start)).copied().unwrap_or(0)
            )?;
        }
        writeln!(out, "</tr>")?;
    }
    writeln!(out, "</tbody></table>")
}

/// Vertical bars with their labels under them and their values above.
fn bars(
    out: &mut dyn Write,
    title: &str,
    bars: &[(String, f64, String)],
    max: f64,
) -> io::Result<()> {
    if bars.is_empty() || max <= 0.0 {
        return writeln!(out, "<p class=\"muted\">None.</p>");
    }
    let (w, h, t, b) = (720.0, 170.0, 18.0, 36.0);
    let step = ((w - 16.0) / bars.len() as f64).min(120.0);
    write!(
        out,
        "<svg class=\"programme\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\">",
        escape(title)
    )?;
    // Many narrow bars (months of a long range): every bar drawn, every n-th labelled, so the
    // labels never overlap; each bar's value stays in its tooltip.
    let every = (56.0 / step).ceil().max(1.0) as usize;
    for (i, (label, value, text)) in bars.iter().enumerate() {
        let height = value / max * (h - t - b);
        let x = 8.0 + i as f64 * step;
        write!(
            out,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{height:.1}\" fill=\"#4f6fa8\"><title>{}: {}</title></rect>",
            x + step * 0.1,
            h - b - height,
            step * 0.8,
            escape(label),
            escape(text),
        )?;
        if i % every == 0 {
            write!(
                out,
                "<text x=\"{0:.1}\" y=\"{1:.1}\" text-anchor=\"middle\">{2}</text>\
                 <text x=\"{0:.1}\" y=\"{3:.1}\" text-anchor=\"middle\">{4}</text>",
                x + step / 2.0,
                h - b - height - 4.0,
                escape(text),
                h - b + 14.0,
                escape(label)
            )?;
        }
    }
    writeln!(out, "</svg>")
}

/// Response categories and flags, with the thresholds of the configuration in force.
fn glossary(out: &mut dyn Write, config: &Config) -> io::Result<()> {
    let r = &config.rules;
    let pct = |f: f64| human_number(f * 100.0);
    let uln = |m: Marker| match config.markers.get(m).uln {
        Some(v) => format!("{} {}", human_number(v), m.canonical_unit()),
        None => "none".into(),
    };
    let ulns: Vec<String> = Marker::ALL
        .into_iter()
        .map(|m| format!("{} {}", marker_label(m), uln(m)))
        .collect();
    writeln!(
        out,
        "<h2 id=\"glossary\">Glossary</h2><p class=\"muted\">With the thresholds of this report's configuration. \
         Default upper limits of normal (ULN; a result's own reference range is used when plausible): {}.</p><dl class=\"glossary\">",
        escape(&ulns.join(", "))
    )?;
    let bilirubin_uln = uln(Marker::Bilirubin);
    let entries: Vec<(String, String)> = vec![
        ("Baseline".into(), format!("the last value from {} days before the TARE up to its day.", config.episodes.baseline_days)),
        ("Nadir".into(), "the lowest value after the TARE.".into()),
        ("Reference nadir".into(), "the lowest value so far (the baseline or a value after TARE before the latest): a rise is measured from it.".into()),
        (response_label(Response::Complete).into(), "the latest value is at or below the ULN (of a marker raised at baseline).".into()),
        (response_label(Response::Partial).into(), format!("the latest value is at most {}% of the baseline, still above the ULN.", pct(r.response_fraction))),
        (response_label(Response::Stable).into(), "neither a response nor a progression.".into()),
        (response_label(Response::Progression).into(), format!("a confirmed rise: two values in a row above the ULN and at least {}% above the reference nadir.", human_number(r.rise_pct))),
        (response_label(Response::NotEvaluable).into(), "no baseline, no value after TARE, or a baseline at or below the ULN.".into()),
        (flag_label(FlagCode::MarkerRise).into(), format!("the latest value is above the ULN and at least {}% above the reference nadir; high when confirmed by the value before it, else moderate.", human_number(r.rise_pct))),
        (flag_label(FlagCode::MarkerPlateau).into(), format!("the last two values are above the marker's plateau level ({}), within {}% of each other, at least {} days apart; moderate.",
            plateau_levels(config),
            human_number(r.plateau_change_pct), r.plateau_min_days_apart)),
        (flag_label(FlagCode::NoResponse).into(), format!("a raised baseline, a value on or after day {}, and every value after TARE above {}% of the baseline; moderate.", r.no_response_min_day, pct(r.response_fraction))),
        (flag_label(FlagCode::IncompleteResponse).into(), "a partial response (PR) whose latest value is still above the ULN; low.".into()),
        (flag_label(FlagCode::SurveillanceOverdue).into(), format!("no result more than {} days past the next due date (every {} days in the first {} days, then every {} days), up to {} days after TARE; low.",
            r.overdue_grace_days, r.due_interval_early_days, r.due_early_period_days, r.due_interval_late_days, r.overdue_max_days)),
        (flag_label(FlagCode::PossibleReild).into(), format!("radioembolization-induced liver disease is possible: a bilirubin value between day {} and day {} at or above {} umol/L, or at least {} times its baseline and above the ULN ({}); high.",
            r.reild_from_day, r.reild_to_day, human_number(r.reild_bilirubin_umol_l), human_number(r.reild_baseline_multiple), bilirubin_uln)),
        (flag_label(FlagCode::MarkerDiscordance).into(), "one marker progresses (PD) while another responds (CR or PR); low.".into()),
        ("ALBI".into(), format!("0.66 x log10(bilirubin umol/L) - 0.085 x albumin g/L, from values at most {} days from the date; grade 1 at or below -2.60, grade 3 above -1.39.", r.albi_max_days)),
    ];
    for (term, text) in entries {
        writeln!(out, "<dt>{}</dt><dd>{}</dd>", escape(&term), escape(&text))?;
    }
    writeln!(out, "</dl>")
}

/// docs/rules.md inside the report (or the site's published copy when configured).
fn rules_section(out: &mut dyn Write, config: &Config) -> io::Result<()> {
    match &config.report.rules_url {
        Some(url) => writeln!(
            out,
            "<h2 id=\"rules\">Rules</h2><p>The rules this report applies are published at <a href=\"{0}\">{0}</a>.</p>",
            escape(url)
        ),
        None => writeln!(
            out,
            "<h2 id=\"rules\">Rules</h2><details><summary>What tare-marker-monitor computes (docs/rules.md of version {})</summary>\
             <pre class=\"rules\">{}</pre></details>",
            env!("CARGO_PKG_VERSION"),
            escape_keeping_lines(RULES)
        ),
    }
}

/// `escape` for a preformatted block: line breaks kept.
fn escape_keeping_lines(text: &str) -> String {
    text.lines().map(escape).collect::<Vec<_>>().join("\n")
}

fn summary(out: &mut dyn Write, r: &Report) -> io::Result<()> {
    let p = &r.patients;
    writeln!(
        out,
        "<h2 id=\"summary\">Programme at a glance</h2><div class=\"grid\">"
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
            "<tr><td>{label}</td><td class=\"num\">{}</td></tr>",
            human_number(count as f64)
        )?;
    }
    for (reason, count) in &p.left_out {
        writeln!(
            out,
            "<tr><td>left out: {}</td><td class=\"num\">{}</td></tr>",
            escape(&patient_left_out_words(reason)),
            human_number(*count as f64)
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
        let label = Marker::from_key(marker).map_or(*marker, marker_label);
        write!(out, "<tr><td>{}</td>", escape(label))?;
        for c in categories {
            write!(
                out,
                "<td class=\"num\">{}</td>",
                human_number(by.get(c).copied().unwrap_or(0) as f64)
            )?;
        }
        writeln!(out, "</tr>")?;
    }
    writeln!(out, "</tbody></table>")?;
    let severities = ["high", "moderate", "low"];
    writeln!(
        out,
        "<table><caption>Flags ({} in all, {} written as DetectedIssues)</caption><thead><tr><th>flag</th>{}</tr></thead><tbody>",
        human_number(r.flags.total as f64),
        human_number(r.flags.written_as_detected_issues as f64),
        severities
            .iter()
            .map(|s| format!("<th class=\"num\">{s}</th>"))
            .collect::<String>()
    )?;
    for (code, by) in &r.flags.by_code {
        let label = FlagCode::ALL
            .into_iter()
            .find(|f| f.code() == *code)
            .map_or(*code, flag_label);
        write!(out, "<tr><td>{}</td>", escape(label))?;
        for s in severities {
            write!(
                out,
                "<td class=\"num\">{}</td>",
                human_number(by.get(s).copied().unwrap_or(0) as f64)
            )?;
        }
        writeln!(out, "</tr>")?;
    }
    writeln!(out, "</tbody></table></div>")
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
            escape(
                FlagCode::ALL
                    .into_iter()
                    .find(|f| f.code() == t.code)
                    .map(flag_label)
                    .unwrap_or(&t.code)
            ),
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

/// A patient's left-out reason in words ("no HCC diagnosis"), from its summary key.
fn patient_left_out_words(key: &str) -> String {
    crate::domain::LeftOutReason::ALL
        .into_iter()
        .find(|r| r.key() == key)
        .map_or_else(|| key.replace('_', " "), |r| r.label().to_owned())
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
