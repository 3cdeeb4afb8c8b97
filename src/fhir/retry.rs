//! The one retry policy: which failures are worth another try, and how long to wait.
//! Every request the job sends is safe to repeat (reads, and writes made idempotent by
//! conditional create, If-Match and content-derived ids), so every one is retried on a
//! transient failure. Waits grow exponentially with full jitter, capped; a `Retry-After`
//! (seconds or HTTP date) is honoured up to a cap; and the retries of one request stop once
//! `max_total` has passed since its first attempt. A request whose answer timed out is not
//! tried again: a server that sent nothing for `server.first_byte_timeout_secs` (60 s by
//! default) is not likely to on a second try, and a dead server ends the run within two
//! minutes. A connection not made in time is retried like a refused one (five attempts of at
//! most `server.connect_timeout_secs`, 10 s: under a minute in all).
//! Every retry is one warning naming the request kind, the host, the status or error, and
//! the wait; never the URL (its query names patients), which is logged at debug level only.

use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// The longest `Retry-After` honoured.
    pub max_retry_after: Duration,
    /// No retry starts later than this after the first attempt (`server.max_retry_secs`).
    pub max_total: Duration,
    /// The client's timeouts, to say which one ran out.
    pub limits: Limits,
}

/// The timeouts of the HTTP client (`server.connect_timeout_secs`,
/// `server.first_byte_timeout_secs`, `server.request_timeout_secs`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub connect: Duration,
    /// No byte for this long (the first, or the next): the answer is given up.
    pub first_byte: Duration,
    /// The whole request, body included.
    pub whole: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(60),
            whole: Duration::from_secs(120),
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
            max_total: Duration::from_secs(600),
            limits: Limits::default(),
        }
    }
}

/// What came back from one attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome<'a> {
    /// An HTTP status, with the `Retry-After` header if any.
    Status(u16, Option<&'a str>),
    /// No answer: connection refused or cut.
    NoAnswer,
    /// No answer within a timeout (a connection made, nothing sent back): not retried.
    TimedOut,
    /// The server's TLS certificate refused (an unknown issuer, expired, for another name):
    /// no second try changes it, so none is made.
    CertificateRefused,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    Done,
    RetryAfter(Duration),
    GiveUp,
}

/// Statuses that say "try again later": request timeout, too many requests, and the server
/// or gateway errors that are usually transient. 501 and 505 are not: they will not change.
pub fn is_transient(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Decides after attempt number `attempt` (1 for the first), `elapsed` after the first began.
/// `jitter` is a number in [0, 1) (random in use; fixed in tests).
pub fn decide(
    policy: &RetryPolicy,
    attempt: u32,
    elapsed: Duration,
    outcome: Outcome<'_>,
    now: SystemTime,
    jitter: f64,
) -> Decision {
    let transient = match outcome {
        Outcome::Status(status, _) if (200..400).contains(&status) => return Decision::Done,
        Outcome::Status(status, _) => is_transient(status),
        Outcome::NoAnswer => true,
        Outcome::TimedOut | Outcome::CertificateRefused => return Decision::GiveUp,
    };
    if !transient {
        return Decision::Done;
    }
    if attempt >= policy.max_attempts {
        return Decision::GiveUp;
    }
    let asked = match outcome {
        Outcome::Status(_, Some(header)) => retry_after(header, now),
        _ => None,
    };
    let wait = match asked {
        Some(wait) => wait.min(policy.max_retry_after),
        None => policy
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempt - 1))
            .min(policy.max_delay)
            .mul_f64(jitter.clamp(0.0, 1.0)),
    };
    if elapsed.saturating_add(wait) > policy.max_total {
        return Decision::GiveUp;
    }
    Decision::RetryAfter(wait)
}

/// A complete answer: status, headers and the whole body.
pub struct Answer {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes::Bytes,
}

/// Why `send_with_retries` has no answer to give.
pub enum SendFailure<E> {
    /// The request could not be built (`build` failed).
    Build(E),
    /// The last attempt got no answer (or a body cut short): the error, and `cause`, what
    /// it means in a few words ("no answer within 60 s", "connection refused").
    NoAnswer {
        error: reqwest::Error,
        cause: String,
    },
    /// A stop was asked for (SIGINT/SIGTERM): the request was dropped where it stood.
    Interrupted,
    /// The body is larger than the limit: refused, not retried.
    TooLarge { limit: u64 },
}

/// Reads a whole body, refusing one larger than `limit` without holding more than that (a
/// server's `Content-Length`, when it gives one, is checked first).
async fn body_within(
    mut response: reqwest::Response,
    limit: u64,
) -> Result<Result<bytes::Bytes, reqwest::Error>, u64> {
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(limit);
    }
    let mut body = bytes::BytesMut::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() as u64 + chunk.len() as u64 > limit {
                    return Err(limit);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(Ok(body.freeze())),
            Err(e) => return Ok(Err(e)),
        }
    }
}

/// What a request is, for a person: its kind ("Observation search", "token request") and the
/// host it goes to. Never the URL: its query may name patients.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub kind: &'a str,
    pub host: &'a str,
}

/// The rustls error in `error`, looking inside `io::Error`s, which may wrap one another (the
/// TLS stream's `InvalidData` inside the connector's `Other`) and hide what they wrap from
/// `source()`.
fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let inner = error.downcast_ref::<std::io::Error>()?.get_ref()?;
    rustls_error(inner)
}

/// The server's certificate, refused by this machine's TLS check, in a few words with what to
/// do about it; `None` for any other failure.
pub fn certificate_refused(error: &reqwest::Error) -> Option<String> {
    use rustls::CertificateError as Certificate;
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let tls = rustls_error(cause);
        if let Some(rustls::Error::InvalidCertificate(problem)) = tls {
            let advice = match problem {
                Certificate::UnknownIssuer | Certificate::BadSignature => {
                    "its certificate is not signed by a trusted CA: set server.ca_file to the PEM file of that CA"
                }
                Certificate::Expired | Certificate::ExpiredContext { .. } => {
                    "its certificate has expired: have it renewed (or check this machine's clock)"
                }
                Certificate::NotValidYet | Certificate::NotValidYetContext { .. } => {
                    "its certificate is not valid yet: check this machine's clock"
                }
                Certificate::NotValidForName | Certificate::NotValidForNameContext { .. } => {
                    "its certificate is for another host name: use the name it was issued for in the server URL"
                }
                Certificate::Revoked => "its certificate has been revoked",
                _ => "its certificate is refused: check it, and server.ca_file",
            };
            return Some(format!("TLS: {advice} (not retried)"));
        }
        if let Some(rustls::Error::AlertReceived(alert)) = tls {
            if client_certificate_refused(*alert) {
                return Some(format!("TLS: {CLIENT_CERTIFICATE_REFUSED} (not retried)"));
            }
        }
        source = cause.source();
    }
    None
}

const CLIENT_CERTIFICATE_REFUSED: &str = "the server refused the client certificate (or its absence): check server.client_cert_file and client_key_file";

/// The alerts a server sends when it refuses the client's certificate (mutual TLS): asking
/// again with the same certificate cannot succeed.
fn client_certificate_refused(alert: rustls::AlertDescription) -> bool {
    use rustls::AlertDescription as Alert;
    matches!(
        alert,
        Alert::BadCertificate
            | Alert::UnsupportedCertificate
            | Alert::CertificateRevoked
            | Alert::CertificateExpired
            | Alert::CertificateUnknown
            | Alert::UnknownCA
            | Alert::AccessDenied
            | Alert::CertificateRequired
    )
}

/// What went wrong with a request that got no answer, in a few words: which timeout ran out,
/// "connection refused", a refused certificate and what to do, or the innermost error's text
/// (a DNS failure).
pub fn cause(error: &reqwest::Error, took: Duration, limits: &Limits) -> String {
    if let Some(refused) = certificate_refused(error) {
        return refused;
    }
    let seconds = |d: Duration| d.as_secs_f64().round() as u64;
    if error.is_timeout() {
        return if error.is_connect() {
            format!("no connection within {} s", seconds(limits.connect))
        } else if took + Duration::from_millis(500) >= limits.whole {
            format!("no complete answer within {} s", seconds(limits.whole))
        } else {
            format!("no answer within {} s", seconds(limits.first_byte))
        };
    }
    let mut innermost: &(dyn std::error::Error + 'static) = error;
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind;
            match io.kind() {
                ErrorKind::ConnectionRefused => return "connection refused".into(),
                ErrorKind::ConnectionReset => return "connection reset".into(),
                ErrorKind::ConnectionAborted => return "connection aborted".into(),
                ErrorKind::TimedOut => {
                    return format!("no answer within {} s", seconds(limits.first_byte))
                }
                _ => {}
            }
        }
        innermost = cause;
        source = cause.source();
    }
    let text = innermost.to_string();
    match (error.is_body() || error.is_decode(), error.is_connect()) {
        (true, _) => format!("the answer was cut short ({text})"),
        (false, true) => format!("cannot connect ({text})"),
        _ => text,
    }
}

/// A wait in words: "4 s", "250 ms".
pub fn wait_text(wait: Duration) -> String {
    match wait.as_millis() {
        ms if ms < 1000 => format!("{ms} ms"),
        _ => format!("{} s", wait.as_secs_f64().round() as u64),
    }
}

/// Sends the request `build` makes, once per attempt, until `decide` says stop. The whole body
/// is read inside each attempt (at most `max_body` bytes), so a body cut short counts as a
/// missing answer. Returns the last answer, whatever its status: the caller judges it. A stop
/// asked for (SIGINT/SIGTERM) drops the attempt or the wait under way at once.
pub async fn send_with_retries<E>(
    policy: &RetryPolicy,
    max_body: u64,
    target: Target<'_>,
    mut build: impl FnMut() -> Result<reqwest::RequestBuilder, E>,
) -> Result<Answer, SendFailure<E>> {
    let first = std::time::Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let request = build().map_err(SendFailure::Build)?;
        let started = std::time::Instant::now();
        let attempted = crate::interrupt::or_stop(async {
            match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    match body_within(response, max_body).await {
                        Err(limit) => Err(limit),
                        Ok(body) => Ok(body.map(|body| Answer {
                            status,
                            headers,
                            body,
                        })),
                    }
                }
                Err(e) => Ok(Err(e)),
            }
        })
        .await;
        let result = match attempted {
            None => return Err(SendFailure::Interrupted),
            Some(Err(limit)) => return Err(SendFailure::TooLarge { limit }),
            Some(Ok(result)) => result,
        };
        let (outcome, what) = match &result {
            Ok(answer) => (
                Outcome::Status(
                    answer.status.as_u16(),
                    answer
                        .headers
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok()),
                ),
                format!("HTTP {}", answer.status.as_u16()),
            ),
            Err(e) if certificate_refused(e).is_some() => (
                Outcome::CertificateRefused,
                cause(e, started.elapsed(), &policy.limits),
            ),
            Err(e) if e.is_timeout() && !e.is_connect() => (
                Outcome::TimedOut,
                cause(e, started.elapsed(), &policy.limits),
            ),
            Err(e) => (
                Outcome::NoAnswer,
                cause(e, started.elapsed(), &policy.limits),
            ),
        };
        match decide(
            policy,
            attempt,
            first.elapsed(),
            outcome,
            SystemTime::now(),
            rand::random(),
        ) {
            Decision::RetryAfter(wait) => {
                tracing::warn!(
                    "retrying {} on {} after {what} in {} (attempt {} of {})",
                    target.kind,
                    target.host,
                    wait_text(wait),
                    attempt + 1,
                    policy.max_attempts
                );
                crate::metrics::count_retry();
                if !crate::interrupt::sleep_or_stop(wait).await {
                    return Err(SendFailure::Interrupted);
                }
            }
            Decision::Done | Decision::GiveUp => {
                return result.map_err(|error| SendFailure::NoAnswer {
                    cause: cause(&error, started.elapsed(), &policy.limits),
                    error,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::default()
    }

    #[test]
    fn every_status_code_is_pinned() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for status in 100u16..600 {
            let decision = decide(
                &policy(),
                1,
                Duration::ZERO,
                Outcome::Status(status, None),
                now,
                0.5,
            );
            let expected = match status {
                200..=399 => Decision::Done,
                408 | 429 | 500 | 502 | 503 | 504 => {
                    Decision::RetryAfter(Duration::from_millis(125))
                }
                // 1xx are not final answers reqwest hands us, and 4xx/5xx others are final.
                _ => Decision::Done,
            };
            assert_eq!(decision, expected, "status {status}");
        }
    }

    #[test]
    fn no_retry_starts_after_the_total_budget() {
        let now = SystemTime::now();
        let budget = RetryPolicy {
            max_total: Duration::from_secs(10),
            ..policy()
        };
        let at = |elapsed| {
            decide(
                &budget,
                2,
                elapsed,
                Outcome::Status(429, Some("3")),
                now,
                0.5,
            )
        };
        assert_eq!(
            at(Duration::from_secs(7)),
            Decision::RetryAfter(Duration::from_secs(3))
        );
        assert_eq!(at(Duration::from_secs(8)), Decision::GiveUp);
    }

    #[test]
    fn backoff_doubles_with_full_jitter_and_is_capped() {
        let now = SystemTime::now();
        let wait = |attempt, jitter| {
            decide(
                &policy(),
                attempt,
                Duration::ZERO,
                Outcome::NoAnswer,
                now,
                jitter,
            )
        };
        assert_eq!(
            wait(1, 1.0),
            Decision::RetryAfter(Duration::from_millis(250))
        );
        assert_eq!(
            wait(3, 1.0),
            Decision::RetryAfter(Duration::from_millis(1000))
        );
        assert_eq!(wait(2, 0.0), Decision::RetryAfter(Duration::ZERO));
        let capped = RetryPolicy {
            max_attempts: 50,
            ..policy()
        };
        assert_eq!(
            decide(&capped, 20, Duration::ZERO, Outcome::NoAnswer, now, 1.0),
            Decision::RetryAfter(Duration::from_secs(30))
        );
        assert_eq!(wait(5, 0.5), Decision::GiveUp);
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date_is_honoured_up_to_the_cap() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(
            decide(
                &policy(),
                1,
                Duration::ZERO,
                Outcome::Status(429, Some("3")),
                now,
                0.9
            ),
            Decision::RetryAfter(Duration::from_secs(3))
        );
        assert_eq!(
            decide(
                &policy(),
                1,
                Duration::ZERO,
                Outcome::Status(503, Some(&later)),
                now,
                0.9
            ),
            Decision::RetryAfter(Duration::from_secs(7))
        );
        assert_eq!(
            decide(
                &policy(),
                1,
                Duration::ZERO,
                Outcome::Status(429, Some("86400")),
                now,
                0.9
            ),
            Decision::RetryAfter(Duration::from_secs(120))
        );
        // An unreadable Retry-After falls back to the backoff.
        assert_eq!(
            decide(
                &policy(),
                1,
                Duration::ZERO,
                Outcome::Status(429, Some("soon")),
                now,
                1.0
            ),
            Decision::RetryAfter(Duration::from_millis(250))
        );
    }
}
