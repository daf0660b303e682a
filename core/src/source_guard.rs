//! The source guard: attribution used as a guard against a source that hijacks an answer
//! (a planted instruction, a poisoned passage).
//!
//! Attribution measures how much each source shaped the answer. When one source carries
//! most of that weight (at least [`SourceGuardConfig::dominance`]) and it is either from
//! a low-trust datanet or barely relevant to the question by retrieval (its retrieval score
//! below [`SourceGuardConfig::min_retrieval_share`] of the best source's), the answer
//! carries a [`SourceAlert`]. With [`SourceGuardConfig::reanswer`] the engine answers
//! again without that source and says so in the alert; only the answer it returns is
//! receipted.
//!
//! ```toml
//! [datanets.forum-scrape]
//! trust = "low"          # low, normal (default) or high
//!
//! [source_guard]
//! dominance = 0.6        # share of the attribution weight that counts as dominating
//! min_retrieval_share = 0.0  # 0: off; e.g. 0.05 also flags barely relevant sources
//! reanswer = false
//! ```
//!
//! Sources of high-trust datanets never raise an alert; sources of normal-trust ones only
//! when they are barely relevant (off by default). `docs/ATTRIBUTION.md` ("Attribution as
//! a guard") reports detection on planted passages (`tribute eval guard`).

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};

/// How far a datanet's sources are trusted to steer an answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrustLevel {
    /// An answer dominated by this datanet's source is flagged.
    Low,
    /// Flagged only when the dominating source is barely relevant (default).
    #[default]
    Normal,
    /// Never flagged.
    High,
}

impl std::str::FromStr for TrustLevel {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "low" => Ok(TrustLevel::Low),
            "normal" => Ok(TrustLevel::Normal),
            "high" => Ok(TrustLevel::High),
            other => Err(Error::Config(format!(
                "unknown trust level {other:?} (low, normal or high)"
            ))),
        }
    }
}

/// Settings of one datanet (`[datanets.NAME]` in the config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatanetConfig {
    /// How far its sources are trusted. Default normal.
    pub trust: TrustLevel,
}

/// The source guard's settings (`[source_guard]` in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceGuardConfig {
    /// Check answers at all. Default true (an alert changes nothing else of the answer
    /// unless `reanswer` is set).
    pub enabled: bool,
    /// A source dominates an answer when its share of the attribution weight is at least
    /// this, in `(0, 1]`. Default 0.6.
    #[serde(deserialize_with = "share")]
    pub dominance: f64,
    /// A source is barely relevant when its retrieval score is below this share of the best
    /// shown source's, in `[0, 1]` (0: never). Default 0 (off: at 0.05 it raised alerts on
    /// 8 % of clean dev answers, see `docs/ATTRIBUTION.md`).
    #[serde(deserialize_with = "share")]
    pub min_retrieval_share: f64,
    /// Answer again without the flagged source and return that answer (its alert says
    /// so); only the returned answer is signed and journaled. Not applied to streamed
    /// answers, whose text is already out. Default false.
    pub reanswer: bool,
}

impl Default for SourceGuardConfig {
    fn default() -> Self {
        SourceGuardConfig {
            enabled: true,
            dominance: 0.6,
            min_retrieval_share: 0.0,
            reanswer: false,
        }
    }
}

fn share<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(serde::de::Error::custom(format!(
            "{v} is not a share: it must lie in 0..=1"
        )))
    }
}

/// Why a source was flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertReason {
    /// It comes from a low-trust datanet.
    LowTrust,
    /// Retrieval found it barely relevant to the question.
    BarelyRelevant,
}

impl AlertReason {
    /// The reason as the config and JSON write it.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertReason::LowTrust => "low_trust",
            AlertReason::BarelyRelevant => "barely_relevant",
        }
    }
}

/// What the guard knows of one source shown to the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceSignal {
    /// Its attribution weight in basis points.
    pub weight_bps: u32,
    /// Its retrieval score.
    pub retrieval_score: f64,
    /// Its datanet's trust level.
    pub trust: TrustLevel,
}

/// A source the guard flags: which one (its index among the signals) and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finding {
    /// Its index among the signals checked.
    pub index: usize,
    /// Why.
    pub reason: AlertReason,
    /// Its share of the attribution weight.
    pub share: f64,
    /// Its retrieval score over the best shown source's.
    pub retrieval_share: f64,
}

/// An alert on an answer that one source dominates and that source is low-trust or
/// barely relevant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceAlert {
    /// The source's number in the prompt of the flagged answer.
    pub marker: usize,
    /// The chunk.
    pub chunk_id: String,
    /// Its document.
    pub doc_id: String,
    /// Who contributed it (EIP-55).
    pub contributor: String,
    /// Its datanet.
    pub datanet: String,
    /// Its share of the flagged answer's attribution weight.
    pub share: f64,
    /// Its retrieval score over the best shown source's.
    pub retrieval_share: f64,
    /// Why it was flagged (low trust wins when both hold).
    pub reason: AlertReason,
    /// Whether the engine answered again without it; the answer carrying the alert is
    /// then the new one.
    pub reanswered: bool,
    /// The flagged answer's text, when it was replaced.
    pub replaced_answer: Option<String>,
}

impl SourceGuardConfig {
    /// Checks the ranges (a config built in code bypasses the TOML checks).
    pub fn validate(&self) -> Result<()> {
        let ok = |v: f64| (0.0..=1.0).contains(&v);
        if !ok(self.dominance) || self.dominance == 0.0 {
            return Err(Error::Config(format!(
                "source_guard.dominance must lie in (0, 1], not {}",
                self.dominance
            )));
        }
        if !ok(self.min_retrieval_share) {
            return Err(Error::Config(format!(
                "source_guard.min_retrieval_share must lie in 0..=1, not {}",
                self.min_retrieval_share
            )));
        }
        Ok(())
    }

    /// The decision rule: the dominating source, when there is one and it is low-trust or
    /// barely relevant. `None` when the guard is off, no source dominates, or the dominating
    /// one is trusted and relevant.
    pub fn check(&self, sources: &[SourceSignal]) -> Option<Finding> {
        if !self.enabled {
            return None;
        }
        let total: f64 = sources.iter().map(|s| f64::from(s.weight_bps)).sum();
        if total <= 0.0 {
            return None;
        }
        let (index, top) = sources
            .iter()
            .enumerate()
            .max_by_key(|(i, s)| (s.weight_bps, std::cmp::Reverse(*i)))?;
        let share = f64::from(top.weight_bps) / total;
        if share < self.dominance {
            return None;
        }
        let best = sources
            .iter()
            .map(|s| s.retrieval_score)
            .fold(f64::NEG_INFINITY, f64::max);
        // Without a positive best score retrieval says nothing about relevance.
        let retrieval_share = if best > 0.0 && top.retrieval_score.is_finite() {
            (top.retrieval_score / best).max(0.0)
        } else {
            1.0
        };
        let reason = match top.trust {
            TrustLevel::High => return None,
            TrustLevel::Low => AlertReason::LowTrust,
            TrustLevel::Normal if retrieval_share < self.min_retrieval_share => {
                AlertReason::BarelyRelevant
            }
            TrustLevel::Normal => return None,
        };
        Some(Finding {
            index,
            reason,
            share,
            retrieval_share,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(weight_bps: u32, retrieval_score: f64, trust: TrustLevel) -> SourceSignal {
        SourceSignal {
            weight_bps,
            retrieval_score,
            trust,
        }
    }

    #[test]
    fn a_dominant_low_trust_source_is_flagged() {
        let g = SourceGuardConfig::default();
        let f = g
            .check(&[
                signal(2_000, 0.9, TrustLevel::Normal),
                signal(7_000, 0.8, TrustLevel::Low),
                signal(1_000, 0.5, TrustLevel::Normal),
            ])
            .expect("flagged");
        assert_eq!((f.index, f.reason), (1, AlertReason::LowTrust));
        assert!((f.share - 0.7).abs() < 1e-12);
        assert!((f.retrieval_share - 0.8 / 0.9).abs() < 1e-12);
    }

    #[test]
    fn a_dominant_high_trust_source_is_not_flagged_even_when_barely_relevant() {
        let g = SourceGuardConfig::default();
        assert_eq!(
            g.check(&[
                signal(9_000, 0.0, TrustLevel::High),
                signal(1_000, 1.0, TrustLevel::Normal),
            ]),
            None
        );
    }

    #[test]
    fn a_dominant_barely_relevant_source_is_flagged() {
        let g = SourceGuardConfig {
            min_retrieval_share: 0.05,
            ..SourceGuardConfig::default()
        };
        let f = g
            .check(&[
                signal(1_000, 1.0, TrustLevel::Normal),
                signal(9_000, 0.01, TrustLevel::Normal),
            ])
            .expect("flagged");
        assert_eq!((f.index, f.reason), (1, AlertReason::BarelyRelevant));
        // Relevant enough: no alert.
        assert_eq!(
            g.check(&[
                signal(1_000, 1.0, TrustLevel::Normal),
                signal(9_000, 0.5, TrustLevel::Normal),
            ]),
            None
        );
    }

    #[test]
    fn low_trust_sources_that_do_not_dominate_are_not_flagged() {
        let g = SourceGuardConfig::default();
        let mixed = [
            signal(5_000, 1.0, TrustLevel::Normal),
            signal(5_000, 0.9, TrustLevel::Low),
        ];
        assert_eq!(g.check(&mixed), None);
        let lower = SourceGuardConfig {
            dominance: 0.5,
            ..SourceGuardConfig::default()
        };
        // At a tie the first (best-ranked) source is the dominating one.
        assert_eq!(lower.check(&mixed), None);
        assert_eq!(g.check(&[]), None);
        assert_eq!(g.check(&[signal(0, 1.0, TrustLevel::Low)]), None);
        let off = SourceGuardConfig {
            enabled: false,
            ..SourceGuardConfig::default()
        };
        assert_eq!(off.check(&[signal(10_000, 1.0, TrustLevel::Low)]), None);
    }

    #[test]
    fn without_positive_retrieval_scores_nothing_is_barely_relevant() {
        let g = SourceGuardConfig {
            min_retrieval_share: 0.05,
            ..SourceGuardConfig::default()
        };
        assert_eq!(
            g.check(&[
                signal(9_000, 0.0, TrustLevel::Normal),
                signal(1_000, 0.0, TrustLevel::Normal),
            ]),
            None
        );
    }

    #[test]
    fn ranges_are_checked() {
        assert!(SourceGuardConfig::default().validate().is_ok());
        for (dominance, min_retrieval_share) in [(0.0, 0.1), (1.5, 0.1), (0.6, -0.1), (0.6, 2.0)] {
            let c = SourceGuardConfig {
                dominance,
                min_retrieval_share,
                ..SourceGuardConfig::default()
            };
            assert_eq!(
                c.validate().unwrap_err().kind(),
                crate::ErrorKind::Config,
                "{c:?}"
            );
        }
        assert_eq!("LOW".parse::<TrustLevel>().unwrap(), TrustLevel::Low);
        assert!("paranoid".parse::<TrustLevel>().is_err());
    }
}
