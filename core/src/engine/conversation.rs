//! Asking with earlier turns of a conversation as context: [`Turn`] and
//! [`AskRequest::history`].
//!
//! Earlier turns are shown to the model between the system prompt and the message that
//! holds the sources and the question, so a follow-up ("and how long does it take?") is
//! answered in context. They are context only: retrieval searches for the question (or
//! for [`AskRequest::retrieval_query`], a standalone rewrite of it), citations credit only
//! the sources retrieved for it, and the receipt hashes the question alone. When the turns
//! do not fit, the oldest are dropped first: all kept turns together take at most half of
//! the prompt budget, so the sources keep the other half.
//!
//! [`Session`](super::Session) keeps the turns for you, rewrites follow-ups for retrieval
//! and numbers citations across the conversation.

use serde::{Deserialize, Serialize};
use tribute_inference::Message;

use super::{AskRequest, Engine};
use crate::error::Result;

/// Who spoke a [`Turn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The person asking.
    User,
    /// The model's earlier answer.
    Assistant,
}

/// One earlier message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: String,
}

impl Turn {
    /// A question the user asked earlier.
    pub fn user(content: impl Into<String>) -> Self {
        Turn {
            role: Role::User,
            content: content.into(),
        }
    }

    /// An answer the model gave earlier.
    pub fn assistant(content: impl Into<String>) -> Self {
        Turn {
            role: Role::Assistant,
            content: content.into(),
        }
    }

    fn message(&self) -> Message {
        match self.role {
            Role::User => Message::user(self.content.clone()),
            Role::Assistant => Message::assistant(self.content.clone()),
        }
    }
}

impl AskRequest<'_> {
    /// Earlier turns of the conversation, oldest first: context for the model, never
    /// searched for or credited ([`Session`](crate::Session) keeps them for a conversation).
    pub fn history<I: IntoIterator<Item = Turn>>(mut self, turns: I) -> Self {
        self.history = turns.into_iter().collect();
        self
    }

    /// Searches the knowledge base for `query` instead of the question, such as a
    /// follow-up rewritten to stand alone; the answer still responds to the question, and
    /// [`Answer::retrieval_query`](super::Answer::retrieval_query) records the query.
    pub fn retrieval_query(mut self, query: impl Into<String>) -> Self {
        self.options.retrieval_query = Some(query.into());
        self
    }
}

impl Engine {
    /// The newest turns that fit in half of `budget` prompt tokens, oldest first, as chat
    /// messages.
    pub(super) fn history_messages(&self, history: &[Turn], budget: usize) -> Result<Vec<Message>> {
        let tokenizer = self.loaded_generator()?.tokenizer();
        let mut room = budget / 2;
        let mut kept = Vec::new();
        for turn in history.iter().rev() {
            if turn.content.trim().is_empty() {
                continue;
            }
            // Chat-template markup costs a few tokens per turn beyond the text itself.
            let cost = tokenizer.encode(&turn.content, false)?.len() + 8;
            if cost > room {
                break;
            }
            room -= cost;
            kept.push(turn.message());
        }
        kept.reverse();
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_serialise_with_lowercase_roles() {
        let t = Turn::assistant("Paris.");
        let json = serde_json::to_string(&t).expect("json");
        assert_eq!(json, r#"{"role":"assistant","content":"Paris."}"#);
        let back: Turn = serde_json::from_str(r#"{"role":"user","content":"q"}"#).expect("parse");
        assert_eq!(back, Turn::user("q"));
        assert_eq!(Turn::user("q").message().role, "user");
    }
}
