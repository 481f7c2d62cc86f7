//! Timelines drawn as SVG: a saga's (one lane per step, each attempt a bar — actions,
//! retries, timeouts, waits and compensations each their own class — and the pivot marked),
//! and a choreographed flow's (one lane per service, each handling a dot).

use std::fmt::Write;

use sagaflow_engine::core::{AttemptRecord, AttemptStatus, Definition, Phase, StepKind};
use sagaflow_engine::flow::FlowEntry;

/// Escapes text for SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const LABEL_W: f64 = 190.0;
const WIDTH: f64 = 1000.0;
const LANE_H: f64 = 30.0;

fn status_class(s: AttemptStatus) -> &'static str {
    match s {
        AttemptStatus::InFlight => "in_flight",
        AttemptStatus::Succeeded => "succeeded",
        AttemptStatus::Failed => "failed",
        AttemptStatus::Rejected => "rejected",
        AttemptStatus::TimedOut => "timed_out",
        AttemptStatus::Parked => "parked",
    }
}

/// A saga's timeline from `start` to `end` (unix ms).
pub(crate) fn saga(def: &Definition, attempts: &[AttemptRecord], start: i64, end: i64) -> String {
    let span = (end - start).max(1) as f64;
    let x = |t: i64| LABEL_W + ((t - start).max(0) as f64 / span) * (WIDTH - LABEL_W - 10.0);
    let height = LANE_H * def.steps.len() as f64 + 30.0;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="timeline" role="img" aria-labelledby="timeline-title" viewBox="0 0 {WIDTH} {height}" xmlns="http://www.w3.org/2000/svg"><title id="timeline-title">Timeline: one lane per step, one bar per attempt</title>"#
    );
    for (i, step) in def.steps.iter().enumerate() {
        let y = LANE_H * i as f64 + 6.0;
        let pivot = step.kind == StepKind::Pivot;
        let _ = write!(
            out,
            r##"<g class="lane" data-step="{name}"><line x1="0" x2="{WIDTH}" y1="{line}" y2="{line}" stroke="#d0d7de"/><text x="6" y="{ty}">{name}{mark}</text>"##,
            name = esc(&step.name),
            line = y + LANE_H - 6.0,
            ty = y + 15.0,
            mark = if pivot {
                r#" <tspan class="pivot-mark">◆ pivot</tspan>"#
            } else {
                ""
            },
        );
        for a in attempts.iter().filter(|a| a.step == i) {
            let kind = match a.kind {
                Phase::Action => "action",
                Phase::Compensation => "compensation",
            };
            let (x0, x1) = (x(a.started_at), x(a.completed_at.unwrap_or(end)));
            let w = (x1 - x0).max(4.0);
            // A compensation sits in the lower half of the lane, an action in the upper.
            let by = if a.kind == Phase::Compensation {
                y + 10.0
            } else {
                y
            };
            let what = format!(
                "{} {} attempt {}: {}{}",
                step.name,
                kind,
                a.attempt,
                status_class(a.status).replace('_', " "),
                a.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
            let _ = write!(
                out,
                r#"<rect class="bar {kind} {status}" data-attempt="{attempt}" x="{x0:.1}" y="{by:.1}" width="{w:.1}" height="10" rx="2"><title>{what}</title></rect>"#,
                status = status_class(a.status),
                attempt = a.attempt,
                what = esc(&what),
            );
        }
        out.push_str("</g>");
    }
    let _ = write!(
        out,
        r#"<text x="{LABEL_W}" y="{ty}" class="muted">0</text><text x="{rx}" y="{ty}" text-anchor="end">{total}</text></svg>"#,
        ty = height - 8.0,
        rx = WIDTH - 10.0,
        total = esc(&super::took(end - start)),
    );
    out
}

/// A flow's timeline: one lane per service, a dot per entry.
pub(crate) fn flow(entries: &[FlowEntry]) -> String {
    let mut services: Vec<&str> = Vec::new();
    for e in entries {
        if !services.contains(&e.service.as_str()) {
            services.push(&e.service);
        }
    }
    let start = entries.first().map_or(0, |e| e.at);
    let end = entries.last().map_or(1, |e| e.at).max(start + 1);
    let span = (end - start) as f64;
    let x = |t: i64| LABEL_W + ((t - start) as f64 / span) * (WIDTH - LABEL_W - 20.0);
    let height = LANE_H * services.len() as f64 + 30.0;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="timeline" role="img" aria-labelledby="flow-title" viewBox="0 0 {WIDTH} {height}" xmlns="http://www.w3.org/2000/svg"><title id="flow-title">Flow timeline: one lane per service</title>"#
    );
    for (i, service) in services.iter().enumerate() {
        let y = LANE_H * i as f64 + 6.0;
        let _ = write!(
            out,
            r##"<g class="lane" data-service="{s}"><line x1="0" x2="{WIDTH}" y1="{line}" y2="{line}" stroke="#d0d7de"/><text x="6" y="{ty}">{s}</text>"##,
            s = esc(service),
            line = y + LANE_H - 6.0,
            ty = y + 15.0,
        );
        for e in entries.iter().filter(|e| e.service == *service) {
            let what = format!(
                "{} {} (attempt {}){}",
                e.event,
                e.outcome,
                e.attempt,
                e.detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            );
            let _ = write!(
                out,
                r#"<circle class="dot {o}" cx="{cx:.1}" cy="{cy:.1}" r="6"><title>{what}</title></circle>"#,
                o = esc(&e.outcome),
                cx = x(e.at),
                cy = y + 10.0,
                what = esc(&what),
            );
        }
        out.push_str("</g>");
    }
    let _ = write!(
        out,
        r#"<text x="{rx}" y="{ty}" text-anchor="end">{total}</text></svg>"#,
        ty = height - 8.0,
        rx = WIDTH - 10.0,
        total = esc(&super::took(end - start)),
    );
    out
}
