//! What can go wrong talking to a FHIR server (or its authorization server). Each error names
//! the URL and keeps its cause as `source`, so the message an operator reads is the whole
//! chain: `https://fhir.example.org/Patient: no answer: error sending request: invalid peer
//! certificate: UnknownIssuer`. Tokens, keys and assertions never appear in any of them.
//! Text a server chose (its OperationOutcome, a URL from a link or a manifest, a resource type,
//! an OAuth error) enters a message through `text::shown`, so it cannot break a log line or
//! hold a terminal escape or a bidirectional override.

use crate::text::shown;
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
    #[error("{}: {refusal}", shown(url))]
    Refused { url: String, refusal: Refusal },
    /// A URL a server named (a `next` link, a Bulk Data status or file URL, a discovered token
    /// endpoint) that the job will not send to: a problem of the source.
    /// Named by request kind and host: a `next` link's query names patients.
    #[error("{} (a URL the server named): {refusal}", read_named(url))]
    RefusedLink { url: String, refusal: Refusal },
    #[error("cannot set up the HTTP client")]
    Client(#[from] ClientError),
    /// Missing or unreadable credentials: a configuration problem.
    #[error("FHIR server credentials")]
    Credentials(#[from] CredentialsError),
    /// The token endpoint (or its discovery) failed.
    #[error("cannot get an access token from {}", shown(url))]
    Token {
        url: String,
        #[source]
        source: TokenError,
    },
    /// No answer: one short line naming the kind of request, the host and the cause ("Observation
    /// search on fhir.example.org: no answer within 60 s"). The URL (its query may name
    /// patients) and the whole error are for the debug log (`Debug`) only.
    #[error("{kind} on {}: {}", shown(host), shown(cause))]
    Transport {
        url: String,
        kind: String,
        host: String,
        cause: String,
        error: reqwest::Error,
    },
    /// Named by request kind and host: the URL's query can hold patient ids (it is logged at
    /// debug level where the answer came).
    #[error("{}: HTTP {status}: {}", request_named(method, url), shown(outcome))]
    Status {
        /// What was asked: a POST to a type is a create, not a search.
        method: reqwest::Method,
        url: String,
        status: u16,
        /// The server's OperationOutcome text, or the start of its body.
        outcome: String,
    },
    #[error("{}: not a FHIR Bundle", read_named(url))]
    NotABundle {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: a {} where a Bundle was expected", read_named(url), shown(found))]
    NotABundleType { url: String, found: String },
    #[error("{}: not JSON", read_named(url))]
    NotJson {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{}: the search goes on past {limit} pages (server.max_pages_per_search)",
        read_named(url)
    )]
    TooManyPages { url: String, limit: usize },
    #[error(
        "{}: the next link repeats a page already read; the search would never end",
        read_named(url)
    )]
    RepeatedPage { url: String },
    #[error(
        "{}: the answer is larger than {limit} bytes (server.max_response_bytes)",
        read_named(url)
    )]
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
        "{}: reading from the server took longer than {minutes} minutes (server.max_read_minutes)",
        read_named(url)
    )]
    ReadBudget { url: String, minutes: f64 },
    /// The CapabilityStatement refuses the run (not R4, not a statement).
    #[error("the FHIR server at {} cannot be used: {refusal}", shown(host))]
    Capability {
        host: String,
        refusal: super::capabilities::CapabilityError,
    },
    /// The CapabilityStatement does not declare searches or interactions the run needs.
    #[error(
        "the FHIR server at {} does not declare what this run needs: {missing} (its CapabilityStatement, /metadata; `tare-marker-monitor check` tries each)",
        shown(host)
    )]
    Undeclared { host: String, missing: String },
    /// Named by host only: the URL's query may name patients.
    #[error(
        "interrupted while waiting on {}: stopped before writing anything (no output published, no state moved on)",
        host_of(url)
    )]
    Interrupted { url: String },
    #[error("{}: the create answered without the resource", shown(url))]
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

/// The host of a URL, for a message (never its query, which may name patients).
fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(|host| shown(host).into_owned()))
        .unwrap_or_else(|| "the server".into())
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
    /// `https://user:password@host/`: the password would go out with every request and into
    /// the run's summary and logs.
    #[error(
        "a user name or password in the URL is not used: credentials belong in [server.auth] (a token file, a variable or SMART keys), never in a URL"
    )]
    CredentialsInUrl,
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
    /// What went wrong in a few words (`retry::cause`); the error itself in `Debug`.
    #[error("{}", shown(.cause))]
    NoAnswer {
        cause: String,
        error: reqwest::Error,
    },
    #[error("an answer over {0} bytes")]
    TooLarge(u64),
    /// The OAuth error code (`invalid_client`) names the problem, and its description (from
    /// the authorization server, for people) says what was wrong; neither holds a secret.
    #[error("HTTP {status} {}{}", shown(oauth_error), match description.is_empty() {
        true => String::new(),
        false => format!(": {}", shown(description)),
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
    #[error("{}: a kick-off answered 202 without Content-Location", shown(url))]
    NoStatusUrl { url: String },
    #[error("{}: Content-Location {location:?}", shown(url))]
    BadStatusUrl {
        url: String,
        location: String,
        #[source]
        source: url::ParseError,
    },
    #[error(
        "{}: the kick-off names {} as its status URL, which is a FHIR resource URL of the server; it was neither polled nor deleted",
        shown(url),
        shown(status_url)
    )]
    ResourceStatusUrl { url: String, status_url: String },
    #[error("{}: not a Bulk Data manifest", shown(url))]
    NotAManifest {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{}: the export is not ready within {seconds} s (server.export_max_wait_secs)",
        shown(url)
    )]
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

/// "Observation search on fhir.example.org", "Device create on fhir.example.org": what a
/// request was, without its path's ids or its query.
/// A read (GET) named as `request_named` names it: the answer's URL, with its ids and query,
/// only at debug level.
fn read_named(url: &str) -> String {
    request_named(&reqwest::Method::GET, url)
}

pub fn request_named(method: &reqwest::Method, url: &str) -> String {
    use reqwest::Method;
    let Ok(url) = url::Url::parse(url) else {
        return "a request".into();
    };
    let host = url.host_str().unwrap_or("the server");
    let segments: Vec<&str> = url
        .path_segments()
        .map_or(Vec::new(), |s| s.filter(|x| !x.is_empty()).collect());
    let operation = segments.iter().find(|s| s.starts_with('$'));
    let resource = segments
        .iter()
        .rposition(|s| s.starts_with(|c: char| c.is_ascii_uppercase()));
    let kind = match (resource, operation) {
        _ if segments.last() == Some(&"metadata") => "CapabilityStatement".to_owned(),
        (Some(i), Some(op)) => format!("{} {}", segments[i], shown(op)),
        (None, Some(op)) => shown(op).into_owned(),
        (Some(i), None) if i + 1 == segments.len() && *method == Method::POST => {
            format!("{} create", segments[i])
        }
        (Some(i), None) if i + 2 == segments.len() && *method == Method::PUT => {
            format!("{} update", segments[i])
        }
        (Some(i), None) if i + 1 == segments.len() && url.query().is_some() => {
            format!("{} search", segments[i])
        }
        (Some(i), None) => format!("{} request", segments[i]),
        (None, None) if url.query().is_some() => "search page".to_owned(),
        (None, None) if *method == Method::POST => "transaction".to_owned(),
        (None, None) => "request".to_owned(),
    };
    format!("{} on {}", shown(&kind), shown(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_request_is_named_by_kind_and_host_without_ids() {
        for (url, named) in [
            (
                "https://h.org/r4/Observation?patient=jane-doe-MRN1&code=x",
                "Observation search on h.org",
            ),
            (
                "https://h.org/r4/DetectedIssue/flag-jane",
                "DetectedIssue request on h.org",
            ),
            (
                "https://h.org/r4/DetectedIssue/$validate",
                "DetectedIssue $validate on h.org",
            ),
            ("https://h.org/r4/$export?_type=Patient", "$export on h.org"),
            ("https://h.org/r4/metadata", "CapabilityStatement on h.org"),
            ("https://h.org/r4?_getpages=abc", "search page on h.org"),
            ("https://h.org/r4/", "request on h.org"),
        ] {
            assert_eq!(request_named(&reqwest::Method::GET, url), named, "{url}");
        }
    }

    #[test]
    fn a_write_that_failed_is_named_as_the_create_or_update_it_was() {
        use reqwest::Method;
        for (method, url, named) in [
            (
                Method::POST,
                "https://h.org/r4/Device",
                "Device create on h.org",
            ),
            (
                Method::PUT,
                "https://h.org/r4/DetectedIssue/di-1",
                "DetectedIssue update on h.org",
            ),
            (Method::POST, "https://h.org/r4/", "transaction on h.org"),
            (
                Method::POST,
                "https://h.org/r4/DetectedIssue/$validate",
                "DetectedIssue $validate on h.org",
            ),
        ] {
            assert_eq!(request_named(&method, url), named, "{method} {url}");
        }
    }

    #[test]
    fn server_text_in_a_message_is_shown_escaped() {
        let error = FhirError::Status {
            method: reqwest::Method::GET,
            url: "https://fhir.example.org/Observation?x=\u{202e}".into(),
            status: 400,
            outcome: "error invalid: bad\n2026-01-01T00:00:00Z  INFO forged \u{1b}[2J\u{202e}"
                .into(),
        };
        assert_eq!(
            error.to_string(),
            "Observation search on fhir.example.org: HTTP 400: error invalid: bad\\u{a}2026-01-01T00:00:00Z  INFO forged \\u{1b}[2J\\u{202e}"
        );
        let token = TokenError::Status {
            status: 401,
            oauth_error: "invalid_client\r".into(),
            description: "no\u{202d}".into(),
        };
        assert_eq!(
            token.to_string(),
            "HTTP 401 invalid_client\\u{d}: no\\u{202d}"
        );
        let found = FhirError::NotABundleType {
            url: "u".into(),
            found: "Bundle\u{85}".into(),
        };
        assert_eq!(
            found.to_string(),
            "a request: a Bundle\\u{85} where a Bundle was expected"
        );
    }
}
