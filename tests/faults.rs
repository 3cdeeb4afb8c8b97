//! Protocol faults a real server cannot be made to produce on demand, against a mock server
//! (wiremock) or a raw socket: throttling storms, transient errors, a connection cut in the
//! middle of a body, a page that is not JSON, a bad resource inside a good page, a slow
//! server, and a `next` link to another host.

use assert_cmd::Command;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::Duration;
use tare_marker_monitor::config::{AuthMethod, ServerConfig};
use tare_marker_monitor::fhir::client::{FhirClient, FhirError};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Respond, ResponseTemplate};

fn bundle(resources: &[Value], next: Option<&str>) -> Value {
    let mut link = vec![json!({"relation": "self", "url": "http://x/self"})];
    if let Some(next) = next {
        link.push(json!({"relation": "next", "url": next}));
    }
    json!({
        "resourceType": "Bundle", "type": "searchset", "link": link,
        "entry": resources.iter().map(|r| json!({"resource": r})).collect::<Vec<_>>()
    })
}

fn fhir_json(body: &Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body.to_string(), "application/fhir+json")
}

fn client(base: &str) -> FhirClient {
    FhirClient::new(base, &ServerConfig::default()).unwrap()
}

#[tokio::test]
async fn a_429_storm_with_retry_after_is_waited_out() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/Patient"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(3)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/Patient"))
        .respond_with(fhir_json(&bundle(
            &[json!({"resourceType": "Patient", "id": "p"})],
            None,
        )))
        .mount(&server)
        .await;
    let started = std::time::Instant::now();
    let page = client(&server.uri())
        .page(&format!("{}/Patient", server.uri()))
        .await
        .unwrap();
    assert_eq!(page.resources.len(), 1);
    assert_eq!(server.received_requests().await.unwrap().len(), 4);
    // Three waits of the one second the server asked for.
    assert!(started.elapsed() >= Duration::from_secs(3));
}

#[tokio::test]
async fn a_503_then_success_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(fhir_json(&bundle(&[], None)))
        .mount(&server)
        .await;
    let page = client(&server.uri())
        .page(&format!("{}/Patient", server.uri()))
        .await
        .unwrap();
    assert!(page.resources.is_empty());
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_400_is_not_retried_and_carries_the_operation_outcome() {
    let server = MockServer::start().await;
    let outcome = json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid", "details": {"text": "unknown parameter foo"}}]});
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(400).set_body_raw(outcome.to_string(), "application/fhir+json"),
        )
        .mount(&server)
        .await;
    let error = client(&server.uri())
        .page(&format!("{}/Patient", server.uri()))
        .await
        .err()
        .unwrap();
    assert!(matches!(error, FhirError::Status { status: 400, .. }));
    assert!(
        error
            .to_string()
            .contains("error invalid: unknown parameter foo"),
        "{error}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_page_that_is_not_json_is_a_clear_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw("<html>maintenance</html>", "text/html"),
        )
        .mount(&server)
        .await;
    let url = format!("{}/Observation", server.uri());
    let error = client(&server.uri()).page(&url).await.err().unwrap();
    assert!(matches!(error, FhirError::NotABundle { .. }), "{error}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("{url}: not a FHIR Bundle")),
        "{error}"
    );
}

#[tokio::test]
async fn a_slow_server_hits_the_request_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(fhir_json(&bundle(&[], None)).set_delay(Duration::from_secs(5)))
        .mount(&server)
        .await;
    let settings = ServerConfig {
        request_timeout_secs: 1,
        ..ServerConfig::default()
    };
    let client = FhirClient::new(&server.uri(), &settings).unwrap();
    let error = client
        .page(&format!("{}/Patient", server.uri()))
        .await
        .err()
        .unwrap();
    assert!(matches!(error, FhirError::Transport { .. }), "{error}");
    // Timeouts are retried like any missing answer: five attempts in all.
    assert_eq!(server.received_requests().await.unwrap().len(), 5);
}

/// Answers with headers promising 10,000 bytes, sends 20, and closes the connection.
fn cut_mid_body_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(5) {
            let mut stream = stream.unwrap();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: 10000\r\n\r\n{\"resourceType\":\"Bu",
            );
            // Dropping the stream cuts the body short.
        }
    });
    (format!("http://{address}"), connections)
}

#[tokio::test]
async fn a_connection_cut_mid_page_is_retried_then_reported() {
    let (base, connections) = cut_mid_body_server();
    let error = client(&base)
        .page(&format!("{base}/Observation"))
        .await
        .err()
        .unwrap();
    assert!(matches!(error, FhirError::Transport { .. }), "{error}");
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_next_link_to_another_host_gets_no_authorization() {
    let home = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    let next = format!("{}/Patient?page=2", elsewhere.uri());
    Mock::given(method("GET"))
        .respond_with(fhir_json(&bundle(
            &[json!({"resourceType": "Patient", "id": "a"})],
            Some(&next),
        )))
        .mount(&home)
        .await;
    Mock::given(method("GET"))
        .respond_with(fhir_json(&bundle(
            &[json!({"resourceType": "Patient", "id": "b"})],
            None,
        )))
        .mount(&elsewhere)
        .await;
    std::env::set_var("TMM_TEST_TOKEN_NEXT_LINK", "s3cret-token");
    let mut settings = ServerConfig::default();
    settings.auth.method = AuthMethod::Bearer;
    settings.auth.token_env = Some("TMM_TEST_TOKEN_NEXT_LINK".into());
    let client = FhirClient::new(&home.uri(), &settings).unwrap();
    let first = client.search_url("Patient", &[]);
    let mut ids = Vec::new();
    let pages = client
        .search_all(first, |page| {
            ids.extend(
                page.resources
                    .iter()
                    .map(|r| serde_json::from_str::<Value>(r.get()).unwrap()["id"].clone()),
            )
        })
        .await
        .unwrap();
    assert_eq!((pages, ids), (2, vec![json!("a"), json!("b")]));
    let home_requests = home.received_requests().await.unwrap();
    assert_eq!(
        home_requests[0].headers.get("authorization").unwrap(),
        "Bearer s3cret-token"
    );
    let other_requests = elsewhere.received_requests().await.unwrap();
    assert!(other_requests[0].headers.get("authorization").is_none());
}

#[test]
fn a_missing_token_variable_is_a_configuration_error() {
    let mut settings = ServerConfig::default();
    settings.auth.method = AuthMethod::Bearer;
    settings.auth.token_env = Some("TMM_TEST_TOKEN_THAT_IS_NOT_SET".into());
    let error = FhirClient::new("http://127.0.0.1:1", &settings)
        .err()
        .unwrap();
    assert!(matches!(error, FhirError::Credentials(_)));
    assert!(
        error
            .to_string()
            .contains("TMM_TEST_TOKEN_THAT_IS_NOT_SET is not set"),
        "{error}"
    );
}

fn marker_observation(id: &str, day: &str, value: Value) -> Value {
    json!({
        "resourceType": "Observation", "id": id, "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "34444-0"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": day,
        "valueQuantity": {"value": value, "code": "mAU/mL"}
    })
}

/// The TARE with its Patient, or the HCC diagnosis, of patient p1; nothing for other paths.
fn cohort_resources(path: &str) -> Vec<Value> {
    match path {
        "/Procedure" => vec![
            json!({"resourceType": "Procedure", "id": "t1", "status": "completed",
                   "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "79445"}]},
                   "subject": {"reference": "Patient/p1"}, "performedDateTime": "2026-03-01"}),
            json!({"resourceType": "Patient", "id": "p1", "birthDate": "1950-01-01"}),
        ],
        "/Condition" => vec![json!({"resourceType": "Condition", "id": "c1",
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C22.0"}]},
            "subject": {"reference": "Patient/p1"}})],
        "/Device" => vec![json!({"resourceType": "Device", "id": "dev-1"})],
        _ => vec![],
    }
}

/// Serves a whole small cohort; the Observation page holds one invalid Observation.
struct Cohort;

impl Respond for Cohort {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let resources = match request.url.path() {
            "/Observation" => vec![
                marker_observation("o1", "2026-02-27", json!(88000)),
                marker_observation("o2", "2026-03-31", json!("lots")),
                marker_observation("o3", "2026-07-01", json!(6088)),
            ],
            other => cohort_resources(other),
        };
        fhir_json(&bundle(&resources, None))
    }
}

/// Serves the cohort with its Observations over two pages, as a server does when o3 is updated
/// between the two requests: its first version on page 1, its second on page 2 (or the other
/// way round when `newest_first`), and o1 on both pages unchanged.
struct UpdatedWhilePaging {
    base: String,
    newest_first: bool,
}

impl Respond for UpdatedWhilePaging {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let versioned = |version: u64, value: i64, at: &str| {
            let mut o3 = marker_observation("o3", "2026-07-01", json!(value));
            o3["meta"] = json!({"versionId": version.to_string(), "lastUpdated": at});
            o3
        };
        let old = versioned(1, 9000, "2026-07-02T10:00:00Z");
        let new = versioned(2, 6088, "2026-07-02T11:00:00Z");
        let (first, second) = if self.newest_first {
            (new, old)
        } else {
            (old, new)
        };
        let o1 = marker_observation("o1", "2026-02-27", json!(88000));
        if request.url.path() != "/Observation" {
            return fhir_json(&bundle(&cohort_resources(request.url.path()), None));
        }
        if request.url.query().unwrap_or("").contains("page=2") {
            fhir_json(&bundle(&[o1, second], None))
        } else {
            let next = format!("{}/Observation?page=2", self.base);
            fhir_json(&bundle(&[o1, first], Some(&next)))
        }
    }
}

/// `run --server BASE --dry-run` as a user would; the exit status, stderr and the output folder.
async fn dry_run(base: String, as_of: &str) -> (std::process::Output, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let as_of = as_of.to_owned();
    tokio::task::spawn_blocking(move || {
        let output = Command::cargo_bin("tare-marker-monitor")
            .unwrap()
            .args([
                "run",
                "--server",
                &base,
                "--as-of",
                &as_of,
                "--dry-run",
                "--out",
            ])
            .arg(out.path())
            .output()
            .unwrap();
        (output, out)
    })
    .await
    .unwrap()
}

fn read_summary(out: &tempfile::TempDir) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.path().join("run-summary.json")).unwrap())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resource_updated_while_paging_is_read_once_in_its_newest_version() {
    for newest_first in [false, true] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(UpdatedWhilePaging {
                base: server.uri(),
                newest_first,
            })
            .mount(&server)
            .await;
        let (output, out) = dry_run(server.uri(), "2026-07-10").await;
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let observations = &read_summary(&out)["resources"]["by_type"]["Observation"];
        assert_eq!(observations["read"], 2, "newest_first = {newest_first}");
        assert_eq!(observations["accepted"], 2, "newest_first = {newest_first}");
        let markers = std::fs::read_to_string(out.path().join("markers.csv")).unwrap();
        assert!(
            markers.contains(
                "p1,2026-03-01,pivka2,mAU/mL,88000,2026-02-27,6088,2026-07-01,6088,2026-07-01,1,-93.1,"
            ),
            "newest_first = {newest_first}: {markers}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_with_one_invalid_observation_uses_the_rest() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(Cohort)
        .mount(&server)
        .await;
    let (output, out) = dry_run(server.uri(), "2026-07-10").await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Stderr is not a terminal: no progress bar, and nothing else at the default log level.
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
    let summary = read_summary(&out);
    let observations = &summary["resources"]["by_type"]["Observation"];
    assert_eq!(observations["accepted"], 2);
    assert_eq!(
        observations["left_out"]["invalid_json_or_structure"]["count"],
        1
    );
    assert_eq!(
        observations["left_out"]["invalid_json_or_structure"]["examples"][0]["resource"],
        "o2"
    );
    let markers = std::fs::read_to_string(out.path().join("markers.csv")).unwrap();
    assert!(
        markers.contains(
            "p1,2026-03-01,pivka2,mAU/mL,88000,2026-02-27,6088,2026-07-01,6088,2026-07-01,1,-93.1,"
        ),
        "{markers}"
    );
    // A dry run sends nothing but GETs.
    let requests = server.received_requests().await.unwrap();
    assert!(requests
        .iter()
        .all(|r| r.method == wiremock::http::Method::GET));
}

/// A Bulk Data server: kick-off, a status that is not ready on the first poll (asking for a
/// one-second wait), then a manifest that requires a token, with one file on the export
/// server and one on a file host elsewhere.
async fn bulk_server(home: &MockServer, files_elsewhere: &MockServer, ready_after_polls: u64) {
    Mock::given(method("GET"))
        .and(path("/$export"))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header("Content-Location", format!("{}/status/1", home.uri())),
        )
        .mount(home)
        .await;
    Mock::given(method("GET"))
        .and(path("/status/1"))
        .respond_with(ResponseTemplate::new(202).insert_header("Retry-After", "1"))
        .up_to_n_times(ready_after_polls)
        .mount(home)
        .await;
    let manifest = json!({
        "transactionTime": "2026-11-27T02:00:00Z", "requiresAccessToken": true,
        "output": [
            {"type": "Patient", "url": format!("{}/files/patients", home.uri())},
            {"type": "Observation", "url": format!("{}/files/observations", files_elsewhere.uri())},
            {"type": "Encounter", "url": format!("{}/files/encounters", home.uri())}
        ],
        "error": []
    });
    Mock::given(method("GET"))
        .and(path("/status/1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(manifest))
        .mount(home)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/status/1"))
        .respond_with(ResponseTemplate::new(202))
        .mount(home)
        .await;
    Mock::given(method("GET"))
        .and(path("/files/patients"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("{\"resourceType\":\"Patient\",\"id\":\"p1\"}\n"),
        )
        .mount(home)
        .await;
    Mock::given(method("GET"))
        .and(path("/files/observations"))
        .respond_with(ResponseTemplate::new(200).set_body_string(
            marker_observation("o1", "2026-02-27", json!(88000)).to_string() + "\n",
        ))
        .mount(files_elsewhere)
        .await;
}

fn bearer_settings(variable: &str) -> ServerConfig {
    std::env::set_var(variable, "s3cret-bulk-token");
    let mut settings = ServerConfig::default();
    settings.auth.method = AuthMethod::Bearer;
    settings.auth.token_env = Some(variable.into());
    settings
}

#[tokio::test]
async fn a_bulk_export_waits_as_asked_sends_the_token_home_only_and_deletes_the_job() {
    let home = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    bulk_server(&home, &elsewhere, 1).await;
    let config = tare_marker_monitor::config::Config {
        server: bearer_settings("TMM_TEST_TOKEN_BULK"),
        ..Default::default()
    };
    let client = FhirClient::new(&home.uri(), &config.server).unwrap();
    let folder = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let exported = tare_marker_monitor::source::bulk::export(
        &client,
        &config,
        &["Patient", "Observation"],
        Some("2026-11-26T02:00:00Z"),
        folder.path(),
    )
    .await
    .unwrap();
    // One poll was told to wait a second.
    assert!(started.elapsed() >= Duration::from_secs(1));
    // Our two types are downloaded (the Encounter file is not), named for the folder source.
    let names: Vec<String> = exported
        .files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["Observation-0001.ndjson", "Patient-0000.ndjson"]);
    assert_eq!(
        exported.transaction_time.as_deref(),
        Some("2026-11-27T02:00:00Z")
    );
    let requests = home.received_requests().await.unwrap();
    let kickoff = requests
        .iter()
        .find(|r| r.url.path() == "/$export")
        .unwrap();
    let query: std::collections::HashMap<String, Vec<String>> =
        kickoff
            .url
            .query_pairs()
            .fold(Default::default(), |mut map, (k, v)| {
                map.entry(k.into_owned()).or_default().push(v.into_owned());
                map
            });
    assert_eq!(query["_type"], ["Patient,Observation"]);
    assert_eq!(query["_since"], ["2026-11-26T02:00:00Z"]);
    assert!(query["_typeFilter"][0].starts_with("Observation?code=http%3A%2F%2Floinc.org%7C"));
    assert_eq!(
        kickoff.headers.get("prefer").unwrap(),
        "respond-async, handling=strict"
    );
    let patients_file = requests
        .iter()
        .find(|r| r.url.path() == "/files/patients")
        .unwrap();
    assert_eq!(
        patients_file.headers.get("authorization").unwrap(),
        "Bearer s3cret-bulk-token"
    );
    let other = elsewhere.received_requests().await.unwrap();
    assert!(other[0].headers.get("authorization").is_none());
    assert!(requests
        .iter()
        .any(|r| r.method == wiremock::http::Method::DELETE && r.url.path() == "/status/1"));
}

#[tokio::test]
async fn a_bulk_export_not_ready_in_time_is_abandoned_and_deleted() {
    let home = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    bulk_server(&home, &elsewhere, 100).await;
    let mut config = tare_marker_monitor::config::Config::default();
    config.server.export_max_wait_secs = 2;
    let client = FhirClient::new(&home.uri(), &config.server).unwrap();
    let folder = tempfile::tempdir().unwrap();
    let error = tare_marker_monitor::source::bulk::export(
        &client,
        &config,
        &["Patient"],
        None,
        folder.path(),
    )
    .await
    .err()
    .unwrap();
    assert!(
        error
            .to_string()
            .ends_with("the export is not ready within 2 s (server.export_max_wait_secs)"),
        "{error}"
    );
    let requests = home.received_requests().await.unwrap();
    assert!(requests
        .iter()
        .any(|r| r.method == wiremock::http::Method::DELETE && r.url.path() == "/status/1"));
}

/// `run --server BASE --config CONFIG` (writing for real); the exit code and the summary.
async fn run_with_config(
    base: String,
    config: std::path::PathBuf,
    out: std::path::PathBuf,
) -> (Option<i32>, Value) {
    tokio::task::spawn_blocking(move || {
        let output = Command::cargo_bin("tare-marker-monitor")
            .unwrap()
            .args([
                "run",
                "--server",
                &base,
                "--as-of",
                "2026-07-10",
                "--config",
            ])
            .arg(&config)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let summary: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("run-summary.json")).unwrap())
                .unwrap();
        (output.status.code(), summary)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_state_moves_on_only_after_a_run_whose_writes_all_succeeded() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(Cohort)
        .mount(&server)
        .await;
    let outcome = json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid", "diagnostics": "rejected"}]});
    Mock::given(method("POST"))
        .and(path("/"))
        .respond_with(ResponseTemplate::new(422).set_body_json(outcome))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/"))
        .respond_with(fhir_json(
            &json!({"resourceType": "Bundle", "type": "transaction-response"}),
        ))
        .mount(&server)
        .await;
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state.json");
    let config = work.path().join("config.toml");
    // The seed case's only flag is the low incomplete-response: written here, so p1 has a
    // transaction to fail.
    std::fs::write(
        &config,
        format!("[schedule]\nstate_file = {state:?}\n[output]\nmin_severity_written = \"low\"\n"),
    )
    .unwrap();

    let (code, summary) =
        run_with_config(server.uri(), config.clone(), work.path().join("a")).await;
    assert_eq!(code, Some(4));
    assert_eq!(summary["write_back"]["failed"][0]["patient_id"], "p1");
    assert_eq!(summary["watermark"]["next"], Value::Null);
    assert!(!state.exists(), "a failed run must not move the watermark");

    let (code, summary) =
        run_with_config(server.uri(), config.clone(), work.path().join("b")).await;
    assert_eq!(code, Some(0));
    assert_eq!(summary["mode"], "full");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(saved["watermark"], summary["watermark"]["next"]);
    assert_eq!(
        saved["patients"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["p1"]
    );

    // The next run is incremental: it asks for what changed since that watermark.
    let (code, summary) = run_with_config(server.uri(), config, work.path().join("c")).await;
    assert_eq!(code, Some(0));
    assert_eq!(summary["mode"], "incremental");
    let requests = server.received_requests().await.unwrap();
    let since = format!("gt{}", saved["watermark"].as_str().unwrap());
    let since =
        chrono::DateTime::parse_from_rfc3339(&since[2..]).unwrap() - chrono::Duration::minutes(15);
    let expected = format!(
        "gt{}",
        since
            .with_timezone(&chrono::Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    );
    assert!(requests.iter().any(|r| r.url.path() == "/Observation"
        && r.url
            .query_pairs()
            .any(|(k, v)| k == "_lastUpdated" && v == expected)));
}
