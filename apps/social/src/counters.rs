//! The counters service: each user's unread count per dialog, in its own tables
//! (`social_counters_unread`, and `social_counters_ops`, which remembers every change it
//! applied so a retried or late command has no second effect).
//!
//! Sagas ask it to `increment` (a message was sent), to `undo_increment` (that send is being
//! compensated) and to `decrement` (messages were read). A change commits in the database
//! first and then goes to the [cache](crate::cache) with the row's new version; reads are
//! served from the cache, filled from the database on a miss.
//!
//! A counter the database refuses to raise (a constraint, e.g. a cap on unread messages)
//! is a business "no": the increment is rejected and the send compensated.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use sagaflow_api::{Problem, Right};
use sagaflow_app_kit::http::{bad_request, store_problem};
use sagaflow_app_kit::sql::{in_tx, int, read, text};
use sagaflow_core::{Outcome, ParticipantTx, SqlValue, Store, StoreError};
use sagaflow_engine::{async_trait, CommandCall, Participant, TxHandler};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::cache::{Counter, UnreadCache};
use crate::SocialState;

/// The service's name.
pub const SERVICE: &str = "social-counters";

/// The dialog between two users: both ids, in order, joined by `:`.
pub fn dialog_id(a: &str, b: &str) -> String {
    if a <= b {
        format!("{a}:{b}")
    } else {
        format!("{b}:{a}")
    }
}

/// The other member of a dialog; `None` when `user` is not in it.
pub fn partner_in(dialog: &str, user: &str) -> Option<String> {
    let (a, b) = dialog.split_once(':')?;
    if a == user {
        Some(b.to_string())
    } else if b == user {
        Some(a.to_string())
    } else {
        None
    }
}

const UPSERT_ADD: &str = "INSERT INTO social_counters_unread (user_id, dialog_id, partner_id, unread, version) VALUES ($1, $2, $3, $4, 1) \
     ON CONFLICT (user_id, dialog_id) DO UPDATE SET unread = social_counters_unread.unread + $4, version = social_counters_unread.version + 1";

const SUBTRACT: &str = "UPDATE social_counters_unread SET unread = CASE WHEN unread > $3 THEN unread - $3 ELSE 0 END, version = version + 1 \
     WHERE user_id = $1 AND dialog_id = $2";

const SET: &str = "INSERT INTO social_counters_unread (user_id, dialog_id, partner_id, unread, version) VALUES ($1, $2, $3, $4, 1) \
     ON CONFLICT (user_id, dialog_id) DO UPDATE SET unread = $4, version = social_counters_unread.version + 1";

/// A counter as it is now, in the transaction.
pub async fn current(
    tx: &mut dyn ParticipantTx,
    user: &str,
    dialog: &str,
) -> Result<Option<Counter>, StoreError> {
    let rows = tx
        .query(
            "SELECT dialog_id, partner_id, unread, version FROM social_counters_unread WHERE user_id = $1 AND dialog_id = $2",
            &[user.into(), dialog.into()],
        )
        .await?;
    Ok(rows.first().map(|r| counter_of(r, 0)))
}

fn counter_of(row: &[SqlValue], at: usize) -> Counter {
    Counter {
        dialog_id: text(row, at),
        partner_id: text(row, at + 1),
        unread: int(row, at + 2),
        version: int(row, at + 3),
    }
}

/// Adds `by` to a counter, creating it; `Ok(Err(reason))` when the database refuses (a
/// constraint), leaving the transaction usable.
pub async fn add(
    tx: &mut dyn ParticipantTx,
    user: &str,
    dialog: &str,
    partner: &str,
    by: i64,
) -> Result<Result<Counter, String>, StoreError> {
    tx.execute("SAVEPOINT social_counter_add", &[]).await?;
    let added = tx
        .execute(
            UPSERT_ADD,
            &[user.into(), dialog.into(), partner.into(), by.into()],
        )
        .await;
    match added {
        Ok(_) => {
            tx.execute("RELEASE SAVEPOINT social_counter_add", &[])
                .await?;
        }
        Err(StoreError::Constraint(why)) => {
            tx.execute("ROLLBACK TO SAVEPOINT social_counter_add", &[])
                .await?;
            return Ok(Err(why));
        }
        Err(e) => return Err(e),
    }
    Ok(Ok(current(tx, user, dialog).await?.unwrap_or_default()))
}

/// An operation this service applied or undid: `None` when it never saw it.
async fn op_state(tx: &mut dyn ParticipantTx, op: &str) -> Result<Option<String>, StoreError> {
    let rows = tx
        .query(
            "SELECT state FROM social_counters_ops WHERE op_id = $1",
            &[op.into()],
        )
        .await?;
    Ok(rows.first().map(|r| text(r, 0)))
}

/// Claims an operation in `state`: true when this transaction is the first to, so only it
/// applies the change. Two attempts of one step running at once (a timed-out attempt and its
/// successor) both try; the database lets one row in, the other waits and finds it.
async fn claim_op(tx: &mut dyn ParticipantTx, op: &str, state: &str) -> Result<bool, StoreError> {
    let inserted = tx
        .execute(
            "INSERT INTO social_counters_ops (op_id, state) VALUES ($1, $2) ON CONFLICT (op_id) DO NOTHING",
            &[op.into(), state.into()],
        )
        .await?;
    Ok(inserted > 0)
}

/// What a handler tells the cache: the counter after the change.
fn output(counter: Option<Counter>, user: &str) -> Value {
    match counter {
        Some(c) => json!({ "counter": {
            "user_id": user, "dialog_id": c.dialog_id, "partner_id": c.partner_id,
            "unread": c.unread, "version": c.version,
        }}),
        None => json!({}),
    }
}

/// The counter a handler's output carries, for the cache.
fn counter_in(outcome: &Outcome) -> Option<(String, Counter)> {
    let Outcome::Succeeded { output } = outcome else {
        return None;
    };
    let c = &output["counter"];
    Some((
        c["user_id"].as_str()?.to_string(),
        Counter {
            dialog_id: c["dialog_id"].as_str()?.to_string(),
            partner_id: c["partner_id"].as_str()?.to_string(),
            unread: c["unread"].as_i64()?,
            version: c["version"].as_i64()?,
        },
    ))
}

/// The message a send saga is about.
struct Sent {
    op: String,
    recipient: String,
    sender: String,
    dialog: String,
}

fn sent(call: &CommandCall) -> Sent {
    let c = &call.context;
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    Sent {
        op: format!("msg:{}", s("message_id")),
        recipient: s("recipient_id"),
        sender: s("sender_id"),
        dialog: s("dialog_id"),
    }
}

/// Writes the changed counter to the cache once the change committed.
struct CacheAfter<H> {
    cache: UnreadCache,
    handler: H,
}

#[async_trait]
impl<H: TxHandler> TxHandler for CacheAfter<H> {
    async fn handle(
        &self,
        call: &CommandCall,
        tx: &mut dyn ParticipantTx,
    ) -> Result<Outcome, StoreError> {
        self.handler.handle(call, tx).await
    }

    async fn after_commit(&self, _call: &CommandCall, outcome: &Outcome) {
        if let Some((user, counter)) = counter_in(outcome) {
            self.cache.merge(&user, &[counter], false).await;
        }
    }
}

/// A message was sent: one more unread for its recipient, once per message.
struct Increment;

#[async_trait]
impl TxHandler for Increment {
    async fn handle(
        &self,
        call: &CommandCall,
        tx: &mut dyn ParticipantTx,
    ) -> Result<Outcome, StoreError> {
        let m = sent(call);
        if !claim_op(tx, &m.op, "applied").await? {
            return Ok(match op_state(tx, &m.op).await?.as_deref() {
                Some("applied") => {
                    let c = current(tx, &m.recipient, &m.dialog).await?;
                    Outcome::ok(output(c, &m.recipient))
                }
                // The send was compensated before this (late) attempt arrived.
                _ => Outcome::rejected("this send was already undone"),
            });
        }
        match add(tx, &m.recipient, &m.dialog, &m.sender, 1).await? {
            Ok(c) => Ok(Outcome::ok(output(Some(c), &m.recipient))),
            Err(why) => {
                // Refused: the claim goes too (the savepoint kept the transaction usable).
                tx.execute(
                    "DELETE FROM social_counters_ops WHERE op_id = $1",
                    &[m.op.as_str().into()],
                )
                .await?;
                Ok(Outcome::rejected(format!(
                    "the unread counter refused the increment: {why}"
                )))
            }
        }
    }
}

/// Compensates an increment: one unread less if it was applied; a mark so a late increment
/// does nothing.
struct UndoIncrement;

#[async_trait]
impl TxHandler for UndoIncrement {
    async fn handle(
        &self,
        call: &CommandCall,
        tx: &mut dyn ParticipantTx,
    ) -> Result<Outcome, StoreError> {
        let m = sent(call);
        // A mark first, so a late increment does nothing; then take back an applied one,
        // once (only the transaction whose update matched 'applied' subtracts).
        let nothing_to_take_back = claim_op(tx, &m.op, "undone").await?
            || tx
                .execute(
                    "UPDATE social_counters_ops SET state = 'undone' WHERE op_id = $1 AND state = 'applied'",
                    &[m.op.as_str().into()],
                )
                .await?
                == 0;
        if nothing_to_take_back {
            // Never applied (a tombstone now), or undone already.
            return Ok(Outcome::ok(json!({})));
        }
        tx.execute(
            SUBTRACT,
            &[
                m.recipient.as_str().into(),
                m.dialog.as_str().into(),
                1i64.into(),
            ],
        )
        .await?;
        let c = current(tx, &m.recipient, &m.dialog).await?;
        Ok(Outcome::ok(output(c, &m.recipient)))
    }
}

/// Messages were read: that many unread fewer, once per read saga.
struct Decrement;

#[async_trait]
impl TxHandler for Decrement {
    async fn handle(
        &self,
        call: &CommandCall,
        tx: &mut dyn ParticipantTx,
    ) -> Result<Outcome, StoreError> {
        let c = &call.context;
        let user = c["reader_id"].as_str().unwrap_or_default().to_string();
        let dialog = c["dialog_id"].as_str().unwrap_or_default().to_string();
        let count = c["read_count"].as_i64().unwrap_or(0).max(0);
        let op = format!("read:{}", call.saga_id);
        if claim_op(tx, &op, "applied").await? {
            tx.execute(
                SUBTRACT,
                &[user.as_str().into(), dialog.as_str().into(), count.into()],
            )
            .await?;
        }
        let counter = current(tx, &user, &dialog).await?;
        Ok(Outcome::ok(output(counter, &user)))
    }
}

/// The counters service's saga handlers.
pub fn participant(cache: &UnreadCache) -> Participant {
    fn cached<H: TxHandler>(cache: &UnreadCache, handler: H) -> CacheAfter<H> {
        CacheAfter {
            cache: cache.clone(),
            handler,
        }
    }
    Participant::new(SERVICE)
        .on_tx("increment", cached(cache, Increment))
        .on_tx("undo_increment", cached(cache, UndoIncrement))
        .on_tx("decrement", cached(cache, Decrement))
}

/// A user's counters, from the cache, or from the database (filling the cache) on a miss.
pub async fn counters_of(
    store: &Arc<dyn Store>,
    cache: &UnreadCache,
    user: &str,
) -> Result<Vec<Counter>, StoreError> {
    if let Some(hit) = cache.get(user).await {
        return Ok(hit);
    }
    let rows = read(
        store,
        "SELECT dialog_id, partner_id, unread, version FROM social_counters_unread WHERE user_id = $1",
        &[user.into()],
    )
    .await?;
    let counters: Vec<Counter> = rows.iter().map(|r| counter_of(r, 0)).collect();
    cache.merge(user, &counters, true).await;
    Ok(counters)
}

/// `GET /counters/{userId}`: the user's unread messages, in total and per dialog.
pub async fn get(
    State(state): State<SocialState>,
    Path(user): Path<String>,
) -> Result<Json<Value>, Problem> {
    let mut counters = counters_of(&state.store, &state.config.cache, &user)
        .await
        .map_err(store_problem)?;
    counters.sort_by(|a, b| a.dialog_id.cmp(&b.dialog_id));
    let total: i64 = counters.iter().map(|c| c.unread).sum();
    let dialogs: Vec<Value> = counters
        .into_iter()
        .map(
            |c| json!({ "dialog_id": c.dialog_id, "partner_id": c.partner_id, "unread": c.unread }),
        )
        .collect();
    Ok(Json(
        json!({ "user_id": user, "total": total, "dialogs": dialogs }),
    ))
}

#[derive(Debug, Deserialize)]
struct ForUser {
    user_id: Option<String>,
}

/// The user a counter request is for, who must be a member of the dialog.
fn member(dialog: &str, bytes: &Bytes) -> Result<(String, String), Problem> {
    let body: ForUser =
        sagaflow_api::parse_json(bytes).map_err(|p| bad_request(&p.code, p.detail))?;
    let user = body
        .user_id
        .filter(|u| !u.is_empty())
        .ok_or_else(|| bad_request("missing_field", "user_id is required"))?;
    let partner = partner_in(dialog, &user).ok_or_else(|| {
        bad_request(
            "not_a_member",
            format!("user {user} is not in dialog {dialog} (a dialog id is `USER:USER`)"),
        )
    })?;
    Ok((user, partner))
}

async fn change(
    state: &SocialState,
    headers: &HeaderMap,
    dialog: String,
    bytes: Bytes,
    reset: bool,
) -> Result<Json<Value>, Problem> {
    sagaflow_api::authorize(&state.api_keys, headers, Right::Operate)?;
    let (user, partner) = member(&dialog, &bytes)?;
    let (u, d) = (user.clone(), dialog.clone());
    let changed = in_tx(&state.store, move |tx| {
        Box::pin(async move {
            if reset {
                tx.execute(
                    SET,
                    &[
                        u.as_str().into(),
                        d.as_str().into(),
                        partner.into(),
                        0i64.into(),
                    ],
                )
                .await?;
                Ok(Ok(current(tx, &u, &d).await?.unwrap_or_default()))
            } else {
                add(tx, &u, &d, &partner, 1).await
            }
        })
    })
    .await
    .map_err(store_problem)?;
    let counter = changed.map_err(|why| {
        Problem::new(
            StatusCode::CONFLICT,
            "counter_refused",
            format!("the database refused the increment: {why}"),
        )
    })?;
    state
        .config
        .cache
        .merge(&user, std::slice::from_ref(&counter), false)
        .await;
    Ok(Json(json!({
        "user_id": user, "dialog_id": counter.dialog_id, "unread": counter.unread,
    })))
}

/// `POST /counters/{dialogId}/increment` `{user_id}` (internal, API key): one more unread.
pub async fn increment(
    State(state): State<SocialState>,
    Path(dialog): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, Problem> {
    change(&state, &headers, dialog, bytes, false).await
}

/// `POST /counters/{dialogId}/reset` `{user_id}` (internal, API key): no unread.
pub async fn reset(
    State(state): State<SocialState>,
    Path(dialog): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, Problem> {
    change(&state, &headers, dialog, bytes, true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dialog_is_the_same_from_both_sides() {
        assert_eq!(dialog_id("b", "a"), dialog_id("a", "b"));
        assert_eq!(partner_in(&dialog_id("a", "b"), "a").as_deref(), Some("b"));
        assert_eq!(partner_in(&dialog_id("a", "b"), "b").as_deref(), Some("a"));
        assert_eq!(partner_in(&dialog_id("a", "b"), "c"), None);
    }
}
