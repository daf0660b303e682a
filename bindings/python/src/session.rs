//! A [`Session`]: a conversation with the engine (`Engine.chat()`).

use pyo3::prelude::*;
use tribute::attribution::receipt::Ledger;
use tribute::inference::CancelToken;
use tribute::{AskOptions, QueryRewrite};

use crate::answer::{Answer, AskStream};
use crate::error::py_err;
use crate::runtime::wait_interruptibly;

/// A conversation with the engine, from `Engine.chat()`.
///
/// Each `ask` answers with the earlier turns as context (the oldest are dropped when they
/// do not fit the model's context). From the second turn on, the question is rewritten
/// into a standalone question for retrieval only — by the model, or with the previous
/// question's content words when there is no model or its rewrite is unusable — and
/// `answer.retrieval_query` shows it. Citation markers are numbered across the
/// conversation: a source keeps the number it was first cited with. Each turn signs its own
/// receipt, crediting only the sources retrieved for that turn.
#[pyclass(module = "tribute", frozen)]
pub struct Session {
    inner: tribute::Session,
    /// The options of every turn (each turn adds its own cancel token).
    options: AskOptions,
    ledger: Option<Ledger>,
}

impl Session {
    /// A session of `engine` asking every turn with `options`.
    pub(crate) fn open(
        engine: &tribute::Engine,
        options: AskOptions,
        rewrite: Option<&str>,
    ) -> PyResult<Self> {
        let rewrite: QueryRewrite = rewrite
            .map(str::parse)
            .transpose()
            .map_err(py_err)?
            .unwrap_or_default();
        Ok(Session {
            inner: engine.chat().rewrite(rewrite),
            options,
            ledger: engine.config().receipts.ledger,
        })
    }

    /// The session's options with a cancel token of this turn's own.
    fn turn_options(&self) -> (AskOptions, CancelToken) {
        let cancel = CancelToken::new();
        let options = AskOptions {
            cancel: Some(cancel.clone()),
            ..self.options.clone()
        };
        (options, cancel)
    }
}

#[pymethods]
impl Session {
    /// Asks the next question of the conversation. The GIL is released; Ctrl-C raises
    /// `KeyboardInterrupt` at once and cancels the turn (nothing is signed or recorded).
    fn ask(&self, py: Python<'_>, question: &str) -> PyResult<Answer> {
        let (options, cancel) = self.turn_options();
        let session = self.inner.clone();
        let question = question.to_owned();
        let answer = wait_interruptibly(
            py,
            move || session.ask_with(question, options),
            move || cancel.cancel(),
        )?
        .map_err(py_err)?;
        Ok(Answer {
            inner: answer,
            ledger: self.ledger,
        })
    }

    /// Streams the next answer: iterate the returned `AskStream` for text pieces; then
    /// its `answer` holds the `Answer`, numbered for the conversation. The turn joins the
    /// conversation when the stream finishes.
    fn stream(&self, py: Python<'_>, question: &str) -> PyResult<AskStream> {
        let (options, cancel) = self.turn_options();
        let stream = py
            .detach(|| self.inner.stream_with(question, options))
            .map_err(py_err)?;
        Ok(AskStream::new(stream, self.ledger, cancel))
    }

    /// What retrieval would search for if `question` were asked next (None: the question
    /// itself, as on the first turn).
    fn retrieval_query(&self, py: Python<'_>, question: &str) -> PyResult<Option<String>> {
        py.detach(|| self.inner.retrieval_query(question))
            .map_err(py_err)
    }

    /// The turns so far, oldest first, as `(role, text)` pairs (`"user"` or `"assistant"`).
    #[getter]
    fn history(&self) -> Vec<(String, String)> {
        self.inner
            .history()
            .into_iter()
            .map(|t| {
                let role = match t.role {
                    tribute::engine::Role::User => "user",
                    tribute::engine::Role::Assistant => "assistant",
                };
                (role.to_owned(), t.content)
            })
            .collect()
    }

    /// The sources cited so far, as `(marker, chunk_id, title)`, by marker.
    #[getter]
    fn sources(&self) -> Vec<(usize, String, String)> {
        self.inner
            .sources()
            .into_iter()
            .map(|s| (s.marker, s.chunk_id, s.title))
            .collect()
    }

    /// Forgets the conversation: the next question starts a new one, numbered from 1.
    fn reset(&self) {
        self.inner.reset();
    }

    fn __len__(&self) -> usize {
        self.inner.history().len() / 2
    }

    fn __repr__(&self) -> String {
        format!("Session(turns={})", self.inner.history().len() / 2)
    }
}
