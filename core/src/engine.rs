//! The [`Engine`]: retrieval, generation, attribution and receipts wired into one object.
//!
//! ```no_run
//! use tribute::{Engine, EngineConfig};
//!
//! let engine = Engine::builder().config(EngineConfig::default()).build()?;
//! let answer = engine.ask("How fast does the Zephyr autopilot correct its attitude?").top_k(3).run()?;
//! println!("{}", answer.cited_text);
//! for c in &answer.citations {
//!     println!("[{}] {:>5.1}% {} {}", c.marker, c.weight_bps as f64 / 100.0, c.contributor, c.title);
//! }
//! # Ok::<(), tribute::Error>(())
//! ```
//!
//! # What `ask` does
//!
//! 1. **Retrieve** `top_k` chunks (hybrid by default). Hits below the relevance floor
//!    ([`RetrievalConfig::min_similarity`](crate::config::RetrievalConfig)) are dropped;
//!    with none left the answer says the knowledge base has nothing on the question, the
//!    model is not run and no receipt is signed (unless `sign_without_sources`).
//! 2. **Prompt**: the system prompt, then the sources numbered `[1]…[n]` in rank order,
//!    then the question, through the model's chat template. The prompt never exceeds the
//!    budget (the model's context minus `max_tokens`, or `prompt_budget`): sources are
//!    dropped lowest-ranked first, and if the best source alone does not fit its text is cut.
//! 3. **Generate** with the requested adapters (merged with their weights).
//! 4. **Attribute** the answer to the sources with the chosen method (`loo` by default:
//!    the model re-scores its answer with each source hidden); weights in basis points
//!    summing to 10,000, and per-sentence supporting sources for inline markers.
//! 5. **Receipt**: with a signing key and a ledger, an EIP-712 usage receipt naming the
//!    model, adapters, query and answer hashes, the cited chunks with their contributors
//!    and weights, and the fee; signed, then appended to the journal (fsync) before `ask`
//!    returns.

use std::future::{Future, IntoFuture};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use alloy_primitives::{Address, B256, U256, keccak256};
use serde::Serialize;
use tribute_attribution::journal::{Journal, ReceiptState, StateKind};
use tribute_attribution::receipt::{
    AdapterUse, CitedChunk, Ledger, PayerKey, RECEIPT_VERSION, SignedReceipt, UsageReceipt,
    named_id,
};
use tribute_attribution::{Attribution, Method, Source};
use tribute_index::embedder::{EmbedderOptions, OnnxEmbedder};
use tribute_index::{Document, Embedder, Hit, Index, IndexConfig, IngestProgress, IngestReport};
use tribute_inference::{
    CancelToken, FinishReason, GenerateRequest, Generation, Generator, GeneratorOptions, Prompt,
};

use crate::config::EngineConfig;
use crate::error::{Error, Result};
use crate::rag::{DEFAULT_SYSTEM_PROMPT, EmbedderScorer, ModelScorer, PromptSource, RagPrompt};

/// What the engine answers when no source is relevant to the question.
pub const NO_SOURCES_ANSWER: &str =
    "I could not find anything about this in the knowledge base, so I cannot answer from it.";

/// Builds an [`Engine`]: start from a config (or the defaults) and override parts.
#[derive(Default)]
#[must_use = "call .build()"]
pub struct EngineBuilder {
    config: EngineConfig,
    generator: Option<Arc<Generator>>,
    embedder: Option<Arc<dyn Embedder>>,
    key: Option<PayerKey>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("config", &self.config)
            .field(
                "generator",
                &self.generator.as_ref().map(|g| g.dir().to_owned()),
            )
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Loads the configuration from a TOML file (relative paths resolved against it).
    pub fn config_file(mut self, path: impl AsRef<std::path::Path>) -> Result<Self> {
        self.config = EngineConfig::from_toml_file(path)?;
        Ok(self)
    }

    /// The knowledge base directory.
    pub fn index_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.index = dir.into();
        self
    }

    /// The generator's model directory.
    pub fn model_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.model = Some(dir.into());
        self
    }

    /// An already loaded generator (shared with other engines).
    pub fn generator(mut self, generator: Arc<Generator>) -> Self {
        self.generator = Some(generator);
        self
    }

    /// An embedder instead of loading `config.embedder`.
    pub fn embedder(mut self, embedder: Arc<dyn Embedder>) -> Self {
        self.embedder = Some(embedder);
        self
    }

    /// Registers a LoRA adapter (PEFT directory or `.onnx_adapter`).
    pub fn adapter(mut self, id: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        self.config.adapters.push(crate::config::AdapterConfig {
            id: id.into(),
            path: path.into(),
        });
        self
    }

    /// The default attribution method.
    pub fn method(mut self, method: Method) -> Self {
        self.config.attribution.method = method;
        self
    }

    /// The reward split used when settling.
    pub fn rewards(mut self, rewards: tribute_attribution::split::RewardConfig) -> Self {
        self.config.rewards = rewards;
        self
    }

    /// The payer's signing key (otherwise read from `receipts.key_env` or the keystore).
    pub fn signer(mut self, key: PayerKey) -> Self {
        self.key = Some(key);
        self
    }

    /// The ledger receipts are signed for.
    pub fn ledger(mut self, ledger: Ledger) -> Self {
        self.config.receipts.ledger = Some(ledger);
        self
    }

    /// The receipt journal directory.
    pub fn journal_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.receipts.journal = Some(dir.into());
        self
    }

    /// Where receipts are settled.
    pub fn chain(mut self, chain: crate::config::ChainConfig) -> Self {
        self.config.chain = Some(chain);
        self
    }

    /// Opens the index, loads the models and the key, opens the journal.
    pub fn build(self) -> Result<Engine> {
        let config = self.config;
        if config.retrieval.top_k == 0 {
            return Err(Error::Config("retrieval.top_k must be at least 1".into()));
        }
        let fee = U256::from_str_radix(config.receipts.fee_wei.trim(), 10).map_err(|e| {
            Error::Config(format!(
                "receipts.fee_wei {:?} is not a decimal amount of wei: {e}",
                config.receipts.fee_wei
            ))
        })?;
        let retrieval_fee = U256::from_str_radix(config.receipts.retrieval_fee_wei.trim(), 10)
            .map_err(|e| {
                Error::Config(format!(
                    "receipts.retrieval_fee_wei {:?} is not a decimal amount of wei: {e}",
                    config.receipts.retrieval_fee_wei
                ))
            })?;
        let embedder = match (self.embedder, config.bm25_only) {
            (Some(e), _) => Some(e),
            (None, true) => None,
            (None, false) => {
                let dir = config
                    .embedder
                    .clone()
                    .unwrap_or_else(tribute_index::embedder::default_model_dir);
                Some(
                    Arc::new(OnnxEmbedder::from_dir(&dir, EmbedderOptions::default())?)
                        as Arc<dyn Embedder>,
                )
            }
        };
        let index = Index::open(&config.index, embedder.clone(), IndexConfig::default())?;
        let generator = match self.generator {
            Some(g) => g,
            None => {
                let dir = config
                    .model
                    .clone()
                    .unwrap_or_else(tribute_inference::default_model_dir);
                let options = GeneratorOptions {
                    device: config.generation.device.parse()?,
                    sessions: config.generation.sessions.max(1),
                    ..GeneratorOptions::default()
                };
                Arc::new(Generator::load_with(&dir, options)?)
            }
        };
        for a in &config.adapters {
            generator.add_adapter(a.id.clone(), &a.path)?;
        }
        let key = match self.key {
            Some(k) => Some(k),
            None => load_key(&config)?,
        };
        let journal = match &config.receipts.journal {
            Some(dir) => Some(Journal::open(dir)?),
            None => None,
        };
        let serving_node = match &config.receipts.serving_node {
            Some(a) => Some(
                tribute_attribution::split::parse_address(a)
                    .map_err(|e| Error::Config(format!("receipts.serving_node: {e}")))?,
            ),
            None => None,
        };
        let model_name = generator.config().name.clone().unwrap_or_else(|| {
            generator
                .dir()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into())
        });
        let first_nonce = journal
            .as_ref()
            .and_then(|j| j.receipts(None).map(|(r, _)| r.receipt.nonce).max())
            .map_or(0, |n| n + 1);
        Ok(Engine {
            inner: Arc::new(Inner {
                model_id: named_id(&model_name),
                model_name,
                index: RwLock::new(index),
                embedder,
                generator,
                key,
                journal: journal.map(Mutex::new),
                fee,
                retrieval_fee,
                serving_node,
                nonce: AtomicU64::new(first_nonce),
                config,
            }),
        })
    }
}

/// The key from the config: the keystore if one is set, else `key_env` if it is set.
fn load_key(config: &EngineConfig) -> Result<Option<PayerKey>> {
    let r = &config.receipts;
    if let Some(path) = &r.keystore {
        let password = std::env::var(&r.keystore_password_env).map_err(|_| {
            Error::Config(format!(
                "receipts.keystore is set but {} (its password) is not",
                r.keystore_password_env
            ))
        })?;
        return Ok(Some(PayerKey::from_keystore(path, &password)?));
    }
    if std::env::var_os(&r.key_env).is_some() {
        return Ok(Some(PayerKey::from_env(&r.key_env)?));
    }
    Ok(None)
}

/// The embeddable RAG-with-attribution engine. Cheap to clone (shared state); `Send +
/// Sync`, so one engine serves concurrent asks.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    config: EngineConfig,
    index: RwLock<Index>,
    embedder: Option<Arc<dyn Embedder>>,
    generator: Arc<Generator>,
    key: Option<PayerKey>,
    journal: Option<Mutex<Journal>>,
    model_name: String,
    model_id: B256,
    fee: U256,
    retrieval_fee: U256,
    serving_node: Option<Address>,
    nonce: AtomicU64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("index", &self.inner.config.index)
            .field("model", &self.inner.model_name)
            .field("payer", &self.inner.key.as_ref().map(PayerKey::address))
            .field("ledger", &self.inner.config.receipts.ledger)
            .finish_non_exhaustive()
    }
}

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
}

/// One sentence of the answer and the sources that support it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnswerSentence {
    /// The sentence.
    pub text: String,
    /// Its byte range in [`Answer::text`].
    pub span: std::ops::Range<usize>,
    /// Its character range in [`Answer::text`].
    pub char_span: std::ops::Range<usize>,
    /// The markers of its supporting sources, strongest first.
    pub markers: Vec<usize>,
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
    /// The answer as generated.
    pub text: String,
    /// The answer with inline markers (`… [2]`) after each supported sentence.
    pub cited_text: String,
    /// The cited sources, by weight (highest first); weights sum to 10,000 (empty when no
    /// source was used).
    pub citations: Vec<Citation>,
    /// The answer's sentences with their supporting sources.
    pub sentences: Vec<AnswerSentence>,
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

/// Options of one ask; unset fields take the engine's config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AskOptions {
    /// Chunks to retrieve.
    pub top_k: Option<usize>,
    /// Retrieval mode.
    pub mode: Option<tribute_index::Mode>,
    /// Only these datanets.
    pub datanets: Option<Vec<String>>,
    /// Adapters and their merge weights.
    pub adapters: Vec<(String, f32)>,
    /// Attribution method.
    pub method: Option<Method>,
    /// Fee in wei.
    pub fee: Option<U256>,
    /// Most answer tokens.
    pub max_tokens: Option<usize>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Sampling seed.
    pub seed: Option<u64>,
    /// Cancels the ask from another thread: generation stops after the current step and
    /// the ask returns [`Error::Cancelled`] without attributing or signing anything.
    pub cancel: Option<CancelToken>,
}

/// An ask being set up: `engine.ask(q).top_k(3).run()` (blocking), `.stream()`, or
/// `.await` (async: runs on tokio's blocking pool).
#[derive(Debug)]
#[must_use = "call .run(), .stream() or .await"]
pub struct AskRequest<'a> {
    engine: &'a Engine,
    question: String,
    options: AskOptions,
}

impl AskRequest<'_> {
    /// Chunks to retrieve.
    pub fn top_k(mut self, k: usize) -> Self {
        self.options.top_k = Some(k);
        self
    }

    /// Retrieval mode.
    pub fn mode(mut self, mode: tribute_index::Mode) -> Self {
        self.options.mode = Some(mode);
        self
    }

    /// Only these datanets.
    pub fn datanets<I: IntoIterator<Item = S>, S: Into<String>>(mut self, d: I) -> Self {
        self.options.datanets = Some(d.into_iter().map(Into::into).collect());
        self
    }

    /// Adapters (registered ids) merged with these weights.
    pub fn adapters<I: IntoIterator<Item = (S, f32)>, S: Into<String>>(mut self, a: I) -> Self {
        self.options.adapters = a.into_iter().map(|(id, w)| (id.into(), w)).collect();
        self
    }

    /// Attribution method.
    pub fn method(mut self, method: Method) -> Self {
        self.options.method = Some(method);
        self
    }

    /// Fee in wei.
    pub fn fee(mut self, fee: U256) -> Self {
        self.options.fee = Some(fee);
        self
    }

    /// Most answer tokens.
    pub fn max_tokens(mut self, n: usize) -> Self {
        self.options.max_tokens = Some(n);
        self
    }

    /// Sampling temperature (0: greedy).
    pub fn temperature(mut self, t: f32) -> Self {
        self.options.temperature = Some(t);
        self
    }

    /// Sampling seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.options.seed = Some(seed);
        self
    }

    /// Lets another thread cancel the ask (see [`AskOptions::cancel`]). Awaiting an ask
    /// and dropping the future also cancels it.
    pub fn cancel_token(mut self, token: CancelToken) -> Self {
        self.options.cancel = Some(token);
        self
    }

    /// All options at once.
    pub fn options(mut self, options: AskOptions) -> Self {
        self.options = options;
        self
    }

    /// Runs the ask on this thread.
    pub fn run(self) -> Result<Answer> {
        self.engine.ask_with(&self.question, &self.options)
    }

    /// Streams the answer: text pieces as the model writes them, then the finished
    /// [`Answer`] (citations, receipt).
    pub fn stream(self) -> Result<AskStream> {
        self.engine.stream_with(&self.question, &self.options)
    }
}

impl IntoFuture for AskRequest<'_> {
    type Output = Result<Answer>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Answer>> + Send>>;

    /// Runs the ask on tokio's blocking pool (needs a tokio runtime). Dropping the future
    /// before it completes cancels the ask.
    fn into_future(self) -> Self::IntoFuture {
        let engine = self.engine.clone();
        let (question, mut options) = (self.question, self.options);
        let token = options.cancel.get_or_insert_with(CancelToken::new).clone();
        Box::pin(async move {
            let guard = token.drop_guard();
            let result = tokio::task::spawn_blocking(move || engine.ask_with(&question, &options))
                .await
                .map_err(|e| Error::Task(e.to_string()))?;
            guard.disarm();
            result
        })
    }
}

/// An event of a streamed ask.
#[derive(Debug, Clone, PartialEq)]
pub enum AskEvent {
    /// A piece of the answer's text.
    Text(String),
    /// The finished answer with citations and receipt (the last event).
    Done(Box<Answer>),
}

/// A streamed ask: [`AskEvent::Text`] pieces, then [`AskEvent::Done`].
pub struct AskStream {
    engine: Engine,
    state: StreamState,
}

enum StreamState {
    Generating {
        prepared: Box<Prepared>,
        stream: Box<tribute_inference::TextStream>,
    },
    NoSources(Box<Answer>),
    NoSourcesDone(Box<Answer>),
    Finished,
}

impl std::fmt::Debug for AskStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AskStream").finish_non_exhaustive()
    }
}

impl Iterator for AskStream {
    type Item = Result<AskEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        match std::mem::replace(&mut self.state, StreamState::Finished) {
            StreamState::Finished => None,
            StreamState::NoSources(answer) => {
                // The text first, then Done on the next call.
                let text = answer.text.clone();
                self.state = StreamState::NoSourcesDone(answer);
                Some(Ok(AskEvent::Text(text)))
            }
            StreamState::NoSourcesDone(answer) => Some(Ok(AskEvent::Done(answer))),
            StreamState::Generating {
                prepared,
                mut stream,
            } => match stream.next() {
                Some(Ok(piece)) => {
                    self.state = StreamState::Generating { prepared, stream };
                    Some(Ok(AskEvent::Text(piece)))
                }
                Some(Err(e)) => Some(Err(e.into())),
                None => {
                    let generation = stream.generation();
                    // Give the session back before attribution needs one.
                    drop(stream);
                    let Some(generation) = generation else {
                        return Some(Err(Error::Task("the generation ended unfinished".into())));
                    };
                    Some(
                        self.engine
                            .finish(*prepared, generation)
                            .map(|a| AskEvent::Done(Box::new(a))),
                    )
                }
            },
        }
    }
}

impl Prepared {
    fn check_cancelled(&self) -> Result<()> {
        match &self.options.cancel {
            Some(t) if t.is_cancelled() => Err(Error::Cancelled),
            _ => Ok(()),
        }
    }
}

/// Retrieval and prompt of an ask, before generation.
struct Prepared {
    question: String,
    options: AskOptions,
    started: Instant,
    hits: Vec<Hit>,
    retrieved: usize,
    dropped: usize,
    truncated: bool,
    prompt: RagPrompt,
    timings: StageTimings,
}

impl Engine {
    /// A builder starting from the default config.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// An engine from a TOML config file.
    pub fn from_config_file(path: impl AsRef<std::path::Path>) -> Result<Engine> {
        Engine::builder().config_file(path)?.build()
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The generator.
    pub fn generator(&self) -> &Arc<Generator> {
        &self.inner.generator
    }

    /// The model's name and on-chain id.
    pub fn model(&self) -> (&str, B256) {
        (&self.inner.model_name, self.inner.model_id)
    }

    /// The payer's address, when a signing key is loaded.
    pub fn payer(&self) -> Option<Address> {
        self.inner.key.as_ref().map(PayerKey::address)
    }

    /// Asks a question; set options on the returned request, then `.run()`, `.stream()`
    /// or `.await`.
    pub fn ask(&self, question: impl Into<String>) -> AskRequest<'_> {
        AskRequest {
            engine: self,
            question: question.into(),
            options: AskOptions::default(),
        }
    }

    /// Searches the knowledge base (the configured mode and datanets).
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<Hit>> {
        self.search_with(query, k, None, None)
    }

    /// Searches with an explicit retrieval `mode` and `datanets` filter; `None` takes the
    /// configured ones (an empty `datanets` slice searches every datanet).
    pub fn search_with(
        &self,
        query: &str,
        k: usize,
        mode: Option<tribute_index::Mode>,
        datanets: Option<&[String]>,
    ) -> Result<Vec<Hit>> {
        let cfg = &self.inner.config.retrieval;
        let datanets = datanets.unwrap_or(&cfg.datanets);
        let index = self.read_index()?;
        let mut req = index.search(query).k(k).mode(mode.unwrap_or(cfg.mode));
        if !datanets.is_empty() {
            req = req.datanets(datanets.iter().map(String::as_str));
        }
        Ok(req.execute()?)
    }

    /// Searches like [`Engine::search`], keeps the relevant hits and, with `sign`, signs and
    /// journals a retrieval receipt crediting their contributors (see [`Retrieval`]).
    pub fn retrieve(
        &self,
        query: &str,
        k: usize,
        datanets: Option<&[String]>,
        sign: bool,
    ) -> Result<Retrieval> {
        if query.trim().is_empty() {
            return Err(Error::InvalidRequest("the query is empty".into()));
        }
        if k == 0 {
            return Err(Error::InvalidRequest("k must be at least 1".into()));
        }
        let (hits, _) = self.relevant_hits_counted(query, k, None, datanets)?;
        let mut citations = Vec::new();
        if !hits.is_empty() {
            let scores: Vec<f64> = hits
                .iter()
                .map(|h| f64::from(h.dense.map_or(h.score, |d| d.score)).max(0.0))
                .collect();
            let bps = tribute_attribution::to_bps(&scores)
                .or_else(|_| tribute_attribution::to_bps(&vec![1.0; hits.len()]))?;
            for (i, (h, w)) in hits.iter().zip(bps).enumerate() {
                if w > 0 {
                    citations.push(citation(i + 1, w, h));
                }
            }
        }
        let (receipt, no_receipt) = if !sign {
            (None, Some("signing was not requested".into()))
        } else if hits.is_empty() && !self.inner.config.receipts.sign_without_sources {
            (
                None,
                Some("no source was relevant to the query, so nothing was cited or paid".into()),
            )
        } else {
            let ids: Vec<&str> = hits.iter().map(|h| h.chunk_id.as_str()).collect();
            let options = AskOptions {
                fee: Some(self.inner.retrieval_fee),
                ..AskOptions::default()
            };
            self.sign_receipt_for(B256::ZERO, query, &ids.join("\n"), &options, &citations)?
        };
        Ok(Retrieval {
            query: query.to_owned(),
            hits,
            citations,
            receipt,
            no_receipt,
        })
    }

    /// Settles the journal's pending receipts on the configured chain (`[chain]` and
    /// `receipts.ledger`), in batches; see `tribute_attribution::settle`. Receipts stay
    /// pending when the chain is down.
    #[cfg(feature = "onchain")]
    pub fn settle_blocking(&self) -> Result<tribute_attribution::settle::SettleReport> {
        use tribute_attribution::chain::LedgerClient;
        use tribute_attribution::settle::{SettleOptions, settle_journal};
        let inner = &self.inner;
        let chain = inner.config.chain.as_ref().ok_or_else(|| {
            Error::NoChain("set [chain] (rpc) in the config to settle receipts".into())
        })?;
        let ledger = inner.config.receipts.ledger.ok_or_else(|| {
            Error::NoChain("set receipts.ledger (chain id and contract) to settle".into())
        })?;
        let key = inner
            .key
            .as_ref()
            .ok_or_else(|| Error::NoChain("settling needs the payer's signing key".into()))?;
        let journal = inner
            .journal
            .as_ref()
            .ok_or_else(|| Error::NoChain("settling needs a receipt journal".into()))?;
        let parse = |what: &str, a: &Option<String>| -> Result<Option<Address>> {
            a.as_deref()
                .map(|a| {
                    tribute_attribution::split::parse_address(a)
                        .map_err(|e| Error::Config(format!("chain.{what}: {e}")))
                })
                .transpose()
        };
        let mut options =
            SettleOptions::new(parse("treasury", &chain.treasury)?.unwrap_or(key.address()));
        options.fallback_owner = parse("fallback_owner", &chain.fallback_owner)?;
        options.batch_size = chain.batch_size.max(1);
        options.rewards = inner.config.rewards.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Task(format!("tokio runtime: {e}")))?;
        let mut journal = journal
            .lock()
            .map_err(|_| Error::Task("the journal lock is poisoned".into()))?;
        let timeout = std::time::Duration::from_secs(chain.timeout_s.max(1));
        runtime.block_on(async {
            let client = LedgerClient::connect(&chain.rpc, key.signer().clone(), ledger)
                .await
                .map_err(tribute_attribution::settle::SettleError::from)?
                .with_timeout(timeout);
            Ok(settle_journal(&client, &mut journal, key, &options).await?)
        })
    }

    /// [`Engine::settle_blocking`] on tokio's blocking pool.
    #[cfg(feature = "onchain")]
    pub async fn settle(&self) -> Result<tribute_attribution::settle::SettleReport> {
        let engine = self.clone();
        tokio::task::spawn_blocking(move || engine.settle_blocking())
            .await
            .map_err(|e| Error::Task(e.to_string()))?
    }

    /// Adds documents to the knowledge base.
    pub fn add_documents(
        &self,
        docs: Vec<Document>,
        progress: Option<&dyn Fn(&IngestProgress)>,
    ) -> Result<IngestReport> {
        let mut index = self
            .inner
            .index
            .write()
            .map_err(|_| Error::Task("the index lock is poisoned".into()))?;
        Ok(index.add_documents(docs, progress)?)
    }

    /// Deletes a document and its chunks from the knowledge base; returns whether it
    /// existed. Receipts that cited it keep their content hashes.
    pub fn delete_document(&self, doc_id: &str) -> Result<bool> {
        let mut index = self
            .inner
            .index
            .write()
            .map_err(|_| Error::Task("the index lock is poisoned".into()))?;
        Ok(index.delete(&doc_id.into())?)
    }

    /// Documents and chunks in the knowledge base.
    pub fn index_size(&self) -> Result<(usize, usize)> {
        let index = self.read_index()?;
        Ok((index.document_count(), index.chunk_count()))
    }

    /// The journaled receipts and their settlement states (optionally one state only).
    pub fn receipts(&self, state: Option<StateKind>) -> Result<Vec<(SignedReceipt, ReceiptState)>> {
        let Some(journal) = &self.inner.journal else {
            return Ok(Vec::new());
        };
        let j = journal
            .lock()
            .map_err(|_| Error::Task("the journal lock is poisoned".into()))?;
        Ok(j.receipts(state).map(|(r, s)| (r.clone(), *s)).collect())
    }

    /// Receipt counts by state.
    pub fn receipt_stats(&self) -> Result<tribute_attribution::journal::Stats> {
        let Some(journal) = &self.inner.journal else {
            return Ok(Default::default());
        };
        let j = journal
            .lock()
            .map_err(|_| Error::Task("the journal lock is poisoned".into()))?;
        Ok(j.stats())
    }

    fn read_index(&self) -> Result<std::sync::RwLockReadGuard<'_, Index>> {
        self.inner
            .index
            .read()
            .map_err(|_| Error::Task("the index lock is poisoned".into()))
    }

    /// Searches and keeps the hits above the relevance floor; also returns how many the
    /// search returned.
    fn relevant_hits_counted(
        &self,
        query: &str,
        k: usize,
        mode: Option<tribute_index::Mode>,
        datanets: Option<&[String]>,
    ) -> Result<(Vec<Hit>, usize)> {
        let hits = self.search_with(query, k, mode, datanets)?;
        let retrieved = hits.len();
        let floor = self.inner.config.retrieval.min_similarity;
        let has_embedder = self.inner.embedder.is_some();
        let hits = hits
            .into_iter()
            .filter(|h| match h.dense {
                Some(d) => d.score >= floor,
                None => h.bm25.is_some() && !has_embedder,
            })
            .collect();
        Ok((hits, retrieved))
    }

    fn ask_with(&self, question: &str, options: &AskOptions) -> Result<Answer> {
        match self.prepare(question, options)? {
            Err(no_sources) => Ok(*no_sources),
            Ok(prepared) => {
                prepared.check_cancelled()?;
                let request = self.generate_request(&prepared);
                let generation = self.inner.generator.generate(&request)?;
                self.finish(prepared, generation)
            }
        }
    }

    fn stream_with(&self, question: &str, options: &AskOptions) -> Result<AskStream> {
        let state = match self.prepare(question, options)? {
            Err(no_sources) => StreamState::NoSources(no_sources),
            Ok(prepared) => {
                prepared.check_cancelled()?;
                let request = self.generate_request(&prepared);
                let stream = Box::new(self.inner.generator.stream(&request)?);
                StreamState::Generating {
                    prepared: Box::new(prepared),
                    stream,
                }
            }
        };
        Ok(AskStream {
            engine: self.clone(),
            state,
        })
    }

    fn generate_request(&self, p: &Prepared) -> GenerateRequest {
        let g = &self.inner.config.generation;
        let mut r = GenerateRequest::new(Prompt::Tokens(p.prompt.tokens.clone()))
            .max_tokens(p.options.max_tokens.unwrap_or(g.max_tokens))
            .temperature(p.options.temperature.unwrap_or(g.temperature))
            .seed(p.options.seed.unwrap_or(g.seed));
        for (id, w) in &p.options.adapters {
            r = r.adapter(id.clone(), *w);
        }
        if let Some(t) = &p.options.cancel {
            r = r.cancel_token(t.clone());
        }
        r
    }

    /// Retrieval and prompt. `Err(answer)`: no relevant source, the finished answer.
    #[allow(clippy::type_complexity)]
    fn prepare(
        &self,
        question: &str,
        options: &AskOptions,
    ) -> Result<std::result::Result<Prepared, Box<Answer>>> {
        let started = Instant::now();
        let cfg = &self.inner.config;
        if question.trim().is_empty() {
            return Err(Error::InvalidRequest("the question is empty".into()));
        }
        for (id, w) in &options.adapters {
            if !w.is_finite() {
                return Err(Error::InvalidRequest(format!(
                    "adapter {id:?} has a non-finite weight"
                )));
            }
        }
        let top_k = options.top_k.unwrap_or(cfg.retrieval.top_k);
        if top_k == 0 {
            return Err(Error::InvalidRequest("top_k must be at least 1".into()));
        }
        let mode = options.mode.unwrap_or(cfg.retrieval.mode);
        let datanets = options.datanets.clone();
        let datanets = datanets.as_deref();
        let mut timings = StageTimings::default();

        let t = Instant::now();
        let (hits, retrieved) =
            self.relevant_hits_counted(question, top_k, Some(mode), datanets)?;
        timings.retrieval_ms = ms(t);

        if hits.is_empty() {
            return Ok(Err(Box::new(self.no_sources_answer(
                question, options, retrieved, started, timings,
            )?)));
        }

        let t = Instant::now();
        let system = cfg
            .generation
            .system_prompt
            .as_deref()
            .unwrap_or(DEFAULT_SYSTEM_PROMPT);
        let max_tokens = options.max_tokens.unwrap_or(cfg.generation.max_tokens);
        let context = self.inner.generator.config().context_length;
        let budget = cfg
            .generation
            .prompt_budget
            .unwrap_or_else(|| context.saturating_sub(max_tokens))
            .min(context.saturating_sub(1));
        let (prompt, hits, dropped, truncated) = self.fit_prompt(system, question, hits, budget)?;
        timings.prompt_ms = ms(t);
        Ok(Ok(Prepared {
            question: question.to_owned(),
            options: options.clone(),
            started,
            hits,
            retrieved,
            dropped,
            truncated,
            prompt,
            timings,
        }))
    }

    /// Builds the prompt within `budget` tokens: drops the lowest-ranked sources, then cuts
    /// the last one's text.
    fn fit_prompt(
        &self,
        system: &str,
        question: &str,
        mut hits: Vec<Hit>,
        budget: usize,
    ) -> Result<(RagPrompt, Vec<Hit>, usize, bool)> {
        let g = &self.inner.generator;
        let sources = |hits: &[Hit]| -> Vec<PromptSource> {
            hits.iter()
                .map(|h| PromptSource {
                    title: h.title.clone(),
                    text: h.text.clone(),
                })
                .collect()
        };
        let mut dropped = 0;
        loop {
            let prompt = RagPrompt::build(g, system, question, &sources(&hits))?;
            if prompt.tokens.len() <= budget {
                return Ok((prompt, hits, dropped, false));
            }
            if hits.len() == 1 {
                break;
            }
            hits.pop();
            dropped += 1;
        }
        // One source, still too long: cut its text to fit.
        let mut src = sources(&hits);
        for _ in 0..8 {
            let prompt = RagPrompt::build(g, system, question, &src)?;
            let n = prompt.tokens.len();
            if n <= budget {
                hits[0].chunk.text = src[0].text.clone();
                return Ok((prompt, hits, dropped, true));
            }
            let shown = prompt.source_tokens[0].len().max(1);
            let excess = n - budget;
            if excess >= shown {
                break;
            }
            let text = &src[0].text;
            let keep = text.len() * (shown - excess).saturating_sub(4) / shown;
            let mut cut = keep.min(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            if cut == 0 {
                break;
            }
            src[0].text = text[..cut].to_owned();
        }
        Err(Error::InvalidRequest(format!(
            "the question and system prompt leave no room for a source within the \
             {budget}-token prompt budget"
        )))
    }

    fn no_sources_answer(
        &self,
        question: &str,
        options: &AskOptions,
        retrieved: usize,
        started: Instant,
        mut timings: StageTimings,
    ) -> Result<Answer> {
        let text = NO_SOURCES_ANSWER.to_owned();
        let t = Instant::now();
        let (receipt, no_receipt) = if self.inner.config.receipts.sign_without_sources {
            self.sign_receipt(question, &text, options, &[])?
        } else {
            (
                None,
                Some("no source was relevant to the question, so nothing was cited or paid".into()),
            )
        };
        timings.receipt_ms = ms(t);
        timings.total_ms = ms(started);
        Ok(Answer {
            question: question.to_owned(),
            cited_text: text.clone(),
            sentences: Vec::new(),
            citations: Vec::new(),
            adapters: options.adapters.clone(),
            usage: Usage {
                sources_retrieved: retrieved,
                timings,
                ..Usage::default()
            },
            receipt,
            no_receipt,
            text,
        })
    }

    /// Attribution and receipt of a finished generation.
    fn finish(&self, p: Prepared, generation: Generation) -> Result<Answer> {
        if generation.finish_reason == FinishReason::Cancelled {
            return Err(Error::Cancelled);
        }
        p.check_cancelled()?;
        let g = &self.inner.generator;
        let mut timings = p.timings;
        timings.prefill_ms = generation.timings.prefill.as_secs_f64() * 1e3;
        timings.decode_ms = generation.timings.decode.as_secs_f64() * 1e3;
        let eos = &g.config().eos_token_ids;
        let mut tokens = generation.tokens.clone();
        while tokens.last().is_some_and(|t| eos.contains(t)) {
            tokens.pop();
        }
        let text = g.tokenizer().decode(&tokens, true)?;

        let t = Instant::now();
        let method = p
            .options
            .method
            .unwrap_or(self.inner.config.attribution.method);
        let attribution = if text.trim().is_empty() {
            None
        } else {
            Some(self.attribute(method, &p, &text, tokens.clone())?)
        };
        timings.attribution_ms = ms(t);
        p.check_cancelled()?;

        let mut citations: Vec<Citation> = Vec::new();
        let mut sentences = Vec::new();
        let cited_text = match &attribution {
            Some(a) => {
                for (i, (h, &w)) in p.hits.iter().zip(&a.weights_bps).enumerate() {
                    if w > 0 {
                        citations.push(citation(i + 1, w, h));
                    }
                }
                citations.sort_by(|x, y| {
                    y.weight_bps
                        .cmp(&x.weight_bps)
                        .then(x.marker.cmp(&y.marker))
                });
                sentences = a
                    .sentences
                    .iter()
                    .map(|s| AnswerSentence {
                        text: text.get(s.span.clone()).unwrap_or_default().to_owned(),
                        span: s.span.clone(),
                        char_span: s.char_span.clone(),
                        markers: s.sources.iter().map(|i| i + 1).collect(),
                    })
                    .collect();
                a.render(&text, |i| format!(" [{}]", i + 1))
            }
            None => text.clone(),
        };

        let t = Instant::now();
        let (receipt, no_receipt) =
            self.sign_receipt(&p.question, &text, &p.options, &citations)?;
        timings.receipt_ms = ms(t);
        timings.total_ms = ms(p.started);
        Ok(Answer {
            question: p.question,
            cited_text,
            citations,
            sentences,
            adapters: p.options.adapters.clone(),
            usage: Usage {
                prompt_tokens: p.prompt.tokens.len(),
                answer_tokens: tokens.len(),
                sources_retrieved: p.retrieved,
                sources_used: p.hits.len(),
                sources_dropped: p.dropped,
                source_truncated: p.truncated,
                method: attribution.as_ref().map(|a| a.method),
                attribution_passes: attribution.as_ref().map_or(0, |a| a.model_passes),
                timings,
            },
            receipt,
            no_receipt,
            text,
        })
    }

    fn attribute(
        &self,
        method: Method,
        p: &Prepared,
        text: &str,
        tokens: Vec<u32>,
    ) -> Result<Attribution> {
        let sources: Vec<Source> = p
            .hits
            .iter()
            .map(|h| {
                Source::new(h.chunk_id.as_str(), h.text.clone())
                    .with_contributor(h.contributor.address())
                    .with_content_hash(h.content_hash.as_b256())
                    .with_retrieval_score(f64::from(h.score))
            })
            .collect();
        let cfg = &self.inner.config.attribution.config;
        let embedder = self.inner.embedder.clone().map(EmbedderScorer);
        let embedder_ref = embedder
            .as_ref()
            .map(|e| e as &dyn tribute_attribution::TextEmbedder);
        if method.needs_model() {
            let scorer = ModelScorer::from_tokens(
                &self.inner.generator,
                &p.prompt,
                tokens,
                p.options.adapters.clone(),
            )?;
            Ok(tribute_attribution::attribute(
                method,
                text,
                &sources,
                Some(&scorer),
                embedder_ref,
                cfg,
            )?)
        } else {
            Ok(tribute_attribution::attribute(
                method,
                text,
                &sources,
                None,
                embedder_ref,
                cfg,
            )?)
        }
    }

    fn sign_receipt(
        &self,
        question: &str,
        answer: &str,
        options: &AskOptions,
        citations: &[Citation],
    ) -> Result<(Option<SignedReceipt>, Option<String>)> {
        self.sign_receipt_for(self.inner.model_id, question, answer, options, citations)
    }

    /// Signs and journals the receipt of an answer, or says why there is none.
    fn sign_receipt_for(
        &self,
        model_id: B256,
        question: &str,
        answer: &str,
        options: &AskOptions,
        citations: &[Citation],
    ) -> Result<(Option<SignedReceipt>, Option<String>)> {
        let inner = &self.inner;
        let Some(key) = &inner.key else {
            return Ok((
                None,
                Some(format!(
                    "no signing key: set {} (hex) or a keystore to sign receipts",
                    inner.config.receipts.key_env
                )),
            ));
        };
        let Some(ledger) = inner.config.receipts.ledger else {
            return Ok((
                None,
                Some("no ledger configured (receipts.ledger: chain id and contract)".into()),
            ));
        };
        // Chunks with a contributor; weights renormalised over them (anonymous chunks' share
        // goes to the contributor pool's fallback, the treasury, at settlement).
        let named: Vec<&Citation> = citations
            .iter()
            .filter(|c| c.contributor != Address::ZERO.to_checksum(None))
            .collect();
        let bps = if named.is_empty() {
            Vec::new()
        } else {
            tribute_attribution::to_bps(
                &named
                    .iter()
                    .map(|c| f64::from(c.weight_bps))
                    .collect::<Vec<_>>(),
            )?
        };
        let mut chunks = Vec::with_capacity(named.len());
        for (c, w) in named.iter().zip(bps) {
            if w == 0 {
                continue;
            }
            chunks.push(CitedChunk {
                contentHash: c.content_hash.parse().map_err(|_| {
                    Error::Task(format!("content hash {:?} does not parse", c.content_hash))
                })?,
                contributor: c.contributor.parse().map_err(|_| {
                    Error::Task(format!("contributor {:?} does not parse", c.contributor))
                })?,
                weightBps: w as u16,
            });
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let nonce = inner.nonce.fetch_add(1, Ordering::Relaxed);
        let query_hash = keccak256(question.as_bytes());
        let answer_hash = keccak256(answer.as_bytes());
        let mut id_input = Vec::with_capacity(128);
        id_input.extend_from_slice(key.address().as_slice());
        id_input.extend_from_slice(&nonce.to_be_bytes());
        id_input.extend_from_slice(&now.as_nanos().to_be_bytes());
        id_input.extend_from_slice(&std::process::id().to_be_bytes());
        id_input.extend_from_slice(query_hash.as_slice());
        id_input.extend_from_slice(answer_hash.as_slice());
        let receipt = UsageReceipt {
            version: RECEIPT_VERSION,
            receiptId: keccak256(&id_input),
            payer: key.address(),
            servingNode: inner.serving_node.unwrap_or_else(|| key.address()),
            modelId: model_id,
            adapters: options
                .adapters
                .iter()
                .map(|(id, w)| AdapterUse {
                    adapterId: named_id(id),
                    weightMicros: (f64::from(*w) * 1e6).round() as i32,
                })
                .collect(),
            queryHash: query_hash,
            answerHash: answer_hash,
            chunks,
            fee: options.fee.unwrap_or(inner.fee),
            nonce,
            timestamp: now.as_secs(),
        };
        let signed = key.sign(receipt, &ledger)?;
        if let Some(journal) = &inner.journal {
            journal
                .lock()
                .map_err(|_| Error::Task("the journal lock is poisoned".into()))?
                .append(&signed)?;
        }
        Ok((Some(signed), None))
    }
}

fn citation(marker: usize, weight_bps: u32, h: &Hit) -> Citation {
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
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Engine>();
    fn send<T: Send>() {}
    send::<AskStream>();
}
