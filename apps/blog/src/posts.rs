//! A post's lifecycle: `DRAFT → PENDING_PUBLISH → PUBLISHED`, or `→ REJECTED` (moderation
//! said no), or `→ ERROR` (a technical failure that exhausted its retries); a rejected or
//! failed post can be reset to `DRAFT`. Every change goes through [`transition`], which
//! the services (in their own transactions) and the internal endpoints share: a transition
//! already made answers "already", an impossible one says why.

use sagaflow_app_kit::sql::{int, now_ms, text};
use sagaflow_core::{ParticipantTx, SqlValue, StoreError};
use serde::Serialize;

/// Written, not submitted.
pub const DRAFT: &str = "DRAFT";
/// Submitted: moderation, preview and publication are under way.
pub const PENDING_PUBLISH: &str = "PENDING_PUBLISH";
/// Public.
pub const PUBLISHED: &str = "PUBLISHED";
/// Moderation said no.
pub const REJECTED: &str = "REJECTED";
/// A technical failure exhausted its retries.
pub const ERROR: &str = "ERROR";

/// A post as the services and internal endpoints see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Post {
    /// Its id.
    pub id: i64,
    /// Its URL name.
    pub slug: String,
    /// Its author's id.
    pub author_id: i64,
    /// Title.
    pub title: String,
    /// Summary.
    pub description: String,
    /// Text.
    pub body: String,
    /// Where it is in its lifecycle.
    pub status: String,
    /// The preview image, once made.
    pub preview_url: Option<String>,
    /// Why it was rejected or failed.
    pub reason: Option<String>,
    /// The current publication flow's correlation id.
    pub flow_id: Option<String>,
    /// Created (unix ms).
    pub created_at: i64,
    /// Last changed (unix ms).
    pub updated_at: i64,
}

const COLUMNS: &str = "id, slug, author_id, title, description, body, status, preview_url, reason, flow_id, created_at, updated_at";

fn post_of(row: &[SqlValue]) -> Post {
    let optional = |i: usize| row.get(i).and_then(SqlValue::as_str).map(str::to_string);
    Post {
        id: int(row, 0),
        slug: text(row, 1),
        author_id: int(row, 2),
        title: text(row, 3),
        description: text(row, 4),
        body: text(row, 5),
        status: text(row, 6),
        preview_url: optional(7),
        reason: optional(8),
        flow_id: optional(9),
        created_at: int(row, 10),
        updated_at: int(row, 11),
    }
}

/// A post by id.
pub async fn by_id(tx: &mut dyn ParticipantTx, id: i64) -> Result<Option<Post>, StoreError> {
    let rows = tx
        .query(
            &format!("SELECT {COLUMNS} FROM blog_posts WHERE id = $1"),
            &[id.into()],
        )
        .await?;
    Ok(rows.first().map(|r| post_of(r)))
}

/// A post by slug.
pub async fn by_slug(tx: &mut dyn ParticipantTx, slug: &str) -> Result<Option<Post>, StoreError> {
    let rows = tx
        .query(
            &format!("SELECT {COLUMNS} FROM blog_posts WHERE slug = $1"),
            &[slug.into()],
        )
        .await?;
    Ok(rows.first().map(|r| post_of(r)))
}

/// The post id an event of the publication flow carries.
pub fn post_id_of(
    event: &sagaflow_engine::EventCall,
) -> Result<i64, sagaflow_engine::HandlerError> {
    event.payload["post_id"]
        .as_i64()
        .ok_or_else(|| sagaflow_engine::HandlerError("the event has no post_id".into()))
}

/// The post an event of flow `flow_id` is about, if that flow is still the post's current
/// one: an event from an earlier publication attempt (the post was reset to draft and
/// submitted again since) must not move the new one.
pub async fn in_flow(
    tx: &mut dyn ParticipantTx,
    id: i64,
    flow_id: &str,
) -> Result<Option<Post>, StoreError> {
    Ok(by_id(tx, id)
        .await?
        .filter(|p| p.flow_id.as_deref() == Some(flow_id)))
}

/// A change of status (or of the preview).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Submit a draft: `DRAFT → PENDING_PUBLISH`, under a new flow id.
    Submit {
        /// The publication flow's correlation id.
        flow_id: String,
    },
    /// `PENDING_PUBLISH → REJECTED`.
    Reject {
        /// Why.
        reason: String,
    },
    /// Set the preview of a pending post.
    Preview {
        /// The preview's URL.
        url: String,
    },
    /// `PENDING_PUBLISH` (with a preview) `→ PUBLISHED`.
    Publish,
    /// `PENDING_PUBLISH → ERROR`.
    Fail {
        /// What failed.
        reason: String,
    },
    /// `REJECTED | ERROR → DRAFT` (the preview is dropped).
    ResetToDraft,
}

/// What a transition did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transitioned {
    /// Done now.
    Done(Post),
    /// It was already so; nothing changed.
    Already(Post),
    /// Not possible from where the post is.
    Invalid(String),
    /// No such post.
    NotFound,
}

/// Applies `t` to post `id` in `tx`.
pub async fn transition(
    tx: &mut dyn ParticipantTx,
    id: i64,
    t: Transition,
) -> Result<Transitioned, StoreError> {
    let Some(post) = by_id(tx, id).await? else {
        return Ok(Transitioned::NotFound);
    };
    let from = post.status.as_str();
    let invalid = |what: &str| {
        Ok(Transitioned::Invalid(format!(
            "post {id} is {from}: {what}"
        )))
    };
    let (status, preview, reason, flow): (&str, Option<String>, Option<String>, Option<String>) =
        match &t {
            Transition::Submit { flow_id } => match from {
                DRAFT => (PENDING_PUBLISH, None, None, Some(flow_id.clone())),
                _ => return invalid("only a DRAFT can be published"),
            },
            Transition::Reject { reason } => match from {
                REJECTED => return Ok(Transitioned::Already(post)),
                PENDING_PUBLISH => (
                    REJECTED,
                    post.preview_url.clone(),
                    Some(reason.clone()),
                    post.flow_id.clone(),
                ),
                _ => return invalid("only a PENDING_PUBLISH post can be rejected"),
            },
            Transition::Preview { url } => match from {
                PENDING_PUBLISH if post.preview_url.as_deref() == Some(url.as_str()) => {
                    return Ok(Transitioned::Already(post))
                }
                PENDING_PUBLISH => (
                    PENDING_PUBLISH,
                    Some(url.clone()),
                    None,
                    post.flow_id.clone(),
                ),
                _ => return invalid("a preview is set only while PENDING_PUBLISH"),
            },
            Transition::Publish => match from {
                PUBLISHED => return Ok(Transitioned::Already(post)),
                PENDING_PUBLISH if post.preview_url.is_some() => (
                    PUBLISHED,
                    post.preview_url.clone(),
                    None,
                    post.flow_id.clone(),
                ),
                PENDING_PUBLISH => return invalid("it has no preview yet"),
                _ => return invalid("only a PENDING_PUBLISH post can be published"),
            },
            Transition::Fail { reason } => match from {
                ERROR => return Ok(Transitioned::Already(post)),
                PENDING_PUBLISH => (
                    ERROR,
                    post.preview_url.clone(),
                    Some(reason.clone()),
                    post.flow_id.clone(),
                ),
                _ => return invalid("only a PENDING_PUBLISH post can fail"),
            },
            Transition::ResetToDraft => match from {
                DRAFT => return Ok(Transitioned::Already(post)),
                REJECTED | ERROR => (DRAFT, None, None, None),
                _ => return invalid("only a REJECTED or ERROR post can go back to DRAFT"),
            },
        };
    let opt = |v: Option<String>| v.map(Into::into).unwrap_or(SqlValue::Null);
    // The status it was read with guards the write: a concurrent change makes this one a no-op.
    let changed = tx
        .execute(
            "UPDATE blog_posts SET status = $1, preview_url = $2, reason = $3, flow_id = $4, updated_at = $5 WHERE id = $6 AND status = $7",
            &[
                status.into(),
                opt(preview),
                opt(reason),
                opt(flow),
                now_ms().into(),
                id.into(),
                from.into(),
            ],
        )
        .await?;
    if changed == 0 {
        return Ok(Transitioned::Invalid(format!(
            "post {id} changed while it was being moved from {from}; look again"
        )));
    }
    Ok(match by_id(tx, id).await? {
        Some(p) => Transitioned::Done(p),
        None => Transitioned::NotFound,
    })
}
