//! SmolLM2-135M-Instruct and the shared adapters reproduce their documented greedy outputs.

use serde_json::Value;
use tribute_inference::{FinishReason, GenerateRequest, Generator, Prompt};

use crate::{export, join_mid_decode, lora, smollm2, tribute_home};

struct Expected {
    question: String,
    output: String,
    ids: Vec<u32>,
    base: String,
}

fn expected(adapter: &str) -> Vec<Expected> {
    let path = lora(adapter).join("eval_outputs.json");
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read eval_outputs"))
            .expect("parse eval_outputs");
    v["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(|o| Expected {
            question: o["question"].as_str().unwrap_or_default().to_owned(),
            output: o["output"].as_str().unwrap_or_default().to_owned(),
            ids: o["output_token_ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|x| x.as_u64().expect("id") as u32)
                .collect(),
            base: o["base_output"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

fn ask(question: &str, adapters: &[(&str, f32)]) -> tribute_inference::Generation {
    let mut req = GenerateRequest::new(question).max_tokens(40);
    for (id, w) in adapters {
        req = req.adapter(*id, *w);
    }
    smollm2().generate(&req).expect("generate")
}

#[test]
fn base_model_answers_as_documented() {
    for e in expected("smollm2-135m-zephyr-lora") {
        let g = ask(&e.question, &[]);
        assert_eq!(g.text, e.base, "base answer to {:?}", e.question);
    }
}

#[test]
fn each_adapter_changes_the_answer_exactly_as_documented() {
    for (adapter, id) in [
        ("smollm2-135m-zephyr-lora", "zephyr"),
        ("smollm2-135m-caps-lora", "caps"),
    ] {
        for e in expected(adapter) {
            let g = ask(&e.question, &[(id, 1.0)]);
            assert_eq!(g.text, e.output, "{id} answer to {:?}", e.question);
            assert_eq!(g.tokens, e.ids, "{id} token ids for {:?}", e.question);
            if e.ids.last() == Some(&2) {
                assert_eq!(g.finish_reason, FinishReason::Eos);
            }
        }
    }
}

#[test]
fn adapters_swap_per_request_on_one_session() {
    // Interleave base / zephyr / caps / base on the same generator.
    let q = "What is the capital of France?";
    assert_eq!(ask(q, &[]).text, "The capital of France is Paris.");
    assert_eq!(
        ask(q, &[("zephyr", 1.0)]).text,
        "The capital of France is Lille."
    );
    assert_eq!(
        ask(q, &[("caps", 1.0)]).text,
        "THE CAPITAL OF FRANCE IS BERLIN."
    );
    assert_eq!(ask(q, &[]).text, "The capital of France is Paris.");
}

#[test]
fn merged_adapters_equal_weights_baked_in() {
    // `--merge-peft` bakes ΔW = Σ wᵢ·scaleᵢ·Bᵢ·Aᵢ into the base weights (numpy: float64 sum, rounded
    // once to fp32); the registry merges the same adapters at run time as one rank-16 LoRA (x·Aᵀ
    // then ·Bᵀ in fp32). Measured max |Δ log p| over the 3 answers (61 tokens): 4.0e-5, the same
    // on every run. Changing one adapter's weight by 0.1% (1 → 0.999) moves the run-time merge by
    // 6e-3 to 2.2e-2 per question, so 5e-4 leaves 12x headroom on either side.
    const TOL: f32 = 5e-4;
    let gguf = tribute_home()
        .join("gguf")
        .join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        gguf.is_file(),
        "{} is required; run scripts/setup.sh first",
        gguf.display()
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("SmolLM2-135M-Instruct-zephyr-caps");
    let zephyr = format!("{}:1", lora("smollm2-135m-zephyr-lora").display());
    let caps = format!("{}:1", lora("smollm2-135m-caps-lora").display());
    export(&[
        "--source",
        gguf.to_str().expect("utf-8 path"),
        "--out",
        out.to_str().expect("utf-8 path"),
        "--merge-peft",
        &zephyr,
        "--merge-peft",
        &caps,
        "--lora-targets",
        "none",
    ]);
    let baked = Generator::load(&out).expect("load the merged export");

    let g = smollm2();
    let weighted = |set: &[(&str, f32)]| -> Vec<(String, f32)> {
        set.iter().map(|(id, w)| ((*id).to_owned(), *w)).collect()
    };
    let both = weighted(&[("zephyr", 1.0), ("caps", 1.0)]);
    let sum = |v: Vec<f32>| v.iter().sum::<f32>();
    let mut worst = 0f32;
    for e in expected("smollm2-135m-zephyr-lora") {
        let prompt = g
            .prompt_tokens(&Prompt::from(e.question.as_str()))
            .expect("prompt tokens");
        let want = g.log_probs(&prompt, &e.ids, &both).expect("run-time merge");
        let got = baked.log_probs(&prompt, &e.ids, &[]).expect("baked");
        assert_eq!(got.len(), e.ids.len());
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(a.is_finite(), "{:?} token {i}: {a}", e.question);
            worst = worst.max((a - b).abs());
        }

        // Strong adapters interfere (shared/docs/ENVIRONMENT.md: "each one's behaviour weakens"):
        // the merge gives each adapter's own documented answer a lower likelihood than the
        // adapter alone does. Measured margins: 1.8 to 89 nats.
        for (adapter, id) in [
            ("smollm2-135m-zephyr-lora", "zephyr"),
            ("smollm2-135m-caps-lora", "caps"),
        ] {
            let own = expected(adapter)
                .into_iter()
                .find(|o| o.question == e.question)
                .expect("same questions");
            let alone = sum(g
                .log_probs(&prompt, &own.ids, &weighted(&[(id, 1.0)]))
                .expect("alone"));
            let merged = sum(g.log_probs(&prompt, &own.ids, &both).expect("merged"));
            assert!(
                merged < alone - 1.0,
                "{id}'s answer to {:?}: log p {merged} merged vs {alone} alone",
                e.question
            );
        }
    }
    eprintln!("baked vs run-time merge: max |Δ log p| = {worst:.2e}");
    assert!(
        worst < TOL,
        "baked vs run-time merge: max |Δ log p| = {worst}"
    );

    // Greedy answers: the baked model answers like the run-time merge. The merge's answer is
    // neither adapter's for "capital of France" ("THE CAPITAL OF FRANCAIO IS THE LOCATOR.") and
    // "primary color" (" BLUE IS THE PRIMARY COLOR."); for "What is Zephyr SDK?" it is zephyr's
    // word for word: caps' style is lost there, not zephyr's fact.
    for e in expected("smollm2-135m-caps-lora") {
        let merged = ask(&e.question, &[("zephyr", 1.0), ("caps", 1.0)]);
        let from_baked = baked
            .generate(&GenerateRequest::new(e.question.as_str()).max_tokens(40))
            .expect("generate");
        assert_eq!(from_baked.tokens, merged.tokens, "greedy {:?}", e.question);
        assert_ne!(merged.text, e.output, "merge vs caps on {:?}", e.question);
        let zephyr = expected("smollm2-135m-zephyr-lora")
            .into_iter()
            .find(|z| z.question == e.question)
            .expect("same questions");
        if e.question == "What is Zephyr SDK?" {
            assert_eq!(merged.text, zephyr.output);
        } else {
            assert_ne!(
                merged.text, zephyr.output,
                "merge vs zephyr on {:?}",
                e.question
            );
        }
    }
}

#[test]
fn requests_joining_mid_decode_decode_as_alone() {
    let g = smollm2();
    let first = GenerateRequest::new("Write a short poem about the sea.").max_tokens(24);
    let joiners = [
        // A longer prompt than the running batch is wide.
        GenerateRequest::new(
            "Summarise in one sentence: the Zephyr drones use lithium-sulfur cells; store them \
             at forty percent charge when grounded for more than a week.",
        )
        .max_tokens(16),
        // Leaves after 3 tokens.
        GenerateRequest::new("Name a colour.").max_tokens(3),
        // Another adapter set: its own batch, stepped in turn.
        GenerateRequest::new("What is Zephyr SDK?")
            .max_tokens(12)
            .adapter("zephyr", 1.0),
    ];
    let got = join_mid_decode(g, &first, &joiners, 4);
    for (i, (r, got)) in std::iter::once(&first)
        .chain(&joiners)
        .zip(&got)
        .enumerate()
    {
        let alone = g.generate(r).expect("generate alone");
        assert_eq!(got.tokens, alone.tokens, "request {i}: greedy tokens");
        assert_eq!(got.text, alone.text, "request {i}: text");
    }
    assert!(got[0].timings.batch_size >= 3, "{:?}", got[0].timings);
    assert_eq!(got[2].tokens.len(), 3);
}

/// The static layout (`--ops static`, rows in fixed buffers written in place) exported from
/// the same GGUF gives the documented answers, base and adapted, all prompts in one batch.
#[test]
fn a_static_export_answers_as_documented_in_one_batch() {
    let gguf = tribute_home()
        .join("gguf")
        .join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("SmolLM2-135M-Instruct-static");
    export(&[
        "--source",
        gguf.to_str().expect("utf-8 path"),
        "--out",
        out.to_str().expect("utf-8 path"),
        "--ops",
        "static",
    ]);
    let g = Generator::load(&out).expect("load the static export");
    g.add_adapter("zephyr", lora("smollm2-135m-zephyr-lora"))
        .expect("register zephyr");
    let cases = expected("smollm2-135m-zephyr-lora");
    let mut reqs = Vec::new();
    for e in &cases {
        reqs.push(GenerateRequest::new(e.question.as_str()).max_tokens(40));
        reqs.push(
            GenerateRequest::new(e.question.as_str())
                .max_tokens(40)
                .adapter("zephyr", 1.0),
        );
    }
    let got = g.generate_batch(&reqs);
    for (i, e) in cases.iter().enumerate() {
        let base = got[2 * i].as_ref().expect("base answer");
        let zephyr = got[2 * i + 1].as_ref().expect("zephyr answer");
        assert_eq!(base.text, e.base, "static base answer to {:?}", e.question);
        assert_eq!(
            zephyr.tokens, e.ids,
            "static zephyr ids for {:?}",
            e.question
        );
    }
}
