//! Adapter evaluation (`tribute eval adapter`): does a fine-tuned adapter answer questions
//! the base model cannot? Each question is asked with no sources, as a single user turn
//! (the way `tribute finetune` trains question/answer lines), greedily, once by the base
//! model and once with the adapter; both answers are scored against the expected answer
//! with SQuAD's exact match and [`contains_answer`].

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tribute_inference::{GenerateRequest, Generator, Prompt};

use super::data::read_jsonl;
use super::{contains_answer, exact_match};
use crate::error::Result;

/// The id the evaluated adapter is registered under in the generator.
const EVAL_ADAPTER_ID: &str = "tribute-eval-adapter";

/// One question: `{"question", "expect"}`, or a `tribute finetune` question/answer line
/// `{"question", "answer"}` whose answer is then the gold; `expect` wins when both are
/// given. Other fields (`contributor`, `datanet`, …) are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct AdapterQuestion {
    /// The question.
    pub question: String,
    /// The reference answer.
    #[serde(default)]
    pub answer: Option<String>,
    /// What a right answer must contain (preferred over `answer`).
    #[serde(default)]
    pub expect: Option<String>,
}

impl AdapterQuestion {
    /// What the answers are scored against: `expect`, else `answer`.
    pub fn gold(&self) -> &str {
        self.expect
            .as_deref()
            .or(self.answer.as_deref())
            .unwrap_or_default()
    }

    /// The questions of a JSONL file, one per non-blank line.
    ///
    /// # Errors
    ///
    /// [`Error::QaData`](crate::Error::QaData) naming the file and line: unreadable, not
    /// JSON, an empty question, no `expect` or `answer`, or no question at all.
    pub fn load_jsonl(path: &Path) -> Result<Vec<AdapterQuestion>> {
        read_jsonl(path, "questions", |q: &AdapterQuestion| {
            if q.question.trim().is_empty() {
                Err("empty question".into())
            } else if q.gold().trim().is_empty() {
                Err("no \"expect\" or \"answer\" to score against".into())
            } else {
                Ok(())
            }
        })
    }
}

/// One model's answer to one question.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdapterAnswer {
    /// The answer text.
    pub text: String,
    /// SQuAD exact match against the gold (0 or 1).
    pub exact_match: f64,
    /// Whether it contains the gold ([`contains_answer`], 0 or 1).
    pub contains_answer: f64,
    /// Generation seconds.
    pub seconds: f64,
}

/// One question, answered both ways.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdapterRow {
    /// The question.
    pub question: String,
    /// What the answers were scored against.
    pub gold: String,
    /// The base model's answer.
    pub base: AdapterAnswer,
    /// The answer with the adapter.
    pub adapter: AdapterAnswer,
}

/// Means over the questions, for one side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdapterScores {
    /// Mean exact match.
    pub exact_match: f64,
    /// Share of answers that contain the gold.
    pub contains_answer: f64,
    /// Mean generation seconds per question.
    pub seconds_per_question: f64,
}

/// What [`evaluate_adapter`] measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdapterReport {
    /// Questions asked.
    pub examples: usize,
    /// The base model.
    pub base: AdapterScores,
    /// With the adapter.
    pub adapter: AdapterScores,
    /// Every question with both answers.
    pub rows: Vec<AdapterRow>,
}

/// Asks every question of `questions` with `generator`'s base model and with the adapter
/// at `adapter` (a PEFT directory or `.onnx_adapter` file), greedily and with at most
/// `max_tokens` new tokens, and scores both answers. `progress` sees each finished row.
///
/// # Errors
///
/// The adapter's typed load errors (as [`Error::Inference`](crate::Error::Inference)): a
/// missing or malformed adapter, one for another architecture; generation errors.
pub fn evaluate_adapter(
    generator: &Generator,
    adapter: &Path,
    questions: &[AdapterQuestion],
    max_tokens: usize,
    mut progress: impl FnMut(usize, usize, &AdapterRow),
) -> Result<AdapterReport> {
    generator.add_adapter(EVAL_ADAPTER_ID, adapter)?;
    let mut rows = Vec::with_capacity(questions.len());
    for (i, q) in questions.iter().enumerate() {
        let request = GenerateRequest::new(Prompt::from(q.question.trim())).max_tokens(max_tokens);
        let base = answer(generator, &request, q.gold())?;
        let with = answer(
            generator,
            &request.clone().adapter(EVAL_ADAPTER_ID, 1.0),
            q.gold(),
        )?;
        let row = AdapterRow {
            question: q.question.clone(),
            gold: q.gold().to_owned(),
            base,
            adapter: with,
        };
        progress(i, questions.len(), &row);
        rows.push(row);
    }
    Ok(AdapterReport {
        examples: rows.len(),
        base: scores(rows.iter().map(|r| &r.base)),
        adapter: scores(rows.iter().map(|r| &r.adapter)),
        rows,
    })
}

fn answer(generator: &Generator, request: &GenerateRequest, gold: &str) -> Result<AdapterAnswer> {
    let t = Instant::now();
    let text = generator.generate(request)?.text.trim().to_owned();
    Ok(AdapterAnswer {
        exact_match: exact_match(&text, gold),
        contains_answer: contains_answer(&text, gold),
        seconds: t.elapsed().as_secs_f64(),
        text,
    })
}

fn scores<'a>(answers: impl Iterator<Item = &'a AdapterAnswer>) -> AdapterScores {
    let (mut n, mut em, mut contains, mut seconds) = (0usize, 0.0, 0.0, 0.0);
    for a in answers {
        n += 1;
        em += a.exact_match;
        contains += a.contains_answer;
        seconds += a.seconds;
    }
    let mean = |x: f64| if n == 0 { 0.0 } else { x / n as f64 };
    AdapterScores {
        exact_match: mean(em),
        contains_answer: mean(contains),
        seconds_per_question: mean(seconds),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn write(lines: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q.jsonl");
        std::fs::write(&path, lines).expect("write");
        (dir, path)
    }

    #[test]
    fn questions_load_with_expect_or_answer_and_bad_lines_are_named() {
        let (_d, path) = write(
            "{\"question\": \"Who?\", \"answer\": \"Ilse Maron founded it.\", \"expect\": \"Ilse Maron\"}\n\n{\"question\": \"What colour?\", \"answer\": \"Teal.\", \"datanet\": \"facts\"}\n",
        );
        let qs = AdapterQuestion::load_jsonl(&path).expect("load");
        assert_eq!(qs.len(), 2);
        assert_eq!((qs[0].gold(), qs[1].gold()), ("Ilse Maron", "Teal."));

        for (text, line, why) in [
            ("{\"question\": \"Who?\"}\n", 1, "no \"expect\""),
            (
                "{\"question\": \"Who?\", \"expect\": \"x\"}\n{\"question\": \" \", \"expect\": \"x\"}\n",
                2,
                "empty question",
            ),
            (
                "{\"question\": \"Who?\", \"expect\": \"x\"}\nnot json\n",
                2,
                "expected",
            ),
            ("\n\n", 0, "no questions"),
        ] {
            let (_d, path) = write(text);
            let e = AdapterQuestion::load_jsonl(&path).expect_err(text);
            assert!(
                matches!(&e, Error::QaData { line: l, message, .. } if *l == line && message.contains(why)),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn scores_are_means_over_answers() {
        let a = |em: f64, c: f64, s: f64| AdapterAnswer {
            text: String::new(),
            exact_match: em,
            contains_answer: c,
            seconds: s,
        };
        let s = scores(
            [
                a(1.0, 1.0, 2.0),
                a(0.0, 1.0, 4.0),
                a(0.0, 0.0, 0.0),
                a(0.0, 0.0, 2.0),
            ]
            .iter(),
        );
        assert_eq!(
            s,
            AdapterScores {
                exact_match: 0.25,
                contains_answer: 0.5,
                seconds_per_question: 2.0
            }
        );
        let none = scores(std::iter::empty());
        assert_eq!(none.contains_answer, 0.0);
    }
}
