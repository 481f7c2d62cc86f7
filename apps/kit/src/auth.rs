//! Passwords and tokens for sagaflow's reference apps: Argon2id password hashes, and HS256
//! JSON Web Tokens with an expiry, checked for algorithm, signature and time.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::http::StatusCode;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sagaflow_api::Problem;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::SemaphorePermit;

/// What a token says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// The user's id.
    pub sub: String,
    /// The user's email.
    pub email: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
}

/// Signs a token for `claims`.
pub fn sign_token(secret: &[u8], claims: &Claims) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{header}.{payload}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// Checks a token's signature, algorithm and expiry (at `now_ms`); says why it is refused.
pub fn verify_token(secret: &[u8], token: &str, now_ms: i64) -> Result<Claims, String> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the token is not a JWT".to_string());
    };
    let header: Value = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or("the token's header is unreadable")?;
    if header["alg"] != "HS256" {
        return Err("the token must be signed with HS256".to_string());
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| "the token's signature is unreadable")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(format!("{}.{payload}", token.split('.').next().unwrap_or_default()).as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| "the token's signature is wrong")?;
    let claims: Claims = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|p| serde_json::from_slice(&p).ok())
        .ok_or("the token's claims are unreadable")?;
    if claims.exp * 1000 <= now_ms {
        return Err("the token has expired: log in again".to_string());
    }
    Ok(claims)
}

/// Hashes a password with Argon2id and a random salt (PHC string format).
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut bytes = [0u8; 16];
    random_fill(&mut bytes);
    let salt = SaltString::encode_b64(&bytes).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches a stored hash.
pub fn password_matches(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Fills `buf` from the operating system's random source.
pub fn random_fill(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system's random source works");
}

/// A fresh random key for signing tokens, as text.
pub fn random_secret() -> String {
    let mut fresh = [0u8; 32];
    random_fill(&mut fresh);
    URL_SAFE_NO_PAD.encode(fresh)
}

/// Password hashes computed at once, at most: each Argon2id hash holds 19 MiB, so an
/// unbounded burst of registrations or logins could exhaust memory. Others wait their turn.
const HASHING_AT_ONCE: usize = 4;

/// Requests waiting for a hash, at most, beside those hashing: past it a request is turned
/// away at once (503 with `Retry-After`) instead of queueing without bound.
const HASHING_WAITERS: usize = 64;

fn hashing() -> &'static tokio::sync::Semaphore {
    static HASHING: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    HASHING.get_or_init(|| tokio::sync::Semaphore::new(HASHING_AT_ONCE))
}

/// Places in the line for [`hashing`]: those hashing and those waiting.
fn line() -> &'static tokio::sync::Semaphore {
    static LINE: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    LINE.get_or_init(|| tokio::sync::Semaphore::new(HASHING_AT_ONCE + HASHING_WAITERS))
}

fn busy() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "too many passwords are being checked right now; try again in a second",
    )
    .retry_after(1)
}

/// A turn to hash: a place in the line (or [`busy`] at once), then one of the few hashers.
async fn turn() -> Result<(SemaphorePermit<'static>, SemaphorePermit<'static>), Problem> {
    let place = line().try_acquire().map_err(|_| busy())?;
    let hasher = hashing().acquire().await.map_err(|_| busy())?;
    Ok((place, hasher))
}

/// [`hash_password`] on a blocking thread, a few at a time; 503 `busy` when too many wait.
pub async fn hash_password_async(password: String) -> Result<String, Problem> {
    let _turn = turn().await?;
    let failed = |e: String| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "hash_failed", e);
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(failed)
}

/// [`password_matches`] on a blocking thread, a few at a time. With no stored hash (an
/// unknown account) it checks against a fixed hash anyway, so the answer takes as long
/// either way and does not tell which accounts exist.
pub async fn password_matches_async(
    password: String,
    stored: Option<String>,
) -> Result<bool, Problem> {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let _turn = turn().await?;
    let known = stored.is_some();
    let stored = stored.unwrap_or_else(|| {
        DUMMY
            .get_or_init(|| hash_password("not a password anyone has").unwrap_or_default())
            .clone()
    });
    let matches = tokio::task::spawn_blocking(move || password_matches(&password, &stored))
        .await
        .unwrap_or(false);
    Ok(known && matches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_line_is_turned_away_at_once_with_retry_after() {
        // Every place in the line taken: the next request does not wait.
        let places = line()
            .try_acquire_many((HASHING_AT_ONCE + HASHING_WAITERS) as u32)
            .expect("the line is free");
        let refused = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            hash_password_async("pw".into()),
        )
        .await
        .expect("answered at once");
        let problem = refused.expect_err("busy");
        assert_eq!((problem.status, problem.code.as_str()), (503, "busy"));
        assert_eq!(problem.retry_after_secs, Some(1));
        let refused = password_matches_async("pw".into(), None).await;
        assert_eq!(refused.expect_err("busy").code, "busy");
        drop(places);
        assert!(hash_password_async("pw".into()).await.is_ok());
    }

    #[test]
    fn tokens_verify_and_refuse_tampering_other_keys_and_expiry() {
        let claims = Claims {
            sub: "u1".into(),
            email: "a@b.c".into(),
            exp: 2_000,
        };
        let token = sign_token(b"secret", &claims);
        assert_eq!(
            verify_token(b"secret", &token, 1_000_000),
            Ok(claims.clone())
        );
        assert!(verify_token(b"other", &token, 1_000_000)
            .unwrap_err()
            .contains("signature"));
        assert!(verify_token(b"secret", &token, 2_000_000)
            .unwrap_err()
            .contains("expired"));
        let forged = sign_token(
            b"secret",
            &Claims {
                sub: "u2".into(),
                ..claims
            },
        );
        // Another user's claims under this token's signature.
        let parts: Vec<&str> = token.split('.').collect();
        let forged_payload = forged.split('.').nth(1).unwrap();
        let mixed = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
        assert!(verify_token(b"secret", &mixed, 1_000_000).is_err());
        assert!(verify_token(b"secret", "a.b", 0).is_err());
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("pw").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(password_matches("pw", &h));
        assert!(!password_matches("nope", &h));
    }
}
