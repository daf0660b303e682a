//! Shapley values over source subsets: each source's average marginal contribution to the
//! answer's log-probability over every order in which the sources could be added.
//!
//! Leave-one-out only sees what a source adds when every other source is present, so a
//! *bridge* source — needed together with another source, redundant once the other is
//! there — gets almost nothing. Shapley values average over all coalitions and split a
//! joint contribution between the sources that make it. Exact over all `2^k` subsets when
//! they fit the pass budget; otherwise estimated from antithetic random permutations
//! (each permutation and its reverse), which needs `k - 1` new subsets per permutation.

use std::collections::HashMap;
use std::ops::Range;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::model::{Scored, log_probs_and_values, tokens_per_sentence};
use super::{AttributionConfig, ContextScorer, Method};
use crate::error::{Error, Result};

/// Subsets are bit masks over at most this many sources.
const MAX_SOURCES: usize = 63;

/// The smallest pass budget `shapley` accepts for `k` sources: one permutation (`k + 1`
/// subsets, the empty and the full one included).
pub fn shapley_min_passes(k: usize) -> usize {
    k + 1
}

/// Shapley values of each source for the whole answer and for each sentence.
pub(super) fn shapley(
    scorer: &dyn ContextScorer,
    sents: &[(Range<usize>, Range<usize>)],
    k: usize,
    config: &AttributionConfig,
) -> Result<Scored> {
    if k > MAX_SOURCES {
        return Err(Error::InvalidConfig(format!(
            "shapley takes at most {MAX_SOURCES} sources, got {k}"
        )));
    }
    let minimum = shapley_min_passes(k);
    if config.shapley_passes < minimum {
        return Err(Error::PassBudget {
            method: Method::Shapley,
            budget: config.shapley_passes,
            minimum,
        });
    }
    let spans = scorer.token_spans();
    let per_tok = tokens_per_sentence(&spans, sents);
    let full: u64 = (1u64 << k) - 1;
    let exact = k < 32 && (1usize << k) <= config.shapley_passes;
    let orders = if exact {
        Vec::new()
    } else {
        permutations(k, config)
    };
    // The subsets to score: all of them, or every prefix of every sampled order.
    let masks: Vec<u64> = if exact {
        (0..=full).collect()
    } else {
        let mut seen = HashMap::new();
        for order in &orders {
            let mut m = 0u64;
            seen.entry(m).or_insert(());
            for &i in order {
                m |= 1 << i;
                seen.entry(m).or_insert(());
            }
        }
        let mut v: Vec<u64> = seen.into_keys().collect();
        v.sort_unstable();
        v
    };
    let subsets: Vec<Vec<bool>> = masks
        .iter()
        .map(|m| (0..k).map(|i| m & (1 << i) != 0).collect())
        .collect();
    let (lp, totals) = log_probs_and_values(scorer, &subsets, spans.len(), config)?;
    // Value of a subset for the whole answer (row 0) and for each sentence (rows 1..).
    let values: HashMap<u64, Vec<f64>> = masks
        .iter()
        .zip(lp.iter().zip(&totals))
        .map(|(&m, (row, &total))| {
            let mut v = Vec::with_capacity(1 + per_tok.len());
            v.push(total);
            v.extend(
                per_tok
                    .iter()
                    .map(|toks| toks.iter().map(|&t| f64::from(row[t])).sum::<f64>()),
            );
            (m, v)
        })
        .collect();
    let rows = 1 + per_tok.len();
    // phi[r][i]: Shapley value of source i for value row r.
    let mut phi = vec![vec![0.0f64; k]; rows];
    if exact {
        // phi_i = sum over S not holding i of |S|! (k-|S|-1)! / k! * (v(S+i) - v(S)).
        let weight: Vec<f64> = (0..k).map(|s| coalition_weight(s, k)).collect();
        for m in 0..=full {
            let size = m.count_ones() as usize;
            for i in (0..k).filter(|i| m & (1 << i) == 0) {
                let with = &values[&(m | (1 << i))];
                let without = &values[&m];
                for r in 0..rows {
                    phi[r][i] += weight[size] * (with[r] - without[r]);
                }
            }
        }
    } else {
        for order in &orders {
            let mut m = 0u64;
            for &i in order {
                let before = &values[&m];
                m |= 1 << i;
                let after = &values[&m];
                for r in 0..rows {
                    phi[r][i] += after[r] - before[r];
                }
            }
        }
        let n = orders.len() as f64;
        phi.iter_mut().flatten().for_each(|x| *x /= n);
    }
    let scores = phi[0].iter().map(|x| x.max(0.0)).collect();
    let per_sentence = phi.split_off(1);
    Ok((scores, per_sentence, masks.len()))
}

/// `|S|! (k - |S| - 1)! / k!`, the share of orders in which a coalition of `size` comes
/// right before a given source.
fn coalition_weight(size: usize, k: usize) -> f64 {
    // 1 / (k * C(k-1, size)), computed in floating point without factorial overflow.
    let mut c = 1.0f64;
    for j in 0..size {
        c = c * (k - 1 - j) as f64 / (j + 1) as f64;
    }
    1.0 / (k as f64 * c)
}

/// Antithetic random orders (each followed by its reverse) that fit the pass budget: every
/// order scores `k - 1` subsets besides the shared empty and full ones.
fn permutations(k: usize, config: &AttributionConfig) -> Vec<Vec<usize>> {
    let per_order = k.saturating_sub(1).max(1);
    let n = ((config.shapley_passes - 2) / per_order).max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut orders = Vec::with_capacity(n);
    while orders.len() < n {
        let mut order: Vec<usize> = (0..k).collect();
        order.shuffle(&mut rng);
        let reverse: Vec<usize> = order.iter().rev().copied().collect();
        orders.push(order);
        if orders.len() < n {
            orders.push(reverse);
        }
    }
    orders
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::ScorerError;

    /// A scorer whose answer (one token) has log-probability given by a set function.
    struct SetFn(fn(&[bool]) -> f32);

    impl ContextScorer for SetFn {
        fn token_spans(&self) -> Vec<Range<usize>> {
            std::iter::once(0..6).collect()
        }
        fn token_log_probs(
            &self,
            subsets: &[Vec<bool>],
        ) -> std::result::Result<Vec<Vec<f32>>, ScorerError> {
            Ok(subsets.iter().map(|s| vec![(self.0)(s)]).collect())
        }
    }

    fn sents() -> Vec<(Range<usize>, Range<usize>)> {
        vec![(0..6, 0..6)]
    }

    fn config(passes: usize) -> AttributionConfig {
        AttributionConfig {
            shapley_passes: passes,
            ..Default::default()
        }
    }

    #[test]
    fn joint_necessity_is_split_between_both_sources() {
        // The answer needs sources 0 and 1 together; 2 is noise. Leave-one-out would give
        // each of 0 and 1 the full gain; Shapley gives each half, and 2 nothing.
        let f = SetFn(|s| if s[0] && s[1] { -1.0 } else { -5.0 });
        let (scores, per_sentence, passes) = shapley(&f, &sents(), 3, &config(64)).unwrap();
        assert_eq!(passes, 8);
        assert!((scores[0] - 2.0).abs() < 1e-9, "{scores:?}");
        assert!((scores[1] - 2.0).abs() < 1e-9);
        assert!(scores[2].abs() < 1e-9);
        assert_eq!(per_sentence.len(), 1);
    }

    #[test]
    fn a_bridge_redundant_with_the_full_context_still_gets_credit() {
        // Source 1 holds the answer; source 0 (the bridge) helps only when 1 is absent...
        // and together they are best. LOO gives 0 nothing here (v(N) == v(N - {0})).
        let f = SetFn(|s| match (s[0], s[1]) {
            (true, true) => -1.0,
            (false, true) => -1.0,
            (true, false) => -3.0,
            (false, false) => -5.0,
        });
        let (scores, _, _) = shapley(&f, &sents(), 2, &config(64)).unwrap();
        // phi_0 = 1/2 (v(0) - v()) + 1/2 (v(01) - v(1)) = 1/2 * 2 + 0 = 1.
        assert!((scores[0] - 1.0).abs() < 1e-9, "{scores:?}");
        assert!((scores[1] - 3.0).abs() < 1e-9);
    }

    #[test]
    fn values_are_efficient_and_sampling_approaches_exact() {
        // Additive plus an interaction: sum of the values equals v(N) - v(empty).
        let f = SetFn(|s| {
            let w = [0.5, 1.0, 0.25, 2.0, 0.0, 0.75];
            let mut v = -10.0;
            for (i, &b) in s.iter().enumerate() {
                if b {
                    v += w[i];
                }
            }
            if s[1] && s[3] {
                v += 1.5;
            }
            v
        });
        let k = 6;
        let (exact, _, passes) = shapley(&f, &sents(), k, &config(64)).unwrap();
        assert_eq!(passes, 64);
        let sum: f64 = exact.iter().sum();
        assert!((sum - (0.5 + 1.0 + 0.25 + 2.0 + 0.75 + 1.5)).abs() < 1e-5);
        assert!((exact[1] - 1.75).abs() < 1e-5 && (exact[3] - 2.75).abs() < 1e-5);
        // Sampled with a budget below 2^k: an unbiased estimate; with antithetic orders and
        // this small interaction it lands close.
        let (sampled, _, passes) = shapley(&f, &sents(), k, &config(40)).unwrap();
        assert!(passes <= 40, "{passes}");
        for (a, b) in exact.iter().zip(&sampled) {
            assert!((a - b).abs() < 0.5, "{exact:?} vs {sampled:?}");
        }
    }

    #[test]
    fn a_budget_below_one_order_is_refused_with_the_minimum() {
        let f = SetFn(|_| -1.0);
        match shapley(&f, &sents(), 4, &config(4)) {
            Err(Error::PassBudget {
                method: Method::Shapley,
                budget: 4,
                minimum: 5,
            }) => {}
            other => panic!("{other:?}"),
        }
    }
}

#[cfg(test)]
mod question_tests {
    use super::*;
    use crate::weights::{ScorerError, Source, attribute};

    /// Source 1 holds the answer; source 0 (the bridge) only helps the model read the
    /// question. The answer's log-probability ignores source 0 entirely.
    struct Bridge;

    impl ContextScorer for Bridge {
        fn token_spans(&self) -> Vec<Range<usize>> {
            std::iter::once(0..5).collect()
        }
        fn token_log_probs(
            &self,
            subsets: &[Vec<bool>],
        ) -> std::result::Result<Vec<Vec<f32>>, ScorerError> {
            Ok(subsets
                .iter()
                .map(|s| vec![if s[1] { -1.0 } else { -4.0 }])
                .collect())
        }
        fn answer_and_question_log_probs(
            &self,
            subsets: &[Vec<bool>],
        ) -> std::result::Result<crate::weights::AnswerAndQuestion, ScorerError> {
            let q = subsets
                .iter()
                .map(|s| vec![if s[0] { -2.0 } else { -6.0 }, -1.0])
                .collect();
            Ok((self.token_log_probs(subsets)?, Some(q)))
        }
    }

    fn sources() -> Vec<Source> {
        vec![
            Source::new("bridge", "Greatest Sports Legends featured Reggie Jackson."),
            Source::new("answer", "Reggie Jackson entered the Hall of Fame in 1993."),
            Source::new("noise", "Bananas are yellow."),
        ]
    }

    #[test]
    fn the_question_weight_credits_a_bridge_source() {
        for method in [Method::Loo, Method::Shapley, Method::Ablation] {
            let only_answer = AttributionConfig {
                question_weight: 0.0,
                ..Default::default()
            };
            let a = attribute(
                method,
                "Jacks",
                &sources(),
                Some(&Bridge),
                None,
                &only_answer,
            )
            .unwrap();
            assert_eq!(a.weights_bps[0], 0, "{method}: {:?}", a.weights_bps);
            let with_question = AttributionConfig::default();
            let b = attribute(
                method,
                "Jacks",
                &sources(),
                Some(&Bridge),
                None,
                &with_question,
            )
            .unwrap();
            // loo: answer drop 3 for source 1, question drop 0.5 * 4 = 2 for source 0.
            assert!(
                b.weights_bps[0] > 2_000 && b.weights_bps[1] > b.weights_bps[0],
                "{method}: {:?}",
                b.weights_bps
            );
            assert!(b.weights_bps[2] < 500, "{method}: {:?}", b.weights_bps);
        }
    }

    #[test]
    fn a_negative_question_weight_is_refused() {
        let config = AttributionConfig {
            question_weight: -1.0,
            ..Default::default()
        };
        let r = attribute(
            Method::Loo,
            "Jacks",
            &sources(),
            Some(&Bridge),
            None,
            &config,
        );
        assert!(matches!(r, Err(Error::InvalidConfig(_))), "{r:?}");
    }
}
