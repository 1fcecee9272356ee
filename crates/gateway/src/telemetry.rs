//! Logs and traces. Logs go through `tracing` (JSON in production, text in
//! development); traces are exported over OTLP/HTTP when `telemetry.otlp_endpoint`
//! is set, with W3C trace context carried between nodes so one send is one trace from
//! the sender's node to every recipient's node.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::Settings;

/// Keeps the trace exporter alive; flushes pending spans when dropped.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the log subscriber and, when configured, the OTLP trace exporter.
pub fn init(settings: &Settings, node_id: &str) -> anyhow::Result<Telemetry> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.log.level));
    let fmt = tracing_subscriber::fmt::layer().with_ansi(std::io::stdout().is_terminal());
    let fmt: Box<dyn Layer<_> + Send + Sync> = if settings.log.format == "json" {
        Box::new(fmt.json())
    } else {
        Box::new(fmt)
    };
    let endpoint = settings.telemetry.otlp_endpoint.trim_end_matches('/');
    let provider = if endpoint.is_empty() {
        None
    } else {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{endpoint}/v1/traces"))
            .build()?;
        let resource = Resource::builder()
            .with_service_name(settings.telemetry.service_name.clone())
            .with_attribute(KeyValue::new("service.instance.id", node_id.to_string()))
            .build();
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build(),
        )
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("chat-gateway"))
            // Request spans only: a connection's span lives for hours and would make
            // every send a child of it.
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.target().starts_with("chat") && meta.name() != "conn"
            }))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()?;
    Ok(Telemetry { provider })
}

/// The W3C `traceparent` of a span, when it is being traced.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the remote span named by `traceparent`.
pub fn set_remote_parent(span: &tracing::Span, traceparent: &str) {
    let mut carrier: HashMap<String, String> = HashMap::new();
    carrier.insert("traceparent".into(), traceparent.to_string());
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}
