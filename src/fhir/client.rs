//! A small FHIR R4 REST client over reqwest: JSON in both directions, gzip, timeouts, paged
//! search that follows `next` links to the end (a Bundle's `total` is never trusted), and
//! errors that carry the server's OperationOutcome text.

use super::auth::Credentials;
pub use super::error::{ClientError, FhirError, Refusal};
pub use super::retry::Answer;
use super::retry::{
    cause, decide, send_with_retries, wait_text, Decision, Limits, Outcome, RetryPolicy,
    SendFailure, Target,
};
use crate::config::ServerConfig;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A Bulk Data file may be large: its download gets longer than a search request.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(3600);

/// One page of search results: each entry's resource as raw JSON, and the next page.
pub struct SearchPage {
    pub resources: Vec<Box<RawValue>>,
    pub next: Option<String>,
}

#[derive(Deserialize)]
struct BundleIn {
    #[serde(rename = "resourceType")]
    resource_type: String,
    #[serde(default)]
    link: Vec<LinkIn>,
    #[serde(default)]
    entry: Vec<EntryIn>,
}

#[derive(Deserialize)]
struct LinkIn {
    relation: String,
    url: String,
}

#[derive(Deserialize)]
struct EntryIn {
    resource: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct OperationOutcomeIn {
    #[serde(default)]
    issue: Vec<IssueIn>,
}

#[derive(Deserialize)]
struct IssueIn {
    severity: Option<String>,
    code: Option<String>,
    diagnostics: Option<String>,
    details: Option<DetailsIn>,
    #[serde(default)]
    expression: Vec<String>,
    #[serde(default)]
    location: Vec<String>,
}

#[derive(Deserialize)]
struct DetailsIn {
    text: Option<String>,
}

/// The readable text of an OperationOutcome body: its errors (with where they are) when it has
/// any, else all its issues; or the start of whatever the body was.
pub fn outcome_text(body: &[u8]) -> String {
    if let Ok(outcome) = serde_json::from_slice::<OperationOutcomeIn>(body) {
        let is_error = |i: &&IssueIn| matches!(i.severity.as_deref(), Some("error" | "fatal"));
        let errors: Vec<&IssueIn> = outcome.issue.iter().filter(is_error).collect();
        let shown: Vec<&IssueIn> = match errors.is_empty() {
            true => outcome.issue.iter().collect(),
            false => errors,
        };
        let issues: Vec<String> = shown
            .iter()
            .map(|i| {
                let text = i
                    .details
                    .as_ref()
                    .and_then(|d| d.text.clone())
                    .or_else(|| i.diagnostics.clone())
                    .unwrap_or_default();
                let place = match i.expression.first().or(i.location.first()) {
                    Some(place) => format!(" (at {place})"),
                    None => String::new(),
                };
                format!(
                    "{} {}: {text}{place}",
                    i.severity.as_deref().unwrap_or("error"),
                    i.code.as_deref().unwrap_or("unknown"),
                )
            })
            .collect();
        if !issues.is_empty() {
            return issues.join("; ");
        }
    }
    let text = String::from_utf8_lossy(body);
    text.chars().take(300).collect()
}

#[derive(Clone)]
pub struct FhirClient {
    http: reqwest::Client,
    base: Url,
    retry: RetryPolicy,
    max_body: u64,
    /// `server.max_download_bytes`: a Bulk Data file's size, counted decompressed.
    max_download: u64,
    /// `server.allow_insecure_http`, for every URL the server names.
    allow_insecure_http: bool,
    max_pages: usize,
    /// Searches stop with an error past this instant (`server.max_read_minutes`).
    read_deadline: Option<(std::time::Instant, f64)>,
    /// Sent only to the base URL's origin.
    credentials: Arc<Credentials>,
    /// HTTP requests sent (every attempt counts), for the run summary and benchmarks.
    requests: Arc<AtomicU64>,
}

/// Why one download attempt failed.
enum DownloadFailure {
    Status {
        status: u16,
        retry_after: Option<String>,
        outcome: String,
    },
    /// No answer, or the body cut short.
    NoAnswer(reqwest::Error),
    /// Our own disk: not worth a retry.
    Disk(std::io::Error),
    /// Past `server.max_download_bytes`, or a gzip file that is not gzip: not worth a retry.
    Refused(Excess),
}

/// Why a download's body was not taken.
enum Excess {
    TooLarge,
    NotGzip(std::io::Error),
}

/// Counts the bytes written to it, and takes none past the limit (so a gzip bomb stops
/// expanding there).
struct Tally {
    count: u64,
    limit: u64,
}

impl std::io::Write for Tally {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.count += buf.len() as u64;
        if self.count > self.limit {
            return Err(std::io::Error::other("past the size limit"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a download's body holds so far: the bytes as reqwest hands them over (already
/// expanded when the server sent them with `Content-Encoding: gzip`), and, when the body is
/// itself a gzip file (a `.ndjson.gz` output), what that file expands to. Either past the
/// limit ends the download.
struct Expansion {
    limit: u64,
    body: u64,
    form: BodyForm,
}

enum BodyForm {
    /// The first bytes, until the gzip magic number can be told.
    Undecided(Vec<u8>),
    Plain,
    Gzip(Box<flate2::write::MultiGzDecoder<Tally>>),
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

impl Expansion {
    fn new(limit: u64) -> Expansion {
        Expansion {
            limit,
            body: 0,
            form: BodyForm::Undecided(Vec::new()),
        }
    }

    fn add(&mut self, chunk: &[u8]) -> Result<(), Excess> {
        self.body += chunk.len() as u64;
        if self.body > self.limit {
            return Err(Excess::TooLarge);
        }
        match &mut self.form {
            BodyForm::Undecided(head) => {
                head.extend_from_slice(chunk);
                if head.len() < GZIP_MAGIC.len() {
                    return Ok(());
                }
                let head = std::mem::take(head);
                self.form = match head.starts_with(&GZIP_MAGIC) {
                    true => {
                        let tally = Tally {
                            count: 0,
                            limit: self.limit,
                        };
                        let mut gunzip = Box::new(flate2::write::MultiGzDecoder::new(tally));
                        expand(&mut gunzip, &head)?;
                        BodyForm::Gzip(gunzip)
                    }
                    false => BodyForm::Plain,
                };
                Ok(())
            }
            BodyForm::Plain => Ok(()),
            BodyForm::Gzip(gunzip) => expand(gunzip, chunk),
        }
    }

    /// At the end of the body: whether it was a gzip file.
    fn finish(self) -> Result<bool, Excess> {
        match self.form {
            BodyForm::Gzip(mut gunzip) => {
                gunzip.try_finish().map_err(|e| excess(&gunzip, e))?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

fn expand(gunzip: &mut flate2::write::MultiGzDecoder<Tally>, bytes: &[u8]) -> Result<(), Excess> {
    use std::io::Write;
    gunzip.write_all(bytes).map_err(|e| excess(gunzip, e))
}

fn excess(gunzip: &flate2::write::MultiGzDecoder<Tally>, error: std::io::Error) -> Excess {
    let tally = gunzip.get_ref();
    match tally.count > tally.limit {
        true => Excess::TooLarge,
        false => Excess::NotGzip(error),
    }
}

/// A Bulk Data file on disk.
pub struct Downloaded {
    /// Bytes written (as received).
    pub bytes: u64,
    /// The file is gzip (a `.ndjson.gz` output).
    pub gzip: bool,
}

/// One attempt: the body streamed to `to` chunk by chunk, up to `limit` bytes once
/// decompressed.
async fn download_once(
    request: reqwest::RequestBuilder,
    to: &std::path::Path,
    limit: u64,
) -> Result<Downloaded, DownloadFailure> {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let response = request.send().await.map_err(DownloadFailure::NoAnswer)?;
    let status = response.status();
    if status != StatusCode::OK {
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.unwrap_or_default();
        return Err(DownloadFailure::Status {
            status: status.as_u16(),
            retry_after,
            outcome: outcome_text(&body),
        });
    }
    // reqwest announces no length for a body it expands.
    if response
        .content_length()
        .is_some_and(|length| length > limit)
    {
        return Err(DownloadFailure::Refused(Excess::TooLarge));
    }
    let disk = DownloadFailure::Disk;
    let mut file = tokio::fs::File::create(to).await.map_err(disk)?;
    let mut expansion = Expansion::new(limit);
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(DownloadFailure::NoAnswer)?;
        expansion.add(&chunk).map_err(DownloadFailure::Refused)?;
        file.write_all(&chunk).await.map_err(disk)?;
    }
    file.flush().await.map_err(disk)?;
    let bytes = expansion.body;
    let gzip = expansion.finish().map_err(DownloadFailure::Refused)?;
    Ok(Downloaded { bytes, gzip })
}

/// A URL as it may be printed: without a user name or password it holds.
pub fn without_credentials(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// Same scheme, host and port.
fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Whether the job may send a request to `url`: the one judgement of every URL it uses, the
/// configured ones (the base, a token endpoint: `from` is `None`) and every one a server
/// names (a `next` link, a Bulk Data status or file URL, a redirect, a discovered token
/// endpoint: `from` is the base, or the URL redirected from). http or https only; plain http
/// only to this machine unless the site allows it (`server.allow_insecure_http`); and never
/// from https down to http. Whether the token goes along is another rule: to the base's own
/// origin only (`same_origin`).
pub fn judge_url(url: &Url, from: Option<&Url>, allow_insecure_http: bool) -> Result<(), Refusal> {
    let host = || url.host_str().unwrap_or("?").to_owned();
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refusal::CredentialsInUrl);
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if from.is_some_and(|from| from.scheme() == "https") => {
            Err(Refusal::Downgrade { host: host() })
        }
        "http" if allow_insecure_http || is_loopback(url) => Ok(()),
        "http" => Err(Refusal::InsecureHttp { host: host() }),
        other => Err(Refusal::NotHttp {
            scheme: other.to_owned(),
        }),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The TLS and redirect settings of every HTTP client the job builds: the operating system's
/// trust store and the bundled web roots, a site's own CA (`server.ca_file`), a client
/// certificate for mutual TLS, and redirects judged like every other URL (`judge_url`).
pub fn http_client(
    settings: &ServerConfig,
    default_headers: HeaderMap,
) -> Result<reqwest::Client, FhirError> {
    let read = |path: &std::path::Path, key: &'static str| {
        std::fs::read(path).map_err(|source| ClientError::ReadFile {
            key,
            path: path.to_owned(),
            source,
        })
    };
    let allow_insecure_http = settings.allow_insecure_http;
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .default_headers(default_headers)
        .gzip(true)
        .connect_timeout(Duration::from_secs(settings.connect_timeout_secs))
        // No byte for this long (the first of an answer, or the next): the attempt is given up.
        .read_timeout(Duration::from_secs(settings.first_byte_timeout_secs))
        .timeout(Duration::from_secs(settings.request_timeout_secs))
        .user_agent(concat!("tare-marker-monitor/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            let judged = judge_url(
                attempt.url(),
                attempt.previous().last(),
                allow_insecure_http,
            );
            if let Err(refusal) = judged {
                attempt.error(format!("a redirect was refused: {refusal}"))
            } else if attempt.previous().len() >= 10 {
                attempt.error("more than 10 redirects")
            } else {
                attempt.follow()
            }
        }));
    if let Some(path) = &settings.ca_file {
        let pem = read(path, "server.ca_file")?;
        let certificates =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| ClientError::CaFile {
                path: path.clone(),
                source,
            })?;
        if certificates.is_empty() {
            return Err(ClientError::EmptyCaFile { path: path.clone() }.into());
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    match (&settings.client_cert_file, &settings.client_key_file) {
        (Some(cert), Some(key)) => {
            let mut pem = read(cert, "server.client_cert_file")?;
            pem.push(b'\n');
            pem.extend(read(key, "server.client_key_file")?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(ClientError::Identity)?;
            builder = builder.identity(identity);
        }
        (None, None) => {}
        _ => return Err(ClientError::HalfIdentity.into()),
    }
    Ok(builder.build().map_err(ClientError::Build)?)
}

/// What a request to `url` is, for a person (and a log line without the URL): "Observation
/// search", "CapabilityStatement", "transaction", "Device create", "DetectedIssue update",
/// "DetectedIssue $validate", "Bulk Data kick-off", "Bulk Data status". The method tells a
/// create (POST to a type) from a search and an update (PUT) from a read.
pub fn request_kind(base: &Url, method: &reqwest::Method, url: &Url) -> String {
    use reqwest::Method;
    let under_base = same_origin(base, url) && url.path().starts_with(base.path());
    if !under_base {
        return match *method {
            Method::DELETE => "Bulk Data delete".into(),
            _ => "Bulk Data status".into(),
        };
    }
    let rest = &url.path()[base.path().len()..];
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (segments.as_slice(), method) {
        (["metadata"], _) => "CapabilityStatement".into(),
        ([.., op], &Method::DELETE) if op.starts_with("$export") => "Bulk Data delete".into(),
        ([], _) if url.query().is_some() => "search page".into(),
        ([], _) => "transaction".into(),
        ([.., op], _) if *op == "$export" => "Bulk Data kick-off".into(),
        ([.., op], _) if op.starts_with("$export") => "Bulk Data status".into(),
        ([kind, op], _) if op.starts_with('$') => format!("{kind} {op}"),
        ([kind, "_search"], _) => format!("{kind} search"),
        ([kind], &Method::POST) => format!("{kind} create"),
        ([kind], _) => format!("{kind} search"),
        ([kind, _], &Method::PUT) => format!("{kind} update"),
        ([kind, _], &Method::DELETE) => format!("{kind} delete"),
        ([kind, _], _) => format!("{kind} read"),
        _ => "request".into(),
    }
}

impl FhirClient {
    pub fn new(base_url: &str, settings: &ServerConfig) -> Result<FhirClient, FhirError> {
        let mut base = Url::parse(base_url).map_err(|source| FhirError::BaseUrl {
            url: base_url.to_owned(),
            source,
        })?;
        judge_url(&base, None, settings.allow_insecure_http).map_err(|refusal| {
            FhirError::Refused {
                url: without_credentials(&base),
                refusal,
            }
        })?;
        // A trailing slash makes Url::join append to the base path instead of replacing it.
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/fhir+json, application/json;q=0.9"),
        );
        if settings.strict_search {
            headers.insert("Prefer", HeaderValue::from_static("handling=strict"));
        }
        // Fresh answers: HAPI FHIR reuses the results of an identical search for a minute by
        // default, so without this a run would not see what it (or anyone) just wrote.
        headers.insert(
            reqwest::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
        let http = http_client(settings, headers)?;
        let read_deadline = (settings.max_read_minutes > 0.0).then(|| {
            let budget = Duration::from_secs_f64(settings.max_read_minutes * 60.0);
            (
                std::time::Instant::now() + budget,
                settings.max_read_minutes,
            )
        });
        Ok(FhirClient {
            http,
            base,
            retry: RetryPolicy {
                max_total: Duration::from_secs(settings.max_retry_secs),
                limits: Limits {
                    connect: Duration::from_secs(settings.connect_timeout_secs),
                    first_byte: Duration::from_secs(settings.first_byte_timeout_secs),
                    whole: Duration::from_secs(settings.request_timeout_secs),
                },
                ..RetryPolicy::default()
            },
            max_body: settings.max_response_bytes,
            max_download: settings.max_download_bytes,
            allow_insecure_http: settings.allow_insecure_http,
            max_pages: settings.max_pages_per_search,
            read_deadline,
            credentials: Arc::new(Credentials::from_config(&settings.auth, settings)?),
            requests: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The error a read that ran over `server.max_read_minutes` ends with, if it has.
    pub fn past_read_budget(&self, url: &str) -> Result<(), FhirError> {
        match self.read_deadline {
            Some((deadline, minutes)) if std::time::Instant::now() > deadline => {
                Err(FhirError::ReadBudget {
                    url: url.to_owned(),
                    minutes,
                })
            }
            _ => Ok(()),
        }
    }

    /// The Authorization header for a request to the server's own origin.
    async fn authorization(&self, renew: bool) -> Result<Option<HeaderValue>, FhirError> {
        match self.credentials.as_ref() {
            Credentials::None => Ok(None),
            Credentials::Static(value) => Ok(Some(value.clone())),
            Credentials::Smart(smart) => smart
                .authorization(&self.http, &self.retry, &self.base, renew)
                .await
                .map(Some),
        }
    }

    /// Gets an access token now, when the configured authentication has one to get (for
    /// `check`): what was done, in a few words; never the token.
    pub async fn check_authorization(&self) -> Result<&'static str, FhirError> {
        match self.credentials.as_ref() {
            Credentials::None => Ok("no authentication configured"),
            Credentials::Static(_) => Ok("a static bearer token from the configuration"),
            Credentials::Smart(_) => self
                .authorization(true)
                .await
                .map(|_| "SMART Backend Services token granted"),
        }
    }

    /// Sends a request, retrying transient failures per the retry policy (every request the
    /// job sends is safe to repeat). `build` makes a fresh request for each attempt.
    pub async fn send(
        &self,
        url: &str,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Answer, FhirError> {
        let target = self.judged(url)?;
        // The token goes to the server's own origin only: never to a `next` link or a
        // redirect elsewhere (reqwest also drops it on a redirect to another host).
        let own_origin = same_origin(&target, &self.base);
        // The method from a request built once and dropped: a create is not a search.
        let method = build(&self.http)
            .build()
            .map_or(reqwest::Method::GET, |request| request.method().clone());
        let kind = request_kind(&self.base, &method, &target);
        let host = target.host_str().unwrap_or("?");
        let mut renew = false;
        loop {
            let authorization = match own_origin {
                true => self.authorization(renew).await?,
                false => None,
            };
            let answer = send_with_retries(
                &self.retry,
                self.max_body,
                Target { kind: &kind, host },
                || {
                    self.requests.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::count_request();
                    let request = build(&self.http);
                    Ok::<_, Infallible>(match &authorization {
                        Some(value) => {
                            request.header(reqwest::header::AUTHORIZATION, value.clone())
                        }
                        None => request,
                    })
                },
            )
            .await
            .map_err(|failure| match failure {
                SendFailure::NoAnswer { error, cause } => {
                    tracing::debug!(url, error = %error, "{kind} on {host}: {cause}");
                    FhirError::Transport {
                        url: url.to_owned(),
                        kind: kind.clone(),
                        host: host.to_owned(),
                        cause,
                        error: error.without_url(),
                    }
                }
                SendFailure::TooLarge { limit } => FhirError::TooLarge {
                    url: url.to_owned(),
                    limit,
                },
                SendFailure::Interrupted => FhirError::Interrupted {
                    url: url.to_owned(),
                },
                SendFailure::Build(never) => match never {},
            })?;
            // A SMART token the server no longer accepts: renew it once and try again.
            let smart = matches!(self.credentials.as_ref(), Credentials::Smart(_));
            if answer.status == StatusCode::UNAUTHORIZED && smart && own_origin && !renew {
                renew = true;
                continue;
            }
            return Ok(answer);
        }
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// A URL this client is about to send to (most of them named by the server: `next`
    /// links, Bulk Data status and file URLs), parsed and judged against the base
    /// (`judge_url`).
    pub fn judged(&self, url: &str) -> Result<Url, FhirError> {
        let refused = |refusal| FhirError::RefusedLink {
            url: url.to_owned(),
            refusal,
        };
        let parsed = Url::parse(url).map_err(|e| refused(Refusal::NotAUrl(e)))?;
        judge_url(&parsed, Some(&self.base), self.allow_insecure_http).map_err(refused)?;
        Ok(parsed)
    }

    /// HTTP requests sent so far by this client and its clones (retries included).
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// `Type?name=value&...` against the base, with the values percent-encoded.
    pub fn search_url(&self, resource_type: &str, params: &[(&str, String)]) -> Url {
        let mut url = self
            .base
            .join(resource_type)
            .expect("a resource type is a valid path");
        url.query_pairs_mut()
            .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())));
        url
    }

    /// The body of a GET that answered 200; any other answer is an error with the server's
    /// OperationOutcome text.
    async fn get_ok(&self, url: &str) -> Result<bytes::Bytes, FhirError> {
        let Answer { status, body, .. } = self.send(url, |http| http.get(url)).await?;
        if status != StatusCode::OK {
            tracing::debug!(url, status = status.as_u16(), "answered with an error");
            return Err(FhirError::Status {
                method: reqwest::Method::GET,
                url: url.to_owned(),
                status: status.as_u16(),
                outcome: outcome_text(&body),
            });
        }
        Ok(body)
    }

    /// Reads one resource (`Group/ID`, say) as JSON; any answer but 200 is an error with the
    /// server's OperationOutcome text.
    pub async fn read(&self, url: &str) -> Result<serde_json::Value, FhirError> {
        let body = self.get_ok(url).await?;
        serde_json::from_slice(&body).map_err(|source| FhirError::NotJson {
            url: url.to_owned(),
            source,
        })
    }

    /// Downloads a file (a Bulk Data output) to `to`, streaming it to disk, retried per the
    /// policy from the start when it fails or is cut short. The Authorization header goes only
    /// with `with_token` and only to the server's own origin. A file that holds more than
    /// `server.max_download_bytes` once decompressed (the body after any `Content-Encoding`,
    /// and what a gzip file expands to) is refused, and not retried.
    pub async fn download(
        &self,
        url: &str,
        to: &std::path::Path,
        with_token: bool,
    ) -> Result<Downloaded, FhirError> {
        let target = self.judged(url)?;
        let host = || target.host_str().unwrap_or("?").to_owned();
        let send_token = with_token && same_origin(&target, &self.base);
        let first = std::time::Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let authorization = match send_token {
                true => self.authorization(false).await?,
                false => None,
            };
            self.requests.fetch_add(1, Ordering::Relaxed);
            crate::metrics::count_request();
            let mut request = self
                .http
                .get(target.clone())
                .header(ACCEPT, "application/fhir+ndjson, application/ndjson;q=0.9")
                .timeout(DOWNLOAD_TIMEOUT);
            if let Some(value) = authorization {
                request = request.header(reqwest::header::AUTHORIZATION, value);
            }
            let started = std::time::Instant::now();
            let attempted =
                crate::interrupt::or_stop(download_once(request, to, self.max_download)).await;
            let failure = match attempted {
                None => {
                    let _ = tokio::fs::remove_file(to).await;
                    return Err(FhirError::Interrupted {
                        url: url.to_owned(),
                    });
                }
                Some(Ok(downloaded)) => return Ok(downloaded),
                Some(Err(failure)) => failure,
            };
            // A status (with its Retry-After) or a lost connection may be retried.
            let download_limits = Limits {
                whole: DOWNLOAD_TIMEOUT,
                ..self.retry.limits
            };
            // A status (with its Retry-After) or a lost connection may be retried.
            let (outcome, what, error) = match failure {
                DownloadFailure::Status {
                    status,
                    retry_after,
                    outcome,
                } => (
                    Some((status, retry_after)),
                    format!("HTTP {status}"),
                    FhirError::Status {
                        method: reqwest::Method::GET,
                        url: url.to_owned(),
                        status,
                        outcome,
                    },
                ),
                DownloadFailure::NoAnswer(error) => {
                    let cause = cause(&error, started.elapsed(), &download_limits);
                    tracing::debug!(url, error = %error, "Bulk Data download: {cause}");
                    (
                        None,
                        cause.clone(),
                        FhirError::Transport {
                            url: url.to_owned(),
                            kind: "Bulk Data download".into(),
                            host: host(),
                            cause,
                            error: error.without_url(),
                        },
                    )
                }
                DownloadFailure::Disk(source) => {
                    return Err(FhirError::Disk {
                        path: to.to_owned(),
                        source,
                    })
                }
                DownloadFailure::Refused(excess) => {
                    // Nothing of it is read: the partial file goes now, not with the folder.
                    let _ = tokio::fs::remove_file(to).await;
                    return Err(match excess {
                        Excess::TooLarge => FhirError::DownloadTooLarge {
                            host: host(),
                            limit: self.max_download,
                        },
                        Excess::NotGzip(source) => FhirError::DownloadNotGzip {
                            host: host(),
                            source,
                        },
                    });
                }
            };
            let outcome = match (&outcome, &error) {
                (Some((status, retry_after)), _) => {
                    Outcome::Status(*status, retry_after.as_deref())
                }
                (None, FhirError::Transport { error, .. })
                    if super::retry::certificate_refused(error).is_some() =>
                {
                    Outcome::CertificateRefused
                }
                (None, FhirError::Transport { error, .. })
                    if error.is_timeout() && !error.is_connect() =>
                {
                    Outcome::TimedOut
                }
                (None, _) => Outcome::NoAnswer,
            };
            match decide(
                &self.retry,
                attempt,
                first.elapsed(),
                outcome,
                std::time::SystemTime::now(),
                rand::random(),
            ) {
                Decision::RetryAfter(wait) => {
                    tracing::warn!(
                        "retrying Bulk Data download on {} after {what} in {} (attempt {} of {})",
                        host(),
                        wait_text(wait),
                        attempt + 1,
                        self.retry.max_attempts
                    );
                    if !crate::interrupt::sleep_or_stop(wait).await {
                        return Err(FhirError::Interrupted {
                            url: url.to_owned(),
                        });
                    }
                }
                Decision::Done | Decision::GiveUp => return Err(error),
            }
        }
    }

    /// Fetches one search page.
    pub async fn page(&self, url: &str) -> Result<SearchPage, FhirError> {
        let body = self.get_ok(url).await?;
        let bundle: BundleIn =
            serde_json::from_slice(&body).map_err(|source| FhirError::NotABundle {
                url: url.to_owned(),
                source,
            })?;
        if bundle.resource_type != "Bundle" {
            return Err(FhirError::NotABundleType {
                url: url.to_owned(),
                found: bundle.resource_type,
            });
        }
        Ok(SearchPage {
            resources: bundle
                .entry
                .into_iter()
                .filter_map(|e| e.resource)
                .collect(),
            next: bundle
                .link
                .into_iter()
                .find(|l| l.relation == "next")
                .map(|l| l.url),
        })
    }

    /// Runs a search to its last page, handing each page to `on_page`. Returns the page count.
    /// A next link that repeats any page already read, a search longer than
    /// `server.max_pages_per_search`, a read past `server.max_read_minutes` and a stop asked
    /// for by SIGINT/SIGTERM each end it with an error.
    pub async fn search_all(
        &self,
        first: Url,
        mut on_page: impl FnMut(SearchPage),
    ) -> Result<usize, FhirError> {
        let mut url = first.to_string();
        let mut visited: std::collections::HashSet<String> = std::collections::HashSet::new();
        loop {
            if crate::interrupt::requested() {
                return Err(FhirError::Interrupted { url });
            }
            self.past_read_budget(&url)?;
            if visited.len() >= self.max_pages {
                return Err(FhirError::TooManyPages {
                    url,
                    limit: self.max_pages,
                });
            }
            let mut page = self.page(&url).await?;
            let next = page.next.take();
            on_page(page);
            visited.insert(std::mem::take(&mut url));
            match next {
                None => return Ok(visited.len()),
                Some(next) if visited.contains(&next) => {
                    return Err(FhirError::RepeatedPage { url: next })
                }
                Some(next) => url = next,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_text_reads_issue_details() {
        let body = br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","details":{"text":"bad param"}}]}"#;
        assert_eq!(outcome_text(body), "error invalid: bad param");
        // Errors only, where there are errors, each with where it is.
        let body = br#"{"resourceType":"OperationOutcome","issue":[
            {"severity":"warning","code":"processing","diagnostics":"no narrative"},
            {"severity":"error","code":"processing","diagnostics":"Bundle entry missing fullUrl","expression":["Bundle.entry[3]"]}]}"#;
        assert_eq!(
            outcome_text(body),
            "error processing: Bundle entry missing fullUrl (at Bundle.entry[3])"
        );
        assert_eq!(outcome_text(b"<html>oops</html>"), "<html>oops</html>");
    }

    #[test]
    fn search_url_keeps_the_base_path_and_encodes_values() {
        let client = FhirClient::new("https://h:1/fhir/r4", &ServerConfig::default()).unwrap();
        let url = client.search_url("Observation", &[("code", "http://loinc.org|1834-1".into())]);
        assert_eq!(
            url.as_str(),
            "https://h:1/fhir/r4/Observation?code=http%3A%2F%2Floinc.org%7C1834-1"
        );
    }

    #[test]
    fn a_request_is_named_by_its_kind_without_its_query() {
        let base = Url::parse("https://fhir.example.org/r4/").unwrap();
        let kind =
            |url: &str| request_kind(&base, &reqwest::Method::GET, &Url::parse(url).unwrap());
        for (url, expected) in [
            (
                "https://fhir.example.org/r4/metadata",
                "CapabilityStatement",
            ),
            (
                "https://fhir.example.org/r4/Observation?patient=p1,p2&code=x",
                "Observation search",
            ),
            ("https://fhir.example.org/r4/?_getpages=abc", "search page"),
            ("https://fhir.example.org/r4/", "transaction"),
            ("https://fhir.example.org/r4/Group/g1", "Group read"),
            (
                "https://fhir.example.org/r4/DetectedIssue/$validate",
                "DetectedIssue $validate",
            ),
            (
                "https://fhir.example.org/r4/$export?_type=x",
                "Bulk Data kick-off",
            ),
            (
                "https://fhir.example.org/r4/Group/g1/$export",
                "Bulk Data kick-off",
            ),
            (
                "https://fhir.example.org/r4/$export-poll-status?_jobId=1",
                "Bulk Data status",
            ),
            ("https://jobs.example.org/status/1", "Bulk Data status"),
        ] {
            assert_eq!(kind(url), expected, "{url}");
        }
    }

    #[test]
    fn a_write_is_named_as_the_create_or_update_it_is() {
        use reqwest::Method;
        let base = Url::parse("https://fhir.example.org/r4/").unwrap();
        for (method, url, expected) in [
            (
                Method::POST,
                "https://fhir.example.org/r4/Device",
                "Device create",
            ),
            (
                Method::POST,
                "https://fhir.example.org/r4/DetectedIssue",
                "DetectedIssue create",
            ),
            (
                Method::PUT,
                "https://fhir.example.org/r4/DetectedIssue/di-1",
                "DetectedIssue update",
            ),
            (
                Method::POST,
                "https://fhir.example.org/r4/Provenance",
                "Provenance create",
            ),
            (Method::POST, "https://fhir.example.org/r4/", "transaction"),
            (
                Method::POST,
                "https://fhir.example.org/r4/DetectedIssue/$validate",
                "DetectedIssue $validate",
            ),
            (
                Method::GET,
                "https://fhir.example.org/r4/Device?identifier=x",
                "Device search",
            ),
            (
                Method::DELETE,
                "https://jobs.example.org/status/1",
                "Bulk Data delete",
            ),
        ] {
            assert_eq!(
                request_kind(&base, &method, &Url::parse(url).unwrap()),
                expected,
                "{method} {url}"
            );
        }
    }

    #[test]
    fn plain_http_is_for_this_machine_only_unless_allowed() {
        let url = |text: &str| Url::parse(text).unwrap();
        for local in [
            "http://127.0.0.1:8080/fhir",
            "http://localhost/fhir",
            "http://[::1]:9/",
        ] {
            assert_eq!(judge_url(&url(local), None, false), Ok(()), "{local}");
        }
        assert_eq!(
            judge_url(&url("https://fhir.example.org"), None, false),
            Ok(())
        );
        assert_eq!(
            judge_url(&url("http://fhir.example.org/r4"), None, false),
            Err(Refusal::InsecureHttp {
                host: "fhir.example.org".into()
            })
        );
        assert_eq!(
            judge_url(&url("http://fhir.example.org/r4"), None, true),
            Ok(())
        );
        assert!(judge_url(&url("ftp://fhir.example.org"), None, true).is_err());
    }

    #[test]
    fn a_url_named_by_an_https_server_never_steps_down_to_http() {
        let url = |text: &str| Url::parse(text).unwrap();
        let secure = url("https://fhir.example.org/r4/");
        let plain = url("http://127.0.0.1:8080/r4/");
        for allowed in [false, true] {
            assert_eq!(
                judge_url(&url("http://127.0.0.1/next"), Some(&secure), allowed),
                Err(Refusal::Downgrade {
                    host: "127.0.0.1".into()
                })
            );
            assert_eq!(
                judge_url(&url("https://files.example.org/a"), Some(&secure), allowed),
                Ok(())
            );
        }
        // From plain http on this machine: https anywhere, plain http here only.
        assert_eq!(
            judge_url(&url("https://files.example.org/a"), Some(&plain), false),
            Ok(())
        );
        assert_eq!(
            judge_url(&url("http://localhost:9/a"), Some(&plain), false),
            Ok(())
        );
        assert_eq!(
            judge_url(&url("http://files.example.org/a"), Some(&plain), false),
            Err(Refusal::InsecureHttp {
                host: "files.example.org".into()
            })
        );
    }

    #[test]
    fn a_download_counts_what_a_gzip_body_expands_to() {
        use std::io::Write;
        let text = "{\"resourceType\":\"Patient\"}\n".repeat(1000);
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gzip.write_all(text.as_bytes()).unwrap();
        let gzip = gzip.finish().unwrap();
        assert!(gzip.len() < 1000);
        // Fed a byte at a time, so the magic number arrives in two chunks.
        let feed = |limit: u64, body: &[u8]| {
            let mut expansion = Expansion::new(limit);
            for byte in body {
                expansion.add(std::slice::from_ref(byte))?;
            }
            expansion.finish()
        };
        assert!(matches!(feed(text.len() as u64, &gzip), Ok(true)));
        assert!(matches!(
            feed(text.len() as u64 - 1, &gzip),
            Err(Excess::TooLarge)
        ));
        assert!(matches!(
            feed(text.len() as u64, text.as_bytes()),
            Ok(false)
        ));
        assert!(matches!(
            feed(text.len() as u64 - 1, text.as_bytes()),
            Err(Excess::TooLarge)
        ));
        let mut corrupt = gzip.clone();
        corrupt[12] ^= 0xff;
        assert!(matches!(feed(1 << 20, &corrupt), Err(Excess::NotGzip(_))));
    }
}
