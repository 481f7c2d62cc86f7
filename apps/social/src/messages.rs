//! Part B — messages and their unread counters. The messages service keeps the messages
//! (`social_messages`); the [counters](crate::counters) service keeps the counts. Two sagas
//! keep them consistent:
//!
//! - `social-message` (`POST /api/dialog/{partnerId}/send`): `store` the message *pending*
//!   (compensation: mark it *failed*) → `increment` the recipient's unread counter
//!   (compensation: take it back) → `commit` the message (the pivot). When the counter refuses
//!   the increment, the message is kept, flagged *failed*, and left out of the dialog and
//!   its counts: a semantic compensation.
//! - `social-read` (`POST /api/dialog/{partnerId}/read`): `mark_read` the committed unread
//!   messages to the reader, tagged with the saga (the pivot) → `decrement` the counter by
//!   that many → `settle` the tags. Every step is idempotent across attempts: a retried
//!   `mark_read` counts the messages its saga tagged, and the counters service applies a read
//!   once per saga.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use sagaflow_api::Problem;
use sagaflow_app_kit::http::{bad_request, engine_problem, store_problem, Page, Params};
use sagaflow_app_kit::sql::{int, now_ms, read, scalar_i64, text};
use sagaflow_core::{Definition, Outcome, ParticipantTx, RetryPolicy, Step, StoreError};
use sagaflow_engine::{async_trait, CommandCall, Participant, StartSaga, TxHandler};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::counters::{counters_of, dialog_id};
use crate::SocialState;

/// The send saga's name.
pub const SEND: &str = "social-message";
/// The read saga's name.
pub const READ: &str = "social-read";
/// The service's name.
pub const SERVICE: &str = "social-messages";
/// The longest message, in characters.
pub const MAX_TEXT: usize = 4_096;

fn patient() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 1_000,
        initial_delay_ms: 200,
        multiplier: 2.0,
        max_delay_ms: 30_000,
        jitter: 0.2,
    }
}

/// The send saga.
pub fn send_definition() -> Definition {
    Definition::builder(SEND, 1)
        .step(
            // Patient: a compensation runs under its step's policy, and a message must not
            // be left pending because the messages service was down for a while.
            Step::compensatable("store", "social-messages.store", "social-messages.fail")
                .timeout_ms(10_000)
                .retry(patient()),
        )
        .step(
            Step::compensatable(
                "increment",
                "social-counters.increment",
                "social-counters.undo_increment",
            )
            // A refusal (the counter's constraint) is a rejection and compensates at once;
            // the counters service being down is waited out, for the action and its undo.
            .timeout_ms(10_000)
            .retry(patient()),
        )
        .step(
            // Once the message is committed, the send only moves forward.
            Step::pivot("commit", "social-messages.commit")
                .timeout_ms(10_000)
                .retry(patient()),
        )
        .build()
        .expect("the send definition is valid")
}

/// The read saga.
pub fn read_definition() -> Definition {
    Definition::builder(READ, 1)
        .step(
            Step::pivot("mark_read", "social-messages.mark_read")
                .timeout_ms(10_000)
                .retry(patient()),
        )
        .step(
            Step::retriable("decrement", "social-counters.decrement")
                .timeout_ms(10_000)
                .retry(patient()),
        )
        .step(
            Step::retriable("settle", "social-messages.settle_read")
                .timeout_ms(10_000)
                .retry(patient()),
        )
        .build()
        .expect("the read definition is valid")
}

fn field(call: &CommandCall, key: &str) -> String {
    call.context[key].as_str().unwrap_or_default().to_string()
}

/// Stores the message pending, unless it is there already (or was failed first).
struct Store;

#[async_trait]
impl TxHandler for Store {
    async fn handle(
        &self,
        call: &CommandCall,
        tx: &mut dyn ParticipantTx,
    ) -> Result<Outcome, StoreError> {
        insert(call, tx, "pending", None).await?;
        Ok(Outcome::ok(json!({})))
    }
}

async fn insert(
    call: &CommandCall,
    tx: &mut dyn ParticipantTx,
    state: &str,
    reason: Option<&str>,
) -> Result<u64, StoreError> {
    let f = |k| field(call, k);
    tx.execute(
        "INSERT INTO social_messages (id, dialog_id, sender_id, recipient_id, body, state, reason, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (id) DO NOTHING",
        &[
            f("message_id").into(),
            f("dialog_id").into(),
            f("sender_id").into(),
            f("recipient_id").into(),
            f("text").into(),
            state.into(),
            reason.map(Into::into).unwrap_or(sagaflow_core::SqlValue::Null),
            call.context["sent_at"].as_i64().unwrap_or_else(now_ms).into(),
        ],
    )
    .await
}

/// Compensates `store`: the message is kept, flagged failed (a tombstone if it never got
/// stored, so a late `store` does nothing).
struct Fail;

const FAILED_REASON: &str = "not delivered: the recipient's unread counter could not be updated";

#[async_trait]
impl TxHandler for Fail {
    async fn handle(
        &self,
        call: &CommandCall,
        tx: &mut dyn ParticipantTx,
    ) -> Result<Outcome, StoreError> {
        if insert(call, tx, "failed", Some(FAILED_REASON)).await? == 0 {
            tx.execute(
                "UPDATE social_messages SET state = 'failed', reason = $2 WHERE id = $1 AND state = 'pending'",
                &[field(call, "message_id").into(), FAILED_REASON.into()],
            )
            .await?;
        }
        Ok(Outcome::ok(json!({})))
    }
}

/// The pivot: the message is delivered.
struct Commit;

#[async_trait]
impl TxHandler for Commit {
    async fn handle(
        &self,
        call: &CommandCall,
        tx: &mut dyn ParticipantTx,
    ) -> Result<Outcome, StoreError> {
        tx.execute(
            "UPDATE social_messages SET state = 'committed' WHERE id = $1 AND state = 'pending'",
            &[field(call, "message_id").into()],
        )
        .await?;
        Ok(Outcome::ok(json!({})))
    }
}

fn read_tag(call: &CommandCall) -> String {
    format!("reading:{}", call.saga_id)
}

/// Tags the reader's committed unread messages in the dialog, up to when the read was asked
/// for, and records how many: every later attempt of the same read answers that count, so a
/// late attempt neither tags messages sent since nor changes what `decrement` subtracts.
struct MarkRead;

#[async_trait]
impl TxHandler for MarkRead {
    async fn handle(
        &self,
        call: &CommandCall,
        tx: &mut dyn ParticipantTx,
    ) -> Result<Outcome, StoreError> {
        let recorded = scalar_i64(
            tx,
            "SELECT read_count FROM social_message_reads WHERE saga_id = $1",
            &[call.saga_id.as_str().into()],
        )
        .await?;
        if let Some(count) = recorded {
            return Ok(Outcome::ok(json!({ "read_count": count })));
        }
        let tag = read_tag(call);
        tx.execute(
            "UPDATE social_messages SET read_state = $1 WHERE dialog_id = $2 AND recipient_id = $3 AND state = 'committed' AND read_state IS NULL AND created_at <= $4",
            &[
                tag.as_str().into(),
                field(call, "dialog_id").into(),
                field(call, "reader_id").into(),
                call.context["read_up_to"].as_i64().unwrap_or_else(now_ms).into(),
            ],
        )
        .await?;
        let count = scalar_i64(
            tx,
            "SELECT COUNT(*) FROM social_messages WHERE read_state = $1",
            &[tag.into()],
        )
        .await?
        .unwrap_or(0);
        // A concurrent attempt that recorded first makes this insert fail: this attempt rolls
        // back and, tried again, reads that record.
        tx.execute(
            "INSERT INTO social_message_reads (saga_id, read_count) VALUES ($1, $2)",
            &[call.saga_id.as_str().into(), count.into()],
        )
        .await?;
        Ok(Outcome::ok(json!({ "read_count": count })))
    }
}

/// The counter has followed: the tags become plain `read`.
struct SettleRead;

#[async_trait]
impl TxHandler for SettleRead {
    async fn handle(
        &self,
        call: &CommandCall,
        tx: &mut dyn ParticipantTx,
    ) -> Result<Outcome, StoreError> {
        tx.execute(
            "UPDATE social_messages SET read_state = 'read' WHERE read_state = $1",
            &[read_tag(call).into()],
        )
        .await?;
        Ok(Outcome::ok(json!({})))
    }
}

/// The messages service's saga handlers.
pub fn participant() -> Participant {
    Participant::new(SERVICE)
        .on_tx("store", Store)
        .on_tx("fail", Fail)
        .on_tx("commit", Commit)
        .on_tx("mark_read", MarkRead)
        .on_tx("settle_read", SettleRead)
}

/// The user a request is made by: the subject of a login token, or `X-User-Id`. With API
/// keys configured, `X-User-Id` speaks for a user only from a service that also presents a
/// key with `operate` (a user's own token cannot be overridden by the header).
fn caller(state: &SocialState, headers: &HeaderMap) -> Result<String, Problem> {
    if let Some(v) = headers.get("x-user-id") {
        sagaflow_api::authorize(&state.api_keys, headers, sagaflow_api::Right::Operate).map_err(
            |p| {
                Problem::new(
                    StatusCode::from_u16(p.status).unwrap_or(StatusCode::UNAUTHORIZED),
                    &p.code,
                    format!(
                        "X-User-Id acts for a user only with a service's API key ({})",
                        p.detail
                    ),
                )
            },
        )?;
        return match v.to_str().map(str::trim) {
            Ok(id) if valid_id(id) => Ok(id.to_string()),
            _ => Err(bad_request(
                "bad_user_id",
                "X-User-Id must be a user id (1 to 200 characters, no `:`)",
            )),
        };
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("Bearer "))
        .map(str::trim);
    match token {
        Some(token) => {
            sagaflow_app_kit::auth::verify_token(&state.config.jwt_secret, token, now_ms())
                .map(|claims| claims.sub)
                .map_err(|why| Problem::new(StatusCode::UNAUTHORIZED, "bad_token", why))
        }
        None => Err(bad_request(
            "missing_user",
            "missing X-User-Id header (or a bearer token from POST /login)",
        )),
    }
}

/// A user id as the dialogs take it: a dialog id joins two with `:`, so none may hold one.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 200 && !id.contains(':') && !id.contains('\0')
}

async fn user_exists(state: &SocialState, id: &str) -> Result<bool, Problem> {
    let rows = read(
        &state.store,
        "SELECT 1 FROM social_users WHERE id = $1",
        &[id.into()],
    )
    .await
    .map_err(store_problem)?;
    Ok(!rows.is_empty())
}

async fn partner(state: &SocialState, me: &str, partner: &str) -> Result<(), Problem> {
    if !valid_id(partner) {
        return Err(bad_request(
            "bad_user_id",
            "a partner id is a user id (1 to 200 characters, no `:`)",
        ));
    }
    if !user_exists(state, me).await? {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "user_not_found",
            format!("no user {me} (the X-User-Id or token's user)"),
        ));
    }
    if partner == me {
        return Err(bad_request(
            "same_user",
            "a dialog is between two different users",
        ));
    }
    if !user_exists(state, partner).await? {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "user_not_found",
            format!("no user {partner}"),
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct Send {
    text: Option<String>,
}

fn with_request(mut start: StartSaga, headers: &HeaderMap) -> StartSaga {
    if let Some(id) = headers
        .get(&sagaflow_api::X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200)
    {
        start = start.request_id(id);
    }
    if let Some(tp) = sagaflow_api::traceparent(headers) {
        start = start.traceparent(tp);
    }
    start
}

/// `POST /api/dialog/{partnerId}/send` `{text}`: stores the message pending and starts the
/// send saga; 200 `{message_id, saga_id}`.
pub async fn send(
    State(state): State<SocialState>,
    Path(to): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, Problem> {
    let me = caller(&state, &headers)?;
    let body: Send =
        sagaflow_api::parse_json(&bytes).map_err(|p| bad_request(&p.code, p.detail))?;
    let text = body
        .text
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| bad_request("missing_field", "text is required"))?;
    if text.contains('\0') {
        return Err(bad_request(
            "bad_text",
            "a message cannot hold a NUL character",
        ));
    }
    if text.chars().count() > MAX_TEXT {
        return Err(bad_request(
            "text_too_long",
            format!("a message is at most {MAX_TEXT} characters"),
        ));
    }
    partner(&state, &me, &to).await?;
    let message_id = uuid::Uuid::now_v7().to_string();
    let start = StartSaga::new(
        SEND,
        json!({
            "message_id": message_id, "dialog_id": dialog_id(&me, &to),
            "sender_id": me, "recipient_id": to, "text": text, "sent_at": now_ms(),
        }),
    )
    .idempotency_key(format!("message:{message_id}"));
    let started = state
        .engine
        .start_saga(with_request(start, &headers))
        .await
        .map_err(engine_problem)?;
    Ok(Json(
        json!({ "message_id": message_id, "saga_id": started.saga_id }),
    ))
}

/// `GET /api/dialog/{partnerId}/list?offset&limit`: the dialog's committed messages, oldest
/// first (limit 20 by default, at most 100).
pub async fn list(
    State(state): State<SocialState>,
    Path(with): Path<String>,
    headers: HeaderMap,
    Params(page): Params<Page>,
) -> Result<Json<Value>, Problem> {
    let me = caller(&state, &headers)?;
    if !valid_id(&with) {
        return Err(bad_request("bad_user_id", "a partner id has no `:`"));
    }
    let (limit, offset) = page.bounds(20, 100)?;
    let rows = read(
        &state.store,
        "SELECT id, sender_id, recipient_id, body, created_at, read_state FROM social_messages \
         WHERE dialog_id = $1 AND state = 'committed' ORDER BY created_at, id LIMIT $2 OFFSET $3",
        &[dialog_id(&me, &with).into(), limit.into(), offset.into()],
    )
    .await
    .map_err(store_problem)?;
    let messages: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": text(r, 0), "from": text(r, 1), "to": text(r, 2), "text": text(r, 3),
                "created_at": sagaflow_api::rfc3339(int(r, 4)), "read": r.get(5).is_some_and(|v| v.as_str().is_some()),
            })
        })
        .collect();
    Ok(Json(
        json!({ "dialog_id": dialog_id(&me, &with), "offset": offset, "limit": limit, "messages": messages }),
    ))
}

/// Dialogs `GET /api/dialog` shows when `limit` is not given.
pub const DIALOGS_DEFAULT_LIMIT: i64 = 100;
/// The most dialogs `GET /api/dialog` shows at once.
pub const DIALOGS_MAX_LIMIT: i64 = 500;

/// `GET /api/dialog?offset&limit`: the user's dialogs, latest first, with their unread
/// counts, a page at a time (`limit` 1 to 500, default 100; `offset` default 0).
pub async fn dialogs(
    State(state): State<SocialState>,
    headers: HeaderMap,
    Params(page): Params<Page>,
) -> Result<Json<Value>, Problem> {
    let me = caller(&state, &headers)?;
    let (limit, offset) = page.bounds(DIALOGS_DEFAULT_LIMIT, DIALOGS_MAX_LIMIT)?;
    // The dialog id breaks ties between dialogs last written in the same millisecond, so
    // pages never overlap.
    let rows = read(
        &state.store,
        "SELECT dialog_id, MAX(created_at) FROM social_messages \
         WHERE (sender_id = $1 OR recipient_id = $1) AND state = 'committed' \
         GROUP BY dialog_id ORDER BY 2 DESC, 1 LIMIT $2 OFFSET $3",
        &[me.as_str().into(), limit.into(), offset.into()],
    )
    .await
    .map_err(store_problem)?;
    let counters = counters_of(&state.store, &state.config.cache, &me)
        .await
        .map_err(store_problem)?;
    let dialogs: Vec<Value> = rows
        .iter()
        .map(|r| {
            let dialog = text(r, 0);
            let unread = counters
                .iter()
                .find(|c| c.dialog_id == dialog)
                .map_or(0, |c| c.unread);
            json!({
                "dialog_id": dialog,
                "partner_id": crate::counters::partner_in(&dialog, &me),
                "last_message_at": sagaflow_api::rfc3339(int(r, 1)),
                "unread": unread,
            })
        })
        .collect();
    Ok(Json(
        json!({ "user_id": me, "offset": offset, "limit": limit, "dialogs": dialogs }),
    ))
}

/// `POST /api/dialog/{partnerId}/read`: marks the dialog read by a saga; 200 `{saga_id}`.
pub async fn mark_read(
    State(state): State<SocialState>,
    Path(with): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, Problem> {
    let me = caller(&state, &headers)?;
    partner(&state, &me, &with).await?;
    let dialog = dialog_id(&me, &with);
    let start = StartSaga::new(
        READ,
        json!({ "reader_id": me, "dialog_id": dialog, "partner_id": with, "read_up_to": now_ms() }),
    );
    let started = state
        .engine
        .start_saga(with_request(start, &headers))
        .await
        .map_err(engine_problem)?;
    Ok(Json(
        json!({ "saga_id": started.saga_id, "dialog_id": dialog }),
    ))
}
