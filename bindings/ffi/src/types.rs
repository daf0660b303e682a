//! Records and enums: plain values copied across the boundary (Kotlin data classes, Swift
//! structs), and their conversions from the `tribute` types.

use std::sync::Arc;

use tribute::attribution::Method;
use tribute::attribution::receipt::Ledger as RustLedger;

use crate::error::{Result, TributeError, request};
use crate::receipt::Receipt;

/// A count as `u32` (saturating: counts here never come near it).
pub(crate) fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A `u32` argument as `usize`.
pub(crate) fn size(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// How the knowledge base is searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum SearchMode {
    /// BM25 only.
    Bm25,
    /// Dense vectors only.
    Dense,
    /// Both, fused (the default).
    Hybrid,
}

impl From<SearchMode> for tribute::Mode {
    fn from(m: SearchMode) -> Self {
        match m {
            SearchMode::Bm25 => tribute::Mode::Bm25,
            SearchMode::Dense => tribute::Mode::Dense,
            SearchMode::Hybrid => tribute::Mode::Hybrid,
        }
    }
}

impl From<tribute::Mode> for SearchMode {
    fn from(m: tribute::Mode) -> Self {
        match m {
            tribute::Mode::Bm25 => SearchMode::Bm25,
            tribute::Mode::Dense => SearchMode::Dense,
            _ => SearchMode::Hybrid,
        }
    }
}

/// How an answer's citation weights are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum AttributionMethod {
    /// Leave-one-out: the drop in the answer's log-probability with each source hidden
    /// (the default; runs the model).
    Loo,
    /// A sparse linear surrogate over random source subsets (runs the model).
    Ablation,
    /// Embedding cosine and word overlap between answer sentences and sources.
    Similarity,
    /// The retrieval scores.
    Retrieval,
}

impl From<AttributionMethod> for Method {
    fn from(m: AttributionMethod) -> Self {
        match m {
            AttributionMethod::Loo => Method::Loo,
            AttributionMethod::Ablation => Method::Ablation,
            AttributionMethod::Similarity => Method::Similarity,
            AttributionMethod::Retrieval => Method::Retrieval,
        }
    }
}

impl From<Method> for AttributionMethod {
    fn from(m: Method) -> Self {
        match m {
            Method::Ablation => AttributionMethod::Ablation,
            Method::Similarity => AttributionMethod::Similarity,
            Method::Retrieval => AttributionMethod::Retrieval,
            _ => AttributionMethod::Loo,
        }
    }
}

/// Where receipts are settled: the chain id and the `TributeLedger` contract (the EIP-712
/// domain receipts are signed for).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Ledger {
    /// The EVM chain id.
    pub chain_id: u64,
    /// The ledger contract's address (0x-hex).
    pub contract: String,
}

impl TryFrom<&Ledger> for RustLedger {
    type Error = TributeError;

    fn try_from(l: &Ledger) -> Result<Self> {
        let contract = tribute::Contributor::parse(&l.contract)
            .map_err(|e| TributeError::Config(format!("ledger contract: {e}")))?
            .address();
        Ok(RustLedger {
            chain_id: l.chain_id,
            contract,
        })
    }
}

impl From<&RustLedger> for Ledger {
    fn from(l: &RustLedger) -> Self {
        Ledger {
            chain_id: l.chain_id,
            contract: l.contract.to_checksum(None),
        }
    }
}

/// A LoRA adapter and its merge weight (1.0: the adapter as trained).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct AdapterWeight {
    /// The id it was registered under (`Generator.addAdapter`).
    pub id: String,
    /// Its weight in the merge.
    #[uniffi(default = 1.0)]
    pub weight: f32,
}

/// A document to add to the knowledge base.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Document {
    /// Its id (unique in the knowledge base; the same id with other text replaces it).
    pub id: String,
    /// Its text.
    pub text: String,
    /// Its title.
    #[uniffi(default = None)]
    pub title: Option<String>,
    /// Its datanet (else the `datanet` of the call, else `default`).
    #[uniffi(default = None)]
    pub datanet: Option<String>,
    /// Its contributor, an EVM address (else the `contributor` of the call).
    #[uniffi(default = None)]
    pub contributor: Option<String>,
    /// Its license.
    #[uniffi(default = None)]
    pub license: Option<String>,
    /// Metadata: a JSON object as text.
    #[uniffi(default = None)]
    pub metadata_json: Option<String>,
}

impl Document {
    /// The `tribute` document; `datanet` and `contributor` apply when it names none.
    pub(crate) fn into_rust(
        self,
        i: usize,
        datanet: Option<&str>,
        contributor: Option<tribute::Contributor>,
    ) -> Result<tribute::Document> {
        let bad = |m: String| TributeError::KnowledgeBase(format!("document {i}: {m}"));
        let mut doc = tribute::Document::new(self.id, self.text);
        if let Some(t) = self.title {
            doc = doc.with_title(t);
        }
        if let Some(d) = self.datanet.as_deref().or(datanet) {
            doc = doc.with_datanet(d);
        }
        match self.contributor {
            Some(c) => {
                doc = doc.with_contributor(
                    tribute::Contributor::parse(&c).map_err(|e| bad(e.to_string()))?,
                )
            }
            None => {
                if let Some(c) = contributor {
                    doc = doc.with_contributor(c);
                }
            }
        }
        if let Some(l) = self.license {
            doc = doc.with_license(l);
        }
        if let Some(m) = self.metadata_json {
            let value: serde_json::Value = serde_json::from_str(&m)
                .map_err(|e| bad(format!("metadata_json is not JSON: {e}")))?;
            match value {
                serde_json::Value::Object(map) => doc.metadata = map,
                _ => return Err(bad("metadata_json must be a JSON object".into())),
            }
        }
        Ok(doc)
    }
}

/// A search result: one chunk of a document, with its provenance and scores.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Hit {
    /// The chunk id (`doc#n`).
    pub chunk_id: String,
    /// The document id.
    pub doc_id: String,
    /// The document's title.
    pub title: String,
    /// The chunk's text.
    pub text: String,
    /// The final score (fused in hybrid mode, else the retriever's).
    pub score: f32,
    /// The contributor's address (EIP-55); the zero address when nobody was named.
    pub contributor: String,
    /// The datanet.
    pub datanet: String,
    /// keccak-256 of the chunk text (0x-hex).
    pub content_hash: String,
    /// UTF-8 byte offset of the chunk in the document text.
    pub start: u64,
    /// UTF-8 byte offset one past the chunk's end.
    pub end: u64,
    /// The BM25 score, when BM25 found the chunk.
    pub bm25_score: Option<f32>,
    /// The dense (cosine) score, when the dense retriever found the chunk.
    pub dense_score: Option<f32>,
}

impl From<&tribute::Hit> for Hit {
    fn from(h: &tribute::Hit) -> Self {
        Hit {
            chunk_id: h.chunk_id.as_str().to_owned(),
            doc_id: h.doc_id.as_str().to_owned(),
            title: h.title.clone(),
            text: h.text.clone(),
            score: h.score,
            contributor: h.contributor.to_string(),
            datanet: h.datanet.as_str().to_owned(),
            content_hash: h.content_hash.as_b256().to_string(),
            start: h.start as u64,
            end: h.end as u64,
            bm25_score: h.bm25.map(|s| s.score),
            dense_score: h.dense.map(|s| s.score),
        }
    }
}

/// A document recorded as a duplicate of an earlier one.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Duplicate {
    /// The new document.
    pub doc_id: String,
    /// The earlier document it duplicates (credited instead).
    pub original_id: String,
    /// Cosine similarity (1.0 for an exact duplicate).
    pub cosine: f32,
}

/// What an ingest did.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct IngestReport {
    /// New documents indexed.
    pub added: u32,
    /// Documents whose id existed with other text (the old version was replaced).
    pub replaced: u32,
    /// Documents whose id existed with the same text (nothing done).
    pub unchanged: u32,
    /// Chunks indexed.
    pub chunks: u32,
    /// Exact duplicates: recorded, credited to the earlier document, not indexed.
    pub duplicates: Vec<Duplicate>,
    /// Near-duplicates: indexed, and recorded with the similar earlier document.
    pub near_duplicates: Vec<Duplicate>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Seconds spent embedding.
    pub embed_seconds: f64,
}

impl From<tribute::IngestReport> for IngestReport {
    fn from(r: tribute::IngestReport) -> Self {
        IngestReport {
            added: count(r.added),
            replaced: count(r.replaced),
            unchanged: count(r.unchanged),
            chunks: count(r.chunks),
            duplicates: r
                .duplicates
                .iter()
                .map(|(d, o)| Duplicate {
                    doc_id: d.to_string(),
                    original_id: o.doc_id.to_string(),
                    cosine: 1.0,
                })
                .collect(),
            near_duplicates: r
                .near_duplicates
                .iter()
                .map(|(d, n)| Duplicate {
                    doc_id: d.to_string(),
                    original_id: n.origin.doc_id.to_string(),
                    cosine: n.cosine,
                })
                .collect(),
            seconds: r.seconds,
            embed_seconds: r.embed_seconds,
        }
    }
}

/// How far an ingest (`Index.add`, `Index.addFiles`) has come, reported to an
/// [`IngestListener`](crate::index::IngestListener) after each embedded batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct IngestProgress {
    /// Documents processed.
    pub docs_done: u32,
    /// Documents in this call.
    pub docs_total: u32,
    /// Chunks embedded and indexed.
    pub chunks_done: u32,
    /// Chunks to index in this call.
    pub chunks_total: u32,
}

impl From<&tribute::IngestProgress> for IngestProgress {
    fn from(p: &tribute::IngestProgress) -> Self {
        IngestProgress {
            docs_done: count(p.docs_done),
            docs_total: count(p.docs_total),
            chunks_done: count(p.chunks_done),
            chunks_total: count(p.chunks_total),
        }
    }
}

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
    /// The answer as generated.
    pub text: String,
    /// The answer with inline citation markers.
    pub cited_text: String,
    /// The cited sources, by weight (highest first).
    pub citations: Vec<Citation>,
    /// The answer's sentences with their supporting sources.
    pub sentences: Vec<AnswerSentence>,
    /// The adapters used, with their weights.
    pub adapters: Vec<AdapterWeight>,
    /// Token counts and timings.
    pub usage: Usage,
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
                })
                .collect(),
            adapters: a
                .adapters
                .iter()
                .map(|(id, weight)| AdapterWeight {
                    id: id.clone(),
                    weight: *weight,
                })
                .collect(),
            usage: Usage::from(&a.usage),
            receipt: a.receipt.map(|r| Arc::new(Receipt::new(r, ledger))),
            no_receipt: a.no_receipt,
            question: a.question,
            text: a.text,
            cited_text: a.cited_text,
            json,
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

/// Options of one ask; unset fields take the engine's defaults.
#[derive(Debug, Clone, Default, PartialEq, uniffi::Record)]
pub struct AskOptions {
    /// Chunks to retrieve.
    #[uniffi(default = None)]
    pub top_k: Option<u32>,
    /// Retrieval mode.
    #[uniffi(default = None)]
    pub mode: Option<SearchMode>,
    /// Only these datanets.
    #[uniffi(default = None)]
    pub datanets: Option<Vec<String>>,
    /// Adapters to merge for this answer, with their weights.
    #[uniffi(default)]
    pub adapters: Vec<AdapterWeight>,
    /// Attribution method.
    #[uniffi(default = None)]
    pub method: Option<AttributionMethod>,
    /// The fee in wei, as a decimal string.
    #[uniffi(default = None)]
    pub fee_wei: Option<String>,
    /// Most answer tokens.
    #[uniffi(default = None)]
    pub max_tokens: Option<u32>,
    /// Sampling temperature (0: greedy).
    #[uniffi(default = None)]
    pub temperature: Option<f32>,
    /// Sampling seed.
    #[uniffi(default = None)]
    pub seed: Option<u64>,
}

impl TryFrom<AskOptions> for tribute::AskOptions {
    type Error = TributeError;

    fn try_from(o: AskOptions) -> Result<Self> {
        let fee = o
            .fee_wei
            .map(|f| {
                f.trim()
                    .parse()
                    .map_err(|_| request(format!("fee_wei {f:?} is not a non-negative integer")))
            })
            .transpose()?;
        Ok(tribute::AskOptions {
            top_k: o.top_k.map(size),
            mode: o.mode.map(Into::into),
            datanets: o.datanets,
            adapters: o.adapters.into_iter().map(|a| (a.id, a.weight)).collect(),
            method: o.method.map(Into::into),
            fee,
            max_tokens: o.max_tokens.map(size),
            temperature: o.temperature,
            seed: o.seed,
            ..tribute::AskOptions::default()
        })
    }
}

/// How an [`Engine`](crate::engine::Engine) is set up; unset fields take the defaults of
/// the Rust `EngineConfig`.
#[derive(Debug, Clone, Default, PartialEq, uniffi::Record)]
pub struct EngineOptions {
    /// The ledger receipts are signed for; with a signing key, answers carry receipts.
    #[uniffi(default = None)]
    pub ledger: Option<Ledger>,
    /// The receipt journal directory (receipts are appended, fsynced, before an ask returns).
    #[uniffi(default = None)]
    pub journal: Option<String>,
    /// Chunks retrieved per question (default 4).
    #[uniffi(default = None)]
    pub top_k: Option<u32>,
    /// Retrieval mode (default hybrid).
    #[uniffi(default = None)]
    pub mode: Option<SearchMode>,
    /// Only these datanets (default all).
    #[uniffi(default = None)]
    pub datanets: Option<Vec<String>>,
    /// Attribution method (default loo).
    #[uniffi(default = None)]
    pub method: Option<AttributionMethod>,
    /// Most answer tokens (default 160).
    #[uniffi(default = None)]
    pub max_tokens: Option<u32>,
    /// The fee of an answer in wei, as a decimal string.
    #[uniffi(default = None)]
    pub fee_wei: Option<String>,
    /// Where `settle()` pays the receipts (none: `settle()` throws `Chain`).
    #[uniffi(default = None)]
    pub chain: Option<ChainOptions>,
}

/// Where an engine settles its receipts (`Engine.settle()`): the node and who gets the
/// treasury share. The ledger contract is `EngineOptions.ledger`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ChainOptions {
    /// The node's HTTP JSON-RPC URL.
    pub rpc: String,
    /// Receipts per settlement batch (default 100).
    #[uniffi(default = None)]
    pub batch_size: Option<u32>,
    /// The treasury's address (default: the payer's).
    #[uniffi(default = None)]
    pub treasury: Option<String>,
    /// Paid the shares of model or adapter ids without a registered owner (default none:
    /// such ids make settlement fail).
    #[uniffi(default = None)]
    pub fallback_owner: Option<String>,
    /// Seconds to wait for each RPC request or transaction receipt (default 30).
    #[uniffi(default = None)]
    pub timeout_secs: Option<u32>,
}

impl TryFrom<ChainOptions> for tribute::config::ChainConfig {
    type Error = TributeError;

    fn try_from(c: ChainOptions) -> Result<Self> {
        let address = |what: &str, a: Option<String>| {
            a.map(|a| {
                tribute::Contributor::parse(&a)
                    .map(|_| a)
                    .map_err(|e| TributeError::Config(format!("chain {what}: {e}")))
            })
            .transpose()
        };
        let mut config = tribute::config::ChainConfig {
            rpc: c.rpc,
            treasury: address("treasury", c.treasury)?,
            fallback_owner: address("fallback_owner", c.fallback_owner)?,
            ..tribute::config::ChainConfig::default()
        };
        if let Some(n) = c.batch_size {
            config.batch_size = size(n);
        }
        if let Some(t) = c.timeout_secs {
            config.timeout_s = u64::from(t);
        }
        Ok(config)
    }
}

/// Reads a ledger JSON file (`{"chainId": …, "contract": "0x…"}`, as `tribute chain deploy
/// --out` writes it). Throws `Config` when it is unreadable or malformed.
#[uniffi::export]
pub fn load_ledger(path: String) -> Result<Ledger> {
    crate::error::guard(|| {
        let bad = |m: String| TributeError::Config(format!("ledger: {path}: {m}"));
        let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
        let ledger: RustLedger = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        Ok(Ledger::from(&ledger))
    })
}

impl EngineOptions {
    /// Applies the options to a config.
    pub(crate) fn apply(self, config: &mut tribute::EngineConfig) -> Result<()> {
        if let Some(l) = &self.ledger {
            config.receipts.ledger = Some(l.try_into()?);
        }
        config.receipts.journal = self.journal.map(Into::into);
        if let Some(k) = self.top_k {
            config.retrieval.top_k = size(k);
        }
        if let Some(m) = self.mode {
            config.retrieval.mode = m.into();
        }
        if let Some(d) = self.datanets {
            config.retrieval.datanets = d;
        }
        if let Some(m) = self.method {
            config.attribution.method = m.into();
        }
        if let Some(n) = self.max_tokens {
            config.generation.max_tokens = size(n);
        }
        if let Some(f) = self.fee_wei {
            config.receipts.fee_wei = f;
        }
        config.chain = self.chain.map(TryInto::try_into).transpose()?;
        Ok(())
    }
}

/// Where a journaled receipt is in settlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ReceiptState {
    /// Journaled, not yet in a batch.
    Pending,
    /// In a Merkle batch, not yet sent.
    Batched,
    /// Its batch was sent to the chain.
    Submitted,
    /// Its batch's settlement transaction was mined.
    Confirmed,
}

impl From<ReceiptState> for tribute::attribution::journal::StateKind {
    fn from(s: ReceiptState) -> Self {
        use tribute::attribution::journal::StateKind;
        match s {
            ReceiptState::Pending => StateKind::Pending,
            ReceiptState::Batched => StateKind::Batched,
            ReceiptState::Submitted => StateKind::Submitted,
            ReceiptState::Confirmed => StateKind::Confirmed,
        }
    }
}

/// A journaled receipt and its settlement state.
#[derive(Debug, Clone, uniffi::Record)]
pub struct JournaledReceipt {
    /// The receipt.
    pub receipt: Arc<Receipt>,
    /// Its state.
    pub state: ReceiptState,
    /// Its batch (0x-hex), once batched.
    pub batch_id: Option<String>,
    /// The settlement transaction (0x-hex), once submitted.
    pub tx_hash: Option<String>,
    /// The block its settlement was mined in, once confirmed.
    pub block: Option<u64>,
}

impl JournaledReceipt {
    pub(crate) fn new(
        r: tribute::attribution::receipt::SignedReceipt,
        s: tribute::attribution::journal::ReceiptState,
        ledger: Option<RustLedger>,
    ) -> Self {
        use tribute::attribution::journal::{ReceiptState as S, StateKind};
        JournaledReceipt {
            receipt: Arc::new(Receipt::new(r, ledger)),
            state: match s.kind() {
                StateKind::Pending => ReceiptState::Pending,
                StateKind::Batched => ReceiptState::Batched,
                StateKind::Submitted => ReceiptState::Submitted,
                StateKind::Confirmed => ReceiptState::Confirmed,
            },
            batch_id: s.batch_id().map(|b| b.to_string()),
            tx_hash: s.tx_hash().map(|t| t.to_string()),
            block: match s {
                S::Confirmed { block, .. } => Some(block),
                _ => None,
            },
        }
    }
}

/// Receipt counts by state.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ReceiptStats {
    /// All receipts.
    pub receipts: u32,
    /// Pending receipts.
    pub pending: u32,
    /// Batched receipts.
    pub batched: u32,
    /// Submitted receipts.
    pub submitted: u32,
    /// Confirmed receipts.
    pub confirmed: u32,
}

impl From<tribute::attribution::journal::Stats> for ReceiptStats {
    fn from(s: tribute::attribution::journal::Stats) -> Self {
        ReceiptStats {
            receipts: count(s.receipts),
            pending: count(s.pending),
            batched: count(s.batched),
            submitted: count(s.submitted),
            confirmed: count(s.confirmed),
        }
    }
}

/// One batch of receipts settled on chain.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SettledBatch {
    /// The batch's Merkle root (0x-hex).
    pub root: String,
    /// The settlement transaction (0x-hex).
    pub tx_hash: String,
    /// Its block.
    pub block: Option<u64>,
    /// Gas it used.
    pub gas_used: u64,
    /// The payouts' total in wei (decimal), debited from the payer's deposit.
    pub total_wei: String,
    /// Receipts in the batch.
    pub receipts: u32,
    /// Whether it finished a batch an earlier run had started.
    pub resumed: bool,
}

/// What `Engine.settle()` did.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SettleReport {
    /// The batches confirmed, in order.
    pub batches: Vec<SettledBatch>,
    /// Pending receipts left alone because they do not verify on this ledger:
    /// `receipt id: why`.
    pub skipped: Vec<String>,
    /// Pending receipts of other payers (left alone).
    pub other_payers: u32,
    /// Pending receipts of this payer still waiting.
    pub still_pending: u32,
}

#[cfg(feature = "onchain")]
impl From<tribute::attribution::settle::SettleReport> for SettleReport {
    fn from(r: tribute::attribution::settle::SettleReport) -> Self {
        SettleReport {
            batches: r
                .batches
                .iter()
                .map(|b| SettledBatch {
                    root: b.settlement.root.to_string(),
                    tx_hash: b.settlement.tx_hash.to_string(),
                    block: b.settlement.block_number,
                    gas_used: b.settlement.gas_used,
                    total_wei: b.settlement.total.to_string(),
                    receipts: count(b.receipts),
                    resumed: b.resumed,
                })
                .collect(),
            skipped: r
                .skipped
                .iter()
                .map(|(id, why)| format!("{id}: {why}"))
                .collect(),
            other_payers: count(r.other_payers),
            still_pending: count(r.still_pending),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip() {
        for m in [SearchMode::Bm25, SearchMode::Dense, SearchMode::Hybrid] {
            assert_eq!(SearchMode::from(tribute::Mode::from(m)), m);
        }
        for m in [
            AttributionMethod::Loo,
            AttributionMethod::Ablation,
            AttributionMethod::Similarity,
            AttributionMethod::Retrieval,
        ] {
            assert_eq!(AttributionMethod::from(Method::from(m)), m);
        }
    }

    #[test]
    fn ledger_converts_and_checksums() {
        let l = Ledger {
            chain_id: 31_337,
            contract: "0x5fbdb2315678afecb367f032d93f642f64180aa3".into(),
        };
        let r = RustLedger::try_from(&l).expect("a valid ledger");
        assert_eq!(r.chain_id, 31_337);
        assert_eq!(
            Ledger::from(&r).contract,
            "0x5FbDB2315678afecb367f032d93F642f64180aa3"
        );
        let bad = Ledger {
            chain_id: 1,
            contract: "0x12".into(),
        };
        assert!(matches!(
            RustLedger::try_from(&bad),
            Err(TributeError::Config(_))
        ));
    }

    #[test]
    fn ask_options_convert() {
        let o = AskOptions {
            top_k: Some(3),
            mode: Some(SearchMode::Bm25),
            adapters: vec![AdapterWeight {
                id: "zephyr".into(),
                weight: 0.5,
            }],
            method: Some(AttributionMethod::Similarity),
            fee_wei: Some("1000".into()),
            ..AskOptions::default()
        };
        let r = tribute::AskOptions::try_from(o).expect("valid options");
        assert_eq!(r.top_k, Some(3));
        assert_eq!(r.mode, Some(tribute::Mode::Bm25));
        assert_eq!(r.adapters, vec![("zephyr".to_owned(), 0.5)]);
        assert_eq!(r.method, Some(Method::Similarity));
        assert_eq!(r.fee.map(|f| f.to_string()), Some("1000".into()));
        let bad = AskOptions {
            fee_wei: Some("-1".into()),
            ..AskOptions::default()
        };
        assert!(matches!(
            tribute::AskOptions::try_from(bad),
            Err(TributeError::Request(_))
        ));
    }

    #[test]
    fn chain_options_convert_and_validate() {
        let c = ChainOptions {
            rpc: "http://127.0.0.1:8545".into(),
            batch_size: Some(7),
            treasury: Some("0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc".into()),
            fallback_owner: None,
            timeout_secs: Some(5),
        };
        let r = tribute::config::ChainConfig::try_from(c.clone()).expect("valid");
        assert_eq!((r.batch_size, r.timeout_s), (7, 5));
        assert_eq!(r.treasury.as_deref(), c.treasury.as_deref());
        let r = tribute::config::ChainConfig::try_from(ChainOptions {
            batch_size: None,
            timeout_secs: None,
            treasury: None,
            ..c.clone()
        })
        .expect("valid");
        assert_eq!((r.batch_size, r.timeout_s, r.treasury), (100, 30, None));
        let bad = ChainOptions {
            treasury: Some("0x12".into()),
            ..c
        };
        assert!(matches!(
            tribute::config::ChainConfig::try_from(bad),
            Err(TributeError::Config(m)) if m.starts_with("chain treasury")
        ));
    }

    #[test]
    fn ledgers_load_from_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.json");
        std::fs::write(
            &path,
            r#"{"chainId": 31337, "contract": "0x5fbdb2315678afecb367f032d93f642f64180aa3"}"#,
        )
        .expect("write");
        let l = load_ledger(path.display().to_string()).expect("a ledger");
        assert_eq!(l.chain_id, 31_337);
        assert_eq!(l.contract, "0x5FbDB2315678afecb367f032d93F642f64180aa3");
        std::fs::write(&path, "{}").expect("write");
        assert!(matches!(
            load_ledger(path.display().to_string()),
            Err(TributeError::Config(_))
        ));
        assert!(matches!(
            load_ledger(dir.path().join("missing.json").display().to_string()),
            Err(TributeError::Config(_))
        ));
    }

    #[test]
    fn documents_convert_and_validate() {
        let alice = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
        let d = Document {
            id: "d1".into(),
            text: "Some text.".into(),
            title: Some("T".into()),
            datanet: None,
            contributor: None,
            license: Some("CC-BY-4.0".into()),
            metadata_json: Some(r#"{"lang":"en"}"#.into()),
        };
        let c = tribute::Contributor::parse(alice).expect("an address");
        let r = d.clone().into_rust(0, Some("net"), Some(c)).expect("valid");
        assert_eq!(r.title, "T");
        assert_eq!(r.datanet.as_str(), "net");
        assert_eq!(r.contributor.to_string(), alice);
        assert_eq!(r.metadata["lang"], "en");
        let bad = Document {
            metadata_json: Some("[1]".into()),
            ..d.clone()
        };
        assert!(matches!(
            bad.into_rust(3, None, None),
            Err(TributeError::KnowledgeBase(m)) if m.starts_with("document 3")
        ));
        let bad = Document {
            contributor: Some("not an address".into()),
            ..d
        };
        assert!(matches!(
            bad.into_rust(0, None, None),
            Err(TributeError::KnowledgeBase(_))
        ));
    }
}
