//! A bounded load test of the HTTP API on 127.0.0.1 (`make bench-serve`): an in-process
//! server over the real models and the sample datanet, receipts signed and journaled,
//! then N concurrent clients sending a fixed number of requests each to `/v1/retrieve`
//! and `/v1/chat/completions`. Prints p50/p95/p99 latency, requests/s and, for chat,
//! answer tokens/s and the mean time per chat in each of the engine's stages.
//!
//! The same retrieval in process comes first, from as many threads as there are clients,
//! as the baseline of the HTTP numbers.
//!
//! Overrides: `BENCH_CLIENTS` (default `1,4,16`), `BENCH_REQUESTS` per client (default 4 for
//! chat, 20× that for retrieval), `BENCH_MAX_TOKENS` (default: the engine's 160), `BENCH_METHOD`
//! (attribution method, default the engine's `loo`), `BENCH_PROMPT_CACHE_MIB` (the
//! generator's prompt cache, default the engine's 128; `0` reruns every prompt to score).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tribute::attribution::receipt::{Ledger, PayerKey};
use tribute::index::document::{LoadOptions, load_jsonl};
use tribute::{Address, Engine, EngineConfig};
use tribute_server::ServerOptions;

const KEY0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const QUESTIONS: [&str; 4] = [
    "How many times per second does the Zephyr flight controller correct the attitude?",
    "How long does a full charge of the Zephyr battery take?",
    "How much disk space does the Zephyr installer need?",
    "At what gust speed should Zephyr pilots land?",
];

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn engine(dir: &Path) -> Engine {
    let mut config = EngineConfig {
        index: dir.join("kb"),
        ..EngineConfig::default()
    };
    config.receipts.journal = Some(dir.join("receipts"));
    if let Ok(mib) = env_or("BENCH_PROMPT_CACHE_MIB", "").parse() {
        config.generation.prompt_cache_mib = mib;
    }
    config.receipts.ledger = Some(Ledger {
        chain_id: 31_337,
        contract: Address::repeat_byte(0x5f),
    });
    let engine = Engine::builder()
        .config(config)
        .signer(PayerKey::from_hex(KEY0).expect("key"))
        .build()
        .unwrap_or_else(|e| panic!("the bench needs the models of scripts/setup.sh: {e}"));
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/data/zephyr");
    let mut docs = Vec::new();
    for f in ["alice.jsonl", "bob.jsonl"] {
        docs.extend(load_jsonl(&data.join(f), &LoadOptions::default()).expect("sample datanet"));
    }
    engine.add_documents(docs, None).expect("ingest");
    engine
}

/// The engine's stages, as an answer's `tribute.timings` names them.
const STAGES: [&str; 6] = [
    "retrieval_ms",
    "prompt_ms",
    "prefill_ms",
    "decode_ms",
    "attribution_ms",
    "receipt_ms",
];

/// Latencies and tokens of one run.
struct Run {
    latencies: Vec<Duration>,
    tokens: u64,
    wall: Duration,
    /// Sum over the replies of each of [`STAGES`] (chat only).
    stage_ms: [f64; 6],
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

async fn run(url: String, clients: usize, requests: usize, body: impl Fn(usize) -> Value) -> Run {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, url) = (http.clone(), url.clone());
        let bodies: Vec<Value> = (0..requests).map(|i| body(c * requests + i)).collect();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for b in bodies {
                let t = Instant::now();
                let r = http.post(&url).json(&b).send().await.expect("request");
                let status = r.status();
                let v: Value = r.json().await.expect("json");
                assert!(status.is_success(), "{status}: {v}");
                let tokens = v["usage"]["completion_tokens"].as_u64().unwrap_or(0);
                let timings = &v["tribute"]["timings"];
                let stages = STAGES.map(|k| timings[k].as_f64().unwrap_or(0.0));
                out.push((t.elapsed(), tokens, stages));
            }
            out
        }));
    }
    let mut latencies = Vec::new();
    let mut tokens = 0;
    let mut stage_ms = [0.0; 6];
    for t in tasks {
        for (l, n, stages) in t.await.expect("client task") {
            latencies.push(l);
            tokens += n;
            stage_ms.iter_mut().zip(stages).for_each(|(a, x)| *a += x);
        }
    }
    latencies.sort();
    Run {
        latencies,
        tokens,
        wall: started.elapsed(),
        stage_ms,
    }
}

/// The mean time per chat in each stage, and each stage's share of the run's wall time
/// (summed over the clients: above 100 % where chats overlap).
fn report_stages(r: &Run) {
    let n = r.latencies.len().max(1) as f64;
    let wall = r.wall.as_secs_f64() * 1e3;
    let parts: Vec<String> = STAGES
        .iter()
        .zip(r.stage_ms)
        .map(|(k, ms)| {
            format!(
                "{} {:.0} ms ({:.0} %)",
                k.trim_end_matches("_ms"),
                ms / n,
                100.0 * ms / wall
            )
        })
        .collect();
    println!("{:<22}   per chat: {}", "", parts.join(", "));
}

fn report(endpoint: &str, clients: usize, r: &Run) {
    let n = r.latencies.len();
    let secs = r.wall.as_secs_f64();
    let tok = if r.tokens > 0 {
        format!("{:>8.1}", r.tokens as f64 / secs)
    } else {
        format!("{:>8}", "-")
    };
    println!(
        "{endpoint:<22} {clients:>7} {n:>8} {:>9.1} {:>9.1} {:>9.1} {:>8.2} {tok}",
        percentile(&r.latencies, 0.5),
        percentile(&r.latencies, 0.95),
        percentile(&r.latencies, 0.99),
        n as f64 / secs,
    );
}

/// `requests` retrievals from each of `clients` threads calling the engine directly (the
/// questions in the order the HTTP clients send them).
async fn in_process(engine: &Engine, clients: usize, requests: usize) -> Run {
    let engine = engine.clone();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let threads: Vec<_> = (0..clients)
            .map(|c| {
                let engine = engine.clone();
                std::thread::spawn(move || {
                    (0..requests)
                        .map(|i| {
                            let t = Instant::now();
                            engine
                                .retrieve(QUESTIONS[(c * requests + i) % QUESTIONS.len()])
                                .top_k(4)
                                .run()
                                .expect("retrieve");
                            t.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut latencies: Vec<Duration> = threads
            .into_iter()
            .flat_map(|t| t.join().expect("a retrieval thread"))
            .collect();
        latencies.sort();
        Run {
            latencies,
            tokens: 0,
            wall: started.elapsed(),
            stage_ms: [0.0; 6],
        }
    })
    .await
    .expect("in-process retrieval")
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let clients: Vec<usize> = env_or("BENCH_CLIENTS", "1,4,16")
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let requests: usize = env_or("BENCH_REQUESTS", "4").parse().unwrap_or(4);
    // Answers as long as the engine lets them be (its `max_tokens`, 160) unless told.
    let max_tokens: Option<usize> = std::env::var("BENCH_MAX_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok());
    let method = std::env::var("BENCH_METHOD").ok();

    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path());
    let model = engine.model().name.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(tribute_server::serve(
        listener,
        engine.clone(),
        ServerOptions::default(),
        std::future::pending(),
    ));
    let base = format!("http://{addr}");
    println!(
        "tribute-server load test on {addr}: {requests} chats per client ({} tokens max, \
         attribution {}), {} retrievals per client",
        max_tokens.map_or("the engine's 160".to_owned(), |n| n.to_string()),
        method.as_deref().unwrap_or("loo"),
        requests * 20
    );
    println!(
        "{:<22} {:>7} {:>8} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "endpoint", "clients", "requests", "p50 ms", "p95 ms", "p99 ms", "req/s", "tok/s"
    );
    // Warm up the model and the embedder once.
    run(format!("{base}/v1/chat/completions"), 1, 1, |_| {
        json!({"model": model, "messages": [{"role": "user", "content": QUESTIONS[0]}], "max_tokens": 2})
    })
    .await;
    // The same retrieval in process (signed and journaled, as the endpoint does), from as
    // many threads as there are clients: the baseline the HTTP numbers are compared with,
    // queueing on the same cores included.
    for &c in &clients {
        let local = in_process(&engine, c, requests * 20).await;
        report("retrieve (in process)", c, &local);
    }
    for &c in &clients {
        let r = run(
            format!("{base}/v1/retrieve"),
            c,
            requests * 20,
            |i| json!({"query": QUESTIONS[i % QUESTIONS.len()], "top_k": 4}),
        )
        .await;
        report("/v1/retrieve", c, &r);
    }
    for &c in &clients {
        let r = run(format!("{base}/v1/chat/completions"), c, requests, |i| {
            // Client `i / requests` starts at its own question, so concurrent chats ask
            // different questions (as real clients do) instead of the same one in step.
            let q = (i / requests + i % requests) % QUESTIONS.len();
            let mut body = json!({
                "model": model,
                "messages": [{"role": "user", "content": QUESTIONS[q]}],
            });
            if let Some(n) = max_tokens {
                body["max_tokens"] = json!(n);
            }
            if let Some(m) = &method {
                body["method"] = json!(m);
            }
            body
        })
        .await;
        report("/v1/chat/completions", c, &r);
        report_stages(&r);
    }
}
