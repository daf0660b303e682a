//! What asks return: [`Answer`]s with [`Citation`]s and a [`Receipt`](crate::receipt::Receipt),
//! the [`AskStream`] of a streamed ask, and a [`Retrieval`].

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use tribute::AskEvent;
use tribute::attribution::receipt::Ledger;

use crate::error::py_err;
use crate::index::Hit;
use crate::receipt::Receipt;
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

fn citations(cs: &[tribute::Citation]) -> Vec<Citation> {
    cs.iter().map(Citation::from).collect()
}

fn receipt_of(
    r: &Option<tribute::attribution::receipt::SignedReceipt>,
    ledger: Option<Ledger>,
) -> Option<Receipt> {
    r.as_ref().map(|r| Receipt::new(r.clone(), ledger))
}

fn json_to_py<'py>(py: Python<'py>, v: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
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

    /// The answer's sentences: dicts with `text`, `start` and `end` (character offsets in
    /// `text`) and `markers` (supporting sources, strongest first).
    #[getter]
    fn sentences<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for s in &self.inner.sentences {
            let d = PyDict::new(py);
            d.set_item("text", &s.text)?;
            d.set_item("start", s.char_span.start)?;
            d.set_item("end", s.char_span.end)?;
            d.set_item("markers", s.markers.clone())?;
            list.append(d)?;
        }
        Ok(list)
    }

    /// The adapters used, with their weights.
    #[getter]
    fn adapters(&self) -> Vec<(String, f32)> {
        self.inner.adapters.clone()
    }

    /// Token counts, sources used and per-stage timings (ms), as a dict.
    #[getter]
    fn usage<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.inner.usage)
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

/// A streamed ask: iterate it for the answer's text pieces as the model writes them; when
/// the iteration ends, `answer` holds the finished `Answer` (citations, receipt).
///
/// Each step releases the GIL. The stream holds one of the generator's sessions until it
/// ends: finish it, `close()` it, or use it as a context manager.
#[pyclass(module = "tribute", frozen)]
pub struct AskStream {
    stream: Mutex<Option<tribute::AskStream>>,
    answer: Mutex<Option<Py<Answer>>>,
    ledger: Option<Ledger>,
}

impl AskStream {
    pub(crate) fn new(stream: tribute::AskStream, ledger: Option<Ledger>) -> Self {
        AskStream {
            stream: Mutex::new(Some(stream)),
            answer: Mutex::new(None),
            ledger,
        }
    }
}

#[pymethods]
impl AskStream {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let event = py.detach(|| {
            let mut guard = lock(&self.stream);
            let event = guard.as_mut()?.next();
            if !matches!(event, Some(Ok(AskEvent::Text(_)))) {
                *guard = None;
            }
            event
        });
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

    /// The finished answer, once the iteration has ended (None before).
    #[getter]
    fn answer(&self, py: Python<'_>) -> Option<Py<Answer>> {
        lock(&self.answer).as_ref().map(|a| a.clone_ref(py))
    }

    /// Stops the stream and gives its session back (the answer stays None if unfinished).
    fn close(&self, py: Python<'_>) {
        let stream = py.detach(|| lock(&self.stream).take());
        drop(stream);
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        // Another thread may hold the stream (GIL released) while it generates.
        let streaming = py.detach(|| lock(&self.stream).is_some());
        let state = if lock(&self.answer).is_some() {
            "finished"
        } else if streaming {
            "streaming"
        } else {
            "closed"
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
