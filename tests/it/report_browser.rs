//! The report as a person uses it, in Debian's chromium over the DevTools protocol (`cdp`):
//! search, two filters, a keyboard sort, a patient opened, a reload from the URL fragment, the
//! print of the patients shown, and axe-core finding no serious or critical violation.
//! `TMM_TEST_UPDATE_SCREENSHOTS=1` writes docs/screenshots/{worklist,patient}.png for the README.

use crate::cdp::{chromium, Browser};
use crate::helpers::read;
use crate::report::{demo_named, report};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const SEED: &str = "demo-01-seed-partial-response";

/// `report-flagged-patients.csv`: the rows the page must show, in the report's order.
fn rows(out: &Path) -> Vec<Vec<String>> {
    csv::Reader::from_reader(read(out, "report-flagged-patients.csv").as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

fn shown_ids(browser: &mut Browser) -> Vec<String> {
    let ids = browser
        .eval("Array.from(document.querySelectorAll('#worklist-rows tr')).map(r => r.dataset.id)");
    serde_json::from_value(ids).unwrap()
}

fn count_text(browser: &mut Browser) -> String {
    browser
        .eval("document.getElementById('count').textContent")
        .as_str()
        .unwrap()
        .to_owned()
}

/// axe-core's serious and critical violations on the page as it is, or `None` when axe-core is
/// not installed (tests/browser: `npm ci`) and not required.
fn axe_violations(browser: &mut Browser) -> Option<Vec<String>> {
    axe_violations_where(browser, "v.impact === 'serious' || v.impact === 'critical'")
}

/// axe-core's violations of one rule, whatever their impact.
fn axe_rule_violations(browser: &mut Browser, rule: &str) -> Option<Vec<String>> {
    axe_violations_where(browser, &format!("v.id === '{rule}'"))
}

/// axe-core's violations `v` for which the JavaScript condition holds.
fn axe_violations_where(browser: &mut Browser, condition: &str) -> Option<Vec<String>> {
    let axe = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser/node_modules/axe-core/axe.min.js");
    let Ok(source) = std::fs::read_to_string(&axe) else {
        let required = std::env::var("TMM_TEST_REQUIRE_BROWSER").is_ok_and(|v| v == "1")
            || std::env::var("CI").is_ok_and(|v| v == "1" || v == "true");
        assert!(!required, "axe-core missing: run npm ci in tests/browser");
        eprintln!(
            "note: axe-core not installed (npm ci in tests/browser): accessibility not checked"
        );
        return None;
    };
    if browser.eval("typeof axe") != json!("object") {
        browser.eval(&format!("{source};\ntrue"));
    }
    let found = browser.eval(&format!(
        "axe.run(document, {{resultTypes: ['violations']}}).then(r => r.violations\
         .filter(v => {condition})\
         .map(v => v.id + ' (' + v.impact + '): ' + v.nodes.map(n => n.target.join(' ')).slice(0, 5).join(', ')))"
    ));
    Some(serde_json::from_value(found).unwrap())
}

fn save_screenshot(browser: &mut Browser, name: &str) {
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    if std::env::var("TMM_TEST_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }
}

#[test]
fn a_clinician_searches_filters_sorts_opens_a_patient_reloads_and_prints() {
    let Some(chromium) = chromium() else { return };
    let folder = demo_named();
    let out = report(folder.path());
    let all = rows(out.path());
    let page = out.path().join("report.html");
    let mut browser = Browser::launch(&chromium);
    browser.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
    );
    browser.open(&format!("file://{}", page.display()));

    // Everyone, the first page of 50, in the report's order.
    assert_eq!(
        count_text(&mut browser),
        format!("{0} of {0} flagged patients shown", all.len())
    );
    let first_page: Vec<String> = all.iter().take(50).map(|r| r[0].clone()).collect();
    assert_eq!(shown_ids(&mut browser), first_page);
    save_screenshot(&mut browser, "worklist.png");
    if let Some(violations) = axe_violations(&mut browser) {
        assert_eq!(violations, Vec::<String>::new(), "worklist");
    }

    // Typing a name finds the patient, by name and with the MRN in the row.
    browser.eval("document.getElementById('f-q').focus()");
    browser.type_text("ann ex");
    assert_eq!(shown_ids(&mut browser), [SEED]);
    let row = browser.eval("document.querySelector('#worklist-rows tr').textContent");
    assert!(
        row.as_str().unwrap().contains("Ann Example")
            && row.as_str().unwrap().contains("MRN-778899"),
        "{row}"
    );
    browser.eval("document.getElementById('clear-filters').click()");
    assert_eq!(shown_ids(&mut browser), first_page);

    // Two filters: high severity, and a marker rise among the flags.
    for (id, value) in [("f-sev", "high"), ("f-flag", "marker-rise")] {
        browser.eval(&format!(
            "(() => {{ const s = document.getElementById('{id}'); s.value = '{value}'; \
             s.dispatchEvent(new Event('change')); return true; }})()"
        ));
    }
    let expected: Vec<String> = all
        .iter()
        .filter(|r| r[2] == "high" && r[4].contains("marker-rise"))
        .map(|r| r[0].clone())
        .collect();
    assert!(expected.len() > 1, "the demo has several high marker rises");
    assert_eq!(shown_ids(&mut browser), expected);
    assert_eq!(
        count_text(&mut browser),
        format!("{} of {} flagged patients shown", expected.len(), all.len())
    );
    let filter_ms = browser.eval("window.tmmLastFilterMs").as_f64().unwrap();
    assert!(filter_ms >= 0.0);

    // Sort by TARE date with the keyboard: the column's button, focused, Enter.
    browser.eval("document.querySelector(\"th[data-sort='tare'] button\").focus()");
    browser.press_enter();
    assert_eq!(
        browser.eval("document.querySelector(\"th[data-sort='tare']\").getAttribute('aria-sort')"),
        json!("ascending")
    );
    let tares: Vec<String> = serde_json::from_value(browser.eval(
        "Array.from(document.querySelectorAll('#worklist-rows tr')).map(r => r.cells[7].textContent)",
    ))
    .unwrap();
    let mut sorted = tares.clone();
    sorted.sort();
    assert_eq!(tares, sorted);
    let mut sorted_ids = shown_ids(&mut browser);
    assert_ne!(sorted_ids, expected, "the sort changed nothing in the demo");
    sorted_ids.sort();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(sorted_ids, expected_sorted);
    let order = shown_ids(&mut browser);
    let hash = browser.eval("location.hash");
    assert_eq!(
        hash,
        json!("#/?sev=high&flag=marker-rise&sort=tare&dir=asc")
    );

    // Open the first patient shown: chart panels, their flags in words, values with units.
    let opened = order[0].clone();
    browser.eval("document.querySelector('#worklist-rows a.open').click()");
    let patient = all.iter().find(|r| r[0] == opened).unwrap();
    let flag_count = patient[4].split("; ").count();
    let view = |browser: &mut Browser| -> Value {
        browser.eval(
            "(() => { const v = document.getElementById('patient-view'); return { hidden: v.hidden, \
             worklist: document.getElementById('worklist').hidden, id: v.querySelector('article').dataset.id, \
             charts: v.querySelectorAll('svg.chart').length, flags: v.querySelectorAll('ul.flags li').length, \
             units: Array.from(v.querySelectorAll('table.values td:nth-child(5)')).map(c => c.textContent) }; })()",
        )
    };
    let shown = view(&mut browser);
    assert_eq!(shown["hidden"], json!(false));
    assert_eq!(shown["worklist"], json!(true));
    assert_eq!(shown["id"], json!(opened));
    assert!(shown["charts"].as_u64().unwrap() >= 1);
    assert_eq!(shown["flags"], json!(flag_count));
    assert!(shown["units"]
        .as_array()
        .unwrap()
        .iter()
        .all(|u| ["mAU/mL", "ng/mL", "%", "g/L", "umol/L"].contains(&u.as_str().unwrap())));
    save_screenshot(&mut browser, "patient.png");
    if let Some(violations) = axe_violations(&mut browser) {
        assert_eq!(violations, Vec::<String>::new(), "patient view");
    }
    // Headings in order (h2 patient, h3 its flags and values), a moderate rule.
    if let Some(violations) = axe_rule_violations(&mut browser, "heading-order") {
        assert_eq!(violations, Vec::<String>::new(), "patient view's headings");
    }

    // A reload from the fragment reopens the patient, and behind it the same worklist.
    browser.reload();
    assert_eq!(view(&mut browser), shown);
    browser.eval("document.getElementById('back').click()");
    assert_eq!(shown_ids(&mut browser), order);
    assert_eq!(
        browser.eval(
            "[document.getElementById('f-sev').value, document.getElementById('f-flag').value]"
        ),
        json!(["high", "marker-rise"])
    );

    // "Print the patients shown": one page each.
    browser.eval("window.print = () => {}; document.getElementById('print-shown').click(); true");
    assert_eq!(
        browser.eval("document.querySelectorAll('#print-area .print-page').length"),
        json!(order.len())
    );
    let pdf = browser.print_to_pdf();
    assert!(pdf.starts_with(b"%PDF"), "not a PDF");
    assert_eq!(
        count_pages(&pdf),
        order.len(),
        "one PDF page per patient shown"
    );
    assert_eq!(browser.problems, Vec::<String>::new());
}

/// Page objects of a PDF (`/Type /Page`, not `/Pages`).
fn count_pages(pdf: &[u8]) -> usize {
    let text = String::from_utf8_lossy(pdf);
    text.match_indices("/Type /Page")
        .filter(|(at, m)| !text[at + m.len()..].starts_with('s'))
        .count()
}

/// Per patient, the response of `marker` in the patient's latest episode, from the run's
/// `markers.csv` (rows are in episode order).
fn latest_responses(folder: &Path, marker: &str) -> std::collections::HashMap<String, String> {
    let run = crate::helpers::job_ok("run", &["--source-dir", folder.to_str().unwrap()]);
    let text = read(run.path(), "markers.csv");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().clone();
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (patient, series, response) = (column("patient_id"), column("marker"), column("response"));
    let mut latest = std::collections::HashMap::new();
    for row in reader.records().map(Result::unwrap) {
        if &row[series] == marker {
            latest.insert(row[patient].to_owned(), row[response].to_owned());
        }
    }
    latest
}

#[test]
fn a_flag_and_a_marker_chosen_together_mean_that_flag_on_that_marker() {
    let Some(chromium) = chromium() else { return };
    let folder = demo_named();
    let out = report(folder.path());
    let all = rows(out.path());
    let run = crate::helpers::job_ok("run", &["--source-dir", folder.path().to_str().unwrap()]);
    let flags = read(run.path(), "flags.csv");
    let mut reader = csv::Reader::from_reader(flags.as_bytes());
    let flagged: Vec<(String, String, String)> = reader
        .records()
        .map(Result::unwrap)
        .map(|r| (r[0].to_owned(), r[2].to_owned(), r[3].to_owned()))
        .collect();
    let has = |id: &str, flag: &str, marker: &str| {
        flagged
            .iter()
            .any(|(p, f, m)| p == id && f == flag && (marker.is_empty() || m == marker))
    };
    let expected: Vec<String> = all
        .iter()
        .map(|r| r[0].clone())
        .filter(|id| has(id, "marker-rise", "afp"))
        .collect();
    assert!(!expected.is_empty(), "the demo has an AFP rise");
    // A patient whose rise is on PIVKA-II, with another flag on AFP, must not be shown.
    assert!(all.iter().any(|r| !has(&r[0], "marker-rise", "afp")
        && has(&r[0], "marker-rise", "pivka2")
        && flagged.iter().any(|(p, _, m)| p == &r[0] && m == "afp")));
    let page = format!("file://{}", out.path().join("report.html").display());
    let mut browser = Browser::launch(&chromium);
    browser.open(&format!("{page}#/?flag=marker-rise&marker=afp"));
    assert_eq!(shown_ids(&mut browser), expected);
    assert_eq!(browser.problems, Vec::<String>::new());
}

#[test]
fn a_worklist_date_and_a_value_with_its_unit_never_break_across_lines() {
    let Some(chromium) = chromium() else { return };
    let out = report(demo_named().path());
    let page = format!("file://{}", out.path().join("report.html").display());
    let mut browser = Browser::launch(&chromium);
    browser.open(&page);
    let mut white_space = |selector: &str| {
        browser.eval(&format!(
            "getComputedStyle(document.querySelector('#worklist-rows {selector}')).whiteSpace"
        ))
    };
    assert_eq!(white_space("td.date"), json!("nowrap"));
    assert_eq!(white_space("span.value"), json!("nowrap"));
}

#[test]
fn a_marker_and_a_response_chosen_together_mean_that_markers_response_and_back_returns_to_the_list()
{
    let Some(chromium) = chromium() else { return };
    let folder = demo_named();
    let out = report(folder.path());
    let all = rows(out.path());
    let afp = latest_responses(folder.path(), "afp");
    let expected: Vec<String> = all
        .iter()
        .map(|r| r[0].clone())
        .filter(|id| afp.get(id).is_some_and(|r| r == "PD"))
        .collect();
    assert!(!expected.is_empty(), "the demo has an AFP progression");
    // A patient whose PIVKA-II progresses while AFP does not must not be shown.
    assert!(all
        .iter()
        .any(|r| !expected.contains(&r[0]) && afp.contains_key(&r[0])));
    let page = format!("file://{}", out.path().join("report.html").display());
    let mut browser = Browser::launch(&chromium);
    browser.open(&format!("{page}#/?marker=afp&resp=PD"));
    assert_eq!(shown_ids(&mut browser), expected);

    // Values no control offers (a day no calendar has included) are dropped, not applied
    // unseen; nothing throws.
    // (A new fragment on the same page is no new load: reload to read it as a link would.)
    browser.open(&format!(
        "{page}#/?sort=__proto__&sev=bogus&flag=toString&from=2026-99-99&to=2026-02-31"
    ));
    browser.reload();
    assert_eq!(
        count_text(&mut browser),
        format!("{0} of {0} flagged patients shown", all.len())
    );

    // A patient opened is a step in the browser's history: Back shows the list again, with
    // the keyboard on the patient's link.
    browser.eval("document.querySelector('#worklist-rows a.open').click(); true");
    browser.wait_for("!document.getElementById('patient-view').hidden");
    browser.eval("history.back(); true");
    browser.wait_for("document.getElementById('patient-view').hidden");
    assert_eq!(
        browser.eval("document.activeElement.classList.contains('open')"),
        json!(true)
    );
    assert_eq!(browser.problems, Vec::<String>::new());
}

/// A generated cohort of `patients` (13 visits of four labs each: 52 values a patient) and
/// its report.
fn generated_report(patients: usize) -> (tempfile::TempDir, crate::helpers::OutDir) {
    let cohort = tempfile::tempdir().unwrap();
    crate::helpers::binary()
        .args([
            "generate",
            "--patients",
            &patients.to_string(),
            "--seed",
            "11",
        ])
        .args(["--as-of", "2026-11-01", "--out"])
        .arg(cohort.path())
        .assert()
        .success();
    let out = report(cohort.path());
    (cohort, out)
}

/// How many values the open patient view lists.
fn values_listed(browser: &mut Browser) -> u64 {
    browser
        .eval("document.querySelectorAll('#patient-view table.values tbody tr').length")
        .as_u64()
        .unwrap()
}

#[test]
fn a_patient_with_52_values_prints_on_one_page() {
    let Some(chromium) = chromium() else { return };
    let (_cohort, out) = generated_report(12);
    let html = read(out.path(), "report.html");
    // A patient whose chart holds all 52 values (four series drawn, 13 visits each).
    let full = crate::report::page_rows(&html)
        .into_iter()
        .find(|row| {
            let detail = crate::report::detail_of(&html, row);
            detail["series"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["points"].as_array().unwrap().len())
                .sum::<usize>()
                == 52
        })
        .expect("a flagged patient with 52 values charted");
    let id = full["id"].as_str().unwrap();
    let mut browser = Browser::launch(&chromium);
    browser.open(&format!(
        "file://{}#/?p={id}",
        out.path().join("report.html").display()
    ));
    browser.wait_for("!document.getElementById('patient-view').hidden");
    assert_eq!(values_listed(&mut browser), 52);
    let pdf = browser.print_to_pdf();
    assert_eq!(count_pages(&pdf), 1, "one page for one patient");
    assert_eq!(browser.problems, Vec::<String>::new());
}

#[test]
fn printing_more_than_200_patients_shown_prints_the_first_200_and_says_so() {
    let Some(chromium) = chromium() else { return };
    let (_cohort, out) = generated_report(300);
    let shown = rows(out.path()).len();
    assert!(shown > 200, "{shown} flagged patients: too few for the cap");
    let mut browser = Browser::launch(&chromium);
    browser.open(&format!(
        "file://{}",
        out.path().join("report.html").display()
    ));
    browser.eval("window.print = () => {}; document.getElementById('print-shown').click(); true");
    assert_eq!(
        browser.eval("document.querySelectorAll('#print-area .print-page').length"),
        json!(200)
    );
    let note = format!(
        "Printing the first 200 of the {shown} patients shown: at most 200 are printed at a \
         time. Narrow the search or the filters to print the others."
    );
    assert_eq!(
        browser.eval("document.getElementById('print-note').textContent"),
        json!(note)
    );
    assert_eq!(
        browser.eval("document.querySelector('#print-area .print-note').textContent"),
        json!(note)
    );
    // Every printed page says when its figures were true.
    assert_eq!(
        browser.eval(
            "Array.from(document.querySelectorAll('#print-area .print-page')).filter(p => \
             p.querySelector('.print-as-of').textContent === 'TARE marker audit report, as of 2026-11-01').length"
        ),
        json!(200)
    );
    assert_eq!(browser.problems, Vec::<String>::new());
}

#[test]
fn patients_without_an_mrn_sort_last_whichever_the_direction() {
    let Some(chromium) = chromium() else { return };
    let folder = demo_named();
    let out = report(folder.path());
    let page = format!("file://{}", out.path().join("report.html").display());
    let mut browser = Browser::launch(&chromium);
    for dir in ["asc", "desc"] {
        browser.open(&format!("{page}#/?sort=mrn&dir={dir}"));
        browser.reload();
        let ids = shown_ids(&mut browser);
        assert!(ids.len() > 1, "{ids:?}");
        // The one patient with an MRN (MRN-778899) comes before the blanks.
        assert_eq!(ids[0], "demo-01-seed-partial-response", "{dir}");
    }
    assert_eq!(browser.problems, Vec::<String>::new());
}

#[test]
fn back_from_a_patient_opened_by_a_link_puts_the_keyboard_on_its_row() {
    let Some(chromium) = chromium() else { return };
    let folder = demo_named();
    let out = report(folder.path());
    let mut browser = Browser::launch(&chromium);
    browser.open(&format!(
        "file://{}#/?p=demo-01-seed-partial-response",
        out.path().join("report.html").display()
    ));
    browser.reload();
    browser.wait_for("!document.getElementById('patient-view').hidden");
    browser.eval("document.getElementById('back').click(); true");
    browser.wait_for("document.getElementById('patient-view').hidden");
    assert_eq!(
        browser.eval("document.activeElement.dataset.id || document.activeElement.id"),
        json!("demo-01-seed-partial-response")
    );
    assert_eq!(browser.problems, Vec::<String>::new());
}

/// The seed patient's latest PIVKA-II, 6,088 mAU/mL in the demo, sent with four decimals.
fn demo_with_a_precise_value() -> tempfile::TempDir {
    crate::report::demo_edited(|resource| {
        if resource["id"] == "demo-01-seed-partial-response-obs7" {
            resource["valueQuantity"]["value"] = json!(6088.0847);
        }
    })
}

#[test]
fn one_value_reads_the_same_in_the_sentence_csv_worklist_values_table_and_tooltip() {
    let Some(chromium) = chromium() else { return };
    let folder = demo_with_a_precise_value();
    let run = crate::helpers::job_ok("run", &["--source-dir", folder.path().to_str().unwrap()]);
    let markers = read(run.path(), "markers.csv");
    let seed_row = markers
        .lines()
        .find(|l| l.starts_with(&format!("{SEED},")) && l.contains(",pivka2,"))
        .unwrap();
    // The CSV: the number as sent, no separator (latest and nadir).
    assert_eq!(
        seed_row.matches("6088.0847,2026-10-20,").count(),
        2,
        "{seed_row}"
    );
    let flags = read(run.path(), "flags.csv");
    assert!(
        flags.contains("to 6,088.0847 mAU/mL after TARE (2026-10-20)"),
        "{flags}"
    );

    let out = report(folder.path());
    let mut browser = Browser::launch(&chromium);
    browser.open(&format!(
        "file://{}#/?q={SEED}",
        out.path().join("report.html").display()
    ));
    let row = browser.eval("document.querySelector('#worklist-rows tr').cells[5].textContent");
    assert_eq!(
        row,
        json!("PIVKA-II 6,088.0847 mAU/mL; Albumin 36 g/L; Bilirubin 16 umol/L")
    );
    browser.eval("document.querySelector('#worklist-rows a.open').click(); true");
    browser.wait_for("!document.getElementById('patient-view').hidden");
    let sentence =
        browser.eval("document.querySelector('#patient-view ul.flags .detail').textContent");
    assert!(
        sentence
            .as_str()
            .unwrap()
            .contains("to 6,088.0847 mAU/mL after TARE (2026-10-20)"),
        "{sentence}"
    );
    let cells = browser.eval(
        "Array.from(document.querySelectorAll('#patient-view table.values tr'))\
         .filter(r => r.cells[1].textContent === '2026-10-20' && r.cells[0].textContent === 'PIVKA-II')\
         .map(r => [r.cells[3].textContent, r.cells[4].textContent])",
    );
    assert_eq!(cells, json!([["6,088.0847", "mAU/mL"]]));
    // The tooltip: the value as sent, its unit and its date.
    let tooltips = browser.eval(
        "Array.from(document.querySelectorAll('#patient-view svg.chart .point title'))\
         .map(t => t.textContent).filter(t => t.includes('2026-10-20') && t.startsWith('PIVKA-II'))",
    );
    assert_eq!(
        tooltips,
        json!(["PIVKA-II 6,088.0847 mAU/mL on 2026-10-20 (day 122): nadir: evidence of a flag"])
    );
    assert_eq!(browser.problems, Vec::<String>::new());
}

/// One patient whose PIVKA-II spans the extremes: 10^8 mAU/mL at baseline (the plausible
/// maximum), then 0, 0.0000002 and 50 after TARE.
fn extremes_report() -> crate::helpers::OutDir {
    let day = |d: i64| (crate::helpers::index() + chrono::Duration::days(d)).to_string();
    let subject = json!({"reference": "Patient/extremes"});
    let mut resources = vec![
        json!({"resourceType": "Patient", "id": "extremes", "birthDate": "1955-01-01"}),
        json!({"resourceType": "Condition", "id": "extremes-hcc", "subject": subject,
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C22.0"}]}}),
        json!({"resourceType": "Procedure", "id": "extremes-tare", "status": "completed",
            "subject": subject, "performedDateTime": day(0),
            "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "79445"}]}}),
    ];
    for (n, (d, value)) in [
        (-2, json!(100000000)),
        (30, json!(0)),
        (60, json!(0.0000002)),
        (90, json!(50)),
    ]
    .into_iter()
    .enumerate()
    {
        resources.push(
            json!({"resourceType": "Observation", "id": format!("extremes-obs{n}"),
            "status": "final", "subject": subject, "effectiveDateTime": day(d),
            "code": {"coding": [{"system": "http://loinc.org", "code": "34444-0"}]},
            "valueQuantity": {"value": value, "unit": "mAU/mL"}}),
        );
    }
    let folder = crate::helpers::write_folder(&resources);
    report(folder.path())
}

#[test]
fn a_log_chart_labels_readable_decades_unclipped_and_marks_values_below_its_floor() {
    let Some(chromium) = chromium() else { return };
    let out = extremes_report();
    let mut browser = Browser::launch(&chromium);
    browser.open(&format!(
        "file://{}#/?p=extremes",
        out.path().join("report.html").display()
    ));
    browser.wait_for("!document.getElementById('patient-view').hidden");
    let chart = "document.querySelector('#patient-view svg.chart')";
    // Tick labels: the text right-aligned against the axis, top to bottom.
    let ticks = browser.eval(&format!(
        "Array.from({chart}.querySelectorAll('text[text-anchor=end]')).filter(t => !t.textContent.startsWith('days'))\
         .map(t => [t.textContent, t.getBBox().x >= 0])"
    ));
    assert_eq!(
        ticks,
        json!([
            ["100,000,000", true],
            ["1,000,000", true],
            ["10,000", true],
            ["100", true]
        ])
    );
    let tooltips = browser.eval(&format!(
        "Array.from({chart}.querySelectorAll('.point title')).map(t => t.textContent)"
    ));
    let date = |d: i64| (crate::helpers::index() + chrono::Duration::days(d)).to_string();
    assert_eq!(
        tooltips,
        json!([
            format!("PIVKA-II 100,000,000 mAU/mL on {} (day -2): baseline: evidence of a flag", date(-2)),
            format!("PIVKA-II 0 mAU/mL (below the log axis, drawn on its floor) on {} (day 30): nadir: evidence of a flag", date(30)),
            format!("PIVKA-II 0.0000002 mAU/mL (below the log axis, drawn on its floor) on {} (day 60)", date(60)),
            format!("PIVKA-II 50 mAU/mL on {} (day 90): evidence of a flag", date(90)),
        ])
    );
    let legend = browser.eval(&format!("{chart}.textContent"));
    assert!(
        legend
            .as_str()
            .unwrap()
            .contains("below the axis (drawn on its floor)"),
        "{legend}"
    );
    assert_eq!(browser.problems, Vec::<String>::new());
}

#[test]
fn search_ignores_case_and_accents() {
    let Some(chromium) = chromium() else { return };
    let folder = crate::report::demo_edited(|resource| {
        if resource["id"] == SEED && resource["resourceType"] == "Patient" {
            resource["name"] = json!([{"use": "official", "text": "José Núñez Østergaard-Łukasz"}]);
        }
    });
    let out = report(folder.path());
    let mut browser = Browser::launch(&chromium);
    browser.open(&format!(
        "file://{}",
        out.path().join("report.html").display()
    ));
    // Letters that do not decompose (Ø, Ł) are spelled out too.
    for typed in ["jose nunez", "NÚÑEZ", "José", "ostergaard", "lukasz"] {
        browser.eval("(() => { const q = document.getElementById('f-q'); q.value = ''; q.focus(); return true; })()");
        browser.type_text(typed);
        assert_eq!(shown_ids(&mut browser), [SEED], "{typed}");
    }
    assert_eq!(browser.problems, Vec::<String>::new());
}

#[test]
fn printing_when_no_patient_is_shown_says_so_and_prints_nothing() {
    let Some(chromium) = chromium() else { return };
    let out = report(&crate::helpers::demo());
    let mut browser = Browser::launch(&chromium);
    browser.open(&format!(
        "file://{}#/?q=zzzz-no-such-patient",
        out.path().join("report.html").display()
    ));
    browser.reload();
    assert_eq!(shown_ids(&mut browser), Vec::<String>::new());
    browser.eval(
        "window.printed = 0; window.print = () => { window.printed += 1; }; \
         document.getElementById('print-shown').click(); true",
    );
    assert_eq!(browser.eval("window.printed"), json!(0));
    assert_eq!(
        browser.eval("document.getElementById('print-note').textContent"),
        json!("No patient is shown: nothing to print. Clear the search or the filters first.")
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('#print-area .print-page').length"),
        json!(0)
    );
    assert_eq!(browser.problems, Vec::<String>::new());
}

#[test]
fn a_long_name_wraps_in_the_worklist_instead_of_widening_it() {
    let Some(chromium) = chromium() else { return };
    let long = "Maximiliana".repeat(20);
    let folder = crate::report::demo_edited(|resource| {
        if resource["id"] == SEED && resource["resourceType"] == "Patient" {
            resource["name"] = json!([{"text": long}]);
        }
    });
    let out = report(folder.path());
    let mut browser = Browser::launch(&chromium);
    browser.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
    );
    browser.open(&format!(
        "file://{}#/?q={SEED}",
        out.path().join("report.html").display()
    ));
    assert_eq!(shown_ids(&mut browser), [SEED]);
    let widths = browser.eval(
        "[document.getElementById('worklist-table').getBoundingClientRect().right, \
         document.documentElement.clientWidth, document.documentElement.scrollWidth]",
    );
    let [right, client, scroll] = [0, 1, 2].map(|i| widths[i].as_f64().unwrap());
    assert!(right <= client && scroll <= client, "{widths}");
    assert_eq!(browser.problems, Vec::<String>::new());
}

#[test]
fn the_baseline_square_and_nadir_diamond_show_around_a_flag_ring() {
    let Some(chromium) = chromium() else { return };
    // The baseline (day -2) and the nadir (day 30) are both evidence of a flag: ringed.
    let out = extremes_report();
    let mut browser = Browser::launch(&chromium);
    browser.open(&format!(
        "file://{}#/?p=extremes",
        out.path().join("report.html").display()
    ));
    browser.wait_for("!document.getElementById('patient-view').hidden");
    // What the eye sees on the mark's left side, at the height of the point, is the mark
    // itself, not the ring (a 12-pixel square sat under a ring of radius 7).
    let topmost = browser.eval(
        "(() => { const svg = document.querySelector('#patient-view svg.chart'); \
         return ['rect.baseline', 'path.nadir'].map(sel => { const mark = svg.querySelector(sel), box = mark.getBBox(); \
         const at = new DOMPoint(box.x, box.y + box.height / 2).matrixTransform(mark.getScreenCTM()); \
         const hit = document.elementFromPoint(at.x, at.y); \
         return [sel, hit && hit.matches(sel)]; }); })()",
    );
    assert_eq!(
        topmost,
        json!([["rect.baseline", true], ["path.nadir", true]])
    );
    assert_eq!(browser.problems, Vec::<String>::new());
}
