//! Joining a saga's trace: the `traceparent` recorded when the saga started becomes the parent
//! of its decisions' and attempts' spans, when OpenTelemetry is built in (feature `otel`).

use tracing::Span;

/// Makes `span` a child of the W3C trace context `traceparent`, if there is one.
#[cfg(feature = "otel")]
pub(crate) fn join(span: &Span, traceparent: Option<&str>) {
    use opentelemetry::propagation::TextMapPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier =
        std::collections::HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let parent = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(parent);
}

/// Without OpenTelemetry the trace context only travels in the span's fields.
#[cfg(not(feature = "otel"))]
pub(crate) fn join(_span: &Span, _traceparent: Option<&str>) {}
