//! Prompts with numbered sources, and attribution measured with the model.

use std::sync::{Arc, OnceLock};

use tribute::attribution::{self, AttributionConfig, Method, Source};
use tribute::index::embedder::{EmbedderOptions, OnnxEmbedder, default_model_dir};
use tribute::inference::Generator;
use tribute::rag::{DEFAULT_SYSTEM_PROMPT, EmbedderScorer, ModelScorer, PromptSource, RagPrompt};

fn generator() -> &'static Generator {
    static G: OnceLock<Generator> = OnceLock::new();
    G.get_or_init(|| {
        let dir = tribute::inference::default_model_dir();
        Generator::load(&dir).unwrap_or_else(|e| {
            panic!(
                "SmolLM2 is required at {}; run scripts/setup.sh first ({e})",
                dir.display()
            )
        })
    })
}

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
const ANSWER: &str = "The capital of Zorbania is Quexton.";

#[test]
fn prompt_knows_which_tokens_show_each_source() {
    let g = generator();
    let src = sources();
    let p = RagPrompt::build(g, DEFAULT_SYSTEM_PROMPT, QUESTION, &src).expect("prompt");
    assert_eq!(p.source_tokens.len(), 3);
    for (r, s) in p.source_tokens.iter().zip(&src) {
        let shown = g
            .tokenizer()
            .decode(&p.tokens[r.clone()], false)
            .expect("decode");
        assert!(
            shown.contains(&s.text),
            "{shown:?} should show {:?}",
            s.text
        );
        assert!(!shown.contains("Question:"));
    }
    // Ranges are ordered and disjoint, and the question comes after them.
    assert!(p.source_tokens.windows(2).all(|w| w[0].end <= w[1].start));
    assert!(p.text.contains("[2] Zorbania\nThe capital of Zorbania"));
    assert!(p.text.ends_with("<|im_start|>assistant\n"), "{}", p.text);
}

#[test]
fn model_measured_weights_find_the_supporting_source() {
    let g = generator();
    let src = sources();
    let p = RagPrompt::build(g, DEFAULT_SYSTEM_PROMPT, QUESTION, &src).expect("prompt");
    let scorer = ModelScorer::new(g, &p, ANSWER, Vec::new()).expect("scorer");
    let sources: Vec<Source> = src
        .iter()
        .enumerate()
        .map(|(i, s)| Source::new(format!("s{i}"), s.text.clone()).with_retrieval_score(1.0))
        .collect();
    let embedder: Arc<dyn tribute::index::Embedder> = Arc::new(
        OnnxEmbedder::from_dir(&default_model_dir(), EmbedderOptions::default())
            .expect("MiniLM is required; run scripts/setup.sh"),
    );
    let sim = EmbedderScorer(embedder);
    for m in [Method::Loo, Method::Ablation, Method::Similarity] {
        let a = attribution::attribute(
            m,
            ANSWER,
            &sources,
            Some(&scorer),
            Some(&sim),
            &AttributionConfig::default(),
        )
        .expect("attribute");
        assert_eq!(a.weights_bps.iter().sum::<u32>(), 10_000);
        assert!(
            a.weights_bps[1] > 6_000,
            "{m}: {:?} (scores {:?})",
            a.weights_bps,
            a.scores
        );
        assert_eq!(a.sentences.len(), 1);
        assert_eq!(a.sentences[0].sources.first(), Some(&1), "{m}");
        assert_eq!(
            a.render(ANSWER, |i| format!(" [{}]", i + 1)),
            "The capital of Zorbania is Quexton. [2]",
            "{m}"
        );
    }
}
