//! What callers pass in and get back: prompts, requests, cancellation, results.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::adapter::AdapterId;
use crate::error::Result;
use crate::registry::AdapterSet;
use crate::sampling::SamplingParams;
use crate::tokenizer::Message;

/// What to generate from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// Chat messages, rendered with the model's chat template plus the assistant header.
    Chat(Vec<Message>),
    /// Raw text, tokenized with the tokenizer's special tokens (e.g. BOS).
    Text(String),
    /// Token ids, used as they are.
    Tokens(Vec<u32>),
}

impl From<&str> for Prompt {
    /// A single user message.
    fn from(s: &str) -> Self {
        Prompt::Chat(vec![Message::user(s)])
    }
}
impl From<String> for Prompt {
    /// A single user message.
    fn from(s: String) -> Self {
        Prompt::Chat(vec![Message::user(s)])
    }
}
impl From<Vec<Message>> for Prompt {
    fn from(m: Vec<Message>) -> Self {
        Prompt::Chat(m)
    }
}

/// Cancels a running generation from another thread. Clones share one flag; two tokens
/// are equal when they are clones of each other.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl PartialEq for CancelToken {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for CancelToken {}

impl CancelToken {
    /// A fresh token.
    pub fn new() -> Self {
        Self::default()
    }
    /// Asks the generation to stop after the current step.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    /// Whether cancellation was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    /// A guard that cancels this token when dropped, unless [`CancelGuard::disarm`]ed
    /// first: ties a generation to the life of a future or of a caller that may go away.
    pub fn drop_guard(&self) -> CancelGuard {
        CancelGuard(Some(self.clone()))
    }
}

/// Cancels its [`CancelToken`] when dropped armed (see [`CancelToken::drop_guard`]).
#[derive(Debug)]
#[must_use = "dropping the guard cancels at once"]
pub struct CancelGuard(Option<CancelToken>);

impl CancelGuard {
    /// Keeps the token as it is (the work finished).
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.cancel();
        }
    }
}

/// One generation request. Build it with [`GenerateRequest::new`] and the setters.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub(super) prompt: Prompt,
    pub(super) max_tokens: usize,
    pub(super) sampling: SamplingParams,
    pub(super) stop: Vec<String>,
    adapters: Vec<(String, f32)>,
    pub(super) ignore_eos: bool,
    pub(super) truncate: bool,
    pub(super) cancel: Option<CancelToken>,
    pub(super) keep_prompt_cache: bool,
}

impl GenerateRequest {
    /// A request with greedy decoding and up to 256 new tokens.
    pub fn new(prompt: impl Into<Prompt>) -> Self {
        GenerateRequest {
            prompt: prompt.into(),
            max_tokens: 256,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            adapters: Vec::new(),
            ignore_eos: false,
            truncate: false,
            cancel: None,
            keep_prompt_cache: false,
        }
    }
    /// Most new tokens (also bounded by the model's context).
    pub fn max_tokens(mut self, n: usize) -> Self {
        self.max_tokens = n;
        self
    }
    /// All sampling settings at once.
    pub fn sampling(mut self, p: SamplingParams) -> Self {
        self.sampling = p;
        self
    }
    /// Temperature (0 = greedy).
    pub fn temperature(mut self, t: f32) -> Self {
        self.sampling.temperature = t;
        self
    }
    /// Top-k cut (0 = off).
    pub fn top_k(mut self, k: usize) -> Self {
        self.sampling.top_k = k;
        self
    }
    /// Top-p (nucleus) cut (1 = off).
    pub fn top_p(mut self, p: f32) -> Self {
        self.sampling.top_p = p;
        self
    }
    /// Repetition penalty (1 = off).
    pub fn repetition_penalty(mut self, p: f32) -> Self {
        self.sampling.repetition_penalty = p;
        self
    }
    /// Sampler seed.
    pub fn seed(mut self, s: u64) -> Self {
        self.sampling.seed = s;
        self
    }
    /// Stops before the first occurrence of `s` (not included in the text).
    pub fn stop(mut self, s: impl Into<String>) -> Self {
        let s = s.into();
        if !s.is_empty() {
            self.stop.push(s);
        }
        self
    }
    /// Applies a registered adapter with a merge weight (several may be given).
    pub fn adapter(mut self, id: impl Into<String>, weight: f32) -> Self {
        self.adapters.push((id.into(), weight));
        self
    }
    /// Keeps generating past end-of-sequence tokens (benchmarks).
    pub fn ignore_eos(mut self, yes: bool) -> Self {
        self.ignore_eos = yes;
        self
    }
    /// Drops the oldest prompt tokens when the prompt does not fit the context, instead
    /// of failing with [`Error::PromptTooLong`](crate::Error::PromptTooLong).
    pub fn truncate_prompt(mut self, yes: bool) -> Self {
        self.truncate = yes;
        self
    }
    /// Keeps the prompt's KV cache after the prefill (within
    /// [`GeneratorOptions::prompt_cache_bytes`](super::GeneratorOptions)) so that scoring
    /// the answer against this prompt ([`Generator::score_masked`](super::Generator::score_masked))
    /// does not run the prompt again. For callers that score what they generate, as
    /// attribution does.
    pub fn keep_prompt_cache(mut self, yes: bool) -> Self {
        self.keep_prompt_cache = yes;
        self
    }
    /// Lets another thread cancel the generation.
    pub fn cancel_token(mut self, t: CancelToken) -> Self {
        self.cancel = Some(t);
        self
    }

    /// The adapters to apply, checked.
    pub(super) fn adapter_set(&self) -> Result<AdapterSet> {
        let items = self
            .adapters
            .iter()
            .map(|(id, w)| AdapterId::new(id.clone()).map(|id| (id, *w)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AdapterSet::new(items)?)
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model emitted an end-of-sequence token.
    Eos,
    /// `max_tokens` or the context length was reached.
    Length,
    /// A stop string was generated.
    Stop(String),
    /// The request was cancelled.
    Cancelled,
}

/// Time spent per stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Timings {
    /// Prompt processing (for a batch: the whole batch's prefill).
    pub prefill: Duration,
    /// Token-by-token decoding.
    pub decode: Duration,
    /// Tokens produced by decode steps (the first token comes from the prefill).
    pub decode_tokens: usize,
    /// Rows decoded together.
    pub batch_size: usize,
}

impl Timings {
    /// Decode speed of this sequence in tokens per second.
    pub fn decode_tokens_per_s(&self) -> f64 {
        if self.decode.is_zero() {
            0.0
        } else {
            self.decode_tokens as f64 / self.decode.as_secs_f64()
        }
    }
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generation {
    /// The generated text (special tokens skipped, stop string cut off).
    pub text: String,
    /// Generated token ids (an end-of-sequence token included).
    pub tokens: Vec<u32>,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// The adapters applied, with their weights.
    pub adapters: Vec<(AdapterId, f32)>,
    /// Time per stage.
    pub timings: Timings,
}

#[cfg(test)]
mod tests {
    use super::CancelToken;

    #[test]
    fn a_drop_guard_cancels_unless_disarmed() {
        let token = CancelToken::new();
        token.drop_guard().disarm();
        assert!(!token.is_cancelled());
        let clone = token.clone();
        drop(token.drop_guard());
        assert!(token.is_cancelled() && clone.is_cancelled() && clone == token);
        assert_ne!(CancelToken::new(), token);
    }
}
