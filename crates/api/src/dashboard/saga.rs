//! `/ui/sagas/{id}`: one saga — status, context, the timeline, the context before and after
//! each step, the journal, the trace id — and the operator actions that apply now (cancel,
//! resume, signal), each confirmed first, each answered with what the engine said.

use axum::extract::{Form, State};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use sagaflow_engine::core::{fold, history, Event, Phase, SagaId, SagaState, Status, StepKind};
use sagaflow_engine::SignalTarget;
use serde::Deserialize;
use serde_json::Value;

use super::{layout, message_from, pretty, redirect_with, status_badge, timeline, when};
use crate::extract::{ApiPath, ApiQuery};
use crate::ApiState;

/// A message carried back from an action.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub(crate) struct Flash {
    ok: Option<String>,
    msg: Option<String>,
}

impl Flash {
    /// The message, if any.
    pub(crate) fn message(&self) -> Option<super::Message> {
        message_from(self.ok.as_deref(), self.msg.as_deref())
    }
}

/// The trace id of a W3C traceparent (`00-TRACEID-SPANID-FLAGS`).
fn trace_id(traceparent: &str) -> Option<&str> {
    traceparent.split('-').nth(1).filter(|t| t.len() == 32)
}

/// One top-level key a step changed: (key, before, after) — before `None` when added,
/// after `None` when removed.
type Change = (String, Option<Value>, Option<Value>);

/// The top-level keys a step changed.
fn diff(before: &Value, after: &Value) -> Vec<Change> {
    let (Some(b), Some(a)) = (before.as_object(), after.as_object()) else {
        return if before == after {
            vec![]
        } else {
            vec![(
                "(context)".into(),
                Some(before.clone()),
                Some(after.clone()),
            )]
        };
    };
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            Some(old) if old == v => {}
            old => out.push((k.clone(), old.cloned(), Some(v.clone()))),
        }
    }
    for (k, v) in b {
        if !a.contains_key(k) {
            out.push((k.clone(), Some(v.clone()), None));
        }
    }
    out
}

fn actions(s: &SagaState, id: &str) -> Markup {
    let cancellable = matches!(s.status, Status::Running | Status::Waiting) && !s.pivot_passed;
    let resumable = matches!(s.status, Status::Waiting | Status::Failed);
    let signalable = s.status == Status::Waiting;
    html! {
        @if !(cancellable || resumable || signalable) {
            p.muted { "No action applies to a saga that is " (s.status.as_str()) (if s.pivot_passed && !s.status.is_end() { " past its pivot" } else { "" }) "." }
        }
        @if cancellable {
            form.action method="post" action={"/ui/sagas/" (super::seg(id)) "/cancel"}
                onsubmit="return confirm('Cancel this saga? Its done steps will be compensated.')" {
                label { "Reason" input name="reason" value="cancelled from the dashboard"; }
                button.danger type="submit" { "Cancel saga" }
            }
        }
        @if resumable {
            form.action method="post" action={"/ui/sagas/" (super::seg(id)) "/resume"}
                onsubmit="return confirm('Resume this saga now?')" {
                button type="submit" { "Resume" }
            }
        }
        @if signalable {
            form.action method="post" action={"/ui/sagas/" (super::seg(id)) "/signal"}
                onsubmit="return confirm('Send this signal to the saga?')" {
                label { "Signal" input name="name" required value=(s.parked.as_ref().and_then(|p| p.signal.clone()).unwrap_or_default()); }
                label { "Payload (JSON)" input name="payload" value="{}"; }
                button type="submit" { "Send signal" }
            }
        }
    }
}

pub(crate) async fn page(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(flash): ApiQuery<Flash>,
) -> Response {
    let saga_id = SagaId(id.clone());
    let s = match state.engine.saga(&saga_id).await {
        Ok(Some(s)) => s,
        Ok(None) => return super::not_found(&format!("No saga {id}.")),
        Err(e) => return super::failure(e),
    };
    let journal = match state.engine.journal(&saga_id).await {
        Ok(j) => j,
        Err(e) => return super::failure(e),
    };
    let def = match state.engine.registry().get(&s.definition, Some(s.version)) {
        Ok(d) => d,
        Err(e) => return super::failure(e),
    };
    let attempts = history(&def, &journal);
    let end = s.ended_at.unwrap_or_else(|| state.engine.now());
    let svg = timeline::saga(&def, &attempts, s.created_at, end.max(s.updated_at));
    // The context before and after each step that changed it: fold the journal.
    let mut changes: Vec<(String, Vec<Change>)> = Vec::new();
    let mut folded = fold(saga_id.clone(), &def, std::iter::empty());
    for entry in &journal {
        let before = folded.context.clone();
        folded = sagaflow_engine::core::evolve(folded, &def, &entry.event, entry.at);
        if let Event::StepSucceeded { step, .. } = &entry.event {
            let d = diff(&before, &folded.context);
            let name = def
                .steps
                .get(*step)
                .map(|st| st.name.clone())
                .unwrap_or_default();
            changes.push((name, d));
        }
    }
    let message = flash.message();
    let pivot = def.steps.iter().position(|st| st.kind == StepKind::Pivot);
    let compensations = attempts
        .iter()
        .filter(|a| a.kind == Phase::Compensation)
        .count();
    let body = html! {
        dl {
            dt { "Status" } dd { (status_badge(s.status.as_str())) @if let Some(r) = &s.reason { " — " (r) } }
            dt { "Definition" } dd { a href="/ui/definitions" { (s.definition) " v" (s.version) } }
            dt { "Created" } dd { (when(s.created_at)) }
            @if let Some(e) = s.ended_at { dt { "Ended" } dd { (when(e)) } }
            @if let Some(c) = &s.correlation_key { dt { "Correlation" } dd { code { (c) } } }
            @if let Some(r) = &s.request_id { dt { "Request id" } dd { code { (r) } } }
            @if let Some(tp) = &s.traceparent { dt { "Trace id" } dd { code { (trace_id(tp).unwrap_or(tp)) } } }
        }
        section aria-labelledby="actions" {
            h2 id="actions" { "Actions" }
            (actions(&s, &id))
        }
        section aria-labelledby="timeline" {
            h2 id="timeline" { "Timeline" }
            (super::raw(svg))
            p.legend {
                span { i style="background:#2da44e" {} "action succeeded" }
                span { i style="background:#d4a72c" {} "failed (retried)" }
                span { i style="background:#cf222e" {} "rejected / timed out" }
                span { i style="background:#0b57d0;opacity:.5" {} "waiting for a signal" }
                span { i style="background:#8250df" {} "compensation" }
                @if let Some(p) = pivot { span { "◆ pivot: " (def.steps[p].name) } }
            }
            p.muted { (attempts.len()) " attempts, " (compensations) " of them compensations." }
        }
        section aria-labelledby="context" {
            h2 id="context" { "Context" }
            pre { (pretty(&s.context)) }
            h2 { "What each step changed" }
            @if changes.is_empty() { p.muted { "No step has succeeded yet." } }
            @for (step, d) in &changes {
                h3 { (step) }
                @if d.is_empty() { p.muted { "Nothing changed." } }
                ul {
                    @for (k, before, after) in d {
                        li {
                            code { (k) } ": "
                            @match (before, after) {
                                (None, Some(a)) => span.diff-add { "added " code { (a.to_string()) } },
                                (Some(b), None) => span.diff-del { "removed " code { (b.to_string()) } },
                                (Some(b), Some(a)) => span.diff-chg { code { (b.to_string()) } " → " code { (a.to_string()) } },
                                (None, None) => {},
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="journal" {
            h2 id="journal" { "Journal" }
            table {
                thead { tr { th { "#" } th { "When" } th { "Event" } } }
                tbody {
                    @for e in &journal {
                        tr { td { (e.seq) } td { (when(e.at)) } td { code { (serde_json::to_string(&e.event).unwrap_or_default()) } } }
                    }
                }
            }
        }
    };
    layout(&format!("Saga {id}"), "/ui/sagas", message.as_ref(), body).into_response()
}

/// The cancel form.
#[derive(Debug, Deserialize)]
pub(crate) struct CancelForm {
    reason: Option<String>,
}

fn back(id: &str) -> String {
    format!("/ui/sagas/{}", super::seg(id))
}

fn answer(id: &str, done: Result<String, sagaflow_engine::EngineError>) -> Response {
    match done {
        Ok(text) => redirect_with(&back(id), true, &text),
        Err(e) => redirect_with(&back(id), false, &format!("The engine refused: {e}")),
    }
}

pub(crate) async fn cancel(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    Form(form): Form<CancelForm>,
) -> Response {
    let reason = form
        .reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "cancelled from the dashboard".into());
    let done = state
        .engine
        .cancel(&SagaId(id.clone()), &reason)
        .await
        .map(|s| format!("Cancel accepted: the saga is {}.", s.status.as_str()));
    answer(&id, done)
}

pub(crate) async fn resume(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> Response {
    let done = state
        .engine
        .resume(&SagaId(id.clone()))
        .await
        .map(|s| format!("Resumed: the saga is {}.", s.status.as_str()));
    answer(&id, done)
}

/// The signal form.
#[derive(Debug, Deserialize)]
pub(crate) struct SignalForm {
    name: String,
    payload: Option<String>,
}

pub(crate) async fn signal(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    Form(form): Form<SignalForm>,
) -> Response {
    let payload = match form
        .payload
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        None => Value::Object(Default::default()),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(v) => v,
            Err(e) => {
                return redirect_with(&back(&id), false, &format!("The payload is not JSON: {e}"))
            }
        },
    };
    let name = form.name.trim();
    if name.is_empty() {
        return redirect_with(&back(&id), false, "A signal needs a name.");
    }
    let done = state
        .engine
        .signal(SignalTarget::Saga(SagaId(id.clone())), name, payload)
        .await
        .map(|_| format!("Signal {name} delivered."));
    answer(&id, done)
}
