//! Attribution cost: time of `loo` (with and without the question's weight), `shapley` and
//! `ablation` relative to generating the answer, for
//! k = 4, 8 and 16 sources, with SmolLM2-135M-Instruct on the CPU (after `make setup`).
//! Sources are passages from `examples/data/attribution/dev.jsonl`.
//!
//! `cargo bench -p tribute --bench attribution` (env `BENCH_REPS`, default 2;
//! `BENCH_ANSWER_TOKENS`, default 48; `BENCH_MODEL`, a model directory, default the fp32 export;
//! `BENCH_PREFILL_CHUNK`, prompt tokens per prefill pass).

use std::path::Path;
use std::time::Instant;

use tribute::attribution::{self, AttributionConfig, Method, Source};
use tribute::inference::{GenerateRequest, Generator, GeneratorOptions, Prompt};
use tribute::rag::{DEFAULT_SYSTEM_PROMPT, ModelScorer, PromptSource, RagPrompt};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let reps: usize = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let answer_tokens: usize = std::env::var("BENCH_ANSWER_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/attribution/dev.jsonl");
    let text = std::fs::read_to_string(&data).expect("read dev.jsonl");
    let examples: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let question = examples[0]["question"]
        .as_str()
        .expect("question")
        .to_owned();
    let mut pool: Vec<PromptSource> = Vec::new();
    for ex in &examples {
        for p in ex["passages"].as_array().expect("passages") {
            pool.push(PromptSource {
                title: p["title"].as_str().unwrap_or_default().to_owned(),
                text: p["text"].as_str().unwrap_or_default().to_owned(),
            });
        }
    }
    // BENCH_MODEL: another export (an int4 one, say) in place of the default fp32 model
    let model = std::env::var_os("BENCH_MODEL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(tribute::inference::default_model_dir);
    // BENCH_PREFILL_CHUNK: prompt tokens per prefill pass (0: whole prompts)
    let chunk = std::env::var("BENCH_PREFILL_CHUNK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(tribute::inference::DEFAULT_PREFILL_CHUNK);
    let options = GeneratorOptions {
        prefill_chunk: chunk,
        ..GeneratorOptions::default()
    };
    let g = Generator::load_with(&model, options).expect("run make setup first");
    println!(
        "# attribution cost, {}, prefill chunk {}, {} cores, answers of {answer_tokens} tokens, median of {reps}\n",
        model.display(),
        chunk,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "| k | prompt tokens | generation s | loo s (÷ gen) | loo answer-only s (÷ gen) | shapley s (÷ gen) | ablation (32) s (÷ gen) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for k in [4usize, 8, 16] {
        let shown = &pool[..k];
        let prompt = RagPrompt::build(&g, DEFAULT_SYSTEM_PROMPT, &question, shown).expect("prompt");
        let sources: Vec<Source> = shown
            .iter()
            .enumerate()
            .map(|(i, s)| Source::new(format!("p{i}"), s.text.clone()).with_retrieval_score(1.0))
            .collect();
        let (mut gens, mut loo, mut abl) = (Vec::new(), Vec::new(), Vec::new());
        let (mut loo_answer, mut shap) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            let t = Instant::now();
            let out = g
                .generate(
                    &GenerateRequest::new(Prompt::Tokens(prompt.tokens.clone()))
                        .max_tokens(answer_tokens)
                        .ignore_eos(true),
                )
                .expect("generate");
            gens.push(t.elapsed().as_secs_f64());
            let scorer = ModelScorer::from_tokens(&g, &prompt, out.tokens.clone(), Vec::new())
                .expect("scorer");
            let answer = out.text.clone();
            let cfg = AttributionConfig::default();
            let answer_only = AttributionConfig {
                question_weight: 0.0,
                ..AttributionConfig::default()
            };
            for (m, c, v) in [
                (Method::Loo, &cfg, &mut loo),
                (Method::Loo, &answer_only, &mut loo_answer),
                (Method::Shapley, &cfg, &mut shap),
                (Method::Ablation, &cfg, &mut abl),
            ] {
                let t = Instant::now();
                attribution::attribute(m, &answer, &sources, Some(&scorer), None, c)
                    .expect("attribute");
                v.push(t.elapsed().as_secs_f64());
            }
        }
        let gs = median(gens);
        let cell = |v: Vec<f64>| {
            let s = median(v);
            format!("{s:.2} ({:.2}x)", s / gs)
        };
        println!(
            "| {k} | {} | {gs:.2} | {} | {} | {} | {} |",
            prompt.tokens.len(),
            cell(loo),
            cell(loo_answer),
            cell(shap),
            cell(abl)
        );
    }
}
