//! What can go wrong talking to a FHIR server (or its authorization server). Each error names
//! the URL and keeps its cause as `source`, so the message an operator reads is the whole
//! chain: `https://fhir.example.org/Patient: no answer: error sending request: invalid peer
//! certificate: UnknownIssuer`. Tokens, keys and assertions never appear in any of them.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum FhirError {
    #[error("invalid FHIR base URL {url:?}")]
    BaseUrl {
        url: String,
        #[source]
        source: url::ParseError,
    },
    /// A configured URL the job will not send to (plain http off this machine, not http at
    /// all): a configuration problem.
    #[error("{url}: {refusal}")]
    Refused { url: String, refusal: Refusal },
    /// A URL a server named (a `next` link, a Bulk Data status or file URL, a discovered token
    /// endpoint) that the job will not send to: a problem of the source.
    #[error("{url} (named by the server): {refusal}")]
    RefusedLink { url: String, refusal: Refusal },
    #[error("cannot set up the HTTP client")]
    Client(#[from] ClientError),
    /// Missing or unreadable credentials: a configuration problem.
    #[error("FHIR server credentials")]
    Credentials(#[from] CredentialsError),
    /// The token endpoint (or its discovery) failed.
    #[error("cannot get an access token from {url}")]
    Token {
        url: String,
        #[source]
        source: TokenError,
    },
    #[error("{url}: no answer")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: HTTP {status}: {outcome}")]
    Status {
        url: String,
        status: u16,
        /// The server's OperationOutcome text, or the start of its body.
        outcome: String,
    },
    #[error("{url}: not a FHIR Bundle")]
    NotABundle {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{url}: a {found} where a Bundle was expected")]
    NotABundleType { url: String, found: String },
    #[error("{url}: not JSON")]
    NotJson {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{url}: the search goes on past {limit} pages (server.max_pages_per_search)")]
    TooManyPages { url: String, limit: usize },
    #[error("{url}: the next link repeats a page already read; the search would never end")]
    RepeatedPage { url: String },
    #[error("{url}: the answer is larger than {limit} bytes (server.max_response_bytes)")]
    TooLarge { url: String, limit: u64 },
    /// Named by host only: a file URL may carry a signature in its query.
    #[error(
        "a Bulk Data file from {host} holds more than {limit} bytes once decompressed (server.max_download_bytes); it was not read"
    )]
    DownloadTooLarge { host: String, limit: u64 },
    #[error("a Bulk Data file from {host} starts as gzip but is not a valid gzip stream")]
    DownloadNotGzip {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{url}: reading from the server took longer than {minutes} minutes (server.max_read_minutes)"
    )]
    ReadBudget { url: String, minutes: f64 },
    #[error("interrupted while reading {url}")]
    Interrupted { url: String },
    #[error("{url}: the create answered without the resource")]
    NoResourceInAnswer { url: String },
    #[error("cannot write {}", path.display())]
    Disk {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Export(#[from] ExportError),
}

/// Why the job will not send to a URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "plain http to {host} would send patient data and credentials unencrypted: use https, or set server.allow_insecure_http = true"
    )]
    InsecureHttp { host: String },
    #[error(
        "plain http to {host} after https would send patient data unencrypted: a server reached over https cannot send the job to plain http"
    )]
    Downgrade { host: String },
    #[error("{scheme}: must be http or https")]
    NotHttp { scheme: String },
    #[error("not a URL")]
    NotAUrl(#[source] url::ParseError),
}

/// The HTTP client cannot be built from the settings.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read {key} {}", path.display())]
    ReadFile {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("server.ca_file {}", path.display())]
    CaFile {
        path: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error("server.ca_file {} holds no PEM certificate", path.display())]
    EmptyCaFile { path: PathBuf },
    #[error("server.client_cert_file / client_key_file: not a PEM certificate and key")]
    Identity(#[source] reqwest::Error),
    #[error("mutual TLS needs both server.client_cert_file and server.client_key_file")]
    HalfIdentity,
    #[error("the HTTP client")]
    Build(#[source] reqwest::Error),
}

/// Missing or unusable credentials.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("environment variable {0} is not set")]
    TokenVariableUnset(String),
    #[error("cannot read token file {}", path.display())]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("server.auth.method = \"bearer\" needs token_env or token_file")]
    NoTokenSource,
    #[error("the bearer token is empty")]
    EmptyToken,
    #[error("the token has characters a header cannot carry")]
    TokenNotAHeader,
    #[error("smart-backend needs server.auth.{0}")]
    Missing(&'static str),
    #[error("cannot read private key {}", path.display())]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("server.auth.algorithm {0:?}: use RS384 or ES384")]
    Algorithm(String),
    #[error("{} is not a PEM private key for {algorithm}", path.display())]
    NotAPemKey { path: PathBuf, algorithm: String },
    #[error("{}", path.display())]
    Jwks {
        path: PathBuf,
        #[source]
        source: super::jwk::JwkError,
    },
    #[error("server.auth.token_endpoint {url:?}")]
    TokenEndpoint {
        url: String,
        #[source]
        source: Refusal,
    },
    #[error("cannot sign the client assertion")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// Why the authorization server gave no token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no answer")]
    NoAnswer(#[source] reqwest::Error),
    #[error("an answer over {0} bytes")]
    TooLarge(u64),
    /// The OAuth error code (`invalid_client`) names the problem, and its description (from
    /// the authorization server, for people) says what was wrong; neither holds a secret.
    #[error("HTTP {status} {oauth_error}{}", match description.is_empty() {
        true => String::new(),
        false => format!(": {description}"),
    })]
    Status {
        status: u16,
        oauth_error: String,
        description: String,
    },
    #[error("the answer holds no access_token")]
    NoAccessToken(#[source] serde_json::Error),
    #[error("the SMART configuration holds no usable token_endpoint")]
    NoTokenEndpoint(#[source] serde_json::Error),
    #[error("token_endpoint")]
    BadTokenEndpoint(#[source] url::ParseError),
    #[error("the client assertion")]
    Assertion(#[source] Box<CredentialsError>),
}

/// A Bulk Data `$export` that did not go as the protocol says.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{url}: a kick-off answered 202 without Content-Location")]
    NoStatusUrl { url: String },
    #[error("{url}: Content-Location {location:?}")]
    BadStatusUrl {
        url: String,
        location: String,
        #[source]
        source: url::ParseError,
    },
    #[error(
        "{url}: the kick-off names {status_url} as its status URL, which is a FHIR resource URL of the server; it was neither polled nor deleted"
    )]
    ResourceStatusUrl { url: String, status_url: String },
    #[error("{url}: not a Bulk Data manifest")]
    NotAManifest {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{url}: the export is not ready within {seconds} s (server.export_max_wait_secs)")]
    NotReady { url: String, seconds: u64 },
    #[error("cannot create the download folder {}", path.display())]
    Folder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the downloaded file {}", path.display())]
    ReadDownload {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The whole chain of an error, for a message a person reads: each cause after a colon,
/// leaving out a cause whose text the message already holds.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !cause_text.is_empty() && !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
