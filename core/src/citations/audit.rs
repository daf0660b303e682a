//! The audit itself: per sentence, the markers shown against the sources' measured
//! influence on that sentence.

use serde::{Deserialize, Serialize};
use tribute_attribution::{Attribution, Method};

use super::markers::{markers_by_sentence, placed_markers};
use crate::engine::AnswerSentence;

/// The smallest influence of a source on a sentence, in nats, that counts as measurable
/// for the model methods (`loo`, `ablation`, `shapley`): hiding the source lowers the
/// sentence tokens' summed log-probability by at least this much, i.e. the source makes
/// the sentence at least e ≈ 2.7 times as likely. Below it, the change is of the size that
/// moving the other sources' positions in the prompt causes (docs/ATTRIBUTION.md).
pub const MIN_INFLUENCE_NATS: f64 = 1.0;

/// The smallest match score of a source with a sentence that counts as support for the
/// model-free methods (`similarity`: cosine and lexical overlap blended; `retrieval`: the
/// share of the sentence's content words found in the source).
pub const MIN_MATCH: f64 = 0.5;

/// What a sentence's per-source influence is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InfluenceUnit {
    /// The change in the sentence's log-probability when the source is hidden (the model
    /// methods).
    Nats,
    /// A text match score in 0..=1 (`similarity`, `retrieval`: nothing is measured on the
    /// model).
    Match,
}

impl InfluenceUnit {
    /// The unit of `method`'s per-sentence contributions.
    pub fn of(method: Method) -> Self {
        if method.needs_model() {
            InfluenceUnit::Nats
        } else {
            InfluenceUnit::Match
        }
    }

    /// The default threshold in this unit: [`MIN_INFLUENCE_NATS`] or [`MIN_MATCH`].
    pub fn default_threshold(self) -> f64 {
        match self {
            InfluenceUnit::Nats => MIN_INFLUENCE_NATS,
            InfluenceUnit::Match => MIN_MATCH,
        }
    }

    /// Its name (`nats`, `match`).
    pub fn as_str(self) -> &'static str {
        match self {
            InfluenceUnit::Nats => "nats",
            InfluenceUnit::Match => "match",
        }
    }
}

/// The verdict on one sentence.
#[derive(Debug, Clone, PartialEq)]
pub struct SentenceAudit {
    /// The best source's influence on the sentence (`-inf` when there are no sources).
    pub support: f64,
    /// Whether that reaches the threshold.
    pub supported: bool,
    /// Markers shown with the sentence whose sources have no measurable influence on it
    /// (or that name no source), in the order shown.
    pub unused_markers: Vec<usize>,
    /// Markers of the sources with measurable influence on the sentence that it does not
    /// show, strongest first.
    pub uncited_markers: Vec<usize>,
}

/// Counts over an answer's sentences, from which citation precision and recall follow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CitationCounts {
    /// Sentences audited.
    pub sentences: usize,
    /// Of those, the ones no source measurably supports.
    pub unsupported_sentences: usize,
    /// Markers shown, counted once per sentence that shows them.
    pub markers_shown: usize,
    /// Of those, the ones whose source measurably influences the sentence.
    pub markers_used: usize,
    /// (sentence, source) pairs with measurable influence.
    pub influential: usize,
    /// Of those, the ones the sentence cites.
    pub influential_cited: usize,
}

impl CitationCounts {
    /// Citation precision: the share of shown markers whose source measurably influences
    /// its sentence (`None` when no marker is shown).
    pub fn precision(&self) -> Option<f64> {
        (self.markers_shown > 0).then(|| self.markers_used as f64 / self.markers_shown as f64)
    }

    /// Citation recall: the share of measurably influential (sentence, source) pairs that
    /// the sentence cites (`None` when no source measurably influences any sentence).
    pub fn recall(&self) -> Option<f64> {
        (self.influential > 0).then(|| self.influential_cited as f64 / self.influential as f64)
    }

    /// Adds another answer's counts.
    pub fn add(&mut self, o: &CitationCounts) {
        self.sentences += o.sentences;
        self.unsupported_sentences += o.unsupported_sentences;
        self.markers_shown += o.markers_shown;
        self.markers_used += o.markers_used;
        self.influential += o.influential;
        self.influential_cited += o.influential_cited;
    }
}

/// The citation audit of an answer: the markers it shows against the sources' measured
/// influence on each sentence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CitationAudit {
    /// The attribution method that measured the influence.
    pub method: Method,
    /// The unit of the influence and of `threshold`.
    pub unit: InfluenceUnit,
    /// The smallest influence that counts as measurable.
    pub threshold: f64,
    /// The counts.
    #[serde(flatten)]
    pub counts: CitationCounts,
    /// [`CitationCounts::precision`].
    pub precision: Option<f64>,
    /// [`CitationCounts::recall`].
    pub recall: Option<f64>,
}

impl CitationAudit {
    /// The audit of `counts` made with `method` at `threshold`.
    pub fn new(method: Method, threshold: f64, counts: CitationCounts) -> Self {
        CitationAudit {
            method,
            unit: InfluenceUnit::of(method),
            threshold,
            counts,
            precision: counts.precision(),
            recall: counts.recall(),
        }
    }
}

/// Audits an answer's citations. `influence[s][i]`: source `i`'s measured influence on
/// sentence `s`; `shown[s]`: the markers (1-based source numbers) sentence `s` shows. A
/// source has measurable influence on a sentence when its influence is at least
/// `threshold`; a marker is used when it names such a source. Duplicate markers of a
/// sentence count once; a marker naming no source is unused.
pub fn audit_sentences(
    influence: &[Vec<f64>],
    shown: &[Vec<usize>],
    threshold: f64,
) -> (Vec<SentenceAudit>, CitationCounts) {
    let mut counts = CitationCounts::default();
    let mut out = Vec::with_capacity(influence.len());
    for (s, row) in influence.iter().enumerate() {
        let mut markers: Vec<usize> = Vec::new();
        for &m in shown.get(s).map_or(&[][..], Vec::as_slice) {
            if !markers.contains(&m) {
                markers.push(m);
            }
        }
        let influential = |m: usize| m >= 1 && row.get(m - 1).is_some_and(|&x| x >= threshold);
        let unused_markers: Vec<usize> = markers
            .iter()
            .copied()
            .filter(|&m| !influential(m))
            .collect();
        let mut strong: Vec<usize> = (0..row.len()).filter(|&i| row[i] >= threshold).collect();
        strong.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        let uncited_markers: Vec<usize> = strong
            .iter()
            .map(|i| i + 1)
            .filter(|m| !markers.contains(m))
            .collect();
        let support = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let supported = !strong.is_empty();
        counts.sentences += 1;
        counts.unsupported_sentences += usize::from(!supported);
        counts.markers_shown += markers.len();
        counts.markers_used += markers.len() - unused_markers.len();
        counts.influential += strong.len();
        counts.influential_cited += strong.len() - uncited_markers.len();
        out.push(SentenceAudit {
            support,
            supported,
            unused_markers,
            uncited_markers,
        });
    }
    (out, counts)
}

/// The sentences of `text` (the answer `attribution` measured) with their audit, and the
/// answer's audit: what `ask` returns in [`Answer::sentences`](crate::Answer) and
/// [`Answer::citation_audit`](crate::Answer), for callers that attribute themselves. The
/// markers shown are attribution's (`AnswerSentence::markers`) and any the model wrote in
/// the sentence; a marker the model wrote is part of the scored text, so its own tokens
/// count toward its source's influence.
pub fn audit_attribution(
    text: &str,
    attribution: &Attribution,
    threshold: f64,
) -> (Vec<AnswerSentence>, CitationAudit) {
    let k = attribution.weights_bps.len();
    let spans: Vec<_> = attribution
        .sentences
        .iter()
        .map(|s| s.span.clone())
        .collect();
    let written = markers_by_sentence(&spans, &placed_markers(text));
    let influence: Vec<Vec<f64>> = attribution
        .sentences
        .iter()
        .map(|s| {
            if s.contributions.len() == k {
                s.contributions.clone()
            } else {
                vec![0.0; k]
            }
        })
        .collect();
    let shown: Vec<Vec<usize>> = attribution
        .sentences
        .iter()
        .zip(&written)
        .map(|(s, w)| {
            s.sources
                .iter()
                .map(|i| i + 1)
                .chain(w.iter().copied())
                .collect()
        })
        .collect();
    let (verdicts, counts) = audit_sentences(&influence, &shown, threshold);
    let sentences = attribution
        .sentences
        .iter()
        .zip(verdicts)
        .map(|(s, v)| AnswerSentence {
            text: text.get(s.span.clone()).unwrap_or_default().to_owned(),
            span: s.span.clone(),
            char_span: s.char_span.clone(),
            markers: s.sources.iter().map(|i| i + 1).collect(),
            supported: v.supported,
            support: v.support.is_finite().then_some(v.support),
            unused_markers: v.unused_markers,
            uncited_markers: v.uncited_markers,
        })
        .collect();
    (
        sentences,
        CitationAudit::new(attribution.method, threshold, counts),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three sentences, three sources; threshold 1 nat.
    ///   s0: source 1 strong (5.0), source 2 weak (0.4); shows [1][2]  → [2] unused.
    ///   s1: sources 2 (2.0) and 3 (1.5) strong;      shows [2]        → 3 uncited.
    ///   s2: nothing reaches 1 nat (0.9 best);        shows [3][7][3]  → both unused, unsupported.
    #[test]
    fn precision_and_recall_on_a_hand_made_influence_matrix() {
        let influence = vec![
            vec![5.0, 0.4, -0.2],
            vec![0.1, 2.0, 1.5],
            vec![0.9, 0.0, 0.3],
        ];
        let shown = vec![vec![1, 2], vec![2], vec![3, 7, 3]];
        let (v, c) = audit_sentences(&influence, &shown, 1.0);
        assert_eq!(v[0].unused_markers, vec![2]);
        assert!(v[0].uncited_markers.is_empty());
        assert_eq!((v[0].support, v[0].supported), (5.0, true));
        assert!(v[1].unused_markers.is_empty());
        assert_eq!(v[1].uncited_markers, vec![3]);
        assert_eq!(v[2].unused_markers, vec![3, 7]);
        assert!(v[2].uncited_markers.is_empty());
        assert_eq!((v[2].support, v[2].supported), (0.9, false));
        assert_eq!(
            c,
            CitationCounts {
                sentences: 3,
                unsupported_sentences: 1,
                markers_shown: 5,
                markers_used: 2,
                influential: 3,
                influential_cited: 2,
            }
        );
        assert_eq!(c.precision(), Some(2.0 / 5.0));
        assert_eq!(c.recall(), Some(2.0 / 3.0));
        let a = CitationAudit::new(Method::Loo, 1.0, c);
        assert_eq!(a.unit, InfluenceUnit::Nats);
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["markers_shown"], 5);
        assert_eq!(json["precision"], 0.4);
    }

    #[test]
    fn uncited_sources_come_strongest_first_and_the_threshold_is_inclusive() {
        let (v, c) = audit_sentences(&[vec![1.0, 3.0, 2.0]], &[vec![]], 1.0);
        assert_eq!(v[0].uncited_markers, vec![2, 3, 1]);
        assert_eq!((c.precision(), c.recall()), (None, Some(0.0)));
        let (v, c) = audit_sentences(&[vec![0.5]], &[vec![1]], 2.0);
        assert!(!v[0].supported);
        assert_eq!((c.precision(), c.recall()), (Some(0.0), None));
        // No sources at all: nothing supports the sentence; marker [1] names nothing.
        let (v, _) = audit_sentences(&[vec![]], &[vec![1]], 1.0);
        assert_eq!(v[0].support, f64::NEG_INFINITY);
        assert_eq!(v[0].unused_markers, vec![1]);
        let mut total = CitationCounts::default();
        total.add(&c);
        total.add(&c);
        assert_eq!(total.markers_shown, 2);
    }

    #[test]
    fn the_answers_own_markers_are_audited_with_attributions() {
        use tribute_attribution::SentenceSupport;
        use tribute_attribution::weights::sentences;
        let text = "Paris is big [2]. Rome is old.";
        let sentences: Vec<SentenceSupport> = sentences(text)
            .into_iter()
            .zip([(vec![0], vec![3.0, 0.2]), (vec![1], vec![0.0, 0.7])])
            .map(
                |((span, char_span), (sources, contributions))| SentenceSupport {
                    span,
                    char_span,
                    sources,
                    contributions,
                },
            )
            .collect();
        let a = Attribution {
            method: Method::Loo,
            weights_bps: vec![8000, 2000],
            scores: vec![3.0, 0.9],
            sentences,
            fallback: None,
            model_passes: 3,
            seconds: 0.0,
        };
        let (s, audit) = audit_attribution(text, &a, 1.0);
        assert_eq!(s[0].text, "Paris is big [2]. ");
        assert_eq!(s[0].markers, vec![1]);
        // The [2] the model wrote is shown but source 2 barely moves the sentence.
        assert_eq!(s[0].unused_markers, vec![2]);
        assert_eq!((s[0].supported, s[0].support), (true, Some(3.0)));
        assert_eq!(s[1].unused_markers, vec![2]);
        assert!(!s[1].supported);
        assert_eq!(audit.counts.markers_shown, 3);
        assert_eq!(audit.precision, Some(1.0 / 3.0));
        assert_eq!(audit.recall, Some(1.0));
    }

    #[test]
    fn thresholds_follow_the_method() {
        assert_eq!(
            InfluenceUnit::of(Method::Shapley).default_threshold(),
            MIN_INFLUENCE_NATS
        );
        assert_eq!(InfluenceUnit::of(Method::Similarity), InfluenceUnit::Match);
        assert_eq!(InfluenceUnit::of(Method::Retrieval).as_str(), "match");
    }
}
