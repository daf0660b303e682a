//! `Engine.chat`: a conversation through the FFI surface.

use tribute_ffi::{AskOptions, QueryRewrite, TurnRole};

use super::{Collect, PAYER, engine};

#[test]
fn a_session_rewrites_follow_ups_and_keeps_citation_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path());
    let options = AskOptions {
        top_k: Some(2),
        ..AskOptions::default()
    };
    let chat = engine
        .chat(options, Some(QueryRewrite::ContentWords))
        .expect("session");
    let first = chat.ask("What is the Zephyr SDK?".into()).expect("turn 1");
    assert_eq!(first.retrieval_query, None);
    assert_eq!(
        chat.retrieval_query("Who released it?".into())
            .expect("rewrite")
            .as_deref(),
        Some("zephyr sdk Who released it?")
    );
    let second = chat
        .stream("Who released it?".into(), Box::new(Collect::default()))
        .expect("stream")
        .expect("finished");
    assert_eq!(
        second.retrieval_query.as_deref(),
        Some("zephyr sdk Who released it?")
    );
    for a in [&first, &second] {
        let receipt = a.receipt.clone().expect("a receipt per turn");
        assert_eq!(receipt.verify(None).expect("verifies"), PAYER);
    }
    // A chunk cited in both turns has one number.
    for c in &second.citations {
        if let Some(earlier) = first.citations.iter().find(|e| e.chunk_id == c.chunk_id) {
            assert_eq!(earlier.marker, c.marker);
        }
    }
    let history = chat.history();
    assert_eq!(history.len(), 4);
    assert_eq!(history[2].role, TurnRole::User);
    assert_eq!(history[3].content, second.text);
    chat.reset();
    assert!(chat.history().is_empty());
}
