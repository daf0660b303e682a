//! Citation weights: how much each source contributed to an answer.
//!
//! Five methods, chosen per request ([`Method`]):
//! - `loo` — leave-one-out: the drop in the answer's log-probability when a source is
//!   taken out of the context, measured by a model through [`ContextScorer`].
//! - `ablation` — ContextCite-style: the answer's log-probability under `n` random subsets
//!   of the sources, fitted with a sparse (L1) linear surrogate; a source's weight is its
//!   positive coefficient.
//! - `shapley` — Shapley values over source subsets (exact for small `k`, antithetic
//!   permutation sampling within a pass budget otherwise): a source needed together with
//!   another one (a multi-hop *bridge*) gets its share, which leave-one-out misses.
//! - `similarity` — model-free: answer sentences against sources by embedding cosine
//!   ([`TextEmbedder`], optional) and lexical overlap.
//! - `retrieval` — the retrieval scores, the baseline the others must beat.
//!
//! Every method ends the same way: raw scores → duplicate policy → basis points that sum
//! to exactly 10,000 ([`to_bps`]), plus, per answer sentence, the sources that support it
//! ([`SentenceSupport`]) so that inline markers always point at real sources.

mod attribute;
mod bps;
mod lasso;
mod model;
mod shapley;
mod similarity;

use std::ops::Range;

use alloy_primitives::{Address, B256};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use attribute::{attribute, sentences};
pub use bps::to_bps;
pub use lasso::lasso;
pub use shapley::shapley_min_passes;

/// How citation weights are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Leave-one-out drop in the answer's log-probability (needs a model).
    Loo,
    /// Sparse linear surrogate over random source subsets (needs a model).
    Ablation,
    /// Shapley values of the answer's log-probability over source subsets (needs a model).
    Shapley,
    /// Embedding cosine and lexical overlap between answer sentences and sources.
    Similarity,
    /// The retrieval scores.
    Retrieval,
}

impl Method {
    /// All methods, in the order reports list them.
    pub const ALL: [Method; 5] = [
        Method::Loo,
        Method::Ablation,
        Method::Shapley,
        Method::Similarity,
        Method::Retrieval,
    ];

    /// The method's name (`loo`, `ablation`, `shapley`, `similarity`, `retrieval`).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Loo => "loo",
            Method::Ablation => "ablation",
            Method::Shapley => "shapley",
            Method::Similarity => "similarity",
            Method::Retrieval => "retrieval",
        }
    }

    /// Whether the method runs the model.
    pub fn needs_model(self) -> bool {
        matches!(self, Method::Loo | Method::Ablation | Method::Shapley)
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Method::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| Error::UnknownMethod(s.to_owned()))
    }
}

/// One retrieved source given to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// Source id (e.g. a chunk id).
    pub id: String,
    /// Who contributed it.
    #[serde(default)]
    pub contributor: Option<Address>,
    /// Its text, as shown to the model.
    pub text: String,
    /// Hash of its content (duplicates share one).
    #[serde(default)]
    pub content_hash: Option<B256>,
    /// Retrieval score (higher = more relevant).
    #[serde(default)]
    pub retrieval_score: f64,
}

impl Source {
    /// A source with an id and text.
    pub fn new(id: impl Into<String>, text: impl Into<String>) -> Self {
        Source {
            id: id.into(),
            contributor: None,
            text: text.into(),
            content_hash: None,
            retrieval_score: 0.0,
        }
    }
    /// Sets the contributor.
    pub fn with_contributor(mut self, a: Address) -> Self {
        self.contributor = Some(a);
        self
    }
    /// Sets the content hash.
    pub fn with_content_hash(mut self, h: B256) -> Self {
        self.content_hash = Some(h);
        self
    }
    /// Sets the retrieval score.
    pub fn with_retrieval_score(mut self, s: f64) -> Self {
        self.retrieval_score = s;
        self
    }
}

/// Why a model-backed scorer failed (its own error, as text: the scorer lives in another crate).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScorerError(pub String);

/// Per subset, the log-probability of every token scored (one row per subset).
pub type SubsetLogProbs = Vec<Vec<f32>>;

/// The answer's rows and, when measured, the question's ([`ContextScorer::answer_and_question_log_probs`]).
pub type AnswerAndQuestion = (SubsetLogProbs, Option<SubsetLogProbs>);

/// Scores an answer under subsets of the sources with a model: the teacher-forced
/// log-probability of each answer token when only the chosen sources are in the context.
pub trait ContextScorer {
    /// Byte spans of the answer's tokens in the answer text, in order.
    fn token_spans(&self) -> Vec<Range<usize>>;

    /// For each subset (`true` = the source stays in the context, one flag per source in
    /// the order given), the log-probability of every answer token.
    fn token_log_probs(
        &self,
        subsets: &[Vec<bool>],
    ) -> std::result::Result<Vec<Vec<f32>>, ScorerError>;

    /// [`token_log_probs`](Self::token_log_probs) plus, when the scorer can measure them,
    /// the log-probabilities of the question's tokens (which follow the sources in the
    /// prompt) under the same subsets: how much each source helps the model read the
    /// question. A source that links the question to the answer (a multi-hop *bridge*)
    /// shows up here even when the answer's own tokens no longer need it. The default
    /// measures the answer only.
    fn answer_and_question_log_probs(
        &self,
        subsets: &[Vec<bool>],
    ) -> std::result::Result<AnswerAndQuestion, ScorerError> {
        Ok((self.token_log_probs(subsets)?, None))
    }
}

/// Embeds texts into vectors whose dot products are cosines (unit length).
pub trait TextEmbedder {
    /// One vector per text.
    fn embed(&self, texts: &[&str]) -> std::result::Result<Vec<Vec<f32>>, ScorerError>;
}

/// Who gets the credit of sources with the same content hash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DuplicatePolicy {
    /// The first source (in the order given, i.e. rank order) gets the whole group's credit.
    #[default]
    First,
    /// The group's credit is shared equally.
    Share,
}

/// Settings of an attribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AttributionConfig {
    /// Random subsets for `ablation`.
    pub ablation_samples: usize,
    /// Probability that a source is kept in an `ablation` subset.
    pub ablation_keep: f64,
    /// L1 strength of the `ablation` surrogate, as a fraction of the smallest strength that
    /// zeroes every coefficient.
    pub lasso_ratio: f64,
    /// Most subsets `shapley` may score (model passes); exact over all `2^k` subsets when
    /// they fit, sampled orders otherwise. At least `k + 1` ([`shapley_min_passes`]).
    pub shapley_passes: usize,
    /// Weight of the question's log-probability against the answer's in the model methods'
    /// value of a subset of sources (`0` = the answer alone, the behaviour before 0.3).
    /// Crediting how well a source lets the model read the question gives the bridge
    /// sources of multi-hop answers their share; 0.5 was chosen on a HotpotQA dev split
    /// (docs/ATTRIBUTION.md). Ignored by scorers that cannot measure the question.
    pub question_weight: f64,
    /// Seed of the subset sampler.
    pub seed: u64,
    /// Weight of the embedding cosine against lexical overlap in `similarity` (0..=1).
    pub similarity_cosine: f64,
    /// How duplicate sources share credit.
    pub duplicates: DuplicatePolicy,
    /// A source supports a sentence when its contribution is at least this share of the
    /// sentence's best source's.
    pub support_ratio: f64,
    /// Most sources listed per sentence.
    pub max_support: usize,
}

impl Default for AttributionConfig {
    fn default() -> Self {
        AttributionConfig {
            ablation_samples: 32,
            ablation_keep: 0.5,
            lasso_ratio: 0.01,
            shapley_passes: 64,
            question_weight: 0.5,
            seed: 0,
            similarity_cosine: 0.5,
            duplicates: DuplicatePolicy::First,
            support_ratio: 0.5,
            max_support: 3,
        }
    }
}

/// The sources supporting one sentence of the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentenceSupport {
    /// Byte range of the sentence in the answer.
    pub span: Range<usize>,
    /// Character range of the sentence in the answer (for UIs that index by character).
    pub char_span: Range<usize>,
    /// Indices of the supporting sources, strongest first (empty: nothing measured supports it).
    pub sources: Vec<usize>,
    /// Each source's contribution to this sentence, one per source in the order given, in
    /// the method's units: for `loo`, `ablation` and `shapley` the change in the sentence
    /// tokens' summed log-probability in nats (leave-one-out drop, surrogate coefficient,
    /// Shapley value); for `similarity` and `retrieval` the match score. Empty in
    /// attributions serialized before this field existed.
    #[serde(default)]
    pub contributions: Vec<f64>,
}

/// The result of an attribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    /// The method used (after any fallback, see `fallback`).
    pub method: Method,
    /// Weight of each source in basis points, in the order given; sums to exactly 10,000.
    pub weights_bps: Vec<u32>,
    /// The raw scores the weights come from (method-specific units).
    pub scores: Vec<f64>,
    /// Per answer sentence, its supporting sources.
    pub sentences: Vec<SentenceSupport>,
    /// Why the weights fell back to retrieval scores (no source measurably helped), if they did.
    pub fallback: Option<String>,
    /// Model passes (subsets scored).
    pub model_passes: usize,
    /// Wall time in seconds.
    pub seconds: f64,
}

impl Attribution {
    /// Renders the answer with inline markers after each sentence: `marker(i)` for each
    /// supporting source index `i` (e.g. `|i| format!("[{}]", i + 1)`).
    pub fn render(&self, answer: &str, marker: impl Fn(usize) -> String) -> String {
        let mut out = String::with_capacity(answer.len() + 8 * self.sentences.len());
        let mut at = 0;
        for s in &self.sentences {
            let Some(text) = answer.get(s.span.clone()) else {
                continue;
            };
            out.push_str(&answer[at.min(s.span.start)..s.span.start]);
            let trimmed = text.trim_end();
            out.push_str(trimmed);
            for &i in &s.sources {
                out.push_str(&marker(i));
            }
            out.push_str(&text[trimmed.len()..]);
            at = s.span.end;
        }
        if at < answer.len() {
            out.push_str(&answer[at..]);
        }
        out
    }
}
