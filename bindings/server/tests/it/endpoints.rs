//! Models, embeddings, retrieval, receipts, health and metrics.

use serde_json::json;
use tribute_server::ServerOptions;

use super::{ALICE, LEDGER, base_model, client, get_json, post_json, shared_engine, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_embeddings_retrieval_receipts_health_and_metrics() {
    let server = start(shared_engine(), ServerOptions::default()).await;
    let base = base_model(&server);

    let (status, models) = get_json(&server, "/v1/models").await;
    assert_eq!(status, 200, "{models}");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, vec![base.clone(), format!("{base}:zephyr")]);

    // Embeddings are the knowledge base's: unit vectors, the query's nearest the chunk
    // retrieval ranks first.
    let (status, e) = post_json(
        &server,
        "/v1/embeddings",
        &json!({"input": ["how long does a full charge take?", "license fee"]}),
    )
    .await;
    assert_eq!(status, 200, "{e}");
    let vectors: Vec<Vec<f64>> = e["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .expect("vector")
                .iter()
                .filter_map(|x| x.as_f64())
                .collect()
        })
        .collect();
    assert_eq!(vectors.len(), 2);
    assert_eq!(vectors[0].len(), 384);
    let norm: f64 = vectors[0].iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "{norm}");
    assert_eq!(
        e["model"],
        server.engine.embedder_model().expect("embedder")
    );
    // Usage counts the word pieces the embedder reads: "how long does a full charge take ?"
    // is 8, "license fee" 2 (all-MiniLM-L6-v2's uncased vocabulary, special tokens not
    // counted).
    assert_eq!(e["usage"]["prompt_tokens"], 10, "{}", e["usage"]);
    assert_eq!(e["usage"]["total_tokens"], 10);

    let (status, r) = post_json(
        &server,
        "/v1/retrieve",
        &json!({"query": "how long does a full charge take?", "top_k": 3}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["hits"][0]["doc_id"], "zephyr-battery", "{r}");
    assert_eq!(r["citations"][0]["contributor"], ALICE);
    let sum: u64 = r["citations"]
        .as_array()
        .expect("citations")
        .iter()
        .filter_map(|c| c["weight_bps"].as_u64())
        .sum();
    assert_eq!(sum, 10_000);
    let id = r["receipt_id"].as_str().expect("retrieval receipt");
    // A retrieval receipt names no model.
    assert_eq!(
        r["receipt"]["modelId"],
        "0x0000000000000000000000000000000000000000000000000000000000000000"
    );

    let (status, list) = get_json(&server, "/v1/receipts?state=pending&limit=500").await;
    assert_eq!(status, 200, "{list}");
    let listed = list["data"].as_array().expect("data");
    let found = listed.iter().find(|x| x["id"] == id).expect("listed");
    assert_eq!(found["verified"], true);
    assert!(list["stats"]["pending"].as_u64().is_some_and(|n| n >= 1));
    let (status, one) = get_json(&server, &format!("/v1/receipts/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(one["receipt"]["receiptId"], id);
    let journaled = server.engine.receipts(None).expect("receipts");
    let j = journaled
        .iter()
        .find(|j| j.receipt.receipt.receiptId.to_string() == id)
        .expect("journaled");
    j.receipt.verify(&LEDGER).expect("verifies");

    let (status, health) = get_json(&server, "/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["documents"], 5);
    assert_eq!(health["receipts"], true);

    // The console: one page, no external assets.
    let page = client().get(&server.url).send().await.expect("console");
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .is_ok_and(|c| c.starts_with("text/html"))
    );
    let html = page.text().await.expect("html");
    assert!(html.contains("Tribute console") && html.contains("/v1/chat/completions"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "external asset"
    );

    let metrics = client()
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .expect("metrics");
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .is_ok_and(|c| c.starts_with("text/plain"))
    );
    let text = metrics.text().await.expect("text");
    for line in [
        "tribute_http_requests_total{route=\"/v1/retrieve\",status=\"200\"} 1",
        "tribute_http_request_duration_seconds_count{route=\"/v1/embeddings\"} 1",
        "tribute_adapters_registered 1",
        "# TYPE tribute_ask_stage_seconds histogram",
        "tribute_receipts{state=\"pending\"}",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}
