//! Choosing the next token: greedy, or sampled with temperature, top-k, top-p and a
//! repetition penalty, reproducible from a seed.

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
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
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

/// A sampler for one sequence.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    scratch: Vec<(f32, u32)>,
}

impl Sampler {
    /// A sampler with the given settings (validated).
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        Ok(Sampler {
            rng: ChaCha8Rng::seed_from_u64(params.seed),
            params,
            scratch: Vec::new(),
        })
    }

    /// The settings.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token from `logits` (modified in place by the repetition penalty);
    /// `context` holds the prompt and generated tokens. `None` if a logit is not finite.
    pub fn sample(&mut self, logits: &mut [f32], context: &[u32]) -> Option<u32> {
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
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_argmax_and_lowest_on_ties() {
        let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
        assert_eq!(s.sample(&mut [0.1, 3.0, 3.0, -1.0], &[]), Some(1));
    }

    #[test]
    fn repetition_penalty_matches_hf_rule() {
        let params = SamplingParams {
            repetition_penalty: 2.0,
            ..Default::default()
        };
        let mut s = Sampler::new(params).unwrap();
        let mut logits = [4.0, 3.0, -1.0];
        // token 0 seen: 4 → 2, so token 1 (3.0) wins; token 2 seen: -1 → -2.
        assert_eq!(s.sample(&mut logits, &[0, 2, 0]), Some(1));
        assert_eq!(logits, [2.0, 3.0, -2.0]);
    }

    #[test]
    fn same_seed_same_tokens_and_distribution_is_followed() {
        let params = SamplingParams {
            temperature: 1.0,
            seed: 7,
            ..Default::default()
        };
        let logits = [0.0f32, (3.0f32).ln(), f32::NEG_INFINITY.max(-50.0)];
        let draw = |p: &SamplingParams| {
            let mut s = Sampler::new(p.clone()).unwrap();
            (0..4000)
                .map(|_| s.sample(&mut logits.clone(), &[]).unwrap())
                .collect::<Vec<_>>()
        };
        let a = draw(&params);
        assert_eq!(a, draw(&params));
        let ones = a.iter().filter(|&&t| t == 1).count() as f64 / a.len() as f64;
        assert!((ones - 0.75).abs() < 0.03, "p(token 1) = {ones}, want 0.75");
        assert!(!a.contains(&2));
    }

    #[test]
    fn top_k_and_top_p_cut_the_tail() {
        let logits = [5.0f32, 4.9, 4.8, 0.0, -1.0];
        for params in [
            SamplingParams {
                temperature: 1.0,
                top_k: 2,
                ..Default::default()
            },
            SamplingParams {
                temperature: 1.0,
                top_p: 0.6,
                ..Default::default()
            },
        ] {
            let mut s = Sampler::new(params.clone()).unwrap();
            for _ in 0..500 {
                let t = s.sample(&mut logits.clone(), &[]).unwrap();
                assert!(t <= 1, "{params:?} sampled {t}");
            }
        }
    }

    #[test]
    fn bad_settings_and_nan_logits_are_refused() {
        for p in [
            SamplingParams {
                temperature: -1.0,
                ..Default::default()
            },
            SamplingParams {
                top_p: 0.0,
                ..Default::default()
            },
            SamplingParams {
                repetition_penalty: f32::NAN,
                ..Default::default()
            },
        ] {
            assert!(matches!(Sampler::new(p), Err(Error::InvalidRequest(_))));
        }
        let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
        assert_eq!(s.sample(&mut [0.0, f32::NAN], &[]), None);
    }
}
