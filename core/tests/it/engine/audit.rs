//! Receipt audits: ask → audit → match with the real SmolLM2 for each method, the typed
//! failures (record missing or altered, chunk gone from the knowledge base, another model,
//! unknown receipt, no record), cited chunks that moved in their documents, and an
//! `#[ignore]`d run over many receipts.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use alloy_primitives::{B256, keccak256};
use tribute::attribution::journal::JournalError;
use tribute::attribution::record::{RecordError, RecordStore};
use tribute::audit::Verdict;
use tribute::index::document::{LoadOptions, load_jsonl};
use tribute::index::{Layout, Section};
use tribute::inference::Generator;
use tribute::{Engine, Error, Method, PayerKey, SignedReceipt};

use super::{KEY0, QUESTION, embedder, engine_in, generator, sample_docs, signed_config};

/// A fresh signing engine over the sample datanet in `dir`.
fn signing_engine(dir: &Path) -> Engine {
    engine_in(dir, signed_config(dir), PayerKey::from_hex(KEY0).ok(), true)
}

fn ask(engine: &Engine, method: Method, seed: u64) -> SignedReceipt {
    let answer = engine
        .ask(QUESTION)
        .top_k(3)
        .method(method)
        .temperature(if seed == 0 { 0.0 } else { 0.7 })
        .seed(seed)
        .run()
        .expect("ask");
    let receipt = answer.receipt.expect("a signed receipt");
    assert_eq!(receipt.receipt.version, 2);
    assert_ne!(receipt.receipt.attributionHash, B256::ZERO);
    receipt
}

#[test]
fn ask_then_audit_matches_for_every_method() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = signing_engine(dir.path());
    // The model's hashes are taken up front (a server does it as it starts); an engine
    // without a key keeps no records and has nothing to hash.
    assert!(engine.prepare_records().expect("prepare records"));
    let other = tempfile::tempdir().expect("tempdir");
    let unsigned = engine_in(other.path(), signed_config(other.path()), None, false);
    assert!(!unsigned.prepare_records().expect("nothing to prepare"));
    drop(unsigned);
    let store = RecordStore::beside_journal(&dir.path().join("receipts"));
    for method in [
        Method::Loo,
        Method::Shapley,
        Method::Ablation,
        Method::Retrieval,
    ] {
        let receipt = ask(&engine, method, 0);
        // The record is stored under its hash, and the journal has the receipt.
        let record = store
            .get(&receipt.receipt.attributionHash)
            .expect("record stored beside the journal");
        assert_eq!(record.method, method);
        assert_eq!(record.sources.len(), 3);
        assert_eq!(
            keccak256(record.answer.as_bytes()),
            receipt.receipt.answerHash
        );
        let journaled = engine
            .journaled(receipt.receipt.receiptId)
            .expect("journaled");
        assert_eq!(journaled, receipt);

        let report = engine.audit(&receipt, None).expect("audit");
        println!(
            "{method}: {:?} max Δscore {:.2e} Δbps {} recorded {:?} recomputed {:?} ({:.2} s)",
            report.verdict,
            report.max_score_diff,
            report.max_bps_diff,
            report.recorded_bps,
            report.recomputed_bps,
            report.seconds
        );
        assert!(
            report.verdict.is_match(),
            "{method}: {:#?}",
            report.differences
        );
        // Model-free methods re-derive bit-exactly; model ones may differ in the last bits
        // of a score (within the documented tolerance), never in weights or payouts.
        if !method.needs_model() {
            assert_eq!(report.verdict, Verdict::Exact, "{method}: {report:#?}");
        }
        assert_eq!(report.model_checked, method.needs_model());
        assert!(!report.contributor_payouts.is_empty());
        assert!(report.contributor_payouts.iter().all(|(_, a, b)| a == b));
    }
}

#[test]
fn audit_failures_are_typed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = signing_engine(dir.path());
    let receipt = ask(&engine, Method::Loo, 0);
    let records = dir.path().join("receipts").join("records");
    let store = RecordStore::new(&records);
    let hash = receipt.receipt.attributionHash;

    // An unknown receipt.
    let unknown = keccak256("no such receipt");
    assert!(matches!(
        engine.journaled(unknown),
        Err(Error::Journal(JournalError::UnknownReceipt(id))) if id == unknown
    ));
    // A receipt without a record (version 1, or signed without one).
    let mut v1 = receipt.clone();
    v1.receipt.version = 1;
    v1.receipt.attributionHash = B256::ZERO;
    assert!(matches!(
        engine.audit(&v1, None),
        Err(Error::NoAttributionRecord { receipt_id, .. }) if receipt_id == receipt.receipt.receiptId
    ));

    // A knowledge base that no longer holds a cited chunk: the audit names it and cannot
    // decide.
    let other = tempfile::tempdir().expect("tempdir");
    let config = tribute::EngineConfig {
        index: other.path().join("kb"),
        ..Default::default()
    };
    let bob_only = Engine::builder()
        .config(config)
        .generator(generator())
        .embedder(embedder())
        .build()
        .expect("engine");
    let bob = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/zephyr/bob.jsonl");
    bob_only
        .add_documents(
            load_jsonl(&bob, &LoadOptions::default()).expect("bob"),
            None,
        )
        .expect("ingest");
    let record = store.get(&hash).expect("record");
    match bob_only.audit(&receipt, Some(&records)) {
        Err(Error::ChunksMissing {
            receipt_id,
            missing,
        }) => {
            assert_eq!(receipt_id, receipt.receipt.receiptId);
            assert!(!missing.is_empty());
            assert!(
                missing
                    .iter()
                    .all(|h| record.sources.iter().any(|s| s.content_hash == *h))
            );
        }
        other => panic!("expected ChunksMissing, got {other:?}"),
    }

    // Another model: a copy of SmolLM2 whose generation config differs by one byte.
    let model_dir = other.path().join("model");
    std::fs::create_dir_all(&model_dir).expect("model dir");
    let original = generator().dir().to_path_buf();
    for entry in std::fs::read_dir(&original).expect("model files") {
        let path = entry.expect("entry").path();
        let target = model_dir.join(path.file_name().expect("name"));
        if path
            .file_name()
            .is_some_and(|n| n == "generation_config.json")
        {
            let mut text = std::fs::read(&path).expect("read");
            text.push(b'\n');
            std::fs::write(&target, text).expect("write");
        } else {
            std::os::unix::fs::symlink(&path, &target).expect("symlink");
        }
    }
    // (The model is checked before the knowledge base: an empty one will do.)
    let mut config = signed_config(other.path());
    config.index = other.path().join("kb2");
    config.receipts.journal = None;
    let other_model = Engine::builder()
        .config(config)
        .generator(Arc::new(Generator::load(&model_dir).expect("copied model")))
        .embedder(embedder())
        .build()
        .expect("engine");
    assert!(matches!(
        other_model.audit(&receipt, Some(&records)),
        Err(Error::ModelMismatch { ref what, recorded, .. }) if what == "model" && recorded == record.model.hash
    ));

    // An altered record, then a missing one.
    let path = store.path(&hash);
    let bytes = std::fs::read(&path).expect("record file");
    let text = String::from_utf8(bytes.clone()).expect("utf-8");
    let forged = text.replacen("\"weightsBps\":[", "\"weightsBps\":[1", 1);
    assert_ne!(forged, text);
    std::fs::write(&path, forged).expect("tamper");
    assert!(matches!(
        engine.audit(&receipt, None),
        Err(Error::Record(RecordError::Altered { expected, .. })) if expected == hash
    ));
    std::fs::remove_file(&path).expect("remove");
    assert!(matches!(
        engine.audit(&receipt, None),
        Err(Error::Record(RecordError::Missing { hash: h, .. })) if h == hash
    ));
    // Put back, it audits again.
    std::fs::write(&path, bytes).expect("restore");
    assert!(
        engine
            .audit(&receipt, None)
            .expect("audit")
            .verdict
            .is_match()
    );
}

#[test]
fn audit_reports_cited_chunks_that_moved() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = signing_engine(dir.path());
    let receipt = ask(&engine, Method::Retrieval, 0);
    let records = dir.path().join("receipts").join("records");
    let record = RecordStore::new(&records)
        .get(&receipt.receipt.attributionHash)
        .expect("record");
    // JSONL chunks are located by their character span alone.
    assert!(record.sources.iter().all(|s| {
        s.locator
            .as_ref()
            .is_some_and(|l| l.pages.is_empty() && l.headings.is_empty() && l.char_end > 0)
    }));
    // Against the knowledge base the answer came from, nothing moved.
    let report = engine.audit(&receipt, None).expect("audit");
    assert_eq!(report.verdict, Verdict::Exact);
    assert!(report.locator_changes.is_empty(), "{report:#?}");

    // The same documents ingested again as one page under a heading: every chunk keeps its
    // text (the receipt still matches) but now lies on page 1, in section "Moved".
    let other = tempfile::tempdir().expect("tempdir");
    let moved = Engine::builder()
        .config(tribute::EngineConfig {
            index: other.path().join("kb"),
            ..Default::default()
        })
        .generator(generator())
        .embedder(embedder())
        .build()
        .expect("engine");
    let docs: Vec<tribute::Document> = sample_docs()
        .into_iter()
        .map(|mut d| {
            d.layout = Layout {
                page_starts: vec![0],
                sections: vec![Section {
                    start: 0,
                    headings: vec!["Moved".into()],
                }],
            };
            d
        })
        .collect();
    moved.add_documents(docs, None).expect("ingest");
    let report = moved.audit(&receipt, Some(&records)).expect("audit");
    assert_eq!(report.verdict, Verdict::Exact, "{report:#?}");
    assert_eq!(report.locator_changes.len(), record.sources.len());
    for (i, (c, s)) in report
        .locator_changes
        .iter()
        .zip(&record.sources)
        .enumerate()
    {
        assert_eq!(c.source, i);
        assert_eq!((&c.chunk_id, c.content_hash), (&s.chunk_id, s.content_hash));
        assert_eq!(c.current_chunk_id, c.chunk_id);
        assert_eq!(c.recorded, s.locator);
        let (was, now) = (
            c.recorded.as_ref().expect("recorded"),
            c.current.as_ref().expect("current"),
        );
        assert_eq!(now.pages, [1]);
        assert_eq!(now.headings, ["Moved"]);
        assert_eq!(
            (now.char_start, now.char_end),
            (was.char_start, was.char_end)
        );
        assert!(
            c.to_string()
                .contains(&format!("[{}] {}: recorded chars", i + 1, s.chunk_id)),
            "{c}"
        );
        assert!(c.to_string().contains("now p. 1 · Moved · chars"), "{c}");
    }
}

/// Audits N receipts per method (`TRIBUTE_AUDIT_N`, default 25: 100 receipts in all) from
/// sampled asks (temperature 0.7, a seed each), and prints how many match and how long an
/// audit takes. `cargo test -p tribute --test it audit_many -- --ignored --nocapture`.
#[test]
#[ignore = "a benchmark: minutes of model time"]
fn audit_many() {
    let n: u64 = std::env::var("TRIBUTE_AUDIT_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = signing_engine(dir.path());
    println!(
        "| method | receipts | exact | within tol. | mismatch | median ask s | median audit s |"
    );
    println!("|---|---|---|---|---|---|---|");
    for method in [
        Method::Loo,
        Method::Shapley,
        Method::Ablation,
        Method::Retrieval,
    ] {
        let (mut exact, mut tolerant, mut mismatched) = (0, 0, 0);
        let (mut ask_s, mut audit_s) = (Vec::new(), Vec::new());
        for seed in 1..=n {
            let t = Instant::now();
            let receipt = ask(&engine, method, seed);
            ask_s.push(t.elapsed().as_secs_f64());
            let report = engine.audit(&receipt, None).expect("audit");
            audit_s.push(report.seconds);
            match report.verdict {
                Verdict::Exact => exact += 1,
                Verdict::WithinTolerance => tolerant += 1,
                Verdict::Mismatch => {
                    mismatched += 1;
                    println!("{method} seed {seed}: {:?}", report.differences);
                }
            }
        }
        println!(
            "| {method} | {n} | {exact} | {tolerant} | {mismatched} | {:.2} | {:.2} |",
            median(&mut ask_s),
            median(&mut audit_s)
        );
        assert_eq!(mismatched, 0, "{method}");
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
