//! The audit report on the demo cohort: order, escaping, spreadsheet safety, file modes,
//! `--deidentify`. The page in a real browser: `report_browser.rs`.

use crate::helpers::{binary, demo, job_ok, read};

use std::path::Path;

pub(crate) fn report(source: &Path) -> crate::helpers::OutDir {
    job_ok("report", &["--source-dir", source.to_str().unwrap()])
}

/// The demo with every resource passed through `edit`.
pub(crate) fn demo_edited(edit: impl Fn(&mut serde_json::Value)) -> tempfile::TempDir {
    let folder = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(demo()).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let lines: Vec<String> = text
            .lines()
            .map(|line| {
                let Ok(mut resource) = serde_json::from_str::<serde_json::Value>(line) else {
                    return line.to_owned();
                };
                edit(&mut resource);
                resource.to_string()
            })
            .collect();
        std::fs::write(
            folder.path().join(entry.file_name()),
            lines.join("\n") + "\n",
        )
        .unwrap();
    }
    folder
}

/// The demo with the seed patient's name and one of its Observations' notes replaced.
fn demo_with(name: &str, note: &str) -> tempfile::TempDir {
    demo_edited(|resource| {
        if resource["id"] == "demo-01-seed-partial-response"
            && resource["resourceType"] == "Patient"
        {
            resource["name"] = serde_json::json!([{"text": name}]);
        }
        if resource["id"] == "demo-01-seed-partial-response-obs7" {
            resource["note"] = serde_json::json!([{"text": note}]);
        }
    })
}

/// The text of the page's `<script id="ID">` element.
pub(crate) fn script_text<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("<script id=\"{id}\""))
        .unwrap_or_else(|| panic!("no script {id}"));
    let text = &html[start..];
    &text[text.find('>').unwrap() + 1..text.find("</script>").unwrap()]
}

/// The worklist's rows, as the page parses them at load.
pub(crate) fn page_rows(html: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(script_text(html, "worklist-data")).unwrap()
}

/// A row's details, found as the page finds them: the row's `d` is `[offset, length]` in
/// UTF-16 code units of the details' text.
pub(crate) fn detail_of(html: &str, row: &serde_json::Value) -> serde_json::Value {
    let text: Vec<u16> = script_text(html, "patient-details")
        .encode_utf16()
        .collect();
    let (offset, length) = (
        row["d"][0].as_u64().unwrap() as usize,
        row["d"][1].as_u64().unwrap() as usize,
    );
    serde_json::from_str(&String::from_utf16(&text[offset..offset + length]).unwrap()).unwrap()
}

#[test]
fn each_row_finds_its_own_details_in_utf16_offsets_past_text_outside_the_bmp() {
    // A note with characters of two and four UTF-8 bytes (one and two UTF-16 units) on the
    // seed patient, whose details come before others'.
    let folder = demo_with("José Núñez 👩‍⚕️", "naïve 😀 résultat");
    let out = report(folder.path());
    let html = read(out.path(), "report.html");
    let rows = page_rows(&html);
    assert!(rows.len() > 10);
    let seed = rows
        .iter()
        .position(|r| r["id"] == "demo-01-seed-partial-response")
        .unwrap();
    assert!(
        seed + 1 < rows.len(),
        "the seed patient is not the last row"
    );
    for row in &rows {
        let detail = detail_of(&html, row);
        // Each detail holds its own patient's flags: the row's codes and markers, in order
        // (a line off would start mid-JSON or be another patient's). A row's flag is
        // [code, marker?], a detail's [severity, code, marker or "", ...].
        let of_detail: Vec<serde_json::Value> = detail["flags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| match f[2].as_str().unwrap() {
                "" => serde_json::json!([f[1]]),
                marker => serde_json::json!([f[1], marker]),
            })
            .collect();
        assert_eq!(serde_json::json!(of_detail), row["flags"], "{}", row["id"]);
    }
    let notes = detail_of(&html, &rows[seed])["series"].to_string();
    assert!(notes.contains("naïve 😀 résultat"), "{notes}");
}

/// The demo with the seed patient named "Ann Example", given the MRN `MRN-778899`, and a note
/// "seen by Dr Who" on one of its Observations.
pub(crate) fn demo_named() -> tempfile::TempDir {
    let folder = demo_with("Ann Example", "seen by Dr Who");
    let patients = folder.path().join("Patient.ndjson");
    let text = std::fs::read_to_string(&patients).unwrap();
    let text = text.replace(
        "\"id\":\"demo-01-seed-partial-response\"",
        "\"id\":\"demo-01-seed-partial-response\",\"identifier\":[{\"system\":\"urn:mrn\",\"value\":\"MRN-778899\"}]",
    );
    assert!(text.contains("MRN-778899"), "the fixture changed shape");
    std::fs::write(&patients, text).unwrap();
    folder
}

#[test]
fn flagged_patients_come_most_severe_then_most_recent_first_each_with_a_chart() {
    let out = report(&demo());
    let rows: Vec<Vec<String>> =
        csv::Reader::from_reader(read(out.path(), "report-flagged-patients.csv").as_bytes())
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect();
    let rank = |s: &str| match s {
        "high" => 3,
        "moderate" => 2,
        _ => 1,
    };
    for pair in rows.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            (rank(&a[2]), &a[3]) >= (rank(&b[2]), &b[3]),
            "{a:?} before {b:?}"
        );
    }
    // Every patient with a flag in the run's flags.csv, once.
    let run = crate::helpers::out_dir();
    binary()
        .args(["run", "--source-dir"])
        .arg(demo())
        .args(["--as-of", "2026-11-01", "--out"])
        .arg(run.path())
        .assert()
        .success();
    let flagged: std::collections::BTreeSet<String> =
        csv::Reader::from_reader(read(run.path(), "flags.csv").as_bytes())
            .records()
            .map(|r| r.unwrap()[0].to_owned())
            .collect();
    let listed: std::collections::BTreeSet<String> = rows.iter().map(|r| r[0].clone()).collect();
    assert_eq!(listed, flagged);
    let html = read(out.path(), "report.html");
    // Every flagged patient's row and details are in the page's data, in the table's order.
    let data = page_rows(&html);
    let ids: Vec<&str> = data.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, rows.iter().map(|r| r[0].as_str()).collect::<Vec<_>>());
    // The seed case's row and its flag sentence.
    assert!(rows
        .iter()
        .any(|r| r[0] == "demo-01-seed-partial-response" && r[2] == "low"));
    let seed = data
        .iter()
        .find(|p| p["id"] == "demo-01-seed-partial-response")
        .unwrap();
    assert!(detail_of(&html, seed)["flags"][0][5]
        .as_str()
        .unwrap()
        .starts_with("PIVKA-II fell 93.1% from its baseline, 88,000 mAU/mL before TARE"));
    // Self-contained: nothing fetched from elsewhere.
    for external in ["<script src", "<link", "@import", "url(http", "src=\"http"] {
        assert!(!html.contains(external), "{external}");
    }
}

#[test]
fn names_and_notes_are_escaped_in_html_and_neutralised_in_csv() {
    let folder = demo_with(
        "=HYPERLINK(\"http://x\")<script>alert('name')</script>",
        "<script>alert('note')</script> repeat in 4 weeks",
    );
    let out = report(folder.path());
    let html = read(out.path(), "report.html");
    assert!(!html.contains("<script>alert"), "raw markup in the report");
    assert!(html.contains("\\u003cscript\\u003ealert('name')\\u003c/script\\u003e"));
    // In the patients' details too, no `<` at all.
    let details = script_text(&html, "patient-details");
    assert!(!details.contains('<'));
    assert!(details.contains("\\u003cscript\\u003ealert('note')"));
    let csv = read(out.path(), "report-flagged-patients.csv");
    assert!(
        csv.contains("\"'=HYPERLINK(\"\"http://x\"\")<script>alert('name')</script>\""),
        "{csv}"
    );
    #[cfg(unix)]
    for entry in std::fs::read_dir(out.path()).unwrap().flatten() {
        use std::os::unix::fs::PermissionsExt;
        let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{:?}", entry.file_name());
    }
}

#[test]
fn deidentify_without_a_configured_secret_is_refused_with_exit_2_and_writes_nothing() {
    let (out, output) = crate::helpers::job(
        "report",
        &["--source-dir", demo().to_str().unwrap(), "--deidentify"],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--deidentify needs a pseudonym secret: set [report] pseudonym_secret_env"),
        "{stderr}"
    );
    assert!(
        !out.path().exists(),
        "a refused report wrote {:?}",
        out.path()
    );
}

/// Every file of a `report --deidentify` on the demo with the seed patient named and given an
/// MRN, with the secret in `TMM_TEST_SECRET`.
fn deidentified(folder: &Path, secret: &str) -> crate::helpers::OutDir {
    let out = crate::helpers::out_dir();
    let output = binary()
        .args(["report", "--as-of", "2026-11-01", "--deidentify", "--out"])
        .arg(out.path())
        .arg("--source-dir")
        .arg(folder)
        .env("TMM_REPORT__PSEUDONYM_SECRET_ENV", "TMM_TEST_SECRET")
        .env("TMM_TEST_SECRET", secret)
        .output()
        .unwrap();
    crate::helpers::assert_success(&output);
    out
}

fn all_text(dir: &Path) -> String {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn deidentify_replaces_names_ids_and_mrns_with_stable_pseudonyms_and_keeps_dates() {
    let folder = demo_named();
    let plain = report(folder.path());
    let plain_rows = read(plain.path(), "report-flagged-patients.csv");
    assert!(plain_rows.contains("MRN-778899") && plain_rows.contains("Ann Example"));

    let first = deidentified(folder.path(), "a site secret of some length");
    let second = deidentified(folder.path(), "a site secret of some length");
    let other = deidentified(folder.path(), "another secret, also long enough");
    let everything = all_text(first.path());
    for identifying in ["demo-", "Ann Example", "MRN-778899", "Dr Who"] {
        assert!(
            !everything.contains(identifying),
            "{identifying} in the de-identified output"
        );
    }
    let rows = |out: &crate::helpers::OutDir| -> Vec<Vec<String>> {
        csv::Reader::from_reader(read(out.path(), "report-flagged-patients.csv").as_bytes())
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect()
    };
    let (a, b, c) = (rows(&first), rows(&second), rows(&other));
    // Stable with one secret, different with another; pseudonyms shaped as documented.
    assert_eq!(a, b);
    assert!(a.iter().zip(&c).all(|(x, y)| x[0] != y[0]));
    assert!(a
        .iter()
        .all(|r| r[0].starts_with("pt-") && r[0].len() == 15));
    let seed = a.iter().find(|r| r[5].starts_with("mrn-")).unwrap();
    assert_eq!(seed[1], format!("Patient name-{}", &seed[1][13..]));
    // Dates, severities and flags are those of the plain report, row for row.
    let plain: Vec<Vec<String>> = csv::Reader::from_reader(plain_rows.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    let kept = |rows: &[Vec<String>]| -> Vec<(String, String, String, String)> {
        rows.iter()
            .map(|r| (r[2].clone(), r[3].clone(), r[4].clone(), r[6].clone()))
            .collect()
    };
    assert_eq!(kept(&a), kept(&plain));
    assert!(read(first.path(), "report.html").contains("<strong>de-identified</strong>"));
}

#[test]
fn a_deidentified_report_does_not_show_the_folder_it_read() {
    let demo = demo_named();
    let parent = tempfile::tempdir().unwrap();
    // A folder named after the patient whose export it holds.
    let folder = parent.path().join("Smith_John_MRN4455");
    std::fs::create_dir(&folder).unwrap();
    for file in std::fs::read_dir(demo.path()).unwrap().flatten() {
        std::fs::copy(file.path(), folder.join(file.file_name())).unwrap();
    }
    let out = deidentified(&folder, "a site secret of some length");
    let everything = all_text(out.path());
    assert!(!everything.contains("Smith_John_MRN4455"));
    assert!(read(out.path(), "report.html").contains("source a folder (not shown: de-identified)"));
}

/// A CSV file as rows of named cells.
fn records(dir: &Path, name: &str) -> Vec<std::collections::HashMap<String, String>> {
    let text = read(dir, name);
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            headers
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

#[test]
fn programme_csvs_agree_with_the_runs_markers_and_flags() {
    let out = report(&demo());
    let run = crate::helpers::job_ok("run", &["--source-dir", demo().to_str().unwrap()]);
    // The waterfall: one bar per markers.csv row with a baseline above 0 and a nadir, the
    // nadir's change from the baseline, with the row's response.
    let mut expected: Vec<[String; 6]> = records(run.path(), "markers.csv")
        .iter()
        .filter(|r| {
            !r["nadir_value"].is_empty()
                && r["baseline_value"].parse::<f64>().is_ok_and(|b| b > 0.0)
        })
        .map(|r| {
            let (b, n): (f64, f64) = (
                r["baseline_value"].parse().unwrap(),
                r["nadir_value"].parse().unwrap(),
            );
            [
                r["patient_id"].clone(),
                r["marker"].clone(),
                tare_marker_monitor::format::csv_percent((n - b) / b * 100.0),
                r["response"].clone(),
                r["baseline_comparator"].clone(),
                r["nadir_comparator"].clone(),
            ]
        })
        .collect();
    let mut bars: Vec<[String; 6]> = records(out.path(), "report-waterfall.csv")
        .iter()
        .map(|r| {
            [
                r["patient_id"].clone(),
                r["marker"].clone(),
                r["best_pct_change"].clone(),
                r["response"].clone(),
                r["baseline_comparator"].clone(),
                r["nadir_comparator"].clone(),
            ]
        })
        .collect();

    assert!(bars.len() > 20, "{}", bars.len());
    expected.sort();
    bars.sort();
    assert_eq!(bars, expected);
    // Flags per month add up to flags.csv's rows (the report has no date range here).
    let flags = records(run.path(), "flags.csv").len();
    let per_month: usize = records(out.path(), "report-flags-per-month.csv")
        .iter()
        .map(|r| r["count"].parse::<usize>().unwrap())
        .sum();
    assert_eq!(per_month, flags);
    // Surveillance windows follow the schedule; a window's patients with a result are among
    // those due.
    let windows: Vec<(String, String)> = records(out.path(), "report-surveillance.csv")
        .iter()
        .map(|r| {
            let due: usize = r["patients_due"].parse().unwrap();
            let with: usize = r["patients_with_result"].parse().unwrap();
            assert!(with <= due, "{r:?}");
            (r["from_day"].clone(), r["to_day"].clone())
        })
        .collect();
    let schedule: Vec<(String, String)> = [
        (1, 30),
        (31, 60),
        (61, 90),
        (91, 180),
        (181, 270),
        (271, 360),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(windows, schedule);
}

/// One patient: TARE on 2026-01-10 and a staged second TARE on day 40 (one episode), with
/// PIVKA-II results on days -2, 20, 150 and 250; the report as of 2026-11-01 (day 295).
fn staged_tare_report() -> crate::helpers::OutDir {
    use serde_json::json;
    let day = |d: i64| (crate::helpers::index() + chrono::Duration::days(d)).to_string();
    let subject = json!({"reference": "Patient/staged"});
    let mut resources = vec![
        json!({"resourceType": "Patient", "id": "staged", "birthDate": "1955-01-01"}),
        json!({"resourceType": "Condition", "id": "staged-hcc", "subject": subject,
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C22.0"}]}}),
    ];
    for (n, d) in [(1, 0), (2, 40)] {
        resources.push(
            json!({"resourceType": "Procedure", "id": format!("staged-tare{n}"),
            "status": "completed", "subject": subject, "performedDateTime": day(d),
            "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "79445"}]}}),
        );
    }
    for (n, (d, value)) in [(-2, 9000.0), (20, 4000.0), (150, 900.0), (250, 1200.0)]
        .into_iter()
        .enumerate()
    {
        resources.push(
            json!({"resourceType": "Observation", "id": format!("staged-obs{n}"),
            "status": "final", "subject": subject, "effectiveDateTime": day(d),
            "code": {"coding": [{"system": "http://loinc.org", "code": "34444-0"}]},
            "valueQuantity": {"value": value, "unit": "mAU/mL"}}),
        );
    }
    let folder = crate::helpers::write_folder(&resources);
    report(folder.path())
}

#[test]
fn a_staged_tare_of_the_same_episode_does_not_end_the_surveillance_windows() {
    let out = staged_tare_report();
    let windows: Vec<(String, String, String, String)> =
        records(out.path(), "report-surveillance.csv")
            .into_iter()
            .map(|r| {
                (
                    r["from_day"].clone(),
                    r["to_day"].clone(),
                    r["patients_due"].clone(),
                    r["patients_with_result"].clone(),
                )
            })
            .collect();
    let expect = |from: &str, to: &str, due: &str, with: &str| {
        (
            from.to_owned(),
            to.to_owned(),
            due.to_owned(),
            with.to_owned(),
        )
    };
    // The windows up to day 270 have ended by the as-of date (day 295), all in the one
    // episode; the results fall in days 1-30, 91-180 and 181-270.
    assert_eq!(
        windows,
        [
            expect("1", "30", "1", "1"),
            expect("31", "60", "1", "0"),
            expect("61", "90", "1", "0"),
            expect("91", "180", "1", "1"),
            expect("181", "270", "1", "1"),
            expect("271", "360", "0", "0"),
        ]
    );
}

#[test]
fn a_surveillance_window_no_patient_has_reached_says_so_instead_of_0_percent() {
    let html = read(staged_tare_report().path(), "report.html");
    assert!(html.contains("no patient due yet"));
    assert!(!html.contains("0% of 0"));
}

#[test]
fn from_a_folder_every_flagged_patient_is_not_reviewed_in_the_csv() {
    let out = report(&crate::helpers::demo());
    let rows = records(out.path(), "report-flagged-patients.csv");
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r["review_status"] == "not reviewed"));
}

#[test]
fn a_from_date_after_the_as_of_date_is_refused_with_exit_2() {
    let (out, output) = crate::helpers::job(
        "report",
        &[
            "--source-dir",
            crate::helpers::demo().to_str().unwrap(),
            "--from",
            "2026-11-02",
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("--from 2026-11-02 is after the as-of date 2026-11-01"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!out.path().join("report.html").exists());
}

#[test]
fn a_to_date_after_the_as_of_date_lists_no_month_after_it() {
    let (out, output) = crate::helpers::job(
        "report",
        &[
            "--source-dir",
            crate::helpers::demo().to_str().unwrap(),
            "--to",
            "2027-03-01",
        ],
    );
    crate::helpers::assert_success(&output);
    let months: Vec<String> = records(out.path(), "report-flags-per-month.csv")
        .into_iter()
        .map(|row| row["month"].clone())
        .collect();
    assert_eq!(
        months.last().map(String::as_str),
        Some("2026-11"),
        "{months:?}"
    );
}

#[test]
fn a_from_date_after_the_to_date_is_refused_with_exit_2() {
    let (out, output) = crate::helpers::job(
        "report",
        &[
            "--source-dir",
            crate::helpers::demo().to_str().unwrap(),
            "--from",
            "2026-12-01",
            "--to",
            "2026-01-01",
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("--from 2026-12-01 is after --to 2026-01-01"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!out.path().join("report.html").exists());
}

/// `command` on the demo into `out`, with `extra` arguments and the pseudonym secret set.
fn into(out: &Path, command: &str, extra: &[&str]) -> std::process::Output {
    binary()
        .args([command, "--as-of", "2026-11-01", "--out"])
        .arg(out)
        .arg("--source-dir")
        .arg(demo())
        .args(extra)
        .env("TMM_REPORT__PSEUDONYM_SECRET_ENV", "TMM_TEST_SECRET")
        .env("TMM_TEST_SECRET", "a secret of the audit committee")
        .output()
        .unwrap()
}

#[test]
fn a_report_and_a_run_never_replace_each_others_outputs() {
    let out = crate::helpers::out_dir();
    crate::helpers::assert_success(&into(out.path(), "run", &[]));
    let refused = into(out.path(), "report", &[]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains(
            "holds the outputs of `run` (run-summary.json), which this command would replace"
        ),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(out.path().join("markers.csv").is_file());

    let report_out = crate::helpers::out_dir();
    crate::helpers::assert_success(&into(report_out.path(), "report", &[]));
    let refused = into(report_out.path(), "run", &[]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("holds the outputs of `report`"));
    assert!(report_out.path().join("report.html").is_file());
}

#[test]
fn a_deidentified_report_never_joins_identified_ones_in_one_out() {
    let out = crate::helpers::out_dir();
    crate::helpers::assert_success(&into(out.path(), "report", &[]));
    let refused = into(out.path(), "report", &["--deidentify"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains(
            "holds an identified report; a de-identified report gets an --out of its own"
        ),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // The same kind again is the nightly case: accepted.
    crate::helpers::assert_success(&into(out.path(), "report", &[]));

    // And the other way round, in words as plain.
    let other = crate::helpers::out_dir();
    crate::helpers::assert_success(&into(other.path(), "report", &["--deidentify"]));
    let refused = into(other.path(), "report", &[]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains(
            "holds a de-identified report; an identified report gets an --out of its own"
        ),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn patients_left_out_are_counted_in_words() {
    let out = report(&crate::helpers::demo());
    let page = read(out.path(), "report.html");
    for words in [
        "left out: no HCC diagnosis",
        "left out: no TARE procedure",
        "left out: no Patient record",
    ] {
        assert!(page.contains(words), "{words}");
    }
    assert!(!page.contains("no hcc condition"));
}

#[test]
fn an_mrn_is_shown_without_the_white_space_around_it() {
    let folder = demo_edited(|resource| {
        if resource["id"] == "demo-01-seed-partial-response"
            && resource["resourceType"] == "Patient"
        {
            resource["identifier"] =
                serde_json::json!([{"system": "urn:mrn", "value": "  MRN-42 \t"}]);
        }
    });
    let out = report(folder.path());
    let seed = records(out.path(), "report-flagged-patients.csv")
        .into_iter()
        .find(|r| r["patient_id"] == "demo-01-seed-partial-response")
        .unwrap();
    assert_eq!(seed["mrn"], "MRN-42");
}

#[test]
fn flags_per_month_lists_every_month_of_the_range_with_0_for_a_month_without_flags() {
    let out = job_ok(
        "report",
        &[
            "--source-dir",
            demo().to_str().unwrap(),
            "--from",
            "2020-01-15",
            "--to",
            "2026-11-01",
        ],
    );
    let rows = records(out.path(), "report-flags-per-month.csv");
    let mut months: Vec<String> = rows.iter().map(|r| r["month"].clone()).collect();
    months.dedup();
    let calendar: Vec<String> = (2020..=2026)
        .flat_map(|y| (1..=12).map(move |m| format!("{y:04}-{m:02}")))
        .take_while(|m| m.as_str() <= "2026-11")
        .collect();
    assert_eq!(months, calendar);
    // The demo's flags are all identified in 2025-2026: its first month is an empty one.
    assert_eq!(
        read(out.path(), "report-flags-per-month.csv")
            .lines()
            .nth(1),
        Some("2020-01,,,0")
    );
    // Empty months add nothing: the counts still add up to the flags in the range.
    let total: usize = rows
        .iter()
        .map(|r| r["count"].parse::<usize>().unwrap())
        .sum();
    let run = job_ok("run", &["--source-dir", demo().to_str().unwrap()]);
    assert_eq!(total, records(run.path(), "flags.csv").len());
}

#[test]
fn the_identified_or_deidentified_check_reads_the_manifest_only_under_the_output_lock() {
    let out = crate::helpers::out_dir();
    crate::helpers::assert_success(&into(out.path(), "report", &[]));
    // Another run holds the output: the report waits for nothing and reads nothing there; it
    // is refused as locked (7), not judged on a manifest that run may be replacing (2).
    let held = tare_marker_monitor::output::lock_output(out.path()).unwrap();
    let refused = into(out.path(), "report", &["--deidentify"]);
    assert_eq!(refused.status.code(), Some(7));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is in use by another run"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    drop(held);
    let refused = into(out.path(), "report", &["--deidentify"]);
    assert_eq!(refused.status.code(), Some(2));
}

#[test]
fn the_waterfall_rounds_a_half_tenth_away_from_zero_like_every_percentage() {
    use serde_json::json;
    // PIVKA-II 400 before TARE, 401 after: the best change is +0.25% exactly, written 0.3 as
    // markers.csv writes percentages (half away from zero), not 0.2 (half to even).
    let day = |d: i64| (crate::helpers::index() + chrono::Duration::days(d)).to_string();
    let subject = json!({"reference": "Patient/half"});
    let mut resources = vec![
        json!({"resourceType": "Patient", "id": "half", "birthDate": "1955-01-01"}),
        json!({"resourceType": "Condition", "id": "half-hcc", "subject": subject,
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C22.0"}]}}),
        json!({"resourceType": "Procedure", "id": "half-tare", "status": "completed",
            "subject": subject, "performedDateTime": day(0),
            "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "79445"}]}}),
    ];
    for (n, (d, value)) in [(-2, 400), (30, 401)].into_iter().enumerate() {
        resources.push(
            json!({"resourceType": "Observation", "id": format!("half-obs{n}"),
            "status": "final", "subject": subject, "effectiveDateTime": day(d),
            "code": {"coding": [{"system": "http://loinc.org", "code": "34444-0"}]},
            "valueQuantity": {"value": value, "unit": "mAU/mL"}}),
        );
    }
    let folder = crate::helpers::write_folder(&resources);
    let out = report(folder.path());
    let bars = records(out.path(), "report-waterfall.csv");
    assert_eq!(bars.len(), 1);
    assert_eq!(
        (
            bars[0]["baseline"].as_str(),
            bars[0]["nadir"].as_str(),
            bars[0]["best_pct_change"].as_str()
        ),
        ("400", "401", "0.3")
    );
}

#[test]
fn a_possible_reild_chart_draws_twice_the_bilirubin_baseline_as_a_limit() {
    // demo-10: bilirubin 12 umol/L at baseline, 26 on day 30 (at least 2 x 12 and above the
    // ULN of 21).
    let out = report(&demo());
    let html = read(out.path(), "report.html");
    let row = page_rows(&html)
        .into_iter()
        .find(|row| row["id"] == "demo-10-reild-doubling")
        .expect("the REILD doubling scenario is flagged");
    let detail = detail_of(&html, &row);
    let bilirubin = detail["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["m"] == "bilirubin")
        .expect("its bilirubin is charted");
    assert_eq!(bilirubin["rl"], serde_json::json!(24.0));
    // A series of no REILD carries no such limit.
    for series in detail["series"].as_array().unwrap() {
        if series["m"] != "bilirubin" {
            assert!(series.get("rl").is_none(), "{series}");
        }
    }
}

#[test]
fn a_censored_nadir_reaches_the_waterfall_csv_with_its_comparator() {
    // The seed's nadir, 6,088 mAU/mL, reported as "<6088".
    let folder = demo_edited(|resource| {
        if resource["id"] == "demo-01-seed-partial-response-obs7" {
            resource["valueQuantity"]["comparator"] = serde_json::json!("<");
        }
    });
    let out = report(folder.path());
    let seed: Vec<_> = records(out.path(), "report-waterfall.csv")
        .into_iter()
        .filter(|r| r["patient_id"] == "demo-01-seed-partial-response" && r["marker"] == "pivka2")
        .map(|r| {
            [
                r["nadir"].clone(),
                r["nadir_comparator"].clone(),
                r["baseline_comparator"].clone(),
            ]
        })
        .collect();
    assert_eq!(seed, [["6088".to_owned(), "<".to_owned(), String::new()]]);
}

/// One patient: TARE on 2026-01-10 (day 0), PIVKA-II 9,000 mAU/mL on day -2 and 30 on day 20
/// (a complete response: no other flag), nothing since: next due on day 50, overdue from day 65 (2026-03-16), as of 2026-11-01.
fn fell_overdue_folder() -> tempfile::TempDir {
    use serde_json::json;
    let day = |d: i64| (crate::helpers::index() + chrono::Duration::days(d)).to_string();
    let subject = json!({"reference": "Patient/gap"});
    let mut resources = vec![
        json!({"resourceType": "Patient", "id": "gap", "birthDate": "1955-01-01"}),
        json!({"resourceType": "Condition", "id": "gap-hcc", "subject": subject,
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C22.0"}]}}),
        json!({"resourceType": "Procedure", "id": "gap-tare", "status": "completed",
            "subject": subject, "performedDateTime": day(0),
            "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "79445"}]}}),
    ];
    for (n, (d, value)) in [(-2, 9000.0), (20, 30.0)].into_iter().enumerate() {
        resources.push(
            json!({"resourceType": "Observation", "id": format!("gap-obs{n}"),
            "status": "final", "subject": subject, "effectiveDateTime": day(d),
            "code": {"coding": [{"system": "http://loinc.org", "code": "34444-0"}]},
            "valueQuantity": {"value": value, "unit": "mAU/mL"}}),
        );
    }
    crate::helpers::write_folder(&resources)
}

#[test]
fn a_range_finds_the_patient_who_fell_overdue_in_it_not_by_the_last_value() {
    let folder = fell_overdue_folder();
    let source = folder.path().to_str().unwrap();
    let flagged_in = |from: &str, to: &str| -> Vec<String> {
        let out = crate::helpers::job_ok(
            "report",
            &["--source-dir", source, "--from", from, "--to", to],
        );
        records(out.path(), "report-flagged-patients.csv")
            .iter()
            .map(|r| r["patient_id"].clone())
            .collect()
    };
    // Overdue from 2026-03-16: in March, not in January (the last value's month).
    assert_eq!(flagged_in("2026-03-01", "2026-03-31"), ["gap"]);
    assert!(flagged_in("2026-01-01", "2026-01-31").is_empty());
    let out = crate::helpers::job_ok("report", &["--source-dir", source]);
    let months: Vec<(String, String, String)> = records(out.path(), "report-flags-per-month.csv")
        .into_iter()
        .filter(|r| r["count"] != "0")
        .map(|r| (r["month"].clone(), r["flag"].clone(), r["count"].clone()))
        .collect();
    assert_eq!(
        months,
        [(
            "2026-03".to_owned(),
            "surveillance-overdue".to_owned(),
            "1".to_owned()
        )]
    );
}

#[test]
fn a_from_date_before_the_earliest_plausible_date_is_refused_with_exit_2() {
    let (out, output) = crate::helpers::job(
        "report",
        &[
            "--source-dir",
            crate::helpers::demo().to_str().unwrap(),
            "--from",
            "0001-01-01",
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(
            "--from 0001-01-01 is before ingest.earliest_plausible_date 1900-01-01: no result is dated before it"
        ),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!out.path().join("report.html").exists());
}

#[test]
fn a_range_reports_the_flag_counts_of_its_range_everywhere() {
    let out = crate::helpers::job_ok(
        "report",
        &[
            "--source-dir",
            crate::helpers::demo().to_str().unwrap(),
            "--from",
            "2026-09-01",
            "--to",
            "2026-09-30",
        ],
    );
    let per_month: usize = records(out.path(), "report-flags-per-month.csv")
        .iter()
        .map(|r| r["count"].parse::<usize>().unwrap())
        .sum();
    let in_cohort: usize = records(out.path(), "report-cohort.csv")
        .iter()
        .filter(|r| r["section"] == "flags")
        .map(|r| r["count"].parse::<usize>().unwrap())
        .sum();
    let all = report(&crate::helpers::demo());
    let all_flags: usize = records(all.path(), "report-cohort.csv")
        .iter()
        .filter(|r| r["section"] == "flags")
        .map(|r| r["count"].parse::<usize>().unwrap())
        .sum();
    assert!(
        per_month > 0 && per_month < all_flags,
        "{per_month} of {all_flags}"
    );
    assert_eq!(in_cohort, per_month);
}
