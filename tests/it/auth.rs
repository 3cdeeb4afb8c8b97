//! SMART Backend Services against a mock authorization server: the client assertion is a JWT
//! signed with the configured key and names the token endpoint; the token is fetched once,
//! cached, sent to the FHIR server, renewed once on a 401; a failing token endpoint is a clear
//! error that holds no secret.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};
use std::path::Path;
use tare_marker_monitor::config::{AuthMethod, ServerConfig};
use tare_marker_monitor::fhir::client::{FhirClient, FhirError};
use tare_marker_monitor::fhir::error::chain;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

fn key(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/auth")
        .join(name)
}

fn settings(token_endpoint: Option<String>, algorithm: &str, private_key: &str) -> ServerConfig {
    let mut settings = ServerConfig::default();
    settings.auth.method = AuthMethod::SmartBackend;
    settings.auth.client_id = Some("tare-monitor-client".into());
    settings.auth.private_key_file = Some(key(private_key));
    settings.auth.key_id = Some("key-1".into());
    settings.auth.algorithm = algorithm.into();
    settings.auth.token_endpoint = token_endpoint;
    settings
}

fn empty_bundle() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(
        json!({"resourceType": "Bundle", "type": "searchset"}).to_string(),
        "application/fhir+json",
    )
}

fn token(value: &str) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(json!({"access_token": value, "token_type": "bearer", "expires_in": 300}))
}

fn form(request: &Request) -> std::collections::HashMap<String, String> {
    url::form_urlencoded::parse(&request.body)
        .into_owned()
        .collect()
}

fn check_assertion(request: &Request, public_key: &str, algorithm: Algorithm, audience: &str) {
    let fields = form(request);
    assert_eq!(fields["grant_type"], "client_credentials");
    assert_eq!(
        fields["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    let pem = std::fs::read(key(public_key)).unwrap();
    let decoding = match algorithm {
        Algorithm::RS384 => DecodingKey::from_rsa_pem(&pem).unwrap(),
        _ => DecodingKey::from_ec_pem(&pem).unwrap(),
    };
    let mut validation = Validation::new(algorithm);
    validation.set_audience(&[audience]);
    let decoded =
        jsonwebtoken::decode::<Value>(&fields["client_assertion"], &decoding, &validation).unwrap();
    assert_eq!(decoded.header.kid.as_deref(), Some("key-1"));
    assert_eq!(decoded.claims["iss"], "tare-monitor-client");
    assert_eq!(decoded.claims["sub"], "tare-monitor-client");
    assert!(decoded.claims["jti"].as_str().unwrap().len() >= 16);
}

#[tokio::test]
async fn rs384_assertion_token_is_cached_and_sent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(token("tok-1"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient"))
        .respond_with(empty_bundle())
        .mount(&server)
        .await;
    let endpoint = format!("{}/token", server.uri());
    let client = FhirClient::new(
        &format!("{}/fhir", server.uri()),
        &settings(Some(endpoint.clone()), "RS384", "test-rs384-private.pem"),
    )
    .unwrap();
    for _ in 0..2 {
        client
            .page(&format!("{}/fhir/Patient", server.uri()))
            .await
            .unwrap();
    }
    let requests = server.received_requests().await.unwrap();
    let token_requests: Vec<&Request> = requests
        .iter()
        .filter(|r| r.url.path() == "/token")
        .collect();
    assert_eq!(token_requests.len(), 1, "the token is cached");
    check_assertion(
        token_requests[0],
        "test-rs384-public.pem",
        Algorithm::RS384,
        &endpoint,
    );
    for fhir in requests.iter().filter(|r| r.url.path() == "/fhir/Patient") {
        assert_eq!(fhir.headers.get("authorization").unwrap(), "Bearer tok-1");
    }
}

#[tokio::test]
async fn es384_token_endpoint_is_discovered_from_smart_configuration() {
    let server = MockServer::start().await;
    let endpoint = format!("{}/oauth/token", server.uri());
    Mock::given(method("GET"))
        .and(path("/fhir/.well-known/smart-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"token_endpoint": endpoint})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token("tok-ec"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient"))
        .respond_with(empty_bundle())
        .mount(&server)
        .await;
    let client = FhirClient::new(
        &format!("{}/fhir", server.uri()),
        &settings(None, "ES384", "test-es384-private.pem"),
    )
    .unwrap();
    client
        .page(&format!("{}/fhir/Patient", server.uri()))
        .await
        .unwrap();
    let requests = server.received_requests().await.unwrap();
    let token_request = requests
        .iter()
        .find(|r| r.url.path() == "/oauth/token")
        .unwrap();
    check_assertion(
        token_request,
        "test-es384-public.pem",
        Algorithm::ES384,
        &endpoint,
    );
    let fhir = requests
        .iter()
        .find(|r| r.url.path() == "/fhir/Patient")
        .unwrap();
    assert_eq!(fhir.headers.get("authorization").unwrap(), "Bearer tok-ec");
}

#[tokio::test]
async fn a_401_renews_the_token_once() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(token("tok-old"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(token("tok-new"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient"))
        .respond_with(ResponseTemplate::new(401))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient"))
        .respond_with(empty_bundle())
        .mount(&server)
        .await;
    let client = FhirClient::new(
        &format!("{}/fhir", server.uri()),
        &settings(
            Some(format!("{}/token", server.uri())),
            "RS384",
            "test-rs384-private.pem",
        ),
    )
    .unwrap();
    client
        .page(&format!("{}/fhir/Patient", server.uri()))
        .await
        .unwrap();
    let requests = server.received_requests().await.unwrap();
    let fhir: Vec<&Request> = requests
        .iter()
        .filter(|r| r.url.path() == "/fhir/Patient")
        .collect();
    assert_eq!(fhir.len(), 2);
    assert_eq!(
        fhir[0].headers.get("authorization").unwrap(),
        "Bearer tok-old"
    );
    assert_eq!(
        fhir[1].headers.get("authorization").unwrap(),
        "Bearer tok-new"
    );
}

#[tokio::test]
async fn a_failing_token_endpoint_is_a_clear_error_without_secrets() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_client"})))
        .mount(&server)
        .await;
    let endpoint = format!("{}/token", server.uri());
    let client = FhirClient::new(
        &format!("{}/fhir", server.uri()),
        &settings(Some(endpoint.clone()), "RS384", "test-rs384-private.pem"),
    )
    .unwrap();
    let error = client
        .page(&format!("{}/fhir/Patient", server.uri()))
        .await
        .err()
        .unwrap();
    assert!(matches!(error, FhirError::Token { .. }), "{error}");
    let text = chain(&error);
    assert_eq!(
        text,
        format!("cannot get an access token from {endpoint}: HTTP 400 invalid_client")
    );
    // No FHIR request went out without a token.
    let requests = server.received_requests().await.unwrap();
    assert!(requests.iter().all(|r| r.url.path() == "/token"));
}

#[test]
fn a_wrong_key_file_is_a_configuration_error() {
    let error = FhirClient::new(
        "http://127.0.0.1:1/fhir",
        &settings(None, "ES384", "test-rs384-private.pem"),
    )
    .err()
    .unwrap();
    assert!(matches!(error, FhirError::Credentials(_)));
    assert!(
        chain(&error).contains("is not a PEM private key for ES384"),
        "{error}"
    );
}

#[tokio::test]
async fn a_503_from_the_token_endpoint_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(token("tok-2"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient"))
        .respond_with(empty_bundle())
        .mount(&server)
        .await;
    let client = FhirClient::new(
        &format!("{}/fhir", server.uri()),
        &settings(
            Some(format!("{}/token", server.uri())),
            "RS384",
            "test-rs384-private.pem",
        ),
    )
    .unwrap();
    client
        .page(&format!("{}/fhir/Patient", server.uri()))
        .await
        .unwrap();
    let requests = server.received_requests().await.unwrap();
    let tokens: Vec<&Request> = requests
        .iter()
        .filter(|r| r.url.path() == "/token")
        .collect();
    assert_eq!(tokens.len(), 2);
    // A fresh assertion each time: never a replayed jti.
    assert_ne!(
        form(tokens[0])["client_assertion"],
        form(tokens[1])["client_assertion"]
    );
}

/// A token endpoint that answers `tok-jwks`, and a FHIR search read with the given key settings;
/// returns the token request and the token endpoint (the assertion's audience).
async fn token_request_with(algorithm: &str, key_id: Option<&str>) -> (Request, String) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(token("tok-jwks"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient"))
        .respond_with(empty_bundle())
        .mount(&server)
        .await;
    let mut config = settings(
        Some(format!("{}/token", server.uri())),
        algorithm,
        "test-private.jwks.json",
    );
    config.auth.key_id = key_id.map(str::to_owned);
    let client = FhirClient::new(&format!("{}/fhir", server.uri()), &config).unwrap();
    client
        .page(&format!("{}/fhir/Patient", server.uri()))
        .await
        .unwrap();
    let requests = server.received_requests().await.unwrap();
    let request = requests
        .into_iter()
        .find(|r| r.url.path() == "/token")
        .unwrap();
    (request, format!("{}/token", server.uri()))
}

fn assertion_header(request: &Request) -> jsonwebtoken::Header {
    jsonwebtoken::decode_header(&form(request)["client_assertion"]).unwrap()
}

#[tokio::test]
async fn an_rs384_key_from_a_jwk_set_signs_the_assertion() {
    let (request, audience) = token_request_with("RS384", Some("key-1")).await;
    check_assertion(
        &request,
        "test-rs384-public.pem",
        Algorithm::RS384,
        &audience,
    );
}

#[tokio::test]
async fn an_es384_key_from_a_jwk_set_is_chosen_by_type_and_keeps_its_kid() {
    // No key_id configured: the set's only EC key is used, with its own kid in the header.
    let (request, audience) = token_request_with("ES384", None).await;
    assert_eq!(assertion_header(&request).kid.as_deref(), Some("key-2"));
    let pem = std::fs::read(key("test-es384-public.pem")).unwrap();
    let mut validation = Validation::new(Algorithm::ES384);
    validation.set_audience(&[audience]);
    jsonwebtoken::decode::<Value>(
        &form(&request)["client_assertion"],
        &DecodingKey::from_ec_pem(&pem).unwrap(),
        &validation,
    )
    .unwrap();
}

#[test]
fn a_jwk_set_without_the_configured_kid_is_a_configuration_error() {
    let mut config = settings(None, "RS384", "test-private.jwks.json");
    config.auth.key_id = Some("key-9".into());
    let error = FhirClient::new("http://127.0.0.1:1/fhir", &config)
        .err()
        .unwrap();
    assert!(matches!(error, FhirError::Credentials(_)));
    assert!(
        chain(&error).ends_with("test-private.jwks.json: no private RSA key with kid \"key-9\""),
        "{error}"
    );
}

#[tokio::test]
async fn a_503_from_smart_configuration_discovery_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/fhir/.well-known/smart-configuration"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/.well-known/smart-configuration"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"token_endpoint": format!("{}/token", server.uri())})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(token("tok-3"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient"))
        .respond_with(empty_bundle())
        .mount(&server)
        .await;
    let client = FhirClient::new(
        &format!("{}/fhir", server.uri()),
        &settings(None, "RS384", "test-rs384-private.pem"),
    )
    .unwrap();
    client
        .page(&format!("{}/fhir/Patient", server.uri()))
        .await
        .unwrap();
    let requests = server.received_requests().await.unwrap();
    let discovery = requests
        .iter()
        .filter(|r| r.url.path().ends_with("smart-configuration"))
        .count();
    assert_eq!(discovery, 2);
    let fhir = requests
        .iter()
        .find(|r| r.url.path() == "/fhir/Patient")
        .unwrap();
    assert_eq!(fhir.headers.get("authorization").unwrap(), "Bearer tok-3");
}
