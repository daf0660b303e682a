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
    template: Option<minijinja::Environment<'static>>,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("chat_template", &self.template.is_some())
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
        let template = template_src.map(compile_template).transpose()?;
        Ok(Tokenizer {
            inner,
            template,
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

    /// Whether the tokenizer has a chat template.
    pub fn has_chat_template(&self) -> bool {
        self.template.is_some()
    }

    /// Renders messages with the chat template (`add_generation_prompt` appends the
    /// assistant header so the model answers).
    pub fn apply_chat_template(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let env = self.template.as_ref().ok_or_else(|| {
            Error::ChatTemplate("tokenizer_config.json has no chat_template".into())
        })?;
        let tmpl = env
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
