//! The citation audit and the grounding flag with the real SmolLM2: a teacher-forced
//! answer whose second sentence no source supports, the audit of a real ask, and
//! `CitationBench` on two examples of examples/data/attribution/dev.jsonl.

use std::path::Path;
use std::sync::Arc;

use tribute::attribution::{self, AttributionConfig, Method, Source};
use tribute::citations::{
    CitationBench, InfluenceUnit, MIN_INFLUENCE_NATS, audit_attribution, markers,
};
use tribute::index::embedder::{EmbedderOptions, OnnxEmbedder, default_model_dir};
use tribute::qa::QaExample;
use tribute::rag::{DEFAULT_SYSTEM_PROMPT, ModelScorer, PromptSource, RagPrompt};
use tribute::{Document, Engine, EngineConfig};

use crate::support::generator;

fn sources() -> Vec<PromptSource> {
    let s = |title: &str, text: &str| PromptSource {
        title: title.into(),
        text: text.into(),
    };
    vec![
        s(
            "Bananas",
            "Bananas are yellow when they are ripe and green before.",
        ),
        s(
            "Zorbania",
            "The capital of Zorbania is Quexton, a port on the northern coast.",
        ),
        s("Tides", "Spring tides happen near new and full moon."),
    ]
}

const QUESTION: &str = "What is the capital of Zorbania?";

#[test]
fn a_sentence_no_source_supports_is_flagged_unsupported() {
    let g = generator();
    let shown = sources();
    let prompt = RagPrompt::build(&g, DEFAULT_SYSTEM_PROMPT, QUESTION, &shown).expect("prompt");
    // Teacher-forced: the first sentence comes from source 2, the second from no source.
    let answer = "The capital of Zorbania is Quexton. My grandmother knitted seven purple \
                  scarves last winter.";
    let scorer = ModelScorer::new(&g, &prompt, answer, Vec::new()).expect("scorer");
    let src: Vec<Source> = shown
        .iter()
        .map(|s| Source::new(s.title.clone(), s.text.clone()))
        .collect();
    let a = attribution::attribute(
        Method::Loo,
        answer,
        &src,
        Some(&scorer),
        None,
        &AttributionConfig::default(),
    )
    .expect("attribution");
    let (sentences, audit) = audit_attribution(answer, &a, MIN_INFLUENCE_NATS);
    for s in &sentences {
        println!(
            "{:?} markers {:?} supported {} support {:?} unused {:?} uncited {:?}",
            s.text, s.markers, s.supported, s.support, s.unused_markers, s.uncited_markers
        );
    }
    println!("{audit:?}");
    assert_eq!(sentences.len(), 2);
    let (fact, made_up) = (&sentences[0], &sentences[1]);
    assert!(fact.supported, "{fact:?}");
    assert!(fact.support.expect("measured") >= MIN_INFLUENCE_NATS);
    assert!(!fact.unused_markers.contains(&2), "{fact:?}");
    assert!(!made_up.supported, "{made_up:?}");
    assert!(made_up.support.expect("measured") < MIN_INFLUENCE_NATS);
    // Whatever markers attribution still shows on it (a source with a tiny positive drop
    // passes its relative rule) are cited but unused; nothing is used but uncited.
    assert_eq!(made_up.unused_markers, made_up.markers, "{made_up:?}");
    assert!(made_up.uncited_markers.is_empty());
    assert!(fact.uncited_markers.is_empty() || !fact.markers.is_empty());
    assert_eq!(audit.counts.sentences, 2);
    assert_eq!(audit.counts.unsupported_sentences, 1);
    assert_eq!(audit.unit, InfluenceUnit::Nats);
}

#[test]
fn an_ask_carries_its_citation_audit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = EngineConfig {
        index: dir.path().join("kb"),
        ..Default::default()
    };
    config.generation.max_tokens = 40;
    let embedder = Arc::new(
        OnnxEmbedder::from_dir(&default_model_dir(), EmbedderOptions::default())
            .expect("MiniLM is required; run scripts/setup.sh"),
    );
    let engine = Engine::builder()
        .config(config)
        .generator(generator())
        .embedder(embedder)
        .build()
        .expect("engine");
    let docs: Vec<Document> = sources()
        .into_iter()
        .enumerate()
        .map(|(i, s)| Document::new(format!("d{i}"), s.text).with_title(s.title))
        .collect();
    engine.add_documents(docs, None).expect("ingest");
    let answer = engine.ask(QUESTION).top_k(3).run().expect("ask");
    println!("{}\n{:#?}", answer.cited_text, answer.sentences);
    let audit = answer.citation_audit.as_ref().expect("audit");
    assert_eq!(audit.method, Method::Loo);
    assert_eq!(audit.threshold, MIN_INFLUENCE_NATS);
    assert_eq!(audit.counts.sentences, answer.sentences.len());
    let k = answer.usage.sources_used;
    for s in &answer.sentences {
        let support = s.support.expect("measured");
        assert_eq!(s.supported, support >= audit.threshold, "{s:?}");
        assert!(s.uncited_markers.iter().all(|m| !s.markers.contains(m)));
        assert!(s.uncited_markers.iter().all(|m| (1..=k).contains(m)));
    }
    assert_eq!(
        audit.counts.unsupported_sentences,
        answer.sentences.iter().filter(|s| !s.supported).count()
    );
    // The answer names Quexton: some sentence is supported, by the Zorbania source.
    if answer.text.contains("Quexton") {
        assert!(answer.sentences.iter().any(|s| s.supported), "{answer:#?}");
    }
    let json = serde_json::to_value(&answer).expect("json");
    assert!(
        json["citation_audit"]["precision"].is_number()
            || json["citation_audit"]["precision"].is_null()
    );
    assert!(json["sentences"][0]["supported"].is_boolean());
}

#[test]
fn eval_citations_scores_two_examples() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/attribution/dev.jsonl");
    let text = std::fs::read_to_string(&data).expect("dev.jsonl");
    let dir = tempfile::tempdir().expect("tempdir");
    let two = dir.path().join("two.jsonl");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(2)
        .collect();
    std::fs::write(&two, lines.join("\n")).expect("write");
    let examples = QaExample::load_jsonl(&two).expect("examples");
    let report = CitationBench::new(generator())
        .max_tokens(32)
        .run(&examples)
        .expect("bench");
    println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    assert_eq!(report.examples + report.skipped.len(), 2);
    assert_eq!(report.examples, 2, "{:?}", report.skipped);
    assert_eq!(report.method, Method::Loo);
    assert_eq!(report.sweep.len(), 6);
    for (row, ex) in report.rows.iter().zip(&examples) {
        let k = ex.passages.len();
        assert_eq!(row.id, ex.id);
        assert!(!row.gold.is_empty());
        assert!(
            row.tribute
                .iter()
                .chain(&row.measured)
                .all(|m| (1..=k).contains(m))
        );
        let (clean, placed) = markers::strip_markers(&row.answer);
        assert!(clean.len() <= row.answer.len());
        for m in &placed {
            assert!(row.prompted.contains(&m.number));
        }
        if !clean.trim().is_empty() {
            assert_eq!(row.max_influence.len(), k);
        }
    }
    for g in [report.prompted, report.tribute, report.measured] {
        assert!(g.precision.is_none_or(|p| (0.0..=1.0).contains(&p)));
        assert!((0.0..=1.0).contains(&g.recall));
    }
}
