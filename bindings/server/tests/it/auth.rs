//! API keys: 401 without a valid key, 403 outside a key's scope, asks and retrieval read
//! only a key's datanets, an open server only on loopback, and keys never in the logs or
//! error bodies.

use std::sync::{Arc, Mutex};

use reqwest::Method;
use serde_json::{Value, json};
use tribute_server::{ApiKey, ApiKeys, Error, KeyEntry, ServerOptions};

use super::{Server, base_model, client, engine_in, shared_engine, start};

/// Everything the server, tower-http and axum log, at every level, from the first call on.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    super::capture::capture().logs.clone()
}

fn entry(name: &str, key: &ApiKey, datanets: &[&str], ingest: bool, receipts: bool) -> KeyEntry {
    KeyEntry {
        name: name.into(),
        sha256: key.sha256(),
        datanets: datanets.iter().map(|d| (*d).to_owned()).collect(),
        ingest,
        settle: false,
        receipts,
    }
}

/// Sends a request with `Authorization: Bearer KEY` (a raw header value when `key` starts
/// with `raw:`); returns the status, the body as JSON and the `WWW-Authenticate` header.
async fn call(
    server: &Server,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, Option<String>) {
    let mut request = client().request(method, format!("{}{path}", server.url));
    if let Some(key) = key {
        let value = match key.strip_prefix("raw:") {
            Some(raw) => raw.to_owned(),
            None => format!("Bearer {key}"),
        };
        request = request.header("authorization", value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.expect("request");
    let status = r.status().as_u16();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = r.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, json, challenge)
}

fn refused(got: (u16, Value, Option<String>), status: u16, code: &str) -> Value {
    let (s, body, _) = got;
    assert_eq!(s, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    body
}

/// Answered by Bob's pilot notes (and, less well, by Alice's docs).
const GUSTS: &str = "How strong can gusts be before Zephyr pilots should land?";

/// `POST /v1/retrieve` for [`GUSTS`] with `key`, and `extra` fields.
async fn retrieve(server: &Server, key: &ApiKey, extra: Value) -> (u16, Value, Option<String>) {
    let mut body = json!({"query": GUSTS, "top_k": 4});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    call(
        server,
        Method::POST,
        "/v1/retrieve",
        Some(key.reveal()),
        Some(body),
    )
    .await
}

fn cited_datanets(v: &Value) -> Vec<String> {
    v["citations"]
        .as_array()
        .expect("citations")
        .iter()
        .filter_map(|c| c["datanet"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_gate_every_route_by_scope_and_never_show_up() {
    let logs = captured_logs();
    let reader = ApiKey::generate().expect("key");
    let admin = ApiKey::generate().expect("key");
    let writer = ApiKey::generate().expect("key");
    let keys = ApiKeys::from_entries(&[
        entry("reader", &reader, &["zephyr-docs"], false, false),
        entry("admin", &admin, &[], false, true),
        entry("writer", &writer, &["zephyr-docs"], true, false),
    ])
    .expect("keys");
    // Its own knowledge base: documents are added below.
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ServerOptions {
        keys,
        ..ServerOptions::default()
    };
    let server = start(engine_in(dir.path()), options).await;
    let wrong = "tk-0123456789abcdef-not-a-key-of-this-server";

    // Open: the console and the health check.
    let (s, _, _) = call(&server, Method::GET, "/healthz", None, None).await;
    assert_eq!(s, 200);
    let page = client().get(&server.url).send().await.expect("console");
    assert_eq!(page.status(), 200);

    // No key, a wrong key, a malformed header: 401 with a Bearer challenge.
    for key in [None, Some(wrong), Some("raw:Basic dXNlcjpwYXNz"), Some("")] {
        let got = call(&server, Method::GET, "/v1/models", key, None).await;
        assert_eq!(got.2.as_deref(), Some("Bearer"), "{got:?}");
        let body = refused(got, 401, "invalid_api_key");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(!body.to_string().contains(wrong), "{body}");
    }
    // Refused before the body is read: a bad body still gets 401.
    let got = call(
        &server,
        Method::POST,
        "/v1/chat/completions",
        None,
        Some(json!({"nonsense": true})),
    )
    .await;
    refused(got, 401, "invalid_api_key");

    // The reader: models, and retrieval from its datanet only.
    let (s, _, _) = call(
        &server,
        Method::GET,
        "/v1/models",
        Some(reader.reveal()),
        None,
    )
    .await;
    assert_eq!(s, 200);
    // Bob's pilot notes answer it: every datanet for the admin …
    let (s, all, _) = retrieve(&server, &admin, json!({})).await;
    assert_eq!(s, 200, "{all}");
    assert!(
        cited_datanets(&all).iter().any(|d| d == "pilot-notes"),
        "{all}"
    );
    // … Alice's docs only for the reader, asked for or not.
    let (s, mine, _) = retrieve(&server, &reader, json!({})).await;
    assert_eq!(s, 200, "{mine}");
    let datanets = cited_datanets(&mine);
    assert!(
        !datanets.is_empty() && datanets.iter().all(|d| d == "zephyr-docs"),
        "{mine}"
    );
    let (s, empty_list, _) = retrieve(&server, &reader, json!({"datanets": []})).await;
    assert_eq!(s, 200);
    assert!(
        cited_datanets(&empty_list)
            .iter()
            .all(|d| d == "zephyr-docs")
    );
    let body = refused(
        retrieve(&server, &reader, json!({"datanets": ["pilot-notes"]})).await,
        403,
        "insufficient_scope",
    );
    assert_eq!(body["error"]["param"], "datanets");
    assert_eq!(body["error"]["type"], "permission_error");
    let one_receipt = format!("/v1/receipts/0x{}", "ab".repeat(32));
    for path in ["/v1/receipts", "/metrics", one_receipt.as_str()] {
        let got = call(&server, Method::GET, path, Some(reader.reveal()), None).await;
        refused(got, 403, "insufficient_scope");
    }
    let got = call(
        &server,
        Method::POST,
        "/v1/receipts/settle",
        Some(admin.reveal()),
        None,
    )
    .await;
    refused(got, 403, "insufficient_scope");

    // An ask with the reader's key cites its datanet only; harmless OpenAI parameters are
    // ignored; a datanet outside its scope is refused before anything runs.
    let model = base_model(&server);
    let ask = json!({
        "model": model,
        "messages": [{"role": "user", "content": GUSTS}],
        "max_tokens": 2, "method": "retrieval",
        "top_p": 1.0, "user": "u-1", "stop": null, "presence_penalty": 0,
        "stream_options": {"include_usage": true},
    });
    let (s, answer, _) = call(
        &server,
        Method::POST,
        "/v1/chat/completions",
        Some(reader.reveal()),
        Some(ask.clone()),
    )
    .await;
    assert_eq!(s, 200, "{answer}");
    let datanets = cited_datanets(&answer["tribute"]);
    assert!(
        !datanets.is_empty() && datanets.iter().all(|d| d == "zephyr-docs"),
        "{answer}"
    );
    let mut outside = ask.clone();
    outside["datanets"] = json!(["pilot-notes"]);
    let got = call(
        &server,
        Method::POST,
        "/v1/chat/completions",
        Some(reader.reveal()),
        Some(outside),
    )
    .await;
    refused(got, 403, "insufficient_scope");

    // The admin sees the receipts, the reader's among them.
    let id = answer["tribute"]["receipt_id"].as_str().expect("receipt");
    let (s, r, _) = call(
        &server,
        Method::GET,
        &format!("/v1/receipts/{id}"),
        Some(admin.reveal()),
        None,
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["verified"], true);

    // Ingest: the writer adds to its own datanet only; the reader may not add at all.
    let doc = |datanet: &str| {
        json!({"documents": [{"id": "zephyr-wind", "title": "Wind", "datanet": datanet,
            "text": "The Zephyr anemometer samples the wind two hundred times per second.",
            "contributor": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"}]})
    };
    let got = call(
        &server,
        Method::POST,
        "/v1/documents",
        Some(reader.reveal()),
        Some(doc("zephyr-docs")),
    )
    .await;
    refused(got, 403, "insufficient_scope");
    let got = call(
        &server,
        Method::POST,
        "/v1/documents",
        Some(writer.reveal()),
        Some(doc("pilot-notes")),
    )
    .await;
    refused(got, 403, "insufficient_scope");
    let (s, added, _) = call(
        &server,
        Method::POST,
        "/v1/documents",
        Some(writer.reveal()),
        Some(doc("zephyr-docs")),
    )
    .await;
    assert_eq!(s, 200, "{added}");
    assert_eq!(added["added"], 1, "{added}");
    assert_eq!(server.engine.index_size().expect("size").documents, 6);

    // The keys are nowhere in what the server logged (which did log these requests).
    let logged = String::from_utf8_lossy(&logs.lock().expect("logs")).into_owned();
    assert!(logged.contains("authenticated"), "nothing captured");
    for key in [reader.reveal(), admin.reveal(), writer.reveal(), wrong] {
        assert!(!logged.contains(key), "a key was logged");
    }
    assert!(!format!("{:?}", server.engine.config()).contains(reader.reveal()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_server_refuses_a_public_address() {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind 0.0.0.0:0");
    let err = tribute_server::serve(
        listener,
        shared_engine(),
        ServerOptions::default(),
        std::future::pending(),
    )
    .await
    .expect_err("an open server on 0.0.0.0");
    assert!(matches!(err, Error::OpenOnPublicAddress(_)), "{err}");
    assert!(err.to_string().contains("API keys"), "{err}");
    // Allowed explicitly, it serves (and stops when told).
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind 0.0.0.0:0");
    let options = ServerOptions {
        allow_open: true,
        ..ServerOptions::default()
    };
    tribute_server::serve(listener, shared_engine(), options, async {})
        .await
        .expect("an explicitly open server");
}
