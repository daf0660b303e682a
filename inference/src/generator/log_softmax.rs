//! Log-probabilities of chosen tokens from rows of logits: `log softmax(logits)[t]`.
//!
//! Scoring reads one full-vocabulary row per scored position (an answer of 70 tokens under
//! five masks is 350 rows of 49,152 logits for SmolLM2), and the normaliser needs an `exp`
//! of every logit. Done with `f64::exp` one value at a time, that took 55–100 ms of a
//! 750 ms scoring on two cores, with the model's session held all along. Here the
//! `exp` is a branch-free polynomial the compiler vectorises (for the widest vector unit
//! the CPU has), and each row is read from memory once: ≈ 17 ms for 325 such rows.

use crate::error::{Error, Result};

/// Lanes summed side by side (one AVX register of `f32`, two of SSE or NEON).
const LANES: usize = 8;

/// Values per block: 2 KiB, read from memory once and from the L1 cache once more.
const BLOCK: usize = LANES * 64;

/// `e^x` for `x <= 0` (larger `x` is not clamped: callers subtract the row's maximum first),
/// relative error below 2e-7; inputs below −87.3 give about 1e-38 instead of their tiny
/// value (or 0), which no sum of at least 1 can tell apart.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that x − n·ln 2 keeps its low bits (Cody–Waite).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2^23: adding and subtracting it rounds to the nearest integer in any vector unit.
    const ROUND: f32 = 12_582_912.0;
    // Written so that every step maps to a vector instruction: a compare-select for the
    // clamp, and the rounded integer read from the float's bits instead of a cast.
    let x = if x < -87.3 { -87.3 } else { x };
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    // Wrapping arithmetic: the values cannot overflow, and overflow checks (debug builds)
    // would keep the loop from being vectorised.
    let n_int = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = x - n * LN2_HI - n * LN2_LO;
    // e^r on [−ln 2 / 2, ln 2 / 2]: the Taylor series to r^7 (error < 1e-8 there).
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // 2^n built in the exponent bits; n >= −126 after the clamp.
    p * f32::from_bits((n_int.wrapping_add(127) as u32) << 23)
}

/// `log softmax(row)[t]`, `None` if the row holds a value that is not finite; compiled for AVX-512, AVX2+FMA and NEON and
/// picked at run time, like the index's dot product.
///
/// One pass over memory: each block (small enough to stay in the L1 cache) is read for its
/// maximum, then again for its exponentials against the running maximum, and the sum so far
/// is rescaled whenever the maximum grows.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
fn log_softmax_at(row: &[f32], t: usize) -> Option<f32> {
    const EXPONENT: u32 = 0x7f80_0000;
    let mut max = f32::NEG_INFINITY;
    let mut total = 0.0f64;
    for block in row.chunks(BLOCK) {
        let (chunks, tail) = block.as_chunks::<LANES>();
        let mut maxes = [f32::NEG_INFINITY; LANES];
        // Non-finite values are the ones with every exponent bit set.
        let mut finite = [true; LANES];
        for c in chunks {
            for i in 0..LANES {
                maxes[i] = if c[i] > maxes[i] { c[i] } else { maxes[i] };
                finite[i] &= c[i].to_bits() & EXPONENT != EXPONENT;
            }
        }
        if !(finite.iter().all(|&f| f) && tail.iter().all(|x| x.is_finite())) {
            return None;
        }
        let block_max = tail
            .iter()
            .chain(&maxes)
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        if block_max > max {
            total *= (f64::from(max) - f64::from(block_max)).exp();
            max = block_max;
        }
        // Lanes of f32 partial sums, folded into f64 per block so that a 49,152-long row
        // loses no more than the `exp` approximation does.
        let mut sums = [0.0f32; LANES];
        for c in chunks {
            for i in 0..LANES {
                sums[i] += exp_nonpositive(c[i] - max);
            }
        }
        total += sums.iter().map(|&s| f64::from(s)).sum::<f64>();
        total += tail
            .iter()
            .map(|&x| f64::from(exp_nonpositive(x - max)))
            .sum::<f64>();
    }
    Some(row[t] - max - total.ln() as f32)
}

/// For each position `p`, `log softmax(logits[p])[targets[p]]`, where `logits` holds
/// `targets.len()` rows of `vocab` values. A row with a non-finite logit fails with
/// [`Error::NonFiniteLogits`], naming the position as `step` and `row` as given.
pub(super) fn target_log_probs(
    logits: &[f32],
    vocab: usize,
    targets: &[u32],
    row: usize,
) -> Result<Vec<f32>> {
    let n = targets.len();
    if logits.len() != n * vocab {
        return Err(Error::InvalidRequest(format!(
            "{} logits for {n} positions of a {vocab}-token vocabulary",
            logits.len()
        )));
    }
    if let Some(&t) = targets.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::InvalidRequest(format!(
            "token id {t} is outside the vocabulary ({vocab})"
        )));
    }
    logits
        .chunks_exact(vocab)
        .zip(targets)
        .enumerate()
        .map(|(p, (l, &t))| {
            log_softmax_at(l, t as usize).ok_or(Error::NonFiniteLogits { step: p, row })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact value, in f64 throughout.
    fn reference(row: &[f32], t: usize) -> f64 {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = row.iter().map(|&x| (f64::from(x) - max).exp()).sum();
        f64::from(row[t]) - max - sum.ln()
    }

    /// Deterministic pseudo-random values in [lo, hi).
    fn values(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
            })
            .collect()
    }

    #[test]
    fn exp_matches_the_library_to_single_precision() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let want = f64::from(x).exp();
            let rel = ((f64::from(exp_nonpositive(x)) - want) / want).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 2e-7, "worst relative error {worst:e}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(f32::NEG_INFINITY) < 1e-37);
        assert!(exp_nonpositive(-1000.0) >= 0.0);
    }

    #[test]
    fn log_probs_match_an_f64_reference_on_vocabulary_sized_rows() {
        let vocab = 49_152 + 5; // not a multiple of the lanes
        for (seed, (lo, hi)) in [(-10.0, 10.0), (-40.0, 25.0), (0.0, 1e-3)]
            .into_iter()
            .enumerate()
        {
            let row = values(vocab, seed as u64, lo, hi);
            for t in [0, 7, vocab / 2, vocab - 1] {
                let got = f64::from(log_softmax_at(&row, t).expect("finite"));
                let want = reference(&row, t);
                assert!(
                    (got - want).abs() < 2e-5,
                    "seed {seed} t {t}: {got} vs {want}"
                );
            }
        }
        // One logit far above the rest: its log-probability is ~0, the others' ~−60.
        let mut row = vec![-30.0f32; 1000];
        row[3] = 30.0;
        assert!(log_softmax_at(&row, 3).expect("finite").abs() < 1e-6);
        assert!(
            (f64::from(log_softmax_at(&row, 4).expect("finite")) - reference(&row, 4)).abs() < 1e-4
        );
        // All equal: log(1/n).
        let row = vec![2.5f32; 1024];
        assert!((log_softmax_at(&row, 9).expect("finite") - (1.0f32 / 1024.0).ln()).abs() < 1e-6);
        // Any value that is not finite, in the vectorised part or the tail.
        for (at, bad) in [
            (5, f32::NAN),
            (1000, f32::INFINITY),
            (1025, f32::NEG_INFINITY),
        ] {
            let mut row = vec![0.5f32; 1027];
            row[at] = bad;
            assert_eq!(log_softmax_at(&row, 0), None, "{bad} at {at}");
        }
    }

    #[test]
    fn positions_come_back_in_order_and_bad_rows_fail() {
        let vocab = 300;
        let n = 83;
        let logits = values(n * vocab, 11, -8.0, 8.0);
        let targets: Vec<u32> = (0..n as u32).map(|p| (p * 37) % vocab as u32).collect();
        let got = target_log_probs(&logits, vocab, &targets, 0).expect("finite logits");
        assert_eq!(got.len(), n);
        for (p, &g) in got.iter().enumerate() {
            let want = reference(&logits[p * vocab..(p + 1) * vocab], targets[p] as usize);
            assert!((f64::from(g) - want).abs() < 2e-5, "position {p}");
        }
        let mut bad = logits.clone();
        bad[(n - 2) * vocab + 1] = f32::NAN;
        match target_log_probs(&bad, vocab, &targets, 3) {
            Err(Error::NonFiniteLogits { step, row }) => assert_eq!((step, row), (n - 2, 3)),
            other => panic!("expected NonFiniteLogits, got {other:?}"),
        }
        assert!(target_log_probs(&logits, vocab, &targets[1..], 0).is_err());
        let mut out_of_vocab = targets.clone();
        out_of_vocab[0] = vocab as u32;
        assert!(target_log_probs(&logits, vocab, &out_of_vocab, 0).is_err());
    }
}
