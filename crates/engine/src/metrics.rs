//! Metrics: counters the decision loop keeps as it commits, and gauges read from the store,
//! rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use sagaflow_core::{Definition, Event, Millis, Phase, SagaState, StoreStats};

/// Histogram bucket bounds, in seconds.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bound, n) in BUCKETS.iter().zip(self.counts.iter_mut()) {
            if seconds <= *bound {
                *n += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }
}

#[derive(Debug, Default)]
struct Counters {
    started: BTreeMap<String, u64>,
    ended: BTreeMap<(String, &'static str), u64>,
    attempts: BTreeMap<(String, String, &'static str, &'static str), u64>,
    saga_seconds: BTreeMap<String, Histogram>,
    step_seconds: BTreeMap<(String, String), Histogram>,
    decisions: u64,
    conflicts: u64,
    commit_failures: u64,
}

/// A metric an application built on the engine keeps (see [`Metrics::app_metric`]).
#[derive(Debug)]
struct AppMetric {
    help: String,
    kind: &'static str,
    value: Arc<AtomicI64>,
}

/// This engine's counters since it started.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
    app: Mutex<BTreeMap<String, AppMetric>>,
}

fn outcome(event: &Event) -> Option<(usize, Phase, &'static str)> {
    Some(match event {
        Event::StepSucceeded { step, .. } => (*step, Phase::Action, "succeeded"),
        Event::AttemptFailed { step, .. } => (*step, Phase::Action, "failed"),
        Event::StepRejected { step, .. } => (*step, Phase::Action, "rejected"),
        Event::Parked { step, .. } => (*step, Phase::Action, "parked"),
        Event::AttemptTimedOut { step, phase, .. } => (*step, *phase, "timed_out"),
        Event::CompensationSucceeded { step, .. } => (*step, Phase::Compensation, "succeeded"),
        Event::CompensationFailed { step, .. } => (*step, Phase::Compensation, "failed"),
        _ => return None,
    })
}

impl Metrics {
    /// A metric of the application's own, rendered with the engine's at `/metrics`: the
    /// value to set (a gauge) or add to (a counter). `kind` is `"gauge"` or `"counter"`;
    /// asking again for the same name gives the same value.
    pub fn app_metric(&self, name: &str, help: &str, kind: &'static str) -> Arc<AtomicI64> {
        let mut app = self.app.lock().unwrap_or_else(|p| p.into_inner());
        app.entry(name.to_string())
            .or_insert_with(|| AppMetric {
                help: help.to_string(),
                kind,
                value: Arc::new(AtomicI64::new(0)),
            })
            .value
            .clone()
    }

    /// Counts one committed decision: `before` is the state it was decided on.
    pub(crate) fn committed(
        &self,
        def: &Definition,
        before: Option<&SagaState>,
        events: &[Event],
        after: &SagaState,
        now: Millis,
    ) {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        c.decisions += 1;
        let step_name = |i: usize| def.steps.get(i).map(|s| s.name.clone()).unwrap_or_default();
        for event in events {
            match event {
                Event::Started { .. } => *c.started.entry(def.name.clone()).or_default() += 1,
                Event::Ended { .. } => {
                    *c.ended
                        .entry((def.name.clone(), after.status.as_str()))
                        .or_default() += 1;
                    let seconds = (now - after.created_at).max(0) as f64 / 1000.0;
                    c.saga_seconds
                        .entry(def.name.clone())
                        .or_default()
                        .observe(seconds);
                }
                _ => {}
            }
            let Some((step, phase, what)) = outcome(event) else {
                continue;
            };
            *c.attempts
                .entry((def.name.clone(), step_name(step), phase.as_str(), what))
                .or_default() += 1;
            // Only an attempt sent in an earlier decision can be answered in this one.
            if let Some(flight) = before.and_then(|b| b.in_flight.as_ref()) {
                if flight.step == step && flight.phase == phase && flight.dispatched_at > 0 {
                    let seconds = (now - flight.dispatched_at).max(0) as f64 / 1000.0;
                    c.step_seconds
                        .entry((def.name.clone(), step_name(step)))
                        .or_default()
                        .observe(seconds);
                }
            }
        }
    }

    /// Counts a decision that lost a version race and is decided again.
    pub(crate) fn conflict(&self) {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .conflicts += 1;
    }

    /// Counts a group commit the store refused.
    pub(crate) fn commit_failed(&self) {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .commit_failures += 1;
    }

    /// Renders the counters and the store's gauges in the Prometheus text format.
    pub fn render(&self, stats: &StoreStats) -> String {
        let c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            &mut out,
            "sagaflow_sagas_started_total",
            "counter",
            "Sagas started by this engine, by definition.",
        );
        for (def, n) in &c.started {
            let _ = writeln!(
                out,
                "sagaflow_sagas_started_total{{definition=\"{}\"}} {n}",
                esc(def)
            );
        }
        head(
            &mut out,
            "sagaflow_sagas_ended_total",
            "counter",
            "Sagas this engine brought to an end, by definition and status.",
        );
        for ((def, status), n) in &c.ended {
            let _ = writeln!(
                out,
                "sagaflow_sagas_ended_total{{definition=\"{}\",status=\"{status}\"}} {n}",
                esc(def)
            );
        }
        head(&mut out, "sagaflow_step_attempts_total", "counter", "Step attempts answered, by definition, step, kind (action or compensation) and outcome.");
        for ((def, step, kind, what), n) in &c.attempts {
            let _ = writeln!(
                out,
                "sagaflow_step_attempts_total{{definition=\"{}\",step=\"{}\",kind=\"{kind}\",outcome=\"{what}\"}} {n}",
                esc(def),
                esc(step)
            );
        }
        head(
            &mut out,
            "sagaflow_saga_duration_seconds",
            "histogram",
            "From start to end of a saga, by definition.",
        );
        for (def, h) in &c.saga_seconds {
            histogram(
                &mut out,
                "sagaflow_saga_duration_seconds",
                &format!("definition=\"{}\"", esc(def)),
                h,
            );
        }
        head(
            &mut out,
            "sagaflow_step_duration_seconds",
            "histogram",
            "From sending an attempt to its answer, by definition and step.",
        );
        for ((def, step), h) in &c.step_seconds {
            let labels = format!("definition=\"{}\",step=\"{}\"", esc(def), esc(step));
            histogram(&mut out, "sagaflow_step_duration_seconds", &labels, h);
        }
        head(
            &mut out,
            "sagaflow_decisions_total",
            "counter",
            "Decisions this engine committed.",
        );
        let _ = writeln!(out, "sagaflow_decisions_total {}", c.decisions);
        head(
            &mut out,
            "sagaflow_decision_conflicts_total",
            "counter",
            "Decisions decided again because another engine moved the saga first.",
        );
        let _ = writeln!(out, "sagaflow_decision_conflicts_total {}", c.conflicts);
        head(
            &mut out,
            "sagaflow_commit_failures_total",
            "counter",
            "Group commits the store refused.",
        );
        let _ = writeln!(out, "sagaflow_commit_failures_total {}", c.commit_failures);
        head(
            &mut out,
            "sagaflow_sagas",
            "gauge",
            "Sagas in the store, by definition and status.",
        );
        for (def, status, n) in &stats.sagas {
            let _ = writeln!(
                out,
                "sagaflow_sagas{{definition=\"{}\",status=\"{}\"}} {n}",
                esc(def),
                status.as_str()
            );
        }
        head(
            &mut out,
            "sagaflow_outbox_rows",
            "gauge",
            "Commands waiting in the outbox for their reply.",
        );
        let _ = writeln!(out, "sagaflow_outbox_rows {}", stats.outbox_rows);
        head(
            &mut out,
            "sagaflow_outbox_lag_seconds",
            "gauge",
            "How long the oldest outbox row due to be published again has waited.",
        );
        let _ = writeln!(
            out,
            "sagaflow_outbox_lag_seconds {}",
            stats.outbox_lag_ms as f64 / 1000.0
        );
        head(
            &mut out,
            "sagaflow_timer_lag_seconds",
            "gauge",
            "How long the oldest due timer has waited to fire.",
        );
        let _ = writeln!(
            out,
            "sagaflow_timer_lag_seconds {}",
            stats.timer_lag_ms as f64 / 1000.0
        );
        head(
            &mut out,
            "sagaflow_dead_letters",
            "gauge",
            "Messages kept in the dead-letter store.",
        );
        let _ = writeln!(out, "sagaflow_dead_letters {}", stats.dead_letters);
        let app = self.app.lock().unwrap_or_else(|p| p.into_inner());
        for (name, m) in app.iter() {
            head(&mut out, name, m.kind, &m.help);
            let _ = writeln!(out, "{name} {}", m.value.load(Ordering::Relaxed));
        }
        out
    }
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    for (bound, n) in BUCKETS.iter().zip(h.counts.iter()) {
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

/// Escapes a label value: backslash, double quote and newline.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labels_escaped() {
        let mut h = Histogram::default();
        h.observe(0.02);
        h.observe(3.0);
        let mut out = String::new();
        histogram(&mut out, "x", "definition=\"a\"", &h);
        assert!(out.contains("x_bucket{definition=\"a\",le=\"0.025\"} 1\n"));
        assert!(out.contains("x_bucket{definition=\"a\",le=\"5\"} 2\n"));
        assert!(out.contains("x_bucket{definition=\"a\",le=\"+Inf\"} 2\n"));
        assert!(out.contains("x_count{definition=\"a\"} 2\n"));
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
