//! `/api/v1/sagas`: start, list, show, history, journal, cancel and resume.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use sagaflow_engine::core::{
    history as attempt_history, AttemptStatus, Phase, SagaFilter, SagaId, SagaState, Status,
};
use sagaflow_engine::StartSaga;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::extract::{ApiJson, ApiPath, ApiQuery, OptionalJson};
use crate::problem::Problem;
use crate::request_id::RequestId;
use crate::times::rfc3339;
use crate::ApiState;

/// Default page size of `GET /sagas`.
const DEFAULT_LIMIT: usize = 50;
/// Largest page size of `GET /sagas`.
const MAX_LIMIT: usize = 500;
/// Longest `Idempotency-Key` accepted.
const MAX_KEY_LEN: usize = 255;

/// A saga's status, lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    /// Moving forward.
    Running,
    /// Parked until a signal.
    Waiting,
    /// Undoing what was done.
    Compensating,
    /// Every step done.
    Completed,
    /// Every done step undone.
    Compensated,
    /// Needs an operator.
    Failed,
}

impl From<Status> for SagaStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::Running => SagaStatus::Running,
            Status::Waiting => SagaStatus::Waiting,
            Status::Compensating => SagaStatus::Compensating,
            Status::Completed => SagaStatus::Completed,
            Status::Compensated => SagaStatus::Compensated,
            Status::Failed => SagaStatus::Failed,
        }
    }
}

/// The body of `POST /sagas`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// Definition name.
    pub definition: String,
    /// Definition version; the newest registered when absent.
    #[serde(default)]
    pub version: Option<u32>,
    /// The saga's initial context.
    pub input: Value,
    /// The saga's correlation key (otherwise read from the input at the definition's
    /// `correlation_key` path).
    #[serde(default)]
    pub correlation_id: Option<String>,
}

/// A saga and its status (after a start, cancel or resume).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SagaRef {
    /// The saga's id.
    pub saga_id: String,
    /// Its status.
    pub status: SagaStatus,
}

/// The answer to `POST /sagas`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Started {
    /// The saga's id.
    pub saga_id: String,
    /// Its status right after the start.
    pub status: SagaStatus,
    /// False when the `Idempotency-Key` named an existing saga.
    pub created: bool,
}

/// One saga, as `GET /sagas/{id}` and `GET /sagas` show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SagaView {
    /// The saga's id.
    pub saga_id: String,
    /// Definition name.
    pub definition: String,
    /// Definition version it runs on.
    pub version: u32,
    /// Where it is.
    pub status: SagaStatus,
    /// The step it is on (in flight, parked, retrying or next), if any.
    pub current_step: Option<String>,
    /// The input merged with every step's output.
    pub context: Value,
    /// The correlation key value, if any.
    pub correlation_key: Option<String>,
    /// When it started (RFC 3339, UTC).
    #[schema(format = DateTime, example = "2026-12-04T19:22:35.120Z")]
    pub created_at: String,
    /// When it last changed (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// When it ended (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub ended_at: Option<String>,
    /// Why it is compensating or failed.
    pub reason: Option<String>,
    /// The `X-Request-ID` of the request that started it.
    pub request_id: Option<String>,
}

/// A page of sagas, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SagaPage {
    /// The sagas.
    pub items: Vec<SagaView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Filters of `GET /sagas`. Kept as text so that each bad value is refused naming its
/// parameter, rather than with a generic parse error.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only sagas with this status.
    #[param(value_type = Option<SagaStatus>)]
    pub status: Option<String>,
    /// Only sagas of this definition.
    pub definition: Option<String>,
    /// Only sagas with this correlation key.
    pub correlation_id: Option<String>,
    /// Only sagas created at or after this time (RFC 3339 in UTC).
    #[param(value_type = Option<String>, format = DateTime)]
    pub created_after: Option<String>,
    /// Only sagas created before this time (RFC 3339 in UTC).
    #[param(value_type = Option<String>, format = DateTime)]
    pub created_before: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One attempt of a step's action or compensation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttemptView {
    /// The step's name.
    pub step_name: String,
    /// Whether the attempt performed the step or undid it.
    pub kind: AttemptKind,
    /// Attempt number for this step and kind, from 1.
    pub attempt: u32,
    /// How it went.
    pub status: AttemptOutcome,
    /// When it was sent (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub started_at: String,
    /// When its outcome was recorded (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub completed_at: Option<String>,
    /// The error, refusal or timeout, if any.
    pub error: Option<String>,
    /// How many attempts came before this one (0 for the first).
    pub retry_attempt: u32,
}

/// A saga's attempts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SagaHistory {
    /// The saga.
    pub saga_id: String,
    /// Every attempt of every action and compensation, in the order they were sent.
    pub history: Vec<AttemptView>,
}

/// Action or compensation.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptKind {
    /// The step's action.
    Action,
    /// The step's compensation.
    Compensation,
}

/// How one attempt went.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// Sent; no answer yet.
    InFlight,
    /// Done.
    Succeeded,
    /// Failed (it may be retried as a new attempt).
    Failed,
    /// A business refusal.
    Rejected,
    /// No answer in time: it may have happened.
    TimedOut,
    /// The participant asked to wait for a signal.
    Parked,
}

/// One journal entry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JournalEntryView {
    /// Position in the journal, from 1.
    pub seq: u64,
    /// When it was decided (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub at: String,
    /// The event, tagged by `type` (`started`, `attempt_dispatched`, …, `ended`); its times
    /// (`deadline_at`, `retry_at`, `timeout_at`) are RFC 3339 too.
    #[schema(value_type = Object)]
    pub event: Value,
}

/// The optional body of `POST /sagas/{id}/cancel`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Why, recorded in the journal.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Starts a saga.
#[utoipa::path(
    post,
    path = "/api/v1/sagas",
    tag = "sagas",
    request_body = StartRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "The same key again returns the same saga instead of starting another"),
        ("X-Request-ID" = Option<String>, Header, description = "Recorded on the saga and carried in its messages; generated when absent"),
        ("traceparent" = Option<String>, Header, description = "W3C trace context carried in the saga's messages"),
    ),
    responses(
        (status = 202, description = "Started (or found by its idempotency key)", body = Started),
        (status = 400, description = "Malformed JSON or a bad header", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such definition", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown field, missing field or wrong type", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable or shutting down", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn start(
    State(state): State<ApiState>,
    request_id: RequestId,
    headers: HeaderMap,
    ApiJson(body): ApiJson<StartRequest>,
) -> Result<(StatusCode, Json<Started>), Problem> {
    let mut request = StartSaga::new(&body.definition, body.input).request_id(request_id.0);
    if let Some(version) = body.version {
        request = request.version(version);
    }
    if let Some(correlation) = body.correlation_id {
        request = request.correlation_id(correlation);
    }
    if let Some(key) = idempotency_key(&headers)? {
        request = request.idempotency_key(key);
    }
    if let Some(traceparent) = traceparent(&headers) {
        request = request.traceparent(traceparent);
    }
    let started = state.engine.start_saga(request).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Started {
            saga_id: started.saga_id.0,
            status: started.status.into(),
            created: started.created,
        }),
    ))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= MAX_KEY_LEN => Ok(Some(key.to_string())),
        _ => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "bad_header",
            format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
        )),
    }
}

/// The W3C `traceparent`, when it has the version-00 shape; a malformed one is dropped (the
/// trace restarts) rather than carried into every message of the saga.
pub fn traceparent(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("traceparent")?.to_str().ok()?.trim();
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    let well_formed = parts.len() == 4
        && hex(parts[0], 2)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2);
    well_formed.then(|| value.to_string())
}

/// Lists sagas, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/sagas",
    tag = "sagas",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of sagas", body = SagaPage),
        (status = 400, description = "A filter value cannot be used; the detail names it", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<SagaPage>, Problem> {
    let limit = crate::extract::page_limit(query.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let status = match &query.status {
        None => None,
        Some(text) => Some(Status::parse(text).ok_or_else(|| {
            Problem::bad_filter(
                "status",
                format!(
                    "{text:?} is not a status; use running, waiting, compensating, completed, compensated or failed"
                ),
            )
        })?),
    };
    let millis = |name: &str, value: &Option<String>| -> Result<Option<i64>, Problem> {
        value
            .as_ref()
            .map(|text| {
                crate::times::parse_utc(text).ok_or_else(|| {
                    Problem::bad_filter(
                        name,
                        format!(
                            "{text:?} is not an RFC 3339 time in UTC (2026-12-04T19:22:35.120Z)"
                        ),
                    )
                })
            })
            .transpose()
    };
    let created_after = millis("created_after", &query.created_after)?;
    let created_before = millis("created_before", &query.created_before)?;
    let before = query.cursor.as_deref().map(parse_cursor).transpose()?;
    let filter = SagaFilter {
        status,
        definition: query.definition.clone(),
        correlation_key: query.correlation_id.clone(),
        created_after,
        created_before,
        before,
        // One more than asked tells whether another page follows.
        limit: limit + 1,
    };
    let mut sagas = state.engine.list(&filter).await?;
    let more = sagas.len() > limit;
    sagas.truncate(limit);
    let next_cursor = more
        .then(|| {
            sagas
                .last()
                .map(|s| format!("{}_{}", s.created_at, s.saga_id))
        })
        .flatten();
    let items = sagas.iter().map(|s| view(&state, s)).collect();
    Ok(Json(SagaPage { items, next_cursor }))
}

/// A cursor is `{created_at}_{saga_id}` of the last saga of the previous page.
fn parse_cursor(cursor: &str) -> Result<(i64, SagaId), Problem> {
    cursor
        .split_once('_')
        .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id)))
        .filter(|(_, id)| !id.is_empty())
        .map(|(at, id)| (at, SagaId(id.to_string())))
        .ok_or_else(|| {
            Problem::bad_filter(
                "cursor",
                format!("{cursor:?} is not a cursor this API gave out; pass next_cursor unchanged"),
            )
        })
}

fn view(state: &ApiState, s: &SagaState) -> SagaView {
    let current_step = s.current_step().map(|i| {
        state
            .engine
            .registry()
            .get(&s.definition, Some(s.version))
            .ok()
            .and_then(|def| def.steps.get(i).map(|step| step.name.clone()))
            .unwrap_or_else(|| format!("#{i}"))
    });
    SagaView {
        saga_id: s.saga_id.0.clone(),
        definition: s.definition.clone(),
        version: s.version,
        status: s.status.into(),
        current_step,
        context: s.context.clone(),
        correlation_key: s.correlation_key.clone(),
        created_at: rfc3339(s.created_at),
        updated_at: rfc3339(s.updated_at),
        ended_at: s.ended_at.map(rfc3339),
        reason: s.reason.clone(),
        request_id: s.request_id.clone(),
    }
}

async fn load(state: &ApiState, id: &str) -> Result<SagaState, Problem> {
    state
        .engine
        .saga(&SagaId(id.to_string()))
        .await?
        .ok_or_else(|| Problem::saga_not_found(id))
}

/// One saga.
#[utoipa::path(
    get,
    path = "/api/v1/sagas/{id}",
    tag = "sagas",
    params(("id" = String, Path, description = "Saga id")),
    responses(
        (status = 200, description = "The saga", body = SagaView),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn show(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SagaView>, Problem> {
    let saga = load(&state, &id).await?;
    Ok(Json(view(&state, &saga)))
}

/// A saga's attempts, in the order they were sent.
#[utoipa::path(
    get,
    path = "/api/v1/sagas/{id}/history",
    tag = "sagas",
    params(("id" = String, Path, description = "Saga id")),
    responses(
        (status = 200, description = "Every attempt of every action and compensation", body = SagaHistory),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn history(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SagaHistory>, Problem> {
    let saga = load(&state, &id).await?;
    let def = state
        .engine
        .registry()
        .get(&saga.definition, Some(saga.version))?;
    let journal = state.engine.journal(&saga.saga_id).await?;
    let attempts = attempt_history(&def, &journal)
        .into_iter()
        .map(|a| AttemptView {
            step_name: a.step_name,
            kind: match a.kind {
                Phase::Action => AttemptKind::Action,
                Phase::Compensation => AttemptKind::Compensation,
            },
            attempt: a.attempt,
            status: match a.status {
                AttemptStatus::InFlight => AttemptOutcome::InFlight,
                AttemptStatus::Succeeded => AttemptOutcome::Succeeded,
                AttemptStatus::Failed => AttemptOutcome::Failed,
                AttemptStatus::Rejected => AttemptOutcome::Rejected,
                AttemptStatus::TimedOut => AttemptOutcome::TimedOut,
                AttemptStatus::Parked => AttemptOutcome::Parked,
            },
            started_at: rfc3339(a.started_at),
            completed_at: a.completed_at.map(rfc3339),
            error: a.error,
            retry_attempt: a.retry_attempt,
        })
        .collect();
    Ok(Json(SagaHistory {
        saga_id: saga.saga_id.0,
        history: attempts,
    }))
}

/// A saga's journal: every event, in order.
#[utoipa::path(
    get,
    path = "/api/v1/sagas/{id}/journal",
    tag = "sagas",
    params(("id" = String, Path, description = "Saga id")),
    responses(
        (status = 200, description = "The journal", body = [JournalEntryView]),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn journal(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<JournalEntryView>>, Problem> {
    let journal = state.engine.journal(&SagaId(id.clone())).await?;
    // An empty journal is a saga that never started: there is no such saga.
    if journal.is_empty() {
        return Err(Problem::saga_not_found(&id));
    }
    let entries = journal
        .into_iter()
        .map(|entry| {
            let mut event = serde_json::to_value(&entry.event).unwrap_or(Value::Null);
            crate::times::times_as_text(&mut event);
            JournalEntryView {
                seq: entry.seq,
                at: rfc3339(entry.at),
                event,
            }
        })
        .collect();
    Ok(Json(entries))
}

/// Compensates what the saga did.
#[utoipa::path(
    post,
    path = "/api/v1/sagas/{id}/cancel",
    tag = "sagas",
    params(("id" = String, Path, description = "Saga id")),
    request_body(content = Option<CancelRequest>, description = "Optional; an empty body is fine"),
    responses(
        (status = 202, description = "Compensating", body = SagaRef),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The pivot succeeded (`pivot_passed`) or the saga ended (`already_ended`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A body that is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The body does not fit", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn cancel(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    OptionalJson(body): OptionalJson<CancelRequest>,
) -> Result<(StatusCode, Json<SagaRef>), Problem> {
    let reason = body
        .reason
        .unwrap_or_else(|| "cancelled through the API".to_string());
    let saga = state.engine.cancel(&SagaId(id), &reason).await?;
    Ok((StatusCode::ACCEPTED, Json(saga_ref(&saga))))
}

/// Takes a failed saga back, or attempts a waiting saga's step again now.
#[utoipa::path(
    post,
    path = "/api/v1/sagas/{id}/resume",
    tag = "sagas",
    params(("id" = String, Path, description = "Saga id")),
    responses(
        (status = 202, description = "Resumed", body = SagaRef),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Nothing to resume (`nothing_to_resume`) or ended (`already_ended`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn resume(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<SagaRef>), Problem> {
    let saga = state.engine.resume(&SagaId(id)).await?;
    Ok((StatusCode::ACCEPTED, Json(saga_ref(&saga))))
}

fn saga_ref(saga: &SagaState) -> SagaRef {
    SagaRef {
        saga_id: saga.saga_id.0.clone(),
        status: saga.status.into(),
    }
}
