//! `/`: sagas by status and definition, started and ended per minute over the last half
//! hour, and the sagas that are stuck — no progress for longer than the threshold (`?stuck=`
//! seconds, default 60), parked longest first, and those whose compensation is failing —
//! and, when services are bound to HTTP URLs, each endpoint's circuit and counters.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;
use sagaflow_engine::core::{CircuitState, SagaFilter, SagaState, Status};
use serde::Deserialize;

use super::{layout, status_badge, took, when};
use crate::extract::ApiQuery;
use crate::ApiState;

/// The overview's query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct OverviewQuery {
    /// No progress for this many seconds makes a saga stuck (default 60).
    stuck: Option<u64>,
}

const MINUTES: i64 = 30;

pub(crate) async fn page(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<OverviewQuery>,
) -> Response {
    let engine = &state.engine;
    let now = engine.now();
    let stuck_after_ms = q.stuck.unwrap_or(60).min(30 * 86_400) as i64 * 1000;
    let stats = match engine.store().stats(now).await {
        Ok(s) => s,
        Err(e) => return super::failure(e),
    };
    let since = now - MINUTES * 60_000;
    let activity = match engine.store().activity(since, 60_000).await {
        Ok(a) => a,
        Err(e) => return super::failure(e),
    };
    // Stuck: unfinished and untouched for longer than the threshold, longest first.
    let stuck = match engine.store().stale(now - stuck_after_ms, 50).await {
        Ok(s) => s,
        Err(e) => return super::failure(e),
    };
    let failing = match engine
        .list(&SagaFilter {
            status: Some(Status::Failed),
            limit: 50,
            ..SagaFilter::default()
        })
        .await
    {
        Ok(f) => f,
        Err(e) => return super::failure(e),
    };
    // Compensations retrying right now: compensating sagas whose last attempt failed.
    let compensating: Vec<SagaState> = match engine
        .list(&SagaFilter {
            status: Some(Status::Compensating),
            limit: 200,
            ..SagaFilter::default()
        })
        .await
    {
        Ok(list) => list
            .into_iter()
            .filter(|s| s.failure.is_some() || s.retry.is_some())
            .collect(),
        Err(e) => return super::failure(e),
    };
    let mut by_status: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, status, n) in &stats.sagas {
        *by_status.entry(status.as_str()).or_default() += n;
    }
    let mut defs: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for (def, status, n) in &stats.sagas {
        *defs
            .entry(def.as_str())
            .or_default()
            .entry(status.as_str())
            .or_default() += n;
    }
    let statuses = [
        "running",
        "waiting",
        "compensating",
        "completed",
        "compensated",
        "failed",
    ];
    let endpoints = engine.transport().endpoints();
    let (started, ended) = per_minute(&activity, since);
    let chart = chart(&started, &ended);

    let body = html! {
        section aria-labelledby="by-status" {
            h2 id="by-status" { "Sagas by status" }
            div.cards {
                @for s in statuses {
                    a.card href={"/ui/sagas?status=" (s)} {
                        span.n { (by_status.get(s).copied().unwrap_or(0)) }
                        (status_badge(s))
                    }
                }
                div.card { span.n { (stats.dead_letters) } a href="/ui/dead-letters" { "dead letters" } }
            }
        }
        section aria-labelledby="stuck" {
            h2 id="stuck" { "Stuck sagas (no progress for over " (took(stuck_after_ms)) ")" }
            form.filters method="get" action="/" {
                label { "No progress for (seconds)" input type="number" name="stuck" min="1" value=(stuck_after_ms / 1000); }
                button type="submit" { "Show" }
            }
            @if stuck.is_empty() {
                p.muted { "None." }
            } @else {
                table {
                    thead { tr { th { "Saga" } th { "Definition" } th { "Status" } th { "Waiting on" } th { "No progress for" } } }
                    tbody {
                        @for s in stuck.iter().take(50) {
                            tr {
                                td { a href={"/ui/sagas/" (super::seg(&s.saga_id.0))} { code { (s.saga_id.0) } } }
                                td { (s.definition) " v" (s.version) }
                                td { (status_badge(s.status.as_str())) }
                                td { (waiting_on(s)) }
                                td { (took(now - s.updated_at)) }
                            }
                        }
                    }
                }
            }
            h2 { "Compensations failing" }
            @if failing.is_empty() && compensating.is_empty() {
                p.muted { "None." }
            } @else {
                ul {
                    @for s in failing.iter().chain(compensating.iter()) {
                        li {
                            a href={"/ui/sagas/" (super::seg(&s.saga_id.0))} { code { (s.saga_id.0) } }
                            " " (s.definition) " — " (s.reason.clone().unwrap_or_default())
                        }
                    }
                }
            }
        }
        @if !endpoints.is_empty() {
            section aria-labelledby="participants" {
                h2 id="participants" { "HTTP participants" }
                table {
                    thead { tr { th { "Service" } th { "URL" } th { "Circuit" } th { "In flight" } th { "Calls" } th { "Failures" } th { "Failing in a row" } th { "Last error" } } }
                    tbody {
                        @for e in &endpoints {
                            tr {
                                td { (e.service) }
                                td { code { (e.url) } }
                                td { (circuit_badge(e.circuit)) }
                                td { (e.in_flight) " / " (e.max_in_flight) }
                                td { (e.calls) }
                                td { (e.failures) }
                                td { (e.consecutive_failures) }
                                td { (e.last_error.clone().unwrap_or_default()) }
                            }
                        }
                    }
                }
                p.hint { "An open circuit holds the service's commands in the outbox until a probe call succeeds; " a href="/api/v1/participants" { "as JSON" } "." }
            }
        }
        section aria-labelledby="per-minute" {
            h2 id="per-minute" { "Started and ended per minute (last " (MINUTES) " minutes)" }
            (super::raw(chart))
            p.legend { span { i style="background:#0b57d0" {} "started" } span { i style="background:#2da44e" {} "ended" } }
        }
        section aria-labelledby="by-definition" {
            h2 id="by-definition" { "By definition" }
            table {
                thead { tr { th { "Definition" } @for s in statuses { th { (s) } } } }
                tbody {
                    @for (def, counts) in &defs {
                        tr {
                            td { a href={"/ui/sagas?definition=" (super::seg(def))} { (def) } }
                            @for s in statuses { td { (counts.get(s).copied().unwrap_or(0)) } }
                        }
                    }
                }
            }
            p.hint { "As of " (when(now)) "." }
        }
    };
    layout("Overview", "/", None, body).into_response()
}

/// A circuit's state as a badge: closed reads as healthy, open as failing.
fn circuit_badge(circuit: CircuitState) -> maud::Markup {
    let class = match circuit {
        CircuitState::Closed => "completed",
        CircuitState::HalfOpen => "compensating",
        CircuitState::Open => "failed",
    };
    html! { span class={"badge " (class)} { (circuit.as_str()) } }
}

/// What a saga waits on, in words.
fn waiting_on(s: &SagaState) -> String {
    if let Some(p) = &s.parked {
        return format!(
            "signal {}",
            p.signal.clone().unwrap_or_else(|| "(any)".into())
        );
    }
    if let Some(f) = &s.in_flight {
        return format!("step {} attempt {}", f.step, f.attempt);
    }
    if s.retry.is_some() {
        return "a retry".into();
    }
    s.reason.clone().unwrap_or_else(|| "—".into())
}

/// Sagas started and ended in each of the last minutes, oldest first.
fn per_minute(activity: &[(i64, u64, u64)], since: i64) -> (Vec<u64>, Vec<u64>) {
    let mut started = vec![0u64; MINUTES as usize];
    let mut ended = vec![0u64; MINUTES as usize];
    for (at, s, e) in activity {
        let i = ((at - since) / 60_000) as usize;
        if i < started.len() {
            started[i] += s;
            ended[i] += e;
        }
    }
    (started, ended)
}

fn chart(started: &[u64], ended: &[u64]) -> String {
    let max = started
        .iter()
        .chain(ended)
        .copied()
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let (w, h) = (900.0, 120.0);
    let bw = w / started.len().max(1) as f64;
    let mut svg = format!(
        r#"<svg class="timeline" role="img" aria-label="Sagas started and ended per minute, peak {max}" viewBox="0 0 {w} {vh}" xmlns="http://www.w3.org/2000/svg">"#,
        vh = h + 20.0
    );
    for (i, (s, e)) in started.iter().zip(ended).enumerate() {
        let x = i as f64 * bw;
        let hs = *s as f64 / max * h;
        let he = *e as f64 / max * h;
        svg.push_str(&format!(
            r##"<rect x="{x:.1}" y="{ys:.1}" width="{bw2:.1}" height="{hs:.1}" fill="#0b57d0"><title>{s} started</title></rect><rect x="{xe:.1}" y="{ye:.1}" width="{bw2:.1}" height="{he:.1}" fill="#2da44e"><title>{e} ended</title></rect>"##,
            ys = h - hs,
            bw2 = bw / 2.0 - 1.0,
            xe = x + bw / 2.0,
            ye = h - he,
        ));
    }
    svg.push_str(&format!(
        r#"<text x="0" y="{ty}">-{MINUTES} min</text><text x="{w}" y="{ty}" text-anchor="end">now (peak {max})</text></svg>"#,
        ty = h + 16.0
    ));
    svg
}
