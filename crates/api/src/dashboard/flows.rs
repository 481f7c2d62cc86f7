//! `/ui/flows`: choreographed flows (the blog's publications), the most recently active
//! first; `/ui/flows/{correlation_id}`: one flow as one timeline, lane by service.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;

use super::{layout, timeline, took, when};
use crate::extract::ApiPath;
use crate::ApiState;

pub(crate) async fn list(State(state): State<ApiState>) -> Response {
    let flows = match sagaflow_engine::flow::recent(state.engine.store(), 100).await {
        Ok(f) => f,
        Err(e) => return super::failure(e),
    };
    let body = html! {
        form.filters method="get" action="/ui/flows/go" {
            label { "Correlation id" input name="id" required; }
            button type="submit" { "Show" }
        }
        @if flows.is_empty() {
            p.muted { "No choreographed flow has been recorded yet." }
        } @else {
            table {
                thead { tr { th { "Flow (correlation id)" } th { "Began" } th { "Last activity" } th { "Entries" } th { "Dead letters" } } }
                tbody {
                    @for f in &flows {
                        tr {
                            td { a href={"/ui/flows/" (super::seg(&f.correlation_id))} { code { (f.correlation_id) } } }
                            td { (when(f.started_at)) }
                            td { (when(f.last_at)) " (" (took(f.last_at - f.started_at)) ")" }
                            td { (f.entries) }
                            td { @if f.dead_lettered { span.badge.failed { "yes" } } @else { "—" } }
                        }
                    }
                }
            }
        }
    };
    layout("Flows", "/ui/flows", None, body).into_response()
}

/// The flow search form's target.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Go {
    id: Option<String>,
}

/// `/ui/flows/go?id=…`: to that flow's page (the search form, without JavaScript).
pub(crate) async fn go(axum::extract::Query(q): axum::extract::Query<Go>) -> Response {
    match q.id.as_deref().map(str::trim).filter(|i| !i.is_empty()) {
        Some(id) => {
            axum::response::Redirect::to(&format!("/ui/flows/{}", super::seg(id))).into_response()
        }
        None => axum::response::Redirect::to("/ui/flows").into_response(),
    }
}

pub(crate) async fn page(State(state): State<ApiState>, ApiPath(id): ApiPath<String>) -> Response {
    let entries = match state.engine.flow(&id).await {
        Ok(e) => e,
        Err(e) => return super::failure(e),
    };
    if entries.is_empty() {
        return super::not_found(&format!(
            "Nothing was recorded under the correlation id {id}."
        ));
    }
    let svg = timeline::flow(&entries);
    let body = html! {
        (super::raw(svg))
        p.legend {
            span { i style="background:#0b57d0" {} "emitted" }
            span { i style="background:#2da44e" {} "handled" }
            span { i style="background:#d4a72c" {} "failed (retried)" }
            span { i style="background:#cf222e" {} "dead-lettered" }
            span { i style="background:#8250df" {} "compensated" }
            span { i style="background:#8c959f" {} "duplicate ignored" }
        }
        table {
            thead { tr { th { "When" } th { "Service" } th { "Event" } th { "Outcome" } th { "Attempt" } th { "Detail" } } }
            tbody {
                @for e in &entries {
                    tr {
                        td { (when(e.at)) }
                        td { (e.service) }
                        td { code { (e.event) } }
                        td { span class={"badge " (e.outcome)} { (e.outcome) } }
                        td { (e.attempt) }
                        td { (e.detail.clone().unwrap_or_default()) }
                    }
                }
            }
        }
    };
    layout(&format!("Flow {id}"), "/ui/flows", None, body).into_response()
}
