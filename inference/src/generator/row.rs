//! One request's decode state (a row of a running batch) and how its results reach the
//! caller: the finished [`Generation`], or for a stream every token as it comes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;

use super::queue::Wakeup;
use super::{CancelToken, FinishReason, GenerateRequest, Generation, Generator, Prompt, Timings};
use crate::adapter::AdapterId;
use crate::error::{Error, Result};
use crate::registry::{Activation, AdapterSet};
use crate::sampling::{Sampler, TokenEnd, TokenEndings};
use crate::tokenizer::StreamDecoder;

/// What a stream's row sends as it decodes.
pub(super) enum StreamEvent {
    /// One new token and the text it made safe to show (possibly empty).
    Piece {
        token: u32,
        text: String,
        timings: Timings,
    },
    /// The row ended: the finished generation, or the error that ended its batch.
    Done(Result<Generation>),
}

/// Where a row's results go.
pub(super) enum Reply {
    /// `generate` / `generate_batch`: the finished generation only.
    Once(Sender<Result<Generation>>),
    /// `stream`: every token, then the finished generation.
    Stream(Sender<StreamEvent>),
}

/// Counts a request from the moment it is accepted until it is answered (see
/// `Error::Overloaded`): decremented when dropped, which also owes the waiting callers a
/// wake-up (see [`Wakeup`]).
pub(super) struct Ticket {
    pending: Arc<AtomicUsize>,
    wakeup: Arc<Wakeup>,
}

impl Ticket {
    pub(super) fn new(pending: &Arc<AtomicUsize>, wakeup: &Arc<Wakeup>) -> Self {
        pending.fetch_add(1, Ordering::Relaxed);
        Ticket {
            pending: pending.clone(),
            wakeup: wakeup.clone(),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.pending.fetch_sub(1, Ordering::Relaxed);
        self.wakeup.owe();
    }
}

impl Generator {
    /// A request's decode state: its prompt tokens (truncated if asked), sampler and limits.
    pub(super) fn row(&self, r: &GenerateRequest, adapters: Vec<(AdapterId, f32)>) -> Result<Row> {
        let s = &r.sampling;
        let endings = if s.no_end_after_colon || (s.repeat_stop > 0 && s.repeat_stop_grace > 0) {
            Some(self.token_endings()?)
        } else {
            None
        };
        let sampler = Sampler::new(r.sampling.clone())?
            .with_stop_token(self.shared.config.eos_token_ids.first().copied())
            .with_token_endings(endings);
        let mut prompt = self.prompt_tokens(&r.prompt)?;
        let ctx = self.shared.config.context_length;
        if prompt.len() >= ctx {
            if !r.truncate {
                return Err(Error::PromptTooLong {
                    tokens: prompt.len(),
                    context: ctx,
                });
            }
            let keep = ctx.saturating_sub(r.max_tokens.clamp(1, ctx / 2)).max(1);
            prompt.drain(..prompt.len() - keep);
        }
        if r.max_tokens == 0 {
            return Err(Error::InvalidRequest(
                "max_tokens must be at least 1".into(),
            ));
        }
        let max_tokens = r.max_tokens.min(ctx - prompt.len());
        Ok(Row {
            sampler,
            prompt_len: prompt.len(),
            context: prompt,
            generated: Vec::new(),
            max_tokens,
            stop: self.stop_strings(r),
            ignore_eos: r.ignore_eos,
            keep_prompt_cache: r.keep_prompt_cache,
            decoder: StreamDecoder::new(true),
            text: String::new(),
            emitted: 0,
            finish: None,
            cancel: r.cancel.iter().cloned().collect(),
            adapters,
            slot: None,
            timings: Timings::default(),
            reply: None,
            span: tracing::Span::current(),
            stage: None,
        })
    }

    /// The request's stop strings, and for a chat under the plain transcript template the
    /// texts that start a new turn.
    fn stop_strings(&self, r: &GenerateRequest) -> Vec<String> {
        let mut stop = r.stop.clone();
        if matches!(r.prompt, Prompt::Chat(_)) {
            for s in self.shared.tokenizer.chat_stop_strings() {
                if !stop.iter().any(|t| t == s) {
                    stop.push((*s).to_owned());
                }
            }
        }
        stop
    }

    /// How each vocabulary token's text ends (decoded alone, special tokens as nothing),
    /// with the model's end-of-sequence tokens; built once.
    fn token_endings(&self) -> Result<TokenEndings> {
        if let Some(e) = self.shared.token_endings.get() {
            return Ok(e.clone());
        }
        let tok = &self.shared.tokenizer;
        let ends = (0..tok.vocab_size() as u32)
            .map(|id| Ok(TokenEnd::of_text(&tok.decode(&[id], true)?)))
            .collect::<Result<Vec<_>>>()?;
        let endings = TokenEndings::new(ends, self.shared.config.eos_token_ids.clone());
        Ok(self.shared.token_endings.get_or_init(|| endings).clone())
    }
}

/// A row's adapter slot, and the set and activation it holds: the prompt cache keeps the
/// row's prompt under those, so the set's scorings (which run its own activation, not the
/// slot bank's) find it. The two give the same keys and values within float rounding.
pub(super) struct SlotUse {
    pub(super) index: usize,
    pub(super) set: AdapterSet,
    pub(super) activation: Activation,
}

/// One sequence: a request being decoded, alone or as a row of a batch.
pub(super) struct Row {
    pub(super) sampler: Sampler,
    prompt_len: usize,
    /// Prompt plus generated tokens.
    pub(super) context: Vec<u32>,
    pub(super) generated: Vec<u32>,
    pub(super) max_tokens: usize,
    stop: Vec<String>,
    pub(super) ignore_eos: bool,
    /// Leave the prompt's KV cache in the generator's prompt cache after the prefill.
    pub(super) keep_prompt_cache: bool,
    pub(super) decoder: StreamDecoder,
    /// Decoded text so far, cut at a stop string.
    pub(super) text: String,
    /// Bytes of `text` a stream has been sent.
    emitted: usize,
    pub(super) finish: Option<FinishReason>,
    /// The row stops at the next step boundary once any of these is cancelled.
    pub(super) cancel: Vec<CancelToken>,
    adapters: Vec<(AdapterId, f32)>,
    /// The adapter slot its adapters are in (`None`: the base model, or slots are off).
    pub(super) slot: Option<SlotUse>,
    pub(super) timings: Timings,
    /// Taken when the final answer is sent.
    pub(super) reply: Option<(Reply, Ticket)>,
    /// The caller's tracing span when the request was queued: the parent of its stages.
    pub(super) span: tracing::Span,
    /// The stage running for this row (`prefill`, then `decode`), closed when it ends.
    pub(super) stage: Option<tracing::Span>,
}

impl Row {
    /// Whether the row still decodes.
    pub(super) fn live(&self) -> bool {
        self.finish.is_none()
    }

    /// Tokens it may still generate.
    pub(super) fn steps_left(&self) -> usize {
        self.max_tokens.saturating_sub(self.generated.len())
    }

    /// Ends the row if its caller cancelled it; true if it did.
    pub(super) fn check_cancel(&mut self) -> bool {
        if self.finish.is_none() && self.cancel.iter().any(CancelToken::is_cancelled) {
            self.finish = Some(FinishReason::Cancelled);
            self.settle(None);
            return true;
        }
        false
    }

    /// Bytes of `text` that can be shown: not a possible start of a stop string.
    fn safe_len(&self) -> usize {
        if self.finish.is_some() {
            return self.text.len();
        }
        let mut safe = self.text.len();
        for s in &self.stop {
            for k in (1..s.len()).rev() {
                if self.text.len() >= k
                    && s.is_char_boundary(k)
                    && self.text.is_char_boundary(self.text.len() - k)
                    && self.text.ends_with(&s[..k])
                {
                    safe = safe.min(self.text.len() - k);
                    break;
                }
            }
        }
        safe
    }

    /// Appends decoded text; a stop string in it ends the row, cut before the stop string.
    pub(super) fn push_text(&mut self, piece: &str) {
        let search_from = self
            .text
            .len()
            .saturating_sub(self.stop.iter().map(String::len).max().unwrap_or(0));
        self.text.push_str(piece);
        let mut from = search_from;
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let hit = self
            .stop
            .iter()
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|p| (from + p, s)))
            .min_by_key(|(p, _)| *p);
        if let Some((p, s)) = hit {
            let s = s.clone();
            self.text.truncate(p);
            self.finish = Some(FinishReason::Stop(s));
        }
    }

    /// Sends a stream its newest token with the text that became safe to show; a stream
    /// that is gone cancels the row.
    pub(super) fn send_piece(&mut self, token: u32) {
        let Some((Reply::Stream(tx), ticket)) = &self.reply else {
            return;
        };
        ticket.wakeup.owe();
        let safe = self.safe_len();
        let text = self.text[self.emitted.min(safe)..safe].to_owned();
        self.emitted = safe;
        let event = StreamEvent::Piece {
            token,
            text,
            timings: self.timings,
        };
        if tx.send(event).is_err() && self.finish.is_none() {
            self.finish = Some(FinishReason::Cancelled);
        }
    }

    /// The result so far (the final one once the row has finished).
    pub(super) fn generation(&self) -> Generation {
        Generation {
            text: self.text.clone(),
            tokens: self.generated.clone(),
            prompt_tokens: self.prompt_len,
            finish_reason: self.finish.clone().unwrap_or(FinishReason::Length),
            adapters: self.adapters.clone(),
            timings: Timings {
                decode_tokens: self.generated.len().saturating_sub(1),
                ..self.timings
            },
        }
    }

    /// Sends the final answer once (the generation, or `error`); later calls do nothing.
    pub(super) fn settle(&mut self, error: Option<&Error>) {
        let Some((reply, _ticket)) = self.reply.take() else {
            return;
        };
        // The stage ends before the caller hears of it.
        if let Some(stage) = self.stage.take() {
            stage.record("tokens", self.generated.len());
        }
        if self.finish.is_none() {
            self.finish = Some(FinishReason::Cancelled);
        }
        let result = match error {
            Some(e) => Err(e.clone()),
            None => Ok(self.generation()),
        };
        // A caller that went away no longer wants the answer.
        match reply {
            Reply::Once(tx) => {
                let _ = tx.send(result);
            }
            Reply::Stream(tx) => {
                let _ = tx.send(StreamEvent::Done(result));
            }
        }
    }
}
