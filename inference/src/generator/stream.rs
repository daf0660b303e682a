//! Streaming one generation as text pieces: the request is a row of a running batch like
//! any other, and its tokens come through a channel as the batch decodes them.

use std::sync::mpsc::{self, Receiver};

use super::row::{Reply, StreamEvent};
use super::{CancelToken, FinishReason, GenerateRequest, Generation, Generator, Timings};
use crate::adapter::AdapterId;
use crate::error::Result;

impl Generator {
    /// Streams one answer as text pieces; each piece is whole characters, and the pieces
    /// concatenate to [`Generation::text`]. The request joins the running batch of its
    /// adapter set (it holds no session of its own); dropping the stream stops the
    /// generation at the next step boundary.
    ///
    /// Fails at once with [`Error::Overloaded`](crate::Error::Overloaded) when the queue is
    /// full.
    pub fn stream(&self, request: &GenerateRequest) -> Result<TextStream> {
        // Cancelled by `TextStream::cancel` or when the stream is dropped.
        let own = CancelToken::new();
        let adapters = request.adapter_set()?.items().to_vec();
        let (tx, rx) = mpsc::channel();
        let prompt_tokens = self.enqueue(request, Reply::Stream(tx), Some(own.clone()))?;
        Ok(TextStream {
            generator: self.clone(),
            rx,
            cancel: own,
            partial: Partial {
                prompt_tokens,
                adapters,
                tokens: Vec::new(),
                text: String::new(),
                timings: Timings::default(),
            },
            done: None,
            failed: false,
        })
    }
}

/// What a stream has received so far.
struct Partial {
    prompt_tokens: usize,
    adapters: Vec<(AdapterId, f32)>,
    tokens: Vec<u32>,
    text: String,
    timings: Timings,
}

/// Text pieces of one generation, produced as the model decodes. See [`Generator::stream`].
pub struct TextStream {
    generator: Generator,
    rx: Receiver<StreamEvent>,
    /// The row's own cancel token (the request's is honoured too).
    cancel: CancelToken,
    partial: Partial,
    done: Option<Generation>,
    failed: bool,
}

impl TextStream {
    /// The finished generation (text, tokens, finish reason, timings) once the stream has
    /// ended; `None` while it is still running.
    pub fn generation(&self) -> Option<Generation> {
        self.done.clone()
    }

    /// Stops the generation; the stream ends after this, and [`TextStream::generation`]
    /// holds what it had produced (finish reason `Cancelled`).
    pub fn cancel(&mut self) {
        self.cancel.cancel();
        if self.done.is_none() && !self.failed {
            let p = &self.partial;
            self.done = Some(Generation {
                text: p.text.clone(),
                tokens: p.tokens.clone(),
                prompt_tokens: p.prompt_tokens,
                finish_reason: FinishReason::Cancelled,
                adapters: p.adapters.clone(),
                timings: Timings {
                    decode_tokens: p.tokens.len().saturating_sub(1),
                    ..p.timings
                },
            });
        }
        self.generator.reap();
    }
}

impl Iterator for TextStream {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed || self.done.is_some() {
                return None;
            }
            let event = match self.generator.wait(&self.rx) {
                Ok(e) => e,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            };
            match event {
                StreamEvent::Piece {
                    token,
                    text,
                    timings,
                } => {
                    self.partial.tokens.push(token);
                    self.partial.timings = timings;
                    if !text.is_empty() {
                        self.partial.text.push_str(&text);
                        return Some(Ok(text));
                    }
                }
                StreamEvent::Done(Ok(g)) => {
                    // Every piece was sent before the end; whatever is left is the rest.
                    let rest = g
                        .text
                        .get(self.partial.text.len()..)
                        .filter(|_| g.text.starts_with(&self.partial.text))
                        .unwrap_or("")
                        .to_owned();
                    self.done = Some(g);
                    if !rest.is_empty() {
                        return Some(Ok(rest));
                    }
                }
                StreamEvent::Done(Err(e)) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl Drop for TextStream {
    fn drop(&mut self) {
        if self.done.is_none() && !self.failed {
            self.cancel.cancel();
            self.generator.reap();
        }
    }
}

impl std::fmt::Debug for TextStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextStream")
            .field("emitted", &self.partial.text.len())
            .field("done", &self.done.is_some())
            .finish()
    }
}
