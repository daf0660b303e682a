//! Conversations: [`Session`], from [`Engine::chat`].
//!
//! A session keeps the turns of one conversation and asks each new question with them as
//! context ([`AskRequest::history`](super::AskRequest::history): the oldest turns are
//! dropped when they do not fit, so the sources keep half of the prompt). On top of that:
//!
//! - **Retrieval sees a standalone question.** A follow-up ("who released it?") finds
//!   nothing on its own, so from the second turn on a question that refers back (it,
//!   they, this…) or has fewer than three content words is rewritten into a standalone
//!   question for retrieval only ([`QueryRewrite`]): by the model, with a short prompt and
//!   at most [`REWRITE_MAX_TOKENS`] tokens, or, without a generator or when the model's
//!   rewrite is empty, cut off, repetitive or shares no content word with the question, by
//!   prefixing the question with the content words of the previous turn's standalone
//!   question. The answer still responds to the question as asked;
//!   [`Answer::retrieval_query`] shows what was searched for.
//! - **Citations are numbered across the conversation.** A source keeps the number it was
//!   first cited with: cited as `[1]` in the first turn, it is `[1]` again when the third
//!   turn cites it, and sources cited for the first time get the next numbers, in the
//!   order the answer first cites them. Citations, sentence markers and
//!   [`Answer::cited_text`] use these numbers; a marker of a sentence whose source got no
//!   weight is left out. Receipts do not hold markers, so renumbering never changes one.
//! - **Earlier turns are context, never credited.** Each turn retrieves, attributes and
//!   signs its own receipt: it credits only the sources retrieved for that turn and hashes
//!   that turn's question alone.
//!
//! A session is a cheap handle: clones share the conversation, and turns asked from
//! several threads at once are recorded in the order they finish.
//!
//! ```no_run
//! # fn main() -> tribute::Result<()> {
//! let engine = tribute::Engine::from_config_file("tribute.toml")?;
//! let chat = engine.chat();
//! let first = chat.ask("What is the Zephyr SDK?")?;
//! let second = chat.ask("Who released it?")?;
//! println!("{} (searched for {:?})", second.cited_text, second.retrieval_query);
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tribute_inference::{FinishReason, GenerateRequest, Generator, Message, Prompt};

use super::{Answer, AnswerSentence, AskOptions, AskStream, Citation, Engine, Role, Turn};
use crate::error::{Error, Result};

/// Most tokens the model may spend rewriting a follow-up question.
pub const REWRITE_MAX_TOKENS: usize = 48;

/// Earlier turns shown to the model when it rewrites a follow-up, newest kept.
const REWRITE_TURNS: usize = 4;

/// Characters of each earlier turn shown to the model when it rewrites a follow-up.
const REWRITE_TURN_CHARS: usize = 300;

/// Most content words the fallback rewrite puts before the question.
const FALLBACK_WORDS: usize = 8;

const REWRITE_SYSTEM_PROMPT: &str = "Rewrite the follow-up question so that it can be \
understood without the conversation: replace words such as it, they, this and that with \
what they refer to. Reply with the rewritten question only.";

/// How a session turns a follow-up question into the query retrieval searches for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueryRewrite {
    /// The model rewrites it into a standalone question; without a generator, or when
    /// its rewrite is empty, cut off or repetitive, the content-word fallback is used.
    #[default]
    Model,
    /// The question prefixed by the content words of the previous turn's standalone
    /// question (no model runs).
    ContentWords,
    /// Retrieval searches for the question as asked.
    Off,
}

impl std::str::FromStr for QueryRewrite {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "model" => Ok(QueryRewrite::Model),
            "content-words" | "words" => Ok(QueryRewrite::ContentWords),
            "off" | "none" => Ok(QueryRewrite::Off),
            _ => Err(Error::InvalidRequest(format!(
                "unknown query rewrite {s:?} (model, content-words, off)"
            ))),
        }
    }
}

/// A source cited in a session, with the number it keeps for the rest of the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionSource {
    /// Its number in markers and citations.
    pub marker: usize,
    /// The chunk.
    pub chunk_id: String,
    /// Its document.
    pub doc_id: String,
    /// The document's title.
    pub title: String,
}

/// A multi-turn conversation with the engine: each question is asked with the earlier
/// turns as context, and a follow-up is rewritten into a standalone question for retrieval.
#[derive(Debug, Clone)]
pub struct Session {
    engine: Engine,
    options: AskOptions,
    rewrite: QueryRewrite,
    state: Arc<Mutex<Conversation>>,
}

/// What a session remembers.
#[derive(Debug, Default)]
struct Conversation {
    turns: Vec<Turn>,
    /// Cited sources in the order they were numbered (`marker - 1`).
    sources: Vec<SessionSource>,
    /// The standalone question the last turn searched for.
    last_query: Option<String>,
}

impl Engine {
    /// Starts a conversation: each [`Session::ask`] answers with the earlier turns as
    /// context, searches for a standalone version of a follow-up, and numbers citations
    /// across turns (see [`Session`]).
    pub fn chat(&self) -> Session {
        Session {
            engine: self.clone(),
            options: AskOptions::default(),
            rewrite: QueryRewrite::default(),
            state: Arc::default(),
        }
    }
}

impl Session {
    /// The options every turn is asked with (unset fields take the engine's config).
    pub fn options(mut self, options: AskOptions) -> Self {
        self.options = options;
        self
    }

    /// How follow-up questions are rewritten for retrieval.
    pub fn rewrite(mut self, rewrite: QueryRewrite) -> Self {
        self.rewrite = rewrite;
        self
    }

    /// The engine the session asks.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Asks the next question of the conversation with the session's options.
    pub fn ask(&self, question: impl Into<String>) -> Result<Answer> {
        self.ask_with(question, self.options.clone())
    }

    /// Asks the next question with these options instead of the session's (for example
    /// with a cancel token of its own).
    pub fn ask_with(&self, question: impl Into<String>, options: AskOptions) -> Result<Answer> {
        let (question, history, options) = self.turn(question.into(), options)?;
        let answer = self
            .engine
            .ask(question)
            .history(history)
            .options(options)
            .run()?;
        Ok(self.record(answer))
    }

    /// Streams the next answer: text pieces as the model writes them, then the finished
    /// [`Answer`], numbered for the session. The turn joins the conversation when the
    /// stream delivers the answer; a stream dropped before that leaves no turn.
    pub fn stream(&self, question: impl Into<String>) -> Result<AskStream> {
        self.stream_with(question, self.options.clone())
    }

    /// [`Session::stream`] with these options instead of the session's.
    pub fn stream_with(
        &self,
        question: impl Into<String>,
        options: AskOptions,
    ) -> Result<AskStream> {
        let (question, history, options) = self.turn(question.into(), options)?;
        let session = self.clone();
        Ok(self
            .engine
            .ask(question)
            .history(history)
            .options(options)
            .stream()?
            .on_done(move |answer| session.record(answer)))
    }

    /// The query retrieval would search for if `question` were asked next: `None` on the
    /// first turn or with [`QueryRewrite::Off`] (the question itself).
    pub fn retrieval_query(&self, question: &str) -> Result<Option<String>> {
        let (history, last_query) = {
            let state = self.lock();
            (state.turns.clone(), state.last_query.clone())
        };
        self.standalone_query(question, &history, last_query.as_deref(), &self.options)
    }

    /// The turns so far, oldest first: each question and the answer's text.
    pub fn history(&self) -> Vec<Turn> {
        self.lock().turns.clone()
    }

    /// The sources cited so far, by number.
    pub fn sources(&self) -> Vec<SessionSource> {
        self.lock().sources.clone()
    }

    /// Forgets the conversation: the next question starts a new one, numbered from 1.
    pub fn reset(&self) {
        *self.lock() = Conversation::default();
    }

    fn lock(&self) -> MutexGuard<'_, Conversation> {
        // A panic while numbering cannot leave the conversation half-updated: each update
        // is a push after the new values were computed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The question, the history to ask it with, and the options with its retrieval query.
    fn turn(
        &self,
        question: String,
        mut options: AskOptions,
    ) -> Result<(String, Vec<Turn>, AskOptions)> {
        if question.trim().is_empty() {
            return Err(Error::InvalidRequest("the question is empty".into()));
        }
        let (history, last_query) = {
            let state = self.lock();
            (state.turns.clone(), state.last_query.clone())
        };
        options.retrieval_query =
            self.standalone_query(&question, &history, last_query.as_deref(), &options)?;
        Ok((question, history, options))
    }

    fn standalone_query(
        &self,
        question: &str,
        history: &[Turn],
        last_query: Option<&str>,
        options: &AskOptions,
    ) -> Result<Option<String>> {
        let Some(previous) = last_query.or_else(|| {
            history
                .iter()
                .rev()
                .find(|t| t.role == Role::User)
                .map(|t| t.content.as_str())
        }) else {
            return Ok(None);
        };
        if !looks_like_follow_up(question) {
            return Ok(None);
        }
        let query = match (self.rewrite, self.engine.generator()) {
            (QueryRewrite::Off, _) => return Ok(None),
            (QueryRewrite::Model, Some(g)) => match model_rewrite(g, question, history, options) {
                Ok(Some(q)) => q,
                Ok(None) => content_word_query(question, previous),
                Err(Error::Cancelled) => return Err(Error::Cancelled),
                Err(e) => {
                    tracing::warn!(
                        "rewriting the follow-up question failed ({e}); using its words"
                    );
                    content_word_query(question, previous)
                }
            },
            _ => content_word_query(question, previous),
        };
        Ok((query != question).then_some(query))
    }

    /// Numbers the answer's citations for the session and adds the turn.
    fn record(&self, mut answer: Answer) -> Answer {
        let mut state = self.lock();
        number_citations(&mut answer, &mut state.sources);
        state.last_query = Some(
            answer
                .retrieval_query
                .clone()
                .unwrap_or_else(|| answer.question.clone()),
        );
        state.turns.push(Turn::user(answer.question.clone()));
        state.turns.push(Turn::assistant(answer.text.clone()));
        answer
    }
}

/// The model's standalone version of `question`; `None` when its rewrite is unusable.
fn model_rewrite(
    generator: &Generator,
    question: &str,
    history: &[Turn],
    options: &AskOptions,
) -> Result<Option<String>> {
    let mut transcript = String::from("Conversation:\n");
    for turn in &history[history.len().saturating_sub(REWRITE_TURNS)..] {
        let who = match turn.role {
            Role::User => "User",
            Role::Assistant => "Assistant",
        };
        let text: String = turn
            .content
            .trim()
            .chars()
            .take(REWRITE_TURN_CHARS)
            .collect();
        transcript.push_str(&format!("{who}: {}\n", text.replace('\n', " ")));
    }
    transcript.push_str(&format!(
        "\nFollow-up question: {}\nStandalone question:",
        question.trim()
    ));
    let mut request = GenerateRequest::new(Prompt::Chat(vec![
        Message::system(REWRITE_SYSTEM_PROMPT),
        Message::user(transcript),
    ]))
    .max_tokens(REWRITE_MAX_TOKENS)
    .temperature(0.0)
    .stop("\n")
    .truncate_prompt(true);
    if let Some(token) = &options.cancel {
        request = request.cancel_token(token.clone());
    }
    let generation = generator.generate(&request)?;
    match generation.finish_reason {
        FinishReason::Cancelled => Err(Error::Cancelled),
        // Cut off at the budget: the model is looping or answering instead.
        FinishReason::Length => Ok(None),
        _ => Ok(usable_rewrite(&generation.text, question)),
    }
}

/// The rewrite without labels and quotes, if it is a plausible query for `question`: not
/// empty, not repeating itself, and sharing a content word with the question (when the
/// question has any).
fn usable_rewrite(text: &str, question: &str) -> Option<String> {
    let mut t = text.trim();
    for label in ["Standalone question:", "Rewritten question:", "Question:"] {
        if let Some(rest) = t.strip_prefix(label) {
            t = rest.trim();
        }
    }
    let t = t
        .trim_matches(|c: char| matches!(c, '"' | '\'' | '`' | '“' | '”'))
        .trim();
    let tokens = words(t);
    if tokens.is_empty() {
        return None;
    }
    let trigrams: Vec<&[String]> = tokens.windows(3).collect();
    let distinct: HashSet<&[String]> = trigrams.iter().copied().collect();
    if distinct.len() < trigrams.len() {
        return None;
    }
    let asked: HashSet<String> = content_words(question).into_iter().collect();
    if !asked.is_empty() && !tokens.iter().any(|w| asked.contains(w)) {
        return None;
    }
    Some(t.to_owned())
}

/// Whether `question` needs the conversation to be understood: it refers back with a word
/// such as "it" or "they", or has fewer than three content words.
fn looks_like_follow_up(question: &str) -> bool {
    words(question)
        .iter()
        .any(|w| REFERRING_WORDS.contains(&w.as_str()))
        || content_words(question).len() < 3
}

/// The fallback rewrite: `question` prefixed by the content words of `previous` that it
/// lacks (at most [`FALLBACK_WORDS`], the last ones).
fn content_word_query(question: &str, previous: &str) -> String {
    let asked: HashSet<String> = words(question).into_iter().collect();
    let mut seen = HashSet::new();
    let mut prefix: Vec<String> = content_words(previous)
        .into_iter()
        .filter(|w| !asked.contains(w) && seen.insert(w.clone()))
        .collect();
    if prefix.len() > FALLBACK_WORDS {
        prefix.drain(..prefix.len() - FALLBACK_WORDS);
    }
    if prefix.is_empty() {
        question.trim().to_owned()
    } else {
        format!("{} {}", prefix.join(" "), question.trim())
    }
}

/// Lowercased words: letters and digits, with inner hyphens and apostrophes.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '\''))
        .map(|w| {
            w.trim_matches(|c: char| c == '-' || c == '\'')
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// The words of `text` that carry its topic (stop words left out).
fn content_words(text: &str) -> Vec<String> {
    words(text)
        .into_iter()
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .collect()
}

/// Words by which a follow-up refers to something named earlier.
const REFERRING_WORDS: &[&str] = &[
    "it", "its", "it's", "they", "them", "their", "theirs", "this", "that", "these", "those", "he",
    "she", "him", "her", "his", "there",
];

/// English function words and question words, which say nothing about a topic.
const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as", "at",
    "be", "been", "before", "being", "but", "by", "can", "could", "did", "do", "does", "doing",
    "else", "for", "from", "had", "has", "have", "he", "her", "here", "him", "his", "how", "i",
    "if", "in", "into", "is", "it", "it's", "its", "just", "me", "more", "most", "much", "my",
    "no", "not", "now", "of", "on", "one", "ones", "or", "other", "our", "please", "she", "should",
    "so", "some", "such", "tell", "than", "that", "the", "their", "them", "then", "there", "these",
    "they", "this", "those", "to", "too", "very", "was", "we", "were", "what", "when", "where",
    "which", "while", "who", "whom", "whose", "why", "will", "with", "would", "you", "your",
];

/// Renames the answer's markers to the session's numbers (see [`renumber`]).
fn number_citations(answer: &mut Answer, sources: &mut Vec<SessionSource>) {
    renumber(
        &mut answer.citations,
        &mut answer.sentences,
        &mut answer.cited_text,
        &answer.text,
        sources,
    );
}

/// Renames markers to the session's numbers, numbering newly cited sources after
/// `sources`, in the order the sentences first cite them (then by citation order).
/// Markers naming a source this turn did not cite (in the citation audit's lists, or a
/// sentence's marker of a source whose weight rounded to zero) have no session number and
/// are left out.
fn renumber(
    citations: &mut [Citation],
    sentences: &mut [AnswerSentence],
    cited_text: &mut String,
    text: &str,
    sources: &mut Vec<SessionSource>,
) {
    let mut order: Vec<usize> = Vec::new();
    let first_cited = sentences
        .iter()
        .flat_map(|s| s.markers.iter().copied())
        .chain(citations.iter().map(|c| c.marker));
    for marker in first_cited {
        if !order.contains(&marker) {
            order.push(marker);
        }
    }
    let mut numbers: HashMap<usize, usize> = HashMap::new();
    for local in order {
        let Some(c) = citations.iter().find(|c| c.marker == local) else {
            continue;
        };
        let number = match sources.iter().position(|s| s.chunk_id == c.chunk_id) {
            Some(i) => i + 1,
            None => {
                sources.push(SessionSource {
                    marker: sources.len() + 1,
                    chunk_id: c.chunk_id.clone(),
                    doc_id: c.doc_id.clone(),
                    title: c.title.clone(),
                });
                sources.len()
            }
        };
        numbers.insert(local, number);
    }
    let unchanged = numbers.iter().all(|(local, number)| local == number)
        && sentences.iter().all(|s| {
            s.markers
                .iter()
                .chain(&s.unused_markers)
                .chain(&s.uncited_markers)
                .all(|m| numbers.contains_key(m))
        });
    if unchanged {
        return;
    }
    let before: Vec<Vec<usize>> = sentences.iter().map(|s| s.markers.clone()).collect();
    for c in citations.iter_mut() {
        if let Some(&n) = numbers.get(&c.marker) {
            c.marker = n;
        }
    }
    let renamed = |markers: &[usize]| -> Vec<usize> {
        markers
            .iter()
            .filter_map(|m| numbers.get(m).copied())
            .collect()
    };
    for s in sentences.iter_mut() {
        s.markers = renamed(&s.markers);
        s.unused_markers = renamed(&s.unused_markers);
        s.uncited_markers = renamed(&s.uncited_markers);
    }
    *cited_text = renumbered_text(cited_text, text, sentences, &before);
}

/// `cited_text` with each sentence's markers replaced by its new ones. Everything else in
/// the text is kept; when the old markers are not where the sentences put them, the text
/// is rendered again from the sentences.
fn renumbered_text(
    cited_text: &str,
    text: &str,
    sentences: &[AnswerSentence],
    before: &[Vec<usize>],
) -> String {
    let rendered =
        |markers: &[usize]| -> String { markers.iter().map(|m| format!(" [{m}]")).collect() };
    let mut out = String::with_capacity(cited_text.len());
    let mut rest = cited_text;
    for (s, old) in sentences.iter().zip(before) {
        if old.is_empty() {
            continue;
        }
        let sentence = s.text.trim_end();
        let old = rendered(old);
        let found = rest.find(sentence).and_then(|at| {
            let end = at + sentence.len();
            rest[end..].starts_with(&old).then_some(end)
        });
        let Some(end) = found else {
            return render(text, sentences);
        };
        out.push_str(&rest[..end]);
        out.push_str(&rendered(&s.markers));
        rest = &rest[end + old.len()..];
    }
    out.push_str(rest);
    out
}

/// The answer's text with each sentence's markers after it (as attribution renders them).
fn render(text: &str, sentences: &[AnswerSentence]) -> String {
    let mut out = String::with_capacity(text.len() + 8 * sentences.len());
    let mut at = 0;
    for s in sentences {
        let Some(sentence) = text.get(s.span.clone()) else {
            continue;
        };
        out.push_str(
            text.get(at.min(s.span.start)..s.span.start)
                .unwrap_or_default(),
        );
        let trimmed = sentence.trim_end();
        out.push_str(trimmed);
        for m in &s.markers {
            out.push_str(&format!(" [{m}]"));
        }
        out.push_str(&sentence[trimmed.len()..]);
        at = s.span.end;
    }
    out.push_str(text.get(at..).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests;
