//! The [`Engine`]: retrieval, generation, attribution and receipts behind one object.

use std::path::PathBuf;
use std::sync::RwLock;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use tribute::attribution::journal::StateKind;
use tribute::attribution::receipt::Ledger;
use tribute::config::ChainConfig;
use tribute::{AskOptions, EngineConfig};

use tribute::inference::CancelToken;

use crate::answer::{Answer, AskStream, Retrieval, Starter};
use crate::error::{ConfigError, py_err, request};
use crate::generator::{Generator, adapters};
use crate::index::{Hit, Index};
use crate::quoted;
use crate::receipt::{Receipt, SettleReport, Signer, ledger_dict, ledger_from};
use crate::runtime::{coroutine, wait_interruptibly};
use crate::session::Session;

/// The embeddable RAG-with-attribution engine: asks questions of a knowledge base and
/// returns answers with measured citation weights and a signed usage receipt.
///
/// `index` is an `Index` (the engine takes its directory over: the `Index` handle then
/// searches and ingests through the engine, with the engine's retrieval mode) or a
/// directory (created if missing; `embedder` is then its embedding model directory, None
/// for the default MiniLM). `generator` defaults to loading the default SmolLM2.
/// `signer` and `ledger` (`{"chainId": …, "contract": "0x…"}` or a ledger JSON file) make
/// answers carry signed receipts — without `signer`, a key in `$TRIBUTE_KEY` is used
/// when set, as in the Rust library; `journal` is the receipt journal directory. `chain`
/// (an RPC URL, or a dict with `rpc`, `batch_size`, `treasury`, `fallback_owner`,
/// `timeout_secs`) is where `settle` pays the receipts.
/// `top_k`, `mode`, `method` and `max_tokens` set the defaults of `ask`.
///
/// Safe to use from several threads; every long call releases the GIL. Use it as a
/// context manager, or call `close()`, to release the index and the journal.
#[pyclass(module = "tribute", frozen)]
pub struct Engine {
    inner: RwLock<Option<tribute::Engine>>,
    index: Py<Index>,
}

/// Options of one ask from keyword arguments, and the token that cancels it.
#[allow(clippy::too_many_arguments)]
fn ask_options(
    adapters: Option<&Bound<'_, PyAny>>,
    method: Option<&str>,
    top_k: Option<usize>,
    mode: Option<&str>,
    datanets: Option<Vec<String>>,
    max_tokens: Option<usize>,
    temperature: Option<f32>,
    seed: Option<u64>,
    fee: Option<&Bound<'_, PyAny>>,
) -> PyResult<(AskOptions, CancelToken)> {
    let cancel = CancelToken::new();
    let options = AskOptions {
        top_k,
        mode: mode.map(|m| m.parse().map_err(py_err)).transpose()?,
        datanets,
        adapters: self::adapters(adapters)?,
        method: method.map(|m| m.parse().map_err(py_err)).transpose()?,
        fee: fee
            .map(|f| {
                let s = f.str()?.to_string();
                tribute::common::wei::parse_wei(&s).map_err(|e| request(format!("fee: {e}")))
            })
            .transpose()?,
        max_tokens,
        temperature,
        seed,
        cancel: Some(cancel.clone()),
        ..AskOptions::default()
    };
    Ok((options, cancel))
}

/// A retrieval with these keyword arguments, to run on an engine.
fn retrieve_request(
    query: String,
    k: Option<usize>,
    datanets: Option<Vec<String>>,
    sign: bool,
) -> impl FnOnce(&tribute::Engine) -> tribute::Result<tribute::Retrieval> + Send {
    move |engine| {
        let mut request = engine.retrieve(query).sign(sign);
        if let Some(k) = k {
            request = request.top_k(k);
        }
        if let Some(d) = datanets {
            request = request.datanets(d);
        }
        request.run()
    }
}

/// A chain config from an RPC URL or a dict of `ChainConfig` fields.
fn chain_config(obj: &Bound<'_, PyAny>) -> PyResult<ChainConfig> {
    if let Ok(rpc) = obj.extract::<String>() {
        return Ok(ChainConfig {
            rpc,
            ..ChainConfig::default()
        });
    }
    let bad = |e: &dyn std::fmt::Display| ConfigError::new_err(format!("chain: {e}"));
    if !obj.is_instance_of::<PyDict>() {
        return Err(bad(
            &"give an RPC URL or a dict (rpc, batch_size, treasury, fallback_owner, timeout_secs, confirmations, reconcile_blocks)",
        ));
    }
    let text: String = PyModule::import(obj.py(), "json")?
        .call_method1("dumps", (obj,))?
        .extract()?;
    serde_json::from_str(&text).map_err(|e| bad(&e))
}

impl Engine {
    fn engine(&self) -> PyResult<tribute::Engine> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| request("the engine is closed"))
    }

    fn ledger_of(e: &tribute::Engine) -> Option<Ledger> {
        e.config().receipts.ledger
    }

    fn wrap(py: Python<'_>, engine: tribute::Engine, index: Option<Py<Index>>) -> PyResult<Self> {
        let index = match index {
            Some(i) => i,
            None => Py::new(
                py,
                Index {
                    handle: tribute::IndexHandle::for_engine(engine.clone()),
                },
            )?,
        };
        Ok(Engine {
            inner: RwLock::new(Some(engine)),
            index,
        })
    }
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (
        index = None, *, generator = None, signer = None, ledger = None, journal = None,
        chain = None, embedder = None, top_k = None, mode = None, method = None,
        max_tokens = None, answer_mode = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        index: Option<&Bound<'_, PyAny>>,
        generator: Option<PyRef<'_, Generator>>,
        signer: Option<PyRef<'_, Signer>>,
        ledger: Option<&Bound<'_, PyAny>>,
        journal: Option<PathBuf>,
        chain: Option<&Bound<'_, PyAny>>,
        embedder: Option<PathBuf>,
        top_k: Option<usize>,
        mode: Option<&str>,
        method: Option<&str>,
        max_tokens: Option<usize>,
        answer_mode: Option<&str>,
    ) -> PyResult<Self> {
        let mut config = EngineConfig::default();
        if let Some(m) = answer_mode {
            config.answer_mode = m.parse().map_err(py_err)?;
        }
        if let Some(l) = ledger {
            config.receipts.ledger = Some(ledger_from(l)?);
        }
        config.receipts.journal = journal;
        config.chain = chain.map(chain_config).transpose()?;
        config.embedder = embedder;
        if let Some(k) = top_k {
            config.retrieval.top_k = k;
        }
        if let Some(m) = mode {
            config.retrieval.mode = m.parse().map_err(py_err)?;
        }
        if let Some(m) = method {
            config.attribution.method = m.parse().map_err(py_err)?;
        }
        if let Some(n) = max_tokens {
            config.generation.max_tokens = n;
        }
        let handle: Option<Bound<'_, Index>> = match index {
            None => None,
            Some(obj) => match obj.cast::<Index>() {
                Ok(ix) => Some(ix.clone()),
                Err(_) => {
                    config.index = obj.extract().map_err(|_| {
                        request("index must be a tribute.Index or a directory path")
                    })?;
                    None
                }
            },
        };
        if handle.is_some() && config.embedder.is_some() {
            return Err(request(
                "embedder= applies to an index given as a directory; this Index has its own",
            ));
        }
        let mut builder = tribute::Engine::builder();
        if let Some(g) = &generator {
            builder = builder.generator(g.inner.clone());
        }
        if let Some(s) = &signer {
            builder = builder.signer(s.key.clone());
        }
        let engine = match &handle {
            None => py
                .detach(|| builder.config(config).build())
                .map_err(py_err)?,
            Some(ix) => {
                let ix: &Index = ix.get();
                py.detach(|| ix.handle.serve_engine(builder.config(config)))
                    .map_err(py_err)?
            }
        };
        Engine::wrap(py, engine, handle.map(Bound::unbind))
    }

    /// An engine from a TOML config file (relative paths resolved against the file); see
    /// the Rust `EngineConfig` for the keys.
    #[staticmethod]
    fn from_config(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let engine = py
            .detach(|| tribute::Engine::from_config_file(&path))
            .map_err(py_err)?;
        Engine::wrap(py, engine, None)
    }

    /// Asks a question: retrieves `top_k` chunks, generates an answer with the `adapters`
    /// merged (`{id: weight}`), measures citation weights with `method` (`"loo"`,
    /// `"ablation"`, `"shapley"`, `"similarity"` or `"retrieval"`) and signs a receipt. Unset options
    /// take the engine's defaults. The GIL is released for the whole ask; Ctrl-C raises
    /// `KeyboardInterrupt` at once and cancels the ask (nothing is signed).
    #[pyo3(signature = (
        question, *, adapters = None, method = None, top_k = None, mode = None,
        datanets = None, max_tokens = None, temperature = None, seed = None, fee = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn ask(
        &self,
        py: Python<'_>,
        question: &str,
        adapters: Option<&Bound<'_, PyAny>>,
        method: Option<&str>,
        top_k: Option<usize>,
        mode: Option<&str>,
        datanets: Option<Vec<String>>,
        max_tokens: Option<usize>,
        temperature: Option<f32>,
        seed: Option<u64>,
        fee: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Answer> {
        let (options, cancel) = ask_options(
            adapters,
            method,
            top_k,
            mode,
            datanets,
            max_tokens,
            temperature,
            seed,
            fee,
        )?;
        let engine = self.engine()?;
        let ledger = Engine::ledger_of(&engine);
        let question = question.to_owned();
        let answer = wait_interruptibly(
            py,
            move || engine.ask(question).options(options).run(),
            move || cancel.cancel(),
        )?
        .map_err(py_err)?;
        Ok(Answer {
            inner: answer,
            ledger,
        })
    }

    /// Starts a conversation: a `Session` whose turns are asked with these options (as
    /// `ask`'s). `rewrite` is how a follow-up is rewritten for retrieval: `"model"` (the
    /// default; falls back to `"content-words"` without a model), `"content-words"` or
    /// `"off"`.
    #[pyo3(signature = (
        *, adapters = None, method = None, top_k = None, mode = None, datanets = None,
        max_tokens = None, temperature = None, seed = None, fee = None, rewrite = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn chat(
        &self,
        adapters: Option<&Bound<'_, PyAny>>,
        method: Option<&str>,
        top_k: Option<usize>,
        mode: Option<&str>,
        datanets: Option<Vec<String>>,
        max_tokens: Option<usize>,
        temperature: Option<f32>,
        seed: Option<u64>,
        fee: Option<&Bound<'_, PyAny>>,
        rewrite: Option<&str>,
    ) -> PyResult<Session> {
        let (options, _) = ask_options(
            adapters,
            method,
            top_k,
            mode,
            datanets,
            max_tokens,
            temperature,
            seed,
            fee,
        )?;
        let options = AskOptions {
            cancel: None,
            ..options
        };
        Session::open(&self.engine()?, options, rewrite)
    }

    /// Streams an ask (same options as `ask`): iterate the returned `AskStream` for text
    /// pieces; afterwards its `answer` holds the `Answer` with citations and receipt.
    #[pyo3(signature = (
        question, *, adapters = None, method = None, top_k = None, mode = None,
        datanets = None, max_tokens = None, temperature = None, seed = None, fee = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn stream(
        &self,
        py: Python<'_>,
        question: &str,
        adapters: Option<&Bound<'_, PyAny>>,
        method: Option<&str>,
        top_k: Option<usize>,
        mode: Option<&str>,
        datanets: Option<Vec<String>>,
        max_tokens: Option<usize>,
        temperature: Option<f32>,
        seed: Option<u64>,
        fee: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<AskStream> {
        let (options, cancel) = ask_options(
            adapters,
            method,
            top_k,
            mode,
            datanets,
            max_tokens,
            temperature,
            seed,
            fee,
        )?;
        let engine = self.engine()?;
        let stream = py
            .detach(|| engine.ask(question).options(options).stream())
            .map_err(py_err)?;
        Ok(AskStream::new(stream, Engine::ledger_of(&engine), cancel))
    }

    /// `stream` for `async for`: returns at once; the ask begins on the first step, off
    /// the event loop (its errors, such as an empty question, are raised there).
    /// Cancelling the task awaiting a step cancels the generation.
    #[pyo3(signature = (
        question, *, adapters = None, method = None, top_k = None, mode = None,
        datanets = None, max_tokens = None, temperature = None, seed = None, fee = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn stream_async(
        &self,
        question: &str,
        adapters: Option<&Bound<'_, PyAny>>,
        method: Option<&str>,
        top_k: Option<usize>,
        mode: Option<&str>,
        datanets: Option<Vec<String>>,
        max_tokens: Option<usize>,
        temperature: Option<f32>,
        seed: Option<u64>,
        fee: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<AskStream> {
        let (options, cancel) = ask_options(
            adapters,
            method,
            top_k,
            mode,
            datanets,
            max_tokens,
            temperature,
            seed,
            fee,
        )?;
        let engine = self.engine()?;
        let ledger = Engine::ledger_of(&engine);
        let question = question.to_owned();
        let start: Starter = Box::new(move || engine.ask(question).options(options).stream());
        Ok(AskStream::pending(start, ledger, cancel))
    }

    /// `ask` as a coroutine: `await engine.ask_async(question, **options)` runs the ask
    /// on a worker thread, so the event loop keeps running. Cancelling the awaiting task
    /// (or `asyncio.wait_for` timing out) cancels the ask.
    #[pyo3(signature = (
        question, *, adapters = None, method = None, top_k = None, mode = None,
        datanets = None, max_tokens = None, temperature = None, seed = None, fee = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn ask_async<'py>(
        &self,
        py: Python<'py>,
        question: &str,
        adapters: Option<&Bound<'_, PyAny>>,
        method: Option<&str>,
        top_k: Option<usize>,
        mode: Option<&str>,
        datanets: Option<Vec<String>>,
        max_tokens: Option<usize>,
        temperature: Option<f32>,
        seed: Option<u64>,
        fee: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (options, cancel) = ask_options(
            adapters,
            method,
            top_k,
            mode,
            datanets,
            max_tokens,
            temperature,
            seed,
            fee,
        )?;
        let engine = self.engine()?;
        let ledger = Engine::ledger_of(&engine);
        let question = question.to_owned();
        coroutine(
            py,
            move || engine.ask(question).options(options).run(),
            move |py, answer| {
                let inner = answer.map_err(py_err)?;
                Ok(Py::new(py, Answer { inner, ledger })?.into_any())
            },
            Some(Box::new(move || cancel.cancel())),
        )
    }

    /// `retrieve` as a coroutine (on a worker thread).
    #[pyo3(signature = (query, k = None, *, datanets = None, sign = true))]
    fn retrieve_async<'py>(
        &self,
        py: Python<'py>,
        query: &str,
        k: Option<usize>,
        datanets: Option<Vec<String>>,
        sign: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?;
        let ledger = Engine::ledger_of(&engine);
        let request = retrieve_request(query.to_owned(), k, datanets, sign);
        coroutine(
            py,
            move || request(&engine),
            move |py, r| {
                let inner = r.map_err(py_err)?;
                Ok(Py::new(py, Retrieval { inner, ledger })?.into_any())
            },
            None,
        )
    }

    /// Settles the journal's pending receipts on the configured chain (`[chain]` and the
    /// ledger of the config file, in batches of `chain.batch_size`): each batch is signed
    /// by the payer, sent, and confirmed in the journal. Receipts stay pending when the
    /// chain is unreachable (`ChainError`). Ctrl-C returns at once; the settlement then
    /// finishes in the background, every step journaled, and a later `settle` resumes it.
    fn settle(&self, py: Python<'_>) -> PyResult<SettleReport> {
        let engine = self.engine()?;
        let report =
            wait_interruptibly(py, move || engine.settle_blocking(), || ())?.map_err(py_err)?;
        SettleReport::new(py, report)
    }

    /// `settle` as a coroutine (on a worker thread).
    fn settle_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.engine()?;
        coroutine(
            py,
            move || engine.settle_blocking(),
            |py, r| {
                let report = SettleReport::new(py, r.map_err(py_err)?)?;
                Ok(Py::new(py, report)?.into_any())
            },
            None,
        )
    }

    /// Receipt counts: a dict with `receipts` (all) and by state `pending`, `batched`,
    /// `submitted` and `confirmed` (all zero without a journal).
    fn receipt_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let engine = self.engine()?;
        let stats = py.detach(|| engine.receipt_stats()).map_err(py_err)?;
        let d = PyDict::new(py);
        d.set_item("receipts", stats.receipts)?;
        d.set_item("pending", stats.pending)?;
        d.set_item("batched", stats.batched)?;
        d.set_item("submitted", stats.submitted)?;
        d.set_item("confirmed", stats.confirmed)?;
        Ok(d)
    }

    /// Searches the knowledge base: the `k` best chunks, best first. `mode` (`"hybrid"`,
    /// `"bm25"`, `"dense"`) and `datanets` default to the engine's configuration.
    #[pyo3(signature = (query, k = 5, *, mode = None, datanets = None))]
    fn search(
        &self,
        py: Python<'_>,
        query: &str,
        k: usize,
        mode: Option<&str>,
        datanets: Option<Vec<String>>,
    ) -> PyResult<Vec<Hit>> {
        let mode = mode.map(|m| m.parse().map_err(py_err)).transpose()?;
        let engine = self.engine()?;
        let options = tribute::SearchOptions {
            top_k: Some(k),
            mode,
            datanets,
        };
        let hits = py
            .detach(|| engine.search(query).options(options).run())
            .map_err(py_err)?;
        Ok(hits.iter().map(Hit::from).collect())
    }

    /// Retrieval only (for agents that generate elsewhere): the relevant hits among the
    /// `k` best (default: the engine's `top_k`), weighted by retrieval score, and with
    /// `sign` a signed, journaled retrieval receipt crediting their contributors.
    #[pyo3(signature = (query, k = None, *, datanets = None, sign = true))]
    fn retrieve(
        &self,
        py: Python<'_>,
        query: &str,
        k: Option<usize>,
        datanets: Option<Vec<String>>,
        sign: bool,
    ) -> PyResult<Retrieval> {
        let engine = self.engine()?;
        let request = retrieve_request(query.to_owned(), k, datanets, sign);
        let r = py.detach(|| request(&engine)).map_err(py_err)?;
        Ok(Retrieval {
            inner: r,
            ledger: Engine::ledger_of(&engine),
        })
    }

    /// The journaled receipts as `(Receipt, state)` pairs, state one of `"pending"`,
    /// `"batched"`, `"submitted"`, `"confirmed"`; `state` keeps only that state. Empty
    /// without a journal.
    #[pyo3(signature = (state = None))]
    fn receipts(&self, py: Python<'_>, state: Option<&str>) -> PyResult<Vec<(Receipt, String)>> {
        let kind = state
            .map(str::parse::<StateKind>)
            .transpose()
            .map_err(py_err)?;
        let engine = self.engine()?;
        let ledger = Engine::ledger_of(&engine);
        let list = py.detach(|| engine.receipts(kind)).map_err(py_err)?;
        Ok(list
            .into_iter()
            .map(|j| {
                (
                    Receipt::new(j.receipt, ledger),
                    j.state.kind().as_str().to_owned(),
                )
            })
            .collect())
    }

    /// The knowledge base handle (searches and ingests through this engine).
    #[getter]
    fn index(&self, py: Python<'_>) -> Py<Index> {
        self.index.clone_ref(py)
    }

    /// The generator (shareable with other engines).
    #[getter]
    fn generator(&self) -> PyResult<Generator> {
        Ok(Generator {
            inner: self
                .engine()?
                .generator()
                .cloned()
                .ok_or_else(|| request("this engine has no generator (extractive, no model)"))?,
        })
    }

    /// The payer's address, when a signing key is loaded.
    #[getter]
    fn payer(&self) -> PyResult<Option<String>> {
        Ok(self.engine()?.payer().map(|a| a.to_checksum(None)))
    }

    /// The ledger receipts are signed for, as a dict (None when not configured).
    #[getter]
    fn ledger<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        Engine::ledger_of(&self.engine()?)
            .map(|l| ledger_dict(py, &l))
            .transpose()
    }

    /// The model's name.
    #[getter]
    fn model(&self) -> PyResult<String> {
        Ok(self.engine()?.model().name.clone())
    }

    /// The whole configuration, as a dict (the TOML file's structure).
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let text = serde_json::to_string(self.engine()?.config())
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
        PyModule::import(py, "json")?.call_method1("loads", (text,))
    }

    /// Whether the engine is closed.
    #[getter]
    fn closed(&self) -> bool {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    /// Closes the engine and its index handle. The index and the journal are released
    /// once unfinished streams are done with them.
    fn close(&self, py: Python<'_>) {
        let engine = self.inner.write().unwrap_or_else(|p| p.into_inner()).take();
        let index = self.index.get();
        py.detach(|| {
            index.handle.close();
            drop(engine);
        });
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self) -> String {
        let Ok(e) = self.engine() else {
            return "Engine(closed)".to_owned();
        };
        let c = e.config();
        format!(
            "Engine(index={}, model={}, top_k={}, mode={}, method={}, payer={}, ledger={})",
            quoted(&c.index.display().to_string()),
            quoted(&e.model().name),
            c.retrieval.top_k,
            c.retrieval.mode,
            c.attribution.method,
            e.payer()
                .map_or_else(|| "None".to_owned(), |a| a.to_checksum(None)),
            c.receipts.ledger.map_or_else(
                || "None".to_owned(),
                |l| format!("{}@{}", l.contract.to_checksum(None), l.chain_id)
            ),
        )
    }
}
