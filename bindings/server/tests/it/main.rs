//! The HTTP API end to end: a real server on 127.0.0.1 over the real MiniLM and SmolLM2
//! (installed by `scripts/setup.sh`; without them these tests fail saying so), the
//! repository's sample datanet, receipts signed and journaled, a real HTTP client.

mod auth;
mod capture;
mod chain_fault;
mod chaos;
mod chat;
mod endpoints;
mod errors;
mod spans;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;
use tribute::attribution::receipt::{Ledger, PayerKey};
use tribute::index::Embedder;
use tribute::index::document::{LoadOptions, load_jsonl};
use tribute::index::embedder::{EmbedderOptions, OnnxEmbedder, default_model_dir};
use tribute::inference::Generator;
use tribute::{Address, Engine, EngineConfig};
use tribute_server::ServerOptions;

/// Anvil's first development key (public; never for real funds).
pub const KEY0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/// The ledger receipts are signed for (anvil's first contract address).
pub const LEDGER: Ledger = Ledger {
    chain_id: 31_337,
    contract: Address::new([
        0x5f, 0xbd, 0xb2, 0x31, 0x56, 0x78, 0xaf, 0xec, 0xb3, 0x67, 0xf0, 0x32, 0xd9, 0x3f, 0x64,
        0x2f, 0x64, 0x18, 0x0a, 0xa3,
    ]),
};
/// The sample datanet's two contributors.
pub const ALICE: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
/// See [`ALICE`].
pub const BOB: &str = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359";
/// A question the sample datanet answers (zephyr-intro).
pub const QUESTION: &str =
    "How many times per second does the Zephyr flight controller correct the attitude?";

fn generator() -> Arc<Generator> {
    static G: OnceLock<Arc<Generator>> = OnceLock::new();
    G.get_or_init(|| {
        let dir = tribute::inference::default_model_dir();
        Arc::new(Generator::load(&dir).unwrap_or_else(|e| {
            panic!(
                "SmolLM2 is required at {}; run scripts/setup.sh ({e})",
                dir.display()
            )
        }))
    })
    .clone()
}

fn embedder() -> Arc<dyn Embedder> {
    static E: OnceLock<Arc<dyn Embedder>> = OnceLock::new();
    E.get_or_init(|| {
        Arc::new(
            OnnxEmbedder::from_dir(&default_model_dir(), EmbedderOptions::default())
                .expect("MiniLM is required; run scripts/setup.sh"),
        )
    })
    .clone()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh engine in `dir` over the sample datanet, signing receipts for [`LEDGER`] into a
/// journal, with the zephyr LoRA adapter registered.
pub fn engine_in(dir: &Path) -> Engine {
    engine_with(dir, |_| {})
}

/// [`engine_in`] with `configure` applied to its config before it is built.
pub fn engine_with(dir: &Path, configure: impl FnOnce(&mut EngineConfig)) -> Engine {
    let mut config = EngineConfig {
        index: dir.join("kb"),
        ..EngineConfig::default()
    };
    config.receipts.journal = Some(dir.join("receipts"));
    config.receipts.ledger = Some(LEDGER);
    config.generation.max_tokens = 12;
    config.retrieval.top_k = 2;
    configure(&mut config);
    let engine = Engine::builder()
        .config(config)
        .generator(generator())
        .embedder(embedder())
        .signer(PayerKey::from_hex(KEY0).expect("key"))
        .adapter(
            "zephyr",
            repo().join("examples/adapters/smollm2-135m-zephyr-lora"),
        )
        .build()
        .expect("engine");
    let data = repo().join("examples/data/zephyr");
    let mut docs = Vec::new();
    for f in ["alice.jsonl", "bob.jsonl"] {
        docs.extend(load_jsonl(&data.join(f), &LoadOptions::default()).expect("sample datanet"));
    }
    engine.add_documents(docs, None).expect("ingest");
    engine
}

/// One engine shared by most tests (they also exercise concurrent requests).
pub fn shared_engine() -> Engine {
    static S: OnceLock<Engine> = OnceLock::new();
    S.get_or_init(|| engine_in(&tempfile::tempdir().expect("tempdir").keep()))
        .clone()
}

/// A running server: its base URL (`http://127.0.0.1:PORT`).
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The engine it serves.
    pub engine: Engine,
}

/// Starts a server for `engine` on a free port of 127.0.0.1, on the test's runtime.
pub async fn start(engine: Engine, options: ServerOptions) -> Server {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let served = engine.clone();
    tokio::spawn(async move {
        tribute_server::serve(listener, served, options, std::future::pending())
            .await
            .expect("serve");
    });
    Server {
        url: format!("http://{addr}"),
        engine,
    }
}

/// An HTTP client with a generous timeout (a chat on a loaded 2-core box takes seconds).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .expect("client")
}

/// The base model's id.
pub fn base_model(server: &Server) -> String {
    server.engine.model().name.clone()
}

/// The `/metrics` text of the server at `url`.
pub async fn metrics(url: &str) -> String {
    client()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// POSTs JSON and returns the status and the body as JSON.
pub async fn post_json(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    let r = client()
        .post(format!("{}{path}", server.url))
        .json(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, json)
}

/// GETs and returns the status and the body as JSON.
pub async fn get_json(server: &Server, path: &str) -> (u16, Value) {
    let r = client()
        .get(format!("{}{path}", server.url))
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, json)
}
