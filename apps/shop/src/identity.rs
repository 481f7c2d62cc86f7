//! The identity service: register and log in. Passwords are hashed with Argon2id; a login
//! gives a JWT (HS256) that the other endpoints take as `Authorization: Bearer`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use sagaflow_api::Problem;
use serde::Deserialize;
use serde_json::{json, Value};

use sagaflow_app_kit::auth::{hash_password_async, password_matches_async};
pub use sagaflow_app_kit::auth::{sign_token, verify_token, Claims};

use crate::db::{in_tx, text};
use crate::http::{bad_request, store_problem};
use crate::ShopState;

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
    // The password as given: spaces are part of it.
    let password = match r.password {
        Some(p) if !p.is_empty() => p,
        _ => {
            return Err(bad_request(
                "missing_field",
                "`password` is required (email, password, username and role all are)",
            ))
        }
    };
    let username = required(r.username, "username")?;
    let role = required(r.role, "role")?;
    if !email.contains('@') {
        return Err(bad_request(
            "bad_email",
            format!("{email:?} is not an email address"),
        ));
    }
    let hash = hash_password_async(password).await?;
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
    let found = rows.first().map(|row| (text(row, 0), text(row, 1)));
    let stored = found.as_ref().map(|(_, hash)| hash.clone());
    // An unknown email takes as long as a wrong password: the answer tells nothing more.
    if !password_matches_async(password, stored).await? {
        return Err(bad());
    }
    let Some((id, _)) = found else {
        return Err(bad());
    };
    let claims = Claims {
        sub: id,
        email: email.clone(),
        exp: crate::db::now_ms() / 1000 + state.config.token_ttl_secs,
    };
    Ok(Json(
        json!({ "email": email, "token": sign_token(&state.config.jwt_secret, &claims) }),
    ))
}
