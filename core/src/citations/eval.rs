//! [`CitationBench`]: citation precision and recall against gold supporting passages, for
//! the markers a model writes itself when prompted to cite and for Tribute's measured ones.
//!
//! Per example (the [`QaExample`] format, `examples/data/attribution/dev.jsonl`), all its
//! passages are shown as numbered sources under [`CITE_SYSTEM_PROMPT`] (an adaptation of
//! LlamaIndex's `CitationQueryEngine` prompt), and the model answers greedily. Then, on
//! that one answer:
//!
//! - **prompted**: the `[n]` markers the model wrote ([`markers`](super::markers));
//! - **tribute**: the markers `ask` shows — attribution's supporting sources per sentence,
//!   measured on the answer with the markers stripped (teacher-forced, so the model's own
//!   marker tokens do not vote for their sources);
//! - **measured**: the sources whose influence on some sentence reaches the threshold.
//!
//! Each set of cited sources is scored against the example's supporting passages: precision
//! (of the sources an answer cites, the share that are gold; averaged over answers citing
//! something), recall (of the gold passages, the share cited; averaged over all answers) and
//! their F1. The audit of the prompted and tribute markers against the measured influence
//! (the per-answer [`CitationAudit`](super::CitationAudit) numbers) is summed over answers.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tribute_attribution::{AttributionConfig, Method, Source, TextEmbedder};
use tribute_index::Embedder;
use tribute_inference::{GenerateRequest, Generator, Prompt, SamplingParams};

use super::audit::{CitationCounts, InfluenceUnit, audit_sentences};
use super::markers::{markers_by_sentence, strip_markers};
use crate::error::{Error, Result};
use crate::qa::QaExample;
use crate::rag::{EmbedderScorer, ModelScorer, PromptSource, RagPrompt};

/// The system prompt of the prompted-citation baseline, adapted from LlamaIndex's
/// `CitationQueryEngine` (its sources are `Source n:` blocks; Tribute's are `[n]` blocks).
pub const CITE_SYSTEM_PROMPT: &str = "Answer the question based solely on the numbered \
sources. When you use information from a source, cite it by its number in square brackets, \
for example [1] or [2][3]. Every answer should include at least one source citation. Only \
cite a source when you are explicitly referencing it. If none of the sources are helpful, \
say so. Be brief.";

/// Thresholds (in the method's unit) at which the measured markers are also scored.
const SWEEP: [f64; 6] = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0];

/// One example's citations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CitationRow {
    /// The example's id.
    pub id: String,
    /// The answer as the model wrote it, markers included.
    pub answer: String,
    /// The gold supporting passages (1-based source numbers).
    pub gold: Vec<usize>,
    /// The distinct sources the model's markers name (numbers out of range included).
    pub prompted: Vec<usize>,
    /// The distinct sources attribution's markers name.
    pub tribute: Vec<usize>,
    /// The sources with measurable influence on some sentence.
    pub measured: Vec<usize>,
    /// Per source, its largest influence on any sentence (empty when nothing was measured).
    pub max_influence: Vec<f64>,
    /// The model's markers audited against the measured influence.
    pub prompted_audit: CitationCounts,
    /// Attribution's markers audited against the measured influence.
    pub tribute_audit: CitationCounts,
    /// Answer tokens generated.
    pub answer_tokens: usize,
    /// Wall time of generation and attribution, seconds.
    pub seconds: f64,
}

/// Citation quality against the gold supporting passages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct GoldScores {
    /// Mean precision over the answers that cite something (`None`: none does).
    pub precision: Option<f64>,
    /// Mean recall over all answers.
    pub recall: f64,
    /// F1 of the two means (precision counts as 0 when `None`).
    pub f1: f64,
    /// Share of answers that cite at least one source.
    pub citing_answers: f64,
    /// Mean distinct sources cited per answer.
    pub citations_per_answer: f64,
}

impl GoldScores {
    /// Scores the cited sources of each answer against its gold ones.
    pub fn score<'a>(pairs: impl IntoIterator<Item = (&'a [usize], &'a [usize])>) -> Self {
        let (mut n, mut citing, mut cited_total) = (0usize, 0usize, 0usize);
        let (mut precision, mut recall) = (0.0, 0.0);
        for (cited, gold) in pairs {
            n += 1;
            cited_total += cited.len();
            let hits = cited.iter().filter(|c| gold.contains(c)).count() as f64;
            if !cited.is_empty() {
                citing += 1;
                precision += hits / cited.len() as f64;
            }
            if !gold.is_empty() {
                recall += hits / gold.len() as f64;
            }
        }
        let precision = (citing > 0).then(|| precision / citing as f64);
        let recall = recall / n.max(1) as f64;
        let p = precision.unwrap_or(0.0);
        GoldScores {
            precision,
            recall,
            f1: if p + recall > 0.0 {
                2.0 * p * recall / (p + recall)
            } else {
                0.0
            },
            citing_answers: citing as f64 / n.max(1) as f64,
            citations_per_answer: cited_total as f64 / n.max(1) as f64,
        }
    }
}

/// The measured markers scored at one threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThresholdScores {
    /// The threshold, in the method's unit.
    pub threshold: f64,
    /// Against the gold passages.
    pub gold: GoldScores,
}

/// An example left out, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedExample {
    /// The example's id.
    pub id: String,
    /// Why.
    pub reason: String,
}

/// The citation benchmark's results (`--json` writes it; [`CitationReport::merge`] joins
/// reports of parts of a data set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CitationReport {
    /// Examples scored.
    pub examples: usize,
    /// The attribution method that measured influence.
    pub method: Method,
    /// The unit of influence.
    pub unit: InfluenceUnit,
    /// The threshold of measurable influence.
    pub threshold: f64,
    /// The model's own markers (the baseline) against gold.
    pub prompted: GoldScores,
    /// Attribution's markers against gold.
    pub tribute: GoldScores,
    /// The measured markers (influence at least `threshold`) against gold.
    pub measured: GoldScores,
    /// The model's markers audited against the measured influence, summed over answers.
    pub prompted_audit: CitationCounts,
    /// Attribution's markers audited against the measured influence, summed over answers.
    pub tribute_audit: CitationCounts,
    /// The measured markers against gold at other thresholds.
    pub sweep: Vec<ThresholdScores>,
    /// Examples left out.
    pub skipped: Vec<SkippedExample>,
    /// Mean wall time per example, seconds.
    pub seconds_per_example: f64,
    /// Per example.
    pub rows: Vec<CitationRow>,
}

impl CitationReport {
    /// Aggregates `rows` measured with `method` at `threshold`.
    pub fn from_rows(
        method: Method,
        threshold: f64,
        rows: Vec<CitationRow>,
        skipped: Vec<SkippedExample>,
    ) -> Self {
        let score = |pick: &dyn Fn(&CitationRow) -> &[usize]| {
            GoldScores::score(rows.iter().map(|r| (pick(r), r.gold.as_slice())))
        };
        let sweep = SWEEP
            .iter()
            .map(|&t| {
                let sets: Vec<Vec<usize>> =
                    rows.iter().map(|r| above(&r.max_influence, t)).collect();
                ThresholdScores {
                    threshold: t,
                    gold: GoldScores::score(
                        sets.iter()
                            .zip(&rows)
                            .map(|(s, r)| (s.as_slice(), r.gold.as_slice())),
                    ),
                }
            })
            .collect();
        let mut prompted_audit = CitationCounts::default();
        let mut tribute_audit = CitationCounts::default();
        for r in &rows {
            prompted_audit.add(&r.prompted_audit);
            tribute_audit.add(&r.tribute_audit);
        }
        CitationReport {
            examples: rows.len(),
            method,
            unit: InfluenceUnit::of(method),
            threshold,
            prompted: score(&|r| r.prompted.as_slice()),
            tribute: score(&|r| r.tribute.as_slice()),
            measured: score(&|r| r.measured.as_slice()),
            prompted_audit,
            tribute_audit,
            sweep,
            skipped,
            seconds_per_example: rows.iter().map(|r| r.seconds).sum::<f64>()
                / rows.len().max(1) as f64,
            rows,
        }
    }
}

impl CitationReport {
    /// One report from reports of disjoint parts of a data set (e.g. run in parallel with
    /// `--offset`/`--limit`), re-aggregated from their rows. They must share the method
    /// and threshold.
    pub fn merge(parts: Vec<CitationReport>) -> Result<Self> {
        let Some(first) = parts.first() else {
            return Err(Error::InvalidRequest("no reports to merge".into()));
        };
        let (method, threshold) = (first.method, first.threshold);
        let (mut rows, mut skipped) = (Vec::new(), Vec::new());
        for p in parts {
            if p.method != method || p.threshold.to_bits() != threshold.to_bits() {
                return Err(Error::InvalidRequest(format!(
                    "reports measured differently cannot be merged: {method} at {threshold} and {} at {}",
                    p.method, p.threshold
                )));
            }
            rows.extend(p.rows);
            skipped.extend(p.skipped);
        }
        Ok(CitationReport::from_rows(method, threshold, rows, skipped))
    }
}

/// The 1-based numbers of the sources whose influence reaches `threshold`.
fn above(influence: &[f64], threshold: f64) -> Vec<usize> {
    (0..influence.len())
        .filter(|&i| influence[i] >= threshold)
        .map(|i| i + 1)
        .collect()
}

/// Called after each example: its position, the total, its row.
type Progress = dyn Fn(usize, usize, &CitationRow);

/// A run: `CitationBench::new(generator).method(Method::Loo).run(&examples)`.
#[must_use = "call .run()"]
pub struct CitationBench {
    generator: Arc<Generator>,
    embedder: Option<Arc<dyn Embedder>>,
    method: Method,
    config: AttributionConfig,
    threshold: Option<f64>,
    max_tokens: usize,
    sampling: SamplingParams,
    progress: Option<Box<Progress>>,
}

impl std::fmt::Debug for CitationBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CitationBench")
            .field("method", &self.method)
            .field("threshold", &self.threshold)
            .field("max_tokens", &self.max_tokens)
            .finish_non_exhaustive()
    }
}

impl CitationBench {
    /// A run with `generator`, `loo`, the default threshold and the engine's default
    /// decoding (greedy with the repetition guard, at most 96 answer tokens).
    pub fn new(generator: Arc<Generator>) -> Self {
        CitationBench {
            generator,
            embedder: None,
            method: Method::Loo,
            config: AttributionConfig::default(),
            threshold: None,
            max_tokens: 96,
            sampling: crate::config::GenerationConfig::default().sampling(),
            progress: None,
        }
    }

    /// The attribution method that measures influence.
    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// The method's parameters.
    pub fn attribution_config(mut self, config: AttributionConfig) -> Self {
        self.config = config;
        self
    }

    /// The threshold of measurable influence (default: the method's unit's).
    pub fn threshold(mut self, t: f64) -> Self {
        self.threshold = Some(t);
        self
    }

    /// Most answer tokens.
    pub fn max_tokens(mut self, n: usize) -> Self {
        self.max_tokens = n;
        self
    }

    /// Decoding settings.
    pub fn sampling(mut self, s: SamplingParams) -> Self {
        self.sampling = s;
        self
    }

    /// An embedder for the `similarity` method (lexical overlap alone without one).
    pub fn embedder(mut self, e: Arc<dyn Embedder>) -> Self {
        self.embedder = Some(e);
        self
    }

    /// Called after each example with its position, the total and its row.
    pub fn progress(mut self, f: impl Fn(usize, usize, &CitationRow) + 'static) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    /// Answers and scores every example. Examples whose prompt does not fit the model's
    /// context are skipped and listed.
    pub fn run(&self, examples: &[QaExample]) -> Result<CitationReport> {
        if examples.is_empty() {
            return Err(Error::InvalidRequest("no examples to evaluate".into()));
        }
        let threshold = self
            .threshold
            .unwrap_or_else(|| InfluenceUnit::of(self.method).default_threshold());
        if !threshold.is_finite() {
            return Err(Error::InvalidRequest(
                "the influence threshold must be a finite number".into(),
            ));
        }
        let (mut rows, mut skipped) = (Vec::new(), Vec::new());
        for (i, ex) in examples.iter().enumerate() {
            match self.example(ex, threshold)? {
                Ok(row) => {
                    if let Some(f) = &self.progress {
                        f(i, examples.len(), &row);
                    }
                    rows.push(row);
                }
                Err(reason) => skipped.push(SkippedExample {
                    id: ex.id.clone(),
                    reason,
                }),
            }
        }
        if rows.is_empty() {
            return Err(Error::InvalidRequest(format!(
                "none of the {} examples could be evaluated: {}",
                examples.len(),
                skipped.first().map_or("", |s| s.reason.as_str())
            )));
        }
        Ok(CitationReport::from_rows(
            self.method,
            threshold,
            rows,
            skipped,
        ))
    }

    /// One example's row, or why it was skipped.
    fn example(
        &self,
        ex: &QaExample,
        threshold: f64,
    ) -> Result<std::result::Result<CitationRow, String>> {
        let t = Instant::now();
        let g = &*self.generator;
        let shown: Vec<PromptSource> = ex
            .passages
            .iter()
            .map(|p| PromptSource {
                title: p.title.clone(),
                text: p.text.clone(),
            })
            .collect();
        let prompt = match RagPrompt::build(g, CITE_SYSTEM_PROMPT, &ex.question, &shown) {
            Ok(p) if p.tokens.len() + self.max_tokens < g.config().context_length => p,
            Ok(p) => {
                return Ok(Err(format!(
                    "the prompt has {} tokens, too long for the model's context",
                    p.tokens.len()
                )));
            }
            Err(e) => return Ok(Err(e.to_string())),
        };
        let generation = g.generate(
            &GenerateRequest::new(Prompt::Tokens(prompt.tokens.clone()))
                .sampling(self.sampling.clone())
                .max_tokens(self.max_tokens),
        )?;
        let answer = generation.text.trim().to_owned();
        let (clean, placed) = strip_markers(&answer);
        let mut prompted: Vec<usize> = Vec::new();
        for m in &placed {
            if !prompted.contains(&m.number) {
                prompted.push(m.number);
            }
        }
        let gold: Vec<usize> = (0..ex.passages.len())
            .filter(|&i| ex.passages[i].supporting)
            .map(|i| i + 1)
            .collect();
        let mut row = CitationRow {
            id: ex.id.clone(),
            answer: answer.clone(),
            gold,
            prompted,
            tribute: Vec::new(),
            measured: Vec::new(),
            max_influence: Vec::new(),
            prompted_audit: CitationCounts::default(),
            tribute_audit: CitationCounts::default(),
            answer_tokens: generation.tokens.len(),
            seconds: 0.0,
        };
        if clean.trim().is_empty() {
            row.seconds = t.elapsed().as_secs_f64();
            return Ok(Ok(row));
        }
        let sources: Vec<Source> = ex
            .passages
            .iter()
            .map(|p| Source::new(p.id.clone(), p.text.clone()))
            .collect();
        let scorer = ModelScorer::new(g, &prompt, &clean, Vec::new())?;
        let embedder = self.embedder.clone().map(EmbedderScorer);
        let a = tribute_attribution::attribute(
            self.method,
            &clean,
            &sources,
            Some(&scorer),
            embedder.as_ref().map(|e| e as &dyn TextEmbedder),
            &self.config,
        )?;
        let k = sources.len();
        let influence: Vec<Vec<f64>> = a
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
        let spans: Vec<_> = a.sentences.iter().map(|s| s.span.clone()).collect();
        let written = markers_by_sentence(&spans, &placed);
        let attributed: Vec<Vec<usize>> = a
            .sentences
            .iter()
            .map(|s| s.sources.iter().map(|i| i + 1).collect())
            .collect();
        row.prompted_audit = audit_sentences(&influence, &written, threshold).1;
        row.tribute_audit = audit_sentences(&influence, &attributed, threshold).1;
        // No sentence measured: nothing to take a maximum of (and -inf has no JSON form).
        row.max_influence = (0..if influence.is_empty() { 0 } else { k })
            .map(|i| {
                influence
                    .iter()
                    .map(|r| r[i])
                    .fold(f64::NEG_INFINITY, f64::max)
            })
            .collect();
        row.measured = above(&row.max_influence, threshold);
        let mut tribute: Vec<usize> = attributed.into_iter().flatten().collect();
        tribute.sort_unstable();
        tribute.dedup();
        row.tribute = tribute;
        row.seconds = t.elapsed().as_secs_f64();
        Ok(Ok(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gold_scores_average_precision_over_citing_answers_and_recall_over_all() {
        let gold = [vec![1, 2], vec![3], vec![1]];
        let cited = [vec![1, 4], vec![], vec![1]];
        let s = GoldScores::score(
            cited
                .iter()
                .zip(&gold)
                .map(|(c, g)| (c.as_slice(), g.as_slice())),
        );
        // Precision: (1/2 + 1/1) / 2 answers citing; recall: (1/2 + 0 + 1) / 3.
        assert_eq!(s.precision, Some(0.75));
        assert!((s.recall - 0.5).abs() < 1e-12);
        assert!((s.f1 - 0.6).abs() < 1e-12);
        assert!((s.citing_answers - 2.0 / 3.0).abs() < 1e-12);
        assert!((s.citations_per_answer - 1.0).abs() < 1e-12);
        let none = GoldScores::score([(&[][..], &[1][..])]);
        assert_eq!((none.precision, none.f1), (None, 0.0));
    }

    #[test]
    fn report_sweeps_thresholds_over_each_rows_best_influence() {
        let row = |max_influence: Vec<f64>, gold: Vec<usize>| CitationRow {
            id: "x".into(),
            answer: String::new(),
            gold,
            prompted: vec![1],
            tribute: vec![1, 2],
            measured: vec![1],
            max_influence,
            prompted_audit: CitationCounts::default(),
            tribute_audit: CitationCounts::default(),
            answer_tokens: 0,
            seconds: 1.0,
        };
        let r = CitationReport::from_rows(
            Method::Loo,
            1.0,
            vec![row(vec![3.0, 0.6], vec![1]), row(vec![0.3, 9.0], vec![2])],
            Vec::new(),
        );
        assert_eq!(r.examples, 2);
        assert_eq!(r.prompted.precision, Some(0.5));
        assert_eq!(r.tribute.precision, Some(0.5));
        let at = |t: f64| r.sweep.iter().find(|s| s.threshold == t).unwrap().gold;
        // At 0.5: {1,2} and {2}: precision (1/2 + 1) / 2, recall 1.
        assert_eq!(at(0.5).precision, Some(0.75));
        assert_eq!(at(0.5).recall, 1.0);
        // At 4: {} and {2}.
        assert_eq!(at(4.0).precision, Some(1.0));
        assert_eq!(at(4.0).recall, 0.5);
        assert_eq!(r.seconds_per_example, 1.0);

        // Reports of two halves, through their JSON, merge into the whole one.
        let half = |rows: Vec<CitationRow>| {
            let part = CitationReport::from_rows(Method::Loo, 1.0, rows, Vec::new());
            serde_json::from_str::<CitationReport>(&serde_json::to_string(&part).unwrap()).unwrap()
        };
        let merged =
            CitationReport::merge(vec![half(r.rows[..1].to_vec()), half(r.rows[1..].to_vec())])
                .unwrap();
        assert_eq!(merged, r);
        let other = CitationReport::from_rows(Method::Loo, 2.0, r.rows.clone(), Vec::new());
        assert!(matches!(
            CitationReport::merge(vec![r.clone(), other]),
            Err(Error::InvalidRequest(_))
        ));
        assert!(CitationReport::merge(Vec::new()).is_err());
    }
}
