//! OpenTelemetry export of the server's tracing spans (feature `otel`).
//!
//! The server and the engine record `tracing` spans whether or not this feature is built:
//! `http_request` per routed request (method, route, status), `ask` per ask, and inside it
//! the stages `retrieve`, `prompt`, `prefill`, `decode`, `attribute` and `sign`. This module
//! turns them into OpenTelemetry spans: [`Telemetry::otlp`] sends them over OTLP/HTTP
//! (protobuf) to a collector, [`Telemetry::with_exporter`] to any `opentelemetry_sdk`
//! exporter. Add [`Telemetry::layer`] to the application's `tracing_subscriber` registry.
//!
//! ```no_run
//! use tracing_subscriber::layer::SubscriberExt;
//! use tracing_subscriber::util::SubscriberInitExt;
//!
//! let telemetry = tribute_server::telemetry::Telemetry::otlp(None)?;
//! tracing_subscriber::registry().with(telemetry.layer()).init();
//! // ... serve; then, before exiting, export what is buffered:
//! telemetry.shutdown()?;
//! # Ok::<(), tribute_server::Error>(())
//! ```

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter};
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use crate::error::{Error, Result};

/// The service name spans are exported under (OpenTelemetry's `service.name`), unless
/// `OTEL_SERVICE_NAME` says otherwise.
pub const SERVICE_NAME: &str = "tribute-server";

/// An OpenTelemetry tracer provider that exports the spans it is given; dropping it
/// without [`Telemetry::shutdown`] may lose the spans still buffered.
#[derive(Debug, Clone)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports over OTLP/HTTP with protobuf bodies, in batches from a background thread.
    /// `endpoint` is the collector's traces URL (e.g. `http://127.0.0.1:4318/v1/traces`);
    /// `None` takes `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// or the OTLP default `http://localhost:4318/v1/traces`.
    pub fn otlp(endpoint: Option<&str>) -> Result<Self> {
        let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http();
        if let Some(url) = endpoint {
            builder = builder.with_endpoint(url);
        }
        let exporter = builder
            .build()
            .map_err(|e| Error::Telemetry(e.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource())
            .build();
        Ok(Telemetry { provider })
    }

    /// Exports to `exporter` as each span ends (synchronously, on the thread that ends it):
    /// for tests and for exporters that buffer themselves.
    pub fn with_exporter<E: SpanExporter + 'static>(exporter: E) -> Self {
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter)
            .with_resource(resource())
            .build();
        Telemetry { provider }
    }

    /// A `tracing_subscriber` layer that turns every span into an OpenTelemetry span
    /// (the `tracing` parent becomes the OpenTelemetry parent; fields become attributes).
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer(SERVICE_NAME))
    }

    /// Exports every span ended so far.
    pub fn flush(&self) -> Result<()> {
        self.provider
            .force_flush()
            .map_err(|e| Error::Telemetry(e.to_string()))
    }

    /// Exports what is buffered and stops exporting.
    pub fn shutdown(&self) -> Result<()> {
        self.provider
            .shutdown()
            .map_err(|e| Error::Telemetry(e.to_string()))
    }
}

fn resource() -> Resource {
    let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| SERVICE_NAME.to_owned());
    Resource::builder().with_service_name(name).build()
}
