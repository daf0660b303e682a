//! Conversations (`Engine::chat`, `Session`) end to end with the real SmolLM2 and MiniLM:
//! follow-ups rewritten for retrieval, citations numbered across turns, one receipt per
//! turn crediting only that turn's sources, the fallback rewrite without a model, and a
//! history longer than the context.

use std::collections::HashSet;
use std::path::Path;

use alloy_primitives::keccak256;
use tribute::attribution::receipt::PayerKey;
use tribute::config::AnswerMode;
use tribute::index::document::{LoadOptions, load_jsonl};
use tribute::{Answer, AskEvent, Engine, EngineConfig, QueryRewrite, Session, Turn};

use crate::support::{KEY0, LEDGER, embedder, generator};

const ATTITUDE: &str =
    "How many times per second does the Zephyr flight controller correct the attitude?";

/// A signing engine over the sample datanet in `dir`; `generate` false: extractive answers
/// and no model loaded.
fn engine(dir: &Path, generate: bool) -> Engine {
    let mut config = EngineConfig {
        index: dir.join("kb"),
        ..Default::default()
    };
    config.receipts.journal = Some(dir.join("receipts"));
    config.receipts.ledger = Some(LEDGER);
    config.generation.max_tokens = 48;
    config.retrieval.top_k = 3;
    let mut b = Engine::builder().embedder(embedder());
    if generate {
        b = b.generator(generator());
    } else {
        config.answer_mode = AnswerMode::Extractive;
    }
    let engine = b
        .config(config)
        .signer(PayerKey::from_hex(KEY0).expect("key"))
        .build()
        .expect("engine");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/zephyr");
    let mut docs = Vec::new();
    for f in ["alice.jsonl", "bob.jsonl"] {
        docs.extend(load_jsonl(&data.join(f), &LoadOptions::default()).expect("sample datanet"));
    }
    engine.add_documents(docs, None).expect("ingest");
    engine
}

fn cited_docs(a: &Answer) -> Vec<&str> {
    a.citations.iter().map(|c| c.doc_id.as_str()).collect()
}

/// The checks every turn of a session passes: its receipt verifies, hashes its own
/// question and answer, and credits exactly its own citations; its markers are the
/// session's numbers.
fn check_turn(session: &Session, a: &Answer) {
    println!(
        "Q: {}\n  searched for: {:?}\n  A: {}\n  cites: {:?}",
        a.question,
        a.retrieval_query,
        a.cited_text,
        a.citations
            .iter()
            .map(|c| (c.marker, &c.chunk_id, c.weight_bps))
            .collect::<Vec<_>>()
    );
    let receipt = a.receipt.as_ref().expect("each turn signs a receipt");
    receipt.verify(&LEDGER).expect("the receipt verifies");
    let r = &receipt.receipt;
    assert_eq!(
        r.queryHash,
        keccak256(&a.question),
        "the turn's question alone"
    );
    assert_eq!(r.answerHash, keccak256(&a.text));
    let credited: HashSet<String> = r.chunks.iter().map(|c| c.contentHash.to_string()).collect();
    let cited: HashSet<String> = a.citations.iter().map(|c| c.content_hash.clone()).collect();
    assert_eq!(
        credited, cited,
        "the receipt credits this turn's citations only"
    );
    let numbered = session.sources();
    for c in &a.citations {
        let s = &numbered[c.marker - 1];
        assert_eq!(
            (s.marker, s.chunk_id.as_str()),
            (c.marker, c.chunk_id.as_str())
        );
    }
    let markers: HashSet<usize> = a.citations.iter().map(|c| c.marker).collect();
    for s in &a.sentences {
        assert!(s.markers.iter().all(|m| markers.contains(m)), "{s:?}");
        for m in &s.markers {
            assert!(a.cited_text.contains(&format!("[{m}]")), "{}", a.cited_text);
        }
    }
}

#[test]
fn a_follow_up_is_rewritten_for_retrieval_and_answered_with_the_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path(), true);
    let chat = engine.chat();

    let first = chat.ask("What is the Zephyr SDK?").expect("first turn");
    check_turn(&chat, &first);
    assert_eq!(
        first.retrieval_query, None,
        "a first question is searched as asked"
    );
    assert!(cited_docs(&first).contains(&"zephyr-intro"), "{first:#?}");

    // The follow-up, streamed: text pieces, then the numbered answer.
    let follow_up = "Who released it?";
    let expected_query = chat.retrieval_query(follow_up).expect("rewrite");
    let mut text = String::new();
    let mut done = None;
    for event in chat.stream(follow_up).expect("stream") {
        match event.expect("event") {
            AskEvent::Text(t) => text.push_str(&t),
            AskEvent::Done(a) => done = Some(*a),
        }
    }
    let second = done.expect("the stream ends with the answer");
    check_turn(&chat, &second);
    assert_eq!(second.text.trim(), text.trim());
    assert_eq!(
        second.question, follow_up,
        "the answer responds to the question asked"
    );
    let query = second.retrieval_query.clone().expect("a rewritten query");
    assert_eq!(Some(query.clone()), expected_query);
    assert_ne!(query, follow_up);
    let named = query.to_lowercase();
    assert!(
        named.contains("zephyr") || named.contains("sdk"),
        "the standalone question names what `it` is: {query:?}"
    );
    // The rewrite found the document that says who released the SDK.
    let intro = second
        .citations
        .iter()
        .find(|c| c.doc_id == "zephyr-intro")
        .unwrap_or_else(|| panic!("{second:#?}"));
    let first_intro = first
        .citations
        .iter()
        .find(|c| c.doc_id == "zephyr-intro")
        .expect("cited in turn 1");
    assert_eq!(
        intro.marker, first_intro.marker,
        "the same source keeps its number"
    );

    let history = chat.history();
    assert_eq!(history.len(), 4);
    assert_eq!(history[2], Turn::user(follow_up));
    assert_eq!(history[3], Turn::assistant(second.text.clone()));

    // A fresh conversation numbers from 1 and searches the question as asked.
    chat.reset();
    assert!(chat.history().is_empty() && chat.sources().is_empty());
    assert_eq!(chat.retrieval_query(follow_up).expect("no history"), None);
}

#[test]
fn citations_keep_their_numbers_across_turns_and_each_turn_credits_its_own_sources() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path(), true);
    let chat = engine.chat();
    let questions = [
        ATTITUDE,
        "How long does a full charge of the Zephyr battery take?",
        ATTITUDE,
    ];
    let mut answers = Vec::new();
    for q in questions {
        let a = chat.ask(q).expect("turn");
        check_turn(&chat, &a);
        answers.push(a);
    }
    // Numbers are 1..=n over the session, each naming one chunk.
    let sources = chat.sources();
    assert!(!sources.is_empty());
    for (i, s) in sources.iter().enumerate() {
        assert_eq!(s.marker, i + 1);
    }
    let ids: HashSet<&str> = sources.iter().map(|s| s.chunk_id.as_str()).collect();
    assert_eq!(ids.len(), sources.len());
    // The first turn's main source is cited again in the third with the same number.
    let top = &answers[0].citations[0];
    assert_eq!(top.doc_id, "zephyr-intro", "{:#?}", answers[0].citations);
    let again = answers[2]
        .citations
        .iter()
        .find(|c| c.chunk_id == top.chunk_id)
        .unwrap_or_else(|| panic!("{:#?}", answers[2].citations));
    assert_eq!(again.marker, top.marker);
    // Sources first cited in turn 2 were numbered after all of turn 1's.
    let first_numbers: HashSet<usize> = answers[0].citations.iter().map(|c| c.marker).collect();
    let max_first = first_numbers.iter().copied().max().unwrap_or(0);
    for c in &answers[1].citations {
        if !first_numbers.contains(&c.marker) {
            assert!(c.marker > max_first, "{c:?}");
        }
    }
    // Three turns, three distinct receipts in the journal.
    let receipts: HashSet<_> = answers
        .iter()
        .map(|a| a.receipt.as_ref().expect("receipt").receipt.receiptId)
        .collect();
    assert_eq!(receipts.len(), 3);
    assert_eq!(engine.receipts(None).expect("journal").len(), 3);
}

#[test]
fn without_a_generator_follow_ups_are_searched_with_the_previous_content_words() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path(), false);
    assert!(engine.generator().is_none());
    let chat = engine.chat();

    let first = chat.ask("What is the Zephyr SDK?").expect("turn 1");
    check_turn(&chat, &first);

    let second = chat.ask("Who released it?").expect("turn 2");
    check_turn(&chat, &second);
    assert_eq!(
        second.retrieval_query.as_deref(),
        Some("zephyr sdk Who released it?")
    );
    // The rewritten query finds the source that answers it (who released the SDK); the
    // question as asked ("Who released it?") names nothing to search for.
    let found = engine
        .search(second.retrieval_query.clone().unwrap_or_default())
        .top_k(3)
        .run()
        .expect("search");
    assert!(
        found
            .iter()
            .any(|h| h.chunk.doc_id.as_str() == "zephyr-intro"),
        "{found:#?}"
    );
    // A chunk cited in both turns keeps its number.
    for c in &second.citations {
        if let Some(earlier) = first.citations.iter().find(|e| e.chunk_id == c.chunk_id) {
            assert_eq!(earlier.marker, c.marker, "{c:?}");
        }
    }

    // A question that stands on its own is searched as asked; a new source gets the next
    // number.
    let before = chat.sources();
    assert!(
        before.iter().all(|s| s.doc_id != "zephyr-battery"),
        "{before:?}"
    );
    let third = chat
        .ask("How long does a full charge take?")
        .expect("turn 3");
    check_turn(&chat, &third);
    assert_eq!(third.retrieval_query, None);
    let battery = third
        .citations
        .iter()
        .find(|c| c.doc_id == "zephyr-battery")
        .unwrap_or_else(|| panic!("{third:#?}"));
    assert!(battery.marker > before.len(), "{battery:?}");
    assert_eq!(chat.sources()[battery.marker - 1].doc_id, "zephyr-battery");
    // A follow-up of that carries the last standalone question's content words.
    assert_eq!(
        chat.retrieval_query("And its cells?")
            .expect("rewrite")
            .as_deref(),
        Some("long full charge take And its cells?")
    );

    // With rewriting off, follow-ups are searched as asked.
    let plain = engine.chat().rewrite(QueryRewrite::Off);
    plain.ask("What is the Zephyr SDK?").expect("turn 1");
    let a = plain.ask("Who released it?").expect("turn 2");
    assert_eq!(a.retrieval_query, None);
    // An empty question is refused before anything runs, and leaves no turn.
    assert!(plain.ask("  ").is_err());
    assert_eq!(plain.history().len(), 4);
}

#[test]
fn a_history_longer_than_the_context_drops_the_oldest_turns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path(), true);
    let context = generator().config().context_length;
    // Far more history than the context holds.
    let filler = "The weather was mild and the drones flew over the hills all day. ".repeat(40);
    let turns: Vec<Turn> = (0..40)
        .flat_map(|i| {
            [
                Turn::user(format!("Question {i}: {filler}")),
                Turn::assistant(format!("Answer {i}: {filler}")),
            ]
        })
        .collect();
    let a = engine
        .ask(ATTITUDE)
        .history(turns)
        .run()
        .expect("answers despite the history");
    a.receipt
        .as_ref()
        .expect("receipt")
        .verify(&LEDGER)
        .expect("verifies");
    let max_tokens = engine.config().generation.max_tokens;
    assert!(
        a.usage.prompt_tokens + max_tokens <= context,
        "{} prompt tokens",
        a.usage.prompt_tokens
    );
    assert!(a.usage.sources_used >= 1, "the sources keep their half");
}
