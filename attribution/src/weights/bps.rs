//! Raw scores into credit: duplicate sources, basis points that sum to exactly 10,000,
//! and the sources that support each sentence.

use alloy_primitives::B256;
use tribute_common::TOTAL_BPS;

use super::{AttributionConfig, DuplicatePolicy, Source};
use crate::error::{Error, Result};

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

/// The sources supporting a sentence: positive contribution, at least `support_ratio` of
/// the best, strongest first, at most `max_support`.
pub(super) fn supporters(contrib: &[f64], config: &AttributionConfig) -> Vec<usize> {
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
pub(super) fn apply_duplicates(
    scores: &[f64],
    sources: &[Source],
    policy: DuplicatePolicy,
) -> Vec<f64> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
