//! Articles: writing a draft, reading one, and asking for it to be published — which moves
//! it to `PENDING_PUBLISH` and emits `blog.publish_requested` in one transaction, starting the
//! choreographed flow under a fresh correlation id.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use sagaflow_api::Problem;
use sagaflow_app_kit::http::{bad_request, store_problem};
use sagaflow_app_kit::sql::{in_tx, int, now_ms};
use sagaflow_engine::NewEvent;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::posts::{self, Post, Transition, Transitioned};
use crate::users::bearer;
use crate::BlogState;

/// The event that starts the flow.
pub const PUBLISH_REQUESTED: &str = "blog.publish_requested";

/// An article as the API shows it.
pub fn view(p: &Post) -> Value {
    json!({
        "id": p.id, "slug": p.slug, "author_id": p.author_id, "title": p.title,
        "description": p.description, "body": p.body, "status": p.status,
        "preview_url": p.preview_url, "reason": p.reason, "flow_id": p.flow_id,
        "created_at": sagaflow_api::rfc3339(p.created_at),
        "updated_at": sagaflow_api::rfc3339(p.updated_at),
    })
}

/// A URL name from a title: lowercase letters and digits joined by `-`, then the id.
pub fn slug(title: &str, id: i64) -> String {
    let words: Vec<String> = title
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(8)
        .map(str::to_ascii_lowercase)
        .collect();
    if words.is_empty() {
        format!("post-{id}")
    } else {
        format!("{}-{id}", words.join("-"))
    }
}

#[derive(Debug, Deserialize)]
struct NewArticle {
    title: Option<String>,
    description: Option<String>,
    body: Option<String>,
}

fn field(v: Option<String>, name: &str, max: usize, required: bool) -> Result<String, Problem> {
    let v = v.unwrap_or_default();
    if required && v.trim().is_empty() {
        return Err(bad_request("missing_field", format!("{name} is required")));
    }
    if v.chars().count() > max || v.contains('\0') {
        return Err(bad_request(
            "bad_field",
            format!("{name} is at most {max} characters, without NUL"),
        ));
    }
    Ok(v)
}

/// `POST /api/articles` `{title, description, body}` (bearer): 201, the article as a DRAFT.
pub async fn create(
    State(state): State<BlogState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let me = bearer(&state, &headers)?;
    let a: NewArticle =
        sagaflow_api::parse_json(&bytes).map_err(|p| bad_request(&p.code, p.detail))?;
    let title = field(a.title, "title", 200, true)?;
    let description = field(a.description, "description", 1_000, false)?;
    let body = field(a.body, "body", 100_000, true)?;
    let mut last = None;
    for _ in 0..5 {
        let (t, d, b) = (title.clone(), description.clone(), body.clone());
        let created = in_tx(&state.store, move |tx| {
            Box::pin(async move {
                let next = tx
                    .query(&format!("SELECT {} FROM blog_posts", crate::NEXT_ID), &[])
                    .await?;
                let id = next.first().map(|r| int(r, 0)).unwrap_or(1);
                let now = now_ms();
                tx.execute(
                    "INSERT INTO blog_posts (id, slug, author_id, title, description, body, status, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
                    &[id.into(), slug(&t, id).into(), me.into(), t.into(), d.into(), b.into(), posts::DRAFT.into(), now.into()],
                )
                .await?;
                posts::by_id(tx, id).await
            })
        })
        .await;
        match created {
            Ok(Some(post)) => return Ok((StatusCode::CREATED, Json(view(&post)))),
            Ok(None) => {}
            Err(e @ sagaflow_core::StoreError::Constraint(_)) => last = Some(e),
            Err(e) => return Err(store_problem(e)),
        }
    }
    Err(store_problem(last.unwrap_or_else(|| {
        sagaflow_core::StoreError::Unavailable("creating the article kept colliding".into())
    })))
}

fn not_found(key: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "article_not_found",
        format!("no article {key}"),
    )
}

/// `GET /api/articles/{slug}` (an id works too): the article with its status and preview.
/// A published article is anyone's to read; any other (a draft, one pending, rejected or
/// failed) only its author's, by bearer token — to anyone else it does not exist (404).
pub async fn get(
    State(state): State<BlogState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, Problem> {
    let k = key.clone();
    let post = in_tx(&state.store, move |tx| {
        Box::pin(async move {
            match posts::by_slug(tx, &k).await? {
                Some(p) => Ok(Some(p)),
                None => match k.parse::<i64>() {
                    Ok(id) => posts::by_id(tx, id).await,
                    Err(_) => Ok(None),
                },
            }
        })
    })
    .await
    .map_err(store_problem)?;
    let post = post.ok_or_else(|| not_found(&key))?;
    if post.status != posts::PUBLISHED {
        let reader = bearer(&state, &headers).ok();
        if reader != Some(post.author_id) {
            return Err(not_found(&key));
        }
    }
    Ok(Json(view(&post)))
}

/// `POST /api/articles/{id}/publish` (bearer, the author): 202 `{id, status, flow_id}`; 409
/// unless it is a DRAFT; 404 for an unknown article or another user's.
pub async fn publish(
    State(state): State<BlogState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let me = bearer(&state, &headers)?;
    let id: i64 = key.parse().map_err(|_| not_found(&key))?;
    let flow_id = format!("post-{id}-{}", uuid::Uuid::now_v7().simple());
    let mut event = NewEvent::new(PUBLISH_REQUESTED, &flow_id, json!({ "post_id": id }));
    event.request_id = headers
        .get(&sagaflow_api::X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map(str::to_string);
    event.traceparent = sagaflow_api::traceparent(&headers);
    let f = flow_id.clone();
    let outcome = in_tx(&state.store, move |tx| {
        Box::pin(async move {
            let Some(post) = posts::by_id(tx, id).await? else {
                return Ok(Err(StatusCode::NOT_FOUND));
            };
            // Another author's post is not there for this user (a draft's existence is
            // its author's business): 404, as for an unknown one.
            if post.author_id != me {
                return Ok(Err(StatusCode::NOT_FOUND));
            }
            match posts::transition(tx, id, Transition::Submit { flow_id: f }).await? {
                Transitioned::Done(p) => {
                    sagaflow_engine::emit(tx, "blog-api", &event).await?;
                    Ok(Ok(p))
                }
                Transitioned::Invalid(_) => Ok(Err(StatusCode::CONFLICT)),
                Transitioned::Already(_) | Transitioned::NotFound => Ok(Err(StatusCode::NOT_FOUND)),
            }
        })
    })
    .await
    .map_err(store_problem)?;
    match outcome {
        Ok(post) => {
            if let Some(wake) = &state.relay_wake {
                wake.notify_one();
            }
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({ "id": post.id, "status": post.status, "flow_id": flow_id })),
            ))
        }
        Err(StatusCode::CONFLICT) => Err(Problem::new(
            StatusCode::CONFLICT,
            "not_a_draft",
            "only a DRAFT can be published",
        )),
        Err(_) => Err(not_found(&key)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugs_are_readable_and_unique_by_id() {
        assert_eq!(super::slug("Hello, World! 2026", 7), "hello-world-2026-7");
        assert_eq!(super::slug("¿¿", 3), "post-3");
    }
}
