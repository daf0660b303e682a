//! The entry point: validate the inputs, run a method, turn its scores into credit.

use std::ops::Range;
use std::time::Instant;

use unicode_segmentation::UnicodeSegmentation;

use super::bps::{apply_duplicates, supporters, to_bps};
use super::model::{ablation, loo};
use super::shapley::shapley;
use super::similarity::{lexical_matrix, similarity_matrix};
use super::{
    Attribution, AttributionConfig, ContextScorer, Method, SentenceSupport, Source, TextEmbedder,
};
use crate::error::{Error, Result};

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
            loo(scorer, &sents, k, config)?
        }
        Method::Ablation => {
            let scorer = scorer.ok_or(Error::MissingScorer(method))?;
            ablation(scorer, &sents, k, config)?
        }
        Method::Shapley => {
            let scorer = scorer.ok_or(Error::MissingScorer(method))?;
            shapley(scorer, &sents, k, config)?
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
            contributions: contrib.clone(),
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

#[cfg(test)]
mod tests {
    use alloy_primitives::B256;
    use tribute_common::TOTAL_BPS;

    use super::*;
    use crate::weights::{DuplicatePolicy, ScorerError};

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
        // Per sentence, every source's summed drop: 5 tokens at 0.8, then 6 at 0.5.
        let c = &a.sentences[0].contributions;
        assert!(
            (c[0] - 4.0).abs() < 1e-5 && c[1].abs() < 1e-9 && c[2] == 0.0,
            "{c:?}"
        );
        let c = &a.sentences[1].contributions;
        assert!(c[0].abs() < 1e-9 && (c[1] - 3.0).abs() < 1e-5, "{c:?}");
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
