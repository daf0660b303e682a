//! [`Session`]: a conversation with the engine (`Engine.chat`).

use std::sync::Arc;

use tribute::attribution::receipt::Ledger as RustLedger;
use tribute::inference::CancelToken;

use crate::engine::{AskListener, Engine, blocking, drive_stream};
use crate::error::{Result, guard};
use crate::types::{Answer, AskOptions};

/// How a session rewrites a follow-up question for retrieval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, uniffi::Enum)]
pub enum QueryRewrite {
    /// The model rewrites it into a standalone question; without a model, or when the
    /// rewrite is unusable, `ContentWords` is used.
    #[default]
    Model,
    /// The question prefixed by the previous question's content words.
    ContentWords,
    /// Retrieval searches for the question as asked.
    Off,
}

impl From<QueryRewrite> for tribute::QueryRewrite {
    fn from(r: QueryRewrite) -> Self {
        match r {
            QueryRewrite::Model => tribute::QueryRewrite::Model,
            QueryRewrite::ContentWords => tribute::QueryRewrite::ContentWords,
            QueryRewrite::Off => tribute::QueryRewrite::Off,
        }
    }
}

/// Who spoke a turn of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum TurnRole {
    /// The person asking.
    User,
    /// The engine's answer.
    Assistant,
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Turn {
    /// Who said it.
    pub role: TurnRole,
    /// What was said (an answer's text, without markers).
    pub content: String,
}

/// A conversation with the engine, from `Engine.chat`.
///
/// Each `ask` answers with the earlier turns as context (the oldest are dropped when they
/// do not fit the model's context). From the second turn on, the question is rewritten
/// into a standalone question for retrieval only (`Answer.retrievalQuery` shows it).
/// Citation markers are numbered across the conversation: a source keeps the number it
/// was first cited with. Each turn signs its own receipt, crediting only the sources
/// retrieved for that turn. Safe to use from several threads.
#[derive(Debug, uniffi::Object)]
pub struct Session {
    inner: tribute::Session,
    /// The options of every turn.
    options: tribute::AskOptions,
    ledger: Option<RustLedger>,
}

#[uniffi::export]
impl Engine {
    /// Starts a conversation whose turns are asked with `options`; `rewrite` is how
    /// follow-ups are rewritten for retrieval.
    #[uniffi::method(default(rewrite = None, options))]
    pub fn chat(&self, options: AskOptions, rewrite: Option<QueryRewrite>) -> Result<Arc<Session>> {
        guard(|| {
            let engine = self.engine()?;
            Ok(Arc::new(Session {
                inner: engine.chat().rewrite(rewrite.unwrap_or_default().into()),
                options: options.try_into()?,
                ledger: engine.config().receipts.ledger,
            }))
        })
    }
}

#[uniffi::export]
impl Session {
    /// Asks the next question of the conversation (blocking).
    pub fn ask(&self, question: String) -> Result<Answer> {
        guard(|| {
            let answer = self.inner.ask_with(question, self.options.clone())?;
            Ok(Answer::new(answer, self.ledger))
        })
    }

    /// Streams the next answer (blocking): `listener.onText` for each piece, then
    /// `listener.onDone` with the finished answer, which is also returned. Returns no
    /// answer, and adds no turn, when the listener stopped the stream.
    pub fn stream(
        &self,
        question: String,
        listener: Box<dyn AskListener>,
    ) -> Result<Option<Answer>> {
        guard(|| {
            let stream = self.inner.stream_with(question, self.options.clone())?;
            drive_stream(stream, self.ledger, self.options.cancel.clone(), &*listener)
        })
    }

    /// What retrieval would search for if `question` were asked next; none on the first
    /// turn (the question itself).
    pub fn retrieval_query(&self, question: String) -> Result<Option<String>> {
        guard(|| Ok(self.inner.retrieval_query(&question)?))
    }

    /// The turns so far, oldest first.
    pub fn history(&self) -> Vec<Turn> {
        self.inner
            .history()
            .into_iter()
            .map(|t| Turn {
                role: match t.role {
                    tribute::engine::Role::User => TurnRole::User,
                    tribute::engine::Role::Assistant => TurnRole::Assistant,
                },
                content: t.content,
            })
            .collect()
    }

    /// Forgets the conversation: the next question starts a new one, numbered from 1.
    pub fn reset(&self) {
        self.inner.reset();
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl Session {
    /// `ask` without blocking the caller: runs on a worker thread. Cancelling a Kotlin
    /// coroutine cancels the turn (nothing is signed or added).
    pub async fn ask_async(&self, question: String) -> Result<Answer> {
        let session = self.inner.clone();
        let ledger = self.ledger;
        let mut options = self.options.clone();
        let cancel = CancelToken::new();
        options.cancel = Some(cancel.clone());
        let on_drop = cancel.drop_guard();
        let result = blocking(move || {
            let answer = session.ask_with(question, options)?;
            Ok(Answer::new(answer, ledger))
        })
        .await;
        on_drop.disarm();
        result
    }
}
