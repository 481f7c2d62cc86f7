//! What an HTTP participant's answer means for the attempt (docs/protocol.md, "Commands over
//! HTTP"):
//!
//! | answer | outcome |
//! |---|---|
//! | 2xx with a JSON body | succeeded, the body is the step's output |
//! | 2xx with an empty body | succeeded, output null |
//! | 202 | none yet: the participant answers later (`POST /api/v1/replies`) |
//! | 409, 422 | rejected (compensate now), the reason from problem+json `detail` or the body |
//! | 429, 5xx | retryable failure, not retried before `Retry-After` |
//! | a redirect, any other 4xx | failure that retrying cannot fix |
//! | a 2xx that is not JSON, a body over the limit | retryable failure, saying so |

use std::time::{Duration, SystemTime};

use sagaflow_core::Outcome;
use serde_json::Value;

/// The most of a reason kept from an answer's body.
const REASON_MAX: usize = 500;

/// What one exchange means.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The reply to send; `None` for 202 (the participant answers later).
    pub outcome: Option<Outcome>,
    /// Whether it counts against the endpoint's circuit breaker.
    pub endpoint_failed: bool,
}

impl Verdict {
    fn answered(outcome: Outcome) -> Self {
        Verdict {
            outcome: Some(outcome),
            endpoint_failed: false,
        }
    }

    /// The endpoint could not be used: refused, timed out, broke off, answered garbage.
    /// `maybe_done`: the call reached the service and what it did is not known (a timeout,
    /// a broken exchange, an unreadable or server-error answer), so should the step be given
    /// up it is compensated rather than assumed undone.
    pub fn endpoint_failure(
        reason: String,
        retry_after: Option<Duration>,
        maybe_done: bool,
    ) -> Self {
        Verdict {
            outcome: Some(Outcome::Failed {
                error: reason,
                retryable: true,
                retry_after_ms: retry_after.map(|d| d.as_millis().min(u64::MAX as u128) as u64),
                maybe_done,
            }),
            endpoint_failed: true,
        }
    }
}

/// Reads an answer: its status, its `Retry-After` and `Location` headers, its body (already
/// bounded by the caller), and whether the body was cut at the limit.
pub fn classify(
    service: &str,
    status: u16,
    retry_after: Option<&str>,
    location: Option<&str>,
    body: &[u8],
    now: SystemTime,
) -> Verdict {
    let from = |what: String| format!("{service} answered {status}: {what}");
    match status {
        202 => Verdict {
            outcome: None,
            endpoint_failed: false,
        },
        200..=299 => {
            if body.iter().all(u8::is_ascii_whitespace) {
                return Verdict::answered(Outcome::ok(Value::Null));
            }
            match serde_json::from_slice::<Value>(body) {
                Ok(output) => Verdict::answered(Outcome::ok(output)),
                // It said done, in a form that cannot be read: maybe done.
                Err(e) => Verdict::endpoint_failure(
                    from(format!("the body is not JSON ({e}): {}", excerpt(body))),
                    None,
                    true,
                ),
            }
        }
        409 | 422 => Verdict::answered(Outcome::rejected(reason(body))),
        // 429 and 503 turn the call away before it is handled; any other server error (a
        // crash mid-handler, a gateway's 502 or 504) may come after the effect.
        429 | 500..=599 => Verdict::endpoint_failure(
            from(reason(body)),
            retry_after.and_then(|v| parse_retry_after(v, now)),
            !matches!(status, 429 | 503),
        ),
        300..=399 => Verdict::answered(Outcome::fatal(from(format!(
            "a redirect{}, which sagaflow does not follow: bind the service to the final URL",
            location.map(|l| format!(" to {l}")).unwrap_or_default()
        )))),
        _ => Verdict::answered(Outcome::fatal(from(reason(body)))),
    }
}

/// The reason an answer gives: problem+json's `detail` (else `title`), or the body's text.
fn reason(body: &[u8]) -> String {
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
        for field in ["detail", "title", "reason", "error", "message"] {
            if let Some(Value::String(s)) = map.get(field) {
                return cut(s);
            }
        }
    }
    let text = excerpt(body);
    if text.is_empty() {
        "no reason given".to_string()
    } else {
        text
    }
}

/// The start of a body as text, for a reason.
fn excerpt(body: &[u8]) -> String {
    cut(String::from_utf8_lossy(&body[..body.len().min(REASON_MAX * 4)]).trim())
}

fn cut(s: &str) -> String {
    match s.char_indices().nth(REASON_MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// `Retry-After` as seconds or an HTTP date; at most an hour.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(Duration::from_secs(3600)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn verdict(status: u16, body: &str) -> Verdict {
        classify(
            "billing",
            status,
            None,
            None,
            body.as_bytes(),
            SystemTime::now(),
        )
    }

    #[test]
    fn server_errors_other_than_429_and_503_may_have_taken_effect() {
        let maybe = |status: u16| match verdict(status, "").outcome {
            Some(Outcome::Failed {
                retryable: true,
                maybe_done,
                ..
            }) => maybe_done,
            other => panic!("{status}: {other:?}"),
        };
        assert!(!maybe(429));
        assert!(!maybe(503));
        assert!(maybe(500));
        assert!(maybe(502));
        assert!(maybe(504));
        let not_json = verdict(200, "<html>");
        assert!(matches!(
            not_json.outcome,
            Some(Outcome::Failed {
                maybe_done: true,
                ..
            })
        ));
    }

    #[test]
    fn each_status_class_means_what_the_protocol_says() {
        assert_eq!(
            verdict(200, r#"{"charged": 30}"#).outcome,
            Some(Outcome::ok(json!({"charged": 30})))
        );
        assert_eq!(verdict(204, "").outcome, Some(Outcome::ok(Value::Null)));
        assert_eq!(verdict(202, "").outcome, None);
        assert_eq!(
            verdict(
                422,
                r#"{"type":"about:blank","title":"No","detail":"card declined"}"#
            )
            .outcome,
            Some(Outcome::rejected("card declined"))
        );
        assert_eq!(
            verdict(409, "already shipped").outcome,
            Some(Outcome::rejected("already shipped"))
        );
        let v = verdict(503, "down for maintenance");
        assert!(v.endpoint_failed);
        assert!(matches!(
            v.outcome,
            Some(Outcome::Failed { retryable: true, ref error, .. }) if error.contains("503") && error.contains("maintenance")
        ));
        let v = verdict(400, r#"{"detail":"amount missing"}"#);
        assert!(!v.endpoint_failed);
        assert!(matches!(
            v.outcome,
            Some(Outcome::Failed { retryable: false, ref error, .. }) if error.contains("amount missing")
        ));
        let v = classify(
            "billing",
            302,
            None,
            Some("http://elsewhere/"),
            b"",
            SystemTime::now(),
        );
        assert!(matches!(
            v.outcome,
            Some(Outcome::Failed { retryable: false, ref error, .. }) if error.contains("redirect to http://elsewhere/")
        ));
    }

    #[test]
    fn a_non_json_success_is_a_failed_attempt_with_the_reason() {
        let v = verdict(200, "<html>oops</html>");
        assert!(v.endpoint_failed);
        assert!(matches!(
            v.outcome,
            Some(Outcome::Failed { retryable: true, ref error, .. }) if error.contains("not JSON") && error.contains("<html>oops")
        ));
    }

    #[test]
    fn retry_after_is_honoured_in_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
        let v = classify("billing", 429, Some("2"), None, b"slow down", now);
        assert!(matches!(
            v.outcome,
            Some(Outcome::Failed {
                retry_after_ms: Some(2000),
                ..
            })
        ));
    }
}
