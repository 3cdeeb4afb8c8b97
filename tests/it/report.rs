//! The audit report on the demo cohort: order, escaping, spreadsheet safety, file modes, and
//! the page itself in a real browser (Debian's chromium, headless: installed by `.ci/run`).

use crate::helpers::{binary, demo, job_ok, read};

use std::path::{Path, PathBuf};

fn report(source: &Path) -> crate::helpers::OutDir {
    job_ok("report", &["--source-dir", source.to_str().unwrap()])
}

/// The demo with the seed patient's name and one of its Observations' notes replaced.
fn demo_with(name: &str, note: &str) -> tempfile::TempDir {
    let folder = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(demo()).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let lines: Vec<String> = text
            .lines()
            .map(|line| {
                let Ok(mut resource) = serde_json::from_str::<serde_json::Value>(line) else {
                    return line.to_owned();
                };
                if resource["id"] == "demo-01-seed-partial-response"
                    && resource["resourceType"] == "Patient"
                {
                    resource["name"] = serde_json::json!([{"text": name}]);
                }
                if resource["id"] == "demo-01-seed-partial-response-obs7" {
                    resource["note"] = serde_json::json!([{"text": note}]);
                }
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
    // Every flagged patient's chart and flags are in the page's data, in the table's order.
    let data_start = html.find("<script id=\"chart-data\"").unwrap();
    let data = &html[data_start..];
    let data = &data[data.find('>').unwrap() + 1..data.find("</script>").unwrap()];
    let data: Vec<serde_json::Value> = serde_json::from_str(data).unwrap();
    let ids: Vec<&str> = data.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, rows.iter().map(|r| r[0].as_str()).collect::<Vec<_>>());
    // The seed case's row and its flag sentence.
    assert!(rows
        .iter()
        .any(|r| r[0] == "demo-01-seed-partial-response" && r[2] == "low"));
    assert!(data.iter().any(|p| p["flags"][0][5]
        .as_str()
        .unwrap()
        .starts_with("PIVKA-II fell 93.1% from its baseline, 88,000 mAU/mL before TARE")));
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
    assert!(html.contains("&lt;script&gt;alert(&#39;name&#39;)&lt;/script&gt;"));
    // In the chart data too, no `<` at all.
    let data_start = html.find("<script id=\"chart-data\"").unwrap();
    let data = &html[data_start..];
    let data = &data[data.find('>').unwrap() + 1..data.find("</script>").unwrap()];
    assert!(!data.contains('<'));
    assert!(data.contains("\\u003cscript\\u003ealert('note')"));
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

fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .map(|name| Path::new("/usr/bin").join(name))
        .find(|path| path.exists());
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("no chromium: .ci/run must install it");
        }
        eprintln!("chromium not installed: skipping the browser test (run bash .ci/run)");
    }
    found
}

fn headless(browser: &Path, args: &[&str], page: &Path) -> std::process::Output {
    std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .args([
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
        ])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap()
}

#[test]
fn the_report_renders_in_a_real_browser_with_every_chart_and_no_console_error() {
    let Some(browser) = chromium() else { return };
    let folder = demo_with(
        "<script>alert('name')</script>",
        "<script>alert('note')</script>",
    );
    let out = report(folder.path());
    let page = out.path().join("report.html");
    let flagged = read(out.path(), "report-flagged-patients.csv")
        .lines()
        .count()
        - 1;

    let dom = headless(&browser, &["--dump-dom"], &page);
    let html = String::from_utf8_lossy(&dom.stdout);
    let console = String::from_utf8_lossy(&dom.stderr);
    assert!(
        console.contains(&format!("report ready: {flagged} charts, {flagged} drawn")),
        "{console}"
    );
    for problem in ["Uncaught", ":ERROR:CONSOLE", "Refused to"] {
        assert!(!console.contains(problem), "{problem}: {console}");
    }
    // One SVG per flagged patient, each with its points, and the hostile name stayed text.
    let charts: Vec<&str> = html.split("<svg class=\"chart\"").skip(1).collect();
    assert_eq!(charts.len(), flagged);
    for chart in &charts {
        let chart = &chart[..chart.find("</svg>").unwrap()];
        assert!(chart.contains("class=\"point\""), "a chart without points");
    }
    assert_eq!(
        html.matches("<script").count(),
        2,
        "only the report's own two scripts"
    );

    let shot = out.path().join("report.png");
    let output = headless(
        &browser,
        &[
            "--window-size=1280,1600",
            &format!("--screenshot={}", shot.display()),
        ],
        &page,
    );
    assert!(shot.exists(), "{}", String::from_utf8_lossy(&output.stderr));
    let decoder = png::Decoder::new(std::fs::File::open(&shot).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let pixels = &pixels[..info.buffer_size()];
    let background = &pixels[..3];
    let differing = pixels
        .chunks(info.color_type.samples())
        .filter(|p| p[..3] != *background)
        .count();
    // Text, tables and lines cover a few percent of a report page at least.
    let share = differing as f64 / (info.width * info.height) as f64;
    assert!(share > 0.02, "the screenshot is (nearly) blank: {share}");
}
