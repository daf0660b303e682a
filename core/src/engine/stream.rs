//! Streamed asks: [`AskStream`] yields the answer's text as the model writes it, then the
//! finished [`Answer`].

use super::ask::Prepared;
use super::{Answer, AskOptions, Engine};
use crate::error::{Error, Result};

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
    /// Applied to the finished answer before it is delivered (a session numbers and
    /// records it).
    on_done: Option<Box<dyn FnOnce(Answer) -> Answer + Send>>,
    /// The ask's tracing span, entered while the stream advances (generation, attribution
    /// and signing happen inside it).
    span: tracing::Span,
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
        let span = self.span.clone();
        let _entered = span.enter();
        match self.advance() {
            Some(Ok(AskEvent::Done(answer))) => match self.on_done.take() {
                Some(f) => Some(Ok(AskEvent::Done(Box::new(f(*answer))))),
                None => Some(Ok(AskEvent::Done(answer))),
            },
            other => other,
        }
    }
}

impl AskStream {
    /// Has `f` transform the finished answer before the stream delivers it.
    pub(super) fn on_done(mut self, f: impl FnOnce(Answer) -> Answer + Send + 'static) -> Self {
        self.on_done = Some(Box::new(f));
        self
    }

    fn advance(&mut self) -> Option<Result<AskEvent>> {
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

impl Engine {
    pub(super) fn stream_with(
        &self,
        question: &str,
        history: &[super::Turn],
        options: &AskOptions,
    ) -> Result<AskStream> {
        let span = tracing::info_span!("ask");
        let _entered = span.enter();
        if self.is_extractive(options) {
            let answer = self.extractive_answer(question, options)?;
            return Ok(AskStream {
                engine: self.clone(),
                state: StreamState::NoSources(Box::new(answer)),
                on_done: None,
                span: span.clone(),
            });
        }
        let state = match self.prepare(question, history, options)? {
            Err(no_sources) => StreamState::NoSources(no_sources),
            Ok(prepared) => {
                prepared.check_cancelled()?;
                let request = self.generate_request(&prepared);
                let stream = Box::new(self.loaded_generator()?.stream(&request)?);
                StreamState::Generating {
                    prepared: Box::new(prepared),
                    stream,
                }
            }
        };
        Ok(AskStream {
            engine: self.clone(),
            state,
            on_done: None,
            span: span.clone(),
        })
    }
}
