//! What an ask returns: [`Answer`] with its [`Citation`]s, sentences and [`Usage`], and
//! what a retrieval-only use returns, [`Retrieval`].

use serde::Serialize;
use tribute_attribution::Method;
use tribute_attribution::receipt::SignedReceipt;
use tribute_index::{Hit, Locator};

use crate::citations::CitationAudit;

/// One cited source of an answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Citation {
    /// The source's number in the prompt and in the inline markers (`[marker]`).
    pub marker: usize,
    /// Its share of the answer in basis points (all citations sum to 10,000).
    pub weight_bps: u32,
    /// The chunk.
    pub chunk_id: String,
    /// Its document.
    pub doc_id: String,
    /// The document's title.
    pub title: String,
    /// Who contributed it (EIP-55).
    pub contributor: String,
    /// Its datanet.
    pub datanet: String,
    /// keccak-256 of the chunk text.
    pub content_hash: String,
    /// The retrieval score.
    pub score: f32,
    /// The start of the chunk text.
    pub snippet: String,
    /// Where the chunk lies in its document: pages, heading path, character span (`None`
    /// for chunks indexed before locators were recorded).
    pub locator: Option<Locator>,
}

/// One sentence of the answer and the sources that support it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AnswerSentence {
    /// The sentence.
    pub text: String,
    /// Its byte range in [`Answer::text`].
    pub span: std::ops::Range<usize>,
    /// Its character range in [`Answer::text`].
    pub char_span: std::ops::Range<usize>,
    /// The markers of its supporting sources, strongest first.
    pub markers: Vec<usize>,
    /// Whether a retrieved source measurably supports it: the best source's influence on
    /// it reaches the audit threshold ([`CitationAudit::threshold`]). Apps may hide or flag
    /// unsupported sentences. Extractive sentences, copied from a source, are supported.
    pub supported: bool,
    /// The best source's influence on the sentence, in [`CitationAudit::unit`]s (`None`:
    /// not measured, as for extractive answers).
    pub support: Option<f64>,
    /// Markers shown with the sentence (attribution's and any the model wrote) whose
    /// sources have no measurable influence on it: cited but unused.
    pub unused_markers: Vec<usize>,
    /// Markers of the sources with measurable influence on the sentence that it does not
    /// show, strongest first: used but uncited.
    pub uncited_markers: Vec<usize>,
}

/// Time per stage of an ask, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StageTimings {
    /// Retrieval.
    pub retrieval_ms: f64,
    /// Building the prompt (template, tokenization, budget).
    pub prompt_ms: f64,
    /// Prompt prefill.
    pub prefill_ms: f64,
    /// Decoding.
    pub decode_ms: f64,
    /// Attribution.
    pub attribution_ms: f64,
    /// Signing and journaling the receipt.
    pub receipt_ms: f64,
    /// The whole ask.
    pub total_ms: f64,
}

/// Token counts and timings of an ask.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Answer tokens.
    pub answer_tokens: usize,
    /// Chunks retrieved.
    pub sources_retrieved: usize,
    /// Chunks shown to the model.
    pub sources_used: usize,
    /// Relevant chunks dropped to fit the prompt budget.
    pub sources_dropped: usize,
    /// Whether the last source shown was cut to fit.
    pub source_truncated: bool,
    /// The attribution method used (after any fallback).
    pub method: Option<Method>,
    /// Model passes spent on attribution.
    pub attribution_passes: usize,
    /// Time per stage.
    pub timings: StageTimings,
}

/// An answer with its citations and receipt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    /// The question.
    pub question: String,
    /// What retrieval searched for when it was not the question: a conversation's
    /// follow-up rewritten to stand alone (see [`Session`](super::Session)).
    pub retrieval_query: Option<String>,
    /// The answer as generated.
    pub text: String,
    /// The answer with inline markers (`… [2]`) after each supported sentence.
    pub cited_text: String,
    /// The cited sources, by weight (highest first); weights sum to 10,000 (empty when no
    /// source was used).
    pub citations: Vec<Citation>,
    /// The answer's sentences with their supporting sources.
    pub sentences: Vec<AnswerSentence>,
    /// The markers shown against the sources' measured influence on each sentence:
    /// citation precision and recall (`None` when nothing was attributed, as for
    /// extractive answers and answers without sources).
    pub citation_audit: Option<CitationAudit>,
    /// Set when one source dominates the answer and is low-trust or barely relevant (see
    /// [`crate::source_guard`]); with `source_guard.reanswer` this answer was made without it.
    pub source_alert: Option<crate::source_guard::SourceAlert>,
    /// The adapters used, with their weights.
    pub adapters: Vec<(String, f32)>,
    /// Tokens and timings.
    pub usage: Usage,
    /// The signed receipt (journaled when a journal is configured).
    #[serde(serialize_with = "receipt_json")]
    pub receipt: Option<SignedReceipt>,
    /// Why no receipt was signed, when none was.
    pub no_receipt: Option<String>,
}

fn receipt_json<S: serde::Serializer>(r: &Option<SignedReceipt>, s: S) -> Result<S::Ok, S::Error> {
    match r {
        Some(r) => serde_json::from_str::<serde_json::Value>(&r.to_json())
            .map_err(serde::ser::Error::custom)?
            .serialize(s),
        None => s.serialize_none(),
    }
}

/// A retrieval-only use of the knowledge base (for agents that generate elsewhere): the
/// hits, their citation weights (retrieval scores in basis points) and, when signing is
/// set up and requested, a receipt.
///
/// A retrieval receipt has model id zero (no model ran: the model owner's share goes to
/// the treasury at settlement), no adapters, the fee `receipts.retrieval_fee_wei`, and as
/// answer hash `keccak256` of the returned chunk ids joined by newlines.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Retrieval {
    /// The query.
    pub query: String,
    /// The relevant hits, best first.
    pub hits: Vec<Hit>,
    /// The hits as citations, weighted by retrieval score (sum 10,000; empty without hits).
    pub citations: Vec<Citation>,
    /// The signed receipt (journaled when a journal is configured).
    #[serde(serialize_with = "receipt_json")]
    pub receipt: Option<SignedReceipt>,
    /// Why no receipt was signed, when none was.
    pub no_receipt: Option<String>,
}

pub(super) fn citation(marker: usize, weight_bps: u32, h: &Hit) -> Citation {
    let snippet: String = h.text.chars().take(120).collect();
    Citation {
        marker,
        weight_bps,
        chunk_id: h.chunk_id.as_str().to_owned(),
        doc_id: h.doc_id.as_str().to_owned(),
        title: h.title.clone(),
        contributor: h.contributor.address().to_checksum(None),
        datanet: h.datanet.as_str().to_owned(),
        content_hash: h.content_hash.as_b256().to_string(),
        score: h.score,
        snippet,
        locator: h.locator.clone(),
    }
}
