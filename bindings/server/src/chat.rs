//! `POST /v1/chat/completions`: one ask per request, whole or streamed as server-sent
//! events (text deltas, then one event with the citations and receipt, then `[DONE]`).

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use futures_util::stream;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tribute::{Answer, AskEvent, CancelToken};

use crate::auth::Scope;
use crate::error::{Error, Result};
use crate::extract::ApiJson;
use crate::openai::{self, ChatAsk, ChatRequest};
use crate::{AppState, CancelOnDrop};

/// The handler: the ask reads only the datanets the caller's key may read.
pub(crate) async fn completions(
    State(state): State<AppState>,
    Extension(scope): Extension<Arc<Scope>>,
    ApiJson(request): ApiJson<ChatRequest>,
) -> Result<Response> {
    let mut ask = request.to_ask(&state.engine)?;
    state.check_top_k(ask.options.top_k)?;
    state.check_max_tokens(ask.options.max_tokens)?;
    ask.options.datanets = scope.datanets(
        ask.options.datanets.take(),
        &state.engine.config().retrieval.datanets,
    )?;
    let permit = state.admit().await?;
    let max_tokens = ask
        .options
        .max_tokens
        .unwrap_or(state.engine.config().generation.max_tokens);
    let token = CancelToken::new();
    ask.options.cancel = Some(token.clone());
    let guard = CancelOnDrop::new(token, state.clone());
    if request.stream {
        stream_answer(state, request.model, ask, permit, guard, max_tokens).await
    } else {
        whole_answer(state, request.model, ask, permit, guard, max_tokens).await
    }
}

async fn whole_answer(
    state: AppState,
    model: String,
    ask: ChatAsk,
    permit: OwnedSemaphorePermit,
    mut guard: CancelOnDrop,
    max_tokens: usize,
) -> Result<Response> {
    let engine = state.engine.clone();
    let span = tracing::Span::current();
    let answer = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let _span = span.enter();
        engine
            .ask(ask.question)
            .history(ask.history)
            .options(ask.options)
            .run()
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))??;
    guard.disarm();
    state.metrics.answer(&answer);
    let id = openai::completion_id(&answer, state.next_id());
    let finish = openai::finish_reason(&answer, max_tokens);
    Ok(axum::Json(openai::completion(&answer, &model, &id, finish)?).into_response())
}

async fn stream_answer(
    state: AppState,
    model: String,
    ask: ChatAsk,
    permit: OwnedSemaphorePermit,
    guard: CancelOnDrop,
    max_tokens: usize,
) -> Result<Response> {
    // Retrieval, the prompt and queueing for the generator happen before the response
    // starts, so their errors (a bad request, an unknown adapter, overload) keep their status.
    let engine = state.engine.clone();
    let token = ask.options.cancel.clone();
    let span = tracing::Span::current();
    let events = tokio::task::spawn_blocking(move || {
        let _span = span.enter();
        engine
            .ask(ask.question)
            .history(ask.history)
            .options(ask.options)
            .stream()
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))??;

    let (tx, rx) = mpsc::channel(state.options.stream_buffer.max(1));
    let runtime = tokio::runtime::Handle::current();
    let send_timeout = state.options.stream_send_timeout;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        for event in events {
            let last = !matches!(event, Ok(AskEvent::Text(_)));
            // A client that went away (receiver dropped) or stopped reading for
            // `send_timeout` cancels the generation.
            if runtime
                .block_on(tx.send_timeout(event, send_timeout))
                .is_err()
            {
                if let Some(t) = &token {
                    t.cancel();
                }
                break;
            }
            if last {
                break;
            }
        }
    });

    let id = format!("chatcmpl-{:016x}", state.next_id());
    let sse = SseState {
        rx,
        guard: Some(guard),
        state,
        model,
        id,
        created: openai::now_secs(),
        max_tokens,
        started: false,
        finished: false,
    };
    let events = stream::unfold(sse, |mut s| async move {
        let batch = s.next_events().await?;
        Some((
            stream::iter(batch.into_iter().map(Ok::<Event, Infallible>)),
            s,
        ))
    })
    .flatten();
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Turns the ask's events into OpenAI chunks.
struct SseState {
    rx: mpsc::Receiver<tribute::Result<AskEvent>>,
    /// Dropped with the stream when the client goes away: cancels the ask.
    guard: Option<CancelOnDrop>,
    state: AppState,
    model: String,
    id: String,
    created: u64,
    max_tokens: usize,
    started: bool,
    finished: bool,
}

impl SseState {
    /// The next events to send; `None` once the stream is over.
    async fn next_events(&mut self) -> Option<Vec<Event>> {
        if self.finished {
            return None;
        }
        match self.rx.recv().await {
            Some(Ok(AskEvent::Text(piece))) => {
                let mut delta = json!({ "content": piece });
                if !self.started {
                    delta["role"] = json!("assistant");
                    self.started = true;
                }
                Some(vec![self.chunk(delta, Value::Null, None)])
            }
            Some(Ok(AskEvent::Done(answer))) => {
                self.finished = true;
                if let Some(mut g) = self.guard.take() {
                    g.disarm();
                }
                self.state.metrics.answer(&answer);
                Some(match self.final_chunk(&answer) {
                    Ok(chunk) => vec![chunk, Event::default().data("[DONE]")],
                    Err(e) => vec![error_event(&e)],
                })
            }
            Some(Err(e)) => {
                self.finished = true;
                Some(vec![error_event(&Error::from(e))])
            }
            // The generation ended without an answer (it was cancelled).
            None => None,
        }
    }

    fn chunk(&self, delta: Value, finish: Value, extra: Option<(Value, Value)>) -> Event {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
        });
        if let Some((usage, tribute)) = extra {
            chunk["usage"] = usage;
            chunk["tribute"] = tribute;
        }
        Event::default().data(chunk.to_string())
    }

    /// The last chunk: the finish reason, usage, and the Tribute part with the answer
    /// text with markers, its annotations, the citations and the receipt.
    fn final_chunk(&self, answer: &Answer) -> Result<Event> {
        let mut tribute = openai::tribute_extension(answer)?;
        tribute["cited_text"] = json!(answer.cited_text);
        tribute["annotations"] = json!(openai::annotations(&answer.cited_text, &answer.citations));
        let finish = openai::finish_reason(answer, self.max_tokens);
        Ok(self.chunk(
            json!({}),
            json!(finish),
            Some((openai::usage(answer), tribute)),
        ))
    }
}

/// An error after the stream started: an OpenAI error object as the last event.
fn error_event(e: &Error) -> Event {
    Event::default().data(e.body().to_string())
}
