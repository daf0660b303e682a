//! Tracing: a chat completion, whole or streamed, records an `http_request` span, an `ask`
//! span inside it and one span per stage inside that — retrieve, prompt, prefill, decode,
//! attribute, sign — in that order in time; with feature `otel` the same tree is exported
//! through OpenTelemetry (one trace, the same parents).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tribute_server::ServerOptions;

use super::capture::{SpanRecord, capture, lock};
use super::{QUESTION, base_model, client, shared_engine, start};

const STAGES: [&str; 6] = [
    "retrieve",
    "prompt",
    "prefill",
    "decode",
    "attribute",
    "sign",
];

/// The `ask` span of the request sent with `X-Request-Id: request_id`, and its children by
/// name, once every one of them has closed.
async fn ask_spans(request_id: &str) -> (SpanRecord, Vec<SpanRecord>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = {
            let spans = lock(&capture().spans);
            let request = spans.iter().position(|s| {
                s.name == "http_request" && s.field("http.request_id") == Some(request_id)
            });
            request.and_then(|r| {
                let ask = spans
                    .iter()
                    .position(|s| s.name == "ask" && s.parent == Some(r))?;
                let children: Vec<SpanRecord> = spans
                    .iter()
                    .filter(|s| s.parent == Some(ask))
                    .cloned()
                    .collect();
                let done =
                    spans[ask].closed.is_some() && children.iter().all(|c| c.closed.is_some());
                done.then(|| (spans[ask].clone(), children))
            })
        };
        if let Some(found) = found {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no closed ask span under the request {request_id}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Each stage once, in order: each starts after the one before it ended.
fn check_stages(ask: &SpanRecord, children: &[SpanRecord]) {
    let names: Vec<&str> = children.iter().map(|c| c.name).collect();
    assert_eq!(names, STAGES, "the ask's child spans");
    for pair in children.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            a.closed.expect("closed") <= b.opened,
            "{} ended after {} started",
            a.name,
            b.name
        );
    }
    assert!(ask.opened <= children[0].opened);
    assert!(children[5].closed <= ask.closed);
    let decode = &children[3];
    let tokens: usize = decode
        .field("tokens")
        .and_then(|t| t.parse().ok())
        .expect("decode records its tokens");
    assert!(tokens >= 2, "{decode:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chat_completion_records_a_span_per_stage() {
    capture();
    let server = start(shared_engine(), ServerOptions::default()).await;
    let model = base_model(&server);
    let body = |stream: bool| {
        json!({"model": model, "messages": [{"role": "user", "content": QUESTION}],
               "max_tokens": 8, "stream": stream})
    };
    let url = format!("{}/v1/chat/completions", server.url);

    let r = client()
        .post(&url)
        .header("x-request-id", "spans-whole")
        .json(&body(false))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert!(v["usage"]["completion_tokens"].as_u64() >= Some(2), "{v}");
    let (ask, children) = ask_spans("spans-whole").await;
    check_stages(&ask, &children);

    let r = client()
        .post(&url)
        .header("x-request-id", "spans-stream")
        .json(&body(true))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("stream");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let (ask, children) = ask_spans("spans-stream").await;
    check_stages(&ask, &children);

    {
        let spans = lock(&capture().spans);
        let request = spans
            .iter()
            .find(|s| s.field("http.request_id") == Some("spans-whole"))
            .expect("request span");
        assert_eq!(request.field("http.route"), Some("/v1/chat/completions"));
        assert_eq!(request.field("http.response.status_code"), Some("200"));
    }

    #[cfg(feature = "otel")]
    exported_as_one_trace("spans-whole");
}

/// The OpenTelemetry spans of the request: one trace, the ask under the request, the
/// stages under the ask.
#[cfg(feature = "otel")]
fn exported_as_one_trace(request_id: &str) {
    use opentelemetry::Value as OtelValue;

    let exported = lock(&capture().exported);
    let request = exported
        .iter()
        .find(|s| {
            s.attributes.iter().any(|kv| {
                kv.key.as_str() == "http.request_id"
                    && kv.value == OtelValue::from(request_id.to_owned())
            })
        })
        .expect("the request's span was exported");
    assert_eq!(request.name, "POST /v1/chat/completions");
    let trace = request.span_context.trace_id();
    let ask = exported
        .iter()
        .find(|s| s.name == "ask" && s.parent_span_id == request.span_context.span_id())
        .expect("the ask span under the request");
    let mut stages: Vec<&opentelemetry_sdk::trace::SpanData> = exported
        .iter()
        .filter(|s| s.parent_span_id == ask.span_context.span_id())
        .collect();
    stages.sort_by_key(|s| s.start_time);
    let names: Vec<&str> = stages.iter().map(|s| s.name.as_ref()).collect();
    assert_eq!(names, STAGES);
    for s in std::iter::once(ask).chain(stages) {
        assert_eq!(s.span_context.trace_id(), trace, "{}", s.name);
        assert!(s.end_time >= s.start_time, "{}", s.name);
    }
}
