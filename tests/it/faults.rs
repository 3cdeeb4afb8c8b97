//! Protocol faults a real server cannot be made to produce on demand, against a mock server
//! (wiremock) or a raw socket: throttling storms, transient errors, a connection cut in the
//! middle of a body, a page that is not JSON, a bad resource inside a good page, a slow
//! server, and a `next` link to another host.

use crate::helpers::assert_success;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::Duration;
use tare_marker_monitor::config::{AuthMethod, ServerConfig};
use tare_marker_monitor::fhir::client::{FhirClient, FhirError};
use tare_marker_monitor::fhir::error::chain;
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
            .starts_with("Observation request on 127.0.0.1: not a FHIR Bundle"),
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
    assert_eq!(
        error.to_string(),
        "Patient search on 127.0.0.1: no complete answer within 1 s"
    );
    // A timeout is not retried (a dead server ends the run within two minutes): one attempt.
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
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
        chain(&error).contains("TMM_TEST_TOKEN_THAT_IS_NOT_SET is not set"),
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
        "/Device" => vec![json!({"resourceType": "Device", "id": "dev-1",
            "identifier": [{"system": "https://tare-marker-monitor.example.org/fhir/NamingSystem/device",
                            "value": "tare-marker-monitor"}]})],
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
async fn dry_run(base: String, as_of: &str) -> (std::process::Output, crate::helpers::OutDir) {
    let out = crate::helpers::out_dir();
    let as_of = as_of.to_owned();
    tokio::task::spawn_blocking(move || {
        let output = crate::helpers::binary()
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

fn read_summary(out: &crate::helpers::OutDir) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.path().join("run-summary.json")).unwrap())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resource_updated_while_paging_is_read_once_in_its_newest_version() {
    for newest_first in [false, true] {
        let server = MockServer::start().await;
        crate::helpers::declares_everything(&server).await;
        Mock::given(method("GET"))
            .respond_with(UpdatedWhilePaging {
                base: server.uri(),
                newest_first,
            })
            .mount(&server)
            .await;
        let (output, out) = dry_run(server.uri(), "2026-07-10").await;
        assert_success(&output);
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
    crate::helpers::declares_everything(&server).await;
    Mock::given(method("GET"))
        .respond_with(Cohort)
        .mount(&server)
        .await;
    let (output, out) = dry_run(server.uri(), "2026-07-10").await;
    assert_success(&output);
    // Stderr is not a terminal: no progress bar; at the default log level the start and end
    // lines and one warning about the malformed result, without its id or the value it held.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 4, "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.contains(" WARN ")).count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "WARN tare_marker_monitor::source: 1 Observation resources are not FHIR JSON \
             (an element of the wrong JSON type, null, or not JSON at all) and were left out, \
             e.g. invalid type: string, expected f64 at line 1 column 241; see run-summary.json"
        ),
        "{stderr}"
    );
    assert!(
        !stderr.contains("lots") && !stderr.contains("o2"),
        "{stderr}"
    );
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
        "request": format!("{}/$export", home.uri()),
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
    assert_eq!(exported.transaction_time, "2026-11-27T02:00:00Z");
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
        let output = crate::helpers::binary()
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

/// A run against the one-patient cohort whose transactions are all answered `status`: its
/// exit code, stderr, and how many transactions reached the server.
async fn write_back_answered(status: u16, config_text: &str) -> (Option<i32>, String, usize) {
    let server = MockServer::start().await;
    crate::helpers::declares_everything(&server).await;
    Mock::given(method("GET"))
        .respond_with(Cohort)
        .mount(&server)
        .await;
    let outcome = json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "security", "diagnostics": "no"}]});
    Mock::given(method("POST"))
        .and(path("/"))
        .respond_with(ResponseTemplate::new(status).set_body_json(outcome))
        .mount(&server)
        .await;
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[output]\nmin_severity_written = \"low\"\n{config_text}"),
    )
    .unwrap();
    let (base, out) = (server.uri(), work.path().join("out"));
    let output = tokio::task::spawn_blocking(move || {
        crate::helpers::binary()
            .args(["-q", "run", "--server", &base, "--as-of", "2026-07-10"])
            .arg("--config")
            .arg(&config)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let posts = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method == wiremock::http::Method::POST && r.url.path() == "/")
        .count();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        posts,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_refused_as_unauthorized_ends_the_write_back_with_exit_2() {
    let (code, stderr, posts) = write_back_answered(401, "").await;
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(posts, 1, "not retried, nothing more sent");
    assert!(
        stderr
            .trim_end()
            .ends_with("error: transaction on 127.0.0.1: HTTP 401: error security: no"),
        "one line naming the request and the answer: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_failing_every_transaction_ends_the_write_back_with_exit_3() {
    // 503 is retried (within max_retry_secs), then the write-back ends: the server, not the
    // patient's Bundle, is what failed.
    let (code, stderr, posts) = write_back_answered(503, "[server]\nmax_retry_secs = 2\n").await;
    assert_eq!(code, Some(3), "{stderr}");
    assert!(posts >= 1, "{posts}");
    assert!(
        stderr
            .trim_end()
            .ends_with("error: transaction on 127.0.0.1: HTTP 503: error security: no"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_write_back_says_how_many_patients_failed_and_names_them_at_debug_level_only() {
    let server = MockServer::start().await;
    crate::helpers::declares_everything(&server).await;
    Mock::given(method("GET"))
        .respond_with(Cohort)
        .mount(&server)
        .await;
    let outcome = json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid", "diagnostics": "rejected"}]});
    Mock::given(method("POST"))
        .and(path("/"))
        .respond_with(ResponseTemplate::new(422).set_body_json(outcome))
        .mount(&server)
        .await;
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("config.toml");
    // The seed case's only flag is the low incomplete-response: written here, so p1 has a
    // transaction to fail.
    std::fs::write(&config, "[output]\nmin_severity_written = \"low\"\n").unwrap();
    for verbose in [false, true] {
        let (base, config) = (server.uri(), config.clone());
        let out = work.path().join(format!("out-{verbose}"));
        let run_out = out.clone();
        let output = tokio::task::spawn_blocking(move || {
            let mut command = crate::helpers::binary();
            if verbose {
                command.arg("-v");
            }
            command
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
                .arg(&run_out)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert_eq!(output.status.code(), Some(4));
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(
            stderr.lines().last(),
            Some("error: the write-back of 1 patient failed (listed with the server's answer under write_back.failed in run-summary.json); the others were written"),
            "{stderr}"
        );
        let summary: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("run-summary.json")).unwrap())
                .unwrap();
        let failed = &summary["write_back"]["failed"];
        assert_eq!(failed.as_array().unwrap().len(), 1, "{failed}");
        assert_eq!(failed[0]["patient_id"], "p1");
        let per_patient = format!(
            "write-back failed for patient p1: {}",
            failed[0]["message"].as_str().unwrap()
        );
        let above_debug: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.contains(" DEBUG ") && !l.contains(" TRACE "))
            .collect();
        assert!(
            above_debug.iter().all(|l| !l.contains("p1")),
            "a patient id above debug level: {stderr}"
        );
        let debug_lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains(" DEBUG ") && l.ends_with(&per_patient))
            .collect();
        assert_eq!(debug_lines.len(), usize::from(verbose), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_state_moves_on_only_after_a_run_whose_writes_all_succeeded() {
    let server = MockServer::start().await;
    crate::helpers::declares_everything(&server).await;
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

// ---- bounded time and memory on any answer ----

fn settings(change: impl FnOnce(&mut ServerConfig)) -> ServerConfig {
    let mut settings = ServerConfig::default();
    change(&mut settings);
    settings
}

async fn search_error(base: &str, settings: &ServerConfig, first: &str) -> FhirError {
    let client = FhirClient::new(base, settings).unwrap();
    client
        .search_all(reqwest::Url::parse(first).unwrap(), |_| {})
        .await
        .err()
        .unwrap()
}

#[tokio::test]
async fn a_next_link_that_alternates_between_two_pages_is_refused() {
    let server = MockServer::start().await;
    let (a, b) = (format!("{}/a", server.uri()), format!("{}/b", server.uri()));
    Mock::given(path("/a"))
        .respond_with(fhir_json(&bundle(&[], Some(&b))))
        .mount(&server)
        .await;
    Mock::given(path("/b"))
        .respond_with(fhir_json(&bundle(&[], Some(&a))))
        .mount(&server)
        .await;
    let error = search_error(&server.uri(), &ServerConfig::default(), &a).await;
    assert!(matches!(error, FhirError::RepeatedPage { .. }), "{error}");
    assert_eq!(
        error.to_string(),
        "request on 127.0.0.1: the next link repeats a page already read; the search would never end"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

/// Pages whose next links never end, each a new URL, each answered after `delay`.
struct EndlessPages {
    base: String,
    delay: Duration,
}

impl Respond for EndlessPages {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let n: u64 = request
            .url
            .query_pairs()
            .find(|(k, _)| k == "page")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let next = format!("{}/Patient?page={}", self.base, n + 1);
        fhir_json(&bundle(&[], Some(&next))).set_delay(self.delay)
    }
}

#[tokio::test]
async fn a_search_longer_than_the_page_cap_stops() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(EndlessPages {
            base: server.uri(),
            delay: Duration::ZERO,
        })
        .mount(&server)
        .await;
    let capped = settings(|s| s.max_pages_per_search = 3);
    let error = search_error(&server.uri(), &capped, &format!("{}/Patient", server.uri())).await;
    assert!(
        error
            .to_string()
            .ends_with("the search goes on past 3 pages (server.max_pages_per_search)"),
        "{error}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn reading_stops_at_the_read_budget() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(EndlessPages {
            base: server.uri(),
            delay: Duration::from_millis(400),
        })
        .mount(&server)
        .await;
    // 0.02 minutes: 1.2 s.
    let budget = settings(|s| s.max_read_minutes = 0.02);
    let error = search_error(&server.uri(), &budget, &format!("{}/Patient", server.uri())).await;
    assert!(matches!(error, FhirError::ReadBudget { .. }), "{error}");
    assert!(
        error.to_string().ends_with(
            "reading from the server took longer than 0.02 minutes (server.max_read_minutes)"
        ),
        "{error}"
    );
    let pages = server.received_requests().await.unwrap().len();
    assert!(
        (3..=5).contains(&pages),
        "{pages} pages in 1.2 s at 0.4 s each"
    );
}

#[tokio::test]
async fn an_answer_over_the_size_cap_is_refused_and_not_retried() {
    let server = MockServer::start().await;
    let big = bundle(
        &[json!({"resourceType": "Patient", "id": "p", "text": {"div": "x".repeat(2 << 20)}})],
        None,
    );
    Mock::given(method("GET"))
        .respond_with(fhir_json(&big))
        .mount(&server)
        .await;
    let capped = settings(|s| s.max_response_bytes = 1 << 20);
    let url = format!("{}/Patient", server.uri());
    let error = search_error(&server.uri(), &capped, &url).await;
    assert_eq!(
        error.to_string(),
        "Patient request on 127.0.0.1: the answer is larger than 1048576 bytes (server.max_response_bytes)"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

/// Answers with a chunked body (no length announced) that goes on for `megabytes`.
fn endless_chunked_server(megabytes: usize) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Some(Ok(mut stream)) = listener.incoming().next() {
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nTransfer-Encoding: chunked\r\n\r\n",
            );
            let chunk = vec![b' '; 1 << 20];
            for _ in 0..megabytes {
                if stream
                    .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .is_err()
                    || stream.write_all(&chunk).is_err()
                    || stream.write_all(b"\r\n").is_err()
                {
                    return;
                }
            }
        }
    });
    format!("http://{address}")
}

#[tokio::test]
async fn a_streamed_answer_is_cut_off_at_the_size_cap() {
    let base = endless_chunked_server(64);
    let capped = settings(|s| s.max_response_bytes = 4 << 20);
    let error = search_error(&base, &capped, &format!("{base}/Patient")).await;
    assert!(
        matches!(error, FhirError::TooLarge { limit: 4194304, .. }),
        "{error}"
    );
}

#[tokio::test]
async fn retries_of_one_request_stop_at_the_total_retry_time() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503).insert_header("Retry-After", "2"))
        .mount(&server)
        .await;
    let capped = settings(|s| s.max_retry_secs = 3);
    let client = FhirClient::new(&server.uri(), &capped).unwrap();
    let error = client
        .page(&format!("{}/Patient", server.uri()))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(error, FhirError::Status { status: 503, .. }),
        "{error}"
    );
    // At 0 s, then after 2 s; a third try would start after 4 s, past the 3 s allowed.
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[test]
fn plain_http_to_a_remote_host_is_refused_with_a_token_or_without() {
    let error = FhirClient::new("http://fhir.example.org/r4", &ServerConfig::default())
        .err()
        .unwrap();
    assert!(
        error
            .to_string()
            .contains("would send patient data and credentials unencrypted"),
        "{error}"
    );
    let allowed = settings(|s| s.allow_insecure_http = true);
    assert!(FhirClient::new("http://fhir.example.org/r4", &allowed).is_ok());
}

// ---- Bulk Data: only what the protocol says ----

async fn kickoff_answering(home: &MockServer, content_location: &str) {
    Mock::given(method("GET"))
        .and(path("/$export"))
        .respond_with(
            ResponseTemplate::new(202).insert_header("Content-Location", content_location),
        )
        .mount(home)
        .await;
}

async fn export_error(home: &MockServer) -> String {
    let config = tare_marker_monitor::config::Config::default();
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
    chain(&error)
}

#[tokio::test]
async fn a_status_url_that_is_a_fhir_resource_is_neither_polled_nor_deleted() {
    let home = MockServer::start().await;
    let patient = format!("{}/Patient/p1", home.uri());
    kickoff_answering(&home, &patient).await;
    let error = export_error(&home).await;
    assert!(
        error.ends_with(&format!(
            "the kick-off names {patient} as its status URL, which is a FHIR resource URL of the server; it was neither polled nor deleted"
        )),
        "{error}"
    );
    let requests = home.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1, "only the kick-off");
}

#[tokio::test]
async fn a_manifest_without_a_required_field_is_refused_before_any_download() {
    let home = MockServer::start().await;
    kickoff_answering(&home, &format!("{}/status/9", home.uri())).await;
    Mock::given(method("GET"))
        .and(path("/status/9"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "transactionTime": "2026-11-27T02:00:00Z", "requiresAccessToken": false,
            "output": [{"type": "Patient", "url": format!("{}/files/p", home.uri())}], "error": []
        })))
        .mount(&home)
        .await;
    let error = export_error(&home).await;
    assert!(
        error.contains("not a Bulk Data manifest: missing field `request`"),
        "{error}"
    );
    let requests = home.received_requests().await.unwrap();
    assert!(requests.iter().all(|r| r.url.path() != "/files/p"));
    // It never answered as an export status endpoint: it is not deleted either.
    assert!(requests
        .iter()
        .all(|r| r.method != wiremock::http::Method::DELETE));
}

#[tokio::test]
async fn an_export_without_output_files_is_a_valid_empty_result() {
    let home = MockServer::start().await;
    kickoff_answering(&home, "status/empty").await;
    Mock::given(method("GET"))
        .and(path("/status/empty"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "transactionTime": "2026-11-27T02:00:00Z", "request": "x",
            "requiresAccessToken": false, "output": [], "error": []
        })))
        .mount(&home)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/status/empty"))
        .respond_with(ResponseTemplate::new(202))
        .mount(&home)
        .await;
    let config = tare_marker_monitor::config::Config::default();
    let client = FhirClient::new(&home.uri(), &config.server).unwrap();
    let folder = tempfile::tempdir().unwrap();
    let exported = tare_marker_monitor::source::bulk::export(
        &client,
        &config,
        &["Patient", "Observation"],
        None,
        folder.path(),
    )
    .await
    .unwrap();
    assert!(exported.files.is_empty());
    let ingestor = tare_marker_monitor::ingest::Ingestor::new(
        &config,
        chrono::NaiveDate::from_ymd_opt(2026, 11, 27).unwrap(),
    );
    let loaded =
        tare_marker_monitor::source::ndjson::load_export(folder.path(), &ingestor).unwrap();
    assert!(loaded.timelines.is_empty());
    // A relative Content-Location is resolved against the base, and the job deleted.
    let requests = home.received_requests().await.unwrap();
    assert!(requests
        .iter()
        .any(|r| r.method == wiremock::http::Method::DELETE && r.url.path() == "/status/empty"));
}

// ---- write-back: never blind ----

/// The cohort, plus one DetectedIssue of ours for p1 that the server keeps without a version.
struct CohortWithUnversionedIssue;

impl Respond for CohortWithUnversionedIssue {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        if request.url.path() == "/DetectedIssue" {
            let issue = json!({
                "resourceType": "DetectedIssue", "id": "di-1", "status": "preliminary",
                "identifier": [{"system": "https://tare-marker-monitor.example.org/fhir/NamingSystem/flag-id",
                                "value": "0123456789abcdef0123456789abcdef"}],
                "patient": {"reference": "Patient/p1"},
                "detail": "an old flag that no longer holds"
            });
            return fhir_json(&bundle(&[issue], None));
        }
        Cohort.respond(request)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_detected_issue_without_a_version_is_reported_and_never_overwritten() {
    let server = MockServer::start().await;
    crate::helpers::declares_everything(&server).await;
    Mock::given(method("GET"))
        .respond_with(CohortWithUnversionedIssue)
        .mount(&server)
        .await;
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("config.toml");
    // One active issue for this run to cancel: under the valve's minimum count.
    std::fs::write(&config, "").unwrap();
    let (code, summary) = run_with_config(server.uri(), config, work.path().join("out")).await;
    assert_eq!(code, Some(4));
    assert_eq!(
        summary["write_back"]["failed"][0]["message"],
        "DetectedIssue/di-1 has no meta.versionId on the server, so it cannot be updated safely (If-Match); it was left as it is"
    );
    let requests = server.received_requests().await.unwrap();
    assert!(requests.iter().all(
        |r| r.method != wiremock::http::Method::POST && r.method != wiremock::http::Method::PUT
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_a_run_between_two_pages_with_exit_130_and_leaves_nothing_behind() {
    let server = MockServer::start().await;
    crate::helpers::declares_everything(&server).await;
    Mock::given(method("GET"))
        .respond_with(EndlessPages {
            base: server.uri(),
            delay: Duration::from_millis(200),
        })
        .mount(&server)
        .await;
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state.json");
    let config = work.path().join("config.toml");
    std::fs::write(&config, format!("[schedule]\nstate_file = {state:?}\n")).unwrap();
    let out = work.path().join("out");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("tare-marker-monitor"))
        .args([
            "run",
            "--server",
            &server.uri(),
            "--as-of",
            "2026-07-10",
            "--config",
        ])
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        (status, stderr)
    })
    .await
    .unwrap();
    assert_eq!(status.0.code(), Some(130), "{}", status.1);
    assert!(status.1.contains("interrupted"), "{}", status.1);
    assert!(!out.exists(), "nothing published");
    let left: Vec<String> = std::fs::read_dir(work.path().join(".out.runs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        [".tare-marker-monitor.lock"],
        "no run folder, no temporary file"
    );
    assert!(!state.exists(), "the state does not move on");
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_bundles_are_owner_only_under_collision_free_names_with_an_index() {
    use std::os::unix::fs::PermissionsExt;
    let server = MockServer::start().await;
    crate::helpers::declares_everything(&server).await;
    Mock::given(method("GET"))
        .respond_with(Cohort)
        .mount(&server)
        .await;
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("config.toml");
    // The seed case's low flag is written, so p1 has a transaction to save.
    std::fs::write(&config, "[output]\nmin_severity_written = \"low\"\n").unwrap();
    let out = work.path().join("out");
    let base = server.uri();
    let (config_path, out_path) = (config.clone(), out.clone());
    let output = tokio::task::spawn_blocking(move || {
        crate::helpers::binary()
            .args([
                "run",
                "--server",
                &base,
                "--as-of",
                "2026-07-10",
                "--dry-run",
                "--config",
            ])
            .arg(&config_path)
            .arg("--out")
            .arg(&out_path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_success(&output);
    let transactions = out.join("transactions");
    let mut names: Vec<String> = std::fs::read_dir(&transactions)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let bundle_name = tare_marker_monitor::sink::server::bundle_file_name("p1");
    assert_eq!(bundle_name.len(), "p1.".len() + 12 + ".json".len());
    assert_eq!(names, ["index.csv".to_owned(), bundle_name.clone()]);
    for name in &names {
        let mode = std::fs::metadata(transactions.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    assert_eq!(
        std::fs::read_to_string(transactions.join("index.csv")).unwrap(),
        format!("patient_id,file\np1,{bundle_name}\n")
    );
    let bundle: Value =
        serde_json::from_str(&std::fs::read_to_string(transactions.join(&bundle_name)).unwrap())
            .unwrap();
    assert_eq!(bundle["type"], "transaction");
    // The run's summary lists the Bundles with the other files of its set, each with its size
    // and hash.
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run-summary.json")).unwrap())
            .unwrap();
    let listed: Vec<(String, u64, String)> = summary["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_owned(),
                f["bytes"].as_u64().unwrap(),
                f["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let names: Vec<&str> = listed.iter().map(|(name, _, _)| name.as_str()).collect();
    let bundle_path = format!("transactions/{bundle_name}");
    assert_eq!(
        names,
        [
            "detected-issues.ndjson",
            "flags.csv",
            "markers.csv",
            "metrics.prom",
            "transactions/index.csv",
            bundle_path.as_str()
        ]
    );
    for (name, bytes, sha256) in &listed {
        let content = std::fs::read(out.join(name)).unwrap();
        assert_eq!(*bytes, content.len() as u64, "{name}");
        assert_eq!(
            *sha256,
            format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(&content)),
            "{name}"
        );
    }
    // Ids that differ in case only get different files.
    assert_ne!(
        tare_marker_monitor::sink::server::bundle_file_name("Ab").to_lowercase(),
        tare_marker_monitor::sink::server::bundle_file_name("aB").to_lowercase()
    );
}

// ---- every URL under the same rules ----

/// A host that is not this machine (and that no resolver knows, should anything try).
const ELSEWHERE: &str = "fhir.example.invalid";

#[tokio::test]
async fn a_next_link_in_plain_http_to_another_host_is_refused_before_it_is_followed() {
    let server = MockServer::start().await;
    let next = format!("http://{ELSEWHERE}/Patient?page=2");
    Mock::given(method("GET"))
        .respond_with(fhir_json(&bundle(
            &[json!({"resourceType": "Patient", "id": "a"})],
            Some(&next),
        )))
        .mount(&server)
        .await;
    let error = search_error(
        &server.uri(),
        &ServerConfig::default(),
        &format!("{}/Patient", server.uri()),
    )
    .await;
    assert!(matches!(error, FhirError::RefusedLink { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!(
            "Patient search on {ELSEWHERE} (a URL the server named): plain http to {ELSEWHERE} would send patient data and credentials unencrypted: use https, or set server.allow_insecure_http = true"
        )
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_redirect_to_plain_http_on_another_host_is_refused() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("Location", format!("http://{ELSEWHERE}/Patient").as_str()),
        )
        .mount(&server)
        .await;
    let error = client(&server.uri())
        .page(&format!("{}/Patient", server.uri()))
        .await
        .err()
        .unwrap();
    assert!(
        chain(&error).contains(&format!(
            "a redirect was refused: plain http to {ELSEWHERE} would send patient data"
        )),
        "{}",
        chain(&error)
    );
    // Allowed by the site, the redirect is followed (and finds no such host; not retried).
    let allowed = settings(|s| {
        s.allow_insecure_http = true;
        s.max_retry_secs = 0;
    });
    let error = FhirClient::new(&server.uri(), &allowed)
        .unwrap()
        .page(&format!("{}/Patient", server.uri()))
        .await
        .err()
        .unwrap();
    assert!(!chain(&error).contains("refused"), "{}", chain(&error));
}

#[tokio::test]
async fn an_export_status_url_in_plain_http_elsewhere_is_neither_polled_nor_deleted() {
    let home = MockServer::start().await;
    kickoff_answering(&home, &format!("http://{ELSEWHERE}/status/1")).await;
    let error = export_error(&home).await;
    assert!(
        error.contains(&format!(
            "(a URL the server named): plain http to {ELSEWHERE}"
        )),
        "{error}"
    );
    assert_eq!(
        home.received_requests().await.unwrap().len(),
        1,
        "only the kick-off"
    );
}

/// A Bulk Data server whose export is ready at once and lists `files` (type and URL); the
/// export job can be deleted.
async fn export_ready_with(home: &MockServer, files: &[(&str, String)]) {
    kickoff_answering(home, &format!("{}/status/ready", home.uri())).await;
    let output: Vec<Value> = files
        .iter()
        .map(|(kind, url)| json!({"type": kind, "url": url}))
        .collect();
    Mock::given(method("GET"))
        .and(path("/status/ready"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "transactionTime": "2026-11-27T02:00:00Z", "request": "x",
            "requiresAccessToken": true, "output": output, "error": []
        })))
        .mount(home)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/status/ready"))
        .respond_with(ResponseTemplate::new(202))
        .mount(home)
        .await;
}

/// Serves `answer` at `at` on `server`.
async fn file_at(server: &MockServer, at: &str, answer: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path(at))
        .respond_with(answer)
        .mount(server)
        .await;
}

/// An export of Patients into a new folder with `config`.
async fn export_patients(
    home: &MockServer,
    config: &tare_marker_monitor::config::Config,
) -> (
    Result<tare_marker_monitor::source::bulk::Exported, FhirError>,
    tempfile::TempDir,
) {
    let client = FhirClient::new(&home.uri(), &config.server).unwrap();
    let folder = tempfile::tempdir().unwrap();
    let exported = tare_marker_monitor::source::bulk::export(
        &client,
        config,
        &["Patient"],
        None,
        folder.path(),
    )
    .await;
    (exported, folder)
}

#[tokio::test]
async fn a_bulk_file_in_plain_http_elsewhere_is_refused_even_from_a_plain_http_server() {
    let home = MockServer::start().await;
    let file = format!("http://{ELSEWHERE}/files/patients.ndjson");
    export_ready_with(&home, &[("Patient", file.clone())]).await;
    let (exported, _folder) =
        export_patients(&home, &tare_marker_monitor::config::Config::default()).await;
    let error = exported.err().unwrap();
    assert!(matches!(error, FhirError::RefusedLink { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&format!(
            "(a URL the server named): plain http to {ELSEWHERE}"
        )),
        "{error}"
    );
}

/// `count` Patient lines, and the same gzip-compressed.
fn patient_lines(count: usize) -> (String, Vec<u8>) {
    use std::io::Write;
    let text: String = (0..count)
        .map(|n| format!("{{\"resourceType\":\"Patient\",\"id\":\"p{n}\"}}\n"))
        .collect();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gzip.write_all(text.as_bytes()).unwrap();
    (text, gzip.finish().unwrap())
}

fn capped_download(bytes: u64) -> tare_marker_monitor::config::Config {
    let mut config = tare_marker_monitor::config::Config::default();
    config.server.max_download_bytes = bytes;
    config
}

#[tokio::test]
async fn a_gzip_encoded_bulk_file_over_the_download_cap_is_refused_naming_host_and_cap() {
    let home = MockServer::start().await;
    let (text, gzip) = patient_lines(40_000);
    assert!(text.len() > 1 << 20 && gzip.len() < 1 << 20);
    export_ready_with(&home, &[("Patient", format!("{}/files/p", home.uri()))]).await;
    file_at(
        &home,
        "/files/p",
        ResponseTemplate::new(200)
            .insert_header("Content-Encoding", "gzip")
            .set_body_raw(gzip, "application/fhir+ndjson"),
    )
    .await;
    let (exported, folder) = export_patients(&home, &capped_download(1 << 20)).await;
    let error = exported.err().unwrap();
    assert_eq!(
        error.to_string(),
        "a Bulk Data file from 127.0.0.1 holds more than 1048576 bytes once decompressed (server.max_download_bytes); it was not read"
    );
    // Refused, not retried; nothing of it is left.
    let requests = home.received_requests().await.unwrap();
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.url.path() == "/files/p")
            .count(),
        1
    );
    assert_eq!(std::fs::read_dir(folder.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_ndjson_gz_file_whose_contents_exceed_the_download_cap_is_refused() {
    let home = MockServer::start().await;
    let (text, gzip) = patient_lines(40_000);
    assert!(text.len() > 1 << 20 && gzip.len() < 1 << 20);
    export_ready_with(
        &home,
        &[("Patient", format!("{}/files/p.ndjson.gz", home.uri()))],
    )
    .await;
    file_at(
        &home,
        "/files/p.ndjson.gz",
        ResponseTemplate::new(200).set_body_raw(gzip, "application/gzip"),
    )
    .await;
    let (exported, _folder) = export_patients(&home, &capped_download(1 << 20)).await;
    assert_eq!(
        exported.err().unwrap().to_string(),
        "a Bulk Data file from 127.0.0.1 holds more than 1048576 bytes once decompressed (server.max_download_bytes); it was not read"
    );
}

#[tokio::test]
async fn a_ndjson_gz_file_within_the_download_cap_is_read_as_gzip() {
    let home = MockServer::start().await;
    let (text, gzip) = patient_lines(3);
    export_ready_with(
        &home,
        &[("Patient", format!("{}/files/p.ndjson.gz", home.uri()))],
    )
    .await;
    file_at(
        &home,
        "/files/p.ndjson.gz",
        ResponseTemplate::new(200).set_body_raw(gzip, "application/gzip"),
    )
    .await;
    let config = capped_download(text.len() as u64);
    let (exported, folder) = export_patients(&home, &config).await;
    let exported = exported.unwrap();
    let names: Vec<String> = exported
        .files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["Patient-0000.ndjson.gz"]);
    let ingestor = tare_marker_monitor::ingest::Ingestor::new(
        &config,
        chrono::NaiveDate::from_ymd_opt(2026, 11, 27).unwrap(),
    );
    let loaded =
        tare_marker_monitor::source::ndjson::load_export(folder.path(), &ingestor).unwrap();
    let patients = &loaded.quality.by_type["Patient"];
    assert_eq!((patients.read, patients.accepted), (3, 3));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_export_file_is_over_the_download_cap_exits_3() {
    let home = MockServer::start().await;
    crate::helpers::declares_everything(&home).await;
    let (_, gzip) = patient_lines(40_000);
    export_ready_with(
        &home,
        &[("Patient", format!("{}/files/p.ndjson.gz", home.uri()))],
    )
    .await;
    file_at(
        &home,
        "/files/p.ndjson.gz",
        ResponseTemplate::new(200).set_body_raw(gzip, "application/gzip"),
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("config.toml");
    std::fs::write(&config, "[server]\nmax_download_bytes = 1048576\n").unwrap();
    let (base, out) = (home.uri(), work.path().join("out"));
    let output = tokio::task::spawn_blocking(move || {
        crate::helpers::binary()
            .args([
                "run",
                "--server",
                &base,
                "--export",
                "--as-of",
                "2026-11-01",
            ])
            .arg("--config")
            .arg(&config)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("a Bulk Data file from 127.0.0.1 holds more than 1048576 bytes once decompressed (server.max_download_bytes)"),
        "{stderr}"
    );
}

// ---- only ours, only the cohort's ----

/// A server that ignores the search parameters: every search of a type answers with the
/// resources of both p1 and p2 (its Patient search by `_id` too), the Observation search also
/// with a Patient, and the DetectedIssue search with one of ours about p2.
struct IgnoresSearchParameters;

impl Respond for IgnoresSearchParameters {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let of_p2 = |mut resource: Value| {
            resource["id"] = json!(format!("{}-p2", resource["id"].as_str().unwrap()));
            if resource["subject"].is_object() {
                resource["subject"] = json!({"reference": "Patient/p2"});
            }
            resource
        };
        let both = |resources: Vec<Value>| -> Vec<Value> {
            let mut all = resources.clone();
            all.extend(resources.into_iter().map(of_p2));
            all
        };
        let resources = match request.url.path() {
            "/Procedure" => both(cohort_resources("/Procedure")[..1].to_vec()),
            "/Patient" => vec![
                json!({"resourceType": "Patient", "id": "p1", "birthDate": "1950-01-01"}),
                json!({"resourceType": "Patient", "id": "p2", "birthDate": "1950-01-01"}),
            ],
            "/Observation" => {
                let mut all = both(vec![
                    marker_observation("o1", "2026-02-27", json!(88000)),
                    marker_observation("o3", "2026-07-01", json!(6088)),
                ]);
                all.push(json!({"resourceType": "Patient", "id": "p9", "birthDate": "1950-01-01"}));
                all
            }
            "/DetectedIssue" => vec![json!({
                "resourceType": "DetectedIssue", "id": "di-p2", "status": "preliminary",
                "meta": {"versionId": "1"},
                "identifier": [{"system": "https://tare-marker-monitor.example.org/fhir/NamingSystem/flag-id",
                                "value": "0123456789abcdef0123456789abcdef"}],
                "patient": {"reference": "Patient/p2"}
            })],
            other => both(cohort_resources(other)),
        };
        fhir_json(&bundle(&resources, None))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cohort_run_reads_and_writes_nothing_of_a_patient_the_server_was_not_asked_for() {
    let server = MockServer::start().await;
    crate::helpers::declares_everything(&server).await;
    Mock::given(method("GET"))
        .respond_with(IgnoresSearchParameters)
        .mount(&server)
        .await;
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("config.toml");
    // p1's low flag is written, so p1 has a transaction (and p2 would, were it read).
    std::fs::write(&config, "[output]\nmin_severity_written = \"low\"\n").unwrap();
    let out = work.path().join("out");
    let (base, config_path, out_path) = (server.uri(), config.clone(), out.clone());
    let output = tokio::task::spawn_blocking(move || {
        crate::helpers::binary()
            .args([
                "run",
                "--server",
                &base,
                "--patient",
                "p1",
                "--as-of",
                "2026-07-10",
            ])
            .args(["--dry-run", "--config"])
            .arg(&config_path)
            .arg("--out")
            .arg(&out_path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_success(&output);
    // Warned once, with the count: p2's TARE, Patient, Condition and Observations, and the
    // Patient in the Observation search.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let warning = "the server answered the searches with 6 resources they did not ask for";
    assert_eq!(stderr.matches(warning).count(), 1, "{stderr}");
    assert_eq!(stderr.matches("did not ask for").count(), 1, "{stderr}");
    let summary = serde_json::from_str::<Value>(
        &std::fs::read_to_string(out.join("run-summary.json")).unwrap(),
    )
    .unwrap();
    let not_asked =
        |kind: &str| summary["resources"]["by_type"][kind]["left_out"]["not_asked_for"].clone();
    assert_eq!(
        not_asked("Procedure")["by_value"],
        json!({"another patient": 1})
    );
    assert_eq!(not_asked("Patient")["by_value"], json!({"another id": 1}));
    assert_eq!(
        not_asked("Condition")["by_value"],
        json!({"another patient": 1})
    );
    assert_eq!(
        not_asked("Observation")["by_value"],
        json!({"another patient": 2, "another resource type": 1})
    );
    assert_eq!(
        not_asked("Observation")["examples"],
        json!([
            {"resource": "Observation/o1-p2", "detail": "another patient"},
            {"resource": "Observation/o3-p2", "detail": "another patient"},
            {"resource": "Patient/p9", "detail": "another resource type"}
        ])
    );
    // Never evaluated ...
    assert_eq!(summary["patients"]["seen"], 1);
    let markers = std::fs::read_to_string(out.join("markers.csv")).unwrap();
    assert!(
        markers.lines().skip(1).all(|l| l.starts_with("p1,")),
        "{markers}"
    );
    // ... never written: p2's DetectedIssue of ours is not cancelled, nothing of p2 is sent.
    assert_eq!(summary["write_back"]["cancelled"], 0);
    let index = std::fs::read_to_string(out.join("transactions/index.csv")).unwrap();
    assert_eq!(
        index
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap())
            .collect::<Vec<_>>(),
        ["p1"]
    );
}

#[tokio::test]
async fn an_incremental_export_counts_as_changed_only_what_it_asked_for() {
    let home = MockServer::start().await;
    export_ready_with(
        &home,
        &[
            ("Observation", format!("{}/files/o", home.uri())),
            ("Patient", format!("{}/files/p", home.uri())),
        ],
    )
    .await;
    // The Observation file also holds a Patient; a Patient file was not asked for.
    let observations = format!(
        "{}\n{}\n",
        marker_observation("o1", "2026-02-27", json!(88000)),
        json!({"resourceType": "Patient", "id": "stray"})
    );
    file_at(
        &home,
        "/files/o",
        ResponseTemplate::new(200).set_body_string(observations),
    )
    .await;
    file_at(
        &home,
        "/files/p",
        ResponseTemplate::new(200)
            .set_body_string("{\"resourceType\":\"Patient\",\"id\":\"unasked\"}\n"),
    )
    .await;
    let config = tare_marker_monitor::config::Config::default();
    let client = FhirClient::new(&home.uri(), &config.server).unwrap();
    let folder = tempfile::tempdir().unwrap();
    let changed = tare_marker_monitor::source::bulk::changed_patients(
        &client,
        &config,
        "2026-11-26T02:00:00Z",
        folder.path(),
    )
    .await
    .unwrap();
    assert_eq!(changed, ["p1"]);
    let requests = home.received_requests().await.unwrap();
    assert!(requests.iter().all(|r| r.url.path() != "/files/p"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_server_names_a_refused_url_exits_3() {
    let server = MockServer::start().await;
    crate::helpers::declares_everything(&server).await;
    let next = format!("http://{ELSEWHERE}/Procedure?page=2");
    Mock::given(method("GET"))
        .respond_with(fhir_json(&bundle(
            &cohort_resources("/Procedure"),
            Some(&next),
        )))
        .mount(&server)
        .await;
    let (output, _out) = dry_run(server.uri(), "2026-07-10").await;
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "(a URL the server named): plain http to {ELSEWHERE}"
        )),
        "{stderr}"
    );
    // Named by kind and host: the link's query could name patients.
    assert!(!stderr.contains(&next), "{stderr}");
}
