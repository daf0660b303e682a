//! What an ask returns: the answer with its citations, sentences and usage, and the
//! result of a retrieval-only use.

use std::sync::Arc;

use tribute::attribution::receipt::Ledger as RustLedger;

use crate::receipt::Receipt;
use crate::types::{AdapterWeight, AttributionMethod, Hit, Locator, count};

/// One cited source of an answer.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Citation {
    /// The source's number in the prompt and in the inline markers (`[marker]`).
    pub marker: u32,
    /// Its share of the answer in basis points (all citations sum to 10,000).
    pub weight_bps: u32,
    /// The chunk id.
    pub chunk_id: String,
    /// The document id.
    pub doc_id: String,
    /// The document's title.
    pub title: String,
    /// Who contributed it (EIP-55 address).
    pub contributor: String,
    /// Its datanet.
    pub datanet: String,
    /// keccak-256 of the chunk text (0x-hex).
    pub content_hash: String,
    /// The retrieval score.
    pub score: f32,
    /// The start of the chunk text.
    pub snippet: String,
    /// Where the chunk lies in its document (`None` for chunks indexed before locators
    /// were recorded).
    pub locator: Option<Locator>,
}

impl From<&tribute::Citation> for Citation {
    fn from(c: &tribute::Citation) -> Self {
        Citation {
            marker: count(c.marker),
            weight_bps: c.weight_bps,
            chunk_id: c.chunk_id.clone(),
            doc_id: c.doc_id.clone(),
            title: c.title.clone(),
            contributor: c.contributor.clone(),
            datanet: c.datanet.clone(),
            content_hash: c.content_hash.clone(),
            score: c.score,
            snippet: c.snippet.clone(),
            locator: c.locator.as_ref().map(Locator::from),
        }
    }
}

/// One sentence of an answer and the sources that support it.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct AnswerSentence {
    /// The sentence.
    pub text: String,
    /// Its first character (Unicode scalar) in the answer's text.
    pub start: u32,
    /// One past its last character.
    pub end: u32,
    /// The markers of its supporting sources, strongest first.
    pub markers: Vec<u32>,
    /// Whether a retrieved source measurably supports it (hide or flag it when not).
    pub supported: bool,
    /// The best source's measured influence on it (nats for loo/ablation/shapley).
    pub support: Option<f64>,
    /// Markers shown with it whose sources have no measurable influence on it.
    pub unused_markers: Vec<u32>,
    /// Markers of sources with measurable influence on it that it does not show.
    pub uncited_markers: Vec<u32>,
}

/// Token counts and per-stage timings of an ask.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Answer tokens.
    pub answer_tokens: u32,
    /// Chunks retrieved.
    pub sources_retrieved: u32,
    /// Chunks shown to the model.
    pub sources_used: u32,
    /// Relevant chunks dropped to fit the prompt budget.
    pub sources_dropped: u32,
    /// The attribution method used (after any fallback); none when nothing was attributed.
    pub method: Option<AttributionMethod>,
    /// Model passes spent on attribution.
    pub attribution_passes: u32,
    /// Milliseconds retrieving.
    pub retrieval_ms: f64,
    /// Milliseconds generating (prefill and decode).
    pub generation_ms: f64,
    /// Milliseconds attributing.
    pub attribution_ms: f64,
    /// Milliseconds for the whole ask.
    pub total_ms: f64,
}

impl From<&tribute::Usage> for Usage {
    fn from(u: &tribute::Usage) -> Self {
        Usage {
            prompt_tokens: count(u.prompt_tokens),
            answer_tokens: count(u.answer_tokens),
            sources_retrieved: count(u.sources_retrieved),
            sources_used: count(u.sources_used),
            sources_dropped: count(u.sources_dropped),
            method: u.method.map(Into::into),
            attribution_passes: count(u.attribution_passes),
            retrieval_ms: u.timings.retrieval_ms,
            generation_ms: u.timings.prefill_ms + u.timings.decode_ms,
            attribution_ms: u.timings.attribution_ms,
            total_ms: u.timings.total_ms,
        }
    }
}

/// An answer with its citations and receipt.
///
/// `text` is the answer as generated; `cited_text` adds inline markers (`… [2]`) after
/// each supported sentence; `citations` are by weight, highest first, summing to 10,000
/// basis points. `receipt` is the signed usage receipt (none without a key and a ledger,
/// or when no source was relevant: `no_receipt` says why).
#[derive(Debug, Clone, uniffi::Record)]
pub struct Answer {
    /// The question.
    pub question: String,
    /// What retrieval searched for when it was not the question (a conversation's
    /// follow-up rewritten to stand alone).
    pub retrieval_query: Option<String>,
    /// The answer as generated.
    pub text: String,
    /// The answer with inline citation markers.
    pub cited_text: String,
    /// The cited sources, by weight (highest first).
    pub citations: Vec<Citation>,
    /// The answer's sentences with their supporting sources.
    pub sentences: Vec<AnswerSentence>,
    /// Citation precision: the share of shown markers whose source measurably influences
    /// its sentence (none when nothing was attributed or no marker was shown).
    pub citation_precision: Option<f64>,
    /// Citation recall: the share of measurably influential sources their sentences cite.
    pub citation_recall: Option<f64>,
    /// The adapters used, with their weights.
    pub adapters: Vec<AdapterWeight>,
    /// Token counts and timings.
    pub usage: Usage,
    /// The source guard's alert: one low-trust or barely relevant source dominates the
    /// answer (none when the guard is off or nothing is flagged).
    pub source_alert: Option<SourceAlert>,
    /// The signed receipt, if one was signed.
    pub receipt: Option<Arc<Receipt>>,
    /// Why no receipt was signed, when none was.
    pub no_receipt: Option<String>,
    /// The whole answer as JSON (the CLI's `ask --json` shape).
    pub json: String,
}

impl Answer {
    pub(crate) fn new(a: tribute::Answer, ledger: Option<RustLedger>) -> Self {
        let json = serde_json::to_string(&a).unwrap_or_default();
        Answer {
            citations: a.citations.iter().map(Citation::from).collect(),
            sentences: a
                .sentences
                .iter()
                .map(|s| AnswerSentence {
                    text: s.text.clone(),
                    start: count(s.char_span.start),
                    end: count(s.char_span.end),
                    markers: s.markers.iter().map(|&m| count(m)).collect(),
                    supported: s.supported,
                    support: s.support,
                    unused_markers: s.unused_markers.iter().map(|&m| count(m)).collect(),
                    uncited_markers: s.uncited_markers.iter().map(|&m| count(m)).collect(),
                })
                .collect(),
            citation_precision: a.citation_audit.as_ref().and_then(|c| c.precision),
            citation_recall: a.citation_audit.as_ref().and_then(|c| c.recall),
            adapters: a
                .adapters
                .iter()
                .map(|(id, weight)| AdapterWeight {
                    id: id.clone(),
                    weight: *weight,
                })
                .collect(),
            usage: Usage::from(&a.usage),
            source_alert: a.source_alert.map(SourceAlert::from),
            receipt: a.receipt.map(|r| Arc::new(Receipt::new(r, ledger))),
            no_receipt: a.no_receipt,
            question: a.question,
            retrieval_query: a.retrieval_query,
            text: a.text,
            cited_text: a.cited_text,
            json,
        }
    }
}

/// Why the source guard flagged a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum AlertReason {
    /// It comes from a low-trust datanet.
    LowTrust,
    /// Retrieval found it barely relevant to the question.
    BarelyRelevant,
}

impl From<tribute::source_guard::AlertReason> for AlertReason {
    fn from(r: tribute::source_guard::AlertReason) -> Self {
        match r {
            tribute::source_guard::AlertReason::LowTrust => AlertReason::LowTrust,
            tribute::source_guard::AlertReason::BarelyRelevant => AlertReason::BarelyRelevant,
        }
    }
}

/// The source guard's alert on an answer that one source dominates while it is low-trust
/// or barely relevant by retrieval (config `[source_guard]`, `[datanets.NAME] trust`).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct SourceAlert {
    /// The source's number in the prompt of the flagged answer.
    pub marker: u32,
    /// The chunk id.
    pub chunk_id: String,
    /// The document id.
    pub doc_id: String,
    /// Who contributed it (EIP-55 address).
    pub contributor: String,
    /// Its datanet.
    pub datanet: String,
    /// Its share of the flagged answer's attribution weight (0-1).
    pub share: f64,
    /// Its retrieval score over the best shown source's.
    pub retrieval_share: f64,
    /// Why it was flagged (low trust wins when both hold).
    pub reason: AlertReason,
    /// Whether the engine answered again without it (`source_guard.reanswer`); the answer
    /// carrying the alert is then the new one, and only it was receipted.
    pub reanswered: bool,
    /// The flagged answer's text, when it was replaced.
    pub replaced_answer: Option<String>,
}

impl From<tribute::source_guard::SourceAlert> for SourceAlert {
    fn from(a: tribute::source_guard::SourceAlert) -> Self {
        SourceAlert {
            marker: count(a.marker),
            chunk_id: a.chunk_id,
            doc_id: a.doc_id,
            contributor: a.contributor,
            datanet: a.datanet,
            share: a.share,
            retrieval_share: a.retrieval_share,
            reason: a.reason.into(),
            reanswered: a.reanswered,
            replaced_answer: a.replaced_answer,
        }
    }
}

/// A retrieval-only use of the knowledge base (`Engine.retrieve`): the relevant hits,
/// their citation weights (retrieval scores in basis points) and, when signing was
/// requested and is set up, a receipt crediting their contributors.
#[derive(Debug, Clone, uniffi::Record)]
pub struct Retrieval {
    /// The query.
    pub query: String,
    /// The relevant hits, best first.
    pub hits: Vec<Hit>,
    /// The hits as citations weighted by retrieval score (sum 10,000; empty without hits).
    pub citations: Vec<Citation>,
    /// The signed receipt, if one was signed.
    pub receipt: Option<Arc<Receipt>>,
    /// Why no receipt was signed, when none was.
    pub no_receipt: Option<String>,
}

impl Retrieval {
    pub(crate) fn new(r: tribute::Retrieval, ledger: Option<RustLedger>) -> Self {
        Retrieval {
            hits: r.hits.iter().map(Hit::from).collect(),
            citations: r.citations.iter().map(Citation::from).collect(),
            receipt: r.receipt.map(|x| Arc::new(Receipt::new(x, ledger))),
            no_receipt: r.no_receipt,
            query: r.query,
        }
    }
}
