//! Extractive answers from an engine that loads no generator.

use tribute::attribution::receipt::PayerKey;
use tribute::config::AnswerMode;
use tribute::{AskEvent, B256, Engine, EngineConfig};

use super::{KEY0, LEDGER, QUESTION, embedder, sample_docs, signed_config};

#[test]
fn extractive_answers_quote_cited_sentences_without_a_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config: EngineConfig = signed_config(dir.path());
    config.index = dir.path().join("kb");
    config.answer_mode = AnswerMode::Extractive;
    let engine = Engine::builder()
        .config(config)
        .embedder(embedder())
        .signer(PayerKey::from_hex(KEY0).expect("key"))
        .build()
        .expect("an extractive engine needs no model");
    assert!(engine.generator().is_none());
    engine.add_documents(sample_docs(), None).expect("ingest");

    let a = engine.ask(QUESTION).run().expect("extractive answer");
    assert!(!a.sentences.is_empty() && a.sentences.len() <= 2, "{a:?}");
    let total: u32 = a.citations.iter().map(|c| c.weight_bps).sum();
    assert_eq!(total, 10_000);
    for s in &a.sentences {
        // Every sentence is a source's own words, cited to that source.
        assert_eq!(&a.text[s.span.clone()], s.text);
        let marker = s.markers[0];
        let cited = a
            .citations
            .iter()
            .find(|c| c.marker == marker)
            .expect("cited");
        assert!(cited.weight_bps > 0);
        assert!(a.cited_text.contains(&format!("{} [{marker}]", s.text)));
    }
    assert!(a.text.to_lowercase().contains("forty"), "{}", a.text);
    let receipt = a.receipt.expect("signed");
    receipt.verify(&LEDGER).expect("verifies");
    assert_eq!(receipt.receipt.modelId, B256::ZERO, "no model ran");

    // Streaming gives the same answer; asking for a generated one is a clear error.
    let events: Vec<AskEvent> = engine
        .ask(QUESTION)
        .stream()
        .expect("stream")
        .collect::<Result<_, _>>()
        .expect("events");
    assert!(matches!(events.last(), Some(AskEvent::Done(d)) if d.text == a.text));
    let err = engine
        .ask(QUESTION)
        .answer_mode(AnswerMode::Generative)
        .run()
        .unwrap_err();
    assert!(err.to_string().contains("no generator"), "{err}");
}
