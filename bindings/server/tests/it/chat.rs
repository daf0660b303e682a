//! `POST /v1/chat/completions`: whole and streamed answers, citations that point at real
//! chunks, receipts that verify, conversations, and a disconnect that cancels.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tribute::B256;
use tribute_server::ServerOptions;

use super::{
    ALICE, BOB, LEDGER, QUESTION, base_model, client, engine_in, get_json, metrics, post_json,
    shared_engine, start,
};

/// Checks that each annotation's character span shows its marker and its citation is one
/// of the reply's citations, pointing at a chunk of the sample datanet.
fn check_annotations(content: &str, annotations: &[Value], citations: &[Value]) {
    let chars: Vec<char> = content.chars().collect();
    for a in annotations {
        assert_eq!(a["type"], "tribute_citation");
        let (s, e) = (
            a["start_index"].as_u64().expect("start") as usize,
            a["end_index"].as_u64().expect("end") as usize,
        );
        let shown: String = chars[s..e].iter().collect();
        let c = &a["tribute_citation"];
        assert_eq!(shown, format!("[{}]", c["marker"]), "{a}");
        assert!(citations.contains(c), "{c} not among {citations:?}");
    }
    for c in citations {
        let chunk = c["chunk_id"].as_str().expect("chunk id");
        let doc = c["doc_id"].as_str().expect("doc id");
        assert!(chunk.starts_with(&format!("{doc}#")), "{c}");
        assert!(
            [ALICE, BOB].contains(&c["contributor"].as_str().expect("contributor")),
            "{c}"
        );
        assert!(c["title"].as_str().is_some_and(|t| !t.is_empty()), "{c}");
        assert!(c["datanet"].as_str().is_some_and(|d| !d.is_empty()), "{c}");
    }
    let sum: u64 = citations
        .iter()
        .filter_map(|c| c["weight_bps"].as_u64())
        .sum();
    assert_eq!(sum, 10_000, "{citations:?}");
}

/// Checks the journaled receipt `id` over HTTP and against the ledger, and that it names
/// the cited chunks with their weights.
async fn check_receipt(server: &super::Server, id: &str, citations: &[Value]) {
    let (status, r) = get_json(server, &format!("/v1/receipts/{id}")).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(r["state"]["state"], "pending", "{r}");
    let wanted: B256 = id.parse().expect("receipt id");
    let journaled = server.engine.receipts(None).expect("receipts");
    let j = journaled
        .iter()
        .find(|j| j.receipt.receipt.receiptId == wanted)
        .expect("the receipt is journaled");
    j.receipt.verify(&LEDGER).expect("the receipt verifies");
    for c in citations {
        let hash = c["content_hash"].as_str().expect("hash");
        let chunk = j
            .receipt
            .receipt
            .chunks
            .iter()
            .find(|x| x.contentHash.to_string() == hash)
            .unwrap_or_else(|| panic!("cited chunk {c} in the receipt"));
        assert_eq!(
            u64::from(chunk.weightBps),
            c["weight_bps"].as_u64().expect("w")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_carries_cited_text_annotations_and_a_verifiable_receipt() {
    let server = start(shared_engine(), ServerOptions::default()).await;
    let model = base_model(&server);
    let (status, v) = post_json(
        &server,
        "/v1/chat/completions",
        &json!({
            "model": model,
            "messages": [
                {"role": "system", "content": "You are helpful."},
                {"role": "user", "content": QUESTION},
            ],
            "max_tokens": 16,
            "top_k": 3,
        }),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    println!("{v:#}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], model);
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(["stop", "length"].contains(&choice["finish_reason"].as_str().expect("finish")));
    let content = choice["message"]["content"].as_str().expect("content");
    assert!(!content.trim().is_empty());
    let citations = v["tribute"]["citations"].as_array().expect("citations");
    assert!(!citations.is_empty(), "{v}");
    // The flight controller's rate is in zephyr-intro: it is among the cited sources.
    assert!(
        citations.iter().any(|c| c["doc_id"] == "zephyr-intro"),
        "{citations:?}"
    );
    let annotations = choice["message"]["annotations"]
        .as_array()
        .expect("annotations");
    check_annotations(content, annotations, citations);
    let usage = &v["usage"];
    assert!(
        usage["prompt_tokens"].as_u64().is_some_and(|n| n > 20),
        "{usage}"
    );
    assert!(
        usage["completion_tokens"]
            .as_u64()
            .is_some_and(|n| (1..=16).contains(&n))
    );
    let id = v["tribute"]["receipt_id"].as_str().expect("receipt id");
    assert_eq!(v["id"], format!("chatcmpl-{}", &id[2..]));
    assert_eq!(v["tribute"]["receipt"]["receiptId"], id);
    check_receipt(&server, id, citations).await;
}

/// One SSE stream's `data:` payloads, in order.
async fn sse_data(response: reqwest::Response) -> Vec<String> {
    let mut body = String::new();
    let mut bytes = response.bytes_stream();
    while let Some(chunk) = bytes.next().await {
        body.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
    }
    body.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:").map(str::trim_start))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_sends_text_then_citations_and_receipt_then_done() {
    let server = start(shared_engine(), ServerOptions::default()).await;
    let response = client()
        .post(format!("{}/v1/chat/completions", server.url))
        .json(&json!({
            "model": format!("{}:zephyr", base_model(&server)),
            "messages": [{"role": "user", "content": "How long does a full charge of the Zephyr battery take?"}],
            "max_tokens": 10,
            "stream": true,
        }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .is_ok_and(|c| c.starts_with("text/event-stream"))
    );
    let data = sse_data(response).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")))
        .collect();
    assert!(chunks.len() >= 2, "{chunks:?}");
    let (last, texts) = chunks.split_last().expect("chunks");
    assert_eq!(texts[0]["choices"][0]["delta"]["role"], "assistant");
    let mut streamed = String::new();
    for c in texts {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert!(c["choices"][0]["finish_reason"].is_null(), "{c}");
        assert!(
            c.get("tribute").is_none(),
            "citations before the text ended: {c}"
        );
        streamed.push_str(c["choices"][0]["delta"]["content"].as_str().expect("text"));
        assert_eq!(c["id"], last["id"]);
    }
    assert!(last["choices"][0]["finish_reason"].is_string(), "{last}");
    let t = &last["tribute"];
    let cited = t["cited_text"].as_str().expect("cited text");
    let citations = t["citations"].as_array().expect("citations");
    check_annotations(
        cited,
        t["annotations"].as_array().expect("annotations"),
        citations,
    );
    // The cited text is the streamed text with markers after its sentences.
    let mut unmarked = cited.to_owned();
    for c in citations {
        unmarked = unmarked.replace(&format!(" [{}]", c["marker"]), "");
    }
    assert_eq!(unmarked.trim(), streamed.trim(), "{t}");
    assert!(
        citations.iter().any(|c| c["doc_id"] == "zephyr-battery"),
        "{citations:?}"
    );
    let id = t["receipt_id"].as_str().expect("receipt id");
    check_receipt(&server, id, citations).await;
    // The receipt names the adapter.
    assert_eq!(
        t["receipt"]["adapters"].as_array().map(Vec::len),
        Some(1),
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earlier_turns_are_context_for_the_model() {
    let server = start(shared_engine(), ServerOptions::default()).await;
    let model = base_model(&server);
    let ask = |messages: Value| {
        let server = &server;
        let model = model.clone();
        async move {
            let body = json!({"model": model, "messages": messages, "max_tokens": 3, "method": "retrieval"});
            post_json(server, "/v1/chat/completions", &body).await
        }
    };
    let question =
        json!({"role": "user", "content": "And how much disk space does its installer need?"});
    let (s1, alone) = ask(json!([question])).await;
    let (s2, follow_up) = ask(json!([
        {"role": "user", "content": "What is the Zephyr SDK?"},
        {"role": "assistant", "content": "A toolkit for building weather-aware drones."},
        question,
    ]))
    .await;
    assert_eq!((s1, s2), (200, 200), "{alone} {follow_up}");
    let tokens = |v: &Value| v["usage"]["prompt_tokens"].as_u64().expect("prompt tokens");
    assert!(
        tokens(&follow_up) > tokens(&alone) + 15,
        "{alone} {follow_up}"
    );
    // Only the question's sources are cited; the receipt hashes the question alone.
    let receipt_query = |v: &Value| v["tribute"]["receipt"]["queryHash"].clone();
    assert_eq!(receipt_query(&alone), receipt_query(&follow_up));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_and_a_disconnect_cancels_the_ask() {
    // Its own engine and journal: the receipts counted below are this test's only.
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine_in(dir.path());
    let options = ServerOptions {
        max_concurrent_asks: 1,
        max_queued_asks: 0,
        retry_after_secs: 3,
        ..ServerOptions::default()
    };
    let server = start(engine, options).await;
    let model = base_model(&server);
    let body = |stream: bool| {
        json!({
            "model": model,
            "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": 200,
            "stream": stream,
        })
    };
    let url = format!("{}/v1/chat/completions", server.url);
    let running = client()
        .post(&url)
        .json(&body(true))
        .send()
        .await
        .expect("request");
    assert_eq!(running.status(), 200);
    let mut bytes = running.bytes_stream();
    let first = bytes.next().await.expect("a first event").expect("bytes");
    assert!(String::from_utf8_lossy(&first).contains("chat.completion.chunk"));

    let refused = client()
        .post(&url)
        .json(&body(false))
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "3");
    let err: Value = refused.json().await.expect("json");
    assert_eq!(err["error"]["type"], "rate_limit_error", "{err}");

    // The client goes away: the ask is cancelled, its place freed, nothing signed.
    drop(bytes);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = metrics(&server.url).await;
        if metrics.contains("tribute_asks_cancelled_total 1")
            && metrics.contains("tribute_asks_in_flight 0")
        {
            assert!(
                metrics.contains("tribute_asks_rejected_total 1"),
                "{metrics}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ask was not cancelled:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(server.engine.receipt_stats().expect("stats").receipts, 0);

    // A whole (non-streamed) ask whose client gives up is cancelled too. The client goes
    // once the server holds the ask (seconds before it could be signed on the CPU), not
    // after a fixed time that a fast ask could outrun.
    let pending = tokio::spawn({
        let (url, body) = (url.clone(), body(false));
        async move { client().post(&url).json(&body).send().await }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !metrics(&server.url)
        .await
        .contains("tribute_asks_in_flight 1")
    {
        assert!(Instant::now() < deadline, "the ask never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pending.abort();
    assert!(pending.await.is_err_and(|e| e.is_cancelled()));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = metrics(&server.url).await;
        if metrics.contains("tribute_asks_cancelled_total 2")
            && metrics.contains("tribute_asks_in_flight 0")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ask was not cancelled:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(server.engine.receipt_stats().expect("stats").receipts, 0);
    let (status, _) = get_json(&server, "/healthz").await;
    assert_eq!(status, 200);
}

/// A client that never reads its stream: the server buffers a bounded number of events for
/// it (`stream_buffer`, 2 here so that a short answer overflows it), then, once `stream_send_timeout` passes with the buffer full, cancels the ask and
/// frees its place although the client still holds the response; nothing is signed, and
/// the stream it finally reads ends without `[DONE]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_stream_is_cancelled_after_a_timeout() {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine_in(dir.path());
    let model = engine.model().name.clone();
    let timeout = Duration::from_millis(500);
    let options = ServerOptions {
        stream_send_timeout: timeout,
        stream_buffer: 2,
        max_concurrent_asks: 1,
        max_queued_asks: 0,
        ..ServerOptions::default()
    };
    // The router without a socket: the response body is polled only when this test says,
    // with no TCP buffers in between to soak the events up.
    let app = tribute_server::router(engine.clone(), options);
    let ask = |max_tokens: usize, stream: bool| {
        let body = json!({
            "model": model,
            "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": max_tokens,
            "stream": stream,
        });
        Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .expect("request")
    };
    let metrics = |app: axum::Router| async move {
        let r = app
            .oneshot(
                Request::get("/metrics")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("metrics");
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20)
            .await
            .expect("body");
        String::from_utf8_lossy(&bytes).into_owned()
    };

    let started = Instant::now();
    let unread = app.clone().oneshot(ask(24, true)).await.expect("response");
    assert_eq!(unread.status(), 200);
    let deadline = started + Duration::from_secs(120);
    loop {
        let m = metrics(app.clone()).await;
        if m.contains("tribute_asks_in_flight 0") {
            break;
        }
        assert!(Instant::now() < deadline, "the unread ask still runs:\n{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        started.elapsed() >= timeout,
        "{:?}: {}",
        started.elapsed(),
        metrics(app.clone()).await
    );
    assert_eq!(
        engine.receipt_stats().expect("stats").receipts,
        0,
        "the ask finished (its answer fit in the stream's buffer) instead of being cancelled"
    );

    // The place is free again while the first client still holds its response.
    let next = app.clone().oneshot(ask(4, false)).await.expect("response");
    assert_eq!(next.status(), 200);

    // What was buffered for the slow client: a bounded number of events, no end.
    let bytes = axum::body::to_bytes(unread.into_body(), 1 << 20)
        .await
        .expect("body");
    let text = String::from_utf8_lossy(&bytes);
    let events = text.matches("data: ").count();
    assert!((1..=3).contains(&events), "{events} events: {text}");
    assert!(!text.contains("[DONE]"), "{text}");
}
