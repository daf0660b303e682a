//! The endpoints that change things, each behind its scope: `POST /v1/documents` (ingest)
//! and `POST /v1/receipts/settle` (settle the journal's receipts on chain).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use serde::Deserialize;
use serde_json::{Value, json};
use tribute::{Contributor, Document};

use crate::auth::Scope;
use crate::error::{Error, Result};
use crate::extract::ApiJson;
use crate::{AppState, routes};

/// `POST /v1/documents` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DocumentsRequest {
    documents: Vec<NewDocument>,
}

/// One document to add (JSONL's fields).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDocument {
    id: String,
    text: String,
    #[serde(default)]
    title: String,
    datanet: Option<String>,
    contributor: Option<String>,
    license: Option<String>,
}

/// `POST /v1/documents`: adds documents to the knowledge base (an id already there is
/// replaced). Needs the `ingest` scope, and a key limited to some datanets may add to
/// those only (and must name one).
pub(crate) async fn documents(
    State(state): State<AppState>,
    Extension(scope): Extension<Arc<Scope>>,
    ApiJson(request): ApiJson<DocumentsRequest>,
) -> Result<Json<Value>> {
    scope.require(scope.ingest, "add documents")?;
    if request.documents.is_empty() {
        return Err(Error::bad_request(
            "documents must hold at least one document",
            Some("documents"),
        ));
    }
    let mut docs = Vec::with_capacity(request.documents.len());
    for d in request.documents {
        if let Some(allowed) = &scope.datanets
            && !d.datanet.as_ref().is_some_and(|n| allowed.contains(n))
        {
            return Err(Error::Forbidden {
                message: format!(
                    "this API key may add documents to the datanets {allowed:?} only (document {:?})",
                    d.id
                ),
                param: Some("documents"),
            });
        }
        let mut doc = Document::new(d.id, d.text).with_title(d.title);
        if let Some(n) = d.datanet {
            doc = doc.with_datanet(n);
        }
        if let Some(c) = d.contributor {
            let c = c.parse::<Contributor>().map_err(tribute::Error::from)?;
            doc = doc.with_contributor(c);
        }
        if let Some(l) = d.license {
            doc = doc.with_license(l);
        }
        docs.push(doc);
    }
    let engine = state.engine.clone();
    let report = routes::blocking(move || engine.add_documents(docs, None)).await?;
    Ok(Json(json!({
        "object": "ingest",
        "added": report.added,
        "replaced": report.replaced,
        "unchanged": report.unchanged,
        "chunks": report.chunks,
    })))
}

/// `POST /v1/receipts/settle`: settles the journal's pending receipts on the configured
/// chain. Needs the `settle` scope and a server built with the `onchain` feature.
pub(crate) async fn settle(
    State(state): State<AppState>,
    Extension(scope): Extension<Arc<Scope>>,
) -> Result<Json<Value>> {
    scope.require(scope.settle, "settle receipts")?;
    settle_journal(&state).await
}

#[cfg(feature = "onchain")]
async fn settle_journal(state: &AppState) -> Result<Json<Value>> {
    let report = state.engine.settle().await?;
    Ok(Json(json!({
        "object": "settlement",
        "batches": report.batches.len(),
        "confirmed_receipts": report.confirmed_receipts(),
        "awaiting_receipts": report.awaiting_receipts(),
        "reorged": report.reorged,
        "unresolved": report.unresolved.len(),
        "gas_used": report.gas_used(),
        "skipped": report.skipped.len(),
        "still_pending": report.still_pending,
    })))
}

#[cfg(not(feature = "onchain"))]
async fn settle_journal(_state: &AppState) -> Result<Json<Value>> {
    Err(Error::bad_request(
        "this server was built without on-chain settlement (the `onchain` feature)",
        None,
    ))
}
