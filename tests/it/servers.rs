//! The real FHIR servers the server tests run on, and how the tests seed and read them.
//!
//! Every server test is written once, as `async fn name(server: TestServer)`, and listed in
//! `on_each_server!`, which makes one test per server: `name::on_hfs` and `name::on_hapi`.
//! - HFS (Helios FHIR Server): a private process per test (in-memory database, validation
//!   enforced), from the binary `tests/servers/hfs.sh install` names in TMM_TEST_HFS_BIN and
//!   TMM_TEST_HFS_DATA.
//! - HAPI FHIR JPA: one shared server (`tests/servers/hapi.sh start`, its base URL in
//!   TMM_TEST_HAPI_URL), on a PostgreSQL cluster of its own, that takes about a minute to start
//!   and a gigabyte of memory; its tests take turns (across processes too), each on a server
//!   emptied by `$expunge`.
//!
//! Outside CI, a test whose server is not configured says so and passes; in CI (CI=true) a
//! missing server fails it.

use serde_json::{json, Value};
use std::process::{Child, Stdio};

pub const FLAG_SYSTEM: &str = "https://tare-marker-monitor.example.org/fhir/NamingSystem/flag-id";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Hfs,
    Hapi,
}

/// A FHIR server for one test, emptied for it; released (stopped, or handed to the next test)
/// when dropped.
pub struct TestServer {
    pub base: String,
    _hold: Hold,
}

// Held for what dropping it does: stop the process, or end the turn.
#[allow(dead_code)]
enum Hold {
    Process(ServerProcess),
    /// This process's turn, and the lock file that makes it this machine's turn: another test
    /// run (another checkout) against the same HAPI would otherwise empty it mid-test.
    Turn(tokio::sync::MutexGuard<'static, ()>, std::fs::File),
}

/// A private server process, stopped (by PID) when dropped.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The shared HAPI server's turns: one test at a time.
static HAPI_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Generates `name::on_hfs` and `name::on_hapi` for each `async fn name(server: TestServer)`.
macro_rules! on_each_server {
    ($($test:ident),+ $(,)?) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread")]
            async fn on_hfs() {
                use crate::servers::{Kind, TestServer};
                if let Some(server) = TestServer::start(Kind::Hfs).await {
                    super::$test(server).await
                }
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn on_hapi() {
                use crate::servers::{Kind, TestServer};
                if let Some(server) = TestServer::start(Kind::Hapi).await {
                    super::$test(server).await
                }
            }
        }
    )+};
}
pub(crate) use on_each_server;

/// The value of a test-server variable `.ci/run` sets; outside CI, `None` (the test says it is
/// skipped); in CI, a missing one fails the test.
pub(crate) fn configured(variable: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{variable} is not set: .ci/run must set it")
        }
        _ => {
            eprintln!("{variable} not set: skipping this server test (run bash .ci/run)");
            None
        }
    }
}

impl TestServer {
    /// An empty server of `kind`; `None` (the test says it is skipped) outside CI without one.
    pub async fn start(kind: Kind) -> Option<TestServer> {
        match kind {
            Kind::Hfs => start_hfs().await,
            Kind::Hapi => take_hapi_turn().await,
        }
    }
}

/// A port nothing listens on now, for a server process to take.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_hfs() -> Option<TestServer> {
    let bin = configured("TMM_TEST_HFS_BIN")?;
    let data = configured("TMM_TEST_HFS_DATA")?;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = std::process::Command::new(bin)
        .args(["--port", &port.to_string(), "--database-url", ":memory:"])
        .arg("--data-dir")
        .arg(data)
        .env("HFS_BASE_URL", &base)
        .env("HFS_UI_ENABLED", "false")
        .env("HFS_VALIDATION_MODE", "enforce")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = TestServer {
        base,
        _hold: Hold::Process(ServerProcess(child)),
    };
    for _ in 0..240 {
        if let Ok(response) = reqwest::get(format!("{}/metadata", server.base)).await {
            if response.status().is_success() {
                return Some(server);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    panic!(
        "the private HFS on {} did not answer /metadata",
        server.base
    );
}

async fn take_hapi_turn() -> Option<TestServer> {
    let base = configured("TMM_TEST_HAPI_URL")?;
    let turn = HAPI_TURN.lock().await;
    let machine_turn = lock_across_processes(&base).await;
    expunge_everything(&base).await;
    Some(TestServer {
        base,
        _hold: Hold::Turn(turn, machine_turn),
    })
}

/// An exclusive lock on a file named after the server, released when the file is closed.
async fn lock_across_processes(base: &str) -> std::fs::File {
    let name: String = base
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let path = std::env::temp_dir().join(format!("tmm-test-turn-{name}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    tokio::task::spawn_blocking(move || {
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .expect("lock the HAPI test turn");
        file
    })
    .await
    .unwrap()
}

/// Empties a HAPI server: every resource and every version of it.
async fn expunge_everything(base: &str) {
    let parameters = json!({"resourceType": "Parameters",
        "parameter": [{"name": "expungeEverything", "valueBoolean": true}]});
    let response = reqwest::Client::new()
        .post(format!("{base}/$expunge"))
        .header("Content-Type", "application/fhir+json")
        .body(parameters.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert!(
        status.is_success(),
        "$expunge: HTTP {status}: {}",
        response.text().await.unwrap_or_default()
    );
}

/// A `batch` Bundle of one PUT per resource (at `Type/id`), each entry with its full URL
/// (relative references in a Bundle resolve against it; HAPI's validator requires one).
pub fn batch_of_puts(base: &str, resources: &[Value]) -> Value {
    let entries: Vec<Value> = resources
        .iter()
        .map(|r| {
            let url = format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            );
            json!({"fullUrl": format!("{}/{url}", base.trim_end_matches('/')),
                   "resource": r, "request": {"method": "PUT", "url": url}})
        })
        .collect();
    json!({"resourceType": "Bundle", "type": "batch", "entry": entries})
}

/// Sends `request` until the server is not busy: HFS answers 503 while its database is busy
/// writing.
async fn patiently(request: reqwest::RequestBuilder) -> reqwest::Response {
    for _ in 0..100 {
        let response = request.try_clone().unwrap().send().await.unwrap();
        match response.status().as_u16() {
            503 | 429 => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            _ => return response,
        }
    }
    panic!("the server is still busy after 100 tries");
}

fn fhir_request(method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .request(method, url)
        .header("Content-Type", "application/fhir+json")
        .header("Accept", "application/fhir+json")
        // HAPI answers an identical search from its cache for a minute otherwise.
        .header("Cache-Control", "no-cache")
}

/// Writes the resources with batches of PUTs; returns the ones the server accepted. A server
/// that validates a batch as a whole (HAPI) refuses all of it for one invalid resource: then
/// each resource of that batch is PUT on its own.
pub async fn seed(base: &str, resources: &[Value]) -> Vec<Value> {
    let mut accepted = Vec::new();
    for chunk in resources.chunks(200) {
        let bundle = batch_of_puts(base, chunk);
        let response =
            patiently(fhir_request(reqwest::Method::POST, base).body(bundle.to_string())).await;
        if response.status().is_success() {
            let reply: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
            for (resource, entry) in chunk.iter().zip(reply["entry"].as_array().unwrap()) {
                let status = entry["response"]["status"].as_str().unwrap_or("");
                if status.starts_with('2') {
                    accepted.push(resource.clone());
                }
            }
            continue;
        }
        assert!(
            response.status().is_client_error(),
            "batch: HTTP {}",
            response.status()
        );
        for resource in chunk {
            if try_put(base, resource).await {
                accepted.push(resource.clone());
            }
        }
    }
    accepted
}

/// Writes the resources; every one must be accepted.
pub async fn put_all(base: &str, resources: &[Value]) {
    let accepted = seed(base, resources).await;
    if accepted.len() != resources.len() {
        let refused: Vec<&Value> = resources.iter().filter(|r| !accepted.contains(r)).collect();
        panic!("the server refused {refused:?}");
    }
}

/// PUTs one resource at `Type/id`; whether the server accepted it.
pub async fn try_put(base: &str, resource: &Value) -> bool {
    let url = format!(
        "{base}/{}/{}",
        resource["resourceType"].as_str().unwrap(),
        resource["id"].as_str().unwrap()
    );
    let response =
        patiently(fhir_request(reqwest::Method::PUT, &url).body(resource.to_string())).await;
    response.status().is_success()
}

/// GETs a FHIR resource or Bundle; panics unless the server answers 2xx.
pub async fn get_json(url: &str) -> Value {
    let response = patiently(fhir_request(reqwest::Method::GET, url)).await;
    let status = response.status();
    assert!(status.is_success(), "{url}: HTTP {status}");
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

/// DELETEs a resource; panics unless the server answers 2xx.
pub async fn delete(url: &str) {
    let response = patiently(fhir_request(reqwest::Method::DELETE, url)).await;
    let status = response.status();
    assert!(status.is_success(), "DELETE {url}: HTTP {status}");
}

/// Every resource of a search, following its `next` links.
pub async fn search_all(url: &str) -> Vec<Value> {
    let mut found = Vec::new();
    let mut url = url.to_owned();
    loop {
        let page = get_json(&url).await;
        for entry in page["entry"].as_array().into_iter().flatten() {
            if entry["search"]["mode"] != "outcome" {
                found.push(entry["resource"].clone());
            }
        }
        match page["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
        {
            Some(next) => url = next["url"].as_str().unwrap().to_owned(),
            None => return found,
        }
    }
}

/// The job's DetectedIssues on the server, by identifier value; fails on a duplicate.
pub async fn our_issues(base: &str) -> std::collections::BTreeMap<String, Value> {
    let mut found = std::collections::BTreeMap::new();
    // `|` percent-encoded: servers on Tomcat (HAPI) refuse it raw in a request line.
    let url = format!("{base}/DetectedIssue?identifier={FLAG_SYSTEM}%7C&_count=500");
    for issue in search_all(&url).await {
        let identifier = issue["identifier"][0]["value"].as_str().unwrap().to_owned();
        let previous = found.insert(identifier.clone(), issue);
        assert!(previous.is_none(), "duplicate DetectedIssue {identifier}");
    }
    found
}

/// The patient id a DetectedIssue is about.
pub fn patient_of(issue: &Value) -> &str {
    issue["patient"]["reference"]
        .as_str()
        .unwrap()
        .trim_start_matches("Patient/")
}
