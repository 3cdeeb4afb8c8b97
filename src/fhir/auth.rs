//! Credentials for the FHIR server: none, a static bearer token, or SMART Backend Services
//! (OAuth2 client credentials with a `private_key_jwt` client assertion signed RS384 or ES384).
//! The access token is cached and renewed a minute before it expires, and once more on a 401.
//! Neither tokens nor keys nor assertions ever reach a log or an error message.

use super::error::{CredentialsError, FhirError, Refusal, TokenError};
use super::jwk;
use super::retry::{send_with_retries, Answer, RetryPolicy, SendFailure, Target};
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

fn bearer(token: &str) -> Result<HeaderValue, CredentialsError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(CredentialsError::EmptyToken);
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| CredentialsError::TokenNotAHeader)?;
    value.set_sensitive(true);
    Ok(value)
}

impl Credentials {
    pub fn from_config(
        auth: &AuthConfig,
        server: &ServerConfig,
    ) -> Result<Credentials, CredentialsError> {
        match auth.method {
            AuthMethod::None => Ok(Credentials::None),
            AuthMethod::Bearer => {
                let token = match (&auth.token_env, &auth.token_file) {
                    (Some(name), _) => std::env::var(name)
                        .map_err(|_| CredentialsError::TokenVariableUnset(name.clone()))?,
                    (None, Some(path)) => std::fs::read_to_string(path).map_err(|source| {
                        CredentialsError::TokenFile {
                            path: path.clone(),
                            source,
                        }
                    })?,
                    (None, None) => return Err(CredentialsError::NoTokenSource),
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
    policy: &RetryPolicy,
    url: &Url,
    build: impl FnMut() -> Result<reqwest::RequestBuilder, CredentialsError>,
) -> Result<Answer, FhirError> {
    let failed = |source: TokenError| FhirError::Token {
        url: url.to_string(),
        source,
    };
    let host = url.host_str().unwrap_or("?");
    let target = Target {
        kind: "token request",
        host,
    };
    send_with_retries(policy, TOKEN_ANSWER_LIMIT, target, build)
        .await
        .map_err(|failure| match failure {
            SendFailure::Build(error) => failed(TokenError::Assertion(Box::new(error))),
            SendFailure::NoAnswer { error, cause } => failed(TokenError::NoAnswer {
                cause,
                error: error.without_url(),
            }),
            SendFailure::TooLarge { limit } => failed(TokenError::TooLarge(limit)),
            SendFailure::Interrupted => FhirError::Interrupted {
                url: url.to_string(),
            },
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
    /// `server.allow_insecure_http`, for a discovered token endpoint.
    allow_insecure_http: bool,
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
    ) -> Result<SmartBackend, CredentialsError> {
        let client_id = auth
            .client_id
            .clone()
            .ok_or(CredentialsError::Missing("client_id"))?;
        let key_path = auth
            .private_key_file
            .as_ref()
            .ok_or(CredentialsError::Missing("private_key_file"))?;
        let bytes = std::fs::read(key_path).map_err(|source| CredentialsError::KeyFile {
            path: key_path.clone(),
            source,
        })?;
        let algorithm = match auth.algorithm.as_str() {
            "RS384" => Algorithm::RS384,
            "ES384" => Algorithm::ES384,
            other => return Err(CredentialsError::Algorithm(other.to_owned())),
        };
        let (key, key_id) = if jwk::looks_like_jwks(&bytes) {
            let signing =
                jwk::signing_key(&bytes, algorithm, auth.key_id.as_deref()).map_err(|source| {
                    CredentialsError::Jwks {
                        path: key_path.clone(),
                        source,
                    }
                })?;
            // The configured kid wins; otherwise the JWK's own.
            (signing.key, auth.key_id.clone().or(signing.key_id))
        } else {
            let key = match algorithm {
                Algorithm::RS384 => EncodingKey::from_rsa_pem(&bytes),
                _ => EncodingKey::from_ec_pem(&bytes),
            }
            .map_err(|_| CredentialsError::NotAPemKey {
                path: key_path.clone(),
                algorithm: auth.algorithm.clone(),
            })?;
            (key, auth.key_id.clone())
        };
        let token_endpoint = match &auth.token_endpoint {
            Some(url) => {
                let refused = |source| CredentialsError::TokenEndpoint {
                    url: url.clone(),
                    source,
                };
                let parsed = Url::parse(url).map_err(|e| refused(Refusal::NotAUrl(e)))?;
                super::client::judge_url(&parsed, None, allow_insecure_http).map_err(refused)?;
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
            allow_insecure_http,
            cached: Mutex::new(None),
        })
    }

    async fn token_endpoint(
        &self,
        http: &reqwest::Client,
        policy: &RetryPolicy,
        base: &Url,
    ) -> Result<Url, FhirError> {
        if let Some(url) = &self.token_endpoint {
            return Ok(url.clone());
        }
        let discovery = base
            .join(".well-known/smart-configuration")
            .expect("a valid relative path");
        let failed = |source: TokenError| FhirError::Token {
            url: discovery.to_string(),
            source,
        };
        let Answer { status, body, .. } = authorization_request(policy, &discovery, || {
            Ok(http
                .get(discovery.clone())
                .header("Accept", "application/json"))
        })
        .await?;
        if !status.is_success() {
            return Err(failed(TokenError::Status {
                status: status.as_u16(),
                oauth_error: String::new(),
                description: String::new(),
            }));
        }
        let configuration: SmartConfiguration =
            serde_json::from_slice(&body).map_err(|e| failed(TokenError::NoTokenEndpoint(e)))?;
        let endpoint = Url::parse(&configuration.token_endpoint)
            .map_err(|e| failed(TokenError::BadTokenEndpoint(e)))?;
        // Named by the server: judged like every URL it names.
        super::client::judge_url(&endpoint, Some(base), self.allow_insecure_http).map_err(
            |refusal| FhirError::RefusedLink {
                url: endpoint.to_string(),
                refusal,
            },
        )?;
        Ok(endpoint)
    }

    /// A client assertion for `audience` (the token endpoint), signed with the configured key;
    /// each one has a new `jti`. Public for the tests that show an authorization server
    /// refusing a replayed one.
    pub fn client_assertion(&self, audience: &str) -> Result<String, CredentialsError> {
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
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(CredentialsError::Sign)
    }

    /// The Authorization header: the cached token, or a new one when it is about to expire or
    /// `renew` is set (after a 401).
    pub async fn authorization(
        &self,
        http: &reqwest::Client,
        policy: &RetryPolicy,
        base: &Url,
        renew: bool,
    ) -> Result<HeaderValue, FhirError> {
        let mut cached = self.cached.lock().await;
        if let Some(token) = cached.as_ref() {
            if !renew && Instant::now() < token.renew_after {
                return Ok(token.header.clone());
            }
        }
        let endpoint = self.token_endpoint(http, policy, base).await?;
        let failed = |source: TokenError| FhirError::Token {
            url: endpoint.to_string(),
            source,
        };
        // Each attempt signs a fresh assertion (a new `jti`), so a retry is never a replay.
        let Answer { status, body, .. } = authorization_request(policy, &endpoint, || {
            let assertion = self.client_assertion(endpoint.as_str())?;
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
            // An OAuth error body names the problem (`invalid_client`), says what it was, and
            // holds no secret; printable, and cut short should a server send a page.
            let body = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default();
            let text = |key: &str| -> String {
                let value = body[key].as_str().unwrap_or_default();
                crate::text::printable(value).chars().take(300).collect()
            };
            return Err(failed(TokenError::Status {
                status: status.as_u16(),
                oauth_error: text("error"),
                description: text("error_description"),
            }));
        }
        let token: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| failed(TokenError::NoAccessToken(e)))?;
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(300));
        let header = bearer(&token.access_token)?;
        *cached = Some(CachedToken {
            header: header.clone(),
            renew_after: Instant::now() + lifetime.saturating_sub(RENEW_MARGIN),
        });
        Ok(header)
    }
}
