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

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use alloy_primitives::{Address, B256};
use serde::Serialize;
use tribute_attribution::journal::JournalBackend;
use tribute_attribution::receipt::PayerKey;
use tribute_index::{Document, Embedder, Index, IngestProgress, IngestReport};
use tribute_inference::Generator;

use crate::config::EngineConfig;
use crate::error::{Error, Result};

mod answer;
mod ask;
mod builder;
mod conversation;
mod embeddings;
mod extractive;
mod receipts;
mod search;
mod session;
mod stream;

pub use answer::{Answer, AnswerSentence, Citation, Retrieval, StageTimings, Usage};
pub use ask::{AskOptions, AskRequest};
pub use builder::EngineBuilder;
pub use conversation::{Role, Turn};
pub use receipts::JournaledReceipt;
pub use search::{RetrieveRequest, SearchOptions, SearchRequest};
pub use session::{QueryRewrite, REWRITE_MAX_TOKENS, Session, SessionSource};
pub use stream::{AskEvent, AskStream};

/// What the engine answers when no source is relevant to the question.
pub const NO_SOURCES_ANSWER: &str =
    "I could not find anything about this in the knowledge base, so I cannot answer from it.";

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
    /// `None`: built for extractive answers without a model.
    generator: Option<Arc<Generator>>,
    key: Option<PayerKey>,
    journal: Option<Mutex<Box<dyn JournalBackend>>>,
    model: ModelInfo,
    nonce: AtomicU64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("index", &self.inner.config.index)
            .field("model", &self.inner.model.name)
            .field("payer", &self.inner.key.as_ref().map(PayerKey::address))
            .field("ledger", &self.inner.config.receipts.ledger)
            .finish_non_exhaustive()
    }
}

/// The generator's model as receipts name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ModelInfo {
    /// Its name (the model config's `name`, else its directory's name).
    pub name: String,
    /// Its on-chain id: [`named_id`](tribute_attribution::receipt::named_id) of the name.
    pub id: B256,
}

/// Documents and chunks in a knowledge base.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IndexSize {
    /// Documents.
    pub documents: usize,
    /// Chunks.
    pub chunks: usize,
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

    /// The generator; `None` when the engine was built with `answer_mode = "extractive"`
    /// and no model.
    pub fn generator(&self) -> Option<&Arc<Generator>> {
        self.inner.generator.as_ref()
    }

    /// The generator, or why there is none.
    pub(crate) fn loaded_generator(&self) -> Result<&Arc<Generator>> {
        self.inner.generator.as_ref().ok_or_else(|| {
            Error::Config(
                "this engine has no generator (answer_mode = \"extractive\" and no model): \
                 set `model` to generate answers"
                    .into(),
            )
        })
    }

    /// The model's name and on-chain id.
    pub fn model(&self) -> &ModelInfo {
        &self.inner.model
    }

    /// The payer's address, when a signing key is loaded.
    pub fn payer(&self) -> Option<Address> {
        self.inner.key.as_ref().map(PayerKey::address)
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
            .map_err(|_| Error::Poisoned("index"))?;
        Ok(index.add_documents(docs, progress)?)
    }

    /// Deletes a document and its chunks from the knowledge base; returns whether it
    /// existed. Receipts that cited it keep their content hashes.
    pub fn delete_document(&self, doc_id: &str) -> Result<bool> {
        let mut index = self
            .inner
            .index
            .write()
            .map_err(|_| Error::Poisoned("index"))?;
        Ok(index.delete(&doc_id.into())?)
    }

    /// A document of the knowledge base as it was added (text, title, datanet,
    /// contributor, license, metadata); `None` if there is none with this id. See
    /// [`tribute_index::Index::get_document`] for when the text is not kept.
    pub fn document(&self, doc_id: &str) -> Result<Option<tribute_index::Document>> {
        Ok(self.read_index()?.get_document(&doc_id.into())?)
    }

    /// Makes the knowledge base match the folder `dir`: new files added, changed ones
    /// replaced, removed ones deleted (see [`tribute_index::sync`]).
    pub fn sync_folder(
        &self,
        dir: &std::path::Path,
        options: tribute_index::LoadOptions,
        progress: Option<&dyn Fn(&tribute_index::SyncProgress)>,
    ) -> Result<tribute_index::SyncReport> {
        let mut index = self
            .inner
            .index
            .write()
            .map_err(|_| Error::Poisoned("index"))?;
        Ok(crate::index_handle::sync_index(
            &mut index, dir, options, progress,
        )?)
    }

    /// Documents and chunks in the knowledge base.
    pub fn index_size(&self) -> Result<IndexSize> {
        let index = self.read_index()?;
        Ok(IndexSize {
            documents: index.document_count(),
            chunks: index.chunk_count(),
        })
    }

    /// The knowledge base's embedder (none when BM25-only).
    pub(crate) fn embedder_handle(&self) -> Option<&Arc<dyn Embedder>> {
        self.inner.embedder.as_ref()
    }

    /// The receipt journal, when one is configured.
    pub(crate) fn journal_handle(&self) -> Option<&Mutex<Box<dyn JournalBackend>>> {
        self.inner.journal.as_ref()
    }

    pub(crate) fn read_index(&self) -> Result<std::sync::RwLockReadGuard<'_, Index>> {
        self.inner
            .index
            .read()
            .map_err(|_| Error::Poisoned("index"))
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
    is::<Session>();
}
