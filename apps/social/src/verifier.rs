//! The verifier service: checks a registration and answers passed or failed, the same way
//! every time it is asked about the same user (it records its verdict).
//!
//! Its rules: a first and a second name (not blank, at most 100 characters each); a
//! birthdate `YYYY-MM-DD` of someone aged 14 to 120 today; and, for demos, a configurable
//! share of registrations refused at random (the same users each time: the draw is a hash
//! of the user id).
//!
//! When a verification authority is configured (`SAGAFLOW_SOCIAL_VERIFIER_AUTHORITY`), a
//! registration that passes the rules is also put to it (`POST` of the registration, with the
//! request id and `traceparent`); it answers `{"passed": bool, "reason": …}`. While it does not
//! answer, the verifier is *down*: it replies nothing and the command comes again later.

use std::sync::Arc;

use sagaflow_app_kit::sql::{in_tx, int, now_ms, read, text};
use sagaflow_core::{Outcome, SqlValue, Store, StoreError};
use sagaflow_engine::{CommandCall, Participant, Unavailable};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::SocialConfig;

/// Checks the data; `Err(reason)` when it fails a rule.
pub fn check(
    first_name: &str,
    second_name: &str,
    birthdate: &str,
    today: (i32, u32, u32),
) -> Result<(), String> {
    for (field, value) in [("first_name", first_name), ("second_name", second_name)] {
        let v = value.trim();
        if v.is_empty() {
            return Err(format!("{field} is required"));
        }
        if v.chars().count() > 100 {
            return Err(format!("{field} is longer than 100 characters"));
        }
    }
    let parts: Vec<&str> = birthdate.trim().split('-').collect();
    let parsed = match parts[..] {
        [y, m, d] if y.len() == 4 && m.len() == 2 && d.len() == 2 => {
            match (y.parse::<i32>(), m.parse::<u32>(), d.parse::<u32>()) {
                (Ok(y), Ok(m), Ok(d))
                    if (1..=12).contains(&m) && (1..=days_in(y, m)).contains(&d) =>
                {
                    Some((y, m, d))
                }
                _ => None,
            }
        }
        _ => None,
    };
    let Some((y, m, d)) = parsed else {
        return Err(format!(
            "birthdate {birthdate:?} is not a date (YYYY-MM-DD)"
        ));
    };
    let (ty, tm, td) = today;
    let age = ty - y - i32::from((tm, td) < (m, d));
    if !(14..=120).contains(&age) {
        return Err(format!(
            "birthdate {birthdate} is not plausible (age {age}; 14 to 120 accepted)"
        ));
    }
    Ok(())
}

fn days_in(year: i32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// Today's date (UTC) from milliseconds since the epoch.
pub fn date_of(ms: i64) -> (i32, u32, u32) {
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

/// The demo draw for a user: a number in [0, 1) from the user id.
fn draw(user_id: &str) -> f64 {
    let hash = Sha256::digest(user_id.as_bytes());
    let n = u64::from_be_bytes(hash[..8].try_into().unwrap_or_default());
    (n >> 11) as f64 / (1u64 << 53) as f64
}

/// What the verifier needs.
#[derive(Clone)]
struct Verifier {
    store: Arc<dyn Store>,
    rejection_rate: f64,
    authority: Option<(String, reqwest::Client)>,
}

/// A verdict: passed, or failed with the reason.
type Verdict = Result<(), String>;

impl Verifier {
    /// The verdict for a registration: the recorded one when there is one (the same answer
    /// every time), else the rules', then the authority's; `Unavailable` when the authority
    /// does not answer.
    async fn verify(&self, call: &CommandCall) -> Result<Outcome, Unavailable> {
        let store = &self.store;
        let c = &call.context;
        let user_id = c["user_id"].as_str().unwrap_or_default().to_string();
        if let Some(recorded) = self.recorded(store, &user_id).await? {
            return Ok(answer(recorded));
        }
        let mut verdict = check(
            c["first_name"].as_str().unwrap_or_default(),
            c["second_name"].as_str().unwrap_or_default(),
            c["birthdate"].as_str().unwrap_or_default(),
            date_of(now_ms()),
        )
        .and_then(|()| {
            if draw(&user_id) < self.rejection_rate {
                Err("refused at random for the demo (SAGAFLOW_SOCIAL_REJECTION_RATE)".to_string())
            } else {
                Ok(())
            }
        });
        if verdict.is_ok() {
            // Asked outside any transaction: a slow authority holds no database lock.
            verdict = self.ask_authority(call).await?;
        }
        // The first verdict recorded is the one every later question gets.
        let (passed, reason) = match &verdict {
            Ok(()) => (true, "passed".to_string()),
            Err(why) => (false, why.clone()),
        };
        let row: Vec<SqlValue> = vec![
            user_id.as_str().into(),
            i64::from(passed).into(),
            reason.into(),
            call.request_id
                .clone()
                .map(Into::into)
                .unwrap_or(SqlValue::Null),
            call.traceparent
                .clone()
                .map(Into::into)
                .unwrap_or(SqlValue::Null),
            now_ms().into(),
        ];
        in_tx(store, move |tx| {
            Box::pin(async move {
                tx.execute(
                    "INSERT INTO social_verifier_checks (user_id, passed, reason, request_id, traceparent, checked_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id) DO NOTHING",
                    &row,
                )
                .await
                .map(|_| ())
            })
        })
        .await
        .map_err(unavailable)?;
        match self.recorded(store, &user_id).await? {
            Some(recorded) => Ok(answer(recorded)),
            None => Err(Unavailable("the verdict was not recorded".into())),
        }
    }

    async fn recorded(
        &self,
        store: &Arc<dyn Store>,
        user_id: &str,
    ) -> Result<Option<Verdict>, Unavailable> {
        let rows = read(
            store,
            "SELECT passed, reason FROM social_verifier_checks WHERE user_id = $1",
            &[user_id.into()],
        )
        .await
        .map_err(unavailable)?;
        Ok(rows.first().map(|row| {
            if int(row, 0) == 1 {
                Ok(())
            } else {
                Err(text(row, 1))
            }
        }))
    }

    /// The authority's verdict; `Unavailable` when it does not answer or answers an error.
    async fn ask_authority(&self, call: &CommandCall) -> Result<Verdict, Unavailable> {
        let Some((url, client)) = &self.authority else {
            return Ok(Ok(()));
        };
        let mut request = client.post(url).json(&call.context);
        if let Some(tp) = &call.traceparent {
            request = request.header("traceparent", tp);
        }
        if let Some(id) = &call.request_id {
            request = request.header("x-request-id", id);
        }
        // Lets the authority (and a test) see that the broker brought the command back.
        request = request.header("x-sagaflow-redelivered", call.redelivered.to_string());
        let response = request.send().await.map_err(|e| {
            Unavailable(format!(
                "the verification authority at {url} does not answer: {e}"
            ))
        })?;
        if !response.status().is_success() {
            return Err(Unavailable(format!(
                "the verification authority at {url} answered {}",
                response.status()
            )));
        }
        let body: Value = response.json().await.map_err(|e| {
            Unavailable(format!(
                "the verification authority's answer is unreadable: {e}"
            ))
        })?;
        Ok(match body["passed"].as_bool() {
            Some(true) => Ok(()),
            Some(false) => Err(body["reason"]
                .as_str()
                .unwrap_or("refused by the verification authority")
                .to_string()),
            None => {
                return Err(Unavailable(
                    "the verification authority's answer has no `passed`".into(),
                ))
            }
        })
    }
}

fn unavailable(e: StoreError) -> Unavailable {
    Unavailable(format!("the verifier's database: {e}"))
}

fn answer(verdict: Verdict) -> Outcome {
    let (passed, reason) = match verdict {
        Ok(()) => (true, "passed".to_string()),
        Err(why) => (false, why),
    };
    Outcome::ok(json!({ "verification": { "passed": passed, "reason": reason } }))
}

/// The verifier service, keeping its verdicts in `store`. While the authority (when one is
/// configured) or the database does not answer, a command is nacked and comes again later
/// — over RabbitMQ through the broker's delayed-retry loop.
pub fn participant(config: &SocialConfig, store: Arc<dyn Store>) -> Participant {
    let verifier = Verifier {
        store,
        rejection_rate: config.rejection_rate,
        authority: config.verifier_authority.clone().map(|url| {
            let client = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(2))
                .build()
                .unwrap_or_default();
            (url, client)
        }),
    };
    Participant::new("social-verifier").on_try("verify", move |call| {
        let verifier = verifier.clone();
        async move { verifier.verify(&call).await }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_name_what_fails() {
        let today = (2026, 11, 22);
        assert_eq!(check("Ann", "Lee", "1990-05-01", today), Ok(()));
        assert!(check(" ", "Lee", "1990-05-01", today)
            .unwrap_err()
            .contains("first_name"));
        assert!(check("Ann", "", "1990-05-01", today)
            .unwrap_err()
            .contains("second_name"));
        assert!(check("Ann", "Lee", "1990-02-30", today)
            .unwrap_err()
            .contains("not a date"));
        assert!(check("Ann", "Lee", "tomorrow", today)
            .unwrap_err()
            .contains("not a date"));
        assert!(check("Ann", "Lee", "2020-01-01", today)
            .unwrap_err()
            .contains("age 6"));
        assert!(check("Ann", "Lee", "1850-01-01", today)
            .unwrap_err()
            .contains("not plausible"));
        assert_eq!(check("Ann", "Lee", "2012-11-22", today), Ok(()), "14 today");
        assert!(
            check("Ann", "Lee", "2012-11-23", today).is_err(),
            "14 tomorrow"
        );
    }

    #[test]
    fn dates_from_milliseconds() {
        assert_eq!(date_of(0), (1970, 1, 1));
        assert_eq!(date_of(951_782_400_000), (2000, 2, 29));
        assert_eq!(date_of(1_795_305_600_000), (2026, 11, 22));
    }

    #[test]
    fn the_demo_draw_is_stable_and_spread() {
        assert_eq!(draw("u1"), draw("u1"));
        let below = (0..1000)
            .filter(|i| draw(&format!("user-{i}")) < 0.3)
            .count();
        assert!((200..400).contains(&below), "{below}");
    }
}
