//! The model's tokenizer (`tokenizer.json`), its chat template (`tokenizer_config.json`,
//! rendered with minijinja) and streaming detokenization.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message with the given role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// A tokenizer with the model's chat template and special tokens.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    template: minijinja::Environment<'static>,
    /// The model ships no chat template: `template` is [`PLAIN_CHAT_TEMPLATE`].
    plain_template: bool,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("chat_template", &!self.plain_template)
            .finish()
    }
}

/// A token string from `tokenizer_config.json`: plain or `{"content": ...}`.
fn token_string(v: Option<&serde_json::Value>) -> String {
    match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Object(o)) => o
            .get("content")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json` and, when present, `tokenizer_config.json` from a model directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let tj = dir.join("tokenizer.json");
        if !tj.is_file() {
            return Err(Error::model_dir(dir, "tokenizer.json not found"));
        }
        let mut inner = tokenizers::Tokenizer::from_file(&tj)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", tj.display())))?;
        // Generation feeds whole prompts: no fixed padding or truncation from the file.
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: serde_json::Value = if cfg_path.is_file() {
            let text = std::fs::read_to_string(&cfg_path)
                .map_err(|source| Error::io(&cfg_path, source))?;
            serde_json::from_str(&text)
                .map_err(|e| Error::Tokenizer(format!("{}: {e}", cfg_path.display())))?
        } else {
            serde_json::Value::Null
        };
        let template_src = match cfg.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            // A list of named templates: take "default".
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .map(str::to_owned),
            _ => None,
        };
        let plain_template = template_src.is_none();
        if plain_template {
            tracing::info!(
                dir = %dir.display(),
                "the model has no chat template (a base model?): chats use the plain transcript template"
            );
        }
        let template =
            compile_template(template_src.unwrap_or_else(|| PLAIN_CHAT_TEMPLATE.to_owned()))?;
        Ok(Tokenizer {
            inner,
            template,
            plain_template,
            bos_token: token_string(cfg.get("bos_token")),
            eos_token: token_string(cfg.get("eos_token")),
        })
    }

    /// Number of tokens the tokenizer knows, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token string, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Whether the model ships a chat template (else chats use [`PLAIN_CHAT_TEMPLATE`]).
    pub fn has_chat_template(&self) -> bool {
        !self.plain_template
    }

    /// Texts that end an answer to a chat: what a model prompted with
    /// [`PLAIN_CHAT_TEMPLATE`] writes when it goes on to invent the next turn; none for a
    /// model's own template (its end-of-turn token ends the answer).
    pub fn chat_stop_strings(&self) -> &'static [&'static str] {
        if self.plain_template {
            &["\nUser:", "\nSystem:"]
        } else {
            &[]
        }
    }

    /// Renders messages with the model's chat template, or the plain transcript template
    /// for a model without one (`add_generation_prompt` appends the assistant header so
    /// the model answers).
    pub fn apply_chat_template(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let tmpl = self
            .template
            .get_template("chat")
            .map_err(|e| Error::ChatTemplate(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(|e| Error::ChatTemplate(format!("{e:#}")))
    }

    /// Token ids of a text; `add_special_tokens` applies the tokenizer's post-processor
    /// (e.g. a BOS token). Text rendered by a chat template already has its specials.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of a text with each token's byte range in the text (special tokens added
    /// by the post-processor get empty ranges).
    pub fn encode_with_offsets(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<(Vec<u32>, Vec<std::ops::Range<usize>>)> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let spans = enc.get_offsets().iter().map(|&(a, b)| a..b).collect();
        Ok((enc.get_ids().to_vec(), spans))
    }

    /// Text of token ids.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// The chat template of models that ship none (base models such as Gemma 3 270M): a plain
/// transcript a base model continues naturally — the system text, then `User: …` and
/// `Assistant: …` turns separated by blank lines, ending in `Assistant:` for the answer.
/// Answers stop where the model starts a new turn ([`Tokenizer::chat_stop_strings`]).
pub const PLAIN_CHAT_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}\
{% if message.role == 'system' %}{{ message.content }}\n\n\
{% elif message.role == 'user' %}User: {{ message.content }}\n\n\
{% else %}Assistant: {{ message.content }}\n\n{% endif %}{% endfor %}\
{% if add_generation_prompt %}Assistant:{% endif %}";

fn compile_template(src: String) -> Result<minijinja::Environment<'static>> {
    let mut env = minijinja::Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    // Llama-3 style templates print today's date.
    env.add_function(
        "strftime_now",
        |fmt: String| -> std::result::Result<String, minijinja::Error> {
            use std::fmt::Write;
            let mut out = String::new();
            write!(out, "{}", chrono::Local::now().format(&fmt)).map_err(|_| {
                minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    format!("strftime_now: bad format {fmt:?}"),
                )
            })?;
            Ok(out)
        },
    );
    env.add_template_owned("chat", src)
        .map_err(|e| Error::ChatTemplate(e.to_string()))?;
    Ok(env)
}

/// Turns a stream of token ids into text pieces that never split a UTF-8 character or a
/// glyph spread over several byte-level tokens.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    prefix: String,
    prefix_index: usize,
    all: Vec<u32>,
    emitted: String,
    skip_special_tokens: bool,
}

impl StreamDecoder {
    /// A decoder; special tokens are left out of the text when `skip_special_tokens`.
    pub fn new(skip_special_tokens: bool) -> Self {
        StreamDecoder {
            skip_special_tokens,
            ..Default::default()
        }
    }

    /// Feeds one token; returns the new text it completes, if any.
    pub fn step(&mut self, tok: &Tokenizer, id: u32) -> Result<Option<String>> {
        self.all.push(id);
        let piece = tokenizers::tokenizer::step_decode_stream(
            &tok.inner,
            vec![id],
            self.skip_special_tokens,
            &mut self.ids,
            &mut self.prefix,
            &mut self.prefix_index,
        )
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
        if let Some(p) = &piece {
            self.emitted.push_str(p);
        }
        Ok(piece)
    }

    /// The text not yet emitted once generation stops (an incomplete character at the end
    /// comes out as U+FFFD).
    pub fn finish(&mut self, tok: &Tokenizer) -> Result<Option<String>> {
        let full = tok.decode(&self.all, self.skip_special_tokens)?;
        let rest = full
            .strip_prefix(self.emitted.as_str())
            .unwrap_or_default()
            .to_owned();
        self.emitted = full;
        Ok((!rest.is_empty()).then_some(rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A word-level tokenizer in a temporary model directory, with `config` as its
    /// `tokenizer_config.json`.
    fn tokenizer(config: serde_json::Value) -> Tokenizer {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokenizer = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [{"id": 0, "content": "<bos>", "single_word": false, "lstrip": false,
                              "rstrip": false, "normalized": false, "special": true}],
            "normalizer": null,
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null,
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"<bos>": 0, "hi": 1, "[UNK]": 2},
                      "unk_token": "[UNK]"}
        });
        std::fs::write(dir.path().join("tokenizer.json"), tokenizer.to_string()).unwrap();
        std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
        Tokenizer::from_dir(dir.path()).expect("load the tokenizer")
    }

    #[test]
    fn a_model_without_a_chat_template_gets_the_plain_transcript() {
        let tok = tokenizer(serde_json::json!({"bos_token": "<bos>", "eos_token": "<eos>"}));
        assert!(!tok.has_chat_template());
        let chat = [
            Message::system("Be brief."),
            Message::user("hi"),
            Message::assistant("Hello."),
            Message::user("hi again"),
        ];
        assert_eq!(
            tok.apply_chat_template(&chat, true).unwrap(),
            "<bos>Be brief.\n\nUser: hi\n\nAssistant: Hello.\n\nUser: hi again\n\nAssistant:"
        );
        assert_eq!(
            tok.apply_chat_template(&chat[1..2], false).unwrap(),
            "<bos>User: hi\n\n"
        );
        // The answer ends where a base model starts inventing the next turn.
        assert_eq!(tok.chat_stop_strings(), ["\nUser:", "\nSystem:"]);
        // The rendered BOS is the special token, not text.
        assert_eq!(tok.encode("<bos>hi", false).unwrap(), vec![0, 1]);
    }

    #[test]
    fn a_model_s_own_template_is_used_and_adds_no_stop_strings() {
        let tok = tokenizer(serde_json::json!({
            "bos_token": "<bos>",
            "chat_template": "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"
        }));
        assert!(tok.has_chat_template());
        assert_eq!(
            tok.apply_chat_template(&[Message::user("hi")], true)
                .unwrap(),
            "[user]hi"
        );
        assert!(tok.chat_stop_strings().is_empty());
    }
}
