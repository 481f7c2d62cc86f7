//! `/ui/dead-letters`: each message kept with its reason, payload and attempts; replay or
//! discard one or many at once.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;

use super::{layout, redirect_with, when};
use crate::extract::ApiQuery;
use crate::ApiState;

/// Dead letters on one page.
const PAGE: usize = 100;

/// The page's query: a message carried back from an action, and where the page starts.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct PageQuery {
    ok: Option<String>,
    msg: Option<String>,
    /// The last id of the previous page.
    after: Option<i64>,
}

pub(crate) async fn page(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Response {
    let after = query.after.unwrap_or(0).max(0);
    let letters = match state.engine.dead_letters(after, PAGE).await {
        Ok(l) => l,
        Err(e) => return super::failure(e),
    };
    let next = (letters.len() == PAGE)
        .then(|| letters.last().map(|d| d.id))
        .flatten();
    let message = super::message_from(query.ok.as_deref(), query.msg.as_deref());
    let body = html! {
        @if letters.is_empty() {
            p.muted { @if after > 0 { "No more dead letters." } @else { "No dead letters." } }
        } @else {
            form method="post" action="/ui/dead-letters/act" {
                table {
                    thead { tr { th { span.muted { "Select" } } th { "Id" } th { "When" } th { "Topic" } th { "Attempts" } th { "Reason" } th { "Payload" } } }
                    tbody {
                        @for d in &letters {
                            tr {
                                td { input type="checkbox" name="id" value=(d.id) id={"dl-" (d.id)} aria-label={"select dead letter " (d.id)}; }
                                td { label for={"dl-" (d.id)} { (d.id) } }
                                td { (when(d.created_at)) }
                                td { code { (d.topic) } }
                                td { (d.attempts) }
                                td { (d.reason) }
                                td { details { summary { "payload" } pre { (String::from_utf8_lossy(&d.body)) } } }
                            }
                        }
                    }
                }
                button type="submit" name="action" value="replay" onclick="return confirm('Replay the selected messages?')" { "Replay selected" }
                " "
                button.danger type="submit" name="action" value="discard" onclick="return confirm('Discard the selected messages for good?')" { "Discard selected" }
            }
        }
        @if after > 0 || next.is_some() {
            p {
                @if after > 0 { a href="/ui/dead-letters" { "First page" } " " }
                @if let Some(next) = next { a href={"/ui/dead-letters?after=" (next)} { "Next page" } }
            }
        }
    };
    layout("Dead letters", "/ui/dead-letters", message.as_ref(), body).into_response()
}

/// Replays or discards the selected dead letters (`id` repeated, `action`).
pub(crate) async fn act(State(state): State<ApiState>, body: axum::body::Bytes) -> Response {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let action = pairs
        .iter()
        .find(|(k, _)| k == "action")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let ids: Vec<i64> = pairs
        .iter()
        .filter(|(k, _)| k == "id")
        .filter_map(|(_, v)| v.parse().ok())
        .collect();
    if ids.is_empty() {
        return redirect_with(
            "/ui/dead-letters",
            false,
            "Select at least one dead letter.",
        );
    }
    let (mut done, mut problems) = (0, Vec::new());
    for id in &ids {
        let result = match action {
            "replay" => state.engine.replay_dead_letter(*id).await,
            "discard" => state.engine.discard_dead_letter(*id).await,
            _ => return redirect_with("/ui/dead-letters", false, "Choose replay or discard."),
        };
        match result {
            Ok(Some(_)) => done += 1,
            Ok(None) => problems.push(format!("{id}: already gone")),
            Err(e) => problems.push(format!("{id}: {e}")),
        }
    }
    let verb = if action == "replay" {
        "Replayed"
    } else {
        "Discarded"
    };
    let mut text = format!("{verb} {done} of {}.", ids.len());
    if !problems.is_empty() {
        text.push_str(&format!(" Not done: {}", problems.join("; ")));
    }
    redirect_with("/ui/dead-letters", problems.is_empty(), &text)
}
