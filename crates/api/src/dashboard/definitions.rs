//! `/ui/definitions`: each definition version's steps as a diagram — kind, action,
//! compensation, retry and timeout — and how many of its sagas are in flight.

use std::collections::HashMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;
use sagaflow_engine::core::StepKind;

use super::{layout, took};
use crate::ApiState;

pub(crate) async fn page(State(state): State<ApiState>) -> Response {
    let in_flight: HashMap<(String, u32), u64> =
        match state.engine.store().versions_in_flight().await {
            Ok(v) => v.into_iter().map(|(n, v, c)| ((n, v), c)).collect(),
            Err(e) => return super::failure(e),
        };
    let mut defs = state.engine.registry().all();
    defs.sort_by(|a, b| a.name.cmp(&b.name).then(b.version.cmp(&a.version)));
    let body = html! {
        p.hint { "Solid border: compensatable. Red border: the pivot. Dashed: retriable (after the pivot, never compensated)." }
        @for d in &defs {
            section aria-labelledby={"def-" (d.name) "-" (d.version)} {
                h2 id={"def-" (d.name) "-" (d.version)} { (d.name) " v" (d.version) }
                p {
                    a href={"/ui/sagas?definition=" (super::seg(&d.name))} {
                        (in_flight.get(&(d.name.clone(), d.version)).copied().unwrap_or(0)) " in flight"
                    }
                }
                ol.diagram aria-label={"steps of " (d.name) " v" (d.version)} {
                    @for (i, s) in d.steps.iter().enumerate() {
                        @if i > 0 { li.arrow aria-hidden="true" { "→" } }
                        @let kind = match s.kind { StepKind::Compensatable => "compensatable", StepKind::Pivot => "pivot", StepKind::Retriable => "retriable" };
                        li class={"step " (kind)} {
                            strong { (s.name) } br;
                            span.muted { (kind) } br;
                            code { (s.action.service) "." (s.action.name) } br;
                            @if let Some(c) = &s.compensation { "undo: " code { (c.service) "." (c.name) } br; }
                            span.muted {
                                (s.retry.max_attempts) " attempt" (if s.retry.max_attempts == 1 { "" } else { "s" })
                                @if s.retry.max_attempts > 1 { ", backoff " (took(s.retry.initial_delay_ms as i64)) " ×" (s.retry.multiplier) }
                                @if let Some(t) = s.timeout_ms { ", timeout " (took(t as i64)) }
                            }
                        }
                    }
                }
            }
        }
    };
    layout("Definitions", "/ui/definitions", None, body).into_response()
}
