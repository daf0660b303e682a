//! The endpoints besides chat: models, embeddings, retrieval, receipts, health, metrics.

use std::any::Any;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use tribute::attribution::journal::StateKind;
use tribute::{B256, JournaledReceipt};

use crate::AppState;
use crate::auth::Scope;
use crate::error::{Error, Result};
use crate::extract::ApiJson;
use crate::openai;

/// Runs a blocking engine call on tokio's blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> tribute::Result<T> + Send + 'static,
{
    // The engine's spans (retrieval, …) nest in the request's.
    let span = tracing::Span::current();
    Ok(tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|e| Error::Task(e.to_string()))??)
}

/// `GET /v1/models`: the base model and `base:adapter` for each registered adapter.
pub(crate) async fn models(State(state): State<AppState>) -> Json<Value> {
    let created = openai::now_secs();
    let data: Vec<Value> = openai::model_ids(&state.engine)
        .into_iter()
        .map(|id| json!({ "id": id, "object": "model", "created": created, "owned_by": "tribute" }))
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

/// `POST /v1/embeddings` body.
#[derive(Debug, Deserialize)]
pub(crate) struct EmbeddingsRequest {
    input: EmbeddingInput,
    /// Must be the knowledge base's embedder when given.
    model: Option<String>,
    encoding_format: Option<String>,
    /// Must be the embedder's own dimension when given (vectors are not shortened).
    dimensions: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
}

/// `POST /v1/embeddings`: the knowledge base's embedder.
pub(crate) async fn embeddings(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<EmbeddingsRequest>,
) -> Result<Json<Value>> {
    let texts = match request.input {
        EmbeddingInput::One(t) => vec![t],
        EmbeddingInput::Many(t) => t,
    };
    if texts.is_empty() || texts.len() > state.options.max_embedding_inputs {
        return Err(Error::bad_request(
            format!(
                "input must hold 1 to {} texts",
                state.options.max_embedding_inputs
            ),
            Some("input"),
        ));
    }
    // The official `openai` clients ask for base64 unless told otherwise.
    let as_base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return Err(Error::bad_request(
                "encoding_format must be \"float\" or \"base64\"",
                Some("encoding_format"),
            ));
        }
    };
    let name = state.engine.embedder_model().unwrap_or_default().to_owned();
    if let Some(m) = &request.model
        && *m != name
    {
        return Err(Error::NotFound {
            what: "model",
            id: m.clone(),
        });
    }
    let engine = state.engine.clone();
    let (vectors, tokens) = blocking(move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vectors = engine.embed(&refs)?;
        Ok((vectors, engine.embedding_tokens(&refs)))
    })
    .await?;
    if let (Some(wanted), Some(v)) = (request.dimensions, vectors.first())
        && wanted != v.len()
    {
        return Err(Error::bad_request(
            format!("dimensions must be {} (the embedder's own)", v.len()),
            Some("dimensions"),
        ));
    }
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if as_base64 {
                // Little-endian f32s, as OpenAI sends them.
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": i, "embedding": embedding })
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": name,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    })))
}

/// `POST /v1/retrieve` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetrieveRequest {
    query: String,
    top_k: Option<usize>,
    datanets: Option<Vec<String>>,
    /// Sign and journal a retrieval receipt (default true).
    sign: Option<bool>,
}

/// `POST /v1/retrieve`: attributed hits and a retrieval receipt, from the datanets the
/// caller's key may read.
pub(crate) async fn retrieve(
    State(state): State<AppState>,
    Extension(scope): Extension<Arc<Scope>>,
    ApiJson(r): ApiJson<RetrieveRequest>,
) -> Result<Json<Value>> {
    state.check_top_k(r.top_k)?;
    let datanets = scope.datanets(r.datanets, &state.engine.config().retrieval.datanets)?;
    let engine = state.engine.clone();
    let retrieval = blocking(move || {
        let mut req = engine.retrieve(r.query).sign(r.sign.unwrap_or(true));
        if let Some(k) = r.top_k {
            req = req.top_k(k);
        }
        if let Some(d) = datanets {
            req = req.datanets(d);
        }
        req.run()
    })
    .await?;
    if retrieval.receipt.is_some() {
        state.metrics.retrieval_receipt();
    }
    let mut out =
        serde_json::to_value(&retrieval).map_err(|e| Error::Task(format!("JSON: {e}")))?;
    out["receipt_id"] = json!(
        retrieval
            .receipt
            .as_ref()
            .map(|r| r.receipt.receiptId.to_string())
    );
    Ok(Json(out))
}

/// `GET /v1/receipts` query.
#[derive(Debug, Deserialize)]
pub(crate) struct ReceiptsQuery {
    state: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/receipts`: the most recent journaled receipts (newest last) and counts by state.
pub(crate) async fn receipts(
    State(state): State<AppState>,
    Extension(scope): Extension<Arc<Scope>>,
    Query(q): Query<ReceiptsQuery>,
) -> Result<Json<Value>> {
    scope.require(scope.receipts, "see the journal's receipts")?;
    let kind = match q.state.as_deref() {
        Some(s) => Some(s.parse::<StateKind>().map_err(tribute::Error::from)?),
        None => None,
    };
    let limit = q.limit.unwrap_or(20);
    if limit == 0 {
        return Err(Error::bad_request(
            "limit must be at least 1",
            Some("limit"),
        ));
    }
    let engine = state.engine.clone();
    let (all, stats) =
        blocking(move || Ok((engine.receipts(kind)?, engine.receipt_stats()?))).await?;
    let data = all
        .iter()
        .skip(all.len().saturating_sub(limit))
        .map(|j| receipt_json(&state, j))
        .collect::<Result<Vec<_>>>()?;
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "matching": all.len(),
        "journaled": state.engine.config().receipts.journal.is_some(),
        "stats": {
            "receipts": stats.receipts,
            "pending": stats.pending,
            "batched": stats.batched,
            "submitted": stats.submitted,
            "confirmed": stats.confirmed,
        },
    })))
}

/// `GET /v1/receipts/{id}`: one journaled receipt, its state and whether it verifies.
pub(crate) async fn receipt(
    State(state): State<AppState>,
    Extension(scope): Extension<Arc<Scope>>,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    scope.require(scope.receipts, "see the journal's receipts")?;
    let wanted: B256 = id
        .parse()
        .map_err(|_| Error::bad_request("a receipt id is 0x and 64 hex digits", Some("id")))?;
    let engine = state.engine.clone();
    let all = blocking(move || engine.receipts(None)).await?;
    let found = all
        .iter()
        .find(|j| j.receipt.receipt.receiptId == wanted)
        .ok_or(Error::NotFound {
            what: "receipt",
            id,
        })?;
    Ok(Json(receipt_json(&state, found)?))
}

/// A journaled receipt as JSON, with its state and whether its signature verifies for the
/// configured ledger.
fn receipt_json(state: &AppState, j: &JournaledReceipt) -> Result<Value> {
    let receipt: Value = serde_json::from_str(&j.receipt.to_json())
        .map_err(|e| Error::Task(format!("receipt JSON: {e}")))?;
    let verified = state
        .engine
        .config()
        .receipts
        .ledger
        .as_ref()
        .map(|l| j.receipt.verify(l).is_ok());
    Ok(json!({
        "id": j.receipt.receipt.receiptId.to_string(),
        "receipt": receipt,
        "state": j.state,
        "verified": verified,
    }))
}

/// `GET /healthz`: the model and the knowledge base's size.
pub(crate) async fn healthz(State(state): State<AppState>) -> Result<Json<Value>> {
    let engine = state.engine.clone();
    let size = blocking(move || engine.index_size()).await?;
    Ok(Json(json!({
        "status": "ok",
        "model": state.engine.model().name,
        "embedder": state.engine.embedder_model(),
        "documents": size.documents,
        "chunks": size.chunks,
        "receipts": state.engine.payer().is_some() && state.engine.config().receipts.ledger.is_some(),
    })))
}

/// `GET /metrics`: Prometheus text (the `receipts` scope: it counts them).
pub(crate) async fn metrics(
    State(state): State<AppState>,
    Extension(scope): Extension<Arc<Scope>>,
) -> Response {
    if let Err(e) = scope.require(scope.receipts, "read the metrics") {
        return e.into_response();
    }
    let waiting = state
        .waiting
        .load(std::sync::atomic::Ordering::Relaxed)
        .min(state.options.max_queued_asks);
    let text = state
        .metrics
        .render(&state.engine, state.in_flight(), waiting);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `GET /`: the web console (one static page, no external assets): ask with a streamed
/// answer and clickable citations, the receipts and whether they verify, and the fees
/// credited per contributor.
pub(crate) async fn console() -> Html<&'static str> {
    Html(include_str!("console.html"))
}

/// Any other path: an OpenAI-shaped 404.
pub(crate) async fn not_found(uri: Uri) -> Error {
    Error::NotFound {
        what: "endpoint",
        id: uri.path().to_owned(),
    }
}

/// A handler that panicked: a 500 with an OpenAI-shaped body; the server keeps serving.
pub(crate) fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default();
    let mut r = Error::Task(format!("a handler panicked: {detail}")).into_response();
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r
}
