//! The internal endpoints the services (and operators) use, behind service API keys: a world
//! apart from users' tokens — a user's JWT is refused here, and a key is refused where a user
//! is expected. Keys are kept only as SHA-256 digests; each may expire and be deactivated, and
//! each carries the scopes it may act in ([`Scope`]): moderation's key cannot publish, and only
//! a `keys` key makes or deactivates keys. The first keys come from `init-keys`, which takes
//! the server's `operate` key (or, on a server without API keys, a one-time token printed at
//! start) — never a blog key, so a leaked service key cannot mint more.

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
use crate::{BlogState, InitKeys};

/// The services `init-keys` makes a key for, with their scopes.
pub const SERVICES: [(&str, &[Scope]); 4] = [
    ("moderation", &[Scope::Read, Scope::Moderate]),
    ("preview", &[Scope::Read, Scope::Preview]),
    ("publication", &[Scope::Read, Scope::Publish]),
    ("notification", &[Scope::Read]),
];

/// What a blog service key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Read a post (`GET /api/internal/posts/{id}`).
    Read,
    /// Reject a post or send it back to draft.
    Moderate,
    /// Attach a post's preview.
    Preview,
    /// Publish a post, or mark its publication failed.
    Publish,
    /// Make and deactivate keys.
    Keys,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 5] = [
        Scope::Read,
        Scope::Moderate,
        Scope::Preview,
        Scope::Publish,
        Scope::Keys,
    ];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Moderate => "moderate",
            Scope::Preview => "preview",
            Scope::Publish => "publish",
            Scope::Keys => "keys",
        }
    }

    fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.name() == name)
    }
}

fn scope_text(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.name())
        .collect::<Vec<_>>()
        .join(" ")
}

fn digest(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unauthorized(why: impl Into<String>) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", why)
}

/// Checks the request's `X-API-Key`: 401 when missing, unknown, expired or deactivated; 403
/// `missing_scope` when the key may not act in `scope`.
pub async fn require_key(
    state: &BlogState,
    headers: &HeaderMap,
    scope: Scope,
) -> Result<(), Problem> {
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
        "SELECT active, expires_at, scopes FROM blog_api_keys WHERE key_sha256 = $1",
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
    let scopes = row
        .get(2)
        .and_then(sagaflow_core::SqlValue::as_str)
        .unwrap_or("");
    if !scopes.split(' ').any(|s| s == scope.name()) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "missing_scope",
            format!("this key may act in {scopes:?}, not {:?}", scope.name()),
        ));
    }
    Ok(())
}

async fn new_key(
    state: &BlogState,
    description: &str,
    expires_at: Option<i64>,
    scopes: &[Scope],
) -> Result<Value, Problem> {
    let scopes = scope_text(scopes);
    let key = format!("blog_{}", sagaflow_app_kit::auth::random_secret());
    let (id, d, h, sc) = (
        uuid::Uuid::now_v7().to_string(),
        description.to_string(),
        digest(&key),
        scopes.clone(),
    );
    let row_id = id.clone();
    in_tx(&state.store, move |tx| {
        Box::pin(async move {
            tx.execute(
                "INSERT INTO blog_api_keys (id, key_sha256, description, active, expires_at, created_at, scopes) VALUES ($1, $2, $3, 1, $4, $5, $6)",
                &[
                    row_id.into(),
                    h.into(),
                    d.into(),
                    expires_at.map(Into::into).unwrap_or(sagaflow_core::SqlValue::Null),
                    now_ms().into(),
                    sc.into(),
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
        "scopes": scopes.split(' ').collect::<Vec<_>>(),
    }))
}

/// `POST /api/internal/init-keys`: a key for each service, with its scopes, and one `keys`
/// key for whoever administers them: 200 `{keys: [{id, key, description, expires_at,
/// scopes}]}`. On a server with API keys the edge has let only an `operate` key through; on
/// an open server it takes the one-time token printed at start, in `X-Init-Token`, once.
pub async fn init_keys(
    State(state): State<BlogState>,
    headers: HeaderMap,
) -> Result<Json<Value>, Problem> {
    if let InitKeys::OneTimeToken(token) = &state.init_keys {
        let given = headers
            .get("x-init-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mut token = token.lock().unwrap_or_else(|p| p.into_inner());
        let matches = token.as_deref().is_some_and(|t| {
            use subtle::ConstantTimeEq;
            bool::from(t.as_bytes().ct_eq(given.as_bytes()))
        });
        if !matches {
            return Err(unauthorized(if token.is_some() {
                "init-keys needs the one-time token the server printed at start, in X-Init-Token (or run the server with API keys and send an operate key)"
            } else {
                "the one-time token was used: restart the server for a new one, or run it with API keys and send an operate key"
            }));
        }
        // Good once.
        *token = None;
    }
    let mut keys = Vec::new();
    for (service, scopes) in SERVICES {
        keys.push(new_key(&state, &format!("{service} service"), None, scopes).await?);
    }
    keys.push(new_key(&state, "key administration", None, &[Scope::Keys]).await?);
    Ok(Json(json!({ "keys": keys })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRequest {
    description: Option<String>,
    expires_in_seconds: Option<i64>,
    /// Default `["read"]`.
    scopes: Option<Vec<String>>,
}

/// `POST /api/internal/keys` `{description, expires_in_seconds?}` (X-API-Key): one more key.
pub async fn create_key(
    State(state): State<BlogState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, Problem> {
    require_key(&state, &headers, Scope::Keys).await?;
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
    let scopes = match r.scopes {
        None => vec![Scope::Read],
        Some(names) if !names.is_empty() => names
            .iter()
            .map(|n| {
                Scope::parse(n).ok_or_else(|| {
                    bad_request(
                        "bad_field",
                        format!(
                            "{n:?} is not a scope; scopes are {}",
                            scope_text(&Scope::ALL)
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(bad_request("bad_field", "scopes must name at least one")),
    };
    new_key(&state, &description, expires_at, &scopes)
        .await
        .map(Json)
}

/// `POST /api/internal/keys/{id}/deactivate` (X-API-Key): the key stops working.
pub async fn deactivate_key(
    State(state): State<BlogState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, Problem> {
    require_key(&state, &headers, Scope::Keys).await?;
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
    require_key(&state, &headers, Scope::Read).await?;
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
    require_key(&state, &headers, Scope::Moderate).await?;
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
    require_key(&state, &headers, Scope::Preview).await?;
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
    require_key(&state, &headers, Scope::Publish).await?;
    apply(&state, &raw, Transition::Publish, "published").await
}

/// `POST /api/internal/posts/{id}/error` `{reason?}`: `PENDING_PUBLISH → ERROR`.
pub async fn error(
    State(state): State<BlogState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, Problem> {
    require_key(&state, &headers, Scope::Publish).await?;
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
    require_key(&state, &headers, Scope::Moderate).await?;
    apply(&state, &raw, Transition::ResetToDraft, "a draft").await
}
