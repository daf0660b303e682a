//! Answer quality: how right the engine's answers are, measured on questions with gold
//! answers ([`QaExample`], the JSONL format of `examples/data/attribution/dev.jsonl`).
//!
//! [`QaBench::run`] asks every question through a real [`Engine`] and scores the answers
//! with SQuAD's exact match and token F1, containment ([`contains_answer`]), the share of
//! answer sentences no source measurably supports, the share of answers that loop
//! ([`is_looping`]), and seconds per question. `docs/QUALITY.md` defines each measure
//! and gives the numbers. [`evaluate_adapter`] scores a fine-tuned adapter against its
//! base model on questions asked without sources.

mod adapter;
mod data;
mod metrics;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tribute_index::{Document, Embedder, Mode};
use tribute_inference::{GenerateRequest, Generator, Message, Prompt};

pub use adapter::{
    AdapterAnswer, AdapterQuestion, AdapterReport, AdapterRow, AdapterScores, evaluate_adapter,
};
pub use data::{QaExample, QaPassage};
pub use metrics::{
    CONTAINS_RECALL, LOOP_NGRAM, LOOP_REPEATS, answer_recall, contains_answer, exact_match,
    is_looping, normalize_answer, token_f1,
};

use crate::config::EngineConfig;
use crate::engine::{Answer, AnswerSentence, Engine};
use crate::error::{Error, Result};

/// The system prompt of [`QaContext::NoContext`] answers (no sources: the model's own
/// knowledge).
pub const NO_CONTEXT_SYSTEM_PROMPT: &str = "Answer the question briefly.";

/// What the engine answers from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum QaContext {
    /// The example's own passages, all of them (a knowledge base of just those, every
    /// passage shown, ranked by dense similarity to the question).
    Gold,
    /// Retrieval with the engine's settings over one knowledge base holding the passages
    /// of every example.
    Retrieve,
    /// No sources: the model's own knowledge (the baseline; needs a generator).
    NoContext,
}

impl QaContext {
    /// Its name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            QaContext::Gold => "gold",
            QaContext::Retrieve => "retrieve",
            QaContext::NoContext => "no-context",
        }
    }
}

/// The scores of one answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QaRow {
    /// The example's id.
    pub id: String,
    /// The answer given.
    pub answer: String,
    /// [`exact_match`] against the gold answer.
    pub exact_match: f64,
    /// [`token_f1`] against the gold answer.
    pub f1: f64,
    /// [`contains_answer`].
    pub contains_answer: f64,
    /// [`answer_recall`].
    pub answer_recall: f64,
    /// Sentences of the answer (as attribution splits it; 0 without attribution).
    pub sentences: usize,
    /// Of those, the ones no source measurably supports.
    pub unsupported_sentences: usize,
    /// [`is_looping`].
    pub looping: bool,
    /// Answer tokens generated (0 for extractive answers).
    pub answer_tokens: usize,
    /// Wall time of the ask, seconds.
    pub seconds: f64,
}

/// Mean scores over a set of examples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QaReport {
    /// What the engine answered from.
    pub context: QaContext,
    /// Examples answered.
    pub examples: usize,
    /// Mean exact match.
    pub exact_match: f64,
    /// Mean token F1.
    pub f1: f64,
    /// Share of answers that contain the gold answer.
    pub contains_answer: f64,
    /// Mean token recall of the gold answer.
    pub answer_recall: f64,
    /// Unsupported sentences over all answer sentences; `None` without attribution
    /// ([`QaContext::NoContext`]).
    pub unsupported_sentence_rate: Option<f64>,
    /// Share of answers that loop.
    pub looping_rate: f64,
    /// Mean answer tokens.
    pub answer_tokens: f64,
    /// Mean wall time per question, seconds.
    pub seconds_per_question: f64,
    /// Per example.
    pub rows: Vec<QaRow>,
}

/// Called after each answer: its position, the total, its scores.
type Progress = dyn Fn(usize, usize, &QaRow);

/// A benchmark run: `QaBench::new(config, work_dir).generator(g).embedder(e).run(&examples, ctx)`.
#[must_use = "call .run()"]
pub struct QaBench {
    config: EngineConfig,
    work_dir: PathBuf,
    generator: Option<Arc<Generator>>,
    embedder: Option<Arc<dyn Embedder>>,
    progress: Option<Box<Progress>>,
}

impl std::fmt::Debug for QaBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QaBench")
            .field("config", &self.config)
            .field("work_dir", &self.work_dir)
            .finish_non_exhaustive()
    }
}

impl QaBench {
    /// A run with the engines built from `config` (its `index` is ignored); knowledge
    /// bases are created under `work_dir`, which should be empty and temporary.
    pub fn new(config: EngineConfig, work_dir: impl Into<PathBuf>) -> Self {
        QaBench {
            config,
            work_dir: work_dir.into(),
            generator: None,
            embedder: None,
            progress: None,
        }
    }

    /// A loaded generator shared by every engine (else each loads `config.model`).
    pub fn generator(mut self, g: Arc<Generator>) -> Self {
        self.generator = Some(g);
        self
    }

    /// A loaded embedder shared by every engine (else each loads `config.embedder`).
    pub fn embedder(mut self, e: Arc<dyn Embedder>) -> Self {
        self.embedder = Some(e);
        self
    }

    /// Called after each answer with its position, the total and its scores.
    pub fn progress(mut self, f: impl Fn(usize, usize, &QaRow) + 'static) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    /// Answers every example from `context` and scores the answers.
    pub fn run(&self, examples: &[QaExample], context: QaContext) -> Result<QaReport> {
        if examples.is_empty() {
            return Err(Error::InvalidRequest("no examples to evaluate".into()));
        }
        let mut rows = Vec::with_capacity(examples.len());
        match context {
            QaContext::Gold => {
                let mut config = self.config.clone();
                config.retrieval.mode = Mode::Dense;
                config.retrieval.min_similarity = -1.0;
                config.retrieval.datanets.clear();
                for (i, ex) in examples.iter().enumerate() {
                    config.retrieval.top_k = ex.passages.len().max(1) * 4;
                    let dir = self.work_dir.join(format!("gold-{i}"));
                    let engine = self.engine(&config, &dir)?;
                    engine.add_documents(documents(ex, ""), None)?;
                    let row = score_answer(ex, &engine.ask(ex.question.as_str()).run()?);
                    self.report_progress(i, examples.len(), &row);
                    rows.push(row);
                }
            }
            QaContext::Retrieve => {
                let engine = self.engine(&self.config, &self.work_dir.join("retrieve"))?;
                let mut docs = Vec::new();
                let mut seen = std::collections::HashSet::new();
                for ex in examples {
                    for d in documents(ex, &format!("{}/", ex.id)) {
                        if seen.insert(d.text.clone()) {
                            docs.push(d);
                        }
                    }
                }
                engine.add_documents(docs, None)?;
                for (i, ex) in examples.iter().enumerate() {
                    let row = score_answer(ex, &engine.ask(ex.question.as_str()).run()?);
                    self.report_progress(i, examples.len(), &row);
                    rows.push(row);
                }
            }
            QaContext::NoContext => {
                let generator = match &self.generator {
                    Some(g) => g.clone(),
                    None => self
                        .engine(&self.config, &self.work_dir.join("none"))?
                        .loaded_generator()?
                        .clone(),
                };
                for (i, ex) in examples.iter().enumerate() {
                    let row = self.no_context_answer(&generator, ex)?;
                    self.report_progress(i, examples.len(), &row);
                    rows.push(row);
                }
            }
        }
        Ok(QaReport::from_rows(context, rows))
    }

    fn report_progress(&self, i: usize, n: usize, row: &QaRow) {
        if let Some(f) = &self.progress {
            f(i, n, row);
        }
    }

    fn engine(&self, config: &EngineConfig, dir: &Path) -> Result<Engine> {
        let mut b = Engine::builder().config(config.clone()).index_dir(dir);
        if let Some(g) = &self.generator {
            b = b.generator(g.clone());
        }
        if let Some(e) = &self.embedder {
            b = b.embedder(e.clone());
        }
        b.build()
    }

    fn no_context_answer(&self, g: &Generator, ex: &QaExample) -> Result<QaRow> {
        let t = Instant::now();
        let messages = vec![
            Message::system(NO_CONTEXT_SYSTEM_PROMPT),
            Message::user(ex.question.trim()),
        ];
        let cfg = &self.config.generation;
        let generation = g.generate(
            &GenerateRequest::new(Prompt::Chat(messages))
                .sampling(cfg.sampling())
                .max_tokens(cfg.max_tokens),
        )?;
        let answer = generation.text.trim().to_owned();
        let mut row = scores(ex, &answer);
        row.answer_tokens = generation.tokens.len();
        row.seconds = t.elapsed().as_secs_f64();
        Ok(row)
    }
}

/// The example's passages as documents, ids `prefix` + position.
fn documents(ex: &QaExample, prefix: &str) -> Vec<Document> {
    ex.passages
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Document::new(format!("{prefix}{i}"), p.text.clone()).with_title(p.title.clone())
        })
        .collect()
}

fn scores(ex: &QaExample, answer: &str) -> QaRow {
    QaRow {
        id: ex.id.clone(),
        answer: answer.to_owned(),
        exact_match: exact_match(answer, &ex.answer),
        f1: token_f1(answer, &ex.answer),
        contains_answer: contains_answer(answer, &ex.answer),
        answer_recall: answer_recall(answer, &ex.answer),
        sentences: 0,
        unsupported_sentences: 0,
        looping: is_looping(answer),
        answer_tokens: 0,
        seconds: 0.0,
    }
}

/// Scores an engine answer: a sentence is unsupported when the citation audit finds no
/// source with measurable influence on it ([`AnswerSentence::supported`] is false).
fn score_answer(ex: &QaExample, a: &Answer) -> QaRow {
    let mut row = scores(ex, &a.text);
    row.sentences = a.sentences.len();
    row.unsupported_sentences = unsupported_sentences(&a.sentences);
    row.answer_tokens = a.usage.answer_tokens;
    row.seconds = a.usage.timings.total_ms / 1e3;
    row
}

/// The sentences no source measurably supports: the citation audit's verdict
/// ([`AnswerSentence::supported`], `tribute::citations`), the one definition `ask`, the
/// bindings and this benchmark share.
fn unsupported_sentences(sentences: &[AnswerSentence]) -> usize {
    sentences.iter().filter(|s| !s.supported).count()
}

impl QaReport {
    /// Means over `rows`.
    pub fn from_rows(context: QaContext, rows: Vec<QaRow>) -> QaReport {
        let n = rows.len().max(1) as f64;
        let mean = |f: &dyn Fn(&QaRow) -> f64| rows.iter().map(f).sum::<f64>() / n;
        let sentences: usize = rows.iter().map(|r| r.sentences).sum();
        let unsupported: usize = rows.iter().map(|r| r.unsupported_sentences).sum();
        QaReport {
            context,
            examples: rows.len(),
            exact_match: mean(&|r| r.exact_match),
            f1: mean(&|r| r.f1),
            contains_answer: mean(&|r| r.contains_answer),
            answer_recall: mean(&|r| r.answer_recall),
            unsupported_sentence_rate: (context != QaContext::NoContext)
                .then(|| unsupported as f64 / sentences.max(1) as f64),
            looping_rate: mean(&|r| f64::from(u8::from(r.looping))),
            answer_tokens: mean(&|r| r.answer_tokens as f64),
            seconds_per_question: mean(&|r| r.seconds),
            rows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_means_and_sentence_rate() {
        let ex = QaExample {
            id: "e".into(),
            question: "q".into(),
            answer: "forty per second".into(),
            passages: Vec::new(),
        };
        let mut a = scores(&ex, "forty per second");
        a.sentences = 3;
        a.unsupported_sentences = 1;
        a.seconds = 1.0;
        let mut b = scores(
            &ex,
            "four times per second. four times per second. four times per second.",
        );
        b.sentences = 1;
        b.seconds = 3.0;
        let r = QaReport::from_rows(QaContext::Gold, vec![a, b]);
        assert_eq!(r.exact_match, 0.5);
        assert_eq!(r.unsupported_sentence_rate, Some(0.25));
        assert_eq!(r.looping_rate, 0.5);
        assert_eq!(r.seconds_per_question, 2.0);
        let none = QaReport::from_rows(QaContext::NoContext, r.rows.clone());
        assert_eq!(none.unsupported_sentence_rate, None);
    }

    #[test]
    fn unsupported_is_the_citation_audits_verdict_not_the_markers() {
        let sentence = |markers: Vec<usize>, supported| AnswerSentence {
            markers,
            supported,
            ..AnswerSentence::default()
        };
        // A marker shown (positive relative contribution) below the audit's threshold is
        // still unsupported; a supported sentence counts as supported.
        let sentences = [
            sentence(vec![1], false),
            sentence(vec![2], true),
            sentence(Vec::new(), false),
        ];
        assert_eq!(unsupported_sentences(&sentences), 2);
    }
}
