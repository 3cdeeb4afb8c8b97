//! The one retry policy: which failures are worth another try, and how long to wait.
//! Only idempotent requests are retried (reads, and writes made safe to repeat by conditional
//! create, If-Match and client-chosen ids). Waits grow exponentially with full jitter, capped;
//! a `Retry-After` (seconds or HTTP date) is honoured up to a cap.

use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// The longest `Retry-After` honoured.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

/// What came back from one attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome<'a> {
    /// An HTTP status, with the `Retry-After` header if any.
    Status(u16, Option<&'a str>),
    /// No answer: connection refused or cut, or a timeout.
    NoAnswer,
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

/// Decides after attempt number `attempt` (1 for the first). `jitter` is a number in [0, 1)
/// (random in use; fixed in tests).
pub fn decide(
    policy: &RetryPolicy,
    attempt: u32,
    outcome: Outcome<'_>,
    idempotent: bool,
    now: SystemTime,
    jitter: f64,
) -> Decision {
    let transient = match outcome {
        Outcome::Status(status, _) if (200..400).contains(&status) => return Decision::Done,
        Outcome::Status(status, _) => is_transient(status),
        Outcome::NoAnswer => true,
    };
    if !transient {
        return Decision::Done;
    }
    if !idempotent || attempt >= policy.max_attempts {
        return Decision::GiveUp;
    }
    if let Outcome::Status(_, Some(header)) = outcome {
        if let Some(wait) = retry_after(header, now) {
            return Decision::RetryAfter(wait.min(policy.max_retry_after));
        }
    }
    let exponential = policy
        .base_delay
        .saturating_mul(2u32.saturating_pow(attempt - 1))
        .min(policy.max_delay);
    Decision::RetryAfter(exponential.mul_f64(jitter.clamp(0.0, 1.0)))
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
    /// The last attempt got no answer (or a body cut short).
    NoAnswer(reqwest::Error),
}

/// Sends the request `build` makes, once per attempt, until `decide` says stop. The whole body
/// is read inside each attempt, so a body cut short counts as a missing answer. Returns the
/// last answer, whatever its status: the caller judges it.
pub async fn send_with_retries<E>(
    policy: &RetryPolicy,
    idempotent: bool,
    mut build: impl FnMut() -> Result<reqwest::RequestBuilder, E>,
) -> Result<Answer, SendFailure<E>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = match build().map_err(SendFailure::Build)?.send().await {
            Ok(response) => {
                let status = response.status();
                let headers = response.headers().clone();
                response.bytes().await.map(|body| Answer {
                    status,
                    headers,
                    body,
                })
            }
            Err(e) => Err(e),
        };
        let outcome = match &result {
            Ok(answer) => Outcome::Status(
                answer.status.as_u16(),
                answer
                    .headers
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()),
            ),
            Err(_) => Outcome::NoAnswer,
        };
        match decide(
            policy,
            attempt,
            outcome,
            idempotent,
            SystemTime::now(),
            rand::random(),
        ) {
            Decision::RetryAfter(wait) => {
                tracing::warn!(
                    attempt,
                    wait_ms = wait.as_millis() as u64,
                    "retrying a request"
                );
                tokio::time::sleep(wait).await;
            }
            Decision::Done | Decision::GiveUp => return result.map_err(SendFailure::NoAnswer),
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
            let decision = decide(&policy(), 1, Outcome::Status(status, None), true, now, 0.5);
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
    fn writes_that_are_not_idempotent_are_never_retried() {
        let now = SystemTime::now();
        assert_eq!(
            decide(&policy(), 1, Outcome::Status(503, None), false, now, 0.5),
            Decision::GiveUp
        );
        assert_eq!(
            decide(&policy(), 1, Outcome::NoAnswer, false, now, 0.5),
            Decision::GiveUp
        );
    }

    #[test]
    fn backoff_doubles_with_full_jitter_and_is_capped() {
        let now = SystemTime::now();
        let wait =
            |attempt, jitter| decide(&policy(), attempt, Outcome::NoAnswer, true, now, jitter);
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
            decide(&capped, 20, Outcome::NoAnswer, true, now, 1.0),
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
                Outcome::Status(429, Some("3")),
                true,
                now,
                0.9
            ),
            Decision::RetryAfter(Duration::from_secs(3))
        );
        assert_eq!(
            decide(
                &policy(),
                1,
                Outcome::Status(503, Some(&later)),
                true,
                now,
                0.9
            ),
            Decision::RetryAfter(Duration::from_secs(7))
        );
        assert_eq!(
            decide(
                &policy(),
                1,
                Outcome::Status(429, Some("86400")),
                true,
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
                Outcome::Status(429, Some("soon")),
                true,
                now,
                1.0
            ),
            Decision::RetryAfter(Duration::from_millis(250))
        );
    }
}
