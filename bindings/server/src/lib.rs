#![doc = include_str!("../README.md")]

mod auth;
mod chat;
mod error;
mod extract;
mod manage;
mod metrics;
pub mod openai;
mod routes;
#[cfg(feature = "otel")]
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument as _;
use tribute::{CancelToken, Engine};

pub use auth::{ApiKey, ApiKeys, KeyEntry, KeysFile, Scope, hash_key};
pub use error::{CLIENT_CLOSED_REQUEST, Error, Result, kind_status};

/// Limits and behaviour of the server; every field has a default.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerOptions {
    /// Largest request body in bytes (413 beyond). Default 1 MiB.
    pub max_body_bytes: usize,
    /// Asks (chat completions) running at once; more wait in the queue. Default 16 (the
    /// generator batches them).
    pub max_concurrent_asks: usize,
    /// Asks waiting for a place; a request that finds the queue full gets 429 with
    /// `Retry-After`. Default 64.
    pub max_queued_asks: usize,
    /// The `Retry-After` of a 429, in seconds. Default 1.
    pub retry_after_secs: u64,
    /// How long a streamed answer waits for a client that does not read before it is
    /// cancelled. Default 30 s.
    pub stream_send_timeout: Duration,
    /// Events of a streamed answer held for a client that does not read them yet (beyond
    /// the socket's buffers); when full, the generation waits, up to
    /// `stream_send_timeout`. Default 32.
    pub stream_buffer: usize,
    /// Most texts in one embeddings request. Default 256.
    pub max_embedding_inputs: usize,
    /// Most chunks one ask or retrieval may request (`top_k`; 400 beyond). Default 64.
    pub max_top_k: usize,
    /// The API keys accepted; none (the default): an open server, which [`serve`] allows
    /// on a loopback address only unless `allow_open` is set.
    pub keys: ApiKeys,
    /// Serve without API keys on a non-loopback address (behind a proxy that
    /// authenticates). Default false.
    pub allow_open: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_body_bytes: 1 << 20,
            max_concurrent_asks: 16,
            max_queued_asks: 64,
            retry_after_secs: 1,
            stream_send_timeout: Duration::from_secs(30),
            stream_buffer: 32,
            max_embedding_inputs: 256,
            max_top_k: 64,
            keys: ApiKeys::open(),
            allow_open: false,
        }
    }
}

/// What every request handler shares.
#[derive(Clone)]
struct AppState(Arc<Shared>);

struct Shared {
    engine: Engine,
    options: ServerOptions,
    metrics: metrics::Metrics,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    next_id: AtomicU64,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The HTTP API over `engine` as an axum router (serve it with [`serve`] or embed it in a
/// larger app).
pub fn router(engine: Engine, options: ServerOptions) -> Router {
    let state = AppState(Arc::new(Shared {
        permits: Arc::new(Semaphore::new(options.max_concurrent_asks.max(1))),
        engine,
        metrics: metrics::Metrics::default(),
        waiting: AtomicUsize::new(0),
        next_id: AtomicU64::new(1),
        options,
    }));
    let body_limit = state.options.max_body_bytes;
    Router::new()
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/models", get(routes::models))
        .route("/v1/embeddings", post(routes::embeddings))
        .route("/v1/retrieve", post(routes::retrieve))
        .route("/v1/documents", post(manage::documents))
        .route("/v1/receipts", get(routes::receipts))
        .route("/v1/receipts/settle", post(manage::settle))
        .route("/v1/receipts/{id}", get(routes::receipt))
        .route("/healthz", get(routes::healthz))
        .route("/metrics", get(routes::metrics))
        .route("/", get(routes::console))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), track))
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            routes::panic_response,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        // Outermost: the key is marked sensitive before anything can log the headers.
        .layer(
            tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer::new([
                axum::http::header::AUTHORIZATION,
            ]),
        )
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` completes, then lets requests in flight
/// finish (each ask's receipt is journaled, and synced, before its reply is sent).
///
/// Without API keys it refuses ([`Error::OpenOnPublicAddress`]) a listener that is not on
/// a loopback address, unless [`ServerOptions::allow_open`] is set.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Engine,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addr = listener.local_addr()?;
    if options.keys.is_open() && !addr.ip().is_loopback() {
        if !options.allow_open {
            return Err(Error::OpenOnPublicAddress(addr));
        }
        tracing::warn!(%addr, "serving without API keys on a non-loopback address: anyone who can reach it may ask, read every datanet and see every receipt");
    }
    // Hashing the model for the first attribution record takes seconds on a fresh machine:
    // done now, in the background, instead of inside the first answer.
    let preparing = engine.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = preparing.prepare_records() {
            tracing::warn!("could not hash the model files for attribution records yet: {e}");
        }
    });
    axum::serve(listener, router(engine, options))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Counts each routed request by route and status, with its latency (for a stream: until
/// its headers are sent).
async fn track(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let route = matched.map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    // The request's span: the parent of the engine's `ask` span and its stages (a
    // stream's ask outlives it: it ends when the headers are sent).
    let span = tracing::info_span!(
        "http_request",
        otel.name = %format_args!("{} {route}", request.method()),
        http.request.method = %request.method(),
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        http.request_id = tracing::field::Empty,
    );
    // A client's `X-Request-Id` (printable, at most 128 bytes) ties its request to the spans.
    if let Some(id) = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128)
    {
        span.record("http.request_id", id);
    }
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    let secs = started.elapsed().as_secs_f64();
    state
        .metrics
        .request(&route, response.status().as_u16(), secs);
    response
}

impl Shared {
    /// A place to run an ask: at once, after waiting in the queue, or
    /// [`Error::Overloaded`] when the queue is full.
    async fn admit(&self) -> Result<OwnedSemaphorePermit> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let max = self.options.max_queued_asks;
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= max {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            self.metrics.rejected();
            return Err(Error::Overloaded {
                in_flight: self.in_flight(),
                waiting: max,
                retry_after_secs: self.options.retry_after_secs,
            });
        }
        // Leaves the queue also when the client goes away while waiting.
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _waiting = Waiting(&self.waiting);
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::Task(e.to_string()))
    }

    /// 400 unless `top_k` is within the server's bound.
    fn check_top_k(&self, top_k: Option<usize>) -> Result<()> {
        match top_k {
            Some(k) if k > self.options.max_top_k => Err(Error::bad_request(
                format!(
                    "top_k {k} is more than this server's limit of {}",
                    self.options.max_top_k
                ),
                Some("top_k"),
            )),
            _ => Ok(()),
        }
    }

    /// 400 when `max_tokens` would fill the model's whole context (the prompt needs room).
    fn check_max_tokens(&self, max_tokens: Option<usize>) -> Result<()> {
        let context = self.engine.generator().map(|g| g.config().context_length);
        match (max_tokens, context) {
            (Some(n), Some(context)) if n >= context => Err(Error::bad_request(
                format!(
                    "max_tokens {n} leaves no room for the prompt in the model's context of \
                     {context} tokens"
                ),
                Some("max_tokens"),
            )),
            _ => Ok(()),
        }
    }

    fn in_flight(&self) -> usize {
        self.options
            .max_concurrent_asks
            .max(1)
            .saturating_sub(self.permits.available_permits())
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Cancels an ask when dropped armed: the handler future or the event stream of a client
/// that went away is dropped, and the generation stops at its next step.
struct CancelOnDrop {
    token: Option<CancelToken>,
    state: AppState,
}

impl CancelOnDrop {
    fn new(token: CancelToken, state: AppState) -> Self {
        CancelOnDrop {
            token: Some(token),
            state,
        }
    }

    /// The ask finished: dropping no longer cancels it.
    fn disarm(&mut self) {
        self.token = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            token.cancel();
            self.state.metrics.cancelled();
        }
    }
}
