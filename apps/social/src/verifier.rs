//! The verifier service: checks a registration and answers passed or failed, the same way
//! every time it is asked about the same user (it records its verdict).
//!
//! Its rules: a first and a second name (not blank, at most 100 characters each); a
//! birthdate `YYYY-MM-DD` of someone aged 14 to 120 today; and, for demos, a configurable
//! share of registrations refused at random (the same users each time: the draw is a hash
//! of the user id).

use sagaflow_core::{Outcome, ParticipantTx, StoreError};
use sagaflow_engine::{async_trait, CommandCall, Participant, TxHandler};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::SocialConfig;
use sagaflow_app_kit::sql::{int, now_ms, text};

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

struct Verify {
    rejection_rate: f64,
}

#[async_trait]
impl TxHandler for Verify {
    async fn handle(
        &self,
        call: &CommandCall,
        tx: &mut dyn ParticipantTx,
    ) -> Result<Outcome, StoreError> {
        let c = &call.context;
        let user_id = c["user_id"].as_str().unwrap_or_default().to_string();
        let recorded = tx
            .query(
                "SELECT passed, reason FROM social_verifier_checks WHERE user_id = $1",
                &[user_id.as_str().into()],
            )
            .await?;
        let (passed, reason) = match recorded.first() {
            Some(row) => (int(row, 0) == 1, text(row, 1)),
            None => {
                let verdict = check(
                    c["first_name"].as_str().unwrap_or_default(),
                    c["second_name"].as_str().unwrap_or_default(),
                    c["birthdate"].as_str().unwrap_or_default(),
                    date_of(now_ms()),
                )
                .and_then(|()| {
                    if draw(&user_id) < self.rejection_rate {
                        Err(
                            "refused at random for the demo (SAGAFLOW_SOCIAL_REJECTION_RATE)"
                                .to_string(),
                        )
                    } else {
                        Ok(())
                    }
                });
                let (passed, reason) = match verdict {
                    Ok(()) => (true, "passed".to_string()),
                    Err(why) => (false, why),
                };
                tx.execute(
                    "INSERT INTO social_verifier_checks (user_id, passed, reason, request_id, traceparent, checked_at) VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        user_id.as_str().into(),
                        i64::from(passed).into(),
                        reason.as_str().into(),
                        call.request_id.clone().map(Into::into).unwrap_or(sagaflow_core::SqlValue::Null),
                        call.traceparent.clone().map(Into::into).unwrap_or(sagaflow_core::SqlValue::Null),
                        now_ms().into(),
                    ],
                )
                .await?;
                (passed, reason)
            }
        };
        Ok(Outcome::ok(
            json!({ "verification": { "passed": passed, "reason": reason } }),
        ))
    }
}

/// The verifier service.
pub fn participant(config: &SocialConfig) -> Participant {
    Participant::new("social-verifier").on_tx(
        "verify",
        Verify {
            rejection_rate: config.rejection_rate,
        },
    )
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
