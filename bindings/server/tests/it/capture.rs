//! The test binary's one global `tracing` subscriber: everything the server, tower-http and
//! axum log (for the keys-never-logged test), every span with its parent, fields and
//! open/close times (for the stage-spans test) and, with feature `otel`, the spans exported
//! through OpenTelemetry into memory.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

use tracing::span::{Attributes, Id, Record};
use tracing::{Subscriber, field};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// What the subscriber captured.
pub struct Capture {
    /// The formatted log lines (`tribute_server=trace,tower_http=trace,axum=trace`).
    pub logs: Arc<Mutex<Vec<u8>>>,
    /// Every span, in the order they opened.
    pub spans: Arc<Mutex<Vec<SpanRecord>>>,
    /// The spans OpenTelemetry exported.
    #[cfg(feature = "otel")]
    pub exported: Arc<Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>,
}

/// One span as the recorder saw it.
#[derive(Clone, Debug)]
pub struct SpanRecord {
    /// The span's name.
    pub name: &'static str,
    /// Index of its parent in [`Capture::spans`].
    pub parent: Option<usize>,
    /// Its fields, as recorded (`Debug` text; strings plain).
    pub fields: Vec<(String, String)>,
    /// When it opened.
    pub opened: Instant,
    /// When it closed (`None`: still open).
    pub closed: Option<Instant>,
}

impl SpanRecord {
    /// A field's value.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The subscriber, installed on first use.
pub fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let fmt = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || LogSink(sink.clone()))
            .with_filter(tracing_subscriber::EnvFilter::new(
                "tribute_server=trace,tower_http=trace,axum=trace",
            ));
        let registry = tracing_subscriber::registry()
            .with(fmt)
            .with(Recorder(spans.clone()));
        #[cfg(feature = "otel")]
        {
            let exported = Arc::new(Mutex::new(Vec::new()));
            let telemetry =
                tribute_server::telemetry::Telemetry::with_exporter(InMemory(exported.clone()));
            registry
                .with(telemetry.layer())
                .try_init()
                .expect("the test binary's only subscriber");
            // Keep the provider (and so the export) for the whole run.
            std::mem::forget(telemetry);
            Capture {
                logs,
                spans,
                exported,
            }
        }
        #[cfg(not(feature = "otel"))]
        {
            registry
                .try_init()
                .expect("the test binary's only subscriber");
            Capture { logs, spans }
        }
    })
}

/// A poisoned lock only means another test panicked: the data is still good to read.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Records spans: the index into the list is kept in each span's extensions, because
/// `tracing` reuses the ids of closed spans.
struct Recorder(Arc<Mutex<Vec<SpanRecord>>>);

struct Index(usize);

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl field::Visit for Fields<'_> {
    fn record_str(&mut self, f: &field::Field, value: &str) {
        self.0.push((f.name().to_owned(), value.to_owned()));
    }

    fn record_debug(&mut self, f: &field::Field, value: &dyn std::fmt::Debug) {
        self.0.push((f.name().to_owned(), format!("{value:?}")));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let parent = span
            .parent()
            .and_then(|p| p.extensions().get::<Index>().map(|i| i.0));
        let mut fields = Vec::new();
        attrs.record(&mut Fields(&mut fields));
        let mut spans = lock(&self.0);
        spans.push(SpanRecord {
            name: attrs.metadata().name(),
            parent,
            fields,
            opened: Instant::now(),
            closed: None,
        });
        span.extensions_mut().insert(Index(spans.len() - 1));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if let Some(i) = span.extensions().get::<Index>() {
            let mut spans = lock(&self.0);
            values.record(&mut Fields(&mut spans[i.0].fields));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        if let Some(i) = span.extensions().get::<Index>() {
            lock(&self.0)[i.0].closed = Some(Instant::now());
        }
    }
}

/// An OpenTelemetry exporter that keeps the spans in memory.
#[cfg(feature = "otel")]
#[derive(Debug)]
struct InMemory(Arc<Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

#[cfg(feature = "otel")]
impl opentelemetry_sdk::trace::SpanExporter for InMemory {
    fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> impl std::future::Future<Output = opentelemetry_sdk::error::OTelSdkResult> + Send {
        lock(&self.0).extend(batch);
        std::future::ready(Ok(()))
    }
}
