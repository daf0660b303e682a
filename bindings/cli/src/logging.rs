//! The process's one `tracing` subscriber: log lines on stderr and, for `tribute serve
//! --otlp`, every span exported over OpenTelemetry.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// What filters the log lines on stderr (default `warn`).
const LOG_ENV: &str = "TRIBUTE_LOG";
/// What filters the spans exported over OTLP (default `info`: every request, ask and
/// stage span of the server and the engine).
#[cfg(feature = "otel")]
const OTEL_ENV: &str = "TRIBUTE_OTEL_LOG";

/// Exports spans until [`Tracing::finish`]; without `--otlp`, nothing.
pub struct Tracing {
    #[cfg(feature = "otel")]
    telemetry: Option<tribute_server::telemetry::Telemetry>,
}

impl Tracing {
    /// Sends the spans still buffered to the collector and stops exporting. A collector
    /// that cannot be reached is reported here, after the command's own work is done.
    pub fn finish(self) -> anyhow::Result<()> {
        #[cfg(feature = "otel")]
        if let Some(t) = self.telemetry {
            use anyhow::Context as _;
            t.shutdown().context("exporting the last spans over OTLP")?;
        }
        Ok(())
    }
}

/// Installs the subscriber. `otlp`: export spans over OTLP/HTTP, to this traces URL or
/// (`Some(None)`) to the one the `OTEL_EXPORTER_OTLP_*` variables or the OTLP default name.
pub fn init(otlp: Option<Option<&str>>) -> anyhow::Result<Tracing> {
    let log_filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new("warn"));
    // Filtered per layer: a quiet stderr must not stop the spans being exported.
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(log_filter);
    let registry = tracing_subscriber::registry().with(logs);
    #[cfg(feature = "otel")]
    {
        let telemetry = match otlp {
            Some(endpoint) => Some(tribute_server::telemetry::Telemetry::otlp(endpoint)?),
            None => None,
        };
        let spans = telemetry.as_ref().map(|t| {
            let filter =
                EnvFilter::try_from_env(OTEL_ENV).unwrap_or_else(|_| EnvFilter::new("info"));
            t.layer().with_filter(filter)
        });
        registry.with(spans).init();
        Ok(Tracing { telemetry })
    }
    #[cfg(not(feature = "otel"))]
    {
        anyhow::ensure!(
            otlp.is_none(),
            "--otlp needs the `otel` feature: this tribute was built without it"
        );
        registry.init();
        Ok(Tracing {})
    }
}
