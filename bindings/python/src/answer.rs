//! What asks return: [`Answer`]s with [`Citation`]s and a [`Receipt`](crate::receipt::Receipt),
//! the [`AskStream`] of a streamed ask, and a [`Retrieval`].

use std::sync::Mutex;

use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use tribute::AskEvent;
use tribute::attribution::receipt::Ledger;
use tribute::inference::CancelToken;

use crate::error::py_err;
use crate::index::Hit;
use crate::locator::Locator;
use crate::receipt::Receipt;
use crate::runtime::{future_from, wait_interruptibly};
use crate::{lock, quoted};

/// One cited source of an answer.
#[pyclass(module = "tribute", frozen, get_all)]
pub struct Citation {
    /// The source's number in the prompt and in the inline markers (`[marker]`).
    pub marker: usize,
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
            marker: c.marker,
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

#[pymethods]
impl Citation {
    /// The weight as a fraction (`weight_bps / 10000`).
    #[getter]
    fn weight(&self) -> f64 {
        f64::from(self.weight_bps) / 10_000.0
    }

    fn __repr__(&self) -> String {
        format!(
            "Citation([{}] {:.2}% {}, contributor={}, datanet={})",
            self.marker,
            f64::from(self.weight_bps) / 100.0,
            quoted(&self.doc_id),
            self.contributor,
            quoted(&self.datanet)
        )
    }
}

/// One sentence of an answer and the sources that support it.
#[pyclass(module = "tribute", frozen, get_all)]
pub struct Sentence {
    /// The sentence.
    pub text: String,
    /// Its start in `Answer.text` (a character offset: `answer.text[start:end]`).
    pub start: usize,
    /// Its end in `Answer.text` (exclusive).
    pub end: usize,
    /// The markers of its supporting sources, strongest first (empty: unsupported).
    pub markers: Vec<usize>,
    /// Whether a retrieved source measurably supports it (hide or flag it when not).
    pub supported: bool,
    /// The best source's measured influence on it (nats for loo/ablation/shapley), or None.
    pub support: Option<f64>,
    /// Markers shown with it whose sources have no measurable influence on it.
    pub unused_markers: Vec<usize>,
    /// Markers of sources with measurable influence on it that it does not show.
    pub uncited_markers: Vec<usize>,
}

impl From<&tribute::engine::AnswerSentence> for Sentence {
    fn from(s: &tribute::engine::AnswerSentence) -> Self {
        Sentence {
            text: s.text.clone(),
            start: s.char_span.start,
            end: s.char_span.end,
            markers: s.markers.clone(),
            supported: s.supported,
            support: s.support,
            unused_markers: s.unused_markers.clone(),
            uncited_markers: s.uncited_markers.clone(),
        }
    }
}

#[pymethods]
impl Sentence {
    fn __repr__(&self) -> String {
        format!(
            "Sentence({}, start={}, end={}, markers={:?}, supported={})",
            quoted(&self.text),
            self.start,
            self.end,
            self.markers,
            if self.supported { "True" } else { "False" }
        )
    }
}

/// Token counts, sources and time per stage of an ask.
#[pyclass(module = "tribute", frozen, get_all)]
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
    /// The attribution method used (after any fallback; None when nothing was attributed).
    pub method: Option<String>,
    /// Model passes spent on attribution.
    pub attribution_passes: usize,
    /// Retrieval time (ms).
    pub retrieval_ms: f64,
    /// Prompt building time (ms).
    pub prompt_ms: f64,
    /// Prompt prefill time (ms).
    pub prefill_ms: f64,
    /// Decoding time (ms).
    pub decode_ms: f64,
    /// Attribution time (ms).
    pub attribution_ms: f64,
    /// Signing and journaling time (ms).
    pub receipt_ms: f64,
    /// The whole ask (ms).
    pub total_ms: f64,
}

impl From<&tribute::engine::Usage> for Usage {
    fn from(u: &tribute::engine::Usage) -> Self {
        let t = &u.timings;
        Usage {
            prompt_tokens: u.prompt_tokens,
            answer_tokens: u.answer_tokens,
            sources_retrieved: u.sources_retrieved,
            sources_used: u.sources_used,
            sources_dropped: u.sources_dropped,
            source_truncated: u.source_truncated,
            method: u.method.map(|m| m.to_string()),
            attribution_passes: u.attribution_passes,
            retrieval_ms: t.retrieval_ms,
            prompt_ms: t.prompt_ms,
            prefill_ms: t.prefill_ms,
            decode_ms: t.decode_ms,
            attribution_ms: t.attribution_ms,
            receipt_ms: t.receipt_ms,
            total_ms: t.total_ms,
        }
    }
}

#[pymethods]
impl Usage {
    /// Decoding speed (answer tokens per second of decoding; 0 without decoding).
    #[getter]
    fn decode_tokens_per_s(&self) -> f64 {
        if self.decode_ms > 0.0 {
            self.answer_tokens as f64 * 1e3 / self.decode_ms
        } else {
            0.0
        }
    }

    /// The fields as a dict.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("prompt_tokens", self.prompt_tokens)?;
        d.set_item("answer_tokens", self.answer_tokens)?;
        d.set_item("sources_retrieved", self.sources_retrieved)?;
        d.set_item("sources_used", self.sources_used)?;
        d.set_item("sources_dropped", self.sources_dropped)?;
        d.set_item("source_truncated", self.source_truncated)?;
        d.set_item("method", self.method.clone())?;
        d.set_item("attribution_passes", self.attribution_passes)?;
        for (k, v) in [
            ("retrieval_ms", self.retrieval_ms),
            ("prompt_ms", self.prompt_ms),
            ("prefill_ms", self.prefill_ms),
            ("decode_ms", self.decode_ms),
            ("attribution_ms", self.attribution_ms),
            ("receipt_ms", self.receipt_ms),
            ("total_ms", self.total_ms),
        ] {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "Usage(prompt_tokens={}, answer_tokens={}, sources_used={}/{}, method={}, total_ms={:.0})",
            self.prompt_tokens,
            self.answer_tokens,
            self.sources_used,
            self.sources_retrieved,
            self.method
                .as_deref()
                .map_or_else(|| "None".to_owned(), quoted),
            self.total_ms
        )
    }
}

fn citations(cs: &[tribute::Citation]) -> Vec<Citation> {
    cs.iter().map(Citation::from).collect()
}

fn receipt_of(
    r: &Option<tribute::attribution::receipt::SignedReceipt>,
    ledger: Option<Ledger>,
) -> Option<Receipt> {
    r.as_ref().map(|r| Receipt::new(r.clone(), ledger))
}

pub(crate) fn json_to_py<'py>(
    py: Python<'py>,
    v: &impl serde::Serialize,
) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(v)
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    PyModule::import(py, "json")?.call_method1("loads", (text,))
}

/// An answer with its citations and receipt.
///
/// `text` is the answer as generated; `cited_text` adds inline markers (`… [2]`) after
/// each supported sentence; `citations` are by weight, highest first, summing to 10,000
/// basis points. `receipt` is the signed usage receipt (None without a key and a ledger,
/// or when no source was relevant: `no_receipt` says why). `str(answer)` is `cited_text`.
#[pyclass(module = "tribute", frozen)]
pub struct Answer {
    pub(crate) inner: tribute::Answer,
    pub(crate) ledger: Option<Ledger>,
}

#[pymethods]
impl Answer {
    /// The question.
    #[getter]
    fn question(&self) -> &str {
        &self.inner.question
    }

    /// What retrieval searched for when it was not the question (a conversation's
    /// follow-up rewritten to stand alone), else None.
    #[getter]
    fn retrieval_query(&self) -> Option<&str> {
        self.inner.retrieval_query.as_deref()
    }

    /// The answer as generated.
    #[getter]
    fn text(&self) -> &str {
        &self.inner.text
    }

    /// The answer with inline citation markers.
    #[getter]
    fn cited_text(&self) -> &str {
        &self.inner.cited_text
    }

    /// The cited sources, by weight (highest first).
    #[getter]
    fn citations(&self) -> Vec<Citation> {
        citations(&self.inner.citations)
    }

    /// The answer's sentences, each with its supporting sources.
    #[getter]
    fn sentences(&self) -> Vec<Sentence> {
        self.inner.sentences.iter().map(Sentence::from).collect()
    }

    /// The citation audit as a dict (precision, recall and their counts), or None when
    /// nothing was attributed.
    #[getter]
    fn citation_audit<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.inner
            .citation_audit
            .as_ref()
            .map(|a| json_to_py(py, a))
            .transpose()
    }

    /// The source guard's alert as a dict (marker, chunk_id, doc_id, contributor, datanet,
    /// share, retrieval_share, reason: "low_trust" | "barely_relevant", reanswered,
    /// replaced_answer), or None when no low-trust or barely relevant source dominated.
    #[getter]
    fn source_alert<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.inner
            .source_alert
            .as_ref()
            .map(|a| json_to_py(py, a))
            .transpose()
    }

    /// The adapters used, with their weights.
    #[getter]
    fn adapters(&self) -> Vec<(String, f32)> {
        self.inner.adapters.clone()
    }

    /// Token counts, sources used and per-stage timings.
    #[getter]
    fn usage(&self) -> Usage {
        Usage::from(&self.inner.usage)
    }

    /// The signed receipt, or None (see `no_receipt`).
    #[getter]
    fn receipt(&self) -> Option<Receipt> {
        receipt_of(&self.inner.receipt, self.ledger)
    }

    /// Why no receipt was signed, when none was.
    #[getter]
    fn no_receipt(&self) -> Option<&str> {
        self.inner.no_receipt.as_deref()
    }

    /// The answer as JSON (the CLI's `ask --json` shape).
    fn to_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.inner)
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
    }

    /// The answer as a dict (`to_json()` parsed).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.inner)
    }

    fn __str__(&self) -> &str {
        &self.inner.cited_text
    }

    fn __repr__(&self) -> String {
        let text: String = self.inner.text.chars().take(60).collect();
        let more = if text.len() < self.inner.text.len() {
            "…"
        } else {
            ""
        };
        format!(
            "Answer(text={}, citations=[{}], receipt={})",
            quoted(&format!("{text}{more}")),
            self.inner
                .citations
                .iter()
                .map(|c| format!("{}:{}bps", c.doc_id, c.weight_bps))
                .collect::<Vec<_>>()
                .join(", "),
            self.inner
                .receipt
                .as_ref()
                .map_or_else(|| "None".to_owned(), |r| r.receipt.receiptId.to_string())
        )
    }
}

/// Starts a lazily begun stream (`Engine.stream_async`).
pub(crate) type Starter = Box<dyn FnOnce() -> tribute::Result<tribute::AskStream> + Send>;

/// Where a stream is.
enum Slot {
    /// Not begun yet (an async stream begins on its first step, off the event loop).
    Pending(Starter),
    Running(tribute::AskStream),
    Closed,
}

/// A streamed ask: iterate it (`for`, or `async for`) for the answer's text pieces as the
/// model writes them; when the iteration ends, `answer` holds the finished `Answer`
/// (citations, receipt).
///
/// Each step releases the GIL; Ctrl-C during a step raises `KeyboardInterrupt` at once and
/// cancels the stream (generation stops, nothing is signed, the iteration is over), as does
/// cancelling the task awaiting a step. The stream holds one
/// of the generator's sessions until it ends: finish it, `close()` it, or use it as a
/// context manager (`with` or `async with`).
#[pyclass(module = "tribute", frozen)]
pub struct AskStream {
    slot: Mutex<Slot>,
    answer: Mutex<Option<Py<Answer>>>,
    ledger: Option<Ledger>,
    cancel: CancelToken,
}

impl AskStream {
    /// A stream that has begun.
    pub(crate) fn new(
        stream: tribute::AskStream,
        ledger: Option<Ledger>,
        cancel: CancelToken,
    ) -> Self {
        AskStream {
            slot: Mutex::new(Slot::Running(stream)),
            answer: Mutex::new(None),
            ledger,
            cancel,
        }
    }

    /// A stream that begins on its first step.
    pub(crate) fn pending(start: Starter, ledger: Option<Ledger>, cancel: CancelToken) -> Self {
        AskStream {
            slot: Mutex::new(Slot::Pending(start)),
            answer: Mutex::new(None),
            ledger,
            cancel,
        }
    }

    /// The next event (blocking; call without the GIL). None once the stream is over,
    /// and once it was cancelled (Ctrl-C, a cancelled awaiting task, `close`).
    fn next_event(&self) -> Option<tribute::Result<AskEvent>> {
        let mut slot = lock(&self.slot);
        if self.cancel.is_cancelled() {
            *slot = Slot::Closed;
            return None;
        }
        if matches!(*slot, Slot::Pending(_))
            && let Slot::Pending(start) = std::mem::replace(&mut *slot, Slot::Closed)
        {
            match start() {
                Ok(stream) => *slot = Slot::Running(stream),
                Err(e) => return Some(Err(e)),
            }
        }
        let Slot::Running(stream) = &mut *slot else {
            return None;
        };
        let event = stream.next();
        if self.cancel.is_cancelled() {
            // Cancelled during this step: whatever it produced goes nowhere.
            *slot = Slot::Closed;
            return None;
        }
        if !matches!(event, Some(Ok(AskEvent::Text(_)))) {
            *slot = Slot::Closed;
        }
        event
    }

    /// Turns an event into the next text piece (None at the end, keeping the answer).
    fn deliver(
        &self,
        py: Python<'_>,
        event: Option<tribute::Result<AskEvent>>,
    ) -> PyResult<Option<String>> {
        match event {
            None => Ok(None),
            Some(Ok(AskEvent::Text(t))) => Ok(Some(t)),
            Some(Ok(AskEvent::Done(a))) => {
                let answer = Py::new(
                    py,
                    Answer {
                        inner: *a,
                        ledger: self.ledger,
                    },
                )?;
                *lock(&self.answer) = Some(answer);
                Ok(None)
            }
            Some(Err(e)) => Err(py_err(e)),
        }
    }
}

#[pymethods]
impl AskStream {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(slf: Py<Self>, py: Python<'_>) -> PyResult<Option<String>> {
        let worker = slf.clone_ref(py);
        let cancel = slf.get().cancel.clone();
        let event = wait_interruptibly(
            py,
            move || worker.get().next_event(),
            move || cancel.cancel(),
        )?;
        slf.get().deliver(py, event)
    }

    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(slf: Py<Self>, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let worker = slf.clone_ref(py);
        let cancel = slf.get().cancel.clone();
        future_from(
            py,
            move || worker.get().next_event(),
            move |py, event| match slf.get().deliver(py, event)? {
                Some(text) => Ok(text.into_pyobject(py)?.into_any().unbind()),
                None => Err(PyStopAsyncIteration::new_err(())),
            },
            Some(Box::new(move || cancel.cancel())),
        )
    }

    /// The finished answer, once the iteration has ended (None before).
    #[getter]
    fn answer(&self, py: Python<'_>) -> Option<Py<Answer>> {
        lock(&self.answer).as_ref().map(|a| a.clone_ref(py))
    }

    /// Stops the stream (cancelling the generation) and gives its session back; the
    /// answer stays None if unfinished.
    fn close(&self, py: Python<'_>) {
        self.cancel.cancel();
        let slot = py.detach(|| std::mem::replace(&mut *lock(&self.slot), Slot::Closed));
        drop(slot);
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __aenter__(slf: Py<Self>, py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        future_from(py, || (), move |_, ()| Ok(slf.into_any()), None)
    }

    #[pyo3(signature = (*_args))]
    fn __aexit__<'py>(
        slf: Py<Self>,
        py: Python<'py>,
        _args: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        // Closing waits for a step in flight: off the event loop.
        future_from(
            py,
            move || {
                let stream = slf.get();
                stream.cancel.cancel();
                drop(std::mem::replace(&mut *lock(&stream.slot), Slot::Closed));
            },
            |py, ()| Ok(false.into_pyobject(py)?.to_owned().into_any().unbind()),
            None,
        )
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        // Another thread may hold the stream (GIL released) while it generates.
        let state = py.detach(|| match &*lock(&self.slot) {
            Slot::Pending(_) => "pending",
            Slot::Running(_) => "streaming",
            Slot::Closed => "closed",
        });
        let state = if lock(&self.answer).is_some() {
            "finished"
        } else {
            state
        };
        format!("AskStream({state})")
    }
}

/// A retrieval-only use of the knowledge base (`Engine.retrieve`): the relevant hits,
/// their citation weights (retrieval scores in basis points) and, when signing was
/// requested and is set up, a receipt.
#[pyclass(module = "tribute", frozen)]
pub struct Retrieval {
    pub(crate) inner: tribute::Retrieval,
    pub(crate) ledger: Option<Ledger>,
}

#[pymethods]
impl Retrieval {
    /// The query.
    #[getter]
    fn query(&self) -> &str {
        &self.inner.query
    }

    /// The relevant hits, best first.
    #[getter]
    fn hits(&self) -> Vec<Hit> {
        self.inner.hits.iter().map(Hit::from).collect()
    }

    /// The hits as citations weighted by retrieval score (sum 10,000; empty without hits).
    #[getter]
    fn citations(&self) -> Vec<Citation> {
        citations(&self.inner.citations)
    }

    /// The signed receipt, or None (see `no_receipt`).
    #[getter]
    fn receipt(&self) -> Option<Receipt> {
        receipt_of(&self.inner.receipt, self.ledger)
    }

    /// Why no receipt was signed, when none was.
    #[getter]
    fn no_receipt(&self) -> Option<&str> {
        self.inner.no_receipt.as_deref()
    }

    /// The retrieval as JSON.
    fn to_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.inner)
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
    }

    fn __repr__(&self) -> String {
        format!(
            "Retrieval(query={}, hits={}, receipt={})",
            quoted(&self.inner.query),
            self.inner.hits.len(),
            self.inner
                .receipt
                .as_ref()
                .map_or_else(|| "None".to_owned(), |r| r.receipt.receiptId.to_string())
        )
    }
}
