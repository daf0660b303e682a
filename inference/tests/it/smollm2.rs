//! SmolLM2-135M-Instruct and the shared adapters reproduce their documented greedy outputs.

use serde_json::Value;
use tribute_inference::{FinishReason, GenerateRequest};

use crate::{lora, smollm2};

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
