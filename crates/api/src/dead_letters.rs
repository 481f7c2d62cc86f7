//! `/api/v1/dead-letters`: messages that could not be processed, kept with the reason, to
//! replay or discard.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use sagaflow_engine::core::DeadLetter;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::extract::{ApiPath, ApiQuery};
use crate::problem::Problem;
use crate::ApiState;

/// Default number of dead letters listed.
const DEFAULT_LIMIT: usize = 100;
/// Most dead letters listed at once.
const MAX_LIMIT: usize = 1000;

/// A message that could not be processed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetterView {
    /// Its id.
    pub id: i64,
    /// The topic it came from (and is replayed to).
    pub topic: String,
    /// Why it is here.
    pub reason: String,
    /// Delivery attempts before it was given up.
    pub attempts: u32,
    /// When it was kept (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The raw body as text; bytes that are not UTF-8 show as U+FFFD (see `body_utf8`).
    pub body: String,
    /// Whether `body` is the body exactly (it was valid UTF-8).
    pub body_utf8: bool,
}

impl From<DeadLetter> for DeadLetterView {
    fn from(letter: DeadLetter) -> Self {
        let body_utf8 = std::str::from_utf8(&letter.body).is_ok();
        DeadLetterView {
            id: letter.id,
            topic: letter.topic,
            reason: letter.reason,
            attempts: letter.attempts,
            created_at: crate::times::rfc3339(letter.created_at),
            body: String::from_utf8_lossy(&letter.body).into_owned(),
            body_utf8,
        }
    }
}

/// Query of `GET /dead-letters`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// How many, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// Only dead letters with a larger id: the last `id` of the previous page.
    #[param(value_type = Option<i64>, minimum = 0)]
    pub after: Option<String>,
}

/// Dead letters, oldest first, a page at a time: pass the last `id` seen as `after` for the
/// next page (an empty page is the end).
#[utoipa::path(
    get,
    path = "/api/v1/dead-letters",
    tag = "dead-letters",
    params(DeadLetterQuery),
    responses(
        (status = 200, description = "Dead letters, oldest first", body = [DeadLetterView]),
        (status = 400, description = "Bad limit or after", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<DeadLetterQuery>,
) -> Result<Json<Vec<DeadLetterView>>, Problem> {
    let limit = crate::extract::page_limit(query.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let after = match &query.after {
        None => 0,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if n >= 0 => n,
            _ => {
                return Err(Problem::bad_filter(
                    "after",
                    format!("{text:?} is not a dead letter id (a whole number, 0 or more)"),
                ))
            }
        },
    };
    let letters = state.engine.dead_letters(after, limit).await?;
    Ok(Json(
        letters.into_iter().map(DeadLetterView::from).collect(),
    ))
}

/// Publishes a dead letter again to its topic and removes it.
#[utoipa::path(
    post,
    path = "/api/v1/dead-letters/{id}/replay",
    tag = "dead-letters",
    params(("id" = i64, Path, description = "Dead letter id")),
    responses(
        (status = 202, description = "Published again; this is what was replayed", body = DeadLetterView),
        (status = 404, description = "No such dead letter", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The transport refused it; it is kept", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn replay(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<DeadLetterView>), Problem> {
    let number = parse_id(&id)?;
    match state.engine.replay_dead_letter(number).await? {
        Some(letter) => Ok((StatusCode::ACCEPTED, Json(letter.into()))),
        None => Err(not_found(&id)),
    }
}

/// Removes a dead letter for good.
#[utoipa::path(
    delete,
    path = "/api/v1/dead-letters/{id}",
    tag = "dead-letters",
    params(("id" = i64, Path, description = "Dead letter id")),
    responses(
        (status = 204, description = "Discarded"),
        (status = 404, description = "No such dead letter", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn discard(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, Problem> {
    let number = parse_id(&id)?;
    match state.engine.discard_dead_letter(number).await? {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(not_found(&id)),
    }
}

/// Ids are integers; anything else names no dead letter.
fn parse_id(id: &str) -> Result<i64, Problem> {
    id.parse::<i64>().map_err(|_| not_found(id))
}

fn not_found(id: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "dead_letter_not_found",
        format!("no dead letter has id {id:?} (it may have been replayed or discarded)"),
    )
}
