//! Fusing the BM25 and dense result lists.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How a hybrid search combines its two ranked lists.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Fusion {
    /// Reciprocal rank fusion: `Σ 1 / (k + rank)` over the lists a chunk appears in.
    Rrf {
        /// Rank offset; larger flattens the head of each list.
        k: f32,
    },
    /// `alpha · dense' + (1 − alpha) · bm25'`, each score min-max normalised over its
    /// list (a chunk missing from a list scores 0 there).
    Weighted {
        /// Weight of the dense retriever, in `[0, 1]`.
        alpha: f32,
    },
    /// Like `Weighted`, but each list is normalised by its own score distribution:
    /// `(s − (μ − 3σ)) / 6σ`, clipped to `[0, 1]` (distribution-based score fusion).
    Dbsf {
        /// Weight of the dense retriever, in `[0, 1]`.
        alpha: f32,
    },
}

impl Default for Fusion {
    fn default() -> Self {
        DEFAULT_FUSION
    }
}

/// The default fusion, chosen on the shared evaluation collections (see `docs/RETRIEVAL.md`).
pub const DEFAULT_FUSION: Fusion = Fusion::Weighted { alpha: 0.5 };

impl Fusion {
    /// Checks parameter ranges.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Fusion::Rrf { k } if !(k >= 0.0 && k.is_finite()) => Err(Error::InvalidConfig(
                format!("RRF k must be a finite number ≥ 0, got {k}"),
            )),
            Fusion::Weighted { alpha } if !(0.0..=1.0).contains(&alpha) => Err(
                Error::InvalidConfig(format!("fusion alpha must be in [0, 1], got {alpha}")),
            ),
            _ => Ok(()),
        }
    }

    /// Fuses two ranked lists of `(slot, score)` (best first) into one, best first.
    pub fn fuse(&self, bm25: &[(u32, f32)], dense: &[(u32, f32)]) -> Vec<(u32, f32)> {
        let mut fused: HashMap<u32, f32> = HashMap::with_capacity(bm25.len() + dense.len());
        match *self {
            Fusion::Rrf { k } => {
                for list in [bm25, dense] {
                    for (rank, (slot, _)) in list.iter().enumerate() {
                        *fused.entry(*slot).or_insert(0.0) += 1.0 / (k + rank as f32 + 1.0);
                    }
                }
            }
            Fusion::Weighted { alpha } => {
                for (list, w) in [(bm25, 1.0 - alpha), (dense, alpha)] {
                    let (lo, hi) = list
                        .iter()
                        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), (_, s)| {
                            (lo.min(*s), hi.max(*s))
                        });
                    let range = hi - lo;
                    for (slot, s) in list {
                        let norm = if range > 0.0 { (s - lo) / range } else { 1.0 };
                        *fused.entry(*slot).or_insert(0.0) += w * norm;
                    }
                }
            }
            Fusion::Dbsf { alpha } => {
                for (list, w) in [(bm25, 1.0 - alpha), (dense, alpha)] {
                    let n = list.len().max(1) as f32;
                    let mean = list.iter().map(|(_, s)| s).sum::<f32>() / n;
                    let var = list
                        .iter()
                        .map(|(_, s)| (s - mean) * (s - mean))
                        .sum::<f32>()
                        / n;
                    let sd = var.sqrt();
                    for (slot, s) in list {
                        let norm = if sd > 0.0 {
                            ((s - (mean - 3.0 * sd)) / (6.0 * sd)).clamp(0.0, 1.0)
                        } else {
                            1.0
                        };
                        *fused.entry(*slot).or_insert(0.0) += w * norm;
                    }
                }
            }
        }
        let mut out: Vec<(u32, f32)> = fused.into_iter().collect();
        out.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }
}

impl fmt::Display for Fusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fusion::Rrf { k } => write!(f, "rrf:{k}"),
            Fusion::Weighted { alpha } => write!(f, "weighted:{alpha}"),
            Fusion::Dbsf { alpha } => write!(f, "dbsf:{alpha}"),
        }
    }
}

impl FromStr for Fusion {
    type Err = Error;
    /// `rrf`, `rrf:K`, `weighted` or `weighted:ALPHA`.
    fn from_str(s: &str) -> Result<Self> {
        let unknown = || Error::UnknownVariant {
            what: "fusion",
            input: s.to_owned(),
            expected: "rrf, rrf:K, weighted, weighted:ALPHA, dbsf, dbsf:ALPHA",
        };
        let (name, arg) = s.split_once(':').map_or((s, None), |(n, a)| (n, Some(a)));
        let num = |a: &str| a.trim().parse::<f32>().map_err(|_| unknown());
        let f = match (name.trim().to_ascii_lowercase().as_str(), arg) {
            ("rrf", None) => Fusion::Rrf { k: 60.0 },
            ("rrf", Some(a)) => Fusion::Rrf { k: num(a)? },
            ("weighted", None) => DEFAULT_WEIGHTED,
            ("weighted", Some(a)) => Fusion::Weighted { alpha: num(a)? },
            ("dbsf", None) => Fusion::Dbsf { alpha: 0.5 },
            ("dbsf", Some(a)) => Fusion::Dbsf { alpha: num(a)? },
            _ => return Err(unknown()),
        };
        f.validate()?;
        Ok(f)
    }
}

const DEFAULT_WEIGHTED: Fusion = Fusion::Weighted { alpha: 0.5 };

/// Which retrievers a search runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// BM25 only.
    Bm25,
    /// Dense vectors only.
    Dense,
    /// Both, fused.
    #[default]
    Hybrid,
}

impl Mode {
    /// Every mode, in the order `eval --mode all` reports them.
    pub const ALL: [Mode; 3] = [Mode::Bm25, Mode::Dense, Mode::Hybrid];

    /// The mode's name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Bm25 => "bm25",
            Mode::Dense => "dense",
            Mode::Hybrid => "hybrid",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bm25" | "lexical" => Ok(Mode::Bm25),
            "dense" | "vector" => Ok(Mode::Dense),
            "hybrid" => Ok(Mode::Hybrid),
            _ => Err(Error::UnknownVariant {
                what: "mode",
                input: s.to_owned(),
                expected: "hybrid, bm25, dense",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrf_matches_hand_computation() {
        let bm25 = [(1, 9.0), (2, 5.0)];
        let dense = [(2, 0.9), (3, 0.8)];
        let f = Fusion::Rrf { k: 60.0 }.fuse(&bm25, &dense);
        // slot 2: 1/62 + 1/61; slot 1: 1/61; slot 3: 1/62.
        assert_eq!(f[0].0, 2);
        assert!((f[0].1 - (1.0 / 62.0 + 1.0 / 61.0)).abs() < 1e-7);
        assert_eq!(f[1], (1, 1.0 / 61.0));
        assert_eq!(f[2], (3, 1.0 / 62.0));
    }

    #[test]
    fn weighted_normalises_each_list() {
        let bm25 = [(1, 10.0), (2, 6.0), (4, 2.0)];
        let dense = [(2, 0.9), (3, 0.7), (1, 0.5)];
        let f = Fusion::Weighted { alpha: 0.25 }.fuse(&bm25, &dense);
        let get = |s| f.iter().find(|x| x.0 == s).map(|x| x.1).expect("present");
        assert!((get(1) - (0.75 * 1.0 + 0.25 * 0.0)).abs() < 1e-6);
        assert!((get(2) - (0.75 * 0.5 + 0.25 * 1.0)).abs() < 1e-6);
        assert!((get(3) - (0.25 * 0.5)).abs() < 1e-6);
        assert!((get(4) - 0.0).abs() < 1e-6);
        assert_eq!(f[0].0, 1);
    }

    #[test]
    fn dbsf_normalises_by_mean_and_spread() {
        // bm25: mean 4, sd sqrt(8/3); dense: two equal scores → sd 0 → both 1.
        let bm25 = [(1, 6.0), (2, 4.0), (3, 2.0)];
        let dense = [(1, 0.5), (4, 0.5)];
        let f = Fusion::Dbsf { alpha: 0.5 }.fuse(&bm25, &dense);
        let get = |s| f.iter().find(|x| x.0 == s).map(|x| x.1).expect("present");
        let sd = (8.0f32 / 3.0).sqrt();
        let norm = |x: f32| ((x - (4.0 - 3.0 * sd)) / (6.0 * sd)).clamp(0.0, 1.0);
        assert!((get(1) - (0.5 * norm(6.0) + 0.5)).abs() < 1e-6);
        assert!((get(2) - 0.5 * norm(4.0)).abs() < 1e-6);
        assert!((get(4) - 0.5).abs() < 1e-6);
        assert_eq!(f[0].0, 1);
    }

    #[test]
    fn parse_and_validate() {
        assert_eq!(
            "rrf:10".parse::<Fusion>().ok(),
            Some(Fusion::Rrf { k: 10.0 })
        );
        assert!("weighted:1.5".parse::<Fusion>().is_err());
        assert!("borda".parse::<Fusion>().is_err());
        assert_eq!("Dense".parse::<Mode>().ok(), Some(Mode::Dense));
        let err = "semantic".parse::<Mode>().unwrap_err().to_string();
        assert!(err.contains("hybrid, bm25, dense"), "{err}");
    }
}
