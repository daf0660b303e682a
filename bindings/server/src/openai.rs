//! The OpenAI chat-completions wire format and its conversion to and from the engine's
//! types: the request's model and messages, and the answer as a completion whose message
//! carries citation annotations and the receipt.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tribute::{Answer, Citation, Engine, Turn};

use crate::error::{Error, Result};

/// A `POST /v1/chat/completions` body. Fields the server does not use are ignored when
/// harmless and refused when they would change what the answer means (see docs/SERVE.md).
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// `base`, `base:adapter` or `base:adapter=weight,other=weight`.
    pub model: String,
    /// The conversation; the last message is the question.
    pub messages: Vec<ChatMessage>,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Most answer tokens (`max_completion_tokens` is read too).
    pub max_tokens: Option<usize>,
    /// The newer name of `max_tokens`.
    pub max_completion_tokens: Option<usize>,
    /// Sampling temperature (0: greedy).
    pub temperature: Option<f32>,
    /// Sampling seed.
    pub seed: Option<u64>,
    /// Choices to generate: only 1 is offered.
    pub n: Option<u32>,
    /// Tool calling is not offered.
    pub tools: Option<Value>,
    /// Function calling is not offered.
    pub functions: Option<Value>,
    /// Only `{"type": "text"}` is offered.
    pub response_format: Option<Value>,
    /// Token log-probabilities are not offered.
    pub logprobs: Option<bool>,
    /// Stop sequences are not offered (the answer would be cut where the client expects).
    pub stop: Option<Value>,
    /// Token biases are not offered.
    pub logit_bias: Option<Value>,
    /// Only 0 (none) is offered.
    pub presence_penalty: Option<f32>,
    /// Only 0 (none) is offered.
    pub frequency_penalty: Option<f32>,
    /// Audio output is not offered.
    pub audio: Option<Value>,
    /// Only `["text"]` is offered.
    pub modalities: Option<Vec<String>>,
    /// Tribute: chunks to retrieve.
    pub top_k: Option<usize>,
    /// Tribute: only these datanets.
    pub datanets: Option<Vec<String>>,
    /// Tribute: the attribution method (`loo`, `ablation`, `similarity`, `retrieval`).
    pub method: Option<String>,
}

/// One message of the conversation.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// A string, or an array of `{"type": "text", "text": …}` parts.
    #[serde(default)]
    pub content: Value,
}

impl ChatMessage {
    fn text(&self) -> Result<String> {
        match &self.content {
            Value::String(s) => Ok(s.clone()),
            Value::Null => Ok(String::new()),
            Value::Array(parts) => {
                let mut text = String::new();
                for p in parts {
                    match (p.get("type").and_then(Value::as_str), p.get("text")) {
                        (Some("text"), Some(Value::String(t))) => text.push_str(t),
                        _ => {
                            return Err(Error::bad_request(
                                "only text content parts are supported",
                                Some("messages"),
                            ));
                        }
                    }
                }
                Ok(text)
            }
            _ => Err(Error::bad_request(
                "message content must be a string or an array of text parts",
                Some("messages"),
            )),
        }
    }
}

/// What a chat request asks the engine: the question, earlier turns, and the options.
#[derive(Debug, Clone)]
pub struct ChatAsk {
    /// The last user message.
    pub question: String,
    /// Earlier user and assistant messages.
    pub history: Vec<Turn>,
    /// The ask's options (adapters from the model name).
    pub options: tribute::AskOptions,
}

impl ChatRequest {
    /// Checks the request against what the server offers and converts it.
    pub fn to_ask(&self, engine: &Engine) -> Result<ChatAsk> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(Error::bad_request("only n = 1 is supported", Some("n")));
        }
        if self.tools.is_some() || self.functions.is_some() {
            return Err(Error::bad_request(
                "tool and function calling are not supported",
                Some("tools"),
            ));
        }
        if let Some(f) = &self.response_format
            && f.get("type").and_then(Value::as_str) != Some("text")
        {
            return Err(Error::bad_request(
                "only response_format {\"type\": \"text\"} is supported",
                Some("response_format"),
            ));
        }
        if self.logprobs == Some(true) {
            return Err(Error::bad_request(
                "logprobs are not supported",
                Some("logprobs"),
            ));
        }
        self.check_sampling_parameters()?;
        let adapters = parse_model(engine, &self.model)?;
        let (question, history) = conversation(&self.messages)?;
        let max_tokens = self.max_completion_tokens.or(self.max_tokens);
        if max_tokens == Some(0) {
            return Err(Error::bad_request(
                "max_tokens must be at least 1",
                Some("max_tokens"),
            ));
        }
        let method = match &self.method {
            Some(m) => Some(m.parse().map_err(tribute::Error::from)?),
            None => None,
        };
        let options = tribute::AskOptions {
            top_k: self.top_k,
            datanets: self.datanets.clone(),
            adapters,
            method,
            max_tokens,
            temperature: self.temperature,
            seed: self.seed,
            ..tribute::AskOptions::default()
        };
        Ok(ChatAsk {
            question,
            history,
            options,
        })
    }
}

impl ChatRequest {
    /// Refuses the parameters that would change the answer but are not offered; a null,
    /// empty or neutral value of each is accepted.
    fn check_sampling_parameters(&self) -> Result<()> {
        let stop = match &self.stop {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            Some(_) => true,
        };
        if stop {
            return Err(Error::bad_request(
                "stop sequences are not supported",
                Some("stop"),
            ));
        }
        if self
            .logit_bias
            .as_ref()
            .is_some_and(|b| b.as_object().is_none_or(|m| !m.is_empty()))
        {
            return Err(Error::bad_request(
                "logit_bias is not supported",
                Some("logit_bias"),
            ));
        }
        for (value, name) in [
            (self.presence_penalty, "presence_penalty"),
            (self.frequency_penalty, "frequency_penalty"),
        ] {
            if value.is_some_and(|v| v != 0.0) {
                return Err(Error::bad_request(
                    format!("{name} is not supported (only 0)"),
                    Some(name),
                ));
            }
        }
        if self.audio.as_ref().is_some_and(|a| !a.is_null())
            || self
                .modalities
                .as_ref()
                .is_some_and(|m| m.iter().any(|m| m != "text"))
        {
            return Err(Error::bad_request(
                "only text output is supported",
                Some("modalities"),
            ));
        }
        Ok(())
    }
}

/// The question (the last message, which must be the user's) and the earlier turns.
/// System and developer messages are skipped: the server's own system prompt applies.
fn conversation(messages: &[ChatMessage]) -> Result<(String, Vec<Turn>)> {
    let mut turns = Vec::with_capacity(messages.len());
    for m in messages {
        match m.role.as_str() {
            "system" | "developer" => {}
            "user" => turns.push(Turn::user(m.text()?)),
            "assistant" => turns.push(Turn::assistant(m.text()?)),
            other => {
                return Err(Error::bad_request(
                    format!("messages with role {other:?} are not supported"),
                    Some("messages"),
                ));
            }
        }
    }
    match turns.pop() {
        Some(last) if last.role == tribute::engine::Role::User => Ok((last.content, turns)),
        Some(_) => Err(Error::bad_request(
            "the last message must be the user's question",
            Some("messages"),
        )),
        None => Err(Error::bad_request(
            "messages must include a user message",
            Some("messages"),
        )),
    }
}

/// The adapters a model name asks for: `base` (none), `base:adapter` (weight 1) or
/// `base:a=0.7,b=0.3`. The base must be the engine's model; adapters must be registered.
pub fn parse_model(engine: &Engine, model: &str) -> Result<Vec<(String, f32)>> {
    let not_found = || Error::NotFound {
        what: "model",
        id: model.to_owned(),
    };
    let (base, adapters) = model.split_once(':').unwrap_or((model, ""));
    if base != engine.model().name {
        return Err(not_found());
    }
    let registered = engine
        .generator()
        .map(|g| g.adapters().ids())
        .unwrap_or_default();
    let mut out = Vec::new();
    for part in adapters.split(',').filter(|p| !p.trim().is_empty()) {
        let (id, weight) = match part.split_once('=') {
            Some((id, w)) => {
                let w: f32 = w.trim().parse().map_err(|_| {
                    Error::bad_request(
                        format!("adapter weight {w:?} in model {model:?} is not a number"),
                        Some("model"),
                    )
                })?;
                (id.trim(), w)
            }
            None => (part.trim(), 1.0),
        };
        if !registered.iter().any(|r| r.as_str() == id) {
            return Err(not_found());
        }
        out.push((id.to_owned(), weight));
    }
    Ok(out)
}

/// The model ids the server answers to: the base, then `base:adapter` for each adapter.
pub fn model_ids(engine: &Engine) -> Vec<String> {
    let base = engine.model().name.clone();
    let mut ids: Vec<String> = engine
        .generator()
        .map(|g| g.adapters().ids())
        .unwrap_or_default()
        .iter()
        .map(|a| format!("{base}:{}", a.as_str()))
        .collect();
    ids.sort();
    ids.insert(0, base);
    ids
}

/// One inline marker of the answer text and the source it points at: an OpenAI-style
/// annotation (`start_index`/`end_index` count characters of the message content).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Annotation {
    /// Always `tribute_citation`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Character index of the marker's `[`.
    pub start_index: usize,
    /// Character index just past its `]`.
    pub end_index: usize,
    /// The cited source.
    pub tribute_citation: Citation,
}

/// The annotations of `cited_text`: one per `[n]` marker whose `n` is a cited source.
pub fn annotations(cited_text: &str, citations: &[Citation]) -> Vec<Annotation> {
    let chars: Vec<char> = cited_text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '[' {
            let digits = chars[i + 1..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            let close = i + 1 + digits;
            if digits > 0 && chars.get(close) == Some(&']') {
                let n: String = chars[i + 1..close].iter().collect();
                if let Some(c) = n
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| citations.iter().find(|c| c.marker == n))
                {
                    out.push(Annotation {
                        kind: "tribute_citation",
                        start_index: i,
                        end_index: close + 1,
                        tribute_citation: c.clone(),
                    });
                }
                i = close + 1;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The id of a completion: its receipt's id when it has one.
pub fn completion_id(answer: &Answer, fallback: u64) -> String {
    match &answer.receipt {
        Some(r) => format!("chatcmpl-{}", hex_id(&r.receipt.receiptId.to_string())),
        None => format!("chatcmpl-{fallback:016x}"),
    }
}

fn hex_id(id: &str) -> &str {
    id.strip_prefix("0x").unwrap_or(id)
}

/// `stop`, or `length` when the answer used its whole token budget.
pub fn finish_reason(answer: &Answer, max_tokens: usize) -> &'static str {
    if answer.usage.answer_tokens >= max_tokens {
        "length"
    } else {
        "stop"
    }
}

/// The Tribute part of a reply: citations, the receipt and why there is none.
pub fn tribute_extension(answer: &Answer) -> Result<Value> {
    let receipt = match &answer.receipt {
        Some(r) => serde_json::from_str::<Value>(&r.to_json())
            .map_err(|e| Error::Task(format!("receipt JSON: {e}")))?,
        None => Value::Null,
    };
    Ok(json!({
        "citations": answer.citations,
        "receipt_id": answer.receipt.as_ref().map(|r| r.receipt.receiptId.to_string()),
        "receipt": receipt,
        "no_receipt": answer.no_receipt,
        "sentences": answer.sentences,
        "timings": answer.usage.timings,
        "sources_used": answer.usage.sources_used,
    }))
}

/// OpenAI's `usage` object.
pub fn usage(answer: &Answer) -> Value {
    let (p, c) = (answer.usage.prompt_tokens, answer.usage.answer_tokens);
    json!({ "prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c })
}

/// A whole (non-streamed) completion.
pub fn completion(answer: &Answer, model: &str, id: &str, finish: &str) -> Result<Value> {
    Ok(json!({
        "id": id,
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": answer.cited_text,
                "refusal": null,
                "annotations": annotations(&answer.cited_text, &answer.citations),
            },
            "logprobs": null,
            "finish_reason": finish,
        }],
        "usage": usage(answer),
        "tribute": tribute_extension(answer)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cite(marker: usize) -> Citation {
        Citation {
            marker,
            weight_bps: 5_000,
            chunk_id: format!("doc#{marker}"),
            doc_id: "doc".into(),
            title: "Doc".into(),
            contributor: "0x0000000000000000000000000000000000000001".into(),
            datanet: "d".into(),
            content_hash: "0x00".into(),
            score: 0.5,
            snippet: String::new(),
            locator: None,
        }
    }

    #[test]
    fn annotations_point_at_cited_markers_by_character() {
        let text = "Ça vole [1]. Ensuite [3] et [2][1].";
        let a = annotations(text, &[cite(1), cite(2)]);
        let spans: Vec<(usize, usize, usize)> = a
            .iter()
            .map(|a| (a.start_index, a.end_index, a.tribute_citation.marker))
            .collect();
        assert_eq!(spans, vec![(8, 11, 1), (28, 31, 2), (31, 34, 1)]);
        let chars: Vec<char> = text.chars().collect();
        for a in &a {
            let s: String = chars[a.start_index..a.end_index].iter().collect();
            assert_eq!(s, format!("[{}]", a.tribute_citation.marker));
        }
        assert!(annotations("no [x] markers [", &[cite(1)]).is_empty());
    }

    #[test]
    fn the_last_user_message_is_the_question() {
        let msg = |role: &str, content: Value| ChatMessage {
            role: role.into(),
            content,
        };
        let (q, h) = conversation(&[
            msg("system", json!("be nice")),
            msg("user", json!("first?")),
            msg("assistant", json!("an answer")),
            msg(
                "user",
                json!([{"type": "text", "text": "and "}, {"type": "text", "text": "then?"}]),
            ),
        ])
        .expect("conversation");
        assert_eq!(q, "and then?");
        assert_eq!(h, vec![Turn::user("first?"), Turn::assistant("an answer")]);
        assert!(conversation(&[msg("system", json!("x"))]).is_err());
        assert!(conversation(&[msg("user", json!("q")), msg("assistant", json!("a"))]).is_err());
        assert!(conversation(&[msg("tool", json!("x"))]).is_err());
        assert!(conversation(&[msg("user", json!([{"type": "image_url"}]))]).is_err());
    }
}
