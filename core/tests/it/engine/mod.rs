//! The Engine end to end: the real MiniLM and SmolLM2, the repository's sample datanet
//! (two contributors), receipts signed and journaled, and the documented failure modes.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use alloy_primitives::{Address, keccak256};
use tribute::attribution::journal::{Journal, StateKind};
use tribute::attribution::receipt::PayerKey;
use tribute::engine::NO_SOURCES_ANSWER;
use tribute::index::document::{LoadOptions, load_jsonl};
use tribute::{AskEvent, Engine, EngineConfig, Error};

pub(crate) use crate::support::{KEY0, LEDGER, embedder, generator};

const ALICE: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
const BOB: &str = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359";
const QUESTION: &str =
    "How many times per second does the Zephyr flight controller correct the attitude?";

fn sample_docs() -> Vec<tribute::Document> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/zephyr");
    let mut docs = Vec::new();
    for f in ["alice.jsonl", "bob.jsonl"] {
        docs.extend(load_jsonl(&dir.join(f), &LoadOptions::default()).expect("sample datanet"));
    }
    docs
}

/// An engine over a fresh knowledge base holding the sample datanet, in `dir`.
fn engine_in(dir: &Path, config: EngineConfig, key: Option<PayerKey>, ingest: bool) -> Engine {
    let mut config = config;
    config.index = dir.join("kb");
    let mut b = Engine::builder()
        .config(config)
        .generator(generator())
        .embedder(embedder());
    if let Some(k) = key {
        b = b.signer(k);
    }
    let engine = b.build().expect("engine");
    if ingest {
        engine.add_documents(sample_docs(), None).expect("ingest");
    }
    engine
}

fn signed_config(dir: &Path) -> EngineConfig {
    let mut c = EngineConfig::default();
    c.receipts.journal = Some(dir.join("receipts"));
    c.receipts.ledger = Some(LEDGER);
    c.generation.max_tokens = 48;
    c
}

/// One engine shared by the tests below (they also exercise concurrent use).
fn shared() -> &'static (Engine, PathBuf) {
    static S: OnceLock<(Engine, PathBuf)> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let key = PayerKey::from_hex(KEY0).expect("key");
        (engine_in(&dir, signed_config(&dir), Some(key), true), dir)
    })
}

#[test]
fn ask_cites_the_supporting_source_and_journals_a_signed_receipt() {
    let (engine, _) = shared();
    let answer = engine.ask(QUESTION).top_k(3).run().expect("ask");
    println!("{}\n{:#?}", answer.cited_text, answer.citations);
    assert!(!answer.text.trim().is_empty());
    assert_eq!(answer.usage.sources_used, 3);
    assert_eq!(
        answer.citations.iter().map(|c| c.weight_bps).sum::<u32>(),
        10_000
    );
    let top = &answer.citations[0];
    assert_eq!(top.doc_id, "zephyr-intro", "{:#?}", answer.citations);
    assert_eq!(top.contributor, ALICE);
    assert_eq!(top.datanet, "zephyr-docs");
    assert!(top.weight_bps > 5_000, "{:#?}", answer.citations);
    // Inline markers name prompt sources that exist.
    assert!(
        answer.cited_text.contains(&format!("[{}]", top.marker)),
        "{}",
        answer.cited_text
    );
    for s in &answer.sentences {
        assert_eq!(&answer.text[s.span.clone()], s.text);
        assert!(s.markers.iter().all(|m| (1..=3).contains(m)));
    }
    // The receipt: signed by the payer for the ledger, hashes of this question and answer,
    // the cited chunks with their contributors and weights, journaled as pending.
    let receipt = answer.receipt.as_ref().expect("receipt");
    receipt.verify(&LEDGER).expect("verifies");
    let r = &receipt.receipt;
    assert_eq!(r.queryHash, keccak256(QUESTION));
    assert_eq!(r.answerHash, keccak256(&answer.text));
    assert_eq!(r.modelId, engine.model().id);
    assert_eq!(r.fee.to_string(), "1000000000000000");
    assert_eq!(
        r.chunks.iter().map(|c| u32::from(c.weightBps)).sum::<u32>(),
        10_000
    );
    for c in &answer.citations {
        let chunk = r
            .chunks
            .iter()
            .find(|x| x.contentHash.to_string() == c.content_hash)
            .expect("cited chunk in the receipt");
        assert_eq!(u32::from(chunk.weightBps), c.weight_bps);
        assert_eq!(
            chunk.contributor,
            c.contributor.parse::<Address>().expect("address")
        );
    }
    let journaled = engine.receipts(Some(StateKind::Pending)).expect("receipts");
    assert!(journaled.iter().any(|j| j.receipt == *receipt));
    // Timings are measured per stage.
    let t = answer.usage.timings;
    assert!(t.retrieval_ms > 0.0 && t.prefill_ms > 0.0 && t.attribution_ms > 0.0);
    assert!(t.total_ms >= t.retrieval_ms + t.prefill_ms + t.attribution_ms);
    assert!(answer.usage.attribution_passes >= 3);
}

#[test]
fn a_question_without_relevant_sources_says_so_and_signs_nothing() {
    let (engine, _) = shared();
    let answer = engine
        .ask("What is the boiling point of mercury in kelvin?")
        .run()
        .expect("ask");
    assert_eq!(answer.text, NO_SOURCES_ANSWER);
    assert!(answer.citations.is_empty());
    assert!(answer.receipt.is_none());
    assert!(
        answer
            .no_receipt
            .as_deref()
            .is_some_and(|s| s.contains("no source"))
    );
    assert_eq!(answer.usage.answer_tokens, 0, "the model is not run");

    // An empty knowledge base answers the same way.
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = engine_in(
        dir.path(),
        signed_config(dir.path()),
        PayerKey::from_hex(KEY0).ok(),
        false,
    );
    let answer = empty.ask(QUESTION).run().expect("ask");
    assert_eq!(answer.text, NO_SOURCES_ANSWER);
    assert!(answer.receipt.is_none());
    assert_eq!(empty.receipt_stats().expect("stats").receipts, 0);
}

#[test]
fn streaming_yields_the_answer_then_citations_and_receipt() {
    let (engine, _) = shared();
    let mut pieces = String::new();
    let mut done = None;
    for event in engine.ask(QUESTION).top_k(2).stream().expect("stream") {
        match event.expect("event") {
            AskEvent::Text(t) => {
                assert!(done.is_none(), "text after Done");
                pieces.push_str(&t);
            }
            AskEvent::Done(a) => done = Some(a),
        }
    }
    let answer = done.expect("a Done event");
    assert_eq!(pieces.trim(), answer.text.trim());
    assert_eq!(
        answer.citations.iter().map(|c| c.weight_bps).sum::<u32>(),
        10_000
    );
    answer
        .receipt
        .as_ref()
        .expect("receipt")
        .verify(&LEDGER)
        .expect("verifies");
    // Greedy decoding: the streamed answer is the blocking one.
    let blocking = engine.ask(QUESTION).top_k(2).run().expect("ask");
    assert_eq!(blocking.text, answer.text);
}

#[test]
fn concurrent_and_async_asks_get_distinct_receipts() {
    let (engine, _) = shared();
    let questions = [
        QUESTION,
        "How long does a full charge of a Zephyr drone take?",
        "How much does a commercial Zephyr fleet license cost?",
    ];
    let answers: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = questions
            .iter()
            .map(|q| s.spawn(move || engine.ask(*q).top_k(2).max_tokens(24).run()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut ids = std::collections::HashSet::new();
    let mut nonces = std::collections::HashSet::new();
    for a in answers {
        let a = a.expect("ask");
        let r = a.receipt.expect("receipt");
        assert!(ids.insert(r.receipt.receiptId));
        assert!(nonces.insert(r.receipt.nonce));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let a = rt
        .block_on(async { engine.ask(questions[2]).top_k(3).await })
        .expect("async ask");
    assert!(a.text.contains("900"), "{}", a.text);
    assert_eq!(
        a.citations[0].doc_id, "zephyr-pricing",
        "{:#?}",
        a.citations
    );
    a.receipt
        .expect("receipt")
        .verify(&LEDGER)
        .expect("verifies");
}

#[test]
fn the_prompt_stays_within_its_budget_by_dropping_sources() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = EngineConfig::default();
    config.generation.prompt_budget = Some(130);
    config.generation.max_tokens = 16;
    let engine = engine_in(dir.path(), config, None, true);
    let answer = engine.ask(QUESTION).top_k(4).run().expect("ask");
    assert!(answer.usage.prompt_tokens <= 130, "{:?}", answer.usage);
    assert!(answer.usage.sources_dropped >= 1, "{:?}", answer.usage);
    assert!(answer.usage.sources_used >= 1);
    // No key: an answer, no receipt, and a reason.
    assert!(answer.receipt.is_none());
    assert!(
        answer
            .no_receipt
            .as_deref()
            .is_some_and(|s| s.contains("key")),
        "{:?}",
        answer.no_receipt
    );

    // A tiny budget cuts the one remaining source.
    let mut config = EngineConfig::default();
    config.generation.prompt_budget = Some(95);
    config.generation.max_tokens = 8;
    let dir2 = tempfile::tempdir().expect("tempdir");
    let engine = engine_in(dir2.path(), config, None, true);
    let answer = engine
        .ask(QUESTION)
        .top_k(4)
        .method(tribute::attribution::Method::Retrieval)
        .run()
        .expect("ask");
    assert!(answer.usage.prompt_tokens <= 95, "{:?}", answer.usage);
    assert_eq!(answer.usage.sources_used, 1);
    assert!(answer.usage.source_truncated, "{:?}", answer.usage);
}

#[test]
fn bad_setups_fail_with_typed_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A model directory that does not load.
    let config = EngineConfig {
        index: dir.path().join("kb"),
        model: Some(dir.path().join("no-such-model")),
        ..EngineConfig::default()
    };
    let e = Engine::builder()
        .config(config)
        .embedder(embedder())
        .build()
        .expect_err("no model");
    assert!(matches!(e, Error::Inference(_)), "{e}");

    // A journal that cannot be written (a file where the directory should be).
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").expect("write");
    let mut config = signed_config(dir.path());
    config.index = dir.path().join("kb2");
    config.receipts.journal = Some(blocker.join("receipts"));
    let e = Engine::builder()
        .config(config)
        .generator(generator())
        .embedder(embedder())
        .build()
        .expect_err("journal");
    assert!(matches!(e, Error::Journal(_)), "{e}");

    // A journal locked by another writer.
    let locked = dir.path().join("locked");
    let _holder = Journal::open(&locked).expect("journal");
    let mut config = signed_config(dir.path());
    config.index = dir.path().join("kb3");
    config.receipts.journal = Some(locked);
    let e = Engine::builder()
        .config(config)
        .generator(generator())
        .embedder(embedder())
        .build()
        .expect_err("locked");
    assert!(e.to_string().contains("locked"), "{e}");

    // Bad config values.
    let e = EngineConfig::from_toml("[receipts]\nfee_wei = -12").expect_err("type");
    assert!(matches!(e, Error::Config(_)), "{e}");
    // A bad fee or address fails when the config is read, naming the key.
    let e = EngineConfig::from_toml("[receipts]\nfee_wei = \"0.5 ether\"").expect_err("fee");
    assert!(matches!(e, Error::Config(_)), "{e}");
    assert!(e.to_string().contains("fee_wei"), "{e}");
    let e = EngineConfig::from_toml("[chain]\ntreasury = \"0x12\"").expect_err("address");
    assert!(e.to_string().contains("treasury"), "{e}");

    // Bad requests.
    let (engine, _) = shared();
    assert!(matches!(
        engine.ask("  ").run(),
        Err(Error::InvalidRequest(_))
    ));
    assert!(matches!(
        engine.ask(QUESTION).top_k(0).run(),
        Err(Error::InvalidRequest(_))
    ));
    let e = engine
        .ask(QUESTION)
        .adapters([("no-such-adapter", 1.0)])
        .run()
        .expect_err("unknown adapter");
    assert!(e.to_string().contains("no-such-adapter"), "{e}");
    // Requests name adapters by registered id only: an id shaped like a path (relative,
    // absolute, or a registered adapter's own directory) is an unknown id, never a file.
    let registered =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/adapters/smollm2-135m-zephyr-lora");
    for id in [
        "../../../../etc/passwd".to_string(),
        "/etc/passwd".to_string(),
        "smollm2-135m-zephyr-lora/../smollm2-135m-zephyr-lora".to_string(),
        registered.display().to_string(),
    ] {
        let e = engine
            .ask(QUESTION)
            .adapters([(id.as_str(), 1.0)])
            .run()
            .expect_err("a path is not an adapter id");
        assert!(
            matches!(e, Error::InvalidRequest(_) | Error::Inference(_))
                && e.to_string().contains(&id),
            "{id}: {e:?}"
        );
    }
}

#[test]
fn config_round_trips_through_toml_with_documented_defaults() {
    let c = EngineConfig::from_toml(
        r#"
index = "kb"
[retrieval]
top_k = 3
mode = "bm25"
[attribution]
method = "ablation"
[receipts]
fee_wei = "5"
ledger = { chainId = 31337, contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3" }
[chain]
rpc = "http://127.0.0.1:9"
"#,
    )
    .expect("parse");
    assert_eq!(c.retrieval.top_k, 3);
    assert_eq!(c.attribution.method, tribute::attribution::Method::Ablation);
    assert_eq!(c.receipts.ledger, Some(LEDGER));
    assert_eq!(c.generation.max_tokens, 160);
    assert_eq!(c.chain.as_ref().map(|c| c.batch_size), Some(100));
    let back = EngineConfig::from_toml(&c.to_toml().expect("toml")).expect("reparse");
    assert_eq!(back, c);
    assert!(EngineConfig::from_toml("bogus = 1").is_err());
}

#[test]
fn the_second_contributor_is_credited_for_their_document() {
    let (engine, _) = shared();
    let answer = engine
        .ask("At what gust speed should Zephyr pilots land?")
        .top_k(3)
        .run()
        .expect("ask");
    println!("{}\n{:#?}", answer.cited_text, answer.citations);
    let top = &answer.citations[0];
    assert_eq!(top.doc_id, "gust-field-notes", "{:#?}", answer.citations);
    assert_eq!(top.contributor, BOB);
    assert_eq!(top.datanet, "pilot-notes");
    let r = answer.receipt.expect("receipt");
    assert!(
        r.receipt
            .chunks
            .iter()
            .any(|c| c.contributor.to_checksum(None) == BOB)
    );
}

#[test]
fn a_cancelled_ask_stops_and_signs_nothing() {
    use tribute::inference::CancelToken;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = PayerKey::from_hex(KEY0).expect("key");
    let engine = engine_in(dir.path(), signed_config(dir.path()), Some(key), true);

    // Cancelled before it starts: no generation at all.
    let token = CancelToken::new();
    token.cancel();
    let err = engine.ask(QUESTION).cancel_token(token).run().unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");

    // Cancelled from another thread while it runs (an ask takes seconds here).
    let token = CancelToken::new();
    let t2 = token.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        t2.cancel();
    });
    let err = engine
        .ask(QUESTION)
        .max_tokens(160)
        .cancel_token(token)
        .run()
        .unwrap_err();
    canceller.join().expect("thread");
    assert!(matches!(err, Error::Cancelled), "{err}");

    // A stream cancelled after its first piece ends with the error.
    let token = CancelToken::new();
    let mut stream = engine
        .ask(QUESTION)
        .cancel_token(token.clone())
        .stream()
        .expect("stream");
    assert!(matches!(stream.next(), Some(Ok(AskEvent::Text(_)))));
    token.cancel();
    let last = stream.last().expect("an event");
    assert!(matches!(last, Err(Error::Cancelled)), "{last:?}");

    // A dropped async ask is cancelled too; nothing of the above reached the journal.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let timed_out = rt.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_millis(200),
            engine.ask(QUESTION).max_tokens(160),
        )
        .await
    });
    assert!(timed_out.is_err(), "the ask finished in 200 ms?");
    // The cancelled ask gives its session back; the next one completes and is journaled.
    let ok = engine.ask(QUESTION).max_tokens(24).run().expect("ask");
    let receipts = engine.receipts(None).expect("receipts");
    assert_eq!(receipts.len(), 1, "only the completed ask is journaled");
    assert_eq!(
        receipts[0].receipt.receipt.receiptId,
        ok.receipt.expect("receipt").receipt.receiptId
    );
}

#[test]
fn search_modes_datanet_filters_and_deletes_go_through_the_engine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine_in(dir.path(), EngineConfig::default(), None, true);
    let q = "gust speed landing";
    let bm25 = engine
        .search(q)
        .top_k(5)
        .mode(tribute::Mode::Bm25)
        .run()
        .expect("bm25");
    assert!(bm25.iter().all(|h| h.dense.is_none()), "{bm25:#?}");
    assert!(bm25.iter().all(|h| h.bm25.is_some()), "{bm25:#?}");
    let pilots = engine
        .search(q)
        .top_k(5)
        .datanets(["pilot-notes"])
        .run()
        .expect("filtered");
    assert!(!pilots.is_empty());
    assert!(
        pilots.iter().all(|h| h.datanet.as_str() == "pilot-notes"),
        "{pilots:#?}"
    );
    assert_eq!(pilots[0].doc_id.as_str(), "gust-field-notes");

    let docs = engine.index_size().expect("size").documents;
    assert!(engine.delete_document("gust-field-notes").expect("delete"));
    assert!(
        !engine
            .delete_document("gust-field-notes")
            .expect("delete again")
    );
    assert_eq!(engine.index_size().expect("size").documents, docs - 1);
    let after = engine.search(q).top_k(5).run().expect("search");
    assert!(
        after
            .iter()
            .all(|h| h.doc_id.as_str() != "gust-field-notes")
    );
}

#[test]
fn retrieval_receipts_credit_the_hits_without_a_model() {
    let (engine, _) = shared();
    let r = engine
        .retrieve("How should Zephyr drone batteries be stored?")
        .top_k(3)
        .run()
        .expect("retrieve");
    assert!(!r.hits.is_empty());
    assert_eq!(r.hits[0].doc_id.as_str(), "zephyr-battery");
    assert_eq!(
        r.citations.iter().map(|c| c.weight_bps).sum::<u32>(),
        10_000
    );
    assert_eq!(r.citations[0].doc_id, "zephyr-battery");
    let receipt = r.receipt.expect("receipt");
    receipt.verify(&LEDGER).expect("verifies");
    assert!(receipt.receipt.modelId.is_zero(), "no model ran");
    assert!(receipt.receipt.adapters.is_empty());
    assert_eq!(receipt.receipt.fee.to_string(), "100000000000000");
    let ids: Vec<&str> = r.hits.iter().map(|h| h.chunk_id.as_str()).collect();
    assert_eq!(receipt.receipt.answerHash, keccak256(ids.join("\n")));
    assert!(
        engine
            .receipts(None)
            .expect("receipts")
            .iter()
            .any(|j| j.receipt == receipt)
    );
    // Unsigned on request; nothing relevant: no receipt.
    let r = engine
        .retrieve("How should Zephyr drone batteries be stored?")
        .top_k(3)
        .sign(false)
        .run()
        .expect("retrieve");
    assert!(r.receipt.is_none() && !r.hits.is_empty());
    let r = engine
        .retrieve("Who won the football world cup in 2014?")
        .top_k(3)
        .run()
        .expect("retrieve");
    assert!(r.hits.is_empty() && r.receipt.is_none());
}

/// Receipt audits: ask → audit → match for each method, and the typed failures.
mod audit;
/// Extractive answers: quoted sentences of the sources, with no model.
mod extractive;
/// `[limits]`: requests and documents over the configured bounds are typed errors.
mod limits;
/// Settlement through the engine against a real anvil: receipts from asks are paid out to
/// the sample datanet's contributors; with the chain down, asks still answer and receipts
/// stay pending.
#[cfg(feature = "onchain")]
mod onchain;
/// Adapter slots: asks with different adapters share one running batch.
mod slots;
/// The source guard: alerts on answers a low-trust source dominates, and re-answers.
mod source_guard;
