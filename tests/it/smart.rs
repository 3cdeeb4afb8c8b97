//! SMART Backend Services against an authorization server we did not write: SEKMET (PyPI
//! `sekmet-fhir`), a FHIR server whose token endpoint verifies the client assertion's signature
//! against the public key registered for the client, its claims (`aud` = the token endpoint,
//! `iss` = `sub`, `exp` at most five minutes ahead), that its `jti` is used once only, and the
//! scopes asked for. `.ci/run` installs it and names the program in TMM_TEST_SEKMET; each test
//! starts a private instance.

use crate::helpers::{binary, demo, read, write_folder};
use crate::servers::{configured, free_port};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use tare_marker_monitor::config::{AuthMethod, ServerConfig};
use tare_marker_monitor::fhir::auth::Credentials;

const PATIENT: &str = "demo-01-seed-partial-response";

struct Sekmet {
    /// The FHIR base, `http://127.0.0.1:PORT/fhir`.
    base: String,
    /// The token endpoint its SMART configuration names.
    token_endpoint: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Sekmet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fixture_key(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/auth")
        .join(name)
}

/// A private SEKMET with two SMART clients: `tmm-rs384` (our RSA public key, read and write)
/// and `tmm-es384` (our P-384 public key, read only).
async fn start_sekmet() -> Option<Sekmet> {
    let program = configured("TMM_TEST_SEKMET")?;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}/fhir");
    let settings = format!(
        "base_url: {base}\nhost: 127.0.0.1\nport: {port}\ndata_dir: {data:?}\n\
         simulator:\n  enabled: false\n\
         server_auth:\n  types: [smart]\n  smart_clients:\n\
         \x20   - client_id: tmm-rs384\n      public_key_path: {rs:?}\n      scopes: \"system/*.read system/*.write\"\n\
         \x20   - client_id: tmm-es384\n      public_key_path: {es:?}\n      scopes: \"system/*.read\"\n",
        data = dir.path().join("data"),
        rs = fixture_key("test-rs384-public.pem"),
        es = fixture_key("test-es384-public.pem"),
    );
    let settings_file = dir.path().join("settings.yaml");
    std::fs::write(&settings_file, settings).unwrap();
    let child = std::process::Command::new(program)
        .arg("serve")
        .arg("--config")
        .arg(&settings_file)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut sekmet = Sekmet {
        base,
        token_endpoint: String::new(),
        child,
        dir,
    };
    let discovery = format!("{}/.well-known/smart-configuration", sekmet.base);
    for _ in 0..120 {
        if let Ok(response) = reqwest::get(&discovery).await {
            if response.status().is_success() {
                let configuration: Value =
                    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
                sekmet.token_endpoint =
                    configuration["token_endpoint"].as_str().unwrap().to_owned();
                return Some(sekmet);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    panic!("SEKMET on {} did not answer its discovery", sekmet.base);
}

/// The job's SMART settings for a client, key file and algorithm.
fn smart_settings(client_id: &str, key: &Path, algorithm: &str) -> ServerConfig {
    let mut settings = ServerConfig::default();
    settings.auth.method = AuthMethod::SmartBackend;
    settings.auth.client_id = Some(client_id.into());
    settings.auth.private_key_file = Some(key.to_owned());
    settings.auth.algorithm = algorithm.into();
    settings.auth.scope = "system/*.read system/*.write".into();
    settings
}

/// The same settings as a config file for the binary.
fn config_file(dir: &Path, client_id: &str, key: &Path, algorithm: &str) -> PathBuf {
    let path = dir.join(format!("{client_id}-{algorithm}.toml"));
    std::fs::write(
        &path,
        format!(
            "[server.auth]\nmethod = \"smart-backend\"\nclient_id = {client_id:?}\n\
             private_key_file = {key:?}\nalgorithm = {algorithm:?}\nscope = \"system/*.read\"\n"
        ),
    )
    .unwrap();
    path
}

/// POSTs a client assertion to the token endpoint; the status and the JSON answer.
async fn exchange(token_endpoint: &str, assertion: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(token_endpoint)
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "system/*.read system/*.write"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
        ])
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let answer = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    (status, answer)
}

/// demo-01's resources, from the demo folder.
fn seed_patient_resources() -> Vec<Value> {
    let mut resources = Vec::new();
    for kind in ["Patient", "Condition", "Procedure", "Observation"] {
        let text = read(&demo(), &format!("{kind}.ndjson"));
        resources.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|r| r["id"].as_str().is_some_and(|id| id.starts_with(PATIENT))),
        );
    }
    resources
}

/// `explain` of the seed patient, as of 2026-11-01, from `source`; the process output.
fn explain(source: &[&str]) -> std::process::Output {
    binary()
        .args(["explain", "--as-of", "2026-11-01", "--patient", PATIENT])
        .args(source)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_independent_token_endpoint_accepts_our_rs384_and_es384_assertions_once_each() {
    let Some(sekmet) = start_sekmet().await else {
        return;
    };
    // An assertion the job signs (RS384) buys a token, with which the test seeds the server.
    let settings = smart_settings("tmm-rs384", &fixture_key("test-rs384-private.pem"), "RS384");
    let Credentials::Smart(backend) = Credentials::from_config(&settings.auth, &settings).unwrap()
    else {
        panic!("SMART credentials expected");
    };
    let assertion = backend.client_assertion(&sekmet.token_endpoint).unwrap();
    let (status, answer) = exchange(&sekmet.token_endpoint, &assertion).await;
    assert_eq!(status, 200, "{answer}");
    let token = answer["access_token"].as_str().unwrap();
    let http = reqwest::Client::new();
    let resources = seed_patient_resources();
    assert!(resources.len() > 5);
    for resource in &resources {
        let url = format!(
            "{}/{}/{}",
            sekmet.base,
            resource["resourceType"].as_str().unwrap(),
            resource["id"].as_str().unwrap()
        );
        let response = http
            .put(&url)
            .bearer_auth(token)
            .header("Content-Type", "application/fhir+json")
            .body(resource.to_string())
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
    }

    // The same assertion again is a replay: refused.
    let (status, answer) = exchange(&sekmet.token_endpoint, &assertion).await;
    assert_eq!(status, 401);
    assert_eq!(answer["error"], "invalid_client");
    assert_eq!(answer["error_description"], "jti has already been used");

    // The job reads with a token for each key (each run signs its own assertion) and sees
    // what the same resources give from files.
    let folder = write_folder(&resources);
    let from_files = explain(&["--source-dir", folder.path().to_str().unwrap()]);
    assert!(from_files.status.success());
    let configs = sekmet.dir.path();
    for (client, key, algorithm) in [
        ("tmm-rs384", "test-rs384-private.pem", "RS384"),
        ("tmm-es384", "test-es384-private.pem", "ES384"),
    ] {
        let config = config_file(configs, client, &fixture_key(key), algorithm);
        let output = explain(&[
            "--server",
            &sekmet.base,
            "--config",
            config.to_str().unwrap(),
        ]);
        assert!(
            output.status.success(),
            "{algorithm}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&from_files.stdout),
            "{algorithm}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_the_authorization_server_does_not_know_is_refused_with_its_reason() {
    let Some(sekmet) = start_sekmet().await else {
        return;
    };
    // A P-384 key of our own making, never registered: tmm-es384 signs with it.
    let stranger = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let key = sekmet.dir.path().join("stranger.pem");
    std::fs::write(&key, stranger.serialize_pem()).unwrap();
    let config = config_file(sekmet.dir.path(), "tmm-es384", &key, "ES384");
    let output = explain(&[
        "--server",
        &sekmet.base,
        "--config",
        config.to_str().unwrap(),
    ]);
    // Credentials refused, by the server or its token endpoint: exit 2 (README, exit codes).
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "error: cannot get an access token from {}: HTTP 401 invalid_client: client_assertion verification failed",
            sekmet.token_endpoint
        )),
        "{stderr}"
    );
    // Neither key nor assertion reaches the message.
    assert!(!stderr.contains("BEGIN"), "{stderr}");
    assert!(!stderr.contains("eyJ"), "{stderr}");
}
