//! Training examples: question/answer pairs, chat transcripts and plain documents from
//! JSONL, tokenized as the generator would see them, with the tokens to learn marked.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::tokenizer::{Message, Tokenizer};

/// One training example as written in a JSONL line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Example {
    /// A conversation: the assistant turns are learned, the rest is context.
    /// `{"question", "answer"}` lines become a user turn and an assistant turn.
    Chat(Vec<Message>),
    /// A plain document, learned whole (causal-LM continuation).
    Document(String),
}

#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    question: Option<String>,
    #[serde(default)]
    answer: Option<String>,
    #[serde(default)]
    messages: Option<Vec<Message>>,
    #[serde(default)]
    text: Option<String>,
}

impl Example {
    /// Parses one JSONL line: `{"question","answer"}`, `{"messages":[…]}` or `{"text"}`
    /// (other fields, such as `contributor` or `datanet`, are left to the caller).
    pub fn from_json(line: &str) -> Result<Self> {
        let l: Line = serde_json::from_str(line)
            .map_err(|e| Error::Finetune(format!("not a training example: {e}")))?;
        match (l.question, l.answer, l.messages, l.text) {
            (Some(q), Some(a), None, None) => {
                Ok(Example::Chat(vec![Message::user(q), Message::assistant(a)]))
            }
            (None, None, Some(m), None) => {
                if !m.iter().any(|m| m.role == "assistant") {
                    return Err(Error::Finetune(
                        "a messages example has no assistant turn to learn".into(),
                    ));
                }
                Ok(Example::Chat(m))
            }
            (None, None, None, Some(t)) => Ok(Example::Document(t)),
            _ => Err(Error::Finetune(
                "an example has either question and answer, messages, or text".into(),
            )),
        }
    }

    /// Reads a JSONL file (blank lines skipped); errors name the line.
    pub fn read_jsonl(path: impl AsRef<Path>) -> Result<Vec<Self>> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::io(path, source))?;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                Self::from_json(l).map_err(|e| Error::TrainingData {
                    path: path.to_path_buf(),
                    line: i + 1,
                    reason: match e {
                        Error::Finetune(reason) => reason,
                        other => other.to_string(),
                    },
                })
            })
            .collect()
    }

    /// Token ids and which of them are learned. A chat is rendered with the tokenizer's
    /// chat template turn by turn: every assistant turn is tokenized after exactly the
    /// prompt the generator would build for it (template with the generation prompt), and
    /// its tokens through the end-of-turn token are learned. Longer than `max_len`: cut,
    /// and flagged.
    pub fn tokenize(
        &self,
        tokenizer: &Tokenizer,
        eos: &[u32],
        max_len: usize,
    ) -> Result<TrainingExample> {
        let mut tokens = Vec::new();
        let mut learned = Vec::new();
        match self {
            Example::Document(text) => {
                tokens = tokenizer.encode(text, true)?;
                learned = vec![true; tokens.len()];
            }
            Example::Chat(messages) => {
                let mut rendered = String::new();
                for (i, m) in messages.iter().enumerate() {
                    if m.role != "assistant" {
                        continue;
                    }
                    let prompt = tokenizer.apply_chat_template(&messages[..i], true)?;
                    let turn = tokenizer.apply_chat_template(&messages[..=i], false)?;
                    let context = prompt
                        .strip_prefix(rendered.as_str())
                        .ok_or_else(template_not_incremental)?;
                    let answer = turn
                        .strip_prefix(prompt.as_str())
                        .ok_or_else(template_not_incremental)?;
                    let ids = tokenizer.encode(context, false)?;
                    learned.extend(std::iter::repeat_n(false, ids.len()));
                    tokens.extend(ids);
                    let ids = tokenizer.encode(answer, false)?;
                    // Learn through the end-of-turn token; what the template prints after it
                    // (a newline) is never generated.
                    let keep = ids
                        .iter()
                        .rposition(|t| eos.contains(t))
                        .map_or(ids.len(), |p| p + 1);
                    learned.extend((0..ids.len()).map(|j| j < keep));
                    tokens.extend(ids);
                    rendered = turn;
                }
            }
        }
        // The first token is never predicted.
        if let Some(first) = learned.first_mut() {
            *first = false;
        }
        let truncated = tokens.len() > max_len;
        tokens.truncate(max_len);
        learned.truncate(max_len);
        Ok(TrainingExample {
            tokens,
            learned,
            truncated,
        })
    }
}

fn template_not_incremental() -> Error {
    Error::ChatTemplate(
        "rendering a conversation turn by turn does not extend the earlier turns' text; the trainer needs a template that renders each turn after the previous ones".into(),
    )
}

/// A tokenized example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainingExample {
    /// Token ids.
    pub tokens: Vec<u32>,
    /// `learned[i]`: token `i` is a target of the loss (predicted from the tokens before it).
    pub learned: Vec<bool>,
    /// Whether the example was cut to the maximum length.
    pub truncated: bool,
}

impl TrainingExample {
    /// Number of tokens the loss is computed on.
    pub fn learned_count(&self) -> usize {
        self.learned.iter().filter(|&&l| l).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_to_the_three_kinds() {
        let qa = Example::from_json(r#"{"question":"Q?","answer":"A.","contributor":"0xab"}"#)
            .expect("qa");
        assert_eq!(
            qa,
            Example::Chat(vec![Message::user("Q?"), Message::assistant("A.")])
        );
        let doc = Example::from_json(r#"{"id":"d","text":"Some text."}"#).expect("doc");
        assert_eq!(doc, Example::Document("Some text.".into()));
        let chat = Example::from_json(
            r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}"#,
        )
        .expect("chat");
        assert!(matches!(chat, Example::Chat(m) if m.len() == 2));
        for bad in [
            r#"{"question":"only"}"#,
            r#"{"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"text":"t","question":"q","answer":"a"}"#,
            "not json",
        ] {
            assert!(Example::from_json(bad).is_err(), "{bad}");
        }
    }
}
