//! The FFI surface from Rust, on the real models (MiniLM, SmolLM2) and the repository's
//! sample datanet: what Kotlin and Swift call, without a foreign runtime. The Kotlin suite
//! (bindings/kotlin/test.sh) covers the same surface through the generated bindings.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;

use tribute_ffi::{
    Answer, AskListener, AskOptions, Engine, EngineOptions, Generator, Index, Ledger, Signer,
    TributeError,
};

/// Anvil's first development key (public; never for real funds).
const KEY0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const PAYER: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
const QUESTION: &str = "At what gust speed should Zephyr pilots land?";

fn sample() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/data/zephyr")
        .display()
        .to_string()
}

fn engine(dir: &std::path::Path) -> Arc<Engine> {
    let kb = Index::open(dir.join("kb").display().to_string(), None)
        .expect("MiniLM is required; run scripts/setup.sh");
    kb.add_files(vec![sample()], None, None).expect("ingest");
    let generator =
        Generator::load(None, "cpu".into(), 1).expect("SmolLM2 is required; run scripts/setup.sh");
    let options = EngineOptions {
        ledger: Some(Ledger {
            chain_id: 31_337,
            contract: "0x5FbDB2315678afecb367f032d93F642f64180aa3".into(),
        }),
        journal: Some(dir.join("receipts").display().to_string()),
        max_tokens: Some(24),
        ..EngineOptions::default()
    };
    let signer = Signer::from_hex(KEY0.into()).expect("key");
    Engine::new(kb, options, Some(generator), Some(signer)).expect("engine")
}

#[derive(Default)]
struct Collect {
    pieces: Mutex<Vec<String>>,
    done: Mutex<Option<String>>,
    panic_on_text: bool,
}

impl AskListener for Collect {
    fn on_text(&self, text: String) -> bool {
        assert!(!self.panic_on_text, "an injected panic in a listener");
        self.pieces.lock().expect("lock").push(text);
        true
    }

    fn on_done(&self, answer: Answer) {
        *self.done.lock().expect("lock") = Some(answer.text);
    }
}

#[test]
fn ask_stream_async_and_a_caught_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path());
    let options = AskOptions {
        top_k: Some(3),
        ..AskOptions::default()
    };

    let answer = engine.ask(QUESTION.into(), options.clone()).expect("ask");
    assert_eq!(
        answer.citations.iter().map(|c| c.weight_bps).sum::<u32>(),
        10_000
    );
    let receipt = answer.receipt.clone().expect("a receipt");
    assert_eq!(receipt.verify(None).expect("verifies"), PAYER);

    let listener = Collect::default();
    let streamed = engine
        .stream(QUESTION.into(), options.clone(), Box::new(listener))
        .expect("stream")
        .expect("finished");
    assert_eq!(streamed.text, answer.text);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let asked = runtime
        .block_on(engine.ask_async(QUESTION.into(), options.clone()))
        .expect("ask_async");
    assert_eq!(asked.text, answer.text);

    // A panic inside the library (here: in a listener) is an error, not an abort, and the
    // engine keeps working.
    let panicking = Collect {
        panic_on_text: true,
        ..Collect::default()
    };
    match engine.stream(QUESTION.into(), options.clone(), Box::new(panicking)) {
        Err(TributeError::Internal(m)) => assert!(m.contains("injected panic"), "{m}"),
        other => panic!("expected an Internal error, got {other:?}"),
    }
    assert!(
        !engine
            .search(QUESTION.into(), 1)
            .expect("search")
            .is_empty()
    );
    assert_eq!(engine.receipts(None).expect("receipts").len(), 3);

    assert!(matches!(
        engine.ask("  ".into(), AskOptions::default()),
        Err(TributeError::Request(_))
    ));
    assert!(matches!(
        runtime.block_on(engine.settle()),
        Err(TributeError::Chain(_))
    ));
    engine.release();
    assert!(matches!(
        engine.ask(QUESTION.into(), options),
        Err(TributeError::Request(_))
    ));
}
