//! The methods that run the model through a [`ContextScorer`]: leave-one-out and
//! ContextCite-style ablation.

use std::ops::Range;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::lasso::lasso;
use super::{AttributionConfig, ContextScorer};
use crate::error::{Error, Result};

/// Which answer tokens fall in each sentence.
pub(super) fn tokens_per_sentence(
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

/// Checks a scorer's rows: one per subset, `n_tokens` finite values in each (`what` names
/// the rows in the error).
fn check_rows(
    lp: &[Vec<f32>],
    n_subsets: usize,
    n_tokens: Option<usize>,
    what: &str,
) -> Result<()> {
    let shape_ok = lp.len() == n_subsets
        && n_tokens.is_none_or(|n| lp.iter().all(|r| r.len() == n))
        && lp.iter().all(|r| r.len() == lp[0].len());
    if !shape_ok {
        return Err(Error::Scorer(format!(
            "the scorer returned {} {what} rows for {n_subsets} subsets (tokens per row: {:?}, expected {})",
            lp.len(),
            lp.iter().map(Vec::len).collect::<Vec<_>>(),
            n_tokens.map_or("equal lengths".to_owned(), |n| n.to_string())
        )));
    }
    if lp.iter().flatten().any(|x| !x.is_finite()) {
        return Err(Error::Scorer(format!(
            "the scorer returned non-finite {what} log-probabilities"
        )));
    }
    Ok(())
}

/// The answer's token log-probabilities under each subset, and each subset's value: the
/// answer's total log-probability plus `question_weight` times the question's (when the
/// scorer measures it and the weight is not zero).
pub(super) fn log_probs_and_values(
    scorer: &dyn ContextScorer,
    subsets: &[Vec<bool>],
    n_tokens: usize,
    config: &AttributionConfig,
) -> Result<(Vec<Vec<f32>>, Vec<f64>)> {
    if !(config.question_weight.is_finite() && config.question_weight >= 0.0) {
        return Err(Error::InvalidConfig(
            "question_weight must be a finite number >= 0".into(),
        ));
    }
    let (lp, question) = if config.question_weight > 0.0 {
        scorer
            .answer_and_question_log_probs(subsets)
            .map_err(|e| Error::Scorer(e.0))?
    } else {
        (
            scorer
                .token_log_probs(subsets)
                .map_err(|e| Error::Scorer(e.0))?,
            None,
        )
    };
    check_rows(&lp, subsets.len(), Some(n_tokens), "answer")?;
    let mut values: Vec<f64> = lp
        .iter()
        .map(|r| r.iter().map(|&v| f64::from(v)).sum())
        .collect();
    if let Some(q) = question {
        check_rows(&q, subsets.len(), None, "question")?;
        for (v, r) in values.iter_mut().zip(&q) {
            *v += config.question_weight * r.iter().map(|&x| f64::from(x)).sum::<f64>();
        }
    }
    Ok((lp, values))
}

/// Per source score, per sentence per source contribution, and model passes.
pub(super) type Scored = (Vec<f64>, Vec<Vec<f64>>, usize);

/// Leave-one-out: the drop in each token's log-probability when one source is left out.
pub(super) fn loo(
    scorer: &dyn ContextScorer,
    sents: &[(Range<usize>, Range<usize>)],
    k: usize,
    config: &AttributionConfig,
) -> Result<Scored> {
    let spans = scorer.token_spans();
    let mut subsets = vec![vec![true; k]];
    for i in 0..k {
        let mut s = vec![true; k];
        s[i] = false;
        subsets.push(s);
    }
    let (lp, values) = log_probs_and_values(scorer, &subsets, spans.len(), config)?;
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
    let scores: Vec<f64> = (0..k)
        .map(|i| (values[0] - values[i + 1]).max(0.0))
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

/// ContextCite-style ablation: random subsets of the sources, fitted per answer and per
/// sentence with a sparse linear surrogate ([`lasso`]).
pub(super) fn ablation(
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
    let (lp, total) = log_probs_and_values(scorer, &subsets, spans.len(), config)?;
    let x: Vec<Vec<f64>> = subsets
        .iter()
        .map(|s| s.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect())
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
