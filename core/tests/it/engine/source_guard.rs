//! The source guard through the engine: an answer a low-trust source dominates carries an
//! alert, a high-trust one does not, and `reanswer` answers again without the source.

use alloy_primitives::keccak256;
use tribute::EngineConfig;
use tribute::attribution::receipt::PayerKey;
use tribute::config::{DatanetConfig, TrustLevel};
use tribute::source_guard::AlertReason;

use super::{KEY0, QUESTION, engine_in, signed_config};

/// The sample datanet at `trust`, with a guard that flags at half the weight (the top
/// source of `QUESTION` at top-k 3 carries more, see `ask_cites_the_supporting_source…`).
fn config(trust: TrustLevel, reanswer: bool) -> EngineConfig {
    let mut c = EngineConfig::default();
    c.generation.max_tokens = 48;
    c.datanets
        .insert("zephyr-docs".into(), DatanetConfig { trust });
    c.source_guard.dominance = 0.5;
    c.source_guard.reanswer = reanswer;
    c
}

#[test]
fn source_guard_flags_a_dominant_low_trust_source_and_not_a_high_trust_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let low = engine_in(dir.path(), config(TrustLevel::Low, false), None, true);
    let answer = low.ask(QUESTION).top_k(3).run().expect("ask");
    let top = &answer.citations[0];
    let alert = answer.source_alert.as_ref().expect("an alert");
    println!("{alert:#?}");
    assert_eq!(alert.reason, AlertReason::LowTrust);
    assert_eq!(
        (
            alert.marker,
            alert.chunk_id.as_str(),
            alert.datanet.as_str()
        ),
        (top.marker, top.chunk_id.as_str(), "zephyr-docs")
    );
    assert_eq!(alert.contributor, top.contributor);
    assert!((alert.share - f64::from(top.weight_bps) / 1e4).abs() < 1e-9);
    assert!(!alert.reanswered && alert.replaced_answer.is_none());

    let dir = tempfile::tempdir().expect("tempdir");
    let high = engine_in(dir.path(), config(TrustLevel::High, false), None, true);
    let answer = high.ask(QUESTION).top_k(3).run().expect("ask");
    assert_eq!(answer.source_alert, None, "{:#?}", answer.citations);
}

#[test]
fn source_guard_reanswers_without_the_flagged_source_and_receipts_only_the_new_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(TrustLevel::Low, true);
    let signed = signed_config(dir.path());
    c.receipts.journal = signed.receipts.journal;
    c.receipts.ledger = signed.receipts.ledger;
    let key = PayerKey::from_hex(KEY0).expect("key");
    let engine = engine_in(dir.path(), c, Some(key), true);
    let answer = engine.ask(QUESTION).top_k(3).run().expect("ask");
    let alert = answer.source_alert.as_ref().expect("an alert");
    println!("{alert:#?}\n{}", answer.cited_text);
    assert!(alert.reanswered);
    let replaced = alert
        .replaced_answer
        .as_deref()
        .expect("the flagged answer");
    assert!(!replaced.trim().is_empty());
    // The new answer was made from the other sources only.
    assert_eq!(answer.usage.sources_used, 2);
    assert!(
        answer
            .citations
            .iter()
            .all(|c| c.chunk_id != alert.chunk_id),
        "{:#?}",
        answer.citations
    );

    // Only the answer returned was signed and journaled: the flagged one never was.
    let receipt = answer
        .receipt
        .as_ref()
        .expect("the new answer is receipted");
    let journaled = engine.receipts(None).expect("receipts");
    assert_eq!(journaled.len(), 1, "{journaled:#?}");
    assert_eq!(journaled[0].receipt, *receipt);
    assert_eq!(receipt.receipt.answerHash, keccak256(&answer.text));
    assert_ne!(receipt.receipt.answerHash, keccak256(replaced));
}
