//! Choosing the next token: greedy, or sampled with temperature, top-k, top-p and a
//! repetition penalty, reproducible from a seed; optionally with a guard against an
//! answer repeating itself (an n-gram block over the generated tokens, and a stop once the
//! model keeps trying to repeat); and optionally never ending an answer right after a colon.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How the next token is chosen. The default is greedy decoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Softmax temperature; `0` means greedy (argmax).
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (`0` = all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `p` (`1.0` = all).
    pub top_p: f32,
    /// Hugging Face–style repetition penalty over prompt and generated tokens (`1.0` = off).
    pub repetition_penalty: f32,
    /// Seed of the sampler's random generator; the same seed gives the same tokens.
    pub seed: u64,
    /// Never generate the same run of this many tokens twice (`0` = off): a token that
    /// would repeat an n-gram of the tokens generated so far is excluded. Only generated
    /// tokens count, so copying a source's words from the prompt stays possible.
    pub no_repeat_ngram: usize,
    /// Stop (with the end-of-sequence token the generator gives the sampler) once the
    /// model's own first choice was a blocked repeat this many times (`0` = never): it is
    /// looping. Needs `no_repeat_ngram`.
    pub repeat_stop: usize,
    /// Once `repeat_stop` is reached, let the model finish its sentence: stop at the first
    /// token that ends a sentence or a line, or after this many more tokens (`0` = stop at
    /// once). Stopping at once cuts lists and sentences in the middle ("… School Violence
    /// Restraining"). Needs the vocabulary's [`TokenEndings`].
    pub repeat_stop_grace: usize,
    /// Never end right after a colon: while the text generated so far ends with `:` (an
    /// answer announced, "The answer is:", but not given), the end-of-sequence tokens are
    /// excluded. Needs the vocabulary's [`TokenEndings`] (the generator supplies them).
    pub no_end_after_colon: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
            no_repeat_ngram: 0,
            repeat_stop: 0,
            repeat_stop_grace: 0,
            no_end_after_colon: false,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self::default()
    }

    /// Checks that every setting is in range.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidRequest(m));
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(format!("temperature must be ≥ 0, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !self.repetition_penalty.is_finite() || self.repetition_penalty <= 0.0 {
            return bad(format!(
                "repetition_penalty must be > 0, got {}",
                self.repetition_penalty
            ));
        }
        Ok(())
    }

    fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
    }
}

/// One row's pick as a device sampler makes it (`tribute_export/sampler.py`): the logits
/// times `scale`, sorted, cut to `top_k` (0: all) and to `top_p`, then the first position
/// whose running sum of `exp` exceeds `uniform` times the total, as [`Sampler::sample`]
/// picks without a penalty, guard or excluded endings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DevicePick {
    /// 1 / temperature.
    pub scale: f32,
    /// Most candidates (0: all).
    pub top_k: usize,
    /// Nucleus cut (1: off).
    pub top_p: f64,
    /// This pick's uniform number in [0, 1).
    pub uniform: f64,
}

impl DevicePick {
    /// The argmax (one candidate).
    pub const GREEDY: DevicePick = DevicePick {
        scale: 1.0,
        top_k: 1,
        top_p: 1.0,
        uniform: 0.0,
    };
}

/// A sampler for one sequence.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    scratch: Vec<(f32, u32)>,
    /// The tokens this sampler picked, for the repetition guard.
    generated: Vec<u32>,
    /// How often the model's first choice was a blocked repeat.
    blocked_first_choices: usize,
    /// What to answer once `repeat_stop` is reached.
    stop_token: Option<u32>,
    /// Where the repetition stop stands.
    stop: StopState,
    /// How each vocabulary token ends, for `no_end_after_colon` and `repeat_stop_grace`.
    endings: Option<TokenEndings>,
    /// The text picked so far ends with a colon (blank tokens after it kept it so).
    after_colon: bool,
}

impl Sampler {
    /// A sampler with the given settings (validated).
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        Ok(Sampler {
            rng: ChaCha8Rng::seed_from_u64(params.seed),
            params,
            scratch: Vec::new(),
            generated: Vec::new(),
            blocked_first_choices: 0,
            stop_token: None,
            stop: StopState::Running,
            endings: None,
            after_colon: false,
        })
    }

    /// How the vocabulary's tokens end, which `no_end_after_colon` and `repeat_stop_grace`
    /// need; without them the first does nothing and the repetition stop stops at once.
    pub fn with_token_endings(mut self, endings: Option<TokenEndings>) -> Self {
        self.endings = endings;
        self
    }

    /// The token to return when the repetition guard stops the sequence (the model's
    /// end-of-sequence token); without one, `repeat_stop` does nothing.
    pub fn with_stop_token(mut self, token: Option<u32>) -> Self {
        self.stop_token = token;
        self
    }

    /// The settings.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token from `logits` (modified in place by the repetition penalty
    /// and guard); `context` holds the prompt and generated tokens. `None` if a logit is
    /// not finite.
    pub fn sample(&mut self, logits: &mut [f32], context: &[u32]) -> Option<u32> {
        let token = self.pick(logits, context)?;
        self.accept(token);
        Some(token)
    }

    /// Whether the next pick is the plain argmax of the logits, with nothing (penalty,
    /// repetition guard, excluded endings) changing them first: what a graph's own argmax
    /// gives, so a runtime may take the token from the graph without reading the logits.
    pub fn picks_argmax(&self) -> bool {
        self.params.is_greedy() && self.picks_plainly()
    }

    /// Whether the next pick uses nothing but the logits and the sampler's own draws (no
    /// repetition penalty or guard, no excluded endings): what a sampler running where the
    /// logits are ([`DevicePick`]) can do.
    pub fn picks_plainly(&self) -> bool {
        let p = &self.params;
        p.repetition_penalty == 1.0
            && p.no_repeat_ngram == 0
            && !p.no_end_after_colon
            && self.stop == StopState::Running
    }

    /// The next pick's parameters for a device sampler, with its uniform number drawn from
    /// this sampler's generator (the draw [`Sampler::sample`] would make, so a row's draws
    /// are the same wherever it is sampled); `None` unless [`Sampler::picks_plainly`].
    /// Record the token picked with [`Sampler::accept`].
    pub fn device_pick(&mut self) -> Option<DevicePick> {
        if !self.picks_plainly() {
            return None;
        }
        let p = &self.params;
        if p.is_greedy() {
            return Some(DevicePick::GREEDY);
        }
        Some(DevicePick {
            scale: 1.0 / p.temperature,
            top_k: p.top_k,
            top_p: f64::from(p.top_p),
            uniform: self.rng.random::<f64>(),
        })
    }

    /// Records `token` as picked (by [`Sampler::sample`], or by the graph's argmax when
    /// [`Sampler::picks_argmax`]).
    pub fn accept(&mut self, token: u32) {
        if self.params.no_repeat_ngram > 0 {
            self.generated.push(token);
        }
        if let Some(endings) = &self.endings {
            match endings.of(token) {
                TokenEnd::Colon => self.after_colon = true,
                TokenEnd::Blank | TokenEnd::LineBreak => {}
                TokenEnd::Sentence | TokenEnd::Other => self.after_colon = false,
            }
        }
    }

    fn pick(&mut self, logits: &mut [f32], context: &[u32]) -> Option<u32> {
        if logits.iter().any(|x| !x.is_finite()) {
            return None;
        }
        let p = self.params.repetition_penalty;
        if p != 1.0 {
            let mut seen = vec![false; logits.len()];
            for &t in context {
                if let Some(s) = seen.get_mut(t as usize)
                    && !*s
                {
                    *s = true;
                    let l = &mut logits[t as usize];
                    *l = if *l > 0.0 { *l / p } else { *l * p };
                }
            }
        }
        match self.stop {
            StopState::Stopped => return self.stop_token,
            StopState::Finishing(picked) => {
                if picked >= self.params.repeat_stop_grace || self.sentence_ended() {
                    self.stop = StopState::Stopped;
                    return self.stop_token;
                }
                self.stop = StopState::Finishing(picked + 1);
            }
            StopState::Running => {}
        }
        if self.block_repeats(logits) && self.stop == StopState::Running {
            // Looping: stop now if the text is at a sentence's end (or no grace is
            // given), else once the sentence is finished.
            if self.params.repeat_stop_grace == 0 || self.endings.is_none() || self.sentence_ended()
            {
                self.stop = StopState::Stopped;
                return self.stop_token;
            }
            self.stop = StopState::Finishing(1);
        }
        if self.params.no_end_after_colon
            && self.after_colon
            && let Some(endings) = &self.endings
        {
            for &t in endings.end_tokens.iter() {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        if self.params.is_greedy() {
            return Some(argmax(logits));
        }
        let inv_t = 1.0 / self.params.temperature;
        let cand = &mut self.scratch;
        cand.clear();
        cand.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (l * inv_t, i as u32)),
        );
        let by_logit_desc =
            |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        let k = self.params.top_k;
        if k > 0 && k < cand.len() {
            cand.select_nth_unstable_by(k - 1, by_logit_desc);
            cand.truncate(k);
        }
        cand.sort_unstable_by(by_logit_desc);
        let max = cand[0].0;
        let mut total = 0.0f64;
        for c in cand.iter_mut() {
            c.0 = (c.0 - max).exp();
            total += c.0 as f64;
        }
        if self.params.top_p < 1.0 {
            let mut acc = 0.0f64;
            let limit = self.params.top_p as f64 * total;
            let mut keep = cand.len();
            for (i, c) in cand.iter().enumerate() {
                acc += c.0 as f64;
                if acc >= limit {
                    keep = i + 1;
                    break;
                }
            }
            cand.truncate(keep);
            total = acc.min(total);
        }
        let r = self.rng.random::<f64>() * total;
        let mut acc = 0.0f64;
        for c in cand.iter() {
            acc += c.0 as f64;
            if r < acc {
                return Some(c.1);
            }
        }
        cand.last().map(|c| c.1)
    }
}

impl Sampler {
    /// Whether the last picked token ends a sentence or a line.
    fn sentence_ended(&self) -> bool {
        match (&self.endings, self.generated.last()) {
            (Some(endings), Some(&t)) => {
                matches!(endings.of(t), TokenEnd::Sentence | TokenEnd::LineBreak)
            }
            _ => false,
        }
    }

    /// Sets the logits of tokens that would repeat an n-gram of the generated tokens to
    /// −∞ (all but the best one if every token would). `true`: stop now, the model keeps
    /// choosing repeats (`repeat_stop`).
    fn block_repeats(&mut self, logits: &mut [f32]) -> bool {
        let n = self.params.no_repeat_ngram;
        let generated = &self.generated;
        if n == 0 || generated.len() < n.saturating_sub(1).max(1) {
            return false;
        }
        let prefix = &generated[generated.len() + 1 - n..];
        let mut banned: Vec<u32> = generated
            .windows(n)
            .filter(|w| w[..n - 1] == *prefix)
            .map(|w| w[n - 1])
            .filter(|&t| (t as usize) < logits.len())
            .collect();
        if banned.is_empty() {
            return false;
        }
        banned.sort_unstable();
        banned.dedup();
        let first_choice = argmax(logits);
        if banned.len() == logits.len() {
            return false;
        }
        for &t in &banned {
            logits[t as usize] = f32::NEG_INFINITY;
        }
        if banned.binary_search(&first_choice).is_ok() {
            self.blocked_first_choices += 1;
            let limit = self.params.repeat_stop;
            return limit > 0 && self.blocked_first_choices >= limit && self.stop_token.is_some();
        }
        false
    }
}

/// Where a sampler's repetition stop stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopState {
    /// Not reached.
    Running,
    /// Reached; this many tokens picked since, while the sentence is finished
    /// (`repeat_stop_grace`).
    Finishing(usize),
    /// Stopped: every later pick is the stop token.
    Stopped,
}

/// How a token's text ends, as `no_end_after_colon` and `repeat_stop_grace` see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenEnd {
    /// Ends with `:` (or the full-width `：`), trailing whitespace aside.
    Colon,
    /// Only whitespace without a line break (or nothing): the text still ends as it did.
    Blank,
    /// Only whitespace, with a line break: the text still ends as it did, and a line ended.
    LineBreak,
    /// Ends a sentence: `.`, `!`, `?` (or their full-width forms), trailing whitespace
    /// and closing quotes or brackets aside.
    Sentence,
    /// Anything else.
    Other,
}

impl TokenEnd {
    /// How `text` ends.
    pub fn of_text(text: &str) -> Self {
        let visible = text.trim_end();
        if visible.is_empty() {
            return if text.contains('\n') {
                TokenEnd::LineBreak
            } else {
                TokenEnd::Blank
            };
        }
        match visible.chars().last() {
            Some(':' | '：') => TokenEnd::Colon,
            _ => match visible
                .trim_end_matches(['"', '\'', '”', '’', ')', ']'])
                .chars()
                .last()
            {
                Some('.' | '!' | '?' | '。' | '！' | '？') => TokenEnd::Sentence,
                _ => TokenEnd::Other,
            },
        }
    }
}

/// Per vocabulary token, how its decoded text ends, and the end-of-sequence tokens to hold
/// back after a colon. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct TokenEndings {
    ends: Arc<[TokenEnd]>,
    end_tokens: Arc<[u32]>,
}

impl TokenEndings {
    /// From each token's decoded text, in id order, and the end-of-sequence ids.
    pub fn new(ends: Vec<TokenEnd>, end_tokens: Vec<u32>) -> Self {
        TokenEndings {
            ends: ends.into(),
            end_tokens: end_tokens.into(),
        }
    }

    /// How token `id` ends (`Other` outside the vocabulary).
    pub fn of(&self, id: u32) -> TokenEnd {
        self.ends
            .get(id as usize)
            .copied()
            .unwrap_or(TokenEnd::Other)
    }
}

/// Index of the largest value; the lowest index wins ties.
pub fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests;
