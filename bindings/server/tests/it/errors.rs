//! Bad requests get OpenAI-shaped errors with the right status, and the server keeps
//! serving.

use serde_json::{Value, json};
use tribute_server::ServerOptions;

use super::{QUESTION, base_model, client, get_json, post_json, shared_engine, start};

fn check(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    let e = &body["error"];
    assert_eq!(e["code"], want_code, "{body}");
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(e["type"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_openai_errors_and_the_server_keeps_serving() {
    let options = ServerOptions {
        max_body_bytes: 4096,
        ..ServerOptions::default()
    };
    let server = start(shared_engine(), options).await;
    let base = base_model(&server);
    let url = format!("{}/v1/chat/completions", server.url);
    let raw = |body: &'static str, content_type: &'static str| {
        let url = url.clone();
        async move {
            let r = client()
                .post(url)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .expect("request");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.expect("json error body"))
        }
    };
    let (s, b) = raw("{\"model\": \"x\", \"messages\": [", "application/json").await;
    check(s, &b, 400, "invalid_json");
    let (s, b) = raw("{}", "text/plain").await;
    check(s, &b, 415, "unsupported_media_type");
    let (s, b) = raw("{\"model\": 3}", "application/json").await;
    check(s, &b, 422, "invalid_json");
    let big = json!({"model": base, "messages": [{"role": "user", "content": "x".repeat(5000)}]});
    let (s, b) = post_json(&server, "/v1/chat/completions", &big).await;
    check(s, &b, 413, "request_too_large");

    let chat = |model: String, messages: Value, extra: Value| {
        let server = &server;
        async move {
            let mut body = json!({"model": model, "messages": messages, "max_tokens": 2});
            if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
                b.extend(e.clone());
            }
            post_json(server, "/v1/chat/completions", &body).await
        }
    };
    let user = json!([{"role": "user", "content": QUESTION}]);
    let (s, b) = chat("gpt-4o".into(), user.clone(), json!({})).await;
    check(s, &b, 404, "model_not_found");
    assert_eq!(b["error"]["param"], "model");
    let (s, b) = chat(format!("{base}:no-such-adapter"), user.clone(), json!({})).await;
    check(s, &b, 404, "model_not_found");
    let (s, b) = chat(format!("{base}:zephyr=heavy"), user.clone(), json!({})).await;
    check(s, &b, 400, "invalid_request");
    let (s, b) = chat(
        base.clone(),
        json!([{"role": "system", "content": "hi"}]),
        json!({}),
    )
    .await;
    check(s, &b, 400, "invalid_request");
    assert_eq!(b["error"]["param"], "messages");
    let (s, b) = chat(base.clone(), user.clone(), json!({"n": 2})).await;
    check(s, &b, 400, "invalid_request");
    let (s, b) = chat(
        base.clone(),
        user.clone(),
        json!({"tools": [{"type": "function"}]}),
    )
    .await;
    check(s, &b, 400, "invalid_request");
    let (s, b) = chat(base.clone(), user.clone(), json!({"method": "vibes"})).await;
    check(s, &b, 400, "invalid_request");
    // The engine's own refusal: a top_k of zero.
    let (s, b) = chat(base.clone(), user.clone(), json!({"top_k": 0})).await;
    check(s, &b, 400, "invalid_request");
    // More answer tokens than the model's context leaves no room for the prompt.
    let (s, b) = chat(base.clone(), user.clone(), json!({"max_tokens": 1_000_000})).await;
    check(s, &b, 400, "invalid_request");
    assert_eq!(b["error"]["param"], "max_tokens");
    // More chunks than the server's bound.
    let (s, b) = chat(base.clone(), user.clone(), json!({"top_k": 10_000})).await;
    check(s, &b, 400, "invalid_request");
    assert_eq!(b["error"]["param"], "top_k");
    let (s, b) = post_json(
        &server,
        "/v1/retrieve",
        &json!({"query": "q", "top_k": 10_000}),
    )
    .await;
    check(s, &b, 400, "invalid_request");
    assert_eq!(b["error"]["param"], "top_k");
    // OpenAI parameters that would change the answer are refused, each by name.
    for (param, value) in [
        ("stop", json!(["\n"])),
        ("logit_bias", json!({"50256": -100})),
        ("presence_penalty", json!(0.5)),
        ("frequency_penalty", json!(1)),
        ("logprobs", json!(true)),
        ("response_format", json!({"type": "json_object"})),
        ("modalities", json!(["text", "audio"])),
    ] {
        let mut extra = json!({});
        extra[param] = value;
        let (s, b) = chat(base.clone(), user.clone(), extra).await;
        check(s, &b, 400, "invalid_request");
        assert_eq!(b["error"]["param"], param, "{b}");
    }
    let (s, b) = chat(
        base.clone(),
        user.clone(),
        json!({"stream": true, "top_k": 0}),
    )
    .await;
    check(s, &b, 400, "invalid_request");

    let (s, b) = post_json(&server, "/v1/retrieve", &json!({"query": "  "})).await;
    check(s, &b, 400, "invalid_request");
    let (s, b) = post_json(&server, "/v1/embeddings", &json!({"input": []})).await;
    check(s, &b, 400, "invalid_request");
    let (s, b) = post_json(
        &server,
        "/v1/embeddings",
        &json!({"input": "x", "dimensions": 3}),
    )
    .await;
    check(s, &b, 400, "invalid_request");
    assert_eq!(b["error"]["param"], "dimensions");
    let (s, b) = post_json(
        &server,
        "/v1/embeddings",
        &json!({"input": "x", "encoding_format": "int8"}),
    )
    .await;
    check(s, &b, 400, "invalid_request");
    let (s, b) = get_json(&server, "/v1/receipts/0x1234").await;
    check(s, &b, 400, "invalid_request");
    let missing = format!("/v1/receipts/0x{}", "ab".repeat(32));
    let (s, b) = get_json(&server, &missing).await;
    check(s, &b, 404, "not_found");
    let (s, b) = get_json(&server, "/v1/receipts?state=paid").await;
    check(s, &b, 400, "invalid_request");
    let (s, b) = get_json(&server, "/v1/nothing-here").await;
    check(s, &b, 404, "not_found");

    let (s, health) = get_json(&server, "/healthz").await;
    assert_eq!(s, 200, "{health}");
}
