//! `tribute mcp`: a real MCP session over stdio, driven by rmcp's own client.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

/// Anvil's first dev account: a public test key, never a real one.
const ANVIL_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const ANVIL_ADDRESS: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

/// Generous: an ask runs the model (generation plus attribution passes) on a slow CI CPU.
const CALL_TIMEOUT: Duration = Duration::from_secs(600);

type Client = RunningService<RoleClient, ()>;

/// The server's stderr so far (drained continuously so the child never blocks on it).
#[derive(Clone, Default)]
struct Stderr(Arc<Mutex<Vec<u8>>>);

impl Stderr {
    fn text(&self) -> String {
        let buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&buf).into_owned()
    }
}

async fn call(client: &Client, stderr: &Stderr, tool: &str, args: Value) -> CallToolResult {
    let Value::Object(args) = args else {
        panic!("tool arguments must be an object");
    };
    let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(args);
    match tokio::time::timeout(CALL_TIMEOUT, client.call_tool(params)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => panic!(
            "tools/call {tool} failed: {e}\nserver stderr:\n{}",
            stderr.text()
        ),
        Err(_) => panic!(
            "tools/call {tool} timed out\nserver stderr:\n{}",
            stderr.text()
        ),
    }
}

/// The text of content item `i`.
fn text(r: &CallToolResult, i: usize) -> &str {
    r.content
        .get(i)
        .and_then(|c| c.as_text())
        .map(|t| t.text.as_str())
        .unwrap_or_else(|| panic!("content item {i} is not text: {r:?}"))
}

/// The JSON of content item `i`, which must be the result's structured content (the MCP
/// python client test in bindings/python/tests/test_mcp.py validates it against the schema).
fn json_at(r: &CallToolResult, i: usize) -> Value {
    let v = serde_json::from_str(text(r, i))
        .unwrap_or_else(|e| panic!("item {i} is not JSON ({e}): {r:?}"));
    assert_eq!(r.structured_content.as_ref(), Some(&v), "{r:?}");
    v
}

async fn tool_names(client: &Client, stderr: &Stderr) -> Vec<String> {
    let tools = tokio::time::timeout(CALL_TIMEOUT, client.list_all_tools())
        .await
        .expect("tools/list timed out")
        .unwrap_or_else(|e| panic!("tools/list failed: {e}\nserver stderr:\n{}", stderr.text()));
    tools.iter().map(|t| t.name.to_string()).collect()
}

#[tokio::test]
async fn mcp_server_search_ask_receipts_over_stdio() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kb = dir.path().join("kb");
    super::ingest_sample(&kb);
    let config = dir.path().join("tribute.toml");
    // Relative paths resolve against the config file's directory.
    std::fs::write(
        &config,
        r#"index = "kb"

[receipts]
journal = "receipts"
key_env = "TRIBUTE_KEY"
ledger = { chainId = 31337, contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3" }
"#,
    )
    .expect("write config");

    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tribute"));
    cmd.arg("mcp")
        .arg("--config")
        .arg(&config)
        .env("TRIBUTE_KEY", ANVIL_KEY);
    let (transport, child_stderr) = TokioChildProcess::builder(cmd)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tribute mcp");
    let stderr = Stderr::default();
    if let Some(mut child_stderr) = child_stderr {
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = child_stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.0
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
    }

    // initialize → notifications/initialized.
    let client = match tokio::time::timeout(CALL_TIMEOUT, ().serve(transport)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!(
            "tribute mcp did not initialize ({e}); are the models installed (make setup)?\n\
             server stderr:\n{}",
            stderr.text()
        ),
        Err(_) => panic!("initialize timed out\nserver stderr:\n{}", stderr.text()),
    };
    let info = client.peer_info().expect("the server sent its info");
    let server = info.server_info.as_ref().expect("serverInfo");
    assert_eq!(server.name, "tribute");
    assert_eq!(server.version, env!("CARGO_PKG_VERSION"));
    let instructions = info.instructions.as_deref().unwrap_or_default();
    for tool in ["search", "ask", "receipts"] {
        assert!(instructions.contains(tool), "{instructions}");
    }
    assert!(info.capabilities.tools.is_some());

    // tools/list: the three tools, with descriptions and object input schemas.
    let tools = tokio::time::timeout(CALL_TIMEOUT, client.list_all_tools())
        .await
        .expect("tools/list timed out")
        .expect("tools/list");
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort_unstable();
    assert_eq!(names, ["ask", "receipts", "search"]);
    for t in &tools {
        assert!(
            t.description.as_deref().is_some_and(|d| d.len() > 40),
            "{t:?}"
        );
        assert_eq!(t.input_schema.get("type"), Some(&json!("object")), "{t:?}");
        let output = t.output_schema.as_ref().expect("an output schema");
        assert_eq!(output.get("type"), Some(&json!("object")), "{t:?}");
    }
    let schema = |name: &str| -> Value {
        let t = tools.iter().find(|t| t.name == name).expect("tool");
        Value::Object((*t.input_schema).clone())
    };
    let search_schema = schema("search");
    assert_eq!(
        search_schema["required"],
        json!(["query"]),
        "{search_schema}"
    );
    assert_eq!(
        search_schema["properties"]["k"]["default"], 5,
        "{search_schema}"
    );
    assert_eq!(
        search_schema["properties"]["k"]["maximum"], 50,
        "{search_schema}"
    );
    assert!(
        search_schema["properties"]["query"]["description"].is_string(),
        "{search_schema}"
    );
    let ask_schema = schema("ask");
    assert_eq!(ask_schema["required"], json!(["question"]), "{ask_schema}");
    for p in ["top_k", "adapters", "method", "max_tokens"] {
        assert!(ask_schema["properties"][p].is_object(), "{p}: {ask_schema}");
    }
    let receipts_schema = schema("receipts");
    assert!(
        receipts_schema.get("required").is_none() || receipts_schema["required"] == json!([]),
        "{receipts_schema}"
    );

    // search: attributed hits and a journaled retrieval receipt.
    let r = call(
        &client,
        &stderr,
        "search",
        json!({"query": "How should Zephyr drone batteries be stored?", "k": 3}),
    )
    .await;
    assert_ne!(r.is_error, Some(true), "{r:?}");
    let v = json_at(&r, 0);
    let hits = v["hits"].as_array().expect("hits");
    assert!(!hits.is_empty() && hits.len() <= 3, "{v}");
    assert_eq!(hits[0]["doc_id"], "zephyr-battery", "{v}");
    for key in [
        "chunk_id",
        "title",
        "text",
        "score",
        "contributor",
        "datanet",
    ] {
        assert!(!hits[0][key].is_null(), "hit without {key}: {v}");
    }
    assert_eq!(
        v["citations"]
            .as_array()
            .expect("citations")
            .iter()
            .map(|c| c["weight_bps"].as_u64().unwrap_or(0))
            .sum::<u64>(),
        10_000,
        "{v}"
    );
    assert_eq!(v["receipt"]["payer"], ANVIL_ADDRESS, "{v}");
    assert!(v["no_receipt"].is_null(), "{v}");

    // ask: a generated, cited answer with its receipt.
    let r = call(
        &client,
        &stderr,
        "ask",
        json!({
            "question": "How much does a commercial Zephyr fleet license cost?",
            "top_k": 3,
            "max_tokens": 32
        }),
    )
    .await;
    assert_ne!(r.is_error, Some(true), "{r:?}");
    let summary = text(&r, 0).to_owned();
    let a = json_at(&r, 1);
    let answer = a["text"].as_str().expect("text");
    assert!(answer.contains("900"), "{a}");
    assert_eq!(a["citations"][0]["doc_id"], "zephyr-pricing", "{a}");
    assert!(
        summary.contains("900") && summary.contains("Sources:"),
        "{summary}"
    );
    assert_eq!(a["receipt"]["payer"], ANVIL_ADDRESS, "{a}");

    // receipts: both uses journaled, pending.
    let r = call(&client, &stderr, "receipts", json!({})).await;
    assert_ne!(r.is_error, Some(true), "{r:?}");
    let v = json_at(&r, 0);
    let receipts = v["receipts"].as_array().expect("receipts");
    assert!(receipts.len() >= 2, "{v}");
    for entry in receipts {
        assert_eq!(entry["state"]["state"], "pending", "{v}");
        assert_eq!(entry["receipt"]["payer"], ANVIL_ADDRESS, "{v}");
    }
    assert!(
        v["stats"]["pending"].as_u64().is_some_and(|n| n >= 2),
        "{v}"
    );
    let r = call(
        &client,
        &stderr,
        "receipts",
        json!({"state": "confirmed", "limit": 5}),
    )
    .await;
    assert_eq!(json_at(&r, 0)["receipts"], json!([]), "{r:?}");

    // Bad requests are tool errors with the engine's (or the server's) message…
    let r = call(&client, &stderr, "ask", json!({"question": "  "})).await;
    assert_eq!(r.is_error, Some(true), "{r:?}");
    assert!(text(&r, 0).contains("question is empty"), "{r:?}");
    let r = call(
        &client,
        &stderr,
        "search",
        json!({"query": "battery", "k": 0}),
    )
    .await;
    assert_eq!(r.is_error, Some(true), "{r:?}");
    assert!(text(&r, 0).contains("k must be between 1 and 50"), "{r:?}");
    // …and arguments that do not fit the schema a protocol error; neither stops the server.
    let bad = CallToolRequestParams::new("ask").with_arguments(
        json!({"question": "q", "method": "magic"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    let e = client.call_tool(bad).await;
    assert!(
        e.as_ref().is_err() || e.as_ref().is_ok_and(|r| r.is_error == Some(true)),
        "{e:?}"
    );
    let mut names = tool_names(&client, &stderr).await;
    names.sort_unstable();
    assert_eq!(names, ["ask", "receipts", "search"]);

    client.cancel().await.expect("close the session");
}
