//! Citation weights: how much each source contributed to an answer.
//!
//! Four methods, chosen per request ([`Method`]):
//! - `loo` — leave-one-out: the drop in the answer's log-probability when a source is
//!   taken out of the context, measured by a model through [`ContextScorer`].
//! - `ablation` — ContextCite-style: the answer's log-probability under `n` random subsets
//!   of the sources, fitted with a sparse (L1) linear surrogate; a source's weight is its
//!   positive coefficient.
//! - `similarity` — model-free: answer sentences against sources by embedding cosine
//!   ([`TextEmbedder`], optional) and lexical overlap.
//! - `retrieval` — the retrieval scores, the baseline the others must beat.
//!
//! Every method ends the same way: raw scores → duplicate policy → basis points that sum
//! to exactly 10,000 ([`to_bps`]), plus, per answer sentence, the sources that support it
//! ([`SentenceSupport`]) so that inline markers always point at real sources.

use std::ops::Range;
use std::time::Instant;

use alloy_primitives::{Address, B256};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use unicode_segmentation::UnicodeSegmentation;

use crate::error::{Error, Result};

/// Basis points in a whole.
pub const TOTAL_BPS: u32 = 10_000;

/// How citation weights are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Leave-one-out drop in the answer's log-probability (needs a model).
    Loo,
    /// Sparse linear surrogate over random source subsets (needs a model).
    Ablation,
    /// Embedding cosine and lexical overlap between answer sentences and sources.
    Similarity,
    /// The retrieval scores.
    Retrieval,
}

impl Method {
    /// All methods, in the order reports list them.
    pub const ALL: [Method; 4] = [
        Method::Loo,
        Method::Ablation,
        Method::Similarity,
        Method::Retrieval,
    ];

    /// The method's name (`loo`, `ablation`, `similarity`, `retrieval`).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Loo => "loo",
            Method::Ablation => "ablation",
            Method::Similarity => "similarity",
            Method::Retrieval => "retrieval",
        }
    }

    /// Whether the method runs the model.
    pub fn needs_model(self) -> bool {
        matches!(self, Method::Loo | Method::Ablation)
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

/// Turns non-negative scores into basis points summing to exactly 10,000 by the largest
/// remainder method; ties go to the lower index. Refuses negative, non-finite or all-zero
/// scores.
pub fn to_bps(scores: &[f64]) -> Result<Vec<u32>> {
    if scores.is_empty() {
        return Err(Error::NoSources);
    }
    if let Some(x) = scores.iter().find(|x| !x.is_finite() || **x < 0.0) {
        return Err(Error::WeightsDoNotSum(format!(
            "score {x} is negative or not finite"
        )));
    }
    let sum: f64 = scores.iter().sum();
    if sum <= 0.0 {
        return Err(Error::WeightsDoNotSum("all scores are zero".into()));
    }
    let exact: Vec<f64> = scores.iter().map(|x| x / sum * TOTAL_BPS as f64).collect();
    let mut bps: Vec<u32> = exact.iter().map(|x| x.floor() as u32).collect();
    let given: u32 = bps.iter().sum();
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| {
        let ra = exact[a] - exact[a].floor();
        let rb = exact[b] - exact[b].floor();
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    for &i in order.iter().take(TOTAL_BPS.saturating_sub(given) as usize) {
        bps[i] += 1;
    }
    Ok(bps)
}

/// Byte and character spans of the answer's sentences (UAX #29), whitespace-only ones left out.
pub fn sentences(answer: &str) -> Vec<(Range<usize>, Range<usize>)> {
    let mut out = Vec::new();
    for (start, s) in answer.split_sentence_bound_indices() {
        if s.trim().is_empty() {
            continue;
        }
        let end = start + s.len();
        let c0 = answer[..start].chars().count();
        out.push((start..end, c0..c0 + s.chars().count()));
    }
    out
}

/// Attributes `answer` to `sources` with `method`. `scorer` is needed for `loo` and
/// `ablation`; `embedder` is used by `similarity` when given (lexical overlap alone otherwise).
pub fn attribute(
    method: Method,
    answer: &str,
    sources: &[Source],
    scorer: Option<&dyn ContextScorer>,
    embedder: Option<&dyn TextEmbedder>,
    config: &AttributionConfig,
) -> Result<Attribution> {
    let t0 = Instant::now();
    if sources.is_empty() {
        return Err(Error::NoSources);
    }
    if let Some(s) = sources.iter().find(|s| s.text.trim().is_empty()) {
        return Err(Error::EmptySource(s.id.clone()));
    }
    if answer.trim().is_empty() {
        return Err(Error::EmptyAnswer);
    }
    if let Some(s) = sources.iter().find(|s| !s.retrieval_score.is_finite()) {
        return Err(Error::WeightsDoNotSum(format!(
            "retrieval score of {} is not finite",
            s.id
        )));
    }
    let sents = sentences(answer);
    let k = sources.len();
    // Per source overall score, and per sentence per source contribution.
    let (scores, per_sentence, passes) = match method {
        Method::Retrieval => {
            let s: Vec<f64> = sources.iter().map(|s| s.retrieval_score.max(0.0)).collect();
            let lex = lexical_matrix(answer, &sents, sources);
            (s, lex, 0)
        }
        Method::Similarity => {
            let m = similarity_matrix(answer, &sents, sources, embedder, config)?;
            let s: Vec<f64> = (0..k)
                .map(|i| m.iter().map(|row| row[i].max(0.0)).fold(0.0, f64::max))
                .collect();
            (s, m, 0)
        }
        Method::Loo => {
            let scorer = scorer.ok_or(Error::MissingScorer(method))?;
            loo(scorer, &sents, k)?
        }
        Method::Ablation => {
            let scorer = scorer.ok_or(Error::MissingScorer(method))?;
            ablation(scorer, &sents, k, config)?
        }
    };
    let mut scores = scores;
    let mut fallback = None;
    if scores.iter().all(|x| *x <= 0.0) {
        fallback = Some(format!(
            "no source measurably supports the answer under `{method}`; weights follow the retrieval scores"
        ));
        scores = sources.iter().map(|s| s.retrieval_score.max(0.0)).collect();
        if scores.iter().all(|x| *x <= 0.0) {
            scores = vec![1.0; k];
        }
    }
    let credited = apply_duplicates(&scores, sources, config.duplicates);
    let weights_bps = to_bps(&credited)?;
    let sentences = sents
        .iter()
        .zip(&per_sentence)
        .map(|((span, chars), contrib)| SentenceSupport {
            span: span.clone(),
            char_span: chars.clone(),
            sources: supporters(contrib, config),
        })
        .collect();
    Ok(Attribution {
        method,
        weights_bps,
        scores,
        sentences,
        fallback,
        model_passes: passes,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The sources supporting a sentence: positive contribution, at least `support_ratio` of
/// the best, strongest first, at most `max_support`.
fn supporters(contrib: &[f64], config: &AttributionConfig) -> Vec<usize> {
    let best = contrib.iter().copied().fold(0.0, f64::max);
    if best <= 0.0 {
        return Vec::new();
    }
    let mut idx: Vec<usize> = (0..contrib.len())
        .filter(|&i| contrib[i] > 0.0 && contrib[i] >= config.support_ratio * best)
        .collect();
    idx.sort_by(|&a, &b| contrib[b].total_cmp(&contrib[a]).then(a.cmp(&b)));
    idx.truncate(config.max_support.max(1));
    idx
}

/// Moves the credit of sources with the same content hash per the policy.
fn apply_duplicates(scores: &[f64], sources: &[Source], policy: DuplicatePolicy) -> Vec<f64> {
    let mut out = scores.to_vec();
    let mut seen: Vec<(B256, Vec<usize>)> = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        if let Some(h) = s.content_hash {
            match seen.iter_mut().find(|(g, _)| *g == h) {
                Some((_, v)) => v.push(i),
                None => seen.push((h, vec![i])),
            }
        }
    }
    for (_, group) in seen.into_iter().filter(|(_, g)| g.len() > 1) {
        let total: f64 = group.iter().map(|&i| scores[i]).sum();
        match policy {
            DuplicatePolicy::First => {
                for &i in &group {
                    out[i] = 0.0;
                }
                out[group[0]] = total;
            }
            DuplicatePolicy::Share => {
                for &i in &group {
                    out[i] = total / group.len() as f64;
                }
            }
        }
    }
    out
}

/// Which answer tokens fall in each sentence.
fn tokens_per_sentence(
    spans: &[Range<usize>],
    sents: &[(Range<usize>, Range<usize>)],
) -> Vec<Vec<usize>> {
    sents
        .iter()
        .map(|(s, _)| {
            spans
                .iter()
                .enumerate()
                // A token belongs to the sentence its first byte is in (leading spaces count
                // with the sentence they start).
                .filter(|(_, t)| {
                    t.start < s.end && t.end > s.start && t.start >= s.start.saturating_sub(1)
                })
                .map(|(i, _)| i)
                .collect()
        })
        .collect()
}

fn check_shape(lp: &[Vec<f32>], n_subsets: usize, n_tokens: usize) -> Result<()> {
    if lp.len() != n_subsets || lp.iter().any(|r| r.len() != n_tokens) {
        return Err(Error::Scorer(format!(
            "the scorer returned {} rows for {n_subsets} subsets (tokens per row: {:?}, expected {n_tokens})",
            lp.len(),
            lp.iter().map(Vec::len).collect::<Vec<_>>()
        )));
    }
    if lp.iter().flatten().any(|x| !x.is_finite()) {
        return Err(Error::Scorer(
            "the scorer returned non-finite log-probabilities".into(),
        ));
    }
    Ok(())
}

type Scored = (Vec<f64>, Vec<Vec<f64>>, usize);

fn loo(
    scorer: &dyn ContextScorer,
    sents: &[(Range<usize>, Range<usize>)],
    k: usize,
) -> Result<Scored> {
    let spans = scorer.token_spans();
    let mut subsets = vec![vec![true; k]];
    for i in 0..k {
        let mut s = vec![true; k];
        s[i] = false;
        subsets.push(s);
    }
    let lp = scorer
        .token_log_probs(&subsets)
        .map_err(|e| Error::Scorer(e.0))?;
    check_shape(&lp, subsets.len(), spans.len())?;
    let full = &lp[0];
    // drop[i][t] = log p_full(t) - log p_without_i(t)
    let drop: Vec<Vec<f64>> = (0..k)
        .map(|i| {
            full.iter()
                .zip(&lp[i + 1])
                .map(|(a, b)| f64::from(*a) - f64::from(*b))
                .collect()
        })
        .collect();
    let scores: Vec<f64> = drop
        .iter()
        .map(|d| d.iter().sum::<f64>().max(0.0))
        .collect();
    let per_tok = tokens_per_sentence(&spans, sents);
    let per_sentence = per_tok
        .iter()
        .map(|toks| {
            (0..k)
                .map(|i| toks.iter().map(|&t| drop[i][t]).sum())
                .collect()
        })
        .collect();
    Ok((scores, per_sentence, subsets.len()))
}

fn ablation(
    scorer: &dyn ContextScorer,
    sents: &[(Range<usize>, Range<usize>)],
    k: usize,
    config: &AttributionConfig,
) -> Result<Scored> {
    if config.ablation_samples < 2 {
        return Err(Error::InvalidConfig(
            "ablation_samples must be at least 2".into(),
        ));
    }
    if !(config.ablation_keep > 0.0 && config.ablation_keep < 1.0) {
        return Err(Error::InvalidConfig(
            "ablation_keep must be in (0, 1)".into(),
        ));
    }
    let spans = scorer.token_spans();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let subsets: Vec<Vec<bool>> = (0..config.ablation_samples)
        .map(|_| {
            (0..k)
                .map(|_| rng.random::<f64>() < config.ablation_keep)
                .collect()
        })
        .collect();
    let lp = scorer
        .token_log_probs(&subsets)
        .map_err(|e| Error::Scorer(e.0))?;
    check_shape(&lp, subsets.len(), spans.len())?;
    let x: Vec<Vec<f64>> = subsets
        .iter()
        .map(|s| s.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect())
        .collect();
    let total: Vec<f64> = lp
        .iter()
        .map(|r| r.iter().map(|&v| f64::from(v)).sum())
        .collect();
    let coef = lasso(&x, &total, config.lasso_ratio);
    let scores: Vec<f64> = coef.iter().map(|c| c.max(0.0)).collect();
    let per_tok = tokens_per_sentence(&spans, sents);
    let per_sentence = per_tok
        .iter()
        .map(|toks| {
            let y: Vec<f64> = lp
                .iter()
                .map(|r| toks.iter().map(|&t| f64::from(r[t])).sum())
                .collect();
            lasso(&x, &y, config.lasso_ratio)
        })
        .collect();
    Ok((scores, per_sentence, subsets.len()))
}

/// L1-regularised least squares with an intercept, by cyclic coordinate descent on
/// centred data: minimises ½n⁻¹‖y − b − Xw‖² + λ‖w‖₁ with λ = `ratio` · λ_max, where
/// λ_max = max_j |x_jᵀ(y − ȳ)| / n is the smallest λ that zeroes every coefficient.
pub fn lasso(x: &[Vec<f64>], y: &[f64], ratio: f64) -> Vec<f64> {
    let n = x.len();
    let k = x.first().map_or(0, Vec::len);
    if n == 0 || k == 0 {
        return vec![0.0; k];
    }
    let nf = n as f64;
    let ym = y.iter().sum::<f64>() / nf;
    let xm: Vec<f64> = (0..k)
        .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / nf)
        .collect();
    let xc: Vec<Vec<f64>> = x
        .iter()
        .map(|r| r.iter().zip(&xm).map(|(a, m)| a - m).collect())
        .collect();
    let mut resid: Vec<f64> = y.iter().map(|v| v - ym).collect();
    let norm: Vec<f64> = (0..k)
        .map(|j| xc.iter().map(|r| r[j] * r[j]).sum::<f64>() / nf)
        .collect();
    let lambda_max = (0..k)
        .map(|j| (xc.iter().zip(&resid).map(|(r, e)| r[j] * e).sum::<f64>() / nf).abs())
        .fold(0.0, f64::max);
    let lambda = ratio.max(0.0) * lambda_max;
    let mut w = vec![0.0; k];
    for _ in 0..1000 {
        let mut max_step: f64 = 0.0;
        for j in 0..k {
            if norm[j] == 0.0 {
                continue;
            }
            // rho = x_jᵀ(resid + x_j w_j) / n
            let rho =
                xc.iter().zip(&resid).map(|(r, e)| r[j] * e).sum::<f64>() / nf + norm[j] * w[j];
            let new = soft_threshold(rho, lambda) / norm[j];
            let d = new - w[j];
            if d != 0.0 {
                for (r, e) in xc.iter().zip(resid.iter_mut()) {
                    *e -= r[j] * d;
                }
                w[j] = new;
                max_step = max_step.max(d.abs());
            }
        }
        if max_step < 1e-10 {
            break;
        }
    }
    w
}

fn soft_threshold(x: f64, l: f64) -> f64 {
    if x > l {
        x - l
    } else if x < -l {
        x + l
    } else {
        0.0
    }
}

/// Lower-case word stems of a text for lexical overlap (UAX #29 words, ASCII stop words out).
fn words(text: &str) -> std::collections::BTreeSet<String> {
    const STOP: &[&str] = &[
        "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "in", "is",
        "it", "its", "of", "on", "or", "that", "the", "this", "to", "was", "were", "which", "with",
        "you", "your", "can", "will", "not", "but", "they", "their", "there", "also", "more",
    ];
    text.unicode_words()
        .map(str::to_lowercase)
        .filter(|w| !STOP.contains(&w.as_str()))
        .map(|w| {
            // A light stem: plural and common suffixes, so "charges"/"charging" meet.
            let mut s = w.as_str();
            for suf in ["ing", "es", "ed", "s"] {
                if s.len() > suf.len() + 3 && s.ends_with(suf) {
                    s = &s[..s.len() - suf.len()];
                    break;
                }
            }
            s.to_owned()
        })
        .collect()
}

/// Share of the sentence's content words found in the source.
fn lexical(
    sentence: &std::collections::BTreeSet<String>,
    source: &std::collections::BTreeSet<String>,
) -> f64 {
    if sentence.is_empty() {
        return 0.0;
    }
    sentence.intersection(source).count() as f64 / sentence.len() as f64
}

fn lexical_matrix(
    answer: &str,
    sents: &[(Range<usize>, Range<usize>)],
    sources: &[Source],
) -> Vec<Vec<f64>> {
    let src: Vec<_> = sources.iter().map(|s| words(&s.text)).collect();
    sents
        .iter()
        .map(|(span, _)| {
            let w = words(&answer[span.clone()]);
            src.iter().map(|s| lexical(&w, s)).collect()
        })
        .collect()
}

fn similarity_matrix(
    answer: &str,
    sents: &[(Range<usize>, Range<usize>)],
    sources: &[Source],
    embedder: Option<&dyn TextEmbedder>,
    config: &AttributionConfig,
) -> Result<Vec<Vec<f64>>> {
    let lex = lexical_matrix(answer, sents, sources);
    let Some(embedder) = embedder else {
        return Ok(lex);
    };
    let c = config.similarity_cosine.clamp(0.0, 1.0);
    let texts: Vec<&str> = sents
        .iter()
        .map(|(s, _)| answer[s.clone()].trim())
        .chain(sources.iter().map(|s| s.text.as_str()))
        .collect();
    let v = embedder.embed(&texts).map_err(|e| Error::Scorer(e.0))?;
    if v.len() != texts.len() {
        return Err(Error::Scorer(format!(
            "the embedder returned {} vectors for {} texts",
            v.len(),
            texts.len()
        )));
    }
    let (sv, rv) = v.split_at(sents.len());
    Ok(sv
        .iter()
        .zip(&lex)
        .map(|(a, lrow)| {
            rv.iter()
                .zip(lrow)
                .map(|(b, l)| {
                    let cos: f64 = a
                        .iter()
                        .zip(b)
                        .map(|(x, y)| f64::from(*x) * f64::from(*y))
                        .sum();
                    c * cos + (1.0 - c) * l
                })
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A linear fake model: log p(token t) = -3 + Σ_i kept_i · effect[i][t].
    struct Linear {
        spans: Vec<Range<usize>>,
        effect: Vec<Vec<f32>>,
    }

    impl ContextScorer for Linear {
        fn token_spans(&self) -> Vec<Range<usize>> {
            self.spans.clone()
        }
        fn token_log_probs(
            &self,
            subsets: &[Vec<bool>],
        ) -> std::result::Result<Vec<Vec<f32>>, ScorerError> {
            Ok(subsets
                .iter()
                .map(|keep| {
                    (0..self.spans.len())
                        .map(|t| {
                            -3.0 + keep
                                .iter()
                                .zip(&self.effect)
                                .map(|(&k, e)| if k { e[t] } else { 0.0 })
                                .sum::<f32>()
                        })
                        .collect()
                })
                .collect())
        }
    }

    /// Two sentences; the answer's tokens are its words.
    const ANSWER: &str = "Paris is the capital. It lies on the Seine.";

    fn word_spans(text: &str) -> Vec<Range<usize>> {
        text.split_word_bound_indices()
            .filter(|(_, w)| !w.trim().is_empty())
            .map(|(i, w)| i..i + w.len())
            .collect()
    }

    fn sources() -> Vec<Source> {
        vec![
            Source::new("a", "Paris is the capital of France.").with_retrieval_score(0.2),
            Source::new("b", "The Seine flows through Paris.").with_retrieval_score(0.9),
            Source::new("c", "Bananas are yellow.").with_retrieval_score(0.5),
        ]
    }

    /// Source a helps the first sentence's tokens, b the second's, c nothing.
    fn linear() -> Linear {
        let spans = word_spans(ANSWER);
        let first_end = ANSWER.find("It").unwrap();
        let effect = vec![
            spans
                .iter()
                .map(|s| if s.start < first_end { 0.8 } else { 0.0 })
                .collect(),
            spans
                .iter()
                .map(|s| if s.start >= first_end { 0.5 } else { 0.0 })
                .collect(),
            vec![0.0; spans.len()],
        ];
        Linear { spans, effect }
    }

    #[test]
    fn bps_sum_exactly_and_ties_go_to_the_lower_index() {
        assert_eq!(to_bps(&[1.0, 1.0, 1.0]).unwrap(), vec![3334, 3333, 3333]);
        assert_eq!(to_bps(&[0.0, 2.0]).unwrap(), vec![0, 10_000]);
        let b = to_bps(&[0.1234567, 3.3, 9e-9, 2.0]).unwrap();
        assert_eq!(b.iter().sum::<u32>(), TOTAL_BPS);
        assert!(matches!(
            to_bps(&[0.0, 0.0]),
            Err(Error::WeightsDoNotSum(_))
        ));
        assert!(matches!(
            to_bps(&[1.0, -0.1]),
            Err(Error::WeightsDoNotSum(_))
        ));
        assert!(matches!(
            to_bps(&[f64::NAN]),
            Err(Error::WeightsDoNotSum(_))
        ));
        assert!(matches!(to_bps(&[]), Err(Error::NoSources)));
    }

    fn loo_of(m: &Linear) -> Attribution {
        let cfg = AttributionConfig::default();
        attribute(Method::Loo, ANSWER, &sources(), Some(m), None, &cfg).unwrap()
    }

    #[test]
    fn loo_measures_each_sources_effect_per_answer_and_per_sentence() {
        let m = linear();
        let a = loo_of(&m);
        // First sentence: 4 words ("Paris is the capital") + "." = 5 tokens at 0.8; second: 6 tokens at 0.5.
        assert!((a.scores[0] - 5.0 * 0.8).abs() < 1e-5, "{:?}", a.scores);
        assert!((a.scores[1] - 6.0 * 0.5).abs() < 1e-5, "{:?}", a.scores);
        assert_eq!(a.scores[2], 0.0);
        assert_eq!(a.weights_bps, vec![5714, 4286, 0]);
        assert_eq!(a.model_passes, 4);
        assert_eq!(a.sentences.len(), 2);
        assert_eq!(a.sentences[0].sources, vec![0]);
        assert_eq!(a.sentences[1].sources, vec![1]);
        assert_eq!(
            a.render(ANSWER, |i| format!("[{}]", i + 1)),
            "Paris is the capital.[1] It lies on the Seine.[2]"
        );
    }

    #[test]
    fn ablation_recovers_the_planted_effects() {
        let m = linear();
        let cfg = AttributionConfig {
            ablation_samples: 24,
            seed: 3,
            ..Default::default()
        };
        let a = attribute(Method::Ablation, ANSWER, &sources(), Some(&m), None, &cfg).unwrap();
        // Noise-free linear data: the surrogate's coefficients are the per-source totals,
        // shrunk by the small L1 penalty.
        assert!((a.scores[0] - 4.0).abs() < 0.1, "{:?}", a.scores);
        assert!((a.scores[1] - 3.0).abs() < 0.1, "{:?}", a.scores);
        assert!(a.scores[2].abs() < 1e-9);
        assert_eq!(a.sentences[0].sources, vec![0]);
        assert_eq!(a.sentences[1].sources, vec![1]);
        assert_eq!(a.weights_bps.iter().sum::<u32>(), TOTAL_BPS);
    }

    #[test]
    fn lasso_matches_least_squares_without_penalty_and_zeroes_at_lambda_max() {
        // y = 1 + 2·x0 − 1·x1 on a full 2² design (twice).
        let x: Vec<Vec<f64>> = [[0., 0.], [1., 0.], [0., 1.], [1., 1.]]
            .iter()
            .cycle()
            .take(8)
            .map(|r| r.to_vec())
            .collect();
        let y: Vec<f64> = x.iter().map(|r| 1.0 + 2.0 * r[0] - r[1]).collect();
        let w = lasso(&x, &y, 0.0);
        assert!(
            (w[0] - 2.0).abs() < 1e-9 && (w[1] + 1.0).abs() < 1e-9,
            "{w:?}"
        );
        assert_eq!(lasso(&x, &y, 1.0), vec![0.0, 0.0]);
        // Orthogonal design: soft-thresholding by λ/var(x) = 0.5·λmax/0.25.
        let w = lasso(&x, &y, 0.5);
        // λmax = max|x_jᵀ(y−ȳ)|/n = 0.5 (x0: cov 0.5) → λ = 0.25 → w0 = (0.5−0.25)/0.25 = 1, w1 = −(0.25−0.25)/0.25 = 0.
        assert!((w[0] - 1.0).abs() < 1e-9 && w[1].abs() < 1e-9, "{w:?}");
    }

    #[test]
    fn similarity_and_retrieval_need_no_model() {
        let cfg = AttributionConfig::default();
        let s = attribute(Method::Similarity, ANSWER, &sources(), None, None, &cfg).unwrap();
        assert_eq!(s.sentences[0].sources.first(), Some(&0));
        assert_eq!(s.sentences[1].sources.first(), Some(&1));
        assert_eq!(s.weights_bps[2], 0);
        let r = attribute(Method::Retrieval, ANSWER, &sources(), None, None, &cfg).unwrap();
        assert_eq!(r.weights_bps, vec![1250, 5625, 3125]);
    }

    #[test]
    fn duplicates_credit_the_first_or_share() {
        let h = B256::repeat_byte(7);
        let mut src = sources();
        src[1] = src[1].clone().with_content_hash(h);
        src.push(
            Source::new("b-copy", src[1].text.clone())
                .with_content_hash(h)
                .with_retrieval_score(0.9),
        );
        let first = attribute(
            Method::Retrieval,
            ANSWER,
            &src,
            None,
            None,
            &AttributionConfig::default(),
        )
        .unwrap();
        assert_eq!(first.weights_bps[3], 0);
        assert_eq!(first.weights_bps[1], 7200); // (0.9 + 0.9) / 2.5
        let share = attribute(
            Method::Retrieval,
            ANSWER,
            &src,
            None,
            None,
            &AttributionConfig {
                duplicates: DuplicatePolicy::Share,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(share.weights_bps[1], share.weights_bps[3]);
    }

    #[test]
    fn nothing_helps_falls_back_to_retrieval_and_says_so() {
        let mut m = linear();
        for e in &mut m.effect {
            e.iter_mut().for_each(|x| *x = -0.1);
        }
        let a = loo_of(&m);
        assert!(a.fallback.is_some());
        assert_eq!(a.weights_bps, vec![1250, 5625, 3125]);
    }

    #[test]
    fn bad_input_is_refused() {
        let cfg = AttributionConfig::default();
        assert!(matches!(
            attribute(Method::Retrieval, ANSWER, &[], None, None, &cfg),
            Err(Error::NoSources)
        ));
        let mut src = sources();
        src[2].text = "  ".into();
        assert!(
            matches!(attribute(Method::Retrieval, ANSWER, &src, None, None, &cfg), Err(Error::EmptySource(id)) if id == "c")
        );
        assert!(matches!(
            attribute(Method::Loo, ANSWER, &sources(), None, None, &cfg),
            Err(Error::MissingScorer(Method::Loo))
        ));
        assert!(matches!(
            attribute(Method::Retrieval, " ", &sources(), None, None, &cfg),
            Err(Error::EmptyAnswer)
        ));
        assert!(matches!(
            "bogus".parse::<Method>(),
            Err(Error::UnknownMethod(_))
        ));
        /// A scorer that returns the wrong number of rows.
        struct Broken;
        impl ContextScorer for Broken {
            fn token_spans(&self) -> Vec<Range<usize>> {
                std::iter::once(0..1).collect()
            }
            fn token_log_probs(
                &self,
                _: &[Vec<bool>],
            ) -> std::result::Result<Vec<Vec<f32>>, ScorerError> {
                Ok(vec![vec![0.0]])
            }
        }
        assert!(matches!(
            attribute(Method::Loo, ANSWER, &sources(), Some(&Broken), None, &cfg),
            Err(Error::Scorer(_))
        ));
    }
}
