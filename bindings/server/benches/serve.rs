//! A bounded load test of the HTTP API on 127.0.0.1 (`make bench-serve`): an in-process
//! server over the real models and the sample datanet, receipts signed and journaled,
//! then N concurrent clients sending a fixed number of requests each to `/v1/retrieve`
//! and `/v1/chat/completions`. Prints p50/p95/p99 latency, requests/s and, for chat,
//! answer tokens/s and the mean time per chat in each of the engine's stages.
//!
//! The same retrieval in process comes first, from as many threads as there are clients,
//! as the baseline of the HTTP numbers.
//!
//! Every chat run asks the same [`CHAT_QUESTIONS`], each once, taken in turn by whichever
//! of its clients is free, of a server of its own: runs with more clients do the same work, and none starts from the
//! prompts an earlier run left in the generator's prompt cache.
//!
//! Overrides: `BENCH_CLIENTS` (default `1,4,16`), `BENCH_REQUESTS` retrievals per client
//! (default 80), `BENCH_CHATS` per run (default 16: every question once),
//! `BENCH_MAX_TOKENS` (default: the engine's 160), `BENCH_METHOD` (attribution method,
//! default the engine's `loo`), `BENCH_PROMPT_CACHE_MIB` (the generator's prompt cache,
//! default the engine's 128; `0` reruns every prompt to score and reuses none),
//! `BENCH_ADAPTERS` (vendored adapters by short name, e.g. `zephyr,caps`: the engine
//! registers `examples/adapters/smollm2-135m-NAME-lora` and chat i asks for adapter
//! i mod n through its model name), `BENCH_SLOTS` (`[generation] adapter_slots`; default
//! the engine's 0).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// The chats' questions, about every passage of the sample datanet; no two alike.
const CHAT_QUESTIONS: [&str; 16] = [
    "How many times per second does the Zephyr flight controller correct the attitude?",
    "How long does a full charge of the Zephyr battery take?",
    "How much disk space does the Zephyr installer need?",
    "At what gust speed should Zephyr pilots land?",
    "Who released the Zephyr SDK?",
    "In which year was the Zephyr SDK first released?",
    "Which sensor do Zephyr flight controllers read wind gusts from?",
    "Where does the Zephyr installer place the toolchain?",
    "Which command checks that the anemometer driver is loaded?",
    "What kind of cells do Zephyr drones use?",
    "At what charge should Zephyr cells be stored when the drone is grounded?",
    "In what gusts did the Zephyr autopilot hold a hover in field tests?",
    "How much did calibrating the anemometer reduce drift?",
    "How much does a commercial Zephyr fleet license cost per year?",
    "Is the Zephyr SDK free for research?",
    "How many drones make a commercial fleet that must pay for a Zephyr license?",
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
    if let Ok(n) = env_or("BENCH_SLOTS", "").parse() {
        config.generation.adapter_slots = n;
    }
    let vendored = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/adapters");
    for name in adapter_names() {
        config.adapters.push(tribute::config::AdapterConfig {
            path: vendored.join(format!("smollm2-135m-{name}-lora")),
            id: name,
        });
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

/// `BENCH_ADAPTERS`: the adapters chats ask for in turn (none by default).
fn adapter_names() -> Vec<String> {
    env_or("BENCH_ADAPTERS", "")
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A server under test: its engine, base URL, and the sender that shuts it down.
struct Server {
    engine: Engine,
    base: String,
    stop: tokio::sync::oneshot::Sender<()>,
}

/// An engine over the sample datanet in `dir`, served on a free port of 127.0.0.1, warmed
/// up with one short chat (which leaves its prompt in the prompt cache, as a running
/// server's earlier requests would).
async fn start(dir: &Path) -> Server {
    let engine = engine(dir);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(tribute_server::serve(
        listener,
        engine.clone(),
        ServerOptions::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    let base = format!("http://{addr}");
    let model = engine.model().name.clone();
    run(format!("{base}/v1/chat/completions"), 1, 1, |_| {
        json!({"model": model, "messages": [{"role": "user", "content": "What is the Zephyr SDK?"}], "max_tokens": 2})
    })
    .await;
    Server { engine, base, stop }
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

/// `requests` requests from `clients` concurrent clients, with body `body(i)` for request
/// `i`. Each client sends the next request not yet taken as soon as its previous one is
/// answered (a shared queue, as independent users would): with a fixed split instead, a
/// client dealt the long answers ran on alone at the end, which measured the split more
/// than the server.
async fn run(url: String, clients: usize, requests: usize, body: impl Fn(usize) -> Value) -> Run {
    let http = reqwest::Client::new();
    let bodies: Arc<Vec<Value>> = Arc::new((0..requests).map(body).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, url, bodies, next) = (http.clone(), url.clone(), bodies.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while let Some(b) = bodies.get(next.fetch_add(1, Ordering::Relaxed)) {
                let t = Instant::now();
                let r = http.post(&url).json(b).send().await.expect("request");
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
    let requests: usize = env_or("BENCH_REQUESTS", "80").parse().unwrap_or(80);
    let chats: usize = env_or("BENCH_CHATS", "16").parse().unwrap_or(16);
    // Answers as long as the engine lets them be (its `max_tokens`, 160) unless told.
    let max_tokens: Option<usize> = std::env::var("BENCH_MAX_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok());
    let method = std::env::var("BENCH_METHOD").ok();

    let dir = tempfile::tempdir().expect("tempdir");
    let Server { engine, base, stop } = start(&dir.path().join("retrieval")).await;
    println!(
        "tribute-server load test on {base}: {requests} retrievals per client; {chats} chats \
         per run, taken by whichever client is free ({} tokens max, attribution {})",
        max_tokens.map_or("the engine's 160".to_owned(), |n| n.to_string()),
        method.as_deref().unwrap_or("loo"),
    );
    println!(
        "{:<22} {:>7} {:>8} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "endpoint", "clients", "requests", "p50 ms", "p95 ms", "p99 ms", "req/s", "tok/s"
    );
    // The same retrieval in process (signed and journaled, as the endpoint does), from as
    // many threads as there are clients: the baseline the HTTP numbers are compared with,
    // queueing on the same cores included.
    for &c in &clients {
        let local = in_process(&engine, c, requests).await;
        report("retrieve (in process)", c, &local);
    }
    for &c in &clients {
        let r = run(
            format!("{base}/v1/retrieve"),
            c,
            requests * c,
            |i| json!({"query": QUESTIONS[i % QUESTIONS.len()], "top_k": 4}),
        )
        .await;
        report("/v1/retrieve", c, &r);
    }
    let _ = stop.send(());
    drop(engine);
    // Chats per second of each chat run, by client count.
    let mut rates: Vec<(usize, f64)> = Vec::new();
    for (n, &c) in clients.iter().enumerate() {
        // A server of its own: nothing kept from the previous run's prompts.
        let Server { engine, base, stop } = start(&dir.path().join(format!("chat-{n}"))).await;
        let base_model = engine.model().name.clone();
        let adapters = adapter_names();
        let slots = engine.generator().map_or(0, |g| g.adapter_slots().0);
        if !adapters.is_empty() {
            println!(
                "{:<22}   chats take adapters {adapters:?} in turn; {slots} adapter slots",
                ""
            );
        }
        let r = run(format!("{base}/v1/chat/completions"), c, chats, |i| {
            let model = match adapters.get(i % adapters.len().max(1)) {
                Some(a) => format!("{base_model}:{a}"),
                None => base_model.clone(),
            };
            let mut body = json!({
                "model": model,
                "messages": [{"role": "user", "content": CHAT_QUESTIONS[i % CHAT_QUESTIONS.len()]}],
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
        rates.push((c, r.latencies.len() as f64 / r.wall.as_secs_f64()));
        let cache = engine
            .generator()
            .map(|g| g.prompt_cache_stats())
            .unwrap_or_default();
        println!(
            "{:<22}   prompt cache: {} prefills started from a kept prompt ({} prompt tokens not run), {} of {} scorings found their prompt",
            "",
            cache.prefill_hits,
            cache.prefill_tokens,
            cache.hits,
            cache.hits + cache.misses
        );
        let _ = stop.send(());
    }
    report_scaling(&rates);
}

/// Chats per second against one client, from the mean rate of each client count over its
/// runs: with `BENCH_CLIENTS=1,4,1,4,…` the runs interleave, and the ratio of the means is
/// steadier than any one pair on a machine whose speed drifts by ±10 % over minutes.
fn report_scaling(rates: &[(usize, f64)]) {
    let mean = |c: usize| {
        let r: Vec<f64> = rates
            .iter()
            .filter(|(k, _)| *k == c)
            .map(|(_, x)| *x)
            .collect();
        (!r.is_empty()).then(|| (r.iter().sum::<f64>() / r.len() as f64, r.len()))
    };
    let Some((one, runs)) = mean(1) else {
        return;
    };
    let mut counts: Vec<usize> = rates.iter().map(|(c, _)| *c).filter(|&c| c > 1).collect();
    counts.sort_unstable();
    counts.dedup();
    for c in counts {
        if let Some((many, n)) = mean(c) {
            println!(
                "chat scaling: {c} clients {many:.3} chats/s (mean of {n} runs) vs 1 client {one:.3} ({runs} runs): {:.2}×",
                many / one
            );
        }
    }
}
