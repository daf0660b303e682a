//! The [`Engine`]: retrieval, generation, attribution and receipts behind one object, and
//! the [`AskListener`] that streamed asks report to.

use std::sync::{Arc, RwLock};

use tribute::AskEvent;
use tribute::attribution::receipt::Ledger as RustLedger;
use tribute::inference::CancelToken;

use crate::error::{Result, TributeError, guard, request};
use crate::generator::Generator;
use crate::index::Index;
use crate::receipt::Signer;
use crate::types::{
    Answer, AskOptions, EngineOptions, Hit, JournaledReceipt, Ledger, ReceiptState, ReceiptStats,
    Retrieval, SearchMode, SettleReport, size,
};
use crate::{read, write};

/// Receives a streamed ask: the answer's text pieces as the model writes them, then the
/// finished answer with its citations and receipt.
///
/// The methods are called on the thread running the ask (a background thread for
/// `streamAsync`). An exception thrown by a method ends the stream; the ask then fails
/// with `TributeError.Internal` naming it.
#[uniffi::export(callback_interface)]
pub trait AskListener: Send + Sync {
    /// A piece of the answer's text. Return `false` to stop: generation stops after this
    /// piece, nothing is attributed or signed, and the ask returns no answer.
    fn on_text(&self, text: String) -> bool;
    /// The finished answer (the same value the ask returns).
    fn on_done(&self, answer: Answer);
}

/// The embeddable RAG-with-attribution engine: asks questions of a knowledge base and
/// returns answers with measured citation weights and a signed usage receipt.
///
/// Safe to use from several threads. `ask`, `stream` and `retrieve` block (call them off
/// the UI thread); `askAsync`, `streamAsync` and `settle` are async (Kotlin `suspend`,
/// Swift `async`) and run the work on Tribute's own worker threads. `release()` releases
/// the index and the journal.
#[derive(uniffi::Object)]
pub struct Engine {
    inner: RwLock<Option<tribute::Engine>>,
    index: Arc<Index>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

impl Engine {
    pub(crate) fn engine(&self) -> Result<tribute::Engine> {
        read(&self.inner)
            .clone()
            .ok_or_else(|| request("the engine is closed"))
    }

    fn ledger_of(e: &tribute::Engine) -> Option<RustLedger> {
        e.config().receipts.ledger
    }
}

/// Runs a streamed ask to its end, reporting to `listener`; `None` when the listener (or
/// the options' cancel token) stopped it. Dropping the stream stops generation.
fn run_stream(
    engine: &tribute::Engine,
    question: String,
    options: tribute::AskOptions,
    listener: &dyn AskListener,
) -> Result<Option<Answer>> {
    let ledger = Engine::ledger_of(engine);
    let cancel = options.cancel.clone();
    let stream = engine.ask(question).options(options).stream()?;
    drive_stream(stream, ledger, cancel, listener)
}

/// Runs a started stream to its end, reporting to `listener` (see [`run_stream`]).
pub(crate) fn drive_stream(
    stream: tribute::AskStream,
    ledger: Option<RustLedger>,
    cancel: Option<CancelToken>,
    listener: &dyn AskListener,
) -> Result<Option<Answer>> {
    for event in stream {
        if cancel.as_ref().is_some_and(CancelToken::is_cancelled) {
            return Ok(None);
        }
        match event? {
            AskEvent::Text(piece) => {
                if !listener.on_text(piece) {
                    return Ok(None);
                }
            }
            AskEvent::Done(answer) => {
                let answer = Answer::new(*answer, ledger);
                listener.on_done(answer.clone());
                return Ok(Some(answer));
            }
        }
    }
    Err(TributeError::Internal(
        "the stream ended without an answer".into(),
    ))
}

/// Runs blocking work on tokio's blocking pool, mapping a panic to `Internal`.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(move || guard(f))
        .await
        .map_err(|e| TributeError::Internal(format!("background task failed: {e}")))?
}

#[uniffi::export]
impl Engine {
    /// An engine over `index` (it takes the directory over: the `Index` handle then
    /// searches and ingests through the engine). `generator` defaults to loading the
    /// default SmolLM2; `signer` and `options.ledger` make answers carry signed receipts
    /// (without `signer`, a key in `$TRIBUTE_KEY` is used when set, as in the Rust
    /// library); `options.journal` is the receipt journal directory.
    ///
    /// Throws `Model` when a model cannot be loaded, `Config` for invalid options,
    /// `Receipt` when the journal cannot be opened.
    #[uniffi::constructor(default(generator = None, signer = None, options))]
    pub fn new(
        index: Arc<Index>,
        options: EngineOptions,
        generator: Option<Arc<Generator>>,
        signer: Option<Arc<Signer>>,
    ) -> Result<Arc<Self>> {
        guard(|| {
            let mut config = tribute::EngineConfig::default();
            options.apply(&mut config)?;
            let mut builder = tribute::Engine::builder();
            if let Some(g) = &generator {
                builder = builder.generator(g.inner.clone());
            }
            if let Some(s) = &signer {
                builder = builder.signer(s.key.clone());
            }
            let engine = index.handle.serve_engine(builder.config(config))?;
            Ok(Arc::new(Engine {
                inner: RwLock::new(Some(engine)),
                index,
            }))
        })
    }

    /// An engine from a TOML config file (relative paths resolved against the file); see
    /// the Rust `EngineConfig` for the keys. Its knowledge base is `index()`.
    #[uniffi::constructor]
    pub fn from_config(path: String) -> Result<Arc<Self>> {
        guard(|| {
            let engine = tribute::Engine::from_config_file(&path)?;
            let index = Arc::new(Index {
                handle: tribute::IndexHandle::for_engine(engine.clone()),
            });
            Ok(Arc::new(Engine {
                inner: RwLock::new(Some(engine)),
                index,
            }))
        })
    }

    /// Asks a question (blocking): retrieves chunks, generates an answer with the
    /// requested adapters merged, measures citation weights and signs a receipt. Unset
    /// options take the engine's defaults.
    ///
    /// Throws `Request` for an empty question or invalid options, `Adapter` for an
    /// unknown adapter.
    #[uniffi::method(default(options))]
    pub fn ask(&self, question: String, options: AskOptions) -> Result<Answer> {
        guard(|| {
            let engine = self.engine()?;
            let answer = engine.ask(question).options(options.try_into()?).run()?;
            Ok(Answer::new(answer, Engine::ledger_of(&engine)))
        })
    }

    /// Streams an ask (blocking): `listener.onText` for each piece of text, then
    /// `listener.onDone` with the finished answer, which is also returned. Returns no
    /// answer when the listener stopped the stream.
    #[uniffi::method(default(options))]
    pub fn stream(
        &self,
        question: String,
        options: AskOptions,
        listener: Box<dyn AskListener>,
    ) -> Result<Option<Answer>> {
        guard(|| {
            let engine = self.engine()?;
            run_stream(&engine, question, options.try_into()?, &*listener)
        })
    }

    /// Searches the knowledge base: the `k` best chunks, best first. Unset `mode` and
    /// `datanets` take the engine's configured ones.
    #[uniffi::method(default(k = 5, mode = None, datanets = None))]
    pub fn search(
        &self,
        query: String,
        k: u32,
        mode: Option<SearchMode>,
        datanets: Option<Vec<String>>,
    ) -> Result<Vec<Hit>> {
        guard(|| {
            let engine = self.engine()?;
            let options = tribute::SearchOptions {
                top_k: Some(size(k)),
                mode: mode.map(Into::into),
                datanets,
            };
            let hits = engine.search(query).options(options).run()?;
            Ok(hits.iter().map(Hit::from).collect())
        })
    }

    /// Retrieval only (for apps that generate elsewhere): the relevant hits among the `k`
    /// best (default: the engine's `top_k`), weighted by retrieval score, and with `sign`
    /// a signed, journaled retrieval receipt crediting their contributors.
    #[uniffi::method(default(k = None, datanets = None, sign = true))]
    pub fn retrieve(
        &self,
        query: String,
        k: Option<u32>,
        datanets: Option<Vec<String>>,
        sign: bool,
    ) -> Result<Retrieval> {
        guard(|| {
            let engine = self.engine()?;
            let mut request = engine.retrieve(query).sign(sign);
            if let Some(k) = k {
                request = request.top_k(size(k));
            }
            if let Some(d) = datanets {
                request = request.datanets(d);
            }
            let r = request.run()?;
            Ok(Retrieval::new(r, Engine::ledger_of(&engine)))
        })
    }

    /// The journaled receipts and their settlement states; `state` keeps only that
    /// state. Empty without a journal.
    #[uniffi::method(default(state = None))]
    pub fn receipts(&self, state: Option<ReceiptState>) -> Result<Vec<JournaledReceipt>> {
        guard(|| {
            let engine = self.engine()?;
            let ledger = Engine::ledger_of(&engine);
            let list = engine.receipts(state.map(Into::into))?;
            Ok(list
                .into_iter()
                .map(|j| JournaledReceipt::new(j.receipt, j.state, ledger))
                .collect())
        })
    }

    /// Receipt counts by state (all zero without a journal).
    pub fn receipt_stats(&self) -> Result<ReceiptStats> {
        guard(|| Ok(self.engine()?.receipt_stats()?.into()))
    }

    /// The knowledge base handle (searches and ingests through this engine).
    pub fn index(&self) -> Arc<Index> {
        self.index.clone()
    }

    /// The generator (shareable with other engines).
    pub fn generator(&self) -> Result<Arc<Generator>> {
        guard(|| {
            Ok(Arc::new(Generator {
                inner: self.engine()?.generator().cloned().ok_or_else(|| {
                    TributeError::Config(
                        "this engine has no generator (extractive, no model)".into(),
                    )
                })?,
            }))
        })
    }

    /// The payer's address, when a signing key is loaded.
    pub fn payer(&self) -> Result<Option<String>> {
        guard(|| Ok(self.engine()?.payer().map(|a| a.to_checksum(None))))
    }

    /// The ledger receipts are signed for, when one is configured.
    pub fn ledger(&self) -> Result<Option<Ledger>> {
        guard(|| {
            Ok(Engine::ledger_of(&self.engine()?)
                .as_ref()
                .map(Ledger::from))
        })
    }

    /// The model's name.
    pub fn model(&self) -> Result<String> {
        guard(|| Ok(self.engine()?.model().name.clone()))
    }

    /// The model's on-chain id (keccak-256 of its name, 0x-hex).
    pub fn model_id(&self) -> Result<String> {
        guard(|| Ok(self.engine()?.model().id.to_string()))
    }

    /// The whole configuration as JSON (the TOML file's structure).
    pub fn config_json(&self) -> Result<String> {
        guard(|| {
            serde_json::to_string(self.engine()?.config())
                .map_err(|e| TributeError::Internal(e.to_string()))
        })
    }

    /// Whether the engine is closed.
    pub fn is_closed(&self) -> bool {
        read(&self.inner).is_none()
    }

    /// Closes the engine and its index handle (later calls throw `Request`). The index
    /// and the journal are released once running asks are done with them.
    pub fn release(&self) {
        let engine = write(&self.inner).take();
        self.index.handle.close();
        drop(engine);
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl Engine {
    /// `ask` without blocking the caller: runs on a worker thread. Cancelling a Kotlin
    /// coroutine cancels the ask (nothing is signed); Swift task cancellation is not passed
    /// on by uniffi 0.32, so the ask then runs to its end.
    #[uniffi::method(default(options))]
    pub async fn ask_async(&self, question: String, options: AskOptions) -> Result<Answer> {
        let engine = self.engine()?;
        let options: tribute::AskOptions = options.try_into()?;
        let ledger = Engine::ledger_of(&engine);
        let answer = engine.ask(question).options(options).await?;
        Ok(Answer::new(answer, ledger))
    }

    /// `stream` without blocking the caller: the listener is called from a worker thread.
    /// Cancelling a Kotlin coroutine stops generation after the current piece (nothing is
    /// signed); from Swift, stop a stream by returning `false` from `onText`.
    #[uniffi::method(default(options))]
    pub async fn stream_async(
        &self,
        question: String,
        options: AskOptions,
        listener: Box<dyn AskListener>,
    ) -> Result<Option<Answer>> {
        let engine = self.engine()?;
        let mut options: tribute::AskOptions = options.try_into()?;
        // A cancelled coroutine drops this future: the guard then cancels the stream.
        let on_drop = options
            .cancel
            .get_or_insert_with(CancelToken::new)
            .drop_guard();
        let result = blocking(move || run_stream(&engine, question, options, &*listener)).await;
        on_drop.disarm();
        result
    }

    /// Settles the journal's pending receipts on the configured chain (`[chain]` and the
    /// ledger of a config file), in Merkle batches. Receipts stay pending when the chain
    /// is down. Needs the library built with the `onchain` feature; otherwise throws
    /// `Chain`.
    pub async fn settle(&self) -> Result<SettleReport> {
        let engine = self.engine()?;
        settle(engine).await
    }
}

#[cfg(feature = "onchain")]
async fn settle(engine: tribute::Engine) -> Result<SettleReport> {
    blocking(move || Ok(engine.settle_blocking()?.into())).await
}

#[cfg(not(feature = "onchain"))]
async fn settle(_engine: tribute::Engine) -> Result<SettleReport> {
    Err(TributeError::Chain(
        "this build of the Tribute library has no on-chain settlement: build tribute-ffi with \
         the `onchain` feature"
            .into(),
    ))
}
