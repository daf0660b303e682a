//! Retrieval-augmented prompts and model-measured attribution: the glue between
//! `tribute-inference` (the model) and `tribute-attribution` (the weights).
//!
//! [`RagPrompt`] lays numbered sources and a question out through the model's chat
//! template and remembers which prompt tokens belong to which source; [`ModelScorer`]
//! implements [`attribution::ContextScorer`] on it by hiding sources' tokens from the
//! answer ([`Generator::score_masked`]); [`EmbedderScorer`] gives the `similarity` method
//! the index's embedder.

use std::ops::Range;
use std::sync::Arc;

use tribute_attribution as attribution;
use tribute_attribution::ScorerError;
use tribute_index::Embedder;
use tribute_inference::{Generator, Message};

/// The default system prompt of retrieval-augmented answers. An empty system prompt
/// (`system_prompt = ""`: no system message of Tribute's own, the chat template's default
/// applies) scores better on the QA benchmark but misattributes the sample datanet's gust
/// question (docs/QUALITY.md), so it is not the default yet.
pub const DEFAULT_SYSTEM_PROMPT: &str = "Answer the question using only the numbered sources. \
Be brief. If the sources do not contain the answer, say so.";

/// The version of [`RagPrompt`]'s layout (sources as `[n] title` blocks, then the question),
/// written into attribution records: an audit refuses a record of another layout. Bump it
/// whenever the layout changes.
pub const PROMPT_TEMPLATE_VERSION: &str = "tribute-rag/1";

/// A source as shown to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptSource {
    /// Title (may be empty).
    pub title: String,
    /// Text.
    pub text: String,
}

/// A chat prompt with numbered sources, tokenized, and the token range of each source.
#[derive(Debug, Clone)]
pub struct RagPrompt {
    /// The rendered prompt text (chat template applied, generation prompt appended).
    pub text: String,
    /// Its token ids.
    pub tokens: Vec<u32>,
    /// For each source, the range of prompt token indices that show it.
    pub source_tokens: Vec<Range<usize>>,
    /// Token range of the question (after the sources); empty when the chat template
    /// rewrote the message so that it cannot be found.
    pub question_tokens: Range<usize>,
}

/// Why a prompt could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PromptError {
    /// Tokenizing or rendering failed.
    #[error(transparent)]
    Inference(#[from] tribute_inference::Error),
    /// The chat template changed the sources' text so that they cannot be found again.
    #[error("the chat template altered the sources; cannot locate source {0} in the prompt")]
    SourceNotFound(usize),
}

impl RagPrompt {
    /// Builds the prompt: system prompt (none when `system` is empty: the chat template's
    /// default applies), then one user message holding `[n] title\ntext` blocks and the
    /// question.
    pub fn build(
        generator: &Generator,
        system: &str,
        question: &str,
        sources: &[PromptSource],
    ) -> Result<Self, PromptError> {
        Self::build_with_history(generator, system, &[], question, sources)
    }

    /// [`RagPrompt::build`] with earlier turns of a conversation between the system prompt
    /// and the message holding the sources and the question.
    pub fn build_with_history(
        generator: &Generator,
        system: &str,
        history: &[Message],
        question: &str,
        sources: &[PromptSource],
    ) -> Result<Self, PromptError> {
        let mut content = String::from("Sources:\n");
        let mut ranges = Vec::with_capacity(sources.len());
        for (i, s) in sources.iter().enumerate() {
            let start = content.len();
            content.push_str(&format!("[{}] ", i + 1));
            if !s.title.trim().is_empty() {
                content.push_str(s.title.trim());
                content.push('\n');
            }
            content.push_str(s.text.trim());
            ranges.push(start..content.len());
            content.push_str("\n\n");
        }
        content.push_str("Question: ");
        let question_at = content.len();
        content.push_str(question.trim());
        let tok = generator.tokenizer();
        let mut messages = Vec::new();
        if !system.is_empty() {
            messages.push(Message::system(system));
        }
        messages.extend_from_slice(history);
        messages.push(Message::user(content.clone()));
        let text = tok.apply_chat_template(&messages, true)?;
        let (tokens, offsets) = tok.encode_with_offsets(&text, false)?;
        // Where the user message landed in the rendered text.
        let base = text.rfind(&content);
        let mut source_tokens = Vec::with_capacity(sources.len());
        for (i, r) in ranges.iter().enumerate() {
            let (start, end) = match base {
                Some(b) => (b + r.start, b + r.end),
                None => {
                    let block = &content[r.clone()];
                    let at = text.find(block).ok_or(PromptError::SourceNotFound(i))?;
                    (at, at + block.len())
                }
            };
            let first = offsets.iter().position(|o| o.end > start && o.start < end);
            let last = offsets.iter().rposition(|o| o.end > start && o.start < end);
            match (first, last) {
                (Some(f), Some(l)) => source_tokens.push(f..l + 1),
                _ => return Err(PromptError::SourceNotFound(i)),
            }
        }
        let question_tokens = match base {
            Some(b) => {
                let (start, end) = (b + question_at, b + content.len());
                let first = offsets.iter().position(|o| o.end > start && o.start < end);
                let last = offsets.iter().rposition(|o| o.end > start && o.start < end);
                match (first, last) {
                    (Some(f), Some(l)) => f..l + 1,
                    _ => 0..0,
                }
            }
            None => 0..0,
        };
        Ok(RagPrompt {
            text,
            tokens,
            source_tokens,
            question_tokens,
        })
    }
}

/// Measures an answer's log-probability with the model while hiding sources.
pub struct ModelScorer<'a> {
    generator: &'a Generator,
    prompt: &'a RagPrompt,
    answer_tokens: Vec<u32>,
    answer_spans: Vec<Range<usize>>,
    adapters: Vec<(String, f32)>,
}

impl<'a> ModelScorer<'a> {
    /// A scorer of `answer` (tokenized here, as the model would read it) after `prompt`.
    pub fn new(
        generator: &'a Generator,
        prompt: &'a RagPrompt,
        answer: &str,
        adapters: Vec<(String, f32)>,
    ) -> Result<Self, tribute_inference::Error> {
        let (answer_tokens, answer_spans) =
            generator.tokenizer().encode_with_offsets(answer, false)?;
        Ok(ModelScorer {
            generator,
            prompt,
            answer_tokens,
            answer_spans,
            adapters,
        })
    }

    /// A scorer for an answer the model generated (its own tokens, spans from decoding them).
    pub fn from_tokens(
        generator: &'a Generator,
        prompt: &'a RagPrompt,
        answer_tokens: Vec<u32>,
        adapters: Vec<(String, f32)>,
    ) -> Result<Self, tribute_inference::Error> {
        let tok = generator.tokenizer();
        let mut spans = Vec::with_capacity(answer_tokens.len());
        let mut at = 0;
        for i in 0..answer_tokens.len() {
            let end = tok.decode(&answer_tokens[..=i], true)?.len();
            spans.push(at.min(end)..end);
            at = end;
        }
        Ok(ModelScorer {
            generator,
            prompt,
            answer_tokens,
            answer_spans: spans,
            adapters,
        })
    }
}

impl ModelScorer<'_> {
    /// Visibility masks over the first `n` prompt tokens: a left-out source's tokens hidden.
    fn masks(&self, subsets: &[Vec<bool>], n: usize) -> Vec<Vec<bool>> {
        subsets
            .iter()
            .map(|keep| {
                let mut m = vec![true; n];
                for (r, &k) in self.prompt.source_tokens.iter().zip(keep) {
                    if !k {
                        m[r.start.min(n)..r.end.min(n)]
                            .iter_mut()
                            .for_each(|x| *x = false);
                    }
                }
                m
            })
            .collect()
    }
}

impl attribution::ContextScorer for ModelScorer<'_> {
    fn token_spans(&self) -> Vec<Range<usize>> {
        self.answer_spans.clone()
    }

    fn token_log_probs(&self, subsets: &[Vec<bool>]) -> Result<Vec<Vec<f32>>, ScorerError> {
        let masks = self.masks(subsets, self.prompt.tokens.len());
        self.generator
            .score_masked(
                &self.prompt.tokens,
                &self.answer_tokens,
                &masks,
                &self.adapters,
            )
            .map_err(|e| ScorerError(e.to_string()))
    }

    /// One masked pass over the prompt up to the question, scoring the question, the chat
    /// template's tokens after it and the answer; the template tokens are dropped.
    fn answer_and_question_log_probs(
        &self,
        subsets: &[Vec<bool>],
    ) -> Result<attribution::AnswerAndQuestion, ScorerError> {
        let q = self.prompt.question_tokens.clone();
        let sources_end = self.prompt.source_tokens.iter().map(|r| r.end).max();
        // The question must follow every source and leave at least 2 prompt tokens before it.
        if q.is_empty() || q.start < 2 || sources_end.is_none_or(|e| e > q.start) {
            return Ok((self.token_log_probs(subsets)?, None));
        }
        let prefix = &self.prompt.tokens[..q.start];
        let rest: Vec<u32> = self.prompt.tokens[q.start..]
            .iter()
            .chain(&self.answer_tokens)
            .copied()
            .collect();
        let masks = self.masks(subsets, prefix.len());
        let rows = self
            .generator
            .score_masked(prefix, &rest, &masks, &self.adapters)
            .map_err(|e| ScorerError(e.to_string()))?;
        let answer_at = self.prompt.tokens.len() - q.start;
        let (mut answers, mut questions) = (Vec::new(), Vec::new());
        for row in rows {
            questions.push(row[..q.len()].to_vec());
            answers.push(row[answer_at..].to_vec());
        }
        Ok((answers, Some(questions)))
    }
}

/// The index's embedder as the `similarity` method's embedder.
pub struct EmbedderScorer(pub Arc<dyn Embedder>);

impl attribution::TextEmbedder for EmbedderScorer {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ScorerError> {
        self.0.embed(texts).map_err(|e| ScorerError(e.to_string()))
    }
}
