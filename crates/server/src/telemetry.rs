//! Logs and traces: text or JSON log lines on stderr, and OpenTelemetry spans exported over
//! OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the standard `OTEL_…` variables
//! configure the exporter).

use anyhow::{bail, Context};
use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Flushes exported spans when dropped at the end of `main`.
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("warning: flushing traces failed: {e}");
            }
        }
    }
}

/// Installs the global subscriber: the `SAGAFLOW_LOG` level filter (default `warn`), log
/// lines as `text` or `json`, and OTLP export when configured.
pub fn init(format: Option<&str>) -> anyhow::Result<Telemetry> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SAGAFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logs = match format {
        Some("json") => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
        Some("text") | None => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        Some(other) => bail!("SAGAFLOW_LOG_FORMAT = {other:?} must be text or json"),
    };
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty());
    let Some(endpoint) = endpoint else {
        tracing_subscriber::registry()
            .with(logs.with_filter(filter))
            .init();
        return Ok(Telemetry { provider: None });
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .with_context(|| {
            format!("OTEL_EXPORTER_OTLP_ENDPOINT = {endpoint:?}: cannot build the OTLP exporter")
        })?;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("sagaflow")
                .build(),
        )
        .build();
    // Spans are exported at info level and above, whatever the log filter says.
    let traces = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("sagaflow"))
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .init();
    Ok(Telemetry {
        provider: Some(provider),
    })
}
