//! The identity service: register and log in. Passwords are hashed with Argon2id; a login
//! gives a JWT (HS256) that the other endpoints take as `Authorization: Bearer`.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sagaflow_api::Problem;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::db::{in_tx, text};
use crate::http::{bad_request, store_problem};
use crate::ShopState;

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

fn hash_password(password: &str) -> Result<String, Problem> {
    let mut bytes = [0u8; 16];
    getrandom_fill(&mut bytes);
    let salt = SaltString::encode_b64(&bytes).map_err(|e| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "hash_failed",
            e.to_string(),
        )
    })?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "hash_failed",
                e.to_string(),
            )
        })
}

fn password_matches(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// `POST /profile/register`'s body; every field is required.
#[derive(Debug, Deserialize)]
struct Register {
    email: Option<String>,
    password: Option<String>,
    username: Option<String>,
    role: Option<String>,
}

fn required(value: Option<String>, field: &str) -> Result<String, Problem> {
    match value.map(|v| v.trim().to_string()) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(bad_request(
            "missing_field",
            format!("`{field}` is required (email, password, username and role all are)"),
        )),
    }
}

/// JSON body, with a 400 for anything that is not a JSON object of the right shape.
fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, Problem> {
    sagaflow_api::parse_json(bytes).map_err(|p| bad_request(&p.code, p.detail))
}

/// `POST /profile/register`: creates the user, an empty account, and the welcome message.
pub async fn register(
    State(state): State<ShopState>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let r: Register = body(&bytes)?;
    let email = required(r.email, "email")?.to_lowercase();
    let password = required(r.password, "password")?;
    let username = required(r.username, "username")?;
    let role = required(r.role, "role")?;
    if !email.contains('@') {
        return Err(bad_request(
            "bad_email",
            format!("{email:?} is not an email address"),
        ));
    }
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "hash_failed",
                e.to_string(),
            )
        })??;
    let id = uuid::Uuid::now_v7().to_string();
    let (e, u, ro) = (email.clone(), username.clone(), role.clone());
    let created = in_tx(&state.store, move |tx| {
        Box::pin(async move {
            let inserted = tx
                .execute(
                    "INSERT INTO shop_users (id, email, username, role, password_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (email) DO NOTHING",
                    &[id.clone().into(), e.into(), u.into(), ro.into(), hash.into(), crate::db::now_ms().into()],
                )
                .await?;
            if inserted == 0 {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO shop_billing_accounts (user_id, balance) VALUES ($1, 0)",
                &[id.clone().into()],
            )
            .await?;
            crate::notifications::notify(tx, &id, &crate::notifications::registered()).await?;
            Ok(true)
        })
    })
    .await
    .map_err(store_problem)?;
    if !created {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "email_taken",
            format!("{email} is registered already; log in instead"),
        ));
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({ "email": email, "username": username, "role": role })),
    ))
}

#[derive(Debug, Deserialize)]
struct Login {
    email: Option<String>,
    password: Option<String>,
}

/// `POST /profile/login`: a token for the right email and password; 401 otherwise.
pub async fn login(State(state): State<ShopState>, bytes: Bytes) -> Result<Json<Value>, Problem> {
    let l: Login = body(&bytes)?;
    let email = l.email.unwrap_or_default().trim().to_lowercase();
    let password = l.password.unwrap_or_default();
    let mut tx = state.store.begin().await.map_err(store_problem)?;
    let rows = tx
        .query(
            "SELECT id, password_hash FROM shop_users WHERE email = $1",
            &[email.as_str().into()],
        )
        .await
        .map_err(store_problem)?;
    let _ = tx.rollback().await;
    let bad = || {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
            "wrong email or password",
        )
    };
    let row = rows.first().ok_or_else(bad)?;
    let (id, stored) = (text(row, 0), text(row, 1));
    let ok = tokio::task::spawn_blocking(move || password_matches(&password, &stored))
        .await
        .unwrap_or(false);
    if !ok {
        return Err(bad());
    }
    let claims = Claims {
        sub: id,
        email: email.clone(),
        exp: crate::db::now_ms() / 1000 + state.config.token_ttl_secs,
    };
    Ok(Json(
        json!({ "email": email, "token": sign_token(&state.config.jwt_secret, &claims) }),
    ))
}

/// The token key kept in the database: made at first start, shared by every process on it.
pub async fn stored_secret(
    store: &std::sync::Arc<dyn sagaflow_core::Store>,
) -> Result<Vec<u8>, sagaflow_core::StoreError> {
    let mut fresh = [0u8; 32];
    getrandom_fill(&mut fresh);
    let candidate = URL_SAFE_NO_PAD.encode(fresh);
    in_tx(store, move |tx| {
        Box::pin(async move {
            tx.execute(
                "INSERT INTO shop_identity_secrets (name, value) VALUES ('jwt', $1) ON CONFLICT (name) DO NOTHING",
                &[candidate.into()],
            )
            .await?;
            let rows = tx
                .query("SELECT value FROM shop_identity_secrets WHERE name = 'jwt'", &[])
                .await?;
            Ok(rows.first().map(|r| text(r, 0)).unwrap_or_default().into_bytes())
        })
    })
    .await
}

fn getrandom_fill(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system's random source works");
}

#[cfg(test)]
mod tests {
    use super::*;

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
