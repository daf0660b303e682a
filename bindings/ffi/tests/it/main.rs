//! The FFI surface from Rust, on the real models (MiniLM, SmolLM2) and the repository's
//! sample datanet: what Kotlin and Swift call, without a foreign runtime. The Kotlin suite
//! (bindings/kotlin/test.sh) covers the same surface through the generated bindings.

mod locator;
mod session;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;

use tribute_ffi::{
    Answer, AskListener, AskOptions, Document, Engine, EngineOptions, Generator, Index,
    IngestListener, IngestProgress, Ledger, SearchMode, Signer, TributeError,
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
    kb.add_files(vec![sample()], None, None, None)
        .expect("ingest");
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
            .search(QUESTION.into(), 1, None, None)
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

/// Records the progress it gets; panics (as uniffi's callback code does for a foreign
/// exception) from call `fail_at` on.
#[derive(Default)]
struct Progress {
    seen: Arc<Mutex<Vec<IngestProgress>>>,
    fail_at: Option<usize>,
}

impl IngestListener for Progress {
    fn on_progress(&self, progress: IngestProgress) {
        let mut seen = self.seen.lock().expect("lock");
        seen.push(progress);
        if self.fail_at.is_some_and(|n| seen.len() >= n) {
            drop(seen);
            // What uniffi's callback code does with a foreign exception.
            let e = uniffi::UnexpectedUniFFICallbackError::new(
                "java.lang.IllegalStateException: progress bug\n\tat Foo.onProgress(Foo.kt:1)\n",
            );
            panic!("Callback interface failure: {e}");
        }
    }
}

fn doc(id: &str, text: &str) -> Document {
    Document {
        id: id.into(),
        text: text.into(),
        title: None,
        datanet: None,
        contributor: None,
        license: None,
        metadata_json: None,
    }
}

#[test]
fn ingest_progress_and_a_failing_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kb = Index::open(dir.path().join("kb").display().to_string(), None)
        .expect("MiniLM is required; run scripts/setup.sh");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = Progress {
        seen: seen.clone(),
        fail_at: None,
    };
    let report = kb
        .add_files(vec![sample()], None, None, Some(Box::new(listener)))
        .expect("ingest");
    let seen = seen.lock().expect("lock").clone();
    assert!(seen.len() >= 2, "{seen:?}");
    let last = seen.last().expect("progress");
    assert_eq!((last.docs_done, last.docs_total), (5, 5));
    assert_eq!(last.chunks_done, last.chunks_total);
    assert_eq!(last.chunks_total, report.chunks);
    assert!(
        seen.windows(2)
            .all(|w| w[0].docs_done <= w[1].docs_done && w[0].chunks_done <= w[1].chunks_done)
    );

    // A failing listener is not called again; the documents go in, then the error.
    let calls = Arc::new(Mutex::new(Vec::new()));
    let failing = Progress {
        seen: calls.clone(),
        fail_at: Some(1),
    };
    let docs = vec![
        doc("p1", "Progress reports come after each embedded batch."),
        doc("p2", "A failing listener does not stop the ingest."),
    ];
    match kb.add(docs, None, None, Some(Box::new(failing))) {
        Err(TributeError::Internal(m)) => {
            assert_eq!(
                m,
                "the ingest listener failed: java.lang.IllegalStateException: progress bug"
            );
        }
        other => panic!("expected an Internal error, got {other:?}"),
    }
    assert_eq!(calls.lock().expect("lock").len(), 1);
    assert_eq!(kb.document_count().expect("count"), 7);
    kb.release_directory();
}

#[test]
fn search_options_and_delete_through_the_engine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path());
    let kb = engine.index();
    let hybrid = engine
        .search(QUESTION.into(), 3, None, None)
        .expect("search");
    assert_eq!(hybrid[0].doc_id, "gust-field-notes");
    let bm25 = engine
        .search(QUESTION.into(), 3, Some(SearchMode::Bm25), None)
        .expect("bm25");
    assert!(
        bm25.iter()
            .all(|h| h.bm25_score.is_some() && h.dense_score.is_none())
    );
    let via_index = kb
        .search(QUESTION.into(), 3, Some(SearchMode::Dense), None)
        .expect("dense through the index");
    assert!(
        via_index
            .iter()
            .all(|h| h.dense_score.is_some() && h.bm25_score.is_none())
    );
    let datanet = hybrid[0].datanet.clone();
    let only = engine
        .search(QUESTION.into(), 5, None, Some(vec![datanet.clone()]))
        .expect("datanets");
    assert!(!only.is_empty() && only.iter().all(|h| h.datanet == datanet));
    let none = kb
        .search(
            QUESTION.into(),
            5,
            None,
            Some(vec!["no-such-datanet".into()]),
        )
        .expect("an unknown datanet");
    assert!(none.is_empty());

    assert!(kb.delete("gust-field-notes".into()).expect("delete"));
    assert!(!kb.delete("gust-field-notes".into()).expect("delete again"));
    assert_eq!(kb.document_count().expect("count"), 4);
    let after = engine
        .search(QUESTION.into(), 5, None, None)
        .expect("search");
    assert!(after.iter().all(|h| h.doc_id != "gust-field-notes"));
    engine.release();
}
