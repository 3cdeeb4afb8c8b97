//! Credentials for the FHIR server: none, a static bearer token, or SMART Backend Services
//! (OAuth2 client credentials with a `private_key_jwt` client assertion signed RS384 or ES384).
//! The access token is cached and renewed a minute before it expires, and once more on a 401.
//! Neither tokens nor keys nor assertions ever reach a log or an error message.

use super::client::FhirError;
use super::jwk;
use super::retry::{send_with_retries, Answer, RetryPolicy, SendFailure};
use crate::config::{AuthConfig, AuthMethod, ServerConfig};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::HeaderValue;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;

/// Renew this long before the token expires.
const RENEW_MARGIN: Duration = Duration::from_secs(60);
/// A token or discovery answer is a few hundred bytes; more is refused.
const TOKEN_ANSWER_LIMIT: u64 = 1 << 20;
/// Lifetime of a client assertion (the SMART spec allows at most five minutes).
const ASSERTION_LIFETIME_SECS: u64 = 300;

pub enum Credentials {
    None,
    /// `Bearer ...`, marked sensitive.
    Static(HeaderValue),
    Smart(Box<SmartBackend>),
}

fn credentials_error(message: impl Into<String>) -> FhirError {
    FhirError::Credentials(message.into())
}

fn bearer(token: &str) -> Result<HeaderValue, FhirError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(credentials_error("the bearer token is empty"));
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| credentials_error("the token has characters a header cannot carry"))?;
    value.set_sensitive(true);
    Ok(value)
}

impl Credentials {
    pub fn from_config(auth: &AuthConfig, server: &ServerConfig) -> Result<Credentials, FhirError> {
        match auth.method {
            AuthMethod::None => Ok(Credentials::None),
            AuthMethod::Bearer => {
                let token = match (&auth.token_env, &auth.token_file) {
                    (Some(name), _) => std::env::var(name).map_err(|_| {
                        credentials_error(format!("environment variable {name} is not set"))
                    })?,
                    (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| {
                        credentials_error(format!("cannot read token file {}: {e}", path.display()))
                    })?,
                    (None, None) => {
                        return Err(credentials_error(
                            "server.auth.method = \"bearer\" needs token_env or token_file",
                        ))
                    }
                };
                Ok(Credentials::Static(bearer(&token)?))
            }
            AuthMethod::SmartBackend => Ok(Credentials::Smart(Box::new(
                SmartBackend::from_config(auth, server.allow_insecure_http)?,
            ))),
        }
    }
}

/// A request to the authorization server (discovery, token), retried per the policy; a
/// failure names the URL.
async fn authorization_request(
    url: &Url,
    build: impl FnMut() -> Result<reqwest::RequestBuilder, FhirError>,
) -> Result<Answer, FhirError> {
    let failed = |message: String| FhirError::Token {
        url: url.to_string(),
        message,
    };
    send_with_retries(&RetryPolicy::default(), TOKEN_ANSWER_LIMIT, build)
        .await
        .map_err(|failure| match failure {
            SendFailure::Build(error) => error,
            SendFailure::NoAnswer(e) => failed(super::client::why(e)),
            SendFailure::TooLarge { limit } => failed(format!("an answer over {limit} bytes")),
        })
}

struct CachedToken {
    header: HeaderValue,
    renew_after: Instant,
}

pub struct SmartBackend {
    client_id: String,
    key: EncodingKey,
    algorithm: Algorithm,
    key_id: Option<String>,
    scope: String,
    token_endpoint: Option<Url>,
    cached: Mutex<Option<CachedToken>>,
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    jti: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct SmartConfiguration {
    token_endpoint: String,
}

impl SmartBackend {
    fn from_config(
        auth: &AuthConfig,
        allow_insecure_http: bool,
    ) -> Result<SmartBackend, FhirError> {
        let client_id = auth
            .client_id
            .clone()
            .ok_or_else(|| credentials_error("smart-backend needs server.auth.client_id"))?;
        let key_path = auth
            .private_key_file
            .as_ref()
            .ok_or_else(|| credentials_error("smart-backend needs server.auth.private_key_file"))?;
        let bytes = std::fs::read(key_path).map_err(|e| {
            credentials_error(format!(
                "cannot read private key {}: {e}",
                key_path.display()
            ))
        })?;
        let algorithm = match auth.algorithm.as_str() {
            "RS384" => Algorithm::RS384,
            "ES384" => Algorithm::ES384,
            other => {
                return Err(credentials_error(format!(
                    "server.auth.algorithm {other:?}: use RS384 or ES384"
                )))
            }
        };
        let (key, key_id) = if jwk::looks_like_jwks(&bytes) {
            let signing = jwk::signing_key(&bytes, algorithm, auth.key_id.as_deref())
                .map_err(|why| credentials_error(format!("{}: {why}", key_path.display())))?;
            // The configured kid wins; otherwise the JWK's own.
            (signing.key, auth.key_id.clone().or(signing.key_id))
        } else {
            let key = match algorithm {
                Algorithm::RS384 => EncodingKey::from_rsa_pem(&bytes),
                _ => EncodingKey::from_ec_pem(&bytes),
            }
            .map_err(|_| {
                credentials_error(format!(
                    "{} is not a PEM private key for {}",
                    key_path.display(),
                    auth.algorithm
                ))
            })?;
            (key, auth.key_id.clone())
        };
        let token_endpoint = match &auth.token_endpoint {
            Some(url) => {
                let parsed = Url::parse(url).map_err(|e| {
                    credentials_error(format!("server.auth.token_endpoint {url:?}: {e}"))
                })?;
                super::client::check_transport(&parsed, allow_insecure_http).map_err(|e| {
                    credentials_error(format!("server.auth.token_endpoint {url:?}: {e}"))
                })?;
                Some(parsed)
            }
            None => None,
        };
        Ok(SmartBackend {
            client_id,
            key,
            algorithm,
            key_id,
            scope: auth.scope.clone(),
            token_endpoint,
            cached: Mutex::new(None),
        })
    }

    async fn token_endpoint(&self, http: &reqwest::Client, base: &Url) -> Result<Url, FhirError> {
        if let Some(url) = &self.token_endpoint {
            return Ok(url.clone());
        }
        let discovery = base
            .join(".well-known/smart-configuration")
            .expect("a valid relative path");
        let failed = |message: String| FhirError::Token {
            url: discovery.to_string(),
            message,
        };
        let Answer { status, body, .. } = authorization_request(&discovery, || {
            Ok(http
                .get(discovery.clone())
                .header("Accept", "application/json"))
        })
        .await?;
        if !status.is_success() {
            return Err(failed(format!("HTTP {}", status.as_u16())));
        }
        let configuration: SmartConfiguration =
            serde_json::from_slice(&body).map_err(|e| failed(format!("no token_endpoint: {e}")))?;
        Url::parse(&configuration.token_endpoint)
            .map_err(|e| failed(format!("token_endpoint: {e}")))
    }

    fn assertion(&self, audience: &str) -> Result<String, FhirError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut header = Header::new(self.algorithm);
        header.kid = self.key_id.clone();
        header.typ = Some("JWT".into());
        let claims = AssertionClaims {
            iss: &self.client_id,
            sub: &self.client_id,
            aud: audience,
            exp: now + ASSERTION_LIFETIME_SECS,
            jti: format!("{:032x}", rand::random::<u128>()),
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| credentials_error(format!("cannot sign the client assertion: {e}")))
    }

    /// The Authorization header: the cached token, or a new one when it is about to expire or
    /// `renew` is set (after a 401).
    pub async fn authorization(
        &self,
        http: &reqwest::Client,
        base: &Url,
        renew: bool,
    ) -> Result<HeaderValue, FhirError> {
        let mut cached = self.cached.lock().await;
        if let Some(token) = cached.as_ref() {
            if !renew && Instant::now() < token.renew_after {
                return Ok(token.header.clone());
            }
        }
        let endpoint = self.token_endpoint(http, base).await?;
        let failed = |message: String| FhirError::Token {
            url: endpoint.to_string(),
            message,
        };
        // Each attempt signs a fresh assertion (a new `jti`), so a retry is never a replay.
        let Answer { status, body, .. } = authorization_request(&endpoint, || {
            let assertion = self.assertion(endpoint.as_str())?;
            Ok(http
                .post(endpoint.clone())
                .header("Accept", "application/json")
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("scope", self.scope.as_str()),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", assertion.as_str()),
                ]))
        })
        .await?;
        if !status.is_success() {
            // An OAuth error body names the problem (`invalid_client`) and holds no secret.
            let reason = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_default();
            return Err(failed(format!("HTTP {} {reason}", status.as_u16())));
        }
        let token: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| failed("the answer holds no access_token".into()))?;
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(300));
        let header = bearer(&token.access_token)?;
        *cached = Some(CachedToken {
            header: header.clone(),
            renew_after: Instant::now() + lifetime.saturating_sub(RENEW_MARGIN),
        });
        Ok(header)
    }
}
