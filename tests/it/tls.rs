//! TLS as hospitals run it, against a local TLS server whose certificate authority is made in
//! the test: a server behind an internal CA is reached with `server.ca_file` (and refused
//! without it), mutual TLS presents the configured client certificate, a redirect from https
//! to http is refused, and the Authorization header never follows a redirect to another origin.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tare_marker_monitor::config::{AuthMethod, ServerConfig};
use tare_marker_monitor::fhir::client::FhirClient;
use tare_marker_monitor::fhir::error::chain;

/// A certificate authority made for one test, and certificates it signs.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (DNS names or IP addresses), and its key, in PEM.
    fn sign(&self, names: &[&str], common_name: &str) -> (String, String) {
        self.sign_valid(names, common_name, true)
    }

    /// `sign`, or a certificate that expired in 2021 when `valid` is false.
    fn sign_valid(&self, names: &[&str], common_name: &str, valid: bool) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        if !valid {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn certificates(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    rustls::pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes())
        .map(|c| c.unwrap())
        .collect()
}

fn private_key(pem: &str) -> rustls::pki_types::PrivateKeyDer<'static> {
    rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap()
}

/// What a request to the test server carried.
#[derive(Debug, Clone, Default)]
struct Seen {
    authorization: Option<String>,
    client_certificate: bool,
}

/// A TLS server on 127.0.0.1 that answers every request with `answer` (status line and
/// headers, then a body), optionally requiring a client certificate signed by `client_ca`.
struct TlsServer {
    base: String,
    requests: Arc<AtomicUsize>,
    /// TCP connections accepted (each try of a client: a refused handshake included).
    connections: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn tls_server(ca: &TestCa, client_ca: Option<&TestCa>, answer: String) -> TlsServer {
    let (cert, key) = ca.sign(&["127.0.0.1", "localhost"], "test FHIR server");
    tls_server_with(cert, key, client_ca, answer)
}

fn tls_server_with(
    cert: String,
    key: String,
    client_ca: Option<&TestCa>,
    answer: String,
) -> TlsServer {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(client_ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certificates(&client_ca.pem) {
                roots.add(c).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = Arc::new(
        builder
            .with_single_cert(certificates(&cert), private_key(&key))
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let requests = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (counter, record, accepted) = (requests.clone(), seen.clone(), connections.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(20) {
            let Ok(stream) = stream else { continue };
            accepted.fetch_add(1, Ordering::SeqCst);
            let connection = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(connection, stream);
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            // A client that refuses our certificate ends here, with a failed read.
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            if request.is_empty() {
                continue;
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let text = String::from_utf8_lossy(&request).to_lowercase();
            record.lock().unwrap().push(Seen {
                authorization: text
                    .lines()
                    .find_map(|l| l.strip_prefix("authorization: ").map(str::to_owned)),
                client_certificate: tls.conn.peer_certificates().is_some(),
            });
            let _ = tls.write_all(answer.as_bytes());
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    TlsServer {
        base,
        requests,
        connections,
        seen,
    }
}

fn empty_bundle_answer() -> String {
    let body = r#"{"resourceType":"Bundle","type":"searchset","entry":[]}"#;
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn redirect_to(location: &str) -> String {
    format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
}

fn write_file(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

async fn read_a_page(base: &str, settings: &ServerConfig) -> Result<(), String> {
    let client = FhirClient::new(base, settings).map_err(|e| e.to_string())?;
    client
        .page(&format!("{base}/Patient"))
        .await
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn a_server_behind_an_internal_ca_is_reached_with_its_ca_file_only() {
    let ca = TestCa::new("Hospital internal CA");
    let server = tls_server(&ca, None, empty_bundle_answer());
    let error = read_a_page(&server.base, &ServerConfig::default())
        .await
        .unwrap_err();
    assert!(error.contains("Transport"), "{error}");
    assert_eq!(server.requests.load(Ordering::SeqCst), 0);

    let dir = tempfile::tempdir().unwrap();
    let settings = ServerConfig {
        ca_file: Some(write_file(&dir, "ca.pem", &ca.pem)),
        ..ServerConfig::default()
    };
    read_a_page(&server.base, &settings).await.unwrap();
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn mutual_tls_presents_the_configured_client_certificate() {
    let ca = TestCa::new("Hospital internal CA");
    let clients = TestCa::new("Hospital client CA");
    let server = tls_server(&ca, Some(&clients), empty_bundle_answer());
    let dir = tempfile::tempdir().unwrap();
    let mut settings = ServerConfig {
        ca_file: Some(write_file(&dir, "ca.pem", &ca.pem)),
        ..ServerConfig::default()
    };
    assert!(read_a_page(&server.base, &settings).await.is_err());

    let (cert, key) = clients.sign(&["tare-marker-monitor"], "tare-marker-monitor");
    settings.client_cert_file = Some(write_file(&dir, "client.pem", &cert));
    settings.client_key_file = Some(write_file(&dir, "client.key", &key));
    read_a_page(&server.base, &settings).await.unwrap();
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].client_certificate);
}

#[test]
fn a_client_certificate_without_its_key_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let settings = ServerConfig {
        client_cert_file: Some(write_file(&dir, "client.pem", "x")),
        ..ServerConfig::default()
    };
    let error = FhirClient::new("https://127.0.0.1:1", &settings)
        .err()
        .unwrap();
    assert!(
        chain(&error)
            .contains("mutual TLS needs both server.client_cert_file and server.client_key_file"),
        "{error}"
    );
}

#[tokio::test]
async fn a_redirect_from_https_to_http_is_refused() {
    let plain = TcpListener::bind("127.0.0.1:0").unwrap();
    let plain_url = format!(
        "http://127.0.0.1:{}/Patient",
        plain.local_addr().unwrap().port()
    );
    plain.set_nonblocking(true).unwrap();
    let ca = TestCa::new("Hospital internal CA");
    let server = tls_server(&ca, None, redirect_to(&plain_url));
    let dir = tempfile::tempdir().unwrap();
    let settings = ServerConfig {
        ca_file: Some(write_file(&dir, "ca.pem", &ca.pem)),
        ..ServerConfig::default()
    };
    let error = read_a_page(&server.base, &settings).await.unwrap_err();
    assert!(
        error.contains("a redirect was refused: plain http to 127.0.0.1 after https"),
        "{error}"
    );
    assert!(
        plain.accept().is_err(),
        "nothing reached the plain http server"
    );
}

#[tokio::test]
async fn the_token_does_not_follow_a_redirect_to_another_origin() {
    let ca = TestCa::new("Hospital internal CA");
    let elsewhere = tls_server(&ca, None, empty_bundle_answer());
    let home = tls_server(
        &ca,
        None,
        redirect_to(&format!("{}/Patient", elsewhere.base)),
    );
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("TMM_TEST_TOKEN_TLS_REDIRECT", "s3cret-tls");
    let mut settings = ServerConfig {
        ca_file: Some(write_file(&dir, "ca.pem", &ca.pem)),
        ..ServerConfig::default()
    };
    settings.auth.method = AuthMethod::Bearer;
    settings.auth.token_env = Some("TMM_TEST_TOKEN_TLS_REDIRECT".into());
    read_a_page(&home.base, &settings).await.unwrap();
    let at_home = home.seen.lock().unwrap().clone();
    let away = elsewhere.seen.lock().unwrap().clone();
    assert_eq!(
        at_home[0].authorization.as_deref(),
        Some("bearer s3cret-tls")
    );
    assert_eq!(away.len(), 1);
    assert_eq!(away[0].authorization, None);
}

#[tokio::test]
async fn a_next_link_from_https_to_http_is_refused_even_to_this_machine() {
    let plain = TcpListener::bind("127.0.0.1:0").unwrap();
    let next = format!(
        "http://127.0.0.1:{}/Patient?page=2",
        plain.local_addr().unwrap().port()
    );
    plain.set_nonblocking(true).unwrap();
    let body = format!(
        r#"{{"resourceType":"Bundle","type":"searchset","link":[{{"relation":"next","url":"{next}"}}]}}"#
    );
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let ca = TestCa::new("Hospital internal CA");
    let server = tls_server(&ca, None, answer);
    let dir = tempfile::tempdir().unwrap();
    let settings = ServerConfig {
        ca_file: Some(write_file(&dir, "ca.pem", &ca.pem)),
        allow_insecure_http: true,
        ..ServerConfig::default()
    };
    let client = FhirClient::new(&server.base, &settings).unwrap();
    let error = client
        .search_all(
            reqwest::Url::parse(&format!("{}/Patient", server.base)).unwrap(),
            |_| {},
        )
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "Patient search on 127.0.0.1 (a URL the server named): plain http to 127.0.0.1 after https would send patient data unencrypted: a server reached over https cannot send the job to plain http"
    );
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    assert!(
        plain.accept().is_err(),
        "nothing reached the plain http server"
    );
}

/// What `run` against a server whose certificate this machine refuses prints and exits with,
/// and how many connections it made (`ca` given as `server.ca_file` when set).
fn run_against(server: &TlsServer, ca_file: Option<&std::path::Path>) -> (Option<i32>, String) {
    let work = tempfile::tempdir().unwrap();
    let config = match ca_file {
        Some(path) => format!("[server]\nca_file = {:?}\n", path.display().to_string()),
        None => String::new(),
    };
    let config_path = write_file(&work, "config.toml", &config);
    let output = std::process::Command::new(assert_cmd::cargo::cargo_bin("tare-marker-monitor"))
        .args([
            "-q",
            "run",
            "--server",
            &server.base,
            "--as-of",
            "2026-11-01",
        ])
        .arg("--config")
        .arg(&config_path)
        .arg("--out")
        .arg(work.path().join("out"))
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A refused certificate ends the run at once: exit 3, one line under 200 characters naming
/// the request, the host and what to do, after one connection (no retry).
fn refused_at_once(server: &TlsServer, ca_file: Option<&std::path::Path>, advice: &str) {
    let (code, stderr) = run_against(server, ca_file);
    assert_eq!(code, Some(3), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let line = stderr.trim_end();
    assert!(line.len() < 200, "{} characters: {line}", line.len());
    assert_eq!(
        line,
        format!("error: CapabilityStatement on 127.0.0.1: TLS: {advice} (not retried)")
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 1, "retried");
    assert_eq!(server.requests.load(Ordering::SeqCst), 0);
}

#[test]
fn a_certificate_of_an_unknown_issuer_is_not_retried_and_says_to_set_ca_file() {
    let ca = TestCa::new("Hospital internal CA");
    let server = tls_server(&ca, None, empty_bundle_answer());
    refused_at_once(
        &server,
        None,
        "its certificate is not signed by a trusted CA: set server.ca_file to the PEM file of that CA",
    );
}

#[test]
fn an_expired_certificate_is_not_retried_and_says_to_renew_it() {
    let ca = TestCa::new("Hospital internal CA");
    let (cert, key) = ca.sign_valid(&["127.0.0.1"], "test FHIR server", false);
    let server = tls_server_with(cert, key, None, empty_bundle_answer());
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write_file(&dir, "ca.pem", &ca.pem);
    refused_at_once(
        &server,
        Some(&ca_file),
        "its certificate has expired: have it renewed (or check this machine's clock)",
    );
}

#[test]
fn a_client_certificate_the_server_refuses_is_not_retried_and_says_what_to_set() {
    let ca = TestCa::new("Hospital internal CA");
    let clients = TestCa::new("Hospital client CA");
    let server = tls_server(&ca, Some(&clients), empty_bundle_answer());
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write_file(&dir, "ca.pem", &ca.pem);
    refused_at_once(
        &server,
        Some(&ca_file),
        "the server refused the client certificate (or its absence): check server.client_cert_file and client_key_file",
    );
}

#[test]
fn a_certificate_for_another_name_is_not_retried_and_says_which_name_to_use() {
    let ca = TestCa::new("Hospital internal CA");
    let (cert, key) = ca.sign(&["fhir.example.org"], "test FHIR server");
    let server = tls_server_with(cert, key, None, empty_bundle_answer());
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write_file(&dir, "ca.pem", &ca.pem);
    refused_at_once(
        &server,
        Some(&ca_file),
        "its certificate is for another host name: use the name it was issued for in the server URL",
    );
}
