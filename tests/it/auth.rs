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

/// SMART settings with `private_key` (in fixtures/auth) and the token endpoint, when given
/// (else it is discovered).
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

/// Serves `response` to `verb` requests at `at`, the first `times` of them when given.
async fn answer(
    server: &MockServer,
    verb: &str,
    at: &str,
    response: ResponseTemplate,
    times: Option<u64>,
) {
    let mock = Mock::given(method(verb))
        .and(path(at))
        .respond_with(response);
    match times {
        Some(n) => mock.up_to_n_times(n).mount(server).await,
        None => mock.mount(server).await,
    }
}

/// The FHIR base of the mock server, `/fhir`, whose Patient search answers an empty Bundle.
async fn fhir_base(server: &MockServer) -> String {
    answer(server, "GET", "/fhir/Patient", empty_bundle(), None).await;
    format!("{}/fhir", server.uri())
}

/// One search of `/fhir/Patient` with `settings`.
async fn read_patients(server: &MockServer, settings: &ServerConfig) -> Result<(), FhirError> {
    let client = FhirClient::new(&fhir_base(server).await, settings)?;
    client
        .page(&format!("{}/fhir/Patient", server.uri()))
        .await
        .map(|_| ())
}

/// The token endpoint of the mock server.
fn token_endpoint(server: &MockServer) -> String {
    format!("{}/token", server.uri())
}

/// The requests the server received at `at`, in order.
async fn requests_to(server: &MockServer, at: &str) -> Vec<Request> {
    let requests = server.received_requests().await.unwrap();
    requests
        .into_iter()
        .filter(|r| r.url.path() == at)
        .collect()
}

fn authorization(request: &Request) -> &str {
    request
        .headers
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap()
}

fn form(request: &Request) -> std::collections::HashMap<String, String> {
    url::form_urlencoded::parse(&request.body)
        .into_owned()
        .collect()
}

/// The assertion of a token request, verified with `public_key` for `audience`.
fn verified_assertion(
    request: &Request,
    public_key: &str,
    algorithm: Algorithm,
    audience: &str,
) -> jsonwebtoken::TokenData<Value> {
    let pem = std::fs::read(key(public_key)).unwrap();
    let decoding = match algorithm {
        Algorithm::RS384 => DecodingKey::from_rsa_pem(&pem).unwrap(),
        _ => DecodingKey::from_ec_pem(&pem).unwrap(),
    };
    let mut validation = Validation::new(algorithm);
    validation.set_audience(&[audience]);
    jsonwebtoken::decode::<Value>(&form(request)["client_assertion"], &decoding, &validation)
        .unwrap()
}

fn check_assertion(request: &Request, public_key: &str, algorithm: Algorithm, audience: &str) {
    let fields = form(request);
    assert_eq!(fields["grant_type"], "client_credentials");
    assert_eq!(
        fields["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    let decoded = verified_assertion(request, public_key, algorithm, audience);
    assert_eq!(decoded.header.kid.as_deref(), Some("key-1"));
    assert_eq!(decoded.claims["iss"], "tare-monitor-client");
    assert_eq!(decoded.claims["sub"], "tare-monitor-client");
    assert!(decoded.claims["jti"].as_str().unwrap().len() >= 16);
}

#[tokio::test]
async fn rs384_assertion_token_is_cached_and_sent() {
    let server = MockServer::start().await;
    answer(&server, "POST", "/token", token("tok-1"), None).await;
    let endpoint = token_endpoint(&server);
    let client = FhirClient::new(
        &fhir_base(&server).await,
        &settings(Some(endpoint.clone()), "RS384", "test-rs384-private.pem"),
    )
    .unwrap();
    for _ in 0..2 {
        client
            .page(&format!("{}/fhir/Patient", server.uri()))
            .await
            .unwrap();
    }
    let tokens = requests_to(&server, "/token").await;
    assert_eq!(tokens.len(), 1, "the token is cached");
    check_assertion(
        &tokens[0],
        "test-rs384-public.pem",
        Algorithm::RS384,
        &endpoint,
    );
    for fhir in requests_to(&server, "/fhir/Patient").await {
        assert_eq!(authorization(&fhir), "Bearer tok-1");
    }
}

#[tokio::test]
async fn es384_token_endpoint_is_discovered_from_smart_configuration() {
    let server = MockServer::start().await;
    let endpoint = format!("{}/oauth/token", server.uri());
    let configuration =
        ResponseTemplate::new(200).set_body_json(json!({"token_endpoint": endpoint}));
    answer(
        &server,
        "GET",
        "/fhir/.well-known/smart-configuration",
        configuration,
        None,
    )
    .await;
    answer(&server, "POST", "/oauth/token", token("tok-ec"), None).await;
    read_patients(&server, &settings(None, "ES384", "test-es384-private.pem"))
        .await
        .unwrap();
    check_assertion(
        &requests_to(&server, "/oauth/token").await[0],
        "test-es384-public.pem",
        Algorithm::ES384,
        &endpoint,
    );
    assert_eq!(
        authorization(&requests_to(&server, "/fhir/Patient").await[0]),
        "Bearer tok-ec"
    );
}

#[tokio::test]
async fn a_discovered_token_endpoint_in_plain_http_elsewhere_is_refused() {
    let server = MockServer::start().await;
    let endpoint = "http://auth.example.invalid/token";
    let configuration =
        ResponseTemplate::new(200).set_body_json(json!({"token_endpoint": endpoint}));
    answer(
        &server,
        "GET",
        "/fhir/.well-known/smart-configuration",
        configuration,
        None,
    )
    .await;
    let error = read_patients(&server, &settings(None, "ES384", "test-es384-private.pem"))
        .await
        .err()
        .unwrap();
    assert!(matches!(error, FhirError::RefusedLink { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("(a URL the server named): plain http to auth.example.invalid"),
        "{error}"
    );
    assert!(requests_to(&server, "/fhir/Patient").await.is_empty());
}

#[tokio::test]
async fn a_401_renews_the_token_once() {
    let server = MockServer::start().await;
    answer(&server, "POST", "/token", token("tok-old"), Some(1)).await;
    answer(&server, "POST", "/token", token("tok-new"), None).await;
    answer(
        &server,
        "GET",
        "/fhir/Patient",
        ResponseTemplate::new(401),
        Some(1),
    )
    .await;
    let endpoint = token_endpoint(&server);
    read_patients(
        &server,
        &settings(Some(endpoint), "RS384", "test-rs384-private.pem"),
    )
    .await
    .unwrap();
    let fhir = requests_to(&server, "/fhir/Patient").await;
    assert_eq!(fhir.len(), 2);
    assert_eq!(authorization(&fhir[0]), "Bearer tok-old");
    assert_eq!(authorization(&fhir[1]), "Bearer tok-new");
}

#[tokio::test]
async fn a_failing_token_endpoint_is_a_clear_error_without_secrets() {
    let server = MockServer::start().await;
    let refusal = ResponseTemplate::new(400).set_body_json(
        json!({"error": "invalid_client", "error_description": "unknown key\nid key-1"}),
    );
    answer(&server, "POST", "/token", refusal, None).await;
    let endpoint = token_endpoint(&server);
    let error = read_patients(
        &server,
        &settings(Some(endpoint.clone()), "RS384", "test-rs384-private.pem"),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, FhirError::Token { .. }), "{error}");
    assert_eq!(
        chain(&error),
        format!("cannot get an access token from {endpoint}: HTTP 400 invalid_client: unknown key id key-1")
    );
    // No FHIR request went out without a token.
    assert!(requests_to(&server, "/fhir/Patient").await.is_empty());
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
    answer(
        &server,
        "POST",
        "/token",
        ResponseTemplate::new(503),
        Some(1),
    )
    .await;
    answer(&server, "POST", "/token", token("tok-2"), None).await;
    let endpoint = token_endpoint(&server);
    read_patients(
        &server,
        &settings(Some(endpoint), "RS384", "test-rs384-private.pem"),
    )
    .await
    .unwrap();
    let tokens = requests_to(&server, "/token").await;
    assert_eq!(tokens.len(), 2);
    // A fresh assertion each time: never a replayed jti.
    assert_ne!(
        form(&tokens[0])["client_assertion"],
        form(&tokens[1])["client_assertion"]
    );
}

/// A token endpoint that answers `tok-jwks`, and a FHIR search read with the given key settings;
/// returns the token request and the token endpoint (the assertion's audience).
async fn token_request_with(algorithm: &str, key_id: Option<&str>) -> (Request, String) {
    let server = MockServer::start().await;
    answer(&server, "POST", "/token", token("tok-jwks"), None).await;
    let endpoint = token_endpoint(&server);
    let mut config = settings(Some(endpoint.clone()), algorithm, "test-private.jwks.json");
    config.auth.key_id = key_id.map(str::to_owned);
    read_patients(&server, &config).await.unwrap();
    let request = requests_to(&server, "/token").await.remove(0);
    (request, endpoint)
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
    let decoded = verified_assertion(
        &request,
        "test-es384-public.pem",
        Algorithm::ES384,
        &audience,
    );
    assert_eq!(decoded.header.kid.as_deref(), Some("key-2"));
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
    let discovery = "/fhir/.well-known/smart-configuration";
    answer(
        &server,
        "GET",
        discovery,
        ResponseTemplate::new(503),
        Some(1),
    )
    .await;
    let configuration = ResponseTemplate::new(200)
        .set_body_json(json!({"token_endpoint": token_endpoint(&server)}));
    answer(&server, "GET", discovery, configuration, None).await;
    answer(&server, "POST", "/token", token("tok-3"), None).await;
    read_patients(&server, &settings(None, "RS384", "test-rs384-private.pem"))
        .await
        .unwrap();
    assert_eq!(requests_to(&server, discovery).await.len(), 2);
    assert_eq!(
        authorization(&requests_to(&server, "/fhir/Patient").await[0]),
        "Bearer tok-3"
    );
}
