//! Users: registration, login (a bearer token), a push subscription key, subscriptions to
//! authors, and the push records a user received.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use sagaflow_api::Problem;
use sagaflow_app_kit::http::{bad_request, store_problem, Page, Params};
use sagaflow_app_kit::sql::{in_tx, int, now_ms, read, text};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::BlogState;

/// The user a request's bearer token names; 401 without a valid one.
pub fn bearer(state: &BlogState, headers: &HeaderMap) -> Result<i64, Problem> {
    let unauthorized = |why: &str| Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", why);
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .ok_or_else(|| {
            unauthorized(
                "this endpoint needs `Authorization: Bearer TOKEN` (POST /api/users/login)",
            )
        })?;
    let claims = sagaflow_app_kit::auth::verify_token(&state.config.jwt_secret, token, now_ms())
        .map_err(|why| unauthorized(&why))?;
    claims
        .sub
        .parse()
        .map_err(|_| unauthorized("the token does not name a user"))
}

#[derive(Debug, Deserialize)]
struct NewUser {
    email: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

fn required(v: Option<String>, field: &str, max: usize) -> Result<String, Problem> {
    let v = v.map(|s| s.trim().to_string()).unwrap_or_default();
    if v.is_empty() {
        return Err(bad_request("missing_field", format!("{field} is required")));
    }
    if v.chars().count() > max || v.contains('\0') {
        return Err(bad_request(
            "bad_field",
            format!("{field} is at most {max} characters, without NUL"),
        ));
    }
    Ok(v)
}

/// `POST /api/users` `{email, username, password}`: 201 `{id, email, username}`; 409 when the
/// email or username is taken.
pub async fn create(
    State(state): State<BlogState>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let u: NewUser =
        sagaflow_api::parse_json(&bytes).map_err(|p| bad_request(&p.code, p.detail))?;
    let email = required(u.email, "email", 200)?.to_lowercase();
    if !email.contains('@') {
        return Err(bad_request("bad_field", "email must be an email address"));
    }
    let username = required(u.username, "username", 100)?;
    let password = match u.password {
        Some(p) if !p.is_empty() && p.len() <= 1024 => p,
        _ => {
            return Err(bad_request(
                "missing_field",
                "password is required (at most 1024 bytes)",
            ))
        }
    };
    let hash = sagaflow_app_kit::auth::hash_password_async(password).await?;
    let (e, n) = (email.clone(), username.clone());
    let mut last = None;
    for _ in 0..5 {
        let (e, n, h) = (e.clone(), n.clone(), hash.clone());
        let created = in_tx(&state.store, move |tx| {
            Box::pin(async move {
                let taken = tx
                    .query(
                        "SELECT email FROM blog_users WHERE email = $1 OR username = $2",
                        &[e.as_str().into(), n.as_str().into()],
                    )
                    .await?;
                if let Some(row) = taken.first() {
                    let which = if text(row, 0) == e { "email" } else { "username" };
                    return Ok(Err(which));
                }
                tx.execute(
                    &format!("INSERT INTO blog_users (id, email, username, password_hash, created_at) SELECT {}, $1, $2, $3, $4 FROM blog_users", crate::NEXT_ID),
                    &[e.as_str().into(), n.as_str().into(), h.into(), now_ms().into()],
                )
                .await?;
                let rows = tx
                    .query("SELECT id FROM blog_users WHERE email = $1", &[e.as_str().into()])
                    .await?;
                Ok(Ok(rows.first().map(|r| int(r, 0)).unwrap_or_default()))
            })
        })
        .await;
        match created {
            Ok(Ok(id)) => {
                return Ok((
                    StatusCode::CREATED,
                    Json(json!({ "id": id, "email": email, "username": username })),
                ))
            }
            Ok(Err(which)) => {
                return Err(Problem::new(
                    StatusCode::CONFLICT,
                    "user_exists",
                    format!("that {which} is taken"),
                ))
            }
            // Two registrations raced for the same id (or the same name): try again.
            Err(e @ sagaflow_core::StoreError::Constraint(_)) => last = Some(e),
            Err(e) => return Err(store_problem(e)),
        }
    }
    Err(store_problem(last.unwrap_or_else(|| {
        sagaflow_core::StoreError::Unavailable("registration kept colliding".into())
    })))
}

#[derive(Debug, Deserialize)]
struct Login {
    username: Option<String>,
    password: Option<String>,
}

/// `POST /api/users/login` (form: `username`, `password`): 200 `{access_token, token_type}`;
/// 401 on bad credentials.
pub async fn login(State(state): State<BlogState>, bytes: Bytes) -> Result<Json<Value>, Problem> {
    let form: Login = serde_urlencoded::from_bytes(&bytes).map_err(|e| {
        bad_request(
            "bad_form",
            format!(
                "send a form (application/x-www-form-urlencoded) with username and password: {e}"
            ),
        )
    })?;
    let username = form.username.unwrap_or_default();
    let rows = read(
        &state.store,
        "SELECT id, email, password_hash FROM blog_users WHERE username = $1",
        &[username.as_str().into()],
    )
    .await
    .map_err(store_problem)?;
    let found = rows.first().map(|r| (int(r, 0), text(r, 1), text(r, 2)));
    let stored = found.as_ref().map(|f| f.2.clone());
    // An unknown name takes as long as a wrong password.
    let matches =
        sagaflow_app_kit::auth::password_matches_async(form.password.unwrap_or_default(), stored)
            .await?;
    let (Some((id, email, _)), true) = (found, matches) else {
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
            "wrong username or password",
        ));
    };
    let claims = sagaflow_app_kit::auth::Claims {
        sub: id.to_string(),
        email,
        exp: now_ms() / 1000 + state.config.token_ttl_secs,
    };
    Ok(Json(json!({
        "access_token": sagaflow_app_kit::auth::sign_token(&state.config.jwt_secret, &claims),
        "token_type": "bearer",
    })))
}

#[derive(Debug, Deserialize)]
struct SubscriptionKey {
    subscription_key: Option<String>,
}

/// `PUT /api/users/me/subscription-key` `{subscription_key}` (bearer): the key push records
/// for this user go to.
pub async fn set_subscription_key(
    State(state): State<BlogState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, Problem> {
    let me = bearer(&state, &headers)?;
    let body: SubscriptionKey =
        sagaflow_api::parse_json(&bytes).map_err(|p| bad_request(&p.code, p.detail))?;
    let key = required(body.subscription_key, "subscription_key", 500)?;
    let k = key.clone();
    in_tx(&state.store, move |tx| {
        Box::pin(async move {
            tx.execute(
                "UPDATE blog_users SET subscription_key = $1 WHERE id = $2",
                &[k.into(), me.into()],
            )
            .await
            .map(|_| ())
        })
    })
    .await
    .map_err(store_problem)?;
    Ok(Json(json!({ "id": me, "subscription_key": key })))
}

#[derive(Debug, Deserialize)]
struct Subscribe {
    target_user_id: Option<i64>,
}

/// `POST /api/users/subscribe` `{target_user_id}` (bearer): follow an author; 404 for an
/// unknown user.
pub async fn subscribe(
    State(state): State<BlogState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, Problem> {
    let me = bearer(&state, &headers)?;
    let body: Subscribe =
        sagaflow_api::parse_json(&bytes).map_err(|p| bad_request(&p.code, p.detail))?;
    let target = body
        .target_user_id
        .ok_or_else(|| bad_request("missing_field", "target_user_id is required"))?;
    if target == me {
        return Err(bad_request(
            "self_subscription",
            "you cannot subscribe to yourself",
        ));
    }
    let known = in_tx(&state.store, move |tx| {
        Box::pin(async move {
            let exists = tx
                .query("SELECT 1 FROM blog_users WHERE id = $1", &[target.into()])
                .await?;
            if exists.is_empty() {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO blog_subscriptions (subscriber_id, target_id, created_at) VALUES ($1, $2, $3) ON CONFLICT (subscriber_id, target_id) DO NOTHING",
                &[me.into(), target.into(), now_ms().into()],
            )
            .await?;
            Ok(true)
        })
    })
    .await
    .map_err(store_problem)?;
    if !known {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "user_not_found",
            format!("no user {target}"),
        ));
    }
    Ok(Json(
        json!({ "subscriber_id": me, "target_user_id": target }),
    ))
}

/// Push records `GET /api/users/me/notifications` shows when `limit` is not given.
pub const DEFAULT_LIMIT: i64 = 100;
/// The most push records `GET /api/users/me/notifications` shows at once.
pub const MAX_LIMIT: i64 = 500;

/// `GET /api/users/me/notifications?limit&offset` (bearer): the push records sent to me,
/// newest first, a page at a time (`limit` 1 to 500, default 100; `offset` default 0).
pub async fn notifications(
    State(state): State<BlogState>,
    headers: HeaderMap,
    Params(page): Params<Page>,
) -> Result<Json<Value>, Problem> {
    let me = bearer(&state, &headers)?;
    let (limit, offset) = page.bounds(DEFAULT_LIMIT, MAX_LIMIT)?;
    // `post_id` completes the key (`subscriber_id`, `post_id`): pages never overlap.
    let rows = read(
        &state.store,
        "SELECT post_id, push_key, message, created_at FROM blog_push WHERE subscriber_id = $1 ORDER BY created_at DESC, post_id DESC LIMIT $2 OFFSET $3",
        &[me.into(), limit.into(), offset.into()],
    )
    .await
    .map_err(store_problem)?;
    let items: Vec<Value> = rows
        .iter()
        .map(|r| json!({ "post_id": int(r, 0), "push_key": text(r, 1), "message": text(r, 2), "created_at": sagaflow_api::rfc3339(int(r, 3)) }))
        .collect();
    Ok(Json(Value::Array(items)))
}
