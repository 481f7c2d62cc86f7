//! The internal endpoints the services (and operators) use, behind service API keys: a world
//! apart from users' tokens — a user's JWT is refused here, and a key is refused where a user
//! is expected. Keys are kept only as SHA-256 digests; each may expire and be deactivated.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use sagaflow_api::Problem;
use sagaflow_app_kit::http::{bad_request, store_problem};
use sagaflow_app_kit::sql::{in_tx, int, now_ms, read};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::articles::view;
use crate::posts::{self, Transition, Transitioned};
use crate::BlogState;

/// The services `init-keys` makes a key for.
pub const SERVICES: [&str; 4] = ["moderation", "preview", "publication", "notification"];

fn digest(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unauthorized(why: impl Into<String>) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", why)
}

/// Checks the request's `X-API-Key`: 401 when missing, unknown, expired or deactivated.
pub async fn require_key(state: &BlogState, headers: &HeaderMap) -> Result<(), Problem> {
    let Some(key) = headers
        .get(&sagaflow_api::X_API_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
    else {
        return Err(unauthorized(
            "internal endpoints need a service key in X-API-Key (a user's token is not one)",
        ));
    };
    let rows = read(
        &state.store,
        "SELECT active, expires_at FROM blog_api_keys WHERE key_sha256 = $1",
        &[digest(key).into()],
    )
    .await
    .map_err(store_problem)?;
    let Some(row) = rows.first() else {
        return Err(unauthorized("the API key is not one this blog knows"));
    };
    if int(row, 0) != 1 {
        return Err(unauthorized("the API key was deactivated"));
    }
    if let Some(expires) = row.get(1).and_then(sagaflow_core::SqlValue::as_i64) {
        if expires <= now_ms() {
            return Err(unauthorized("the API key has expired"));
        }
    }
    Ok(())
}

async fn new_key(
    state: &BlogState,
    description: &str,
    expires_at: Option<i64>,
) -> Result<Value, Problem> {
    let key = format!("blog_{}", sagaflow_app_kit::auth::random_secret());
    let (id, d, h) = (
        uuid::Uuid::now_v7().to_string(),
        description.to_string(),
        digest(&key),
    );
    let row_id = id.clone();
    in_tx(&state.store, move |tx| {
        Box::pin(async move {
            tx.execute(
                "INSERT INTO blog_api_keys (id, key_sha256, description, active, expires_at, created_at) VALUES ($1, $2, $3, 1, $4, $5)",
                &[
                    row_id.into(),
                    h.into(),
                    d.into(),
                    expires_at.map(Into::into).unwrap_or(sagaflow_core::SqlValue::Null),
                    now_ms().into(),
                ],
            )
            .await
            .map(|_| ())
        })
    })
    .await
    .map_err(store_problem)?;
    Ok(json!({
        "id": id, "key": key, "description": description,
        "expires_at": expires_at.map(sagaflow_api::rfc3339),
    }))
}

/// `POST /api/internal/init-keys`: a key for each service, 200 `{keys: [{key, description}]}`.
/// Allowed while no key exists (the first start), or with a valid key.
pub async fn init_keys(
    State(state): State<BlogState>,
    headers: HeaderMap,
) -> Result<Json<Value>, Problem> {
    let existing = read(&state.store, "SELECT COUNT(*) FROM blog_api_keys", &[])
        .await
        .map_err(store_problem)?;
    if existing.first().map(|r| int(r, 0)).unwrap_or(0) > 0 {
        require_key(&state, &headers).await?;
    } else {
        // The first keys are made once: of two callers racing on a fresh install, the one
        // whose marker row goes in wins; the other must show a key like anyone later.
        let first = in_tx(&state.store, |tx| {
            Box::pin(async move {
                tx.execute(
                    "INSERT INTO blog_settings (name, value) VALUES ('keys_initialised', $1) ON CONFLICT (name) DO NOTHING",
                    &[now_ms().to_string().into()],
                )
                .await
            })
        })
        .await
        .map_err(store_problem)?;
        if first == 0 {
            require_key(&state, &headers).await?;
        }
    }
    let mut keys = Vec::new();
    for service in SERVICES {
        keys.push(new_key(&state, &format!("{service} service"), None).await?);
    }
    Ok(Json(json!({ "keys": keys })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRequest {
    description: Option<String>,
    expires_in_seconds: Option<i64>,
}

/// `POST /api/internal/keys` `{description, expires_in_seconds?}` (X-API-Key): one more key.
pub async fn create_key(
    State(state): State<BlogState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, Problem> {
    require_key(&state, &headers).await?;
    let r: KeyRequest =
        sagaflow_api::parse_json(&bytes).map_err(|p| bad_request(&p.code, p.detail))?;
    let description = r.description.unwrap_or_else(|| "service key".to_string());
    if description.chars().count() > 200 {
        return Err(bad_request(
            "bad_field",
            "description is at most 200 characters",
        ));
    }
    let expires_at = match r.expires_in_seconds {
        None => None,
        Some(s) if (0..=10 * 365 * 86_400).contains(&s) => Some(now_ms() + s * 1000),
        Some(_) => {
            return Err(bad_request(
                "bad_field",
                "expires_in_seconds is from 0 to ten years",
            ))
        }
    };
    new_key(&state, &description, expires_at).await.map(Json)
}

/// `POST /api/internal/keys/{id}/deactivate` (X-API-Key): the key stops working.
pub async fn deactivate_key(
    State(state): State<BlogState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, Problem> {
    require_key(&state, &headers).await?;
    let key_id = id.clone();
    let changed = in_tx(&state.store, move |tx| {
        Box::pin(async move {
            tx.execute(
                "UPDATE blog_api_keys SET active = 0 WHERE id = $1",
                &[key_id.into()],
            )
            .await
        })
    })
    .await
    .map_err(store_problem)?;
    if changed == 0 {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "key_not_found",
            format!("no key {id}"),
        ));
    }
    Ok(Json(json!({ "id": id, "active": false })))
}

fn no_post(id: impl std::fmt::Display) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "post_not_found",
        format!("no post {id}"),
    )
}

fn post_id(raw: &str) -> Result<i64, Problem> {
    raw.parse().map_err(|_| no_post(raw))
}

/// `GET /api/internal/posts/{id}` (X-API-Key): the post with its status and preview.
pub async fn show(
    State(state): State<BlogState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, Problem> {
    require_key(&state, &headers).await?;
    let id = post_id(&raw)?;
    let post = in_tx(&state.store, move |tx| {
        Box::pin(async move { posts::by_id(tx, id).await })
    })
    .await
    .map_err(store_problem)?;
    post.map(|p| Json(view(&p))).ok_or_else(|| no_post(id))
}

#[derive(Debug, Default, Deserialize)]
struct Body {
    reason: Option<String>,
    preview_url: Option<String>,
}

fn body(bytes: &Bytes) -> Result<Body, Problem> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Body::default());
    }
    sagaflow_api::parse_json(bytes).map_err(|p| bad_request(&p.code, p.detail))
}

/// Applies a transition for an endpoint whose caller's key was checked.
async fn apply(
    state: &BlogState,
    raw: &str,
    t: Transition,
    done: &str,
) -> Result<Json<Value>, Problem> {
    let id = post_id(raw)?;
    let result = in_tx(&state.store, move |tx| {
        Box::pin(async move { posts::transition(tx, id, t).await })
    })
    .await
    .map_err(store_problem)?;
    match result {
        Transitioned::Done(p) => Ok(Json(
            json!({ "id": p.id, "status": p.status, "preview_url": p.preview_url, "message": done }),
        )),
        Transitioned::Already(p) => Ok(Json(
            json!({ "id": p.id, "status": p.status, "preview_url": p.preview_url, "message": format!("already {done}") }),
        )),
        Transitioned::Invalid(why) => Err(bad_request("invalid_transition", why)),
        Transitioned::NotFound => Err(no_post(id)),
    }
}

/// `POST /api/internal/posts/{id}/reject` `{reason?}`: `PENDING_PUBLISH → REJECTED`.
pub async fn reject(
    State(state): State<BlogState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, Problem> {
    require_key(&state, &headers).await?;
    let b = body(&bytes)?;
    let reason = b.reason.unwrap_or_else(|| "rejected by an operator".into());
    apply(&state, &raw, Transition::Reject { reason }, "rejected").await
}

/// `PUT /api/internal/posts/{id}/preview` `{preview_url}`: the preview of a pending post.
pub async fn preview(
    State(state): State<BlogState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, Problem> {
    require_key(&state, &headers).await?;
    let url = body(&bytes)?
        .preview_url
        .filter(|u| !u.is_empty() && u.len() <= 2_000)
        .ok_or_else(|| bad_request("missing_field", "preview_url is required"))?;
    apply(&state, &raw, Transition::Preview { url }, "previewed").await
}

/// `POST /api/internal/posts/{id}/publish`: `PENDING_PUBLISH → PUBLISHED`.
pub async fn publish(
    State(state): State<BlogState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, Problem> {
    require_key(&state, &headers).await?;
    apply(&state, &raw, Transition::Publish, "published").await
}

/// `POST /api/internal/posts/{id}/error` `{reason?}`: `PENDING_PUBLISH → ERROR`.
pub async fn error(
    State(state): State<BlogState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, Problem> {
    require_key(&state, &headers).await?;
    let b = body(&bytes)?;
    let reason = b
        .reason
        .unwrap_or_else(|| "marked failed by an operator".into());
    apply(&state, &raw, Transition::Fail { reason }, "failed").await
}

/// `POST /api/internal/posts/{id}/reset-to-draft`: `REJECTED | ERROR → DRAFT`.
pub async fn reset_to_draft(
    State(state): State<BlogState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, Problem> {
    require_key(&state, &headers).await?;
    apply(&state, &raw, Transition::ResetToDraft, "a draft").await
}
