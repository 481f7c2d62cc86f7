//! Part A — registration with verification. `POST /user/register` stores the user *pending
//! verification* (0) and starts `social-registration`: `verify` (the verifier's verdict,
//! attempted again with backoff while the verifier does not answer) then `record` (the users
//! service sets *verified* (100) or *verification failed* (10)). A status only ever moves up
//! 0 < 10 < 100: an update that would lower it, or repeat it, changes nothing.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use sagaflow_api::Problem;
use sagaflow_app_kit::http::{bad_request, engine_problem, store_problem};
use sagaflow_app_kit::sql::{in_tx, int, now_ms, read, text};
use sagaflow_core::{Definition, Outcome, ParticipantTx, RetryPolicy, Step, StoreError};
use sagaflow_engine::{async_trait, CommandCall, Participant, StartSaga, TxHandler};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{SocialConfig, SocialState};

/// The registration saga's name.
pub const DEFINITION: &str = "social-registration";

/// Pending verification.
pub const PENDING: i64 = 0;
/// Verification failed.
pub const FAILED: i64 = 10;
/// Verified.
pub const VERIFIED: i64 = 100;

/// A status's name.
pub fn status_name(status: i64) -> &'static str {
    match status {
        VERIFIED => "verified",
        FAILED => "verification_failed",
        _ => "pending_verification",
    }
}

/// The registration saga: ask the verifier (again and again, with backoff up to 30 s
/// between tries, for as long as 1 000 attempts take), then record its verdict.
pub fn definition(config: &SocialConfig) -> Definition {
    let backoff = RetryPolicy {
        max_attempts: 1_000,
        initial_delay_ms: 500,
        multiplier: 2.0,
        max_delay_ms: 30_000,
        jitter: 0.2,
    };
    Definition::builder(DEFINITION, 1)
        .step(
            // The pivot: once the verifier has answered, the saga only moves forward.
            Step::pivot("verify", "social-verifier.verify")
                .timeout_ms(config.verify_timeout_ms)
                .retry(backoff.clone()),
        )
        .step(Step::retriable("record", "social-users.set_status").retry(backoff))
        .build()
        .expect("the registration definition is valid")
}

/// Sets a user's status, only ever upwards.
pub async fn raise_status(
    tx: &mut dyn ParticipantTx,
    user_id: &str,
    status: i64,
    reason: &str,
) -> Result<u64, StoreError> {
    tx.execute(
        "UPDATE social_users SET status = $1, status_reason = $2 WHERE id = $3 AND status < $1",
        &[status.into(), reason.into(), user_id.into()],
    )
    .await
}

struct SetStatus;

#[async_trait]
impl TxHandler for SetStatus {
    async fn handle(
        &self,
        call: &CommandCall,
        tx: &mut dyn ParticipantTx,
    ) -> Result<Outcome, StoreError> {
        let user_id = call.context["user_id"].as_str().unwrap_or_default();
        let verdict = &call.context["verification"];
        let (status, reason) = if verdict["passed"].as_bool() == Some(true) {
            (VERIFIED, "passed".to_string())
        } else {
            (
                FAILED,
                verdict["reason"]
                    .as_str()
                    .unwrap_or("verification failed")
                    .to_string(),
            )
        };
        raise_status(tx, user_id, status, &reason).await?;
        Ok(Outcome::ok(json!({ "status": status })))
    }
}

/// The users service's saga handler.
pub fn participant() -> Participant {
    Participant::new("social-users").on_tx("set_status", SetStatus)
}

#[derive(Debug, Deserialize)]
struct Register {
    first_name: Option<String>,
    second_name: Option<String>,
    birthdate: Option<String>,
    gender: Option<String>,
    biography: Option<String>,
    city: Option<String>,
    password: Option<String>,
}

/// `POST /user/register`: stores the user pending verification and starts the saga.
pub async fn register(
    State(state): State<SocialState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, Problem> {
    let r: Register =
        sagaflow_api::parse_json(&bytes).map_err(|p| bad_request(&p.code, p.detail))?;
    let password = match r.password {
        Some(p) if !p.is_empty() => p,
        _ => return Err(bad_request("missing_field", "password is required")),
    };
    let hash = sagaflow_app_kit::auth::hash_password_async(password).await?;
    let user_id = uuid::Uuid::now_v7().to_string();
    let (first, second, birth) = (
        r.first_name.unwrap_or_default(),
        r.second_name.unwrap_or_default(),
        r.birthdate.unwrap_or_default(),
    );
    let row: Vec<sagaflow_core::SqlValue> = vec![
        user_id.clone().into(),
        first.clone().into(),
        second.clone().into(),
        birth.clone().into(),
        opt(r.gender),
        opt(r.biography),
        opt(r.city),
        hash.into(),
        PENDING.into(),
        now_ms().into(),
    ];
    in_tx(&state.store, move |tx| {
        Box::pin(async move {
            tx.execute(
                "INSERT INTO social_users (id, first_name, second_name, birthdate, gender, biography, city, password_hash, status, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &row,
            )
            .await
            .map(|_| ())
        })
    })
    .await
    .map_err(store_problem)?;
    // The request id and trace context travel in every message of the saga.
    let request_id = headers
        .get(&sagaflow_api::X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let mut start = StartSaga::new(
        DEFINITION,
        json!({ "user_id": user_id, "first_name": first, "second_name": second, "birthdate": birth }),
    )
    .idempotency_key(format!("registration:{user_id}"))
    .request_id(request_id);
    if let Some(tp) = sagaflow_api::traceparent(&headers) {
        start = start.traceparent(tp);
    }
    if let Err(e) = state.engine.start_saga(start).await {
        // No saga, no user: a pending user nobody will verify would be stuck for good.
        let id = user_id.clone();
        let _ = in_tx(&state.store, move |tx| {
            Box::pin(async move {
                tx.execute("DELETE FROM social_users WHERE id = $1", &[id.into()])
                    .await
                    .map(|_| ())
            })
        })
        .await;
        return Err(engine_problem(e));
    }
    Ok(Json(json!({ "user_id": user_id })))
}

fn opt(v: Option<String>) -> sagaflow_core::SqlValue {
    v.map(Into::into).unwrap_or(sagaflow_core::SqlValue::Null)
}

#[derive(Debug, Deserialize)]
struct Login {
    id: Option<String>,
    password: Option<String>,
}

/// `POST /login`: a token for a verified user; 403 with the reason while pending or after a
/// failed verification; 401 on bad credentials.
pub async fn login(State(state): State<SocialState>, bytes: Bytes) -> Result<Json<Value>, Problem> {
    let l: Login = sagaflow_api::parse_json(&bytes).map_err(|p| bad_request(&p.code, p.detail))?;
    let (id, password) = (l.id.unwrap_or_default(), l.password.unwrap_or_default());
    let rows = read(
        &state.store,
        "SELECT password_hash, status, status_reason FROM social_users WHERE id = $1",
        &[id.as_str().into()],
    )
    .await
    .map_err(store_problem)?;
    let bad = || {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
            "wrong user id or password",
        )
    };
    let found = rows
        .first()
        .map(|row| (text(row, 0), int(row, 1), text(row, 2)));
    let stored = found.as_ref().map(|(hash, _, _)| hash.clone());
    // An unknown id takes as long as a wrong password: the answer tells nothing more.
    if !sagaflow_app_kit::auth::password_matches_async(password, stored).await? {
        return Err(bad());
    }
    let Some((_, status, reason)) = found else {
        return Err(bad());
    };
    match status {
        VERIFIED => {}
        FAILED => {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "verification_failed",
                format!("this account failed verification: {reason}"),
            ))
        }
        _ => {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "verification_pending",
                "this account is still being verified; try again shortly",
            ))
        }
    }
    let claims = sagaflow_app_kit::auth::Claims {
        sub: id,
        email: String::new(),
        exp: now_ms() / 1000 + state.config.token_ttl_secs,
    };
    Ok(Json(
        json!({ "token": sagaflow_app_kit::auth::sign_token(&state.config.jwt_secret, &claims) }),
    ))
}

/// `GET /user/get/{id}`: the profile, with `status` (its name) and `user_status` (its number).
pub async fn get(
    State(state): State<SocialState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let rows = read(
        &state.store,
        "SELECT id, first_name, second_name, birthdate, gender, biography, city, status, status_reason FROM social_users WHERE id = $1",
        &[id.as_str().into()],
    )
    .await
    .map_err(store_problem)?;
    let row = rows.first().ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "user_not_found",
            format!("no user {id}"),
        )
    })?;
    let optional = |i: usize| row.get(i).and_then(|v| v.as_str()).map(str::to_string);
    let status = int(row, 7);
    Ok(Json(json!({
        "id": text(row, 0),
        "first_name": text(row, 1),
        "second_name": text(row, 2),
        "birthdate": text(row, 3),
        "gender": optional(4),
        "biography": optional(5),
        "city": optional(6),
        "status": status_name(status),
        "user_status": status,
        "status_reason": optional(8),
    })))
}
